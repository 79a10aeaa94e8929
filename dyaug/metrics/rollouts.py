"""Policy rollouts in the simulator from given observations: the ground truth of multi-step model error.

A model rollout ŝ_0 = s_0, ŝ_{t+1} = f̂(ŝ_t, π(ŝ_t)) is judged against the simulator rollout of the same policy
from the same start, s_{t+1} = f(s_t, π(s_t)), by the compounding error

    e_t = ‖ŝ_t − s_t‖₂,   compared while neither rollout has terminated before step t,

the quantity of DyDiff's horizon plot (Zhao et al. 2024, arXiv 2405.19189, Fig. 3; the same compounding error
as in Janner et al. 2019, "When to Trust Your Model", MBPO). Policy consistency of stored data is
‖a − π(s)‖₂ per row. States are rebuilt from observations and stepped as in :mod:`dyaug.metrics.mujoco_state`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dyaug.metrics.mujoco_state import locomotion_task
from dyaug.validation import check_int

Policy = Callable[[Tensor], Tensor]
"""``actions = π(observations)``: a batched torch callable, float32 ``(N, obs_dim)`` -> ``(N, act_dim)``."""


@dataclasses.dataclass(frozen=True, eq=False)
class SimulatedRollouts:
    """B simulator rollouts of H states each: ``observations (B, H, obs_dim)`` with row 0 the start observation,
    ``actions (B, H − 1, act_dim)`` = π(s_t), ``rewards (B, H − 1)`` and ``terminals (B, H − 1)`` (bool,
    Gymnasium's ``terminated`` of step t). All float64. Rollouts keep stepping after a terminal step;
    :attr:`reached` marks the states an episode actually visits."""

    env_id: str
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.observations.shape[1])

    @property
    def reached(self) -> np.ndarray:
        """``(B, H)`` bool: state t is visited, i.e. no step before t − 1 terminated (see :func:`reached_states`)."""
        return reached_states(self.terminals)

    def state_error(self, predicted: np.ndarray, predicted_terminals: np.ndarray | None = None) -> np.ndarray:
        """Compounding error e_t = ‖ŝ_t − s_t‖₂ of predicted observations ``(B, H, obs_dim)`` from the same starts.

        ``(B, H)`` float64, NaN where state t is not compared: after the simulator's terminal step, or after the
        prediction's own terminal step when ``predicted_terminals`` ``(B, H − 1)`` (bool) is given.
        """
        predicted = np.asarray(predicted, dtype=np.float64)
        if predicted.shape != self.observations.shape:
            raise ValueError(
                f"predicted observations must have the simulated shape {self.observations.shape} (same starts, "
                f"same horizon), got {predicted.shape}."
            )
        compared = self.reached
        if predicted_terminals is not None:
            predicted_terminals = np.asarray(predicted_terminals)
            if predicted_terminals.shape != self.terminals.shape:
                raise ValueError(
                    f"predicted_terminals must have shape {self.terminals.shape} (one flag per step), "
                    f"got {predicted_terminals.shape}."
                )
            compared &= reached_states(predicted_terminals.astype(bool))
        error = np.linalg.norm(predicted - self.observations, axis=2)
        return np.where(compared, error, np.nan)


def reached_states(terminals: np.ndarray) -> np.ndarray:
    """``(B, H)`` bool from step flags ``(B, H − 1)``: state t is reached iff none of steps 0..t − 2 terminated
    (s_0 always; the state a terminal step leads to is reached, the ones after it are not)."""
    b = terminals.shape[0]
    before = np.concatenate([np.zeros((b, 1), dtype=bool), np.cumsum(terminals, axis=1) > 0], axis=1)
    return ~np.concatenate([np.zeros((b, 1), dtype=bool), before[:, :-1]], axis=1)


def simulate_policy(
    env_id: str,
    start_observations: np.ndarray,
    policy: Policy,
    horizon: int,
    *,
    device: str | torch.device = "cpu",
    threads: int = 1,
) -> SimulatedRollouts:
    """Run ``policy`` in the simulator of ``env_id`` for ``horizon − 1`` steps from each start observation.

    The state is rebuilt from each observation (x = 0; see
    :meth:`~dyaug.metrics.mujoco_state.LocomotionTask.states_from_observations`); each step calls ``policy`` on
    the float32 observations (a tensor on ``device``) and steps every row with its action as ``env.step`` does.
    The only difference from ``env.step`` is the solver warm start, which observations do not carry and each step
    here restarts from zero: about 1e-7 per step, which contacts can amplify over long rollouts.

    ``ValueError`` for start observations of the wrong size, non-finite ones, or ones with a velocity at the
    clip bound (their state cannot be rebuilt: choose starts with ``locomotion_task(env_id).rebuildable``), and
    for a policy output that is not a finite ``(B, act_dim)`` tensor.
    """
    task = locomotion_task(env_id)
    check_int("horizon", horizon, 2, hint="states per rollout, start included")
    obs = np.asarray(start_observations, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != task.obs_dim or len(obs) == 0:
        raise ValueError(
            f"start_observations must have shape (B, {task.obs_dim}) with B >= 1 for {env_id}, got {obs.shape}."
        )
    if not np.isfinite(obs).all():
        raise ValueError("start_observations contain NaN or Inf; pass finite observations.")
    clipped = np.flatnonzero(~task.rebuildable(obs))
    if len(clipped):
        raise ValueError(
            f"start observations {clipped[:5].tolist()}{'...' if len(clipped) > 5 else ''} have a velocity at the "
            f"clip bound {task.velocity_clip}, so their simulator state is unknown; keep only the rows where "
            f"dyaug.metrics.mujoco_state.locomotion_task({env_id!r}).rebuildable(observations) is True."
        )
    b, device = len(obs), torch.device(device)
    observations = np.empty((b, horizon, task.obs_dim))
    actions = np.empty((b, horizon - 1, task.act_dim))
    rewards = np.empty((b, horizon - 1))
    terminals = np.empty((b, horizon - 1), dtype=bool)
    observations[:, 0] = obs
    states = task.states_from_observations(obs)
    for t in range(horizon - 1):
        actions[:, t] = _actions(policy, observations[:, t], task.act_dim, device)
        states, rewards[:, t], terminals[:, t] = task.step(states, actions[:, t], threads=threads)
        observations[:, t + 1] = task.observations_from_states(states)
        states[:, :2] = 0.0  # time and root x: the next step's Δx is measured from x = 0
    return SimulatedRollouts(env_id, observations, actions, rewards, terminals)


def policy_action_distance(
    policy: Policy, observations: np.ndarray, actions: np.ndarray, *, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Policy consistency of stored rows: ‖a − π(s)‖₂ per row, ``(N,)`` float64 (0 for rows π itself labelled).

    ``policy`` gets the float32 observations in one batch on ``device``.
    """
    observations, actions = np.asarray(observations), np.asarray(actions, dtype=np.float64)
    if observations.ndim != 2 or actions.ndim != 2 or len(observations) != len(actions):
        raise ValueError(
            f"observations (N, obs_dim) and actions (N, act_dim) must be 2-D with the same N, got "
            f"{observations.shape} and {actions.shape}."
        )
    return np.linalg.norm(actions - _actions(policy, observations, actions.shape[1], torch.device(device)), axis=1)


@torch.no_grad()
def _actions(policy: Policy, observations: np.ndarray, act_dim: int, device: torch.device) -> np.ndarray:
    states = torch.as_tensor(np.array(observations, dtype=np.float32), device=device)
    actions = policy(states)
    if not isinstance(actions, Tensor) or actions.shape != (len(states), act_dim):
        got = tuple(actions.shape) if isinstance(actions, Tensor) else type(actions).__name__
        raise ValueError(f"the policy must return a tensor of shape ({len(states)}, {act_dim}), got {got}.")
    if not torch.isfinite(actions).all():
        raise ValueError("the policy returned NaN or Inf actions.")
    return actions.double().cpu().numpy()
