"""``RewardModel``: an MLP r̂(s, a), DyDiff's reward model for its generated transitions.

Zhao et al. (2024), DyDiff (arXiv 2405.19189): the diffusion model generates states only, and the rewards of
its trajectories are predicted by r̂(s_t, a_t), fitted with MSE and the dynamics model's hold-out early stopping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from dyaug.data.coerce import to_transitions
from dyaug.data.normalizers import ZScoreNormalizer
from dyaug.device import resolve_device
from dyaug.models.batches import as_rows, same_batch
from dyaug.models.checkpoint import load_fitted, save_fitted, saved_single_mlp, target_meta, target_normalizer
from dyaug.models.config import RewardConfig
from dyaug.models.fitting import FitRecord, Seeds, fit_single, holdout_data, seeded_module, single_mlp
from dyaug.models.networks import EnsembleLinear, EnsembleMLP

CHECKPOINT_KIND = "reward_model"


class RewardModel:
    """``r̂(s, a) = σ_r · MLP([s, a]_z) + μ_r``: a ``depth`` x ``width`` ReLU MLP on z-scored inputs, trained with
    the MSE of the z-scored reward (statistics of the training rows), kept at its best hold-out epoch.

    >>> rew = RewardModel.fit(minari_dataset, "cpu")
    >>> r = rew(obs, act)                          # (B,) raw reward units

    Attributes: ``obs_dim``, ``act_dim``, ``device``, ``config``, ``holdout_mse`` (MSE of the normalised reward
    on the hold-out rows; predicting the training mean scores about 1.0), ``fit_record``.
    """

    def __init__(
        self,
        network: EnsembleMLP,
        input_normalizer: ZScoreNormalizer,
        target_normalizer: ZScoreNormalizer,
        obs_dim: int,
        config: RewardConfig,
        fit_record: FitRecord,
    ) -> None:
        self.network = network.eval().requires_grad_(False)
        self.input_normalizer = input_normalizer
        self.target_normalizer = target_normalizer
        self.config = config
        self.fit_record = fit_record
        self.holdout_mse = float(fit_record.holdout_error[0])
        self.obs_dim = obs_dim
        self.act_dim = input_normalizer.dim - obs_dim
        self.device: torch.device = cast(EnsembleLinear, network.layers[0]).weight.device

    def __repr__(self) -> str:
        return f"RewardModel(obs_dim={self.obs_dim}, act_dim={self.act_dim}, device={str(self.device)!r})"

    @classmethod
    def fit(
        cls,
        data: Any,
        config: str | RewardConfig = "cpu",
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool = False,
    ) -> RewardModel:
        """Fit r̂ on ``data`` (anything :func:`dyaug.data.coerce.to_transitions` accepts; never modified).

        ``config``: a preset name or a :class:`RewardConfig`; same ``seed``, same weights on the CPU.
        """
        config = RewardConfig.resolve(config)
        seeds = Seeds.of(seed)
        device = resolve_device(device)
        t = to_transitions(data)
        inputs = np.concatenate([t.observations, t.actions], axis=1)
        rows = holdout_data(inputs, t.rewards[:, None], config, seeds.split, device, normalize_targets=True)
        network = seeded_module(lambda: single_mlp(config, inputs.shape[1]), seeds.init, device)

        def error_fn(x: Tensor, y: Tensor) -> Tensor:
            return (network(x) - y).square().mean(dim=(1, 2))

        record = fit_single(network, error_fn, rows, config, seed=seeds.batches, progress=progress, desc="reward model")
        assert rows.target_normalizer is not None  # normalize_targets=True
        return cls(network, rows.input_normalizer, rows.target_normalizer, t.obs_dim, config, record)

    @torch.no_grad()
    def __call__(self, obs: Tensor, act: Tensor) -> Tensor:
        """r̂(s, a), shape (B,), raw reward units, on ``device``; ``obs`` (B, obs_dim), ``act`` (B, act_dim)."""
        obs = as_rows("RewardModel", "obs", obs, self.obs_dim, self.device, torch.float32)
        act = as_rows("RewardModel", "act", act, self.act_dim, self.device, torch.float32)
        same_batch("RewardModel", obs=obs, act=act)
        x = self.input_normalizer.normalize(torch.cat([obs, act], dim=1))
        return self.target_normalizer.unnormalize(self.network(x[None])[0])[:, 0]

    def save(self, path: str | Path) -> Path:
        """One atomic safetensors file (no pickle): weights, config, normalizers, fit record."""
        return save_fitted(path, CHECKPOINT_KIND, self, obs_dim=self.obs_dim, **target_meta(self.target_normalizer))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> RewardModel:
        """A reward model written by :meth:`save`, on ``device``; ``ValueError`` for a checkpoint of another kind."""
        loaded = load_fitted(path, CHECKPOINT_KIND, RewardConfig, saved_single_mlp, device)
        meta = loaded.meta
        return cls(
            loaded.network,
            loaded.input_normalizer,
            target_normalizer(meta),
            meta["obs_dim"],
            loaded.config,
            loaded.fit_record,
        )
