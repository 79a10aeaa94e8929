"""A DyDiff checkpoint: a directory of safetensors files (no pickle), replaced as a whole.

- ``dydiff.safetensors``: the trajectory model's EMA weights, its min-max normalizer, the config and metadata
  (:func:`dyaug.diffusion.checkpoint.save_model`, kind ``"dydiff"``);
- ``dynamics.safetensors``, ``reward.safetensors``: :meth:`DynamicsEnsemble.save` / :meth:`RewardModel.save`;
- ``termination.safetensors``: only for a learned :class:`~dyaug.models.TerminalClassifier`; a known rule is
  stored as its environment id in the metadata.

Writing: every file goes to a fresh hidden directory next to the target, which is then renamed onto the
target (atomic when the target does not exist yet). An existing checkpoint is first renamed aside and removed
after the new one is in place, so a crash between the two renames leaves the old checkpoint under a hidden
``.<name>.old-*`` name, never a partial one under the target's name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dyaug.models import (
    DynamicsEnsemble,
    LocomotionTermination,
    RewardModel,
    TerminalClassifier,
    TerminationFn,
    never_terminates,
    termination_rule,
)

MAIN_FILE, DYNAMICS_FILE, REWARD_FILE, TERMINATION_FILE = (
    "dydiff.safetensors",
    "dynamics.safetensors",
    "reward.safetensors",
    "termination.safetensors",
)


def write_directory(
    path: str | Path, write: Callable[[Path], None], marker: str = MAIN_FILE, kind: str = "DyDiff"
) -> Path:
    """Run ``write(directory)`` on a fresh hidden directory and move it to ``path`` (see the module docstring).

    Refuses (``ValueError``) to replace an existing ``path`` that is not a ``kind`` checkpoint directory, i.e. one
    without the file ``marker`` (default: a DyDiff checkpoint's main file).
    """
    path = Path(path)
    if path.exists() and not (path.is_dir() and (path / marker).is_file()):
        raise ValueError(f"{path} exists and is not a {kind} checkpoint directory; choose another path.")
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        write(staging)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / path.name)
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def check_savable(dynamics: object, reward: object, termination: object) -> None:
    """``TypeError`` unless the single-step models are dyaug's (the ones :func:`load_models` can rebuild)."""
    for name, value, cls in (("dynamics", dynamics, DynamicsEnsemble), ("reward", reward, RewardModel)):
        if not isinstance(value, cls):
            raise TypeError(
                f"only a {cls.__name__} can be saved as the {name} model, this generator holds a "
                f"{type(value).__name__}; save your own model yourself."
            )
    if not isinstance(termination, LocomotionTermination | TerminalClassifier) and termination is not never_terminates:
        raise TypeError(
            f"the termination function {termination!r} cannot be saved; only known rules, TerminalClassifier and "
            "dyaug.models.never_terminates can."
        )


def save_models(
    directory: Path, dynamics: DynamicsEnsemble, reward: RewardModel, termination: TerminationFn
) -> dict[str, Any]:
    """Write the single-step models into ``directory``; returns the termination's record for the metadata."""
    check_savable(dynamics, reward, termination)
    dynamics.save(directory / DYNAMICS_FILE)
    reward.save(directory / REWARD_FILE)
    if isinstance(termination, LocomotionTermination):
        return {"kind": "rule", "env_id": termination.env_id}
    if isinstance(termination, TerminalClassifier):
        termination.save(directory / TERMINATION_FILE)
        return {"kind": "classifier"}
    return {"kind": "never"}


_TERMINATION_LOADERS: dict[str, Callable[[dict[str, Any], Path, torch.device], TerminationFn]] = {
    "rule": lambda record, directory, device: termination_rule(record["env_id"]),
    "classifier": lambda record, directory, device: TerminalClassifier.load(directory / TERMINATION_FILE, device),
    "never": lambda record, directory, device: never_terminates,
}


def load_models(
    directory: Path, termination: dict[str, Any], device: torch.device
) -> tuple[DynamicsEnsemble, RewardModel, TerminationFn]:
    """The single-step models written by :func:`save_models`, on ``device``."""
    if termination.get("kind") not in _TERMINATION_LOADERS:
        raise ValueError(f"{directory} records an unknown termination {termination!r}; it was not written by DyDiff.")
    rule = _TERMINATION_LOADERS[termination["kind"]](termination, directory, device)
    if rule is None:
        raise ValueError(f"{directory} uses the termination rule of {termination['env_id']!r}, unknown to this dyaug.")
    return (
        DynamicsEnsemble.load(directory / DYNAMICS_FILE, device),
        RewardModel.load(directory / REWARD_FILE, device),
        rule,
    )
