"""Offline RL with DyDiff: d3rlpy TD3PlusBC and IQL alone, with SynthER and with DyDiff, same seeds.

    python benchmarks/dydiff_offline_rl.py                # hopper medium-replay and medium-expert, 3 seeds
    python benchmarks/dydiff_offline_rl.py --datasets hopper/medium-replay --steps 50000 --seeds 0 1 2 3 4
    python benchmarks/dydiff_offline_rl.py --quick        # smoke test, under 3 minutes

For each dataset and seed (or once per dataset with ``--generator-seed``), two generators are fitted on the forged
dataset and saved under ``--out`` (loaded on a rerun): ``SynthER(preset, seed=seed)`` (Lu et al. 2023,
arXiv 2303.06614) and ``DyDiff(preset, seed=seed)`` (Zhao et al. 2024, arXiv 2405.19189). Then, for each
algorithm, ``--steps`` gradient steps of

- ``base``: the dataset alone, in d3rlpy's own ``ReplayBuffer``;
- ``synther``: ``--synthetic`` SynthER samples mixed into every batch (``SyntheticReplayBuffer``);
- ``dydiff``: ``DyDiffAugmenter``: a rollout phase with the algorithm's current policy every ``--rollout-every``
  steps from ``--rollout-batch`` start states, a FIFO model buffer of ``--buffer-size`` rows,

both augmented arms with the same ``--real-ratio`` share of real rows (DyDiff's 0.6), so only the generator differs.
The three arms of a seed start from the same ``d3rlpy.seed``; the final policy is evaluated on ``--episodes``
episodes of the real environment (reset seeds 10_000 * seed + episode, the same for every arm) and scored
D4RL-normalised with the forge catalog's reference returns. Algorithms use d3rlpy's reproduction settings
(``benchmarks/common.py``); nothing was tuned on these runs.

Target (the issue): + DyDiff >= base + 10 points with TD3PlusBC on hopper medium-replay; the paper reports
63.9 -> 94.7 on D4RL's hopper-medium-replay-v2 after 1M steps. The forged datasets are far weaker than D4RL's.

Each finished run is stored as JSON under ``--out``, so an interrupted benchmark resumes where it stopped.
Prints a markdown report and writes a PNG bar chart beside the JSON files.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import structlog
import torch
from common import (
    d3rlpy_baseline,
    evaluate_returns,
    fit_offline,
    machine,
    mean_spread,
    normalized_scores,
    phase_summary,
    quiet_d3rlpy,
    save_bar_chart,
    stored_run,
)
from dyaug.integrations.d3rlpy import DyDiffAugmenter, SyntheticReplayBuffer, transitions_to_d3rlpy

import dyaug.datasets
from dyaug import DyDiff, SynthER, Transitions
from dyaug.datasets.catalog import parse_dataset_id
from dyaug.dydiff.phases import resolve_phase_settings

ARMS = ("base", "synther", "dydiff")


class Generators:
    """A dataset's SynthER and DyDiff for one seed: fitted on first use and saved under ``--out``, else loaded."""

    def __init__(self, dataset, slug: str, seed: int, args: argparse.Namespace) -> None:
        self.dataset, self.seed, self.args = dataset, seed, args
        self.synther_path = args.out / "generators" / f"{slug}-synther-seed{seed}.safetensors"
        self.dydiff_path = args.out / "generators" / f"{slug}-dydiff-seed{seed}"
        self._synthetic: Transitions | None = None
        self._dydiff: DyDiff | None = None
        self.info: dict[str, float] = {}

    def synthetic(self) -> Transitions:
        if self._synthetic is None:
            start = time.perf_counter()
            if self.synther_path.exists():
                generator = SynthER.load(self.synther_path, device="cpu")
            else:
                generator = SynthER(self.args.preset, device="cpu", seed=self.seed).fit(self.dataset, progress=False)
                generator.save(self.synther_path)
            fitted = time.perf_counter()
            self._synthetic = generator.sample(self.args.synthetic, seed=self.seed, progress=False)
            self.info |= {"synther_fit_s": fitted - start, "synther_sample_s": time.perf_counter() - fitted}
        return self._synthetic

    def dydiff(self) -> DyDiff:
        if self._dydiff is None:
            start = time.perf_counter()
            if self.dydiff_path.exists():
                self._dydiff = DyDiff.load(self.dydiff_path, device="cpu")
            else:
                self._dydiff = DyDiff(self.args.preset, device="cpu", seed=self.seed).fit(self.dataset, progress=False)
                self._dydiff.save(self.dydiff_path)
            self.info["dydiff_fit_s"] = time.perf_counter() - start
        return self._dydiff


