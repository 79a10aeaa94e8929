"""DyDiff for Stable-Baselines3 2.9 off-policy algorithms (SAC, TD3): ``DyDiffCallback`` runs DyDiff's rollout
phases with the current actor and mixes their transitions into the replay buffer's batches.

Zhao et al. (2024), "Diffusion Models for Policy-Consistent Trajectory Generation" / DyDiff (arXiv 2405.19189),
here online: the generator, fitted beforehand on a fixed dataset, rolls out the agent's current deterministic
policy from states of the replay buffer (:class:`~dyaug.dydiff.phases.RolloutPhases`); the model buffer's rows are
the synthetic set of :class:`~dyaug.integrations.sb3.SyntheticReplayBuffer`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch as th
from dyaug.integrations.sb3.buffer import synthetic_buffer_of
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize

from dyaug.data.fifo import TransitionFIFO
from dyaug.device import resolve_device
from dyaug.dydiff.generator import DyDiff
from dyaug.dydiff.phases import PhaseReport, RolloutPhases, is_fitted, resolve_phase_settings
from dyaug.generators import PolicyRollout

__all__ = ["DyDiffCallback", "SB3Policy"]


@dataclasses.dataclass(frozen=True, eq=False)
class SB3Policy:
    """An SB3 policy's deterministic action as DyDiff's batched torch callable ``states -> actions``, raw
    observations in and environment-unit actions out, with no host round trip.

    It does what ``policy.predict(states, deterministic=True)`` does, on tensors: the states go to the policy's
    device, through ``vec_normalize``'s observation statistics when given (as the agent sees them in training),
    into the policy's ``_predict`` (SAC: tanh of the mean; TD3: the actor), and the [-1, 1] output is unscaled to
    the action space, ``low + ½ (a + 1)(high − low)`` (``clip`` to the bounds for a policy without squashing).
    The actions equal ``predict``'s exactly (same operations, same order).
    """

    policy: BasePolicy
    vec_normalize: VecNormalize | None = None

    def __post_init__(self) -> None:
        space = self.policy.action_space
        if not isinstance(space, spaces.Box) or not space.is_bounded():
            raise ValueError(f"DyDiff needs a bounded Box action space, got {space}.")

    @th.no_grad()
    def __call__(self, states: th.Tensor) -> th.Tensor:
        policy, space = self.policy, self.policy.action_space
        assert isinstance(space, spaces.Box)  # checked by __post_init__
        x = states.to(policy.device)
        if self.vec_normalize is not None and self.vec_normalize.norm_obs:
            x = self._normalized(x)
        policy.set_training_mode(False)
        actions = policy._predict(x, deterministic=True)
        low, high = (th.as_tensor(bound, device=actions.device) for bound in (space.low, space.high))
        actions = low + 0.5 * (actions + 1.0) * (high - low) if policy.squash_output else th.clamp(actions, low, high)
        return actions.to(states.device)

    def _normalized(self, x: th.Tensor) -> th.Tensor:
        """``VecNormalize.normalize_obs`` in torch: clip((x − mean)/√(var + ε), ±clip_obs), in float64, as float32."""
        env = self.vec_normalize
        assert env is not None and isinstance(env.obs_rms, RunningMeanStd)  # flat observations, VecNormalize given
        mean, var = (th.as_tensor(v, dtype=th.float64, device=x.device) for v in (env.obs_rms.mean, env.obs_rms.var))
        z = (x.double() - mean) / th.sqrt(var + env.epsilon)
        return th.clamp(z, -env.clip_obs, env.clip_obs).float()


class DyDiffCallback(BaseCallback):
    """DyDiff's rollout phases during SB3 training: every ``rollout_every`` environment steps, roll the current
    deterministic policy out in a fitted DyDiff generator from ``rollout_batch`` states of the replay buffer, add the
    transitions to a FIFO model buffer of ``buffer_size`` rows and install it as the buffer's synthetic set.

    :param generator: a fitted :class:`~dyaug.generators.PolicyRollout` (a :class:`~dyaug.dydiff.DyDiff`) or the path
        of a DyDiff (``DyDiff.save``), fitted on data of
        the same task (e.g. an offline dataset before fine-tuning online).
    :param rollout_every: environment steps between phases: a phase runs at the end of the first rollout (just
        before SB3's gradient steps) where ``num_timesteps`` passes a multiple of it.
    :param rollout_batch: start states per phase, drawn uniformly from the replay buffer's observations.
    :param buffer_size: rows the model buffer keeps (oldest dropped first).
    :param preset: where the three settings left ``None`` come from (:data:`~dyaug.dydiff.phases.PHASE_PRESETS`).
    :param real_ratio: when given, set as the buffer's share of real rows (DyDiff: 0.6); ``None`` keeps the
        buffer's own (``replay_buffer_kwargs=dict(real_ratio=...)``).
    :param seed: the phases' seed (start states, rollouts).
    :param env_id: the task for the simulator check (default: the generator's training task).
    :param device: where a generator given as a path is loaded (``"auto"``: CUDA when present).
    :param verbose: SB3's verbosity.

    The model must be built with ``replay_buffer_class=SyntheticReplayBuffer``; its batches are all real until the
    model buffer holds a batch's synthetic share. Synthetic rows follow SB3's units (the buffer scales the
    environment-unit actions to [-1, 1]; observations raw, normalised at sample time by ``VecNormalize``). Each
    phase is logged with ``self.logger.record`` under ``dydiff/`` (:meth:`PhaseReport.metrics`).
    """

    def __init__(
        self,
        generator: PolicyRollout | str | Path,
        rollout_every: int | None = None,
        rollout_batch: int | None = None,
        buffer_size: int | None = None,
        preset: str = "cpu",
        real_ratio: float | None = None,
        seed: int = 0,
        env_id: str | None = None,
        device: str | th.device = "auto",
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose=verbose)
        if isinstance(generator, str | Path):
            generator = DyDiff.load(generator, device=resolve_device(device))
        if not isinstance(generator, PolicyRollout):
            raise TypeError(
                "generator must be a fitted policy-rollout generator (dyaug.generators.PolicyRollout, e.g. a DyDiff) "
                f"or a DyDiff checkpoint path, got {generator!r:.80}."
            )
        if not is_fitted(generator):
            raise ValueError("the generator is not fitted; fit it on a dataset of the task first.")
        settings = resolve_phase_settings(
            preset, rollout_every=rollout_every, rollout_batch=rollout_batch, buffer_size=buffer_size
        )
        self.phases = RolloutPhases(generator, settings, seed=seed, env_id=env_id)
        self.real_ratio = real_ratio
        self._policy: SB3Policy | None = None
        self._last_multiple = 0  # of rollout_every, at the last phase

    @property
    def synthetic(self) -> TransitionFIFO:
        """The model buffer (``len()`` counts its transitions)."""
        return self.phases.fifo

    @property
    def reports(self) -> list[PhaseReport]:
        """One report per rollout phase run so far."""
        return self.phases.reports

    def _init_callback(self) -> None:
        buffer = synthetic_buffer_of("DyDiffCallback", self.model)
        generator = self.phases.generator
        sizes = (buffer.observation_space.shape[0], buffer.action_space.shape[0])
        if (generator.obs_dim, generator.act_dim) != sizes:
            raise ValueError(
                f"the generator was fitted on observations/actions of sizes {(generator.obs_dim, generator.act_dim)}, "
                f"the environment has {sizes}; fit it on data of this task."
            )
        if self.real_ratio is not None:
            buffer.real_ratio = self.real_ratio
        self._policy = SB3Policy(self.model.policy, self.model.get_vec_normalize_env())

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        multiple = self.num_timesteps // self.phases.settings.rollout_every
        if multiple > self._last_multiple and synthetic_buffer_of("DyDiffCallback", self.model).size() > 0:
            self._last_multiple = multiple
            self.rollout()

    def rollout(self) -> PhaseReport:
        """Run one phase now and install the model buffer as the synthetic set."""
        buffer = synthetic_buffer_of("DyDiffCallback", self.model)
        stored = buffer.buffer_size if buffer.full else buffer.pos
        pool = buffer.observations[:stored].reshape(-1, buffer.observation_space.shape[0])
        assert self._policy is not None  # set by _init_callback, with self.model
        report = self.phases.run(self._policy, pool, self.num_timesteps)
        buffer.set_synthetic(self.synthetic.transitions())
        for name, value in report.metrics().items():
            self.logger.record(f"dydiff/{name}", value)
        return report
