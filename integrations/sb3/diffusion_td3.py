"""Diffusion-QL's actor in Stable-Baselines3 2.9: a TD3 policy whose actor is a diffusion policy, and a TD3 that
trains it with Diffusion-QL's losses, online or to fine-tune an offline d3rlpy model
(:func:`dyaug.integrations.sb3.td3_from_d3rlpy`).

Wang, Hunt & Zhou, "Diffusion Policies as an Expressive Policy Class for Offline RL" (ICLR 2023, arXiv
2208.06193). The maths (policy, losses, candidate selection) is in :mod:`dyaug.actors.diffusion_ql`; this module
binds it to SB3's policy classes, replay buffer, ``train`` loop and ``save`` / ``load``.

What runs with :class:`DiffusionTD3Policy`:

- :class:`DiffusionQLTD3`: Diffusion-QL (critic on EMA-actor targets, actor on L_BC + η L_Q, gradient clipping);
- SB3's ``TD3`` and ``DDPG``: their actor loss −Q_1(s, π(s)) back-propagates through the reverse chain (no BC
  term, TD3's target smoothing noise on the target actor's samples);
- not SAC, PPO or A2C: they need log π(a|s) (SAC's entropy terms, the policy-gradient ratios), which a diffusion
  policy does not give in closed form. The policy raises ``TypeError`` when one of them builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch as th
from gymnasium import spaces
from stable_baselines3 import TD3
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BaseModel, BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import GymEnv, ReplayBufferSamples, Schedule
from stable_baselines3.td3.policies import Actor, TD3Policy
from torch import Tensor, nn

from dyaug.actors.batch import TransitionBatch
from dyaug.actors.diffusion_ql import SELECTIONS, DiffusionPolicy, diffusion_ql_update, select_actions
from dyaug.diffusion.ema import EMA
from dyaug.validation import check_int

__all__ = ["DiffusionActor", "DiffusionQLTD3", "DiffusionTD3Policy"]

ActionSelection = Literal["softmax", "argmax", "sample"]
ACTION_SELECTIONS = (*SELECTIONS, "sample")
EVALUATION_ACTORS = {"online": "actor", "ema": "actor_target"}
"""Which actor draws ``predict``'s actions: the attribute of :class:`DiffusionTD3Policy` per setting."""


def check_spaces(owner: str, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """``ValueError`` unless the action space is a bounded Box and the observations are flat vectors."""
    if not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"{owner} needs a continuous (Box) action space, got {action_space}: a diffusion actor draws "
            "real-valued actions. For discrete actions use a discrete algorithm such as SB3's DQN."
        )
    if not action_space.is_bounded():
        raise ValueError(
            f"{owner} needs a bounded action space (SB3 scales actions to [-1, 1]), got {action_space}; wrap the env "
            "with gymnasium.wrappers.RescaleAction."
        )
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"{owner} takes flat vector observations (a 1-D Box), got {observation_space}. Image and dict "
            "observations are not supported: the diffusion actor is conditioned on the observation vector itself. "
            "Flatten dict observations with gymnasium.wrappers.FlattenObservation."
        )


