"""What the d3rlpy bindings of dyaug's diffusion actors (Diffusion-QL, SRPO) share: config fields, input checks,
optimizers with gradient clipping and a cosine decay, batch conversion, one-time registration, and the parts of
the algorithm and implementation classes that both answer the same way.

The algorithms' maths lives in :mod:`dyaug.actors`; this module only binds it to d3rlpy 2.8.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import gym.spaces
import gymnasium.spaces
import numpy as np
import torch
from d3rlpy.algos.qlearning.base import QLearningAlgoBase, QLearningAlgoImplBase
from d3rlpy.base import LearnableConfig, register_learnable
from d3rlpy.constants import ActionSpace
from d3rlpy.dataset import ReplayBufferBase
from d3rlpy.optimizers import OptimizerFactory, make_optimizer_field
from d3rlpy.optimizers.lr_schedulers import CosineAnnealingLRFactory
from d3rlpy.optimizers.optimizers import OptimizerWrapper
from d3rlpy.preprocessing import (
    ConstantShiftRewardScaler,
    ReturnBasedRewardScaler,
    RewardScaler,
    StandardRewardScaler,
    make_reward_scaler_field,
)
from d3rlpy.serializable_config import CONFIG_STORAGE
from d3rlpy.torch_utility import TorchMiniBatch
from d3rlpy.types import Shape
from torch import Tensor, nn

from dyaug.actors.batch import TransitionBatch
from dyaug.actors.presets import resolve_settings

ConfigT = TypeVar("ConfigT", bound=LearnableConfig)
ImplT = TypeVar("ImplT", bound=QLearningAlgoImplBase)

REWARD_SCALERS: dict[str, Callable[[], RewardScaler | None]] = {
    "raw": lambda: None,
    "iql_returns": lambda: ReturnBasedRewardScaler(multiplier=1000.0),
    "antmaze_shift": lambda: ConstantShiftRewardScaler(shift=-1.0),
    "antmaze_cql": lambda: ConstantShiftRewardScaler(shift=-0.5, multiplier=4.0, multiply_first=False),
    "standardize": lambda: StandardRewardScaler(),
}
"""d3rlpy reward scalers for the reward preprocessings named in :mod:`dyaug.actors.presets`."""

ACTION_TOLERANCE = 1e-5
BOXES = (gymnasium.spaces.Box, gym.spaces.Box)  # d3rlpy accepts environments of both


def register_once(config_cls: type[LearnableConfig]) -> None:
    """``d3rlpy.base.register_learnable(config_cls)``, safe when the defining module is executed again.

    d3rlpy accepts each ``get_type()`` key once. The same class defined again (a module reload) takes over the key,
    so ``d3rlpy.load_learnable`` builds the current class; another class claiming the key raises ``ValueError``.
    """
    registry = CONFIG_STORAGE[LearnableConfig].config_list
    key = config_cls.get_type()
    known = registry.get(key)
    if known is None:
        register_learnable(config_cls)
    elif (known.__module__, known.__qualname__) == (config_cls.__module__, config_cls.__qualname__):
        registry[key] = config_cls
    else:
        raise ValueError(
            f"the d3rlpy learnable key {key!r} is taken by {known.__module__}.{known.__qualname__}; "
            f"{config_cls.__qualname__} cannot register it."
        )


def optimizer_field(default: Callable[[], OptimizerFactory]) -> Any:
    """A config field holding an optimizer factory (serialised like d3rlpy's own) with another default."""
    return dataclasses.field(metadata=make_optimizer_field().metadata, default_factory=default)


def reward_scaler_field(default: Callable[[], RewardScaler | None]) -> Any:
    """A ``reward_scaler`` field (serialised like d3rlpy's own) with another default."""
    return dataclasses.field(metadata=make_reward_scaler_field().metadata, default_factory=default)


def config_from_preset(
    config_cls: type[ConfigT],
    presets: Mapping[str, Mapping[str, Any]],
    preset: str,
    tasks: Mapping[str, Mapping[str, Any]],
    task: str | None,
    overrides: Mapping[str, Any],
) -> ConfigT:
    """``config_cls`` with a preset, a task's settings and ``overrides`` applied (see :mod:`dyaug.actors.presets`).

    The settings' ``reward`` name becomes ``reward_scaler`` unless ``overrides`` set ``reward_scaler`` itself; an
    unknown field raises ``TypeError``.
    """
    if {"reward", "reward_scaler"} <= set(overrides):
        raise ValueError("pass either reward (a preprocessing name) or reward_scaler (a d3rlpy scaler), not both.")
    settings = resolve_settings(config_cls.__name__, presets, preset, tasks, task, overrides)
    reward = settings.pop("reward", None)
    if reward is not None and "reward_scaler" not in overrides:
        settings["reward_scaler"] = REWARD_SCALERS[reward]()
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"{config_cls.__name__} has no fields {unknown}; its fields are {sorted(known)}.")
    return config_cls(**settings)


