"""Cost of one DyDiff rollout phase, and of the `paper` preset's network, on this machine.

    python benchmarks/dydiff_rollout_cost.py --generator runs/dydiff_rollout_accuracy/generators/<dydiff-...>
    python benchmarks/dydiff_rollout_cost.py --quick      # smoke test: tiny preset fitted here, < 2 minutes

1. Phase: ``DyDiff.rollout(policy, starts)`` of a saved generator (``--generator``, e.g. the one
   ``dydiff_rollout_accuracy.py`` fitted; without it, the ``--preset`` generator is fitted on ``--dataset`` and
   saved under ``<out>/``) from ``--batch`` start states of ``--dataset`` with the forge's SAC actor as the policy:
   the ensemble's initial trajectory, then M = ``iterations`` rounds of resampling (``2 · sampler_steps − 1``
   network evaluations of a ``(batch, H, obs_dim + act_dim)`` window) and relabelling, then the filter. Timed for
   each ``--precisions`` (the trajectory network's ``sample_precision``, loaded with ``DyDiff.load(path,
   sample_precision=...)``), median of ``--repeats`` after one warm-up.
2. The ``paper`` preset's U-Net (58.8M parameters for Hopper; untrained weights: the cost does not depend on
   them): one denoiser evaluation on ``--paper-batch`` windows of H = 100 in each precision. A phase of 2048
   trajectories at M = 2 and 34 Heun steps (67 evaluations per iteration) is extrapolated from it linearly in the
   batch; the extrapolation is labelled as such.

The issue's reference for the official code on the 2-core reference CPU: one forward of the paper network at
batch 2048 takes 55 s, so one phase takes about 2 hours. That figure was measured outside this script, so it is
quoted, not compared as a same-run ratio. Prints a markdown report (also ``<out>/report.md``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import Report, forge_policy, machine, median_seconds
from envs_state_error import forged

from dyaug import DyDiff
from dyaug.device import resolve_device
from dyaug.diffusion.edm import EDMDenoiser
from dyaug.dydiff import PRESETS

PAPER_PHASE = {"batch": 2048, "iterations": 2, "evaluations": 2 * 34 - 1}


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def generator_path(args: argparse.Namespace) -> tuple[Path, str]:
    """The saved generator to time: ``--generator``, else one fitted on ``--dataset`` and cached."""
    if args.generator is not None:
        return args.generator, f"loaded from `{args.generator}`"
    path = args.out / f"dydiff-{args.preset}-{args.dataset.replace('/', '-')}-seed{args.seed}"
    if path.is_dir():
        return path, f"loaded from the cache `{path}`"
    start = time.perf_counter()
    data, env_id, _ = forged(args.dataset)
    DyDiff(args.preset, device=args.device, seed=args.seed).fit(data, env_id=env_id, progress=False).save(path)
    return path, f"fitted in {time.perf_counter() - start:.0f} s, saved to `{path}`"


def phase_costs(args: argparse.Namespace, report: Report) -> int:
    """Section 1; returns the rows' size obs_dim + act_dim."""
    path, how = generator_path(args)
    data, _, name = forged(args.dataset)
    policy, policy_info = forge_policy(name, "expert", args.device)
    rng = np.random.default_rng(args.seed)
    starts = data.observations[rng.choice(len(data), args.batch, replace=len(data) < args.batch)]
    report(f"### 1. One rollout phase of {args.batch} trajectories\n")
    report(f"- generator: {how}; start states: {args.batch} observations of `{name}` (seed {args.seed})")
    report(f"- policy: {policy_info}")
    report(
        "\n| sample precision | U-Net parameters | H | M | network evaluations | batch | phase s | per trajectory ms |"
    )
    report("|---|---:|---:|---:|---:|---:|---:|---:|")
    for precision in args.precisions:
        gen = DyDiff.load(path, device=args.device, sample_precision=precision)
        config, traj = gen.config, gen.model.trajectory_model
        evaluations = config.iterations * config.sampler().network_evaluations
        seconds = median_seconds(lambda g=gen: g.rollout(policy, starts, seed=args.seed), args.device, args.repeats)
        report(
            f"| {precision} | {parameters(traj.network) / 1e6:.2f}M | {config.horizon} | {config.iterations} | "
            f"{evaluations} | {args.batch} | {seconds:.1f} | {1e3 * seconds / args.batch:.1f} |"
        )
    report("\nTarget: the `cpu` preset's phase of 2048 trajectories in 60 s or less.")
    return data.obs_dim + data.act_dim


def paper_network_costs(args: argparse.Namespace, report: Report, transition_dim: int) -> None:
    config = PRESETS["paper"]
    torch.manual_seed(args.seed)
    network = config.network(transition_dim).to(args.device).eval().requires_grad_(False)
    x = torch.randn(args.paper_batch, config.horizon, transition_dim, device=args.device)
    batch, iterations, evaluations = PAPER_PHASE.values()
    report(
        f"\n### 2. The `paper` preset's network ({parameters(network) / 1e6:.1f}M parameters, H = {config.horizon})\n"
    )
    report("| precision | batch | one evaluation s | phase of 2048 trajectories, extrapolated |")
    report("|---|---:|---:|---:|")
    for precision in args.precisions:
        denoiser = EDMDenoiser(network, config.schedule(), precision=precision)
        with torch.no_grad():
            seconds = median_seconds(lambda d=denoiser: d(x, 1.0), args.device, args.repeats)
        phase = seconds * (batch / args.paper_batch) * iterations * evaluations
        report(f"| {precision} | {args.paper_batch} | {seconds:.2f} | {phase / 60:.0f} min ({phase / 3600:.1f} h) |")
    report(
        f"\nPhase = one evaluation x ({batch} / batch) x {iterations} iterations x {evaluations} evaluations; "
        "the official code's reference: 55 s per evaluation at batch 2048 on the reference CPU (about 2 h per phase)."
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", type=Path, default=None, help="a saved DyDiff (default: fit --preset)")
    parser.add_argument("--dataset", default="hopper/medium", help="a forged dataset: start states and policy")
    parser.add_argument("--preset", default="cpu", help="DyDiff preset fitted when --generator is not given")
    parser.add_argument("--batch", type=int, default=2048, help="trajectories per phase")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--paper-batch", type=int, default=64, help="windows per paper-network evaluation (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "dydiff_rollout_cost"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny preset, 256 trajectories")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.dataset, args.batch, args.paper_batch, args.repeats = "tiny", "hopper/expert-tiny", 256, 2, 1
        args.out = args.out.with_name(args.out.name + "_quick")
    args.device = resolve_device(args.device)
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started, report = datetime.datetime.now().isoformat(timespec="seconds"), Report()
    report(f"## DyDiff rollout cost ({started})\n")
    report(f"- machine: {machine()}")
    report(f"- command: `python {' '.join(sys.argv)}`\n")
    transition_dim = phase_costs(args, report)
    if args.paper_batch > 0:
        paper_network_costs(args, report, transition_dim)
    report.save(args.out / "report.md")


if __name__ == "__main__":
    main()
