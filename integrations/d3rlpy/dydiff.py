"""DyDiff for d3rlpy 2.8: ``DyDiffAugmenter`` trains any continuous d3rlpy algorithm on real data mixed with
policy-consistent synthetic trajectories, regenerated with the algorithm's current policy as it trains (or, as an
ablation, with a fixed policy: ``rollout_policy``).

Zhao et al. (2024), "Diffusion Models for Policy-Consistent Trajectory Generation" / DyDiff (arXiv 2405.19189).
The generator and the rollout phases are :mod:`dyaug.dydiff`; this module binds them to d3rlpy: the policy
(:class:`D3rlpyPolicy`), the batches (:class:`DyDiffReplayBuffer`), the fit loop (its ``callback`` runs the
phases) and the loggers (the phases' numbers are d3rlpy evaluators, logged at the end of each epoch).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import torch
from d3rlpy.algos import TD3PlusBC
from d3rlpy.algos.qlearning.base import QLearningAlgoBase
from d3rlpy.base import LearnableConfig, LearnableConfigWithShape
from d3rlpy.constants import ActionSpace
from d3rlpy.dataset import ReplayBufferBase
from d3rlpy.logging import FileAdapterFactory, LoggerAdapterFactory
from d3rlpy.metrics import EvaluatorProtocol
from dyaug.integrations.d3rlpy.buffer import SyntheticReplayBuffer, _real_transitions
from dyaug.integrations.d3rlpy.convert import transitions_to_d3rlpy
from dyaug.integrations.d3rlpy.training_state import build_for_dataset
from dyaug.integrations.mixing import check_real_ratio
from torch import Tensor

from dyaug.data.coerce import to_transitions
from dyaug.data.fifo import TransitionFIFO
from dyaug.data.transitions import Transitions
from dyaug.device import resolve_device
from dyaug.dydiff.generator import DyDiff
from dyaug.dydiff.phases import PHASE_METRICS, PhaseReport, RolloutPhases, is_fitted, resolve_phase_settings
from dyaug.generators import PolicyRollout
from dyaug.persistence import write_directory
from dyaug.validation import check_int

__all__ = ["D3rlpyPolicy", "DyDiffAugmenter", "DyDiffReplayBuffer"]

BaseAlgo: TypeAlias = type[QLearningAlgoBase] | type[LearnableConfig] | LearnableConfig | QLearningAlgoBase
"""A d3rlpy algorithm class, a config class, a config or a created algorithm."""
PolicyAction = Literal["predict", "sample"]
_POLICY_METHODS: dict[str, str] = {"predict": "predict_best_action", "sample": "sample_action"}
"""Which torch method of the algorithm's implementation gives the rollout's actions: ``predict``'s or
``sample_action``'s."""

SETTINGS_FILE, ALGO_CONFIG_FILE, ALGO_WEIGHTS_FILE, GENERATOR_DIR = (
    "augmenter.json",
    "algo.json",
    "algo.pt",
    "generator",
)
ROLLOUT_PREFIX = "rollout_"  # the fixed rollout policy's files: rollout_algo.json, rollout_algo.pt
METRIC_PREFIX = "dydiff_"


@dataclasses.dataclass(frozen=True, eq=False)
class D3rlpyPolicy:
    """A d3rlpy algorithm's current policy as DyDiff's batched torch callable ``states -> actions``, both in
    environment units, with no host round trip.

    It does what ``algo.predict`` (``action="predict"``) or ``algo.sample_action`` (``action="sample"``) does, on
    tensors: states go to the algorithm's device, through its ``observation_scaler``, into the implementation's
    ``predict_best_action`` / ``sample_action`` (the policy network, in evaluation mode), and the actions back
    through ``action_scaler.reverse_transform`` to the states' device. The actions equal ``algo.predict(states)``
    exactly (same operations, same order).
    """

    algo: QLearningAlgoBase
    action: PolicyAction = "predict"

    def __post_init__(self) -> None:
        if self.action not in _POLICY_METHODS:
            raise ValueError(f"action must be one of {sorted(_POLICY_METHODS)}, got {self.action!r}.")

    @torch.no_grad()
    def __call__(self, states: Tensor) -> Tensor:
        impl, config = self.algo.impl, self.algo.config
        if impl is None:
            raise RuntimeError("the d3rlpy algorithm has no networks yet; build it (fit or build_with_dataset) first.")
        x = states.to(impl.device)
        if config.observation_scaler is not None:
            x = config.observation_scaler.transform(x)
        actions = getattr(impl, _POLICY_METHODS[self.action])(x)
        if config.action_scaler is not None:
            actions = config.action_scaler.reverse_transform(actions)
        return actions.to(states.device)


