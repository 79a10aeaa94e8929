"""SB3 SAC trained only inside the learned models of a forged Hopper dataset, evaluated in the real environment,
beside SAC trained in the real environment for as many real steps as made the dataset.

    python benchmarks/envs_sac_in_models.py                 # hopper/medium-replay, 3 seeds
    python benchmarks/envs_sac_in_models.py --quick         # smoke test: hopper/medium-replay-tiny, < 3 minutes

Data: ``--dataset`` (default ``hopper/medium-replay``: the forge's SAC replay buffer up to its medium checkpoint,
i.e. every real step that made the dataset, so N = its number of transitions; for another level pass
``--real-steps``). Models: DyDiff's single-step models (preset ``--preset``: dynamics ensemble, reward model, the
task's termination rule), plus the trajectory model when a ``diffusion`` arm is asked for, fitted on the whole
dataset once (seed 0, cached under ``<out>/``).

Arms (``--arms``), SB3's SAC with default settings (256x256, batch 256, lr 3e-4, learning_starts 100, one gradient
step per step), seeds ``--seeds``:

- ``real``: SAC in Hopper-v5 for N real steps;
- ``<mode>`` or ``<mode>:<λ>``: SAC for ``--model-steps`` steps in ``LearnedDynamicsWrapper(gym.make(Hopper-v5),
  models, mode, reset_from="dataset", penalty=λ, max_episode_steps=--episode-steps)``: episodes start at dataset
  states and never step the simulator (MOPO-style short model episodes; λ = MOPO's uncertainty penalty).

Every ``--eval-every`` of its own steps each arm's deterministic actor is evaluated on ``--eval-episodes`` real
episodes (reset seeds 10_000 · seed + episode); scores are also given D4RL-normalised. Each finished run is
stored as JSON under ``--out`` (resumable). Prints a markdown report (also ``<out>/report.md``).
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
from common import Evaluate, Report, machine, mean_spread, normalized_scores, stored_run
from envs_state_error import forged, learned_models
from stable_baselines3 import SAC

from dyaug.envs import LearnedDynamicsWrapper, LearnedModels


def run_arm(arm: str, seed: int, models: LearnedModels | None, env_id: str, args: argparse.Namespace) -> dict:
    if arm == "real":
        env, steps = gym.make(env_id), args.real_steps
    else:
        mode, _, penalty = arm.partition(":")
        env = LearnedDynamicsWrapper(
            gym.make(env_id),
            models,
            mode,
            reset_from="dataset",
            penalty=float(penalty or 0.0),
            max_episode_steps=args.episode_steps,
        )
        steps = args.model_steps
    evaluate = Evaluate(env_id, args.eval_every, args.eval_episodes, seed)
    agent = SAC("MlpPolicy", env, seed=seed, device="cpu")
    start = time.perf_counter()
    agent.learn(total_timesteps=steps, callback=evaluate)
    if not evaluate.curve or evaluate.curve[-1][0] != steps:
        evaluate.curve.append((steps, evaluate.mean_return()))
    return {"arm": arm, "seed": seed, "steps": steps, "curve": evaluate.curve, "seconds": time.perf_counter() - start}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="hopper/medium-replay")
    parser.add_argument("--arms", nargs="+", default=["real", "ensemble", "ensemble:1.0"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--real-steps", type=int, default=None, help="default: the dataset's size")
    parser.add_argument("--model-steps", type=int, default=50_000)
    parser.add_argument("--episode-steps", type=int, default=100, help="model episode length (truncation)")
    parser.add_argument("--preset", default="cpu", help="DyDiff preset of the models")
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "envs_sac_in_models")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny dataset and preset, 1 seed")
    args = parser.parse_args()
    if args.quick:
        args.dataset, args.preset, args.seeds = "hopper/medium-replay-tiny", "tiny", [0]
        args.model_steps, args.episode_steps, args.eval_every, args.eval_episodes = 1_500, 50, 750, 2
        args.out = args.out.with_name(args.out.name + "_quick")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started, report = datetime.datetime.now().isoformat(timespec="seconds"), Report()

    data, env_id, name = forged(args.dataset)
    args.real_steps = args.real_steps or len(data)
    models, how = None, "not needed"
    if any(arm != "real" for arm in args.arms):
        models, how = learned_models(
            data,
            env_id,
            preset=args.preset,
            diffusion=any(arm.startswith("diffusion") for arm in args.arms),
            seed=0,
            device=torch.device("cpu"),
            cache=args.out,
            tag=name,
        )
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            record = stored_run(
                args.out / f"{arm.replace(':', '_')}-seed{seed}.json",
                functools.partial(run_arm, arm, seed, models, env_id, args),
                lambda r: f"{r['arm']:16s} seed {r['seed']}: final {r['curve'][-1][1]:7.1f} ({r['seconds']:.0f} s)",
            )
            results.append(record)

    report(f"## SB3 SAC inside learned models of `{name}`, evaluated in {env_id} ({started})\n")
    report(f"- machine: {machine()}")
    report(f"- command: `python {' '.join(sys.argv)}`")
    report(f"- dataset: {len(data)} transitions = {args.real_steps} real steps; models: preset `{args.preset}`, {how}")
    report(
        f"- model arms: {args.model_steps} SAC steps, episodes of {args.episode_steps} steps from dataset states; "
        f"evaluation every {args.eval_every} steps on {args.eval_episodes} real episodes; seeds {args.seeds}"
    )
    report("\n| arm | steps | final return (mean ± std) [per seed] | D4RL-normalised | best evaluation | wall s |")
    report("|---|---:|---:|---:|---:|---:|")
    for arm in args.arms:
        runs = [r for r in results if r["arm"] == arm]
        finals = [r["curve"][-1][1] for r in runs]
        best = [max(v for _, v in r["curve"]) for r in runs]
        label = f"real ({args.real_steps} real steps)" if arm == "real" else f"models `{arm}` (0 real steps)"
        report(
            f"| {label} | {runs[0]['steps']} | {mean_spread(finals, per_run=True)} | "
            f"{mean_spread(normalized_scores(env_id, finals))} | {mean_spread(best)} | "
            f"{np.mean([r['seconds'] for r in runs]):.0f} |"
        )
    report.save(args.out / "report.md")


if __name__ == "__main__":
    main()
