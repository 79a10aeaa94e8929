"""SynthER sampling speed: the paper's denoiser at 128 stochastic Heun steps, then fewer deterministic steps.

    python benchmarks/synther_sampling_speed.py --checkpoint hopper_w1024.safetensors   # a trained 1024x6 SynthER
    python benchmarks/synther_sampling_speed.py --dataset hopper/medium-replay            # trains one first (slow)
    python benchmarks/synther_sampling_speed.py --quick --threads 1                        # smoke test, minutes

1. Equal network and steps. A fitted SynthER (Lu et al. 2023, arXiv 2303.06614; default a 1024x6 residual MLP,
   the official ``resmlp_w1024`` config, D = 27 on Hopper) sampled with the paper's sampler: stochastic Heun,
   128 steps, churn 80 on sigma in [0.05, 50], s_noise 1.003 (255 network evaluations). Variants of the network
   evaluation: ``fp32 reference`` (the computation of the official code: ``ResidualMLP.fused_inference=False``),
   ``fp32 in place`` (dyaug's default inference path), ``bf16`` (``EDMDenoiser(precision="bf16")``: autocast,
   AMX tiles when the CPU has them) and ``int8 (experiment)`` (``torch.ao`` dynamic int8 quantization of every
   Linear; not part of dyaug). Seconds per network evaluation are timed on ``--timed-steps`` steps of the same
   sampler at the full batch (``--full``: the whole 128-step run); transitions/s = batch / (255 s_eval). Ratios
   are given against the fp32 reference measured in the same run and against the matmul throughput of the
   variant's data type, (batch x 1024) @ (1024 x 1024), measured in the same run.
2. Fidelity. ``--check`` samples per variant from the same initial noise, checked in the MuJoCo simulator
   (:func:`dyaug.metrics.dynamics_error`): next-state error median/mean and reward error, relative to fp32.
3. Fewer steps. Heun with N steps (2N - 1 evaluations) for N in ``--steps``, deterministic (churn 0, EDM
   Algorithm 1) and with the paper's churn settings, and DPM-Solver++(2M) with N steps (N evaluations), as the
   ODE solver and in its SDE form (``eta = 1``), fp32 in place, same checks: the fewest evaluations whose median
   and mean state error stay within ``--tolerance`` of the 255-evaluation sampler's.

Prints a markdown report (date, machine, command, settings, tables).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import sys
import time
import warnings

import numpy as np
import torch
from common import flops_per_row, machine, median_seconds
from common import matmul_gflops as float_matmul_gflops
from torch import nn

from dyaug import SynthER
from dyaug.data import Transitions
from dyaug.device import network_width, precision_timings, resolve_precision
from dyaug.diffusion.edm import EDMDenoiser
from dyaug.diffusion.samplers import DPMSolverSampler, DPMSolverSDESampler, HeunSampler, _Sampler

PAPER_SAMPLER = HeunSampler.synther()  # 128 steps, churn 80, s_tmin 0.05, s_tmax 50, s_noise 1.003


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of evaluating the network F: its name, the module, the autocast precision, the matmul dtype."""

    name: str
    network: nn.Module
    precision: str
    matmul_dtype: str


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a SynthER checkpoint (SynthER.save); else one is trained here")
    parser.add_argument("--dataset", default="hopper/medium-replay", help="Minari id or forge name to train on")
    parser.add_argument("--env", default=None, help="simulator for the checks (default: the dataset's env)")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--train-steps", type=int, default=20_000)
    parser.add_argument(
        "--labels", default="joint", choices=["joint", "models"],
        help="joint: the paper's model, diffusing s' and r too (default); models: the cpu preset's labelled variant",
    )  # fmt: skip
    parser.add_argument("--save-checkpoint", default=None, help="where to save the model trained here")
    parser.add_argument("--batch", type=int, default=10_000, help="transitions per sampler call (speed)")
    parser.add_argument("--timed-steps", type=int, default=4, help="Heun steps timed per variant")
    parser.add_argument("--full", action="store_true", help="time the whole 128-step sampler instead")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant (median reported)")
    parser.add_argument("--check", type=int, default=2_000, help="samples per variant checked in the simulator")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 6, 8, 12, 16, 24, 32, 48, 64])
    parser.add_argument("--tolerance", type=float, default=0.05, help="allowed relative increase of the error")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--speed-only", action="store_true", help="part 1 timings only (no simulator needed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (explicit flags still apply)")
    args = parser.parse_args()
    if args.quick:
        quick = {"dataset": "dyaug/hopper/random-tiny-v0", "train_steps": 50, "batch": 500, "timed_steps": 2,
                 "repeats": 1, "check": 100, "steps": [8, 16]}  # fmt: skip
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
        for name, value in quick.items():
            if name not in given:
                setattr(args, name, value)
    return args


def matmul_gflops(rows: int, dtype: str, device: torch.device, repeats: int) -> float:
    """Throughput of (rows x 1024) @ (1024 x 1024) in ``dtype``; "int8" times a dynamically quantized Linear."""
    if dtype != "int8":
        return float_matmul_gflops(rows, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype], device, repeats)
    layer = quantize_int8(nn.Sequential(nn.Linear(1024, 1024, bias=False)))
    a = torch.randn(rows, 1024, device=device)
    with torch.no_grad():
        return 2 * rows * 1024 * 1024 / median_seconds(lambda: layer(a), device, repeats) / 1e9


