"""Hold-out training with per-member early stopping, the recipe of MBPO's model training (Janner et al. 2019,
arXiv 1906.08253) that DyDiff uses for its dynamics and reward models (Zhao et al. 2024, arXiv 2405.19189).

Rows are split once into training and hold-out rows; inputs (and, when asked, targets) are z-scored with the
training rows' statistics; each epoch runs Adam over the training rows (each member over its own bootstrap
resample, when asked), then measures every member's hold-out error and keeps the weights of each member's best
epoch. See :class:`~dyaug.models.config.FitSettings` for the stopping rule.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dyaug.data.normalizers import ZScoreNormalizer
from dyaug.models.config import FitSettings
from dyaug.models.networks import EnsembleMLP
from dyaug.validation import check_int

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclasses.dataclass(frozen=True)
class Seeds:
    """Independent seeds for the hold-out split, the weight initialisation and the batch order, from one seed."""

    split: int
    init: int
    batches: int

    @classmethod
    def of(cls, seed: int) -> Seeds:
        check_int("seed", seed, 0)
        split, init, batches = (int(s) >> 1 for s in np.random.SeedSequence(int(seed)).generate_state(3, np.uint64))
        return cls(split, init, batches)


@dataclasses.dataclass(frozen=True)
class HoldoutData:
    """Normalised training and hold-out rows on the model's device, and the normalizers fitted on the training rows
    (``target_normalizer`` is ``None`` when the targets are used as given)."""

    train_x: Tensor
    train_y: Tensor
    holdout_x: Tensor
    holdout_y: Tensor
    input_normalizer: ZScoreNormalizer
    target_normalizer: ZScoreNormalizer | None


def holdout_data(
    inputs: np.ndarray,
    targets: np.ndarray,
    settings: FitSettings,
    seed: int,
    device: torch.device,
    *,
    normalize_targets: bool,
) -> HoldoutData:
    """Split ``inputs`` (N, in) / ``targets`` (N, out) into hold-out rows, n_h = min(max_holdout, ⌊f N⌋) (at least
    one), and training rows (at least two), chosen uniformly at random with ``seed``; z-score with the training rows."""
    n = len(inputs)
    n_holdout = min(settings.max_holdout, max(1, int(n * settings.holdout_fraction)))
    if n - n_holdout < 2:
        raise ValueError(
            f"the data holds {n} transitions; fitting needs at least 3 (two to train on and one held out)."
        )
    order = np.random.default_rng(seed).permutation(n)
    train, holdout = np.sort(order[n_holdout:]), np.sort(order[:n_holdout])
    input_normalizer = ZScoreNormalizer.fit(inputs[train])
    target_normalizer = ZScoreNormalizer.fit(targets[train]) if normalize_targets else None

    def tensor(x: np.ndarray, normalizer: ZScoreNormalizer | None) -> Tensor:
        values = x if normalizer is None else normalizer.normalize(x)
        return torch.as_tensor(values, dtype=torch.float32, device=device)

    return HoldoutData(
        train_x=tensor(inputs[train], input_normalizer),
        train_y=tensor(targets[train], target_normalizer),
        holdout_x=tensor(inputs[holdout], input_normalizer),
        holdout_y=tensor(targets[holdout], target_normalizer),
        input_normalizer=input_normalizer,
        target_normalizer=target_normalizer,
    )


def seeded_module(factory: Callable[[], ModuleT], seed: int, device: torch.device) -> ModuleT:
    """``factory()`` initialised on the CPU from the global CPU generator seeded with ``seed`` (restored afterwards),
    then moved to ``device``. Only the CPU generator is touched: ``torch.manual_seed`` would also reseed every CUDA
    generator, outside the fork, and restart the noise of whatever trains next from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return factory().to(device)


@dataclasses.dataclass(frozen=True)
class FitRecord:
    """What a fit did: rows used, ``epochs`` and optimizer ``steps`` run, why it stopped (``"patience"``,
    ``"max_epochs"`` or ``"max_steps"``), wall time, each member's hold-out error with the weights it kept,
    and per epoch the mean training loss and the members' mean hold-out error."""

    n_train: int
    n_holdout: int
    epochs: int
    steps: int
    stopped_by: str
    seconds: float
    holdout_error: tuple[float, ...]
    train_losses: tuple[float, ...]
    holdout_curve: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitRecord:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)


