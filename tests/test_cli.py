"""The ``dyaug`` command line and the demo it runs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dyaug.integrations.cli import main
from dyaug.integrations.demo import DemoConfig, run_demo

import dyaug.datasets
from dyaug import SynthER

TINY = "dyaug/hopper/medium-replay-tiny-v0"  # forged in seconds; the demo's default is the packaged dataset


def test_forge_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "forge", "hopper", "random", "--budget", "tiny"]) == 0
    assert "dyaug/hopper/random-tiny-v0: 2000 steps" in capsys.readouterr().out
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "dyaug/hopper/random-tiny-v0" in out and "not forged yet" in out


def test_bad_arguments_exit_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "forge", "humanoid", "random", "--budget", "tiny"]) == 2
    assert "does not know environment 'humanoid'" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dyaug.integrations.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in out and "datasets" in out


def test_demo_diffusion_beats_a_gaussian_and_real_data_is_exact(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_demo(DemoConfig(dataset=TINY, train_steps=1000, n_samples=1000, rl_steps=0, device="cpu"))
    reports = result.fidelity
    assert result.scores == {}  # rl_steps=0 skips the offline RL part
    real, diffusion, gauss = reports["real (held out)"], reports["diffusion"], reports["gaussian fit"]
    assert real.median_state_error < 1e-5
    # Means, not medians: on ~700 transitions after few steps the medians come close (0.66-0.75 against 0.73
    # over three seeds at 600 steps) while the means stay apart (about 0.8 against 0.89).
    assert diffusion.mean_state_error < gauss.mean_state_error
    assert np.isfinite(diffusion.mean_reward_error)
    assert "gaussian fit" in capsys.readouterr().out


def test_demo_trains_td3plusbc_on_three_arms_with_the_same_seed(capsys: pytest.CaptureFixture[str]) -> None:
    config = DemoConfig(
        dataset=TINY, train_steps=100, n_samples=300, rl_steps=100, dydiff_train_steps=30, eval_episodes=1
    )
    result = run_demo(dataclasses.replace(config, device="cpu"))
    assert list(result.scores) == ["real", "+ SynthER", "+ DyDiff"]
    assert all(np.isfinite(v) for v in result.scores.values())
    dydiff = result.fidelity["dydiff rollouts"]
    assert len(dydiff) > 0 and dydiff.fraction_checkable > 0.9  # DyDiff's rollouts were checked in the simulator
    table = capsys.readouterr().out.split("TD3PlusBC")[-1]
    for arm, value in result.scores.items():
        assert f"{arm:12s} {value:>10.1f}" in table


def test_demo_options_are_the_demo_config_fields() -> None:
    from dyaug.integrations.cli import build_parser

    args = build_parser().parse_args(["demo", "--n-samples", "7", "--precision", "bf16"])
    config = DemoConfig(**{k: v for k, v in vars(args).items() if k in DemoConfig.__dataclass_fields__})
    assert config == DemoConfig(n_samples=7, precision="bf16")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--precision", "fp16"])


def test_the_packaged_demo_dataset_loads_and_matches_its_checksums() -> None:
    import minari

    import dyaug.datasets
    from dyaug.datasets import packs, store

    pack = store.packaged_path(store.PACKAGED["dyaug/hopper/demo-v0"])
    manifest = packs.read_manifest(pack)
    ds = dyaug.datasets.load("dyaug/hopper/demo-v0")  # imported from the pack, every checksum verified
    files = manifest["datasets"][ds.id]["files"]
    root = packs.store_root() / ds.id
    assert all(packs._sha256(root / rel) == entry["sha256"] for rel, entry in files.items())
    assert ds.total_steps == manifest["datasets"][ds.id]["total_steps"] > 20_000 and ds.env_spec.id == "Hopper-v5"
    prov = store.provenance(ds.storage.metadata)
    assert set(prov["parts"]) == {"dyaug/hopper/medium-v0", "dyaug/hopper/medium-replay-v0"}
    assert prov["teacher"]["name"] == "ppo" and ds.id in minari.list_local_datasets()


def test_synther_fit_resumes_from_its_checkpoint_and_refuses_another_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dyaug.datasets.forge("hopper", "random", budget="tiny", progress=False)
    state = tmp_path / "fit.safetensors"
    fit = ["synther", "fit", "hopper/random-tiny", "--preset", "tiny", "--steps", "40", "--device", "cpu"]
    fit += ["--checkpoint", str(state), "--checkpoint-every", "20"]
    assert main([*fit, "--out", str(tmp_path / "a.safetensors")]) == 0 and state.exists()
    written = state.stat().st_mtime_ns
    assert main([*fit, "--out", str(tmp_path / "b.safetensors")]) == 0  # resumed at step 40: nothing to train
    assert state.stat().st_mtime_ns == written  # a fit that trained would have rewritten it
    a, b = (SynthER.load(tmp_path / f"{name}.safetensors", device="cpu") for name in "ab")
    assert a.training_losses == b.training_losses and len(a.training_losses) >= 1
    assert np.array_equal(a.sample(64, seed=3, progress=False).observations, b.sample(64, seed=3).observations)
    capsys.readouterr()
    assert main([*fit, "--out", str(tmp_path / "c.safetensors"), "--seed", "1"]) == 2
    assert "seed: checkpoint 0, this run 1" in capsys.readouterr().err
