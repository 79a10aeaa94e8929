"""DyDiff's policy-consistent rollouts (Zhao et al. 2024, arXiv 2405.19189, §5 of the reimplementation notes).

From start states s_0 (B rows), with a policy π, a single-step dynamics model f, a state resampler (the
trajectory diffusion model), a reward model r̂ and a termination function:

1. initial trajectory: a_t = π(s_t), s_{t+1} = f(s_t, a_t) for t < H − 1, and a_{H−1} = π(s_{H−1});
2. ``iterations`` times: ŝ ~ DM(s | s_0, a_{0:H−1}); s ← (ŝ + s)/2 when ``average`` (the official code's
   damped update) else s ← ŝ, s_0 unchanged; a_t ← π(s_t) for every t (one batched call over B·H rows);
3. r_t = r̂(s_t, a_t) and done_t = term(s_t, a_t, s'_t), where the stored next state s'_t is s_{t+1} (the
   official code, ``labels="trajectory"``) or, with ``labels="models"`` (a deviation, the trajectory analogue of
   SynthER's labelled variant), f(s_t, a_t): the diffusion model places the states, the single-step model labels
   each row's next state.

Each trajectory ends at its first predicted terminal. With a :class:`~dyaug.models.support.DataSupport` (a
deviation from the official code, which has none) it also ends before its first state outside the data's
support, with a timeout, and the predicted rewards are clipped to the data's reward range with a margin. The
engine knows the models only through the small protocols below, so tests can pass exact fakes and integrations
can reuse it. Everything stays on the
models' device; the only host copy is the final :meth:`Trajectories.to_transitions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from dyaug.data.transitions import Transitions
from dyaug.models import TerminationFn
from dyaug.models.support import DataSupport

RowLabels = Literal["trajectory", "models"]
"""Where a stored row's next state comes from: the trajectory's s_{t+1} (official) or the dynamics' f(s_t, a_t)."""
LABELS: tuple[str, ...] = get_args(RowLabels)

Policy = Callable[[Tensor], Tensor]
"""``actions = π(states)``: a batched torch callable, ``(N, obs_dim)`` -> ``(N, act_dim)`` on the same device."""


