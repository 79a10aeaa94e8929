from __future__ import annotations

import numpy as np
import pytest

from dyaug.data import Transitions


def _transitions(n: int = 6, next_actions: bool = False) -> Transitions:
    rng = np.random.default_rng(0)
    terminals = np.zeros(n, np.float32)
    timeouts = np.zeros(n, np.float32)
    terminals[1] = 1.0
    timeouts[3] = 1.0
    return Transitions(
        observations=rng.normal(size=(n, 3)),
        actions=rng.normal(size=(n, 2)),
        rewards=rng.normal(size=n),
        next_observations=rng.normal(size=(n, 3)),
        terminals=terminals,
        timeouts=timeouts,
        next_actions=rng.normal(size=(n, 2)) if next_actions else None,
    )


def test_fields_are_float32_read_only_copies():
    obs = np.arange(12, dtype=np.float32).reshape(4, 3)
    t = Transitions(obs, np.zeros((4, 1)), np.zeros(4), obs + 1, np.zeros((4, 1)), np.ones(4))
    for name, value in t.as_dict().items():
        assert value is None or (value.dtype == np.float32 and not value.flags.writeable), name
    assert t.terminals.shape == (4,)  # (N, 1) flags are flattened
    obs[0, 0] = 99.0  # the caller's array is not aliased
    assert t.observations[0, 0] == 0.0
    assert (len(t), t.obs_dim, t.act_dim) == (4, 3, 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rewards": np.zeros((6, 2))}, r"rewards must have shape \(N,\)"),
        ({"actions": np.zeros((5, 2))}, "actions has 5 rows but observations has 6"),
        ({"next_observations": np.zeros((6, 4))}, "next_observations has dimension 4 but observations has 3"),
        ({"terminals": np.full(6, 0.5)}, "terminals must hold 0.0 or 1.0"),
        ({"rewards": np.r_[np.zeros(5), np.nan]}, r"NaN or Inf \(first at index \(5,\)\)"),
        ({"rewards": np.array(["a"] * 6)}, "pass a numeric array"),
        ({"timeouts": None}, "timeouts is None"),
        ({"next_actions": np.zeros((6, 3))}, "next_actions has dimension 3 but actions has 2"),
    ],
)
def test_construction_errors_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        _transitions().replace(**change)


def test_indexing_and_concatenate():
    t = _transitions(next_actions=True)
    np.testing.assert_array_equal(t[2].observations, t.observations[2:3])
    np.testing.assert_array_equal(t[-1].rewards, t.rewards[-1:])
    np.testing.assert_array_equal(t[1:4].actions, t.actions[1:4])
    mask = t.rewards > 0
    np.testing.assert_array_equal(t[mask].next_observations, t.next_observations[mask])
    np.testing.assert_array_equal(t[[5, 0]].next_actions, t.next_actions[[5, 0]])
    both = Transitions.concatenate([t[:2], t[2:]])
    for name, value in t.as_dict().items():
        np.testing.assert_array_equal(getattr(both, name), value)
    assert Transitions.concatenate([t, _transitions()]).next_actions is None
    with pytest.raises(ValueError, match="different"):
        Transitions.concatenate([t, t.replace(actions=np.zeros((6, 1)), next_actions=None)])


def test_episode_ends_and_slices_include_a_trailing_run():
    t = _transitions()  # terminal at 1, timeout at 3, rows 4-5 unfinished
    np.testing.assert_array_equal(t.episode_ends, [1, 3])
    assert t.episode_slices() == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert t[:4].episode_slices() == [slice(0, 2), slice(2, 4)]
