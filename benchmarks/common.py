"""What the benchmark scripts share: where they ran, and how they time things."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def machine(device: torch.device | None = None) -> str:
    """CPU model, count and the features that decide low-precision matmul speed (AVX-512 bf16/VNNI, AMX), the
    GPU when ``device`` is CUDA, Python and torch versions, torch threads."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    found = [f for f in ("avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16") if f in flags]
    features = ", ".join(found + ([] if "amx_tile" in flags else ["no AMX"]))
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device is not None and device.type == "cuda" else ""
    return (
        f"{cpu} ({os.cpu_count()} logical CPUs; {features}){gpu}; python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, after one untimed warm-up run."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(rows: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    a = torch.randn(rows, 1024, device=device).to(dtype)
    b = torch.randn(1024, 1024, device=device).to(dtype)
    seconds = median_seconds(lambda: a @ b, device, repeats)
    return 2 * rows * 1024 * 1024 / seconds / 1e9


def flops_per_row(net: nn.Module) -> int:
    """2 FLOP per multiply-add of every Linear layer (activations and norms are not counted)."""
    return sum(2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))


def mean_spread(values: list[float], per_run: bool = False) -> str:
    """``mean ± std`` (sample standard deviation; ``-`` without values), optionally with the values in brackets."""
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    text = f"{statistics.fmean(values):.1f} ± {spread:.1f}"
    return text + (" [" + ", ".join(f"{v:.1f}" for v in values) + "]" if per_run else "")


def save_bar_chart(path, groups: dict[tuple[str, str], list[float]], ylabel: str, title: str) -> None:
    """Grouped bars of means with standard-deviation whiskers and the individual runs as dots.

    ``groups`` maps (group, arm) to run values, e.g. ("td3plusbc", "mixed") -> scores per seed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(g for g, _ in groups))
    arms = list(dict.fromkeys(a for _, a in groups))
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.2))
    for j, arm in enumerate(arms):
        for i, name in enumerate(names):
            values = groups.get((name, arm), [])
            if not values:
                continue
            x = i + (j - (len(arms) - 1) / 2) * width
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.bar(x, statistics.fmean(values), width, yerr=spread, color=f"C{j}", label=arm if i == 0 else None)
            ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
