"""Shared helpers for fastadam's tests: SIMD-path fixture, random arrays, the tolerances of
docs/contract.md#accuracy, and the strict-skip check CI runs with (FASTADAM_STRICT_SKIPS, below)."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# The tests import the installed package (`pip install .`), not the source tree: run them
# with `pytest tests/` (which does not put the repository root on sys.path).
import fastadam  # noqa: E402

DTYPES = (np.float32, np.float64)


@pytest.fixture(params=fastadam.available_simd_paths())
def simd_path(request):
    """Run the test on one SIMD path the CPU has; restore the previous path afterwards."""
    old = fastadam.set_simd_path(request.param)
    try:
        yield request.param
    finally:
        fastadam.set_simd_path(old)


def rand(rng, shape, dtype, kind="normal"):
    """Random array: 'normal' (params, grads, momentum buffers) or 'pos' (second moments)."""
    x = rng.standard_normal(shape)
    if kind == "pos":
        x = np.abs(x)
    return np.array(x, dtype=dtype, order="C")


def assert_close(actual, expected, what=""):
    """The accuracy of docs/contract.md#accuracy against the NumPy reference.

    float64: rtol 1e-12, atol 1e-14 (docs/contract.md#accuracy).
    float32: rtol 1e-5; atol 1e-6 * max|expected| (about 8 float32 ulps at the scale of the
    data). An absolute term is needed because ``p - u`` rounds at the ulp of its operands, not
    of its result, so an element that passes near zero by cancellation carries an absolute
    error of a few ulps of the data's scale, which no relative bound near zero can accept.
    """
    assert actual.dtype == expected.dtype, what
    assert actual.shape == expected.shape, what
    if actual.dtype == np.float64:
        rtol, atol = 1e-12, 1e-14
    else:
        finite = expected[np.isfinite(expected)]
        scale = float(np.max(np.abs(finite))) if finite.size else 0.0
        rtol, atol = 1e-5, 1e-6 * scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def run_python(code, timeout):
    """Run ``code`` in a fresh interpreter that imports the same fastadam as the tests.

    Used for thread tests: a hung native call would otherwise hang the whole test session.
    Returns the CompletedProcess; raises AssertionError on a timeout.
    """
    where = os.path.dirname(os.path.dirname(fastadam.__file__))
    env = dict(os.environ, PYTHONPATH=where + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        # cwd: this folder, not the repository root, whose source tree has no built modules
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                              cwd=os.path.dirname(__file__), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise AssertionError(f"child process did not finish within {timeout}s (hung?); "
                             f"its output so far:\n{out}") from None


# ---------------------------------------------------------------------------- strict skips

# --strict-skips=JOB (or FASTADAM_STRICT_SKIPS=JOB): every skip of the session (a test's,
# or a whole module's at collection, as test_torch_dropin.py's importorskip) must match an
# entry of JOB's section in tests/allowed_skips.txt, where each entry says why it is
# allowed; any other skip fails the session (exit status 1) and is named with its reason in
# the summary. A CI job whose extras stopped installing thus fails instead of passing with
# fewer tests.
# FASTADAM_ALLOWED_SKIPS=FILE reads FILE instead of tests/allowed_skips.txt.
STRICT_SKIPS_ENV = "FASTADAM_STRICT_SKIPS"
ALLOWED_SKIPS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "allowed_skips.txt")


def load_allowed_skips(path, job):
    """[(test id pattern, reason substring, why)] of section ``[job]`` of ``path``.

    Each entry is one line ``PATTERN | REASON | WHY``: PATTERN matches the skipped test's id
    (``*`` stands for any text, every other character for itself, brackets included:
    ``tests/test_x.py::test_y[*]``), REASON must occur in
    the skip's reason, and WHY says why the job may skip it. ``#`` starts a comment line."""
    sections, current = {}, None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1].strip(), [])
                continue
            parts = [p.strip() for p in line.split("|")]
            if current is None or len(parts) != 3 or not all(parts):
                raise pytest.UsageError(f"{path}:{lineno}: expected 'PATTERN | REASON | WHY' "
                                        f"inside a [job] section, got {line!r}")
            current.append(tuple(parts))
    if job not in sections:
        raise pytest.UsageError(f"{STRICT_SKIPS_ENV}={job!r}: {path} has no [{job}] section "
                                f"(it has {sorted(sections)})")
    return sections[job]


