"""One step of a learned MDP for a batch of B episodes, on the models' device.

``s_{t+1}`` comes from a :class:`NextState` model (the dynamics ensemble, or the trajectory diffusion model
inpainting a window of the episode), then

    r_t = r̂(s_t, a_t) − λ u(s_t, a_t),      terminated_t = term(s_t, a_t, s_{t+1}),

with MOPO's uncertainty u (Yu et al. 2020, "MOPO: Model-based Offline Policy Optimization", arXiv 2005.13239)
when λ > 0. Nothing leaves the device here; environments copy the results to the host once per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from dyaug.envs.config import LearnedEnvConfig
from dyaug.envs.models import LearnedModels


@runtime_checkable
class NextState(Protocol):
    """``s_{t+1}`` for every episode of a batch; ``begin`` tells it where episodes (re)start."""

    def begin(self, rows: Tensor, states: Tensor) -> None:
        """Episodes ``rows`` (bool, (B,)) start at ``states`` (``(rows.sum(), obs_dim)``)."""

    def __call__(self, states: Tensor, actions: Tensor, generator: torch.Generator) -> Tensor:
        """``(B, obs_dim)`` next states of ``states`` (B, obs_dim) under ``actions`` (B, act_dim)."""


@runtime_checkable
class UncertainDynamics(Protocol):
    """A Gaussian ensemble that reports every member's ``(mean, logvar)`` of s', each ``(E, B, obs_dim)`` in raw
    units, and the indices of its elites (e.g. :class:`~dyaug.models.DynamicsEnsemble`)."""

    elites: tuple[int, ...]

    def predict(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]: ...


class EnsembleNextState:
    """``s_{t+1} = s_t + μ_e(s_t, a_t)``, ``e`` drawn uniformly from the elites for each row and step
    (:meth:`~dyaug.models.DynamicsEnsemble.step`, the deterministic mean as MBPO and DyDiff roll out)."""

    def __init__(self, models: LearnedModels, batch_size: int) -> None:
        self.dynamics = models.dynamics

    def begin(self, rows: Tensor, states: Tensor) -> None:
        """Stateless: nothing to do."""

    def __call__(self, states: Tensor, actions: Tensor, generator: torch.Generator) -> Tensor:
        return self.dynamics.step(states, actions, generator=generator)


class WindowInpainting:
    """``s_{t+1}`` inpainted by DyDiff's trajectory model (Zhao et al. 2024, arXiv 2405.19189) in a window of H
    steps that holds the episode's latest states and actions.

    Before step t the window holds the known states ``s_{t−k+1..t}`` in rows ``0..k−1`` (k = min(t + 1, H − 1))
    and their actions; row k is ``s_{t+1}``. One sample of the model with every known state and every action
    given (:meth:`~dyaug.dydiff.TrajectoryModel.inpaint_states`) yields row k. The model was trained with every
    action of the window given, but actions after ``a_t`` are not known yet: rows k.. hold the real actions that
    followed the data's step nearest to ``(s_t, a_t)`` (:class:`~dyaug.envs.ActionContinuations`), a real action
    sequence that keeps the window close to the training data. Once the window is full it slides by one step.
    For t < H − 1 the window starts at s_0 and the condition is the trained one (s_0 and actions) plus the states
    generated so far, so each step is conditioned on the episode's own history instead of on s_t alone
    (``benchmarks/envs_state_error.py`` measures what that does to k-step errors).

    Cost: one diffusion sample, ``2N − 1`` network evaluations on a ``(B, H, obs_dim + act_dim)`` batch, per
    step, whatever B is; a vector environment amortises it over its B episodes.
    """

    def __init__(self, models: LearnedModels, batch_size: int) -> None:
        if models.trajectory_model is None or models.continuations is None:
            raise ValueError(
                "mode='diffusion' needs a trajectory model and its action continuations; build the models with "
                "LearnedModels.from_dydiff(generator, env, data=<the generator's training data>) or use "
                "mode='ensemble'."
            )
        self.model, self.continuations = models.trajectory_model, models.continuations
        horizon, device = self.model.horizon, models.device
        self.states = torch.zeros(batch_size, horizon, models.obs_dim, device=device)
        self.actions = torch.zeros(batch_size, horizon, models.act_dim, device=device)
        self.known = torch.ones(batch_size, dtype=torch.long, device=device)  # k: known states in the window
        self._steps = torch.arange(horizon, device=device)
        self._rows = torch.arange(batch_size, device=device)

    def begin(self, rows: Tensor, states: Tensor) -> None:
        self.states[rows, 0] = states
        self.known[rows] = 1

    def __call__(self, states: Tensor, actions: Tensor, generator: torch.Generator) -> Tensor:
        horizon, k = self.model.horizon, self.known
        self.actions[self._rows, k - 1] = actions
        guessed = self.continuations(self.model.normalizer.normalize(torch.cat([states, actions], dim=-1)))
        # row k + i (i >= 0) gets the continuation's action i: gather index clamp(step - k, 0) per row
        following = (self._steps[None, :] - k[:, None]).clamp(min=0, max=self.continuations.length - 1)
        guessed = guessed.gather(1, following[..., None].expand(-1, -1, self.actions.shape[-1]))
        held = (self._steps[None, :] >= k[:, None])[..., None]
        self.actions = torch.where(held, guessed, self.actions)
        known_states = (self._steps[None, :] < k[:, None])[..., None].expand_as(self.states)
        known = torch.cat([known_states, torch.ones_like(self.actions, dtype=torch.bool)], dim=-1)
        windows = torch.cat([self.states, self.actions], dim=-1)
        next_states = self.model.inpaint_states(windows, known, generator=generator)[self._rows, k]
        full = (k == horizon - 1)[:, None, None]
        self.states = torch.where(full, self.states.roll(-1, dims=1), self.states)
        self.actions = torch.where(full, self.actions.roll(-1, dims=1), self.actions)
        row = torch.where(full[:, 0, 0], k - 1, k)
        self.states[self._rows, row] = next_states
        self.known = row + 1
        return next_states


NEXT_STATE: dict[str, Callable[[LearnedModels, int], NextState]] = {
    "ensemble": EnsembleNextState,
    "diffusion": WindowInpainting,
}


def uncertainty(dynamics: UncertainDynamics, obs: Tensor, act: Tensor) -> Tensor:
    """MOPO's ``u(s, a) = max_{e ∈ elites} ‖σ_e(s, a)‖₂``, (B,): the largest norm of an elite's predicted
    standard deviation of s' (raw units). MOPO's models also predict the reward; these predict s' only."""
    _, logvar = dynamics.predict(obs, act)
    elites = torch.tensor(dynamics.elites, device=logvar.device)
    return torch.exp(0.5 * logvar[elites]).norm(dim=-1).amax(dim=0)


