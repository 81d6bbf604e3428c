"""``kernel="auto"`` (``fljax/aggregators/_kernels.py``): the kernel where it builds, jnp where not.

Both states of the boundary are exercised in one process: the compiled CPU
kernel available, and a missing C++ compiler (simulated by hiding the
compiler from ``kernels.order_stats`` and forgetting what was built).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators as agg
from fljax.aggregators import _kernels
from kernels import order_stats

_OK, _WHY = order_stats.available()
needs_kernel = pytest.mark.skipif(not _OK, reason=f"kernel unavailable: {_WHY}")

RULES = {  # name -> (factory of kernel, FFI target "auto" should pick)
    "coordinate_median": (lambda k: agg.coordinate_median(kernel=k), order_stats.TARGET),
    "trimmed_mean": (lambda k: agg.trimmed_mean(4, kernel=k), order_stats.TARGET),
    "invariant": (lambda k: agg.invariant(tau=0.2, kernel=k), order_stats.TARGET),
    "bulyan": (lambda k: agg.bulyan(2, kernel=k), order_stats.TARGET_CLOSEST),
}


def _data(n=15, d=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[rng.random((n, d)) < 0.05] = 0.5  # ties
    x[3, 7] = np.nan  # a screened row
    return jnp.asarray(x)


def _run(rule, x):
    """``(out, info, program text)`` of one jitted call (lowered and compiled once)."""
    args = (x, rule.init(x.shape[1]), jax.random.PRNGKey(1))
    lowered = jax.jit(rule.aggregate).lower(*args)
    out, _, info = lowered.compile()(*args)
    return np.asarray(out), jax.tree_util.tree_map(np.asarray, info), lowered.as_text()


@pytest.fixture
def compiler(monkeypatch):
    """``compiler(False)``: ``kernels.order_stats`` as on a machine without a C++
    compiler; ``compiler(True)``: as it is here. Either forgets what was built
    and what "auto" resolved to; the real state is restored afterwards."""
    real = order_stats._compiler

    def switch(present: bool):
        monkeypatch.setattr(order_stats, "_compiler", real if present else (lambda: None))
        order_stats.build.cache_clear()
        order_stats._library.cache_clear()
        _kernels.reset()

    yield switch
    switch(True)


@needs_kernel
@pytest.mark.parametrize("name", sorted(RULES))
def test_auto_picks_the_kernel_where_it_builds_and_jnp_where_not(name, compiler, capsys):
    """The default takes the compiled kernel when it can be built (its FFI target is
    in the program) and the jnp path when the compiler is missing, with one line
    on stderr saying why; the results agree and ``info`` is identical. Catches
    "auto" silently staying on the jnp path, a crash or a silent fallback without
    a compiler, and a kernel path whose info or result drifts from the jnp path."""
    make, target = RULES[name]
    x = _data()
    compiler(False)
    jnp_out, jnp_info, jnp_text = _run(make("auto"), x)
    err = capsys.readouterr().err
    assert "C++17 compiler" in err and len(err.strip().splitlines()) == 1, err
    assert target not in jnp_text and "custom_call" not in jnp_text
    assert _kernels.resolve("auto", "rank_weighted_sum") is None
    assert capsys.readouterr().err == ""  # said once per process

    compiler(True)
    out, info, text = _run(make("auto"), x)
    assert target in text, f"{name}: 'auto' did not use the kernel"
    assert capsys.readouterr().err == ""  # cached on disk: nothing to say
    if name == "coordinate_median":
        np.testing.assert_array_equal(out, jnp_out)  # 0.5 a + 0.5 b either way
    else:
        np.testing.assert_allclose(out, jnp_out, rtol=1e-5, atol=1e-6)
    assert set(info) == set(jnp_info)
    for key in info:
        np.testing.assert_array_equal(info[key], jnp_info[key], err_msg=key)


def test_without_the_kernels_package_auto_is_the_jnp_path(monkeypatch, capsys):
    """A fljax installed without ``kernels`` (the import fails): one line, then the
    jnp path. Catches an ImportError escaping from the boundary."""
    for module in ("kernels", "kernels.order_stats"):
        monkeypatch.setitem(sys.modules, module, None)
    _kernels.reset()
    try:
        out, _, text = _run(agg.coordinate_median(), _data())
        assert "not importable" in capsys.readouterr().err
        assert order_stats.TARGET not in text
        np.testing.assert_array_equal(out, _run(agg.coordinate_median(kernel=None), _data())[0])
    finally:
        monkeypatch.undo()
        _kernels.reset()


def test_auto_is_the_jnp_path_off_the_cpu(monkeypatch):
    """On a GPU or TPU backend no kernel is measured to win: "auto" resolves to the
    jnp path without building anything. Catches a CPU-only kernel chosen there."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(_kernels, "_cpu_kernels", lambda: pytest.fail("built off the CPU"))
    assert _kernels.resolve("auto", "rank_weighted_sum") is None
    assert _kernels.resolve(None, "rank_weighted_sum") is None
    fn = lambda *a, **k: None  # noqa: E731
    assert _kernels.resolve(fn, "rank_weighted_sum") is fn


@pytest.mark.parametrize("make", [agg.coordinate_median, lambda kernel: agg.trimmed_mean(1, kernel=kernel),
                                  agg.invariant, lambda kernel: agg.bulyan(1, kernel=kernel)])
def test_kernel_argument_is_checked_when_the_rule_is_built(make):
    """A config's 'module:function' string must be imported by the simulator, not
    reach the rule: the factory says so at once (not at the first trace)."""
    with pytest.raises(ValueError, match="module:function"):
        make(kernel="kernels.order_stats:rank_weighted_sum")
    for ok in ("auto", None, order_stats.rank_weighted_sum):
        make(kernel=ok)


def test_fljax_imports_kernels_in_one_place_only():
    """The boundary stays one module: any other ``import kernels`` in fljax fails here."""
    import pathlib
    import re

    import fljax

    root = pathlib.Path(fljax.__file__).parent
    pattern = re.compile(r"^\s*(from\s+kernels[\s.]|import\s+kernels\b)", re.M)
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                       if pattern.search(p.read_text()))
    assert importers == ["aggregators/_kernels.py"], importers


def test_auto_keeps_other_dtypes_on_the_jnp_path_and_an_injected_kernel_gets_them(monkeypatch):
    """``"auto"`` sends updates that are not float32 (the CPU kernel's only
    dtype) to the jnp path even where a kernel is available; a kernel passed
    in gets whatever it is given. Catches ``kernel != AUTO`` in the dtype
    check (both halves swap)."""
    fake = type("Kernels", (), {"rank_weighted_sum": staticmethod(lambda *a, **k: None)})
    monkeypatch.setattr(_kernels, "_cpu_kernels", lambda: fake)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")

    def route(kernel, dtype):
        return _kernels.dispatch(kernel, "rank_weighted_sum", lambda fn: "kernel", lambda: "jnp",
                                 jnp.zeros((2, 3), dtype))

    assert route("auto", jnp.float32) == "kernel" and route("auto", jnp.float16) == "jnp"
    assert route(fake.rank_weighted_sum, jnp.float16) == "kernel"
