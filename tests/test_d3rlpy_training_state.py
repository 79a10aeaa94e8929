"""A d3rlpy training state saved mid-run and loaded into a fresh algorithm continues bit for bit: TD3PlusBC (its
delayed actor update needs the step count), IQL, Diffusion-QL (EMA, cosine schedule, sampling noise) and SRPO
(stopped inside its pretraining phase); batches drawn by SyntheticReplayBuffer from the global NumPy RNG."""

from __future__ import annotations

import random
from collections.abc import Callable

import d3rlpy
import numpy as np
import pytest
import torch
from d3rlpy.algos import QLearningAlgoBase
from d3rlpy.dataset import MDPDataset
from d3rlpy.logging import NoopAdapterFactory
from d3rlpy.preprocessing import StandardObservationScaler
from dyaug.integrations.d3rlpy import (
    DiffusionQLConfig,
    SRPOConfig,
    SyntheticReplayBuffer,
    load_training_state,
    save_training_state,
)

from dyaug.data import Transitions
from dyaug.persistence import save_checkpoint

tiny_tensors = True
OBS_DIM, ACT_DIM, N = 3, 2, 200
QUIET = {"show_progress": False, "logger_adapter": NoopAdapterFactory(), "save_interval": 10**9}


def _buffer() -> SyntheticReplayBuffer:
    """Episodes of 20 steps, mixed 50/50 with shifted copies of the rows as 'synthetic' ones."""
    rng = np.random.default_rng(0)
    ends = np.zeros(N, np.float32)
    ends[19::20] = 1.0
    observations = rng.normal(size=(N, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(N, ACT_DIM)).astype(np.float32)
    rewards = rng.normal(size=N).astype(np.float32)
    real = MDPDataset(observations=observations, actions=actions, rewards=rewards, terminals=ends)
    synthetic = Transitions(
        observations=observations + 0.5, actions=actions, rewards=rewards, next_observations=observations[::-1] + 0.5,
        terminals=ends, timeouts=np.zeros(N, np.float32), next_actions=actions[::-1],
    )  # fmt: skip
    return SyntheticReplayBuffer(real, synthetic, real_ratio=0.5)


def _small(config: type, roles: tuple[str, ...]) -> Callable[[], QLearningAlgoBase]:
    """A d3rlpy baseline with 16x16 networks (``roles``' encoders), standardised observations, batches of 32."""
    encoders = {f"{role}_encoder_factory": d3rlpy.models.VectorEncoderFactory([16, 16]) for role in roles}
    return lambda: config(batch_size=32, observation_scaler=StandardObservationScaler(), **encoders).create("cpu:0")


ALGOS: dict[str, Callable[[], QLearningAlgoBase]] = {
    "td3plusbc": _small(d3rlpy.algos.TD3PlusBCConfig, roles=("actor", "critic")),
    "iql": _small(d3rlpy.algos.IQLConfig, roles=("actor", "critic", "value")),
    "diffusion_ql": lambda: DiffusionQLConfig.from_preset(
        "tiny", batch_size=32, lr_decay_steps=90, observation_scaler=StandardObservationScaler()
    ).create(device="cpu:0"),
    "srpo": lambda: SRPOConfig.from_preset(
        "tiny", batch_size=32, behavior_batch_size=32, behavior_steps=50, critic_steps=40, actor_steps=40
    ).create(device="cpu:0"),
}


def _parameters(algo: QLearningAlgoBase) -> list[torch.Tensor]:
    return [p.detach().clone() for p in algo.impl.modules.create_checkpointer("cpu:0").modules.values()
            if isinstance(p, torch.nn.Module) for p in p.state_dict().values()]  # fmt: skip


@pytest.mark.parametrize("name", list(ALGOS))
def test_a_run_stopped_and_loaded_into_a_fresh_algorithm_continues_bit_for_bit(name: str, tmp_path) -> None:
    buffer, path, observations = _buffer(), tmp_path / "state.safetensors", np.zeros((4, OBS_DIM), np.float32)
    d3rlpy.seed(0)
    straight = ALGOS[name]()
    straight.fit(buffer, n_steps=30, n_steps_per_epoch=30, **QUIET)
    save_training_state(straight, path, curve=[[30, 1.5]])
    straight.fit(buffer, n_steps=60, n_steps_per_epoch=60, **QUIET)
    rngs_after = np.random.get_state()[1].copy(), torch.get_rng_state()

    d3rlpy.seed(1)  # another process: other initial weights, the global RNGs elsewhere
    np.random.seed(7), random.seed(7)
    resumed = ALGOS[name]()
    assert load_training_state(resumed, path, buffer) == {"curve": [[30, 1.5]]}
    assert resumed.grad_step == 30
    resumed.fit(buffer, n_steps=60, n_steps_per_epoch=60, **QUIET)

    assert resumed.grad_step == straight.grad_step == 90
    for ours, theirs in zip(_parameters(resumed), _parameters(straight), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    np.testing.assert_array_equal(np.random.get_state()[1], rngs_after[0])  # the same batches were drawn
    assert torch.equal(torch.get_rng_state(), rngs_after[1])
    actions = []
    for algo in (resumed, straight):
        torch.manual_seed(3)  # Diffusion-QL samples its actions
        actions.append(algo.predict(observations))
    np.testing.assert_array_equal(*actions)


def test_a_state_of_another_algorithm_or_configuration_is_refused(tmp_path) -> None:
    buffer, path = _buffer(), tmp_path / "state.safetensors"
    with pytest.raises(RuntimeError, match="no networks yet"):
        save_training_state(ALGOS["td3plusbc"](), path)
    algo = ALGOS["td3plusbc"]()
    algo.fit(buffer, n_steps=5, n_steps_per_epoch=5, **QUIET)
    save_training_state(algo, path)
    with pytest.raises(ValueError, match="training state of a TD3PlusBC, not of a IQL"):
        load_training_state(ALGOS["iql"](), path, buffer)
    algo.observation_scaler.mean[0] *= 1 + 1e-9  # scalers refitted by another CPU's kernels: the last bits differ
    save_training_state(algo, path)
    assert load_training_state(ALGOS["td3plusbc"](), path, buffer) == {}
    algo.observation_scaler.mean[0] *= 1 + 1e-3  # fitted on other data
    save_training_state(algo, path)
    with pytest.raises(ValueError, match="another configuration or dataset"):
        load_training_state(ALGOS["td3plusbc"](), path, buffer)
    other = d3rlpy.algos.TD3PlusBCConfig(batch_size=64, observation_scaler=StandardObservationScaler()).create()
    with pytest.raises(ValueError, match="another configuration or dataset"):
        load_training_state(other, path, buffer)
    save_checkpoint(tmp_path / "other.safetensors", {}, {"kind": "synther"})
    with pytest.raises(ValueError, match="'d3rlpy-training-state' checkpoint was expected"):
        load_training_state(ALGOS["td3plusbc"](), tmp_path / "other.safetensors", buffer)
