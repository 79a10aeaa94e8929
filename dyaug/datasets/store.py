"""Finding a dataset by name: the local Minari store first, then what dyaug can make (a forge, a subset of a
dataset), then Minari's remote server.

``load`` resolves, in order:

1. any id already in the local store (``$MINARI_DATASETS_PATH``);
2. a dataset shipped with dyaug (:data:`PACKAGED`, e.g. ``dyaug/hopper/demo-v0``): imported into the store from
   its pack, checksums verified;
3. a subset name ``<parent>-<p>pct[-s<k>]-v0`` (``dyaug/hopper/medium-replay-10pct-v0``): :func:`subset` of the
   parent, which is loaded (or forged) the same way;
4. a forge name (``dyaug/hopper/medium-v0`` or the shorthand ``hopper/medium``): forged;
5. any other ``namespace/name-vN`` id (``mujoco/hopper/medium-v0``): handed to Minari, which downloads it. Without
   a network this fails within seconds, naming the forge as the local alternative.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from dyaug.data import Transitions
from dyaug.datasets.catalog import NAMESPACE, parse_dataset_id
from dyaug.datasets.catalog import dataset_id as canonical_id

if TYPE_CHECKING:  # pragma: no cover
    from minari import MinariDataset

# Minari 0.5's default remote (``minari.storage.remotes``): the Farama organisation on Hugging Face
REMOTE_HOST = "https://huggingface.co"
REMOTE_TIMEOUT_S = 3.0
PACKAGED: dict[str, str] = {"dyaug/hopper/demo-v0": "hopper-demo.pack"}
"""Datasets shipped inside the package (``dyaug/datasets/data/``), by id: the pack file that holds each."""
_SUBSET = re.compile(r"^(?P<parent>.+)-(?P<pct>\d+(?:\.\d+)?)pct(?:-s(?P<seed>\d+))?(?P<version>-v\d+)$")


def load(name: str, *, progress: bool = True) -> MinariDataset:
    """Open the dataset ``name`` (see the module docstring for how names resolve)."""
    import minari

    local = minari.list_local_datasets()
    if name in local:
        return minari.load_dataset(name)
    if name in PACKAGED:
        from dyaug.datasets.packs import import_pack

        import_pack(packaged_path(PACKAGED[name]))
        return minari.load_dataset(name)
    m = _SUBSET.match(name)
    if m is not None:
        parent = m["parent"] + m["version"]
        return subset(parent, float(m["pct"]) / 100, seed=int(m["seed"] or 0), dataset_id=name, progress=progress)
    if name.startswith(f"{NAMESPACE}/") or name.count("/") < 2:
        from dyaug.datasets.forge import forge

        env, level, budget, seed = parse_dataset_id(name)
        return forge(env, level, budget=budget, seed=seed, progress=progress)
    return _download(name)


def _full_forge_id(name: str) -> str:
    """The forge's shorthand (``hopper/medium-replay``) as its Minari id; any other name as it is."""
    if name.startswith(f"{NAMESPACE}/") or name.count("/") != 1:
        return name
    try:
        return canonical_id(*parse_dataset_id(name))
    except ValueError:
        return name


def packaged_path(file: str) -> Path:
    """Where a pack shipped with dyaug lies (``dyaug/datasets/data/<file>``)."""
    return Path(__file__).parent / "data" / file


