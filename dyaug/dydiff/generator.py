"""``DyDiff``: fit DyDiff's three models on RL data and generate policy-consistent synthetic trajectories.

Zhao et al. (2024), "Diffusion Models for Policy-Consistent Trajectory Generation" / DyDiff (arXiv 2405.19189).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dyaug.data.coerce import env_id_of, to_transitions
from dyaug.data.transitions import Transitions
from dyaug.device import check_same_device, resolve_device
from dyaug.diffusion.settings import check_sampling_overrides
from dyaug.dydiff.config import SAMPLING_FIELDS, DyDiffConfig, resolve_config
from dyaug.dydiff.filters import TrajectoryFilter, make_filter
from dyaug.dydiff.rollout import Dynamics, Policy, RewardFn, RolloutEngine
from dyaug.dydiff.trajectory_model import TrajectoryModel, fit_trajectory_model
from dyaug.generators import GeneratorBase
from dyaug.models import DynamicsEnsemble, RewardModel, TerminationFn, termination_for, termination_rule
from dyaug.models.checkpoint import check_savable, load_models, save_models
from dyaug.models.support import DataSupport
from dyaug.persistence import load_model, save_model, write_directory
from dyaug.validation import check_int

CHECKPOINT_KIND = "dydiff"
MAIN_FILE = "dydiff.safetensors"


@dataclasses.dataclass(frozen=True)
class RolloutStats:
    """What the last :meth:`DyDiff.rollout` call did.

    ``trajectories`` generated, ``kept`` by the filter (``filtered`` the others), ``transitions`` returned,
    ``terminated``: kept trajectories that end in a predicted terminal; ``truncated``: generated trajectories cut
    before a state outside the data's support, ``clipped_rewards``: predicted rewards clipped to the data's range
    (both 0 without a support); ``returns`` (float64, one per generated trajectory) the predicted returns the
    filter judged, ``kept_indices`` into them; ``seconds`` of wall time.
    """

    trajectories: int
    kept: int
    transitions: int
    terminated: int
    returns: np.ndarray
    kept_indices: np.ndarray
    seconds: float
    truncated: int = 0
    clipped_rewards: int = 0

    @property
    def filtered(self) -> int:
        return self.trajectories - self.kept

    @classmethod
    def merged(cls, parts: Sequence[RolloutStats]) -> RolloutStats:
        """The stats of one rollout made of ``parts`` (its shards, in order): counts summed, returns concatenated,
        kept indices shifted into the concatenation, the slowest part's seconds."""
        if not parts:
            raise ValueError("merged() needs at least one part.")
        offsets = np.cumsum([0, *(p.trajectories for p in parts[:-1])])
        total = {name: sum(getattr(p, name) for p in parts) for name in _COUNTS}
        return cls(
            **total,
            returns=np.concatenate([p.returns for p in parts]),
            kept_indices=np.concatenate([p.kept_indices + offset for p, offset in zip(parts, offsets, strict=True)]),
            seconds=max(p.seconds for p in parts),
        )


_COUNTS = ("trajectories", "kept", "transitions", "terminated", "truncated", "clipped_rewards")


@dataclasses.dataclass(frozen=True, eq=False)
class FittedDyDiff:
    """DyDiff's fitted models: the trajectory diffusion model, the single-step dynamics, the reward model and
    the termination function, plus a record of the training data."""

    trajectory_model: TrajectoryModel
    dynamics: Dynamics
    reward: RewardFn
    termination: TerminationFn
    training_data: dict[str, Any]
    support: DataSupport | None = None


