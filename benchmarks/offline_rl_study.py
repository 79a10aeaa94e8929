"""Does it help? The pre-registered offline-RL study of benchmarks/PROTOCOL.md: d3rlpy's TD3PlusBC and IQL alone,
with SynthER (mixed 50/50 and synthetic only) and with DyDiff, and the diffusion actors, on the forge's datasets.

    python benchmarks/offline_rl_study.py --datasets hopper/medium-replay --algos td3plusbc     # one process per core
    python benchmarks/offline_rl_study.py --report                                             # tables and plots
    python benchmarks/offline_rl_study.py --quick                                              # smoke test

Every run trains for ``--steps`` gradient steps and is evaluated on ``--episodes`` episodes of the real environment
after every tenth of them (reset seeds 10_000 * seed + episode, the same for every arm and evaluation point),
D4RL-normalised with the forge catalog's reference returns. The arms of a (dataset, algorithm, seed) start from
the same ``d3rlpy.seed`` and draw their batches from the same vectorised buffer code
(``dyaug.integrations.d3rlpy.SyntheticReplayBuffer``; the ``base`` arm with ``real_ratio = 1``, so no synthetic
row is ever drawn), so only the data differ:

- ``base``: the real data;
- ``synther-mix``: ``--synthetic`` SynthER samples, half of each batch;
- ``synther-replace``: the SynthER samples only (``real_ratio = 0``, the paper's offline setting);
- ``dydiff``: ``DyDiffAugmenter``, a rollout phase of the current policy every ``--rollout-every`` steps from
  ``--rollout-batch`` start states, 60% real rows per batch;
- ``dydiff-labels`` (exploratory, declared in PROTOCOL.md after the ``dydiff`` arm's results; reported apart): the
  ``dydiff`` arm with each generated row's next state from the dynamics ensemble (``labels="models"``);
- ``dydiff-fixed`` (exploratory, declared likewise): the ``dydiff`` arm with every rollout driven by one fixed
  policy, d3rlpy's BC trained on the real data for 20,000 steps with the run's seed (scaled with ``--steps``:
  0.4x the learner's), instead of the learner.

The generators (SynthER and DyDiff, the frozen presets ``cpu-v1``: ``cpu`` as it was when the study began) are
fitted once per dataset with ``--generator-seed``, on that dataset only (a 10% subset's generators see the subset
only), trained and sampled in ``--generator-precision``, and stored under ``--generators`` (loaded on a rerun;
large, not committed). Each finished run is stored as a small JSON record under ``--out``, by default
``benchmarks/results/offline_rl_study/`` in the repository: commit the records, and the results and the resume
point survive a fresh clone; ``--report`` reads every stored run. Processes started with the same command (one per
core) share its runs out: each run is held by one process at a time (a lock under ``--partial``), and the others
go on to the next.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from common import (
    PLOTS,
    claim,
    d3rlpy_baseline,
    evaluate_returns,
    fit_offline,
    fit_once,
    machine,
    made_once,
    normalized_scores,
    phase_summary,
    quiet_d3rlpy,
    shown,
    stored_run,
)
from dyaug.integrations.d3rlpy import (
    DyDiffAugmenter,
    SyntheticReplayBuffer,
    load_training_state,
    save_training_state,
    transitions_to_d3rlpy,
)

import dyaug.datasets
from dyaug import DyDiff, SynthER, Transitions
from dyaug.datasets.catalog import parse_dataset_id, resolve_env
from dyaug.device import precision_timings

ARMS = ("base", "synther-mix", "synther-replace", "dydiff")
ACTORS = ("diffusion_ql", "srpo")  # the diffusion actors, run on the base data only (protocol, section 3)
EXPLORATORY = ("dydiff-labels", "dydiff-fixed")  # not pre-registered (PROTOCOL.md): reported apart from the main table
DYDIFF_LABELS = {"dydiff": "trajectory", "dydiff-labels": "models", "dydiff-fixed": "trajectory"}
REAL_RATIO = {"base": 1.0, "synther-mix": 0.5, "synther-replace": 0.0} | dict.fromkeys(DYDIFF_LABELS, 0.6)
FIXED_POLICY_STEPS = 20_000  # the dydiff-fixed arm's behaviour cloning (PROTOCOL.md, exploratory arm 2)
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "offline_rl_study"  # the run records: small JSON files, committed
TRANSCRIBED = ROOT / "benchmarks" / "results" / "offline_rl_study_transcribed.json"  # final scores of lost records
GENERATORS = ROOT / "runs" / "offline_rl_study" / "generators"  # fitted generators and samples: large, not committed
PARTIAL = ROOT / "runs" / "offline_rl_study" / "partial"  # unfinished runs' training states: large, not committed
STEPS = 50_000  # the protocol's budget; runs of another length (a declared extension) are stored and shown apart


def row(run: dict) -> tuple[str, str]:
    """A run's row of the study: its dataset, short (``dyaug/hopper/medium-replay-v0`` and ``hopper/medium-replay``
    are one row; a subset is named in full on the command line: ``dyaug/hopper/medium-replay-10pct-v0``), with the
    steps when they are not the protocol's, and its algorithm."""
    dataset, steps = re.sub(r"-v\d+$", "", run["dataset"].removeprefix("dyaug/")), run["steps"]
    return (dataset if steps == STEPS else f"{dataset}, {steps:,} steps"), run["algo"]


