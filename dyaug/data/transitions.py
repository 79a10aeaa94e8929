"""``Transitions``: the one exact in-memory representation of RL data in dyaug.

Every source (Minari, d3rlpy, SB3, a generator) converts to it and every sink converts from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from minari import MinariDataset

_VECTOR_FIELDS = ("observations", "actions", "next_observations")
_SCALAR_FIELDS = ("rewards", "terminals", "timeouts")
_FLAG_FIELDS = ("terminals", "timeouts")


@dataclasses.dataclass(frozen=True, eq=False)
class Transitions:
    """A flat set of transitions ``(s, a, r, s', terminal, timeout[, a'])``.

    Layout (all ``float32``, N transitions):

    - ``observations``, ``next_observations``: ``(N, obs_dim)``; ``next_observations`` holds the true s'
      also at terminal steps (unlike d3rlpy, which stores zeros there);
    - ``actions``: ``(N, act_dim)`` in environment units (not SB3's [-1, 1] scaling);
    - ``rewards``, ``terminals``, ``timeouts``: ``(N,)``; the two flags are 0.0 or 1.0. ``terminals`` marks
      an MDP termination (no bootstrap), ``timeouts`` a truncation (bootstrap from s'). An episode ends
      where either flag is 1; the last transition of a source episode always carries one of them;
    - ``next_actions``: optional ``(N, act_dim)``, the action taken at s' (for algorithms like ReBRAC);
      zero where there is none (terminal or truncated steps).

    Construction validates shapes, dtypes and finiteness and raises ``ValueError`` naming the field and
    the fix. Arrays are made read-only views, so a ``Transitions`` never aliases writable user memory:
    it copies input arrays that are not already float32 and C-contiguous, and never writes to them.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    next_actions: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = (*_VECTOR_FIELDS, *_SCALAR_FIELDS) + (("next_actions",) if self.next_actions is not None else ())
        for name in names:
            object.__setattr__(self, name, _checked_array(name, getattr(self, name)))
        n = len(self.observations)
        for name in names:
            arr = getattr(self, name)
            want_rank = 1 if name in _SCALAR_FIELDS else 2
            if arr.ndim == 2 and want_rank == 1 and arr.shape[1] == 1:
                arr = arr.reshape(-1)
                object.__setattr__(self, name, arr)
            if arr.ndim != want_rank:
                shape = "(N,)" if want_rank == 1 else "(N, dim)"
                raise ValueError(f"Transitions.{name} must have shape {shape}, got {arr.shape}; reshape it.")
            if len(arr) != n:
                raise ValueError(
                    f"Transitions.{name} has {len(arr)} rows but observations has {n}; "
                    "every field needs one row per transition."
                )
        if self.next_observations.shape[1] != self.observations.shape[1]:
            raise ValueError(
                f"Transitions.next_observations has dimension {self.next_observations.shape[1]} but "
                f"observations has {self.observations.shape[1]}; they must describe the same space."
            )
        if self.next_actions is not None and self.next_actions.shape[1] != self.actions.shape[1]:
            raise ValueError(
                f"Transitions.next_actions has dimension {self.next_actions.shape[1]} but actions has "
                f"{self.actions.shape[1]}."
            )
        for name in _FLAG_FIELDS:
            arr = getattr(self, name)
            bad = (arr != 0.0) & (arr != 1.0)
            if bad.any():
                raise ValueError(
                    f"Transitions.{name} must hold 0.0 or 1.0, found {arr[bad][:3].tolist()}...; "
                    "threshold the flags (e.g. `(x > 0.5).astype(np.float32)`)."
                )

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    # --------------------------------------------------------------- indexing
    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> Transitions:
        """Rows by slice, integer array or boolean mask; an int gives a one-row ``Transitions``."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1) if index != -1 else slice(-1, None)
        rows: dict[str, Any] = {k: (v[index] if v is not None else None) for k, v in self.as_dict().items()}
        return Transitions(**rows)

    def as_dict(self) -> dict[str, np.ndarray | None]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> Transitions:
        return dataclasses.replace(self, **changes)

    @staticmethod
    def concatenate(parts: Sequence[Transitions]) -> Transitions:
        """Stack several ``Transitions`` of the same spaces; ``next_actions`` survive only if all have them."""
        if len(parts) == 0:
            raise ValueError("Transitions.concatenate needs at least one Transitions.")
        dims = {(p.obs_dim, p.act_dim) for p in parts}
        if len(dims) != 1:
            raise ValueError(f"cannot concatenate Transitions of different (obs_dim, act_dim): {sorted(dims)}.")
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(Transitions):
            values = [getattr(p, f.name) for p in parts]
            if f.name == "next_actions" and any(v is None for v in values):
                fields[f.name] = None
            else:
                fields[f.name] = np.concatenate(values)
        return Transitions(**fields)

    def fingerprint(self) -> str:
        """A SHA-256 digest (hex) of every field's shape and bytes: equal for equal data, and what a resumed fit
        checks to continue only on the data it started with."""
        digest = hashlib.sha256()
        for name, value in self.as_dict().items():
            if value is not None:
                digest.update(f"{name}{value.shape}".encode())
                digest.update(value.tobytes())
        return digest.hexdigest()

    # --------------------------------------------------------------- episodes
    @property
    def episode_ends(self) -> np.ndarray:
        """Indices of the last transition of each episode (where ``terminals`` or ``timeouts`` is 1)."""
        return np.flatnonzero((self.terminals > 0) | (self.timeouts > 0))

    def episode_slices(self, *, contiguous: bool = False, match_next_actions: bool = False) -> list[slice]:
        """One slice per episode: runs ending where ``terminals`` or ``timeouts`` is 1 (a trailing run with no end
        flag counts as an unfinished episode).

        With ``contiguous=True`` a run also ends wherever continuity breaks, ``next_observations[i] !=
        observations[i+1]`` (and, with ``match_next_actions``, ``next_actions[i] != actions[i+1]``): the runs
        that can be stored as one observation sequence each. Unordered synthetic transitions become 1-step runs.
        """
        n = len(self)
        breaks = (self.terminals[:-1] > 0) | (self.timeouts[:-1] > 0)
        if contiguous:
            breaks |= (self.next_observations[:-1] != self.observations[1:]).any(axis=1)
            if match_next_actions and self.next_actions is not None:
                breaks |= (self.next_actions[:-1] != self.actions[1:]).any(axis=1)
        stops = np.concatenate([np.flatnonzero(breaks) + 1, [n]]) if n else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], stops[:-1]])
        return [slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]

    # ------------------------------------------------------------- converters
    @classmethod
    def from_minari(cls, dataset: MinariDataset, episode_indices: Sequence[int] | None = None) -> Transitions:
        """Exact conversion of a Minari dataset (each episode holds N+1 observations and N actions)."""
        from dyaug.data.minari_io import transitions_from_minari

        return transitions_from_minari(dataset, episode_indices)

    def to_minari(self, dataset_id: str, env_id: str | None = None, **metadata: Any) -> MinariDataset:
        """Write a local Minari dataset; see :func:`dyaug.data.minari_io.transitions_to_minari`."""
        from dyaug.data.minari_io import transitions_to_minari

        return transitions_to_minari(self, dataset_id, env_id, **metadata)

    @classmethod
    def from_d3rlpy(cls, buffer: Any) -> Transitions:
        """Exact conversion of a d3rlpy ``ReplayBuffer``/``MDPDataset`` (by the d3rlpy adapter, through
        :func:`dyaug.data.coerce.read_transitions`)."""
        return _read(buffer, "d3rlpy.dataset", "ReplayBufferBase")

    def to_d3rlpy(self, **kwargs: Any) -> Any:
        """A d3rlpy ``ReplayBuffer`` holding these transitions (:func:`dyaug.data.coerce.write_transitions`)."""
        from dyaug.data.coerce import write_transitions

        return write_transitions(self, "d3rlpy", **kwargs)

    @classmethod
    def from_sb3(cls, replay_buffer: Any) -> Transitions:
        """Conversion of an SB3 ``ReplayBuffer``, actions unscaled to env units (by the SB3 adapter, through
        :func:`dyaug.data.coerce.read_transitions`)."""
        return _read(replay_buffer, "stable_baselines3.common.buffers", "ReplayBuffer")


def _read(data: Any, module: str, name: str) -> Transitions:
    from dyaug.data.coerce import _is_instance, read_transitions

    if not _is_instance(data, module, name):
        raise TypeError(f"expected a {module}.{name}, got a {type(data).__module__}.{type(data).__qualname__}.")
    return read_transitions(data)


def _checked_array(name: str, value: Any) -> np.ndarray:
    if value is None:
        raise ValueError(f"Transitions.{name} is None; pass an array with one row per transition.")
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"Transitions.{name} has dtype {arr.dtype}; pass a numeric array (it is stored as float32).")
    if np.iscomplexobj(arr):
        raise ValueError(f"Transitions.{name} is complex; pass real numbers.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if (arr is value or arr.base is not None) and arr.flags.writeable:
        # Never alias memory the caller can still write to (read-only views, e.g. of another
        # Transitions, are shared).
        arr = arr.copy()
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"Transitions.{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)}); "
            "drop or repair those rows before building Transitions."
        )
    arr.flags.writeable = False
    return arr
