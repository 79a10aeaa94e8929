"""Stable-Baselines3 2.9 adapters: conversion of SB3 replay buffers to :class:`dyaug.data.Transitions`, a replay
buffer that mixes synthetic transitions into SB3 batches, and the online SynthER callback."""

from dyaug.integrations.sb3.buffer import SyntheticReplayBuffer, scale_sb3_actions
from dyaug.integrations.sb3.callbacks import SynthERCallback
from dyaug.integrations.sb3.convert import transitions_from_sb3, unscale_sb3_actions

__all__ = [
    "SynthERCallback",
    "SyntheticReplayBuffer",
    "scale_sb3_actions",
    "transitions_from_sb3",
    "unscale_sb3_actions",
]
