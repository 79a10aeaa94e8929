"""SRPO as a d3rlpy 2.8 algorithm: ``SRPOConfig(...).create(device=...)``, then ``fit`` / ``fitter``, ``predict``,
``predict_value``, ``save`` and ``d3rlpy.load_learnable``.

Chen et al., "Score Regularized Policy Optimization through Diffusion Behavior" (ICLR 2024, arXiv 2310.07297).
The maths (behaviour loss, IQL losses, the score-regularised actor loss, the phase order) is in
:mod:`dyaug.actors`; this module binds it to d3rlpy's config, checkpoint, fit loop, loggers and evaluators.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Generator, Sequence
from typing import Any, Literal

from d3rlpy.base import DeviceArg, LearnableConfig
from d3rlpy.dataset import ReplayBufferBase, TransitionMiniBatch
from d3rlpy.optimizers import AdamWFactory, OptimizerFactory, make_optimizer_field
from d3rlpy.optimizers.optimizers import OptimizerWrapper
from d3rlpy.preprocessing import ReturnBasedRewardScaler, RewardScaler
from d3rlpy.torch_utility import Modules, TorchMiniBatch
from d3rlpy.types import Shape
from dyaug.integrations.d3rlpy.actor_support import (
    ActorCriticImpl,
    ContinuousActorAlgo,
    StepCounts,
    check_choice,
    check_create,
    check_dataset,
    check_positive,
    config_from_preset,
    make_optimizer,
    optimizer_field,
    optimizer_step,
    register_once,
    reward_scaler_field,
    transition_batch,
    vector_observation_size,
)
from torch import Tensor, nn

from dyaug.actors.batch import TransitionBatch
from dyaug.actors.critics import TwinQ, ValueMLP, iql_q_loss, iql_value_loss, soft_update_
from dyaug.actors.presets import SRPO_PRESETS, SRPO_TASKS
from dyaug.actors.srpo import WEIGHTINGS, DeterministicActor, Part, SRPOPhases, Weighting, srpo_actor_loss
from dyaug.diffusion.networks import LNResNet
from dyaug.diffusion.vp import VPSDE

__all__ = ["SRPO", "SRPOConfig", "SRPOImpl", "SRPOModules"]

PARTS: tuple[Part, ...] = ("behavior", "critic", "actor")
PART_MODULES: dict[str, tuple[str, ...]] = {
    "behavior": ("behavior", "behavior_optim"),
    "critic": ("q_funcs", "targ_q_funcs", "value_func", "q_optim", "v_optim"),
    "actor": ("actor", "actor_optim"),
}
"""The fields of :class:`SRPOModules` that make up each part (weights and optimizer state)."""
Q_REDUCTIONS: dict[str, Callable[[TwinQ], Callable[[Tensor, Tensor], Tensor]]] = {
    "mean": lambda q: q.mean,
    "min": lambda q: q.min,
}
"""How the actor's Q reduces the target twin Q: their mean (SRPO's code) or their min."""


@dataclasses.dataclass()
class SRPOConfig(LearnableConfig):
    """SRPO's settings; the defaults are the paper's (Gym locomotion, official code).

    Three parts, trained in order by one ``fit`` or by several (:class:`dyaug.actors.srpo.SRPOPhases`):

    1. behaviour model ε_ψ(a_t | s, t): the IDQL LN-ResNet (``behavior_hidden``, ``behavior_blocks`` blocks, dropout
       ``behavior_dropout``, Fourier scale ``fourier_scale``) on the VP-SDE (β 0.1 -> 20), trained by
       E‖ε_ψ(α_t a + σ_t z, t, s) − z‖², t ~ U(``behavior_t_min``, 1), for ``behavior_steps`` steps on batches of
       ``behavior_batch_size`` (AdamW, weight decay 0.01);
    2. IQL critic (twin Q and V, ``critic_layers`` x ``critic_hidden`` ReLU), side by side with the behaviour
       model, for ``critic_steps`` steps: V by expectile (``expectile``) regression on min_i Q_i^target, then Q on
       r + γ V(s'), then the target Polyak ``tau``;
    3. actor π_θ(s) = tanh(MLP(s)) (``actor_layers`` x ``actor_hidden``), once both are trained, for ``actor_steps``
       steps, on :func:`dyaug.actors.srpo.srpo_actor_loss` with ``beta`` (larger: weaker regularisation),
       ω(t) ``weighting``, t ~ U(``t_min``, ``t_max``), the ε baseline ``eps_baseline`` (on, as in the paper; the
       released code's default is off), the target Q reduced by ``q_reduction`` ("mean" as the code, or "min")
       and ``normalize_q_grad`` (AntMaze); its learning rate decays with a cosine to 0 over ``actor_steps`` when
       ``actor_lr_decay``.

    Critic and actor batches have ``batch_size`` rows. ``fit`` draws ``max(batch_size, behavior_batch_size)`` rows
    while the behaviour model trains (the critic takes the first ``batch_size``), ``batch_size`` after. ``fit``
    refuses more steps than the phases have left. Reuse trained parts with :meth:`SRPO.copy_pretrained_from`.

    ``predict`` / ``sample_action``: π_θ(s), one forward pass. ``predict_value``: min(Q1, Q2) of the IQL critic.
    Rewards: by default r · 1000 / (max − min episode return) (``reward_scaler``, IQL's locomotion convention).
    Actions must be in [-1, 1] as the algorithm sees them (use ``action_scaler=MinMaxActionScaler()`` otherwise;
    ``fit`` checks). Observations are flat vectors, unnormalised in the paper (``observation_scaler`` optional).
    ``beta`` defaults to 0.1, the median of the paper's locomotion table (see
    :data:`dyaug.actors.presets.SRPO_TASKS` and :meth:`from_preset`).
    """

    batch_size: int = 256
    gamma: float = 0.99
    reward_scaler: RewardScaler | None = reward_scaler_field(lambda: ReturnBasedRewardScaler(multiplier=1000.0))  # noqa: RUF009 (a field)
    behavior_batch_size: int = 2048
    behavior_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    actor_learning_rate: float = 3e-4
    behavior_optim_factory: OptimizerFactory = optimizer_field(lambda: AdamWFactory(weight_decay=0.01))  # noqa: RUF009 (a field)
    critic_optim_factory: OptimizerFactory = make_optimizer_field()  # noqa: RUF009 (a field)
    actor_optim_factory: OptimizerFactory = make_optimizer_field()  # noqa: RUF009 (a field)
    behavior_steps: int = 2_000_000
    critic_steps: int = 1_500_000
    actor_steps: int = 1_000_000
    actor_lr_decay: bool = True
    beta: float = 0.1
    weighting: Weighting = "sigma2"
    eps_baseline: bool = True
    t_min: float = 0.02
    t_max: float = 0.98
    q_reduction: Literal["mean", "min"] = "mean"
    normalize_q_grad: bool = False
    expectile: float = 0.7
    tau: float = 0.005
    behavior_hidden: int = 256
    behavior_blocks: int = 3
    behavior_dropout: float = 0.1
    fourier_scale: float = 30.0
    behavior_t_min: float = 1e-3
    critic_hidden: int = 256
    critic_layers: int = 2
    actor_hidden: int = 256
    actor_layers: int = 2

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_choice(name, "weighting", self.weighting, WEIGHTINGS)
        check_choice(name, "q_reduction", self.q_reduction, Q_REDUCTIONS)
        check_positive(
            name,
            batch_size=self.batch_size,
            behavior_batch_size=self.behavior_batch_size,
            behavior_learning_rate=self.behavior_learning_rate,
            critic_learning_rate=self.critic_learning_rate,
            actor_learning_rate=self.actor_learning_rate,
            tau=self.tau,
            behavior_hidden=self.behavior_hidden,
            behavior_blocks=self.behavior_blocks,
            critic_hidden=self.critic_hidden,
            critic_layers=self.critic_layers,
            actor_hidden=self.actor_hidden,
            actor_layers=self.actor_layers,
        )
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"{name}.expectile must lie in (0, 1), got {self.expectile}.")
        if self.beta < 0:
            raise ValueError(f"{name}.beta must be >= 0, got {self.beta}.")
        self.phases()  # checks the step budgets
        if not 0.0 < self.t_min < self.t_max <= 1.0 or not 0.0 < self.behavior_t_min < 1.0:
            raise ValueError(
                f"{name} needs 0 < t_min < t_max <= 1 and 0 < behavior_t_min < 1, got t_min={self.t_min}, "
                f"t_max={self.t_max}, behavior_t_min={self.behavior_t_min}."
            )

    def phases(self) -> SRPOPhases:
        """The step budget of each part."""
        return SRPOPhases(self.behavior_steps, self.critic_steps, self.actor_steps)

    @classmethod
    def from_preset(cls, preset: str = "paper", *, task: str | None = None, **overrides: Any) -> SRPOConfig:
        """A config from :data:`dyaug.actors.presets.SRPO_PRESETS` (``"paper"``, ``"cpu"``, ``"tiny"``), the settings
        of a ``task`` of the paper's table (e.g. ``"hopper-medium-replay"``: its β), then ``overrides``."""
        return config_from_preset(cls, SRPO_PRESETS, preset, SRPO_TASKS, task, overrides)

    def create(self, device: DeviceArg = False, enable_ddp: bool = False) -> SRPO:
        check_create(self, enable_ddp)
        return SRPO(self, device, enable_ddp)

    @staticmethod
    def get_type() -> str:
        return "dyaug_srpo"


@dataclasses.dataclass(frozen=True)
class SRPOModules(Modules):
    """What d3rlpy checkpoints: the three parts, their optimizers and the step counts."""

    actor: DeterministicActor
    behavior: LNResNet
    q_funcs: TwinQ
    targ_q_funcs: TwinQ
    value_func: ValueMLP
    actor_optim: OptimizerWrapper
    behavior_optim: OptimizerWrapper
    q_optim: OptimizerWrapper
    v_optim: OptimizerWrapper
    progress: StepCounts


class SRPOImpl(ActorCriticImpl):
    """One SRPO step on d3rlpy's batch: the parts :class:`~dyaug.actors.srpo.SRPOPhases` names, each one step."""

    _modules: SRPOModules

    def __init__(
        self,
        observation_shape: Shape,
        action_size: int,
        modules: SRPOModules,
        config: SRPOConfig,
        device: str,
    ) -> None:
        super().__init__(observation_shape=observation_shape, action_size=action_size, modules=modules, device=device)
        self._config = config
        self._phases = config.phases()
        self._sde = VPSDE()
        self._updates: dict[str, Callable[[TransitionBatch], dict[str, float]]] = {
            "behavior": self._update_behavior,
            "critic": self._update_critic,
            "actor": self._update_actor,
        }

    def steps_done(self) -> dict[str, int]:
        return self._modules.progress.done()

    def parts_to_train(self) -> tuple[Part, ...]:
        return self._phases.parts_to_train(self.steps_done())

    def inner_update(self, batch: TorchMiniBatch, grad_step: int) -> dict[str, float]:
        done = self.steps_done()
        parts = self._phases.parts_to_train(done)
        if not parts:
            raise RuntimeError(
                f"SRPO has finished every phase ({done}); raise behavior_steps / critic_steps / actor_steps to train "
                "further."
            )
        if "actor" in parts:
            self._phases.check_actor_can_train(done)
        transitions = transition_batch(batch, self._config.gamma)
        metrics: dict[str, float] = {}
        for part in parts:
            metrics.update(self._updates[part](transitions))
        self._modules.progress.add(parts)
        return metrics

    def _update_behavior(self, batch: TransitionBatch) -> dict[str, float]:
        batch = batch.head(self._config.behavior_batch_size)
        loss = self._sde.loss(
            self._modules.behavior, batch.actions, cond=batch.observations, t_min=self._config.behavior_t_min
        )
        optimizer_step(self._modules.behavior_optim, loss)
        return {"behavior_loss": loss.item()}

    def _update_critic(self, batch: TransitionBatch) -> dict[str, float]:
        modules, batch = self._modules, batch.head(self._config.batch_size)
        v_loss = iql_value_loss(modules.value_func, modules.targ_q_funcs, batch, self._config.expectile)
        optimizer_step(modules.v_optim, v_loss)
        q_loss = iql_q_loss(modules.q_funcs, modules.value_func, batch)
        optimizer_step(modules.q_optim, q_loss)
        soft_update_(modules.targ_q_funcs, modules.q_funcs, self._config.tau)
        return {"v_loss": v_loss.item(), "q_loss": q_loss.item()}

    def _update_actor(self, batch: TransitionBatch) -> dict[str, float]:
        modules, config, batch = self._modules, self._config, batch.head(self._config.batch_size)
        loss = srpo_actor_loss(
            modules.actor(batch.observations),
            batch.observations,
            modules.behavior,
            Q_REDUCTIONS[config.q_reduction](modules.targ_q_funcs),
            self._sde,
            config.beta,
            weighting=config.weighting,
            baseline=config.eps_baseline,
            t_min=config.t_min,
            t_max=config.t_max,
            normalize_q_grad=config.normalize_q_grad,
        )
        optimizer_step(modules.actor_optim, loss.actor_loss)
        return {"actor_loss": loss.actor_loss.item(), "actor_q": loss.q_value.item(), "score": loss.score_norm.item()}

    def inner_predict_best_action(self, x: Tensor) -> Tensor:
        return self._modules.actor(x)

    def inner_sample_action(self, x: Tensor) -> Tensor:
        return self._modules.actor(x)

    @property
    def policy(self) -> DeterministicActor:
        return self._modules.actor


class SRPO(ContinuousActorAlgo[SRPOImpl, SRPOConfig]):
    """SRPO for d3rlpy; build it with :meth:`SRPOConfig.create`."""

    def inner_create_impl(self, observation_shape: Shape, action_size: int) -> None:
        config, device = self._config, self._device
        obs_dim = vector_observation_size(type(self).__name__, observation_shape)
        actor = DeterministicActor(obs_dim, action_size, config.actor_hidden, config.actor_layers).to(device)
        behavior = LNResNet(
            action_size,
            obs_dim,
            hidden=config.behavior_hidden,
            blocks=config.behavior_blocks,
            dropout=config.behavior_dropout,
            fourier_scale=config.fourier_scale,
        ).to(device)
        q_funcs = TwinQ(obs_dim, action_size, config.critic_hidden, config.critic_layers, "relu").to(device)
        value_func = ValueMLP(obs_dim, config.critic_hidden, config.critic_layers, "relu").to(device)
        owner = type(config).__name__

        def optimizer(factory: OptimizerFactory, module: nn.Module, lr: float, cosine: int | None) -> OptimizerWrapper:
            return make_optimizer(factory, module, lr, grad_norm=None, cosine_steps=cosine, owner=owner)

        modules = SRPOModules(
            actor=actor,
            behavior=behavior,
            q_funcs=q_funcs,
            targ_q_funcs=copy.deepcopy(q_funcs).requires_grad_(False),
            value_func=value_func,
            actor_optim=optimizer(
                config.actor_optim_factory,
                actor,
                config.actor_learning_rate,
                config.actor_steps if config.actor_lr_decay else None,
            ),
            behavior_optim=optimizer(config.behavior_optim_factory, behavior, config.behavior_learning_rate, None),
            q_optim=optimizer(config.critic_optim_factory, q_funcs, config.critic_learning_rate, None),
            v_optim=optimizer(config.critic_optim_factory, value_func, config.critic_learning_rate, None),
            progress=StepCounts(PARTS),
        )
        self._impl = SRPOImpl(
            observation_shape=observation_shape, action_size=action_size, modules=modules, config=config, device=device
        )

    @property
    def steps_done(self) -> dict[str, int]:
        """Training steps each part has had (all 0 before the first ``fit``)."""
        return self._impl.steps_done() if self._impl is not None else dict.fromkeys(PARTS, 0)

    def fitter(
        self, dataset: ReplayBufferBase, n_steps: int, n_steps_per_epoch: int = 10000, **kwargs: Any
    ) -> Generator[tuple[int, dict[str, float]], None, None]:
        """d3rlpy's ``fitter`` after checking the dataset and the phases: ``ValueError`` when the run has more steps
        than the phases have left, or when the actor would train on a behaviour model or critic never trained."""
        check_dataset(self, dataset)
        phases, done = self._config.phases(), self.steps_done
        steps = n_steps // n_steps_per_epoch * n_steps_per_epoch
        if steps > phases.remaining(done):
            raise ValueError(
                f"this fit runs {steps} steps but SRPO's phases have {phases.remaining(done)} left (budgets "
                f"behavior/critic/actor = {phases.behavior_steps}/{phases.critic_steps}/{phases.actor_steps}, done "
                f"{done}); pass n_steps <= {phases.remaining(done)} or raise the budgets."
            )
        phases.check_actor_can_train(done)
        batches = _PhaseSizedBatches(dataset, self._fit_batch_size)
        yield from super().fitter(dataset=batches, n_steps=n_steps, n_steps_per_epoch=n_steps_per_epoch, **kwargs)

    def _fit_batch_size(self) -> int:
        config = self._config
        behavior = self._impl is not None and "behavior" in self._impl.parts_to_train()
        return max(config.batch_size, config.behavior_batch_size) if behavior else config.batch_size

    def copy_pretrained_from(self, other: SRPO, parts: Sequence[Part] = ("behavior", "critic")) -> None:
        """Take over ``parts`` of another SRPO (weights, optimizer state and step counts), e.g. a behaviour model
        and critic trained once, to train actors with several β::

            pretrained = SRPOConfig(actor_steps=0).create(device); pretrained.fit(dataset, n_steps=2_000_000)
            algo = SRPOConfig(beta=0.05, behavior_steps=0, critic_steps=0).create(device)
            algo.copy_pretrained_from(pretrained)
            algo.fit(dataset, n_steps=1_000_000)

        The other algorithm's networks must have the same sizes, and both must scale inputs the same way (the same
        scaler types; fit both on the same dataset). Builds this algorithm's networks first when needed.
        """
        unknown = sorted(set(parts) - set(PART_MODULES))
        if unknown:
            raise ValueError(f"unknown SRPO parts {unknown}; choose among {list(PART_MODULES)}.")
        if not isinstance(other, SRPO) or other.impl is None:
            raise ValueError("copy_pretrained_from needs another SRPO whose networks are built (trained or loaded).")
        for scaler in ("observation_scaler", "action_scaler", "reward_scaler"):
            ours, theirs = getattr(self._config, scaler), getattr(other.config, scaler)
            if type(ours) is not type(theirs):
                raise ValueError(
                    f"the pretrained SRPO uses {scaler}={type(theirs).__name__} but this one "
                    f"{type(ours).__name__}; use the same scalers so the networks see the same inputs."
                )
        if self._impl is None:
            self.create_impl(other.impl.observation_shape, other.impl.action_size)
        for part in parts:
            for name in PART_MODULES[part]:
                try:
                    getattr(self._impl.modules, name).load_state_dict(getattr(other.impl.modules, name).state_dict())
                except (RuntimeError, ValueError, KeyError) as err:
                    raise ValueError(
                        f"cannot copy SRPO's {part} ({name}): the two algorithms' networks differ ({err})."
                    ) from err
            self._impl.modules.progress.set(part, other.impl.modules.progress.done()[part])


class _PhaseSizedBatches:
    """``dataset`` as SRPO's fit loop sees it: every batch sized for the parts the next step trains; all else is
    ``dataset``'s own."""

    def __init__(self, dataset: ReplayBufferBase, batch_size: Callable[[], int]) -> None:
        self._dataset = dataset
        self._batch_size = batch_size

    def sample_transition_batch(self, batch_size: int) -> TransitionMiniBatch:
        return self._dataset.sample_transition_batch(self._batch_size())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dataset, name)


register_once(SRPOConfig)
