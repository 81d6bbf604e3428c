"""``fljax.config.load_file``: every way a config file fails is one ConfigError line naming it."""

import pytest

from fljax import config


def _write(tmp_path, text, name="cfg.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, pattern", [
    # A syntax error: the file and the line.
    ("def get_config():\n    return {'rounds': 1\n", r"cfg\.py' has a syntax error at line 2: "),
    ("def get_config():\n  return {}\n   x = 1\n", r"syntax error at line 3: unexpected indent"),
    # get_config raises: its type, the file's line it came from and its message (one line).
    ("def get_config():\n    x = 1\n    raise RuntimeError('no data\\nat all')\n",
     r"get_config\(\) raised RuntimeError at line 3: no data at all$"),
    ("def helper():\n    return 1 / 0\n\ndef get_config():\n    return {'x': helper()}\n",
     r"get_config\(\) raised ZeroDivisionError at line 2: division by zero"),
    # The import itself fails.
    ("import module_that_does_not_exist_xyz\n",
     r"failed to import: ModuleNotFoundError at line 1: No module named"),
    ("X = undefined_name\n", r"failed to import: NameError at line 1"),
    # No (callable) get_config.
    ("X = 1\n", r"defines no get_config\(\)"),
    ("get_config = {'rounds': 1}\n", r"defines no get_config\(\)"),
    # Not a dict.
    ("def get_config():\n    return [1, 2]\n", r"get_config\(\) must return a dict, got list \[1, 2\]"),
    ("def get_config():\n    pass\n", r"must return a dict, got NoneType None"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, text, pattern):
    """Catches: the unguarded ``exec_module`` / ``get_config()`` / ``dict(...)`` of
    the old loader (a traceback, or 'dict' complaining about a list)."""
    path = _write(tmp_path, text)
    with pytest.raises(config.ConfigError, match=pattern) as e:
        config.load_file(path)
    message = str(e.value)
    assert "\n" not in message and repr(path) in message
    # No chained traceback of the config's own error behind the line.
    assert e.value.__cause__ is None
    assert e.value.__context__ is None or e.value.__suppress_context__


def test_missing_directory_and_not_python(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load_file(str(tmp_path / "nope.py"))
    with pytest.raises(config.ConfigError, match="is not a file"):
        config.load_file(str(tmp_path))
    with pytest.raises(config.ConfigError, match="not a Python file"):
        config.load_file(_write(tmp_path, "rounds: 1\n", name="cfg.yaml"))


def test_a_good_config_file_loads(tmp_path):
    path = _write(tmp_path, "def get_config():\n    return {'rounds': 3}\n")
    assert config.load_file(path) == {"rounds": 3}