def pattern_matches(pattern, nodeid):
    """Whether test id ``nodeid`` matches ``pattern``, where ``*`` is any text. (Not fnmatch:
    its ``[...]`` is a character class, and test ids carry their parameters in brackets.)"""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), nodeid) is not None


def skip_reason(report):
    """The reason pytest gives for a skipped test or module."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


class StrictSkips:
    """Records every skip; at the end, fails the session on any its job does not allow."""

    def __init__(self, job, path, allowed):
        self.job, self.path, self.allowed = job, path, allowed
        self.skips = []         # (test id, reason)
        self.unexpected = []
        self.used = set()

    def _record(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append((report.nodeid, skip_reason(report)))

    def pytest_runtest_logreport(self, report):
        self._record(report)

    def pytest_collectreport(self, report):
        self._record(report)    # a module skipped as a whole, at import

    def _allowed(self, nodeid, reason):
        for i, (pattern, substring, _) in enumerate(self.allowed):
            if pattern_matches(pattern, nodeid) and substring in reason:
                self.used.add(i)
                return True
        return False

    def pytest_sessionfinish(self, session):
        self.unexpected = [(n, r) for n, r in self.skips if not self._allowed(n, r)]
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        tr.section(f"strict skips: [{self.job}] of {self.path}")
        tr.line(f"{len(self.skips)} skipped, {len(self.unexpected)} not allowed")
        for nodeid, reason in self.skips:
            mark = "NOT ALLOWED" if (nodeid, reason) in self.unexpected else "allowed"
            tr.line(f"  {mark:<11} {nodeid}: {reason}")
        for i, (pattern, substring, _) in enumerate(self.allowed):
            if i not in self.used:
                tr.line(f"  (allowed, not seen: {pattern} | {substring})")
        if self.unexpected:
            tr.line(f"FAILED: {len(self.unexpected)} skip(s) not allowed in [{self.job}]: "
                    + "; ".join(f"{n} ({r})" for n, r in self.unexpected), red=True)


def pytest_addoption(parser):
    parser.addoption("--strict-skips", metavar="JOB", default=None,
                     help="fail the session on any skip that section [JOB] of "
                          "tests/allowed_skips.txt does not allow (default: "
                          f"${STRICT_SKIPS_ENV})")


def pytest_configure(config):
    job = config.getoption("strict_skips")
    job = (job if job is not None else os.environ.get(STRICT_SKIPS_ENV, "")).strip()
    if job:
        path = os.environ.get("FASTADAM_ALLOWED_SKIPS", "").strip() or ALLOWED_SKIPS_FILE
        config.pluginmanager.register(
            StrictSkips(job, path, load_allowed_skips(path, job)), "fastadam-strict-skips")


# The group keys fastadam.torch adds to torch.optim's (how 16-bit params are rounded), with
# their defaults: a torch.optim checkpoint lacks them, and torch.optim keeps them.
# fastadam.torch's own group keys: the 16-bit rounding and the gradient policy
STORAGE_KEYS = {"rounding": "nearest", "seed": 0, "nonfinite": "propagate", "max_grad_norm": None}


def torch_keys(d):
    """A group or defaults dict without fastadam's storage keys, which must be at their
    defaults."""
    for k, v in STORAGE_KEYS.items():
        assert d.get(k, v) == v, (k, d[k])
    return {k: v for k, v in d.items() if k not in STORAGE_KEYS}


@pytest.fixture(scope="module")
def one_torch_thread():
    """For a module's tiny torch models: one torch thread. (On a busy machine torch's
    OpenMP threads, which spin at each parallel region's barrier, made those tests 10-20x
    slower.)"""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
