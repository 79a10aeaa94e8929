"""Forge D4RL-style datasets locally from Gymnasium MuJoCo v5 environments and store them with Minari.

Levels follow D4RL (Fu et al. 2020): ``random`` (uniform random actions), ``medium`` (rollouts of the teacher's
policy stopped at about a third of the expert's return), ``medium-replay`` (everything the teacher collected up to
that point), ``expert`` (rollouts of the best policy of the run) and ``medium-expert`` (medium and expert
concatenated). One teacher run per (environment, budget, seed) serves every level; it is cached under a key of
everything that changes it, so forging the five levels trains once. Policies act stochastically during rollouts
(the teacher's own exploration: SAC's tanh-Gaussian, TD3's Gaussian noise), as the datasets of D4RL were
collected; evaluation returns in the metadata are of the deterministic policy. The teachers live in
:mod:`dyaug.datasets.teachers`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from dyaug.data import Transitions
from dyaug.datasets.catalog import (
    BUDGETS,
    ENVS,
    LEVELS,
    ForgeBudget,
    ForgeEnv,
    check_level,
    dataset_id,
    resolve_env,
)
from dyaug.datasets.teachers import PolicyCheckpoint, TeacherRun, get_teacher, train_teacher

if TYPE_CHECKING:  # pragma: no cover
    from minari import MinariDataset

Policy = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def dyaug_home() -> Path:
    """Where dyaug caches forge intermediates: ``$DYAUG_HOME``, else ``~/.cache/dyaug``."""
    return Path(os.environ.get("DYAUG_HOME", Path.home() / ".cache" / "dyaug"))


def forge(
    env: str,
    level: str,
    *,
    budget: str = "cpu",
    seed: int = 0,
    dataset_id: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> MinariDataset:
    """Forge one dataset and save it in the local Minari store; returns the loaded ``MinariDataset``.

    Args:
        env: ``"hopper"``, ``"halfcheetah"``, ``"walker2d"`` or their ``*-v5`` ids.
        level: one of ``random, medium, medium-replay, expert, medium-expert``.
        budget: ``"tiny"`` (seconds), ``"cpu"`` (default; minutes on 2 cores) or ``"d4rl"`` (D4RL sizes).
        seed: seeds the teacher, the rollouts and the environments; same seed, same dataset (on the same machine).
        dataset_id: the Minari id; defaults to the canonical name (``dyaug/hopper/medium-v0``) and is required
            when ``overrides`` change the budget.
        overwrite: replace an existing dataset of that id; otherwise an existing one is returned as is.
        overrides: fields of :class:`~dyaug.datasets.catalog.ForgeBudget` (``teacher``, ``teacher_steps``,
            ``n_transitions``, ``eval_every``, ``eval_episodes``, ``learning_starts``, ``medium_fraction``).
    """
    import minari

    fenv, level = resolve_env(env), check_level(level)
    plan = _budget(budget, overrides).for_env(fenv.short)
    if dataset_id is None:
        if overrides:
            raise ValueError(
                f"overriding {sorted(overrides)} changes the dataset; name it, e.g. "
                f"dataset_id='{_default_id(fenv, level, budget, seed)[:-3]}-custom-v0'."
            )
        dataset_id = _default_id(fenv, level, budget, seed)
    if dataset_id in minari.list_local_datasets():
        if not overwrite:
            return minari.load_dataset(dataset_id)
        minari.delete_dataset(dataset_id)

    start = time.perf_counter()
    transitions, provenance = _LEVEL_BUILDERS[level](fenv, plan, seed, progress)
    episode_returns = _episode_returns(transitions)
    provenance.update(
        level=level,
        seed=seed,
        budget_name=budget,
        budget=dataclasses.asdict(plan),
        n_transitions=len(transitions),
        n_episodes=len(episode_returns),
        mean_episode_return=float(np.mean(episode_returns)),
        forge_seconds=round(time.perf_counter() - start, 2),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        versions=_versions(),
    )
    return transitions.to_minari(
        dataset_id,
        fenv.env_id,
        eval_env=fenv.env_id,
        ref_min_score=fenv.ref_min_score,
        ref_max_score=fenv.ref_max_score,
        algorithm_name=f"dyaug-forge-{level}",
        author="dyaug dataset forge",
        author_email="none (forged locally)",
        code_permalink=f"dyaug=={_versions()['dyaug']} dyaug.datasets.forge",
        description=f"D4RL-style {level} dataset of {fenv.env_id} forged locally by dyaug (budget {budget!r}).",
        provenance=provenance,
    )


def forgeable_names(budget: str = "cpu", seed: int = 0) -> list[str]:
    return [dataset_id(e, lvl, budget, seed) for e in ENVS for lvl in LEVELS]


# ----------------------------------------------------------------------------------------------- levels
def _random(fenv: ForgeEnv, plan: ForgeBudget, seed: int, progress: bool) -> tuple[Transitions, dict]:
    def uniform(obs: np.ndarray, rng: np.random.Generator, space: gym.spaces.Box) -> np.ndarray:
        return rng.uniform(space.low, space.high).astype(np.float32)

    data = rollout(fenv.env_id, uniform, plan.n_transitions, seed=seed, progress=progress, desc="random")
    return data, {"policy": "uniform random actions"}


def _medium(fenv: ForgeEnv, plan: ForgeBudget, seed: int, progress: bool) -> tuple[Transitions, dict]:
    return _policy_rollout(fenv, plan, seed, progress, which="medium")


def _expert(fenv: ForgeEnv, plan: ForgeBudget, seed: int, progress: bool) -> tuple[Transitions, dict]:
    return _policy_rollout(fenv, plan, seed, progress, which="expert")


def _medium_replay(fenv: ForgeEnv, plan: ForgeBudget, seed: int, progress: bool) -> tuple[Transitions, dict]:
    run = teacher_run(fenv, plan, seed, progress)
    medium, expert = select_checkpoints(run, plan.medium_fraction)
    info = _teacher_provenance(run, medium, expert)
    info["policy"] = f"everything the teacher collected before step {medium.step} (the medium checkpoint)"
    return run.replay_until(medium.step), info


def _medium_expert(fenv: ForgeEnv, plan: ForgeBudget, seed: int, progress: bool) -> tuple[Transitions, dict]:
    medium, info = _policy_rollout(fenv, plan, seed, progress, which="medium")
    expert, _ = _policy_rollout(fenv, plan, seed, progress, which="expert")
    info["policy"] = "medium rollouts followed by expert rollouts"
    return Transitions.concatenate([medium, expert]), info


_LEVEL_BUILDERS: dict[str, Callable[..., tuple[Transitions, dict]]] = {
    "random": _random,
    "medium": _medium,
    "medium-replay": _medium_replay,
    "expert": _expert,
    "medium-expert": _medium_expert,
}
assert set(_LEVEL_BUILDERS) == set(LEVELS)


def _policy_rollout(
    fenv: ForgeEnv, plan: ForgeBudget, seed: int, progress: bool, *, which: str
) -> tuple[Transitions, dict]:
    run = teacher_run(fenv, plan, seed, progress)
    medium, expert = select_checkpoints(run, plan.medium_fraction)
    ckpt = medium if which == "medium" else expert
    policy = ckpt.policy
    assert policy is not None

    def explore(obs: np.ndarray, rng: np.random.Generator, space: gym.spaces.Box) -> np.ndarray:
        return policy(obs, rng.standard_normal(space.shape))

    # the expert's rollouts use another seed stream than the medium's
    stream = seed + (0 if which == "medium" else 1_000_003)
    data = rollout(fenv.env_id, explore, plan.n_transitions, seed=stream, progress=progress, desc=which)
    info = _teacher_provenance(run, medium, expert)
    info["policy"] = f"stochastic {run.teacher['name']} actor of step {ckpt.step} ({which} checkpoint)"
    return data, info


# ------------------------------------------------------------------------------------- teacher run cache
def teacher_run(fenv: ForgeEnv, plan: ForgeBudget, seed: int, progress: bool = True) -> TeacherRun:
    """The teacher run of (env, budget, seed): loaded from the cache, or trained and cached.

    The cache key covers everything that changes a run: the teacher and its settings, the budget's training
    fields, the seed and the versions of the libraries that train and simulate."""
    # one environment's budget (ForgeBudget.for_env picked the teacher and its steps)
    assert not isinstance(plan.teacher, Mapping) and not isinstance(plan.teacher_steps, Mapping)
    teacher = get_teacher(plan.teacher)
    if plan.learning_starts is not None and not teacher.on_policy:
        teacher = dataclasses.replace(teacher, settings={**teacher.settings, "learning_starts": plan.learning_starts})
    identity = {
        "env": fenv.env_id,
        "teacher": teacher.describe(),
        "teacher_steps": plan.teacher_steps,
        "eval_every": plan.eval_every,
        "eval_episodes": plan.eval_episodes,
        "medium_fraction": plan.medium_fraction,
        "seed": seed,
        "versions": _versions(_TEACHER_PACKAGES),
    }
    key = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    path = dyaug_home() / "forge" / f"{teacher.name}-{fenv.short}-seed{seed}-{key}.safetensors"
    if path.exists():
        return TeacherRun.load(path)
    run = train_teacher(
        fenv.env_id,
        teacher,
        total_steps=plan.teacher_steps,
        eval_every=plan.eval_every,
        eval_episodes=plan.eval_episodes,
        seed=seed,
        progress=progress,
    )
    medium, _ = select_checkpoints(run, plan.medium_fraction)
    run.save(path, keep_until=medium.step)  # medium-replay reads no further
    return TeacherRun.load(path)


def select_checkpoints(run: TeacherRun, medium_fraction: float) -> tuple[PolicyCheckpoint, PolicyCheckpoint]:
    """``(medium, expert)``: the expert is the best evaluated checkpoint; the medium one is the first checkpoint
    whose evaluated return reaches ``medium_fraction`` of the expert's (measured above the first checkpoint's
    return, so a negative-return start does not make the target trivial)."""
    if not run.checkpoints:
        raise ValueError("the teacher run holds no evaluated checkpoint; raise teacher_steps or lower eval_every.")
    expert = max(run.checkpoints, key=lambda c: c.mean_return)
    floor = min(0.0, run.checkpoints[0].mean_return)
    target = floor + medium_fraction * (expert.mean_return - floor)
    medium = next(c for c in run.checkpoints if c.mean_return >= target)
    return medium, expert


def _teacher_provenance(run: TeacherRun, medium: PolicyCheckpoint, expert: PolicyCheckpoint) -> dict[str, Any]:
    return {
        "teacher": {
            **run.teacher,
            "train_seconds": round(run.seconds, 1),
            "steps": run.steps,
            "medium_step": medium.step,
            "medium_eval_return": round(medium.mean_return, 2),
            "expert_step": expert.step,
            "expert_eval_return": round(expert.mean_return, 2),
            "eval_curve": [[c.step, round(c.seconds, 1), round(c.mean_return, 2)] for c in run.checkpoints],
        }
    }


# ------------------------------------------------------------------------------------------- rollouts
def rollout(
    env_id: str,
    policy: Callable[[np.ndarray, np.random.Generator, gym.spaces.Box], np.ndarray],
    n_transitions: int,
    *,
    seed: int,
    progress: bool = True,
    desc: str = "rollout",
) -> Transitions:
    """Roll ``policy(obs, rng, action_space) -> action`` out for exactly ``n_transitions`` steps.

    Episode ``i`` resets with seed ``seed + i``; the last episode is cut at the budget and marked as a timeout.
    """
    from tqdm.auto import tqdm

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    observation_space, action_space = env.observation_space, env.action_space
    assert observation_space.shape is not None and isinstance(action_space, gym.spaces.Box)  # MuJoCo: Box spaces
    obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
    o = np.empty((n_transitions, obs_dim), np.float32)
    a = np.empty((n_transitions, act_dim), np.float32)
    r = np.empty(n_transitions, np.float32)
    o2 = np.empty((n_transitions, obs_dim), np.float32)
    term = np.zeros(n_transitions, np.float32)
    trunc = np.zeros(n_transitions, np.float32)
    episode, (obs, _) = 0, env.reset(seed=seed)
    for i in tqdm(range(n_transitions), desc=f"{desc} {env_id}", disable=not progress, mininterval=2.0):
        action = policy(obs, rng, action_space)
        nxt, reward, terminated, truncated, _ = env.step(action)
        o[i], a[i], r[i], o2[i], term[i], trunc[i] = obs, action, reward, nxt, terminated, truncated
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
        else:
            obs = nxt
    env.close()
    trunc[-1] = max(trunc[-1], 1.0 - term[-1])
    return Transitions(o, a, r, o2, term, trunc)


def close_last_episode(data: Transitions) -> Transitions:
    """Mark the last transition as a timeout when it ends no episode (the data stops mid-episode)."""
    if len(data) == 0 or data.terminals[-1] or data.timeouts[-1]:
        return data
    timeouts = data.timeouts.copy()
    timeouts[-1] = 1.0
    return data.replace(timeouts=timeouts)


def _episode_returns(data: Transitions) -> np.ndarray:
    return np.array([data.rewards[s].sum(dtype=np.float64) for s in data.episode_slices()])


# ------------------------------------------------------------------------------------------- helpers
def _budget(budget: str, overrides: dict[str, Any]) -> ForgeBudget:
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}.")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ForgeBudget)}
    if unknown:
        raise TypeError(
            f"unknown forge option(s) {sorted(unknown)}; valid: {[f.name for f in dataclasses.fields(ForgeBudget)]}."
        )
    return dataclasses.replace(BUDGETS[budget], **overrides)


def _default_id(fenv: ForgeEnv, level: str, budget: str, seed: int) -> str:
    return dataset_id(fenv.short, level, budget, seed)


_DATASET_PACKAGES = ("dyaug", "numpy", "torch", "gymnasium", "mujoco", "minari", "stable-baselines3")
_TEACHER_PACKAGES = (
    "numpy",
    "torch",
    "gymnasium",
    "mujoco",
    "stable-baselines3",
    "sb3-contrib",
    "sbx-rl",
    "jax",
    "flax",
)


def _versions(packages: tuple[str, ...] = _DATASET_PACKAGES) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
