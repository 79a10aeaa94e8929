"""DyDiff's rollouts against the simulator: state error along the horizon, and policy consistency.

    python benchmarks/dydiff_rollout_accuracy.py                         # cpu preset (H = 32), hopper/medium
    python benchmarks/dydiff_rollout_accuracy.py --horizon 100           # the paper's H with the cpu preset
    python benchmarks/dydiff_rollout_accuracy.py --quick                 # smoke test: tiny presets, < 3 minutes

Data: a forged dataset (``--dataset``, default ``hopper/medium``), its episodes split 80/20 (seeded); every
model is fitted on the training episodes, and ``--starts`` start states are drawn uniformly from the held-out
observations whose simulator state can be rebuilt (no velocity at the clip bound).

Policy: the forge's SAC actor of the dataset's run (``--policy expert``: the best checkpoint, the default;
``medium``: the one that collected ``medium``), deterministic, π(s) = low + (tanh μ(s) + 1)(high − low)/2, a
torch callable on raw observations. The forge's SAC run cache supplies it (a missing cache retrains SAC). On
hopper/medium the deterministic medium actor falls within 99 steps from every one of 256 held-out starts, so
the t = 100 target cannot be judged with it; the expert keeps 164 of them up for 99 steps.

Benchmark 1, rollout accuracy (Zhao et al. 2024, arXiv 2405.19189, Fig. 3). From the same start states, with the
same policy and the same random seed:

- ``simulator``: the true rollout, :func:`dyaug.metrics.simulate_policy` (MuJoCo state set from the start
  observation, the policy run for H − 1 steps);
- ``ensemble``: the dynamics ensemble alone, s_{t+1} = f(s_t, π(s_t)) (DyDiff's initial trajectory, 0 iterations);
- ``DyDiff M=m averaged|replaced``: ``m`` = ``--iterations`` rounds of resample-states / relabel-actions, the new
  states averaged with the previous ones (the official code) or replacing them (``--average``).

Compounding error at t: ‖ŝ_t − s_t‖₂ over observation dimensions against the simulator's state, compared while
neither the simulator nor the model has terminated before t (Gymnasium's rule on the true states, the task's rule
on the predicted ones). Local error at t: ‖f(ŝ_{t−1}, a_{t−1}) − ŝ_t‖₂, one simulator step from the model's own
previous state and action (:func:`dyaug.metrics.dynamics_error`), while the model has not terminated. No
trajectory filter is applied here (the filter selects by predicted return). States are indexed t = 0..H − 1, so
the last compared state is t = H − 1: the paper's "t = 100" for H = 100 windows is t = 99 here.

Benchmark 2, policy consistency: ‖a − π(s)‖₂ on stored rows (s, a) of

- the DyDiff and ensemble rollouts above (the rows ``DyDiff.rollout`` returns with ``filter="none"``): 0 up to
  float rounding, since every stored action is π of its stored state;
- SynthER: ``--synther-samples`` transitions of an unconditioned transition diffusion model (``SynthER``,
  Lu et al. 2023) fitted on the same training episodes: what a generator that ignores the policy gives. (DyDiff's
  trajectory model cannot stand in for an unconditioned trajectory generator: it is trained with the actions
  always given, so it never learns to denoise them);
- the held-out real transitions, whose actions come from the stochastic behaviour policy.

Benchmark 3, the trajectory model on real windows: ``--windows`` complete held-out windows of H steps (seeded),
states generated given their true s_0 and the dataset's own actions; mean ‖ŝ_t − s_t‖₂ for sampled windows, for
sampled windows whose s_0 is shuffled between windows (does the model use s_0?), for the denoiser's posterior
mean E[x | condition] from pure noise at σ = 5 (one evaluation: the centre of the model's conditional), and for
s_0 copied forward (a trivial reference).

Fitted generators are cached under ``<out>/generators/`` (keyed by config, dataset, split and seed) and reused;
a fit stopped part-way resumes from its checkpoint there (``DyDiff.fit(checkpoint=...)``) when the same command
runs again; ``--generator PATH`` loads a saved DyDiff instead. Prints a markdown report (also ``<out>/report.md``) and
writes ``<out>/dydiff_rollout_accuracy.png`` (mean and interquartile band against t) and the per-start errors
(``<out>/errors.npz``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import Report, field_values, fit_once, forge_policy, machine, mean_median
from synther_fidelity import split_episodes

import dyaug.datasets
from dyaug import DyDiff, SynthER, Transitions
from dyaug.device import resolve_device
from dyaug.diffusion.settings import EDM_SAMPLING_FIELDS
from dyaug.dydiff import Policy, Trajectories, WindowIndex
from dyaug.dydiff.generator import SAMPLING_FIELDS
from dyaug.metrics import (
    SimulatedRollouts,
    dynamics_error,
    policy_action_distance,
    reached_states,
    simulate_policy,
)
from dyaug.metrics.mujoco_state import locomotion_task

TABLE_STEPS = (1, 5, 10, 25, 50)
MIN_PLOTTED = 5  # a step is plotted while at least this many starts are still compared


@dataclasses.dataclass(frozen=True)
class Arm:
    """One way to roll out: ``iterations`` DyDiff rounds (0: the ensemble alone), averaged or replaced."""

    iterations: int
    average: bool

    @property
    def name(self) -> str:
        if self.iterations == 0:
            return "ensemble"
        return f"DyDiff M={self.iterations} {'averaged' if self.average else 'replaced'}"


@dataclasses.dataclass(frozen=True)
class ArmResult:
    arm: Arm
    compounding: np.ndarray  # (B, H) ‖ŝ_t − s_t‖, NaN where not compared
    local: np.ndarray  # (B, H) one-step simulator error of ŝ_t from (ŝ_{t−1}, a_{t−1}), NaN at t = 0 / not compared
    consistency: np.ndarray  # (rows,) ‖a − π(s)‖ on the rollout's stored transitions
    seconds: float


# ------------------------------------------------------------------------------------------------- data
def start_states(held_out: Transitions, env_id: str, n: int, seed: int) -> np.ndarray:
    """``n`` held-out observations drawn uniformly without replacement among the rebuildable ones."""
    observations = held_out.observations
    candidates = np.flatnonzero(locomotion_task(env_id).rebuildable(observations.astype(np.float64)))
    if len(candidates) < n:
        raise ValueError(f"only {len(candidates)} held-out observations can start a simulator rollout; lower --starts.")
    chosen = np.random.default_rng(seed).choice(candidates, size=n, replace=False)
    return np.array(observations[np.sort(chosen)])


def cached_path(args: argparse.Namespace, stem: str, *parts: object) -> Path:
    """``<out>/generators/<stem>-<hash of parts>``: one cache entry per trained model (its config without the
    sampling settings, which a loaded generator takes from the run), data split and seed."""
    key = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]
    (args.out / "generators").mkdir(parents=True, exist_ok=True)
    return args.out / "generators" / f"{stem}-{key}"


def split_sampling(config: dict, fields: tuple[str, ...]) -> tuple[dict, dict]:
    """A generator's config as (what training fixed, the sampling ``fields`` a load may change)."""
    return {k: v for k, v in config.items() if k not in fields}, {k: config[k] for k in fields}