class DyDiffReplayBuffer(SyntheticReplayBuffer):
    """A :class:`~dyaug.integrations.d3rlpy.SyntheticReplayBuffer` whose synthetic rows are the content of a
    first-in-first-out model buffer (:class:`~dyaug.data.fifo.TransitionFIFO`).

    Add rows to ``fifo`` and call :meth:`refresh` to install them. A batch holds ``round(real_ratio · B)`` real rows
    and synthetic rows for the rest, and is all real while the installed synthetic set holds fewer rows than a
    batch's synthetic share (the official code waits for that many model rows too). Everything else is
    :class:`~dyaug.integrations.d3rlpy.SyntheticReplayBuffer`'s: real data read once and never modified,
    scalers fitted on real data only, ``np.random`` indices (seeded by ``d3rlpy.seed``).
    """

    def __init__(self, real_buffer: ReplayBufferBase, fifo: TransitionFIFO, real_ratio: float = 0.6) -> None:
        if not isinstance(fifo, TransitionFIFO):
            raise TypeError(f"fifo must be a dyaug.data.fifo.TransitionFIFO, got {type(fifo).__name__}.")
        if len(fifo) == 0:
            raise ValueError("the model buffer is empty; add the first rollout phase's transitions before wrapping.")
        self.fifo = fifo
        super().__init__(real_buffer, fifo.transitions(), real_ratio=real_ratio)

    def refresh(self) -> None:
        """Install the model buffer's current rows as the synthetic set."""
        self.set_synthetic(self.fifo.transitions())


@dataclasses.dataclass(frozen=True)
class _PhaseMetric:
    """A d3rlpy evaluator reporting one number of the latest rollout phase (logged at the end of each epoch)."""

    phases: RolloutPhases
    name: str

    def __call__(self, algo: Any, dataset: Any) -> float:
        return self.phases.reports[-1].metrics().get(self.name, math.nan)


