"""Termination functions ``done(s, a, s')`` for model rollouts: known task rules, or a learned classifier.

DyDiff (Zhao et al. 2024, arXiv 2405.19189) marks a generated transition terminal with a hand-coded rule of
the task evaluated on raw observations. The known rules here are Gymnasium's own (Towers et al. 2024), read
from the environment objects by :func:`dyaug.metrics.mujoco_state.locomotion_task`, so they cannot drift from
the installed Gymnasium.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from dyaug.metrics.mujoco_state import SUPPORTED_ENVS, LocomotionTask, locomotion_task
from dyaug.models.batches import as_rows
from dyaug.models.terminal_classifier import TerminalClassifier


@runtime_checkable
class TerminationFn(Protocol):
    """``done = f(obs, act, next_obs)``: raw-unit tensors (B, obs_dim), (B, act_dim), (B, obs_dim) on any device
    -> boolean tensor (B,) on the same device, True where the transition ends the episode (an MDP termination,
    not a time limit). A ``next_obs`` row with a NaN or infinite entry is always terminal."""

    def __call__(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor: ...


def never_terminates(obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
    """The rule of tasks without termination: terminal only where ``next_obs`` is not finite."""
    next_obs = as_rows("never_terminates", "next_obs", next_obs, None, None, None)
    return ~torch.isfinite(next_obs).all(dim=1)


@dataclasses.dataclass(frozen=True, eq=False)
class LocomotionTermination:
    """Gymnasium v5's ``terminated`` for Hopper, Walker2d (``not is_healthy``) and HalfCheetah (never), as a
    :class:`TerminationFn`; see :class:`~dyaug.metrics.mujoco_state.HealthRule` for the inequalities.

    The rule is evaluated on ``next_obs = (qpos[1:], clip(qvel, ±10))``: the clipped velocities stand in for the
    simulator's. For Hopper this differs from Gymnasium only when a joint speed reaches its health bound (100)
    during the step, which the observation cannot show. The comparison runs on the host in float64 (one copy per
    call); the result returns to ``next_obs``'s device.
    """

    task: LocomotionTask

    @property
    def env_id(self) -> str:
        return self.task.env_id

    def __call__(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        owner = f"termination rule of {self.env_id}"
        next_obs = as_rows(owner, "next_obs", next_obs, self.task.obs_dim, None, None)
        done = ~torch.isfinite(next_obs).all(dim=1)
        health = self.task.health
        if health is None or not health.terminate_when_unhealthy:
            return done
        rows = next_obs.detach().to("cpu", torch.float64).numpy()
        qpos, qvel = self.task.split_states(self.task.states_from_observations(rows))
        unhealthy = ~health.is_healthy(qpos, qvel)
        return done | torch.from_numpy(np.ascontiguousarray(unhealthy)).to(next_obs.device)

    def __repr__(self) -> str:
        return f"LocomotionTermination({self.env_id!r})"


def termination_rule(env_id: str) -> LocomotionTermination | None:
    """The known termination rule of ``env_id`` (Gymnasium ids ``Hopper-v5``, ``Walker2d-v5``, ``HalfCheetah-v5``,
    default arguments; HalfCheetah never terminates), or ``None`` for any other id."""
    if env_id not in SUPPORTED_ENVS:
        return None
    return LocomotionTermination(locomotion_task(env_id))


def termination_for(env_id: str | None, data: Any = None, **fit_kwargs: Any) -> TerminationFn:
    """The known rule of ``env_id`` when there is one, else a :class:`TerminalClassifier` fitted on ``data`` with
    ``fit_kwargs`` (``config``, ``seed``, ``device``, ``progress``); both are used only when no rule is known.

    Raises ``ValueError`` when no rule is known and no data is given.
    """
    rule = termination_rule(env_id) if env_id is not None else None
    if rule is not None:
        return rule
    if data is None:
        raise ValueError(
            f"no known termination rule for env_id={env_id!r} (known: {list(SUPPORTED_ENVS)}) and no data to learn "
            "one from; pass data=... to fit a TerminalClassifier, or use a TerminationFn of your own "
            "(dyaug.models.never_terminates for tasks that never end)."
        )
    return TerminalClassifier.fit(data, **fit_kwargs)
