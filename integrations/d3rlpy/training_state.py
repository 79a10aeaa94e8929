"""A d3rlpy algorithm's whole training state in one pickle-free, atomic checkpoint, so that training stopped
between two calls of ``fit`` continues bit for bit in another process.

d3rlpy's ``save_model`` writes the networks and optimizers (with ``torch.save``). Continuing a run exactly needs
two more things:

- the algorithm's gradient-step count, which schedules updates (TD3PlusBC's delayed actor, for one);
- the process's global random generators, from which d3rlpy draws: ``np.random`` for the batches of its replay
  buffers (and :class:`~dyaug.integrations.d3rlpy.SyntheticReplayBuffer`'s), ``torch`` for noise and sampling,
  and Python's ``random``.

:func:`save_training_state` stores all of it (every module and optimizer that d3rlpy checkpoints, learning-rate
schedules and step counters included) as safetensors plus JSON. :func:`load_training_state` builds the algorithm
for the dataset when it is not built yet, as ``fit`` would, and restores the state. Same machine and same
library versions give the same numbers as a run that never stopped; on another CPU the run continues (scalers
refitted there may differ in the last bits, which the configuration check allows) but not bit for bit.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from d3rlpy.algos.qlearning.base import QLearningAlgoBase
from d3rlpy.algos.utility import build_scalers_with_transition_picker
from d3rlpy.dataset import ReplayBufferBase

from dyaug.persistence import flatten_state, load_checkpoint, save_checkpoint, unflatten_state

KIND = "d3rlpy-training-state"


def build_for_dataset(algo: QLearningAlgoBase, dataset: ReplayBufferBase) -> None:
    """Fit the algorithm's scalers on ``dataset`` and build its networks, as the first ``fit`` on it would."""
    build_scalers_with_transition_picker(algo, dataset)
    if algo.impl is None:
        algo.build_with_dataset(dataset)


def save_training_state(algo: QLearningAlgoBase, path: str | Path, **extra: Any) -> Path:
    """Write ``algo``'s training state and the global RNGs to ``path`` atomically; ``extra`` (JSON values, e.g. a
    learning curve so far) comes back from :func:`load_training_state`."""
    if algo.impl is None:
        raise RuntimeError("the algorithm has no networks yet: fit it (or build it for a dataset) before saving.")
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # ("MT19937", keys, pos, has_gauss, cached_gaussian)
    state = {
        "modules": {k: m.state_dict() for k, m in _checkpointed(algo).items()},
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "rest": list(numpy_state[2:])},
        "python_rng": _python_rng_to_json(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    tensors, layout = flatten_state(state, "state")
    meta = {
        "kind": KIND,
        "algorithm": type(algo).__name__,
        "config": algo.config.serialize(),
        "grad_step": algo.grad_step,
        "layout": layout,
        "extra": extra,
    }
    return save_checkpoint(path, tensors, meta)


def load_training_state(algo: QLearningAlgoBase, path: str | Path, dataset: ReplayBufferBase) -> dict[str, Any]:
    """Restore into ``algo`` (built for ``dataset`` here when it is not yet) the state :func:`save_training_state`
    wrote to ``path``, the global RNGs included; returns the ``extra`` values saved with it.

    Raises ``ValueError`` when the file holds another algorithm or another configuration (the fitted scalers are
    part of it, so a different dataset is refused too)."""
    tensors, meta = load_checkpoint(path, kind=KIND)
    if meta["algorithm"] != type(algo).__name__:
        raise ValueError(f"{path} holds the training state of a {meta['algorithm']}, not of a {type(algo).__name__}.")
    build_for_dataset(algo, dataset)
    if not _same(json.loads(algo.config.serialize()), json.loads(meta["config"])):
        raise ValueError(
            f"{path} was saved with another configuration or dataset (the config, fitted scalers included, differs "
            f"from this algorithm's): create the algorithm with the saved config and pass the dataset it trained on."
        )
    state = unflatten_state(tensors, meta["layout"])
    modules = _checkpointed(algo)
    if set(modules) != set(state["modules"]):
        raise ValueError(f"{path} holds modules {sorted(state['modules'])}, this algorithm has {sorted(modules)}.")
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    algo.set_grad_step(meta["grad_step"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    np.random.set_state(("MT19937", state["numpy_rng"]["keys"].numpy().astype(np.uint32), *state["numpy_rng"]["rest"]))
    random.setstate(_python_rng_from_json(state["python_rng"]))
    return meta["extra"]


def _same(ours: Any, saved: Any) -> bool:
    """Equal configs, numbers within a relative 1e-6: scalers fitted on the same data by another CPU's NumPy kernels
    may differ in the last bits."""
    if isinstance(ours, dict) and isinstance(saved, dict):
        return ours.keys() == saved.keys() and all(_same(ours[k], saved[k]) for k in ours)
    if isinstance(ours, list) and isinstance(saved, list):
        return len(ours) == len(saved) and all(_same(a, b) for a, b in zip(ours, saved, strict=True))
    numbers = isinstance(ours, int | float) and isinstance(saved, int | float)
    if numbers and (isinstance(ours, float) or isinstance(saved, float)):
        return math.isclose(ours, saved, rel_tol=1e-6)
    return bool(ours == saved)


def _checkpointed(algo: QLearningAlgoBase) -> dict[str, Any]:
    """The modules and optimizer wrappers that d3rlpy's own checkpoints hold, by field name."""
    return algo.impl.modules.create_checkpointer(algo.impl.device).modules


def _python_rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_json(state: list) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss
