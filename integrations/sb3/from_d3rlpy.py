"""Offline pre-training in d3rlpy, online fine-tuning in Stable-Baselines3: dyaug's d3rlpy Diffusion-QL and SRPO
as SB3 TD3 models.

- :func:`td3_from_d3rlpy`: an SB3 model sized like a trained d3rlpy algorithm, carrying its weights. Diffusion-QL
  becomes a :class:`~dyaug.integrations.sb3.DiffusionQLTD3` (actor, EMA actor, critics, target critics and the
  EMA's step count); SRPO becomes an SB3 ``TD3`` (the deterministic actor as actor and target actor, the IQL twin
  Q as critics; SRPO's behaviour model and V are offline-only and stay behind);
- :func:`load_diffusion_ql_into_td3`, :func:`load_srpo_into_td3`: the same into a model you built.

Units. SB3 feeds its networks raw observations and actions scaled to [-1, 1] by the env's bounds; d3rlpy feeds
them through the algorithm's scalers. The loaders make the SB3 networks compute what the d3rlpy ones compute:

- observations: an elementwise affine observation scaler x' = c ⊙ x + o (d3rlpy's Standard, MinMax or Pixel
  scaler) is folded into the first layer, W' = W diag(c), b' = b + W o, so SB3 sees raw observations (add no
  ``VecNormalize`` on top);
- actions: the algorithm's [-1, 1] must map onto the env's bounds as SB3's does (no action scaler and a [-1, 1]
  action space, or ``MinMaxActionScaler`` with the env's bounds);
- rewards: the critics learnt Q of d3rlpy's scaled rewards. For a multiplicative scaler r' = m r
  (``ReturnBasedRewardScaler``, ``MultiplyRewardScaler``) the Bellman fixed point scales by m too, so the last
  layer is divided by m and the SB3 critics estimate Q in the env's reward units, which SB3 trains on. Shifted,
  clipped or standardised rewards have no such conversion: load with ``critic=False`` (fresh SB3 critics).

Optimizer states are not carried over: SB3 starts with fresh Adam moments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch as th
from dyaug.integrations.d3rlpy import SRPO, DiffusionQL, DiffusionQLConfig
from dyaug.integrations.sb3.diffusion_td3 import DiffusionQLTD3, DiffusionTD3Policy
from gymnasium import spaces
from stable_baselines3 import TD3
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.td3.policies import Actor, TD3Policy
from torch import nn

from dyaug.actors.critics import TwinQ

__all__ = ["load_diffusion_ql_into_td3", "load_srpo_into_td3", "td3_from_d3rlpy"]

REBUILD = "build the SB3 model with td3_from_d3rlpy(algo, env), which sizes it from the algorithm's config"
Affine = tuple[np.ndarray, np.ndarray]
"""``(c, o)`` of an elementwise map x -> c ⊙ x + o."""


# ------------------------------------------------------------------------------------------------------- units
def elementwise_affine(transform: Callable[[np.ndarray], np.ndarray], dim: int, what: str, fix: str) -> Affine:
    """``(c, o)`` with ``transform(x) = c ⊙ x + o`` for rows x of size ``dim``: measured at 0 and 1, checked at
    four other points (float64); ``ValueError`` naming ``what`` and ``fix`` when ``transform`` is not such a map."""
    shift = np.asarray(transform(np.zeros((1, dim))), np.float64)[0]
    scale = np.asarray(transform(np.ones((1, dim))), np.float64)[0] - shift
    probes = np.array([-1000.5, -3.7, 2.9, 123.4])[:, None] * np.ones(dim)
    if not np.allclose(np.asarray(transform(probes), np.float64), scale * probes + shift, rtol=1e-4, atol=1e-6):
        raise ValueError(f"{what} is not an elementwise affine map x -> c x + o; {fix}.")
    return scale, shift


def observation_affine(algo: DiffusionQL | SRPO, dim: int) -> Affine:
    """The algorithm's observation scaler as ``(c, o)`` (identity without a scaler)."""
    scaler = algo.config.observation_scaler
    if scaler is None:
        return np.ones(dim), np.zeros(dim)
    return elementwise_affine(
        scaler.transform_numpy,
        dim,
        f"the observation scaler {type(scaler).__name__}",
        "only elementwise affine scalers (Standard, MinMax, Pixel) can be folded into the first layer",
    )