class DyDiffAugmenter:
    """Train a d3rlpy algorithm with DyDiff's policy-consistent synthetic data (Zhao et al. 2024).

    ``fit(dataset, n_steps, ...)`` fits the generator when it is not fitted yet, then trains the base algorithm
    with d3rlpy's own ``fit`` on a :class:`DyDiffReplayBuffer`: before training step 0 and after every
    ``rollout_every`` steps, a rollout phase (:class:`~dyaug.dydiff.phases.RolloutPhases`) draws ``rollout_batch``
    start states uniformly from the real data, generates trajectories with the algorithm's current policy
    (:class:`D3rlpyPolicy`; with ``rollout_policy``, that fixed policy's) and appends them to a FIFO model buffer
    of ``buffer_size`` rows; batches hold ``real_ratio`` real rows (all real while the model buffer is smaller than
    the synthetic share). The real data is never modified.

    >>> aug = DyDiffAugmenter(d3rlpy.algos.TD3PlusBCConfig(observation_scaler=StandardObservationScaler()))
    >>> aug.fit(dataset, n_steps=100_000, n_steps_per_epoch=1_000, evaluators={"env": EnvironmentEvaluator(env)})
    >>> aug.predict(observations); aug.save("dydiff-td3bc"); aug = DyDiffAugmenter.load("dydiff-td3bc")

    :param base_algo: a d3rlpy algorithm class (``d3rlpy.algos.TD3PlusBC``: its default config), a config
        (``TD3PlusBCConfig(...)``, also ``dyaug.integrations.d3rlpy.DiffusionQLConfig``/``SRPOConfig``) or a created
        algorithm (trained or not). Any continuous d3rlpy Q-learning algorithm with a policy works; algorithms that
        need returns-to-go (CalQL) do not (synthetic rows have none).
    :param generator: any :class:`~dyaug.generators.PolicyRollout` (a :class:`~dyaug.dydiff.DyDiff`; fitted or not),
        a path written by ``DyDiff.save``, or ``None``: ``DyDiff(preset, device=device, seed=seed)``, fitted on the
        first ``fit``'s dataset.
    :param preset: the generator's preset when ``generator`` is ``None``, and the source of the phase settings
        left ``None`` (:data:`~dyaug.dydiff.phases.PHASE_PRESETS`: ``"tiny"``, ``"cpu"``, ``"cpu-v1"``, ``"paper"``).
    :param real_ratio: share of real rows per batch (the official code: 0.6).
    :param rollout_every: training steps between rollout phases.
    :param rollout_batch: start states per phase.
    :param buffer_size: rows the model buffer keeps (oldest dropped first).
    :param device: for the generator created here and the algorithm created from a class or config (``"auto"``:
        CUDA when present); a created algorithm keeps its own device (the policy calls move the states there).
    :param seed: the generator's seed (when created here) and the phases' (start states, rollouts). The base
        algorithm's own randomness follows ``d3rlpy.seed``.
    :param env_id: the task for the rollouts' simulator check (default: the generator's training data's, e.g. a
        Minari dataset's environment) and for the termination rule of a generator fitted here.
    :param policy_action: ``"predict"`` (the policy's ``predict`` actions, as the official deterministic policies)
        or ``"sample"`` (``sample_action``, e.g. Diffusion-QL's single stochastic draw, as the official code).
    :param rollout_policy: ``None`` (DyDiff: the rollouts follow the learning policy) or a trained d3rlpy algorithm
        whose fixed policy drives every rollout instead, e.g. ``d3rlpy.algos.BC`` fitted on the same data (an
        ablation, not the paper's method: the rows then stop following the learner). Saved and loaded with the
        augmenter; ``policy_action`` applies to it.
    """

    def __init__(
        self,
        base_algo: BaseAlgo = TD3PlusBC,
        generator: PolicyRollout | str | Path | None = None,
        preset: str = "cpu",
        real_ratio: float = 0.6,
        rollout_every: int | None = None,
        rollout_batch: int | None = None,
        buffer_size: int | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        env_id: str | None = None,
        policy_action: PolicyAction = "predict",
        rollout_policy: QLearningAlgoBase | None = None,
    ) -> None:
        self.device = resolve_device(device)
        settings = resolve_phase_settings(
            preset, rollout_every=rollout_every, rollout_batch=rollout_batch, buffer_size=buffer_size
        )
        self.real_ratio = check_real_ratio(real_ratio)
        self.preset = preset
        self.algo: QLearningAlgoBase = _make_algo(base_algo, self.device)
        self.generator = _make_generator(generator, preset, self.device, seed)
        self.rollout_algo = _check_rollout_policy(rollout_policy, self.algo)
        self.policy = D3rlpyPolicy(self.algo if self.rollout_algo is None else self.rollout_algo, policy_action)
        self.phases = RolloutPhases(self.generator, settings, seed=seed, env_id=env_id, next_actions=True)
        self.steps_done = 0  # training steps taken by fit() calls of this augmenter

    def __repr__(self) -> str:
        fixed = "" if self.rollout_algo is None else f", rollouts by a fixed {type(self.rollout_algo).__name__}"
        return (
            f"DyDiffAugmenter({type(self.algo).__name__}{fixed}, real_ratio={self.real_ratio}, {self.phases.settings}, "
            f"{self.steps_done} steps done, {len(self.synthetic)} synthetic transitions)"
        )

    @property
    def synthetic(self) -> TransitionFIFO:
        """The model buffer: the synthetic transitions batches draw from (``len()`` counts them)."""
        return self.phases.fifo

    @property
    def reports(self) -> list[PhaseReport]:
        """One :class:`~dyaug.dydiff.phases.PhaseReport` per rollout phase run so far."""
        return self.phases.reports

    @property
    def rollout_steps(self) -> list[int]:
        """The training steps the rollout phases ran before (0, ``rollout_every``, ...)."""
        return self.phases.steps

    # ------------------------------------------------------------------------------------------- training
    def fit(
        self,
        dataset: Any,
        n_steps: int,
        n_steps_per_epoch: int = 10_000,
        *,
        evaluators: dict[str, EvaluatorProtocol] | None = None,
        logger_adapter: LoggerAdapterFactory = FileAdapterFactory(),  # noqa: B008 (d3rlpy's own default)
        show_progress: bool = True,
        callback: Callable[[QLearningAlgoBase, int, int], None] | None = None,
        **fit_kwargs: Any,
    ) -> list[tuple[int, dict[str, float]]]:
        """Fit the generator if needed, then train the base algorithm for ``n_steps`` steps (whole epochs of
        ``n_steps_per_epoch``) with rollout phases; returns d3rlpy's ``[(epoch, metrics), ...]``.

        ``dataset``: a d3rlpy ``ReplayBuffer``/``MDPDataset``, a Minari dataset or :class:`Transitions` (never
        modified). For a generator fitted here prefer a Minari dataset, ``Transitions`` or a buffer built by
        ``transitions_to_d3rlpy``: plain d3rlpy buffers keep no s' at terminal steps. The keywords are d3rlpy's
        ``fit``'s (``experiment_name``, ``save_interval``, ``epoch_callback``, ...); ``callback`` still runs after
        every step. Each phase's numbers (:meth:`PhaseReport.metrics`, prefixed ``dydiff_``) are logged beside
        ``evaluators`` at the end of every epoch. Calling ``fit`` again continues the training, the schedule and
        the model buffer.
        """
        for name, value in (("n_steps", n_steps), ("n_steps_per_epoch", n_steps_per_epoch)):
            check_int(name, value, numpy=False)
        if n_steps < n_steps_per_epoch:
            raise ValueError(
                f"n_steps={n_steps} is less than one epoch of n_steps_per_epoch={n_steps_per_epoch}, so d3rlpy would "
                "train no step; lower n_steps_per_epoch."
            )
        taken = sorted(set(evaluators or {}) & {METRIC_PREFIX + name for name in PHASE_METRICS})
        if taken:
            raise ValueError(f"evaluator names {taken} are DyDiff's own metric names; rename those evaluators.")
        real_buffer, real = _real_data(dataset)
        self._fit_generator(dataset, progress=show_progress)
        sizes = (self.generator.obs_dim, self.generator.act_dim)
        if sizes != (real.obs_dim, real.act_dim):
            raise ValueError(
                f"the generator was fitted on observations/actions of sizes {sizes}, the dataset has "
                f"{(real.obs_dim, real.act_dim)}; use a generator fitted on this task's data."
            )
        self._build(real_buffer)
        if len(self.synthetic) == 0 or self.phases.due(self.steps_done):
            self.phases.run(self.policy, real.observations, self.steps_done)
        buffer = DyDiffReplayBuffer(real_buffer, self.synthetic, real_ratio=self.real_ratio)
        last_step = self.steps_done + n_steps // n_steps_per_epoch * n_steps_per_epoch

        def after_step(algo: QLearningAlgoBase, epoch: int, total_step: int) -> None:
            self.steps_done += 1
            if self.steps_done < last_step and self.phases.due(self.steps_done):
                self.phases.run(self.policy, real.observations, self.steps_done)
                buffer.refresh()
            if callback is not None:
                callback(algo, epoch, total_step)

        return self.algo.fit(
            buffer,
            n_steps=n_steps,
            n_steps_per_epoch=n_steps_per_epoch,
            evaluators={**(evaluators or {}), **self._metric_evaluators()},
            logger_adapter=logger_adapter,
            show_progress=show_progress,
            callback=after_step,
            **fit_kwargs,
        )

    def _metric_evaluators(self) -> dict[str, _PhaseMetric]:
        """One evaluator per number the phases report (the simulator errors only when the task can be checked)."""
        return {METRIC_PREFIX + name: _PhaseMetric(self.phases, name) for name in self.reports[-1].metrics()}

    def _fit_generator(self, dataset: Any, progress: bool) -> None:
        if is_fitted(self.generator):
            return
        self.generator.fit(dataset, env_id=self.phases.env_id, progress=progress)

    def _build(self, real_buffer: ReplayBufferBase) -> None:
        """Fit the algorithm's scalers on the real data and build its networks, so step 0's rollout has a policy."""
        build_for_dataset(self.algo, real_buffer)
        expected = (real_buffer.dataset_info.observation_signature.shape[0][0],)
        for role, algo in (("base algorithm", self.algo), ("rollout policy", self.rollout_algo)):
            if algo is None:
                continue
            shape = tuple(algo.impl.observation_shape)
            if shape != expected or algo.impl.action_size != real_buffer.dataset_info.action_size:
                raise ValueError(
                    f"the {role} was built for observations {shape} and {algo.impl.action_size} actions, the dataset "
                    f"has {expected} and {real_buffer.dataset_info.action_size}; pass one built for this task."
                )

    # ------------------------------------------------------------------------------------------- using it
    def predict(self, x: np.ndarray) -> np.ndarray:
        """The trained algorithm's greedy actions (``algo.predict``)."""
        return self.algo.predict(x)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory: the base algorithm (its config as d3rlpy's JSON, its weights as d3rlpy's
        ``save_model`` file, read back with ``torch.load(weights_only=True)``; a fixed rollout policy likewise, as
        ``rollout_algo.*``), the generator (``DyDiff.save``, safetensors) and the augmenter's settings and step
        count. The model buffer is not saved: the next ``fit`` starts a new one with a rollout phase. Replaces an
        earlier checkpoint of this kind atomically."""
        if self.algo.impl is None or not is_fitted(self.generator):
            raise RuntimeError("nothing to save yet: fit the augmenter first.")
        settings = self.phases.settings
        generator_class = type(self.generator)
        record = {
            "generator": f"{generator_class.__module__}:{generator_class.__qualname__}",
            "preset": self.preset,
            "real_ratio": self.real_ratio,
            "settings": dataclasses.asdict(settings),
            "seed": self.phases.seed,
            "env_id": self.phases.env_id,
            "policy_action": self.policy.action,
            "fixed_rollout_policy": self.rollout_algo is not None,
            "steps_done": self.steps_done,
        }

        def write(directory: Path) -> None:
            self.generator.save(directory / GENERATOR_DIR)
            _save_algo(self.algo, directory)
            if self.rollout_algo is not None:
                _save_algo(self.rollout_algo, directory, ROLLOUT_PREFIX)
            (directory / SETTINGS_FILE).write_text(json.dumps(record, indent=1))

        return write_directory(path, write, marker=SETTINGS_FILE, kind="DyDiffAugmenter")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> DyDiffAugmenter:
        """An augmenter written by :meth:`save`, on ``device``, ready to ``predict`` or to continue ``fit``."""
        path, device = Path(path), resolve_device(device)
        if not (path / SETTINGS_FILE).is_file():
            raise ValueError(f"{path} is not a DyDiffAugmenter checkpoint (no {SETTINGS_FILE}); write one with save().")
        record = json.loads((path / SETTINGS_FILE).read_text())
        settings = record["settings"]
        fixed = record.get("fixed_rollout_policy", False)
        augmenter = cls(
            base_algo=_load_algo(path, device),
            generator=_generator_class(record).load(path / GENERATOR_DIR, device=device),
            preset=record["preset"],
            real_ratio=record["real_ratio"],
            rollout_every=settings["rollout_every"],
            rollout_batch=settings["rollout_batch"],
            buffer_size=settings["buffer_size"],
            device=device,
            seed=record["seed"],
            env_id=record["env_id"],
            policy_action=record["policy_action"],
            rollout_policy=_load_algo(path, device, ROLLOUT_PREFIX) if fixed else None,
        )
        augmenter.steps_done = record["steps_done"]
        return augmenter


# ----------------------------------------------------------------------------------------------- helpers
def _d3rlpy_device(device: torch.device) -> str:
    """d3rlpy's device string (``"cpu:0"``, ``"cuda:1"``) for a torch device."""
    return f"{device.type}:{device.index or 0}"


