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
        if key not in out:
            if is_open:
                out[key] = copy.deepcopy(value)
                continue
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


def set_dotted(assignment: str) -> dict:
    """Turns one ``a.b.c=value`` assignment into a nested override dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    dotted, text = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    nested: Any = parse_value(text)
    for k in reversed(keys):
        nested = {k: nested}
    return nested


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


def resolve(defaults: Mapping, config: Mapping | None = None,
            assignments: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults, then the config, then each ``--set`` assignment, all validated."""
    cfg = merge(defaults, config or {})
    for a in assignments:
        override = set_dotted(a)
        keys, value = _path_and_value(override)
        target = defaults
        for k in keys:
            target = target.get(k) if isinstance(target, Mapping) else None
        if isinstance(value, Mapping) and isinstance(target, Mapping) and target.get(OPEN):
            # Assigning a whole free-form dict replaces it: `--set aggregator.kwargs={}`.
            node = cfg
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = copy.deepcopy(dict(value))
            continue
        cfg = merge(_reopen(defaults, cfg), override)
    return _strip_open(cfg)


def _path_and_value(nested: Mapping):
    keys = []
    while isinstance(nested, Mapping) and len(nested) == 1:
        (k, v), = nested.items()
        keys.append(k)
        if not isinstance(v, Mapping) or len(v) != 1:
            return keys, v
        nested = v
    return keys, nested


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
