"""Per-dimension affine normalizers for diffusion-model inputs.

Every normalizer is the affine map ``x̃ = (x − shift) / scale`` per feature (last) dimension, with inverse
``x = x̃ · scale + shift``. The subclasses differ only in how ``fit`` chooses ``shift`` and ``scale``:

- :class:`ZScoreNormalizer` (SynthER, Lu et al. 2023, arXiv:2303.06614): ``shift = mean``,
  ``scale = max(std (unbiased), floor) + eps``;
- :class:`MinMaxNormalizer` (DyDiff, Zhao et al. 2024, arXiv:2405.19189):
  ``x̃ = 2 (x − min) / (max − min) − 1``, i.e. ``shift = (max + min) / 2``, ``scale = max((max − min) / 2,
  floor)``; a constant column gets ``scale = 1`` so it maps to 0 instead of dividing by zero.

The floor (a deviation from the documented statistics of both papers) is ``relative_floor · max |x|`` of the
column: a nearly constant column (a goal coordinate with std 1e-4, say) would otherwise turn a deviation of
1e-3 into an input of 10 standard deviations, which a downstream model extrapolates wildly. It binds only for
columns whose spread is below 1% of their magnitude.

Skipped dimensions (e.g. a terminal-flag column) get ``shift = 0`` and ``scale = 1``; ``(x − 0) / 1`` and
``x · 1 + 0`` are exact in floating point, so they pass through bit-exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
RELATIVE_FLOOR = 1e-2


class Normalizer:
    """Affine per-dimension normalizer ``x̃ = (x − shift) / scale``; build one with a subclass's ``fit``.

    ``normalize``/``unnormalize`` accept numpy arrays and torch tensors with any leading dimensions (the
    last one is the feature dimension). Numpy arrays are computed in float64 and returned in their floating
    dtype (float64 for integer input). Tensors stay on their device and in their dtype, are computed in at
    least float32, and never leave the device; the parameters are copied to a device once and cached.
    """

    kind: ClassVar[str] = "affine"

    def __init__(self, shift: np.ndarray, scale: np.ndarray) -> None:
        shift = np.array(shift, dtype=np.float64)
        scale = np.array(scale, dtype=np.float64)
        if shift.ndim != 1 or shift.shape != scale.shape:
            raise ValueError(
                f"{type(self).__name__} needs 1-D shift and scale of equal length, got shapes "
                f"{shift.shape} and {scale.shape}."
            )
        if not (np.isfinite(shift).all() and np.isfinite(scale).all()) or (scale <= 0).any():
            raise ValueError(f"{type(self).__name__} needs finite shift and finite positive scale.")
        shift.flags.writeable = False
        scale.flags.writeable = False
        self.shift = shift
        self.scale = scale
        self._device_params: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.shift.shape[0])

    def normalize(self, x: ArrayT) -> ArrayT:
        """``(x − shift) / scale`` along the last dimension."""
        shift, scale, compute = self._params_for(x)
        return _cast_back((_as_compute(x, compute) - shift) / scale, x)

    def unnormalize(self, x: ArrayT) -> ArrayT:
        """``x · scale + shift`` along the last dimension (inverse of :meth:`normalize`)."""
        shift, scale, compute = self._params_for(x)
        return _cast_back(_as_compute(x, compute) * scale + shift, x)

    def state_dict(self) -> dict[str, np.ndarray | str]:
        """Plain float64 arrays ``shift``/``scale`` plus the ``kind`` string (no pickled objects)."""
        return {"kind": self.kind, "shift": self.shift.copy(), "scale": self.scale.copy()}

    def json_state(self) -> dict[str, list[float] | str]:
        """:meth:`state_dict` with lists for arrays (a JSON value); :meth:`from_state_dict` reads it back."""
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Normalizer:
        """Rebuild a normalizer saved by :meth:`state_dict` as the class named by ``state["kind"]``.

        ``Normalizer.from_state_dict`` accepts any kind; a subclass accepts only its own.
        """
        classes: list[type[Normalizer]] = [Normalizer, *Normalizer.__subclasses__()]
        kinds = {c.kind: c for c in classes}
        missing = {"kind", "shift", "scale"} - set(state)
        if missing:
            raise ValueError(f"normalizer state is missing {sorted(missing)}; pass the dict from state_dict().")
        kind = str(state["kind"])
        if kind not in kinds:
            raise ValueError(f"unknown normalizer kind {kind!r}; expected one of {sorted(kinds)}.")
        if cls is not Normalizer and kind != cls.kind:
            raise ValueError(
                f"{cls.__name__}.from_state_dict got a {kind!r} state; load it with Normalizer.from_state_dict."
            )
        return kinds[kind](np.asarray(state["shift"]), np.asarray(state["scale"]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"

    # ---------------------------------------------------------------- helpers
    def _params_for(
        self, x: np.ndarray | torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, type] | tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        if isinstance(x, torch.Tensor):
            self._check_dim(x.shape)
            compute = torch.promote_types(x.dtype, torch.float32)
            key = (x.device, compute)
            if key not in self._device_params:
                self._device_params[key] = (
                    torch.tensor(self.shift, dtype=compute, device=x.device),
                    torch.tensor(self.scale, dtype=compute, device=x.device),
                )
            return (*self._device_params[key], compute)
        if isinstance(x, np.ndarray):
            self._check_dim(x.shape)
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
                raise TypeError(f"{type(self).__name__} needs a real numeric array, got dtype {x.dtype}.")
            return self.shift, self.scale, np.float64
        raise TypeError(
            f"{type(self).__name__} works on numpy arrays or torch tensors, got {type(x).__name__}; "
            "wrap the data with np.asarray(...) or torch.as_tensor(...)."
        )

    def _check_dim(self, shape: tuple[int, ...]) -> None:
        if len(shape) == 0 or shape[-1] != self.dim:
            got = shape[-1] if len(shape) else "a scalar"
            raise ValueError(
                f"{type(self).__name__} expects feature dimension {self.dim} (last axis), got {got} "
                f"(shape {tuple(shape)}); pass data laid out like the data it was fitted on."
            )


class ZScoreNormalizer(Normalizer):
    """SynthER's standard normalizer: ``x̃ = (x − μ) / (σ + eps)``, σ the unbiased standard deviation."""

    kind: ClassVar[str] = "zscore"

    @classmethod
    def fit(
        cls,
        x: np.ndarray | torch.Tensor,
        skip: Iterable[int] = (),
        eps: float = 1e-5,
        relative_floor: float = RELATIVE_FLOOR,
    ) -> ZScoreNormalizer:
        """Statistics of ``x`` (N, D), N ≥ 2, computed in float64; dimensions in ``skip`` pass through. The
        scale is at least ``relative_floor · max |x|`` per column (see the module docstring)."""
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}.")
        data, skipped = _fit_inputs(cls.__name__, x, skip, min_rows=2)
        shift = data.mean(axis=0)
        scale = np.maximum(data.std(axis=0, ddof=1), _floor(data, relative_floor)) + eps
        return cls(np.where(skipped, 0.0, shift), np.where(skipped, 1.0, scale))


