"""Everything that needs a GPU, measured in one short run: the paper-sized samplers, training steps and actors, each
beside its physical floor (its FLOPs at the matrix-product throughput measured in the same run).

    bash scripts/device_check.sh                         # on a GPU machine: tests, then this; under 8 minutes
    bash scripts/device_check.sh --quick --device cpu    # CI: the same code paths, small sizes, under 3 minutes

Sizing (GPU, full run): each measurement times a few calls after a warm-up and scales to the stated workload
(the SynthER paper sampler's 255 evaluations at batch 100k from 15 evaluations; a DyDiff paper phase, 2048
trajectories x 2 iterations x 67 evaluations of the H = 100 U-Net, from 4 evaluations at batch 512), so that the
whole check, torch.compile variants included, stays near 5 minutes on an H100-class GPU. ``--quick`` runs the ``tiny``
presets' networks at small batches, without compilation, and bf16 only where the device computes it natively.
Networks are untrained (speed only; Hopper's dimensions). Writes ``device_check.json`` and ``device_check.md``
under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import machine, timings

from dyaug.device import autocast, resolve_device, resolve_precision
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule, edm_loss
from dyaug.diffusion.samplers import HeunSampler
from dyaug.dydiff.config import PRESETS as DYDIFF_PRESETS
from dyaug.synther.config import PRESETS as SYNTHER_PRESETS

OBS, ACT = 11, 3  # Hopper
ROW = 2 * OBS + ACT + 2


def seconds(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Median wall seconds of ``fn`` after one warm-up call."""
    return statistics.median(timings(fn, device, repeats))


def flops_of(fn: Callable[[], object]) -> float:
    """FLOPs of one call (torch's FLOP counter: matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, precision: str, n: int) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def product() -> None:
        with torch.no_grad(), autocast(device, precision):  # type: ignore[arg-type]
            a @ b

    return 2 * n**3 / seconds(product, device)


def maybe_compiled(module: torch.nn.Module, compile_it: bool) -> torch.nn.Module:
    return torch.compile(module) if compile_it else module


SIZE = "paper"  # network sizes: "paper", or "tiny" with --quick (the same code paths)


def synther_sampler(device: torch.device, precision: str, compiled: bool, batch: int, evals: int) -> dict:
    """Seconds of ``evals`` evaluations of the paper denoiser at ``batch`` rows, scaled to the paper sampler's 255."""
    config = SYNTHER_PRESETS[SIZE]
    torch.manual_seed(0)
    net = maybe_compiled(config.network(ROW).to(device).eval(), compiled)
    denoiser = EDMDenoiser(net, EDMSchedule(), precision=precision)  # type: ignore[arg-type]
    x = torch.randn(batch, ROW, device=device)
    steps = (evals + 1) // 2
    sampler = HeunSampler(n_steps=steps)
    spent = seconds(lambda: sampler.sample(denoiser, EDMSchedule(), (batch, ROW), x_init=x), device, repeats=1)
    with torch.no_grad():
        flops = flops_of(lambda: denoiser(x, 1.0)) * 255
    total = spent * 255 / sampler.network_evaluations
    return {"seconds_255_evals": total, "transitions_per_s": batch / total, "flops": flops}


def synther_training(device: torch.device, precision: str, steps: int) -> dict:
    config = SYNTHER_PRESETS[SIZE]
    torch.manual_seed(0)
    net = config.network(ROW).to(device)
    denoiser = EDMDenoiser(net, EDMSchedule(), precision=precision)  # type: ignore[arg-type]
    batch = torch.randn(config.batch_size, ROW, device=device)
    step = training_steps(denoiser, net, batch, steps)

    flops = 3 * flops_of(lambda: denoiser(batch, 1.0))  # forward + backward ~ 3 forwards
    return {"steps_per_s": steps / seconds(step, device, repeats=1), "flops_per_step": flops}


