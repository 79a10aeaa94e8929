"""Action throughput of the diffusion actors beside d3rlpy's TD3PlusBC, at batch 1 and 256, in one run.

Measures actions/s and milliseconds per call (medians of ``--repeats`` timings, each over enough calls to last
``--min-seconds``, after a warm-up) of

- SRPO's actor π(s) = tanh(MLP(s)), 2 x 256 ReLU (``dyaug.actors.DeterministicActor``);
- Diffusion-QL's action selection: 50 candidates per state through the 5-step chain (``DiffusionPolicy``, 3 x 256
  Mish noise network, 16-dim step embedding) in one batch, scored by the min of a 3 x 256 Mish twin Q, one
  picked from softmax(Q) (``dyaug.actors.select_actions``);
- d3rlpy's TD3PlusBC actor (its default 2 x 256 ReLU ``DeterministicPolicy``),

each through two paths: the torch module itself (inference mode, tensors already on the device) and the d3rlpy
algorithm's ``predict`` (numpy in and out: dyaug's ``SRPO`` and ``DiffusionQL``, d3rlpy's ``TD3PlusBC``, no
scalers). Networks are untrained at the papers' sizes with Hopper's dimensions (observation 11, action 3): this
is a speed measurement only. Prints a markdown report with the ratios the issue asks for and writes a log-scale
bar chart. Usage::

    python benchmarks/actor_throughput.py                    # 5 repeats of >= 0.5 s each, 1 torch thread
    python benchmarks/actor_throughput.py --quick            # smoke test, well under a minute on a CPU
    python benchmarks/actor_throughput.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import machine, quiet_d3rlpy, save_bar_chart, synchronize, timings

from dyaug.device import resolve_device

# The official code on the project's reference CPU (measured separately, not by this script).
OFFICIAL = {
    ("SRPO", 1): 19_800.0,
    ("SRPO", 256): 938_000.0,
    ("Diffusion-QL", 1): 231.0,
    ("Diffusion-QL", 256): 593.0,
}
TARGETS = "SRPO >= 25x Diffusion-QL; SRPO within 1.2x of TD3PlusBC; Diffusion-QL (256 states) >= 2 x 593 actions/s"


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    device: str = "auto"
    batches: tuple[int, ...] = (1, 256)
    repeats: int = 5
    min_seconds: float = 0.5  # each timing runs enough calls to last this long
    threads: int = 1
    obs_dim: int = 11  # Hopper
    act_dim: int = 3
    n_candidates: int = 50  # Diffusion-QL's evaluation
    seed: int = 0

    @classmethod
    def quick(cls, **changes: object) -> BenchmarkConfig:
        return cls(**{"repeats": 2, "min_seconds": 0.05, **changes})


Call = tuple[Callable[[np.ndarray], object], Callable[[object], object]]
"""``(prepare, act)``: ``prepare`` turns a float32 numpy batch into the path's input once, outside the timing."""


