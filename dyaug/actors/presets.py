"""Settings of the diffusion actors in one place: size presets and the papers' per-task tables.

Each entry is a dict of config field names to values, applied on top of the config class's defaults (which are
the papers' settings). Integrations turn them into their config classes, e.g.
``DiffusionQLConfig.from_preset("cpu", task="hopper-medium")`` of the d3rlpy integration.

The key ``reward`` names a reward preprocessing, which each integration maps to its own tool (d3rlpy: a
reward scaler):

- ``"raw"``: rewards as they are;
- ``"iql_returns"``: r · 1000 / (max episode return − min episode return) (IQL's locomotion convention, SRPO);
- ``"antmaze_shift"``: r − 1 (IQL / SRPO on AntMaze);
- ``"antmaze_cql"``: (r − 0.5) · 4 (Diffusion-QL on AntMaze);
- ``"standardize"``: z-scored rewards (Diffusion-QL on Adroit pen).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REWARD_PREPROCESSING = ("raw", "iql_returns", "antmaze_shift", "antmaze_cql", "standardize")

DIFFUSION_QL_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's settings: the config's defaults (2M steps for the cosine decay, Gym locomotion).
    "paper": {},
    # A CPU run: the paper's network sizes and 50 candidates, a 10k-step cosine (a step costs about 2 GFLOP at
    # batch 256: the 5-step chain forward and backward, plus the EMA actor's chain for the targets).
    "cpu": {"lr_decay_steps": 10_000},
    # Seconds: small networks for tests.
    "tiny": {
        "hidden": 32,
        "t_dim": 8,
        "critic_hidden": 32,
        "batch_size": 64,
        "lr_decay_steps": 400,
        "ema_warmup": 20,
        "n_action_samples": 8,
    },
}

# Diffusion-QL's per-task settings (official code, ``main.py``): actor lr, η, max-Q backup, gradient-norm clip of
# actor and critic, and the run length (epochs x 1000 steps) as the cosine horizon. Its model selection
# (``top_k``, online or offline) is not part of training and is not reproduced here.
DIFFUSION_QL_TASKS: dict[str, dict[str, Any]] = {
    **{
        f"{env}-{level}": {"eta": 1.0, "grad_norm": gn, "lr_decay_steps": 2_000_000, "reward": "raw"}
        for env, gns in {
            "halfcheetah": (9.0, 2.0, 7.0),
            "hopper": (9.0, 4.0, 5.0),
            "walker2d": (1.0, 4.0, 5.0),
        }.items()
        for level, gn in zip(("medium", "medium-replay", "medium-expert"), gns, strict=True)
    },
    **{
        f"antmaze-{maze}": {
            "actor_learning_rate": lr,
            "eta": eta,
            "max_q_backup": backup,
            "grad_norm": gn,
            "lr_decay_steps": 1_000_000,
            "reward": "antmaze_cql",
        }
        for maze, (lr, eta, backup, gn) in {
            "umaze": (3e-4, 0.5, False, 2.0),
            "umaze-diverse": (3e-4, 2.0, True, 3.0),
            "medium-play": (1e-3, 2.0, True, 2.0),
            "medium-diverse": (3e-4, 3.0, True, 1.0),
            "large-play": (3e-4, 4.5, True, 10.0),
            "large-diverse": (3e-4, 3.5, True, 7.0),
        }.items()
    },
    "pen-human": {
        "actor_learning_rate": 3e-5,
        "eta": 0.15,
        "grad_norm": 7.0,
        "lr_decay_steps": 1_000_000,
        "reward": "standardize",
    },
    "pen-cloned": {
        "actor_learning_rate": 3e-5,
        "eta": 0.1,
        "grad_norm": 8.0,
        "lr_decay_steps": 1_000_000,
        "reward": "standardize",
    },
    **{
        f"kitchen-{task}": {"eta": 0.005, "grad_norm": gn, "lr_decay_steps": steps, "reward": "raw"}
        for task, (gn, steps) in {
            "complete": (9.0, 250_000),
            "partial": (10.0, 1_000_000),
            "mixed": (10.0, 1_000_000),
        }.items()
    },
}

SRPO_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's settings: the config's defaults (2M behaviour, 1.5M critic, 1M actor steps).
    "paper": {},
    # A CPU run: the paper's network sizes, 10k steps per phase, a behaviour batch of 256 instead of 2048 (the
    # LN-ResNet dominates the cost: about 2.5 GFLOP per step at 256 rows, forward and backward).
    "cpu": {"behavior_steps": 10_000, "critic_steps": 10_000, "actor_steps": 10_000, "behavior_batch_size": 256},
    # Seconds: small networks for tests, raw rewards (tiny data may hold a single episode).
    "tiny": {
        "behavior_hidden": 32,
        "behavior_blocks": 1,
        "critic_hidden": 32,
        "actor_hidden": 32,
        "batch_size": 64,
        "behavior_batch_size": 128,
        "behavior_steps": 300,
        "critic_steps": 300,
        "actor_steps": 200,
        "reward": "raw",
    },
}

# SRPO's per-task settings (official code, ``utils.py``): β (larger: weaker regularisation); on AntMaze also
# IQL's expectile 0.9, a 4-layer actor, the RMS-normalised Q gradient (``regq``) and r − 1 rewards.
SRPO_TASKS: dict[str, dict[str, Any]] = {
    **{
        f"{env}-{level}": {"beta": beta, "reward": "iql_returns"}
        for env, betas in {
            "halfcheetah": (0.2, 0.2, 0.01),
            "hopper": (0.05, 0.2, 0.01),
            "walker2d": (0.05, 0.5, 0.1),
        }.items()
        for level, beta in zip(("medium", "medium-replay", "medium-expert"), betas, strict=True)
    },
    **{
        f"antmaze-{maze}": {
            "beta": beta,
            "expectile": 0.9,
            "actor_layers": 4,
            "normalize_q_grad": True,
            "reward": "antmaze_shift",
        }
        for maze, beta in {
            "umaze": 0.02,
            "umaze-diverse": 0.04,
            "medium-play": 0.08,
            "medium-diverse": 0.05,
            "large-play": 0.06,
            "large-diverse": 0.05,
        }.items()
    },
}


def resolve_settings(
    algorithm: str,
    presets: Mapping[str, Mapping[str, Any]],
    preset: str,
    tasks: Mapping[str, Mapping[str, Any]],
    task: str | None,
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """``presets[preset]``, then ``tasks[task]`` (when given), then ``overrides``, merged in that order.

    Raises ``ValueError`` naming the choices for an unknown preset or task, or an unknown ``reward`` name.
    """
    if preset not in presets:
        raise ValueError(f"unknown {algorithm} preset {preset!r}; choose one of {sorted(presets)}.")
    if task is not None and task not in tasks:
        raise ValueError(
            f"unknown {algorithm} task {task!r}; the per-task table has {sorted(tasks)} (D4RL names without the "
            "version suffix)."
        )
    settings = {**presets[preset], **(tasks[task] if task is not None else {}), **overrides}
    if settings.get("reward", "raw") not in REWARD_PREPROCESSING:
        raise ValueError(f"reward must be one of {REWARD_PREPROCESSING}, got {settings['reward']!r}.")
    return settings
