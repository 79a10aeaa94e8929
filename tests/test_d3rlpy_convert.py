from __future__ import annotations

import io
import warnings

import d3rlpy
import numpy as np
import pytest
from d3rlpy.dataset import BasicTransitionPicker, Episode, InfiniteBuffer, MDPDataset, ReplayBuffer
from d3rlpy.logging import NoopAdapterFactory
from dyaug.integrations.d3rlpy.convert import (
    EpisodeWithFinalObservation,
    transitions_from_d3rlpy,
    transitions_to_d3rlpy,
)

from dyaug.data import Transitions

OBS_DIM, ACT_DIM = 4, 2


def _episodes(lengths: list[int], terminated: list[bool], seed: int = 0) -> Transitions:
    """Random-walk episodes with a' = a_{t+1} inside an episode and zero at its end."""
    rng = np.random.default_rng(seed)
    parts = []
    for length, ends_in_terminal in zip(lengths, terminated, strict=True):
        states = np.cumsum(rng.normal(size=(length + 1, OBS_DIM)), axis=0).astype(np.float32)
        actions = rng.uniform(-1, 1, size=(length, ACT_DIM)).astype(np.float32)
        end = np.zeros(length, np.float32)
        end[-1] = 1.0
        parts.append(
            Transitions(
                observations=states[:-1],
                actions=actions,
                rewards=rng.normal(size=length),
                next_observations=states[1:],
                terminals=end if ends_in_terminal else np.zeros(length),
                timeouts=np.zeros(length) if ends_in_terminal else end,
                next_actions=np.concatenate([actions[1:], np.zeros((1, ACT_DIM), np.float32)]),
            )
        )
    return Transitions.concatenate(parts)


