"""D4RL-style datasets forged locally from Gymnasium MuJoCo v5 environments, stored with Minari.

>>> import dyaug.datasets
>>> ds = dyaug.datasets.load("hopper/medium")          # forges on first use, then loads from the store
>>> ds = dyaug.datasets.forge("walker2d", "expert", budget="tiny")
>>> ds = dyaug.datasets.subset("dyaug/hopper/medium-replay-v0", 0.1)   # 10% of the episodes, a new dataset
>>> dyaug.datasets.export_pack(["dyaug/hopper/medium-v0"], "hopper.dyaug-pack")   # one file; import_pack reads it
"""

from dyaug.datasets.catalog import BUDGETS, ENVS, LEVELS, ForgeBudget, dataset_id, parse_dataset_id
from dyaug.datasets.forge import forge, forgeable_names
from dyaug.datasets.packs import export_pack, import_pack
from dyaug.datasets.store import list_datasets, load, subset
from dyaug.datasets.teachers import TEACHERS

__all__ = [
    "BUDGETS",
    "ENVS",
    "LEVELS",
    "TEACHERS",
    "ForgeBudget",
    "dataset_id",
    "export_pack",
    "forge",
    "forgeable_names",
    "import_pack",
    "list_datasets",
    "load",
    "parse_dataset_id",
    "subset",
]
