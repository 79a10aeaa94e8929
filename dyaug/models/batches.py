"""Checked batches of observations and actions for the models' forward calls."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def as_rows(
    owner: str, name: str, x: Any, dim: int | None, device: torch.device | None, dtype: torch.dtype | None
) -> Tensor:
    """``x`` as a ``(B, dim)`` tensor (any width when ``dim`` is ``None``) on ``device`` (a tensor's own device
    when ``None``) in ``dtype`` (its own floating dtype when ``None``). Never writes to ``x``.

    Raises ``ValueError`` naming ``owner``, ``name`` and the expected size for any other shape.
    """
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = np.array(x)  # torch cannot wrap read-only memory (e.g. the arrays of Transitions)
    rows = torch.as_tensor(x, device=device)
    if dtype is not None or not rows.is_floating_point():
        rows = rows.to(dtype or torch.float32)
    if rows.ndim != 2 or (dim is not None and rows.shape[1] != dim):
        width = "D" if dim is None else dim
        raise ValueError(
            f"{owner}: {name} must have shape (B, {width}), got {tuple(rows.shape)}; pass a batch of rows of the "
            f"data the model was fitted on ({name}_dim = {width})."
        )
    return rows


def same_batch(owner: str, **rows: Tensor) -> int:
    """The common batch size of ``rows``; ``ValueError`` naming each size when they differ."""
    sizes = {name: int(x.shape[0]) for name, x in rows.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{owner}: batch sizes differ ({sizes}); pass one row of each per transition.")
    return next(iter(sizes.values()))
