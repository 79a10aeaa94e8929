"""``LearnedDynamicsWrapper``: a Gymnasium environment whose steps come from learned models (generative simulation).

An agent that speaks Gymnasium (SB3, or any other) trains or is tested inside what dyaug learned from a dataset:
the wrapper keeps the real environment's spaces and spec, starts episodes from the real environment's reset or
from dataset states, and answers ``step`` with the models (see :mod:`dyaug.envs.stepping`). The real simulator
is needed only for ``reset_from="env"``; :class:`SimulatorStub` stands in for it otherwise.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils import seeding

from dyaug.envs.config import LearnedEnvConfig
from dyaug.envs.models import LearnedModels, as_learned_models
from dyaug.envs.spaces import checked_actions, checked_states
from dyaug.envs.stepping import LearnedMDP, StepResult

if TYPE_CHECKING:  # pragma: no cover
    from dyaug.dydiff.generator import DyDiff


class SimulatorStub(gym.Env):
    """The spaces and spec of a task stored with its models, without the simulator: ``reset`` and ``step`` raise.

    The spec is Gymnasium's registered spec of ``models.env_id`` (its episode length replaced by the stored one,
    when there is one) when the id is registered, else a bare spec of that id, or ``None`` for models without an
    id.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self, models: LearnedModels) -> None:
        self.observation_space = models.observation_space
        self.action_space = models.action_space
        self.spec = _spec(models.env_id, models.max_episode_steps)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        raise RuntimeError("this environment has no simulator; step it through a LearnedDynamicsWrapper.")

    def step(self, action: Any) -> Any:
        raise RuntimeError("this environment has no simulator; step it through a LearnedDynamicsWrapper.")


def _spec(env_id: str | None, max_episode_steps: int | None) -> EnvSpec | None:
    if env_id is None:
        return None
    if env_id in gym.registry:
        registered = gym.spec(env_id)
        return dataclasses.replace(registered, max_episode_steps=max_episode_steps or registered.max_episode_steps)
    return EnvSpec(id=env_id, max_episode_steps=max_episode_steps)


def has_simulator(env: gym.Env) -> bool:
    """Whether ``env`` can reset itself (it is not a :class:`SimulatorStub`)."""
    return not isinstance(env.unwrapped, SimulatorStub)


def resolve_env_config(
    models: LearnedModels, env: gym.Env | None, config: LearnedEnvConfig, alternative: str = ""
) -> LearnedEnvConfig:
    """``config`` resolved for ``models`` served beside the real ``env`` (``None``: without one), after checking
    that ``env``'s spaces are the models' (see :meth:`LearnedEnvConfig.resolved`). ``ValueError`` when episodes
    start from dataset states but ``models`` has none; ``alternative`` ends that error's advice."""
    if env is not None:
        models.check_spaces(env)
    resolved = config.resolved(
        has_simulator=env is not None and has_simulator(env),
        spec_steps=None if env is None or env.spec is None else env.spec.max_episode_steps,
        model_steps=models.max_episode_steps,
    )
    if resolved.reset_from == "dataset" and models.start_states is None:
        raise ValueError(
            "reset_from='dataset' needs LearnedModels.start_states (e.g. the dataset's observations); "
            f"pass start_states=... when building the models{alternative}."
        )
    return resolved


