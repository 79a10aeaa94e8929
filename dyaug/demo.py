"""The end-to-end demo behind ``dyaug demo``: forge a small dataset, fit an unconditional transition diffusion
model on it (SynthER-style: EDM, residual MLP, z-scored [s, a, r, s', terminal]), sample from it, and check the
samples in the MuJoCo simulator beside a multivariate Gaussian fitted to the same data and beside held-out
real transitions.

Read top to bottom: it is also the shortest example of dyaug's building blocks working together.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from dyaug.data import Transitions, ZScoreNormalizer
from dyaug.device import Precision, resolve_device
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule, edm_loss
from dyaug.diffusion.networks import ResidualMLP
from dyaug.diffusion.samplers import HeunSampler
from dyaug.diffusion.training import TrainConfig, train
from dyaug.metrics import FidelityReport, dynamics_error


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
    precision: Precision = "bf16"
    device: str = "auto"
    seed: int = 0


def transitions_to_rows(t: Transitions) -> np.ndarray:
    """``[s, a, r, s', terminal]`` rows, the layout SynthER models (Lu et al. 2023)."""
    return np.concatenate(
        [t.observations, t.actions, t.rewards[:, None], t.next_observations, t.terminals[:, None]], axis=1
    )


def rows_to_transitions(x: np.ndarray, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray) -> Transitions:
    """Inverse of :func:`transitions_to_rows` for samples: terminal thresholded at 0.5, actions clipped to bounds."""
    o, a = x[:, :obs_dim], np.clip(x[:, obs_dim : obs_dim + act_dim], low, high)
    r, o2 = x[:, obs_dim + act_dim], x[:, obs_dim + act_dim + 1 : 2 * obs_dim + act_dim + 1]
    term = (x[:, -1] > 0.5).astype(np.float32)
    return Transitions(o, a, r, o2, term, np.zeros_like(term))


@dataclasses.dataclass(frozen=True)
class TransitionModel:
    """An EMA denoiser over normalised ``[s, a, r, s', terminal]`` rows and the normalizer it was fitted with."""

    network: torch.nn.Module
    normalizer: ZScoreNormalizer
    schedule: EDMSchedule
    obs_dim: int
    act_dim: int
    final_loss: float

    def sample(
        self,
        n: int,
        sampler: HeunSampler,
        precision: Precision,
        action_low: np.ndarray,
        action_high: np.ndarray,
        *,
        seed: int = 0,
    ) -> Transitions:
        """``n`` synthetic transitions; the same seed draws the same initial noise at any precision."""
        device = next(self.network.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        x = sampler.sample(
            EDMDenoiser(self.network, self.schedule, precision=precision),
            self.schedule,
            (n, 2 * self.obs_dim + self.act_dim + 2),
            generator=gen,
            device=device,
        )
        rows = self.normalizer.unnormalize(x.cpu().numpy())
        return rows_to_transitions(rows, self.obs_dim, self.act_dim, action_low, action_high)


def fit_transition_model(data: Transitions, config: DemoConfig, device: torch.device) -> TransitionModel:
    """Fit a SynthER-style EDM model (residual MLP, sigma_data 1, z-scored rows, terminal column untouched)."""
    rows = transitions_to_rows(data)
    norm = ZScoreNormalizer.fit(rows, skip=[rows.shape[1] - 1])  # the terminal flag stays 0/1
    net = ResidualMLP(rows.shape[1], width=config.width, depth=config.depth).to(device)
    schedule = EDMSchedule(sigma_data=1.0)
    denoiser = EDMDenoiser(net, schedule, precision=config.precision)
    result = train(
        lambda batch: edm_loss(denoiser, batch),
        net,
        torch.as_tensor(norm.normalize(rows), dtype=torch.float32, device=device),
        TrainConfig(steps=config.train_steps, batch_size=256),
        seed=config.seed,
        desc="diffusion",
    )
    return TransitionModel(result.ema.module, norm, schedule, data.obs_dim, data.act_dim, result.losses[-1])


def run_demo(config: DemoConfig) -> dict[str, FidelityReport]:
    import dyaug.datasets

    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
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
    model = fit_transition_model(fit, config, device)
    print(
        f"[2/4] trained {config.width}x{config.depth} denoiser, {config.train_steps} steps, final loss "
        f"{model.final_loss:.3f} ({time.perf_counter() - t1:.0f} s)"
    )

    t2 = time.perf_counter()
    sampler = HeunSampler(n_steps=config.sampler_steps)
    synthetic = model.sample(config.n_samples, sampler, config.precision, space.low, space.high, seed=config.seed)
    rate = config.n_samples / (time.perf_counter() - t2)
    print(
        f"[3/4] sampled {config.n_samples} transitions, {sampler.network_evaluations} network evaluations "
        f"each, {config.precision}: {rate:.0f} transitions/s"
    )

    rows = transitions_to_rows(fit)
    rng = np.random.default_rng(config.seed)
    gauss = rng.multivariate_normal(rows.mean(0), np.cov(rows, rowvar=False), size=config.n_samples)
    baseline = rows_to_transitions(gauss.astype(np.float32), real.obs_dim, real.act_dim, space.low, space.high)
    reports = {
        "real (held out)": dynamics_error(env_id, test),
        "diffusion": dynamics_error(env_id, synthetic),
        "gaussian fit": dynamics_error(env_id, baseline),
    }
    print(f"[4/4] simulator check in {env_id} (next-state error = ||simulated s' - given s'||):\n")
    print(format_reports(reports))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s on {device}")
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