@dataclasses.dataclass(frozen=True)
class StepResult:
    """One step of every episode: ``next_states`` (B, obs_dim), ``rewards`` (B,) float32 (penalised when λ > 0),
    ``terminated`` (B,) bool."""

    next_states: Tensor
    rewards: Tensor
    terminated: Tensor


class LearnedMDP:
    """B episodes of the learned MDP of ``models``: their current states and one step of all of them at once.

    ``states`` (B, obs_dim) float32 on the models' device is where each episode is; :meth:`begin` (re)starts
    episodes and :meth:`step` moves every episode by one step (see the module docstring).
    """

    def __init__(self, models: LearnedModels, config: LearnedEnvConfig, batch_size: int) -> None:
        if config.penalty > 0 and not isinstance(models.dynamics, UncertainDynamics):
            raise TypeError(
                f"penalty > 0 needs a dynamics model with predict() and elites (a DynamicsEnsemble), got "
                f"{type(models.dynamics).__name__}; use penalty=0."
            )
        self.models, self.config, self.batch_size = models, config, batch_size
        self.next_state: NextState = NEXT_STATE[config.mode](models, batch_size)
        self.states = torch.zeros(batch_size, models.obs_dim, device=models.device)

    def begin(self, rows: Tensor, states: Tensor) -> None:
        """Episodes ``rows`` (bool (B,) on the device) start at ``states`` (``(rows.sum(), obs_dim)``)."""
        states = states.to(self.states.device, torch.float32)
        self.states[rows] = states
        self.next_state.begin(rows, states)

    @torch.no_grad()
    def step(self, actions: Tensor, generator: torch.Generator) -> StepResult:
        """Every episode one step on: ``actions`` (B, act_dim) float32 on the device."""
        models, states = self.models, self.states
        next_states = _checked(
            self.next_state(states, actions, generator), states.shape, f"the {self.config.mode} model"
        )
        rewards = _checked(models.reward(states, actions), (self.batch_size,), "the reward model").float()
        if self.config.penalty > 0:
            dynamics = models.dynamics
            assert isinstance(dynamics, UncertainDynamics)  # checked by __init__
            rewards = rewards - self.config.penalty * uncertainty(dynamics, states, actions)
        terminated = _checked(models.termination(states, actions, next_states), (self.batch_size,), "termination")
        self.states = next_states
        return StepResult(next_states, rewards, terminated.bool())


def _checked(x: object, shape: tuple[int, ...] | torch.Size, what: str) -> Tensor:
    if not isinstance(x, Tensor) or tuple(x.shape) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} returned {got}, expected a tensor of shape {tuple(shape)}.")
    return x