class DyDiff(GeneratorBase):
    """DyDiff (Zhao et al. 2024): synthetic trajectories that follow a given policy.

    ``fit`` trains (or takes) three models: a trajectory diffusion model of min-max normalised windows
    ``[s_t, a_t]_{t<H}`` conditioned on s_0 and the actions, a Gaussian dynamics ensemble
    (:class:`~dyaug.models.DynamicsEnsemble`) and a reward model r̂(s, a) (:class:`~dyaug.models.RewardModel`);
    terminations come from the task's known rule (Gymnasium's Hopper, Walker2d, HalfCheetah v5) or, for other
    tasks, from a :class:`~dyaug.models.TerminalClassifier` learned on the data's terminal flags.
    ``rollout`` rolls the policy out in the dynamics model, then alternately resamples the states with the
    diffusion model and relabels the actions with the policy (see :mod:`dyaug.dydiff.rollout`), and keeps the
    trajectories a return filter selects (:mod:`dyaug.dydiff.filters`).

    Deliberate deviations from the official code, each documented where it is made: padded window steps are
    masked out of the loss instead of learned (:mod:`~dyaug.dydiff.windows`); s_0 and the actions are written
    back after the churn noise too (:mod:`~dyaug.dydiff.trajectory_model`); a predicted return stops at the
    first predicted terminal (:meth:`~dyaug.dydiff.rollout.Trajectories.returns`); both filters keep
    max(1, ⌊ρ B⌋) trajectories and the softmax draw uses Gumbel-top-k (:mod:`~dyaug.dydiff.filters`);
    trajectories that never terminate end with ``timeouts = 1``; the ``"paper"`` preset trains at a constant
    learning rate (:data:`~dyaug.dydiff.config.PRESETS`). ``average=False`` is an option the official code lacks.

    >>> gen = DyDiff(preset="cpu", device="auto", seed=0).fit(minari_dataset)   # or Transitions, d3rlpy/SB3 buffers
    >>> synthetic = gen.rollout(policy, start_states)     # policy: batched torch callable on gen.device
    >>> gen.last_rollout_stats.kept, gen.last_rollout_stats.returns
    >>> gen.save("dydiff-hopper"); gen = DyDiff.load("dydiff-hopper")

    :param preset: ``"tiny"`` (tests), ``"cpu"`` (minutes on 2 cores), ``"cpu-v1"`` (``"cpu"`` with its former
        Heun sampler) or ``"paper"`` (the official settings).
    :param horizon: H, the trajectory length (``None``: the preset's, 100 for ``"paper"``).
    :param iterations: resample/relabel rounds per rollout (``None``: the preset's, 2).
    :param device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
    :param seed: seeds every model's initialisation and training, and the rollouts: the same seed on the same
        data and policy gives the same synthetic data (on the CPU).
    :param overrides: fields of :class:`DyDiffConfig` replacing the preset's (``TypeError`` for others).
    """

    config: DyDiffConfig
    _model: FittedDyDiff | None

    def __init__(
        self,
        preset: str = "cpu",
        horizon: int | None = None,
        iterations: int | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        **overrides: Any,
    ) -> None:
        named = {k: v for k, v in (("horizon", horizon), ("iterations", iterations)) if v is not None}
        super().__init__(resolve_config(preset, {**overrides, **named}), preset, device, seed)
        self.last_rollout_stats: RolloutStats | None = None
        self._warned: set[str] = set()

    # ----------------------------------------------------------------------------------------- fitting
    def fit(
        self,
        data: Any,
        *,
        env_id: str | None = None,
        dynamics: Dynamics | None = None,
        reward: RewardFn | None = None,
        termination: TerminationFn | None = None,
        progress: bool = True,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 1000,
    ) -> DyDiff:
        """Train the models on ``data`` (see :func:`dyaug.data.coerce.to_transitions`); ``data`` is never modified.

        A model passed in (e.g. ``dynamics=DynamicsEnsemble.load(path)``) is used as it is instead of being
        trained. Termination: ``termination`` when given, else the known rule of ``env_id`` (default: the
        environment of a Minari dataset), else a :class:`~dyaug.models.TerminalClassifier` fitted on the data's
        terminal flags (config ``terminal``). Data without any terminal and without a known rule raises
        ``ValueError``: pass ``termination=dyaug.models.never_terminates`` for a task that never terminates.

        With ``checkpoint`` (a file path) the trajectory model's training state, most of a fit's time, is written
        there atomically every ``checkpoint_every`` steps and at the end, and a fit that finds the file resumes from
        it: on the CPU the weights equal an uninterrupted fit's. It resumes only the same data
        (:meth:`Transitions.fingerprint`), trajectory-model settings (sampling ones and the one-step models' may
        change), seed and training precision, else ``ValueError`` naming what differs (with
        ``train_precision="auto"``, pin the precision the checkpoint names to resume where "auto" chooses the
        other). The file stays after the fit: a later fit with it trains nothing; delete it to start over. The
        one-step models are refitted (minutes). Returns ``self``.
        """
        transitions = to_transitions(data)
        config, device, seed = self.config, self.device, self.seed
        env_id = env_id if env_id is not None else env_id_of(data)
        if (
            termination is None
            and (env_id is None or termination_rule(env_id) is None)
            and not transitions.terminals.any()
        ):
            raise ValueError(
                f"the data has no terminal transition to learn terminations from and env_id={env_id!r} has no known "
                "rule; pass env_id='Hopper-v5' (or another known task), or termination=dyaug.models.never_terminates "
                "for a task that never terminates."
            )
        for name, given in (("dynamics", dynamics), ("reward", reward), ("termination", termination)):
            _check_sizes(name, given, transitions)
        check_same_device({"dynamics": dynamics, "reward": reward, "termination": termination}, device, "DyDiff")
        trajectory_model, losses = fit_trajectory_model(
            transitions,
            config,
            seed=seed,
            device=device,
            progress=progress,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )
        if dynamics is None:
            dynamics = DynamicsEnsemble.fit(
                transitions, config.model_config("dynamics"), seed=seed, device=device, progress=progress
            )
        if reward is None:
            reward = RewardModel.fit(
                transitions, config.model_config("reward"), seed=seed, device=device, progress=progress
            )
        if termination is None:
            termination = termination_for(
                env_id,
                data=transitions,
                config=config.model_config("terminal"),
                seed=seed,
                device=device,
                progress=progress,
            )
        model = FittedDyDiff(
            trajectory_model=trajectory_model,
            dynamics=dynamics,
            reward=reward,
            termination=termination,
            training_data={
                "id": getattr(data, "id", None),
                "n_transitions": len(transitions),
                "obs_dim": transitions.obs_dim,
                "act_dim": transitions.act_dim,
                "env_id": env_id,
            },
            support=DataSupport.fit(transitions, config.horizon),
        )
        self._installed(model)
        self.training_losses = losses
        return self

    def engine(self) -> RolloutEngine:
        """The rollout engine over the fitted models (what :meth:`rollout` runs)."""
        model = self.model
        traj = model.trajectory_model
        return RolloutEngine(
            dynamics=model.dynamics,
            reward=model.reward,
            termination=model.termination,
            resampler=traj,
            horizon=traj.horizon,
            obs_dim=traj.obs_dim,
            act_dim=traj.act_dim,
            support=self._support(),
            labels=self.config.labels,
        )

    def _support(self) -> DataSupport | None:
        """The fitted data's support with the config's margin, or ``None`` when the config turns it off."""
        support, margin = self.model.support, self.config.support_margin
        if support is None or margin is None:
            return None
        return dataclasses.replace(support, margin=margin)

    # ---------------------------------------------------------------------------------------- rollouts
    def rollout(
        self,
        policy: Policy,
        start_states: Tensor | np.ndarray,
        *,
        filter: str | TrajectoryFilter | None = None,
        iterations: int | None = None,
        average: bool | None = None,
        seed: int | None = None,
    ) -> Transitions:
        """Policy-consistent synthetic transitions from ``start_states`` (B, obs_dim), raw observations.

        ``policy`` is any batched torch callable ``states (N, obs_dim) -> actions (N, act_dim)`` working on
        :attr:`device`; it is called without gradients, on the start states and on B·H rows after each
        resampling. After the last relabelling every stored action is exactly ``policy(stored state)``.

        Returns float32 :class:`Transitions`, trajectory after trajectory: rows (s_t, a_t, r̂(s_t, a_t),
        s_{t+1}, done_t) for t = 0..H − 2 of the trajectories the filter keeps, each truncated after its first
        predicted terminal (``terminals = 1``); a trajectory that never terminates has ``timeouts = 1`` on its
        last row. ``last_rollout_stats`` (:class:`RolloutStats`) records counts and the predicted returns.

        Per call, ``None`` means the config's value: ``filter`` (a name in
        :data:`~dyaug.dydiff.filters.FILTERS`, ``"none"`` to keep all, or a
        :class:`~dyaug.dydiff.filters.TrajectoryFilter`), ``iterations``, ``average``. Randomness: ``seed``
        when given, else the generator's seed and the number of earlier ``rollout`` calls since fitting or
        loading; same seed, same rollout on the CPU.
        """
        start = time.perf_counter()
        iterations = self.config.iterations if iterations is None else iterations
        average = self.config.average if average is None else average
        check_int("iterations", iterations, 0, numpy=False)
        if not isinstance(average, bool):
            raise TypeError(f"average must be True or False, got {average!r}.")
        trajectory_filter = self._filter(filter)
        engine = self.engine()
        seed = self._call_seed(seed)
        generator = torch.Generator(self.device).manual_seed(seed)
        trajectories = engine.run(
            policy, self._start_states(start_states), iterations=iterations, average=average, generator=generator
        )
        returns = trajectories.returns()
        kept = trajectory_filter(returns, generator)
        if not isinstance(kept, Tensor) or kept.ndim != 1 or kept.dtype != torch.int64:
            raise ValueError(
                f"the trajectory filter must return a 1-D int64 tensor of kept indices, got {kept!r:.80}; "
                "see dyaug.dydiff.filters.TrajectoryFilter."
            )
        selected = trajectories.select(kept)
        synthetic = selected.to_transitions()
        truncated = int(trajectories.truncated().sum()) if trajectories.inside is not None else 0
        clipped = trajectories.clipped_rewards
        self.last_rollout_stats = stats = RolloutStats(
            trajectories=len(trajectories),
            kept=len(selected),
            transitions=len(synthetic),
            terminated=int(synthetic.terminals.sum()),
            returns=returns.cpu().numpy(),
            kept_indices=kept.cpu().numpy(),
            seconds=time.perf_counter() - start,
            truncated=truncated,
            clipped_rewards=0 if clipped is None else int(clipped),
        )
        self._warn_off_support(stats)
        return synthetic

    @torch.no_grad()
    def one_step(self, observations: Tensor, actions: Tensor) -> Tensor:
        """s' = s + (1/K) Σ_{e ∈ elites} μ_e(s, a), the dynamics ensemble's one-step prediction (raw units, on
        :attr:`device`): the reference for the trajectory model's next states
        (:class:`~dyaug.generators.OneStepModel`)."""
        return self.model.dynamics.mean_step(observations.to(self.device), actions.to(self.device))

    def _warn_off_support(self, stats: RolloutStats) -> None:
        """Warn once per generator when most trajectories of a rollout left the data's support, and once when the
        predicted returns lie far outside the data's (see :mod:`dyaug.models.support`)."""
        support = self._support()
        if support is None:
            return
        share = stats.truncated / max(stats.trajectories, 1)
        if share > 0.5 and "support" not in self._warned:
            self._warned.add("support")
            warnings.warn(
                f"DyDiff: {share:.0%} of the trajectories of this rollout left the data's support and were cut "
                f"(RolloutStats.truncated); the models extrapolate for this policy. Fit longer, shorten the "
                f"horizon, or widen support_margin (now {support.margin}) if the data's range is too narrow.",
                RuntimeWarning,
                stacklevel=3,
            )
        if support.returns_far_outside(stats.returns) and "returns" not in self._warned:
            self._warned.add("returns")
            warnings.warn(
                f"DyDiff: the mean predicted return of this rollout, {float(np.mean(stats.returns)):.4g}, lies far "
                f"outside the data's {self.config.horizon}-step returns [{support.return_low:.4g}, "
                f"{support.return_high:.4g}]; the reward model extrapolates. Check it before training on the rollouts.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _filter(self, filter: str | TrajectoryFilter | None) -> TrajectoryFilter:
        if filter is None:
            return self.config.trajectory_filter()
        if isinstance(filter, str):
            return make_filter(filter, self.config.keep_fraction, self.config.temperature)
        if not isinstance(filter, TrajectoryFilter):
            raise TypeError(f"filter must be a name, a TrajectoryFilter or None, got {type(filter).__name__}.")
        return filter

    def _start_states(self, start_states: Tensor | np.ndarray) -> Tensor:
        try:
            if isinstance(start_states, np.ndarray):  # a copy: the caller's array may be read-only (Transitions)
                start_states = np.array(start_states, dtype=np.float32)
            return torch.as_tensor(start_states, dtype=torch.float32, device=self.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                "start_states must be a (B, obs_dim) array or tensor of observations, got "
                f"{type(start_states).__name__}."
            ) from err

    # ------------------------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory of safetensors files, replaced as a whole: ``dydiff.safetensors`` (the
        trajectory model with its normalizer and config, the data's support, the training record) and the
        single-step models (:func:`dyaug.models.checkpoint.save_models`). :meth:`load` restores it exactly.
        ``TypeError`` when a model passed to :meth:`fit` is not dyaug's."""
        model = self.model
        traj = model.trajectory_model
        check_savable(model.dynamics, model.reward, model.termination)

        def write(directory: Path) -> None:
            termination = save_models(directory, model.dynamics, model.reward, model.termination)
            save_model(
                directory / MAIN_FILE,
                CHECKPOINT_KIND,
                config=self.config.to_dict(),
                **traj.checkpoint_fields(),
                preset=self.preset,
                seed=self.seed,
                termination=termination,
                training_data=model.training_data,
                training_losses=self.training_losses,
                support=None if model.support is None else model.support.state(),
            )

        return write_directory(path, write, marker=MAIN_FILE, kind="DyDiff")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto", **sampling: Any) -> DyDiff:
        """A generator saved by :meth:`save`, on ``device``; ``ValueError`` for a directory of another kind.

        ``sampling`` replaces settings that do not change the trained models (:data:`SAMPLING_FIELDS`), e.g.
        ``DyDiff.load(path, sample_precision="bf16", sampler_steps=24)``; other fields raise ``ValueError``.
        """
        path, device = Path(path), resolve_device(device)
        check_sampling_overrides("DyDiff", sampling, SAMPLING_FIELDS)
        if not (path / MAIN_FILE).is_file():
            raise ValueError(
                f"{path} is not a DyDiff checkpoint directory (no {MAIN_FILE}); write one with DyDiff.save."
            )
        checkpoint = load_model(path / MAIN_FILE, CHECKPOINT_KIND, device=device)
        meta = checkpoint.meta
        generator = cls(preset=meta["preset"], device=device, seed=meta["seed"], **{**checkpoint.config, **sampling})
        dynamics, reward, termination = load_models(path, meta["termination"], device)
        trajectory_model = TrajectoryModel.from_checkpoint(checkpoint, generator.config, device)
        sizes = {"obs_dim": trajectory_model.obs_dim, "act_dim": trajectory_model.act_dim}
        generator._installed(
            FittedDyDiff(
                trajectory_model=trajectory_model,
                dynamics=dynamics,
                reward=reward,
                termination=termination,
                training_data={**meta["training_data"], **sizes},
                support=DataSupport.from_state(meta["support"]) if meta.get("support") else None,
            )
        )
        generator.training_losses = list(meta["training_losses"])
        return generator


def _check_sizes(name: str, model: object, transitions: Transitions) -> None:
    """A model that states its sizes (``obs_dim``/``act_dim`` attributes) must match the data's."""
    for attribute in ("obs_dim", "act_dim"):
        size, expected = getattr(model, attribute, None), getattr(transitions, attribute)
        if size is not None and size != expected:
            raise ValueError(
                f"the {name} model has {attribute}={size} but the data {attribute}={expected}; "
                "pass a model fitted on data of the same spaces."
            )