def dydiff_generator(args: argparse.Namespace, train: Transitions, env_id: str, dataset_id: str) -> tuple[DyDiff, str]:
    """``--generator`` when given, else the cached fit of these settings, else a fresh fit (then cached)."""
    if args.generator is not None:  # --set may change its sampling settings only (DyDiff.load says which)
        gen = DyDiff.load(args.generator, device=args.device, **args.overrides)
        if args.horizon is not None and args.horizon != gen.config.horizon:
            raise ValueError(
                f"--horizon {args.horizon} but the generator at {args.generator} has H = {gen.config.horizon}."
            )
        return gen, f"loaded from `{args.generator}`"
    gen = DyDiff(args.preset, horizon=args.horizon, device=args.device, seed=args.seed, **args.overrides)
    stem = f"dydiff-{args.preset}-H{gen.config.horizon}-seed{args.seed}"
    trained, sampling = split_sampling(gen.config.to_dict(), SAMPLING_FIELDS)
    path = cached_path(args, stem, trained, dataset_id, args.held_out, len(train))
    start = time.perf_counter()
    if not fit_once(lambda: gen, train, path, env_id=env_id, progress=False):  # a stopped fit resumes
        return DyDiff.load(path, device=args.device, **sampling), f"loaded from the cache `{path}`"
    return gen, f"fitted in {time.perf_counter() - start:.0f} s (this run's part), saved to `{path}`"


def synther_generator(args: argparse.Namespace, train: Transitions, dataset_id: str) -> tuple[SynthER, str]:
    gen = SynthER(args.synther_preset, device=args.device, seed=args.seed)
    stem = f"synther-{args.synther_preset}-seed{args.seed}"
    trained, sampling = split_sampling(dataclasses.asdict(gen.config), EDM_SAMPLING_FIELDS)
    path = cached_path(args, stem, trained, dataset_id, args.held_out, len(train))
    path = path.with_name(path.name + ".safetensors")
    if path.is_file():
        return SynthER.load(path, device=args.device, **sampling), f"loaded from the cache `{path}`"
    start = time.perf_counter()
    gen.fit(train, progress=False)
    gen.save(path)
    return gen, f"fitted in {time.perf_counter() - start:.0f} s, saved to `{path}`"


