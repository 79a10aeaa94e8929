"""d3rlpy 2.8 adapters: conversions between :class:`dyaug.data.Transitions` and d3rlpy replay buffers, a
replay buffer that mixes synthetic transitions into d3rlpy training, DyDiff's policy-consistent augmentation of any
continuous algorithm, the diffusion actors Diffusion-QL and SRPO as d3rlpy algorithms, and a pickle-free training
state that lets any d3rlpy fit continue bit for bit in another process."""

from dyaug.integrations.d3rlpy.buffer import SyntheticReplayBuffer
from dyaug.integrations.d3rlpy.convert import transitions_from_d3rlpy, transitions_to_d3rlpy
from dyaug.integrations.d3rlpy.diffusion_ql import DiffusionQL, DiffusionQLConfig
from dyaug.integrations.d3rlpy.dydiff import D3rlpyPolicy, DyDiffAugmenter, DyDiffReplayBuffer
from dyaug.integrations.d3rlpy.srpo import SRPO, SRPOConfig
from dyaug.integrations.d3rlpy.training_state import load_training_state, save_training_state

__all__ = [
    "SRPO",
    "D3rlpyPolicy",
    "DiffusionQL",
    "DiffusionQLConfig",
    "DyDiffAugmenter",
    "DyDiffReplayBuffer",
    "SRPOConfig",
    "SyntheticReplayBuffer",
    "load_training_state",
    "save_training_state",
    "transitions_from_d3rlpy",
    "transitions_to_d3rlpy",
]
