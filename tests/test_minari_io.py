from __future__ import annotations

import json
import warnings

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from dyaug.data import Transitions
from dyaug.data.minari_io import transitions_from_minari, transitions_to_minari

_WRITER = {"author_email": "dyaug@example.org", "code_permalink": "https://example.org/dyaug"}


@pytest.fixture(autouse=True)
def _private_minari_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def _hopper_episodes(n_episodes: int = 6) -> list[dict[str, np.ndarray]]:
    """Random-action Hopper-v5 episodes, truncated after 30 steps (seeds 0-5 give 3 of each kind)."""
    env = gym.make("Hopper-v5", max_episode_steps=30)
    env.action_space.seed(0)
    episodes = []
    for seed in range(n_episodes):
        obs, _ = env.reset(seed=seed)
        steps = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
        done = False
        while not done:
            action = env.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(
                ("observations", "actions", "rewards", "terminations", "truncations"),
                (obs, action, reward, terminated, truncated),
                strict=True,
            ):
                steps[key].append(value)
            done = terminated or truncated
        episodes.append({key: np.array(value) for key, value in steps.items()})
    env.close()
    return episodes


def _write_raw(dataset_id: str, episodes: list[dict[str, np.ndarray]]) -> minari.MinariDataset:
    buffers = [EpisodeBuffer(id=i, **episode) for i, episode in enumerate(episodes)]
    return minari.create_dataset_from_buffers(
        dataset_id, buffers, env="Hopper-v5", eval_env="Hopper-v5", algorithm_name="random", author="test",
        description="random Hopper", **_WRITER,
    )  # fmt: skip


def test_from_minari_is_exact_and_keeps_terminal_next_observations():
    episodes = _hopper_episodes()
    assert sum(e["terminations"][-1] for e in episodes) == 3 and sum(e["truncations"][-1] for e in episodes) == 3
    t = Transitions.from_minari(_write_raw("test/raw-v0", episodes))
    expected = {
        "observations": np.concatenate([e["observations"][:-1] for e in episodes]),
        "actions": np.concatenate([e["actions"] for e in episodes]),
        "rewards": np.concatenate([e["rewards"] for e in episodes]),
        "next_observations": np.concatenate([e["observations"][1:] for e in episodes]),
        "terminals": np.concatenate([e["terminations"] for e in episodes]),
        "timeouts": np.concatenate([e["truncations"] for e in episodes]),
    }
    for name, value in expected.items():
        assert np.array_equal(getattr(t, name), value.astype(np.float32)), name
    assert t.next_actions is None
    assert len(t.episode_slices()) == 6
    # the true s' at a terminal step is the episode's last observation, not zeros
    first_terminal = int(np.flatnonzero(t.terminals)[0])
    assert np.abs(t.next_observations[first_terminal]).sum() > 0

    chosen = transitions_from_minari(minari.load_dataset("test/raw-v0"), episode_indices=[1, 4])
    assert np.array_equal(
        chosen.rewards, np.concatenate([episodes[1]["rewards"], episodes[4]["rewards"]]).astype(np.float32)
    )


def test_episode_without_final_flag_gets_a_timeout():
    episode = _hopper_episodes(1)[0]
    n = len(episode["actions"]) - 5
    cut = {k: v[: n + 1] if k == "observations" else v[:n] for k, v in episode.items()}  # data just stops
    assert not cut["terminations"][-1] and not cut["truncations"][-1]
    t = transitions_from_minari(_write_raw("test/cut-v0", [cut]))
    assert len(t) == n and t.timeouts[-1] == 1.0 and t.timeouts[:-1].sum() == 0 and t.terminals.sum() == 0


