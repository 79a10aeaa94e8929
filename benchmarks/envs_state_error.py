"""Learned-model environments against the simulator: one-step and k-step state error of both modes.

    python benchmarks/envs_state_error.py              # DyDiff `cpu` preset (H = 32) on hopper/expert
    python benchmarks/envs_state_error.py --quick      # smoke test: tiny preset on hopper/expert-tiny, < 3 minutes
    python benchmarks/envs_state_error.py --dataset hopper/medium --generator <a DyDiff fitted on the same split>

Data: a forged dataset (``--dataset``), its episodes split 80/20 (seeded). A DyDiff generator (``--preset``) is
fitted on the training episodes and served as :class:`dyaug.envs.LearnedModels` (cached under ``<out>/``).
Starts: the first observations of ``--starts`` held-out episodes (real reset states).

Actions: the forge's deterministic SAC actor of the dataset's run (``--policy``) is run in the simulator from
every start for K = max(``--k``) steps (:func:`dyaug.metrics.simulate_policy`); its actions are then given, open
loop, to :class:`dyaug.envs.LearnedDynamicsVectorEnv` in each mode, from the same start states
(``reset(options={"states": starts})``, one batch, seed ``--seed``). Both modes see the same starts and actions.

- k-step error: ‖ŝ_k − s_k‖₂ against the simulator's state after k steps. ``MDP`` columns compare a start while
  neither the simulator nor the model has terminated before step k (the model's terminations: the task's rule on
  its own states); ``all`` columns compare every start (the simulator keeps stepping after a terminal state, the
  models are stepped with termination switched off).
- one-step error: from every state the simulator reached before terminating, one model step with the
  simulator's action against the simulator's next state (a vector environment reset to all of them at once).
- the diffusion mode's first step on ``--windows`` real held-out windows: given s_0 and a_0 only, the error at
  t = 1 with each guess of the actions not taken yet (``dyaug.envs.ActionContinuations`` against a_0 repeated,
  the mean action, and the true actions).

Prints a markdown report (also ``<out>/report.md``) and writes the per-start errors to ``<out>/errors.npz``.
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
from common import Report, forge_policy, machine, mean_median
from synther_fidelity import split_episodes

import dyaug.datasets
from dyaug import DyDiff, Transitions
from dyaug.datasets.catalog import dataset_id, parse_dataset_id, resolve_env
from dyaug.device import resolve_device
from dyaug.dydiff import PRESETS, WindowIndex
from dyaug.dydiff.trajectory_model import given_mask
from dyaug.envs import LearnedDynamicsVectorEnv, LearnedModels
from dyaug.metrics import SimulatedRollouts, simulate_policy
from dyaug.models import DynamicsEnsemble, RewardModel, never_terminates

MODES = ("ensemble", "diffusion")


# ------------------------------------------------------------------------------------- shared by envs_*.py
def forged(name: str) -> tuple[Transitions, str, str]:
    """``(transitions, Gymnasium id, canonical dataset id)`` of a forged dataset (forged first if missing)."""
    env, level, budget, seed = parse_dataset_id(name)
    canonical = dataset_id(env, level, budget, seed)
    return Transitions.from_minari(dyaug.datasets.load(canonical, progress=False)), resolve_env(env).env_id, canonical


def learned_models(
    train: Transitions,
    env_id: str,
    *,
    preset: str,
    diffusion: bool,
    seed: int,
    device: torch.device,
    cache: Path,
    tag: str,
    **overrides,
) -> tuple[LearnedModels, str]:
    """DyDiff's models fitted on ``train`` (``diffusion=False``: the dynamics ensemble and reward model only,
    the preset's single-step settings), with the training observations as start states; loaded from ``cache``
    when this preset, data ``tag``, seed and ``overrides`` were fitted before."""
    config = dataclasses.replace(PRESETS[preset], **overrides)
    # "continuations": the diffusion mode's guess of the actions not taken yet is stored with the models
    key = json.dumps([config.to_dict(), diffusion, seed, tag, len(train), "continuations"], sort_keys=True, default=str)
    kind, digest = "dydiff" if diffusion else "ensemble", hashlib.sha1(key.encode()).hexdigest()[:10]
    path = cache / f"models-{preset}-{kind}-{digest}"
    if path.is_dir():
        return LearnedModels.load(path, device), f"loaded from the cache `{path}`"
    start = time.perf_counter()
    if diffusion:
        gen = DyDiff(preset, device=device, seed=seed, **overrides).fit(train, env_id=env_id, progress=False)
        models = LearnedModels.from_dydiff(gen, env_id, start_states=train.observations, data=train)
    else:
        dynamics = DynamicsEnsemble.fit(train, config.model_config("dynamics"), seed=seed, device=device)
        reward = RewardModel.fit(train, config.model_config("reward"), seed=seed, device=device)
        models = LearnedModels.for_env(env_id, dynamics=dynamics, reward=reward, start_states=train.observations)
    cache.mkdir(parents=True, exist_ok=True)
    models.save(path)
    return models, f"fitted in {time.perf_counter() - start:.0f} s, saved to `{path}`"


def saved_models(path: Path, train: Transitions, env_id: str, device: torch.device) -> tuple[LearnedModels, str]:
    """The models of a saved DyDiff, which must have been fitted on exactly the ``train`` split (e.g. by
    ``dydiff_rollout_accuracy.py`` with the same dataset, ``--held-out`` and ``--seed``)."""
    gen = DyDiff.load(path, device=device)
    fitted_on = gen.model.training_data.get("n_transitions")
    if fitted_on != len(train):
        raise SystemExit(
            f"{path} was fitted on {fitted_on} transitions, not on this split's {len(train)} training transitions; "
            "pass the generator fitted on the same dataset, --held-out and --seed."
        )
    models = LearnedModels.from_dydiff(gen, env_id, start_states=train.observations, data=train)
    return models, f"loaded from `{path}` (fitted on the same {len(train)} training transitions)"


# ------------------------------------------------------------------------------------------ measurements
def open_loop(models: LearnedModels, mode: str, starts: np.ndarray, actions: np.ndarray, seed: int) -> np.ndarray:
    """Observations ``(B, K + 1, obs_dim)`` of the models from ``starts`` under ``actions`` (B, K, act_dim), all
    episodes in one vector environment, never terminated or truncated."""
    b, k = actions.shape[:2]
    free = dataclasses.replace(models, termination=never_terminates)
    envs = LearnedDynamicsVectorEnv(free, b, mode, reset_from="dataset", max_episode_steps=k + 1)
    observations = [envs.reset(seed=seed, options={"states": starts})[0]]
    observations += [envs.step(actions[:, t])[0] for t in range(k)]
    return np.stack(observations, axis=1).astype(np.float64)


def model_terminals(models: LearnedModels, predicted: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``(B, K)`` bool: the models' termination of each predicted step."""
    o, a = predicted.shape[2], actions.shape[2]
    to = lambda x: torch.as_tensor(x, dtype=torch.float32, device=models.device)  # noqa: E731
    done = models.termination(
        to(predicted[:, :-1].reshape(-1, o)), to(actions.reshape(-1, a)), to(predicted[:, 1:].reshape(-1, o))
    )
    return done.cpu().numpy().reshape(actions.shape[:2])