def parent_name(name: str) -> str:
    """A subset's parent (``dyaug/hopper/medium-replay-10pct-v0`` -> ``dyaug/hopper/medium-replay-v0``)."""
    return re.sub(r"-\d+(?:\.\d+)?pct(?:-s\d+)?(?=-v\d+$)", "", name)


def slug(name: str) -> str:
    return name.removeprefix("dyaug/").replace("/", "-")


def generator_path(directory: Path, name: str, seed: int, preset: str, part: str) -> Path:
    """Where the study stores ``part`` (``"synther"``, ``"dydiff"``, ``"samples<n>.safetensors"``) of dataset
    ``name``'s generators fitted with ``seed`` and ``preset`` (the study's own preset, ``cpu-v1``, has no suffix)."""
    suffix = "" if preset == "cpu-v1" else f"-{preset}"
    return directory / f"{slug(name)}-seed{seed}{suffix}-{part}"


class Generators:
    """A dataset's SynthER samples and DyDiff, fitted once (``--generator-seed``) and stored, else loaded."""

    def __init__(self, name: str, real: Transitions, env_id: str, args: argparse.Namespace) -> None:
        self.name, self.real, self.env_id, self.args = name, real, env_id, args

        def path(part: str) -> Path:
            return generator_path(args.generators, name, args.generator_seed, args.generator_preset, part)

        self.synther_path, self.dydiff_path = path("synther"), path("dydiff")
        self.samples_path = path(f"samples{args.synthetic}.safetensors")
        self.precision = {"train_precision": args.generator_precision, "sample_precision": args.generator_precision}

    def prepare(self, arm: str) -> None:
        """Fit and sample what ``arm`` needs when it is not stored yet (one process; the others wait for it). A run
        calls this before it seeds its learner, since fitting and sampling draw from the global random generators:
        the run that makes the files then trains as a rerun that finds them does."""
        if arm in DYDIFF_LABELS:
            self.fit(DyDiff, self.dydiff_path)
        elif arm != "base":
            made_once(self.samples_path, self.sample)

    def sample(self) -> None:
        """Draw the SynthER samples (fitting SynthER first when it is not stored) and store them."""
        from dyaug.persistence import save_checkpoint

        self.fit(SynthER, self.synther_path)
        generator = SynthER.load(self.synther_path, device="cpu", sample_precision=self.args.generator_precision)
        samples = generator.sample(self.args.synthetic, seed=self.args.generator_seed, progress=False)
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in samples.as_dict().items() if v is not None}
        save_checkpoint(self.samples_path, tensors, {"kind": "synthetic-transitions", **generator.provenance()})

    def fit(self, kind: type[SynthER] | type[DyDiff], path: Path) -> None:
        """A ``kind`` generator fitted on the real data and saved at ``path``, unless it is there (:func:`fit_once`)."""
        args = self.args

        def make() -> SynthER | DyDiff:
            return kind(args.generator_preset, device="cpu", seed=args.generator_seed, **self.precision)

        fit_once(make, self.real, path, env_id=self.env_id, progress=False)

    def synthetic(self) -> Transitions:
        """The stored SynthER samples (:meth:`prepare` makes them)."""
        from dyaug.persistence import load_checkpoint

        tensors, _ = load_checkpoint(self.samples_path, kind="synthetic-transitions")
        return Transitions(**{k: v.numpy() for k, v in tensors.items()})

    def dydiff(self, labels: str) -> DyDiff:
        """The stored DyDiff with ``labels`` (a rollout setting: the same fitted models for every arm; :meth:`prepare`
        fits them)."""
        return DyDiff.load(
            self.dydiff_path, device="cpu", labels=labels, sample_precision=self.args.generator_precision
        )


