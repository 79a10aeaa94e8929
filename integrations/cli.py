"""The ``dyaug`` command line: ``dyaug demo``, ``dyaug datasets forge|list|export|import|subset``,
``dyaug synther fit|sample`` (also under ``torchrun --nproc_per_node=N -m dyaug.integrations.cli ...``),
``dyaug fidelity``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Literal, get_args, get_origin, get_type_hints


def _demo(args: argparse.Namespace) -> int:
    from dyaug.integrations.demo import DemoConfig, run_demo

    run_demo(DemoConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)}))
    return 0


def _forge(args: argparse.Namespace) -> int:
    from dyaug.datasets import LEVELS, forge

    chosen = (("teacher", args.teacher), ("teacher_steps", args.teacher_steps), ("n_transitions", args.n_transitions))
    overrides = {k: v for k, v in chosen if v}
    levels = LEVELS if args.level == "all" else (args.level,)
    for level in levels:
        ds = forge(
            args.env,
            level,
            budget=args.budget,
            seed=args.seed,
            dataset_id=args.dataset_id if len(levels) == 1 else None,
            overwrite=args.overwrite,
            **overrides,
        )
        print(f"{ds.id}: {ds.total_steps} steps, {ds.total_episodes} episodes")
    return 0


def _list(args: argparse.Namespace) -> int:
    from dyaug.datasets import forgeable_names, list_datasets

    rows = list_datasets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    have = {r["dataset_id"] for r in rows}
    print(f"{'dataset_id':45s} {'steps':>9s} {'episodes':>9s} {'mean return':>12s} {'forge s':>8s}")
    for r in rows:
        ret = "" if r["mean_episode_return"] is None else f"{r['mean_episode_return']:.1f}"
        print(
            f"{r['dataset_id']:45s} {r['total_steps']!s:>9s} {r['total_episodes']!s:>9s} {ret:>12s} "
            f"{r['forge_seconds']!s:>8s}"
        )
    missing = [n for n in forgeable_names() if n not in have]
    if missing:
        print(f"\nnot forged yet (forged on first `dyaug.datasets.load`): {', '.join(missing)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dyaug.datasets import export_pack

    path = export_pack(args.names, args.to)
    print(f"{path}: {len(args.names)} dataset(s), {path.stat().st_size / 1e6:.1f} MB")
    return 0


def _import(args: argparse.Namespace) -> int:
    from dyaug.datasets import import_pack

    for name in import_pack(args.pack, replace=args.replace):
        print(f"imported {name}")
    return 0


def _subset(args: argparse.Namespace) -> int:
    from dyaug.datasets import subset

    ds = subset(args.name, args.fraction, seed=args.seed, dataset_id=args.dataset_id)
    print(f"{ds.id}: {ds.total_steps} steps, {ds.total_episodes} episodes")
    return 0


def _synther_fit(args: argparse.Namespace) -> int:
    """Fit SynthER on a dataset; under torchrun every rank trains (DistributedDataParallel), rank 0 saves."""
    from dyaug.datasets import load
    from dyaug.device import resolve_device
    from dyaug.distributed import init_from_environment
    from dyaug.synther import SynthER

    device = resolve_device(args.device)
    rank, size = init_from_environment(device)
    overrides = {} if args.steps is None else {"train_steps": args.steps}
    dataset = load(args.dataset, progress=rank == 0)
    generator = SynthER(args.preset, device=device, seed=args.seed, **overrides).fit(
        dataset, progress=rank == 0, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every
    )
    if rank == 0:
        path = generator.save(args.out)
        print(f"{path}: SynthER ({args.preset}) fitted on {dataset.id} by {size} process(es)")
    return 0


def _synther_sample(args: argparse.Namespace) -> int:
    """Sample a fitted SynthER into a transition set on disk; under torchrun each rank draws its shards."""
    from dyaug.distributed import init_from_environment, sample_shards
    from dyaug.synther import SynthER

    rank, size = init_from_environment(args.device)
    generator = SynthER.load(args.checkpoint, device=args.device)
    path = sample_shards(
        generator, args.n, args.out, shards=args.shards, seed=args.seed, provenance=generator.provenance()
    )
    if rank == 0:
        print(f"{path}: {args.n} transitions in {args.shards or size} shard(s) from {size} process(es)")
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    from dyaug.data import Transitions
    from dyaug.datasets import load
    from dyaug.metrics import dynamics_error

    ds = load(args.dataset)
    env_id = ds.env_spec.id if ds.env_spec is not None else args.env
    print(dynamics_error(env_id, Transitions.from_minari(ds)))
    return 0


def _add_config_options(parser: argparse.ArgumentParser, config: type) -> None:
    """One ``--field-name`` option per field of a config dataclass, with the dataclass's default and type."""
    hints = get_type_hints(config)
    for field in dataclasses.fields(config):
        kind = type(field.default)
        choices = get_args(hints[field.name]) if get_origin(hints[field.name]) is Literal else None
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=kind, default=field.default, choices=choices or None,
            help=f"default: {field.default}",
        )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from dyaug.integrations.demo import DemoConfig

    parser = argparse.ArgumentParser(prog="dyaug", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="SynthER checked in MuJoCo, then TD3PlusBC alone, + SynthER, + DyDiff")
    _add_config_options(demo, DemoConfig)
    demo.set_defaults(func=_demo)

    datasets = sub.add_parser("datasets", help="forge and list local D4RL-style datasets").add_subparsers(
        dest="datasets_command", required=True
    )
    forge = datasets.add_parser("forge", help="forge a dataset into the local Minari store")
    forge.add_argument("env", help="hopper, halfcheetah, walker2d, ant (or their -v5 ids)")
    forge.add_argument("level", help="random, medium, medium-replay, expert, medium-expert, or all")
    forge.add_argument("--budget", default="cpu", help="tiny, cpu (default) or d4rl")
    forge.add_argument("--seed", type=int, default=0)
    forge.add_argument("--teacher", default=None, help="override the budget's teacher (see dyaug.datasets.TEACHERS)")
    forge.add_argument("--teacher-steps", type=int, default=None, help="override the budget's teacher steps")
    forge.add_argument("--n-transitions", type=int, default=None, help="override the size of rolled-out levels")
    forge.add_argument("--dataset-id", default=None, help="Minari id (required with overrides)")
    forge.add_argument("--overwrite", action="store_true")
    forge.set_defaults(func=_forge)
    lst = datasets.add_parser("list", help="list forged datasets in the local Minari store")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_list)
    exp = datasets.add_parser("export", help="write local datasets into one pack file (with SHA-256 checksums)")
    exp.add_argument("names", nargs="+", help="local Minari ids")
    exp.add_argument("--to", required=True, help="the pack file to write")
    exp.set_defaults(func=_export)
    imp = datasets.add_parser("import", help="put the datasets of a pack into the local Minari store")
    imp.add_argument("pack")
    imp.add_argument("--replace", action="store_true", help="overwrite datasets that exist already")
    imp.set_defaults(func=_import)
    sub_ = datasets.add_parser("subset", help="a new dataset holding a random fraction of a dataset's episodes")
    sub_.add_argument("name", help="a local Minari id or a forge name")
    sub_.add_argument("fraction", type=float, help="share of the episodes to keep, e.g. 0.1")
    sub_.add_argument("--seed", type=int, default=0)
    sub_.add_argument("--dataset-id", default=None, help="Minari id of the new dataset (default: <name>-<p>pct-v0)")
    sub_.set_defaults(func=_subset)

    synther = sub.add_parser("synther", help="fit SynthER and sample it (runs under torchrun too)").add_subparsers(
        dest="synther_command", required=True
    )
    fit = synther.add_parser("fit", help="fit SynthER on a dataset and save it")
    fit.add_argument("dataset", help="a local Minari id or a forge name such as hopper/medium-replay")
    fit.add_argument("--out", required=True, help="the checkpoint to write")
    fit.add_argument("--preset", default="cpu", help="tiny, cpu (default), cpu-v1 or paper")
    fit.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    fit.add_argument("--device", default="auto")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--checkpoint",
        default=None,
        help="the training state's file: written as it trains, resumed from when present, kept after the fit",
    )
    fit.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (with --checkpoint)")
    fit.set_defaults(func=_synther_fit)
    smp = synther.add_parser("sample", help="draw N transitions into a sharded set on disk")
    smp.add_argument("checkpoint")
    smp.add_argument("n", type=int)
    smp.add_argument("--out", required=True, help="the directory of the set (shards and manifest.json)")
    smp.add_argument("--shards", type=int, default=None, help="default: one per process")
    smp.add_argument("--seed", type=int, default=None, help="default: the generator's seed")
    smp.add_argument("--device", default="cpu")
    smp.set_defaults(func=_synther_sample)

    fid = sub.add_parser("fidelity", help="check a dataset's transitions against the MuJoCo simulator")
    fid.add_argument("dataset", help="a local Minari id or a forge name such as hopper/medium")
    fid.add_argument("--env", default=None, help="environment id, if the dataset does not record it")
    fid.set_defaults(func=_fidelity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as err:
        print(f"dyaug: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
