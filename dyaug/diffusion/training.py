"""A small, resumable training loop for diffusion models (SynthER's recipe, arXiv 2303.06614 §4).

Each step draws a uniform random batch of rows of ``data`` (with replacement), minimises
``loss_fn(batch)`` with AdamW, clips the global gradient norm, steps an optional cosine decay
``lr_s = lr · (1 + cos(π s / steps)) / 2`` and updates an optional :class:`~dyaug.diffusion.ema.EMA`.
The loop owns no model-specific logic: ``loss_fn`` closes over the model (e.g.
``lambda y: edm_loss(denoiser, y)``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from dyaug.diffusion.ema import EMA
from dyaug.distributed import world
from dyaug.persistence import flatten_state, load_checkpoint, save_checkpoint, unflatten_state

CHECKPOINT_KIND = "train_state"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are SynthER's (AdamW 3e-4, betas (0.9, 0.99), clip 1, cosine, EMA).

    :param steps: number of optimizer steps.
    :param batch_size: rows per step.
    :param lr: peak learning rate (AdamW).
    :param weight_decay: AdamW decoupled weight decay.
    :param betas: AdamW betas.
    :param grad_clip: max global gradient norm, ``None`` for no clipping.
    :param cosine_decay: decay the learning rate to 0 over ``steps`` with a half cosine.
    :param ema_decay: :class:`EMA` decay, ``None`` for no EMA.
    :param ema_every: EMA update period in steps.
    :param ema_warmup: steps during which the EMA copies the weights.
    :param log_every: window (in steps) over which ``TrainResult.losses`` averages the loss.
    :param checkpoint_every: save a resumable checkpoint every this many steps (0: never).
    """

    steps: int
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0
    cosine_decay: bool = True
    ema_decay: float | None = 0.995
    ema_every: int = 10
    ema_warmup: int = 100
    log_every: int = 100
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.checkpoint_every < 0:
            raise ValueError(f"TrainConfig.checkpoint_every must be >= 0 (0 = never), got {self.checkpoint_every}.")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"TrainConfig needs lr > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None (no clipping), got {self.grad_clip}.")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """``losses``: mean loss of each ``log_every`` window (the last one may be shorter), over the whole run
    including steps done before a resume; ``steps``: steps completed; ``seconds``: wall time of this call;
    ``ema``: the EMA that was updated (``None`` without EMA)."""

    losses: list[float]
    steps: int
    seconds: float
    ema: EMA | None


