"""Package-level promises: ``import dyaug`` stays light, only ``dyaug.integrations`` imports d3rlpy or SB3."""

from __future__ import annotations

import subprocess
import sys

_LIBRARIES = ("d3rlpy", "stable_baselines3", "minari")


def _loaded_after(statement: str) -> list[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(m for m in {_LIBRARIES!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1].split() if out.strip() else []


def test_import_dyaug_loads_no_rl_library() -> None:
    assert _loaded_after("import dyaug") == []


def test_only_the_integrations_import_d3rlpy_or_sb3() -> None:
    modules = (
        "dyaug.data",
        "dyaug.datasets",
        "dyaug.diffusion",
        "dyaug.metrics",
        "dyaug.synther",
        "dyaug.cli",
        "dyaug.demo",
    )
    assert not {"d3rlpy", "stable_baselines3"} & set(_loaded_after(f"import {', '.join(modules)}"))
