"""``TerminalClassifier``: a learned termination function for tasks whose rule is not known.

Not part of DyDiff (Zhao et al. 2024, arXiv 2405.19189), which hand-codes each task's rule; learned terminal
predictors of this kind are used by model-based offline RL, e.g. MOReL (Kidambi et al. 2020, arXiv 2005.05951).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dyaug.data.coerce import to_transitions
from dyaug.data.normalizers import ZScoreNormalizer
from dyaug.device import resolve_device
from dyaug.models.batches import as_rows, same_batch
from dyaug.models.checkpoint import load_fitted, save_fitted, saved_single_mlp
from dyaug.models.config import TerminalConfig
from dyaug.models.fitting import FitRecord, Seeds, fit_single, holdout_data, seeded_module, single_mlp
from dyaug.models.networks import EnsembleLinear, EnsembleMLP

CHECKPOINT_KIND = "terminal_classifier"


class TerminalClassifier:
    """``terminated = 1[ℓ(s, a, s') > 0] ∨ s' not finite``, ℓ a ReLU MLP on the z-scored ``[s, a, s']``.

    Trained with class-balanced binary cross-entropy, ``mean_i[w y_i softplus(−ℓ_i) + (1 − y_i) softplus(ℓ_i)]``
    with ``w = n_negative / n_positive`` of the training rows, so terminal and non-terminal transitions weigh
    the same in total; the hold-out error is the same loss. The threshold ℓ > 0 is p > 1/2 under balanced
    classes, i.e. a transition is called terminal when it looks more like the data's terminal transitions than
    like its other ones.

    Limits: it knows only the terminations the data shows. Terminals are rare (often one per episode), so the
    boundary rests on few examples and is inaccurate near it; balancing trades false negatives for false
    positives (it calls more transitions terminal than the base rate implies); and states far from the data
    (as generated trajectories can be) are classified by extrapolation. Prefer a known rule
    (:func:`~dyaug.models.termination.termination_rule`) whenever the task has one.

    Attributes: ``obs_dim``, ``act_dim``, ``device``, ``config``, ``pos_weight`` (w), ``holdout_loss``,
    ``fit_record``.
    """

    def __init__(
        self,
        network: EnsembleMLP,
        input_normalizer: ZScoreNormalizer,
        obs_dim: int,
        pos_weight: float,
        config: TerminalConfig,
        fit_record: FitRecord,
    ) -> None:
        self.network = network.eval().requires_grad_(False)
        self.input_normalizer = input_normalizer
        self.obs_dim = obs_dim
        self.act_dim = input_normalizer.dim - 2 * obs_dim
        self.pos_weight = float(pos_weight)
        self.config = config
        self.fit_record = fit_record
        self.holdout_loss = float(fit_record.holdout_error[0])
        self.device: torch.device = cast(EnsembleLinear, network.layers[0]).weight.device

    def __repr__(self) -> str:
        return f"TerminalClassifier(obs_dim={self.obs_dim}, act_dim={self.act_dim}, device={str(self.device)!r})"

    @classmethod
    def fit(
        cls,
        data: Any,
        config: str | TerminalConfig = "cpu",
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool = False,
    ) -> TerminalClassifier:
        """Fit on ``data``'s ``terminals`` flags (timeouts are not terminations).

        Raises ``ValueError`` when the training rows hold no terminal or no non-terminal transition.
        """
        config = TerminalConfig.resolve(config)
        seeds = Seeds.of(seed)
        device = resolve_device(device)
        t = to_transitions(data)
        inputs = np.concatenate([t.observations, t.actions, t.next_observations], axis=1)
        rows = holdout_data(inputs, t.terminals[:, None], config, seeds.split, device, normalize_targets=False)
        n_positive = int(rows.train_y.sum())
        n_negative = len(rows.train_y) - n_positive
        if n_positive == 0 or n_negative == 0:
            raise ValueError(
                f"the data holds {int(t.terminals.sum())} terminal transitions of {len(t)} ({n_positive} among the "
                f"training rows); a classifier needs both terminal and non-terminal ones. If the task never "
                "terminates, use dyaug.models.never_terminates."
            )
        pos_weight = torch.tensor(n_negative / n_positive, device=device)
        network = seeded_module(lambda: single_mlp(config, inputs.shape[1]), seeds.init, device)

        def error_fn(x: Tensor, y: Tensor) -> Tensor:
            loss = F.binary_cross_entropy_with_logits(network(x), y, pos_weight=pos_weight, reduction="none")
            return loss.mean(dim=(1, 2))

        record = fit_single(
            network, error_fn, rows, config, seed=seeds.batches, progress=progress, desc="terminal classifier"
        )
        return cls(network, rows.input_normalizer, t.obs_dim, float(pos_weight), config, record)

    @torch.no_grad()
    def logits(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """ℓ(s, a, s'), shape (B,), on ``device``."""
        owner = "TerminalClassifier"
        obs = as_rows(owner, "obs", obs, self.obs_dim, self.device, torch.float32)
        act = as_rows(owner, "act", act, self.act_dim, self.device, torch.float32)
        next_obs = as_rows(owner, "next_obs", next_obs, self.obs_dim, self.device, torch.float32)
        same_batch(owner, obs=obs, act=act, next_obs=next_obs)
        x = self.input_normalizer.normalize(torch.cat([obs, act, next_obs], dim=1))
        return self.network(x[None])[0, :, 0]

    def __call__(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """Boolean (B,) on ``device``: ℓ > 0, or some entry of ``next_obs`` is NaN or infinite."""
        next_obs = as_rows("TerminalClassifier", "next_obs", next_obs, self.obs_dim, self.device, torch.float32)
        return (self.logits(obs, act, next_obs) > 0) | ~torch.isfinite(next_obs).all(dim=1)

    def save(self, path: str | Path) -> Path:
        """One atomic safetensors file (no pickle): weights, config, input normalizer, class weight, fit record."""
        return save_fitted(path, CHECKPOINT_KIND, self, obs_dim=self.obs_dim, pos_weight=self.pos_weight)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TerminalClassifier:
        """A classifier written by :meth:`save`, on ``device``; ``ValueError`` for a checkpoint of another kind."""
        loaded = load_fitted(path, CHECKPOINT_KIND, TerminalConfig, saved_single_mlp, device)
        meta = loaded.meta
        return cls(
            loaded.network,
            loaded.input_normalizer,
            meta["obs_dim"],
            meta["pos_weight"],
            loaded.config,
            loaded.fit_record,
        )
