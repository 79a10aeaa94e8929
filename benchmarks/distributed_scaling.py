"""Scaling out on this machine: SynthER training steps/s and generation transitions/s at 1 and 2 processes
(``torchrun``, gloo, one thread each), the speed of the sharded transition-set format against ``to_minari``, and,
on paper, what the paper's SynthER would take on 8 GPUs.

    python benchmarks/distributed_scaling.py                  # all of it, a few minutes on 2 idle cores
    python benchmarks/distributed_scaling.py --dataset hopper/medium-replay --steps 1000 --samples 20000

Training: the same fit (the `cpu` preset's 256x3 denoiser, its global batch of 256) on 1 process and under
``torchrun --nproc_per_node=2``, where each rank computes its half of every global batch and
DistributedDataParallel averages the gradients: the maths is the same, the question is the wall clock. The rate is
taken between the first and the last progress callback (every 100 steps), so set-up is not counted.
Generation: :func:`dyaug.distributed.sample_shards` of ``--samples`` rows from one fitted checkpoint, one shard per
process. Format: :func:`dyaug.data.shards.write_shards` / ``read_shards`` (checksums verified) of 1M rows against
``Transitions.to_minari`` / ``from_minari`` of ``--minari-rows`` rows (each unordered row a one-step episode).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine

# the `cpu` preset's joint denoiser (no label models: their fit is not what is distributed), fp32 on every machine
FP32 = {"train_precision": "fp32", "sample_precision": "fp32"}


# ------------------------------------------------------------------------------------------------ workers
def worker_train(args: argparse.Namespace) -> None:
    """Under torchrun (or alone): fit SynthER for ``--steps`` steps; rank 0 prints the rate as JSON."""
    import dyaug.datasets
    from dyaug import SynthER
    from dyaug.distributed import init_from_environment

    torch.set_num_threads(1)
    rank, size = init_from_environment("cpu")
    data = dyaug.datasets.load(args.dataset, progress=False)
    stamps: list[tuple[int, float]] = []
    SynthER("cpu", device="cpu", seed=0, train_steps=args.steps, labels="joint", **FP32).fit(
        data, progress=False, callback=lambda _g, step: stamps.append((step, time.perf_counter()))
    )
    if rank == 0:
        (s0, t0), (s1, t1) = stamps[0], stamps[-1]
        print(
            json.dumps({"world_size": size, "steps": s1 - s0, "seconds": t1 - t0, "steps_per_s": (s1 - s0) / (t1 - t0)})
        )


def worker_sample(args: argparse.Namespace) -> None:
    """Under torchrun (or alone): draw ``--samples`` rows from ``--checkpoint`` as one shard per rank."""
    from dyaug import SynthER
    from dyaug.distributed import barrier, init_from_environment, sample_shards

    torch.set_num_threads(1)
    rank, size = init_from_environment("cpu")
    generator = SynthER.load(args.checkpoint, device="cpu")
    out = Path(args.out) / f"world{size}"
    barrier()
    start = time.perf_counter()
    sample_shards(generator, args.samples, out, seed=0)
    seconds = time.perf_counter() - start
    if rank == 0:
        print(
            json.dumps(
                {"world_size": size, "rows": args.samples, "seconds": seconds, "rows_per_s": args.samples / seconds}
            )
        )


# ------------------------------------------------------------------------------------------------ driver
def launch(mode: str, nproc: int, extra: list[str]) -> dict:
    script = [str(Path(__file__).resolve()), "--worker", mode, *extra]
    if nproc == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *script]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def format_speed(rows: int, minari_rows: int, workdir: Path) -> dict:
    from dyaug import Transitions
    from dyaug.data.shards import read_shards, write_shards

    rng = np.random.default_rng(0)

    def transitions(n: int) -> Transitions:
        return Transitions(
            observations=rng.standard_normal((n, 11), dtype=np.float32),
            actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
            rewards=rng.standard_normal(n, dtype=np.float32),
            next_observations=rng.standard_normal((n, 11), dtype=np.float32),
            terminals=np.zeros(n, np.float32),
            timeouts=np.zeros(n, np.float32),
        )

    big, small = transitions(rows), transitions(minari_rows)
    result: dict = {"rows": rows, "minari_rows": minari_rows}
    start = time.perf_counter()
    write_shards(workdir / "set", big, shard_rows=250_000)
    result["shards_write_s"] = time.perf_counter() - start
    start = time.perf_counter()
    back = read_shards(workdir / "set", verify=True)
    result["shards_read_s"] = time.perf_counter() - start
    assert np.array_equal(back.observations, big.observations)
    result["shards_bytes"] = sum(p.stat().st_size for p in (workdir / "set").iterdir())

    os.environ["MINARI_DATASETS_PATH"] = str(workdir / "minari")
    dataset_id = "dyaug/scaling/format-v0"
    start = time.perf_counter()
    small.to_minari(dataset_id, env_id="Hopper-v5")
    result["minari_write_s"] = time.perf_counter() - start
    import minari

    start = time.perf_counter()
    back = Transitions.from_minari(minari.load_dataset(dataset_id))
    result["minari_read_s"] = time.perf_counter() - start
    assert len(back) == minari_rows
    return result


def paper_estimate(train_steps_per_s: float, rows_per_s: float, gpu_tflops: float, gpus: int = 8) -> dict:
    """The paper's SynthER (2048x6 residual MLP, 100k steps at batch 256, 5M samples with 128 Heun steps, i.e.
    255 network evaluations each) in FLOPs, and the time at this machine's measured FLOP rate of the `cpu` preset."""
    from dyaug.synther.config import PRESETS

    dim = 11 + 3 + 1 + 11 + 1  # hopper: s, a, r, s', terminal
    params = {name: sum(p.numel() for p in PRESETS[name].network(dim).parameters()) for name in ("cpu", "paper")}
    cpu = PRESETS["cpu"]
    # 6 FLOPs per parameter and row for a training step (forward + backward), 2 per network evaluation
    train_flop = {n: 6 * params[n] * PRESETS[n].batch_size for n in params}
    nfe = {n: PRESETS[n].sampler().network_evaluations for n in params}
    sample_flop = {n: 2 * params[n] * nfe[n] for n in params}
    measured_train = train_flop["cpu"] * train_steps_per_s
    measured_sample = sample_flop["cpu"] * rows_per_s
    paper_train_flop = train_flop["paper"] * PRESETS["paper"].train_steps
    paper_sample_flop = sample_flop["paper"] * 5_000_000
    return {
        "params": params,
        "cpu_preset": {"batch": cpu.batch_size, "sampler_steps": cpu.sampler_steps},
        "measured_train_gflops": measured_train / 1e9,
        "measured_sample_gflops": measured_sample / 1e9,
        "paper_train_pflop": paper_train_flop / 1e15,
        "paper_sample_pflop": paper_sample_flop / 1e15,
        "this_machine_hours": (paper_train_flop / measured_train + paper_sample_flop / measured_sample) / 3600,
        # assumed, not measured: every GPU sustains gpu_tflops on these matmuls; data parallel over `gpus`
        "gpus": gpus,
        "gpu_tflops": gpu_tflops,
        "gpus_train_min": paper_train_flop / (gpus * gpu_tflops * 1e12) / 60,
        "gpus_sample_min": paper_sample_flop / (gpus * gpu_tflops * 1e12) / 60,
        "allreduce_mb_per_step": 4 * params["paper"] / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="hopper/medium-replay")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per measurement")
    parser.add_argument("--samples", type=int, default=20_000, help="rows generated per measurement")
    parser.add_argument("--format-rows", type=int, default=1_000_000)
    parser.add_argument("--minari-rows", type=int, default=5_000)
    parser.add_argument(
        "--gpu-tflops", type=float, default=50.0, help="assumed sustained TFLOP/s per GPU for the 8-GPU estimate"
    )
    parser.add_argument("--worker", choices=["train", "sample"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "train":
        return worker_train(args)
    if args.worker == "sample":
        return worker_sample(args)

    torch.set_num_threads(1)
    common = ["--dataset", args.dataset, "--steps", str(args.steps)]
    train = {n: launch("train", n, common) for n in (1, 2)}
    workdir = Path(tempfile.mkdtemp(prefix="dyaug-scaling-"))
    try:
        import dyaug.datasets
        from dyaug import SynthER

        ckpt = (
            SynthER("cpu", device="cpu", seed=0, train_steps=200, labels="joint", **FP32)
            .fit(dyaug.datasets.load(args.dataset, progress=False), progress=False)
            .save(workdir / "synther")
        )
        extra = ["--checkpoint", str(ckpt), "--out", str(workdir / "sets"), "--samples", str(args.samples)]
        sample = {n: launch("sample", n, extra) for n in (1, 2)}
        fmt = format_speed(args.format_rows, args.minari_rows, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    paper = paper_estimate(train[1]["steps_per_s"], sample[1]["rows_per_s"], args.gpu_tflops)

    print(f"### Scaling out: torchrun on this machine ({dt.date.today()})\n")
    print(f"- machine: {machine()}")
    print(
        f"- command: `python benchmarks/distributed_scaling.py --dataset {args.dataset} --steps {args.steps} "
        f"--samples {args.samples}`; gloo, one thread per process\n"
    )
    print("| processes | training steps/s (global batch 256) | speed-up | generation rows/s | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    for n in (1, 2):
        print(
            f"| {n} | {train[n]['steps_per_s']:.1f} | {train[n]['steps_per_s'] / train[1]['steps_per_s']:.2f}x | "
            f"{sample[n]['rows_per_s']:.0f} | {sample[n]['rows_per_s'] / sample[1]['rows_per_s']:.2f}x |"
        )
    per_min = lambda rows, s: rows / s * 60  # noqa: E731
    print("\n| format | rows | write rows/min | read rows/min | bytes/row |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| safetensors shards + manifest | {fmt['rows']:,} | {per_min(fmt['rows'], fmt['shards_write_s']):,.0f} | "
        f"{per_min(fmt['rows'], fmt['shards_read_s']):,.0f} | {fmt['shards_bytes'] / fmt['rows']:.0f} |"
    )
    print(
        f"| Minari (`to_minari`, one-step episodes) | {fmt['minari_rows']:,} | "
        f"{per_min(fmt['minari_rows'], fmt['minari_write_s']):,.0f} | "
        f"{per_min(fmt['minari_rows'], fmt['minari_read_s']):,.0f} | - |"
    )
    ratio = (fmt["minari_write_s"] / fmt["minari_rows"]) / (fmt["shards_write_s"] / fmt["rows"])
    print(f"\nWriting: the shards are {ratio:,.0f}x faster per row than `to_minari`.")
    print(
        f"\nOn paper: the `cpu` preset's denoiser has {paper['params']['cpu'] / 1e6:.2f}M parameters, the paper's "
        f"{paper['params']['paper'] / 1e6:.1f}M (2048x6). Measured here, one process: "
        f"{paper['measured_train_gflops']:.1f} GFLOP/s training, {paper['measured_sample_gflops']:.1f} GFLOP/s "
        f"sampling. The paper's run is {paper['paper_train_pflop']:.2f} PFLOP of training (100k steps, batch 256) "
        f"and {paper['paper_sample_pflop']:.2f} PFLOP of sampling (5M rows, 255 evaluations each): "
        f"{paper['this_machine_hours']:.0f} hours on one process of this machine at these rates. On "
        f"{paper['gpus']} GPUs that each sustain an assumed (not measured) {paper['gpu_tflops']:.0f} TFLOP/s on "
        f"these matmuls: {paper['gpus_train_min']:.1f} min of training and {paper['gpus_sample_min']:.1f} min of "
        f"sampling. Sampling shards perfectly (independent rows); training exchanges "
        f"{paper['allreduce_mb_per_step']:.0f} MB of fp32 gradients per step, and its global batch of 256 leaves "
        "32 rows per GPU, so kernel launches and the all-reduce, not FLOPs, bound a training step there: replace "
        "the assumed rate by a measured one (`scripts/device_check.sh`) before planning on it."
    )
    print(json.dumps({"train": train, "sample": sample, "format": fmt, "paper": paper}))


if __name__ == "__main__":
    main()
