"""Diffusion-QL as a d3rlpy 2.8 algorithm: ``DiffusionQLConfig(...).create(device=...)``, then ``fit`` / ``fitter``,
``predict``, ``predict_value``, ``save`` and ``d3rlpy.load_learnable``.

Wang, Hunt & Zhou, "Diffusion Policies as an Expressive Policy Class for Offline RL" (ICLR 2023, arXiv
2208.06193). The maths (policy, losses, candidate selection) is in :mod:`dyaug.actors.diffusion_ql`; this module
binds it to d3rlpy's config, checkpoint, fit loop, loggers and evaluators.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from collections.abc import Generator
from typing import Any, Literal

import torch
from d3rlpy.base import DeviceArg, LearnableConfig
from d3rlpy.dataset import ReplayBufferBase
from d3rlpy.optimizers import OptimizerFactory, make_optimizer_field
from d3rlpy.optimizers.optimizers import OptimizerWrapper
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
    optimizer_step,
    register_once,
    transition_batch,
    vector_observation_size,
)
from torch import Tensor

from dyaug.actors.critics import TwinQ
from dyaug.actors.diffusion_ql import SELECTIONS, DiffusionPolicy, Selection, diffusion_ql_update
from dyaug.actors.diffusion_ql import select_actions as select_by_q
from dyaug.actors.presets import DIFFUSION_QL_PRESETS, DIFFUSION_QL_TASKS
from dyaug.diffusion.ema import EMA

__all__ = ["DiffusionQL", "DiffusionQLConfig", "DiffusionQLImpl", "DiffusionQLModules"]

EVALUATION_ACTORS = {"online": "policy", "ema": "ema_policy"}
"""Which actor draws ``predict``'s candidates: the field of :class:`DiffusionQLModules` per setting."""


