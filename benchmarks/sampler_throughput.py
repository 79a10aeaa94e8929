"""Sampling throughput of SynthER-style denoisers, next to the machine's matmul throughput.

Measures, in one run:

- transitions/s of EDM Heun sampling (``--steps`` steps, 2N-1 network evaluations, no churn) with
  :class:`ResidualMLP` 256x3 and 1024x6 on Hopper-sized vectors (D = 27; untrained weights: speed only),
  in fp32 and bf16 (``EDMDenoiser(precision=...)``);
- fp32 and bf16 matmul throughput (GFLOP/s of ``(M x 1024) @ (1024 x 1024)``) and the ratio of the
  network's achieved FLOP/s (2 FLOP per multiply-add of its Linear layers) to that peak;
- a bf16 fidelity proxy: max / mean |x_bf16 - x_fp32| of samples drawn from the same initial noise.

Prints a markdown table with medians over ``--repeats`` runs. Usage::

    python benchmarks/sampler_throughput.py                 # batch 10,000, 32 steps, 3 repeats
    python benchmarks/sampler_throughput.py --quick         # smoke test, well under a minute on a CPU
    python benchmarks/sampler_throughput.py --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys

import torch
from common import flops_per_row, machine, matmul_gflops, median_seconds

from dyaug.device import resolve_device
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule
from dyaug.diffusion.networks import ResidualMLP
from dyaug.diffusion.samplers import HeunSampler


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    device: str = "auto"
    batch: int = 10_000  # transitions sampled per run
    steps: int = 32  # Heun steps (2 * steps - 1 network evaluations)
    repeats: int = 3  # timed runs per measurement (the median is reported)
    dim: int = 27  # Hopper: 2 * 11 (s, s') + 3 (a) + 1 (r) + 1 (done)
    models: tuple[tuple[int, int], ...] = ((256, 3), (1024, 6))  # (width, depth)
    matmul_rows: int = 10_000  # M in (M x 1024) @ (1024 x 1024)
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.batch, self.steps, self.repeats, self.matmul_rows) < 1:
            raise ValueError(f"batch, steps, repeats and matmul_rows must be >= 1, got {self}.")

    @classmethod
    def quick(cls, device: str) -> BenchmarkConfig:
        return cls(device=device, batch=256, steps=4, repeats=1, matmul_rows=1024)


def main(config: BenchmarkConfig) -> None:
    device = resolve_device(config.device)
    schedule, sampler = EDMSchedule.synther(), HeunSampler(n_steps=config.steps)
    peak = {
        p: matmul_gflops(config.matmul_rows, d, device, config.repeats)
        for p, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }

    rows = []
    for width, depth in config.models:
        torch.manual_seed(config.seed)
        net = ResidualMLP(config.dim, width=width, depth=depth).to(device).eval()
        samples = {}
        for precision in ("fp32", "bf16"):
            denoiser = EDMDenoiser(net, schedule, precision)

            def draw(denoiser: EDMDenoiser = denoiser) -> torch.Tensor:
                generator = torch.Generator(device).manual_seed(config.seed)
                return sampler.sample(denoiser, schedule, (config.batch, config.dim), generator=generator)

            seconds = median_seconds(draw, device, config.repeats)
            samples[precision] = draw()
            gflops = sampler.network_evaluations * config.batch * flops_per_row(net) / seconds / 1e9
            rows.append(
                [
                    f"{width}x{depth}",
                    f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M",
                    precision,
                    f"{seconds:.3f}",
                    f"{config.batch / seconds:,.0f}",
                    f"{gflops:,.1f}",
                    f"{gflops / peak[precision]:.1%}",
                ]
            )
        diff = (samples["bf16"] - samples["fp32"]).abs()
        rows[-1] += [f"{diff.max().item():.3g} / {diff.mean().item():.3g}"]
        rows[-2] += ["(reference)"]

    print(f"## Sampler throughput ({datetime.datetime.now().isoformat(timespec='seconds')})\n")
    print(f"- machine: {machine(device)}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(f"- settings: {config}")
    print(
        f"- sampler: Heun, {config.steps} steps ({sampler.network_evaluations} network evaluations), "
        f"no churn, D = {config.dim}, batch {config.batch:,}; median of {config.repeats} after a warm-up"
    )
    print(
        f"- matmul ({config.matmul_rows} x 1024) @ (1024 x 1024): fp32 {peak['fp32']:,.1f} GFLOP/s, "
        f"bf16 {peak['bf16']:,.1f} GFLOP/s\n"
    )
    header = [
        "model",
        "params",
        "precision",
        "s / batch",
        "transitions/s",
        "network GFLOP/s",
        "of matmul peak",
        "max / mean abs diff vs fp32",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--batch", type=int, help=f"transitions per run (default {BenchmarkConfig.batch})")
    parser.add_argument("--steps", type=int, help=f"Heun steps (default {BenchmarkConfig.steps})")
    parser.add_argument("--repeats", type=int, help=f"timed runs (default {BenchmarkConfig.repeats})")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (explicit flags still apply)")
    args = parser.parse_args()
    base = BenchmarkConfig.quick(args.device) if args.quick else BenchmarkConfig(device=args.device)
    chosen = {
        k: v for k, v in (("batch", args.batch), ("steps", args.steps), ("repeats", args.repeats)) if v is not None
    }
    main(dataclasses.replace(base, **chosen))
