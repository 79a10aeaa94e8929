"""Running dyaug on several processes with PyTorch's own distributed engine (``torch.distributed``, ``torchrun``).

Outside ``torchrun`` nothing here changes anything: :func:`world` is ``(0, 1)`` and every helper is the identity.
Under ``torchrun --nproc_per_node=N`` (or multi-node, through torchrun's rendezvous):

- :func:`init_from_environment` joins the job's process group (gloo on the CPU, NCCL on CUDA), once;
- :func:`data_parallel` wraps a network in ``DistributedDataParallel`` for training: gradients are averaged over
  the ranks, so N ranks with batch B train as one process with batch N·B (each rank reads its own slice of every
  global batch, see :func:`dyaug.diffusion.training.train`); only rank 0 writes checkpoints and progress bars;
- :func:`sample_shards` splits a generation into shards, each drawn with its own seed (derived from the generator's
  seed and the shard's index, not the rank), writes them with :mod:`dyaug.data.shards`, and rank 0 writes the
  manifest over all of them: the same seed and shard count give the same set on any number of ranks.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dyaug.data.shards import MANIFEST, shard_name, write_manifest, write_shard

TIMEOUT = dt.timedelta(minutes=10)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` outside a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_from_environment(device: torch.device | str | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``, ``RANK``,
    ``MASTER_ADDR``...), with NCCL for CUDA devices and gloo otherwise; a no-op outside torchrun or when already
    joined. Returns :func:`world`."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        cuda = device is not None and torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return world()


def data_parallel(network: nn.Module) -> nn.Module:
    """``DistributedDataParallel(network)`` inside a process group of more than one rank, else ``network``."""
    if world()[1] == 1:
        return network
    parameter = next(network.parameters())
    device_ids = [parameter.device] if parameter.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def shard_seed(seed: int, shard: int) -> int:
    """The noise seed of shard ``shard`` of a generation with ``seed`` (independent streams per shard)."""
    return int(np.random.SeedSequence([seed, shard, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)


def shard_rows(n: int, shards: int) -> list[int]:
    """Rows of each of ``shards`` shards of ``n`` rows (the first ``n % shards`` get one more)."""
    return [n // shards + (k < n % shards) for k in range(shards)]


def sample_shards(
    generator: Any,
    n: int,
    directory: str | Path,
    *,
    shards: int | None = None,
    seed: int | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Draw ``n`` transitions from ``generator`` (anything with ``sample(n, seed=..., progress=...)``) as ``shards``
    shards (default: one per rank) into ``directory``; rank r draws shards r, r + world, ... Returns the directory.

    Shard k is ``generator.sample(rows_k, seed=shard_seed(seed, k))`` (``seed``: the generator's seed by default),
    so one process with ``shards=N`` writes exactly what N ranks write together."""
    rank, size = world()
    shards = size if shards is None else shards
    if shards < 1 or n < shards:
        raise ValueError(f"need 1 <= shards <= n, got shards={shards}, n={n}.")
    base = generator.seed if seed is None else seed
    directory = Path(directory)
    rows = shard_rows(n, shards)
    for k in range(rank, shards, size):
        write_shard(directory, k, generator.sample(rows[k], seed=shard_seed(base, k), progress=rank == 0))
    barrier()
    if rank == 0:
        from dyaug.data.shards import _sha256

        entries = []
        for k in range(shards):
            path = directory / shard_name(k)
            entries.append({"file": path.name, "rows": rows[k], "bytes": path.stat().st_size, "sha256": _sha256(path)})
        info = {**dict(provenance or {}), "shards": shards, "seed": base, "world_size": size}
        write_manifest(directory, entries, info)
    barrier()
    if not (directory / MANIFEST).exists():
        raise RuntimeError(f"rank {rank}: the manifest of {directory} was not written; rank 0 failed, see its log.")
    return directory
