"""Bindings of dyaug to other RL libraries, installed as ``dyaug.integrations``.

Only these modules import d3rlpy or Stable-Baselines3; ``import dyaug`` imports neither.
"""
