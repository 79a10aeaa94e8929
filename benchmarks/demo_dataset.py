"""Make the small Hopper dataset that ships with dyaug for ``dyaug demo`` (``dyaug/hopper/demo-v0``).

    python benchmarks/demo_dataset.py            # forges what is missing (cpu budget), writes the pack

It holds whole episodes of two forged datasets of the ``cpu`` budget (PPO teacher): ``--medium`` of the episodes of
``hopper/medium`` and ``--replay`` of ``hopper/medium-replay`` (drawn with ``dyaug.datasets.subset``, seed 0), so
that TD3PlusBC learns a policy that hops within the demo's few thousand steps. The result is written as a dataset
pack (``dyaug.datasets.export_pack``: a tar of the Minari dataset with SHA-256 checksums) to
``dyaug/datasets/data/hopper-demo.pack``, where ``dyaug.datasets.load("dyaug/hopper/demo-v0")`` finds it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import minari
import numpy as np

import dyaug.datasets
from dyaug.data import Transitions
from dyaug.datasets.catalog import ENVS
from dyaug.datasets.store import PACKAGED, packaged_path, provenance

NAME = "dyaug/hopper/demo-v0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--medium", type=float, default=0.1, help="share of hopper/medium's episodes")
    parser.add_argument("--replay", type=float, default=0.04, help="share of hopper/medium-replay's episodes")
    args = parser.parse_args()
    parts = {
        "dyaug/hopper/medium-v0": args.medium,
        "dyaug/hopper/medium-replay-v0": args.replay,
    }
    subsets = [dyaug.datasets.subset(name, fraction, seed=0) for name, fraction in parts.items()]
    data = Transitions.concatenate([Transitions.from_minari(s) for s in subsets])
    if NAME in minari.list_local_datasets():
        minari.delete_dataset(NAME)
    hopper = ENVS["hopper"]
    parent = provenance(minari.load_dataset("dyaug/hopper/medium-v0").storage.metadata)
    dataset = data.to_minari(
        NAME,
        hopper.env_id,
        ref_min_score=hopper.ref_min_score,
        ref_max_score=hopper.ref_max_score,
        algorithm_name="dyaug-forge-demo",
        author="dyaug dataset forge",
        author_email="none (forged locally)",
        code_permalink="benchmarks/demo_dataset.py",
        description=f"dyaug's demo data: whole episodes of {', '.join(f'{p:g} of {n}' for n, p in parts.items())}.",
        provenance={
            "parts": {name: {"fraction": fraction, "seed": 0} for name, fraction in parts.items()},
            "teacher": parent.get("teacher", {}),
            "command": "python benchmarks/demo_dataset.py"
            + ("" if (args.medium, args.replay) == (0.1, 0.04) else f" --medium {args.medium} --replay {args.replay}"),
        },
    )
    returns = [float(data.rewards[s].sum()) for s in data.episode_slices()]
    pack = packaged_path(PACKAGED[NAME])
    dyaug.datasets.export_pack([NAME], pack)
    print(
        f"{NAME}: {dataset.total_steps} transitions, {dataset.total_episodes} episodes, mean return "
        f"{np.mean(returns):.0f}; pack {pack} ({Path(pack).stat().st_size / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
