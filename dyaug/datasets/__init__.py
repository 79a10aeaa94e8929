"""D4RL-style datasets forged locally from Gymnasium MuJoCo v5 environments, stored with Minari.

>>> import dyaug.datasets
>>> ds = dyaug.datasets.load("hopper/medium")          # forges on first use, then loads from the store
>>> ds = dyaug.datasets.forge("walker2d", "expert", budget="tiny")
"""

from dyaug.datasets.catalog import BUDGETS, ENVS, LEVELS, ForgeBudget, dataset_id, parse_dataset_id
from dyaug.datasets.forge import forge, forgeable_names, list_datasets, load

__all__ = [
    "BUDGETS",
    "ENVS",
    "LEVELS",
    "ForgeBudget",
    "dataset_id",
    "forge",
    "forgeable_names",
    "list_datasets",
    "load",
    "parse_dataset_id",
]
