"""The end-to-end demo behind ``dyaug demo``: load a small Hopper dataset shipped with dyaug (whole episodes of the
forge's medium and medium-replay sets, PPO teacher), fit :class:`dyaug.SynthER` on it (an
unconditional EDM model of z-scored [s, a, r, s', terminal] rows), sample from it, and check the samples in the
MuJoCo simulator beside a multivariate Gaussian fitted to the same rows and beside held-out real transitions.
Then train d3rlpy's TD3PlusBC three times with the same seed, on the real data alone, with the SynthER samples
mixed in, and with :class:`~dyaug.integrations.d3rlpy.DyDiffAugmenter` (policy-consistent DyDiff rollouts), and
print their D4RL-normalised scores beside the simulator-checked error of the synthetic data each one used.

Read top to bottom: it is also the shortest example of fitting, sampling and checking a generator, and of the two
lines that put synthetic data into a d3rlpy training loop. One seed and a few thousand training steps: the scores
show the pipeline working and a policy that hops, not which arm is better (benchmarks/ measures that).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

from dyaug.data import Transitions
from dyaug.device import Precision, resolve_device
from dyaug.metrics import FidelityReport, dynamics_error
from dyaug.metrics.returns import evaluate_returns, normalized_scores
from dyaug.synther import SynthER


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    dataset: str = "dyaug/hopper/demo-v0"
    train_steps: int = 3000
    n_samples: int = 5000
    width: int = 256
    depth: int = 3
    sampler_steps: int = 32
    labels: Literal["joint", "models"] = "joint"  # "models": the cpu preset's labelling (+5 CPU-minutes here)
    precision: Precision = "auto"
    rl_steps: int = 5000
    dydiff_train_steps: int = 2000
    eval_episodes: int = 10
    device: str = "auto"
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What the demo printed: simulator checks of each data source, and TD3PlusBC's D4RL-normalised score per arm
    (empty when ``rl_steps`` is 0)."""

    fidelity: dict[str, FidelityReport]
    scores: dict[str, float]