def check_choice(owner: str, name: str, value: object, choices: Mapping[str, object] | tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {sorted(choices)}, got {value!r}.")


def check_positive(owner: str, **values: float | int | None) -> None:
    """Raise ``ValueError`` unless every given value is > 0 (``None`` values are skipped)."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value!r}.")


def check_create(config: LearnableConfig, enable_ddp: bool) -> None:
    """Refuse the d3rlpy options these algorithms do not implement (no silent fallback)."""
    name = type(config).__name__
    if enable_ddp:
        raise ValueError(f"{name}.create does not support enable_ddp=True (distributed training); pass False.")
    if config.compile_graph:
        raise ValueError(f"{name} does not support compile_graph=True (CUDA graphs); set it to False.")


def vector_observation_size(algorithm: str, observation_shape: Shape) -> int:
    """The size of flat vector observations; ``ValueError`` for images, stacked frames or tuple observations."""
    shape = tuple(observation_shape)
    if len(shape) == 1 and isinstance(shape[0], int | np.integer):
        return int(shape[0])
    raise ValueError(
        f"{algorithm} takes flat vector observations of shape (obs_dim,), got observation shape {shape}; "
        "flatten the observations (or encode images into feature vectors) before building the dataset."
    )


def check_dataset_layout(algo: Any, dataset: ReplayBufferBase) -> None:
    """``ValueError`` unless ``dataset`` has continuous actions and one flat vector observation."""
    name = type(algo).__name__
    info = dataset.dataset_info
    if info.action_space != ActionSpace.CONTINUOUS:
        raise ValueError(
            f"{name} is for continuous actions but the dataset's action space is discrete; use a discrete "
            "algorithm (e.g. d3rlpy.algos.DiscreteCQLConfig) for discrete actions."
        )
    shape = info.observation_signature.shape
    if len(shape) != 1:
        raise ValueError(
            f"{name} takes one flat observation vector, but the dataset's observations are a tuple of "
            f"{len(shape)} arrays {shape}; concatenate them into one vector."
        )
    vector_observation_size(name, shape[0])


def check_dataset(algo: Any, dataset: ReplayBufferBase) -> None:
    """Check that ``dataset`` suits a continuous-control diffusion actor, after fitting ``algo``'s scalers on it.

    Needs: a continuous action space, flat vector observations and actions within [-1, 1] as the algorithm sees
    them (after ``action_scaler``): the actors' outputs are bounded by tanh or by the sampler's clip to [-1, 1].
    """
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    check_dataset_layout(algo, dataset)
    build_scalers_with_transition_picker(algo, dataset)
    scaler = algo.config.action_scaler
    largest = max(
        (float(np.abs(scaler.transform_numpy(ep.actions) if scaler else ep.actions).max()) for ep in dataset.episodes),
        default=0.0,
    )
    rewards = algo.config.reward_scaler
    if rewards is not None and dataset.episodes:
        low = min(float(ep.rewards.min()) for ep in dataset.episodes)
        high = max(float(ep.rewards.max()) for ep in dataset.episodes)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = rewards.transform_numpy(np.array([low, high], np.float32))
        if not np.all(np.isfinite(scaled)):
            raise ValueError(
                f"{type(algo).__name__}'s reward_scaler {type(rewards).__name__} turns the dataset's rewards into "
                "NaN or infinity (ReturnBasedRewardScaler needs episodes with different returns); pass another "
                "reward_scaler, or reward_scaler=None."
            )
    if largest > 1.0 + ACTION_TOLERANCE:
        raise ValueError(
            f"{type(algo).__name__} needs actions in [-1, 1] but the dataset's actions"
            f"{' after action_scaler' if scaler else ''} reach |a| = {largest:.4g}; pass "
            "action_scaler=d3rlpy.preprocessing.MinMaxActionScaler() to the config (it maps the dataset's action "
            "range, or the env's bounds with fit_with_env, onto [-1, 1])."
        )


def check_env(algo: Any, env: Any) -> None:
    """``ValueError`` unless ``env`` has a Box action space and flat Box observations."""
    name = type(algo).__name__
    if not isinstance(env.action_space, BOXES) or not isinstance(env.observation_space, BOXES):
        raise ValueError(
            f"{name} needs Box (continuous) action and observation spaces, got {env.action_space} and "
            f"{env.observation_space}."
        )
    vector_observation_size(name, env.observation_space.shape)


def make_optimizer(
    factory: OptimizerFactory,
    module: nn.Module,
    lr: float,
    *,
    grad_norm: float | None,
    cosine_steps: int | None,
    owner: str,
) -> OptimizerWrapper:
    """d3rlpy's optimizer for ``module``'s parameters with the global gradient norm clipped at ``grad_norm`` and the
    learning rate decayed over ``cosine_steps`` optimizer steps as lr_k = lr (1 + cos(π k / K)) / 2 (``None``: no
    clipping, no decay). Clipping and the scheduler are checkpointed with the optimizer by d3rlpy.

    The factory itself must not set ``clip_grad_norm`` or ``lr_scheduler_factory``: one setting, one place.
    """
    if factory.clip_grad_norm is not None or factory.lr_scheduler_factory is not None:
        raise ValueError(
            f"{owner}: set gradient clipping and the cosine decay with the config's own fields, not with the "
            "optimizer factory's clip_grad_norm / lr_scheduler_factory."
        )
    scheduler = CosineAnnealingLRFactory(T_max=cosine_steps) if cosine_steps else None
    factory = dataclasses.replace(factory, clip_grad_norm=grad_norm, lr_scheduler_factory=scheduler)
    return factory.create(module.named_modules(), lr=lr, compiled=False)


class StepCounts(nn.Module):
    """Named step counters kept in a CPU buffer, so d3rlpy checkpoints them with the weights."""

    steps: Tensor  # a registered buffer

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.register_buffer("steps", torch.zeros(len(self.names), dtype=torch.int64))

    def done(self) -> dict[str, int]:
        return dict(zip(self.names, self.steps.tolist(), strict=True))

    def add(self, names: Sequence[str]) -> None:
        for name in names:
            self.steps[self.names.index(name)] += 1

    def set(self, name: str, value: int) -> None:
        self.steps[self.names.index(name)] = value


def optimizer_step(optimizer: OptimizerWrapper, loss: Tensor) -> None:
    """Zero the gradients, back-propagate ``loss``, then step (clipping and scheduling as the wrapper says)."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def transition_batch(batch: TorchMiniBatch, gamma: float) -> TransitionBatch:
    """d3rlpy's scaled torch batch as :class:`~dyaug.actors.batch.TransitionBatch`, discounts γ^interval."""
    return TransitionBatch(
        observations=batch.observations,
        actions=batch.actions,
        rewards=batch.rewards.reshape(-1),
        next_observations=batch.next_observations,
        terminals=batch.terminals.reshape(-1),
        discounts=gamma ** batch.intervals.reshape(-1),
    )


class ActorCriticImpl(QLearningAlgoImplBase):
    """An implementation whose modules hold the twin critic ``q_funcs`` and the actor's optimizer ``actor_optim``:
    ``predict_value`` is min(Q1, Q2) of that critic, d3rlpy's ``policy_optim`` that optimizer."""

    def inner_predict_value(self, x: Tensor, action: Tensor) -> Tensor:
        return self._modules.q_funcs.min(x, action)

    @property
    def policy_optim(self) -> torch.optim.Optimizer:
        return self._modules.actor_optim.optim


class ContinuousActorAlgo(QLearningAlgoBase[ImplT, ConfigT]):
    """A d3rlpy algorithm for continuous actions that checks a dataset or environment before building on it
    (:func:`check_dataset_layout`, :func:`check_env`)."""

    def get_action_type(self) -> ActionSpace:
        return ActionSpace.CONTINUOUS

    def build_with_dataset(self, dataset: ReplayBufferBase) -> None:
        check_dataset_layout(self, dataset)
        super().build_with_dataset(dataset)

    def build_with_env(self, env: Any) -> None:
        check_env(self, env)
        super().build_with_env(env)
