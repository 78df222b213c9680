"""Registration is discovered: every module that registers a component lies where
:mod:`seqvae.components` looks, and the run config sees what each registers. (The
layering itself is checked by `lint-imports` in `make test`.)"""
from __future__ import annotations

import ast
from pathlib import Path

from seqvae import components, registry
from seqvae.config import RunConfig  # noqa: F401  (importing the config registers everything)

PACKAGE = Path(components.__file__).resolve().parent
REGISTERING = ("register", "register_world", "register_video_metric")


def registering_modules() -> dict[str, list[str]]:
    """Modules of seqvae/ that call a registration function, with what they register."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("seqvae", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        if name == "seqvae.registry":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in REGISTERING and node.args:
                    first = node.args[0]
                    label = first.value if isinstance(first, ast.Constant) else called
                    found.setdefault(name, []).append(str(label))
    return found


def test_every_registering_module_is_discovered():
    found = registering_modules()
    assert len(found) >= 12, found            # heads, models, data sets, worlds: the scan sees them
    discovered = set(components.component_modules())
    missed = sorted(set(found) - discovered)
    assert not missed, f"these modules register components but lie outside {components.PACKAGES}: {missed}"


def test_what_the_modules_register_is_registered():
    names = {*registry.LIKELIHOODS.names(), *registry.MODELS.names(), *registry.DATASETS.names(), *registry.WORLDS}
    for module, labels in registering_modules().items():
        for label in labels:
            if label not in REGISTERING:       # a literal name: it is in some registry
                assert label in names or label in registry.VIDEO_METRICS, (module, label)
    assert {"pusher", "pointmass"} <= set(registry.WORLDS)
