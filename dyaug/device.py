"""Device and precision settings shared by every model in dyaug.

Precision ``"auto"`` is chosen by measurement, never by rule: whether bf16 matrix products beat fp32 depends on
the chip (a GPU with tensor cores, a CPU with AMX or AVX-512 bf16: yes; a CPU that emulates bf16: no), and the
development machines alone have measured both. The first time a process needs the choice for a device and a
network width, :func:`resolve_precision` times a few products of that width in both precisions (a few hundred
milliseconds), keeps the faster one for the rest of the process and logs it.

On a CPU the products run on one torch thread and are timed by that thread's CPU time, so a busy machine cannot
flip the choice: timed by the wall clock on two threads, with two other jobs on a 2-core EPYC, an fp32 product of
width 64 took 16 ms instead of 0.12 (the OpenMP barrier waits for a thread the scheduler has parked) and the
process chose bf16, which computes 46x slower there.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

Precision = Literal["auto", "fp32", "bf16"]
ComputePrecision = Literal["fp32", "bf16"]
_LOG = logging.getLogger("dyaug")
_CHOICES: dict[tuple[str, int], tuple[ComputePrecision, float, float]] = {}
_THREAD_CLOCK_IS_FINE = time.get_clock_info("thread_time").resolution <= 1e-6


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; anything else is passed to :class:`torch.device`.

    Raises ``ValueError`` when CUDA is asked for but not available (no silent fallback).
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA but torch sees no GPU; pass device='cpu' or 'auto'.")
    return resolved


CompileMode = Literal["default", "reduce-overhead", "max-autotune"]


class Compiled(nn.Module):
    """``torch.compile`` of a module, with a clear fallback: if compiling or running the compiled graph fails (no
    C++ compiler, an unsupported operation), it warns once, naming the error, and runs the module itself from
    then on. The module's parameters stay the wrapped module's own (``state_dict`` keys unchanged)."""

    def __init__(self, module: nn.Module, mode: CompileMode) -> None:
        super().__init__()
        self.module = module
        self.mode = mode
        self._compiled: Callable[..., object] | None = torch.compile(module, mode=mode)

    def forward(self, *args: object, **kwargs: object) -> object:
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as err:
                self._compiled = None
                warnings.warn(
                    f"torch.compile(mode={self.mode!r}) failed ({type(err).__name__}: {str(err)[:200]}); running the "
                    "network uncompiled. Set compile=None to silence this.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.module(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict:  # type: ignore[override]
        return self.module.state_dict(*args, **kwargs)


def maybe_compiled(module: nn.Module, mode: CompileMode | None) -> nn.Module:
    """``module`` compiled with ``mode`` (:class:`Compiled`; ``"reduce-overhead"`` uses CUDA graphs on a GPU, for
    small-batch loops), or ``module`` itself for ``None``."""
    if mode is None:
        return module
    if mode not in ("default", "reduce-overhead", "max-autotune"):
        raise ValueError(f"compile must be None, 'default', 'reduce-overhead' or 'max-autotune', got {mode!r}.")
    return Compiled(module, mode)


def model_device(model: object) -> torch.device | None:
    """Where ``model`` computes: its ``device`` attribute, else the device of the first parameter of the model or
    of its ``network``; ``None`` for a plain function (which follows its inputs)."""
    device = getattr(model, "device", None)
    if device is not None:
        return torch.device(device)
    for module in (model, getattr(model, "network", None)):
        if isinstance(module, nn.Module):
            for parameter in module.parameters():
                return parameter.device
    return None


def check_same_device(models: dict[str, object], device: torch.device, owner: str) -> None:
    """``ValueError`` naming the fix when a model of ``models`` (by name) computes on another device than ``device``."""
    for name, model in models.items():
        found = model_device(model)
        if found is not None and not same_device(found, device):
            raise ValueError(
                f"the {name} model is on {found} but this {owner} runs on {device}; load it there (e.g. "
                f"DynamicsEnsemble.load(path, device={str(device)!r})) or create the {owner} with "
                f"device={str(found)!r}."
            )


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Whether two devices are one (``cuda`` and ``cuda:0`` are, with one current device)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def autocast(device: torch.device, precision: ComputePrecision) -> torch.autocast:
    """Autocast context for network evaluations: bf16 matrix products, fp32 everywhere else.

    ``precision="fp32"`` returns a disabled context, so callers can always write ``with autocast(...)``;
    resolve ``"auto"`` first with :func:`resolve_precision`.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16' here, got {precision!r}; resolve 'auto' first.")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def resolve_precision(precision: Precision, device: torch.device | str, *, width: int = 1024) -> ComputePrecision:
    """``precision`` itself when it is ``"fp32"`` or ``"bf16"``; for ``"auto"``, the faster of the two for
    products of ``width`` x ``width`` matrices on ``device``, measured once per process, device and width
    (:func:`precision_timings` tells what was measured)."""
    if precision in ("fp32", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}.")
    device = torch.device(device)
    width = max(16, min(int(width), 4096))
    key = (str(device), width)
    if key not in _CHOICES:
        fp32_s, bf16_s = _matmul_seconds(device, width)
        choice: ComputePrecision = "bf16" if bf16_s < fp32_s else "fp32"
        _CHOICES[key] = (choice, fp32_s, bf16_s)
        _LOG.info(
            "dyaug precision='auto' on %s (width %d): %s (fp32 %.2f ms, bf16 %.2f ms per product)",
            device, width, choice, 1e3 * fp32_s, 1e3 * bf16_s,
        )  # fmt: skip
    return _CHOICES[key][0]


