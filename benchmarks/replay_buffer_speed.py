"""Replay-buffer speed: d3rlpy's own ``ReplayBuffer`` against dyaug's ``SyntheticReplayBuffer``.

Measures, in one run:

- milliseconds per sampled batch (256 and 1024 transitions): d3rlpy builds a batch one transition at a time
  in Python; ``SyntheticReplayBuffer`` (``real_ratio=0.5``) gathers rows from flat float32 tables;
- d3rlpy ``TD3PlusBC`` ``fit()`` steps/s on each (d3rlpy's defaults: 256x256 networks, batch 256), without and
  with d3rlpy's ``compile_graph`` (``torch.compile`` of the update: the same maths), timed with
  ``fit(callback=...)`` from the end of the first tenth of the steps to the last, so model building and the
  compilation are excluded.

Data: Hopper-sized (observation 11, action 3) random-walk episodes of 1000 steps built in memory, and as
"synthetic" data the same transitions plus noise (only speed is measured). Prints a markdown table with
medians over ``--repeats`` runs. Usage::

    python benchmarks/replay_buffer_speed.py            # 1M real + 1M synthetic transitions, 1000 fit steps
    python benchmarks/replay_buffer_speed.py --quick    # smoke test, well under a minute on a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import statistics
import sys
import time
from collections.abc import Callable

import d3rlpy
import numpy as np
import structlog
from common import machine
from d3rlpy.dataset import MDPDataset, ReplayBufferBase
from d3rlpy.logging import NoopAdapterFactory
from dyaug.integrations.d3rlpy import SyntheticReplayBuffer

from dyaug.data import Transitions

OBS_DIM, ACT_DIM, EPISODE_LENGTH = 11, 3, 1000


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    real: int = 1_000_000  # real transitions (a D4RL-sized dataset)
    synthetic: int = 1_000_000  # synthetic transitions
    batch_sizes: tuple[int, ...] = (256, 1024)
    batches: int = 50  # batches per timed sampling run
    fit_steps: int = 1_000  # TD3PlusBC fit() steps per timed run
    repeats: int = 5  # timed runs per measurement (the median is reported)
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.real, self.synthetic) < EPISODE_LENGTH or min(self.batches, self.fit_steps, self.repeats) < 2:
            raise ValueError(
                f"need real, synthetic >= {EPISODE_LENGTH} and batches, fit_steps, repeats >= 2, got {self}."
            )

    @classmethod
    def quick(cls) -> BenchmarkConfig:
        return cls(real=20_000, synthetic=20_000, batches=20, fit_steps=100, repeats=3)


def make_buffers(config: BenchmarkConfig) -> dict[str, ReplayBufferBase]:
    """d3rlpy's ``MDPDataset`` of random-walk episodes, and a ``SyntheticReplayBuffer`` wrapping it."""
    rng = np.random.default_rng(config.seed)
    n = config.real
    ends = (np.arange(n) % EPISODE_LENGTH == EPISODE_LENGTH - 1).astype(np.float32)
    real = MDPDataset(
        observations=np.cumsum(rng.normal(scale=0.1, size=(n, OBS_DIM)), axis=0).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=np.zeros(n, np.float32),
        timeouts=ends,
    )
    source = Transitions.from_d3rlpy(real)
    rows = rng.integers(len(source), size=config.synthetic)
    noisy = source[rows]
    synthetic = noisy.replace(observations=noisy.observations + rng.normal(scale=0.01, size=noisy.observations.shape))
    return {
        "d3rlpy ReplayBuffer (MDPDataset)": real,
        "dyaug SyntheticReplayBuffer (real_ratio 0.5)": SyntheticReplayBuffer(real, synthetic, real_ratio=0.5),
    }


def median_seconds(fn: Callable[[], float | None], repeats: int) -> float:
    """Median over ``repeats`` runs of ``fn``'s own measurement, or of its wall time when it returns None."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        measured = fn()
        times.append(time.perf_counter() - start if measured is None else measured)
    return statistics.median(times)


def sampling_ms(buffer: ReplayBufferBase, batch_size: int, config: BenchmarkConfig) -> float:
    buffer.sample_transition_batch(batch_size)  # warm-up

    def run() -> None:
        for _ in range(config.batches):
            buffer.sample_transition_batch(batch_size)

    return median_seconds(run, config.repeats) / config.batches * 1e3


def fit_steps_per_second(buffer: ReplayBufferBase, config: BenchmarkConfig, compile_graph: bool) -> float:
    stamps: list[float] = []
    warm = max(1, config.fit_steps // 10)  # steps left out of the timing: the first ones compile

    def run() -> float:
        stamps.clear()
        d3rlpy.seed(config.seed)
        algo = d3rlpy.algos.TD3PlusBCConfig(compile_graph=compile_graph).create("cpu:0")
        algo.fit(
            buffer,
            n_steps=config.fit_steps,
            n_steps_per_epoch=config.fit_steps,
            show_progress=False,
            logger_adapter=NoopAdapterFactory(),
            callback=lambda *_: stamps.append(time.perf_counter()),
        )
        return stamps[-1] - stamps[warm - 1]  # the last fit_steps - warm steps

    return (config.fit_steps - warm) / median_seconds(run, config.repeats)


def main(config: BenchmarkConfig) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # quiet d3rlpy
    buffers = make_buffers(config)
    results = {
        name: (
            [sampling_ms(buffer, b, config) for b in config.batch_sizes],
            [fit_steps_per_second(buffer, config, compile_graph) for compile_graph in (False, True)],
        )
        for name, buffer in buffers.items()
    }
    native_ms = next(iter(results.values()))[0]

    print(f"## Replay-buffer speed ({datetime.datetime.now().isoformat(timespec='seconds')})\n")
    print(f"- machine: {machine()}; numpy {np.__version__}, d3rlpy {d3rlpy.__version__}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(f"- settings: {config}")
    print(
        f"- data: {config.real:,} real transitions (random-walk episodes of {EPISODE_LENGTH}, obs {OBS_DIM}, "
        f"action {ACT_DIM}), {config.synthetic:,} synthetic; median of {config.repeats} runs of "
        f"{config.batches} batches / {config.fit_steps} TD3PlusBC fit() steps (d3rlpy defaults)\n"
    )
    header = [
        "buffer",
        *(f"ms / batch of {b}" for b in config.batch_sizes),
        *(f"speed-up at {b}" for b in config.batch_sizes),
        "TD3PlusBC fit() steps/s",
        "with compile_graph",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, (ms, steps) in results.items():
        speedups = [f"{native / ours:.1f}x" for native, ours in zip(native_ms, ms, strict=True)]
        print("| " + " | ".join([name, *(f"{m:.3f}" for m in ms), *speedups, *(f"{s:.0f}" for s in steps)]) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (explicit flags still apply)")
    parser.add_argument("--fit-steps", type=int, help=f"TD3PlusBC steps per run (default {BenchmarkConfig.fit_steps})")
    parser.add_argument("--repeats", type=int, help=f"timed runs (default {BenchmarkConfig.repeats})")
    args = parser.parse_args()
    base = BenchmarkConfig.quick() if args.quick else BenchmarkConfig()
    chosen = {k: v for k, v in (("fit_steps", args.fit_steps), ("repeats", args.repeats)) if v is not None}
    main(dataclasses.replace(base, **chosen))
