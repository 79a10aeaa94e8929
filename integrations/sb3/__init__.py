"""Stable-Baselines3 2.9 adapters: conversion of SB3 replay buffers to :class:`dyaug.data.Transitions`."""

from dyaug.integrations.sb3.convert import transitions_from_sb3

__all__ = ["transitions_from_sb3"]
