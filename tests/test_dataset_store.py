"""Moving and cutting datasets: packs that round-trip bit for bit, subsets of whole episodes, remote ids offline."""

from __future__ import annotations

import json
import tarfile
import time

import minari
import numpy as np
import pytest
from dyaug.integrations.cli import main as cli

import dyaug.datasets
from dyaug.data import Transitions
from dyaug.datasets import packs, store

PARENT = "dyaug/hopper/medium-replay-tiny-v0"


def _arrays_equal(a: Transitions, b: Transitions) -> None:
    for name, value in a.as_dict().items():
        if value is not None:
            np.testing.assert_array_equal(getattr(b, name), value, err_msg=name)


def test_pack_round_trip_is_bit_identical(tmp_path) -> None:
    names = [dyaug.datasets.load(n, progress=False).id for n in (PARENT, "dyaug/hopper/random-tiny-v0")]
    before = {n: Transitions.from_minari(minari.load_dataset(n)) for n in names}
    meta = {n: dict(minari.load_dataset(n).storage.metadata) for n in names}
    pack = dyaug.datasets.export_pack(names, tmp_path / "hopper.pack")
    manifest = packs.read_manifest(pack)
    assert sorted(manifest["datasets"]) == sorted(names)
    assert all(len(e["sha256"]) == 64 for d in manifest["datasets"].values() for e in d["files"].values())

    with pytest.raises(ValueError, match="replace=True"):  # both exist: refused, the store untouched
        dyaug.datasets.import_pack(pack)
    for n in names:
        minari.delete_dataset(n)
    assert sorted(dyaug.datasets.import_pack(pack)) == sorted(names)
    for n in names:
        ds = minari.load_dataset(n)
        _arrays_equal(before[n], Transitions.from_minari(ds))
        assert dict(ds.storage.metadata) == meta[n]
    assert dyaug.datasets.import_pack(pack, replace=True) == names  # replacing works too
    assert not list(packs.store_root().glob(".dyaug-import-*"))  # no staging left behind


def test_corrupt_pack_is_refused_by_checksum_and_leaves_the_store_alone(tmp_path) -> None:
    name = dyaug.datasets.load("dyaug/walker2d/random-tiny-v0", progress=False).id
    pack = dyaug.datasets.export_pack([name], tmp_path / "w.pack")
    bad = tmp_path / "bad.pack"
    with tarfile.open(pack) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith(".hdf5"):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])  # one flipped byte
            import io

            dst.addfile(member, io.BytesIO(data))
    minari.delete_dataset(name)
    with pytest.raises(ValueError, match="checksum"):
        dyaug.datasets.import_pack(bad)
    assert name not in minari.list_local_datasets()
    assert not list(packs.store_root().glob(".dyaug-import-*"))
    with pytest.raises(ValueError, match="not a dyaug dataset pack"):
        dyaug.datasets.import_pack(tmp_path / "bad.pack.missing")
    assert cli(["datasets", "import", str(pack)]) == 0 and name in minari.list_local_datasets()


def test_subset_keeps_whole_episodes_and_names_its_parent() -> None:
    parent = dyaug.datasets.load(PARENT, progress=False)
    part = dyaug.datasets.subset(PARENT, 0.25, seed=3)
    assert part.id == "dyaug/hopper/medium-replay-tiny-25pct-s3-v0"
    prov = store.provenance(part.storage.metadata)
    assert prov["subset_of"] == PARENT and prov["fraction"] == 0.25 and prov["seed"] == 3
    chosen = prov["episodes"]
    assert len(chosen) == round(0.25 * parent.total_episodes) and chosen == sorted(set(chosen))
    _arrays_equal(Transitions.from_minari(parent, episode_indices=chosen), Transitions.from_minari(part))
    assert part.total_episodes == len(chosen)
    meta = part.storage.metadata
    assert meta["ref_max_score"] == parent.storage.metadata["ref_max_score"]
    assert part.env_spec.id == "Hopper-v5"
    # the name alone makes it again: load() resolves subset names, and the same seed gives the same episodes
    minari.delete_dataset(part.id)
    again = dyaug.datasets.load("dyaug/hopper/medium-replay-tiny-25pct-s3-v0")
    assert store.provenance(again.storage.metadata)["episodes"] == chosen
    with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\]"):
        dyaug.datasets.subset(PARENT, 0.0)
    # the forge's shorthand names the same parent, and so the same subset
    assert dyaug.datasets.subset("hopper/medium-replay-tiny", 0.25, seed=3).id == part.id


def test_remote_id_without_network_fails_fast_and_names_the_forge(monkeypatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(store.socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"dyaug\.datasets\.load\('dyaug/hopper/medium-v0'\)"):
        dyaug.datasets.load("mujoco/hopper/medium-v0")
    assert time.perf_counter() - start < 5.0
    assert cli(["fidelity", "mujoco/walker2d/expert-v0"]) == 2  # the CLI turns it into an error message


def test_remote_id_on_this_network_is_handed_to_minari_or_fails_within_seconds() -> None:
    start = time.perf_counter()
    try:
        dyaug.datasets.load("mujoco/hopper/medium-v0")
    except ValueError as err:  # offline: the forge is named
        assert "Forge a local equivalent" in str(err)
    except Exception:  # online: Minari itself tried (its own errors are its own)
        pass
    assert time.perf_counter() - start < 3 * store.REMOTE_TIMEOUT_S + 5


def test_manifest_lists_what_the_cli_exported(tmp_path, capsys) -> None:
    name = dyaug.datasets.load("dyaug/hopper/random-tiny-v0", progress=False).id
    assert cli(["datasets", "export", name, "--to", str(tmp_path / "p.pack")]) == 0
    with tarfile.open(tmp_path / "p.pack") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        listed = {f"datasets/{name}/{rel}" for rel in manifest["datasets"][name]["files"]}
        assert listed == {m.name for m in tar.getmembers()} - {"manifest.json"}
    assert cli(["datasets", "subset", name, "0.5"]) == 0
    assert "random-tiny-50pct-v0" in capsys.readouterr().out
