"""Denoiser networks: ``net(x, noise_level, cond=None) -> tensor shaped like x``."""

from dyaug.diffusion.networks.ln_resnet import LNResNet
from dyaug.diffusion.networks.mlp import DQLMLP
from dyaug.diffusion.networks.residual_mlp import ResidualMLP
from dyaug.diffusion.networks.temporal_unet import TemporalUNet1d

__all__ = ["DQLMLP", "LNResNet", "ResidualMLP", "TemporalUNet1d"]