def training_steps(denoiser: EDMDenoiser, net: torch.nn.Module, batch: torch.Tensor, steps: int) -> Callable[[], None]:
    """``steps`` AdamW steps of the EDM loss on one fixed ``batch`` (speed only), as one call."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-4)

    def step() -> None:
        for _ in range(steps):
            loss = edm_loss(denoiser, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return step


def dydiff_unet(device: torch.device) -> tuple[torch.nn.Module, int, int]:
    config = DYDIFF_PRESETS[SIZE]
    torch.manual_seed(0)
    return config.network(OBS + ACT).to(device), config.horizon, config.batch_size


def dydiff_training(device: torch.device, precision: str, steps: int) -> dict:
    net, horizon, batch_size = dydiff_unet(device)
    denoiser = EDMDenoiser(net, EDMSchedule(sigma_data=0.5), precision=precision)  # type: ignore[arg-type]
    batch = torch.randn(batch_size, horizon, OBS + ACT, device=device)
    step = training_steps(denoiser, net, batch, steps)

    flops = 3 * flops_of(lambda: denoiser(batch, 1.0))
    return {"steps_per_s": steps / seconds(step, device, repeats=1), "flops_per_step": flops}


def dydiff_phase(device: torch.device, precision: str, compiled: bool, batch: int, evals: int) -> dict:
    """One paper rollout phase's denoiser work (2048 trajectories x 2 iterations x 67 evaluations), scaled from
    ``evals`` evaluations at ``batch`` windows."""
    net, horizon, _ = dydiff_unet(device)
    net = maybe_compiled(net.eval(), compiled)
    denoiser = EDMDenoiser(net, EDMSchedule(sigma_data=0.5), precision=precision)  # type: ignore[arg-type]
    x = torch.randn(batch, horizon, OBS + ACT, device=device)

    def run() -> None:
        with torch.no_grad():
            for _ in range(evals):
                denoiser(x, 1.0)

    spent = seconds(run, device, repeats=1)
    scale = (2048 / batch) * 2 * 67 / evals
    with torch.no_grad():
        flops = flops_of(lambda: denoiser(x, 1.0)) * scale * evals
    return {"phase_seconds": spent * scale, "flops": flops}


def actors(device: torch.device, batches: tuple[int, ...]) -> dict:
    from actor_throughput import BenchmarkConfig, build_actors, per_call_seconds

    config = BenchmarkConfig(device=str(device), repeats=3, min_seconds=0.2)
    calls = build_actors(config, device)
    out = {}
    for batch in batches:
        obs = np.random.default_rng(0).normal(size=(batch, OBS)).astype(np.float32)
        for name in ("SRPO", "Diffusion-QL"):
            prepare, act = calls[(name, "torch module")]
            x = prepare(obs)
            per_call = statistics.median(per_call_seconds(lambda act=act, x=x: act(x), device, config))
            out[f"{name} batch {batch}"] = batch / per_call
    return out


def environment(device: torch.device) -> dict:
    info = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
    }
    if device.type == "cuda":
        info |= {"gpu": torch.cuda.get_device_name(device), "bf16_supported": torch.cuda.is_bf16_supported()}
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes, no compilation (CI on a CPU)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    out = args.out or Path(os.environ.get("OUT") or Path(__file__).resolve().parents[1] / "runs" / "device_check")
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (parity and honest peaks)
    torch.backends.cudnn.allow_tf32 = False
    global SIZE
    quick = args.quick
    SIZE = "tiny" if quick else "paper"
    big = device.type == "cuda" and not quick
    result: dict = {"environment": environment(device), "quick": quick, "measurements": {}}
    m = result["measurements"]
    n = 8192 if big else 512
    m["matmul"] = {p: matmul_peak(device, p, n) for p in ("fp32", "bf16")}
    compile_variants = (False, True) if big else (False,)
    batch, evals = (100_000, 15) if big else (256, 3)
    # bf16 where this device computes it natively; on a CPU that emulates it (10-300x slower) the quick run skips it
    precisions = ("fp32", "bf16") if not quick or resolve_precision("auto", device) == "bf16" else ("fp32",)
    result["precisions"] = list(precisions)
    for precision in precisions:
        for compiled in compile_variants:
            key = f"synther sampler {precision}{' compiled' if compiled else ''}"
            m[key] = synther_sampler(device, precision, compiled, batch, evals)
        m[f"synther training {precision}"] = synther_training(device, precision, 20 if big else 2)
        m[f"dydiff training {precision}"] = dydiff_training(device, precision, 10 if big else 1)
        for compiled in compile_variants:
            key = f"dydiff phase {precision}{' compiled' if compiled else ''}"
            m[key] = dydiff_phase(device, precision, compiled, 512 if big else 8, 4 if big else 1)
    m["actors"] = actors(device, (1, 256))
    (out / "device_check.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (out / "device_check.md").write_text(table)
    print(table)


def markdown(result: dict) -> str:
    env, m = result["environment"], result["measurements"]
    peak = m["matmul"]
    lines = [
        f"### Device check ({env['date']}{', quick: tiny networks' if result['quick'] else ', paper networks'})",
        "",
        f"- machine: {env['machine']}; torch {env['torch']}, CUDA {env['cuda']}",
        "- command: `bash scripts/device_check.sh" + (" --quick --device cpu`" if result["quick"] else "`"),
        f"- matmul throughput in this run: fp32 {peak['fp32'] / 1e12:.2f} TFLOP/s, bf16 {peak['bf16'] / 1e12:.2f} "
        "TFLOP/s (TF32 off)",
        "",
        "| measurement | value | physical floor (FLOPs / matmul peak) | of peak |",
        "|---|---:|---:|---:|",
    ]
    for key, value in m.items():
        if key in ("matmul", "actors"):
            continue
        precision = "bf16" if "bf16" in key else "fp32"
        if "sampler" in key:
            floor = value["flops"] / peak[precision]
            lines.append(
                f"| {key}, 255 evaluations at the measured batch | {value['seconds_255_evals']:.2f} s "
                f"({value['transitions_per_s']:,.0f} transitions/s) | {floor:.2f} s | "
                f"{floor / value['seconds_255_evals']:.0%} |"
            )
        elif "phase" in key:
            floor = value["flops"] / peak[precision]
            lines.append(
                f"| {key} (2048 x 2 x 67) | {value['phase_seconds']:.2f} s | {floor:.2f} s | "
                f"{floor / value['phase_seconds']:.0%} |"
            )
        else:
            floor = value["flops_per_step"] / peak[precision]
            lines.append(
                f"| {key} | {value['steps_per_s']:.1f} steps/s | {1 / floor:,.0f} steps/s | "
                f"{value['steps_per_s'] * floor:.0%} |"
            )
    lines += ["", "| actor | actions/s |", "|---|---:|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in m["actors"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
