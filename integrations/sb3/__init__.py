"""Stable-Baselines3 2.9 adapters: conversion of SB3 replay buffers to :class:`dyaug.data.Transitions`, a replay
buffer that mixes synthetic transitions into SB3 batches, the online SynthER and DyDiff callbacks, and the diffusion
actors: Diffusion-QL's actor as a TD3 policy with its own TD3 trainer, and d3rlpy's Diffusion-QL and SRPO as SB3
models for online fine-tuning."""

from dyaug.integrations.sb3.buffer import SyntheticReplayBuffer, scale_sb3_actions
from dyaug.integrations.sb3.callbacks import SynthERCallback
from dyaug.integrations.sb3.convert import transitions_from_sb3, unscale_sb3_actions
from dyaug.integrations.sb3.diffusion_td3 import DiffusionActor, DiffusionQLTD3, DiffusionTD3Policy
from dyaug.integrations.sb3.dydiff import DyDiffCallback, SB3Policy
from dyaug.integrations.sb3.from_d3rlpy import load_diffusion_ql_into_td3, load_srpo_into_td3, td3_from_d3rlpy

__all__ = [
    "DiffusionActor",
    "DiffusionQLTD3",
    "DiffusionTD3Policy",
    "DyDiffCallback",
    "SB3Policy",
    "SynthERCallback",
    "SyntheticReplayBuffer",
    "load_diffusion_ql_into_td3",
    "load_srpo_into_td3",
    "scale_sb3_actions",
    "td3_from_d3rlpy",
    "transitions_from_sb3",
    "unscale_sb3_actions",
]
