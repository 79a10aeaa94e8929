"""dyaug: diffusion models for the RL stacks people already use (d3rlpy, Stable-Baselines3, Minari).

``import dyaug`` never imports d3rlpy or Stable-Baselines3; only the integrations (``integrations/``) do.
"""

from dyaug.data import Transitions
from dyaug.dydiff import DyDiff, DyDiffConfig
from dyaug.synther import SynthER, SynthERConfig

__version__ = "0.1.0"
__all__ = ["DyDiff", "DyDiffConfig", "SynthER", "SynthERConfig", "Transitions", "__version__"]
