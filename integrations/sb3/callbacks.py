"""``SynthERCallback``: online SynthER for SB3 off-policy algorithms (SAC, TD3).

Lu et al. (2023), "Synthetic Experience Replay", online setting: every 10k environment steps a fresh
diffusion model is fitted on the whole real replay buffer and its samples replace the synthetic set; the
agent trains on 50/50 real/synthetic batches with an update-to-data ratio of 20.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dyaug.integrations.sb3.buffer import synthetic_buffer_of
from stable_baselines3.common.callbacks import BaseCallback

from dyaug.generators import TransitionSampler
from dyaug.synther import SynthER
from dyaug.validation import check_int

__all__ = ["SynthERCallback"]


class SynthERCallback(BaseCallback):
    """Refit a fresh :class:`~dyaug.synther.SynthER` on the real buffer and replace the synthetic set.

    :param retrain_every: environment steps between refits (the paper: 10,000). A refit happens at the end of
        the first rollout (just before SB3's gradient steps) where ``num_timesteps`` has passed a multiple of
        it, so with ``train_freq=1`` and one env at steps ``retrain_every``, ``2 · retrain_every``, ...
    :param n_samples: synthetic transitions generated per refit (the paper's command: 1,000,000).
    :param preset: SynthER preset, ``"tiny"``, ``"cpu"``, ``"cpu-v1"`` or ``"paper"``.
    :param real_ratio: when given, set as the buffer's share of real rows when training starts; ``None``
        keeps the buffer's own (``replay_buffer_kwargs=dict(real_ratio=...)``, 0.5 by default as in the paper).
    :param seed: seed of the first generator; refit k (from 0) uses ``seed + k``, so each one is a fresh
        model and runs repeat.
    :param verbose: 1 shows SynthER's progress bars.
    :param synther_overrides: passed to ``SynthER(...)`` (e.g. ``device="cuda"``, ``train_steps=...``).
    :param generator: how a refit makes its fresh generator, ``generator(seed)`` returning an unfitted
        :class:`~dyaug.generators.TransitionSampler` (default: ``SynthER(preset, seed=seed, **synther_overrides)``);
        it is fitted with ``fit(transitions, action_bounds=(low, high), progress=...)``.

    The model must be built with ``replay_buffer_class=SyntheticReplayBuffer``. The paper's update-to-data
    ratio of 20 is SB3's ``gradient_steps=20`` (with ``train_freq=1``): set it on the algorithm. Each refit is
    logged with ``self.logger.record`` under ``synther/`` (synthetic size, fit and sample seconds, refits).
    Action bounds for SynthER's clipping come from the buffer's action space.
    """

    def __init__(
        self,
        retrain_every: int = 10_000,
        n_samples: int = 1_000_000,
        preset: str = "cpu",
        real_ratio: float | None = None,
        seed: int = 0,
        verbose: int = 0,
        generator: Callable[[int], TransitionSampler] | None = None,
        **synther_overrides: Any,
    ) -> None:
        super().__init__(verbose=verbose)
        for name, value in (("retrain_every", retrain_every), ("n_samples", n_samples)):
            check_int(name, value, numpy=False)
        self.retrain_every = retrain_every
        self.n_samples = n_samples
        self.preset = preset
        self.real_ratio = real_ratio
        self.seed = seed
        self.synther_overrides = synther_overrides
        self.make_generator = generator or (lambda seed: SynthER(preset=preset, seed=seed, **synther_overrides))
        self.retrained_at: list[int] = []  # num_timesteps of each refit
        self._last_multiple = 0  # of retrain_every, at the last refit

    def _init_callback(self) -> None:
        buffer = synthetic_buffer_of("SynthERCallback", self.model)
        if self.real_ratio is not None:
            buffer.real_ratio = self.real_ratio

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        multiple = self.num_timesteps // self.retrain_every
        if multiple > self._last_multiple:
            self._last_multiple = multiple
            self.retrain()

    def retrain(self) -> None:
        """Fit a fresh generator on every real transition and install ``n_samples`` of its samples."""
        buffer = synthetic_buffer_of("SynthERCallback", self.model)
        space = buffer.action_space
        progress = self.verbose > 0
        generator = self.make_generator(self.seed + len(self.retrained_at))
        start = time.perf_counter()
        generator.fit(buffer.real_transitions(), action_bounds=(space.low, space.high), progress=progress)
        fitted = time.perf_counter()
        buffer.set_synthetic(generator.sample(self.n_samples, progress=progress))
        sampled = time.perf_counter()
        self.retrained_at.append(self.num_timesteps)
        self.logger.record("synther/synthetic_size", buffer.synthetic_size)
        self.logger.record("synther/fit_seconds", fitted - start)
        self.logger.record("synther/sample_seconds", sampled - fitted)
        self.logger.record("synther/refits", len(self.retrained_at))
