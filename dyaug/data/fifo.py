"""``TransitionFIFO``: at most ``capacity`` transitions, the oldest dropped first.

Model-based augmentation (MBPO, Janner et al. 2019, arXiv 1906.08253; DyDiff, Zhao et al. 2024, arXiv
2405.19189) keeps its generated transitions in a first-in-first-out "model buffer": every rollout phase adds
its output, and once the buffer is full the oldest rows make room, so training sees the recent phases only.
"""

from __future__ import annotations

from collections import deque

from dyaug.data.transitions import Transitions
from dyaug.validation import check_int

__all__ = ["TransitionFIFO"]


class TransitionFIFO:
    """A first-in-first-out store of :class:`Transitions` rows; it keeps the added sets themselves (the oldest one
    sliced when it is partly evicted) and copies rows only in :meth:`transitions`.

    ``add`` appends a set and drops the oldest rows beyond ``capacity``; ``transitions()`` returns the rows kept,
    oldest first. Every added set must have the same observation and action sizes, and all or none of them
    ``next_actions``.
    """

    def __init__(self, capacity: int) -> None:
        check_int("capacity", capacity, numpy=False, hint="the most transitions kept")
        self.capacity = capacity
        self._parts: deque[Transitions] = deque()
        self._size = 0
        self.added = 0  # rows ever added
        self.evicted = 0  # rows ever dropped

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"TransitionFIFO({self._size}/{self.capacity} transitions, {self.added} added, {self.evicted} evicted)"

    def add(self, transitions: Transitions) -> int:
        """Append ``transitions``; returns how many of the oldest rows were dropped to stay within ``capacity``."""
        self._check(transitions)
        self._parts.append(transitions)
        self._size += len(transitions)
        self.added += len(transitions)
        dropped = 0
        while self._size > self.capacity:
            oldest, excess = self._parts[0], self._size - self.capacity
            if len(oldest) <= excess:
                self._parts.popleft()
                gone = len(oldest)
            else:
                self._parts[0] = oldest[excess:]
                gone = excess
            self._size -= gone
            dropped += gone
        self.evicted += dropped
        return dropped

    def transitions(self) -> Transitions:
        """The rows kept, oldest first (one new array per field); ``ValueError`` when the store is empty."""
        if not self._parts:
            raise ValueError("the TransitionFIFO is empty; add transitions first.")
        return Transitions.concatenate(list(self._parts))

    def clear(self) -> None:
        """Drop every row (the counters ``added`` and ``evicted`` are kept)."""
        self._parts.clear()
        self._size = 0

    def _check(self, transitions: Transitions) -> None:
        if not isinstance(transitions, Transitions):
            raise TypeError(f"TransitionFIFO.add takes dyaug Transitions, got {type(transitions).__name__}.")
        if not self._parts:
            return
        first = self._parts[0]
        if (transitions.obs_dim, transitions.act_dim) != (first.obs_dim, first.act_dim):
            raise ValueError(
                f"these transitions have observation/action sizes {(transitions.obs_dim, transitions.act_dim)} but "
                f"the store holds {(first.obs_dim, first.act_dim)}; one store keeps one task's transitions."
            )
        if (transitions.next_actions is None) != (first.next_actions is None):
            raise ValueError(
                "add transitions all with next_actions or all without: the store mixes no rows that lack a'."
            )