def one_step_errors(models: LearnedModels, mode: str, truth: SimulatedRollouts, seed: int) -> np.ndarray:
    """‖f̂(s_t, a_t) − s_{t+1}‖₂ from every simulator state s_t reached before a terminal step, one batch."""
    alive = truth.reached[:, 1:]  # s_{t+1} is reached: step t is part of the episode
    states, actions, targets = truth.observations[:, :-1][alive], truth.actions[alive], truth.observations[:, 1:][alive]
    predicted = open_loop(models, mode, states.astype(np.float32), actions[:, None].astype(np.float32), seed)
    return np.linalg.norm(predicted[:, 1] - targets, axis=1)


def first_step_fills(
    models: LearnedModels, train: Transitions, held_out: Transitions, n: int, seed: int
) -> dict[str, np.ndarray]:
    """‖ŝ_1 − s_1‖₂ of the trajectory model on ``n`` complete held-out windows given s_0 and a_0 only, for each
    guess of the actions a_1..a_{H−1} not taken yet (the diffusion mode's first step)."""
    model, continuations = models.trajectory_model, models.continuations
    horizon, obs_dim = model.horizon, model.obs_dim
    first = WindowIndex.of(held_out, horizon).complete()
    first = np.sort(np.random.default_rng(seed).choice(first, size=min(n, len(first)), replace=False))
    steps = first[:, None] + np.arange(horizon)[None, :]
    to = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=models.device)  # noqa: E731
    windows = to(np.concatenate([held_out.observations[steps], held_out.actions[steps]], axis=2))
    a0 = windows[:, :1, obs_dim:]
    fills = {
        "a_0 repeated (the fill before)": a0.expand(-1, horizon - 1, -1),
        "the data's mean action": to(train.actions.mean(axis=0)).expand(len(first), horizon - 1, -1),
        "nearest real step's continuation (the environment's fill)": continuations(
            model.normalizer.normalize(windows[:, 0])
        )[:, : horizon - 1],
        "the true actions (reference)": windows[:, 1:, obs_dim:],
    }
    known = given_mask(horizon, obs_dim, model.act_dim, models.device).expand_as(windows)  # s_0 and every action
    errors = {}
    for name, guess in fills.items():
        filled = torch.cat([windows[:, :, :obs_dim], torch.cat([a0, guess], dim=1)], dim=2)
        states = model.inpaint_states(filled, known, generator=torch.Generator(models.device).manual_seed(seed))
        errors[name] = (states[:, 1] - windows[:, 1, :obs_dim]).norm(dim=-1).cpu().numpy()
    return errors


