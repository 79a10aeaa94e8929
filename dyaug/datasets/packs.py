"""Dataset packs: local Minari datasets in one file, to reuse a forge (an hour of training) on another machine.

A pack is a tar archive holding ``manifest.json`` and, under ``datasets/<dataset id>/``, every file of each
dataset's directory in the Minari store. The manifest lists each file with its size and SHA-256. Importing
verifies every checksum before anything reaches the store, refuses to overwrite a dataset unless asked, and
moves each dataset into place with a rename, so the store never holds half a dataset. An imported dataset is
the exported one byte for byte, so it loads bit-identically.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMAT = "dyaug-dataset-pack"
VERSION = 1
_ID = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*-v\d+$")
_CHUNK = 1 << 20


def store_root() -> Path:
    """The local Minari store: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets`` (as Minari resolves it)."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def export_pack(names: Sequence[str], path: str | Path) -> Path:
    """Write the local datasets ``names`` into the pack ``path`` (written to a temporary file, then renamed)."""
    import minari

    from dyaug import __version__

    local = minari.list_local_datasets()
    missing = [n for n in names if n not in local]
    if missing:
        raise ValueError(
            f"not in the local Minari store: {missing}; forge or load them first (dyaug.datasets.load(name))."
        )
    if not names:
        raise ValueError("name at least one dataset to export.")
    root, path = store_root(), Path(path)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dyaug": __version__,
        "minari": minari.__version__,
        "datasets": {},
    }
    files: list[tuple[Path, str]] = []
    for name in names:
        _check_id(name)
        entries = {}
        for file in sorted(p for p in (root / name).rglob("*") if p.is_file()):
            rel = file.relative_to(root / name).as_posix()
            entries[rel] = {"bytes": file.stat().st_size, "sha256": _sha256(file)}
            files.append((file, f"datasets/{name}/{rel}"))
        meta = local[name]
        manifest["datasets"][name] = {
            "files": entries,
            "total_steps": meta.get("total_steps"),
            "total_episodes": meta.get("total_episodes"),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            blob = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            for file, arcname in files:
                tar.add(file, arcname=arcname, recursive=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a pack is for sharing (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the pack ``path``; ``ValueError`` when the file is not a dyaug dataset pack."""
    try:
        with tarfile.open(path, "r") as tar:
            member = tar.extractfile("manifest.json")
            manifest = json.loads(member.read()) if member is not None else None
    except (OSError, tarfile.TarError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a dyaug dataset pack (no readable manifest.json: {err}).") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dyaug dataset pack (its manifest names no format {FORMAT!r}).")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path} is a pack of format version {manifest.get('version')}; this dyaug reads {VERSION}.")
    return manifest


def import_pack(path: str | Path, *, replace: bool = False) -> list[str]:
    """Put the datasets of the pack ``path`` into the local Minari store; returns their ids.

    Every file is checked against the manifest's SHA-256 before any dataset is moved into the store. A dataset
    that exists already is an error unless ``replace``.
    """
    manifest = read_manifest(path)
    datasets: dict[str, Any] = manifest["datasets"]
    root = store_root()
    for name in datasets:
        _check_id(name)
    present = [n for n in datasets if (root / n).exists()]
    if present and not replace:
        raise ValueError(
            f"the local Minari store already holds {present}; pass replace=True (CLI: --replace) to overwrite them."
        )
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".dyaug-import-"))
    try:
        with tarfile.open(path, "r") as tar:
            wanted = {f"datasets/{n}/{rel}": (n, rel, e) for n, d in datasets.items() for rel, e in d["files"].items()}
            for member in tar.getmembers():
                if member.name == "manifest.json":
                    continue
                if member.name not in wanted or not member.isfile():
                    raise ValueError(f"{path} holds {member.name!r}, which its manifest does not list.")
                name, rel, entry = wanted.pop(member.name)
                _check_relative(rel)
                target = staging / name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                digest, size = hashlib.sha256(), 0
                with open(target, "wb") as out:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                if digest.hexdigest() != entry["sha256"] or size != entry["bytes"]:
                    raise ValueError(
                        f"{path}: {member.name} does not match its checksum; the pack is corrupt. Export it again."
                    )
            if wanted:
                raise ValueError(f"{path} lacks files its manifest lists, e.g. {next(iter(wanted))}; export it again.")
        for name in datasets:
            final = root / name
            final.parent.mkdir(parents=True, exist_ok=True)
            old = None
            if final.exists():
                old = final.with_name(f".{final.name}.replaced")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
            os.replace(staging / name, final)
            if old is not None:
                shutil.rmtree(old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return list(datasets)


def _check_id(name: str) -> None:
    if not _ID.match(name) or ".." in name.split("/"):
        raise ValueError(f"{name!r} is not a Minari dataset id of the form namespace/name-vN.")


def _check_relative(rel: str) -> None:
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts or "" in parts:
        raise ValueError(f"unsafe file name {rel!r} in the pack's manifest.")


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
