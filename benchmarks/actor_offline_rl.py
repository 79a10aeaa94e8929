"""Offline RL with the diffusion actors: SRPO and Diffusion-QL beside d3rlpy's TD3PlusBC and IQL on forged Hopper and
Walker2d medium-replay / medium-expert datasets, same seeds.

    python benchmarks/actor_offline_rl.py                     # 4 datasets x 4 algorithms x 3 seeds, 20k steps each
    python benchmarks/actor_offline_rl.py --datasets hopper/medium-replay --steps 100000 --seeds 0 1 2 3 4
    python benchmarks/actor_offline_rl.py --quick             # smoke test: tiny networks, 200 steps, under 2 minutes

For each dataset, seed and algorithm (``d3rlpy.seed(seed)`` before building it):

- ``td3plusbc``, ``iql``: d3rlpy's reproduction settings (``common.d3rlpy_baseline``), ``--steps`` gradient steps;
- ``diffusion_ql``: ``DiffusionQLConfig.from_preset(--preset, task=...)`` (the paper's per-task η and gradient
  clip), its cosine learning-rate decay spanning the ``--steps`` steps;
- ``srpo``: ``SRPOConfig.from_preset(--preset, task=...)`` (the paper's per-task β, IQL's reward scaling), with
  ``--steps`` steps for each of its three parts: the behaviour model and the IQL critic side by side, then the
  actor (``2 x --steps`` fit iterations);

all with standardised observations (d3rlpy's ``StandardObservationScaler``, as the baselines). The final policy is
evaluated on ``--episodes`` episodes of the real environment (reset seeds 10_000 * seed + episode, the same for
every algorithm: ``common.evaluate_returns``) and scored D4RL-normalised with the forge catalog's reference
returns. Nothing was tuned on these runs. Each finished run is stored as JSON under ``--out``, so an interrupted
benchmark resumes where it stopped. Prints a markdown report and writes a PNG bar chart beside the JSON files.

Cost on one CPU core (2-core reference machine, shared): Diffusion-QL about 9 steps/s and SRPO about 20 fit
iterations/s at the ``cpu`` preset (the papers' network sizes), the baselines about 100 steps/s, so the default run
(12 dataset-seed pairs) takes roughly 15 hours; pass fewer ``--steps``, run datasets in separate processes, or use
``--device cuda``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import d3rlpy
import numpy as np
import torch
from common import (
    d3rlpy_baseline,
    evaluate_returns,
    fit_offline,
    machine,
    mean_spread,
    normalized_scores,
    quiet_d3rlpy,
    save_bar_chart,
    stored_run,
)
from d3rlpy.preprocessing import StandardObservationScaler
from dyaug.integrations.d3rlpy import DiffusionQLConfig, SRPOConfig, transitions_to_d3rlpy

import dyaug.datasets
from dyaug import Transitions
from dyaug.datasets.catalog import parse_dataset_id

DATASETS = ("hopper/medium-replay", "hopper/medium-expert", "walker2d/medium-replay", "walker2d/medium-expert")


def diffusion_ql(task: str, seed: int, args: argparse.Namespace) -> Any:
    d3rlpy.seed(seed)
    config = DiffusionQLConfig.from_preset(
        args.preset, task=task, lr_decay_steps=args.steps, observation_scaler=StandardObservationScaler()
    )
    return config.create(device=args.d3rlpy_device)


def srpo(task: str, seed: int, args: argparse.Namespace) -> Any:
    d3rlpy.seed(seed)
    steps = {"behavior_steps": args.steps, "critic_steps": args.steps, "actor_steps": args.steps}
    config = SRPOConfig.from_preset(args.preset, task=task, observation_scaler=StandardObservationScaler(), **steps)
    return config.create(device=args.d3rlpy_device)


ALGOS: dict[str, tuple[Callable[[str, int, argparse.Namespace], Any], int]] = {
    "td3plusbc": (lambda task, seed, args: d3rlpy_baseline("td3plusbc", seed, args.d3rlpy_device), 1),
    "iql": (lambda task, seed, args: d3rlpy_baseline("iql", seed, args.d3rlpy_device), 1),
    "diffusion_ql": (diffusion_ql, 1),
    "srpo": (srpo, 2),
}
"""name -> (build(task, seed, args), fit iterations per ``--steps``)."""


def run_one(
    name: str, dataset: str, seed: int, buffer: Callable[[], Any], env: tuple[str, str], args: argparse.Namespace
) -> dict:
    """Train ``name`` on the d3rlpy buffer ``buffer()`` (built on first use) and evaluate it; the JSON record."""
    build, iterations_per_step = ALGOS[name]
    env_short, env_id = env
    task = "-".join(parse_dataset_id(dataset)[:2])
    algo = build(task, seed, args)
    iterations = iterations_per_step * args.steps
    train_s = fit_offline(algo, buffer(), iterations)
    start = time.perf_counter()
    returns = evaluate_returns(algo.predict, env_id, args.episodes, seed)
    scores = normalized_scores(env_short, returns)
    return {
        "dataset": dataset,
        "algo": name,
        "seed": seed,
        "score": float(np.mean(scores)),
        "scores": scores,
        "return": float(np.mean(returns)),
        "train_s": train_s,
        "eval_s": time.perf_counter() - start,
        "steps": args.steps,
        "fit_iterations": iterations,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="forge names or local Minari ids")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps per run (per part for SRPO)")
    parser.add_argument("--preset", default="cpu", help="size preset of SRPO and Diffusion-QL: tiny, cpu, paper")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run")
    parser.add_argument("--device", default="cpu", help="torch device of every algorithm, e.g. cpu or cuda:0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "actor_offline_rl")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny preset, 200 steps, 1 seed, 1 dataset")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.steps, args.seeds, args.episodes = "tiny", 200, [0], 2
        args.datasets = args.datasets[:1]
        args.out = args.out.with_name(args.out.name + "_quick")
    device = torch.device(args.device)
    args.d3rlpy_device = f"{device.type}:{device.index or 0}"
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet_d3rlpy()
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    results, sizes = [], {}
    for dataset in args.datasets:
        minari_dataset = dyaug.datasets.load(dataset)
        env_short = parse_dataset_id(dataset)[0]
        env = (env_short, minari_dataset.env_spec.id)
        transitions = Transitions.from_minari(minari_dataset)
        sizes[dataset] = len(transitions)
        buffer = functools.cache(lambda transitions=transitions: transitions_to_d3rlpy(transitions))
        for seed in args.seeds:
            for name in args.algos:
                record = stored_run(
                    args.out / f"{dataset.replace('/', '_')}-{name}-seed{seed}.json",
                    functools.partial(run_one, name, dataset, seed, buffer, env, args),
                    lambda r: (
                        f"{r['dataset']} {r['algo']:12s} seed {r['seed']}: score {r['score']:6.1f} "
                        f"(train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s)"
                    ),
                )
                results.append(record)
    report(args, results, sizes, started)


def report(args: argparse.Namespace, results: list[dict], sizes: dict[str, int], started: str) -> None:
    print(f"## Diffusion actors, offline RL ({started})\n")
    print(f"- machine: {machine(torch.device(args.device))}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print("- data: " + ", ".join(f"`{d}` ({n} transitions)" for d, n in sizes.items()))
    print(
        f"- budget: {args.steps} gradient steps per run (SRPO: {args.steps} per part, {2 * args.steps} fit "
        f"iterations), batch 256 (preset `tiny`: 64), SRPO / Diffusion-QL preset `{args.preset}`, {args.episodes} "
        f"evaluation episodes; seeds {args.seeds}"
    )
    train_s = sum(r["train_s"] for r in results)
    eval_s = sum(r["eval_s"] for r in results)
    print(
        f"- compute: {len(results)} runs, {train_s / 60:.1f} min training + {eval_s / 60:.1f} min evaluation in all, "
        f"on {args.device} with {args.threads} torch thread(s)"
    )
    print(
        "\nD4RL-normalised score of the final policy, mean ± standard deviation over seeds "
        "(per-seed values in brackets):\n"
    )
    print("| algorithm | " + " | ".join(args.datasets) + " |")
    print("|---|" + "---:|" * len(args.datasets))
    bars = {}
    for name in args.algos:
        cells = []
        for dataset in args.datasets:
            runs = [r for r in results if r["algo"] == name and r["dataset"] == dataset]
            scores = [r["score"] for r in sorted(runs, key=lambda r: r["seed"])]
            cells.append(mean_spread(scores, per_run=True))
            bars[(dataset, name)] = scores
        print(f"| {name} | " + " | ".join(cells) + " |")
    seconds = {
        name: (
            np.mean([r["train_s"] for r in results if r["algo"] == name]),
            np.mean([r["eval_s"] for r in results if r["algo"] == name]),
        )
        for name in args.algos
    }
    print(
        "\nMean seconds per run (train / evaluate): "
        + ", ".join(f"{n} {t:.0f} / {e:.0f}" for n, (t, e) in seconds.items())
    )
    png = args.out / "actor_offline_rl.png"
    save_bar_chart(png, bars, ylabel="D4RL-normalised score", title=f"Diffusion actors offline, {args.steps} steps")
    print(f"\nPlot: `{png}`")


if __name__ == "__main__":
    main()