def train(
    loss_fn: Callable[[Tensor], Tensor],
    model: nn.Module,
    data: Tensor,
    config: TrainConfig,
    *,
    seed: int = 0,
    ema: EMA | None = None,
    progress: bool = True,
    desc: str = "train",
    checkpoint_path: str | Path | None = None,
    identity: Mapping[str, Any] | None = None,
    callback: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model``'s parameters to minimise ``loss_fn(batch)``; see the module docstring for one step.

    :param loss_fn: maps a batch ``data[idx]`` to a scalar loss that depends on ``model``.
    :param model: the module whose trainable parameters are optimised (put in train mode).
    :param data: training rows, already on the model's device; batches index its first dimension.
    :param ema: an existing EMA to update; by default one is built from ``config.ema_*`` (``ema_decay=None``
        disables it). A given EMA must agree with ``config.ema_*``.
    :param checkpoint_path: with ``config.checkpoint_every > 0``, the file written atomically every
        ``checkpoint_every`` steps and at the end, and resumed from when it exists.
    :param identity: what else (JSON-able) a resumed run must share with the one that wrote the checkpoint besides
        ``config`` and ``seed``, e.g. the model's settings and a fingerprint of the data ``loss_fn`` reads;
        a checkpoint written with another identity raises ``ValueError``.
    :param callback: called with the number of completed steps after every ``log_every`` window (and at the end),
        e.g. to evaluate the EMA during training; it must leave the model's weights alone.

    Randomness: batch indices come from a ``torch.Generator`` and the global torch RNG (CPU and CUDA) is
    forked for the duration of the call, both seeded from ``seed``, so a ``loss_fn`` that draws its noise
    from the global RNG is reproducible too. On the CPU the same seed gives the same weights, and a resumed
    run gives the same weights as an uninterrupted one.

    Raises ``FloatingPointError`` naming the step when the loss is NaN or infinite (checked, without a
    per-step host synchronisation, at every log window and checkpoint).
    """
    device = _parameter_device(model)
    _check_data(data, device)
    if (checkpoint_path is None) != (config.checkpoint_every == 0):
        raise ValueError(
            f"checkpoint_path={checkpoint_path!r} with checkpoint_every={config.checkpoint_every}: pass both "
            "(a path and checkpoint_every > 0) to checkpoint and resume, or neither."
        )
    ema = _resolve_ema(model, config, ema)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
    rank, size = world()
    batch_seed, noise_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64))
    if rank > 0:  # each rank its own noise; rank 0 draws what a single process draws
        noise_seed = int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator(device).manual_seed(batch_seed)  # the same global batches on every rank
    log = _LossLog(config, device)
    start = time.perf_counter()
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(noise_seed)
        if cuda:
            torch.cuda.default_generators[device.index or 0].manual_seed(noise_seed)
        resumable = _Resumable(model, optimizer, scheduler, ema, generator, log)
        step = 0
        if checkpoint_path is not None and Path(checkpoint_path).exists():  # resume
            step = resumable.load(checkpoint_path, config, seed, identity)
        model.train()
        bar = tqdm(total=config.steps, initial=step, desc=desc, disable=not progress or rank > 0)
        try:
            while step < config.steps:
                # one global batch of size · batch_size rows; this rank trains on its own slice of it
                idx = torch.randint(len(data), (size * config.batch_size,), generator=generator, device=device)
                idx = idx[rank * config.batch_size : (rank + 1) * config.batch_size]
                loss = loss_fn(data[idx])
                if not isinstance(loss, Tensor) or loss.ndim != 0:
                    raise ValueError(
                        f"loss_fn must return a scalar tensor, got {_describe(loss)}; reduce it (.mean())."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update(model)
                log.add(loss.detach(), step)
                step += 1
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps:
                    bar.set_postfix(loss=f"{log.close_window():.4g}")
                    if callback is not None:
                        callback(step)
                        model.train()
                if checkpoint_path is not None and (step % config.checkpoint_every == 0 or step == config.steps):
                    log.raise_if_non_finite()
                    if rank == 0:
                        resumable.save(checkpoint_path, config, seed, step, identity)
        except RuntimeError as err:
            if size == 1 or not _peer_failure(err):
                raise
            raise RuntimeError(
                f"rank {rank} of {size}: another process of this torchrun job stopped at step {step} ({err}); "
                f"{'the last complete checkpoint is ' + str(checkpoint_path) if checkpoint_path else 'nothing saved'}. "
                "Restart the job with the same number of processes to resume."
            ) from err
        finally:
            bar.close()
    return TrainResult(losses=list(log.losses), steps=step, seconds=time.perf_counter() - start, ema=ema)


class _LossLog:
    """Loss sums kept on the device and read once per ``log_every`` window (no per-step host sync)."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.losses: list[float] = []
        self.window_sum = torch.zeros((), device=device)
        self.window_count = 0
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)

    def add(self, loss: Tensor, step: int) -> None:
        self.window_sum += loss.float()
        self.window_count += 1
        bad = ~torch.isfinite(loss) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, step, self.first_bad_step)

    def raise_if_non_finite(self) -> None:
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise FloatingPointError(
                f"the training loss became NaN or infinite at step {bad} (0-based, of {self.config.steps}); "
                "check the data for NaN/Inf, lower lr or set grad_clip."
            )

    def close_window(self) -> float:
        self.raise_if_non_finite()
        mean = float(self.window_sum) / self.window_count
        self.losses.append(mean)
        self.window_sum.zero_()
        self.window_count = 0
        return mean