def fit_members(
    network: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    error_fn: Callable[[Tensor, Tensor], Tensor],
    data: HoldoutData,
    settings: FitSettings,
    param_groups: list[dict],
    *,
    members: int,
    bootstrap: bool,
    seed: int,
    progress: bool = False,
    desc: str = "fit",
) -> FitRecord:
    """Train ``network`` (every parameter shaped ``(members, ...)``) and leave each member at its best epoch.

    :param loss_fn: ``(x (E, B, in), y (E, B, out)) -> scalar`` training loss of all members.
    :param error_fn: ``(x (E, H, in), y (E, H, out)) -> (E,)`` hold-out error of each member (lower is better).
    :param param_groups: Adam parameter groups (per-layer weight decay), all of ``network``'s trainable parameters.
    :param bootstrap: each member draws its rows from its own resample (with replacement) of the training rows.

    Batch order comes from a ``torch.Generator`` seeded with ``seed``: the same seed gives the same weights on
    the CPU. Raises ``FloatingPointError`` when the training loss or every member's hold-out error is not finite.
    """
    shapes = {name: tuple(p.shape) for name, p in network.named_parameters() if p.ndim == 0 or p.shape[0] != members}
    if shapes:
        raise ValueError(f"every parameter needs the member dimension ({members}) first; these do not: {shapes}.")
    device = data.train_x.device
    generator = torch.Generator(device).manual_seed(seed)
    optimizer = torch.optim.Adam(param_groups, lr=settings.lr, foreach=True)
    n = len(data.train_x)
    if bootstrap:
        rows = torch.randint(n, (members, n), generator=generator, device=device)
    else:
        rows = torch.arange(n, device=device).expand(members, n)
    holdout_x = data.holdout_x.expand(members, *data.holdout_x.shape)
    holdout_y = data.holdout_y.expand(members, *data.holdout_y.shape)
    kept = {name: p.detach().clone() for name, p in network.named_parameters()}
    best = np.full(members, np.inf)
    train_losses: list[float] = []
    holdout_curve: list[float] = []
    steps = epochs = stale = 0
    start = time.perf_counter()
    bar = tqdm(desc=desc, unit="epoch", disable=not progress)
    stopped_by = ""
    try:
        while not stopped_by:
            order = rows[:, torch.randperm(n, generator=generator, device=device)]
            loss_sum, batches = torch.zeros((), device=device), 0
            for begin in range(0, n, settings.batch_size):
                idx = order[:, begin : begin + settings.batch_size]
                loss = loss_fn(data.train_x[idx], data.train_y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                batches += 1
                steps += 1
                if settings.max_steps is not None and steps >= settings.max_steps:
                    break
            epochs += 1
            train_losses.append(float(loss_sum) / batches)
            if not math.isfinite(train_losses[-1]):
                raise FloatingPointError(
                    f"the training loss became NaN or infinite in epoch {epochs}; lower lr or check the data."
                )
            with torch.no_grad():
                error = error_fn(holdout_x, holdout_y).double().cpu().numpy()
            holdout_curve.append(float(error.mean()))
            improved = error < best * (1.0 - settings.min_improvement)
            if improved.any():
                _keep_members(network, kept, torch.as_tensor(improved, device=device))
                best[improved] = error[improved]
                stale = 0
            else:
                stale += 1
            stopped_by = _stop_reason(settings, epochs, steps, stale)
            bar.update(1)
            bar.set_postfix(holdout=f"{holdout_curve[-1]:.4g}")
    finally:
        bar.close()
    if not np.isfinite(best).any():
        raise FloatingPointError("no member reached a finite hold-out error; lower lr or check the data.")
    with torch.no_grad():
        for name, p in network.named_parameters():
            p.copy_(kept[name])
    return FitRecord(
        n_train=n,
        n_holdout=len(data.holdout_x),
        epochs=epochs,
        steps=steps,
        stopped_by=stopped_by,
        seconds=time.perf_counter() - start,
        holdout_error=tuple(float(e) for e in best),
        train_losses=tuple(train_losses),
        holdout_curve=tuple(holdout_curve),
    )


def single_mlp(settings: FitSettings, in_dim: int) -> EnsembleMLP:
    """One ReLU MLP ``in_dim -> [width] * depth -> 1`` (a one-member :class:`EnsembleMLP`)."""
    return EnsembleMLP(1, in_dim, 1, settings.width, settings.depth, "relu")


def fit_single(
    network: EnsembleMLP,
    error_fn: Callable[[Tensor, Tensor], Tensor],
    data: HoldoutData,
    settings: FitSettings,
    *,
    seed: int,
    progress: bool,
    desc: str,
) -> FitRecord:
    """:func:`fit_members` for one network (one member, no bootstrap) trained on the mean of ``error_fn``, the
    error it is also stopped by, with the settings' per-layer weight decay."""
    return fit_members(
        network,
        lambda x, y: error_fn(x, y).mean(),
        error_fn,
        data,
        settings,
        network.parameter_groups(settings.layer_weight_decay()),
        members=1,
        bootstrap=False,
        seed=seed,
        progress=progress,
        desc=desc,
    )


def _keep_members(network: nn.Module, kept: dict[str, Tensor], members: Tensor) -> None:
    """Copy the current weights of the ``members`` (boolean mask) into ``kept``."""
    with torch.no_grad():
        for name, p in network.named_parameters():
            kept[name][members] = p[members]


def _stop_reason(settings: FitSettings, epochs: int, steps: int, stale: int) -> str:
    if settings.max_steps is not None and steps >= settings.max_steps:
        return "max_steps"
    if settings.max_epochs is not None and epochs >= settings.max_epochs:
        return "max_epochs"
    if stale > settings.patience:
        return "patience"
    return ""
