"""Diffusion core: schedules and samplers apart from the networks, plus EMA, a training loop and checkpoints.

A network is any ``nn.Module`` with ``forward(x, noise_level, cond=None)``. A sampler takes a denoiser, a schedule,
a shape and an optional :class:`Condition`; it owns no optimizer and no device policy.
"""

from dyaug.diffusion.conditioning import Condition
from dyaug.diffusion.edm import EDMDenoiser, EDMSchedule, edm_loss
from dyaug.diffusion.ema import EMA
from dyaug.diffusion.networks import DQLMLP, LNResNet, ResidualMLP, TemporalUNet1d
from dyaug.diffusion.samplers import HeunSampler
from dyaug.diffusion.training import TrainConfig, TrainResult, train
from dyaug.diffusion.vp import VPSDE, DiscreteVPSchedule
from dyaug.persistence import load_checkpoint, save_checkpoint

__all__ = [
    "DQLMLP",
    "EMA",
    "VPSDE",
    "Condition",
    "DiscreteVPSchedule",
    "EDMDenoiser",
    "EDMSchedule",
    "HeunSampler",
    "LNResNet",
    "ResidualMLP",
    "TemporalUNet1d",
    "TrainConfig",
    "TrainResult",
    "edm_loss",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