@dataclasses.dataclass
class _Resumable:
    """Everything a resumed run needs to continue bit-for-bit: weights, EMA, optimizer, schedule, RNGs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    generator: torch.Generator
    log: _LossLog

    def state(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "rng_cpu": torch.get_rng_state(),
            "window_sum": self.log.window_sum,
            "first_bad_step": self.log.first_bad_step,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.generator.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.generator.device)
        return state

    def save(self, path: str | Path, config: TrainConfig, seed: int, step: int, identity: Mapping | None) -> None:
        tensors, layout = flatten_state(self.state(), "train")
        meta = {
            "kind": CHECKPOINT_KIND,
            "step": step,
            "device_type": self.generator.device.type,
            "run": _run_identity(config, seed, identity),
            "losses": self.log.losses,
            "window_count": self.log.window_count,
            "layout": layout,
        }
        save_checkpoint(path, tensors, meta)

    def load(self, path: str | Path, config: TrainConfig, seed: int, identity: Mapping | None) -> int:
        tensors, meta = load_checkpoint(path, "cpu", kind=CHECKPOINT_KIND)
        run = _run_identity(config, seed, identity)
        written, here = meta["run"].get("world_size", 1), run.get("world_size", 1)
        if written != here:
            raise ValueError(
                f"{path} was written by a job of {written} process(es) and this run has {here}: the batches would "
                f"not continue the same way. Resume with {written} process(es) (torchrun --nproc_per_node="
                f"{written}), or delete the file to start over."
            )
        if meta["run"] != run:
            raise ValueError(
                f"{path} was written by a run with other settings ({_differences(meta['run'], run)}); resume with "
                "the checkpoint's data, settings and seed, or delete the file to start over."
            )
        written_on, here = meta.get("device_type", "cpu"), self.generator.device.type
        if written_on != here:
            raise ValueError(
                f"{path} was written by a run on {written_on} and this run is on {here}: their random generators "
                f"differ (Mersenne Twister on the CPU, Philox on CUDA), so it cannot continue bit for bit. Resume on "
                f"{written_on}, or delete the file to start over on {here}."
            )
        state = unflatten_state(tensors, meta["layout"])
        if ("ema" in state) != (self.ema is not None):
            raise ValueError(f"{path} {'has' if 'ema' in state else 'lacks'} an EMA but this run does not match.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], self.generator.device)
        self.log.losses = list(meta["losses"])
        self.log.window_count = meta["window_count"]
        self.log.window_sum.copy_(state["window_sum"])
        self.log.first_bad_step.copy_(state["first_bad_step"])
        return int(meta["step"])


def _peer_failure(err: RuntimeError) -> bool:
    """Whether ``err`` is the collective-communication failure a rank sees when another process of its job stops."""
    text = str(err)
    return isinstance(err, torch.distributed.DistBackendError) or any(
        word in text for word in ("Connection reset", "Connection closed", "Broken pipe", "gloo", "NCCL")
    )


def _run_identity(config: TrainConfig, seed: int, identity: Mapping | None = None) -> dict:
    """The settings a resumed run must share with the one that wrote the checkpoint (JSON-normalised): the config
    but ``checkpoint_every``, the seed, the caller's ``identity`` and the number of processes of a torchrun job."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "checkpoint_every"}
    size = world()[1]
    extra = {"identity": dict(identity)} if identity else {}
    return json.loads(json.dumps({**fields, "seed": seed, **extra, **({"world_size": size} if size > 1 else {})}))


def _differences(written: dict, here: dict) -> str:
    """The settings on which a checkpoint's run identity and this run's differ, each with both values (the caller's
    ``identity`` key by key)."""
    parts = []
    for key in sorted(written.keys() | here.keys()):
        a, b = written.get(key), here.get(key)
        if a == b:
            continue
        if key == "identity" and isinstance(a, dict) and isinstance(b, dict):
            parts += [
                f"{k}: checkpoint {a.get(k)!r}, this run {b.get(k)!r}"
                for k in sorted(a.keys() | b.keys())
                if a.get(k) != b.get(k)
            ]
        else:
            parts.append(f"{key}: checkpoint {a!r}, this run {b!r}")
    return "; ".join(parts)


def _lr_factor(config: TrainConfig) -> Callable[[int], float]:
    if not config.cosine_decay:
        return lambda s: 1.0
    return lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, config.steps) / config.steps))


def _resolve_ema(model: nn.Module, config: TrainConfig, ema: EMA | None) -> EMA | None:
    if ema is None:
        if config.ema_decay is None:
            return None
        return EMA(model, config.ema_decay, config.ema_every, config.ema_warmup)
    given = (ema.decay, ema.update_every, ema.warmup_steps)
    wanted = (config.ema_decay, config.ema_every, config.ema_warmup)
    if given != wanted:
        raise ValueError(
            f"the EMA passed to train has (decay, update_every, warmup_steps)={given} but config asks for "
            f"{wanted}; build the EMA from the config or set config.ema_* to match."
        )
    return ema


def _parameter_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        if p.requires_grad:
            return p.device
    raise ValueError(f"{type(model).__name__} has no trainable parameters; nothing to train.")


def _check_data(data: Tensor, device: torch.device) -> None:
    if not isinstance(data, Tensor) or not data.is_floating_point():
        raise TypeError(f"data must be a floating-point tensor of rows, got {_describe(data)}; convert it.")
    if data.ndim < 2 or len(data) == 0:
        raise ValueError(f"data must hold rows of shape (N, ...) with N >= 1, got {_describe(data)}.")
    if data.device != device:
        raise ValueError(f"data is on {data.device} but the model on {device}; move it with data.to({str(device)!r}).")


def _describe(obj: object) -> str:
    return f"a tensor of shape {tuple(obj.shape)}" if isinstance(obj, Tensor) else type(obj).__name__