def _assert_same(a: Transitions, b: Transitions, fields: tuple[str, ...] | None = None) -> None:
    for name in fields or tuple(a.as_dict()):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_round_trip_is_exact_including_terminal_next_observations():
    t = _episodes([5, 1, 8, 3, 2], [True, True, False, True, False])
    buffer = transitions_to_d3rlpy(t)
    assert isinstance(buffer, ReplayBuffer) and buffer.transition_count == len(t) and buffer.size() == 5
    assert all(isinstance(e, EpisodeWithFinalObservation) for e in buffer.episodes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the true s' is there: no warning
        back = Transitions.from_d3rlpy(buffer)
    _assert_same(back, t)
    assert back.next_observations[t.terminals > 0].any()  # real s', not d3rlpy's zeros


def test_basic_transition_picker_returns_the_data():
    t = _episodes([4, 6, 3], [False, True, True])
    buffer = t.to_d3rlpy()
    picker = BasicTransitionPicker()
    for row in range(buffer.transition_count):
        episode, index = buffer.buffer[row]
        picked = picker(episode, index)
        terminal = t.terminals[row] > 0
        np.testing.assert_array_equal(picked.observation, t.observations[row])
        np.testing.assert_array_equal(picked.action, t.actions[row])
        np.testing.assert_array_equal(picked.reward, t.rewards[row : row + 1])
        np.testing.assert_array_equal(picked.next_action, t.next_actions[row])
        assert picked.terminal == float(terminal)
        # d3rlpy's convention: zeros as s' at terminal steps
        expected_next = np.zeros(OBS_DIM, np.float32) if terminal else t.next_observations[row]
        np.testing.assert_array_equal(picked.next_observation, expected_next)
    batch = buffer.sample_transition_batch(8)
    assert batch.observations.shape == (8, OBS_DIM) and batch.next_actions.shape == (8, ACT_DIM)


def test_unordered_transitions_become_one_step_episodes():
    t = _episodes([6, 5], [True, False])
    reversed_rows = t[::-1]
    buffer = transitions_to_d3rlpy(reversed_rows.replace(next_actions=None))
    assert buffer.size() == len(t) and buffer.transition_count == len(t)
    back = transitions_from_d3rlpy(buffer)
    _assert_same(back, reversed_rows, ("observations", "actions", "rewards", "next_observations", "terminals"))
    np.testing.assert_array_equal(back.timeouts, 1.0 - reversed_rows.terminals)  # every episode ends with a flag
    np.testing.assert_array_equal(back.next_actions, np.zeros_like(t.actions))  # padding without next_actions


def test_flat_mdp_dataset_is_aligned_per_episode_and_warns_once():
    lengths, terminated = [5, 7, 4, 6], [True, False, True, False]
    t = _episodes(lengths, terminated, seed=3)
    dataset = MDPDataset(
        observations=t.observations,
        actions=t.actions,
        rewards=t.rewards,
        terminals=t.terminals,
        timeouts=t.timeouts,
    )
    with pytest.warns(UserWarning, match="2 terminal transitions .* no stored s'") as record:
        back = transitions_from_d3rlpy(dataset)
    assert len(record) == 1
    # d3rlpy keeps every step of a terminated episode, and all but the last of a timeout episode
    keep = np.ones(len(t), bool)
    ends = np.cumsum(lengths) - 1
    keep[ends[~np.array(terminated)]] = False
    expected = t[keep]
    _assert_same(back, expected, ("observations", "actions", "rewards", "terminals"))
    terminal_rows = expected.terminals > 0
    np.testing.assert_array_equal(back.next_observations[~terminal_rows], expected.next_observations[~terminal_rows])
    np.testing.assert_array_equal(back.next_observations[terminal_rows], 0.0)
    # the new last step of each timeout episode is flagged; its a' is the dropped step's real action
    np.testing.assert_array_equal(back.episode_ends, np.cumsum([5, 6, 4, 5]) - 1)
    np.testing.assert_array_equal(
        back.timeouts, ((expected.terminals == 0) & np.isin(np.arange(len(back)), back.episode_ends))
    )
    np.testing.assert_array_equal(back.next_actions[back.timeouts > 0], t.actions[ends[~np.array(terminated)]])


def test_dump_and_load_keep_the_final_observation_only_with_our_episode_class():
    t = _episodes([3, 4], [True, True])
    stream = io.BytesIO()
    transitions_to_d3rlpy(t).dump(stream)
    stream.seek(0)
    loaded = ReplayBuffer.load(stream, InfiniteBuffer(), episode_cls=EpisodeWithFinalObservation)
    _assert_same(transitions_from_d3rlpy(loaded), t)
    stream.seek(0)
    plain = ReplayBuffer.load(stream, InfiniteBuffer(), episode_cls=Episode)  # d3rlpy's default drops it
    with pytest.warns(UserWarning, match="2 terminal transitions"):
        back = transitions_from_d3rlpy(plain)
    np.testing.assert_array_equal(back.next_observations[t.terminals > 0], 0.0)


def test_fifo_buffer_keeps_only_the_newest_transitions():
    t = _episodes([5, 5, 5], [False, True, False])
    limit = 8
    buffer = d3rlpy.dataset.create_fifo_replay_buffer(limit=limit, episodes=transitions_to_d3rlpy(t).episodes)
    back = transitions_from_d3rlpy(buffer)
    _assert_same(back, t[len(t) - limit :])
    # steps appended online form an unfinished episode, flagged as a timeout where the data stops
    for step in range(3):
        buffer.append(t.observations[step], t.actions[step], t.rewards[step])
    online = transitions_from_d3rlpy(buffer)
    assert len(online) == limit and online.timeouts[-1] == 1.0
    np.testing.assert_array_equal(online.observations[-2:], t.observations[:2])


def test_to_d3rlpy_trains_td3_plus_bc():
    t = _episodes([20, 15, 25], [True, False, True])
    algo = d3rlpy.algos.TD3PlusBCConfig(batch_size=16).create("cpu:0")
    results = algo.fit(
        t.to_d3rlpy(),
        n_steps=4,
        n_steps_per_epoch=2,
        show_progress=False,
        logger_adapter=NoopAdapterFactory(),
    )
    assert [epoch for epoch, _ in results] == [1, 2]
    assert np.isfinite(results[-1][1]["critic_loss"])
    assert algo.predict(t.observations[:3]).shape == (3, ACT_DIM)


def test_integer_looking_actions_stay_continuous_and_bad_requests_raise():
    t = _episodes([3], [False])
    integer_actions = t.replace(actions=np.sign(t.actions), next_actions=None)
    assert integer_actions.to_d3rlpy().dataset_info.action_space == d3rlpy.ActionSpace.CONTINUOUS
    with pytest.raises(ValueError, match="fifo_limit=2 is smaller than the 3 transitions"):
        transitions_to_d3rlpy(t, fifo_limit=2)
    import gymnasium as gym

    with pytest.raises(ValueError, match=r"env observation space .* size 4"):
        transitions_to_d3rlpy(t, env=gym.make("Pendulum-v1"))
    with pytest.raises(TypeError, match="needs a d3rlpy ReplayBuffer"):
        transitions_from_d3rlpy(t)
    discrete = MDPDataset(
        observations=np.zeros((3, 2), np.float32), actions=np.array([0, 1, 1]), rewards=np.zeros(3),
        terminals=np.array([0, 0, 1.0]),
    )  # fmt: skip
    with pytest.raises(ValueError, match="discrete action space"):
        transitions_from_d3rlpy(discrete)
