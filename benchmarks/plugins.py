"""Plug-ins: models, datasets and methods from the user's own packages.

A plug-in registers its components in the same registries the built-ins use
(``benchmarks.registry.MODELS``, ``DATASETS`` and ``METHODS``), so the harness
treats them alike. It reaches the harness by one of two routes:

- a Python entry point of an installed distribution, in the group
  ``vibbench.models``, ``vibbench.datasets`` or ``vibbench.methods``. The
  entry point's value is either a module, whose import registers entries
  (``toy = "my_pkg.plugin"``), or an object, which is registered under the
  entry point's name in its group's registry unless its import already did
  (``toy_mlp = "my_pkg.models:toy_mlp"``);
- a module path in a suite file's ``plugins:`` list, imported before the
  suite's names are checked.

Every entry remembers where it came from: ``built-in``, ``entry point
"DIST"`` or ``suite plugin "MODULE"``; ``vibbench list`` shows it. A plug-in
that fails to import is logged and kept as a ``PluginFailure`` with its
error, the entries it registered before failing are removed, and the
built-ins keep working. Entry points are loaded once per process, on the
first call of ``load_plugins``.

NOTE: loading a plug-in runs its code, as any import does; a suite file's
``plugins:`` list imports the modules it names.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from benchmarks.registry import DATASETS, METHODS, MODELS, Registry, loading_origin

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUPS: dict[str, Registry] = {
    "vibbench.models": MODELS,
    "vibbench.datasets": DATASETS,
    "vibbench.methods": METHODS,
}
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class PluginError(RuntimeError):
    """A plug-in that cannot be loaded; ``str()`` names the plug-in and its error."""


@dataclass(frozen=True)
class PluginFailure:
    """A plug-in that failed to load.

    Attributes:
        name: the entry point (``group:name``) or the module path.
        origin: ``entry point "DIST"`` or ``suite plugin "MODULE"``.
        error: the exception's type and message.
    """

    name: str
    origin: str
    error: str

    def __str__(self) -> str:
        return f"{self.name} [{self.origin}]: {self.error}"


@dataclass
class _LoaderState:
    entry_points_loaded: bool = False
    failures: list[PluginFailure] = field(default_factory=list)


# Entry points are read once per process; later calls return what the first found.
_STATE = _LoaderState()


def load_builtins() -> None:
    """Import the built-in models, datasets and methods, so they register as ``built-in``."""
    import benchmarks.data  # noqa: F401
    import benchmarks.methods  # noqa: F401
    import benchmarks.models  # noqa: F401


def load_plugins() -> list[PluginFailure]:
    """Register the built-ins and every installed entry point's components; return the failures so far.

    The first call imports the entry points of the groups in
    ``ENTRY_POINT_GROUPS``; later calls only return the failures (of entry
    points and of suite plug-ins). An entry point whose import raises an
    ``Exception`` is recorded as a failure, not raised.

    Example:
        >>> failures = load_plugins()
        >>> "vibnet" in METHODS
        True
    """
    load_builtins()
    if not _STATE.entry_points_loaded:
        _STATE.entry_points_loaded = True
        for group, registry in ENTRY_POINT_GROUPS.items():
            found = sorted(importlib.metadata.entry_points(group=group), key=lambda ep: (_dist_name(ep), ep.name))
            for entry_point in found:
                _load_entry_point(group, registry, entry_point)
    return list(_STATE.failures)


def plugin_failures() -> list[PluginFailure]:
    """Return every plug-in that failed to load in this process, in load order."""
    return list(_STATE.failures)


def load_module_plugin(module_path: str) -> None:
    """Import ``module_path`` (from a suite's ``plugins:`` list) so that its entries register.

    Entries registered during the import get the origin ``suite plugin
    "MODULE"``; a module imported before keeps the entries it registered
    then. Entry points are loaded first, so a name clash is reported against
    the installed plug-in.

    Raises:
        PluginError: when the path is not a dotted module name, or the import
            fails; the failure is also logged and kept for ``vibbench list``.
    """
    load_plugins()
    if not _MODULE_PATH.fullmatch(module_path):
        raise PluginError(f"plug-in {module_path!r} is not a module path; give a dotted name such as my_pkg.my_module")

    origin = f'suite plugin "{module_path}"'
    before = _snapshot()
    try:
        with loading_origin(origin):
            importlib.import_module(module_path)
        _check_new_entries(before)
    except Exception as error:
        _rollback(before)
        hint = "; install its package or put its folder on PYTHONPATH" if isinstance(error, ModuleNotFoundError) else ""
        failure = _fail(module_path, origin, error)
        raise PluginError(f"plug-in module {module_path!r} failed to load: {failure.error}{hint}") from error
    logger.debug("suite plugin %s registered %s", module_path, _added(before) or "nothing new")


def _dist_name(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return dist.name if dist is not None else "unknown distribution"


def _load_entry_point(group: str, registry: Registry, entry_point: importlib.metadata.EntryPoint) -> None:
    name = f"{group}:{entry_point.name}"
    origin = f'entry point "{_dist_name(entry_point)}"'
    before = _snapshot()
    try:
        with loading_origin(origin):
            loaded = entry_point.load()
            if not inspect.ismodule(loaded):
                _register_object(registry, entry_point.name, loaded)
        _check_new_entries(before)
    except Exception as error:  # a broken plug-in must not stop the built-ins
        _rollback(before)
        _fail(name, origin, error)
        return
    added = _added(before)
    if not added and entry_point.name not in registry:
        logger.warning("entry point %s (%s = %s) registered nothing in the %s registry",
                       name, entry_point.name, entry_point.value, registry.kind)
    logger.debug("entry point %s registered %s", name, added or "nothing new")


def _register_object(registry: Registry, name: str, loaded: Any) -> None:
    """Register an entry point's object under its name, unless its import already did."""
    if name not in registry:
        registry.register(name)(loaded)
    elif registry.get(name) is not loaded:
        raise PluginError(f"{registry.kind} {name!r} is already registered (from {registry.origin(name)})")


def _check_new_entries(before: dict[str, set[str]]) -> None:
    """Raise ``PluginError`` for a new entry that the harness could not use."""
    from benchmarks.methods.base import PruningMethod

    for name in set(METHODS.names()) - before[METHODS.kind]:
        entry = METHODS.get(name)
        if not (inspect.isclass(entry) and issubclass(entry, PruningMethod)):
            raise PluginError(f"method {name!r} is a {type(entry).__name__}, not a subclass of PruningMethod")
    for registry in (MODELS, DATASETS):
        for name in set(registry.names()) - before[registry.kind]:
            if not callable(registry.get(name)):
                raise PluginError(f"{registry.kind} {name!r} is not callable; register a function that builds it")


def _snapshot() -> dict[str, set[str]]:
    return {registry.kind: set(registry.names()) for registry in ENTRY_POINT_GROUPS.values()}


def _added(before: dict[str, set[str]]) -> list[str]:
    return [f"{registry.kind} {name}" for registry in ENTRY_POINT_GROUPS.values()
            for name in sorted(set(registry.names()) - before[registry.kind])]


def _rollback(before: dict[str, set[str]]) -> None:
    for registry in ENTRY_POINT_GROUPS.values():
        for name in set(registry.names()) - before[registry.kind]:
            registry.unregister(name)


def _fail(name: str, origin: str, error: BaseException) -> PluginFailure:
    failure = PluginFailure(name, origin, f"{type(error).__name__}: {error}")
    _STATE.failures.append(failure)
    logger.error("plug-in %s (%s) failed to load and is skipped: %s", name, origin, failure.error)
    return failure
