"""``DynamicsEnsemble``: a probabilistic ensemble of single-step dynamics models (PETS/MBPO), as DyDiff uses it.

Chua et al. (2018), "Deep Reinforcement Learning in a Handful of Trials using Probabilistic Dynamics Models"
(arXiv 1805.12114); Janner et al. (2019), "When to Trust Your Model" (MBPO, arXiv 1906.08253); Zhao et al.
(2024), DyDiff (arXiv 2405.19189), which rolls the ensemble's deterministic mean out from real states to
initialise its diffusion model's trajectories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dyaug.data.coerce import to_transitions
from dyaug.data.columns import ConstantColumns
from dyaug.data.normalizers import ZScoreNormalizer
from dyaug.device import resolve_device
from dyaug.models.batches import as_rows, same_batch
from dyaug.models.checkpoint import load_fitted, save_fitted, target_meta, target_normalizer
from dyaug.models.config import EnsembleConfig
from dyaug.models.fitting import FitRecord, Seeds, fit_members, holdout_data, seeded_module
from dyaug.models.networks import EnsembleMLP
from dyaug.persistence import ModelCheckpoint

CHECKPOINT_KIND = "dynamics_ensemble"


class GaussianEnsemble(nn.Module):
    """E Gaussian heads: ``[μ_e, ρ_e] = MLP_e(x)`` and the log-variance ρ_e soft-clamped into ``[lo_e, hi_e]``:

    ``v = hi − softplus(hi − ρ)``, ``log σ²_e = lo + softplus(v − lo)`` (PETS, Chua et al. 2018, appendix A.1),
    with per-member bounds ``lo``/``hi`` of shape (E, 1, out_dim), learned when ``learn_bounds``. The result lies
    in ``[lo, hi + log(1 + e^{lo − hi})]`` (the excess is below 3e-5 for the default bounds).
    """

    def __init__(
        self,
        members: int,
        in_dim: int,
        out_dim: int,
        width: int,
        depth: int,
        logvar_bounds: tuple[float, float],
        learn_bounds: bool,
    ) -> None:
        super().__init__()
        self.mlp = EnsembleMLP(members, in_dim, 2 * out_dim, width, depth, "silu")
        low, high = logvar_bounds
        self.min_logvar = nn.Parameter(torch.full((members, 1, out_dim), float(low)), requires_grad=learn_bounds)
        self.max_logvar = nn.Parameter(torch.full((members, 1, out_dim), float(high)), requires_grad=learn_bounds)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (E, B, in_dim) -> mean and bounded log-variance, each (E, B, out_dim)."""
        mean, raw = self.mlp(x).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        return mean, self.min_logvar + F.softplus(logvar - self.min_logvar)


