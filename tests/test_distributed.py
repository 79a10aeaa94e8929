"""torch.distributed on the CPU (gloo, 2 processes): data-parallel training equals one process with the global
batch, sharded sampling equals one process with the same shard seeds, a dead rank fails clearly, and the on-disk
set round-trips exactly and catches corruption."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import dyaug.datasets
from dyaug import DyDiff, SynthER, Transitions
from dyaug.data.shards import ShardedTransitions, read_shards, write_shards
from dyaug.diffusion.training import TrainConfig, train
from dyaug.distributed import data_parallel, sample_shards, shard_rows, world
from dyaug.dydiff.generator import RolloutStats
from dyaug.dydiff.phases import PhaseSettings, RolloutPhases

tiny_tensors = True


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, size: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=size)
    torch.set_num_threads(1)


def _regression(batch: int, steps: int) -> dict[str, torch.Tensor]:
    """A deterministic loss (no noise of its own): the weights after ``steps`` steps."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    data = torch.linspace(-1, 1, 300).reshape(100, 3)
    trained = data_parallel(net)
    config = TrainConfig(steps=steps, batch_size=batch, lr=1e-2, ema_decay=None, log_every=steps)
    train(lambda y: (trained(y) - y.flip(1)).square().mean(), net, data, config, seed=3, progress=False)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _ddp_worker(rank: int, size: int, port: int, out: str) -> None:
    _join(rank, size, port)
    weights = _regression(batch=8, steps=25)
    if rank == 0:
        torch.save(weights, out)
    torch.distributed.destroy_process_group()


