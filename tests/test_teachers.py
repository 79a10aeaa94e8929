"""The forge's teachers: array actors that act exactly as the library's, runs that record raw data, a cache keyed by
everything that changes a run."""

from __future__ import annotations

import dataclasses
import importlib

import gymnasium as gym
import numpy as np
import pytest

from dyaug.data import Transitions
from dyaug.datasets.catalog import BUDGETS, resolve_env
from dyaug.datasets.policy import MLPPolicy, extract_policy
from dyaug.datasets.teachers import (
    TEACHERS,
    PolicyCheckpoint,
    TeacherRun,
    get_teacher,
    make_learner,
    train_teacher,
)

forge_module = importlib.import_module("dyaug.datasets.forge")  # the package re-exports forge()
SMALL = {"policy_kwargs": {"net_arch": [32, 32]}}


def small(name: str, **settings: object) -> object:
    teacher = get_teacher(name)
    merged = {**teacher.settings, **SMALL, **settings}
    if teacher.on_policy:
        merged.update(n_steps=64, batch_size=64)
        merged["policy_kwargs"] = {**teacher.settings["policy_kwargs"], "net_arch": {"pi": [32, 32], "vf": [32, 32]}}
    else:
        merged["learning_starts"] = 100
    return dataclasses.replace(teacher, settings=merged)


