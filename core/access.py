"""Who may what on a bucket, pure: the rule the frontends apply to a bucket's access
(``frontend.iam.authorize``) and the state machine applies when it authorizes a read in
the same snapshot as the read (``raftmeta.sm.iam.q_object_as``).

``access`` is what the ``access`` query answers: ``exists``, ``owner``, ``grants``,
``ownership``, ``pab`` and the caller's Cairn grant (``permission``).
"""

from __future__ import annotations

from typing import Any

from core import acl

# What each need asks of a bucket's ACL (None: nothing a bucket ACL can give).
ACL_NEED = {"list": acl.READ, "any": acl.READ, "write": acl.WRITE, "read_acp": acl.READ_ACP,
            "write_acp": acl.WRITE_ACP, "full": None}
# Needs on an object, settled by its version's ACL inside the read (or command) unless the
# caller holds a Cairn grant that covers every object of the bucket.
OBJECT_NEEDS = {"read": acl.READ, "obj_read_acp": acl.READ_ACP, "obj_write_acp": acl.WRITE_ACP}
GRANTS_FOR = {"list": ("list", "full"), "write": ("write", "full"), "full": ("full",), "read_acp": ("full",),
              "write_acp": ("full",), "read": ("read", "full"), "obj_read_acp": ("full",),
              "obj_write_acp": ("full",)}


def bucket_allows(access: dict[str, Any], user: str | None, need: str) -> bool:
    """Whether ``user`` (None: anonymous) may ``need`` (a bucket need) on the bucket."""
    if user is not None and user == access["owner"]:
        return True
    granted = access.get("permission")
    if granted in GRANTS_FOR.get(need, ()) or (need == "any" and granted):
        return True
    permission = ACL_NEED.get(need)
    if permission is None or access.get("ownership") == acl.OWNER_ENFORCED:  # ACLs are off there
        return False
    return acl.may(access["grants"], access["owner"], user, permission,
                   bool((access.get("pab") or {}).get("IgnorePublicAcls")))


def object_check(access: dict[str, Any], user: str | None, need: str) -> dict[str, Any] | None:
    """For an object need: None if the caller's Cairn grant covers it, else the check the
    version's ACL must pass (``{"user", "need", "list"}``), decided with the version read."""
    if access.get("permission") in GRANTS_FOR[need]:
        return None
    return {"user": user, "need": OBJECT_NEEDS[need], "list": bucket_allows(access, user, "list")}
