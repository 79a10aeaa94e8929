"""The end-to-end demo behind ``dyaug demo``: forge a small dataset, fit :class:`dyaug.SynthER` on it (an
unconditional EDM model of z-scored [s, a, r, s', terminal] rows), sample from it, and check the samples in the
MuJoCo simulator beside a multivariate Gaussian fitted to the same rows and beside held-out real transitions.

Read top to bottom: it is also the shortest example of fitting, sampling and checking a generator.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from dyaug.data import Transitions
from dyaug.device import Precision
from dyaug.metrics import FidelityReport, dynamics_error
from dyaug.synther import SynthER


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    env: str = "hopper"
    level: str = "medium-replay"
    budget: str = "tiny"
    train_steps: int = 3000
    n_samples: int = 5000
    width: int = 256
    depth: int = 3
    sampler_steps: int = 32
    precision: Precision = "fp32"
    device: str = "auto"
    seed: int = 0


def run_demo(config: DemoConfig) -> dict[str, FidelityReport]:
    import dyaug.datasets

    t0 = time.perf_counter()
    dataset = dyaug.datasets.forge(config.env, config.level, budget=config.budget, seed=config.seed)
    env_id = dataset.env_spec.id
    space = dataset.action_space
    real = Transitions.from_minari(dataset)
    perm = np.random.default_rng(config.seed).permutation(len(real))
    n_test = max(len(real) // 10, 1)
    test, fit = real[perm[:n_test]], real[perm[n_test:]]
    print(f"[1/4] dataset {dataset.id}: {len(real)} transitions ({time.perf_counter() - t0:.0f} s)")

    t1 = time.perf_counter()
    generator = SynthER(
        preset="cpu",
        device=config.device,
        seed=config.seed,
        width=config.width,
        depth=config.depth,
        train_steps=config.train_steps,
        sampler_steps=config.sampler_steps,
        train_precision=config.precision,
        sample_precision=config.precision,
    ).fit(fit, action_bounds=(space.low, space.high))
    print(
        f"[2/4] trained {config.width}x{config.depth} denoiser, {config.train_steps} steps, final loss "
        f"{generator.training_losses[-1]:.3f} ({time.perf_counter() - t1:.0f} s)"
    )

    t2 = time.perf_counter()
    synthetic = generator.sample(config.n_samples, seed=config.seed)
    rate = config.n_samples / (time.perf_counter() - t2)
    print(
        f"[3/4] sampled {config.n_samples} transitions, {generator.config.sampler().network_evaluations} network "
        f"evaluations each, {config.precision}: {rate:.0f} transitions/s"
    )

    layout = generator.model.layout
    rows = layout.encode(fit)
    rng = np.random.default_rng(config.seed)
    gauss = rng.multivariate_normal(rows.mean(0), np.cov(rows, rowvar=False), size=config.n_samples)
    baseline = layout.decode(gauss.astype(np.float32), generator.model.action_bounds)
    reports = {
        "real (held out)": dynamics_error(env_id, test),
        "diffusion": dynamics_error(env_id, synthetic),
        "gaussian fit": dynamics_error(env_id, baseline),
    }
    print(f"[4/4] simulator check in {env_id} (next-state error = ||simulated s' - given s'||):\n")
    print(format_reports(reports))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s on {generator.device}")
    return reports


def format_reports(reports: dict[str, FidelityReport]) -> str:
    head = (
        f"{'data':18s} {'n':>6s} {'state err median':>17s} {'state err mean':>15s} {'reward err':>11s} "
        f"{'terminal agree':>15s} {'checkable':>10s}"
    )
    lines = [head, "-" * len(head)]
    for name, rep in reports.items():
        s = rep.summary()
        lines.append(
            f"{name:18s} {s['count']:>6d} {s['state_error_median']:>17.4f} {s['state_error_mean']:>15.4f} "
            f"{s['reward_error_mean']:>11.4f} {s['terminal_agreement']:>15.3f} {s['fraction_checkable']:>10.3f}"
        )
    return "\n".join(lines)
