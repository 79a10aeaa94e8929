"""Which forge teacher reaches expert level soonest on this machine: return against environment steps and against
wall-clock minutes, same environment, same seed, one process per core.

    python benchmarks/forge_teachers.py --speed                                  # steps/s of every teacher
    python benchmarks/forge_teachers.py --teachers sbx-td3 ppo --minutes 30      # learning runs (resumable)
    python benchmarks/forge_teachers.py --report                                 # table and plot of stored runs

Each learning run trains one teacher (``dyaug.datasets.teachers``) for ``--minutes`` of training CPU time (its
evaluations are not counted) with one thread: the wall time it would take on an idle core, whatever else ran
beside it (wall times are stored too), evaluating the deterministic actor on 5 episodes every
``--eval-every`` steps (``--eval-every-on-policy`` for PPO, which takes 20-40x more steps per minute). Runs are
stored under ``runs/forge_teachers/`` and skipped when present, so start one process per core with disjoint
``--teachers`` lists. ``--speed`` times (CPU time, one thread) 2,000 steps after the random warm-up steps and
200 updates (PPO: after one rollout and its update).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import dataclasses
import datetime as dt
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import PLOTS, machine, shown, stored_run
from forge_datasets import TARGETS

from dyaug.datasets.catalog import resolve_env
from dyaug.datasets.teachers import TEACHERS, get_teacher, make_learner, train_teacher

OUT = Path(__file__).resolve().parents[1] / "runs" / "forge_teachers"
LEARNING = ["sbx-td3-b100", "sbx-td3", "sbx-sac", "sbx-tqc", "sbx-crossq", "ppo", "sac"]
THRESHOLDS = (30, 60, 70, 85)  # D4RL-normalised scores whose first crossing the table reports


def normalised(env: str, value: float) -> float:
    fenv = resolve_env(env)
    return 100 * (value - fenv.ref_min_score) / (fenv.ref_max_score - fenv.ref_min_score)


def learning_run(env: str, name: str, seed: int, args: argparse.Namespace) -> dict:
    teacher = get_teacher(name)
    every = args.eval_every_on_policy if teacher.on_policy else args.eval_every
    run = train_teacher(
        resolve_env(env).env_id,
        teacher,
        total_steps=50_000_000,
        eval_every=every,
        eval_episodes=args.episodes,
        seed=seed,
        record=False,
        time_limit=60 * args.minutes,
        progress=False,
    )
    return {
        "env": env,
        "teacher": name,
        "settings": run.teacher,
        "seed": seed,
        "minutes": args.minutes,
        "steps": run.steps,
        "train_s": run.seconds,
        "curve": [[c.step, c.cpu_seconds, c.mean_return, c.std_return, c.seconds] for c in run.checkpoints],
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }


def speed(env: str, name: str, steps: int) -> dict:
    """Steps per second over ``steps`` environment steps after a warm-up: the teacher's random steps (at most
    1,000) and 200 updates (PPO: one rollout and its update)."""
    teacher = get_teacher(name)
    if teacher.on_policy:
        warm = teacher.n_envs * int(teacher.settings["n_steps"])
    else:
        warm = min(int(teacher.settings.get("learning_starts", 100)), 1_000)
        teacher = dataclasses.replace(teacher, settings={**teacher.settings, "learning_starts": warm})
    model, _ = make_learner(resolve_env(env).env_id, teacher, seed=0, buffer_size=warm + steps + 10_000)
    warm += 0 if teacher.on_policy else 200  # compile and run the update before timing it
    model.learn(warm)
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(steps, reset_num_timesteps=False)
    return {
        "teacher": name,
        "steps": model.num_timesteps - warm,
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "machine": machine(),
    }


def report(args: argparse.Namespace) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(OUT.glob("learn-*.json"))]
    speeds = {r["teacher"]: r for r in (json.loads(p.read_text()) for p in sorted(OUT.glob("speed-*.json")))}
    if not runs:
        print("no stored learning runs under", OUT)
        return
    print(f"### Forge teachers ({dt.date.today().isoformat()})\n")
    print(f"- machine: {runs[0]['machine']}")
    print(
        "- command: `python benchmarks/forge_teachers.py --teachers <t> --minutes <m>` (one process per core), then "
        "`--report`; deterministic evaluation on 5 episodes, D4RL-normalised"
    )
    print()
    head = " | ".join(f"min to {t}" for t in THRESHOLDS)
    print(f"| env | teacher | steps/s (speed run) | steps in budget | best return (norm.) at step / min | {head} |")
    print("|---|---|---:|---:|---|" + "---:|" * len(THRESHOLDS))
    for r in sorted(runs, key=lambda r: (r["env"], -max(c[2] for c in r["curve"]) if r["curve"] else 0)):
        curve = r["curve"]
        sp = speeds.get(r["teacher"])
        rate = f"{sp['steps'] / sp['cpu_seconds']:.0f}" if sp else "-"
        if curve:
            best = max(curve, key=lambda c: c[2])
            best_cell = f"{best[2]:.0f} ({normalised(r['env'], best[2]):.0f}) at {best[0]:,} / {best[1] / 60:.1f}"
        else:
            best_cell = "-"
        cells = []
        for t in THRESHOLDS:
            hit = next((c for c in curve if normalised(r["env"], c[2]) >= t), None)
            cells.append(f"{hit[1] / 60:.1f}" if hit else f"> {r['minutes']}")
        print(f"| {r['env']} | {r['teacher']} | {rate} | {r['steps']:,} | {best_cell} | " + " | ".join(cells) + " |")
    if speeds:
        print(
            "\nSpeed alone (steps/s, one process, 2,000 steps after warm-up): "
            + ", ".join(f"{n} {s['steps'] / s['cpu_seconds']:.1f}" for n, s in speeds.items())
        )
    plot(runs, PLOTS / "forge_teachers.png")


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in runs})
    fig, axes = plt.subplots(len(envs), 2, figsize=(11, 3.6 * len(envs)), squeeze=False)
    for row, env in zip(axes, envs, strict=True):
        for i, r in enumerate(sorted((r for r in runs if r["env"] == env), key=lambda r: r["teacher"])):
            c = np.array(r["curve"]) if r["curve"] else np.zeros((0, 4))
            score = [normalised(env, v) for v in c[:, 2]]
            row[0].plot(c[:, 0], score, color=f"C{i}", label=r["teacher"])
            row[1].plot(c[:, 1] / 60, score, color=f"C{i}", label=r["teacher"])
        row[0].set_xscale("log")
        row[0].set_xlabel("environment steps")
        row[1].set_xlabel("training minutes (CPU time of one thread)")
        for ax in row:
            ax.axhline(TARGETS.get(env, 85.0), color="grey", ls="--", lw=0.8, label="target")
            ax.set_ylabel(f"{env}: D4RL-normalised return")
        row[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nPlot: `{shown(path)}`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--teachers", nargs="+", default=LEARNING, choices=list(TEACHERS))
    parser.add_argument("--minutes", type=float, default=30.0, help="training minutes per learning run")
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-every-on-policy", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", action="store_true", help="time every teacher instead of training")
    parser.add_argument("--speed-steps", type=int, default=2_000)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(args)
        return
    if args.speed:
        for name in args.teachers:
            stored_run(
                OUT / f"speed-{args.env}-{name}.json",
                functools.partial(speed, args.env, name, args.speed_steps),
                lambda r: f"{r['teacher']}: {r['steps'] / r['cpu_seconds']:.1f} steps/s of CPU time",
            )
        return
    for name in args.teachers:
        stored_run(
            OUT / f"learn-{args.env}-{name}-seed{args.seed}-{args.minutes:g}min.json",
            functools.partial(learning_run, args.env, name, args.seed, args),
            lambda r: f"{r['teacher']}: {r['steps']} steps, best {max((c[2] for c in r['curve']), default=0):.0f}",
        )
    print("done:", " ".join(args.teachers), file=sys.stderr)


if __name__ == "__main__":
    main()