def _save_algo(algo: QLearningAlgoBase, directory: Path, prefix: str = "") -> None:
    """Write a built d3rlpy algorithm: its config as d3rlpy's JSON and its weights as ``save_model``'s file."""
    impl = algo.impl
    config = LearnableConfigWithShape(
        observation_shape=impl.observation_shape, action_size=impl.action_size, config=algo.config
    )
    (directory / (prefix + ALGO_CONFIG_FILE)).write_text(config.serialize())
    algo.save_model(str(directory / (prefix + ALGO_WEIGHTS_FILE)))


def _load_algo(path: Path, device: torch.device, prefix: str = "") -> QLearningAlgoBase:
    """The algorithm :func:`_save_algo` wrote under ``path`` (weights read with ``torch.load(weights_only=True)``)."""
    config = LearnableConfigWithShape.deserialize((path / (prefix + ALGO_CONFIG_FILE)).read_text())
    algo = config.create(device=_d3rlpy_device(device))
    algo.load_model(str(path / (prefix + ALGO_WEIGHTS_FILE)))
    return algo


def _check_rollout_policy(policy: QLearningAlgoBase | None, learner: QLearningAlgoBase) -> QLearningAlgoBase | None:
    """A fixed rollout policy must be a built continuous d3rlpy algorithm other than the learner."""
    if policy is None:
        return None
    if policy is learner:
        raise ValueError(
            "rollout_policy is the learner itself; leave rollout_policy=None for rollouts of the learning policy."
        )
    if not isinstance(policy, QLearningAlgoBase):
        raise TypeError(
            f"rollout_policy must be a trained d3rlpy algorithm (e.g. d3rlpy.algos.BCConfig().create(), fitted) or "
            f"None, got {type(policy).__name__}."
        )
    if policy.impl is None:
        raise ValueError(
            f"rollout_policy ({type(policy).__name__}) has no networks yet; fit it on the task's data first."
        )
    if policy.get_action_type() != ActionSpace.CONTINUOUS:
        raise ValueError(f"rollout_policy ({type(policy).__name__}) is for discrete actions; pass a continuous one.")
    return policy