@dataclasses.dataclass()
class DiffusionQLConfig(LearnableConfig):
    """Diffusion-QL's settings; the defaults are the paper's (Gym locomotion, official code).

    Policy: a ``n_diffusion_steps``-step "vp" DDPM (β_min ``beta_min``, β_max ``beta_max``) whose noise network is
    ``hidden`` x 3 Mish layers with a ``t_dim`` step embedding. Critic: twin Q, ``critic_layers`` x ``critic_hidden``
    Mish layers, TD targets min_i Q_i^target(s', a') with a' from the EMA actor (``ema_decay`` every ``ema_every``
    steps after ``ema_warmup``; with ``max_q_backup``, the max over ``n_backup_samples`` draws), target Polyak ``tau``.

    Each step (batch ``batch_size``): the critic step, then the actor step on L = L_BC + ``eta`` L_Q
    (:func:`dyaug.actors.diffusion_ql.dql_actor_loss`), then the EMA, then the target critic. Both optimizers
    (``*_optim_factory``, Adam by default) clip the gradient norm at ``grad_norm`` and decay their learning rate
    with a cosine to 0 over ``lr_decay_steps`` steps (``None``: constant), stepped every update: the official code
    steps its cosine once per 50 epochs, so its rate barely decays. Past ``lr_decay_steps`` torch's cosine rises
    again, so set it to the run's total steps (``fit`` warns otherwise).

    ``predict``: the paper's evaluation: ``n_action_samples`` candidates per state from the online actor
    (``evaluation_actor="ema"``: the EMA actor) in one batched chain, scored by min(Q1, Q2) of the target critic
    and picked by ``action_selection`` ("softmax": drawn from softmax(Q / ``selection_temperature``); "argmax").
    ``sample_action``: one draw of the actor.
    ``predict_value``: min(Q1, Q2) of the critic.

    Actions must be in [-1, 1] as the algorithm sees them: use ``action_scaler=MinMaxActionScaler()`` for other
    bounds (``fit`` checks). Observations are flat vectors (``observation_scaler`` optional).

    Defaults that differ from the paper's code: ``grad_norm`` 5.0 (the code sets it per task, 1 to 10: see
    :data:`dyaug.actors.presets.DIFFUSION_QL_TASKS` and :meth:`from_preset`); the EMA copies the actor during its
    warm-up and ramps its decay up to ``ema_decay`` (:class:`dyaug.diffusion.ema.EMA`), where the code keeps the
    initial actor for 1000 steps and then uses 0.995.
    """

    batch_size: int = 256
    gamma: float = 0.99
    actor_learning_rate: float = 3e-4
    critic_learning_rate: float = 3e-4
    actor_optim_factory: OptimizerFactory = make_optimizer_field()  # noqa: RUF009 (a field)
    critic_optim_factory: OptimizerFactory = make_optimizer_field()  # noqa: RUF009 (a field)
    grad_norm: float | None = 5.0
    lr_decay_steps: int | None = 2_000_000
    eta: float = 1.0
    tau: float = 0.005
    n_diffusion_steps: int = 5
    beta_min: float = 0.1
    beta_max: float = 10.0
    hidden: int = 256
    t_dim: int = 16
    critic_hidden: int = 256
    critic_layers: int = 3
    ema_decay: float = 0.995
    ema_every: int = 5
    ema_warmup: int = 1000
    max_q_backup: bool = False
    n_backup_samples: int = 10
    n_action_samples: int = 50
    action_selection: Selection = "softmax"
    selection_temperature: float = 1.0
    evaluation_actor: Literal["online", "ema"] = "online"

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_choice(name, "action_selection", self.action_selection, SELECTIONS)
        check_choice(name, "evaluation_actor", self.evaluation_actor, EVALUATION_ACTORS)
        check_positive(
            name,
            batch_size=self.batch_size,
            actor_learning_rate=self.actor_learning_rate,
            critic_learning_rate=self.critic_learning_rate,
            grad_norm=self.grad_norm,
            lr_decay_steps=self.lr_decay_steps,
            tau=self.tau,
            n_diffusion_steps=self.n_diffusion_steps,
            hidden=self.hidden,
            critic_hidden=self.critic_hidden,
            critic_layers=self.critic_layers,
            ema_every=self.ema_every,
            n_backup_samples=self.n_backup_samples,
            n_action_samples=self.n_action_samples,
            selection_temperature=self.selection_temperature,
        )
        if self.eta < 0:
            raise ValueError(f"{name}.eta must be >= 0, got {self.eta}.")

    @classmethod
    def from_preset(cls, preset: str = "paper", *, task: str | None = None, **overrides: Any) -> DiffusionQLConfig:
        """A config from :data:`dyaug.actors.presets.DIFFUSION_QL_PRESETS` (``"paper"``, ``"cpu"``, ``"tiny"``), the
        settings of a ``task`` of the paper's table (e.g. ``"hopper-medium-replay"``), then ``overrides``."""
        return config_from_preset(cls, DIFFUSION_QL_PRESETS, preset, DIFFUSION_QL_TASKS, task, overrides)

    def create(self, device: DeviceArg = False, enable_ddp: bool = False) -> DiffusionQL:
        check_create(self, enable_ddp)
        return DiffusionQL(self, device, enable_ddp)

    @staticmethod
    def get_type() -> str:
        return "dyaug_diffusion_ql"


@dataclasses.dataclass(frozen=True)
class DiffusionQLModules(Modules):
    """What d3rlpy checkpoints: the actor, its EMA copy, the critic and its target, the two optimizers and the
    number of updates (which drives the EMA schedule)."""

    policy: DiffusionPolicy
    ema_policy: DiffusionPolicy
    q_funcs: TwinQ
    targ_q_funcs: TwinQ
    actor_optim: OptimizerWrapper
    critic_optim: OptimizerWrapper
    progress: StepCounts