def reward_multiplier(algo: DiffusionQL | SRPO) -> float:
    """m of the algorithm's reward scaler r' = m r (1 without a scaler); ``ValueError`` for any other scaler."""
    scaler = algo.config.reward_scaler
    if scaler is None:
        return 1.0
    name = type(scaler).__name__
    fix = (
        "SB3's critics train on the env's raw rewards and only a purely multiplicative scaler converts; load with "
        "critic=False to start SB3's critics untrained"
    )
    scale, shift = elementwise_affine(scaler.transform_numpy, 1, f"the reward scaler {name}", fix)
    if abs(shift[0]) > 1e-8 or not scale[0] > 0:
        raise ValueError(f"the reward scaler {name} maps r to {scale[0]:.4g} r + {shift[0]:.4g}; {fix}.")
    return float(scale[0])


def check_action_units(algo: DiffusionQL | SRPO, action_space: spaces.Box) -> None:
    """``ValueError`` unless the algorithm's [-1, 1] maps onto ``action_space``'s bounds, as SB3's scaling does."""
    scaler = algo.config.action_scaler
    ends = np.stack([-np.ones(action_space.shape), np.ones(action_space.shape)])
    low, high = scaler.reverse_transform_numpy(ends) if scaler is not None else ends
    if not (np.allclose(low, action_space.low, atol=1e-5) and np.allclose(high, action_space.high, atol=1e-5)):
        raise ValueError(
            f"the d3rlpy algorithm's actions in [-1, 1] mean env actions in [{low}, {high}], but SB3 maps [-1, 1] "
            f"onto the env's bounds [{action_space.low}, {action_space.high}]; train with "
            "action_scaler=MinMaxActionScaler(minimum=low, maximum=high) set to the env's bounds (or no scaler for a "
            "[-1, 1] action space), or wrap the env with gymnasium.wrappers.RescaleAction to the algorithm's range."
        )


# ----------------------------------------------------------------------------------------------------- weights
@th.no_grad()
def fold_input_affine_(linear: nn.Linear, columns: slice, affine: Affine) -> None:
    """Make ``linear`` take raw inputs on ``columns`` where it took c ⊙ x + o: W_c <- W_c diag(c), b <- b + W_c o
    (computed in float64), in place."""
    scale, shift = (th.as_tensor(v, dtype=th.float64, device=linear.weight.device) for v in affine)
    weight = linear.weight[:, columns].double()
    linear.bias.copy_(linear.bias.double() + weight @ shift)
    linear.weight[:, columns] = (weight * scale).to(linear.weight.dtype)


def copy_weights(source: nn.Module, target: nn.Module, what: str) -> None:
    """``target.load_state_dict(source.state_dict())`` after checking both have the same layer types in order;
    ``ValueError`` naming ``what`` otherwise."""
    ours, theirs = ([type(m).__name__ for m in module.modules()][1:] for module in (source, target))
    if ours != theirs:
        raise ValueError(f"cannot load {what}: d3rlpy's layers are {ours} but SB3's are {theirs}; {REBUILD}.")
    try:
        target.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise ValueError(f"cannot load {what}: the layer sizes differ ({err}); {REBUILD}.") from err


