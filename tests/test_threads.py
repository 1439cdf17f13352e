"""The thread pool under concurrent callers and fork: same results, no hang."""

import os
import sys
import threading

import numpy as np
import pytest

import fastadam
from conftest import run_python

# A watchdog for a hang, not a speed limit: the child takes seconds; 300 s leaves room for
# a loaded machine and the sanitizer build (several times slower).
WATCHDOG_S = 300
N = 300_001        # above every kernel's threshold for 2 threads


def _arrays(seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(N).astype(dtype)
    g = rng.standard_normal(N).astype(dtype)
    return p, g, np.zeros(N, dtype), np.zeros(N, dtype)


def _run(arrays, steps=15):
    p, g, m, v = arrays
    for t in range(1, steps + 1):
        fastadam.adam_(p, g, m, v, step=t, lr=1e-2)


def test_concurrent_callers_match_sequential():
    # Two Python threads use the pool at once (the GIL is released): the one that finds it
    # busy runs its parts itself. Either way every element is updated exactly once.
    old = fastadam.set_num_threads(2)
    try:
        expected = [_arrays(seed) for seed in (1, 2, 3)]
        for arrays in expected:
            _run(arrays)
        got = [_arrays(seed) for seed in (1, 2, 3)]
        workers = [threading.Thread(target=_run, args=(arrays,)) for arrays in got]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=WATCHDOG_S)
        assert not any(w.is_alive() for w in workers), "a caller hung"
        for e, g in zip(expected, got):
            for a, b in zip(e, g):
                assert np.array_equal(a, b)
    finally:
        fastadam.set_num_threads(old)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_threaded_step_after_fork():
    # The parent's workers do not exist in a forked child: the child must make its own
    # rather than wait for them forever. A child process, with a timeout, so that a hang
    # fails this test instead of the run.
    code = f"""
        import os, sys, hashlib
        import numpy as np, fastadam
        fastadam.set_num_threads(2)
        rng = np.random.default_rng(0)
        def step():
            p = rng.standard_normal({N}).astype(np.float32)
            g, m, v = np.ones_like(p), np.zeros_like(p), np.zeros_like(p)
            fastadam.adam_(p, g, m, v, step=1)
            return hashlib.sha256(p.tobytes()).hexdigest()
        step()                       # the parent starts its workers
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            rng = np.random.default_rng(1)
            os.write(w, step().encode())
            os._exit(0)
        os.close(w)
        child = os.read(r, 100).decode()
        os.waitpid(pid, 0)
        rng = np.random.default_rng(1)
        assert child == step(), "the child's threaded step differs"
        print("ok")
    """
    r = run_python(code, timeout=WATCHDOG_S)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_set_num_threads_validates():
    with pytest.raises(TypeError, match="Invalid n"):
        fastadam.set_num_threads(2.0)
    with pytest.raises(ValueError, match="Invalid n"):
        fastadam.set_num_threads(0)
    old = fastadam.set_num_threads(3)
    assert fastadam.set_num_threads(old) == 3
    assert fastadam.get_num_threads() == old


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
