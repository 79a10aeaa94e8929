"""DyDiff's rows with the trajectory's next state against the ensemble's, checked in the simulator.

A DyDiff rollout stores rows (s_t, a_t, r_t, s'_t, done_t). The official code takes s'_t = s_{t+1}, the next state
of the generated trajectory; ``DyDiff(..., labels="models")`` takes s'_t = f(s_t, a_t), the dynamics ensemble's
one-step prediction (:mod:`dyaug.dydiff.rollout`). Both come from the same rollout: the same seed gives the same
states and actions, and only the labels differ. This script rolls a saved generator out with ``--starts`` start
states drawn from the dataset (seeded) under the forge teacher's medium and expert actors, with no filter, and
checks every row in the simulator (:func:`dyaug.metrics.dynamics_error`).

    python benchmarks/dydiff_labels.py --generator runs/offline_rl_study/generators/hopper-medium-replay-v0-seed0-dydiff

The generator is any saved DyDiff fitted on ``--dataset`` (the study's stored one above, made by
``offline_rl_study.py --arms dydiff``).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import torch
from common import forge_policy, machine

import dyaug.datasets
from dyaug import DyDiff, Transitions
from dyaug.datasets.catalog import parse_dataset_id, resolve_env
from dyaug.metrics import dynamics_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, required=True, help="a saved DyDiff directory")
    parser.add_argument("--dataset", default="hopper/medium-replay", help="the forged dataset it was fitted on")
    parser.add_argument("--starts", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    env_id = resolve_env(parse_dataset_id(args.dataset)[0]).env_id
    data = Transitions.from_minari(dyaug.datasets.load(args.dataset))
    starts = data.observations[np.random.default_rng(args.seed).choice(len(data), args.starts, replace=False)]
    print(f"### DyDiff's next-state labels ({dt.date.today().isoformat()})\n")
    print(f"- machine: {machine()}")
    print(f"- generator: `{args.generator.name}`; dataset {args.dataset} ({len(data):,} transitions), {env_id}")
    print(f"- {args.starts} start states drawn from the dataset and the rollout, seed {args.seed}; no filter\n")
    print("| policy | rows | labels | state err median | mean | reward err mean | terminal agree |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for checkpoint in ("medium", "expert"):
        policy, _ = forge_policy(args.dataset, checkpoint, torch.device("cpu"))
        for labels in ("trajectory", "models"):
            generator = DyDiff.load(args.generator, device="cpu", labels=labels)
            rows = generator.rollout(policy, starts, filter="none", seed=args.seed)
            report = dynamics_error(env_id, rows, threads=args.threads)
            print(
                f"| {checkpoint} | {len(rows):,} | {labels} | {report.median_state_error:.3f} | "
                f"{report.mean_state_error:.3f} | {report.mean_reward_error:.4f} | {report.terminal_agreement:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
