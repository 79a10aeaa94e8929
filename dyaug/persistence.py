"""Every file dyaug writes: safetensors checkpoints (tensors plus JSON metadata) and checkpoint directories, both
written atomically, no pickle anywhere.

A dyaug checkpoint is a safetensors file whose header metadata holds ``dyaug_format`` (the format
version) and ``dyaug_meta`` (a JSON object with at least a string ``kind``, e.g. ``"train_state"``).
Nested ``state_dict`` s (module, optimizer, scheduler, EMA) are stored with :func:`flatten_state`: tensor
leaves go into the flat tensor dict under dotted keys, everything else (hyper-parameters, step counters)
into a JSON *layout* that :func:`unflatten_state` uses to rebuild the exact structure.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from dyaug.data.normalizers import Normalizer

FORMAT_KEY, META_KEY, FORMAT_VERSION = "dyaug_format", "dyaug_meta", "1"
_TENSOR, _ITEMS, _TUPLE = "__tensor__", "__items__", "__tuple__"


def save_checkpoint(path: str | Path, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` (JSON-encodable, with a string ``meta["kind"]``) to ``path`` atomically.

    The file is written to a temporary file in the same directory, fsynced, then moved over ``path`` with
    ``os.replace``: a reader sees the old file or the new one, never a partial one, and a failed write
    leaves the old file untouched and no temporary file behind. A process killed mid-write leaves its
    temporary file; the next save to ``path`` removes it (one writer per path).
    """
    if not isinstance(meta.get("kind"), str):
        raise ValueError(f"checkpoint meta needs a string 'kind' (what the file holds), got {meta.get('kind')!r}.")
    path = Path(path)
    header = {FORMAT_KEY: FORMAT_VERSION, META_KEY: json.dumps(dict(meta))}
    contiguous = {name: t.detach().contiguous() for name, t in tensors.items()}
    remove_stale(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(contiguous, tmp_name, metadata=header)
        with open(tmp_name, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", *, kind: str | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_checkpoint`: ``(tensors on device, meta)``.

    Raises ``ValueError`` naming the file when it is not a dyaug checkpoint, or when ``kind`` is given and
    differs from ``meta["kind"]``.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            if header.get(FORMAT_KEY) != FORMAT_VERSION or META_KEY not in header:
                raise ValueError(
                    f"{path} is a safetensors file but not a dyaug checkpoint (format {FORMAT_VERSION}); "
                    "write it with dyaug.persistence.save_checkpoint."
                )
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except SafetensorError as err:
        raise ValueError(f"{path} is not a dyaug checkpoint (not a readable safetensors file: {err}).") from err
    meta = json.loads(header[META_KEY])
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint but a {kind!r} checkpoint was expected.")
    return tensors, meta


@dataclass(frozen=True)
class ModelCheckpoint:
    """What :func:`load_model` returns: module state dicts by name, the config, the normalizer, the metadata."""

    states: dict[str, dict[str, Tensor]]
    config: dict[str, Any]
    normalizer: Normalizer | None
    meta: dict[str, Any]


def save_model(
    path: str | Path,
    kind: str,
    *,
    modules: Mapping[str, nn.Module],
    config: Mapping[str, Any],
    normalizer: Normalizer | None = None,
    **meta: Any,
) -> Path:
    """Save a model as one atomic checkpoint: the modules' weights, its JSON ``config`` and its normalizer.

    ``kind`` names what the file holds (e.g. ``"synther"``); :func:`load_model` refuses files of another kind.
    """
    tensors: dict[str, Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"modules.{name}.{k}": v for k, v in module.state_dict().items()})
    record: dict[str, Any] = {"kind": kind, "config": dict(config), "modules": sorted(modules), **meta}
    if normalizer is not None:
        state = normalizer.state_dict()
        record["normalizer_kind"] = state["kind"]
        tensors["normalizer.shift"] = torch.from_numpy(state["shift"])
        tensors["normalizer.scale"] = torch.from_numpy(state["scale"])
    return save_checkpoint(path, tensors, record)


def load_model(path: str | Path, kind: str, device: str | torch.device = "cpu") -> ModelCheckpoint:
    """Read a file written by :func:`save_model` with the same ``kind`` (``ValueError`` otherwise)."""
    tensors, meta = load_checkpoint(path, device, kind=kind)
    states: dict[str, dict[str, Tensor]] = {name: {} for name in meta["modules"]}
    for key, value in tensors.items():
        if key.startswith("modules."):
            name, param = key[len("modules.") :].split(".", 1)
            states[name][param] = value
    normalizer = None
    if "normalizer_kind" in meta:
        normalizer = Normalizer.from_state_dict(
            {
                "kind": meta["normalizer_kind"],
                "shift": tensors["normalizer.shift"].cpu().numpy(),
                "scale": tensors["normalizer.scale"].cpu().numpy(),
            }
        )
    return ModelCheckpoint(states, meta["config"], normalizer, meta)


def flatten_state(state: Any, prefix: str) -> tuple[dict[str, Tensor], Any]:
    """Split a nested state (dicts, lists, tuples, tensors, JSON scalars) into ``(tensors, layout)``.

    Tensors are stored under ``prefix.<path>`` (e.g. ``optimizer.state.0.exp_avg``); ``layout`` is
    JSON-encodable and mirrors ``state`` with each tensor replaced by ``{"__tensor__": key}``. Dicts with
    non-string keys (an optimizer's integer parameter ids) and tuples are encoded so that
    :func:`unflatten_state` restores them exactly.
    """
    tensors: dict[str, Tensor] = {}

    def encode(node: Any, key: str) -> Any:
        if isinstance(node, Tensor):
            if key in tensors:
                raise ValueError(f"two entries of the state flatten to the same key {key!r}; rename one.")
            tensors[key] = node
            return {_TENSOR: key}
        if isinstance(node, Mapping):
            if all(isinstance(k, str) for k in node) and not {_TENSOR, _ITEMS, _TUPLE} & set(node):
                return {k: encode(v, f"{key}.{k}") for k, v in node.items()}
            return {_ITEMS: [[_scalar(k, key), encode(v, f"{key}.{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {_TUPLE: [encode(v, f"{key}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [encode(v, f"{key}.{i}") for i, v in enumerate(node)]
        return _scalar(node, key)

    layout = encode(state, prefix)
    return tensors, layout


def unflatten_state(tensors: Mapping[str, Tensor], layout: Any) -> Any:
    """Inverse of :func:`flatten_state`; raises ``ValueError`` naming any tensor key ``tensors`` lacks."""
    if isinstance(layout, list):
        return [unflatten_state(tensors, v) for v in layout]
    if not isinstance(layout, dict):
        return layout
    if _TENSOR in layout:
        key = layout[_TENSOR]
        if key not in tensors:
            raise ValueError(f"the checkpoint has no tensor {key!r}; it was written for a different state layout.")
        return tensors[key]
    if _ITEMS in layout:
        return {k: unflatten_state(tensors, v) for k, v in layout[_ITEMS]}
    if _TUPLE in layout:
        return tuple(unflatten_state(tensors, v) for v in layout[_TUPLE])
    return {k: unflatten_state(tensors, v) for k, v in layout.items()}


def _scalar(value: Any, key: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"cannot store {type(value).__name__} at {key!r} in a checkpoint; only tensors, dicts, lists, tuples "
        "and JSON scalars are allowed (convert it to one of those)."
    )


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); directories cannot be opened for fsync on Windows."""
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale(path: Path) -> None:
    """Remove what an earlier write to ``path`` left when it was killed: hidden ``.<name>.*.tmp`` files and
    directories, and ``.<name>.old-*`` directories of :func:`write_directory`."""
    for stale in itertools.chain(path.parent.glob(f".{path.name}.*.tmp"), path.parent.glob(f".{path.name}.old-*")):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def write_directory(path: str | Path, write: Callable[[Path], None], marker: str, kind: str) -> Path:
    """Run ``write(directory)`` on a fresh hidden directory and move it to ``path``, replacing an old checkpoint
    directory as a whole.

    Every file goes to a fresh hidden directory next to the target, which is then renamed onto the target (atomic
    when the target does not exist yet). An existing checkpoint is first renamed aside and removed after the new
    one is in place, so a crash between the two renames leaves the old checkpoint under a hidden
    ``.<name>.old-*`` name, never a partial one under the target's name; the next write removes such leftovers.
    Refuses (``ValueError``) to replace an existing ``path`` that is not a ``kind`` checkpoint directory, i.e. one
    without the file ``marker``.
    """
    path = Path(path)
    if path.exists() and not (path.is_dir() and (path / marker).is_file()):
        raise ValueError(f"{path} exists and is not a {kind} checkpoint directory; choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        write(staging)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / path.name)
        os.replace(staging, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path
