"""Device and precision settings shared by every model in dyaug."""

from __future__ import annotations

from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]


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


def autocast(device: torch.device, precision: Precision) -> torch.autocast:
    """Autocast context for network evaluations: bf16 matrix products, fp32 everywhere else.

    ``precision="fp32"`` returns a disabled context, so callers can always write ``with autocast(...)``.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}.")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