# ------------------------------------------------------------------------------------------------ report
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="hopper/expert", help="a forged dataset")
    parser.add_argument("--policy", choices=("medium", "expert"), default="expert", help="SAC checkpoint")
    parser.add_argument("--preset", default="cpu", help="DyDiff preset (cpu: H = 32, paper: H = 100)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10, 50, 100], help="steps after which to compare")
    parser.add_argument("--starts", type=int, default=100, help="held-out episodes to start from")
    parser.add_argument("--held-out", type=float, default=0.2)
    parser.add_argument("--windows", type=int, default=256, help="held-out windows of the first-step fill check")
    parser.add_argument(
        "--generator", type=Path, default=None, help="a saved DyDiff fitted on this split (default: fit --preset)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "envs_state_error")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny preset, hopper/expert-tiny, 16 starts")
    args = parser.parse_args()
    if args.quick:
        args.dataset, args.preset, args.starts = "hopper/expert-tiny", "tiny", 16
        args.out = args.out.with_name(args.out.name + "_quick")
    args.device = resolve_device(args.device)
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started, report = datetime.datetime.now().isoformat(timespec="seconds"), Report()

    data, env_id, name = forged(args.dataset)
    train, held_out = split_episodes(data, args.held_out, args.seed)
    if args.generator is not None:
        models, how = saved_models(args.generator, train, env_id, args.device)
    else:
        models, how = learned_models(
            train,
            env_id,
            preset=args.preset,
            diffusion=True,
            seed=args.seed,
            device=args.device,
            cache=args.out,
            tag=name,
        )
    episodes = held_out.episode_slices()[: args.starts]
    starts = np.array(held_out.observations[[s.start for s in episodes]])
    policy, policy_text = forge_policy(name, args.policy, args.device)
    k_max = max(args.k)
    truth = simulate_policy(env_id, starts, policy, k_max + 1, device=args.device)
    actions = truth.actions.astype(np.float32)

    report(f"## Learned-model environments against the simulator, {env_id} ({started})\n")
    report(f"- machine: {machine(args.device)}")
    report(f"- command: `python {' '.join(sys.argv)}`")
    report(
        f"- data: `{name}`, {len(train)} training transitions; models: DyDiff `{args.preset}` (H = "
        f"{models.trajectory_model.horizon}), {how}"
    )
    report(f"- starts: first observations of {len(starts)} held-out episodes; actions: {policy_text}, open loop")
    errors, seconds = {}, {}
    for mode in MODES:
        clock = time.perf_counter()
        predicted = open_loop(models, mode, starts, actions, args.seed)
        seconds[mode] = time.perf_counter() - clock
        errors[f"{mode} mdp"] = truth.state_error(predicted, model_terminals(models, predicted, actions))
        errors[f"{mode} all"] = np.linalg.norm(predicted - truth.observations, axis=2)
        errors[f"{mode} one-step"] = one_step_errors(models, mode, truth, args.seed)
    report(
        f"- wall time of the {k_max}-step open-loop batch: " + ", ".join(f"{m} {s:.1f} s" for m, s in seconds.items())
    )
    report("\n**State error ‖ŝ − s‖₂** (mean / median (starts compared)):\n")
    report("| step | simulator alive | " + " | ".join(f"{m} MDP | {m} all" for m in MODES) + " |")
    report("|---|---:|" + "---:|" * 2 * len(MODES))
    one_step = " | ".join(f"{mean_median(errors[f'{m} one-step'])} | -" for m in MODES)
    report(f"| one step from every simulator state | {int(truth.reached[:, 1:].sum())} | {one_step} |")
    for k in sorted(args.k):
        cells = " | ".join(
            f"{mean_median(errors[f'{m} mdp'][:, k])} | {mean_median(errors[f'{m} all'][:, k])}" for m in MODES
        )
        report(f"| k = {k} (open loop) | {int(truth.reached[:, k].sum())} | {cells} |")
    fills = first_step_fills(models, train, held_out, args.windows, args.seed)
    report(
        "\n**The diffusion mode's first step**: ‖ŝ_1 − s_1‖₂ of the trajectory model on complete held-out windows "
        "given s_0 and a_0, with each guess of the actions not taken yet (mean / median (windows)):\n"
    )
    report("| actions a_1..a_{H-1} | error at t = 1 |")
    report("|---|---:|")
    for name, values in fills.items():
        report(f"| {name} | {mean_median(values)} |")
    np.savez(args.out / "errors.npz", **{k.replace(" ", "_"): v for k, v in errors.items()})
    report.save(args.out / "report.md")


if __name__ == "__main__":
    main()
