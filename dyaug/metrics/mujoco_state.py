"""Gymnasium MuJoCo v5 locomotion tasks as pure array functions: state from observation, step, reward.

Hopper-v5, Walker2d-v5 and HalfCheetah-v5 observe ``o = (qpos[1:], qvel)``; Hopper and Walker2d clip the
velocities, ``o = (qpos[1:], clip(qvel, -10, 10))``. The excluded root x neither enters the dynamics nor the
reward (the forward term uses the displacement ``Δx``), so ``(x=0, o)`` is the full physics state whenever
no velocity was clipped. Ant-v5 excludes the root's x and y and appends the contact forces of every body but the
world, ``o = (qpos[2:], qvel, clip(cfrc_ext[1:], -1, 1))`` (105 numbers): the forces are computed from the state
(``mj_rnePostConstraint`` after the step, as Gymnasium does), not part of it, so its "states" here carry them in
extra columns after the physics state. The reward and termination rules are those of Gymnasium's v5 environments
(Towers et al., 2024, "Gymnasium"; models from Todorov et al., 2012, "MuJoCo"); every weight and range is
read from the environment object itself, so the rules cannot drift from the installed Gymnasium.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gymnasium as gym
import mujoco
import mujoco.rollout
import numpy as np


@dataclasses.dataclass(frozen=True)
class _EnvLayout:
    """What the environment classes hard-code rather than store as attributes."""

    velocity_clip: float | None  # the bound ``_get_obs`` clips qvel to, or None when it does not clip
    health_attributes: tuple[str, ...]  # the ``_healthy_*_range`` attributes the task's ``is_healthy`` uses
    excluded: int = 1  # leading qpos coordinates left out of the observation (the root's x, and y for Ant)
    contact: bool = False  # the observation ends with the clipped contact forces (Ant)


_LAYOUTS = {
    "Hopper-v5": _EnvLayout(10.0, ("_healthy_z_range", "_healthy_angle_range", "_healthy_state_range")),
    "Walker2d-v5": _EnvLayout(10.0, ("_healthy_z_range", "_healthy_angle_range")),
    "HalfCheetah-v5": _EnvLayout(None, ()),
    "Ant-v5": _EnvLayout(None, ("_healthy_z_range",), excluded=2, contact=True),
}
SUPPORTED_ENVS: tuple[str, ...] = tuple(_LAYOUTS)

_RANGE_FIELDS = {
    "_healthy_z_range": "z_range",
    "_healthy_angle_range": "angle_range",
    "_healthy_state_range": "state_range",
}
_UNBOUNDED = (-np.inf, np.inf)


@dataclasses.dataclass(frozen=True)
class HealthRule:
    """Gymnasium's ``is_healthy``: every checked quantity lies in its *open* interval (Hopper, Walker2d).

    healthy ⇔ z_lo < qpos[1] < z_hi ∧ angle_lo < qpos[2] < angle_hi ∧ state_lo < (qpos[2:], qvel) < state_hi
    (Hopper checks all three, Walker2d the first two). ``qvel`` is the simulator's, not the clipped one.
    Ant (``planar=False``): the state is finite and z_lo <= qpos[2] <= z_hi, a *closed* interval.
    """

    healthy_reward: float
    terminate_when_unhealthy: bool
    z_range: tuple[float, float] = _UNBOUNDED
    angle_range: tuple[float, float] = _UNBOUNDED
    state_range: tuple[float, float] = _UNBOUNDED
    planar: bool = True

    def is_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)`` for states given as ``qpos (N, nq)`` and ``qvel (N, nv)``."""
        if not self.planar:
            low, high = self.z_range
            finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
            return finite & (low <= qpos[:, 2]) & (qpos[:, 2] <= high)
        state = np.concatenate([qpos, qvel], axis=1)[:, 2:]
        return (
            _inside(qpos[:, 1], self.z_range)
            & _inside(qpos[:, 2], self.angle_range)
            & _inside(state, self.state_range).all(axis=1)
        )