def gaussian_nll(mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
    """Per-member Gaussian negative log-likelihood without constants, averaged over rows and dimensions:
    ``mean_{b,d}[(μ − y)² e^{−log σ²} + log σ²]``, shape (E,)."""
    return ((mean - target).square() * torch.exp(-logvar) + logvar).mean(dim=(1, 2))


class DynamicsEnsemble:
    """Gaussian ensemble of s' given (s, a): member e predicts Δs = s' − s ~ N(μ_e, diag σ²_e).

    Inputs are the z-scored ``[s, a]``, targets the z-scored Δs (statistics of the training rows); each member
    is fitted on its own bootstrap resample with the Gaussian NLL of :func:`gaussian_nll`, plus
    ``logvar_bound_penalty · (mean hi − mean lo)`` and per-layer weight decay, and keeps its weights of lowest
    hold-out MSE; the ``n_elites`` members of lowest hold-out MSE are the elites (see :class:`EnsembleConfig`
    and :func:`~dyaug.models.fitting.fit_members`).

    >>> ens = DynamicsEnsemble.fit(minari_dataset, "cpu")
    >>> next_obs = ens.step(obs, act)            # s' = s + μ_e(s, a), e a uniformly random elite per row

    Attributes: ``obs_dim``, ``act_dim``, ``device``, ``config``, ``elites`` (member indices, best first),
    ``holdout_mse`` (per member: MSE of the normalised Δs on the hold-out rows; predicting the training mean
    scores about 1.0), ``fit_record`` (:class:`~dyaug.models.fitting.FitRecord`).
    """

    def __init__(
        self,
        network: GaussianEnsemble,
        input_normalizer: ZScoreNormalizer,
        target_normalizer: ZScoreNormalizer,
        config: EnsembleConfig,
        holdout_mse: np.ndarray,
        fit_record: FitRecord,
        constant: ConstantColumns | None = None,
    ) -> None:
        self.network = network.eval().requires_grad_(False)
        self.constant = constant
        self.input_normalizer = input_normalizer
        self.target_normalizer = target_normalizer
        self.config = config
        self.holdout_mse = np.asarray(holdout_mse, dtype=np.float64)
        ranking = np.argsort(self.holdout_mse, kind="stable")
        self.elites: tuple[int, ...] = tuple(int(i) for i in ranking[: config.n_elites])
        self.fit_record = fit_record
        self.obs_dim = target_normalizer.dim
        self.act_dim = input_normalizer.dim - self.obs_dim
        self.device: torch.device = network.min_logvar.device
        self._elite_index = torch.tensor(self.elites, device=self.device)
        self._target_logvar_shift = torch.tensor(2.0 * np.log(target_normalizer.scale), dtype=torch.float32).to(
            self.device
        )

    def __repr__(self) -> str:
        return (
            f"DynamicsEnsemble(obs_dim={self.obs_dim}, act_dim={self.act_dim}, members={self.config.n_members}, "
            f"elites={self.elites}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        data: Any,
        config: str | EnsembleConfig = "cpu",
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool = False,
    ) -> DynamicsEnsemble:
        """Fit an ensemble on ``data`` (anything :func:`dyaug.data.coerce.to_transitions` accepts; never modified).

        ``config``: a preset name (``"tiny"``, ``"cpu"``, ``"paper"``) or an :class:`EnsembleConfig`. The same
        ``seed`` gives the same weights on the CPU. Raises ``ValueError`` for empty or too small data.
        """
        config = EnsembleConfig.resolve(config)
        seeds = Seeds.of(seed)
        device = resolve_device(device)
        t = to_transitions(data)
        inputs = np.concatenate([t.observations, t.actions], axis=1)
        deltas = t.next_observations.astype(np.float64) - t.observations
        rows = holdout_data(inputs, deltas, config, seeds.split, device, normalize_targets=True)
        network = seeded_module(lambda: _network(config, t.obs_dim, t.act_dim), seeds.init, device)

        def loss_fn(x: Tensor, y: Tensor) -> Tensor:
            mean, logvar = network(x)
            loss = gaussian_nll(mean, logvar, y).mean()
            if config.learn_logvar_bounds:
                loss = loss + config.logvar_bound_penalty * (network.max_logvar.mean() - network.min_logvar.mean())
            return loss

        def error_fn(x: Tensor, y: Tensor) -> Tensor:
            return (network(x)[0] - y).square().mean(dim=(1, 2))

        groups = network.mlp.parameter_groups(config.layer_weight_decay())
        if config.learn_logvar_bounds:
            groups.append({"params": [network.min_logvar, network.max_logvar], "weight_decay": 0.0})
        record = fit_members(
            network,
            loss_fn,
            error_fn,
            rows,
            config,
            groups,
            members=config.n_members,
            bootstrap=config.bootstrap,
            seed=seeds.batches,
            progress=progress,
            desc="dynamics ensemble",
        )
        constant = ConstantColumns.fit(np.concatenate([t.observations, t.next_observations]))
        assert rows.target_normalizer is not None  # normalize_targets=True
        return cls(
            network,
            rows.input_normalizer,
            rows.target_normalizer,
            config,
            np.asarray(record.holdout_error),
            record,
            constant,
        )

    # ---------------------------------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        """Every member's Gaussian over s' in raw units: ``(mean, logvar)``, each (members, B, obs_dim), on
        ``device``; mean = s + unnormalised μ_e, log-variance = log σ²_e + 2 log(Δs scale). Columns constant in
        the training data keep their value exactly in the mean.

        ``obs`` (B, obs_dim) and ``act`` (B, act_dim) in raw units (tensors or arrays; float32). Non-finite inputs
        give non-finite outputs (the termination functions flag them).
        """
        obs, act = self._batch(obs, act)
        x = self.input_normalizer.normalize(torch.cat([obs, act], dim=1))
        mean, logvar = self.network(x.expand(self.config.n_members, *x.shape))
        mean = obs + self.target_normalizer.unnormalize(mean)
        if self.constant is not None:
            mean = self.constant.hold(mean)
        return mean, logvar + self._target_logvar_shift

    def step(self, obs: Tensor, act: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``s' = s + μ_e(s, a)`` (the deterministic mean, as DyDiff rolls out) with ``e`` drawn uniformly from the
        elites for each row, (B, obs_dim); ``generator`` (on ``device``) makes the draw reproducible."""
        mean, _ = self.predict(obs, act)
        pick = torch.randint(len(self.elites), (mean.shape[1],), generator=generator, device=self.device)
        return mean[self._elite_index[pick], torch.arange(mean.shape[1], device=self.device)]

    def mean_step(self, obs: Tensor, act: Tensor) -> Tensor:
        """``s' = s + (1/K) Σ_{e ∈ elites} μ_e(s, a)``, (B, obs_dim)."""
        mean, _ = self.predict(obs, act)
        return mean[self._elite_index].mean(dim=0)

    def _batch(self, obs: Any, act: Any) -> tuple[Tensor, Tensor]:
        owner = "DynamicsEnsemble"
        obs = as_rows(owner, "obs", obs, self.obs_dim, self.device, torch.float32)
        act = as_rows(owner, "act", act, self.act_dim, self.device, torch.float32)
        same_batch(owner, obs=obs, act=act)
        return obs, act

    # --------------------------------------------------------------------------------------- checkpoints
    def save(self, path: str | Path) -> Path:
        """One atomic safetensors file (no pickle): weights, config, normalizers, hold-out errors, fit record."""
        return save_fitted(
            path,
            CHECKPOINT_KIND,
            self,
            **target_meta(self.target_normalizer),
            holdout_mse=self.holdout_mse.tolist(),
            constant_columns=None if self.constant is None else self.constant.state(),
        )

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> DynamicsEnsemble:
        """An ensemble written by :meth:`save`, on ``device``; ``ValueError`` for a checkpoint of another kind."""

        def network(config: EnsembleConfig, checkpoint: ModelCheckpoint) -> GaussianEnsemble:
            obs_dim = len(checkpoint.meta["target_shift"])
            assert checkpoint.normalizer is not None  # load_fitted checked it
            return _network(config, obs_dim, checkpoint.normalizer.dim - obs_dim)

        loaded = load_fitted(path, CHECKPOINT_KIND, EnsembleConfig, network, device)
        meta = loaded.meta
        return cls(
            loaded.network,
            loaded.input_normalizer,
            target_normalizer(meta),
            loaded.config,
            np.asarray(meta["holdout_mse"]),
            loaded.fit_record,
            None if meta.get("constant_columns") is None else ConstantColumns.from_state(meta["constant_columns"]),
        )


def _network(config: EnsembleConfig, obs_dim: int, act_dim: int) -> GaussianEnsemble:
    return GaussianEnsemble(
        config.n_members,
        obs_dim + act_dim,
        obs_dim,
        config.width,
        config.depth,
        config.logvar_bounds,
        config.learn_logvar_bounds,
    )
