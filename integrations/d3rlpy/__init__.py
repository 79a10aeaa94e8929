"""d3rlpy 2.8 adapters: conversions between :class:`dyaug.data.Transitions` and d3rlpy replay buffers, and a
replay buffer that mixes synthetic transitions into d3rlpy training."""

from dyaug.integrations.d3rlpy.buffer import SyntheticReplayBuffer
from dyaug.integrations.d3rlpy.convert import transitions_from_d3rlpy, transitions_to_d3rlpy

__all__ = ["SyntheticReplayBuffer", "transitions_from_d3rlpy", "transitions_to_d3rlpy"]