# ---------------------------------------------------------------------------------------------- metrics
def local_errors(env_id: str, trajectories: Trajectories) -> np.ndarray:
    """``(B, H)``: the simulator's one-step error of ŝ_t from (ŝ_{t−1}, a_{t−1}); NaN at t = 0, after the
    model's own terminal step, and where ŝ_{t−1} has a velocity at the clip bound (not rebuildable)."""
    states, actions = trajectories.states.cpu().numpy(), trajectories.actions.cpu().numpy()
    dones = trajectories.dones.cpu().numpy()
    b, h, o = states.shape
    pairs = Transitions(
        observations=states[:, :-1].reshape(-1, o),
        actions=actions[:, :-1].reshape(b * (h - 1), -1),
        rewards=trajectories.rewards[:, :-1].cpu().numpy().reshape(-1),
        next_observations=states[:, 1:].reshape(-1, o),
        terminals=dones.reshape(-1).astype(np.float32),
        timeouts=np.zeros(b * (h - 1), dtype=np.float32),
    )
    errors = dynamics_error(env_id, pairs, threads=1).state_error.reshape(b, h - 1)
    errors = np.where(reached_states(dones)[:, 1:], errors, np.nan)
    return np.concatenate([np.full((b, 1), np.nan), errors], axis=1)


def run_arm(
    gen: DyDiff, arm: Arm, policy: Policy, starts: np.ndarray, truth: SimulatedRollouts, seed: int, env_id: str
) -> ArmResult:
    """Roll ``arm`` out from ``starts`` with ``seed`` and measure it against the simulator rollouts ``truth``."""
    start = time.perf_counter()
    trajectories = gen.engine().run(
        policy,
        torch.as_tensor(starts, device=gen.device),
        iterations=arm.iterations,
        average=arm.average,
        generator=torch.Generator(gen.device).manual_seed(seed),
    )
    seconds = time.perf_counter() - start
    rows = trajectories.to_transitions()
    return ArmResult(
        arm=arm,
        compounding=truth.state_error(trajectories.states.cpu().numpy(), trajectories.dones.cpu().numpy()),
        local=local_errors(env_id, trajectories),
        consistency=policy_action_distance(policy, rows.observations, rows.actions, device=gen.device),
        seconds=seconds,
    )


def compared_ratio(model: np.ndarray, baseline: np.ndarray, t: int) -> tuple[float, int]:
    """Mean error of ``model`` over mean error of ``baseline`` at step t, over the starts compared in both."""
    both = ~np.isnan(model[:, t]) & ~np.isnan(baseline[:, t])
    if not both.any():
        return float("nan"), 0
    return float(model[both, t].mean() / baseline[both, t].mean()), int(both.sum())


# ----------------------------------------------------------------------------------------------- report
def error_table(
    report: Report, title: str, results: list[ArmResult], field: str, steps: list[int], alive: np.ndarray
) -> None:
    report(f"**{title}** (mean / median (starts compared)):\n")
    report("| t | simulator alive | " + " | ".join(r.arm.name for r in results) + " |")
    report("|---:|---:|" + "---:|" * len(results))
    for t in steps:
        cells = " | ".join(mean_median(getattr(r, field)[:, t]) for r in results)
        report(f"| {t} | {int(alive[:, t].sum())} | {cells} |")
    report()


def consistency_row(report: Report, name: str, distances: np.ndarray) -> None:
    report(
        f"| {name} | {len(distances)} | {distances.mean():.4g} | {np.median(distances):.4g} | "
        f"{np.quantile(distances, 0.9):.4g} | {distances.max():.4g} |"
    )


