"""Named presets of a frozen config dataclass, with field overrides applied on top."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ConfigT = TypeVar("ConfigT", bound="DataclassInstance")


def preset_config(
    owner: str, config_cls: type[ConfigT], presets: Mapping[str, ConfigT], preset: str, overrides: Mapping[str, Any]
) -> ConfigT:
    """``presets[preset]`` with ``overrides`` (field names of ``config_cls``) applied; ``owner`` names the model in
    the errors.

    Raises ``ValueError`` for an unknown preset and ``TypeError`` for an override that is not a field.
    """
    if preset not in presets:
        raise ValueError(f"unknown {owner} preset {preset!r}; choose one of {sorted(presets)}.")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(
            f"{owner} got unknown settings {unknown}; the settings are the fields of {config_cls.__name__}: "
            f"{sorted(fields)}."
        )
    return dataclasses.replace(presets[preset], **overrides)
