"""Packages whose names load on first use: ``import mechscope`` (and so the ``mechscope`` command's
start, its ``--help``) imports neither torch nor transformers until something needs them."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, Callable


def exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package``. ``names``: {name: ".module:attribute"} for a
    name defined in a module of the package, {name: ".module"} for a submodule; each is imported when
    first read, then kept in the package's namespace. Any other submodule is an attribute too, as in an
    eager package (``mechscope.models.tiny``)."""

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                where = f".{name}"
            else:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        value = importlib.import_module(module, package)
        if attribute:
            value = getattr(value, attribute)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
