"""A versioned workload and a checker of version histories (``cairn chaos run --workload
versioned``; the driver is ``chaos.versioned_run``).

Client threads work one Enabled bucket over a few keys, so each key's history is long:
PUT (the body is derived from a fresh value id, which travels in ``x-amz-meta-v``; the
returned VersionId is recorded), DELETE without a version (a delete marker; its id is
recorded), GET by VersionId of a version we made, DELETE by VersionId of one of our
versions, and paged ListObjectVersions snapshots. An operation that failed or timed out
has an unknown outcome: it may have happened ("maybe"), and nothing is assumed of it.

``check_versioned`` holds the history, the final listing and the final reads of every
listed version against these rules:
- lost: an acknowledged version not deleted by us (a DELETE by id that was sent, even
  of unknown outcome, may have removed it) is missing from the final listing, or from a
  snapshot that started after it was acknowledged;
- resurrected: a version listed or read after an acknowledged DELETE of it;
- unknown: a listed version no operation of ours can explain (an acknowledged one, or a
  maybe-PUT with that ETag and value / a maybe-DELETE on that key, each used once);
- mismatch: a listed version with another key, kind or ETag than the one we made;
- wrong_bytes: a GET by id that answers other bytes (or value) than those written;
- order: if A was acknowledged before B started, A's version is older than B's, in the
  version ids (all keys: they come from the Raft log) and in the final listing (per key);
- latest: not exactly one IsLatest per key, on its newest version;
- duplicate: two acknowledged operations got the same version id, or a listing shows
  one twice.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree

from chaos.run import body_of

BUCKET = "vchaos"
SIZES = (0, 100, 4096, 60_000, 300_000, 1_500_000)  # 1.5 MB: two chunks of 1 MiB
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
CATEGORIES = ("lost", "resurrected", "unknown", "mismatch", "wrong_bytes", "order", "latest", "duplicate")


def error_code(exc: Exception) -> str:
    return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") or type(exc).__name__


def entries_of(raw: bytes) -> list[dict[str, Any]]:
    """A ListObjectVersions page's versions and markers in the server's order (from the
    XML: botocore splits them into two lists, which would hide how they interleave)."""
    out = []
    for el in ElementTree.fromstring(raw):
        kind = el.tag.rpartition("}")[2]
        if kind in ("Version", "DeleteMarker"):
            out.append({"key": el.findtext(f"{NS}Key"), "vid": el.findtext(f"{NS}VersionId"),
                        "marker": kind == "DeleteMarker", "etag": (el.findtext(f"{NS}ETag") or "").strip('"'),
                        "latest": el.findtext(f"{NS}IsLatest") == "true"})
    return out


def list_versions(s3: Any, prefix: str, max_keys: int, max_pages: int) -> list[list[dict[str, Any]]]:
    """Every version under ``prefix``, page by page (at most ``max_pages``)."""
    raw: list[bytes] = []
    keep = lambda http_response, **kw: raw.append(http_response.content)  # noqa: E731
    s3.meta.events.register("after-call.s3.ListObjectVersions", keep, unique_id="vchaos-raw")
    pages, marker = [], {}
    try:
        for _ in range(max_pages):
            raw.clear()
            page = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix, MaxKeys=max_keys, **marker)
            pages.append(entries_of(raw[-1]))
            if not page.get("IsTruncated"):
                return pages
            marker = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page.get("NextVersionIdMarker", "")}
    finally:
        s3.meta.events.unregister("after-call.s3.ListObjectVersions", unique_id="vchaos-raw")
    raise RuntimeError(f"listing {prefix!r} not done after {max_pages} pages")


def read_version(s3: Any, key: str, vid: str) -> dict[str, Any]:
    """GET by id -> status found (with value and intact), gone, marker or error."""
    try:
        got = s3.get_object(Bucket=BUCKET, Key=key, VersionId=vid)
        data = got["Body"].read()
    except Exception as exc:
        code = error_code(exc)
        status = {"NoSuchVersion": "gone", "404": "gone", "MethodNotAllowed": "marker", "405": "marker"}
        return {"status": status.get(code, "error"), "error": code}
    value = got["Metadata"].get("v")
    ok = value is not None and got.get("VersionId") == vid and data == body_of(value, len(data))
    return {"status": "found", "value": value, "intact": ok}


class VersionedWorkload:
    def __init__(self, cluster: Any, seed: int, keys: int) -> None:
        self.cluster, self.keys = cluster, [f"k{i}" for i in range(keys)]
        self.rng = random.Random(seed)
        self.history: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.counter = 0
        self.made: dict[str, list[tuple[str, str]]] = {k: [] for k in self.keys}  # acked (vid, "put"|"mark")
        self.targeted: set[str] = set()  # vids a DELETE by id was sent for
        self.harness_errors: list[str] = []
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def client(self, n: int) -> None:
        """One client thread until ``stop``; a harness bug is counted, not hidden."""
        rng = random.Random(self.rng.random())
        s3 = self.cluster.s3(n % self.cluster.frontends, retries={"max_attempts": 1}, read_timeout=20,
                             connect_timeout=3)
        while not self.stop.is_set():
            key, roll = rng.choice(self.keys), rng.random()
            try:
                op = (self.put if roll < 0.38 else self.mark if roll < 0.48 else self.get if roll < 0.75
                      else self.delete_version if roll < 0.87 else self.listing)
                entry = op(s3, key, rng, n)
            except Exception as exc:
                with self.lock:
                    self.harness_errors.append(repr(exc))
                print(f"harness error in client {n}: {exc!r}", file=sys.stderr)
                continue
            if entry is not None:
                with self.lock:
                    self.history.append(entry)

    def _call(self, entry: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        entry["start"] = self.now()
        try:
            reply = fn()
            entry.update(ok=True, end=self.now())
            return reply
        except Exception as exc:  # outcome unknown
            entry.update(ok=False, end=None, error=error_code(exc))
            return None

    def put(self, s3: Any, key: str, rng: random.Random, n: int) -> dict[str, Any]:
        with self.lock:
            self.counter += 1
            value = f"w{n}-{self.counter}"
        size = rng.choice(SIZES)
        body = body_of(value, size)
        entry = {"op": "put", "key": key, "value": value, "size": size, "etag": hashlib.md5(body).hexdigest()}
        reply = self._call(entry, lambda: s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata={"v": value}))
        if reply is not None:
            entry["vid"] = reply.get("VersionId")
            with self.lock:
                self.made[key] += [(entry["vid"], "put")] if entry["vid"] else []
        return entry

    def mark(self, s3: Any, key: str, rng: random.Random, n: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"op": "mark", "key": key}
        reply = self._call(entry, lambda: s3.delete_object(Bucket=BUCKET, Key=key))
        if reply is not None:
            entry.update(vid=reply.get("VersionId"), marker=reply.get("DeleteMarker"))
            with self.lock:
                self.made[key] += [(entry["vid"], "mark")] if entry["vid"] else []
        return entry

    def get(self, s3: Any, key: str, rng: random.Random, n: int) -> dict[str, Any] | None:
        with self.lock:
            if not self.made[key]:
                return None
            vid, kind = rng.choice(self.made[key])
        entry = {"op": "get_version", "key": key, "vid": vid, "kind": kind, "start": self.now()}
        entry.update(read_version(s3, key, vid))
        entry["end"] = self.now()
        entry["ok"] = entry["status"] != "error"
        return entry

    def delete_version(self, s3: Any, key: str, rng: random.Random, n: int) -> dict[str, Any] | None:
        with self.lock:
            left = [v for v in self.made[key] if v[0] not in self.targeted]
            if len(left) < 3:  # keep histories long: delete only among several
                return None
            vid, kind = rng.choice(left[:-1])  # an older version (the latest one too, rarely)
            if rng.random() < 0.15:
                vid, kind = left[-1]
            self.targeted.add(vid)
        entry = {"op": "delete_version", "key": key, "vid": vid, "kind": kind}
        self._call(entry, lambda: s3.delete_object(Bucket=BUCKET, Key=key, VersionId=vid))
        return entry

    def listing(self, s3: Any, key: str, rng: random.Random, n: int) -> dict[str, Any]:
        prefix = key if rng.random() < 0.6 else ""
        entry: dict[str, Any] = {"op": "list", "prefix": prefix}
        pages = self._call(entry, lambda: {"pages": list_versions(s3, prefix, rng.choice([5, 50, 300]), 400)})
        if pages is not None:
            entry["pages"] = pages["pages"]
        return entry


# ---------------------------------------------------------------------- the checker


def realtime_violations(ops: list[dict[str, Any]], rank: Callable[[dict[str, Any]], int]) -> list[str]:
    """Pairs A, B where A ended before B started but ``rank(A) >= rank(B)`` (the newer
    version must rank higher); the highest-ranked earlier op is named."""
    done = sorted(ops, key=lambda h: h["end"])
    ends, best = [h["end"] for h in done], []
    for h in done:
        best.append(h if not best or rank(h) > rank(best[-1]) else best[-1])
    out = []
    for b in ops:
        i = bisect.bisect_left(ends, b["start"])
        if i and rank(best[i - 1]) >= rank(b):
            a = best[i - 1]
            out.append(f"{a['op']} {a['key']} {a['vid']} (acked {a['end']:.2f}) is not older than "
                       f"{b['op']} {b['key']} {b['vid']} (started {b['start']:.2f})")
    return out


def descending(entries: list[dict[str, Any]], where: str) -> list[str]:
    """One key's listed versions must be newest first: version ids strictly descending."""
    seqs = [int(e["vid"], 16) for e in entries]
    return [f"{where}: {entries[i]['vid']} listed before {entries[i + 1]['vid']}"
            for i in range(len(seqs) - 1) if seqs[i] <= seqs[i + 1]]


