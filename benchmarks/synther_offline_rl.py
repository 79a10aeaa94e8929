"""Offline RL with SynthER: d3rlpy TD3PlusBC and IQL on real, synthetic-only and mixed data, same seeds.

    python benchmarks/synther_offline_rl.py                                   # the run in RESULTS.md
    python benchmarks/synther_offline_rl.py --dataset walker2d/medium-replay --steps 50000 --seeds 0 1 2 3 4
    python benchmarks/synther_offline_rl.py --quick                           # smoke test, a few minutes

For each seed: fit ``SynthER(preset, seed=seed)`` on the forged dataset (Lu et al. 2023, arXiv 2303.06614) and
draw ``--synthetic`` transitions; then, for each algorithm, train it for ``--steps`` gradient steps on

- ``real``: the dataset in d3rlpy's own ``ReplayBuffer``;
- ``synthetic``: synthetic transitions only (``SyntheticReplayBuffer(real_ratio=0)``, the paper's offline mode);
- ``mixed``: half real, half synthetic in every batch (``real_ratio=0.5``),

with the same seed (``d3rlpy.seed``) in the three arms, and evaluate the final policy on ``--episodes`` episodes
of the real environment (reset seeds 10_000 * seed + episode, the same for every arm). Scores are D4RL-normalised
with the forge catalog's reference returns. Algorithms use d3rlpy's reproduction settings (observations
standardised; IQL's rewards scaled by 1000 / return range); nothing was tuned on these runs.

Each finished run is stored as JSON under ``--out``, so an interrupted benchmark resumes where it stopped.
Prints a markdown report and writes a PNG bar chart beside the JSON files.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
from dyaug.integrations.d3rlpy import SyntheticReplayBuffer, transitions_to_d3rlpy

import dyaug.datasets
from dyaug import SynthER, Transitions
from dyaug.datasets.catalog import parse_dataset_id

MODES = {"real": None, "synthetic": 0.0, "mixed": 0.5}  # real_ratio of the SyntheticReplayBuffer


def synthetic_for_seed(real: Transitions, args: argparse.Namespace, seed: int) -> tuple[Transitions, dict]:
    """The seed's generator (fitted here, or loaded from ``--out``) and its samples."""
    path = args.out / f"synther-seed{seed}.safetensors"
    start = time.perf_counter()
    if path.exists():
        generator = SynthER.load(path)
    else:
        generator = SynthER(args.preset, device="cpu", seed=seed, **args.synther_overrides).fit(real, progress=False)
        generator.save(path)
    fitted = time.perf_counter()
    synthetic = generator.sample(args.synthetic, seed=seed, progress=False)
    stats = generator.last_sample_stats
    info = {"fit_s": fitted - start, "sample_s": time.perf_counter() - fitted, "rejected": stats.rejected}
    return synthetic, info


def run_one(
    algo_name: str, mode: str, seed: int, real: Transitions, synthetic: Callable[[], tuple[Transitions, dict]], args
) -> dict:
    """Train ``algo_name`` on ``mode``'s data (``synthetic()``: the seed's SynthER samples, made on first use)."""
    real_buffer = transitions_to_d3rlpy(real)
    ratio = MODES[mode]
    buffer = real_buffer if ratio is None else SyntheticReplayBuffer(real_buffer, synthetic()[0], real_ratio=ratio)
    algo = d3rlpy_baseline(algo_name, seed)
    train_s = fit_offline(algo, buffer, args.steps)
    returns = evaluate_returns(algo.predict, args.env_id, args.episodes, seed)
    scores = normalized_scores(args.env_short, returns)
    return {
        "algo": algo_name,
        "mode": mode,
        "seed": seed,
        "score": float(np.mean(scores)),
        "return": float(np.mean(returns)),
        "train_s": train_s,
        "steps": args.steps,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="halfcheetah/medium-replay", help="forge name or local Minari id")
    parser.add_argument("--algos", nargs="+", default=["td3plusbc", "iql"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    parser.add_argument("--synthetic", type=int, default=200_000, help="synthetic transitions per seed")
    parser.add_argument("--preset", default="cpu", help="SynthER preset")
    parser.add_argument("--train-steps", type=int, default=None, help="override the preset's SynthER steps")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "synther_offline_rl")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny preset, 500 steps, 1 seed")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.steps, args.seeds, args.synthetic, args.episodes = "tiny", 500, [0], 5_000, 2
        args.out = args.out.with_name(args.out.name + "_quick")
    args.synther_overrides = {} if args.train_steps is None else {"train_steps": args.train_steps}
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet_d3rlpy()
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = dyaug.datasets.load(args.dataset)
    args.env_id = dataset.env_spec.id
    args.env_short = parse_dataset_id(args.dataset)[0]
    real = Transitions.from_minari(dataset)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    results, generators = [], {}
    for seed in args.seeds:
        synthetic = functools.cache(functools.partial(synthetic_for_seed, real, args, seed))
        for algo_name in args.algos:
            for mode in args.modes:
                record = stored_run(
                    args.out / f"{algo_name}-{mode}-seed{seed}.json",
                    functools.partial(run_one, algo_name, mode, seed, real, synthetic, args),
                    lambda r: (
                        f"{r['algo']:10s} {r['mode']:9s} seed {r['seed']}: score {r['score']:6.1f} "
                        f"({r['train_s']:.0f} s)"
                    ),
                )
                results.append(record)
        if synthetic.cache_info().currsize:
            generators[seed] = synthetic()[1]
    report(args, results, generators, started, len(real))


def report(args, results: list[dict], generators: dict, started: str, n_real: int) -> None:
    print(f"## SynthER offline RL ({started})\n")
    print(f"- machine: {machine()}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(
        f"- data: `{args.dataset}` ({args.env_id}, {n_real} real transitions); {args.synthetic} synthetic "
        f"transitions per seed from SynthER preset `{args.preset}` {args.synther_overrides or ''}"
    )
    print(
        f"- budget: {args.steps} gradient steps per run (batch 256), {args.episodes} evaluation episodes; "
        f"seeds {args.seeds}"
    )
    for seed, info in sorted(generators.items()):
        print(
            f"- SynthER seed {seed}: fit {info['fit_s']:.0f} s (0 = loaded), sampled in {info['sample_s']:.0f} s, "
            f"{info['rejected']} rejected"
        )
    print(
        "\nD4RL-normalised score of the final policy, mean ± standard deviation over seeds "
        "(per-seed values in brackets):\n"
    )
    print("| algorithm | " + " | ".join(args.modes) + " |")
    print("|---|" + "---:|" * len(args.modes))
    bars = {}
    for algo_name in args.algos:
        cells = []
        for mode in args.modes:
            scores = [
                r["score"]
                for r in sorted(results, key=lambda r: r["seed"])
                if r["algo"] == algo_name and r["mode"] == mode
            ]
            cells.append(mean_spread(scores, per_run=True))
            bars[(algo_name, mode)] = scores
        print(f"| {algo_name} | " + " | ".join(cells) + " |")
    seconds = {m: np.mean([r["train_s"] for r in results if r["mode"] == m]) for m in args.modes}
    print("\nMean training seconds per run: " + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()))
    png = args.out / "synther_offline_rl.png"
    save_bar_chart(png, bars, ylabel="D4RL-normalised score", title=f"SynthER offline: {args.dataset}")
    print(f"\nPlot: `{png}`")


if __name__ == "__main__":
    main()