def test_round_trip_through_minari_is_exact():
    episodes = _hopper_episodes()
    original = Transitions.from_minari(_write_raw("test/raw-v0", episodes))
    written = original.to_minari(
        "dyaug/hopper-roundtrip-v0", "Hopper-v5", ref_min_score=-20.0, ref_max_score=3234.3, **_WRITER
    )
    loaded = minari.load_dataset("dyaug/hopper-roundtrip-v0")
    assert loaded.total_episodes == written.total_episodes == 6 and loaded.total_steps == len(original)
    back = Transitions.from_minari(loaded)
    for name, value in original.as_dict().items():
        assert (value is None and getattr(back, name) is None) or np.array_equal(getattr(back, name), value), name
    assert back.episode_slices() == original.episode_slices()
    # episode structure: same N+1 observations per episode as the raw data
    for raw, stored in zip(episodes, loaded.iterate_episodes(), strict=True):
        assert np.array_equal(stored.observations, raw["observations"].astype(np.float32))
        assert np.array_equal(stored.terminations, raw["terminations"])
        assert np.array_equal(stored.truncations, raw["truncations"])
    assert minari.get_normalized_score(loaded, np.array([3234.3]))[0] == pytest.approx(1.0)
    assert loaded.observation_space == gym.make("Hopper-v5").observation_space


def test_unordered_transitions_become_truncated_one_step_episodes_without_env():
    t = Transitions.from_minari(_write_raw("test/raw-v0", _hopper_episodes(3)))
    shuffled = t[::-1]  # no row is followed by its successor
    assert len(shuffled.episode_slices(contiguous=True)) == len(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Minari warns that there is no env spec
        dataset = transitions_to_minari(shuffled, "synthetic-v0", **_WRITER)
    assert dataset.total_episodes == len(t)
    assert dataset.observation_space == gym.spaces.Box(-np.inf, np.inf, (11,), np.float32)
    assert dataset.action_space == gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    back = transitions_from_minari(dataset)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals"):
        assert np.array_equal(getattr(back, name), getattr(shuffled, name)), name
    # every 1-step episode ends with a flag: its terminal, or a timeout where it had none
    np.testing.assert_array_equal(back.timeouts, np.maximum(shuffled.timeouts, 1.0 - shuffled.terminals))


def test_extra_metadata_is_stored_as_json():
    t = Transitions.from_minari(_write_raw("test/raw-v0", _hopper_episodes(2)))
    provenance = {"generator": {"kind": "synther", "steps": np.int64(100)}, "seeds": np.arange(3)}
    t.to_minari("dyaug/meta-v0", "Hopper-v5", provenance=provenance, note=None, **_WRITER)
    metadata = minari.load_dataset("dyaug/meta-v0").storage.metadata
    assert metadata["provenance"] == {"generator": {"kind": "synther", "steps": 100}, "seeds": [0, 1, 2]}
    assert metadata["note"] is None and metadata["algorithm_name"] == "dyaug"
    json.dumps(metadata["provenance"])  # plain JSON


def test_writer_refuses_bad_requests_before_writing():
    t = Transitions.from_minari(_write_raw("test/raw-v0", _hopper_episodes(1)))
    with pytest.raises(ValueError, match="both ref_min_score and ref_max_score"):
        t.to_minari("x/a-v0", "Hopper-v5", ref_max_score=1.0, **_WRITER)
    with pytest.raises(ValueError, match="need an environment"):
        t.to_minari("x/a-v0", ref_min_score=0.0, ref_max_score=1.0, **_WRITER)
    with pytest.raises(ValueError, match=r"\['total_steps'\] are written by Minari"):
        t.to_minari("x/a-v0", "Hopper-v5", total_steps=3, **_WRITER)
    with pytest.raises(ValueError, match="must be JSON values"):
        t.to_minari("x/a-v0", "Hopper-v5", callback=print, **_WRITER)
    with pytest.raises(ValueError, match="Pendulum-v1 has observation size 3 but the transitions have 11"):
        t.to_minari("x/a-v0", "Pendulum-v1", **_WRITER)
    assert "x/a-v0" not in minari.list_local_datasets()


@pytest.mark.filterwarnings("ignore:.*(eval_env|env_spec).*:UserWarning")
def test_unsupported_spaces_are_named():
    buffers = [
        EpisodeBuffer(
            id=0, observations=np.zeros((3, 2), np.float32), actions=np.array([0, 1]),
            rewards=np.zeros(2), terminations=np.array([False, True]), truncations=np.zeros(2, bool),
        )
    ]  # fmt: skip
    dataset = minari.create_dataset_from_buffers(
        "test/discrete-v0", buffers, observation_space=gym.spaces.Box(-1, 1, (2,), np.float32),
        action_space=gym.spaces.Discrete(2), algorithm_name="a", author="b", description="c", **_WRITER,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"unsupported action space Discrete\(2\)"):
        transitions_from_minari(dataset)