def plot(path: Path, results: list[ArmResult], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, field, label in (
        (axes[0], "compounding", "‖ŝ_t − s_t‖ against the simulator rollout"),
        (axes[1], "local", "one-step error of ŝ_t from (ŝ_{t−1}, a_{t−1})"),
    ):
        for j, result in enumerate(results):
            errors = getattr(result, field)[:, 1:]
            counts = (~np.isnan(errors)).sum(axis=0)
            shown = np.flatnonzero(counts >= MIN_PLOTTED)
            if len(shown) == 0:
                continue
            steps, errors = shown + 1, errors[:, shown]
            low, high = np.nanquantile(errors, [0.25, 0.75], axis=0)
            ax.plot(steps, np.nanmean(errors, axis=0), color=f"C{j}", label=result.arm.name)
            ax.fill_between(steps, low, high, color=f"C{j}", alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel("state error (L2)")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- real windows
def window_check(report: Report, gen: DyDiff, test: Transitions, steps: list[int], args: argparse.Namespace) -> None:
    """Benchmark 3: the trajectory model given the true s_0 and actions of complete held-out windows."""
    model = gen.model.trajectory_model
    horizon, obs_dim = model.horizon, model.obs_dim
    first = torch.as_tensor(WindowIndex.of(test, horizon).complete(), device=args.device)
    rows = torch.as_tensor(np.concatenate([test.observations, test.actions], axis=1), device=args.device)
    windows = rows[first[:, None] + torch.arange(horizon, device=args.device)[None, :]]
    rng = torch.Generator().manual_seed(args.seed)
    windows = windows[torch.randperm(len(windows), generator=rng)[: args.windows].to(args.device)]
    s0, actions, true_states = windows[:, 0, :obs_dim], windows[:, :, obs_dim:], windows[:, :, :obs_dim]
    shuffled = s0[torch.randperm(len(s0), generator=rng).to(args.device)]
    generator = torch.Generator(args.device).manual_seed(args.seed)
    condition = model.condition(s0, actions)
    noise = 5.0 * torch.randn(condition.values.shape, generator=generator, device=args.device)
    with torch.no_grad():
        mean = model.denoiser(condition.mask)(condition.apply(noise), 5.0)
    mean_states = model.states_of(mean, s0)  # clamped as samples are
    candidates = {
        "sampled, true s_0": model.resample_states(s0, actions, generator=generator),
        "sampled, s_0 shuffled between windows": model.resample_states(shuffled, actions, generator=generator),
        "posterior mean from σ = 5 (one evaluation)": mean_states,
        "s_0 copied forward (reference)": s0[:, None, :].expand_as(true_states),
    }
    report(f"### 3. The trajectory model on {len(windows)} complete held-out windows (true s_0 and actions)\n")
    report("Mean ‖ŝ_t − s_t‖₂ against the dataset's states:\n")
    report("| states | " + " | ".join(f"t = {t}" for t in steps) + " |")
    report("|---|" + "---:|" * len(steps))
    for name, states in candidates.items():
        errors = (states - true_states).norm(dim=-1).mean(dim=0).cpu().numpy()
        report(f"| {name} | " + " | ".join(f"{errors[t]:.3f}" for t in steps) + " |")
    report()


# ------------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="hopper/medium", help="a forged dataset (e.g. hopper/medium-replay)")
    parser.add_argument("--policy", choices=("medium", "expert"), default="expert", help="SAC checkpoint")
    parser.add_argument("--preset", default="cpu", help="DyDiff preset (cpu: H = 32; paper: H = 100)")
    parser.add_argument("--horizon", type=int, default=None, help="H (default: the preset's)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="DyDiffConfig overrides, e.g. train_steps=20000"
    )
    parser.add_argument("--iterations", type=int, nargs="+", default=None, help="DyDiff rounds M (default: preset's)")
    parser.add_argument("--average", choices=("both", "on", "off"), default="both", help="average the resampled states")
    parser.add_argument("--starts", type=int, default=256, help="held-out start states")
    parser.add_argument("--windows", type=int, default=256, help="held-out windows of benchmark 3")
    parser.add_argument("--held-out", type=float, default=0.2, help="fraction of episodes held out")
    parser.add_argument("--synther-preset", default="cpu")
    parser.add_argument("--synther-samples", type=int, default=10_000)
    parser.add_argument("--generator", type=Path, default=None, help="a saved DyDiff to use instead of fitting")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "dydiff_rollout_accuracy"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny presets (H = 8), 32 starts")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.synther_preset, args.starts, args.synther_samples = "tiny", "tiny", 32, 1_000
        args.out = args.out.with_name(args.out.name + "_quick")
    args.device = resolve_device(args.device)
    args.overrides = field_values(args.set, "--set")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report()
    started = time.perf_counter()

    dataset = dyaug.datasets.load(args.dataset)
    env_id = dataset.env_spec.id
    train, test = split_episodes(Transitions.from_minari(dataset), args.held_out, args.seed)
    policy, policy_text = forge_policy(dataset.id, args.policy, args.device)
    gen, gen_text = dydiff_generator(args, train, env_id, dataset.id)
    horizon = gen.config.horizon
    iterations = args.iterations if args.iterations is not None else [gen.config.iterations]
    averages = {"both": (True, False), "on": (True,), "off": (False,)}[args.average]
    arms = [Arm(0, True)] + [Arm(m, avg) for m in iterations if m > 0 for avg in averages]
    starts = start_states(test, env_id, args.starts, args.seed)

    report(
        f"## DyDiff rollout accuracy and policy consistency ({datetime.datetime.now().isoformat(timespec='seconds')})\n"
    )
    report(f"- machine: {machine(args.device)}")
    report(f"- command: `python {' '.join(sys.argv)}`")
    report(
        f"- data: `{dataset.id}` ({env_id}), episodes split {1 - args.held_out:.0%}/{args.held_out:.0%} with seed "
        f"{args.seed}: {len(train)} training / {len(test)} held-out transitions; {args.starts} start states drawn "
        f"from the held-out observations (seed {args.seed})"
    )
    report(f"- policy: {policy_text}")
    sampler = gen.config.sampler()
    report(
        f"- DyDiff preset `{gen.preset}`, H = {horizon}, sampler {sampler} "
        f"({sampler.network_evaluations} evaluations), {gen.config.train_steps} training steps, "
        f"seed {gen.seed}" + (f", overrides {args.overrides}" if args.overrides else "") + f": {gen_text}"
    )
    report(f"- rollouts: seed {args.seed} for every arm (so all arms share the ensemble's initial trajectory)\n")

    start = time.perf_counter()
    truth = simulate_policy(env_id, starts, policy, horizon, device=args.device)
    report(
        f"Simulator rollouts: {time.perf_counter() - start:.1f} s; mean true episode length within the window: "
        f"{truth.reached.sum(axis=1).mean():.1f} of {horizon} states.\n"
    )
    results = [run_arm(gen, arm, policy, starts, truth, args.seed, env_id) for arm in arms]
    report("Rollout time: " + ", ".join(f"{r.arm.name} {r.seconds:.1f} s" for r in results) + ".\n")

    steps = [t for t in TABLE_STEPS if t < horizon - 1] + [horizon - 1]
    report(f"### 1. State error against the horizon (t = 0..{horizon - 1})\n")
    error_table(
        report, "Compounding error ‖ŝ_t − s_t‖₂ against the simulator", results, "compounding", steps, truth.reached
    )
    error_table(
        report, "Local (one-step) error along each model's own trajectory", results, "local", steps, truth.reached
    )
    last = horizon - 1
    for result in results[1:]:
        ratio, n = compared_ratio(result.compounding, results[0].compounding, last)
        verdict = "not judged, no start compared" if n == 0 else "met" if ratio <= 0.5 else "not met"
        report(
            f"- t = {last}: {result.arm.name} / ensemble mean compounding error = {ratio:.3f} over the {n} starts "
            f"compared in both (target ≤ 0.5 at t = 100: {verdict}{'' if horizon >= 100 else ', but H < 100'})"
        )
    report()

    report("### 2. Policy consistency ‖a − π(s)‖₂ on stored rows\n")
    report("| data | rows | mean | median | p90 | max |")
    report("|---|---:|---:|---:|---:|---:|")
    for result in results:
        consistency_row(report, f"{result.arm.name} rollouts (all rows, no filter)", result.consistency)
    synther, synther_text = synther_generator(args, train, dataset.id)
    synthetic = synther.sample(args.synther_samples, seed=args.seed, progress=False)
    consistency_row(
        report,
        f"SynthER `{args.synther_preset}` samples (unconditioned)",
        policy_action_distance(policy, synthetic.observations, synthetic.actions, device=args.device),
    )
    consistency_row(
        report,
        "held-out real transitions (behaviour policy)",
        policy_action_distance(policy, test.observations, test.actions, device=args.device),
    )
    report(f"\nSynthER: {synther_text}.\n")
    window_check(report, gen, test, steps, args)

    png = args.out / "dydiff_rollout_accuracy.png"
    plot(png, results, f"{dataset.id}, {args.policy} SAC policy, DyDiff `{gen.preset}` H = {horizon}")
    np.savez_compressed(
        args.out / "errors.npz",
        starts=starts,
        simulator_observations=truth.observations,
        **{f"{r.arm.name}/{f}": getattr(r, f) for r in results for f in ("compounding", "local")},
    )
    report(
        f"Plot: `{png}`; per-start errors: `{args.out / 'errors.npz'}`; total {time.perf_counter() - started:.0f} s."
    )
    report.save(args.out / "report.md")


if __name__ == "__main__":
    main()
