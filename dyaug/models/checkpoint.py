"""Checkpoints of the fitted single-step models: one atomic safetensors file (no pickle) holding the network's
weights, the config, the input normalizer, the fit record and each model's own metadata
(:func:`dyaug.diffusion.checkpoint.save_model`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from dyaug.data.normalizers import ZScoreNormalizer
from dyaug.device import resolve_device
from dyaug.diffusion.checkpoint import ModelCheckpoint, load_model, save_model
from dyaug.models.config import FitSettings
from dyaug.models.fitting import FitRecord, seeded_module, single_mlp
from dyaug.models.networks import EnsembleMLP

ConfigT = TypeVar("ConfigT", bound=FitSettings)


class FittedModel(Protocol):
    """What :func:`save_fitted` reads from a model."""

    network: nn.Module
    input_normalizer: ZScoreNormalizer
    config: FitSettings
    fit_record: FitRecord


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """What :func:`load_fitted` reads: the network with its saved weights, the input normalizer, the config, the
    fit record and the checkpoint's metadata (with each model's own entries)."""

    network: nn.Module
    input_normalizer: ZScoreNormalizer
    config: FitSettings
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
    network: Callable[[ConfigT, ModelCheckpoint], nn.Module],
    device: str | torch.device,
) -> LoadedModel:
    """Read a file written by :func:`save_fitted` with the same ``kind`` (``ValueError`` otherwise) onto ``device``;
    ``network(config, checkpoint)`` builds the module the saved weights are loaded into."""
    device = resolve_device(device)
    checkpoint = load_model(path, kind, device=device)
    config = config_cls(**checkpoint.config)
    module = seeded_module(lambda: network(config, checkpoint), 0, device)
    module.load_state_dict(checkpoint.states["network"])
    record = FitRecord.from_dict(checkpoint.meta["fit_record"])
    return LoadedModel(module, checkpoint.normalizer, config, record, checkpoint.meta)


def saved_single_mlp(config: FitSettings, checkpoint: ModelCheckpoint) -> EnsembleMLP:
    """The :func:`~dyaug.models.fitting.single_mlp` of a checkpoint, sized by its input normalizer."""
    return single_mlp(config, checkpoint.normalizer.dim)


def target_meta(normalizer: ZScoreNormalizer) -> dict[str, list[float]]:
    """The target normalizer's statistics as checkpoint metadata (read back by :func:`target_normalizer`)."""
    return {"target_shift": normalizer.shift.tolist(), "target_scale": normalizer.scale.tolist()}


def target_normalizer(meta: dict[str, Any]) -> ZScoreNormalizer:
    """The target normalizer stored by :func:`target_meta`."""
    return ZScoreNormalizer(np.asarray(meta["target_shift"]), np.asarray(meta["target_scale"]))
