"""Fidelity of SynthER's transitions, checked in the MuJoCo simulator, beside two other ways to make data.

    python benchmarks/synther_fidelity.py                              # the run in RESULTS.md
    python benchmarks/synther_fidelity.py --envs hopper --quick        # smoke test, a few minutes

For each forged ``<env>/medium-replay`` dataset, its episodes are split 80/20 (seeded) into training and
held-out episodes, and :func:`dyaug.metrics.dynamics_error` checks, by setting the simulator to s and stepping
it with a, how far each s' is from the true next state (L2 over observation dimensions) and r from the true
reward:

- ``real (held-out)``: the held-out transitions themselves (the float32 floor of the check);
- ``SynthER``: ``--samples`` transitions from ``SynthER(preset)`` fitted on the training episodes (Lu et al.
  2023, arXiv 2303.06614), with the preset's sampler;
- ``ensemble 1-step``: a 7-member Gaussian MLP ensemble and an MLP reward model (DyDiff's single-step models,
  ``dyaug.models``, preset ``--models-preset``) fitted on the training episodes predict s' (a random elite per
  row, its mean) and r for the held-out (s, a): the error of a learned model on real states and actions;
- ``noise σ``: held-out transitions with Gaussian noise of σ times each column's standard deviation added to
  s, a, r and s' (the naive augmentation), for each σ in ``--noise``.

All numbers use the same seed per environment. Prints a markdown table per environment and writes a PNG.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine

import dyaug.datasets
from dyaug import SynthER, Transitions
from dyaug.metrics import dynamics_error
from dyaug.models import DynamicsEnsemble, RewardModel, termination_rule

COLUMNS = ("state_error_median", "state_error_mean", "state_error_p90", "reward_error_mean", "terminal_agreement")


def split_episodes(data: Transitions, held_out: float, seed: int) -> tuple[Transitions, Transitions]:
    """Whole episodes, shuffled with ``seed``: the first (1 - held_out) of them for training, the rest held out."""
    slices = data.episode_slices()
    order = np.random.default_rng(seed).permutation(len(slices))
    n_test = max(1, round(held_out * len(slices)))
    rows = [
        np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in sorted(part)])
        for part in (order[n_test:], order[:n_test])
    ]
    return data[rows[0]], data[rows[1]]


def ensemble_predictions(train: Transitions, test: Transitions, preset: str, seed: int, env_id: str) -> Transitions:
    """``test`` with s', r and the terminal flag predicted by the single-step models fitted on ``train``."""
    ensemble = DynamicsEnsemble.fit(train, config=preset, seed=seed, device="cpu")
    reward = RewardModel.fit(train, config=preset, seed=seed, device="cpu")
    obs, act = torch.tensor(test.observations), torch.tensor(test.actions)  # copies: the arrays are read-only
    with torch.no_grad():
        next_obs = ensemble.step(obs, act, generator=torch.Generator().manual_seed(seed))
        rewards = reward(obs, act)
    terminals = termination_rule(env_id)(obs, act, next_obs)
    return test.replace(
        next_observations=next_obs.numpy(), rewards=rewards.numpy(), terminals=terminals.numpy().astype(np.float32)
    )


def with_noise(data: Transitions, scale: float, seed: int) -> Transitions:
    """Gaussian noise of ``scale`` x the column's standard deviation on s, a, r and s' (terminals unchanged)."""
    rng = np.random.default_rng(seed)

    def noisy(x: np.ndarray) -> np.ndarray:
        return (x + scale * x.std(axis=0) * rng.standard_normal(x.shape)).astype(np.float32)

    return data.replace(
        observations=noisy(data.observations),
        actions=noisy(data.actions),
        rewards=noisy(data.rewards),
        next_observations=noisy(data.next_observations),
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=["hopper", "halfcheetah", "walker2d"])
    parser.add_argument("--level", default="medium-replay")
    parser.add_argument("--preset", default="cpu", help="SynthER preset")
    parser.add_argument("--models-preset", default="cpu", help="dyaug.models preset of the ensemble and reward")
    parser.add_argument("--samples", type=int, default=10_000, help="SynthER transitions checked")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--held-out", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "synther_fidelity")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny presets, 1,000 samples")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.models_preset, args.samples = "tiny", "tiny", 1_000
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"## SynthER fidelity ({datetime.datetime.now().isoformat(timespec='seconds')})\n")
    print(f"- machine: {machine()}")
    print(f"- command: `python {' '.join(sys.argv)}`")
    print(
        f"- SynthER preset `{args.preset}` ({args.samples} samples), models preset `{args.models_preset}`, "
        f"noise σ {args.noise}, {args.held_out:.0%} of episodes held out, seed {args.seed}\n"
    )
    medians: dict[str, dict[str, float]] = {}
    for env in args.envs:
        dataset = dyaug.datasets.load(f"{env}/{args.level}")
        env_id = dataset.env_spec.id
        train, test = split_episodes(Transitions.from_minari(dataset), args.held_out, args.seed)
        start = time.perf_counter()
        generator = SynthER(args.preset, device="cpu", seed=args.seed).fit(train, progress=False)
        synthetic = generator.sample(args.samples, seed=args.seed, progress=False)
        synther_s = time.perf_counter() - start
        start = time.perf_counter()
        predicted = ensemble_predictions(train, test, args.models_preset, args.seed, env_id)
        models_s = time.perf_counter() - start
        arms = {"real (held-out)": test, "SynthER": synthetic, "ensemble 1-step": predicted}
        arms |= {f"noise σ={s:g}": with_noise(test, s, args.seed) for s in args.noise}
        print(f"### {env_id}, `{dataset.id}`: {len(train)} training / {len(test)} held-out transitions\n")
        print(f"SynthER fit + sample: {synther_s:.0f} s; ensemble + reward model fit: {models_s:.0f} s.\n")
        print(
            "| data | n | state err median | state err mean | state err p90 | reward err mean | terminal agreement "
            "| checkable |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        medians[env] = {}
        for name, data in arms.items():
            s = dynamics_error(env_id, data).summary()
            medians[env][name] = s["state_error_median"]
            cells = " | ".join(f"{s[c]:.4g}" for c in COLUMNS)
            print(f"| {name} | {s['count']} | {cells} | {s['fraction_checkable']:.3f} |")
        print(flush=True)
    png = args.out / "synther_fidelity.png"
    plot(png, medians)
    print(f"Plot: `{png}`")


def plot(path: Path, medians: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(medians)
    arms = list(next(iter(medians.values())))
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(2 + 2 * len(envs), 3.4))
    for j, arm in enumerate(arms):
        xs = [i + (j - (len(arms) - 1) / 2) * width for i in range(len(envs))]
        ax.bar(xs, [medians[e][arm] for e in envs], width, color=f"C{j}", label=arm)
    ax.set_yscale("log")
    ax.set_xticks(range(len(envs)), envs)
    ax.set_ylabel("median next-state error (L2)")
    ax.set_title("simulator-checked fidelity, medium-replay", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
