"""The 8-bit states' code search: fastadam/quant.py's rule, its bucket table and level
tables, and the C kernels (fastadam/src/fa_quant.h) on every SIMD build.

tests/c/quant_check.c is built with each flag set this CPU can run and checks the kernels'
codes against the scalar bucket-table lookup for every float32 |y| <= 1 (every 17th pattern,
and every pattern within 2^16 of a switch point; FASTADAM_EXHAUSTIVE=1: every pattern) and
their dequantization against qmap[code] * absmax; the builds must agree on a hash of all the
codes. The bucket table and the level tables are checked here against the nearest-code
rule, so the chain reaches the rule itself.
"""

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from c_builds import FLAG_SETS, ROOT, build

import fastadam
from fastadam import quant as Q

SOURCE = ROOT / "tests" / "c" / "quant_check.c"
STRIDE = 1 if os.environ.get("FASTADAM_EXHAUSTIVE") else 17
MAPS = {"signed": Q.SIGNED_MAP, "unsigned": Q.UNSIGNED_MAP}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> the finished quant_check run of that build (two at a time)."""
    data = tmp_path_factory.mktemp("quant_maps")
    for name, m in MAPS.items():
        m.tofile(data / f"{name}.map")
        Q.bucket_table(m)[1].tofile(data / f"{name}.table")
        Q.kernel_words(m).tofile(data / f"{name}.words")
        Q.thresholds(m).tofile(data / f"{name}.u")
    built = build(SOURCE, tmp_path_factory.mktemp("quant_check"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(subprocess.run, [str(exe), str(data), str(STRIDE)],
                                     capture_output=True, text=True, timeout=600)
                   for name, exe in built.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", list(FLAG_SETS))
def test_kernel_codes_equal_the_table_on_every_build(runs, name):
    res = runs[name]
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stdout + res.stderr


def test_every_build_gives_the_same_codes(runs):
    hashes = {name: r.stdout.strip().rsplit("hash=", 1)[-1] for name, r in runs.items()}
    assert len(set(hashes.values())) == 1, hashes


def test_the_avx512_build_has_the_level_tables_and_vbmi_where_the_cpu_does(runs):
    if "avx512" not in runs:
        pytest.skip("this CPU has no AVX-512")
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    assert ("vbmi=1" in runs["avx512"].stdout) == ("avx512vbmi" in flags)


# ---- the rule: nearest code, ties to the lower one --------------------------------------

def _near_switches(m, reach=64):
    u = Q.thresholds(m).view(np.uint32).astype(np.int64)
    bits = (u[:, None] + np.arange(-reach, reach + 1)[None, :]).ravel()
    return bits.astype(np.uint32).view(np.float32)


def _sample(m, n=400_000, seed=7):
    rng = np.random.default_rng(seed)
    parts = [_near_switches(m),
             (rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-9, 0, n)).astype(np.float32),
             rng.uniform(-1.01, 1.01, n).astype(np.float32),
             np.array([0.0, -0.0, 1.0, -1.0, 1.0000001, -1.0000001, np.inf, -np.inf, 1e-30,
                       -1e-30, 3e-38, np.nan, -np.nan], np.float32)]
    return np.concatenate(parts)


def _brute_nearest(y, m):
    """bitsandbytes' lookup_code_index: clamp to [-1, 1], the first code >= y and the one
    before it, the nearer in float32 (a tie: the lower)."""
    yc = np.clip(y, -1, 1)
    right = np.clip(np.searchsorted(m, yc, side="left"), 1, 255)
    lo, hi = m[right - 1], m[right]
    code = np.where((hi - yc) < (yc - lo), right, right - 1)
    return np.where(yc <= m[0], 0, code)


@pytest.mark.parametrize("name", list(MAPS))
def test_nearest_code_is_the_nearest_code(name):
    m = MAPS[name]
    y = _sample(m)
    y = y[~np.isnan(y)]
    np.testing.assert_array_equal(Q.nearest_code(y, m), _brute_nearest(y, m))


@pytest.mark.parametrize("name", list(MAPS))
def test_bucket_table_equals_the_rule(name):
    m = MAPS[name]
    y = _sample(m)
    np.testing.assert_array_equal(Q.table_code(y, m), Q.nearest_code(y, m))


@pytest.mark.parametrize("name", list(MAPS))
def test_level_tables_equal_the_rule_where_they_decide(name):
    m = MAPS[name]
    y = _sample(m)
    got = Q.level_code(y, m)
    decided = got >= 0
    np.testing.assert_array_equal(got[decided], Q.nearest_code(y, m)[decided])
    # only lanes next to a switch (and NaN) defer to the table: rare on spread-out values
    rng = np.random.default_rng(1)
    spread = (rng.uniform(-1, 1, 10**6) * 10.0 ** rng.uniform(-6, 0, 10**6)).astype(np.float32)
    assert np.mean(Q.level_code(spread, m) < 0) < 1e-3


def test_a_map_without_levels_still_quantizes_exactly():
    # codes spaced quadratically: not even within a decade, so no level tables, and the
    # kernels take every code from the bucket table
    k = np.arange(1, 129) / 128
    m = np.concatenate([-k[:127][::-1] ** 2, [0.0], k ** 2]).astype(np.float32)
    assert Q.level_tables(m) is None
    rng = np.random.default_rng(3)
    n = 1000
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    buf = Q.QuantizedState(np.zeros(n, np.uint8), np.zeros(Q.nblocks(n), np.float32), m)
    for path in fastadam.available_simd_paths():
        old = fastadam.set_simd_path(path)
        try:
            b = buf.copy()
            fastadam.sgd_(p.copy(), g, momentum_buffer=b, momentum=0.9, step=1)
        finally:
            fastadam.set_simd_path(old)
        codes, absmax = Q.quantize(g, m)
        np.testing.assert_array_equal(b.codes, codes)
        np.testing.assert_array_equal(b.absmax, absmax)


@pytest.mark.parametrize("bad, why", [
    (np.linspace(1, -1, 256, dtype=np.float32), "strictly increasing"),
    (np.linspace(-2, 2, 256, dtype=np.float32), "within"),
    (np.concatenate([np.linspace(-1, 0.59, 253), [0.6, 0.60001, 0.60002]]).astype(np.float32),
     "closer than"),
    (np.concatenate([[-1.0], np.linspace(-1e-12, 1e-12, 254), [1.0]]).astype(np.float32),
     "too close to 0"),
    (np.linspace(-1, 1, 256, dtype=np.float32), "too close to 0"),    # no code at 0
])
def test_maps_the_table_cannot_hold_are_refused(bad, why):
    with pytest.raises(ValueError, match=why):
        Q.bucket_table(bad)
    n = 300
    state = Q.QuantizedState(np.zeros(n, np.uint8), np.zeros(2, np.float32), bad)
    p = np.ones(n, np.float32)
    with pytest.raises(ValueError, match="momentum_buffer.qmap"):
        fastadam.sgd_(p, np.ones(n, np.float32), momentum_buffer=state, momentum=0.9)
    assert np.all(p == 1)
