"""DyDiff (Zhao et al. 2024, arXiv 2405.19189): policy-consistent synthetic trajectories from a trajectory
diffusion model conditioned on the start state and the policy's actions."""

from dyaug.dydiff.config import PRESETS, DyDiffConfig
from dyaug.dydiff.filters import FILTERS, Hardmax, KeepAll, Softmax, TrajectoryFilter
from dyaug.dydiff.generator import DyDiff, FittedDyDiff, RolloutStats
from dyaug.dydiff.rollout import Dynamics, Policy, RewardFn, RolloutEngine, StateResampler, Trajectories
from dyaug.dydiff.trajectory_model import TrajectoryModel
from dyaug.dydiff.windows import WindowIndex

__all__ = [
    "FILTERS",
    "PRESETS",
    "DyDiff",
    "DyDiffConfig",
    "Dynamics",
    "FittedDyDiff",
    "Hardmax",
    "KeepAll",
    "Policy",
    "RewardFn",
    "RolloutEngine",
    "RolloutStats",
    "Softmax",
    "StateResampler",
    "Trajectories",
    "TrajectoryFilter",
    "TrajectoryModel",
    "WindowIndex",
]
