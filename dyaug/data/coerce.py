"""The one place the core meets other libraries' containers: reading them as :class:`Transitions`, writing
:class:`Transitions` into them, and mixing synthetic data into their replay buffers.

Accepted: a :class:`Transitions`, a Minari ``MinariDataset``, a d3rlpy ``ReplayBuffer``/``MDPDataset`` (any
``ReplayBufferBase``) and a Stable-Baselines3 ``ReplayBuffer``. A container is recognised by ``isinstance``
against the class of a library that is *already imported* (``sys.modules``): an object of a library cannot
exist before that library is imported, so this is exact and never imports d3rlpy, SB3 or Minari itself.

The adapters live in ``dyaug.integrations``; the tables below name them, and they are imported only when an
object of their library arrives. This module is the only one of the core that names them. Another library plugs
in the same way, without touching dyaug: ``read_transitions.register(TheirBuffer)(their_converter)`` (a
``functools.singledispatch`` function), and likewise ``mix_synthetic``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
from typing import Any

import numpy as np

from dyaug.data.transitions import Transitions

ACCEPTED = "dyaug Transitions, a Minari dataset, a d3rlpy ReplayBuffer/MDPDataset or a Stable-Baselines3 ReplayBuffer"


@dataclasses.dataclass(frozen=True)
class ActionBounds:
    """Per-dimension action bounds ``low <= a <= high`` (float32, shape ``(act_dim,)``) and where they came from.

    ``source`` is ``"action space"`` when every bound is a finite bound of the data's Box action space,
    ``"data range"`` when they are the data's per-dimension min/max, and ``"action space and data range"``
    when the space is only partly finite (infinite bounds replaced by the data's min/max).
    """

    low: np.ndarray
    high: np.ndarray
    source: str

    def __post_init__(self) -> None:
        low = np.asarray(self.low, dtype=np.float32).reshape(-1)
        high = np.asarray(self.high, dtype=np.float32).reshape(-1)
        if low.shape != high.shape or not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"ActionBounds needs finite low/high of equal shape, got {low} and {high}.")
        if (low > high).any():
            raise ValueError(f"ActionBounds needs low <= high in every dimension, got low={low}, high={high}.")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)


# (library module, class) -> "module:callable" of the adapter that handles it, imported on first use
_READERS: dict[tuple[str, str], str] = {
    ("minari", "MinariDataset"): "dyaug.data.minari_io:transitions_from_minari",
    ("d3rlpy.dataset", "ReplayBufferBase"): "dyaug.integrations.d3rlpy.convert:transitions_from_d3rlpy",
    ("stable_baselines3.common.buffers", "ReplayBuffer"): "dyaug.integrations.sb3.convert:transitions_from_sb3",
}
_WRITERS: dict[str, str] = {"d3rlpy": "dyaug.integrations.d3rlpy.convert:transitions_to_d3rlpy"}
_MIXERS: dict[tuple[str, str], str] = {
    ("d3rlpy.dataset", "ReplayBufferBase"): "dyaug.integrations.d3rlpy.buffer:SyntheticReplayBuffer",
}


@functools.singledispatch
def read_transitions(data: Any) -> Transitions:
    """``data`` as :class:`Transitions`, by the adapter registered for its type (see the module docstring)."""
    adapter = _adapter(_READERS, data)
    if adapter is None:
        raise TypeError(
            f"cannot read RL data from a {type(data).__module__}.{type(data).__qualname__}; pass {ACCEPTED} "
            "(or build Transitions(observations, actions, rewards, next_observations, terminals, timeouts), or "
            "register a converter with dyaug.data.coerce.read_transitions.register(YourType))."
        )
    return adapter(data)


@read_transitions.register
def _(data: Transitions) -> Transitions:
    return data


def to_transitions(data: Any) -> Transitions:
    """``data`` as :class:`Transitions` (:func:`read_transitions`, the adapters do the exact conversion).

    Raises ``TypeError`` for an unsupported container and ``ValueError`` for empty data; the adapters raise
    ``ValueError`` for what they cannot represent exactly: non-Box spaces (Minari, SB3), a d3rlpy buffer with a
    discrete action space, NaN or Inf values.
    """
    transitions = read_transitions(data)
    if len(transitions) == 0:
        raise ValueError("the data holds no transitions; pass a dataset or buffer with at least one step.")
    return transitions


def write_transitions(transitions: Transitions, library: str, **kwargs: Any) -> Any:
    """``transitions`` as a container of ``library`` (``"d3rlpy"``: a ``ReplayBuffer``), by its adapter."""
    if library not in _WRITERS:
        raise ValueError(f"dyaug writes Transitions into {sorted(_WRITERS)}, not {library!r}.")
    return _load(_WRITERS[library])(transitions, **kwargs)


@functools.singledispatch
def mix_synthetic(buffer: Any, synthetic: Transitions, real_ratio: float) -> Any:
    """A replay buffer of ``buffer``'s library whose batches hold ``real_ratio`` of ``buffer``'s rows and the rest
    from ``synthetic`` (for d3rlpy: ``dyaug.integrations.d3rlpy.SyntheticReplayBuffer``)."""
    adapter = _adapter(_MIXERS, buffer)
    if adapter is None:
        raise TypeError(
            f"dyaug mixes synthetic data into d3rlpy replay buffers here, not a {type(buffer).__qualname__}; for "
            "Stable-Baselines3 pass replay_buffer_class=dyaug.integrations.sb3.SyntheticReplayBuffer to the model."
        )
    return adapter(buffer, synthetic, real_ratio=real_ratio)


def _adapter(table: dict[tuple[str, str], str], data: Any) -> Any:
    for (module, name), target in table.items():
        if _is_instance(data, module, name):
            return _load(target)
    return None


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def action_bounds(data: Any, transitions: Transitions) -> ActionBounds:
    """Bounds for ``transitions``' actions: the finite bounds of ``data``'s Box action space where it has one
    (Minari dataset, SB3 buffer), the data's per-dimension min/max otherwise (``Transitions``, d3rlpy buffers,
    which keep no bounds) and for every infinite bound of the space. ``source`` records which.
    """
    data_low, data_high = transitions.actions.min(axis=0), transitions.actions.max(axis=0)
    space = getattr(data, "action_space", None) if not isinstance(data, Transitions) else None
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None or np.shape(low) != data_low.shape:
        return ActionBounds(data_low, data_high, "data range")
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    finite = np.isfinite(low) & np.isfinite(high)
    if not finite.any():
        return ActionBounds(data_low, data_high, "data range")
    source = "action space" if finite.all() else "action space and data range"
    return ActionBounds(np.where(finite, low, data_low), np.where(finite, high, data_high), source)


def env_id_of(data: Any) -> str | None:
    """The environment id a dataset records (a Minari dataset's ``env_spec``); ``None`` for data that records none."""
    if isinstance(data, Transitions):
        return None
    spec = getattr(data, "env_spec", None)
    return getattr(spec, "id", None)


def _is_instance(data: Any, module_name: str, class_name: str) -> bool:
    module = sys.modules.get(module_name)
    cls = getattr(module, class_name, None) if module is not None else None
    return isinstance(cls, type) and isinstance(data, cls)
