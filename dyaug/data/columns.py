"""Per-column encodings that make RL data easier for a diffusion model, each inverted exactly after sampling.

- :class:`ConstantColumns`: columns that never change in the data (a contact force that is always 0, a fixed
  goal) are copied, not modelled: a model can only get them wrong, and a wrong constant becomes a huge input of
  every model downstream.
- :class:`QuantileTransform`: a column mapped through its empirical CDF onto a standard normal,
  z = Φ⁻¹(F(x)), piecewise linear between knots (the column's quantiles). A column that is 0 in 95% of rows
  becomes a smooth distribution with its mass at one point; the inverse maps the whole interval of that mass
  back to exactly 0 and never leaves the data's range.
- :class:`SymlogTransform`: y = sign(x) log(1 + |x|), for heavy tails (inverse sign(y)(e^|y| − 1)).

All of them are numpy functions of ``(N, D)`` arrays computed in float64; a round trip of data returns it
within float32 rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
from scipy.special import ndtri

Transform = Literal["none", "quantile", "symlog"]


@dataclasses.dataclass(frozen=True, eq=False)
class ConstantColumns:
    """``mask`` (D,) of the columns that hold one value in every row, and those ``values``."""

    mask: np.ndarray
    values: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray) -> ConstantColumns:
        rows = np.asarray(rows)
        mask = (rows == rows[:1]).all(axis=0) if len(rows) else np.zeros(rows.shape[1], bool)
        return cls(mask, np.where(mask, rows[0] if len(rows) else 0.0, 0.0).astype(np.float64))

    @property
    def any(self) -> bool:
        return bool(self.mask.any())

    def hold(self, rows: Any) -> Any:
        """``rows`` (numpy or torch, ``(..., D)``) with the constant columns set to their values exactly."""
        if not self.any:
            return rows
        if isinstance(rows, np.ndarray):
            return np.where(self.mask, self.values.astype(rows.dtype), rows)
        import torch

        mask, values = self._on(rows.device, rows.dtype)
        return torch.where(mask, values, rows)

    def _on(self, device: Any, dtype: Any) -> tuple[Any, Any]:
        """The mask and values as tensors on ``device``, built once per device and dtype (no copy per call)."""
        import torch

        cache = self.__dict__.setdefault("_tensors", {})
        if (device, dtype) not in cache:
            cache[device, dtype] = (
                torch.as_tensor(self.mask, device=device),
                torch.as_tensor(self.values, dtype=dtype, device=device),
            )
        return cache[device, dtype]

    def state(self) -> dict[str, list]:
        return {"mask": self.mask.tolist(), "values": self.values.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, list]) -> ConstantColumns:
        return cls(np.asarray(state["mask"], bool), np.asarray(state["values"], np.float64))


@dataclasses.dataclass(frozen=True, eq=False)
class QuantileTransform:
    """z = Φ⁻¹(F(x)) per column, piecewise linear between knots ``(x_k, z_k)`` (z strictly increasing).

    A value held by at least ``atom_share`` of the rows (an atom: the zero of a sparse column, a saturated
    bound) owns the interval [Φ⁻¹(F(v⁻)), Φ⁻¹(F(v))] of z, as two knots with the same x: it maps forward to the
    interval's middle and every z of the interval maps back to exactly v. Other values are knots at their
    mid-ranks (at most ``max_knots`` of them, the extremes kept), so forward and inverse are the same
    piecewise-linear map read both ways and a round trip is exact up to rounding.
    """

    knots: list[tuple[np.ndarray, np.ndarray]]
    atoms: list[tuple[np.ndarray, np.ndarray]]
    name: ClassVar[str] = "quantile"

    @classmethod
    def fit(cls, columns: np.ndarray, max_knots: int = 1001, atom_share: float = 0.01) -> QuantileTransform:
        knots, atoms = [], []
        for col in np.asarray(columns, np.float64).T:
            values, counts = np.unique(col, return_counts=True)
            below = (np.cumsum(counts) - counts) / len(col)
            share = counts / len(col)
            heavy = share >= atom_share
            light = np.flatnonzero(~heavy)
            if len(light) > max_knots:  # evenly spaced ranks, extremes kept
                light = light[np.unique(np.linspace(0, len(light) - 1, max_knots).round().astype(int))]
            kx = [values[light]]
            kz = [_probit(below[light] + share[light] / 2)]
            kx += [values[heavy], values[heavy]]
            kz += [_probit(below[heavy]), _probit(below[heavy] + share[heavy])]
            x, z = np.concatenate(kx), np.concatenate(kz)
            order = np.lexsort((z, x))
            x, z = x[order], z[order]
            keep = np.concatenate([[True], np.diff(z) > 0])  # clipped probits can coincide at the extremes
            x, z = x[keep], z[keep]
            if len(x) == 1:  # a constant column maps to 0 (ConstantColumns holds it anyway)
                x, z = np.array([x[0], x[0]]), np.array([-1e-6, 1e-6])
            knots.append((x, z))
            atoms.append((values[heavy], _probit(below[heavy] + share[heavy] / 2)))
        return cls(knots, atoms)

    def forward(self, columns: np.ndarray) -> np.ndarray:
        out = []
        for c, (kx, kz), (ax, az) in zip(np.asarray(columns, np.float64).T, self.knots, self.atoms, strict=True):
            i = np.clip(np.searchsorted(kx, c, side="right"), 1, len(kx) - 1)
            x0, x1, z0, z1 = kx[i - 1], kx[i], kz[i - 1], kz[i]
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(x1 > x0, z0 + (np.clip(c, x0, x1) - x0) / (x1 - x0) * (z1 - z0), z1)
            z = np.where(c <= kx[0], kz[0], np.where(c >= kx[-1], kz[-1], z))
            hit = np.searchsorted(ax, c).clip(0, max(len(ax) - 1, 0))
            if len(ax):
                z = np.where(ax[hit] == c, az[hit], z)
            out.append(z)
        return np.stack(out, 1)

    def inverse(self, columns: np.ndarray) -> np.ndarray:
        pairs = zip(np.asarray(columns, np.float64).T, self.knots, strict=True)
        return np.stack([np.interp(c, kz, kx) for c, (kx, kz) in pairs], 1)

    def state(self) -> dict[str, Any]:
        return {
            "knots_x": [kx.tolist() for kx, _ in self.knots],
            "knots_z": [kz.tolist() for _, kz in self.knots],
            "atoms_x": [ax.tolist() for ax, _ in self.atoms],
            "atoms_z": [az.tolist() for _, az in self.atoms],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> QuantileTransform:
        def arrays(a: str, b: str) -> list[tuple[np.ndarray, np.ndarray]]:
            pairs = zip(state[a], state[b], strict=True)
            return [(np.asarray(x, np.float64), np.asarray(z, np.float64)) for x, z in pairs]

        return cls(arrays("knots_x", "knots_z"), arrays("atoms_x", "atoms_z"))


def _probit(p: np.ndarray) -> np.ndarray:
    return ndtri(np.clip(p, 1e-7, 1 - 1e-7))


@dataclasses.dataclass(frozen=True, eq=False)
class SymlogTransform:
    """y = sign(x) log(1 + |x|) per column."""

    name: ClassVar[str] = "symlog"

    @classmethod
    def fit(cls, columns: np.ndarray) -> SymlogTransform:
        return cls()

    def forward(self, columns: np.ndarray) -> np.ndarray:
        x = np.asarray(columns, np.float64)
        return np.sign(x) * np.log1p(np.abs(x))

    def inverse(self, columns: np.ndarray) -> np.ndarray:
        y = np.asarray(columns, np.float64)
        return np.sign(y) * np.expm1(np.abs(y))

    def state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SymlogTransform:
        return cls()


_TRANSFORMS = {t.name: t for t in (QuantileTransform, SymlogTransform)}


def irregular_columns(
    rows: np.ndarray, skip: Iterable[int] = (), *, mode_share: float = 0.5, kurtosis: float = 20.0
) -> np.ndarray:
    """Columns a Gaussian-noise model learns badly: one value in at least ``mode_share`` of the rows (sparse
    contact forces, saturated velocities) or an excess kurtosis above ``kurtosis`` (heavy tails; a normal
    distribution has 0). Constant columns and ``skip`` are never listed. Returns a bool mask (D,)."""
    rows = np.asarray(rows, np.float64)
    n, d = rows.shape
    mask = np.zeros(d, bool)
    skipped = set(int(i) % d for i in skip)
    for j in range(d):
        col = rows[:, j]
        if j in skipped or (col == col[0]).all():
            continue
        _, counts = np.unique(col, return_counts=True)
        std = col.std()
        excess = ((col - col.mean()) ** 4).mean() / std**4 - 3.0 if std > 0 else 0.0
        mask[j] = counts.max() / n >= mode_share or excess > kurtosis
    return mask


@dataclasses.dataclass(frozen=True, eq=False)
class ColumnTransform:
    """``transform`` applied to the columns of ``mask``, the others passed through."""

    mask: np.ndarray
    transform: QuantileTransform | SymlogTransform | None

    @classmethod
    def fit(cls, rows: np.ndarray, mask: np.ndarray, kind: Transform) -> ColumnTransform:
        if kind not in ("none", *_TRANSFORMS):
            raise ValueError(f"unknown column transform {kind!r}; choose none, quantile or symlog.")
        mask = np.asarray(mask, bool) & (kind != "none")
        fitted = _TRANSFORMS[kind].fit(np.asarray(rows)[:, mask]) if mask.any() else None
        return cls(mask, fitted)

    def forward(self, rows: np.ndarray) -> np.ndarray:
        out = np.array(rows, dtype=np.float64)
        if self.transform is not None:
            out[:, self.mask] = self.transform.forward(out[:, self.mask])
        return out

    def inverse(self, rows: np.ndarray) -> np.ndarray:
        out = np.array(rows, dtype=np.float64)
        if self.transform is not None:
            out[:, self.mask] = self.transform.inverse(out[:, self.mask])
        return out

    def state(self) -> dict[str, Any]:
        kind = "none" if self.transform is None else self.transform.name
        return {"mask": self.mask.tolist(), "kind": kind, **({} if self.transform is None else self.transform.state())}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ColumnTransform:
        kind = state["kind"]
        return cls(np.asarray(state["mask"], bool), None if kind == "none" else _TRANSFORMS[kind].from_state(state))


@dataclasses.dataclass(frozen=True, eq=False)
class ColumnCodec:
    """Rows ``(N, D)`` to a model's rows and back: constant columns dropped (and restored exactly), the
    transform applied to its columns, then a z-score (with its floor) on every modelled column but ``skip``.

    ``model_dim`` is the width of the model's rows; ``skip`` are indices into the original rows (a 0/1 flag
    that should stay 0/1, say), which pass through the z-score unchanged.
    """

    constant: ConstantColumns
    transform: ColumnTransform
    normalizer: Any  # ZScoreNormalizer over the modelled columns
    skip: tuple[int, ...]

    @classmethod
    def fit(
        cls,
        rows: np.ndarray,
        *,
        skip: Iterable[int] = (),
        transform: Transform = "none",
        transform_columns: Literal["auto", "all"] = "auto",
    ) -> ColumnCodec:
        from dyaug.data.normalizers import ZScoreNormalizer

        rows = np.asarray(rows)
        d = rows.shape[1]
        skip = tuple(sorted(int(i) % d for i in skip))
        constant = ConstantColumns.fit(rows)
        kept = ~constant.mask
        if transform_columns == "auto":
            chosen = irregular_columns(rows, skip)
        elif transform_columns == "all":
            chosen = np.ones(d, bool)
            chosen[list(skip)] = False
        else:
            raise ValueError(f"transform_columns must be 'auto' or 'all', got {transform_columns!r}.")
        modelled = rows[:, kept]
        column_transform = ColumnTransform.fit(modelled, chosen[kept], transform)
        model_skip = [int(np.count_nonzero(kept[:j])) for j in skip if kept[j]]
        normalizer = ZScoreNormalizer.fit(column_transform.forward(modelled), skip=model_skip)
        return cls(constant, column_transform, normalizer, skip)

    @property
    def dim(self) -> int:
        return int(self.constant.mask.shape[0])

    @property
    def model_dim(self) -> int:
        return int(np.count_nonzero(~self.constant.mask))

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """float32 model rows ``(N, model_dim)``."""
        modelled = np.asarray(rows)[:, ~self.constant.mask]
        return self.normalizer.normalize(self.transform.forward(modelled)).astype(np.float32)

    def decode(self, model_rows: np.ndarray) -> np.ndarray:
        """float32 rows ``(N, D)``: the inverse of :meth:`encode`, constant columns set to their values."""
        modelled = self.transform.inverse(self.normalizer.unnormalize(np.asarray(model_rows, np.float64)))
        rows = np.empty((len(modelled), self.dim), np.float64)
        rows[:, ~self.constant.mask] = modelled
        return self.constant.hold(rows).astype(np.float32)

    def state(self) -> dict[str, Any]:
        """JSON values: everything :meth:`from_state` needs."""
        return {
            "constant": self.constant.state(),
            "transform": self.transform.state(),
            "normalizer": self.normalizer.json_state(),
            "skip": list(self.skip),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ColumnCodec:
        from dyaug.data.normalizers import Normalizer

        return cls(
            ConstantColumns.from_state(state["constant"]),
            ColumnTransform.from_state(state["transform"]),
            Normalizer.from_state_dict(state["normalizer"]),
            tuple(state["skip"]),
        )
