"""Shared machinery of the pytest-benchmark suite: the ``measure`` fixture (calibrated
``benchmark.pedantic`` plus the bytes / GB/s bookkeeping), a header naming what is measured,
a size-aware ordering of the groups, and a GB/s summary after pytest-benchmark's table.

Timing knobs (environment variables):

- ``FASTADAM_BENCH_LARGE=1``: add the 1e7 and 5e7 element sizes;
- ``FASTADAM_BENCH_BUDGET``: seconds of measured rounds per benchmark (default 0.3);
- ``FASTADAM_BENCH_ROUND``: seconds per round; fast calls are repeated ``iterations`` times
  to fill it (default 0.01).

pytest-benchmark's own ``--benchmark-min-rounds`` / ``--benchmark-max-time`` do not apply:
every benchmark uses ``benchmark.pedantic`` with rounds and iterations chosen here, so that
the default run stays around a minute and the slow reference cases stay bounded.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import pytest


def _import_fastadam():
    """The fastadam the suite measures: the one ``import fastadam`` finds without this
    checkout's root, as for tests/ (tests/conftest.py): the installed package, or a build
    named in PYTHONPATH (``PYTHONPATH=/path/to/checkout`` for an in-place build).

    bench/ is a package (see bench/__init__.py), so pytest puts its parent folder, the root
    of the checkout or of an unpacked sdist, first on sys.path; that entry is removed here
    unless PYTHONPATH names the same folder, so the source tree is never picked up by
    accident (built in place or not)."""
    root = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    named = {os.path.realpath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
             if p}
    if root not in named:
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
        for name, mod in list(sys.modules.items()):    # the source tree's, if imported
            where = os.path.realpath(getattr(mod, "__file__", None) or os.devnull)
            if name.split(".")[0] == "fastadam" and where.startswith(root + os.sep):
                del sys.modules[name]
    try:
        import fastadam
    except ImportError as e:
        raise ImportError(f"bench/ measures an installed fastadam (pip install .), or the "
                          f"build PYTHONPATH names; none imports: {e}") from e
    return fastadam


fastadam = _import_fastadam()
from fastadam import bench as _report  # noqa: E402

torch = _report.load_torch()   # None when torch is not installed
if torch is not None:
    # as the report does: torch gets the same number of threads as fastadam
    torch.set_num_threads(fastadam.get_num_threads())

LARGE = os.environ.get("FASTADAM_BENCH_LARGE", "") == "1"
BUDGET = float(os.environ.get("FASTADAM_BENCH_BUDGET", "0.3"))
ROUND = float(os.environ.get("FASTADAM_BENCH_ROUND", "0.01"))
MIN_ROUNDS, MAX_ROUNDS = 3, 50

# group -> implementation -> (median seconds, bytes or None); filled by ``measure``.
_RESULTS: Dict[str, Dict[str, tuple]] = {}


def _plan(fn: Callable[[], object]):
    """(rounds, iterations): iterations fill a round of about ROUND seconds, rounds fill
    about BUDGET seconds, within [MIN_ROUNDS, MAX_ROUNDS]. Calls ``fn`` a few times."""
    t0 = time.perf_counter()
    fn()                                    # first call: warm-up
    per = time.perf_counter() - t0
    if per < ROUND:
        number = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            t = time.perf_counter() - t0
            if t >= ROUND / 4 or number >= 1 << 20:
                break
            number *= 4
        per = t / number
    iterations = max(1, int(ROUND / max(per, 1e-9)))
    rounds = int(BUDGET / max(per * iterations, 1e-9))
    return min(MAX_ROUNDS, max(MIN_ROUNDS, rounds)), iterations


@pytest.fixture
def measure(benchmark):
    """``measure(fn, group, impl, nbytes=None, **info)``: time ``fn`` (no arguments) with
    pytest-benchmark, in table group ``group``; ``nbytes`` is the traffic one call must move
    (each array read once, each output written once), from which GB/s is derived."""

    def run(fn: Callable[[], object], group: str, impl: str, nbytes: Optional[int] = None,
            **info):
        benchmark.group = group
        benchmark.extra_info.update(info)
        benchmark.extra_info["impl"] = impl
        if nbytes is not None:
            benchmark.extra_info["bytes"] = int(nbytes)
        if not benchmark.enabled:
            # --benchmark-disable (CI): the code paths run, no timing; two calls, so that a
            # step on the state the first one left runs too
            fn()
            benchmark.pedantic(fn)
            return
        rounds, iterations = _plan(fn)
        benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
        stats = getattr(benchmark, "stats", None)
        try:
            median = float(stats.stats.median)
        except (AttributeError, TypeError, ValueError):
            return
        if nbytes is not None and median > 0:
            benchmark.extra_info["gbps"] = nbytes / median / 1e9
        _RESULTS.setdefault(group, {})[impl] = (median, nbytes)

    return run


# ------------------------------------------------------------------------ reporting hooks

_ORDER = {"sgd": 0, "rmsprop": 1, "adam": 2, "adamw": 3, "per-call": 4, "many-tensors": 5,
          "threads": 6, "16-bit": 7}


def _group_key(name: Optional[str]):
    """Report order (sgd, rmsprop, adam, adamw, then the small/thread sections), numbers
    compared as numbers (n=16 before n=1000)."""
    name = name or ""
    first = name.split(" ", 1)[0]
    parts = [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]
    return (_ORDER.get(first, 99), parts)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_benchmark_group_stats(config, benchmarks, group_by):
    from pytest_benchmark.plugin import pytest_benchmark_group_stats as default
    return sorted(default(config, benchmarks, group_by), key=lambda kv: _group_key(kv[0]))


def pytest_report_header(config):
    return [
        f"fastadam {fastadam.__version__} ({os.path.dirname(fastadam.__file__)}) | "
        f"numpy {np.__version__} | "
        + (f"torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch
           is not None else "torch: not installed"),
        f"fastadam simd path: {fastadam.get_simd_path()} | threads: "
        f"{fastadam.get_num_threads()} | large sizes: {'on' if LARGE else 'off'} "
        f"(FASTADAM_BENCH_LARGE) | budget {BUDGET}s, round {ROUND}s per benchmark",
    ]


def _fmt_us(sec: float) -> str:
    us = sec * 1e6
    return f"{us:10.2f}" if us < 100 else f"{us:10.0f}"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    """After pytest-benchmark's table: fastadam's GB/s, its share of the probe's (the
    same-traffic roofline) and its speed-up over each other implementation, per group."""
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.write_sep("-", "fastadam: GB/s, % of the roofline probe, speed-ups (medians)")
    others = ("ref", "tuned", "torch")
    if any("fastadam" in res for res in _RESULTS.values()):
        tr.write_line(f"{'group':<36} {'fastadam µs':>11} {'GB/s':>7} {'%roof':>6} "
                      + " ".join(f"{'x ' + o:>8}" for o in others))
    for group in sorted(_RESULTS, key=_group_key):
        res = _RESULTS[group]
        if "fastadam" not in res:
            continue
        t, nbytes = res["fastadam"]
        gbs = f"{nbytes / t / 1e9:7.1f}" if nbytes else f"{'':>7}"
        roof = f"{'':>6}"
        if nbytes and "probe" in res and res["probe"][1]:
            pt, pbytes = res["probe"]
            roof = f"{100 * (nbytes / t) / (pbytes / pt):5.0f}%"
        ratios = " ".join(f"{res[o][0] / t:7.1f}x" if o in res else f"{'-':>8}"
                          for o in others)
        extra = "".join(f"  {k} {v[0] / t:.2f}x" for k, v in res.items()
                        if k not in ("fastadam", "probe") + others)
        tr.write_line(f"{group:<36} {_fmt_us(t):>11} {gbs} {roof} {ratios}{extra}")
    rest: List[str] = []
    for group in sorted(_RESULTS, key=_group_key):
        if "fastadam" in _RESULTS[group]:
            continue
        rest.append(f"{group}: " + ", ".join(f"{k} {_fmt_us(v[0]).strip()} µs"
                                             for k, v in _RESULTS[group].items()))
    for line in rest:
        tr.write_line(line)
