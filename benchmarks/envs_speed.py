"""Steps per second of the learned-model vector environment against the real MuJoCo environment.

    python benchmarks/envs_speed.py                # DyDiff `cpu` preset models, batches 1 to 4096
    python benchmarks/envs_speed.py --quick        # smoke test: tiny preset, batches 1 to 256, < 3 minutes

Timed: ``step`` with uniformly random actions (drawn beforehand), episodes restarting as they end (autoreset
included), after one untimed step; each measurement runs for at least ``--seconds`` and 3 steps. Steps per second
count every episode of a batch: ``batch · steps / seconds``.

- real: ``gymnasium.make(env_id)`` stepped in a Python loop (batch 1), and Gymnasium's ``SyncVectorEnv`` of that
  many copies (batches up to ``--max-real-batch``);
- models: :class:`dyaug.envs.LearnedDynamicsVectorEnv` in each mode, on ``--device``. The models are DyDiff's
  (``--preset``) fitted on ``--dataset`` (cached under ``<out>/``; ``--models PATH`` loads saved
  :class:`dyaug.envs.LearnedModels` instead). ``ensemble`` costs one ensemble forward, one reward forward and the
  task's termination rule (evaluated on the host) per step; ``diffusion`` one trajectory-model sample of
  ``2 · sampler_steps − 1`` network evaluations on a ``(batch, H, obs_dim + act_dim)`` window instead of the
  ensemble forward.

Prints a markdown table (also ``<out>/report.md``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from common import Report, machine, synchronize
from envs_state_error import forged, learned_models

from dyaug.device import resolve_device
from dyaug.envs import LearnedDynamicsVectorEnv, LearnedModels


def timed(step: Callable[[int], object], min_seconds: float, device: torch.device) -> tuple[float, int]:
    """``(seconds, steps)`` of calling ``step(i)`` for i = 0, 1, ... until ``min_seconds`` and 3 steps have passed."""
    step(0)
    synchronize(device)
    start, steps = time.perf_counter(), 0
    while steps < 3 or time.perf_counter() - start < min_seconds:
        step(steps)
        steps += 1
    synchronize(device)
    return time.perf_counter() - start, steps


def real_single(env_id: str, actions: np.ndarray, min_seconds: float) -> tuple[float, int]:
    env = gym.make(env_id)
    env.reset(seed=0)

    def step(i: int) -> None:
        _, _, terminated, truncated, _ = env.step(actions[i % len(actions), 0])
        if terminated or truncated:
            env.reset()

    return timed(step, min_seconds, torch.device("cpu"))


def real_vector(env_id: str, batch: int, actions: np.ndarray, min_seconds: float) -> tuple[float, int]:
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(batch)])
    envs.reset(seed=0)
    seconds = timed(lambda i: envs.step(actions[i % len(actions), :batch]), min_seconds, torch.device("cpu"))
    envs.close()
    return seconds


def learned(models: LearnedModels, mode: str, batch: int, actions: np.ndarray, min_seconds: float) -> tuple[float, int]:
    envs = LearnedDynamicsVectorEnv(models, batch, mode, reset_from="dataset")
    envs.reset(seed=0)
    return timed(lambda i: envs.step(actions[i % len(actions), :batch]), min_seconds, models.device)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="hopper/medium-replay")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--models", type=Path, default=None, help="saved LearnedModels to time instead of fitting")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 1024, 4096])
    parser.add_argument("--modes", nargs="+", default=["ensemble", "diffusion"])
    parser.add_argument("--max-real-batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum seconds per measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "envs_speed")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny preset, batches 1, 16, 256")
    args = parser.parse_args()
    if args.quick:
        args.dataset, args.preset, args.batches, args.seconds = "hopper/medium-replay-tiny", "tiny", [1, 16, 256], 1.0
        args.out = args.out.with_name(args.out.name + "_quick")
    args.device = resolve_device(args.device)
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started, report = datetime.datetime.now().isoformat(timespec="seconds"), Report()

    data, env_id, name = forged(args.dataset)
    if args.models is not None:
        models, how = LearnedModels.load(args.models, args.device), f"loaded from `{args.models}`"
    else:
        models, how = learned_models(
            data, env_id, preset=args.preset, diffusion="diffusion" in args.modes, seed=0, device=args.device,
            cache=args.out, tag=name,
        )  # fmt: skip
    space = models.action_space
    rng = np.random.default_rng(0)
    actions = rng.uniform(space.low, space.high, (64, max(args.batches), space.shape[0])).astype(np.float32)

    report(f"## Learned-model vector environment against {env_id}: steps per second ({started})\n")
    report(f"- machine: {machine(args.device)}")
    report(f"- command: `python {' '.join(sys.argv)}`")
    traj = models.trajectory_model
    sampler = "" if traj is None else f", H = {traj.horizon}, {traj.sampler.network_evaluations} network evaluations"
    report(f"- models: DyDiff preset `{args.preset}`{sampler}; {how}; device {args.device}")
    report("\n| environment | batch | steps/s | ms per step call |")
    report("|---|---:|---:|---:|")

    def row(label: str, batch: int, measured: tuple[float, int]) -> None:
        seconds, steps = measured
        report(f"| {label} | {batch} | {batch * steps / seconds:,.0f} | {1000 * seconds / steps:.2f} |")

    row(f"{env_id} (MuJoCo, one env)", 1, real_single(env_id, actions, args.seconds))
    for batch in (b for b in args.batches if 1 < b <= args.max_real_batch):
        row(f"{env_id} (MuJoCo, SyncVectorEnv)", batch, real_vector(env_id, batch, actions, args.seconds))
    for mode in args.modes:
        for batch in args.batches:
            row(f"LearnedDynamicsVectorEnv `{mode}`", batch, learned(models, mode, batch, actions, args.seconds))
    report.save(args.out / "report.md")


if __name__ == "__main__":
    main()