def _config_class(algo_class: type[QLearningAlgoBase]) -> type[LearnableConfig]:
    """The config class of a d3rlpy algorithm class, read from its ``QLearningAlgoBase[Impl, Config]`` base."""
    for cls in algo_class.__mro__:
        for base in getattr(cls, "__orig_bases__", ()):
            args = typing.get_args(base)
            if typing.get_origin(base) is QLearningAlgoBase and len(args) == 2 and isinstance(args[1], type):
                return args[1]
    raise TypeError(f"cannot tell the config class of {algo_class.__name__}; pass its config (e.g. XConfig()) instead.")


def _make_algo(base_algo: BaseAlgo, device: torch.device) -> QLearningAlgoBase:
    """The d3rlpy algorithm ``base_algo`` names (a class, a config or an algorithm), checked for DyDiff."""
    if isinstance(base_algo, type) and issubclass(base_algo, QLearningAlgoBase):
        base_algo = _config_class(base_algo)()
    elif isinstance(base_algo, type) and issubclass(base_algo, LearnableConfig):
        base_algo = base_algo()
    algo = base_algo.create(device=_d3rlpy_device(device)) if isinstance(base_algo, LearnableConfig) else base_algo
    if not isinstance(algo, QLearningAlgoBase):
        raise TypeError(
            f"base_algo must be a d3rlpy Q-learning algorithm (class, config or instance, e.g. "
            f"d3rlpy.algos.TD3PlusBCConfig()), got {base_algo!r:.100}."
        )
    if algo.get_action_type() != ActionSpace.CONTINUOUS:
        raise ValueError(
            f"{type(algo).__name__} is for discrete actions; DyDiff generates continuous actions, so use a continuous "
            "algorithm (TD3PlusBC, CQL, IQL, ...)."
        )
    if algo.need_returns_to_go:
        raise ValueError(
            f"{type(algo).__name__} needs returns-to-go, which synthetic transitions lack; use another algorithm."
        )
    return algo


