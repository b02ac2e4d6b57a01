"""A frontend's bounded memory of facts that never change once true (a key's secret,
an upload's checksum algorithm): at most ``size`` entries, the oldest put dropped
first. An entry can only be stale by its subject being gone, which the caller's next
linearizable step (a confirming read, a commit) finds."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items.pop(key, None)
        if len(self._items) >= self.size:
            del self._items[next(iter(self._items))]
        self._items[key] = value

    def pop(self, key: K) -> None:
        self._items.pop(key, None)
