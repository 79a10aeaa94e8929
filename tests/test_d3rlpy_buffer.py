from __future__ import annotations

import hashlib
import time
import warnings

import d3rlpy
import numpy as np
import pytest
from d3rlpy.dataset import BasicTransitionPicker, FrameStackTransitionPicker, InfiniteBuffer, MDPDataset, ReplayBuffer
from d3rlpy.logging import NoopAdapterFactory
from d3rlpy.models import VectorEncoderFactory
from d3rlpy.preprocessing import MinMaxActionScaler, StandardObservationScaler, StandardRewardScaler
from dyaug.integrations.d3rlpy import SyntheticReplayBuffer, transitions_to_d3rlpy

from dyaug import SynthER
from dyaug.data import Transitions

tiny_tensors = True
OBS_DIM, ACT_DIM = 4, 2
SENTINEL = 1000.0  # synthetic observations live far from the real ones, so rows can be told apart


def _real_arrays(n_episodes: int = 6, length: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random-walk episodes, alternately ending in a terminal and a timeout (unique observations)."""
    rng = np.random.default_rng(seed)
    n = n_episodes * length
    ends = np.zeros(n, np.float32)
    ends[length - 1 :: length] = 1.0
    terminal_episode = np.arange(n) // length % 2 == 0
    return {
        "observations": np.cumsum(rng.normal(size=(n, OBS_DIM)), axis=0).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": ends * terminal_episode,
        "timeouts": ends * ~terminal_episode,
    }


def _mdp_dataset(**kwargs) -> MDPDataset:
    return MDPDataset(**_real_arrays(**kwargs))


def _synthetic(n: int = 50, *, with_next_actions: bool = True, seed: int = 1) -> Transitions:
    rng = np.random.default_rng(seed)
    terminals = (np.arange(n) % 5 == 0).astype(np.float32)
    return Transitions(
        observations=SENTINEL + rng.normal(size=(n, OBS_DIM)),
        actions=rng.uniform(-1, 1, size=(n, ACT_DIM)),
        rewards=rng.normal(size=n),
        next_observations=SENTINEL + rng.normal(size=(n, OBS_DIM)),
        terminals=terminals,
        timeouts=(np.arange(n) % 5 == 1).astype(np.float32),
        next_actions=rng.uniform(-1, 1, size=(n, ACT_DIM)) if with_next_actions else None,
    )


def _rows(batch) -> np.ndarray:
    fields = (batch.observations, batch.actions, batch.rewards, batch.next_observations, batch.next_actions)
    return np.concatenate([*fields, batch.terminals], axis=1)


def _episodes_hash(buffer: ReplayBuffer) -> str:
    digest = hashlib.sha256()
    for episode in buffer.episodes:
        for array in (episode.observations, episode.actions, episode.rewards):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(bytes([episode.terminated]))
    digest.update(str(buffer.transition_count).encode())
    return digest.hexdigest()


def _fit(config, buffer: SyntheticReplayBuffer, n_steps: int, n_steps_per_epoch: int) -> list:
    return config.create("cpu:0").fit(
        buffer,
        n_steps=n_steps,
        n_steps_per_epoch=n_steps_per_epoch,
        show_progress=False,
        logger_adapter=NoopAdapterFactory(),
    )


def _tiny_encoders(**kwargs) -> dict:
    encoder = VectorEncoderFactory(hidden_units=[16])
    return {"batch_size": 16, "actor_encoder_factory": encoder, "critic_encoder_factory": encoder, **kwargs}


def _with_final_observations() -> ReplayBuffer:
    """The same episodes with a non-zero s' stored at terminal steps (batches must still show zeros there)."""
    with pytest.warns(UserWarning, match="have no stored s'"):
        terminal_zeros = Transitions.from_d3rlpy(_mdp_dataset())
    true_next = np.roll(terminal_zeros.observations, -1, axis=0)
    terminal = terminal_zeros.terminals[:, None] > 0
    buffer = transitions_to_d3rlpy(
        terminal_zeros.replace(next_observations=np.where(terminal, true_next, terminal_zeros.next_observations))
    )
    assert all(e.final_observation.any() for e in buffer.episodes if e.terminated)
    return buffer


@pytest.mark.parametrize("make_real", [_mdp_dataset, _with_final_observations])
def test_real_rows_are_what_the_basic_transition_picker_returns(make_real):
    real = make_real()
    picker = BasicTransitionPicker()
    expected = {}
    for row in range(real.transition_count):
        t = picker(*real.buffer[row])
        fields = (t.observation, t.action, t.reward, t.next_observation, t.next_action, [t.terminal])
        expected[t.observation.tobytes()] = np.concatenate(fields).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # wrapping a d3rlpy buffer warns about nothing
        buffer = SyntheticReplayBuffer(real, _synthetic(), real_ratio=1.0)
    np.random.seed(0)
    rows = _rows(buffer.sample_transition_batch(4000))
    for row in rows:
        np.testing.assert_array_equal(row, expected[row[:OBS_DIM].tobytes()])
    assert len({row[:OBS_DIM].tobytes() for row in rows}) == real.transition_count  # every row reachable
    terminal = rows[:, -1] == 1
    assert terminal.sum() > 0 and not rows[terminal, -1 - ACT_DIM - OBS_DIM : -1].any()  # s', a' = 0 there


@pytest.mark.parametrize("real_ratio", [0.0, 0.25, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_batch_composition_is_exact(real_ratio, batch_size):
    buffer = SyntheticReplayBuffer(_mdp_dataset(), _synthetic(), real_ratio=real_ratio)
    batch = buffer.sample_transition_batch(batch_size)
    synthetic_rows = batch.observations[:, 0] > SENTINEL / 2
    n_real = int(np.floor(real_ratio * batch_size + 0.5))
    assert len(batch) == batch_size and batch.observations.dtype == np.float32
    assert synthetic_rows.tolist() == [False] * n_real + [True] * (batch_size - n_real)  # real rows first
    assert batch.intervals.shape == (batch_size, 1) and (batch.intervals == 1).all()


def test_synthetic_rows_are_the_given_transitions_with_terminals_only():
    synthetic = _synthetic(n=20)
    buffer = SyntheticReplayBuffer(_mdp_dataset(), synthetic, real_ratio=0.0)
    rows = _rows(buffer.sample_transition_batch(1000))
    table = np.concatenate(
        [
            synthetic.observations,
            synthetic.actions,
            synthetic.rewards[:, None],
            synthetic.next_observations,
            synthetic.next_actions,
            synthetic.terminals[:, None],  # timeouts do not end bootstrapping
        ],
        axis=1,
    )
    matches = (rows[:, None, :] == table[None, :, :]).all(axis=2)
    assert (matches.sum(axis=1) == 1).all() and matches.any(axis=0).all()
    assert buffer.synthetic is synthetic


def test_missing_synthetic_next_actions_are_zeros_with_one_warning():
    with pytest.warns(UserWarning, match="no next_actions") as record:
        buffer = SyntheticReplayBuffer(_mdp_dataset(), _synthetic(with_next_actions=False), real_ratio=0.5)
        buffer.set_synthetic(_synthetic(with_next_actions=False, seed=2))
    assert len(record) == 1 and record[0].filename == __file__  # once, pointing at the caller
    batch = buffer.sample_transition_batch(200)
    synthetic_rows = batch.observations[:, 0] > SENTINEL / 2
    assert not batch.next_actions[synthetic_rows].any()
    assert batch.next_actions[~synthetic_rows].any()  # real rows keep a' = a_{t+1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real only: no synthetic row is ever drawn, nothing to warn about
        SyntheticReplayBuffer(_mdp_dataset(), _synthetic(with_next_actions=False), real_ratio=1.0)


def test_set_synthetic_replaces_the_set():
    buffer = SyntheticReplayBuffer(_mdp_dataset(), _synthetic(n=50), real_ratio=0.0)
    real_count = 6 * 10 - 3  # MDPDataset keeps K - 1 transitions of a K-step timeout episode
    assert len(buffer) == real_count + 50 and buffer.transition_count == real_count
    replacement = _synthetic(n=3).replace(observations=np.full((3, OBS_DIM), -SENTINEL, np.float32))
    buffer.set_synthetic(replacement)
    assert len(buffer) == real_count + 3
    assert (buffer.sample_transition_batch(64).observations == -SENTINEL).all()


def test_same_seed_gives_the_same_batches():
    buffer = SyntheticReplayBuffer(_mdp_dataset(), _synthetic(), real_ratio=0.5)
    batches = []
    for seed in (3, 3, 4):
        d3rlpy.seed(seed)
        batches.append(_rows(buffer.sample_transition_batch(32)))
    np.testing.assert_array_equal(batches[0], batches[1])
    assert not np.array_equal(batches[0], batches[2])


def test_real_buffer_structure_is_delegated():
    real = _mdp_dataset()
    buffer = SyntheticReplayBuffer(real, _synthetic(), real_ratio=0.5)
    assert buffer.dataset_info is real.dataset_info and buffer.episodes is real.episodes
    assert buffer.buffer is real.buffer and buffer.size() == real.size() == 6
    assert buffer.transition_picker is real.transition_picker
    assert buffer.trajectory_slicer is real.trajectory_slicer
    assert buffer.sample_transition().observation[0] < SENTINEL / 2
    assert buffer.real_buffer is real


def test_size_mismatch_and_bad_arguments_raise_named_errors():
    real = _mdp_dataset()
    wrong_obs = Transitions(
        **{**_synthetic().as_dict(), "observations": np.zeros((50, 5)), "next_observations": np.zeros((50, 5))}
    )
    with pytest.raises(ValueError, match=r"observation size 5 and action size 2, but .* have 4 and 2"):
        SyntheticReplayBuffer(real, wrong_obs)
    wrong_act = _synthetic().replace(actions=np.zeros((50, 3)), next_actions=None)
    with pytest.raises(ValueError, match=r"action size 3, but the buffer's real data have 4 and 2"):
        SyntheticReplayBuffer(real, wrong_act)
    with pytest.raises(ValueError, match="real_ratio must lie in"):
        SyntheticReplayBuffer(real, _synthetic(), real_ratio=1.5)
    with pytest.raises(TypeError, match="real_ratio must be a number"):
        SyntheticReplayBuffer(real, _synthetic(), real_ratio="half")
    with pytest.raises(TypeError, match="must be a dyaug Transitions"):
        SyntheticReplayBuffer(real, _real_arrays())
    with pytest.raises(ValueError, match="hold no rows"):
        SyntheticReplayBuffer(real, _synthetic()[:0])
    buffer = SyntheticReplayBuffer(real, _synthetic())
    with pytest.raises(TypeError, match="already a SyntheticReplayBuffer"):
        SyntheticReplayBuffer(buffer, _synthetic())
    stacked = ReplayBuffer(InfiniteBuffer(), episodes=real.episodes, transition_picker=FrameStackTransitionPicker(2))
    with pytest.raises(ValueError, match="FrameStackTransitionPicker"):
        SyntheticReplayBuffer(stacked, _synthetic())
    with pytest.raises(ValueError, match="real_ratio must lie in"):
        buffer.real_ratio = -0.1


def test_unsupported_operations_raise_not_implemented():
    buffer = SyntheticReplayBuffer(_mdp_dataset(), _synthetic())
    real = _mdp_dataset()
    for call in (
        lambda: buffer.append(np.zeros(OBS_DIM), np.zeros(ACT_DIM), 0.0),
        lambda: buffer.append_episode(real.episodes[0]),
        lambda: buffer.clip_episode(True),
        lambda: buffer.sample_trajectory_batch(4, 3),
        lambda: buffer.dump(None),
        lambda: SyntheticReplayBuffer.load(None, InfiniteBuffer()),
        lambda: list(buffer.sample_transition_batch(4).transitions),  # no returns-to-go (CalQL)
    ):
        with pytest.raises(NotImplementedError):
            call()


def test_td3_plus_bc_fits_with_scalers_from_real_data_only_and_leaves_the_real_buffer_unchanged():
    real = _mdp_dataset()
    before = _episodes_hash(real)
    buffer = SyntheticReplayBuffer(real, _synthetic(), real_ratio=0.25)
    config = d3rlpy.algos.TD3PlusBCConfig(
        **_tiny_encoders(),
        observation_scaler=StandardObservationScaler(),
        action_scaler=MinMaxActionScaler(),
        reward_scaler=StandardRewardScaler(),
    )
    algo = config.create("cpu:0")
    results = algo.fit(
        buffer, n_steps=200, n_steps_per_epoch=100, show_progress=False, logger_adapter=NoopAdapterFactory()
    )
    assert [epoch for epoch, _ in results] == [1, 2]
    assert all(np.isfinite(metrics["critic_loss"]) for _, metrics in results)
    assert _episodes_hash(real) == before
    arrays = _real_arrays()
    kept = arrays["timeouts"] == 0  # MDPDataset keeps no transition for the last step of a timeout episode
    observations, actions, rewards = (arrays[k][kept] for k in ("observations", "actions", "rewards"))
    np.testing.assert_allclose(algo.observation_scaler.mean, observations.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(algo.observation_scaler.std, observations.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(algo.action_scaler.minimum, actions.min(axis=0))
    np.testing.assert_allclose(algo.action_scaler.maximum, actions.max(axis=0))
    np.testing.assert_allclose(algo.reward_scaler.mean, rewards.mean(), rtol=1e-5)
    assert algo.predict(_real_arrays()["observations"][:3]).shape == (3, ACT_DIM)


def test_iql_and_rebrac_fit():
    buffer = SyntheticReplayBuffer(_mdp_dataset(), _synthetic(), real_ratio=0.5)
    iql = _fit(
        d3rlpy.algos.IQLConfig(**_tiny_encoders(value_encoder_factory=VectorEncoderFactory([16]))),
        buffer,
        n_steps=200,
        n_steps_per_epoch=100,
    )
    rebrac = _fit(d3rlpy.algos.ReBRACConfig(**_tiny_encoders()), buffer, n_steps=10, n_steps_per_epoch=10)
    for results in (iql, rebrac):
        assert all(np.isfinite(value) for _, metrics in results for value in metrics.values())
    assert [epoch for epoch, _ in iql] == [1, 2] and [epoch for epoch, _ in rebrac] == [1]


def test_sampling_is_much_faster_than_d3rlpys_own_buffer():
    real = _mdp_dataset(n_episodes=20, length=100)
    buffer = SyntheticReplayBuffer(real, _synthetic(n=2000), real_ratio=0.5)

    def best_of(sample, repeats: int = 15) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sample(256)
            times.append(time.perf_counter() - start)
        return min(times)

    ours, native = best_of(buffer.sample_transition_batch), best_of(real.sample_transition_batch)
    assert native / ours > 3.0, f"ours {ours * 1e3:.3f} ms vs d3rlpy {native * 1e3:.3f} ms per batch of 256"


def test_synther_augment_gives_a_synthetic_only_buffer_that_td3_plus_bc_trains_on():
    real = _with_final_observations()
    generator = SynthER(preset="tiny", seed=0).fit(real, progress=False)
    with pytest.warns(UserWarning, match="no next_actions"):  # SynthER models (s, a, r, s', terminal) only
        buffer = generator.augment(real, 300, real_ratio=0.0, progress=False)
    assert isinstance(buffer, SyntheticReplayBuffer) and buffer.real_ratio == 0.0 and len(buffer.synthetic) == 300
    batch = buffer.sample_transition_batch(64)
    real_observations = Transitions.from_d3rlpy(real).observations
    is_real = (batch.observations[:, None, :] == real_observations[None]).all(axis=2).any(axis=1)
    assert not is_real.any()  # the paper's offline mode: synthetic rows only
    results = _fit(d3rlpy.algos.TD3PlusBCConfig(**_tiny_encoders()), buffer, n_steps=20, n_steps_per_epoch=10)
    assert [epoch for epoch, _ in results] == [1, 2]