def load_critics(policy: TD3Policy, pairs: tuple[tuple[TwinQ, str], ...], observations: Affine, m: float) -> None:
    """Each d3rlpy :class:`~dyaug.actors.TwinQ` into the SB3 critic named beside it: heads into ``qf0, qf1 ...``,
    the observation scaler folded into the first layer, the last layer divided by the reward multiplier ``m``."""
    obs_dim = len(observations[0])
    for source, name in pairs:
        target = getattr(policy, name)
        if len(source.heads) != len(target.q_networks):
            raise ValueError(
                f"the d3rlpy critic has {len(source.heads)} heads but SB3's {name} {len(target.q_networks)}; pass "
                f"policy_kwargs n_critics={len(source.heads)}."
            )
        for head, network in zip(source.heads, target.q_networks, strict=True):
            copy_weights(head, network, f"the critic into {name}")
            fold_input_affine_(network[0], slice(0, obs_dim), observations)
            with th.no_grad():
                network[-1].weight.div_(m)
                network[-1].bias.div_(m)


def built_modules(algo: Any, algo_type: type[Any], model: TD3) -> Any:
    """The d3rlpy algorithm's modules, after checking its type and that its sizes match the SB3 model's spaces."""
    if not isinstance(algo, algo_type):
        raise TypeError(f"expected a d3rlpy {algo_type.__name__}, got {type(algo).__name__}.")
    if algo.impl is None:
        raise ValueError(
            f"the {algo_type.__name__} has no networks yet; fit it, or load it with d3rlpy.load_learnable, first."
        )
    sizes = (algo.impl.observation_shape[0], algo.impl.action_size)
    obs_shape, action_shape = model.observation_space.shape, model.action_space.shape
    assert obs_shape is not None and action_shape is not None  # TD3: Box spaces
    spaces_ = (obs_shape[0], action_shape[0])
    if sizes != spaces_:
        raise ValueError(
            f"the {algo_type.__name__} was built for (observation, action) sizes {sizes} but the SB3 model's env "
            f"has {spaces_}; use the env the data came from."
        )
    return algo.impl.modules


def diffusion_sizes(config: DiffusionQLConfig) -> dict[str, Any]:
    """The settings of a Diffusion-QL config that size its actor, as the keywords of
    :class:`~dyaug.integrations.sb3.DiffusionTD3Policy` (its ``diffusion_kwargs``)."""
    return {
        "hidden": config.hidden,
        "t_dim": config.t_dim,
        "n_diffusion_steps": config.n_diffusion_steps,
        "beta_min": config.beta_min,
        "beta_max": config.beta_max,
    }


# ------------------------------------------------------------------------------------------------------ loaders
def load_diffusion_ql_into_td3(model: TD3, algo: DiffusionQL, *, critic: bool = True) -> None:
    """Load a trained d3rlpy :class:`~dyaug.integrations.d3rlpy.DiffusionQL` into an SB3 model with
    :class:`~dyaug.integrations.sb3.DiffusionTD3Policy`: actor -> ``actor``, EMA actor -> ``actor_target``, and
    with ``critic`` the critics -> ``critic`` and the target critics -> ``critic_target`` (see the module docstring
    for the units); a :class:`~dyaug.integrations.sb3.DiffusionQLTD3` also resumes the EMA schedule. Raises
    before changing anything when the sizes, schedule or units do not match."""
    policy = model.policy
    if not isinstance(policy, DiffusionTD3Policy):
        raise TypeError(
            f"Diffusion-QL's actor loads into DiffusionTD3Policy (DiffusionQLTD3, or TD3 with DiffusionTD3Policy), "
            f"got {type(model).__name__} with {type(policy).__name__}."
        )
    modules = built_modules(algo, DiffusionQL, model)
    expected = diffusion_sizes(algo.config)
    if policy.diffusion_kwargs != expected:
        raise ValueError(
            f"the SB3 diffusion actor has {policy.diffusion_kwargs} but the d3rlpy one {expected}; {REBUILD}."
        )
    obs_space, action_space = model.observation_space, model.action_space
    assert isinstance(obs_space, spaces.Box) and isinstance(action_space, spaces.Box)  # DiffusionTD3Policy checked
    observations = observation_affine(algo, obs_space.shape[0])
    check_action_units(algo, action_space)
    multiplier = reward_multiplier(algo) if critic else 1.0
    for source, name in ((modules.policy, "actor"), (modules.ema_policy, "actor_target")):
        target = getattr(policy, name).diffusion
        copy_weights(source, target, f"Diffusion-QL's actor into {name}")
        first = target.eps_net.net[0]  # its inputs are [a_k, step embedding, s]
        fold_input_affine_(first, slice(first.in_features - target.obs_dim, None), observations)
    if critic:
        pairs = ((modules.q_funcs, "critic"), (modules.targ_q_funcs, "critic_target"))
        load_critics(policy, pairs, observations, multiplier)
    if isinstance(model, DiffusionQLTD3):
        model.ema_updates = modules.progress.done()["update"]


