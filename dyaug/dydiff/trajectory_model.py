"""DyDiff's trajectory diffusion model: EDM over windows ``[s_t, a_t]_{t<H}``, conditioned on s_0 and all actions.

Zhao et al. (2024), DyDiff (arXiv 2405.19189), §2-3 of the reimplementation notes. Training overwrites the noisy
input's s_0 and actions with their clean values, x̃ = where(given, y, y + σn), and regresses the full clean y
(EDM loss, Karras et al. 2022, arXiv 2206.00364, Eq. 2 and 8). Sampling writes s_0 and the actions back
after every change of x, churn noise included (:class:`~dyaug.diffusion.Condition`), so the model supplies
the states only. (The official sampler does not write them back after adding the churn noise, so its network
sees perturbed conditions at churned steps; its outputs are overwritten either way.)

An option, ``DyDiffConfig.given_input = "clean"``: the given entries enter the network as y / σ_data at every
σ rather than c_in(σ) y (:class:`~dyaug.diffusion.EDMDenoiser`'s ``clean_input``). With c_in(σ) = 1/√(σ² + σ_data²)
the official preconditioning (``"scaled"``, the default) shrinks the condition towards 0 at the high noise levels
where a window's coarse shape is decided. On forged Hopper data the option gave no clear gain in rollout accuracy
(benchmarks/RESULTS.md, DyDiff), so the default stays the official input.

Another, ``DyDiffConfig.residual``: the states of rows t >= 1 enter the window as their offsets s_t − s_0, min-max
normalised on their own (:func:`offset_normalizer`), and come back as s_0 + offset (:func:`encode_windows`,
:meth:`TrajectoryModel.states_of`). Row 0 and the actions are normalised as before.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dyaug.data.columns import ConstantColumns
from dyaug.data.normalizers import MinMaxNormalizer
from dyaug.data.transitions import Transitions
from dyaug.device import Precision, maybe_compiled
from dyaug.diffusion.conditioning import Condition
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule, edm_loss
from dyaug.diffusion.samplers import _Sampler
from dyaug.diffusion.training import train
from dyaug.distributed import data_parallel
from dyaug.dydiff.config import SAMPLING_FIELDS, DyDiffConfig
from dyaug.dydiff.windows import WindowIndex
from dyaug.generators import checkpointed, fit_identity
from dyaug.persistence import ModelCheckpoint


def encode_windows(
    windows: Tensor, normalizer: MinMaxNormalizer, offsets: MinMaxNormalizer | None, obs_dim: int
) -> Tensor:
    """Normalised windows of raw ones ``(B, H, obs_dim + act_dim)``: every row x̃ = ``normalizer``(x); with
    ``offsets`` (``DyDiffConfig.residual``) the states of rows t >= 1 are ``offsets``(s_t − s_0) instead."""
    x = normalizer.normalize(windows)
    if offsets is None:
        return x
    states = windows[..., :obs_dim]
    moved = torch.cat([offsets.normalize(states[:, 1:] - states[:, :1]), x[:, 1:, obs_dim:]], dim=-1)
    return torch.cat([x[:, :1], moved], dim=1)


def offset_normalizer(observations: np.ndarray, index: WindowIndex, chunk: int = 4096) -> MinMaxNormalizer:
    """The min-max normalizer of s_t − s_0 over every step t >= 1 of every window of ``index`` (padded steps
    repeat their episode's last state, so they add no new offset), computed a ``chunk`` of windows at a time."""
    steps = np.arange(1, index.horizon)
    lows, highs = [], []
    for start in range(0, len(index), chunk):
        first, stop = index.first[start : start + chunk], index.stop[start : start + chunk]
        rows = np.minimum(first[:, None] + steps[None, :], stop[:, None] - 1)
        moved = observations[rows] - observations[first][:, None, :]
        lows.append(moved.min(axis=(0, 1)))
        highs.append(moved.max(axis=(0, 1)))
    return MinMaxNormalizer.fit(np.stack([np.min(lows, axis=0), np.max(highs, axis=0)]))


def given_mask(horizon: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu") -> Tensor:
    """``(1, H, obs_dim + act_dim)`` bool: True on s_0 (row 0, state columns) and on every action column."""
    mask = torch.zeros(1, horizon, obs_dim + act_dim, dtype=torch.bool, device=device)
    mask[:, 0, :obs_dim] = True
    mask[:, :, obs_dim:] = True
    return mask


@dataclasses.dataclass(frozen=True, eq=False)
class TrajectoryModel:
    """A trained trajectory model: the (EMA) network F, the min-max normalizer of rows ``[s, a]`` to [-1, 1]
    (x̃ = 2 (x − min)/(max − min) − 1 per column, statistics of all training rows), with ``config.residual`` the
    normalizer of the state offsets s_t − s_0 (``offsets``), and the sampling settings.
    """

    network: nn.Module
    normalizer: MinMaxNormalizer
    obs_dim: int
    act_dim: int
    config: DyDiffConfig
    constant: ConstantColumns | None = None
    offsets: MinMaxNormalizer | None = None

    def checkpoint_fields(self) -> dict[str, Any]:
        """What :func:`~dyaug.persistence.save_model` needs to store this model (besides its kind and
        config): the network, the normalizer, the sizes and the constant state columns; :meth:`from_checkpoint`
        reads them back."""
        return {
            "modules": {"network": self.network},
            "normalizer": self.normalizer,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "constant_states": None if self.constant is None else self.constant.state(),
            "offset_normalizer": None if self.offsets is None else self.offsets.json_state(),
        }

    @classmethod
    def from_checkpoint(
        cls, checkpoint: ModelCheckpoint, config: DyDiffConfig, device: torch.device
    ) -> TrajectoryModel:
        """The frozen model stored with :meth:`checkpoint_fields`, sampling with ``config`` (the stored one, or
        the stored one with other sampling settings), on ``device``."""
        obs_dim, act_dim = checkpoint.meta["obs_dim"], checkpoint.meta["act_dim"]
        network = config.network(obs_dim + act_dim).to(device)
        network.load_state_dict(checkpoint.states["network"])
        saved = checkpoint.meta.get("constant_states")
        constant = None if saved is None else ConstantColumns.from_state(saved)
        saved = checkpoint.meta.get("offset_normalizer")
        offsets = None if saved is None else MinMaxNormalizer.from_state_dict(saved)
        assert isinstance(checkpoint.normalizer, MinMaxNormalizer)  # checkpoint_fields stores it
        assert offsets is None or isinstance(offsets, MinMaxNormalizer)
        network = network.eval().requires_grad_(False)
        return cls(network, checkpoint.normalizer, obs_dim, act_dim, config, constant, offsets)

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def schedule(self) -> EDMSchedule:
        return self.config.schedule()

    @property
    def sampler(self) -> _Sampler:
        return self.config.sampler()

    def condition(self, s0: Tensor, actions: Tensor) -> Condition:
        """The normalised values of s_0 ``(B, obs_dim)`` and of the actions ``(B, H, act_dim)``, raw units."""
        states = s0[:, None, :].expand(-1, self.horizon, -1)
        values = self.encode(torch.cat([states, actions], dim=-1))
        return Condition(given_mask(self.horizon, self.obs_dim, self.act_dim, s0.device), values)

    def encode(self, windows: Tensor) -> Tensor:
        """Normalised windows of raw ones ``(B, H, obs_dim + act_dim)`` (:func:`encode_windows`)."""
        return encode_windows(windows, self.normalizer, self.offsets, self.obs_dim)

    def denoiser(self, clean: Tensor) -> EDMDenoiser:
        """The EDM denoiser of the EMA network for sampling; ``clean`` marks entries that hold clean values."""
        cache = self.__dict__.setdefault("_compiled", [])
        if not cache:
            cache.append(maybe_compiled(self.network, self.config.compile))
        return trajectory_denoiser(cache[0], self.config, self.config.sample_precision, clean)

    @torch.no_grad()
    def sample(self, s0: Tensor, actions: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Normalised windows ``(B, H, obs_dim + act_dim)`` drawn given s_0 and the actions (raw units), in
        batches of ``config.sample_batch_size``; their s_0 and action entries equal the condition's exactly."""
        condition = self.condition(s0, actions)
        return self._sample(condition.mask.expand_as(condition.values), condition.values, generator)

    def _sample(self, mask: Tensor, values: Tensor, generator: torch.Generator | None) -> Tensor:
        """Normalised windows with the entries ``mask`` (shaped like ``values``) held at ``values``."""
        schedule, sampler = self.schedule, self.sampler
        size = self.config.sample_batch_size
        # Only the entries the model was trained with clean (s_0, the actions) are read at clean scale; other
        # known entries of an inpainting mask enter as c_in(σ) x like the generated ones.
        trained_given = given_mask(self.horizon, self.obs_dim, self.act_dim, values.device)
        parts = []
        for start in range(0, len(values), size):
            condition = Condition(mask[start : start + size], values[start : start + size])
            denoiser = self.denoiser(condition.mask & trained_given)
            shape, device = condition.values.shape, values.device
            parts.append(
                sampler.sample(denoiser, schedule, shape, condition=condition, generator=generator, device=device)
            )
        return torch.cat(parts)

    def states_of(self, x: Tensor, s0: Tensor) -> Tensor:
        """The states ``(B, H, obs_dim)`` in raw units of normalised windows ``x`` whose s_0 is ``s0`` (raw).

        Generated states are clamped to [-1, 1] in normalised space, i.e. to the training data's range per
        dimension, as the official un-normalisation does (with ``residual``: the offset, then s_0 + offset);
        constant columns of the training states are set to their values exactly; row 0 is ``s0`` bit for bit.
        """
        clamped = x[..., : self.obs_dim].clamp(-1.0, 1.0)
        if self.offsets is None:
            states = self.normalizer.unnormalize(torch.cat([clamped, x[..., self.obs_dim :]], dim=-1))
            states = states[..., : self.obs_dim]
        else:  # s_0 + offset, then clamped to the states' range [shift − scale, shift + scale]
            shift, scale = self.normalizer.shift[: self.obs_dim], self.normalizer.scale[: self.obs_dim]
            states = s0[:, None, :] + self.offsets.unnormalize(clamped)
            states = states.clamp(x.new_tensor(shift - scale), x.new_tensor(shift + scale))
        states = states if self.constant is None else self.constant.hold(states)
        return torch.cat([s0[:, None, :], states[:, 1:]], dim=1)

    def resample_states(self, s0: Tensor, actions: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """States ``(B, H, obs_dim)`` in raw units given s_0 ``(B, obs_dim)`` and actions ``(B, H, act_dim)``.

        Generated states are clamped to [-1, 1] in normalised space, i.e. to the training data's range per
        dimension, as the official un-normalisation does; row 0 is s_0 itself (bit for bit).
        """
        return self.states_of(self.sample(s0, actions, generator=generator), s0)

    @torch.no_grad()
    def inpaint_states(self, windows: Tensor, known: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """States ``(B, H, obs_dim)`` in raw units of windows drawn with the entries ``known`` (bool, shaped like
        ``windows``) held at the raw values of ``windows`` ``(B, H, obs_dim + act_dim)``; the other entries'
        values are ignored.

        Replacement inpainting (:class:`~dyaug.diffusion.Condition`): it samples the model's conditional exactly
        where ``known`` is what the model was trained with given (s_0 and every action, :func:`given_mask`) and
        approximately otherwise. Known states are returned bit for bit; generated states are clamped to the
        training data's range as in :meth:`resample_states`. With ``config.residual`` s_0 must be known
        (``ValueError`` otherwise): the other states are generated as offsets from it.
        """
        if windows.ndim != 3 or windows.shape[1:] != (self.horizon, self.obs_dim + self.act_dim):
            raise ValueError(
                f"windows must have shape (B, {self.horizon}, {self.obs_dim + self.act_dim}) (horizon, obs_dim + "
                f"act_dim), got {tuple(windows.shape)}."
            )
        if known.dtype != torch.bool or known.shape != windows.shape:
            raise ValueError(
                f"known must be a bool tensor shaped like windows, got {known.dtype} {tuple(known.shape)}."
            )
        if self.offsets is not None and not bool(known[:, 0, : self.obs_dim].all()):
            raise ValueError(
                "this trajectory model generates states as offsets from s_0 (config.residual), so known[:, 0, "
                ":obs_dim] must be all True; mark s_0 known, or use a model fitted with residual=False."
            )
        states = self.states_of(self._sample(known, self.encode(windows), generator), windows[:, 0, : self.obs_dim])
        return torch.where(known[..., : self.obs_dim], windows[..., : self.obs_dim], states)


def trajectory_denoiser(network: nn.Module, config: DyDiffConfig, precision: Precision, clean: Tensor) -> EDMDenoiser:
    """D(x; σ) of ``network`` under ``config``'s schedule; with ``config.given_input == "clean"`` the entries
    ``clean`` (bool, broadcastable to x) enter the network at clean scale (see the module docstring)."""
    clean_input = clean if config.given_input == "clean" else None
    return EDMDenoiser(network, config.schedule(), precision=precision, clean_input=clean_input)


ONE_STEP_MODELS = ("dynamics", "reward", "terminal")
"""DyDiffConfig fields of the models fitted after the trajectory model (they do not change it)."""


def fit_trajectory_model(
    transitions: Transitions,
    config: DyDiffConfig,
    *,
    seed: int,
    device: torch.device,
    progress: bool,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
) -> tuple[TrajectoryModel, list[float]]:
    """Train the trajectory model on the windows of ``transitions`` (see :class:`~dyaug.dydiff.windows.WindowIndex`);
    returns the model (EMA weights) and the training losses per log window.

    The loss is ``edm_loss`` with ``given`` = s_0 and the actions (:func:`given_mask`) and ``loss_mask`` = the
    real steps of each window; with ``config.residual`` each batch of raw windows is encoded with the state
    offsets (:func:`encode_windows`). :func:`~dyaug.diffusion.training.train` draws its batches from the window
    descriptors, which the loss gathers into windows. With ``checkpoint`` the training resumes from and writes that
    file (see :meth:`~dyaug.dydiff.DyDiff.fit`).
    """
    obs_dim, act_dim = transitions.obs_dim, transitions.act_dim
    rows = np.concatenate([transitions.observations, transitions.actions], axis=1)
    normalizer = MinMaxNormalizer.fit(rows)
    index = WindowIndex.of(transitions, config.horizon)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        network = config.network(obs_dim + act_dim).to(device)
    offsets = offset_normalizer(transitions.observations, index) if config.residual else None
    rows = rows if offsets is not None else normalizer.normalize(rows)  # raw rows are encoded a batch at a time
    data = torch.as_tensor(rows, dtype=torch.float32, device=device)
    given = given_mask(config.horizon, obs_dim, act_dim, device)
    trained = maybe_compiled(data_parallel(network), config.compile)  # DistributedDataParallel under torchrun
    denoiser = trajectory_denoiser(trained, config, config.train_precision, given)

    def loss_fn(descriptors: Tensor) -> Tensor:
        windows, valid = index.gather(data, descriptors)
        if offsets is not None:
            windows = encode_windows(windows, normalizer, offsets, obs_dim)
        return edm_loss(denoiser, windows, given=given, loss_mask=valid)

    result = train(
        loss_fn,
        network,
        index.descriptors(device),
        checkpointed(config.train_config(), checkpoint, checkpoint_every),
        seed=seed,
        progress=progress,
        desc="DyDiff trajectory model",
        checkpoint_path=checkpoint,
        identity=fit_identity(
            config.to_dict(), transitions, denoiser.precision, untrained=(*SAMPLING_FIELDS, *ONE_STEP_MODELS)
        ),
    )
    ema_network = result.ema.module if result.ema is not None else network.eval().requires_grad_(False)
    constant = ConstantColumns.fit(np.concatenate([transitions.observations, transitions.next_observations]))
    model = TrajectoryModel(ema_network, normalizer, obs_dim, act_dim, config, constant, offsets)
    return model, list(result.losses)
