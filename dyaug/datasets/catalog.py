"""What the forge can make: environments, levels, budgets and the dataset names that encode them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")
NAMESPACE = "dyaug"


@dataclasses.dataclass(frozen=True)
class ForgeEnv:
    """A forgeable environment with D4RL's reference returns (``d4rl/infos.py``) for normalised scores."""

    short: str
    env_id: str
    ref_min_score: float
    ref_max_score: float


ENVS: dict[str, ForgeEnv] = {
    e.short: e
    for e in (
        ForgeEnv("hopper", "Hopper-v5", -20.272305, 3234.3),
        ForgeEnv("halfcheetah", "HalfCheetah-v5", -280.178953, 12135.0),
        ForgeEnv("walker2d", "Walker2d-v5", 1.629008, 4592.3),
        # D4RL's ant references (d4rl/infos.py, ant-*-v0): a 105-dimensional observation with contact forces
        ForgeEnv("ant", "Ant-v5", -325.6, 3879.7),
    )
}


@dataclasses.dataclass(frozen=True)
class ForgeBudget:
    """Which teacher the forge trains, for how long, and how large the rolled-out levels are.

    ``teacher`` (a name of :data:`dyaug.datasets.teachers.TEACHERS`) trains for ``teacher_steps`` environment
    steps, evaluated every ``eval_every`` steps on ``eval_episodes`` episodes; ``learning_starts`` (random steps
    before the first update) overrides the teacher's own when set. ``teacher`` and ``teacher_steps`` may be a
    dict by environment (``{"hopper": "ppo", "halfcheetah": "sbx-td3-b100"}``): the teacher may differ per
    task, :meth:`for_env` picks one. The expert is the best evaluated checkpoint; the medium policy is the
    first checkpoint whose evaluated return reaches ``medium_fraction`` of the expert's. ``n_transitions`` is
    the size of each rolled-out level (random, medium, expert).
    """

    teacher: str | Mapping[str, str]
    teacher_steps: int | Mapping[str, int]
    eval_every: int
    eval_episodes: int
    n_transitions: int
    learning_starts: int | None = None
    medium_fraction: float = 1.0 / 3.0

    def __post_init__(self) -> None:
        steps = self.teacher_steps.values() if isinstance(self.teacher_steps, Mapping) else [self.teacher_steps]
        if not all(1 <= self.eval_every <= n for n in steps):
            raise ValueError(f"need 1 <= eval_every <= teacher_steps, got {self.eval_every} and {self.teacher_steps}.")
        if self.n_transitions < 1 or self.eval_episodes < 1:
            raise ValueError("n_transitions and eval_episodes must be at least 1.")
        if not (0.0 < self.medium_fraction < 1.0):
            raise ValueError(f"medium_fraction must lie in (0, 1), got {self.medium_fraction}.")

    def for_env(self, env: str) -> ForgeBudget:
        """This budget with the teacher and steps of environment ``env`` (a short name such as ``"hopper"``)."""

        def pick(value: T | Mapping[str, T], field: str) -> T:
            if not isinstance(value, Mapping):
                return value
            if env not in value:
                raise ValueError(f"the budget's {field} names no value for {env!r}; give one for each of {list(ENVS)}.")
            return value[env]

        return dataclasses.replace(
            self, teacher=pick(self.teacher, "teacher"), teacher_steps=pick(self.teacher_steps, "teacher_steps")
        )


BUDGETS: dict[str, ForgeBudget] = {
    # seconds on 2 CPU cores: a smoke test of the whole pipeline (SB3's SAC: no optional dependency)
    "tiny": ForgeBudget(
        teacher="sac", teacher_steps=1_000, learning_starts=500, eval_every=250, eval_episodes=1, n_transitions=2_000
    ),
    # chosen by benchmarks/forge_teachers.py: see benchmarks/RESULTS.md, "Forge"
    "cpu": ForgeBudget(
        teacher={"hopper": "ppo", "walker2d": "ppo", "halfcheetah": "ppo", "ant": "ppo"},
        teacher_steps={"hopper": 3_000_000, "walker2d": 5_000_000, "halfcheetah": 5_000_000, "ant": 5_000_000},
        eval_every=25_000,
        eval_episodes=5,
        n_transitions=100_000,
    ),
    # D4RL's sizes (1M transitions per level, 1M SAC steps): for a GPU machine or a long night
    "d4rl": ForgeBudget(
        teacher="sac", teacher_steps=1_000_000, eval_every=20_000, eval_episodes=10, n_transitions=1_000_000
    ),
}


def resolve_env(env: str) -> ForgeEnv:
    """Accept a short name (``"hopper"``) or a Gymnasium id (``"Hopper-v5"``)."""
    for e in ENVS.values():
        if env in (e.short, e.env_id):
            return e
    known = ", ".join(f"{e.short} ({e.env_id})" for e in ENVS.values())
    raise ValueError(f"the forge does not know environment {env!r}; choose one of: {known}.")


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}.")
    return level


def dataset_id(env: str, level: str, budget: str = "cpu", seed: int = 0) -> str:
    """The canonical Minari id of a forged dataset, e.g. ``dyaug/hopper/medium-v0`` (cpu budget, seed 0),
    ``dyaug/hopper/medium-tiny-seed3-v0`` otherwise."""
    e, level = resolve_env(env), check_level(level)
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}.")
    suffix = ("" if budget == "cpu" else f"-{budget}") + ("" if seed == 0 else f"-seed{seed}")
    return f"{NAMESPACE}/{e.short}/{level}{suffix}-v0"


_ID = re.compile(
    rf"^{NAMESPACE}/(?P<env>[a-z0-9]+)/(?P<level>{'|'.join(sorted(LEVELS, key=len, reverse=True))})"
    rf"(?:-(?P<budget>{'|'.join(b for b in BUDGETS if b != 'cpu')}))?(?:-seed(?P<seed>\d+))?-v0$"
)


def parse_dataset_id(name: str) -> tuple[str, str, str, int]:
    """Inverse of :func:`dataset_id`: ``(env_short, level, budget, seed)``.

    Also accepts the shorthand ``"hopper/medium"`` for ``dyaug/hopper/medium-v0``.
    """
    full = name if name.startswith(f"{NAMESPACE}/") else f"{NAMESPACE}/{name}"
    if not full.endswith("-v0"):
        full += "-v0"
    m = _ID.match(full)
    if m is None or m["env"] not in ENVS:
        raise ValueError(
            f"{name!r} is not a forgeable dataset name; expected e.g. 'dyaug/hopper/medium-v0', "
            f"'dyaug/walker2d/expert-tiny-seed1-v0' or the shorthand 'hopper/medium' "
            f"(environments: {', '.join(ENVS)}; levels: {', '.join(LEVELS)}; budgets: {', '.join(BUDGETS)})."
        )
    return m["env"], m["level"], m["budget"] or "cpu", int(m["seed"] or 0)
