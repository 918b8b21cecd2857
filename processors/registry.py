"""Find processors: the built-in modules plus the `ccg_autopkg.processors` entry-point group."""
from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
from importlib.metadata import entry_points

from processors.base import NAME_PATTERN, Processor
from processors.errors import ProcessorNotFound

ENTRY_POINT_GROUP = "ccg_autopkg.processors"
log = logging.getLogger(__name__)


def _builtin_classes() -> list[type[Processor]]:
    import processors.builtin as package

    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Processor) and obj is not Processor and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def _entry_point_classes() -> list[type[Processor]]:
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception:  # a broken third-party plugin must not take the service down
            log.exception("cannot load processor entry point %s", ep.name)
            continue
        if inspect.isclass(obj) and issubclass(obj, Processor):
            found.append(obj)
        else:
            log.error("entry point %s is not a Processor subclass", ep.name)
    return found


class ProcessorRegistry:
    """Processors by `dataset.version` name."""

    def __init__(self, classes: list[type[Processor]]):
        self._by_name: dict[str, type[Processor]] = {}
        for cls in classes:
            if not (NAME_PATTERN.match(cls.name) and NAME_PATTERN.match(cls.version)):
                raise ValueError(f"processor {cls!r}: name and version must match {NAME_PATTERN.pattern}")
            self._by_name[cls.full_name()] = cls

    @classmethod
    def discover(cls, *, include_test_processors: bool = False) -> "ProcessorRegistry":
        """Built-ins and entry points; test processors only when asked for."""
        classes = _builtin_classes() + _entry_point_classes()
        return cls([c for c in classes if include_test_processors or not c.is_test])

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, full_name: str) -> type[Processor]:
        """The class for `dataset.version`; `ProcessorNotFound` otherwise."""
        try:
            return self._by_name[full_name]
        except KeyError:
            raise ProcessorNotFound(full_name) from None

    def datasets(self) -> dict[str, list[type[Processor]]]:
        """Processor classes grouped by dataset folder name, versions sorted."""
        grouped: dict[str, list[type[Processor]]] = {}
        for name in self.names():
            cls = self._by_name[name]
            grouped.setdefault(cls.name, []).append(cls)
        return grouped