def check_versioned(history: list[dict[str, Any]], final: list[dict[str, Any]],
                    final_reads: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Anomalies by category (see the module docstring); empty lists: none."""
    bad: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    acked = [h for h in history if h["op"] in ("put", "mark") and h["ok"]]
    by_vid: dict[str, dict[str, Any]] = {}
    for h in acked:
        if not h.get("vid") or (h["op"] == "mark" and not h.get("marker")):
            bad["mismatch"].append(f"acknowledged {h['op']} {h['key']} answered {h.get('vid')!r}")
        elif h["vid"] in by_vid:
            bad["duplicate"].append(f"{h['vid']} acknowledged twice ({by_vid[h['vid']]['key']}, {h['key']})")
        by_vid.setdefault(h.get("vid"), h)
    dels = [h for h in history if h["op"] == "delete_version"]
    gone_at = {h["vid"]: h["end"] for h in dels if h["ok"]}  # acknowledged deletes
    sent_at: dict[str, float] = {}
    for h in dels:
        sent_at[h["vid"]] = min(h["start"], sent_at.get(h["vid"], h["start"]))
    maybe_puts = {h["value"]: h for h in history if h["op"] == "put" and not h["ok"]}
    maybe_marks = Counter(h["key"] for h in history if h["op"] == "mark" and not h["ok"])

    def same(e: dict[str, Any], where: str) -> None:
        h = by_vid[e["vid"]]
        if e["key"] != h["key"] or e["marker"] != (h["op"] == "mark") or (not e["marker"] and e["etag"] != h["etag"]):
            bad["mismatch"].append(f"{where}: {e} is not what {h['op']} {h['key']} made ({h.get('etag')})")

    # -- the final listing
    seen = Counter(e["vid"] for e in final)
    bad["duplicate"] += [f"final listing shows {vid} {n} times" for vid, n in seen.items() if n > 1]
    listed = {e["vid"]: e for e in final}
    for vid, h in by_vid.items():
        if vid in gone_at and vid in listed:
            bad["resurrected"].append(f"{h['key']} {vid}: listed after its DELETE was acknowledged")
        elif vid not in listed and vid not in sent_at:
            bad["lost"].append(f"{h['op']} {h['key']} {vid} (acked {h['end']:.2f}) missing from the final listing")
    explained: set[str] = set()
    marks_left = maybe_marks.copy()
    for e in final:
        if e["vid"] in by_vid:
            same(e, "final listing")
        elif e["marker"] and marks_left[e["key"]] > 0:
            marks_left[e["key"]] -= 1
        else:
            h = maybe_puts.get(final_reads.get(e["vid"], {}).get("value"))
            if e["marker"] or h is None or h["value"] in explained or h["key"] != e["key"] or h["etag"] != e["etag"]:
                bad["unknown"].append(f"final listing: {e} (read {final_reads.get(e['vid'])})")
            else:
                explained.add(h["value"])
    # -- final reads of every listed version and of every version we deleted
    for vid, got in final_reads.items():
        h, e = by_vid.get(vid), listed.get(vid)
        want = "marker" if e and e["marker"] else "found" if e else "gone"
        if got["status"] != want or (want == "found" and (not got["intact"] or (h and got["value"] != h["value"]))):
            bad["wrong_bytes" if want == "found" else "resurrected"].append(f"final GET {vid}: {got}, want {want}")
    # -- order: version ids (every key) and final listing positions (per key)
    bad["order"] += realtime_violations([h for h in acked if h.get("vid")], lambda h: int(h["vid"], 16))
    position = {e["vid"]: -i for i, e in enumerate(final)}
    for key in {h["key"] for h in acked}:
        ops = [h for h in acked if h["key"] == key and h.get("vid") in position]
        bad["order"] += [f"final listing: {v}" for v in realtime_violations(ops, lambda h: position[h["vid"]])]
    firsts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in final:
        firsts[e["key"]].append(e)
    for key, es in firsts.items():
        bad["order"] += descending(es, f"final listing of {key}")
        if [e["latest"] for e in es] != [True] + [False] * (len(es) - 1):
            bad["latest"].append(f"final listing: {key} IsLatest {[e['latest'] for e in es]}")
    # -- during the run: GETs by id and listing snapshots
    for g in (h for h in history if h["op"] == "get_version" and h["ok"]):
        if g["status"] == "found" and (not g["intact"] or g["value"] != by_vid.get(g["vid"], {}).get("value")):
            bad["wrong_bytes"].append(f"GET {g['key']} {g['vid']} at {g['start']:.2f}: {g}")
        if g["status"] == "found" and gone_at.get(g["vid"], 1e18) < g["start"]:
            bad["resurrected"].append(f"GET {g['key']} {g['vid']} at {g['start']:.2f} after its DELETE")
        if g["status"] == "gone" and sent_at.get(g["vid"], 1e18) > g["end"]:
            bad["lost"].append(f"GET {g['key']} {g['vid']} at {g['start']:.2f}: NoSuchVersion, never deleted")
        if (g["status"] == "marker") != (g["kind"] == "mark") and g["status"] != "gone":
            bad["mismatch"].append(f"GET {g['key']} {g['vid']} ({g['kind']}) answered {g['status']}")
    for snap in (h for h in history if h["op"] == "list" and h["ok"]):
        check_snapshot(snap, by_vid, gone_at, sent_at, maybe_puts, maybe_marks, bad, same)
    return bad


def check_snapshot(snap: dict[str, Any], by_vid: dict[str, dict[str, Any]], gone_at: dict[str, float],
                   sent_at: dict[str, float], maybe_puts: dict[str, dict[str, Any]], maybe_marks: Counter,
                   bad: dict[str, list[str]], same: Callable[[dict[str, Any], str], None]) -> None:
    """One in-run paged listing: each page read at one point, the pages together a walk."""
    where = f"listing {snap['prefix']!r} at {snap['start']:.2f}"
    entries = [e for page in snap["pages"] for e in page]
    seen = Counter(e["vid"] for e in entries)
    bad["duplicate"] += [f"{where} shows {vid} {n} times" for vid, n in seen.items() if n > 1]
    for key in {e["key"] for e in entries}:
        bad["order"] += descending([e for e in entries if e["key"] == key], f"{where}, {key}")
    last_key = None
    for page in snap["pages"]:
        for i, e in enumerate(page):
            first = i == 0 or page[i - 1]["key"] != e["key"]  # of its key on this page
            resumed = i == 0 and e["key"] == last_key  # the previous page ended inside this key
            if (e["latest"] and not first) or (first and not resumed and not e["latest"]):
                bad["latest"].append(f"{where}: {e} (first of its key on the page: {first})")
        last_key = page[-1]["key"] if page else last_key
    maybe_etags = {(h["key"], h["etag"]) for h in maybe_puts.values()}
    for e in entries:
        if e["vid"] in by_vid:
            same(e, where)
            if gone_at.get(e["vid"], 1e18) < snap["start"]:
                bad["resurrected"].append(f"{where}: {e} after its DELETE was acknowledged")
        elif not (maybe_marks[e["key"]] if e["marker"] else (e["key"], e["etag"]) in maybe_etags):
            bad["unknown"].append(f"{where}: {e}")
    listed = {e["vid"] for e in entries}
    for vid, h in by_vid.items():
        if (h["key"].startswith(snap["prefix"]) and h["end"] < snap["start"] and vid not in listed
                and sent_at.get(vid, 1e18) > snap["end"]):
            bad["lost"].append(f"{where}: {h['op']} {h['key']} {vid} (acked {h['end']:.2f}) missing")
