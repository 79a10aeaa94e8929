"""Box spaces of the environments served by learned models: checks, JSON/tensor records, checked actions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor


def check_box(name: str, space: object) -> spaces.Box:
    """``space`` when it is a 1-D :class:`gymnasium.spaces.Box`; ``TypeError`` otherwise."""
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise TypeError(
            f"{name} must be a 1-D gymnasium.spaces.Box (vectors of continuous values), got {space!r}; "
            "learned dynamics models work on flat continuous observations and actions."
        )
    return space


def box_tensors(prefix: str, space: spaces.Box) -> dict[str, Tensor]:
    """The bounds of ``space`` as float64 tensors ``<prefix>.low`` / ``<prefix>.high`` (infinite bounds kept)."""
    return {
        f"{prefix}.low": torch.from_numpy(np.asarray(space.low, dtype=np.float64).copy()),
        f"{prefix}.high": torch.from_numpy(np.asarray(space.high, dtype=np.float64).copy()),
    }


def box_from_tensors(prefix: str, tensors: dict[str, Tensor], dtype: str) -> spaces.Box:
    """The Box written by :func:`box_tensors`, with ``dtype`` (e.g. ``"float32"``)."""
    low, high = (tensors[f"{prefix}.{end}"].cpu().numpy().astype(dtype) for end in ("low", "high"))
    return spaces.Box(low=low, high=high, dtype=np.dtype(dtype))  # type: ignore[arg-type]  # Box takes any dtype


def checked_actions(space: spaces.Box, actions: Any, batch: int | None) -> np.ndarray:
    """``actions`` as float32, shape ``(batch, act_dim)`` (``(act_dim,)`` when ``batch`` is ``None``).

    Raises ``ValueError`` for another shape, a NaN or infinite entry, or an entry outside ``[low, high]`` of
    ``space`` (learned models are only fitted inside the action space; clip with ``np.clip(a, low, high)``).
    """
    values = np.asarray(actions, dtype=np.float64)
    shape = space.shape if batch is None else (batch, *space.shape)
    if values.shape != shape:
        raise ValueError(f"the action must have shape {shape} (the action space's), got {values.shape}.")
    if not np.isfinite(values).all():
        raise ValueError(f"the action holds NaN or infinite entries: {actions!r:.200}.")
    outside = (values < space.low) | (values > space.high)
    if outside.any():
        bad = values[outside]
        raise ValueError(
            f"the action lies outside the action space [{space.low.min()}, {space.high.max()}] in "
            f"{int(outside.sum())} entries (e.g. {bad[0]!r}); clip it with np.clip(action, space.low, space.high)."
        )
    return values.astype(np.float32)


def checked_states(name: str, states: Any, obs_dim: int) -> np.ndarray:
    """``states`` as a float32 ``(N, obs_dim)`` array (a single ``(obs_dim,)`` state becomes one row), finite."""
    values = np.array(states, dtype=np.float32, ndmin=2)
    if values.ndim != 2 or values.shape[1] != obs_dim or len(values) == 0:
        raise ValueError(
            f"{name} must be one observation of size {obs_dim} or a non-empty (N, {obs_dim}) array of them, "
            f"got shape {np.shape(states)}."
        )
    if not np.isfinite(values).all():
        raise ValueError(f"{name} holds NaN or infinite entries; pass finite observations.")
    return values