def _inside(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    return (low < values) & (values < high)


@dataclasses.dataclass(frozen=True)
class ContactRule:
    """Ant's contact forces: ``clip(cfrc_ext, low, high)`` of every body enters the observation (but the world's)
    and the cost ``weight · Σ clip(cfrc_ext)²``."""

    low: float
    high: float
    weight: float


@dataclasses.dataclass(frozen=True, eq=False)
class LocomotionTask:
    """One v5 locomotion task: its compiled model and the rules ``step`` applies after the physics.

    Reward (Gymnasium v5): ``r = w_forward · Δx / dt + healthy_reward · healthy − w_ctrl · ‖a‖²``, where
    ``a`` is the action as given. MuJoCo clamps ``ctrl`` to ``actuator_ctrlrange`` inside the physics (all
    actuators of these models are ``ctrllimited``) while the control cost sees the unclamped action;
    :meth:`step` passes actions to the simulator unchanged, so both effects match ``env.step`` exactly.
    The control cost is computed in float64 (Gymnasium uses the action's dtype, float32 for float32
    actions: a difference below 1e-7).
    """

    env_id: str
    model: mujoco.MjModel
    frame_skip: int
    dt: float
    velocity_clip: float | None
    forward_reward_weight: float
    ctrl_cost_weight: float
    health: HealthRule | None
    excluded: int = 1
    contact: ContactRule | None = None

    @property
    def nq(self) -> int:
        return int(self.model.nq)

    @property
    def nv(self) -> int:
        return int(self.model.nv)

    @property
    def n_physics(self) -> int:
        """Columns of an ``mjSTATE_FULLPHYSICS`` row (time, qpos, qvel for these models)."""
        return int(mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_FULLPHYSICS))

    @property
    def n_contact(self) -> int:
        """Contact-force numbers of every body, the world's included (0 without a contact rule)."""
        return 0 if self.contact is None else 6 * int(self.model.nbody)

    @property
    def obs_dim(self) -> int:
        return self.nq - self.excluded + self.nv + (0 if self.contact is None else self.n_contact - 6)

    @property
    def act_dim(self) -> int:
        return int(self.model.nu)

    # ------------------------------------------------------------ observations <-> states
    def rebuildable(self, observations: np.ndarray) -> np.ndarray:
        """Rows whose velocities were not clipped (``|v| < clip``), i.e. whose state the observation fixes."""
        if self.velocity_clip is None:
            return np.ones(len(observations), dtype=bool)
        velocities = observations[:, self.nq - self.excluded : self.nq - self.excluded + self.nv]
        return (np.abs(velocities) < self.velocity_clip).all(axis=1)

    def states_from_observations(self, observations: np.ndarray) -> np.ndarray:
        """``mjSTATE_FULLPHYSICS`` rows ``[time=0, root x (y) = 0, qpos[excluded:], qvel]`` (float64) for
        ``(N, obs_dim)``; with a contact rule, the observed contact forces follow in the extra columns (the world
        body's as 0)."""
        n_pos = self.nq - self.excluded + self.nv
        states = np.zeros((len(observations), self.n_physics + self.n_contact), dtype=np.float64)
        states[:, 1 + self.excluded : 1 + self.excluded + n_pos] = observations[:, :n_pos]
        if self.contact is not None:
            states[:, self.n_physics + 6 :] = observations[:, n_pos:]
        return states

    def split_states(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(qpos, qvel)`` views of the physics part of state rows."""
        return states[:, 1 : 1 + self.nq], states[:, 1 + self.nq : 1 + self.nq + self.nv]

    def observations_from_states(self, states: np.ndarray) -> np.ndarray:
        """What ``_get_obs`` returns: ``(qpos[excluded:], qvel)``, velocities clipped where the task clips them,
        then the clipped contact forces of every body but the world where the task observes them."""
        qpos, qvel = self.split_states(states)
        if self.velocity_clip is not None:
            qvel = np.clip(qvel, -self.velocity_clip, self.velocity_clip)
        parts = [qpos[:, self.excluded :], qvel]
        if self.contact is not None:
            parts.append(states[:, self.n_physics + 6 :])
        return np.concatenate(parts, axis=1)

    # ---------------------------------------------------------------------------- stepping
    def step(
        self, states: np.ndarray, actions: np.ndarray, *, threads: int = 1, chunk_size: int = 8192
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One environment step for each row: ``(next_states, rewards, terminals)``.

        Each row holds its action for ``frame_skip`` physics steps (``mujoco.rollout``, ``threads`` MjData),
        starting from a zero solver warm start, since observations do not carry ``qacc_warmstart``. The
        result does not depend on ``threads`` or ``chunk_size``. Rows must start at ``x = 0``, so that
        ``Δx`` is the final root x.
        """
        n_states = self.n_physics + self.n_contact
        if states.shape[1] != n_states:
            raise ValueError(f"{self.env_id} states need {n_states} columns, got {states.shape[1]}.")
        actions = np.asarray(actions, dtype=np.float64)
        if self.contact is not None:
            next_states = self._step_with_contact_forces(states, actions)
            rewards, terminals = self.reward_and_termination(next_states, actions)
            return next_states, rewards, terminals
        next_states = np.empty_like(states)
        datas = [mujoco.MjData(self.model) for _ in range(threads)]
        with mujoco.rollout.Rollout(nthread=threads if threads > 1 else 0) as pool:
            for start in range(0, len(states), chunk_size):
                rows = slice(start, start + chunk_size)
                n = len(states[rows])
                controls = np.repeat(actions[rows, None, :], self.frame_skip, axis=1)
                trajectory, _ = pool.rollout(
                    self.model, datas, states[rows], controls, initial_warmstart=np.zeros((n, self.nv))
                )
                next_states[rows] = trajectory[:, -1]
        rewards, terminals = self.reward_and_termination(next_states, actions)
        return next_states, rewards, terminals

    def _step_with_contact_forces(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Gymnasium's step row by row (``mj_step`` for ``frame_skip`` steps, then ``mj_rnePostConstraint``),
        keeping the clipped contact forces after the physics state (Ant)."""
        assert self.contact is not None
        data = mujoco.MjData(self.model)
        physics = mujoco.mjtState.mjSTATE_FULLPHYSICS
        out = np.empty_like(states)
        for i, (state, action) in enumerate(zip(states, actions, strict=True)):
            mujoco.mj_resetData(self.model, data)
            mujoco.mj_setState(self.model, data, state[: self.n_physics], physics)
            data.ctrl[:] = action
            mujoco.mj_step(self.model, data, nstep=self.frame_skip)
            mujoco.mj_rnePostConstraint(self.model, data)
            mujoco.mj_getState(self.model, data, out[i, : self.n_physics], physics)
            out[i, self.n_physics :] = np.clip(data.cfrc_ext, self.contact.low, self.contact.high).reshape(-1)
        return out

    def reward_and_termination(self, next_states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(r, terminated)`` of steps that started at ``x = 0`` and ended in ``next_states``."""
        qpos, qvel = self.split_states(next_states)
        forward = self.forward_reward_weight * qpos[:, 0] / self.dt
        ctrl_cost = self.ctrl_cost_weight * np.sum(np.square(actions), axis=1)
        if self.contact is not None:
            forces = next_states[:, self.n_physics :]
            ctrl_cost = ctrl_cost + self.contact.weight * np.sum(np.square(forces), axis=1)
        if self.health is None:
            return forward - ctrl_cost, np.zeros(len(next_states), dtype=bool)
        healthy = self.health.is_healthy(qpos, qvel)
        terminals = ~healthy if self.health.terminate_when_unhealthy else np.zeros_like(healthy)
        return forward + self.health.healthy_reward * healthy - ctrl_cost, terminals


@functools.cache
def locomotion_task(env_id: str) -> LocomotionTask:
    """The :class:`LocomotionTask` of ``env_id`` (one of :data:`SUPPORTED_ENVS`), with default arguments.

    Raises ``ValueError`` for any other id; short names are not accepted (the version fixes the rules).
    """
    if env_id not in _LAYOUTS:
        stem = str(env_id).lower().split("-")[0]
        hint = [name for name in SUPPORTED_ENVS if stem and name.lower().split("-")[0] == stem]
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(
            f"env_id {env_id!r} is not supported; dynamics can be checked for {list(SUPPORTED_ENVS)} "
            f"(Gymnasium MuJoCo v5 ids, default arguments).{suggestion}"
        )
    layout = _LAYOUTS[env_id]
    env: Any = gym.make(env_id).unwrapped  # a MuJoCo locomotion env: its own (private) attributes, read below
    try:
        health = None
        if layout.health_attributes:
            ranges = {_RANGE_FIELDS[name]: tuple(getattr(env, name)) for name in layout.health_attributes}
            health = HealthRule(
                healthy_reward=float(env._healthy_reward),
                terminate_when_unhealthy=bool(env._terminate_when_unhealthy),
                planar=not layout.contact,
                **ranges,
            )
        contact = None
        if layout.contact:
            low, high = env._contact_force_range
            contact = ContactRule(float(low), float(high), float(env._contact_cost_weight))
        return LocomotionTask(
            env_id=env_id,
            model=env.model,
            frame_skip=int(env.frame_skip),
            dt=float(env.dt),
            velocity_clip=layout.velocity_clip,
            forward_reward_weight=float(env._forward_reward_weight),
            ctrl_cost_weight=float(env._ctrl_cost_weight),
            health=health,
            excluded=layout.excluded,
            contact=contact,
        )
    finally:
        env.close()