def run_one(algo_name: str, arm: str, seed: int, real: Transitions, generators: Generators, args) -> dict:
    """Train one algorithm on one arm and evaluate it; returns the JSON record."""
    real_buffer = transitions_to_d3rlpy(real)
    algo = d3rlpy_baseline(algo_name, seed)
    if arm == "dydiff":
        learner = DyDiffAugmenter(
            algo,
            generator=generators.dydiff(),
            preset=args.preset,
            real_ratio=args.real_ratio,
            rollout_every=args.rollout_every,
            rollout_batch=args.rollout_batch,
            buffer_size=args.buffer_size,
            device="cpu",
            seed=seed,
        )
    elif arm == "synther":
        learner = algo
        real_buffer = SyntheticReplayBuffer(real_buffer, generators.synthetic(), real_ratio=args.real_ratio)
    else:
        learner = algo
    train_s = fit_offline(learner, real_buffer, args.steps)
    returns = evaluate_returns(algo.predict, args.env_id, args.episodes, seed)
    record = {
        "dataset": args.dataset,
        "algo": algo_name,
        "arm": arm,
        "seed": seed,
        "score": float(np.mean(normalized_scores(args.env_short, returns))),
        "return": float(np.mean(returns)),
        "train_s": train_s,
        "steps": args.steps,
    }
    if arm == "dydiff":
        record |= phase_summary(learner)
    return record


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["hopper/medium-replay", "hopper/medium-expert"])
    parser.add_argument("--algos", nargs="+", default=["td3plusbc", "iql"])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20_000, help="gradient steps per run")
    parser.add_argument("--preset", default="cpu", help="SynthER and DyDiff preset (and DyDiff's phase settings)")
    parser.add_argument("--real-ratio", type=float, default=0.6, help="real share of each augmented batch")
    parser.add_argument("--synthetic", type=int, default=200_000, help="SynthER samples per dataset and seed")
    parser.add_argument("--rollout-every", type=int, default=None, help="DyDiff: steps between rollout phases")
    parser.add_argument("--rollout-batch", type=int, default=None, help="DyDiff: start states per phase")
    parser.add_argument("--buffer-size", type=int, default=None, help="DyDiff: model buffer rows")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run")
    parser.add_argument(
        "--generator-seed",
        type=int,
        default=None,
        help="one SynthER and one DyDiff per dataset, fitted with this seed and shared by every RL seed "
        "(default: one per dataset and seed)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "dydiff_offline_rl")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny presets, 500 steps, 1 seed")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.steps, args.seeds, args.synthetic, args.episodes = "tiny", 500, [0], 5_000, 2
        args.datasets, args.rollout_every = ["hopper/medium-replay"], 100
        args.out = args.out.with_name(args.out.name + "_quick")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet_d3rlpy()
    # DyDiffAugmenter builds the networks before d3rlpy's fit (step 0's rollout needs a policy), which makes d3rlpy
    # warn "Skip building models since they're already built" once per run; keep the report clean of it.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    (args.out / "generators").mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    results, generator_info, sizes = [], {}, {}
    for name in args.datasets:
        dataset = dyaug.datasets.load(name)
        args.dataset, args.env_id = name, dataset.env_spec.id
        args.env_short = parse_dataset_id(name)[0]
        real = Transitions.from_minari(dataset)
        sizes[name] = len(real)
        slug = dataset.id.removeprefix("dyaug/").replace("/", "-")
        shared = None if args.generator_seed is None else Generators(dataset, slug, args.generator_seed, args)
        for seed in args.seeds:
            generators = shared or Generators(dataset, slug, seed, args)
            for algo_name in args.algos:
                for arm in args.arms:
                    record = stored_run(
                        args.out / f"{slug}-{algo_name}-{arm}-seed{seed}.json",
                        functools.partial(run_one, algo_name, arm, seed, real, generators, args),
                        lambda r: (
                            f"{r['dataset']} {r['algo']:10s} {r['arm']:8s} seed {r['seed']}: score "
                            f"{r['score']:6.1f} ({r['train_s']:.0f} s)"
                        ),
                    )
                    results.append(record)
            if generators.info:
                generator_info[(name, generators.seed)] = generators.info
    report(args, results, generator_info, sizes, started)