def load_srpo_into_td3(model: TD3, algo: SRPO, *, critic: bool = True) -> None:
    """Load a trained d3rlpy :class:`~dyaug.integrations.d3rlpy.SRPO` into an SB3 ``TD3`` (or ``DDPG``) with its
    ``MlpPolicy``: the deterministic actor π(s) = tanh(MLP(s)) -> ``actor`` and ``actor_target``, and with
    ``critic`` the IQL twin Q -> ``critic``, its target -> ``critic_target`` (see the module docstring for the
    units). The TD3 must have ReLU layers of SRPO's sizes (``td3_from_d3rlpy`` builds one). Raises before changing
    anything when sizes or units do not match."""
    if not isinstance(model, TD3) or type(model.policy.actor) is not Actor:
        raise TypeError(
            "SRPO's deterministic actor loads into SB3's TD3 (or DDPG) with its MlpPolicy, got "
            f"{type(model).__name__} with {type(model.policy).__name__}; SAC's actor is a Gaussian policy and PPO's "
            "an on-policy one, neither has TD3's deterministic head."
        )
    modules = built_modules(algo, SRPO, model)
    obs_space, action_space = model.observation_space, model.action_space
    assert isinstance(obs_space, spaces.Box) and isinstance(action_space, spaces.Box)  # TD3's: sized by built_modules
    observations = observation_affine(algo, obs_space.shape[0])
    check_action_units(algo, action_space)
    multiplier = reward_multiplier(algo) if critic else 1.0
    for name in ("actor", "actor_target"):
        target = getattr(model.policy, name).mu
        copy_weights(modules.actor.mu, target, f"SRPO's actor into {name}")
        fold_input_affine_(target[0], slice(None), observations)
    if critic:
        pairs = ((modules.q_funcs, "critic"), (modules.targ_q_funcs, "critic_target"))
        load_critics(model.policy, pairs, observations, multiplier)


