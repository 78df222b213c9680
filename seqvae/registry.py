"""Small name -> (config dataclass, factory) registries for data sets, models and heads.

Each component registers itself next to its own code::

    @LIKELIHOODS.register("shared_sigma", SharedSigmaConfig)
    def build_shared_sigma(cfg: SharedSigmaConfig) -> LikelihoodHead: ...

The run config names a component by ``name``; the registry supplies the typed config
class used to validate that component's keys, and the factory that builds it. The
registered names double as the CLI's ``choices``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass
class ComponentConfig:
    """Base of every registered component config: ``name`` picks the registry entry."""

    name: str


def require_at_least(config: Any, section: str, minimum: float, *keys: str) -> None:
    """For a config's ``__post_init__``: raise ``ValueError`` naming ``section.key`` for the
    first of ``keys`` whose value is below ``minimum`` (the config system reports it as a
    ConfigError, e.g. ``model.latent_dim must be at least 1, got 0``)."""
    for key in keys:
        value = getattr(config, key)
        if value is not None and value < minimum:
            raise ValueError(f"{section}.{key} must be at least {minimum}, got {value}")


@dataclass
class Entry(Generic[T]):
    config_class: type
    factory: Callable[..., T]
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # older config layouts -> current


class Registry(Generic[T]):
    """A name -> (config class, factory) table for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_class: type,
                 upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register ``factory`` under ``name`` with its typed config class; ``upgrade`` maps a
        raw mapping of an older layout of that config (e.g. from an old checkpoint) to the
        current one before it is validated."""
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(config_class, factory, upgrade)
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}")
        return self._entries[name]

    def config_class(self, name: str) -> type:
        return self.entry(name).config_class

    def upgrade(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` in the current layout of its entry's config (unchanged if it already is)."""
        entry = self.entry(raw["name"])
        return entry.upgrade(raw) if entry.upgrade is not None else raw

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> T:
        return self.entry(cfg.name).factory(cfg, *args, **kwargs)


LIKELIHOODS: Registry = Registry("likelihood")
MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("data set")


# Video metrics a data set adds to the standard evaluation, by data set name: each entry
# is a zero-argument factory of an object with ``update(batch, samples, n_ctx, n_future)``
# and ``summary() -> dict`` (see :mod:`seqvae.evaluation.video`).
VIDEO_METRICS: dict[str, list[Callable[[], Any]]] = {}


def register_video_metric(data_name: str, factory: Callable[[], Any]) -> None:
    """Add ``factory`` to the video metrics of data set ``data_name``."""
    VIDEO_METRICS.setdefault(data_name, []).append(factory)


def video_metrics_for(data_name: str) -> list[Any]:
    """Fresh instances of the extra video metrics registered for ``data_name``."""
    return [factory() for factory in VIDEO_METRICS.get(data_name, [])]


# Worlds that can be planned in (``seqvae plan world=NAME``): each entry is a
# :class:`seqvae.control.environment.PlanningWorld` (environment, costs, data set name).
WORLDS: dict[str, Any] = {}


def register_world(world: Any) -> None:
    """Add a planning world (a :class:`~seqvae.control.environment.PlanningWorld`) under its name."""
    if world.name in WORLDS:
        raise ValueError(f"world {world.name!r} is registered twice")
    WORLDS[world.name] = world


def world(name: str) -> Any:
    """The planning world ``name``; an unknown name is a ``ValueError`` naming the known ones."""
    if name not in WORLDS:
        close = difflib.get_close_matches(name, sorted(WORLDS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown world {name!r}.{hint} Known: {', '.join(sorted(WORLDS))}")
    return WORLDS[name]