def build_actors(config: BenchmarkConfig, device: torch.device) -> dict[tuple[str, str], Call]:
    """``(method, path) -> (prepare, act)`` for the three actors and the two paths."""
    import d3rlpy
    from dyaug.integrations.d3rlpy import DiffusionQLConfig, SRPOConfig

    from dyaug.actors.diffusion_ql import select_actions

    d3rlpy_device = f"{device.type}:{device.index or 0}"
    torch.manual_seed(config.seed)
    algos = {
        "SRPO": SRPOConfig().create(device=d3rlpy_device),
        "Diffusion-QL": DiffusionQLConfig(n_action_samples=config.n_candidates).create(device=d3rlpy_device),
        "TD3PlusBC": d3rlpy.algos.TD3PlusBCConfig().create(device=d3rlpy_device),
    }
    for algo in algos.values():
        algo.create_impl((config.obs_dim,), config.act_dim)
    srpo, dql, td3 = (algos[k].impl for k in ("SRPO", "Diffusion-QL", "TD3PlusBC"))
    for module in (srpo.modules.actor, dql.modules.policy, dql.modules.targ_q_funcs, td3.policy):
        module.eval()
    modules: dict[str, Callable[[torch.Tensor], object]] = {
        "SRPO": srpo.modules.actor,
        "Diffusion-QL": lambda x: select_actions(
            dql.modules.policy, dql.modules.targ_q_funcs.min, x, n_candidates=config.n_candidates
        ),
        "TD3PlusBC": lambda x: td3.policy(x).squashed_mu,
    }

    def to_device(observations: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(observations, device=device)

    def inference(fn: Callable[[torch.Tensor], object]) -> Callable[[object], object]:
        def act(x: object) -> object:
            with torch.inference_mode():
                return fn(x)

        return act

    calls: dict[tuple[str, str], Call] = {}
    for name, fn in modules.items():
        calls[(name, "torch module")] = (to_device, inference(fn))
        calls[(name, "d3rlpy predict")] = (lambda observations: observations, algos[name].predict)
    return calls


def per_call_seconds(fn: Callable[[], object], device: torch.device, config: BenchmarkConfig) -> list[float]:
    """Seconds per call, one value per repeat; each repeat times ``n`` calls, ``n`` chosen from a warm-up call so
    that a repeat lasts at least ``min_seconds``."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    n = max(1, math.ceil(config.min_seconds / max(time.perf_counter() - start, 1e-9)))
    return [t / n for t in timings(lambda: [fn() for _ in range(n)], device, config.repeats)]


def main(config: BenchmarkConfig, out: Path) -> None:
    torch.set_num_threads(config.threads)
    quiet_d3rlpy()
    device = resolve_device(config.device)
    calls = build_actors(config, device)
    rng = np.random.default_rng(config.seed)
    rows, throughput, bars = [], {}, {}
    for batch in config.batches:
        observations = rng.normal(size=(batch, config.obs_dim)).astype(np.float32)
        for (name, path), (prepare, act) in calls.items():
            x = prepare(observations)
            seconds = per_call_seconds(lambda act=act, x=x: act(x), device, config)
            median = statistics.median(seconds)
            throughput[(name, path, batch)] = batch / median
            bars[(f"batch {batch}", f"{name} ({path})")] = [batch / s for s in seconds]
            official = OFFICIAL.get((name, batch))
            versus = f"{batch / median / official:.2f}x" if official and path == "torch module" else ""
            rows.append([name, path, str(batch), f"{1e3 * median:.3f}", f"{batch / median:,.0f}", versus])

    print(f"## Actor throughput ({datetime.datetime.now().isoformat(timespec='seconds')})\n")
    print(f"- machine: {machine(device)}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(f"- settings: {config}; weight seed {config.seed}, observations N(0, 1) from seed {config.seed}")
    print(
        "- networks: untrained, at the papers' sizes (speed only): SRPO actor 2x256 ReLU + tanh; Diffusion-QL "
        f"5-step DDPM, 3x256 Mish noise network, {config.n_candidates} candidates scored by a 3x256 Mish twin Q "
        "(target min), softmax pick; d3rlpy TD3PlusBC default 2x256 actor"
    )
    print(
        "- official code on the reference CPU (measured separately): SRPO actor 19.8k actions/s at batch 1 and "
        "938k at batch 256; Diffusion-QL 231 actions/s for one state, 225 through its one-state loop, 593 for 256 "
        "states batched\n"
    )
    header = ["method", "path", "batch", "ms / call", "actions/s", "vs official code"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")

    print(f"\nRatios of actions/s (issue targets: {TARGETS}):\n")
    print("| batch | path | SRPO / Diffusion-QL | TD3PlusBC / SRPO |")
    print("|---:|---|---:|---:|")
    for batch in config.batches:
        for path in ("torch module", "d3rlpy predict"):
            srpo = throughput[("SRPO", path, batch)]
            dql, td3 = throughput[("Diffusion-QL", path, batch)], throughput[("TD3PlusBC", path, batch)]
            print(f"| {batch} | {path} | {srpo / dql:,.0f}x | {td3 / srpo:.2f}x |")
    if 256 in config.batches:
        dql = throughput[("Diffusion-QL", "torch module", 256)]
        print(f"\nDiffusion-QL selection for 256 states: {dql:,.0f} actions/s = {dql / 593:.2f}x the official 593.")
    out.mkdir(parents=True, exist_ok=True)
    png = out / "actor_throughput.png"
    title = f"Actor throughput ({device.type}, {config.threads} thread(s)); dots: repeats"
    save_bar_chart(png, bars, ylabel="actions / s", title=title, log_scale=True)
    print(f"\nPlot: `{png}`")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--repeats", type=int, help=f"timings per measurement (default {BenchmarkConfig.repeats})")
    parser.add_argument("--threads", type=int, help=f"torch threads (default {BenchmarkConfig.threads})")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "actor_throughput")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repeats of >= 0.05 s")
    args = parser.parse_args()
    chosen = {k: v for k, v in (("repeats", args.repeats), ("threads", args.threads)) if v is not None}
    config = BenchmarkConfig.quick(device=args.device, **chosen) if args.quick else BenchmarkConfig(device=args.device)
    main(dataclasses.replace(config, **chosen), args.out)