# ----------------------------------------------------------------------------------------------------- builders
def merged_policy_kwargs(
    fixed: Mapping[str, Any], defaults: Mapping[str, Any], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``defaults``, then the caller's ``given`` policy kwargs, then the sizes ``fixed`` by the weights;
    ``ValueError`` when ``given`` sets a fixed key to another value."""
    given = dict(given or {})
    clashes = {k: v for k, v in given.items() if k in fixed and v != fixed[k]}
    if clashes:
        raise ValueError(
            f"policy_kwargs {clashes} clash with the d3rlpy networks' { ({k: fixed[k] for k in clashes}) }; the "
            "loaded weights fix them."
        )
    return {**defaults, **given, **fixed}


def one_learning_rate(config: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """SB3's single ``learning_rate`` from the config's actor and critic rates (``ValueError`` when they differ
    and the caller passed none)."""
    if "learning_rate" in given or config.actor_learning_rate == config.critic_learning_rate:
        return {"learning_rate": config.actor_learning_rate}
    raise ValueError(
        f"SB3 uses one learning rate for actor and critic, but the d3rlpy config has actor_learning_rate="
        f"{config.actor_learning_rate} and critic_learning_rate={config.critic_learning_rate}; pass learning_rate=..."
    )


def _diffusion_ql_td3(algo: DiffusionQL, env: GymEnv | str, critic: bool, kwargs: dict[str, Any]) -> DiffusionQLTD3:
    config = algo.config
    fixed = {
        **diffusion_sizes(config),
        "net_arch": [config.critic_hidden] * config.critic_layers,
        "activation_fn": nn.Mish,
    }
    selection = {
        "action_selection": config.action_selection,
        "n_action_samples": config.n_action_samples,
        "selection_temperature": config.selection_temperature,
        "evaluation_actor": config.evaluation_actor,
    }
    settings = {
        **one_learning_rate(config, kwargs),
        "batch_size": config.batch_size,
        "gamma": config.gamma,
        "tau": config.tau,
        "eta": config.eta,
        "grad_norm": config.grad_norm,
        "ema_decay": config.ema_decay,
        "ema_every": config.ema_every,
        "ema_warmup": config.ema_warmup,
        "max_q_backup": config.max_q_backup,
        "n_backup_samples": config.n_backup_samples,
    }
    policy_kwargs = merged_policy_kwargs(fixed, selection, kwargs.pop("policy_kwargs", None))
    model = DiffusionQLTD3(DiffusionTD3Policy, env, policy_kwargs=policy_kwargs, **{**settings, **kwargs})
    load_diffusion_ql_into_td3(model, algo, critic=critic)
    return model


def _srpo_td3(algo: SRPO, env: GymEnv | str, critic: bool, kwargs: dict[str, Any]) -> TD3:
    config = algo.config
    fixed = {
        "net_arch": {
            "pi": [config.actor_hidden] * config.actor_layers,
            "qf": [config.critic_hidden] * config.critic_layers,
        },
        "activation_fn": nn.ReLU,
    }
    settings = {
        **one_learning_rate(config, kwargs),
        "batch_size": config.batch_size,
        "gamma": config.gamma,
        "tau": config.tau,
    }
    policy_kwargs = merged_policy_kwargs(fixed, {}, kwargs.pop("policy_kwargs", None))
    model = TD3("MlpPolicy", env, policy_kwargs=policy_kwargs, **{**settings, **kwargs})
    load_srpo_into_td3(model, algo, critic=critic)
    return model


BUILDERS: dict[type, Callable[[Any, GymEnv | str, bool, dict[str, Any]], TD3]] = {
    DiffusionQL: _diffusion_ql_td3,
    SRPO: _srpo_td3,
}


def td3_from_d3rlpy(algo: DiffusionQL | SRPO, env: GymEnv | str, *, critic: bool = True, **kwargs: Any) -> TD3:
    """An SB3 model for online fine-tuning, sized like the trained d3rlpy ``algo`` and carrying its weights.

    - :class:`~dyaug.integrations.d3rlpy.DiffusionQL` -> :class:`~dyaug.integrations.sb3.DiffusionQLTD3` with
      :class:`~dyaug.integrations.sb3.DiffusionTD3Policy`: the config's network sizes, action selection and
      training settings (lr, batch, γ, τ, η, gradient clip, EMA, max-Q backup);
    - :class:`~dyaug.integrations.d3rlpy.SRPO` -> SB3 ``TD3`` with ReLU layers of SRPO's actor and critic sizes
      and SRPO's lr, batch, γ and τ (fine-tuning then uses TD3's own actor loss, without SRPO's behaviour term).

    ``kwargs`` go to the SB3 constructor and override those settings (e.g. ``learning_starts``, ``seed``,
    ``policy_kwargs`` that do not change sizes). ``critic=False`` leaves SB3's critics untrained. Loading is
    :func:`load_diffusion_ql_into_td3` / :func:`load_srpo_into_td3`; ``model.predict`` then gives d3rlpy's
    ``predict`` on the same observations, in env units.
    """
    builder = BUILDERS.get(type(algo))
    if builder is None:
        raise TypeError(
            f"td3_from_d3rlpy converts dyaug's d3rlpy algorithms DiffusionQL and SRPO, got {type(algo).__name__}."
        )
    return builder(algo, env, critic, dict(kwargs))
