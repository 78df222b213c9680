"""Every module that registers a component — a data set, model or likelihood head, a world,
a video metric — is found and imported here: :func:`register_all` walks the packages that
hold components (:data:`PACKAGES`) and imports each module in them, so a new module
registers itself by being there. ``tests/test_components.py`` checks that every module
which registers something lies under one of these packages.

The imports are made by name (``importlib``), not by ``import`` statements: the run config
(:mod:`seqvae.config`), which needs the registries filled, does not thereby sit above the
worlds in the layering (``pyproject.toml``'s import contracts)."""
from __future__ import annotations

import importlib
import pkgutil

PACKAGES = ("seqvae.likelihoods", "seqvae.models", "seqvae.data", "seqvae.worlds")


def component_modules() -> list[str]:
    """The names of every module in :data:`PACKAGES` (subpackages included), sorted."""
    names = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")]
    return sorted(names)


def register_all() -> None:
    """Import every component module (once; later calls cost a dictionary lookup each)."""
    for name in component_modules():
        importlib.import_module(name)