def have(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


SB3_TEACHERS = ["sac", "td3", "ppo"] + (["tqc"] if have("sb3_contrib") else [])
SBX_TEACHERS = ["sbx-sac", "sbx-td3", "sbx-tqc", "sbx-crossq"] if have("sbx") else []


@pytest.mark.parametrize("name", SB3_TEACHERS + SBX_TEACHERS)
def test_array_actor_acts_as_the_library_does(name: str) -> None:
    teacher = small(name)
    model, venv = make_learner("Hopper-v5", teacher, seed=0, buffer_size=1_000)
    model.learn(400)  # past learning_starts: CrossQ's batch statistics have moved away from (0, 1)
    obs_rms = getattr(venv, "obs_rms", None)
    policy = extract_policy(model, noise_std=teacher.action_noise, obs_rms=obs_rms)
    obs = np.random.default_rng(0).normal(size=(64, 11)).astype(np.float32)
    library_input = venv.normalize_obs(obs) if obs_rms is not None else obs
    expected = model.predict(library_input, deterministic=True)[0]
    np.testing.assert_allclose(policy(obs), expected, atol=2e-6)
    # the arrays rebuild the same policy
    again = MLPPolicy.from_state(*policy.state())
    np.testing.assert_array_equal(again(obs), policy(obs))
    noise = np.random.default_rng(1).standard_normal((64, 3))
    np.testing.assert_array_equal(again(obs, noise), policy(obs, noise))
    low, high = venv.action_space.low, venv.action_space.high
    acts = policy(obs, 3.0 * noise)
    assert (acts >= low).all() and (acts <= high).all()
    assert np.abs(acts - policy(obs)).mean() > 1e-3  # noise moves the actions (TD3: its exploration std)


def test_td3_rollouts_use_its_exploration_noise() -> None:
    w = np.zeros((2, 1), np.float32)
    policy = MLPPolicy((), (w, np.zeros(1, np.float32)), "tanh", np.array([-2.0]), np.array([2.0]), noise_std=0.1)
    # tanh(0) = 0; + 0.1 * 1.0 noise in [-1, 1] units = 0.1, times the half-range 2 = 0.2
    assert policy(np.zeros(2), np.ones(1))[0] == pytest.approx(0.2)
    assert policy(np.zeros(2), 100 * np.ones(1))[0] == pytest.approx(2.0)  # clipped to the bound


def test_missing_library_names_the_extra(monkeypatch) -> None:
    real = importlib.import_module

    def no_sbx(name: str, *args: object) -> object:
        if name == "sbx":
            raise ImportError("No module named 'sbx'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_sbx)
    with pytest.raises(ImportError, match=r"pip install 'dyaug\[forge\]'"):
        TEACHERS["sbx-td3"].algorithm_class()
    with pytest.raises(ValueError, match="choose one of"):
        get_teacher("dreamer")


def test_vectorised_run_records_raw_streams_and_cuts_each_at_the_medium_step() -> None:
    teacher = small("ppo")
    run = train_teacher("Hopper-v5", teacher, total_steps=1_024, eval_every=512, eval_episodes=1, progress=False)
    assert [c.step for c in run.checkpoints] == [512, 1_024]
    data, steps = run.replay, run.replay_step
    assert data is not None and steps is not None and len(data) == run.steps == 1_024
    # each environment's stream is contiguous: s' of a step is the next step's s unless an episode ended
    ends = (data.terminals > 0) | (data.timeouts > 0)
    inner = ~ends[:-1]
    np.testing.assert_array_equal(data.next_observations[:-1][inner], data.observations[1:][inner])
    assert ends.sum() >= teacher.n_envs  # every stream is closed
    # raw units: Hopper's healthy reward is 1 per step, so rewards sit near 1 (VecNormalize would rescale them)
    assert 0.0 < np.median(data.rewards) < 2.0
    cut = run.replay_until(512)
    assert len(cut) == 512 and (run.replay_step[run.replay_step < 512].max() == 511)
    cut_ends = (cut.terminals > 0) | (cut.timeouts > 0)
    starts = np.flatnonzero(np.diff(run._stream[run.replay_step < 512]) != 0)
    assert cut_ends[starts].all() and cut_ends[-1]  # the last row of every cut stream closes an episode


def test_run_round_trips_through_its_file(tmp_path) -> None:
    run = train_teacher("Hopper-v5", small("td3"), total_steps=300, eval_every=150, eval_episodes=1, progress=False)
    loaded = TeacherRun.load(run.save(tmp_path / "run.safetensors"))
    assert loaded.teacher == run.teacher and loaded.steps == run.steps == 300
    for a, b in zip(loaded.checkpoints, run.checkpoints, strict=True):
        assert (a.step, a.seconds, a.cpu_seconds, a.mean_return) == (b.step, b.seconds, b.cpu_seconds, b.mean_return)
        obs = np.ones((3, 11), np.float32)
        np.testing.assert_array_equal(a.policy(obs, np.ones((3, 3))), b.policy(obs, np.ones((3, 3))))
    for name, value in run.replay.as_dict().items():
        if value is not None:
            np.testing.assert_array_equal(getattr(loaded.replay, name), value)
    np.testing.assert_array_equal(loaded.replay_step, run.replay_step)


def test_cache_key_covers_teacher_settings_seed_and_versions(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DYAUG_HOME", str(tmp_path))
    trained = []

    def fake_train(env_id: str, teacher: object, **kwargs: object) -> TeacherRun:
        trained.append((teacher.name, dict(teacher.settings), kwargs["seed"]))
        n = 4
        data = Transitions(np.zeros((n, 11)), np.zeros((n, 3)), np.ones(n), np.zeros((n, 11)), np.zeros(n), np.ones(n))
        ckpt = PolicyCheckpoint(10, 1.0, 1.0, 5.0, 0.0, None)
        return TeacherRun(env_id, kwargs["seed"], teacher.describe(), [ckpt], data, np.arange(n), 1.0, 10)

    monkeypatch.setattr(forge_module, "train_teacher", fake_train)
    hopper, plan = resolve_env("hopper"), BUDGETS["tiny"]
    forge_module.teacher_run(hopper, plan, 0)
    forge_module.teacher_run(hopper, plan, 0)  # cached
    assert len(trained) == 1
    forge_module.teacher_run(hopper, dataclasses.replace(plan, teacher="td3"), 0)
    forge_module.teacher_run(hopper, dataclasses.replace(plan, learning_starts=100), 0)
    forge_module.teacher_run(hopper, plan, 1)
    real_versions = forge_module._versions
    monkeypatch.setattr(forge_module, "_versions", lambda *a: {**real_versions(*a), "stable-baselines3": "9.9"})
    forge_module.teacher_run(hopper, plan, 0)
    assert [t[0] for t in trained] == ["sac", "td3", "sac", "sac", "sac"]
    assert trained[2][1]["learning_starts"] == 100 and trained[3][2] == 1
    assert len(list((tmp_path / "forge").glob("*.safetensors"))) == 5


def test_evaluation_uses_the_deterministic_actor() -> None:
    env = gym.make("Hopper-v5")
    w = np.zeros((11, 3), np.float32)
    policy = MLPPolicy((), (w, np.zeros(3, np.float32)), "tanh", -np.ones(3, np.float32), np.ones(3, np.float32))
    from dyaug.datasets.teachers import evaluate_policy

    first = evaluate_policy(policy, env, 2, seed=5)
    assert first == evaluate_policy(policy, env, 2, seed=5) and len(first) == 2