def build_algo(name: str, task: str, seed: int, args: argparse.Namespace) -> Any:
    if name in ("td3plusbc", "iql"):
        return d3rlpy_baseline(name, seed, "cpu:0", compile_graph=args.compile_graph)
    from actor_offline_rl import diffusion_ql, srpo

    return {"diffusion_ql": diffusion_ql, "srpo": srpo}[name](task, seed, args)


def run_one(
    dataset: str, algo_name: str, arm: str, seed: int, data: dict, args: argparse.Namespace, partial: Path
) -> dict:
    """Train one (dataset, algorithm, arm, seed) with evaluations after every tenth of the steps (for SRPO: of its
    actor's steps, after the behaviour model and critic have had theirs).

    Runs without DyDiff store their whole training state at ``partial`` after each evaluation (and after each
    tenth of SRPO's pretraining) and continue from it when restarted: bit for bit on the same machine. A DyDiff run
    starts again (its model buffer is not stored)."""
    real, env_id, env_short, generators = data["real"], data["env_id"], data["env_short"], data["generators"]
    task = "-".join(parse_dataset_id(parent_name(dataset))[:2])
    real_buffer = transitions_to_d3rlpy(real)
    fixed = behaviour_cloning(real_buffer, env_id, env_short, seed, args) if arm == "dydiff-fixed" else None
    generators.prepare(arm)
    algo = build_algo(algo_name, task, seed, args)  # seeds d3rlpy: the learner starts as in every other arm
    chunk = args.steps // args.evaluations
    if arm in DYDIFF_LABELS:
        learner = DyDiffAugmenter(
            algo, generator=generators.dydiff(DYDIFF_LABELS[arm]), preset=args.preset, real_ratio=REAL_RATIO[arm],
            rollout_every=args.rollout_every, rollout_batch=args.rollout_batch, buffer_size=args.buffer_size,
            device="cpu", seed=seed, env_id=env_id, rollout_policy=None if fixed is None else fixed["algo"],
        )  # fmt: skip

        def train(steps: int) -> float:
            start = time.perf_counter()
            learner.fit(real_buffer, n_steps=steps, n_steps_per_epoch=args.rollout_every, **args.quiet)
            return time.perf_counter() - start

        progress = new_progress()
    else:
        synthetic = real[:1] if arm == "base" else generators.synthetic()
        buffer = SyntheticReplayBuffer(real_buffer, synthetic, real_ratio=REAL_RATIO[arm])

        def train(steps: int) -> float:
            return fit_offline(algo, buffer, steps)

        progress = resume(algo, buffer, partial)
        while algo_name == "srpo" and (left := algo.config.phases().pretraining_left(algo.steps_done)) > 0:
            progress["train_s"] += train(min(chunk, left))  # behaviour model and critic first, stored, not evaluated
            save_training_state(algo, partial, **progress)
    curve = progress["curve"]
    for k in range(len(curve) + 1, args.evaluations + 1):
        progress["train_s"] += train(chunk)
        curve.append([k * chunk, score(algo.predict, env_id, env_short, seed, args)])
        if arm not in DYDIFF_LABELS and k < args.evaluations:
            save_training_state(algo, partial, **progress)
    train_s = progress["train_s"]
    record = {
        "dataset": dataset,
        "algo": algo_name,
        "arm": arm,
        "seed": seed,
        "steps": args.steps,
        "score": curve[-1][1],
        "curve": curve,
        "train_s": train_s,
        "generator_precision": None if arm == "base" else args.generator_precision,
        "resumed_at": progress["resumed_at"],  # evaluations done before each restart from the stored state
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }
    if arm in DYDIFF_LABELS:
        record |= phase_summary(learner)
    if fixed is not None:
        record |= {k: v for k, v in fixed.items() if k != "algo"}
    return record | {"precision": precision_timings()}  # what precision="auto" measured and chose in this process