def precision_timings() -> dict[str, dict[str, float | str]]:
    """What ``precision="auto"`` measured and chose in this process, keyed ``"<device> width <w>"``."""
    return {
        f"{device} width {width}": {"choice": choice, "fp32_ms": 1e3 * fp32_s, "bf16_ms": 1e3 * bf16_s}
        for (device, width), (choice, fp32_s, bf16_s) in _CHOICES.items()
    }


def network_width(net: nn.Module) -> int:
    """The widest linear or convolution layer of ``net`` (its cost grows with the square of it)."""
    widths = [
        max(m.in_features, m.out_features) if isinstance(m, nn.Linear) else max(m.in_channels, m.out_channels)
        for m in net.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d))
    ]
    return max(widths, default=256)


def _matmul_seconds(device: torch.device, width: int) -> tuple[float, float]:
    """Median seconds of one ``(rows x width) @ (width x width)`` product in fp32 and under bf16 autocast, rows
    chosen for about 0.27 GFLOP per product on a CPU (a few ms) and 8192 on a GPU. A bf16 product whose first two
    runs each take over 4x the fp32 median (CPUs that emulate bf16 run 10-300x slower) is not timed further.
    On a CPU: one torch thread, timed by its CPU time (the thread count is restored after)."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _matmul_seconds_here(device, width)
        finally:
            torch.set_num_threads(threads)
    return _matmul_seconds_here(device, width)


def _matmul_seconds_here(device: torch.device, width: int) -> tuple[float, float]:
    generator = torch.Generator(device).manual_seed(0)
    rows = 8192 if device.type == "cuda" else max(32, min(2048, 2**27 // width**2))
    a = torch.randn(rows, width, device=device, generator=generator)
    b = torch.randn(width, width, device=device, generator=generator)

    def timed(precision: ComputePrecision, give_up_s: float) -> float:
        def product() -> None:
            with torch.no_grad(), autocast(device, precision):
                a @ b

        return _median_seconds(product, device, budget_s=0.1, give_up_s=give_up_s)

    fp32_s = timed("fp32", float("inf"))
    return fp32_s, timed("bf16", 4 * fp32_s + 1e-3)


def _median_seconds(fn: Callable[[], None], device: torch.device, budget_s: float, give_up_s: float) -> float:
    """Median seconds of ``fn``: on CUDA by the wall clock after a synchronisation, on a CPU by the calling
    thread's CPU time (time spent waiting for the core, while other processes run, does not count), unless that
    clock is coarse (Windows: about 16 ms, longer than the products), where the wall clock is used."""
    clock = time.thread_time if device.type == "cpu" and _THREAD_CLOCK_IS_FINE else time.perf_counter

    def run() -> float:
        start = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - start

    first = run()  # warm-up (kernels load, caches fill)
    if first > give_up_s:  # a second, warm run decides: the first may carry one-off costs (kernel JIT, page faults)
        second = run()
        if second > give_up_s:
            return second
    times: list[float] = []
    while (sum(times) < budget_s and len(times) < 50) or len(times) < 3:
        times.append(run())
    return sorted(times)[len(times) // 2]