class MinMaxNormalizer(Normalizer):
    """DyDiff's normalizer to [−1, 1]: ``x̃ = 2 (x − min) / (max − min) − 1`` per dimension.

    A constant column (max = min) has no range; it gets ``scale = 1`` and is mapped to 0.
    """

    kind: ClassVar[str] = "minmax"

    @classmethod
    def fit(
        cls, x: np.ndarray | torch.Tensor, skip: Iterable[int] = (), relative_floor: float = RELATIVE_FLOOR
    ) -> MinMaxNormalizer:
        """Range of ``x`` (N, D), N ≥ 1, computed in float64; dimensions in ``skip`` pass through. The half range
        is at least ``relative_floor · max |x|`` per column (see the module docstring)."""
        data, skipped = _fit_inputs(cls.__name__, x, skip, min_rows=1)
        low, high = data.min(axis=0), data.max(axis=0)
        half_range = (high - low) / 2.0
        shift = (high + low) / 2.0
        scale = np.where(half_range > 0, np.maximum(half_range, _floor(data, relative_floor)), 1.0)
        return cls(np.where(skipped, 0.0, shift), np.where(skipped, 1.0, scale))


def _floor(data: np.ndarray, relative_floor: float) -> np.ndarray:
    if not relative_floor >= 0:
        raise ValueError(f"relative_floor must be >= 0, got {relative_floor}.")
    return relative_floor * np.abs(data).max(axis=0)


def _fit_inputs(
    name: str, x: np.ndarray | torch.Tensor, skip: Iterable[int], min_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """``x`` as a float64 (N, D) array and a boolean mask of the skipped dimensions, both validated."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()  # fitting is a one-off pass over the data
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < min_rows or data.shape[1] == 0:
        raise ValueError(
            f"{name}.fit needs data of shape (N, D) with N >= {min_rows} and D >= 1, got {data.shape}; "
            "flatten leading dimensions with x.reshape(-1, D)."
        )
    if not np.isfinite(data).all():
        raise ValueError(f"{name}.fit got NaN or Inf values; clean the data before fitting.")
    skipped = np.zeros(data.shape[1], dtype=bool)
    for index in skip:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"{name}.fit skip entries must be ints, got {index!r}.")
        if not -data.shape[1] <= index < data.shape[1]:
            raise ValueError(f"{name}.fit skip index {index} is out of range for D={data.shape[1]}.")
        skipped[index] = True
    return data, skipped


def _as_compute(x: np.ndarray | torch.Tensor, compute: torch.dtype | type) -> np.ndarray | torch.Tensor:
    if isinstance(x, torch.Tensor):
        assert isinstance(compute, torch.dtype)  # _params_for pairs a tensor with a torch dtype
        return x.to(compute)  # no copy when x already has the compute dtype
    assert isinstance(compute, type)  # and an array with a numpy scalar type
    return x.astype(compute, copy=False)


def _cast_back(y: np.ndarray | torch.Tensor, like: ArrayT) -> ArrayT:
    if isinstance(like, torch.Tensor):
        assert isinstance(y, torch.Tensor)  # computed from a tensor like ``like``
        return y.to(like.dtype) if like.is_floating_point() else y
    assert isinstance(y, np.ndarray)
    out_dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64
    return y.astype(out_dtype, copy=False)
