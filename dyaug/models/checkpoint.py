"""Checkpoints of the fitted single-step models: one atomic safetensors file (no pickle) per model holding the
network's weights, the config, the input normalizer, the fit record and each model's own metadata
(:func:`dyaug.persistence.save_model`); and the bundle of the three (dynamics, reward, termination) that DyDiff,
the labelled SynthER and the learned-model environment save into their checkpoint directories:

- ``dynamics.safetensors``, ``reward.safetensors``: :meth:`DynamicsEnsemble.save` / :meth:`RewardModel.save`;
- ``termination.safetensors``: only for a learned :class:`~dyaug.models.TerminalClassifier`; a known rule is
  stored as its environment id in the returned record, :func:`~dyaug.models.never_terminates` as ``"never"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from dyaug.data.normalizers import ZScoreNormalizer
from dyaug.device import resolve_device
from dyaug.models.config import FitSettings
from dyaug.models.fitting import FitRecord, seeded_module, single_mlp
from dyaug.models.networks import EnsembleMLP
from dyaug.persistence import ModelCheckpoint, load_model, save_model

if TYPE_CHECKING:  # pragma: no cover
    from dyaug.models import DynamicsEnsemble, RewardModel, TerminationFn

ConfigT = TypeVar("ConfigT", bound=FitSettings)
NetworkT = TypeVar("NetworkT", bound=nn.Module)


class FittedModel(Protocol):
    """What :func:`save_fitted` reads from a model."""

    @property
    def network(self) -> nn.Module: ...
    @property
    def input_normalizer(self) -> ZScoreNormalizer: ...
    @property
    def config(self) -> FitSettings: ...
    @property
    def fit_record(self) -> FitRecord: ...


@dataclasses.dataclass(frozen=True)
class LoadedModel(Generic[ConfigT, NetworkT]):
    """What :func:`load_fitted` reads: the network with its saved weights, the input normalizer, the config, the
    fit record and the checkpoint's metadata (with each model's own entries)."""

    network: NetworkT
    input_normalizer: ZScoreNormalizer
    config: ConfigT
    fit_record: FitRecord
    meta: dict[str, Any]


def save_fitted(path: str | Path, kind: str, model: FittedModel, **meta: Any) -> Path:
    """Write ``model``'s network, config, input normalizer and fit record, and ``meta``, to ``path``."""
    return save_model(
        path,
        kind,
        modules={"network": model.network},
        config=model.config.to_dict(),
        normalizer=model.input_normalizer,
        **meta,
        fit_record=model.fit_record.to_dict(),
    )


def load_fitted(
    path: str | Path,
    kind: str,
    config_cls: type[ConfigT],
    network: Callable[[ConfigT, ModelCheckpoint], NetworkT],
    device: str | torch.device,
) -> LoadedModel[ConfigT, NetworkT]:
    """Read a file written by :func:`save_fitted` with the same ``kind`` (``ValueError`` otherwise) onto ``device``;
    ``network(config, checkpoint)`` builds the module the saved weights are loaded into."""
    device = resolve_device(device)
    checkpoint = load_model(path, kind, device=device)
    assert isinstance(checkpoint.normalizer, ZScoreNormalizer)  # save_fitted wrote the input normalizer
    config = config_cls(**checkpoint.config)
    module = seeded_module(lambda: network(config, checkpoint), 0, device)
    module.load_state_dict(checkpoint.states["network"])
    record = FitRecord.from_dict(checkpoint.meta["fit_record"])
    return LoadedModel(module, checkpoint.normalizer, config, record, checkpoint.meta)


def saved_single_mlp(config: FitSettings, checkpoint: ModelCheckpoint) -> EnsembleMLP:
    """The :func:`~dyaug.models.fitting.single_mlp` of a checkpoint, sized by its input normalizer."""
    assert checkpoint.normalizer is not None  # load_fitted checked it
    return single_mlp(config, checkpoint.normalizer.dim)


def target_meta(normalizer: ZScoreNormalizer) -> dict[str, list[float]]:
    """The target normalizer's statistics as checkpoint metadata (read back by :func:`target_normalizer`)."""
    return {"target_shift": normalizer.shift.tolist(), "target_scale": normalizer.scale.tolist()}


def target_normalizer(meta: dict[str, Any]) -> ZScoreNormalizer:
    """The target normalizer stored by :func:`target_meta`."""
    return ZScoreNormalizer(np.asarray(meta["target_shift"]), np.asarray(meta["target_scale"]))


DYNAMICS_FILE, REWARD_FILE, TERMINATION_FILE = (
    "dynamics.safetensors",
    "reward.safetensors",
    "termination.safetensors",
)


def check_savable(dynamics: object, reward: object, termination: object) -> None:
    """``TypeError`` unless the single-step models are dyaug's (the ones :func:`load_models` can rebuild)."""
    from dyaug.models import DynamicsEnsemble, LocomotionTermination, RewardModel, TerminalClassifier, never_terminates

    for name, value, cls in (("dynamics", dynamics, DynamicsEnsemble), ("reward", reward, RewardModel)):
        if not isinstance(value, cls):
            raise TypeError(
                f"only a {cls.__name__} can be saved as the {name} model, this generator holds a "
                f"{type(value).__name__}; save your own model yourself."
            )
    if not isinstance(termination, LocomotionTermination | TerminalClassifier) and termination is not never_terminates:
        raise TypeError(
            f"the termination function {termination!r} cannot be saved; only known rules, TerminalClassifier and "
            "dyaug.models.never_terminates can."
        )


def save_models(
    directory: Path, dynamics: DynamicsEnsemble, reward: RewardModel, termination: TerminationFn
) -> dict[str, Any]:
    """Write the single-step models into ``directory``; returns the termination's record for the metadata."""
    from dyaug.models import LocomotionTermination, TerminalClassifier

    check_savable(dynamics, reward, termination)
    dynamics.save(directory / DYNAMICS_FILE)
    reward.save(directory / REWARD_FILE)
    if isinstance(termination, LocomotionTermination):
        return {"kind": "rule", "env_id": termination.env_id}
    if isinstance(termination, TerminalClassifier):
        termination.save(directory / TERMINATION_FILE)
        return {"kind": "classifier"}
    return {"kind": "never"}


def load_models(
    directory: Path, termination: dict[str, Any], device: torch.device
) -> tuple[DynamicsEnsemble, RewardModel, TerminationFn]:
    """The single-step models written by :func:`save_models`, on ``device``."""
    from dyaug.models import DynamicsEnsemble, RewardModel, TerminalClassifier, never_terminates, termination_rule

    loaders: dict[str, Callable[[], TerminationFn | None]] = {
        "rule": lambda: termination_rule(termination["env_id"]),
        "classifier": lambda: TerminalClassifier.load(directory / TERMINATION_FILE, device),
        "never": lambda: never_terminates,
    }
    if termination.get("kind") not in loaders:
        raise ValueError(f"{directory} records an unknown termination {termination!r}; it was not written by dyaug.")
    rule = loaders[termination["kind"]]()
    if rule is None:
        raise ValueError(f"{directory} uses the termination rule of {termination['env_id']!r}, unknown to this dyaug.")
    return (
        DynamicsEnsemble.load(directory / DYNAMICS_FILE, device),
        RewardModel.load(directory / REWARD_FILE, device),
        rule,
    )
