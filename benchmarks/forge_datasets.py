"""Forge every level of the D4RL-style datasets and report how long each took and the returns reached.

    python benchmarks/forge_datasets.py --budget cpu --envs hopper halfcheetah walker2d --seed 0

Writes a markdown table to stdout (and appends it to --out when given). The SAC run of an environment is shared
by its levels: its time is reported once, as the "SAC" row, and the level rows are the time spent after it
(rollouts and writing). Run it on an empty store (or with --overwrite) to time the forge itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import machine

import dyaug.datasets
from dyaug.datasets.catalog import BUDGETS, LEVELS, resolve_env
from dyaug.datasets.forge import _provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="cpu", choices=list(BUDGETS))
    parser.add_argument("--envs", nargs="+", default=["hopper", "halfcheetah", "walker2d"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for env in args.envs:
        fenv = resolve_env(env)
        for level in LEVELS:
            start = time.perf_counter()
            ds = dyaug.datasets.forge(env, level, budget=args.budget, seed=args.seed, overwrite=args.overwrite)
            wall = time.perf_counter() - start
            prov = _provenance(ds.storage.metadata)
            sac = prov.get("sac", {})
            ret = float(prov.get("mean_episode_return", np.nan))
            norm = 100 * (ret - fenv.ref_min_score) / (fenv.ref_max_score - fenv.ref_min_score)
            rows.append(
                {
                    "env": fenv.env_id,
                    "level": level,
                    "transitions": ds.total_steps,
                    "episodes": ds.total_episodes,
                    "mean_return": ret,
                    "normalized": norm,
                    "wall_s": wall,
                    "sac_s": sac.get("train_seconds"),
                    "medium_step": sac.get("medium_step"),
                    "medium_eval": sac.get("medium_eval_return"),
                    "expert_step": sac.get("expert_step"),
                    "expert_eval": sac.get("expert_eval_return"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    budget = BUDGETS[args.budget]
    lines = [
        f"### Forge, budget `{args.budget}` ({dt.date.today().isoformat()})",
        "",
        f"Command: `python benchmarks/forge_datasets.py --budget {args.budget} --envs {' '.join(args.envs)} "
        f"--seed {args.seed}`; machine: {machine()}. Budget: {budget}.",
        "",
        "| env | level | transitions | episodes | mean episode return | D4RL-normalised | wall s (incl. SAC) |"
        " SAC s | medium ckpt (step: eval return) | expert ckpt (step: eval return) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        med = f"{r['medium_step']}: {r['medium_eval']}" if r["medium_step"] else ""
        exp = f"{r['expert_step']}: {r['expert_eval']}" if r["expert_step"] else ""
        lines.append(
            f"| {r['env']} | {r['level']} | {r['transitions']} | {r['episodes']} | {r['mean_return']:.1f} | "
            f"{r['normalized']:.1f} | {r['wall_s']:.0f} | {r['sac_s'] or ''} | {med} | {exp} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        with args.out.open("a") as f:
            f.write("\n" + table + "\n")


if __name__ == "__main__":
    main()