def quantize_int8(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every Linear dynamically quantized to int8 (weights per tensor, activations per
    call); it runs the reference path since its Linear layers keep no float weight."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(net), {nn.Linear}, dtype=torch.qint8)
    if hasattr(quantized, "fused_inference"):
        quantized.fused_inference = False
    return quantized


# ------------------------------------------------------------------------------------------------ model
def fitted_generator(args: argparse.Namespace, device: torch.device) -> tuple[SynthER, str, float]:
    """The SynthER to sample from, the environment id for the checks and the training seconds (0 if loaded)."""
    if args.checkpoint:
        generator = SynthER.load(args.checkpoint, device=device)
        env_id = args.env or ("" if args.speed_only else _env_of(generator.model.training_data.get("id")))
        return generator, env_id, 0.0
    import dyaug.datasets

    dataset = dyaug.datasets.load(args.dataset)
    start = time.perf_counter()
    generator = SynthER(
        "cpu", device=device, seed=args.seed, width=args.width, depth=args.depth, train_steps=args.train_steps,
        labels=args.labels,
    ).fit(dataset)  # fmt: skip
    seconds = time.perf_counter() - start
    if args.save_checkpoint:
        generator.save(args.save_checkpoint)
    return generator, args.env or dataset.env_spec.id, seconds


def _env_of(dataset_id: str | None) -> str:
    import minari

    if dataset_id is None or dataset_id not in minari.list_local_datasets():
        raise ValueError(f"cannot tell the environment of training data {dataset_id!r}; pass --env (e.g. Hopper-v5).")
    return minari.load_dataset(dataset_id).env_spec.id


def variants(generator: SynthER, device: torch.device) -> list[Variant]:
    """The network evaluations compared; the int8 one only on a CPU (torch's dynamic quantization is CPU-only)."""
    network = generator.model.network
    reference = copy.deepcopy(network)
    reference.fused_inference = False
    found = [
        Variant("fp32 reference", reference, "fp32", "fp32"),
        Variant("fp32 in place", network, "fp32", "fp32"),
        Variant("bf16", network, "bf16", "bf16"),
    ]
    if device.type == "cpu":
        found.append(Variant("int8 (experiment)", quantize_int8(network), "fp32", "int8"))
    return found


@torch.no_grad()
def draw_rows(
    generator: SynthER, variant: Variant, sampler: _Sampler, n: int, seed: int, device: torch.device
) -> torch.Tensor:
    """``n`` normalised rows from one sampler call; the same seed draws the same noise for every variant."""
    denoiser = EDMDenoiser(variant.network, generator.config.schedule(), precision=variant.precision)
    noise = torch.Generator(device).manual_seed(seed)
    shape = (n, generator.model.codec.model_dim)
    return sampler.sample(denoiser, generator.config.schedule(), shape, generator=noise, device=device)


def to_transitions(generator: SynthER, rows: torch.Tensor) -> Transitions:
    """Transitions of normalised rows; a ``labels="models"`` generator's (s, a) labelled by its models."""
    return generator.decode(generator.model.codec.decode(rows.cpu().numpy()))


def check(env_id: str, samples: Transitions) -> dict[str, float]:
    from dyaug.metrics import dynamics_error

    s = dynamics_error(env_id, samples).summary()
    return {k: s[k] for k in ("state_error_median", "state_error_mean", "reward_error_mean", "fraction_checkable")}


# ------------------------------------------------------------------------------------------------ report
def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def versus(fid: dict[str, float], reference: dict[str, float], key: str) -> str:
    """``value (+x.x%)``: an error and its change relative to the reference's (``-`` when not checked)."""
    if key not in fid:
        return "-"
    return f"{fid[key]:.4f} ({fid[key] / reference[key] - 1:+.1%})"


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator, env_id, train_seconds = fitted_generator(args, device)
    config, layout = generator.config, generator.model.layout
    compared = variants(generator, device)
    dtypes = sorted({variant.matmul_dtype for variant in compared})
    peak = {dtype: matmul_gflops(args.batch, dtype, device, args.repeats) for dtype in dtypes}
    flop_per_eval = flops_per_row(generator.model.network) * args.batch
    timed_sampler = PAPER_SAMPLER if args.full else dataclasses.replace(PAPER_SAMPLER, n_steps=args.timed_steps)
    evaluations = PAPER_SAMPLER.network_evaluations

    speed, fidelity, samples = {}, {}, {}
    for variant in compared:

        def timed_run(variant: Variant = variant) -> torch.Tensor:
            return draw_rows(generator, variant, timed_sampler, args.batch, args.seed, device)

        seconds = median_seconds(timed_run, device, args.repeats)
        speed[variant.name] = (seconds / timed_sampler.network_evaluations, variant.matmul_dtype)
        if args.speed_only:
            fidelity[variant.name] = {}
            continue
        samples[variant.name] = to_transitions(
            generator, draw_rows(generator, variant, PAPER_SAMPLER, args.check, args.seed + 1, device)
        )
        fidelity[variant.name] = check(env_id, samples[variant.name])

    families = {
        "deterministic": lambda n: HeunSampler(n_steps=n),
        "churn 80": lambda n: dataclasses.replace(PAPER_SAMPLER, n_steps=n),
        "DPM-Solver++(2M)": lambda n: DPMSolverSampler(n_steps=n),
        "DPM-Solver++(2M) SDE": lambda n: DPMSolverSDESampler(n_steps=n),
    }
    sweep: dict[str, dict[int, dict[str, float]]] = {family: {} for family in families}
    in_place = compared[1]
    for family, make_sampler in families.items():
        for n_steps in [] if args.speed_only else sorted(args.steps):
            rows = draw_rows(generator, in_place, make_sampler(n_steps), args.check, args.seed + 1, device)
            sweep[family][n_steps] = check(env_id, to_transitions(generator, rows))

    # ------------------------------------------------------------------------------ print the report
    print(f"## SynthER sampling speed ({datetime.datetime.now().isoformat(timespec='seconds')})\n")
    print(f"- machine: {machine(device)}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    origin = f"checkpoint {args.checkpoint}" if args.checkpoint else f"trained here in {train_seconds:.0f} s"
    print(
        f"- model: {config.width}x{config.depth} residual MLP, dim_t {config.dim_t}, D = {layout.dim}, "
        f"{sum(p.numel() for p in generator.model.network.parameters()) / 1e6:.2f}M parameters, {origin}, "
        f"training data {generator.model.training_data}; simulator {env_id}"
    )
    print(
        f"- paper sampler: {PAPER_SAMPLER}; {evaluations} network evaluations; batch {args.batch:,}; "
        f"s_eval timed on {timed_sampler.n_steps} steps ({timed_sampler.network_evaluations} evaluations), "
        f"median of {args.repeats} after a warm-up"
    )
    width = network_width(generator.model.network)
    auto = resolve_precision("auto", device, width=width)
    timing = precision_timings()[f"{device} width {width}"]
    print(
        f"- precision 'auto' (every preset's default) picks **{auto}** for this network on this device "
        f"(one product of its width: fp32 {timing['fp32_ms']:.2f} ms, bf16 {timing['bf16_ms']:.2f} ms)"
    )
    print(
        "- matmul (batch x 1024) @ (1024 x 1024): "
        + ", ".join(f"{dtype} {gflops:,.0f} GFLOP/s" for dtype, gflops in peak.items())
        + "\n"
    )

    print("### 1. Equal network and steps (255 evaluations) and 2. fidelity\n")
    reference_s = speed["fp32 reference"][0]
    reference_fid = fidelity["fp32 reference"]
    rows = []
    for name, (s_eval, dtype) in speed.items():
        gflops = flop_per_eval / s_eval / 1e9
        fid = fidelity[name]
        rows.append(
            [
                name,
                f"{s_eval:.3f}",
                f"{args.batch / (evaluations * s_eval):,.1f}",
                f"{reference_s / s_eval:.2f}x",
                f"{gflops:,.0f}",
                f"{gflops / peak['fp32']:.0%} / {gflops / peak[dtype]:.0%}",
                versus(fid, reference_fid, "state_error_median"),
                versus(fid, reference_fid, "state_error_mean"),
                f"{fid['reward_error_mean']:.4f}",
            ]
        )
    print(
        table(
            ["network evaluation", "s / evaluation", "transitions/s", "vs fp32 reference", "network GFLOP/s",
             "of fp32 / own-dtype matmul", "state err median", "state err mean", "reward err mean"],
            rows,
        )
    )  # fmt: skip
    if args.speed_only:
        return
    diff = np.abs(samples["bf16"].next_observations - samples["fp32 in place"].next_observations)
    print(f"\nbf16 vs fp32 s' from the same noise: mean |diff| {diff.mean():.3g}, max {diff.max():.3g}.\n")

    print(f"### 3. Fewer steps, fp32 in place ({args.check} samples each)\n")
    in_place_s = speed["fp32 in place"][0]
    keys = ("state_error_median", "state_error_mean")
    rows, verdicts = [], []
    for family, results in sweep.items():
        within = {n: all(fid[k] <= (1 + args.tolerance) * reference_fid[k] for k in keys) for n, fid in results.items()}
        # The fewest steps from which on every larger N of the sweep stays within the tolerance too.
        fewest = next((n for n in results if all(within[m] for m in results if m >= n)), None)
        verdicts.append(
            f"{family}: {families[family](fewest).network_evaluations} evaluations (N = {fewest})"
            if fewest is not None
            else f"{family}: none of N in {sorted(results)}"
        )
        for n_steps, fid in results.items():
            evals = families[family](n_steps).network_evaluations
            rows.append(
                [
                    family,
                    f"{n_steps}",
                    f"{evals}",
                    f"{args.batch / (evals * in_place_s):,.0f}",
                    f"{reference_s * evaluations / (in_place_s * evals):.1f}x",
                    versus(fid, reference_fid, "state_error_median"),
                    versus(fid, reference_fid, "state_error_mean"),
                    f"{fid['reward_error_mean']:.4f}",
                    "yes" if within[n_steps] else "no",
                ]
            )
    print(
        table(
            ["sampler", "N", "evaluations", "transitions/s (extrapolated)", "vs 255-eval fp32 reference",
             "state err median", "state err mean", "reward err mean", f"within {args.tolerance:.0%}"],
            rows,
        )
    )  # fmt: skip
    print(f"\nFewest evaluations keeping the 255-evaluation error within {args.tolerance:.0%}: {'; '.join(verdicts)}.")


if __name__ == "__main__":
    main()
