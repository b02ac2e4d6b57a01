"""Raft transport frames: signed with the cluster secret, tamper-evident, timestamped."""

from __future__ import annotations

import pytest

from raftmeta.node import _SignedFrames


def test_round_trip_and_timestamp() -> None:
    frames = _SignedFrames("s3cret")
    token = frames.encrypt_at_time(b"payload", 1234)
    assert frames.extract_timestamp(token) == 1234
    assert frames.decrypt(token) == b"payload"
    assert frames.decrypt(frames.encrypt_at_time(b"", 0)) == b""


@pytest.mark.parametrize("damage", ["flip data", "flip mac", "flip time", "truncate", "other secret"])
def test_tampered_or_foreign_frames_are_refused(damage: str) -> None:
    frames = _SignedFrames("s3cret")
    token = bytearray(frames.encrypt_at_time(b"pickled message", 99))
    reader = frames
    if damage == "flip data":
        token[10] ^= 1
    elif damage == "flip mac":
        token[-1] ^= 1
    elif damage == "flip time":
        token[7] ^= 1
    elif damage == "truncate":
        token = token[:30]
    else:
        reader = _SignedFrames("another secret")
    with pytest.raises(ValueError):
        reader.extract_timestamp(bytes(token))
    with pytest.raises(ValueError):
        reader.decrypt(bytes(token))
