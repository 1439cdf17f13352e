"""Shared helpers for fastadam's tests: SIMD-path fixture, random arrays, SPEC §2 tolerances."""

import os
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
    """SPEC §2 accuracy against the NumPy reference.

    float64: rtol 1e-12, atol 1e-14 (the SPEC's numbers).
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
