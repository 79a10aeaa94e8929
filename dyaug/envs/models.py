"""``LearnedModels``: what an environment served by learned models runs on, bundled with the task's spaces."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from dyaug.data.coerce import to_transitions
from dyaug.device import check_same_device, resolve_device
from dyaug.dydiff.config import DyDiffConfig
from dyaug.dydiff.rollout import Dynamics, RewardFn
from dyaug.dydiff.trajectory_model import TrajectoryModel
from dyaug.envs.continuations import ActionContinuations
from dyaug.envs.spaces import box_from_tensors, box_tensors, check_box, checked_states
from dyaug.models import DynamicsEnsemble, RewardModel, TerminationFn, termination_rule
from dyaug.models.checkpoint import check_savable, load_models, save_models
from dyaug.persistence import load_checkpoint, load_model, save_checkpoint, save_model, write_directory
from dyaug.validation import check_int

if TYPE_CHECKING:
    from dyaug.dydiff.generator import DyDiff


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedModels:
    """The learned MDP of one task: ``s' = dynamics.step(s, a)``, ``r = reward(s, a)``,
    ``terminated = termination(s, a, s')``, optionally DyDiff's ``trajectory_model`` with the
    ``continuations`` that guess the actions not taken yet (both needed by ``mode="diffusion"``), and what an
    environment needs besides: the observation and action spaces, the states ``reset`` may start from, the
    environment id and its episode length.

    >>> models = LearnedModels.from_dydiff(DyDiff("cpu").fit(dataset), "Hopper-v5", start_states=obs, data=dataset)
    >>> models.save("hopper-models"); models = LearnedModels.load("hopper-models")   # no simulator needed

    Any models following the protocols work (:class:`~dyaug.dydiff.Dynamics`, :class:`~dyaug.dydiff.RewardFn`,
    :class:`~dyaug.models.TerminationFn`); a model with ``obs_dim``/``act_dim`` attributes is checked against the
    spaces. Only dyaug's own models can be saved. ``start_states`` is copied to a read-only float32 array.
    """

    dynamics: Dynamics
    reward: RewardFn
    termination: TerminationFn
    observation_space: spaces.Box
    action_space: spaces.Box
    trajectory_model: TrajectoryModel | None = None
    continuations: ActionContinuations | None = None
    start_states: np.ndarray | None = None
    env_id: str | None = None
    max_episode_steps: int | None = None

    def __post_init__(self) -> None:
        check_box("observation_space", self.observation_space)
        check_box("action_space", self.action_space)
        for name in ("dynamics", "reward", "termination", "trajectory_model"):
            _check_sizes(name, getattr(self, name), self.obs_dim, self.act_dim)
        if self.start_states is not None:
            states = checked_states("start_states", self.start_states, self.obs_dim)
            states.flags.writeable = False
            object.__setattr__(self, "start_states", states)
        if self.max_episode_steps is not None:
            check_int("max_episode_steps", self.max_episode_steps, numpy=False, hint="or None")
        check_same_device(
            {name: getattr(self, name) for name in ("reward", "termination", "trajectory_model")},
            self.device,
            "LearnedModels (its device is the dynamics model's)",
        )
        if self.continuations is not None:
            self._check_continuations(self.continuations)

    def _check_continuations(self, continuations: ActionContinuations) -> None:
        if self.trajectory_model is None:
            raise ValueError("continuations guess actions for the trajectory model; pass trajectory_model= too.")
        _check_sizes("continuations", continuations, self.obs_dim, self.act_dim)
        needed = self.trajectory_model.horizon - 1
        if continuations.length < needed or continuations.keys.device != self.device:
            raise ValueError(
                f"the trajectory model's window needs continuations of {needed} actions on {self.device}, got "
                f"{continuations.length} on {continuations.keys.device}; build them with "
                "ActionContinuations.from_data(data, trajectory_model)."
            )

    @property
    def obs_dim(self) -> int:
        return int(self.observation_space.shape[0])

    @property
    def act_dim(self) -> int:
        return int(self.action_space.shape[0])

    @property
    def device(self) -> torch.device:
        """The dynamics model's ``device`` attribute (the CPU for a model without one): where every step runs."""
        return torch.device(getattr(self.dynamics, "device", "cpu"))

    def check_spaces(self, env: gym.Env) -> None:
        """``ValueError`` unless ``env`` has Box spaces of the models' observation and action sizes."""
        for name, theirs, ours in (
            ("observation", env.observation_space, self.observation_space),
            ("action", env.action_space, self.action_space),
        ):
            check_box(f"the environment's {name}_space", theirs)
            if theirs.shape != ours.shape:
                raise ValueError(
                    f"the models were fitted for {name}s of shape {ours.shape} but the environment "
                    f"{env.spec.id if env.spec else env!r} has {name}s of shape {theirs.shape}; pass models fitted "
                    "on data of this environment."
                )

    def __repr__(self) -> str:
        starts = "none" if self.start_states is None else len(self.start_states)
        diffusion = self.trajectory_model is not None and self.continuations is not None
        return (
            f"LearnedModels(env_id={self.env_id!r}, obs_dim={self.obs_dim}, act_dim={self.act_dim}, "
            f"diffusion={diffusion}, start_states={starts}, device={str(self.device)!r})"
        )

    @classmethod
    def for_env(
        cls,
        env: gym.Env | str,
        *,
        dynamics: Dynamics,
        reward: RewardFn,
        termination: TerminationFn | None = None,
        trajectory_model: TrajectoryModel | None = None,
        continuations: ActionContinuations | None = None,
        start_states: Any = None,
    ) -> LearnedModels:
        """Models with the spaces, id and episode length of ``env``: an environment, or an id made once with
        ``gymnasium.make`` to read them. ``termination``: the known rule of the id when ``None``
        (:func:`~dyaug.models.termination_rule`; ``ValueError`` for an id without one).

        >>> LearnedModels.for_env("Hopper-v5", dynamics=DynamicsEnsemble.load(p), reward=RewardModel.load(q))
        """
        spaces_of = _spaces_of(env)
        if termination is None:
            termination = termination_rule(spaces_of["env_id"]) if spaces_of["env_id"] is not None else None
            if termination is None:
                raise ValueError(
                    f"no known termination rule for {spaces_of['env_id']!r}; pass termination=... (a "
                    "TerminalClassifier, dyaug.models.never_terminates, or a TerminationFn of your own)."
                )
        return cls(
            dynamics=dynamics,
            reward=reward,
            termination=termination,
            trajectory_model=trajectory_model,
            continuations=continuations,
            start_states=start_states,
            **spaces_of,
        )

    @classmethod
    def from_dydiff(
        cls, generator: DyDiff, env: gym.Env | str | None = None, *, start_states: Any = None, data: Any = None
    ) -> LearnedModels:
        """The fitted models of a :class:`~dyaug.DyDiff` generator (shared, not copied), its termination
        included, with the spaces of ``env`` (see :meth:`for_env`); ``None``: the environment id of the
        generator's training data (a Minari dataset records it), ``ValueError`` when it records none.

        ``data`` (what the generator was fitted on, in any form :meth:`DyDiff.fit` takes) gives the
        :class:`~dyaug.envs.ActionContinuations` that ``mode="diffusion"`` needs; without it only
        ``mode="ensemble"`` runs.
        """
        fitted = generator.model
        if env is None:
            env = fitted.training_data.get("env_id")
            if env is None:
                raise ValueError(
                    "the generator's training data records no environment; pass env= (an environment or its id) "
                    "to give the observation and action spaces."
                )
        return cls.for_env(
            env,
            dynamics=fitted.dynamics,
            reward=fitted.reward,
            termination=fitted.termination,
            trajectory_model=fitted.trajectory_model,
            continuations=None
            if data is None
            else ActionContinuations.from_data(to_transitions(data), fitted.trajectory_model),
            start_states=start_states,
        )

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint directory of safetensors files (no pickle), replaced whole
        (:func:`~dyaug.persistence.write_directory`):

        - ``env.safetensors`` (kind ``"learned_env"``): the observation and action space bounds (float64 tensors,
          the dtypes in the metadata), the start states, the environment id, the episode length and the
          termination's record, so that an environment can be served without the simulator installed, and the
          action continuations of the diffusion mode (``continuation_keys``, ``continuation_actions``);
        - the single-step models (:func:`dyaug.models.checkpoint.save_models`);
        - ``trajectory.safetensors`` (kind ``"trajectory_model"``, only with a trajectory model): its EMA weights,
          its min-max normalizer and its :class:`~dyaug.dydiff.DyDiffConfig`.

        ``TypeError`` for models that are not dyaug's, ``ValueError`` for an existing ``path`` that is not such a
        checkpoint."""
        return _save(path, self)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> LearnedModels:
        """Models written by :meth:`save`, on ``device``; the real environment is not needed."""
        return _load(path, resolve_device(device))


def _spaces_of(env: gym.Env | str) -> dict[str, Any]:
    """``observation_space``, ``action_space``, ``env_id`` and ``max_episode_steps`` of an environment or id."""
    if isinstance(env, str):
        made = gym.make(env)
        try:
            return _spaces_of(made)
        finally:
            made.close()
    if not isinstance(env, gym.Env):
        raise TypeError(f"env must be a gymnasium.Env, an environment id or None, got {type(env).__name__}.")
    spec = env.spec
    return {
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "env_id": None if spec is None else spec.id,
        "max_episode_steps": None if spec is None else spec.max_episode_steps,
    }


def _check_sizes(name: str, model: object, obs_dim: int, act_dim: int) -> None:
    """A model that states its sizes (``obs_dim``/``act_dim`` attributes) must match the spaces'."""
    for attribute, expected in (("obs_dim", obs_dim), ("act_dim", act_dim)):
        size = getattr(model, attribute, None)
        if size is not None and size != expected:
            raise ValueError(
                f"the {name} model was fitted with {attribute}={size} but the spaces give {attribute}={expected}; "
                "pass models fitted on data of this environment."
            )


# ------------------------------------------------------------------------------------------ checkpoints
ENV_FILE, TRAJECTORY_FILE = "env.safetensors", "trajectory.safetensors"
ENV_KIND, TRAJECTORY_KIND = "learned_env", "trajectory_model"


def _save(path: str | Path, models: LearnedModels) -> Path:
    """Write ``models`` as a checkpoint directory at ``path`` (see the module docstring); ``TypeError`` for models
    that are not dyaug's, ``ValueError`` for an existing ``path`` that is not such a checkpoint."""
    check_savable(models.dynamics, models.reward, models.termination)

    def write(directory: Path) -> None:
        dynamics, reward = models.dynamics, models.reward
        assert isinstance(dynamics, DynamicsEnsemble) and isinstance(reward, RewardModel)  # check_savable
        termination = save_models(directory, dynamics, reward, models.termination)
        tensors = {**box_tensors("observation", models.observation_space), **box_tensors("action", models.action_space)}
        if models.start_states is not None:
            tensors["start_states"] = torch.from_numpy(models.start_states.copy())
        if models.continuations is not None:
            tensors["continuation_keys"] = models.continuations.keys.cpu()
            tensors["continuation_actions"] = models.continuations.actions.cpu()
        traj = models.trajectory_model
        if traj is not None:
            save_model(
                directory / TRAJECTORY_FILE, TRAJECTORY_KIND, config=traj.config.to_dict(), **traj.checkpoint_fields()
            )
        meta: dict[str, Any] = {
            "kind": ENV_KIND,
            "env_id": models.env_id,
            "max_episode_steps": models.max_episode_steps,
            "observation_dtype": str(models.observation_space.dtype),
            "action_dtype": str(models.action_space.dtype),
            "termination": termination,
            "trajectory_model": traj is not None,
        }
        save_checkpoint(directory / ENV_FILE, tensors, meta)

    return write_directory(path, write, marker=ENV_FILE, kind="LearnedModels")


def _load(path: str | Path, device: torch.device) -> LearnedModels:
    """The models of a directory written by :func:`save_learned_models`, on ``device``."""
    path = Path(path)
    if not (path / ENV_FILE).is_file():
        raise ValueError(
            f"{path} is not a LearnedModels checkpoint directory (no {ENV_FILE}); write one with LearnedModels.save."
        )
    tensors, meta = load_checkpoint(path / ENV_FILE, device="cpu", kind=ENV_KIND)
    dynamics, reward, termination = load_models(path, meta["termination"], device)
    start_states = tensors.get("start_states")
    continuations = None
    if "continuation_keys" in tensors:
        continuations = ActionContinuations(tensors["continuation_keys"], tensors["continuation_actions"]).to(device)
    return LearnedModels(
        dynamics=dynamics,
        reward=reward,
        termination=termination,
        observation_space=box_from_tensors("observation", tensors, meta["observation_dtype"]),
        action_space=box_from_tensors("action", tensors, meta["action_dtype"]),
        trajectory_model=_load_trajectory_model(path / TRAJECTORY_FILE, device) if meta["trajectory_model"] else None,
        continuations=continuations,
        start_states=None if start_states is None else start_states.numpy(),
        env_id=meta["env_id"],
        max_episode_steps=meta["max_episode_steps"],
    )


def _load_trajectory_model(path: Path, device: torch.device) -> TrajectoryModel:
    checkpoint = load_model(path, TRAJECTORY_KIND, device=device)
    return TrajectoryModel.from_checkpoint(checkpoint, DyDiffConfig(**checkpoint.config), device)


def as_learned_models(models: object, env: gym.Env | str | None = None) -> LearnedModels:
    """``models`` itself when it is :class:`LearnedModels`; the models of a fitted :class:`~dyaug.DyDiff`
    (:meth:`LearnedModels.from_dydiff` with ``env``'s spaces, ensemble mode); otherwise ``TypeError`` naming both."""
    from dyaug.dydiff.generator import DyDiff

    if isinstance(models, LearnedModels):
        return models
    if isinstance(models, DyDiff):
        return LearnedModels.from_dydiff(models, env)
    raise TypeError(
        f"models must be a dyaug.envs.LearnedModels or a fitted dyaug.DyDiff, got {type(models).__name__}; build "
        "one with LearnedModels.from_dydiff(generator, env) or LearnedModels(dynamics=..., reward=..., ...)."
    )
