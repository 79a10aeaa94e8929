"""``LearnedDynamicsVectorEnv``: B episodes of the learned models stepped in one batched call on their device."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space

from dyaug.envs.config import LearnedEnvConfig
from dyaug.envs.models import LearnedModels, as_learned_models
from dyaug.envs.spaces import checked_actions, checked_states
from dyaug.envs.stepping import LearnedMDP
from dyaug.envs.wrapper import resolve_env_config, to_host
from dyaug.validation import check_int

if TYPE_CHECKING:  # pragma: no cover
    from dyaug.dydiff.generator import DyDiff


class LearnedDynamicsVectorEnv(VectorEnv):
    """A ``gymnasium.vector.VectorEnv`` of ``num_envs`` episodes served by learned models, all stepped at once.

    One ``step`` is one batched call of the models on their device for every episode (one diffusion sample for
    the whole batch in ``mode="diffusion"``) and one copy of the results to the host. Semantics per episode are
    those of :class:`~dyaug.envs.LearnedDynamicsWrapper`; episodes that end are reset on the *next* ``step``
    (Gymnasium 1.0's autoreset: that step returns the new start observation with reward 0, ``terminated`` and
    ``truncated`` False, and ignores the episode's action).

    >>> envs = LearnedDynamicsVectorEnv(models, num_envs=1024, mode="diffusion")     # starts: models.start_states
    >>> obs, info = envs.reset(seed=0)
    >>> obs, rewards, terminated, truncated, info = envs.step(policy(obs))

    Starts: ``reset_from="dataset"`` draws from :attr:`LearnedModels.start_states`; ``"env"`` calls the real
    ``env.reset(seed=k)`` once per starting episode, with ``k`` drawn from ``np_random``;
    ``reset(options={"states": obs})`` starts every episode at the given ``(num_envs, obs_dim)`` observations.
    ``reset(seed=s)`` seeds ``np_random``; it also seeds a torch generator on the models' device (elites,
    diffusion noise), so the same seed and actions give the same episodes (bit for bit on the CPU).

    :param models: the :class:`~dyaug.envs.LearnedModels`; the spaces are theirs.
    :param num_envs: B, the number of episodes stepped together.
    :param env: the real environment, for ``reset_from="env"`` and its spec's episode length (optional).
    :param mode, reset_from, penalty, max_episode_steps: see :class:`~dyaug.envs.LearnedEnvConfig`.
    """

    single_observation_space: gym.spaces.Box  # the models' spaces
    single_action_space: gym.spaces.Box

    def __init__(
        self,
        models: LearnedModels | DyDiff,
        num_envs: int,
        mode: str = "ensemble",
        *,
        env: gym.Env | None = None,
        reset_from: str | None = None,
        penalty: float = 0.0,
        max_episode_steps: int | None = None,
    ) -> None:
        models = as_learned_models(models, env)
        check_int("num_envs", num_envs, numpy=False)
        self.config = resolve_env_config(
            models,
            env,
            LearnedEnvConfig(mode, reset_from, penalty, max_episode_steps),
            alternative=", or env=... with reset_from='env'",
        )
        self.models, self.env, self.num_envs = models, env, num_envs
        self.metadata = {"render_modes": []}
        self.single_observation_space = models.observation_space
        self.single_action_space = models.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._mdp = LearnedMDP(models, self.config, batch_size=num_envs)
        self._generator = torch.Generator(models.device)
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._ended = np.zeros(num_envs, dtype=bool)  # episodes to reset on the next step
        self._started = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every episode (see the class docstring); returns ``(observations (num_envs, obs_dim), {})``."""
        super().reset(seed=seed)
        options = dict(options or {})
        states = options.pop("states", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; the only option is 'states'.")
        self._generator.manual_seed(int(self.np_random.integers(2**63 - 1)))
        if states is None:
            starts = self._starts(self.num_envs)
        else:
            starts = checked_states("options['states']", states, self.models.obs_dim)
            if len(starts) != self.num_envs:
                raise ValueError(f"options['states'] must hold {self.num_envs} observations, got {len(starts)}.")
        self._begin(np.ones(self.num_envs, dtype=bool), starts)
        self._ended[:] = False
        self._started = True
        return starts.astype(self.single_observation_space.dtype), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Every episode one step on (episodes that ended at the last step start again instead)."""
        if not self._started:
            raise RuntimeError("call reset() before step().")
        checked = checked_actions(self.single_action_space, actions, self.num_envs)
        result = self._mdp.step(torch.as_tensor(checked, device=self.models.device), self._generator)
        observations, rewards, terminated = to_host(result)
        self._elapsed += 1
        limit = self.config.max_episode_steps
        truncated = np.zeros(self.num_envs, dtype=bool) if limit is None else self._elapsed >= limit
        restart = self._ended.copy()
        if restart.any():
            starts = self._starts(int(restart.sum()))
            self._begin(restart, starts)
            observations[restart], rewards[restart] = starts, 0.0
            terminated[restart] = truncated[restart] = False
        self._ended = terminated | truncated
        return observations.astype(self.single_observation_space.dtype), rewards, terminated, truncated, {}

    def close_extras(self, **kwargs: Any) -> None:
        """Close the real environment, when one was given (as Gymnasium's vector environments close theirs)."""
        env = getattr(self, "env", None)  # absent when __init__ raised before setting it
        if env is not None:
            env.close()

    def _begin(self, rows: np.ndarray, starts: np.ndarray) -> None:
        device = self.models.device
        self._mdp.begin(torch.as_tensor(rows, device=device), torch.as_tensor(starts, device=device))
        self._elapsed[rows] = 0

    def _starts(self, n: int) -> np.ndarray:
        """``n`` float32 start states by ``reset_from``."""
        if self.config.reset_from == "dataset":
            states = self.models.start_states
            assert states is not None  # resolve_env_config checked it
            return states[self.np_random.integers(len(states), size=n)]
        seeds = self.np_random.integers(2**31 - 1, size=n)
        env = self.env
        assert env is not None  # reset_from="env" needs the real environment (resolve_env_config)
        return checked_states(
            "the real environment's reset", [env.reset(seed=int(s))[0] for s in seeds], self.models.obs_dim
        )