def new_progress() -> dict[str, Any]:
    """A run's progress before its first step: the curve so far, training seconds, the restarts."""
    return {"curve": [], "train_s": 0.0, "resumed_at": []}


def resume(algo: Any, buffer: Any, partial: Path) -> dict[str, Any]:
    """A run's progress (curve, training seconds, restarts), restored with the algorithm's training state and the
    global RNGs from ``partial`` when an earlier process stored them there."""
    if not partial.exists():
        return new_progress()
    progress = load_training_state(algo, partial, buffer)
    progress["resumed_at"].append(len(progress["curve"]))
    print(f"resumed {partial.name} after {len(progress['curve'])} evaluations", file=sys.stderr, flush=True)
    return progress


def behaviour_cloning(real_buffer: Any, env_id: str, env_short: str, seed: int, args: argparse.Namespace) -> dict:
    """The ``dydiff-fixed`` arm's rollout policy: d3rlpy's BC (its defaults, observations standardised) trained on
    the real data for ``FIXED_POLICY_STEPS`` steps with ``d3rlpy.seed(seed)``, and its score, evaluated as the
    learners are."""
    import d3rlpy

    d3rlpy.seed(seed)
    bc = d3rlpy.algos.BCConfig(
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(), compile_graph=args.compile_graph
    ).create(device="cpu:0")
    steps = max(1, args.steps * FIXED_POLICY_STEPS // STEPS)
    train_s = fit_offline(bc, real_buffer, steps)
    return {
        "algo": bc,
        "rollout_policy_steps": steps,
        "rollout_policy_score": score(bc.predict, env_id, env_short, seed, args),
        "rollout_policy_train_s": train_s,
    }


def score(predict: Any, env_id: str, env_short: str, seed: int, args: argparse.Namespace) -> float:
    """Mean D4RL-normalised return of ``predict`` over ``--episodes`` episodes (reset seeds from the run's seed)."""
    return float(np.mean(normalized_scores(env_short, evaluate_returns(predict, env_id, args.episodes, seed))))


# ------------------------------------------------------------------------------------------------- statistics
def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student's t over the runs)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, float("nan")
    return mean, float(stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / np.sqrt(n))


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:  # no interval from one seed
        return f"{values[0]:.1f} (n=1)"
    mean, half = interval(values)
    return f"{mean:.1f} ± {half:.1f} (n={len(values)})"


def paired(records: list[dict], arm: str, reference: str = "base") -> str:
    """Mean per-seed difference ``arm`` − ``reference`` with its 95% interval; an effect only when it excludes 0."""
    return difference(
        {r["seed"]: r["score"] for r in records if r["arm"] == arm},
        {r["seed"]: r["score"] for r in records if r["arm"] == reference},
    )


def difference(other: dict[int, float], base: dict[int, float]) -> str:
    """Mean of ``other[seed] − base[seed]`` over the seeds both have, its 95% interval and the verdict."""
    seeds = sorted(set(base) & set(other))
    if len(seeds) < 2:
        return "-"
    mean, half = interval([other[s] - base[s] for s in seeds])
    verdict = "**better**" if mean - half > 0 else "**worse**" if mean + half < 0 else "no effect"
    return f"{mean:+.1f} ± {half:.1f} ({verdict})"


def stored_runs(out: Path, transcribed: Path | None) -> list[dict]:
    """Every run record under ``out``, and from ``transcribed`` the final scores of runs whose records were lost
    (``"transcribed": true``: no curve, no phases), each only where no record of the same run replaces it."""
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    have = {run_key(r) for r in records}
    lost = json.loads(transcribed.read_text())["runs"] if transcribed is not None and transcribed.exists() else []
    return records + [r for r in lost if run_key(r) not in have]


def with_records(runs: list[dict]) -> list[dict]:
    """The runs with a full record (a transcribed run kept its final score only: no curve, no phases)."""
    return [r for r in runs if not r.get("transcribed")]


def run_key(run: dict) -> tuple:
    return (*row(run), run["arm"], run["seed"])


def report(args: argparse.Namespace) -> None:
    runs = stored_runs(args.out, TRANSCRIBED if args.out == OUT else None)
    if not runs:
        print("no stored runs under", args.out)
        return
    recorded = with_records(runs)
    print(f"### Offline-RL study ({min(r['date'] for r in runs)} to {max(r['date'] for r in runs)})\n")
    if recorded:
        print(f"- machine: {recorded[0]['machine']}")
    print(
        "- protocol: [benchmarks/PROTOCOL.md](PROTOCOL.md); command: `python benchmarks/offline_rl_study.py "
        "--datasets <d> --algos <a>` (one process per core), then `--report`"
    )
    print(
        f"- {len(runs)} runs; {len(recorded)} stored records, {sum(r['train_s'] for r in recorded) / 3600:.1f} h of "
        f"training; {len(runs) - len(recorded)} transcribed final scores (`{shown(TRANSCRIBED)}`: records lost)\n"
    )
    print(
        "D4RL-normalised score of the final policy, mean ± 95% interval over seeds; beside each augmented arm, its "
        "paired per-seed difference to base with its 95% interval.\n"
    )
    print("| dataset | algorithm | base | + SynthER mix | Δ | + SynthER replace | Δ | + DyDiff | Δ |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    keys = sorted({row(r) for r in runs})
    for dataset, algo in keys:
        rs = [r for r in runs if row(r) == (dataset, algo)]
        cells = [cell([r["score"] for r in rs if r["arm"] == "base"])]
        for arm in ARMS[1:]:
            cells += [cell([r["score"] for r in rs if r["arm"] == arm]), paired(rs, arm)]
        mark = " †" if any(r.get("transcribed") for r in rs) else ""
        print(f"| {dataset}{mark} | {algo} | " + " | ".join(cells) + " |")
    if any(r.get("transcribed") for r in runs):
        print("\n† some of the row's scores are transcribed final scores (one decimal) of runs whose records are lost.")
    per_seed(runs, keys)
    actors(runs)
    exploratory(runs)
    dydiff_phases(runs)
    plot_curves(runs, args.out)


def per_seed(runs: list[dict], keys: list[tuple[str, str]]) -> None:
    """Each row's final scores by seed, per pre-registered arm (the numbers behind its means and paired Δ)."""
    print("\nPer seed (final score; seeds in order):\n")
    print("| dataset | algorithm | seeds | " + " | ".join(ARMS) + " |")
    print("|---|---|---|" + "---|" * len(ARMS))
    for dataset, algo in keys:
        rs = [r for r in runs if row(r) == (dataset, algo) and r["arm"] in ARMS]
        seeds = sorted({r["seed"] for r in rs})
        score = {(r["arm"], r["seed"]): r["score"] for r in rs}
        cells = [" / ".join(f"{score[arm, s]:.1f}" if (arm, s) in score else "-" for s in seeds) for arm in ARMS]
        print(f"| {dataset} | {algo} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |")


def actors(runs: list[dict]) -> None:
    """The diffusion actors (section 3 of the protocol) beside TD3PlusBC, IQL and each other, trained on the same
    data: each difference paired by seed over the seeds both have."""
    actor_rows = sorted({row(r) for r in runs if r["algo"] in ACTORS and r["arm"] == "base"})
    if not actor_rows:
        return
    references = ("td3plusbc", "iql", "diffusion_ql")
    print(
        "\nDiffusion actors on the base data: score, per-seed scores, and the paired per-seed difference to "
        "TD3PlusBC, IQL and Diffusion-QL trained on the same data with the same seeds.\n"
    )
    print("| dataset | actor | score | per seed | " + " | ".join(f"Δ to {a}" for a in references) + " | min per run |")
    print("|---|---|---:|---|" + "---:|" * (len(references) + 1))

    def scores(dataset: str, algo: str) -> dict[int, float]:
        return {r["seed"]: r["score"] for r in runs if row(r) == (dataset, algo) and r["arm"] == "base"}

    for dataset, algo in actor_rows:
        mine = scores(dataset, algo)
        minutes = [r["train_s"] / 60 for r in with_records(runs) if row(r) == (dataset, algo) and r["arm"] == "base"]
        by_seed = " / ".join(f"{mine[s]:.1f}" for s in sorted(mine))
        deltas = [difference(mine, scores(dataset, a)) if a != algo else "-" for a in references]
        print(
            f"| {dataset} | {algo} | {cell(list(mine.values()))} | {by_seed} (seeds "
            f"{', '.join(map(str, sorted(mine)))}) | " + " | ".join(deltas) + " | "
            f"{f'{statistics.fmean(minutes):.0f}' if minutes else '-'} |"
        )


def exploratory(runs: list[dict]) -> None:
    """The arms declared after results (PROTOCOL.md), each paired with ``base`` and with ``dydiff`` by seed."""
    keys = sorted({row(r) for r in runs if r["arm"] in EXPLORATORY})
    if not keys:
        return
    print("\nExploratory arms (declared after the main results; not pre-registered), paired with base by seed:\n")
    print(
        "| dataset | algorithm | arm | score | Δ to base | per seed | dydiff, same seeds | Δ to dydiff "
        "| rollout policy's score |"
    )
    print("|---|---|---|---:|---:|---|---:|---:|---:|")
    for dataset, algo in keys:
        rs = [r for r in runs if row(r) == (dataset, algo)]
        for arm in EXPLORATORY:
            mine = sorted((r for r in rs if r["arm"] == arm), key=lambda r: r["seed"])
            if not mine:
                continue
            seeds = {r["seed"] for r in mine}
            fixed = [r["rollout_policy_score"] for r in mine if "rollout_policy_score" in r]
            dydiff = [r["score"] for r in rs if r["arm"] == "dydiff" and r["seed"] in seeds]
            by_seed = " / ".join(f"{r['score']:.1f}" for r in mine)
            print(
                f"| {dataset} | {algo} | {arm} | {cell([r['score'] for r in mine])} | {paired(rs, arm)} | "
                f"{by_seed} (seeds {', '.join(str(s) for s in sorted(seeds))}) | {cell(dydiff)} | "
                f"{paired(rs, arm, 'dydiff')} | {cell(fixed) if arm == 'dydiff-fixed' else 'the learner'} |"
            )


def dydiff_phases(runs: list[dict]) -> None:
    """What the DyDiff arm's rollout phases put in the learner's batches, per row of the study (means over seeds):
    the evidence beside its score (:func:`common.phase_summary`)."""
    runs = with_records(runs)
    keys = sorted({(*row(r), r["arm"]) for r in runs if r["arm"] in DYDIFF_LABELS})
    if not keys:
        return
    print(
        "\nDyDiff's rollout phases (mean over seeds): phases per run, seconds spent in them, model-buffer rows at the "
        "end, share of trajectories kept by the filter and cut at the data's support, median simulator-checked "
        "next-state error of the generated rows.\n"
    )
    print(
        "| dataset | algorithm | arm | runs | phases | rollout s | synthetic rows | kept | truncated "
        "| sim. state error |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for dataset, algo, arm in keys:
        rs = [r for r in runs if row(r) == (dataset, algo) and r["arm"] == arm]
        mean = {k: statistics.fmean(r[k] for r in rs) for k in ("phases", "rollout_s", "synthetic_size",
                                                               "kept_fraction", "truncated_share")}  # fmt: skip
        errors = [r["sim_state_error"] for r in rs if r["sim_state_error"] is not None]
        error = f"{statistics.fmean(errors):.3f}" if errors else "-"
        print(
            f"| {dataset} | {algo} | {arm} | {len(rs)} | {mean['phases']:.0f} | {mean['rollout_s']:.0f} | "
            f"{mean['synthetic_size']:,.0f} | {mean['kept_fraction']:.2f} | {mean['truncated_share']:.3f} | {error} |"
        )


def plot_curves(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = with_records(runs)
    keys = sorted({row(r) for r in runs})
    if not keys:
        return
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for ax, (dataset, algo) in zip(axes.flat, keys, strict=False):
        for i, arm in enumerate(ARMS + EXPLORATORY):
            curves = [np.array(r["curve"]) for r in runs if row(r) == (dataset, algo) and r["arm"] == arm]
            if not curves:
                continue
            steps = curves[0][:, 0]
            scores = np.stack([c[:, 1] for c in curves if len(c) == len(steps)])
            mean, std = scores.mean(0), scores.std(0)
            ax.plot(steps, mean, color=f"C{i}", label=f"{arm} (n={len(scores)})")
            ax.fill_between(steps, mean - std, mean + std, color=f"C{i}", alpha=0.15)
        ax.set_title(f"{dataset}, {algo}", fontsize=9)
        ax.set_xlabel("gradient steps")
        ax.set_ylabel("D4RL-normalised score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    # offline_rl_study.png holds the curves of the first 81 runs, drawn before their records were lost
    path = (PLOTS if out == OUT else out) / "offline_rl_study_recorded.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nLearning curves (mean ± std over seeds): `{shown(path)}`")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["hopper/medium-replay"])
    parser.add_argument("--algos", nargs="+", default=["td3plusbc"],
                        choices=["td3plusbc", "iql", *ACTORS])  # fmt: skip
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS + EXPLORATORY)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--evaluations", type=int, default=10, help="evaluation points, every steps/evaluations")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--preset", default="cpu", help="actor presets and DyDiff's rollout-phase settings")
    parser.add_argument(
        "--generator-preset", default="cpu-v1", help="SynthER and DyDiff preset (cpu-v1: the frozen cpu preset)"
    )
    parser.add_argument(
        "--generator-precision", default="fp32", choices=["fp32", "bf16", "auto"],
        help="the generators' training and sampling precision (fp32: what 'auto' chose for every generator of the "
        "study's first runs, on a CPU without bf16 instructions; pinned so that every machine computes the same)",
    )  # fmt: skip
    parser.add_argument("--synthetic", type=int, default=1_000_000, help="SynthER samples per dataset")
    parser.add_argument("--generator-seed", type=int, default=0)
    parser.add_argument("--rollout-every", type=int, default=2_500)
    parser.add_argument("--rollout-batch", type=int, default=256)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--compile-graph", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT, help="the run records (commit them: the study's results)")
    parser.add_argument("--generators", type=Path, default=GENERATORS, help="fitted generators and their samples")
    parser.add_argument("--partial", type=Path, default=PARTIAL, help="unfinished runs' training states (resume)")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny presets, 400 steps, 1 seed")
    args = parser.parse_args()
    if args.quick:
        args.preset, args.steps, args.seeds, args.synthetic, args.episodes = "tiny", 400, [0], 2_000, 1
        args.generator_preset = "tiny"
        args.datasets, args.rollout_every, args.evaluations = ["dyaug/hopper/medium-replay-tiny-v0"], 100, 2
        args.out = args.generators = ROOT / "runs" / "offline_rl_study_quick"
        args.partial = args.out / "partial"
    args.quiet = {"show_progress": False, "logger_adapter": __import__("d3rlpy").logging.NoopAdapterFactory()}
    args.d3rlpy_device = "cpu:0"
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    quiet_d3rlpy()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    args.out.mkdir(parents=True, exist_ok=True)
    args.generators.mkdir(parents=True, exist_ok=True)
    args.partial.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(args)
        return
    for dataset in args.datasets:
        minari_dataset = dyaug.datasets.load(dataset)
        real = Transitions.from_minari(minari_dataset)
        env_id = minari_dataset.env_spec.id
        data = {"real": real, "env_id": env_id, "env_short": resolve_env(env_id).short}
        data["generators"] = Generators(minari_dataset.id, real, env_id, args)
        steps_suffix = "" if args.steps == STEPS else f"-{args.steps}steps"
        for seed in args.seeds:
            for algo in args.algos:
                for arm in args.arms if algo in ("td3plusbc", "iql") else ("base",):
                    name = f"{slug(minari_dataset.id)}-{algo}-{arm}-seed{seed}{steps_suffix}"
                    partial = args.partial / f"{name}.safetensors"
                    lock = partial.with_suffix(".lock")
                    with claim(lock) as mine:  # one process per run, however many run
                        if not mine:
                            print(f"{name}: another process is running it", file=sys.stderr, flush=True)
                            continue
                        stored_run(
                            args.out / f"{name}.json",
                            functools.partial(run_one, dataset, algo, arm, seed, data, args, partial),
                            lambda r: (
                                f"{r['dataset']} {r['algo']} {r['arm']} seed {r['seed']}: {r['score']:.1f} "
                                f"({r['train_s'] / 60:.0f} min)"
                            ),
                        )
                        partial.unlink(missing_ok=True)  # the record is stored: the run is done
                        lock.unlink()  # a process that opened it before this sees the record and moves on
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
