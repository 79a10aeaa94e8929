"""SynthER (Lu et al. 2023, arXiv 2303.06614): synthetic transitions from a diffusion model of RL data."""

from dyaug.synther.config import PRESETS, SynthERConfig
from dyaug.synther.generator import FittedModel, SampleStats, SynthER
from dyaug.synther.rows import DataRange, RowLayout

__all__ = ["PRESETS", "DataRange", "FittedModel", "RowLayout", "SampleStats", "SynthER", "SynthERConfig"]
