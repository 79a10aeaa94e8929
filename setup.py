"""Package discovery for setuptools: ``dyaug`` and its subpackages, and ``integrations/`` installed as
``dyaug.integrations`` (everything else is in pyproject.toml)."""

from setuptools import find_packages, setup

core = find_packages(include=["dyaug", "dyaug.*"])
adapters = [f"dyaug.{name}" for name in find_packages(include=["integrations", "integrations.*"])]
setup(
    packages=core + adapters,
    package_dir={"dyaug": "dyaug", "dyaug.integrations": "integrations"},
    package_data={"dyaug": ["py.typed"], "dyaug.datasets": ["data/*.pack"], "dyaug.integrations": ["py.typed"]},
)