def subset(
    name: str, fraction: float, *, seed: int = 0, dataset_id: str | None = None, progress: bool = True
) -> MinariDataset:
    """A new local Minari dataset holding a random ``fraction`` of ``name``'s episodes (whole episodes, at least
    one), drawn with ``seed``; returned as is when it exists already.

    Its id defaults to ``<name without -vN>-<100·fraction>pct[-s<seed>]-vN``; its metadata keeps the parent's
    environment and reference scores, and its provenance names the parent, the fraction, the seed and the
    episodes kept (indices into the parent).
    """
    import minari

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}; e.g. 0.1 keeps 10% of the episodes.")
    name = _full_forge_id(name)
    if dataset_id is None:
        stem, version = _split_version(name)
        dataset_id = f"{stem}-{_percent(fraction)}pct{'' if seed == 0 else f'-s{seed}'}{version}"
    if dataset_id in minari.list_local_datasets():
        return minari.load_dataset(dataset_id)
    parent = load(name, progress=progress)
    n = parent.total_episodes
    count = max(1, round(fraction * n))
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    data = Transitions.from_minari(parent, episode_indices=chosen.tolist())
    meta = parent.storage.metadata
    env_id = parent.env_spec.id if parent.env_spec is not None else None
    eval_spec = _json(meta.get("eval_env_spec"))
    return data.to_minari(
        dataset_id,
        env_id,
        eval_env=eval_spec.get("id", env_id) if isinstance(eval_spec, dict) else env_id,
        ref_min_score=meta.get("ref_min_score"),
        ref_max_score=meta.get("ref_max_score"),
        algorithm_name=f"{meta.get('algorithm_name', 'unknown')} (subset)",
        author="dyaug subset",
        author_email="none (made locally)",
        code_permalink="dyaug.datasets.subset",
        description=f"{count} of the {n} episodes of {name} ({100 * fraction:g}%, drawn with seed {seed}).",
        provenance={
            "subset_of": name,
            "fraction": fraction,
            "seed": seed,
            "episodes": chosen.tolist(),
            "parent_total_episodes": n,
            "parent_total_steps": parent.total_steps,
            "parent_provenance": provenance(meta),
        },
    )


def list_datasets() -> list[dict[str, Any]]:
    """The dyaug datasets (forged or subsets) in the local Minari store, with size and provenance summary."""
    import minari

    rows = []
    for name, meta in sorted(minari.list_local_datasets().items()):
        if not name.startswith(f"{NAMESPACE}/"):
            continue
        prov = provenance(meta)
        rows.append(
            {
                "dataset_id": name,
                "total_steps": meta.get("total_steps"),
                "total_episodes": meta.get("total_episodes"),
                "mean_episode_return": prov.get("mean_episode_return"),
                "forge_seconds": prov.get("forge_seconds"),
            }
        )
    return rows


def provenance(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``provenance`` entry of a dataset's Minari metadata as a dict (empty when absent or unreadable)."""
    raw = _json(meta.get("provenance"))
    return raw if isinstance(raw, dict) else {}


def _download(name: str) -> MinariDataset:
    import minari

    host = urlparse(REMOTE_HOST).hostname or REMOTE_HOST
    try:
        socket.create_connection((host, 443), timeout=REMOTE_TIMEOUT_S).close()
    except OSError as err:
        raise ValueError(
            f"{name!r} is not in the local Minari store and Minari's server ({host}) cannot be reached ({err}). "
            f"Forge a local equivalent instead, e.g. dyaug.datasets.load('{_forge_hint(name)}') "
            "(or `dyaug datasets forge ...`), or import a dataset pack made elsewhere with "
            "`dyaug datasets import PACK`."
        ) from err
    return minari.load_dataset(name, download=True)


def _forge_hint(name: str) -> str:
    parts = name.split("/")
    for env in ("hopper", "halfcheetah", "walker2d"):
        if env in parts:
            level = parts[-1].rsplit("-v", 1)[0]
            level = level if level in ("random", "medium", "medium-replay", "expert", "medium-expert") else "medium"
            return f"{NAMESPACE}/{env}/{level}-v0"
    return f"{NAMESPACE}/hopper/medium-v0"


def _split_version(name: str) -> tuple[str, str]:
    m = re.match(r"^(.*)(-v\d+)$", name)
    if m is None:
        raise ValueError(f"{name!r} is not a Minari id of the form namespace/name-vN.")
    return m[1], m[2]


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g}"


def _json(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw
