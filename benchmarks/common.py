"""What the benchmark scripts share: where they ran, how they time things, how they train and evaluate policies,
how they report and plot results."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

from dyaug.metrics.returns import episode_returns, evaluate_returns, normalized_scores  # noqa: F401 (scripts import them from here)

PLOTS = Path(__file__).resolve().parent / "plots"  # committed figures referenced by RESULTS.md


def shown(path: Path) -> str:
    """A path as the reports print it: relative to the repository root."""
    root = Path(__file__).resolve().parents[1]
    path = path.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


def machine(device: torch.device | None = None) -> str:
    """CPU model, count and the features that decide low-precision matmul speed (AVX-512 bf16/VNNI, AMX), the
    GPU when ``device`` is CUDA, Python and torch versions, torch threads."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    found = [f for f in ("avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16") if f in flags]
    features = ", ".join(found + ([] if "amx_tile" in flags else ["no AMX"]))
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device is not None and device.type == "cuda" else ""
    return (
        f"{cpu} ({os.cpu_count()} logical CPUs; {features}){gpu}; python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def stored_run(path: Path, run: Callable[[], dict], line: Callable[[dict], str]) -> dict:
    """The JSON record at ``path`` when an earlier run stored it, else ``run()``'s record, written there atomically
    (a temporary file renamed onto ``path``) and summed up on stderr by ``line``: how an interrupted benchmark
    resumes where it stopped."""
    if path.exists():
        return json.loads(path.read_text())
    record = run()
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record))
    partial.replace(path)
    print(line(record), file=sys.stderr, flush=True)
    return record


