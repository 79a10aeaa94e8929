"""A :class:`~dyaug.envs.LearnedModels` checkpoint: a directory of safetensors files (no pickle), replaced whole.

- ``env.safetensors`` (kind ``"learned_env"``): the observation and action space bounds (float64 tensors, the
  dtypes in the metadata), the start states, the environment id, the episode length and the termination's
  record, so that an environment can be served without the simulator installed, and the action continuations
  of the diffusion mode (``continuation_keys``, ``continuation_actions``) when the models have them;
- ``dynamics.safetensors``, ``reward.safetensors`` and, for a learned termination, ``termination.safetensors``:
  written and read by :func:`dyaug.dydiff.checkpoint.save_models` / :func:`~dyaug.dydiff.checkpoint.load_models`;
- ``trajectory.safetensors`` (kind ``"trajectory_model"``, only with a trajectory model): its EMA weights, its
  min-max normalizer and its :class:`~dyaug.dydiff.DyDiffConfig`.

The directory is written next to the target and renamed onto it (:func:`~dyaug.dydiff.checkpoint.write_directory`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dyaug.diffusion.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from dyaug.dydiff.checkpoint import check_savable, load_models, save_models, write_directory
from dyaug.dydiff.config import DyDiffConfig
from dyaug.dydiff.trajectory_model import TrajectoryModel
from dyaug.envs.continuations import ActionContinuations
from dyaug.envs.models import LearnedModels
from dyaug.envs.spaces import box_from_tensors, box_tensors

ENV_FILE, TRAJECTORY_FILE = "env.safetensors", "trajectory.safetensors"
ENV_KIND, TRAJECTORY_KIND = "learned_env", "trajectory_model"


def save_learned_models(path: str | Path, models: LearnedModels) -> Path:
    """Write ``models`` as a checkpoint directory at ``path`` (see the module docstring); ``TypeError`` for models
    that are not dyaug's, ``ValueError`` for an existing ``path`` that is not such a checkpoint."""
    check_savable(models.dynamics, models.reward, models.termination)

    def write(directory: Path) -> None:
        termination = save_models(directory, models.dynamics, models.reward, models.termination)
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


def load_learned_models(path: str | Path, device: torch.device) -> LearnedModels:
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
