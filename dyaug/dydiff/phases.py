"""DyDiff's rollout phases while a model-free learner trains (Zhao et al. 2024, arXiv 2405.19189, §6 of the
reimplementation notes), independent of the RL library.

Every ``rollout_every`` training steps (from step 0, with the untrained policy) a phase draws ``rollout_batch``
start states uniformly, with replacement, from the real observations, generates policy-consistent trajectories
with the learner's current policy (:meth:`DyDiff.rollout`, filter included) and appends their transitions to a
first-in-first-out model buffer of ``buffer_size`` rows (:class:`~dyaug.data.fifo.TransitionFIFO`). The learner
trains on batches mixing real rows and rows of that buffer; the integrations do the mixing.

The official settings (Hopper): a phase every epoch of 500 steps (250 for Diffusion-QL), 2048 start states, a 2M
buffer, 60 % real rows per batch.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from dyaug.data.fifo import TransitionFIFO
from dyaug.data.transitions import Transitions
from dyaug.distributed import shard_rows, shard_seed, world
from dyaug.dydiff.generator import RolloutStats
from dyaug.dydiff.rollout import Policy
from dyaug.generators import OneStepModel, PolicyRollout
from dyaug.metrics import SUPPORTED_ENVS, dynamics_error
from dyaug.validation import check_int

__all__ = [
    "PHASE_METRICS",
    "PHASE_PRESETS",
    "PhaseReport",
    "PhaseSettings",
    "RolloutPhases",
    "is_fitted",
    "resolve_phase_settings",
]

PHASE_METRICS: tuple[str, ...] = (
    "synthetic_size",
    "evicted",
    "rollout_transitions",
    "kept_trajectories",
    "filtered_trajectories",
    "terminated_trajectories",
    "truncated_trajectories",
    "clipped_rewards",
    "predicted_return",
    "kept_predicted_return",
    "rollout_seconds",
    "sim_state_error",
    "sim_reward_error",
    "sim_reference_state_error",
)
"""The names of :meth:`PhaseReport.metrics` (the ``sim_*`` ones only when the phase was simulator-checked, the
reference only for a generator with a one-step model)."""

UNFAITHFUL_FACTOR = 3.0
"""A phase warns (once per :class:`RolloutPhases`) when its rows' median simulator-checked next-state error exceeds
this multiple of the generator's own one-step model's at the same (s, a) (see :meth:`RolloutPhases.run`)."""


@dataclasses.dataclass(frozen=True)
class PhaseSettings:
    """How often and how much DyDiff generates while a learner trains.

    ``rollout_every``: training steps between phases; ``rollout_batch``: start states per phase; ``buffer_size``:
    rows the model buffer keeps (oldest dropped first); ``check_rows``: rows of each phase's output checked in the
    MuJoCo simulator when the task is one :func:`dyaug.metrics.dynamics_error` supports (0: no check);
    ``shards``: parts a phase's start states are split into (``None``: one per ``torchrun`` rank, so one outside
    torchrun), see :meth:`RolloutPhases.run`.
    """

    rollout_every: int
    rollout_batch: int
    buffer_size: int
    check_rows: int = 256
    shards: int | None = None

    def __post_init__(self) -> None:
        for name, minimum in (("rollout_every", 1), ("rollout_batch", 1), ("buffer_size", 1), ("check_rows", 0)):
            check_int(name, getattr(self, name), minimum)
        if self.shards is not None:
            check_int("shards", self.shards, 1)
            if self.shards > self.rollout_batch:
                raise ValueError(
                    f"shards={self.shards} exceeds rollout_batch={self.rollout_batch}: every shard needs a start state."
                )


_CPU_PHASES = PhaseSettings(rollout_every=1_000, rollout_batch=256, buffer_size=100_000)

PHASE_PRESETS: dict[str, PhaseSettings] = {
    # Tests: a phase every 10 steps from 16 start states.
    "tiny": PhaseSettings(rollout_every=10, rollout_batch=16, buffer_size=2_000, check_rows=32),
    # CPU: with DyDiff's "cpu-v1" preset (Heun; "cpu" samples about 1.5x faster), a phase of 256 Hopper start
    # states took 16 s on one core of the busy 2-core reference machine and yields ~4.7k transitions (60 % of 256
    # trajectories of 31 steps); one phase per 1000 steps roughly doubles a TD3+BC run. The buffer holds the last
    # ~21 phases (the official code: ~16).
    "cpu": _CPU_PHASES,
    "cpu-v1": _CPU_PHASES,  # DyDiff's "cpu" preset with its former sampler: the same phases
    # The official code (TD3+BC and CQL; Diffusion-QL used 250 steps per epoch).
    "paper": PhaseSettings(rollout_every=500, rollout_batch=2048, buffer_size=2_000_000),
}


def is_fitted(generator: PolicyRollout) -> bool:
    """Whether ``generator`` has its models (fitted or loaded)."""
    return bool(generator.fitted)


def resolve_phase_settings(preset: str, **overrides: int | None) -> PhaseSettings:
    """``PHASE_PRESETS[preset]`` with the ``overrides`` that are not ``None``; ``ValueError`` for an unknown preset."""
    if preset not in PHASE_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PHASE_PRESETS)}.")
    return dataclasses.replace(PHASE_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


@dataclasses.dataclass(frozen=True)
class PhaseReport:
    """What one rollout phase did: the training ``step`` it ran at, its index ``phase``, the generator's
    :class:`~dyaug.dydiff.generator.RolloutStats`, the model buffer's size after it and the rows it evicted, and
    the simulator check of a subsample (median next-state error and mean reward error over its checkable rows;
    ``None`` when the task cannot be checked) and, for a generator with a one-step model
    (:class:`~dyaug.generators.OneStepModel`), that model's median next-state error at the same (s, a)."""

    step: int
    phase: int
    stats: RolloutStats
    synthetic_size: int
    evicted: int
    state_error: float | None
    reward_error: float | None
    reference_state_error: float | None = None

    def metrics(self) -> dict[str, float]:
        """The report as named numbers for a logger (:data:`PHASE_METRICS`; simulator errors only when checked)."""
        stats = self.stats
        values = {
            "synthetic_size": self.synthetic_size,
            "evicted": self.evicted,
            "rollout_transitions": stats.transitions,
            "kept_trajectories": stats.kept,
            "filtered_trajectories": stats.filtered,
            "terminated_trajectories": stats.terminated,
            "truncated_trajectories": stats.truncated,
            "clipped_rewards": stats.clipped_rewards,
            "predicted_return": float(stats.returns.mean()),
            "kept_predicted_return": float(stats.returns[stats.kept_indices].mean()),
            "rollout_seconds": stats.seconds,
        }
        if self.state_error is not None:
            assert self.reward_error is not None  # the simulator check gives both or neither
            values |= {"sim_state_error": self.state_error, "sim_reward_error": self.reward_error}
        if self.reference_state_error is not None:
            values["sim_reference_state_error"] = self.reference_state_error
        return {name: float(value) for name, value in values.items()}