@contextlib.contextmanager
def claim(lock: Path, *, wait: bool = False) -> Iterator[bool]:
    """Whether this process holds ``lock`` (an exclusive ``flock`` on that file) for the ``with`` block: False when
    another process holds it; with ``wait=True`` it waits until the holder releases it, then True. The system
    releases it when the block ends or the process dies, killed or not, so several processes started on the same
    list of runs share them out, each run to one process, and a stopped one leaves nothing to clean up."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def made_once(path: Path, make: Callable[[], None]) -> bool:
    """Run ``make`` (which writes ``path``) unless ``path`` exists; whether it ran. One process makes it while any
    other calling this with the same ``path`` waits for it (:func:`claim` on ``<path>.lock``)."""
    with claim(path.with_name(f"{path.name}.lock"), wait=True):
        if path.exists():
            return False
        make()
        return True


def fit_once(make: Callable[[], Any], data: Any, path: Path, **fit_kwargs: Any) -> bool:
    """Fit the generator ``make()`` on ``data`` and save it at ``path`` unless ``path`` exists (:func:`made_once`);
    whether it fitted. A fit stopped part-way resumes from its checkpoint ``<path>.fit.safetensors``, removed once
    the fit is saved (also when a process stopped between saving and removing it)."""
    checkpoint = path.with_name(f"{path.name}.fit.safetensors")

    def fit() -> None:
        generator = make()
        generator.fit(data, checkpoint=checkpoint, **fit_kwargs)
        generator.save(path)

    made = made_once(path, fit)
    checkpoint.unlink(missing_ok=True)
    return made


def field_values(items: list[str], option: str) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs of a command-line ``option`` as a dict, each VALUE read as JSON (numbers, true/false,
    lists), else kept as a string."""
    values = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{option} takes FIELD=VALUE pairs, got {item!r}.")
        try:
            values[field] = json.loads(value)
        except json.JSONDecodeError:
            values[field] = value
    return values


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timings(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` runs of ``fn``, after one untimed warm-up run."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, after one untimed warm-up run."""
    return statistics.median(timings(fn, device, repeats))


def matmul_gflops(rows: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    a = torch.randn(rows, 1024, device=device).to(dtype)
    b = torch.randn(1024, 1024, device=device).to(dtype)
    seconds = median_seconds(lambda: a @ b, device, repeats)
    return 2 * rows * 1024 * 1024 / seconds / 1e9


def flops_per_row(net: nn.Module) -> int:
    """2 FLOP per multiply-add of every Linear layer (activations and norms are not counted)."""
    return sum(2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))


class Report:
    """Markdown lines, printed as they come and saved at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self, path: Path) -> None:
        path.write_text("\n".join(self.lines) + "\n")


def mean_median(values: np.ndarray) -> str:
    """``mean / median (n)`` of the compared (non-NaN) values; ``-`` when there are none."""
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return "-"
    return f"{values.mean():.3f} / {np.median(values):.3f} ({len(values)})"


def mean_spread(values: list[float], per_run: bool = False) -> str:
    """``mean ± std`` (sample standard deviation; ``-`` without values), optionally with the values in brackets."""
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    text = f"{statistics.fmean(values):.1f} ± {spread:.1f}"
    return text + (" [" + ", ".join(f"{v:.1f}" for v in values) + "]" if per_run else "")


def save_bar_chart(
    path, groups: dict[tuple[str, str], list[float]], ylabel: str, title: str, log_scale: bool = False
) -> None:
    """Grouped bars of means with standard-deviation whiskers and the individual runs as dots.

    ``groups`` maps (group, arm) to run values, e.g. ("td3plusbc", "mixed") -> scores per seed. ``log_scale``: a
    logarithmic y axis (for values spanning decades, such as throughputs).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(g for g, _ in groups))
    arms = list(dict.fromkeys(a for _, a in groups))
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.2))
    for j, arm in enumerate(arms):
        for i, name in enumerate(names):
            values = groups.get((name, arm), [])
            if not values:
                continue
            x = i + (j - (len(arms) - 1) / 2) * width
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.bar(x, statistics.fmean(values), width, yerr=spread, color=f"C{j}", label=arm if i == 0 else None)
            ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names)
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- offline RL
def quiet_d3rlpy() -> None:
    """Silence d3rlpy's per-epoch info logs (warnings still show)."""
    import structlog

    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def d3rlpy_baseline(name: str, seed: int, device: str = "cpu", compile_graph: bool = False) -> Any:
    """d3rlpy's reproduction settings for D4RL locomotion (``reproductions/offline/{td3_plus_bc,iql}.py``):
    ``"td3plusbc"`` or ``"iql"``, observations standardised, seeded with ``d3rlpy.seed(seed)``; ``compile_graph``:
    d3rlpy's ``torch.compile`` of the update (the same maths, faster)."""
    import d3rlpy

    d3rlpy.seed(seed)
    scaler = d3rlpy.preprocessing.StandardObservationScaler()
    if name == "td3plusbc":
        return d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4,
            critic_learning_rate=3e-4,
            batch_size=256,
            target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5,
            alpha=2.5,
            update_actor_interval=2,
            observation_scaler=scaler,
            compile_graph=compile_graph,
        ).create(device=device)
    if name == "iql":
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4,
            critic_learning_rate=3e-4,
            batch_size=256,
            weight_temp=3.0,
            max_weight=100.0,
            expectile=0.7,
            observation_scaler=scaler,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
            compile_graph=compile_graph,
        ).create(device=device)
    raise ValueError(f"unknown baseline {name!r}; choose td3plusbc or iql.")


def fit_offline(algo: Any, dataset: Any, n_steps: int) -> float:
    """Train a d3rlpy algorithm (or anything with d3rlpy's ``fit``) for ``n_steps`` gradient steps in one epoch,
    without progress bar, logs or checkpoints; returns the wall seconds."""
    from d3rlpy.logging import NoopAdapterFactory

    start = time.perf_counter()
    algo.fit(
        dataset,
        n_steps=n_steps,
        n_steps_per_epoch=n_steps,
        show_progress=False,
        logger_adapter=NoopAdapterFactory(),
        save_interval=10**9,
    )
    return time.perf_counter() - start


class Evaluate(BaseCallback):
    """SB3 callback: every ``every`` steps, the mean return of the model's deterministic actor over ``episodes``
    episodes of a separate ``env_id`` environment (:func:`episode_returns`), appended to ``curve`` as (step, mean)."""

    def __init__(self, env_id: str, every: int, episodes: int, seed: int) -> None:
        super().__init__()
        self.every, self.episodes, self.seed = every, episodes, seed
        self.env = gym.make(env_id)
        self.curve: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.curve.append((self.num_timesteps, self.mean_return()))
        return True

    def mean_return(self) -> float:
        def act(obs: np.ndarray) -> np.ndarray:
            return self.model.predict(obs, deterministic=True)[0]

        return float(np.mean(episode_returns(self.env, act, self.episodes, self.seed)))


# ------------------------------------------------------------------------------------------- forge policies
def forge_policy(
    dataset_name: str, checkpoint: str, device: torch.device
) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The forge teacher's deterministic actor of forged dataset ``dataset_name``'s run (``checkpoint``:
    ``"medium"``, the one that collected ``medium``, or ``"expert"``, the best) as a batched torch callable on raw
    observations on ``device``, and a description. The forge's run cache supplies it (a missing cache retrains)."""
    from dyaug.datasets.catalog import BUDGETS, parse_dataset_id, resolve_env
    from dyaug.datasets.forge import select_checkpoints, teacher_run

    env, _, budget, seed = parse_dataset_id(dataset_name)
    fenv = resolve_env(env)
    plan = BUDGETS[budget].for_env(fenv.short)
    run = teacher_run(fenv, plan, seed)
    medium, expert = select_checkpoints(run, plan.medium_fraction)
    chosen = {"medium": medium, "expert": expert}[checkpoint]
    actor = chosen.policy
    assert actor is not None

    @torch.no_grad()
    def policy(states: torch.Tensor) -> torch.Tensor:
        actions = actor(states.detach().cpu().numpy())
        return torch.as_tensor(actions, device=states.device)

    description = (
        f"deterministic {run.teacher['name']} actor of step {chosen.step} ({checkpoint} checkpoint, evaluated return "
        f"{chosen.mean_return:.1f}) of the forge's {fenv.short} run, seed {seed}, budget `{budget}`"
    )
    return policy, description


def phase_summary(learner: Any) -> dict[str, Any]:
    """What a ``DyDiffAugmenter``'s rollout phases did over a run: their count and seconds, the model buffer's
    final size, the shares of trajectories kept and truncated, the median simulator-checked next-state error, and
    that of DyDiff's own dynamics ensemble at the same (s, a)."""
    reports = learner.reports
    errors = [r.state_error for r in reports if r.state_error is not None]
    references = [r.reference_state_error for r in reports if r.reference_state_error is not None]
    return {
        "phases": len(reports),
        "rollout_s": sum(r.stats.seconds for r in reports),
        "synthetic_size": len(learner.synthetic),
        "kept_fraction": float(np.mean([r.stats.kept / r.stats.trajectories for r in reports])),
        "truncated_share": float(np.mean([r.stats.truncated / r.stats.trajectories for r in reports])),
        "sim_state_error": float(np.nanmedian(errors)) if errors else None,
        "sim_reference_state_error": float(np.nanmedian(references)) if references else None,
    }
