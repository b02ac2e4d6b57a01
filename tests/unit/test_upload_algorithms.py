"""The frontend's memory of uploads' checksum algorithms (``multipart._known_algorithm``
over a ``recent.Recent``): an entry answers only for its own bucket and key, the oldest
goes first, and an ended upload is forgotten."""

from __future__ import annotations

from frontend.recent import Recent
from frontend.s3.multipart import _known_algorithm


def test_an_entry_answers_only_for_its_own_bucket_and_key():
    known: Recent = Recent()
    known.put("u1", ("b", "k", "sha256"))
    known.put("u2", ("b", "k", None))
    assert _known_algorithm(known, "u1", "b", "k") == (True, "sha256")
    assert _known_algorithm(known, "u2", "b", "k") == (True, None)  # known to have none
    assert _known_algorithm(known, "u1", "b", "other") == (False, None)
    assert _known_algorithm(known, "u1", "other", "k") == (False, None)
    assert _known_algorithm(known, "u3", "b", "k") == (False, None)
    known.pop("u1")
    known.pop("never")
    assert _known_algorithm(known, "u1", "b", "k") == (False, None)


def test_the_oldest_entry_goes_first_and_a_put_refreshes_one():
    known: Recent = Recent(size=3)
    for n in range(3):
        known.put(f"u{n}", ("b", "k", "crc32"))
    known.put("u0", ("b", "k", "crc32"))  # most recent again
    known.put("u3", ("b", "k", "crc32"))
    assert [_known_algorithm(known, f"u{n}", "b", "k")[0] for n in range(4)] == [True, False, True, True]
