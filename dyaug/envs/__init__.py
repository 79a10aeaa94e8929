"""Gymnasium environments served by learned models (generative simulation): train or test any Gymnasium agent
inside the dynamics ensemble or DyDiff's trajectory diffusion model fitted on a dataset."""

from dyaug.envs.config import MODES, RESET_SOURCES, LearnedEnvConfig
from dyaug.envs.continuations import ActionContinuations
from dyaug.envs.models import LearnedModels
from dyaug.envs.stepping import EnsembleNextState, LearnedMDP, NextState, WindowInpainting, uncertainty
from dyaug.envs.vector import LearnedDynamicsVectorEnv
from dyaug.envs.wrapper import LearnedDynamicsWrapper, SimulatorStub

__all__ = [
    "MODES",
    "RESET_SOURCES",
    "ActionContinuations",
    "EnsembleNextState",
    "LearnedDynamicsVectorEnv",
    "LearnedDynamicsWrapper",
    "LearnedEnvConfig",
    "LearnedMDP",
    "LearnedModels",
    "NextState",
    "SimulatorStub",
    "WindowInpainting",
    "uncertainty",
]