class LearnedDynamicsWrapper(gym.Wrapper):
    """A ``gymnasium.Wrapper`` around the real environment whose ``step`` is served by learned models.

    ``step(a)`` returns ``s' ~ model(s, a)``, ``r = r̂(s, a)`` (minus MOPO's penalty when ``penalty > 0``),
    ``terminated = term(s, a, s')`` and ``truncated`` = the episode reached ``max_episode_steps``; the real
    environment is never stepped. ``reset`` starts from the real environment's reset or from a dataset state
    (``reset_from``), or from ``options={"state": obs}``. Observations are returned in the observation space's
    dtype; the models see them as float32.

    >>> models = LearnedModels.from_dydiff(gen, "Hopper-v5", start_states=data.observations, data=data)
    >>> env = LearnedDynamicsWrapper(gym.make("Hopper-v5"), models, mode="ensemble")
    >>> SAC("MlpPolicy", env).learn(100_000)                                 # trained inside the models
    >>> env = LearnedDynamicsWrapper.from_checkpoint("hopper-models", "Hopper-v5")   # no simulator needed

    Randomness (the elite drawn per step, the diffusion noise, dataset start states) comes from ``np_random``
    (the wrapped environment's, seeded by ``reset(seed=...)``) and a torch generator on the models' device
    drawn from it at every reset: the same seed and actions give the same episode (bit for bit on the CPU).

    ``mode="diffusion"`` runs one diffusion sample per step (see
    :class:`~dyaug.envs.stepping.WindowInpainting`): tens of network evaluations for one transition. Use
    :class:`~dyaug.envs.LearnedDynamicsVectorEnv` to share each sample across many episodes.

    :param env: the real environment (its spaces must have the models' sizes), or a :class:`SimulatorStub`.
    :param models: the :class:`~dyaug.envs.LearnedModels` to step with.
    :param mode, reset_from, penalty, max_episode_steps: see :class:`~dyaug.envs.LearnedEnvConfig`.
    """

    def __init__(
        self,
        env: gym.Env,
        models: LearnedModels | DyDiff,
        mode: str = "ensemble",
        *,
        reset_from: str | None = None,
        penalty: float = 0.0,
        max_episode_steps: int | None = None,
    ) -> None:
        models = as_learned_models(models, env)
        super().__init__(env)
        self.config = resolve_env_config(models, env, LearnedEnvConfig(mode, reset_from, penalty, max_episode_steps))
        self.models = models
        self._mdp = LearnedMDP(models, self.config, batch_size=1)
        self._generator = torch.Generator(models.device)
        self._every = torch.ones(1, dtype=torch.bool, device=models.device)
        self._elapsed: int | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        env: gym.Env | str | None = None,
        mode: str = "ensemble",
        *,
        device: str | torch.device = "auto",
        **settings: Any,
    ) -> LearnedDynamicsWrapper:
        """An environment served by the models saved at ``path`` (:meth:`LearnedModels.save`).

        ``env``: the real environment to wrap, or an environment id / ``None`` for a :class:`SimulatorStub` with
        the stored spaces (the simulator need not be installed; episodes start from the stored start states).
        An id must match the stored one. ``settings``: ``reset_from``, ``penalty``, ``max_episode_steps``.
        """
        models = LearnedModels.load(path, device)
        if env is None or isinstance(env, str):
            if env is not None and models.env_id not in (None, env):
                raise ValueError(f"the models at {path} were saved for {models.env_id!r}, not {env!r}.")
            env = SimulatorStub(dataclasses.replace(models, env_id=env or models.env_id))
        return cls(env, models, mode, **settings)

    @property
    def spec(self) -> EnvSpec | None:  # type: ignore[override]  # gymnasium's Wrapper.spec overrides Env.spec alike
        """The real environment's spec (``spec.make()`` builds the real environment, not this wrapper)."""
        return self.env.spec

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode: at ``options["state"]`` when given, else by ``reset_from``; ``seed`` seeds
        ``np_random`` (through the real environment's reset when it is the one called)."""
        options = dict(options or {})
        state = options.pop("state", None)
        info: dict[str, Any] = {}
        if state is None and self.config.reset_from == "env":
            state, info = self.env.reset(seed=seed, options=options)
        elif seed is not None:
            self.np_random, _ = seeding.np_random(seed)
        if state is None:
            starts = self.models.start_states
            assert starts is not None  # reset_from="dataset": resolve_env_config checked it
            state = starts[self.np_random.integers(len(starts))]
        start = checked_states("the start state", state, self.models.obs_dim)
        if len(start) != 1:
            raise ValueError(f"options['state'] must be one observation of size {self.models.obs_dim}.")
        self._generator.manual_seed(int(self.np_random.integers(2**63 - 1)))
        self._mdp.begin(self._every, torch.as_tensor(start, device=self.models.device))
        self._elapsed = 0
        return start[0].astype(self.observation_space.dtype), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """One step of the learned models; ``ValueError`` for an action outside the action space."""
        if self._elapsed is None:
            raise RuntimeError("call reset() before step().")
        space = self.action_space
        assert isinstance(space, gym.spaces.Box)  # the models' action space (check_spaces compared them)
        actions = torch.as_tensor(checked_actions(space, action, None)[None], device=self.models.device)
        obs, rewards, terminated = to_host(self._mdp.step(actions, self._generator))
        self._elapsed += 1
        limit = self.config.max_episode_steps
        truncated = limit is not None and self._elapsed >= limit
        return obs[0].astype(self.observation_space.dtype), float(rewards[0]), bool(terminated[0]), truncated, {}

    def render(self) -> Any:
        raise NotImplementedError(
            "LearnedDynamicsWrapper cannot render: the model state lives outside the simulator. Render the real "
            "environment instead."
        )


def to_host(result: StepResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(observations float32, rewards float64, terminated bool)`` as numpy arrays, in one device-to-host copy."""
    rows = torch.cat([result.next_states, result.rewards[:, None], result.terminated[:, None].float()], dim=1)
    host = rows.cpu().numpy()
    return host[:, :-2], host[:, -2].astype(np.float64), host[:, -1] > 0