@runtime_checkable
class Dynamics(Protocol):
    """A single-step model ``s' = step(s, a)``, ``(B, obs_dim)`` in raw units, e.g.
    :class:`~dyaug.models.DynamicsEnsemble`."""

    def step(self, obs: Tensor, act: Tensor, *, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class RewardFn(Protocol):
    """``r = f(s, a)``, shape ``(B,)``, raw units (e.g. :class:`~dyaug.models.RewardModel`)."""

    def __call__(self, obs: Tensor, act: Tensor) -> Tensor: ...


@runtime_checkable
class StateResampler(Protocol):
    """States ``(B, H, obs_dim)`` given s_0 ``(B, obs_dim)`` and actions ``(B, H, act_dim)``, with row 0 equal
    to s_0 (e.g. :class:`~dyaug.dydiff.trajectory_model.TrajectoryModel`)."""

    def resample_states(self, s0: Tensor, actions: Tensor, *, generator: torch.Generator | None = None) -> Tensor: ...


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectories:
    """B generated trajectories on the models' device: ``states (B, H, obs_dim)``, ``actions (B, H, act_dim)``,
    ``rewards (B, H)`` = r̂(s_t, a_t), ``dones (B, H − 1)`` bool = term(s_t, a_t, s'_t) and ``inside (B, H)``
    bool, whether s_t (and, when labelled, s'_{t−1}) lies in the data's support (``None``: everywhere);
    ``clipped_rewards``: how many rewards the support clipped (a 0-d tensor, on the device); ``next_states
    (B, H − 1, obs_dim)``: each row's s'_t when a model labelled it (``None``: s'_t = s_{t+1})."""

    states: Tensor
    actions: Tensor
    rewards: Tensor
    dones: Tensor
    inside: Tensor | None = None
    clipped_rewards: Tensor | None = None
    next_states: Tensor | None = None

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.states.shape[1])

    def first_done(self) -> Tensor:
        """``(B,)`` int64: the first t with done_t, or H − 1 for a trajectory that never terminates."""
        steps = torch.arange(self.horizon - 1, device=self.dones.device)
        return torch.where(self.dones, steps, self.horizon - 1).amin(dim=1)

    def last_steps(self) -> Tensor:
        """``(B,)`` int64: the last t the trajectory reaches: its first terminal, the step before its first state
        outside the support, or H − 1."""
        first_done = self.first_done()
        if self.inside is None:
            return first_done
        steps = torch.arange(self.horizon, device=self.inside.device)
        first_out = torch.where(self.inside, self.horizon, steps).amin(dim=1)
        return torch.minimum(first_done, first_out - 1)

    def truncated(self) -> Tensor:
        """``(B,)`` bool: the trajectory was cut before a state outside the support (and before any terminal)."""
        return self.last_steps() < self.first_done()

    def returns(self) -> Tensor:
        """Predicted returns R = Σ_{t ≤ T} r̂(s_t, a_t), T = :meth:`last_steps` (float64, (B,)).

        For a trajectory that never terminates this is the official score, a sum over all H steps. The
        official score also adds the rewards after a predicted terminal; here they do not count (a deviation).
        """
        steps = torch.arange(self.horizon, device=self.rewards.device)
        alive = steps[None, :] <= self.last_steps()[:, None]
        return (self.rewards.double() * alive).sum(dim=1)

    def select(self, index: Tensor) -> Trajectories:
        """The trajectories ``index`` (int64 indices)."""
        inside = None if self.inside is None else self.inside[index]
        next_states = None if self.next_states is None else self.next_states[index]
        return Trajectories(
            self.states[index],
            self.actions[index],
            self.rewards[index],
            self.dones[index],
            inside,
            next_states=next_states,
        )

    def to_transitions(self) -> Transitions:
        """Rows ``(s_t, a_t, r_t, s'_t, done_t)`` for t = 0..H − 2, trajectory after trajectory, truncated after
        the first terminal (which is kept, ``terminals = 1``). A trajectory that never terminates gets
        ``timeouts = 1`` on its last row (t = H − 2): it ends there without an MDP termination, so a learner
        bootstraps from its last s' and an episode reader sees where one generated trajectory stops. A trajectory
        cut at the support ends with ``timeouts = 1`` on the last row whose s' is inside (none when s_1 is not).
        """
        b, h = len(self), self.horizon
        steps = torch.arange(h - 1, device=self.states.device).expand(b, -1)
        last, cut = self.last_steps(), self.truncated()
        terminated = (self.first_done() < h - 1) & ~cut
        final = torch.where(cut, last - 1, last.clamp_max(h - 2))[:, None]  # the last row kept
        kept = steps <= final
        terminal = terminated[:, None] & (steps == final)
        timeout = ~terminated[:, None] & (steps == final)
        o, a = self.states.shape[2], self.actions.shape[2]
        rows = torch.cat(
            [
                self.states[:, :-1],
                self.actions[:, :-1],
                self.rewards[:, :-1, None],
                self.states[:, 1:] if self.next_states is None else self.next_states,
                terminal[..., None].float(),
                timeout[..., None].float(),
            ],
            dim=2,
        )[kept]
        table = rows.cpu().numpy()
        return Transitions(
            observations=table[:, :o],
            actions=table[:, o : o + a],
            rewards=table[:, o + a],
            next_observations=table[:, o + a + 1 : 2 * o + a + 1],
            terminals=table[:, -2],
            timeouts=table[:, -1],
        )


