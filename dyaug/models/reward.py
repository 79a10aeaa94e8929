"""``RewardModel``: an MLP r̂(s, a), DyDiff's reward model for its generated transitions.

Zhao et al. (2024), DyDiff (arXiv 2405.19189): the diffusion model generates states only, and the rewards of
its trajectories are predicted by r̂(s_t, a_t), fitted with MSE and the dynamics model's hold-out early stopping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dyaug.data.coerce import to_transitions
from dyaug.data.normalizers import ZScoreNormalizer
from dyaug.device import resolve_device
from dyaug.diffusion.checkpoint import load_model, save_model
from dyaug.models.batches import as_rows, same_batch
from dyaug.models.config import RewardConfig
from dyaug.models.fitting import FitRecord, Seeds, fit_members, holdout_data, seeded_module
from dyaug.models.networks import EnsembleMLP

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
        self.device: torch.device = network.layers[0].weight.device

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
        network = seeded_module(lambda: _network(config, inputs.shape[1]), seeds.init, device)

        def error_fn(x: Tensor, y: Tensor) -> Tensor:
            return (network(x) - y).square().mean(dim=(1, 2))

        record = fit_members(
            network,
            lambda x, y: error_fn(x, y).mean(),
            error_fn,
            rows,
            config,
            network.parameter_groups(config.layer_weight_decay()),
            members=1,
            bootstrap=False,
            seed=seeds.batches,
            progress=progress,
            desc="reward model",
        )
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
        return save_model(
            path,
            CHECKPOINT_KIND,
            modules={"network": self.network},
            config=self.config.to_dict(),
            normalizer=self.input_normalizer,
            obs_dim=self.obs_dim,
            target_shift=self.target_normalizer.shift.tolist(),
            target_scale=self.target_normalizer.scale.tolist(),
            fit_record=self.fit_record.to_dict(),
        )

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> RewardModel:
        """A reward model written by :meth:`save`, on ``device``; ``ValueError`` for a checkpoint of another kind."""
        device = resolve_device(device)
        checkpoint = load_model(path, CHECKPOINT_KIND, device=device)
        meta, config = checkpoint.meta, RewardConfig(**checkpoint.config)
        network = seeded_module(lambda: _network(config, checkpoint.normalizer.dim), 0, device)
        network.load_state_dict(checkpoint.states["network"])
        target = ZScoreNormalizer(np.asarray(meta["target_shift"]), np.asarray(meta["target_scale"]))
        record = FitRecord.from_dict(meta["fit_record"])
        return cls(network, checkpoint.normalizer, target, meta["obs_dim"], config, record)


def _network(config: RewardConfig, in_dim: int) -> EnsembleMLP:
    return EnsembleMLP(1, in_dim, 1, config.width, config.depth, "relu")