def _generator_class(record: dict[str, Any]) -> Any:
    """The class that saved the augmenter's generator (DyDiff for checkpoints that do not record one)."""
    module, _, name = record.get("generator", "dyaug.dydiff.generator:DyDiff").partition(":")
    return getattr(importlib.import_module(module), name)


def _make_generator(
    generator: PolicyRollout | str | Path | None, preset: str, device: torch.device, seed: int
) -> PolicyRollout:
    if generator is None:
        return DyDiff(preset, device=device, seed=seed)
    if isinstance(generator, str | Path):
        return DyDiff.load(generator, device=device)
    if not isinstance(generator, PolicyRollout):
        raise TypeError(
            f"generator must be a policy-rollout generator (dyaug.generators.PolicyRollout, e.g. a DyDiff), a DyDiff "
            f"checkpoint path or None, got {type(generator).__name__}."
        )
    return generator


def _real_data(dataset: Any) -> tuple[ReplayBufferBase, Transitions]:
    """The real data as a d3rlpy buffer (``dataset`` itself when it is one) and as :class:`Transitions`.

    Only the observations of the ``Transitions`` are used (start states), so d3rlpy's missing s' at terminal steps
    does not matter here; fitting a generator on a d3rlpy buffer converts it again, with the warning."""
    if isinstance(dataset, ReplayBufferBase):
        return dataset, _real_transitions(dataset)
    real = to_transitions(dataset)
    return transitions_to_d3rlpy(real), real
