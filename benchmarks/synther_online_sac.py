"""Online SynthER: SB3 SAC against SAC + SynthER on Hopper-v5, same seeds, at a budget that fits on 2 CPU cores.

    python benchmarks/synther_online_sac.py                        # the run in RESULTS.md
    python benchmarks/synther_online_sac.py --seeds 0 --quick      # smoke test, a few minutes

Three arms, each trained for ``--steps`` environment steps with SB3's default SAC (256x256 networks, batch 256,
lr 3e-4, learning_starts 100) and evaluated every ``--eval-every`` steps on ``--eval-episodes`` episodes of a
separate environment (deterministic actor, reset seeds 10_000 * seed + episode):

- ``sac``: SB3's defaults, one gradient step per environment step (UTD 1);
- ``sac utd K``: SB3 SAC with ``gradient_steps=K``, real data only: the control for the update ratio;
- ``sac+synther utd K``: ``replay_buffer_class=SyntheticReplayBuffer`` (50/50 real/synthetic batches) and
  ``SynthERCallback``: every ``--retrain-every`` steps a fresh SynthER (preset ``--preset``) is fitted on the
  whole real buffer and ``--samples`` of its transitions replace the synthetic set (Lu et al. 2023, arXiv
  2303.06614, online setting; the paper uses UTD 20, 10k-step refits and 1M samples on a GPU: scaled down here).

Each finished arm is stored as JSON under ``--out`` (resumable). Prints a markdown report and writes a PNG of the
learning curves.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from common import Evaluate, machine, mean_spread, stored_run
from dyaug.integrations.sb3 import SynthERCallback, SyntheticReplayBuffer
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

ENV_ID = "Hopper-v5"


def run_arm(arm: str, seed: int, args: argparse.Namespace) -> dict:
    env = gym.make(ENV_ID)
    evaluate = Evaluate(ENV_ID, args.eval_every, args.eval_episodes, seed)
    callbacks: list[BaseCallback] = [evaluate]
    kwargs: dict = {"gradient_steps": 1 if arm == "sac" else args.utd}
    if arm.startswith("sac+synther"):
        kwargs["replay_buffer_class"] = SyntheticReplayBuffer
        kwargs["replay_buffer_kwargs"] = {"real_ratio": 0.5}
        callbacks.append(
            SynthERCallback(
                retrain_every=args.retrain_every,
                n_samples=args.samples,
                preset=args.preset,
                seed=seed,
                device="cpu",
                **args.synther_overrides,
            )
        )
    model = SAC("MlpPolicy", env, seed=seed, device="cpu", **kwargs)
    start = time.perf_counter()
    model.learn(total_timesteps=args.steps, callback=CallbackList(callbacks))
    refits = callbacks[-1].retrained_at if len(callbacks) > 1 else []
    return {
        "arm": arm,
        "seed": seed,
        "curve": evaluate.curve,
        "seconds": time.perf_counter() - start,
        "final": evaluate.curve[-1][1],
        "refits": refits,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10_000, help="environment steps per run")
    parser.add_argument("--utd", type=int, default=4, help="gradient steps per environment step (K)")
    parser.add_argument("--retrain-every", type=int, default=3_000)
    parser.add_argument("--samples", type=int, default=50_000, help="synthetic transitions per refit")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--train-steps", type=int, default=3_000, help="SynthER training steps per refit")
    parser.add_argument("--eval-every", type=int, default=1_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "synther_online_sac")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1,500 steps, tiny preset")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.utd, args.retrain_every, args.samples, args.preset = 1_500, 2, 1_000, 2_000, "tiny"
        args.train_steps, args.eval_every, args.eval_episodes = 100, 500, 1
        args.out = args.out.with_name(args.out.name + "_quick")
    args.synther_overrides = {"train_steps": args.train_steps}
    args.arms = ["sac", f"sac utd {args.utd}", f"sac+synther utd {args.utd}"]
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            record = stored_run(
                args.out / f"{arm.replace(' ', '_')}-seed{seed}.json",
                functools.partial(run_arm, arm, seed, args),
                lambda r: f"{r['arm']:20s} seed {r['seed']}: final {r['final']:7.1f} ({r['seconds']:.0f} s)",
            )
            results.append(record)
    report(args, results, started)


def report(args: argparse.Namespace, results: list[dict], started: str) -> None:
    print(f"## SynthER online, SB3 SAC on {ENV_ID} ({started})\n")
    print(f"- machine: {machine()}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(
        f"- budget: {args.steps} environment steps per run; UTD K = {args.utd}; SynthER preset `{args.preset}` "
        f"with {args.train_steps} training steps, refit every {args.retrain_every} steps, {args.samples} samples "
        f"per refit, 50/50 batches; evaluation every {args.eval_every} steps on {args.eval_episodes} episodes; "
        f"seeds {args.seeds}"
    )
    print(
        "\n| arm | final return (mean ± std over seeds) [per seed] | mean of the last 3 evaluations | wall s per run |"
    )
    print("|---|---:|---:|---:|")
    for arm in args.arms:
        runs = [r for r in results if r["arm"] == arm]
        finals = [r["final"] for r in runs]
        tails = [float(np.mean([v for _, v in r["curve"][-3:]])) for r in runs]
        seconds = np.mean([r["seconds"] for r in runs])
        print(f"| {arm} | {mean_spread(finals, per_run=True)} | {mean_spread(tails)} | {seconds:.0f} |")
    png = args.out / "synther_online_sac.png"
    plot_curves(png, args.arms, results)
    print(f"\nPlot: `{png}`")


def plot_curves(path: Path, arms: list[str], results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, arm in enumerate(arms):
        curves = [r["curve"] for r in results if r["arm"] == arm]
        steps = [s for s, _ in curves[0]]
        values = np.array([[v for _, v in c] for c in curves])
        mean, std = values.mean(0), values.std(0)
        ax.plot(steps, mean, color=f"C{i}", label=arm)
        ax.fill_between(steps, mean - std, mean + std, color=f"C{i}", alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"{ENV_ID} return")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