@dataclasses.dataclass(frozen=True, eq=False)
class RolloutEngine:
    """Generates :class:`Trajectories` of ``horizon`` steps with the procedure of the module docstring; ``labels``
    says where each row's next state comes from (step 3).

    ``obs_dim``/``act_dim`` are the sizes every model works with; each model's output is checked (shape, dtype,
    finiteness) and a bad one raises an error naming the model.
    """

    dynamics: Dynamics
    reward: RewardFn
    termination: TerminationFn
    resampler: StateResampler
    horizon: int
    obs_dim: int
    act_dim: int
    support: DataSupport | None = None
    labels: RowLabels = "trajectory"

    @torch.no_grad()
    def run(
        self,
        policy: Policy,
        start_states: Tensor,
        *,
        iterations: int,
        average: bool,
        generator: torch.Generator | None = None,
    ) -> Trajectories:
        """Trajectories from ``start_states`` (B, obs_dim) on the models' device; see the module docstring."""
        if not callable(policy):
            raise TypeError(f"policy must be a callable states -> actions, got {type(policy).__name__}.")
        s0 = self._check_start_states(start_states)
        b, h = len(s0), self.horizon
        state_steps, action_steps = [s0], []
        for t in range(h - 1):
            action_steps.append(self._policy(policy, state_steps[-1], finite=False))
            stepped = self.dynamics.step(state_steps[-1], action_steps[-1], generator=generator)
            state_steps.append(self._checked(stepped, (b, self.obs_dim), self._dynamics_name(t), finite=False))
        action_steps.append(self._policy(policy, state_steps[-1], finite=False))
        states, actions = torch.stack(state_steps, dim=1), torch.stack(action_steps, dim=1)
        if not (torch.isfinite(states).all() & torch.isfinite(actions).all()):  # one host sync for all H steps
            for t in range(h):  # name the first model, in call order, that returned a non-finite value
                self._checked(actions[:, t], (b, self.act_dim), "the policy")
                if t < h - 1:
                    self._checked(states[:, t + 1], (b, self.obs_dim), self._dynamics_name(t))
        for m in range(iterations):
            resampled = self.resampler.resample_states(s0, actions, generator=generator)
            resampled = self._checked(resampled, states.shape, f"the state resampler in iteration {m}")
            new = (resampled + states) / 2 if average else resampled
            states = torch.cat([s0[:, None], new[:, 1:]], dim=1)
            actions = self._policy(policy, states.reshape(b * h, self.obs_dim)).reshape(b, h, self.act_dim)
        flat_obs, flat_act = states.reshape(b * h, self.obs_dim), actions.reshape(b * h, self.act_dim)
        rewards = self._checked(self.reward(flat_obs, flat_act), (b * h,), "the reward model").reshape(b, h)
        row_obs, row_act = states[:, :-1].reshape(-1, self.obs_dim), actions[:, :-1].reshape(-1, self.act_dim)
        labelled = None
        if self.labels == "models":  # s'_t = f(s_t, a_t)
            labelled = self.dynamics.step(row_obs, row_act, generator=generator)
            labelled = self._checked(labelled, row_obs.shape, "the dynamics model labelling s'")
        next_obs = states[:, 1:].reshape(-1, self.obs_dim) if labelled is None else labelled
        inside, clipped = None, torch.zeros((), dtype=torch.int64, device=states.device)
        if self.support is not None:
            rewards, clipped = self.support.clip_rewards(rewards)
            inside = self.support.inside(states)
            inside[:, 0] = True  # s_0 is real
            if labelled is not None:  # a row ends its trajectory's kept part when its labelled s' leaves too
                inside[:, 1:] &= self.support.inside(labelled).reshape(b, h - 1)
        dones = self.termination(row_obs, row_act, next_obs)
        if not isinstance(dones, Tensor) or dones.dtype != torch.bool or dones.shape != (b * (h - 1),):
            raise ValueError(
                f"the termination function must return a bool tensor of shape ({b * (h - 1)},), got {_describe(dones)}."
            )
        dones = dones.to(states.device).reshape(b, h - 1)
        next_states = None if labelled is None else labelled.reshape(b, h - 1, self.obs_dim)
        return Trajectories(states, actions, rewards, dones, inside, clipped, next_states)

    def _check_start_states(self, start_states: Tensor) -> Tensor:
        if not isinstance(start_states, Tensor) or not start_states.is_floating_point():
            raise TypeError(f"start_states must be a floating-point tensor, got {_describe(start_states)}.")
        if start_states.ndim != 2 or start_states.shape[1] != self.obs_dim or len(start_states) == 0:
            raise ValueError(
                f"start_states must have shape (B, {self.obs_dim}) with B >= 1 (one observation of the fitted "
                f"data's size per row), got {tuple(start_states.shape)}."
            )
        if not torch.isfinite(start_states).all():
            raise ValueError("start_states contain NaN or Inf; pass finite observations.")
        return start_states.float()

    @staticmethod
    def _dynamics_name(t: int) -> str:
        return f"the dynamics model at step {t}"

    def _policy(self, policy: Policy, states: Tensor, *, finite: bool = True) -> Tensor:
        actions = policy(states)
        if not isinstance(actions, Tensor) or not actions.is_floating_point():
            raise TypeError(
                f"the policy must return a floating-point torch tensor of actions, got {_describe(actions)}; "
                "DyDiff calls it with a (N, obs_dim) tensor on the generator's device."
            )
        return self._checked(actions, (len(states), self.act_dim), "the policy", device=states.device, finite=finite)

    @staticmethod
    def _checked(
        x: Tensor,
        shape: tuple[int, ...] | torch.Size,
        who: str,
        device: torch.device | None = None,
        *,
        finite: bool = True,
    ) -> Tensor:
        """``x`` as float32 after checking its shape, device and (``finite``, a host sync) its values."""
        if not isinstance(x, Tensor) or x.shape != tuple(shape):
            raise ValueError(f"{who} must return a tensor of shape {tuple(shape)}, got {_describe(x)}.")
        if device is not None and x.device != device:
            raise ValueError(f"{who} returned a tensor on {x.device} for inputs on {device}; keep it on {device}.")
        if finite and not torch.isfinite(x).all():
            raise ValueError(f"{who} returned NaN or Inf values; check it on the states it was given.")
        return x.float()


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    if isinstance(x, np.ndarray):
        return f"a numpy array of shape {x.shape} (convert it with torch.as_tensor(..., device=states.device))"
    return type(x).__name__
