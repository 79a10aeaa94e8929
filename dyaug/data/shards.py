"""A flat on-disk format for large sets of :class:`Transitions`: safetensors shards and a JSON manifest.

Minari stores episodes, so an unordered synthetic set becomes one one-step episode per transition (about 1,000 s
for 100k transitions). Here a set is a directory:

- ``shard-00000.safetensors``, ...: the columns of consecutive rows (``observations``, ``actions``, ``rewards``,
  ``next_observations``, ``terminals``, ``timeouts`` and, when present, ``next_actions``), float32;
- ``manifest.json``: format and version, the rows of each shard, its SHA-256 and size, the sizes of the spaces,
  and free-form ``provenance`` (the generator that made the set: ``SynthER.provenance()``).

Writing is atomic per file (a shard, then the manifest last): a reader sees a manifest only once every shard it
lists is complete. :func:`read_shards` memory-maps the shards (safetensors) and checks each checksum before use;
:class:`ShardedTransitions` opens a set lazily, shard by shard. Shards written by separate processes (the ranks of a
``torchrun`` job, :func:`dyaug.distributed`) are merged by writing one manifest over all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dyaug.data.transitions import Transitions

FORMAT, VERSION = "dyaug-transition-shards", 1
MANIFEST = "manifest.json"
_FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "next_actions")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def write_shard(directory: str | Path, index: int, transitions: Transitions) -> dict[str, Any]:
    """Write ``transitions`` as shard ``index`` of the set in ``directory`` (atomically); returns its manifest entry."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in transitions.as_dict().items() if v is not None}
    path = directory / shard_name(index)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(arrays, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"file": path.name, "rows": len(transitions), "bytes": path.stat().st_size, "sha256": _sha256(path)}


def write_manifest(
    directory: str | Path, entries: Sequence[Mapping[str, Any]], provenance: Mapping[str, Any] | None = None
) -> Path:
    """Write the manifest over the shards ``entries`` (in row order) last, atomically: the set is complete."""
    directory = Path(directory)
    if not entries:
        raise ValueError("a transition set needs at least one shard.")
    first = _open(directory / entries[0]["file"])
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "rows": int(sum(e["rows"] for e in entries)),
        "obs_dim": int(first.get_slice("observations").get_shape()[1]),
        "act_dim": int(first.get_slice("actions").get_shape()[1]),
        "shards": [dict(e) for e in entries],
        "provenance": dict(provenance or {}),
    }
    path = directory / MANIFEST
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{MANIFEST}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, path)
    return directory


def write_shards(
    directory: str | Path,
    transitions: Transitions,
    *,
    shard_rows: int = 1_000_000,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``transitions`` as a set of shards of ``shard_rows`` rows and its manifest; returns the directory."""
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}.")
    if len(transitions) == 0:
        raise ValueError("cannot write an empty Transitions; a set needs at least one row.")
    entries = [
        write_shard(directory, i, transitions[start : start + shard_rows])
        for i, start in enumerate(range(0, len(transitions), shard_rows))
    ]
    return write_manifest(directory, entries, provenance)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{directory} is not a complete transition set (no readable {MANIFEST}: {err}); a set is written by "
            "dyaug.data.shards.write_shards, its manifest last."
        ) from err
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(
            f"{directory} holds {manifest.get('format')!r} v{manifest.get('version')}, not {FORMAT} v{VERSION}."
        )
    return manifest


class ShardedTransitions:
    """A set written by :func:`write_shards`, opened lazily: ``len()``, :meth:`shard` (one shard as
    :class:`Transitions`, checksum checked), iteration over shards, and :meth:`load` (all of it)."""

    def __init__(self, directory: str | Path, *, verify: bool = True) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.verify = verify

    def __len__(self) -> int:
        return int(self.manifest["rows"])

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.manifest["provenance"])

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    def shard(self, index: int) -> Transitions:
        entry = self.manifest["shards"][index]
        path = self.directory / entry["file"]
        if self.verify and _sha256(path) != entry["sha256"]:
            raise ValueError(f"{path} does not match its checksum in {MANIFEST}; the shard is corrupt, write it again.")
        handle = _open(path)
        columns = {k: handle.get_tensor(k) for k in handle.keys() if k in _FIELDS}  # noqa: SIM118
        data = Transitions(**columns)
        if len(data) != entry["rows"]:
            raise ValueError(f"{path} holds {len(data)} rows, its manifest says {entry['rows']}.")
        return data

    def __iter__(self) -> Iterator[Transitions]:
        return (self.shard(i) for i in range(self.n_shards))

    def load(self) -> Transitions:
        """Every row, as one :class:`Transitions`."""
        return Transitions.concatenate(list(self))


def read_shards(directory: str | Path, *, verify: bool = True) -> Transitions:
    """The whole set in ``directory`` as :class:`Transitions` (checksums checked unless ``verify=False``)."""
    return ShardedTransitions(directory, verify=verify).load()


def _open(path: Path) -> Any:
    from safetensors import safe_open

    return safe_open(str(path), framework="numpy")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
