"""pytest-benchmark cases of the report's 8-bit section (``python -m fastadam.bench --only
8-bit``, fastadam.bench.make_8bit_case): Adam with 8-bit states (QuantizedState exp_avg and
exp_avg_sq) beside fastadam's float32 step, the 8-bit probe, and bitsandbytes' Adam8bit on
CPU tensors.

bitsandbytes comes with the ``compare`` extra (and torch); without it this module skips, so
``pytest bench/`` runs without the extra. CI installs it and its bench step fails on any
skip (.ci/run), so there every case runs. torchao's AdamW8bit is in the report only (it
compiles its step, seconds per size).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
bitsandbytes = pytest.importorskip("bitsandbytes")

from fastadam.bench import make_8bit_case  # noqa: E402

SIZES = (100_000, 1_000_000)
IMPLS = ("probe", "fastadam", "fastadam 32-bit", "bnb Adam8bit")
BNB_SIZES = (100_000,)

_CASE: dict = {}


def _case(n):
    """The report's group for Adam at ``n`` (one alive at a time): the implementations by
    the suite's names (``fastadam``: the 8-bit step, ``probe``: the 8-bit probe), each with
    its bytes per element."""
    if n not in _CASE:
        _CASE.clear()
        gc.collect()
        case = make_8bit_case("adam", n, np.random.default_rng(7),
                              {"bitsandbytes": bitsandbytes} if n in BNB_SIZES else {})
        rows = {r["label"]: r for r in case["rows"]}
        fn, nbytes = case["probes"]["probe 8-bit"]
        _CASE[n] = {"probe": (fn, nbytes),
                    "fastadam": (rows["fastadam 8-bit"]["fn"], rows["fastadam 8-bit"]["bytes"]),
                    **{k: (r["fn"], r["bytes"]) for k, r in rows.items()
                       if k in IMPLS and "fn" in r}}
        if n in BNB_SIZES:
            assert "bnb Adam8bit" in _CASE[n], rows["bnb Adam8bit"].get("absent")
    return _CASE[n]


ROWS = [pytest.param(n, impl, id=f"adam-{n}-{impl.replace(' ', '_')}")
        for n in SIZES for impl in IMPLS if impl != "bnb Adam8bit" or n in BNB_SIZES]


@pytest.mark.parametrize("n, impl", ROWS)
def test_8bit(measure, n, impl):
    """One Adam step (step 10, default betas) over ``n`` float32 params: with 8-bit states
    (``fastadam``), with float32 states, bitsandbytes' Adam8bit, and the probe with the
    8-bit step's traffic (float32 p and g, byte states, two float32 scales per block of
    256); group = size, so %roof in the summary is the 8-bit step's share of that probe."""
    fn, per_el = _case(n)[impl]
    measure(fn, f"8-bit adam n={n}", impl, nbytes=per_el * n, n=n,
            bytes_per_element=per_el)
