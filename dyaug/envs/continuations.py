"""``ActionContinuations``: the actions an agent has not taken yet, guessed from the data by nearest neighbour.

DyDiff's trajectory model is trained with every action of its window given (s_0 and a_0..a_{H−1}), and its
states depend on all of them, the future ones included. An environment knows only the actions taken so far, so
the window's later action rows need a guess. The guess here is the continuation of the most similar real step:

    j* = argmin_j ‖[s̃_t, ã_t] − [s̃_j, ã_j]‖₂,   â_{t+i} = a_{j*+i},  i = 1 .. L,

over real steps j with L more steps in their episode, in the trajectory model's normalised space (x̃ ∈ [-1, 1]
per column). The guessed sequence is a real one that starts where the episode is, so the window stays close to
the model's training data. On 256 held-out hopper/medium windows, given s_0 and a_0, the 20k-step models' mean
error at t = 1 is 0.53-0.72 with this fill, 3.9-4.0 with a_0 repeated and 0.39-0.53 with the true actions
(``benchmarks/envs_state_error.py``; benchmarks/RESULTS.md, generative simulation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from dyaug.data import Transitions
from dyaug.dydiff.trajectory_model import TrajectoryModel
from dyaug.dydiff.windows import WindowIndex
from dyaug.validation import check_int


@dataclasses.dataclass(frozen=True, eq=False)
class ActionContinuations:
    """``keys`` (N, obs_dim + act_dim): real steps ``[s̃_j, ã_j]`` in a trajectory model's normalised space;
    ``actions`` (N, L, act_dim): the raw actions ``a_{j+1} .. a_{j+L}`` that followed each of them. Calling it
    with normalised queries gives the continuation of the nearest key (see the module docstring)."""

    keys: Tensor
    actions: Tensor

    def __post_init__(self) -> None:
        if self.keys.ndim != 2 or self.actions.ndim != 3 or len(self.keys) != len(self.actions) or not len(self.keys):
            raise ValueError(
                f"ActionContinuations needs keys (N, obs_dim + act_dim) and actions (N, L, act_dim) with one N > 0, "
                f"got {tuple(self.keys.shape)} and {tuple(self.actions.shape)}; build them with "
                "ActionContinuations.from_data."
            )

    @property
    def length(self) -> int:
        """L, the number of actions of each continuation."""
        return int(self.actions.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[2])

    @property
    def obs_dim(self) -> int:
        return int(self.keys.shape[1]) - self.act_dim

    def to(self, device: torch.device | str) -> ActionContinuations:
        return ActionContinuations(self.keys.to(device), self.actions.to(device))

    @classmethod
    def from_data(
        cls, data: Transitions, model: TrajectoryModel, *, max_steps: int = 20_000, seed: int = 0
    ) -> ActionContinuations:
        """Keys and continuations of ``L = H − 1`` actions from the episodes of ``data`` (up to ``max_steps``
        real steps, drawn uniformly with ``seed``) for ``model``'s window of H steps and its normaliser, on
        ``model``'s device.

        ``ValueError`` when the data's sizes differ from the model's or no episode has H steps.
        """
        check_int("max_steps", max_steps, numpy=False)
        if data.obs_dim != model.obs_dim or data.act_dim != model.act_dim:
            raise ValueError(
                f"the data has obs_dim {data.obs_dim} and act_dim {data.act_dim} but the trajectory model "
                f"{model.obs_dim} and {model.act_dim}; pass the data the model was fitted on."
            )
        horizon = model.horizon
        first = WindowIndex.of(data, horizon).complete()
        if len(first) == 0:
            raise ValueError(
                f"no episode of the data has {horizon} steps, the trajectory model's window; pass longer episodes."
            )
        rng = np.random.default_rng(seed)
        first = np.sort(rng.choice(first, size=min(max_steps, len(first)), replace=False))
        following = first[:, None] + np.arange(1, horizon)[None, :]
        device = next(model.network.parameters()).device
        rows = np.concatenate([data.observations[first], data.actions[first]], axis=1)
        keys = model.normalizer.normalize(torch.as_tensor(rows, dtype=torch.float32, device=device))
        actions = torch.as_tensor(data.actions[following], dtype=torch.float32, device=device)
        return cls(keys=keys, actions=actions)

    @torch.no_grad()
    def __call__(self, queries: Tensor) -> Tensor:
        """``(B, L, act_dim)``: the actions that followed the key nearest to each normalised ``[s̃, ã]`` of
        ``queries`` ``(B, obs_dim + act_dim)``."""
        return self.actions[torch.cdist(queries, self.keys).argmin(dim=1)]
