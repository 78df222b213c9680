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
class Entry(Generic[T]):
    config_class: type
    factory: Callable[..., T]


class Registry(Generic[T]):
    """A name -> (config class, factory) table for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config_class: type) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(config_class, factory)
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

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> T:
        return self.entry(cfg.name).factory(cfg, *args, **kwargs)


LIKELIHOODS: Registry = Registry("likelihood")
MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("data set")