class DiffusionActor(Actor):
    """SB3's TD3 ``Actor`` with Diffusion-QL's π_θ(a|s) (:class:`~dyaug.actors.DiffusionPolicy`, attribute
    ``diffusion``) in place of the MLP: ``forward(obs)`` draws one action per observation by the reverse chain,
    in [-1, 1] (SB3's scaled units) and differentiable end to end.

    ``hidden``, ``t_dim``, ``n_diffusion_steps``, ``beta_min`` and ``beta_max`` size the policy (the fields of
    :class:`~dyaug.actors.DiffusionPolicy`); SB3's ``net_arch`` and ``activation_fn`` do not apply to it.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        *,
        hidden: int = 256,
        t_dim: int = 16,
        n_diffusion_steps: int = 5,
        beta_min: float = 0.1,
        beta_max: float = 10.0,
    ) -> None:
        super().__init__(
            observation_space, action_space, [], features_extractor, features_dim, activation_fn, normalize_images
        )
        del self.mu  # SB3's MLP; the diffusion policy replaces it
        self.diffusion_kwargs = {
            "hidden": hidden,
            "t_dim": t_dim,
            "n_diffusion_steps": n_diffusion_steps,
            "beta_min": beta_min,
            "beta_max": beta_max,
        }
        self.diffusion = DiffusionPolicy(
            features_dim,
            get_action_dim(action_space),
            hidden=hidden,
            t_dim=t_dim,
            n_steps=n_diffusion_steps,
            beta_min=beta_min,
            beta_max=beta_max,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), **self.diffusion_kwargs}

    def forward(self, obs: Tensor, generator: th.Generator | None = None) -> Tensor:
        return self.diffusion(self.extract_features(obs, self.features_extractor), generator=generator)


def min_q(critic: ContinuousCritic) -> Callable[[Tensor, Tensor], Tensor]:
    """``(obs, actions) -> min_i Q_i(s, a)`` of an SB3 critic, shaped ``(B,)``."""
    return lambda obs, actions: th.cat(critic(obs, actions), dim=1).amin(1)


def stacked_q(critic: ContinuousCritic) -> Callable[[Tensor, Tensor], Tensor]:
    """``(obs, actions) -> Q_i(s, a)`` of an SB3 critic, shaped ``(n_critics, B)`` (dyaug's twin-critic seam)."""
    return lambda obs, actions: th.cat(critic(obs, actions), dim=1).T


class DiffusionTD3Policy(TD3Policy):
    """SB3's ``TD3Policy`` with a :class:`DiffusionActor` (``make_actor``); the critics are SB3's.

    SB3's arguments are unchanged, with Diffusion-QL's defaults for the critic: ``net_arch`` (the critic's; the
    actor is sized by ``hidden`` ...) defaults to 3 x 256 and ``activation_fn`` to ``nn.Mish``. Observations must
    be flat Box vectors (``FlattenExtractor``, the default features extractor, so the policy sees them raw).

    ``predict`` (and SB3's exploration, ``evaluate_policy``): Diffusion-QL's selection, ``n_action_samples``
    candidates per observation from the online actor (``evaluation_actor="ema"``: the target actor, the EMA
    actor under :class:`DiffusionQLTD3`) in one batched chain, scored by the min of the target critics and
    picked by ``action_selection`` ("softmax": drawn from softmax(Q / ``selection_temperature``), the paper's
    evaluation; "argmax"); ``action_selection="sample"``: one draw of the chain, no critic. Diffusion actions are
    random draws, so SB3's ``deterministic`` flag changes nothing here; "argmax" is the most repeatable choice.
    """

    actor: DiffusionActor
    actor_target: DiffusionActor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Mish,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        *,
        hidden: int = 256,
        t_dim: int = 16,
        n_diffusion_steps: int = 5,
        beta_min: float = 0.1,
        beta_max: float = 10.0,
        action_selection: ActionSelection = "softmax",
        n_action_samples: int = 50,
        selection_temperature: float = 1.0,
        evaluation_actor: Literal["online", "ema"] = "online",
        use_sde: bool | None = None,
    ) -> None:
        name = type(self).__name__
        if use_sde is not None:
            raise TypeError(
                f"{name} was built by an algorithm with SB3's use_sde option (SAC, PPO, A2C). These need the "
                "log-probability log π(a|s), which a diffusion actor does not have; train it with DiffusionQLTD3 "
                "(Diffusion-QL), or with SB3's TD3 or DDPG."
            )
        check_spaces(name, observation_space, action_space)
        if features_extractor_class is not FlattenExtractor:
            raise ValueError(
                f"{name} conditions the diffusion actor on the observation vector itself and needs the default "
                f"FlattenExtractor, got {features_extractor_class.__name__}."
            )
        if isinstance(net_arch, dict) and net_arch.get("pi"):
            raise ValueError(
                f"{name}: net_arch describes the critic only (the diffusion actor is sized by hidden and t_dim); "
                f"pass a list or dict(pi=[], qf=[...]), got pi={net_arch['pi']}."
            )
        if action_selection not in ACTION_SELECTIONS:
            raise ValueError(f"{name}.action_selection must be one of {ACTION_SELECTIONS}, got {action_selection!r}.")
        if evaluation_actor not in EVALUATION_ACTORS:
            raise ValueError(
                f"{name}.evaluation_actor must be one of {sorted(EVALUATION_ACTORS)}, got {evaluation_actor!r}."
            )
        check_int(f"{name}.n_action_samples", n_action_samples, numpy=False)
        if not selection_temperature > 0:
            raise ValueError(f"{name}.selection_temperature must be > 0, got {selection_temperature}.")
        self.diffusion_kwargs: dict[str, Any] = {
            "hidden": hidden,
            "t_dim": t_dim,
            "n_diffusion_steps": n_diffusion_steps,
            "beta_min": beta_min,
            "beta_max": beta_max,
        }
        self.action_selection = action_selection
        self.n_action_samples = n_action_samples
        self.selection_temperature = selection_temperature
        self.evaluation_actor = evaluation_actor
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            [256, 256, 256] if net_arch is None else net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
            n_critics,
            share_features_extractor,
        )

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> DiffusionActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return DiffusionActor(**actor_kwargs, **self.diffusion_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            **self.diffusion_kwargs,
            "action_selection": self.action_selection,
            "n_action_samples": self.n_action_samples,
            "selection_temperature": self.selection_temperature,
            "evaluation_actor": self.evaluation_actor,
        }

    def _predict(self, observation: Tensor | dict[str, Tensor], deterministic: bool = False) -> Tensor:
        assert isinstance(observation, Tensor)  # flat Box observations (check_spaces)
        actor = getattr(self, EVALUATION_ACTORS[self.evaluation_actor])
        if self.action_selection == "sample":
            return actor(observation)
        return select_actions(
            actor,
            min_q(self.critic_target),
            observation,
            n_candidates=self.n_action_samples,
            selection=self.action_selection,
            temperature=self.selection_temperature,
        )


