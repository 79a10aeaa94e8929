"""SynthER's labelled variant: the diffusion model generates (s, a) only, and single-step models fitted on the same
data label each pair with s', r and the terminal flag (a deviation from the paper, which diffuses the whole
transition; ``SynthER(..., labels="models")``).

The trade: the joint model must learn the dynamics inside its density of transitions, while a dynamics ensemble
learns them directly as a regression, and its one-step predictions on real (s, a) are 2.5-3.8x more accurate
than the joint model's transitions at the ``cpu`` preset (benchmarks/RESULTS.md). The labels are those of
DyDiff's models: s' = s + μ_e(s, a) of a uniformly random elite e of a :class:`~dyaug.models.DynamicsEnsemble`
(the deterministic mean, as DyDiff and MBPO roll out), r = r̂(s, a) of a :class:`~dyaug.models.RewardModel`
clipped to the data's reward range with a 10% margin (:class:`~dyaug.models.support.DataSupport`), and the
terminal flag from the task's known rule or a :class:`~dyaug.models.TerminalClassifier`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dyaug.data.transitions import Transitions
from dyaug.models import DynamicsEnsemble, RewardModel, TerminationFn, termination_for
from dyaug.models.support import DataSupport


@dataclasses.dataclass(frozen=True, eq=False)
class Labeller:
    """s', r and the terminal flag of generated (s, a) pairs (see the module docstring)."""

    dynamics: DynamicsEnsemble
    reward: RewardModel
    termination: TerminationFn
    support: DataSupport

    @classmethod
    def fit(
        cls,
        data: Transitions,
        env_id: str | None,
        preset: str,
        *,
        seed: int,
        device: torch.device,
        progress: bool,
    ) -> Labeller:
        """The three models of ``preset`` (a :mod:`dyaug.models` preset name) fitted on ``data``."""
        kwargs: dict[str, Any] = {"seed": seed, "device": device, "progress": progress}
        return cls(
            DynamicsEnsemble.fit(data, preset, **kwargs),
            RewardModel.fit(data, preset, **kwargs),
            termination_for(env_id, data=data, config=preset, **kwargs),
            DataSupport.fit(data, horizon=1),
        )

    @torch.no_grad()
    def label(self, observations: np.ndarray, actions: np.ndarray, *, seed: int, batch_size: int) -> Transitions:
        """Transitions ``(s, a, r̂, s', terminal)`` with ``timeouts = 0`` for ``observations`` and ``actions``
        (raw units), ``batch_size`` rows at a time on the models' device; ``seed`` draws the elites."""
        device = self.dynamics.device
        generator = torch.Generator(device).manual_seed(seed)
        parts = []
        for start in range(0, len(observations), batch_size):
            obs = torch.as_tensor(observations[start : start + batch_size], dtype=torch.float32, device=device)
            act = torch.as_tensor(actions[start : start + batch_size], dtype=torch.float32, device=device)
            nxt = self.dynamics.step(obs, act, generator=generator)
            rewards, _ = self.support.clip_rewards(self.reward(obs, act))
            done = self.termination(obs, act, nxt)
            parts.append(torch.cat([nxt, rewards[:, None], done.to(nxt.dtype)[:, None]], dim=1).cpu().numpy())
        labels = np.concatenate(parts) if parts else np.zeros((0, observations.shape[1] + 2), np.float32)
        o = observations.shape[1]
        return Transitions(
            observations=observations,
            actions=actions,
            rewards=labels[:, o],
            next_observations=labels[:, :o],
            terminals=labels[:, o + 1],
            timeouts=np.zeros(len(labels), np.float32),
        )

    # ------------------------------------------------------------------------------------------ files
    def save(self, directory: Path) -> dict[str, Any]:
        """Write the models into ``directory``; returns the metadata :meth:`load` needs."""
        from dyaug.models.checkpoint import save_models

        termination = save_models(directory, self.dynamics, self.reward, self.termination)
        return {"termination": termination, "support": self.support.state()}

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any], device: torch.device) -> Labeller:
        from dyaug.models.checkpoint import load_models

        dynamics, reward, termination = load_models(directory, meta["termination"], device)
        return cls(dynamics, reward, termination, DataSupport.from_state(meta["support"]))
