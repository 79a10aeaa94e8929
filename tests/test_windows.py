from __future__ import annotations

import numpy as np
import pytest

from dyaug.data import TrajectoryWindows, Transitions, make_windows


def _episodes(lengths: list[int], obs_dim: int = 2, act_dim: int = 1) -> Transitions:
    """Episodes whose row ``i`` holds the value ``i`` everywhere (so window content is checkable);
    the last episode terminates, the others time out."""
    n = sum(lengths)
    rows = np.arange(n, dtype=np.float32)
    ends = np.cumsum(lengths) - 1
    terminals = np.zeros(n, np.float32)
    timeouts = np.zeros(n, np.float32)
    timeouts[ends[:-1]] = 1.0
    terminals[ends[-1]] = 1.0
    return Transitions(
        observations=np.repeat(rows[:, None], obs_dim, axis=1),
        actions=np.repeat(rows[:, None], act_dim, axis=1) + 0.5,
        rewards=rows * 10,
        next_observations=np.repeat(rows[:, None] + 1, obs_dim, axis=1),
        terminals=terminals,
        timeouts=timeouts,
    )


def test_window_counts_starts_and_content_for_long_and_short_episodes():
    t = _episodes([7, 3, 5])
    w = make_windows(t, horizon=5)
    # lengths 7 -> 3 windows, 3 -> 1 padded window, 5 -> 1 window
    assert isinstance(w, TrajectoryWindows) and len(w) == 5 and w.horizon == 5
    np.testing.assert_array_equal(w.episode, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(w.start, [0, 1, 2, 0, 0])
    assert w.observations.shape == (5, 5, 2) and w.actions.shape == (5, 5, 1)
    assert w.rewards.shape == w.terminals.shape == w.mask.shape == (5, 5)
    expected_rows = np.array(
        [
            [0, 1, 2, 3, 4],
            [1, 2, 3, 4, 5],
            [2, 3, 4, 5, 6],
            [7, 8, 9, 9, 9],  # episode of 3 rows, padded by repeating its last row
            [10, 11, 12, 13, 14],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(w.observations[..., 0], expected_rows)
    np.testing.assert_array_equal(w.observations[..., 1], expected_rows)
    np.testing.assert_array_equal(w.actions[..., 0], expected_rows + 0.5)
    np.testing.assert_array_equal(w.rewards, expected_rows * 10)
    expected_mask = np.ones((5, 5), bool)
    expected_mask[3, 3:] = False
    np.testing.assert_array_equal(w.mask, expected_mask)
    # the terminal flag sits on the last row of the last episode
    np.testing.assert_array_equal(w.terminals[4], [0, 0, 0, 0, 1])
    assert w.terminals[:4].sum() == 0


def test_stride_and_exact_fit():
    t = _episodes([10, 4])
    w = make_windows(t, horizon=4, stride=3)
    # L=10, H=4: starts 0, 3, 6 (6 = L - H fits); L=4: exactly one window, no padding
    np.testing.assert_array_equal(w.episode, [0, 0, 0, 1])
    np.testing.assert_array_equal(w.start, [0, 3, 6, 0])
    assert w.mask.all()
    np.testing.assert_array_equal(w.observations[:, 0, 0], [0, 3, 6, 10])
    w2 = make_windows(t, horizon=4, stride=4)  # starts 0, 4 (8 > L - H = 6 is left out)
    np.testing.assert_array_equal(w2.start, [0, 4, 0])


def test_counts_match_formula_on_many_episodes():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=60).tolist()
    t = _episodes(lengths)
    for horizon, stride in [(1, 1), (8, 1), (8, 5), (64, 2)]:
        w = make_windows(t, horizon, stride)
        lengths_arr = np.array(lengths)
        expected = np.where(lengths_arr >= horizon, (lengths_arr - horizon) // stride + 1, 1)
        np.testing.assert_array_equal(np.bincount(w.episode, minlength=len(lengths)), expected)
        np.testing.assert_array_equal(w.mask.sum(1), np.minimum(lengths_arr[w.episode], horizon))
        # every real row is the episode row start + j
        offsets = np.concatenate([[0], np.cumsum(lengths_arr)[:-1]])
        rows = offsets[w.episode][:, None] + w.start[:, None] + np.arange(horizon)
        np.testing.assert_array_equal(w.observations[..., 0][w.mask], rows[w.mask])


def test_states_actions_stacks_rows():
    w = make_windows(_episodes([6], obs_dim=3, act_dim=2), horizon=4)
    sa = w.states_actions()
    assert sa.shape == (3, 4, 5) and sa.dtype == np.float32
    np.testing.assert_array_equal(sa[..., :3], w.observations)
    np.testing.assert_array_equal(sa[..., 3:], w.actions)


def test_invalid_arguments_raise():
    t = _episodes([5])
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        make_windows(t, horizon=0)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        make_windows(t, horizon=2, stride=1.5)
    with pytest.raises(ValueError, match="empty Transitions"):
        make_windows(t[0:0], horizon=2)
    with pytest.raises(TypeError, match="needs a Transitions"):
        make_windows({"observations": 1}, horizon=2)