class DiffusionQLImpl(ActorCriticImpl):
    """One Diffusion-QL step on d3rlpy's batch: critic, actor, EMA, target critic (in the official order)."""

    _modules: DiffusionQLModules

    def __init__(
        self,
        observation_shape: Shape,
        action_size: int,
        modules: DiffusionQLModules,
        ema: EMA,
        config: DiffusionQLConfig,
        device: str,
    ) -> None:
        super().__init__(observation_shape=observation_shape, action_size=action_size, modules=modules, device=device)
        if ema.module is not modules.ema_policy:
            raise ValueError("the EMA must average into modules.ema_policy (build it with EMA(policy) first).")
        self._ema = ema
        self._config = config

    def inner_update(self, batch: TorchMiniBatch, grad_step: int) -> dict[str, float]:
        modules, config = self._modules, self._config
        losses = diffusion_ql_update(
            critic=modules.q_funcs,
            target_critic=modules.targ_q_funcs,
            policy=modules.policy,
            backup_policy=modules.ema_policy,
            ema=self._ema,
            ema_source=modules.policy,
            ema_step=modules.progress.done()["update"],
            batch=transition_batch(batch, config.gamma),
            eta=config.eta,
            tau=config.tau,
            critic_step=functools.partial(optimizer_step, modules.critic_optim),
            actor_step=functools.partial(optimizer_step, modules.actor_optim),
            max_q_backup=config.max_q_backup,
            n_backup_samples=config.n_backup_samples,
        )
        modules.progress.add(["update"])
        return dict(zip(losses, torch.stack(list(losses.values())).tolist(), strict=True))  # one host transfer

    def inner_predict_best_action(self, x: Tensor) -> Tensor:
        config = self._config
        return select_by_q(
            getattr(self._modules, EVALUATION_ACTORS[config.evaluation_actor]),
            self._modules.targ_q_funcs.min,
            x,
            n_candidates=config.n_action_samples,
            selection=config.action_selection,
            temperature=config.selection_temperature,
        )

    def inner_sample_action(self, x: Tensor) -> Tensor:
        return self._modules.policy(x)

    @property
    def policy(self) -> DiffusionPolicy:
        return self._modules.policy


class DiffusionQL(ContinuousActorAlgo[DiffusionQLImpl, DiffusionQLConfig]):
    """Diffusion-QL for d3rlpy; build it with :meth:`DiffusionQLConfig.create`."""

    def inner_create_impl(self, observation_shape: Shape, action_size: int) -> None:
        config = self._config
        obs_dim = vector_observation_size(type(self).__name__, observation_shape)
        policy = DiffusionPolicy(
            obs_dim,
            action_size,
            hidden=config.hidden,
            t_dim=config.t_dim,
            n_steps=config.n_diffusion_steps,
            beta_min=config.beta_min,
            beta_max=config.beta_max,
        ).to(self._device)
        ema = EMA(policy, decay=config.ema_decay, update_every=config.ema_every, warmup_steps=config.ema_warmup)
        critic = TwinQ(obs_dim, action_size, config.critic_hidden, config.critic_layers, "mish").to(self._device)
        modules = DiffusionQLModules(
            policy=policy,
            ema_policy=ema.module,
            q_funcs=critic,
            targ_q_funcs=copy.deepcopy(critic).requires_grad_(False),
            actor_optim=self._optimizer(config.actor_optim_factory, policy, config.actor_learning_rate),
            critic_optim=self._optimizer(config.critic_optim_factory, critic, config.critic_learning_rate),
            progress=StepCounts(["update"]),
        )
        self._impl = DiffusionQLImpl(
            observation_shape=observation_shape,
            action_size=action_size,
            modules=modules,
            ema=ema,
            config=config,
            device=self._device,
        )

    def _optimizer(self, factory: OptimizerFactory, module: torch.nn.Module, lr: float) -> OptimizerWrapper:
        config = self._config
        return make_optimizer(
            factory,
            module,
            lr,
            grad_norm=config.grad_norm,
            cosine_steps=config.lr_decay_steps,
            owner=type(config).__name__,
        )

    def fitter(
        self, dataset: ReplayBufferBase, n_steps: int, n_steps_per_epoch: int = 10000, **kwargs: Any
    ) -> Generator[tuple[int, dict[str, float]], None, None]:
        """d3rlpy's ``fitter`` after checking the dataset (continuous actions in [-1, 1], vector observations);
        warns when the run passes ``lr_decay_steps``, where the cosine learning rate would rise again."""
        check_dataset(self, dataset)
        done = self._impl.modules.progress.done()["update"] if self._impl is not None else 0
        total = done + n_steps // n_steps_per_epoch * n_steps_per_epoch
        decay = self._config.lr_decay_steps
        if decay is not None and total > decay:
            warnings.warn(
                f"this fit reaches {total} gradient steps but the cosine learning-rate decay spans lr_decay_steps="
                f"{decay}; past it the learning rate rises again. Set lr_decay_steps to the run's total steps.",
                UserWarning,
                stacklevel=3,
            )
        yield from super().fitter(dataset=dataset, n_steps=n_steps, n_steps_per_epoch=n_steps_per_epoch, **kwargs)


register_once(DiffusionQLConfig)