def transition_batch(replay: ReplayBufferSamples, gamma: float) -> TransitionBatch:
    """SB3's replay batch as :class:`~dyaug.actors.batch.TransitionBatch` (float32; ``dones`` are SB3's terminals,
    timeouts excluded; discounts γ, or the n-step buffer's own)."""
    discounts = replay.discounts if replay.discounts is not None else th.full_like(replay.rewards, gamma)
    return TransitionBatch(
        observations=replay.observations.float(),
        actions=replay.actions.float(),
        rewards=replay.rewards.float().reshape(-1),
        next_observations=replay.next_observations.float(),
        terminals=replay.dones.float().reshape(-1),
        discounts=discounts.float().reshape(-1),
    )


def clipped_step(network: BaseModel, loss: Tensor, grad_norm: float | None) -> None:
    """Zero ``network.optimizer``'s gradients, back-propagate ``loss``, clip the global norm at ``grad_norm``
    (``None``: no clipping), step."""
    network.optimizer.zero_grad()
    loss.backward()
    if grad_norm is not None:
        nn.utils.clip_grad_norm_(network.parameters(), grad_norm)
    network.optimizer.step()


class DiffusionQLTD3(TD3):
    """Diffusion-QL as an SB3 off-policy algorithm: ``TD3`` with :class:`DiffusionTD3Policy` and Diffusion-QL's
    update in place of TD3's.

    Each gradient step (the official order): the critic on Σ_i MSE(Q_i(s, a), r + γ (1 − d) min_i Q_i^target(s',
    a')), a' drawn from the EMA actor (:func:`dyaug.actors.dql_critic_loss`, ``max_q_backup`` with
    ``n_backup_samples`` draws); every ``policy_delay`` steps (1: every step, as the paper) the actor on
    L = L_BC + ``eta`` L_Q (:func:`dyaug.actors.dql_actor_loss`, BC on the replay actions) and then the EMA actor
    (``ema_decay`` every ``ema_every`` actor steps after ``ema_warmup``, :class:`dyaug.diffusion.ema.EMA`); then
    the target critics by Polyak ``tau``. Both gradients are clipped at the global norm ``grad_norm`` (``None``:
    no clipping). The EMA actor is the policy's ``actor_target``.

    TD3's other arguments keep their meaning; the defaults follow Diffusion-QL (lr 3e-4, batch 256,
    ``policy_delay=1``). TD3's ``target_policy_noise`` / ``target_noise_clip`` do not exist here: Diffusion-QL's
    targets come from samples of the EMA actor. ``learning_rate`` may be an SB3 schedule, e.g. a cosine decay
    ``lambda progress: 3e-4 * (1 - math.cos(math.pi * progress)) / 2``. ``"MlpPolicy"`` is
    :class:`DiffusionTD3Policy`.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": DiffusionTD3Policy}
    policy: DiffusionTD3Policy
    actor: DiffusionActor
    actor_target: DiffusionActor

    def __init__(
        self,
        policy: str | type[DiffusionTD3Policy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        policy_delay: int = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        *,
        eta: float = 1.0,
        grad_norm: float | None = 5.0,
        ema_decay: float = 0.995,
        ema_every: int = 5,
        ema_warmup: int = 1000,
        max_q_backup: bool = False,
        n_backup_samples: int = 10,
    ) -> None:
        name = type(self).__name__
        if eta < 0:
            raise ValueError(f"{name}.eta must be >= 0, got {eta}.")
        if grad_norm is not None and not grad_norm > 0:
            raise ValueError(f"{name}.grad_norm must be > 0 or None (no clipping), got {grad_norm}.")
        if n_backup_samples < 1:
            raise ValueError(f"{name}.n_backup_samples must be >= 1, got {n_backup_samples}.")
        self.eta, self.grad_norm = eta, grad_norm
        self.ema_decay, self.ema_every, self.ema_warmup = ema_decay, ema_every, ema_warmup
        self.max_q_backup, self.n_backup_samples = max_q_backup, n_backup_samples
        self.ema_updates = 0  # actor steps folded into the EMA so far (its schedule resumes from it)
        env = maybe_make_env(env, verbose)  # type: ignore[arg-type]  # SB3 passes None through (SB3's load does)
        if env is not None:
            check_spaces(name, env.observation_space, env.action_space)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_delay=policy_delay,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, DiffusionTD3Policy):
            raise TypeError(
                f"{type(self).__name__} trains a diffusion actor and needs DiffusionTD3Policy (or 'MlpPolicy'), got "
                f"{type(self.policy).__name__}."
            )
        if self.policy.critic.n_critics != 2:
            raise ValueError(
                f"Diffusion-QL's actor loss uses exactly two critics, got n_critics={self.policy.critic.n_critics}; "
                "leave policy_kwargs n_critics at 2."
            )
        self._ema = EMA(self.policy.actor_target, self.ema_decay, self.ema_every, self.ema_warmup)
        self.policy.actor_target = self._ema.module
        self._create_aliases()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_ema"]  # its module is the policy's actor_target

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        critic, target_critic = stacked_q(self.critic), stacked_q(self.critic_target)
        logs: dict[str, list[Tensor]] = {"critic_loss": [], "actor_loss": [], "bc_loss": [], "q_loss": []}
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            update_actor = self._n_updates % self.policy_delay == 0
            losses = diffusion_ql_update(
                critic=critic,
                target_critic=target_critic,
                policy=self.actor.diffusion,
                backup_policy=self.actor_target.diffusion,
                ema=self._ema,
                ema_source=self.actor,
                ema_step=self.ema_updates,
                batch=transition_batch(replay, self.gamma),
                eta=self.eta,
                tau=self.tau,
                critic_step=lambda loss: clipped_step(self.critic, loss, self.grad_norm),
                actor_step=(lambda loss: clipped_step(self.actor, loss, self.grad_norm)) if update_actor else None,
                max_q_backup=self.max_q_backup,
                n_backup_samples=self.n_backup_samples,
                averaged=(self.critic_target, self.critic),
            )
            self.ema_updates += int(update_actor)
            for key, value in losses.items():
                logs[key].append(value)
        # one host transfer per call, not one per step and loss
        means = {key: th.stack(values).mean() for key, values in logs.items() if values}
        for key, value in zip(means, th.stack(list(means.values())).tolist(), strict=True):
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
