"""Names in configs -> factories, resolved in one place, and which of a
factory's arguments are *values*.

Every selectable thing (a data set, a partitioner, a model, an optimizer, an
aggregation rule, a pre-aggregator, a transform, an attack) is a factory that
its sub-package exports under a public name. :func:`get` resolves a config's
name to the factory, with one error style for all kinds, and :func:`names`
lists them (``fljax list``).

A factory's arguments are either *static* (they fix shapes or code: client
counts, trim counts, names, flags) or *values* (numbers a sweep may vary
without recompiling: learning rates, clipping bounds, noise levels, attack
scales). The rule is the annotation: an argument annotated ``float`` (or
``Optional[float]``) is a value, everything else is static
(:func:`value_params`). The simulator builds every factory twice: once with
the config's Python numbers (which runs the factory's checks), and once
inside the jitted round with the values as traced scalars.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import typing
from typing import Any, Callable

# kind -> (module, attribute holding the names: a tuple of exported names or a
# dict name -> factory).
_KINDS = {
    "dataset": ("fljax.data", "DATASETS"),
    "partition": ("fljax.data.partition", "PARTITIONERS"),
    "model": ("fljax.models", "MODELS"),
    "aggregator": ("fljax.aggregators", "RULES"),
    "pre_aggregator": ("fljax.aggregators", "PRE_AGGREGATORS"),
    "transform": ("fljax.transforms", "TRANSFORMS"),
    "attack": ("fljax.attacks", "ATTACKS"),
    "leakage": ("fljax.attacks.leakage", "ATTACKS"),
}

OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad", "yogi", "rmsprop", "adamw")


def _table(kind: str) -> dict[str, Any]:
    if kind == "optimizer":
        return {name: name for name in OPTIMIZERS}
    module_name, attr = _KINDS[kind]
    module = importlib.import_module(module_name)
    entries = getattr(module, attr, ())
    if isinstance(entries, dict):
        return dict(entries)
    return {name: getattr(module, name, name) for name in entries}


def kinds() -> tuple[str, ...]:
    return tuple(_KINDS) + ("optimizer",)


def names(kind: str) -> tuple[str, ...]:
    """The names a config may give for ``kind``, sorted."""
    return tuple(sorted(_table(kind)))


def get(kind: str, name: str, path: str) -> Callable:
    """The factory called ``name``; a ``ConfigError`` naming ``path`` and the
    allowed names otherwise."""
    from fljax.config import ConfigError

    table = _table(kind)
    if not isinstance(name, str) or name not in table:
        raise ConfigError(f"config field '{path}' = {name!r} is not known; allowed values: "
                          f"{', '.join(sorted(table))}")
    return table[name]


def summary(kind: str) -> list[tuple[str, str]]:
    """``(name, the first sentence of its docstring)`` for every entry of ``kind``."""
    out = []
    for name, factory in sorted(_table(kind).items()):
        if kind == "optimizer":
            import optax

            factory = getattr(optax, "sgd" if name == "momentum" else name)
        doc = inspect.getdoc(factory) if callable(factory) else None
        if kind == "dataset" and not callable(factory):
            from fljax.data import DESCRIPTIONS

            doc = DESCRIPTIONS[name]
        para = " ".join((doc or "").strip().split("\n\n")[0].split())
        first = re.split(r"\.\s+(?=[A-Z])", para)[0].rstrip(".")  # not at "i.i.d. ``N``"
        if kind == "optimizer" and name == "momentum":
            first = "SGD with momentum 0.9 (optax.sgd(momentum=0.9))"
        out.append((name, first[:100] + ("..." if len(first) > 100 else "")))
    return out


def _is_float_hint(hint) -> bool:
    """``float``, ``Optional[float]`` or ``float | None``."""
    import types

    if hint is float:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args == [float]
    return False


@functools.lru_cache(maxsize=None)
def value_params(factory: Callable) -> frozenset[str]:
    """The arguments of ``factory`` annotated ``float`` (or ``Optional[float]``),
    except those annotated :data:`fljax.types.StaticFloat`."""
    try:
        hints = typing.get_type_hints(factory, include_extras=True)
    except Exception:  # unresolvable annotations: treat everything as static
        return frozenset()
    out = set()
    for k, h in hints.items():
        if k == "return":
            continue
        if typing.get_origin(h) is typing.Annotated:
            if "static" in h.__metadata__:
                continue
            h = typing.get_args(h)[0]
        if _is_float_hint(h):
            out.add(k)
    return frozenset(out)


def split_kwargs(factory: Callable, kwargs: dict) -> tuple[dict, dict]:
    """``(static, values)``: numeric arguments annotated ``float`` go to ``values``
    (as Python floats), everything else (and ``None``) stays static."""
    vp = value_params(factory)
    static, values = {}, {}
    for k, v in kwargs.items():
        if k in vp and isinstance(v, (int, float)) and not isinstance(v, bool):
            values[k] = float(v)
        else:
            static[k] = v
    return static, values


def freeze(obj: Any) -> Any:
    """A hashable copy of nested dicts / lists (for static parts of a spec)."""
    if isinstance(obj, dict):
        return tuple(sorted((k, freeze(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return tuple(freeze(v) for v in obj)
    if callable(obj):
        return ("<callable>", getattr(obj, "__module__", ""), getattr(obj, "__qualname__", repr(obj)))
    return obj
