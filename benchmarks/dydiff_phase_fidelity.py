"""How far a DyDiff rollout phase's rows lie from the simulator, beside DyDiff's own dynamics ensemble at the same
(s, a): the ratio behind the phases' warning (``dyaug.dydiff.phases.UNFAITHFUL_FACTOR``).

    python benchmarks/dydiff_phase_fidelity.py --datasets halfcheetah/medium-replay walker2d/medium-replay

For each dataset: the offline-RL study's stored DyDiff generator (``runs/offline_rl_study/generators``, fitted by
``benchmarks/offline_rl_study.py``; the script stops with that command when it is missing), a policy of d3rlpy's BC
trained ``--bc-steps`` steps on the real data (seed 0), and one rollout phase of the study's settings (256 start
states, 256 rows checked in the simulator) at each of ``--phases`` training steps.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import torch
from common import fit_offline, machine, quiet_d3rlpy
from dyaug.integrations.d3rlpy import D3rlpyPolicy, transitions_to_d3rlpy
from offline_rl_study import GENERATORS, generator_path

import dyaug.datasets
from dyaug import DyDiff, Transitions
from dyaug.dydiff.phases import UNFAITHFUL_FACTOR, RolloutPhases, resolve_phase_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["halfcheetah/medium-replay", "walker2d/medium-replay"])
    parser.add_argument("--bc-steps", type=int, default=2_000)
    parser.add_argument("--phases", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    quiet_d3rlpy()
    import d3rlpy

    print(f"DyDiff phase rows against DyDiff's ensemble at the same (s, a) ({machine()}; `python "
          f"benchmarks/dydiff_phase_fidelity.py --datasets {' '.join(args.datasets)}`)\n")  # fmt: skip
    print("| dataset | phase | rows' median next-state error | ensemble's at the same (s, a) | ratio | warned |")
    print("|---|---:|---:|---:|---:|---|")
    for dataset in args.datasets:
        minari_dataset = dyaug.datasets.load(dataset)
        path = generator_path(GENERATORS, minari_dataset.id, 0, "cpu-v1", "dydiff")
        if not path.exists():
            sys.exit(f"no stored DyDiff at {path}; fit it with `python benchmarks/offline_rl_study.py --datasets "
                     f"{dataset} --arms dydiff --seeds 0`.")  # fmt: skip
        real = Transitions.from_minari(minari_dataset)
        generator = DyDiff.load(path, device="cpu", sample_precision="fp32")
        d3rlpy.seed(0)
        bc = d3rlpy.algos.BCConfig(observation_scaler=d3rlpy.preprocessing.StandardObservationScaler()).create()
        fit_offline(bc, transitions_to_d3rlpy(real), args.bc_steps)
        phases = RolloutPhases(generator, resolve_phase_settings("cpu-v1"), seed=0, env_id=minari_dataset.env_spec.id)
        for k in range(args.phases):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                report = phases.run(D3rlpyPolicy(bc), np.asarray(real.observations), step=k * 1_000)
            warned = any("one-step model" in str(w.message) for w in caught)
            error, reference = report.state_error, report.reference_state_error
            assert error is not None and reference is not None  # the study's tasks are simulator-checked
            print(f"| {dataset} | {k} | {error:.3f} | {reference:.3f} | {error / reference:.1f} | "
                  f"{'yes' if warned else 'no'} (factor {UNFAITHFUL_FACTOR:g}) |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
