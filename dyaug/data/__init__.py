"""Data layer: :class:`Transitions`, converters, trajectory windows and normalizers."""

from dyaug.data.normalizers import MinMaxNormalizer, Normalizer, ZScoreNormalizer
from dyaug.data.transitions import Transitions
from dyaug.data.windows import TrajectoryWindows, make_windows

__all__ = [
    "MinMaxNormalizer",
    "Normalizer",
    "TrajectoryWindows",
    "Transitions",
    "ZScoreNormalizer",
    "make_windows",
]