def report(args, results: list[dict], generator_info: dict, sizes: dict, started: str) -> None:
    print(f"## DyDiff offline RL ({started})\n")
    print(f"- machine: {machine()}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print("- data: " + ", ".join(f"`{name}` ({n} transitions)" for name, n in sizes.items()))
    phases = resolve_phase_settings(
        args.preset, rollout_every=args.rollout_every, rollout_batch=args.rollout_batch, buffer_size=args.buffer_size
    )
    print(
        f"- generators: SynthER and DyDiff preset `{args.preset}`, "
        + (
            "one per dataset and seed"
            if args.generator_seed is None
            else f"one per dataset (seed {args.generator_seed})"
        )
        + f"; {args.synthetic} SynthER "
        f"samples; DyDiff {phases}; real share {args.real_ratio} in both augmented arms"
    )
    print(
        f"- budget: {args.steps} gradient steps per run (batch 256), {args.episodes} evaluation episodes; "
        f"seeds {args.seeds}"
    )
    for (name, seed), info in sorted(generator_info.items()):
        print(
            f"- `{name}` seed {seed}: "
            + ", ".join(f"{k} {v:.0f}" for k, v in info.items())
            + " (fit_s of a loaded generator: its load time)"
        )
    print(
        "\nD4RL-normalised score of the final policy, mean ± standard deviation over seeds (per-seed values in "
        "brackets); the last column is DyDiff's gain over the base algorithm, seed by seed:\n"
    )
    print("| dataset | algorithm | " + " | ".join(args.arms) + " | dydiff − base |")
    print("|---|---|" + "---:|" * (len(args.arms) + 1))
    bars = {}
    for name in args.datasets:
        for algo_name in args.algos:
            scores = {
                arm: {
                    r["seed"]: r["score"]
                    for r in results
                    if (r["dataset"], r["algo"], r["arm"]) == (name, algo_name, arm) and r["seed"] in args.seeds
                }
                for arm in args.arms
            }
            cells = [mean_spread([s for _, s in sorted(scores[arm].items())], per_run=True) for arm in args.arms]
            paired = sorted(set(scores.get("dydiff", {})) & set(scores.get("base", {})))
            gains = [scores["dydiff"][seed] - scores["base"][seed] for seed in paired]
            print(f"| {name} | {algo_name} | " + " | ".join(cells) + f" | {mean_spread(gains)} |")
            for arm in args.arms:
                bars[(f"{name.split('/')[-1]}\n{algo_name}", arm)] = [s for _, s in sorted(scores[arm].items())]
    dydiff = [r for r in results if r["arm"] == "dydiff"]
    if dydiff:
        print(
            f"\nDyDiff runs: {statistics.fmean(r['phases'] for r in dydiff):.0f} rollout phases per run, "
            f"{statistics.fmean(r['rollout_s'] for r in dydiff):.0f} s of rollouts, "
            f"{statistics.fmean(r['synthetic_size'] for r in dydiff):.0f} synthetic transitions at the end, "
            f"{statistics.fmean(r['kept_fraction'] for r in dydiff):.2f} of the trajectories kept by the filter; "
            "median simulator next-state error of the rollouts: "
            + ", ".join(f"{r['sim_state_error']:.3f}" for r in dydiff if r["sim_state_error"] is not None)
        )
    target = [
        r
        for r in results
        if (r["dataset"], r["algo"]) == ("hopper/medium-replay", "td3plusbc") and r["arm"] != "synther"
    ]
    if {r["arm"] for r in target} == {"base", "dydiff"}:
        mean = {arm: statistics.fmean(r["score"] for r in target if r["arm"] == arm) for arm in ("base", "dydiff")}
        verdict = "met" if mean["dydiff"] >= mean["base"] + 10 else "not met"
        print(
            f"\nTarget (TD3PlusBC on hopper/medium-replay, + DyDiff >= base + 10): base {mean['base']:.1f}, "
            f"+ DyDiff {mean['dydiff']:.1f}: {verdict}."
        )
    seconds = {a: [r["train_s"] for r in results if r["arm"] == a] for a in args.arms}
    seconds = {a: statistics.fmean(values) for a, values in seconds.items() if values}
    print("\nMean training seconds per run: " + ", ".join(f"{a} {s:.0f}" for a, s in seconds.items()))
    png = args.out / "dydiff_offline_rl.png"
    save_bar_chart(png, bars, ylabel="D4RL-normalised score", title="Offline RL: base vs + SynthER vs + DyDiff")
    print(f"\nPlot: `{png}`")


if __name__ == "__main__":
    main()
