"""What bf16 network evaluations do to the fidelity of sampled transitions.

    python benchmarks/precision_fidelity.py --dataset hopper/medium-replay --train-steps 20000 --samples 10000

Fits one SynthER model (residual MLP, EDM, trained in fp32) on a forged dataset, then samples the same
initial noise with the network evaluated in fp32 and in bf16 (the sampler state stays fp32 in both), with the
deterministic Heun sampler and with churn, and checks every sample in the MuJoCo simulator. Reports the
simulator-checked errors, sampling throughput and the bf16/fp32 speed ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time

import numpy as np
from common import machine

import dyaug.datasets
from dyaug.data import Transitions
from dyaug.device import resolve_device
from dyaug.metrics import dynamics_error
from dyaug.synther import SynthER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="hopper/medium-replay")
    parser.add_argument("--train-steps", type=int, default=20_000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = resolve_device(args.device)
    ds = dyaug.datasets.load(args.dataset)
    env_id = ds.env_spec.id
    data = Transitions.from_minari(ds)
    start = time.perf_counter()
    generator = SynthER(
        "cpu",
        device=device,
        seed=args.seed,
        width=args.width,
        depth=args.depth,
        train_steps=args.train_steps,
        train_precision="fp32",
    ).fit(data)
    train_s = time.perf_counter() - start

    samplers = {"deterministic": 0.0, "churn 80": 80.0}
    rows = []
    for name, churn in samplers.items():
        outputs = {}
        for precision in ("fp32", "bf16"):
            generator.config = dataclasses.replace(
                generator.config, sampler_steps=args.steps, churn=churn, sample_precision=precision
            )
            start = time.perf_counter()
            synthetic = generator.sample(args.samples, seed=args.seed, progress=False)
            seconds = time.perf_counter() - start
            outputs[precision] = synthetic
            rows.append((name, precision, args.samples / seconds, dynamics_error(env_id, synthetic).summary()))
        diff = np.abs(outputs["bf16"].next_observations - outputs["fp32"].next_observations)
        rows.append((name, "|bf16 - fp32| s'", float(diff.mean()), {"max": float(diff.max())}))

    print(f"### bf16 vs fp32 sampling fidelity ({dt.date.today().isoformat()})\n")
    print(
        f"Command: `python benchmarks/precision_fidelity.py --dataset {args.dataset} --train-steps "
        f"{args.train_steps} --width {args.width} --depth {args.depth} --samples {args.samples} --steps {args.steps} "
        f"--seed {args.seed}`; dataset {ds.id} ({len(data)} transitions); machine: "
        f"{machine(device)}; model {args.width}x{args.depth} trained in fp32 in {train_s:.0f} s.\n"
    )
    print(
        "| sampler | network precision | transitions/s | state err median | state err mean | reward err mean |"
        " terminal agree |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    speed = {}
    for name, precision, value, s in rows:
        if "state_error_median" not in s:
            print(f"| {name} | {precision} | mean {value:.2e}, max {s['max']:.2e} | | | | |")
            continue
        speed[name, precision] = value
        print(
            f"| {name} | {precision} | {value:.0f} | {s['state_error_median']:.4f} | {s['state_error_mean']:.4f} | "
            f"{s['reward_error_mean']:.4f} | {s['terminal_agreement']:.3f} |"
        )
    for name in samplers:
        print(f"\n{name}: bf16 / fp32 throughput = {speed[name, 'bf16'] / speed[name, 'fp32']:.2f}x")


if __name__ == "__main__":
    main()
