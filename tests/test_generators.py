"""A new generator plugs into every integration without touching them: a toy generator defined here, written
against ``dyaug.generators`` only, runs through d3rlpy's DyDiffAugmenter and synthetic buffer, and SB3's
DyDiffCallback, SynthERCallback and synthetic buffer."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import d3rlpy
import gymnasium as gym
import numpy as np
import structlog
import torch
from d3rlpy.logging import NoopAdapterFactory
from d3rlpy.preprocessing import StandardObservationScaler
from dyaug.integrations.d3rlpy import DyDiffAugmenter, SyntheticReplayBuffer, transitions_to_d3rlpy
from dyaug.integrations.sb3 import DyDiffCallback, SynthERCallback
from dyaug.integrations.sb3 import SyntheticReplayBuffer as SB3SyntheticBuffer
from stable_baselines3 import SAC

from dyaug import Transitions
from dyaug.data.coerce import mix_synthetic, to_transitions
from dyaug.dydiff.generator import RolloutStats
from dyaug.generators import GeneratorBase, PolicyRollout, TransitionSampler
from dyaug.persistence import load_checkpoint, save_checkpoint

tiny_tensors = True
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
MARK = 1000.0  # rewards of the toy's rows, so batches tell them from real ones


class ToyConfig:
    def to_dict(self) -> dict[str, Any]:
        return {}


class StayPut(GeneratorBase):
    """A toy generator: ``sample`` draws real states and actions and says nothing happens (s' = s, r = MARK);
    ``rollout`` labels each start state with the policy's action, one step each."""

    def __init__(self, seed: int = 0, device: str = "cpu") -> None:
        super().__init__(ToyConfig(), "toy", device, seed)
        self.last_rollout_stats: RolloutStats | None = None

    def fit(self, data: Any, **options: Any) -> StayPut:
        t = to_transitions(data)
        self._installed(_Fitted(t, {"obs_dim": t.obs_dim, "act_dim": t.act_dim, "env_id": options.get("env_id")}))
        return self

    def sample(self, n: int, *, seed: int | None = None, progress: bool = True) -> Transitions:
        rows = np.random.default_rng(self._call_seed(seed)).integers(len(self.model.data), size=n)
        return _stay(self.model.data.observations[rows], self.model.data.actions[rows])

    def rollout(self, policy: Any, start_states: Any, *, seed: int | None = None) -> Transitions:
        start = time.perf_counter()
        states = torch.as_tensor(np.asarray(start_states, np.float32))
        with torch.no_grad():
            actions = policy(states).cpu().numpy()
        out = _stay(states.numpy(), actions)
        n = len(out)
        self.last_rollout_stats = RolloutStats(
            n, n, n, 0, np.full(n, MARK), np.arange(n), time.perf_counter() - start
        )  # fmt: skip
        return out

    def save(self, path: str | Path) -> Path:
        data = {k: torch.from_numpy(np.array(v)) for k, v in self.model.data.as_dict().items() if v is not None}
        return save_checkpoint(path, data, {"kind": "stay-put", "seed": self.seed, **self.model.training_data})

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> StayPut:
        tensors, meta = load_checkpoint(path, kind="stay-put")
        return cls(meta["seed"], device).fit(Transitions(**{k: v.numpy() for k, v in tensors.items()}))


class _Fitted:
    def __init__(self, data: Transitions, training_data: dict[str, Any]) -> None:
        self.data, self.training_data = data, training_data


def _stay(observations: np.ndarray, actions: np.ndarray) -> Transitions:
    n = len(observations)
    return Transitions(observations, actions, np.full(n, MARK), observations, np.zeros(n), np.ones(n))


def _pendulum(n: int = 200) -> Transitions:
    env, rng = gym.make("Pendulum-v1"), np.random.default_rng(0)
    rows, (obs, _) = [], env.reset(seed=0)
    for i in range(n):
        action = rng.uniform(-2.0, 2.0, size=1).astype(np.float32)
        nxt, reward, *_ = env.step(action)
        rows.append((obs, action, reward, nxt, 0.0, float((i + 1) % 50 == 0)))
        obs = nxt if (i + 1) % 50 else env.reset(seed=i)[0]
    return Transitions(*(np.array(c, dtype=np.float32) for c in zip(*rows, strict=True)))


def test_the_toy_satisfies_the_protocols() -> None:
    toy = StayPut()
    assert isinstance(toy, PolicyRollout) and isinstance(toy, TransitionSampler)
    assert not toy.fitted and toy.obs_dim is None  # sizes are known once fitted
    toy.fit(_pendulum())
    assert toy.fitted and (toy.obs_dim, toy.act_dim) == (3, 1)


def test_d3rlpy_augmenter_and_synthetic_buffer_run_the_toy(tmp_path: Path) -> None:
    real = _pendulum()
    toy = StayPut().fit(real, env_id="Pendulum-v1")
    config = d3rlpy.algos.TD3PlusBCConfig(batch_size=16, observation_scaler=StandardObservationScaler())
    augmenter = DyDiffAugmenter(config, generator=toy, preset="tiny", device="cpu", rollout_batch=8)
    augmenter.fit(real, n_steps=20, n_steps_per_epoch=10, show_progress=False, logger_adapter=NoopAdapterFactory())
    assert [r.step for r in augmenter.reports] == [0, 10] and len(augmenter.synthetic) == 16  # phases before steps
    assert (augmenter.synthetic.transitions().rewards == MARK).all()
    again = DyDiffAugmenter.load(augmenter.save(tmp_path / "aug"), device="cpu")
    assert isinstance(again.generator, StayPut) and again.steps_done == 20
    buffer = mix_synthetic(transitions_to_d3rlpy(real), toy.sample(50), real_ratio=0.5)
    assert isinstance(buffer, SyntheticReplayBuffer)
    np.random.seed(0)
    assert (buffer.sample_transition_batch(32).rewards[16:] == MARK).all()


def test_sb3_callbacks_and_synthetic_buffer_run_the_toy() -> None:
    env = gym.make("Pendulum-v1")
    model = SAC(
        "MlpPolicy", env, learning_starts=20, batch_size=16, seed=0, replay_buffer_class=SB3SyntheticBuffer,
        policy_kwargs={"net_arch": [16]},
    )  # fmt: skip
    refits = SynthERCallback(retrain_every=40, n_samples=64, generator=lambda seed: StayPut(seed))
    model.learn(80, callback=refits)
    buffer = model.replay_buffer
    assert refits.retrained_at == [40, 80] and buffer.synthetic_size == 64
    assert (buffer.sample(32).rewards[16:] == MARK).all()  # half of each batch from the toy's samples
    toy = StayPut().fit(_pendulum(), env_id="Pendulum-v1")
    phases = DyDiffCallback(toy, rollout_every=25, rollout_batch=4, preset="tiny", real_ratio=0.6)
    model.learn(50, callback=phases, reset_num_timesteps=False)
    assert phases.reports and buffer.synthetic_size == 4 * len(phases.reports)
    assert (phases.synthetic.transitions().rewards == MARK).all()