def test_two_ranks_with_batch_b_train_as_one_process_with_batch_2b(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    single = _regression(batch=16, steps=25)
    for name, value in single.items():  # the same global batches; gradients averaged in another order
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n = 400
    t = Transitions(rng.normal(size=(n, 3)), rng.uniform(-1, 1, (n, 2)), rng.normal(size=n), rng.normal(size=(n, 3)),
                    np.zeros(n), np.ones(n))  # fmt: skip
    path = tmp_path_factory.mktemp("gen") / "g.safetensors"
    return SynthER("tiny", device="cpu", seed=5, train_steps=40).fit(t, progress=False).save(path)


def _sample_worker(rank: int, size: int, port: int, checkpoint: str, out: str) -> None:
    _join(rank, size, port)
    assert world() == (rank, size)
    gen = SynthER.load(checkpoint, device="cpu")
    sample_shards(gen, 101, out, provenance={"note": "two ranks"})
    torch.distributed.destroy_process_group()


def test_sharded_sampling_equals_one_process_with_the_same_shard_seeds(generator: Path, tmp_path: Path) -> None:
    two = tmp_path / "two-ranks"
    mp.spawn(_sample_worker, args=(2, _port(), str(generator), str(two)), nprocs=2, join=True)
    one = sample_shards(SynthER.load(generator, device="cpu"), 101, tmp_path / "one-process", shards=2)
    a, b = read_shards(two), read_shards(one)
    assert len(a) == len(b) == 101 and shard_rows(101, 2) == [51, 50]
    for name, value in a.as_dict().items():
        if value is not None:
            np.testing.assert_array_equal(value, getattr(b, name), err_msg=name)
    sharded = ShardedTransitions(two)
    info = sharded.provenance
    assert sharded.n_shards == 2 and (info["note"], info["world_size"], info["seed"], info["shards"]) == (
        "two ranks",
        2,
        5,
        2,
    )


@pytest.fixture(scope="module")
def dydiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    hopper = dyaug.datasets.forge("hopper", "random", budget="tiny", progress=False)
    path = tmp_path_factory.mktemp("dydiff") / "d.safetensors"
    fitted = DyDiff("tiny", device="cpu", seed=0, filter="none").fit(hopper, progress=False).save(path)
    return fitted, Transitions.from_minari(hopper).observations[::7]


def _phase_policy(states: torch.Tensor) -> torch.Tensor:
    return (0.5 * states[:, :3] - 0.25 * states[:, 3:6]).clamp(-1.0, 1.0)


def _phase(checkpoint: str, pool: np.ndarray, shards: int | None) -> tuple[Transitions, RolloutStats]:
    settings = PhaseSettings(rollout_every=1, rollout_batch=13, buffer_size=10_000, check_rows=0, shards=shards)
    phases = RolloutPhases(DyDiff.load(checkpoint, device="cpu"), settings, seed=4)
    report = phases.run(_phase_policy, pool, step=2)
    return phases.fifo.transitions(), report.stats


def _phase_worker(rank: int, size: int, port: int, checkpoint: str, pool: np.ndarray, out: str) -> None:
    _join(rank, size, port)
    rows, stats = _phase(checkpoint, pool, None)
    arrays = {k: v for k, v in rows.as_dict().items() if v is not None}
    np.savez(f"{out}.{rank}.npz", **arrays, returns=stats.returns, kept=stats.kept_indices)
    torch.distributed.destroy_process_group()


def test_rollout_phases_shard_their_start_states_across_ranks(dydiff: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    checkpoint, pool = dydiff
    out = tmp_path / "phase"
    mp.spawn(_phase_worker, args=(2, _port(), str(checkpoint), pool, str(out)), nprocs=2, join=True)
    one, stats = _phase(str(checkpoint), pool, shards=2)
    assert stats.trajectories == 13 and len(stats.returns) == 13 and stats.transitions == len(one)
    for rank in (0, 1):  # every rank's model buffer holds the union, equal to one process with two shards
        got = np.load(f"{out}.{rank}.npz")
        for name, value in one.as_dict().items():
            if value is not None:
                np.testing.assert_array_equal(got[name], value, err_msg=f"rank {rank}: {name}")
        np.testing.assert_array_equal(got["returns"], stats.returns)
    whole, _ = _phase(str(checkpoint), pool, shards=1)
    np.testing.assert_array_equal(whole.observations[0], one.observations[0])  # the same first start state,
    assert not np.array_equal(whole.next_observations[0], one.next_observations[0])  # other noise


def _dying_worker(rank: int, size: int, port: int, checkpoint: str) -> None:
    _join(rank, size, port)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 3)
    trained = data_parallel(net)
    data = torch.randn(64, 3)

    def loss(y: torch.Tensor) -> torch.Tensor:
        if rank == 1 and loss.calls == 7:  # type: ignore[attr-defined]
            os._exit(3)  # a rank killed mid-run
        loss.calls += 1  # type: ignore[attr-defined]
        return trained(y).square().mean()

    loss.calls = 0  # type: ignore[attr-defined]
    config = TrainConfig(steps=50, batch_size=4, checkpoint_every=5, log_every=5)
    try:
        train(loss, net, data, config, checkpoint_path=checkpoint, progress=False)
    except RuntimeError as err:
        print("RANK0:", err, flush=True)
        raise SystemExit(0) from err


def test_a_dead_rank_fails_the_others_clearly_and_leaves_no_half_written_file(tmp_path: Path) -> None:
    """Rank 1 dies at its 8th step; rank 0 (a separate process, as under torchrun) must stop with a clear error,
    and the checkpoint it wrote every 5 steps must be whole."""
    checkpoint, port = tmp_path / "state.safetensors", _port()
    code = "import sys; sys.path.insert(0, %r); import test_distributed as t; t._dying_worker(%d, 2, %d, %r)"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", code % (str(Path(__file__).parent), rank, port, str(checkpoint))],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    output = ranks[0].communicate(timeout=300)[0]
    ranks[1].wait(timeout=60)
    assert ranks[1].returncode == 3
    assert "another process of this torchrun job stopped" in output, output[-3000:]
    assert "the last complete checkpoint is" in output
    assert checkpoint.exists() and not list(tmp_path.glob(".*.tmp"))  # the last complete checkpoint, no leftovers
    from dyaug.persistence import load_checkpoint

    assert load_checkpoint(checkpoint)[1]["step"] == 5


def test_transition_sets_round_trip_exactly_and_catch_corruption(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 2_503
    t = Transitions(rng.normal(size=(n, 4)), rng.normal(size=(n, 2)), rng.normal(size=n), rng.normal(size=(n, 4)),
                    rng.integers(0, 2, n), np.zeros(n), next_actions=rng.normal(size=(n, 2)))  # fmt: skip
    write_shards(tmp_path / "set", t, shard_rows=1_000, provenance={"generator": "test"})
    back = read_shards(tmp_path / "set")
    for name, value in t.as_dict().items():
        np.testing.assert_array_equal(getattr(back, name), value, err_msg=name)
    sharded = ShardedTransitions(tmp_path / "set")
    assert (len(sharded), sharded.n_shards, sharded.provenance) == (n, 3, {"generator": "test"})
    shard = tmp_path / "set" / "shard-00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match its checksum"):
        read_shards(tmp_path / "set")
    with pytest.raises(ValueError, match="not a complete transition set"):
        ShardedTransitions(tmp_path / "nothing-here")