class RolloutPhases:
    """Runs DyDiff's rollout phases for a learner and keeps their transitions in :attr:`fifo`.

    :param generator: a :class:`~dyaug.generators.PolicyRollout` (a :class:`DyDiff`, say), fitted before the first
        :meth:`run`.
    :param settings: the schedule and sizes (:class:`PhaseSettings`).
    :param seed: the phase at training step t draws its start states, its rollout seed and its check subsample from
        ``np.random.default_rng([seed, t])``, so runs repeat (also when resumed) whatever else used the generator.
    :param env_id: the task for the simulator check (default: the one the generator was fitted on, if recorded).
    :param next_actions: also label every synthetic row with a' = π(s') (zero at terminals), taken by the same
        policy, for learners that read the next action (ReBRAC). For a deterministic policy a' is the trajectory's
        next action (up to the rounding of another batch composition).
    """

    def __init__(
        self,
        generator: PolicyRollout,
        settings: PhaseSettings,
        *,
        seed: int = 0,
        env_id: str | None = None,
        next_actions: bool = False,
    ) -> None:
        if not isinstance(generator, PolicyRollout):
            raise TypeError(
                f"generator must be a policy-rollout generator (dyaug.generators.PolicyRollout, e.g. a DyDiff), got "
                f"{type(generator).__name__}."
            )
        check_int("seed", seed, 0, numpy=False)
        self.generator = generator
        self.settings = settings
        self.seed = seed
        self.env_id = env_id
        self.next_actions = next_actions
        self.fifo = TransitionFIFO(settings.buffer_size)
        self.reports: list[PhaseReport] = []
        self._warned_unfaithful = False

    def due(self, step: int) -> bool:
        """Whether a phase belongs before training step ``step`` (0, rollout_every, 2 · rollout_every, ...)."""
        return step % self.settings.rollout_every == 0

    @property
    def steps(self) -> list[int]:
        """The training steps the phases ran at."""
        return [report.step for report in self.reports]

    def run(self, policy: Policy, pool: np.ndarray, step: int) -> PhaseReport:
        """One phase from start states drawn out of ``pool`` (N, obs_dim) real observations; see the module
        docstring. ``policy`` is a batched torch callable on the generator's device.

        Warns once when the checked rows' median next-state error exceeds :data:`UNFAITHFUL_FACTOR` times the
        generator's own one-step model's at the same (s, a): the rows are then far less faithful than the model
        the generator already has, and a learner trained on them can be held back badly (benchmarks/RESULTS.md:
        TD3PlusBC on HalfCheetah, 24 points below base)."""
        pool = np.asarray(pool)
        if pool.ndim != 2 or len(pool) == 0:
            raise ValueError(f"the pool of start states must be a non-empty (N, obs_dim) array, got {pool.shape}.")
        rng = np.random.default_rng([self.seed, step])
        starts = pool[rng.integers(len(pool), size=self.settings.rollout_batch)]
        synthetic, stats = self.sharded_rollout(policy, starts, int(rng.integers(2**62)))
        if self.next_actions:
            synthetic = _with_next_actions(synthetic, policy, self.generator.device)
        evicted = self.fifo.add(synthetic)
        report = PhaseReport(
            step, len(self.reports), stats, len(self.fifo), evicted, *self.simulator_check(synthetic, rng)
        )
        self.reports.append(report)
        self._warn_if_unfaithful(report)
        return report

    def _warn_if_unfaithful(self, report: PhaseReport) -> None:
        error, reference = report.state_error, report.reference_state_error
        if self._warned_unfaithful or error is None or reference is None or not error > UNFAITHFUL_FACTOR * reference:
            return
        self._warned_unfaithful = True
        warnings.warn(
            f"rollout phase {report.phase}: the generated rows' median simulator-checked next-state error is "
            f"{error:.3g}, {error / reference:.1f}x that of the generator's own one-step model at the same (s, a) "
            f"({reference:.3g}). Rows this far off can hold the learner back badly; label the next states with the "
            "one-step model (DyDiff: labels='models'), train the trajectory model longer, or check the generator "
            "with dyaug.metrics.dynamics_error before training on its rows.",
            stacklevel=3,
        )

    def sharded_rollout(self, policy: Policy, starts: np.ndarray, seed: int) -> tuple[Transitions, RolloutStats]:
        """A phase's rollout from ``starts``: one call with ``seed`` when there is one shard; else the start states
        split into ``shards`` parts (:func:`~dyaug.distributed.shard_rows`), part k rolled out with
        ``shard_seed(seed, k)`` and filtered on its own. Under ``torchrun`` rank r rolls out parts r, r + world, ...
        and every rank receives all parts, so every rank's model buffer holds the same rows, and N ranks produce
        exactly what one process with ``shards=N`` produces."""
        rank, size = world()
        shards = size if self.settings.shards is None else self.settings.shards
        if shards > len(starts):
            raise ValueError(f"{shards} shards for {len(starts)} start states; set PhaseSettings.shards lower.")
        if shards == 1:
            return self.generator.rollout(policy, starts, seed=seed), self.generator.last_rollout_stats
        bounds = np.cumsum([0, *shard_rows(len(starts), shards)])
        parts: dict[int, tuple[Transitions, RolloutStats]] = {}
        for k in range(rank, shards, size):
            part = self.generator.rollout(policy, starts[bounds[k] : bounds[k + 1]], seed=shard_seed(seed, k))
            parts[k] = (part, self.generator.last_rollout_stats)
        if size > 1:
            gathered: list[dict[int, tuple[Transitions, RolloutStats]] | None] = [None] * size
            torch.distributed.all_gather_object(gathered, parts)
            parts = {k: v for received in gathered if received is not None for k, v in received.items()}
        ordered = [parts[k] for k in range(shards)]
        stats = RolloutStats.merged([s for _, s in ordered])
        return Transitions.concatenate([t for t, _ in ordered]), stats

    @property
    def check_env(self) -> str | None:
        """The environment the simulator check runs in: ``env_id``, else the generator's training task when it is
        one :func:`~dyaug.metrics.dynamics_error` supports; ``None``: no check."""
        env_id = self.env_id if self.env_id is not None else self.generator.env_id
        return env_id if env_id in SUPPORTED_ENVS and self.settings.check_rows > 0 else None

    def simulator_check(
        self, transitions: Transitions, rng: np.random.Generator
    ) -> tuple[float | None, float | None, float | None]:
        """Median next-state error and mean reward error, against the simulator of :attr:`check_env`, of up to
        ``check_rows`` rows of ``transitions`` drawn with ``rng`` (:func:`~dyaug.metrics.dynamics_error`; NaN when
        none of them is checkable), and the median next-state error of the generator's one-step model at the same
        rows when it has one (else ``None``); ``(None, None, None)`` without a check environment."""
        env_id = self.check_env
        if env_id is None:
            return None, None, None
        picked = rng.choice(len(transitions), size=min(self.settings.check_rows, len(transitions)), replace=False)
        rows = transitions[np.sort(picked)]
        report = dynamics_error(env_id, rows, threads=1)
        reference = None
        if isinstance(self.generator, OneStepModel) and report.checkable.any():
            # torch.tensor copies: the rows may be read-only views of the user's data
            predicted = self.generator.one_step(torch.tensor(rows.observations), torch.tensor(rows.actions))
            errors = np.linalg.norm(predicted.cpu().numpy() - report.simulated_next_observations, axis=1)
            reference = float(np.median(errors[report.checkable]))
        return report.median_state_error, report.mean_reward_error, reference


@torch.no_grad()
def _with_next_actions(transitions: Transitions, policy: Policy, device: torch.device) -> Transitions:
    """``transitions`` with ``next_actions`` = π(s'), zero at terminal rows."""
    next_observations = torch.as_tensor(np.array(transitions.next_observations), device=device)
    actions = policy(next_observations).cpu().numpy()
    return transitions.replace(next_actions=actions * (1.0 - transitions.terminals[:, None]))
