"""Which levers make SynthER's transitions faithful to the simulator within a fixed training budget: an ablation.

    python benchmarks/synther_levers.py --dataset halfcheetah/medium-replay --arms old base residual ...   # one core
    python benchmarks/synther_levers.py --dataset halfcheetah/medium-replay --report                     # table, plot
    python benchmarks/synther_levers.py --dataset hopper/medium-replay --arms new --resample solver=dpmpp_2m_sde
    python benchmarks/synther_levers.py --dataset hopper/medium-replay --arms labels=models+fp32 --disagreement

Every arm fits ``SynthER`` on the same 80% of the episodes (seeded split) and is judged on 10,000 samples checked
in the MuJoCo simulator (:func:`dyaug.metrics.dynamics_error`), beside the two baselines of
``benchmarks/synther_fidelity.py`` on the held-out 20%: the real transitions with Gaussian noise of 10% of each
column's standard deviation, and a 7-member dynamics ensemble's one-step predictions. Each arm trains for the
same budget of ``--minutes`` of CPU time of one thread (its number of steps is its measured speed times the
budget; ``old`` is the former ``cpu`` preset, 20k steps whatever the time, and ``new`` the frozen result of
this ablation, ``cpu-v1``, to report the other tasks), and every ``--curve-every`` of its
steps 2,000 samples of the EMA are checked, which gives fidelity against training time. Runs are stored under
``runs/synther_levers/`` and skipped when present: start one process per core with disjoint ``--arms``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import PLOTS, field_values, machine, shown, stored_run
from synther_fidelity import ensemble_predictions, split_episodes, with_noise

import dyaug.datasets
from dyaug import SynthER, Transitions
from dyaug.device import network_width, precision_timings, resolve_precision
from dyaug.metrics import dynamics_error

# the small JSON records live in the repository (commit them: a fresh clone keeps the results and the resume
# point); the fitted generators, large, in the working area
OUT = Path(__file__).resolve().parent / "results" / "synther_levers"
GENERATORS = Path(__file__).resolve().parents[1] / "runs" / "synther_levers" / "generators"
# the former cpu preset (until 2026-12-06), spelled out: 256x3, 20k steps, 32 deterministic Heun steps
OLD = {
    "budget": False,
    **{"width": 256, "depth": 3, "train_steps": 20_000, "sampler_steps": 32, "residual": False},
    **{"transform": "none", "labels": "joint", "ema_decay": 0.995, "lr": 3e-4, "cosine_decay": True},
}
# training and sampling pinned to one precision
FP32 = {"train_precision": "fp32", "sample_precision": "fp32"}
BF16 = {"train_precision": "bf16", "sample_precision": "bf16"}
ARMS: dict[str, dict] = {
    "old": OLD,
    # with the per-column quantile transform of sparse or heavy-tailed columns (contact forces)
    "old+quantile": {**OLD, "transform": "quantile"},
    "new": {"budget": False},  # the preset frozen from this ablation ("cpu-v1"), for the other tasks
    "base": {},  # the same network, trained for the budget
    "residual": {"residual": True},
    "quantile": {"transform": "quantile"},
    "symlog": {"transform": "symlog"},
    "residual+quantile": {"residual": True, "transform": "quantile"},
    "w512": {"width": 512},
    "w1024": {"width": 1024, "depth": 4},
    "w512+residual+quantile": {"width": 512, "residual": True, "transform": "quantile"},
    "ema0.999": {"ema_decay": 0.999},
    "constant-lr": {"lr": 1e-4, "cosine_decay": False},
    "labels=models": {"labels": "models"},
    "residual+labels=models": {"residual": True, "labels": "models"},
    # size against time where bf16 is fast (added 2026-12-07): the labelled preset and wider labelled networks,
    # each for the same CPU budget, in "auto" precision (the record names auto's choice) or pinned
    "labels=models+w512": {"labels": "models", "width": 512},
    "labels=models+w1024": {"labels": "models", "width": 1024, "depth": 4},
    "labels=models+fp32": {"labels": "models", **FP32},
    "labels=models+bf16": {"labels": "models", **BF16},
    "labels=models+w512+fp32": {"labels": "models", "width": 512, **FP32},
    "labels=models+w512+bf16": {"labels": "models", "width": 512, **BF16},
}
CHECK = ("state_error_median", "state_error_mean", "reward_error_mean", "terminal_agreement")


def data_split(dataset: str, seed: int) -> tuple[Transitions, Transitions, str]:
    ds = dyaug.datasets.load(dataset)
    train, test = split_episodes(Transitions.from_minari(ds), 0.2, seed)
    return train, test, ds.env_spec.id


def check(env_id: str, data: Transitions) -> dict:
    summary = dynamics_error(env_id, data, threads=1).summary()
    return {k: float(summary[k]) for k in (*CHECK, "fraction_checkable")}


def baselines(dataset: str, seed: int) -> dict:
    train, test, env_id = data_split(dataset, seed)
    start = time.process_time()
    predicted = ensemble_predictions(train, test, "cpu", seed, env_id)
    return {
        "dataset": dataset,
        "n_train": len(train),
        "n_test": len(test),
        "real": check(env_id, test),
        "noise 0.1": check(env_id, with_noise(test, 0.1, seed)),
        "ensemble": check(env_id, predicted),
        "ensemble_fit_cpu_s": time.process_time() - start,
    }


def generator_for(arm: str, steps: int | None, seed: int, **extra: object) -> SynthER:
    """The arm's SynthER: the ``cpu-v1`` preset (the ``cpu`` preset as this ablation froze it) with the arm's
    settings. Every arm but ``new`` starts from the joint
    model (``labels="joint"``), the ablation's base: the preset diffused whole rows before this ablation froze
    ``labels="models"``."""
    settings = {} if arm == "new" else {"labels": "joint"}
    settings |= {k: v for k, v in ARMS[arm].items() if k not in ("preset", "budget")}
    if steps is not None:
        settings["train_steps"] = steps
    return SynthER(ARMS[arm].get("preset", "cpu-v1"), device="cpu", seed=seed, **{**settings, **extra})


def steps_for_budget(arm: str, train: Transitions, cpu_seconds: float, seed: int) -> tuple[int, float]:
    """Steps of the diffusion model that fill ``cpu_seconds``, from a 300-step probe fit (and its steps per second).
    The probe fits the joint rows: for ``labels="models"`` arms, whose rows are narrower, that is slightly
    pessimistic."""
    probe = generator_for(arm, 300, seed, labels="joint")
    start = time.process_time()
    probe.fit(train, progress=False)
    per_step = (time.process_time() - start) / 300
    return max(1_000, int(cpu_seconds / per_step)), 1 / per_step


def run_arm(dataset: str, arm: str, args: argparse.Namespace) -> dict:
    train, _, env_id = data_split(dataset, args.seed)
    budget = ARMS[arm].get("budget", True)
    seconds = 60 * args.minutes
    if ARMS[arm].get("labels") == "models":  # the label models' fit (measured with the baselines) uses the budget too
        base = json.loads((OUT / f"{dataset.replace('/', '_')}-baselines-seed{args.seed}.json").read_text())
        seconds = max(60.0, seconds - base["ensemble_fit_cpu_s"])
    steps, rate = steps_for_budget(arm, train, seconds, args.seed) if budget else (None, None)
    generator = generator_for(arm, steps, args.seed)
    steps = generator.config.train_steps
    every = max(100, (steps // args.curve_points) // 100 * 100)
    curve, spent = [], {"eval": 0.0}
    start = time.process_time()

    def follow(gen: SynthER, step: int) -> None:
        if step % every and step != steps:
            return
        began = time.process_time()
        samples = gen.sample(2_000, seed=args.seed, progress=False)
        spent["eval"] += time.process_time() - began
        cpu = time.process_time() - start - spent["eval"]
        curve.append([step, cpu, *(check(env_id, samples)[k] for k in ("state_error_median", "state_error_mean"))])

    generator.fit(train, env_id=env_id, progress=False, callback=follow)
    fit_cpu = time.process_time() - start - spent["eval"]
    began, wall = time.process_time(), time.perf_counter()
    samples = generator.sample(args.samples, seed=args.seed, progress=False)
    sample_cpu, sample_wall = time.process_time() - began, time.perf_counter() - wall
    path = GENERATORS / f"{dataset.replace('/', '_')}-{arm}-seed{args.seed}"
    path.parent.mkdir(parents=True, exist_ok=True)
    generator.save(path if generator.model.labeller is not None else path.with_suffix(".safetensors"))
    return {
        "dataset": dataset,
        "arm": arm,
        "settings": ARMS[arm],
        "seed": args.seed,
        "budget_minutes": args.minutes if budget else None,
        "probe_steps_per_cpu_s": rate,
        "train_steps": steps,
        "params": sum(p.numel() for p in generator.model.network.parameters()),
        # what "auto" resolved to for this network on this machine (the same cached choice the fit used)
        "precision": resolve_precision(
            generator.config.train_precision, "cpu", width=network_width(generator.model.network)
        ),
        "auto_precision_timings": precision_timings(),  # what "auto" measured in this process, if it was asked
        "fit_cpu_s": fit_cpu,
        "sample_cpu_s": sample_cpu,
        "sample_wall_s": sample_wall,
        "network_evaluations": generator.config.sampler().network_evaluations,
        "check": check(env_id, samples),
        "curve": curve,
        "constant_columns": int(generator.model.codec.constant.mask.sum()),
        "transformed_columns": int(generator.model.codec.transform.mask.sum()),
        "machine": machine(),
        "date": dt.date.today().isoformat(),
    }


def report(dataset: str, args: argparse.Namespace) -> None:
    name = dataset.replace("/", "_")
    base = json.loads((OUT / f"{name}-baselines-seed{args.seed}.json").read_text())
    runs = [json.loads(p.read_text()) for p in sorted(OUT.glob(f"{name}-*-seed{args.seed}.json"))]
    runs = [r for r in runs if "arm" in r]
    noise, ensemble = base["noise 0.1"]["state_error_median"], base["ensemble"]["state_error_median"]
    print(f"### SynthER levers on `{dataset}` ({runs[0]['date'] if runs else ''})\n")
    print(f"- machine: {runs[0]['machine'] if runs else machine()}")
    print(
        f"- command: `python benchmarks/synther_levers.py --dataset {dataset} --arms <arm> --minutes {args.minutes:g}`"
        " (one process per core), then `--report`"
    )
    print(
        f"- data: {base['n_train']} training / {base['n_test']} held-out transitions (80/20 by episode, seed "
        f"{args.seed}); {args.samples} samples per arm checked in the simulator"
    )
    print(
        f"- baselines on the held-out rows: noise σ = 0.1 median {noise:.3f}; ensemble one-step median "
        f"{ensemble:.3f} (fit {base['ensemble_fit_cpu_s'] / 60:.1f} CPU min)\n"
    )
    print(
        "| arm | params | precision | steps | fit CPU min | state err median | mean | reward err | terminal agree | "
        "÷ noise 0.1 | ÷ ensemble |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(runs, key=lambda r: r["check"]["state_error_median"]):
        c = r["check"]
        print(
            f"| {r['arm']} | {r['params'] / 1e6:.2f}M | {r['precision']} | {r['train_steps']:,} | "
            f"{r['fit_cpu_s'] / 60:.1f} | "
            f"{c['state_error_median']:.3f} | {c['state_error_mean']:.3f} | {c['reward_error_mean']:.3f} | "
            f"{c['terminal_agreement']:.3f} | {c['state_error_median'] / noise:.2f} | "
            f"{c['state_error_median'] / ensemble:.2f} |"
        )
    plot(runs, noise, ensemble, PLOTS / f"synther_levers_{name}.png", dataset)


def split_columns(dataset: str, first: int, args: argparse.Namespace) -> None:
    """Median next-state error over the first ``first`` observation columns and over the rest, for every saved fit
    of ``dataset`` (10,000 fresh samples each), beside real held-out rows with 10% noise and the ``new`` fit's
    label models on the held-out real (s, a): where in the observation the error sits (Ant: 27 position and
    velocity columns, then 78 contact forces)."""
    _, test, env_id = data_split(dataset, args.seed)
    name = dataset.replace("/", "_")
    rows = test[np.random.default_rng(args.seed).permutation(len(test))[: args.samples]]
    candidates = {"real + noise 0.1": with_noise(rows, 0.1, args.seed)}
    saved = sorted(GENERATORS.glob(f"{name}-*-seed{args.seed}*"))
    for path in saved:
        generator = SynthER.load(path, device="cpu")
        arm = path.name.removeprefix(f"{name}-").split(f"-seed{args.seed}")[0]
        candidates[arm] = generator.sample(args.samples, seed=args.seed, progress=False)
        if arm == "new":
            label = generator.model.labeller.label
            candidates["new's label models on real (s, a)"] = label(
                rows.observations, rows.actions, seed=args.seed, batch_size=args.samples
            )
    print(f"Median next-state error by columns on `{dataset}` ({dt.date.today().isoformat()}; {machine()}; "
          f"`python benchmarks/synther_levers.py --dataset {dataset} --split-columns {first}`)\n")  # fmt: skip
    print(f"| rows | all columns | columns 0-{first - 1} | columns {first}+ |")
    print("|---|---:|---:|---:|")
    for name, data in candidates.items():
        report = dynamics_error(env_id, data, threads=1)
        diff = (data.next_observations - report.simulated_next_observations)[report.checkable]
        parts = [np.median(np.linalg.norm(d, axis=1)) for d in (diff, diff[:, :first], diff[:, first:])]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in parts) + " |")


def resample(dataset: str, sampling: dict, args: argparse.Namespace) -> None:
    """Every saved fit of ``dataset`` among ``--arms`` sampled as it was saved and with the sampling settings
    ``sampling`` (``SynthER.load``'s, e.g. another solver), ``--samples`` rows each from the same seed, checked
    in the simulator beside the stored baselines: what a sampler alone changes on a trained model."""
    env_id = dyaug.datasets.load(dataset).env_spec.id
    name = dataset.replace("/", "_")
    base = json.loads((OUT / f"{name}-baselines-seed{args.seed}.json").read_text())
    noise, ensemble = (base[k]["state_error_median"] for k in ("noise 0.1", "ensemble"))
    setting = " ".join(f"{k}={v}" for k, v in sampling.items())
    print(f"Saved fits of `{dataset}` resampled ({dt.date.today().isoformat()}; {machine()}; `python "
          f"benchmarks/synther_levers.py --dataset {dataset} --arms {' '.join(args.arms)} --resample {setting}`; "
          f"{args.samples:,} samples, seed {args.seed})\n")  # fmt: skip
    print("| arm | sampler | evaluations | sample s | state err median | mean | reward err | terminal agree "
          "| ÷ noise 0.1 | ÷ ensemble |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arm in args.arms:
        path = next(iter(sorted(GENERATORS.glob(f"{name}-{arm}-seed{args.seed}*"))), None)
        if path is None:
            print(f"| {arm} | no saved fit of this arm under {shown(GENERATORS)} | | | | | | | | |")
            continue
        for settings in ({}, sampling):
            generator = SynthER.load(path, device="cpu", **settings)
            start = time.perf_counter()
            rows = generator.sample(args.samples, seed=args.seed, progress=False)
            seconds = time.perf_counter() - start
            c = check(env_id, rows)
            sampler = generator.config.sampler()
            print(
                f"| {arm} | {type(sampler).__name__}, N = {generator.config.sampler_steps} | "
                f"{sampler.network_evaluations} | {seconds:.1f} | {c['state_error_median']:.3f} | "
                f"{c['state_error_mean']:.3f} | {c['reward_error_mean']:.3f} | {c['terminal_agreement']:.3f} | "
                f"{c['state_error_median'] / noise:.2f} | {c['state_error_median'] / ensemble:.2f} |",
                flush=True,
            )


def elite_disagreement(generator: SynthER, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Per row, ‖std over the label ensemble's elites of μ_e(s, a)‖₂ in the ensemble's normalised Δs units."""
    ensemble = generator.model.labeller.dynamics
    scale = torch.as_tensor(ensemble.target_normalizer.scale, dtype=torch.float32)
    parts = []
    for start in range(0, len(observations), 4096):
        obs = torch.as_tensor(observations[start : start + 4096], dtype=torch.float32)
        mean, _ = ensemble.predict(obs, torch.as_tensor(actions[start : start + 4096], dtype=torch.float32))
        parts.append(((mean[list(ensemble.elites)] - obs) / scale).std(0).norm(dim=1).numpy())
    return np.concatenate(parts)


def disagreement(dataset: str, args: argparse.Namespace) -> None:
    """Would dropping generated (s, a) where the label ensemble's elites disagree make the rows more faithful? For
    each saved ``labels="models"`` fit among ``--arms``: ``--samples`` rows, the elites' disagreement at each, and
    the median next-state error of the rows kept under a threshold, the q-quantile of the disagreement on the
    training (s, a), beside the same ensemble's one-step error on the held-out real (s, a) under the same
    threshold (like for like: a filter that only selects easy states lowers both). Errors are simulator-checked,
    over the rows whose state can be rebuilt (``dynamics_error``'s ``checkable``), as every fidelity figure."""
    train, test, env_id = data_split(dataset, args.seed)
    name = dataset.replace("/", "_")
    base = json.loads((OUT / f"{name}-baselines-seed{args.seed}.json").read_text())
    ensemble_error = base["ensemble"]["state_error_median"]
    print(f"Label-ensemble disagreement as a filter on `{dataset}` ({dt.date.today().isoformat()}; {machine()}; "
          f"`python benchmarks/synther_levers.py --dataset {dataset} --arms {' '.join(args.arms)} --disagreement`; "
          f"{args.samples:,} samples, seed {args.seed}; ensemble baseline {ensemble_error:.3f})\n")  # fmt: skip
    print(
        "| arm | q | generated kept | generated err median | ÷ ensemble baseline | real held-out kept | "
        "label ensemble on real, err median | generated ÷ real, same filter | Spearman (disagreement, err) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arm in args.arms:
        path = next(iter(sorted(GENERATORS.glob(f"{name}-{arm}-seed{args.seed}*"))), None)
        generator = None if path is None else SynthER.load(path, device="cpu")
        if generator is None or generator.model.labeller is None:
            print(f"| {arm} | no saved fit with label models under {shown(GENERATORS)} | | | | | | | |")
            continue
        rows = generator.sample(args.samples, seed=args.seed, progress=False)
        checked = dynamics_error(env_id, rows, threads=1)
        error = checked.state_error[checked.checkable]
        spread = elite_disagreement(generator, rows.observations, rows.actions)[checked.checkable]
        real = test[np.random.default_rng(args.seed).permutation(len(test))[: args.samples]]
        labelled = generator.model.labeller.label(real.observations, real.actions, seed=args.seed, batch_size=4096)
        real_check = dynamics_error(env_id, labelled, threads=1)  # over the checkable rows, as the baseline
        real_error = real_check.state_error[real_check.checkable]
        real_spread = elite_disagreement(generator, real.observations, real.actions)[real_check.checkable]
        reference = elite_disagreement(generator, train.observations, train.actions)
        rank = float(np.corrcoef(np.argsort(np.argsort(spread)), np.argsort(np.argsort(error)))[0, 1])
        for q in (1.0, 0.99, 0.95, 0.9, 0.5):
            threshold = np.quantile(reference, q)
            kept, real_kept = spread <= threshold, real_spread <= threshold
            generated, on_real = np.median(error[kept]), np.median(real_error[real_kept])
            print(
                f"| {arm} | {q:g} | {kept.mean():.3f} | {generated:.3f} | {generated / ensemble_error:.2f} | "
                f"{real_kept.mean():.3f} | {on_real:.3f} | {generated / on_real:.2f} | {rank:.2f} |",
                flush=True,
            )


def plot(runs: list[dict], noise: float, ensemble: float, path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(sorted(runs, key=lambda r: r["arm"])):
        style = {"color": f"C{i % 10}", "label": r["arm"]}
        if r["curve"]:
            c = np.array(r["curve"])
            ax.plot(c[:, 1] / 60, c[:, 2], ls="-" if i < 10 else "--", **style)
        else:  # labels="models": no samples during training (the labels are fitted after it), the final check only
            ax.plot(r["fit_cpu_s"] / 60, r["check"]["state_error_median"], marker="*", ms=11, ls="none", **style)
    ax.axhline(noise, color="grey", ls=":", label="noise σ=0.1")
    ax.axhline(ensemble, color="black", ls=":", label="ensemble one-step")
    ax.set_yscale("log")
    ax.set_xlabel("training CPU minutes (one thread)")
    ax.set_ylabel("median next-state error (2,000 samples; ★ 10,000)")
    ax.set_title(f"SynthER fidelity against training time, {dataset}", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nPlot: `{shown(path)}`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="halfcheetah/medium-replay")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--minutes", type=float, default=10.0, help="CPU minutes of training per arm")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--curve-points", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--split-columns", type=int, metavar="K", help="errors over columns < K and >= K, then exit")
    parser.add_argument(
        "--resample", nargs="+", metavar="FIELD=VALUE", help="sample the saved fits with these settings, then exit"
    )
    parser.add_argument(
        "--disagreement", action="store_true", help="the label ensemble's disagreement as a filter, then exit"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(args.dataset, args)
        return
    if args.split_columns is not None:
        split_columns(args.dataset, args.split_columns, args)
        return
    if args.disagreement:
        disagreement(args.dataset, args)
        return
    if args.resample:
        resample(args.dataset, field_values(args.resample, "--resample"), args)
        return
    name = args.dataset.replace("/", "_")
    stored_run(
        OUT / f"{name}-baselines-seed{args.seed}.json",
        functools.partial(baselines, args.dataset, args.seed),
        lambda r: (
            f"baselines: noise {r['noise 0.1']['state_error_median']:.3f}, "
            f"ensemble {r['ensemble']['state_error_median']:.3f}"
        ),
    )
    for arm in args.arms:
        stored_run(
            OUT / f"{name}-{arm}-seed{args.seed}.json",
            functools.partial(run_arm, args.dataset, arm, args),
            lambda r: f"{r['arm']}: median {r['check']['state_error_median']:.3f} ({r['train_steps']} steps)",
        )
    print("done", file=sys.stderr)


if __name__ == "__main__":
    main()
