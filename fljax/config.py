"""Configs as Python: nested dicts checked against a schema of defaults.

An experiment config is a Python file with ``get_config()`` returning a
(nested) ``dict``. It is merged onto the defaults of the command that runs it
(``fljax.simulate.DEFAULTS`` for ``fljax run``, ``fljax.leak.DEFAULTS`` for
``fljax leak``): every key must exist in the defaults, and every value must have
the default's type, so a typo fails before any work with a message naming the
field. ``--set a.b=value`` overrides one field by its dotted name; the value is
parsed as a Python literal (``3``, ``0.5``, ``'krum'``, ``[1, 2]``, ``None``)
and taken as a string where it is not one.

A dict-valued field whose default is marked open with the key ``"*": True``
(for example an aggregator's keyword arguments) accepts any keys.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import os
from typing import Any, Mapping

OPEN = "*"  # a key marking a dict field as free-form (keyword arguments).


class ConfigError(ValueError):
    """A config field is unknown or has a bad value."""


def _type_name(value) -> str:
    return type(value).__name__


def _check_value(path: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config field '{path}' must be true/false (bool), got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config field '{path}' must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"config field '{path}' must be an integer, got {value!r}")
        return int(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"config field '{path}' must be a string, got {value!r}")
        return value
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{path}' must be a list, got {value!r}")
        return list(value)
    return value


def merge(defaults: Mapping, overrides: Mapping, prefix: str = "") -> dict:
    """Returns ``defaults`` updated by ``overrides``; unknown keys raise ``ConfigError``."""
    out = copy.deepcopy(dict(defaults))
    is_open = bool(out.pop(OPEN, False))
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if is_open:  # free-form (keyword arguments): any key, any value
            out[key] = copy.deepcopy(value)
            continue
        if key not in out:
            known = ", ".join(sorted(k for k in out if k != OPEN))
            raise ConfigError(f"unknown config field '{path}'; known fields here: {known}")
        default = out[key]
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config field '{path}' must be a dict, got {value!r}")
            out[key] = merge(default, value, path + ".")
        else:
            out[key] = _check_value(path, default, value)
    return out


def _strip_open(cfg):
    if isinstance(cfg, dict):
        return {k: _strip_open(v) for k, v in cfg.items() if k != OPEN}
    return cfg


def parse_value(text: str) -> Any:
    """Parses ``--set`` text as a Python literal, else returns it as a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if text.strip() in ("None", "null"):  # lower-case 'none' stays a name
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_file(path: str) -> dict:
    """Imports a config file and returns ``get_config()`` as a dict.

    Every way the file can fail to give a config raises a one-line
    :class:`ConfigError` naming the file: missing, a directory, a syntax error
    (with its line number), an exception while importing it or inside
    ``get_config()`` (its type, message and the file's line it came from),
    no ``get_config``, or a result that is not a dict.
    """
    shown = repr(path)
    if not os.path.exists(path):
        raise ConfigError(f"config file {shown} not found")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {shown} is not a file")
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"fljax_config_{name}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"config file {shown} is not a Python file (it must end in .py)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:  # IndentationError included
        where = f" at line {e.lineno}" if e.lineno else ""
        raise ConfigError(f"config file {shown} has a syntax error{where}: "
                          f"{_one_line(e.msg)}") from None
    except Exception as e:  # noqa: BLE001 - any error of user code becomes one line
        raise ConfigError(f"config file {shown} failed to import: {type(e).__name__}"
                          f"{_raised_at(e, path)}: {_one_line(str(e))}") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {shown} defines no get_config()")
    try:
        cfg = get_config()
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"config file {shown}: get_config() raised {type(e).__name__}"
                          f"{_raised_at(e, path)}: {_one_line(str(e))}") from None
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config file {shown}: get_config() must return a dict, "
                          f"got {type(cfg).__name__} {_one_line(repr(cfg), 60)}")
    return dict(cfg)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _raised_at(error: BaseException, path: str) -> str:
    """`` at line N`` for the deepest traceback frame in ``path`` ('' if none)."""
    line = None
    tb = error.__traceback__
    target = os.path.abspath(path)
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == target:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


def parse_assignment(assignment: str) -> tuple[list[str], Any]:
    """``'a.b.c=value'`` -> ``(['a', 'b', 'c'], parsed value)``."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    dotted, text = assignment.split("=", 1)
    keys = [k for k in dotted.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"--set: bad field name {dotted!r}")
    return keys, parse_value(text)


def _default_at(defaults: Mapping, keys: list[str]):
    node: Any = defaults
    for k in keys:
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return node


def assign(defaults: Mapping, cfg: Mapping, assignment: str) -> dict:
    """``cfg`` with one ``--set key=value`` applied and validated (see :func:`assign_value`)."""
    keys, value = parse_assignment(assignment)
    return assign_value(defaults, cfg, keys, value)


def assign_value(defaults: Mapping, cfg: Mapping, keys: list[str], value: Any) -> dict:
    """``cfg`` with the field at ``keys`` set to ``value``, validated.

    A dict value always *replaces* the field it is assigned to (the fields it
    does not name go back to their defaults, and a free-form dict such as
    ``aggregator.kwargs`` becomes exactly the dict); any other value replaces
    one leaf.
    """
    cfg = copy.deepcopy(dict(cfg))
    if isinstance(value, Mapping):
        node = cfg
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, Mapping) else None
        if isinstance(node, dict) and keys[-1] in node:
            default = _default_at(defaults, keys)
            if isinstance(default, Mapping) and not default.get(OPEN):
                node[keys[-1]] = _strip_open(copy.deepcopy(dict(default)))
            else:
                node[keys[-1]] = {}
    nested: Any = value
    for k in reversed(keys):
        nested = {k: nested}
    return _strip_open(merge(_reopen(defaults, cfg), nested))


def resolve(defaults: Mapping, config: Mapping | None = None,
            assignments: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults, then the config, then each ``--set`` assignment, all validated."""
    cfg = _strip_open(merge(defaults, config or {}))
    for a in assignments:
        cfg = assign(defaults, cfg, a)
    return cfg


def _reopen(defaults: Mapping, cfg: Mapping) -> dict:
    """``cfg`` with the open-dict markers of ``defaults`` put back."""
    out = {}
    for k, v in cfg.items():
        d = defaults.get(k) if isinstance(defaults, Mapping) else None
        if isinstance(v, Mapping) and isinstance(d, Mapping):
            out[k] = _reopen(d, v)
        else:
            out[k] = v
    if isinstance(defaults, Mapping) and defaults.get(OPEN):
        out[OPEN] = True
    return out


def choice(path: str, value: str, allowed) -> str:
    """Checks a name against the allowed names, with a clear error."""
    allowed = sorted(allowed)
    if value not in allowed:
        raise ConfigError(f"config field '{path}' = {value!r} is not known; "
                          f"allowed values: {', '.join(allowed)}")
    return value
