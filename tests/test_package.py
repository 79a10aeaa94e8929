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
        "dyaug.dydiff",
        "dyaug.models",
        "dyaug.actors",
        "dyaug.envs",
        "dyaug.integrations.cli",
    )
    assert not {"d3rlpy", "stable_baselines3"} & set(_loaded_after(f"import {', '.join(modules)}"))


def test_the_core_names_the_adapters_in_one_dispatch_module_only() -> None:
    """The core never imports ``dyaug.integrations``: one table in ``dyaug.data.coerce`` names the adapters and
    imports them when an object of their library arrives."""
    from pathlib import Path

    import dyaug

    root = Path(dyaug.__file__).parent
    naming = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "dyaug.integrations" in p.read_text())
    assert naming == ["data/coerce.py"], naming
