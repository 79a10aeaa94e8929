"""Checkpoint files: exact round trips, atomic writes, state flattening, named errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dyaug import persistence as checkpoint
from dyaug.persistence import flatten_state, load_checkpoint, save_checkpoint, unflatten_state


def test_round_trip_is_exact_for_every_dtype_and_the_meta(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5).to(torch.bfloat16),
        "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d": torch.tensor(7, dtype=torch.int64),
        "e": torch.tensor([True, False]),
        "f": torch.randn(4, 3).t(),  # non-contiguous
    }
    meta = {"kind": "demo", "step": 3, "lr": 1e-3, "nested": {"xs": [1, 2.5, None, "s"]}}
    path = save_checkpoint(tmp_path / "ck.safetensors", tensors, meta)
    loaded, loaded_meta = load_checkpoint(path, kind="demo")
    assert loaded_meta == meta
    assert loaded.keys() == tensors.keys()
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and loaded[name].device.type == "cpu"
        assert torch.equal(loaded[name], t)


def test_module_and_optimizer_state_round_trip_continue_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    x = torch.randn(16, 3)

    def step(m: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        m(x).square().mean().backward()
        opt.step()

    for _ in range(3):
        step(model, optimizer)
    tensors, layout = flatten_state({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, "s")
    assert "s.optimizer.state.0.exp_avg" in tensors and "s.model.0.weight" in tensors
    save_checkpoint(tmp_path / "s.safetensors", tensors, {"kind": "state", "layout": layout})

    loaded, meta = load_checkpoint(tmp_path / "s.safetensors", kind="state")
    state = unflatten_state(loaded, meta["layout"])
    assert list(state["optimizer"]["state"]) == [0, 1, 2, 3, 4, 5]  # integer ids restored
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.95)  # tuples restored
    torch.manual_seed(1)
    clone = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    clone_opt = torch.optim.AdamW(clone.parameters(), lr=0.5)
    clone.load_state_dict(state["model"])
    clone_opt.load_state_dict(state["optimizer"])
    step(model, optimizer)
    step(clone, clone_opt)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(a, b)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.ones(3)}, {"kind": "demo", "version": 1})
    old_bytes = path.read_bytes()

    def crash_mid_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(3)}, {"kind": "demo", "version": 2})
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]
    tensors, meta = load_checkpoint(path)
    assert meta["version"] == 1 and torch.equal(tensors["w"], torch.ones(3))


def test_files_that_are_not_dyaug_checkpoints_or_of_another_kind_are_rejected(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00not a safetensors file" * 8)
    with pytest.raises(ValueError, match=r"garbage\.bin is not a dyaug checkpoint"):
        load_checkpoint(garbage)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"foreign\.safetensors is a safetensors file but not a dyaug checkpoint"):
        load_checkpoint(foreign)

    ours = save_checkpoint(tmp_path / "ours.safetensors", {"w": torch.ones(2)}, {"kind": "train_state"})
    with pytest.raises(ValueError, match=r"ours\.safetensors holds a 'train_state' checkpoint but a 'model'"):
        load_checkpoint(ours, kind="model")


def test_invalid_contents_raise_named_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'kind'"):
        save_checkpoint(tmp_path / "x", {"w": torch.ones(1)}, {"step": 1})
    with pytest.raises(TypeError, match=r"cannot store object at 's\.opt'"):
        flatten_state({"opt": object()}, "s")
    with pytest.raises(ValueError, match=r"same key 's\.a\.b'"):
        flatten_state({"a.b": torch.ones(1), "a": {"b": torch.ones(1)}}, "s")
    with pytest.raises(ValueError, match=r"no tensor 's\.w'"):
        unflatten_state({}, {"w": {"__tensor__": "s.w"}})


def test_model_checkpoint_holds_weights_config_and_normalizer(tmp_path) -> None:
    from dyaug.data import ZScoreNormalizer
    from dyaug.diffusion.networks import ResidualMLP
    from dyaug.persistence import load_model, save_model

    torch.manual_seed(0)
    rows = torch.randn(64, 5).numpy() * 3 + 1
    norm = ZScoreNormalizer.fit(rows, skip=[4])
    net = ResidualMLP(5, width=16, depth=1).eval()
    path = save_model(
        tmp_path / "m.safetensors", "toy", modules={"denoiser": net}, config={"width": 16}, normalizer=norm
    )

    loaded = load_model(path, "toy")
    assert loaded.config == {"width": 16}
    twin = ResidualMLP(5, width=16, depth=1).eval()
    twin.load_state_dict(loaded.states["denoiser"])
    x, level = torch.randn(8, 5), torch.zeros(8)
    assert torch.equal(twin(x, level), net(x, level))
    np.testing.assert_array_equal(loaded.normalizer.normalize(rows), norm.normalize(rows))
    with pytest.raises(ValueError, match="'toy' checkpoint but a 'synther' checkpoint was expected"):
        load_model(path, "synther")


def test_the_next_save_removes_what_a_killed_save_left(tmp_path: Path) -> None:
    """A process killed mid-save leaves its hidden temporary file (or staging directory) behind; the next save to
    the same path removes it, and leaves other files alone."""
    from dyaug.persistence import write_directory

    path = tmp_path / "model.safetensors"
    (tmp_path / ".model.safetensors.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".other.safetensors.x.tmp").write_bytes(b"someone else's")
    save_checkpoint(path, {"w": torch.ones(2)}, {"kind": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.safetensors.x.tmp", "model.safetensors"]

    directory = tmp_path / "gen"
    (tmp_path / ".gen.abc.tmp").mkdir()
    (tmp_path / ".gen.abc.tmp" / "part").write_bytes(b"x")
    (tmp_path / ".gen.old-xyz").mkdir()
    write_directory(directory, lambda d: (d / "main").write_bytes(b"new"), marker="main", kind="test")
    write_directory(directory, lambda d: (d / "main").write_bytes(b"newer"), marker="main", kind="test")
    assert (directory / "main").read_bytes() == b"newer"
    assert not list(tmp_path.glob(".gen.*"))
