"""d3rlpy 2.8 adapters: conversions between :class:`dyaug.data.Transitions` and d3rlpy replay buffers."""

from dyaug.integrations.d3rlpy.convert import transitions_from_d3rlpy, transitions_to_d3rlpy

__all__ = ["transitions_from_d3rlpy", "transitions_to_d3rlpy"]
