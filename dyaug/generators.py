"""What a dyaug generator is, so that a new one (policy-guided diffusion, say) plugs into every integration without
touching them.

- :class:`Generator`: the lifecycle every generator shares: ``fit(data)``, ``fitted``, the fitted data's sizes
  (``None`` before fitting, so that ``isinstance`` checks against these runtime protocols never need a fit),
  ``save(path)`` / ``load(path)``, ``provenance()`` and a seed;
- :class:`TransitionSampler`: a generator of unordered transitions, ``sample(n)`` (SynthER); what the synthetic
  replay buffers and the SB3 ``SynthERCallback`` use;
- :class:`PolicyRollout`: a generator of trajectories that follow a given policy, ``rollout(policy, starts)``
  (DyDiff); what d3rlpy's ``DyDiffAugmenter``, SB3's ``DyDiffCallback`` and :class:`~dyaug.dydiff.phases.RolloutPhases`
  use.

:class:`GeneratorBase` holds the shared parts of dyaug's own generators: the preset, device and seed, the guard
for a generator used before ``fit``, the stream of per-call seeds and the common provenance fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from dyaug.data.transitions import Transitions
from dyaug.device import resolve_device
from dyaug.diffusion.training import TrainConfig
from dyaug.validation import check_int


@runtime_checkable
class Generator(Protocol):
    """The lifecycle of a generator (see the module docstring)."""

    seed: int
    device: torch.device

    # ``*args: Any, **options: Any``: any signature after ``data`` conforms (SynthER's and DyDiff's keyword options)
    def fit(self, data: Any, *args: Any, **options: Any) -> Generator: ...

    @property
    def fitted(self) -> bool: ...

    @property
    def obs_dim(self) -> int | None: ...

    @property
    def act_dim(self) -> int | None: ...

    def save(self, path: str | Path) -> Path: ...

    def provenance(self) -> dict[str, Any]: ...


@runtime_checkable
class TransitionSampler(Generator, Protocol):
    """A generator of unordered synthetic transitions."""

    def sample(self, n: int, *, seed: int | None = None, progress: bool = True) -> Transitions: ...


@runtime_checkable
class PolicyRollout(Generator, Protocol):
    """A generator of trajectories that follow a policy: ``policy`` is a batched torch callable ``states ->
    actions`` on :attr:`device`; ``last_rollout_stats`` describes the last call (``RolloutStats``-like: at least
    ``trajectories``, ``kept``, ``transitions``, ``seconds`` and ``returns``); ``env_id`` names the task the
    generator was fitted on when it knows it."""

    last_rollout_stats: Any

    @property
    def env_id(self) -> str | None: ...

    def rollout(
        self, policy: Callable[[torch.Tensor], torch.Tensor], start_states: Any, *, seed: int | None = None
    ) -> Transitions: ...


@runtime_checkable
class OneStepModel(Protocol):
    """A generator that also predicts one step, s' = f(s, a), with a single-step model (DyDiff: its dynamics
    ensemble): the reference a rollout phase judges its rows' next states against."""

    def one_step(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...


def checkpointed(config: TrainConfig, checkpoint: str | Path | None, every: int) -> TrainConfig:
    """``config`` writing its training state every ``every`` steps (checked >= 1) when a fit has a ``checkpoint``
    file, and never without one."""
    check_int("checkpoint_every", every, hint="training steps between checkpoints")
    return dataclasses.replace(config, checkpoint_every=0 if checkpoint is None else every)


def fit_identity(
    config: dict[str, Any], data: Transitions, precision: str, *, untrained: Iterable[str]
) -> dict[str, Any]:
    """What a resumed fit must share with the fit that wrote its checkpoint (``train``'s ``identity``): the
    generator's config fields but those that do not change the model being trained (``untrained``: the sampling
    settings, the settings of models fitted afterwards), each as ``generator.<field>``; the data's
    :meth:`~dyaug.data.transitions.Transitions.fingerprint`; and the training precision ``"auto"`` resolved to."""
    skip = set(untrained)
    fields = {f"generator.{name}": value for name, value in config.items() if name not in skip}
    return {**fields, "data": data.fingerprint(), "train_precision": precision}


class GeneratorBase:
    """The shared lifecycle of dyaug's generators. A subclass sets ``self._model`` in ``fit``/``load`` (its fitted
    state, with a ``training_data`` dict that holds at least ``obs_dim``, ``act_dim`` and ``env_id``)."""

    def __init__(self, config: Any, preset: str, device: str | torch.device, seed: int) -> None:
        check_int("seed", seed, 0, numpy=False)
        self.config = config
        self.preset = preset
        self.device = resolve_device(device)
        self.seed = seed
        self.training_losses: list[float] = []
        self._model: Any = None
        self._calls = 0

    @property
    def fitted(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        """The fitted state; ``RuntimeError`` before :meth:`fit` or :meth:`load`."""
        if self._model is None:
            name = type(self).__name__
            raise RuntimeError(f"this {name} is not fitted; call .fit(data) or {name}.load(path) first.")
        return self._model

    @property
    def obs_dim(self) -> int | None:
        """The fitted data's observation size (``None`` before fitting)."""
        return None if self._model is None else int(self._model.training_data["obs_dim"])

    @property
    def act_dim(self) -> int | None:
        """The fitted data's action size (``None`` before fitting)."""
        return None if self._model is None else int(self._model.training_data["act_dim"])

    @property
    def env_id(self) -> str | None:
        """The task the generator was fitted on, when the data recorded it (``None`` before fitting)."""
        return None if self._model is None else self._model.training_data.get("env_id")

    def _installed(self, model: Any) -> None:
        """Install a freshly fitted or loaded model: the stream of per-call seeds starts again."""
        self._model = model
        self._calls = 0

    def _call_seed(self, seed: int | None) -> int:
        """``seed`` when given, else the next seed of the stream derived from the generator's seed and the number
        of earlier calls since fitting or loading (a loaded generator repeats the saved one's sequence)."""
        if seed is not None:
            return seed
        derived = int(np.random.SeedSequence([self.seed, self._calls]).generate_state(1, np.uint64)[0] >> 1)
        self._calls += 1
        return derived

    def provenance(self) -> dict[str, Any]:
        """JSON description of this generator for the metadata of saved synthetic data, e.g.
        ``sample(n).to_minari(dataset_id, env_id, synthetic=True, generator=gen.provenance())``."""
        from dyaug import __version__

        return {
            "generator": f"dyaug.{type(self).__name__}",
            "dyaug_version": __version__,
            "preset": self.preset,
            "seed": self.seed,
            "config": self.config.to_dict(),
            "training_data": dict(self.model.training_data),
        }

    def __repr__(self) -> str:
        state = f"fitted on {self._model.training_data}" if self._model is not None else "not fitted"
        return f"{type(self).__name__}(preset={self.preset!r}, device={str(self.device)!r}, seed={self.seed}; {state})"