def run_demo(config: DemoConfig) -> DemoResult:
    import dyaug.datasets

    t0 = time.perf_counter()
    dataset = dyaug.datasets.load(config.dataset)
    env_id = dataset.env_spec.id
    space = dataset.action_space
    real = Transitions.from_minari(dataset)
    perm = np.random.default_rng(config.seed).permutation(len(real))
    n_test = max(len(real) // 10, 1)
    test, fit = real[perm[:n_test]], real[perm[n_test:]]
    parts = 4 if config.rl_steps == 0 else 6
    print(f"[1/{parts}] dataset {dataset.id}: {len(real)} transitions ({time.perf_counter() - t0:.0f} s)")

    t1 = time.perf_counter()
    generator = SynthER(
        preset="cpu",
        device=config.device,
        seed=config.seed,
        width=config.width,
        depth=config.depth,
        train_steps=config.train_steps,
        sampler_steps=config.sampler_steps,
        labels=config.labels,
        train_precision=config.precision,
        sample_precision=config.precision,
    ).fit(fit, action_bounds=(space.low, space.high), env_id=env_id)
    print(
        f"[2/{parts}] trained {config.width}x{config.depth} denoiser, {config.train_steps} steps, final loss "
        f"{generator.training_losses[-1]:.3f} ({time.perf_counter() - t1:.0f} s)"
    )

    t2 = time.perf_counter()
    synthetic = generator.sample(config.n_samples, seed=config.seed)
    rate = config.n_samples / (time.perf_counter() - t2)
    print(
        f"[3/{parts}] sampled {config.n_samples} transitions, {generator.config.sampler().network_evaluations} network "
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
    print(f"[4/{parts}] simulator check in {env_id} (next-state error = ||simulated s' - given s'||):\n")
    print(format_reports(reports))
    scores: dict[str, float] = {}
    if config.rl_steps > 0:
        with _quiet_d3rlpy():
            scores, dydiff_report = offline_rl(config, dataset, fit, synthetic)
        reports["dydiff rollouts"] = dydiff_report
        print(f"\n{format_scores(scores, reports)}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s on {generator.device}")
    return DemoResult(reports, scores)


def offline_rl(
    config: DemoConfig, dataset: Any, fit: Transitions, synthetic: Transitions
) -> tuple[dict[str, float], FidelityReport]:
    """TD3PlusBC (d3rlpy's defaults are the paper's settings) on ``fit`` alone, + SynthER's ``synthetic`` (half of
    each batch), + DyDiff (DyDiff's 0.6 real share), same seed; returns the scores and the check of DyDiff's data."""
    import d3rlpy
    from d3rlpy.logging import NoopAdapterFactory
    from d3rlpy.preprocessing import StandardObservationScaler
    from dyaug.integrations.d3rlpy import DyDiffAugmenter, SyntheticReplayBuffer, transitions_to_d3rlpy

    from dyaug.dydiff import DyDiff

    env_id, device, steps = dataset.env_spec.id, resolve_device(config.device), config.rl_steps
    fit_args = {
        "n_steps": steps,
        "n_steps_per_epoch": steps,
        "show_progress": False,
        "logger_adapter": NoopAdapterFactory(),
        "save_interval": 10**9,
    }

    def td3plusbc() -> Any:
        d3rlpy.seed(config.seed)
        scaler = StandardObservationScaler()
        return d3rlpy.algos.TD3PlusBCConfig(observation_scaler=scaler).create(device=str(device))

    def score(algo: Any) -> float:
        returns = evaluate_returns(algo.predict, env_id, config.eval_episodes, config.seed)
        return float(np.mean(normalized_scores(env_id, returns)))

    t0, scores = time.perf_counter(), {}
    real = td3plusbc()
    real.fit(transitions_to_d3rlpy(fit), **fit_args)
    scores["real"] = score(real)
    mixed = td3plusbc()
    with warnings.catch_warnings():  # SynthER rows carry no a'; TD3PlusBC never reads batch.next_actions
        warnings.filterwarnings("ignore", message="the synthetic Transitions have no next_actions")
        buffer = SyntheticReplayBuffer(transitions_to_d3rlpy(fit), synthetic, real_ratio=0.5)
    mixed.fit(buffer, **fit_args)
    scores["+ SynthER"] = score(mixed)
    print(f"[5/6] TD3PlusBC, {steps} steps on the real data and with SynthER ({time.perf_counter() - t0:.0f} s)")

    t1 = time.perf_counter()
    horizon = min(16, max(2, int(np.median([s.stop - s.start for s in fit.episode_slices()])) // 2 * 2))
    generator = DyDiff("tiny", horizon=horizon, device=device, seed=config.seed, train_steps=config.dydiff_train_steps)
    generator.fit(fit, env_id=env_id, progress=False)
    augmenter = DyDiffAugmenter(
        td3plusbc(), generator, preset="tiny", rollout_every=max(steps // 10, 1), rollout_batch=128, seed=config.seed
    )
    augmenter.fit(fit, **fit_args)
    scores["+ DyDiff"] = score(augmenter.algo)
    print(
        f"[6/6] DyDiff (H = {horizon}, {config.dydiff_train_steps} training steps) and TD3PlusBC with its "
        f"rollouts, {len(augmenter.reports)} phases ({time.perf_counter() - t1:.0f} s)"
    )
    return scores, dynamics_error(env_id, augmenter.synthetic.transitions())


@contextlib.contextmanager
def _quiet_d3rlpy() -> Iterator[None]:
    """d3rlpy's per-epoch logs and its "models already built" warning off for the demo, restored after."""
    import structlog

    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        yield
    finally:
        structlog.configure(**saved)


def format_scores(scores: dict[str, float], reports: dict[str, FidelityReport]) -> str:
    """The side-by-side table: TD3PlusBC's score per arm beside the simulator error of the synthetic data used."""
    data = {"real": "real (held out)", "+ SynthER": "diffusion", "+ DyDiff": "dydiff rollouts"}
    head = f"{'TD3PlusBC':12s} {'D4RL score':>10s} {'synthetic rows':>15s} {'their state err median':>23s}"
    lines = [head, "-" * len(head)]
    for arm, value in scores.items():
        report = reports.get(data[arm]) if arm != "real" else None
        rows = "-" if report is None else str(len(report))
        error = "-" if report is None else f"{report.summary()['state_error_median']:.4f}"
        lines.append(f"{arm:12s} {value:>10.1f} {rows:>15s} {error:>23s}")
    return "\n".join(lines)


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
