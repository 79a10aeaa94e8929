"""The dataset forge: every level of every environment makes a Minari dataset that Minari itself opens."""

from __future__ import annotations

import json

import minari
import numpy as np
import pytest

import dyaug.datasets
from dyaug.data import Transitions
from dyaug.datasets.catalog import ENVS, LEVELS, dataset_id, parse_dataset_id
from dyaug.datasets.forge import close_last_episode, select_checkpoints


@pytest.mark.parametrize("env", sorted(ENVS))
def test_every_level_is_a_loadable_minari_dataset(env: str) -> None:
    forged = {}
    for level in LEVELS:
        ds = dyaug.datasets.forge(env, level, budget="tiny", progress=False)
        assert ds.id == dataset_id(env, level, "tiny")
        reopened = minari.load_dataset(ds.id)  # Minari's own loader opens it
        assert reopened.total_steps == ds.total_steps > 0
        meta = reopened.storage.metadata
        assert meta["ref_min_score"] == ENVS[env].ref_min_score
        assert meta["ref_max_score"] == ENVS[env].ref_max_score
        assert reopened.recover_environment(eval_env=True).spec.id == ENVS[env].env_id
        prov = json.loads(meta["provenance"]) if isinstance(meta["provenance"], str) else meta["provenance"]
        assert prov["level"] == level and prov["seed"] == 0 and "torch" in prov["versions"]
        forged[level] = Transitions.from_minari(reopened)

    budget = dyaug.datasets.BUDGETS["tiny"]
    for level in ("random", "medium", "expert"):
        assert len(forged[level]) == budget.n_transitions
    me = forged["medium-expert"]
    assert len(me) == len(forged["medium"]) + len(forged["expert"])
    np.testing.assert_array_equal(me.observations[: len(forged["medium"])], forged["medium"].observations)
    # medium-replay is the teacher's own history: it starts with the random warm-up steps
    assert len(forged["medium-replay"]) <= budget.teacher_steps
    acts = forged["random"].actions
    assert acts.min() >= -1.0 and acts.max() <= 1.0 and acts.std() > 0.4  # uniform on [-1, 1]: std 0.577


def test_forge_is_deterministic_for_a_seed(tmp_path, monkeypatch) -> None:
    first = Transitions.from_minari(dyaug.datasets.forge("hopper", "medium", budget="tiny", progress=False))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "other-store"))
    monkeypatch.setenv("DYAUG_HOME", str(tmp_path / "other-cache"))  # retrain the teacher from scratch
    second = Transitions.from_minari(dyaug.datasets.forge("hopper", "medium", budget="tiny", progress=False))
    for name, value in first.as_dict().items():
        if value is not None:
            np.testing.assert_array_equal(value, getattr(second, name), err_msg=name)


def test_load_forges_on_first_use_then_reads_the_store() -> None:
    ds = dyaug.datasets.load("walker2d/random-tiny-seed3")
    assert ds.id == "dyaug/walker2d/random-tiny-seed3-v0"
    assert ds.id in minari.list_local_datasets()
    assert dyaug.datasets.load(ds.id).total_steps == ds.total_steps
    assert any(r["dataset_id"] == ds.id for r in dyaug.datasets.list_datasets())


def test_names_round_trip_and_bad_names_say_what_is_valid() -> None:
    for env in ENVS:
        for level in LEVELS:
            for budget, seed in (("cpu", 0), ("tiny", 2), ("d4rl", 0)):
                assert parse_dataset_id(dataset_id(env, level, budget, seed)) == (env, level, budget, seed)
    assert parse_dataset_id("hopper/medium-replay") == ("hopper", "medium-replay", "cpu", 0)
    with pytest.raises(ValueError, match="not a forgeable dataset name"):
        parse_dataset_id("humanoid/medium")
    with pytest.raises(ValueError, match="choose one of"):
        dyaug.datasets.forge("hopper", "super-expert")
    with pytest.raises(ValueError, match="does not know environment"):
        dyaug.datasets.forge("Pendulum-v1", "random")
    with pytest.raises(ValueError, match="name it"):
        dyaug.datasets.forge("hopper", "random", n_transitions=10)
    with pytest.raises(TypeError, match="unknown forge option"):
        dyaug.datasets.forge("hopper", "random", dataset_id="dyaug/x/y-v0", n_steps=10)


def test_medium_is_the_first_checkpoint_at_a_third_of_the_expert() -> None:
    from dyaug.datasets.teachers import PolicyCheckpoint, TeacherRun

    returns = [-50.0, 100.0, 900.0, 1500.0, 2400.0, 1800.0]
    ckpts = [PolicyCheckpoint(1000 * (i + 1), float(i), float(i), r, 0.0, None) for i, r in enumerate(returns)]
    run = TeacherRun("Hopper-v5", 0, {}, ckpts, None, None, 0.0, 6000)
    medium, expert = select_checkpoints(run, 1 / 3)
    assert expert.mean_return == 2400.0
    # target = -50 + (2400 + 50) / 3 = 766.7: the first checkpoint above it returns 900
    assert medium.mean_return == 900.0 and medium.step == 3000


def test_close_last_episode_marks_a_cut_episode_as_timeout() -> None:
    n = 5
    t = Transitions(np.zeros((n, 2)), np.zeros((n, 1)), np.zeros(n), np.ones((n, 2)), np.zeros(n), np.zeros(n))
    closed = close_last_episode(t)
    assert closed.timeouts.tolist() == [0, 0, 0, 0, 1] and t.timeouts[-1] == 0  # the input is left alone
    assert close_last_episode(closed) is closed
