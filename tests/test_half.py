"""16-bit storage (fastadam/src/fa_half.h) and its NumPy mirror (fastadam/_rounding.py).

tests/c/half_check.c is built once per SIMD flag set of the kernel modules that this CPU
can run, and checks every float32 and uint16 bit pattern against its own scalar reference
conversions; the builds must print the same hash of all their outputs. The mirror is
checked against ml_dtypes and NumPy, and against the C bit for bit, stochastic rounding
included. A flag set this CPU cannot run is not generated (qemu-user cannot run AVX-512,
nor the 2^32 loops in time).
"""

import functools
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from c_builds import FLAG_SETS, ROOT, build
from conftest import run_python

from fastadam import _rounding as R

SOURCE = ROOT / "tests" / "c" / "half_check.c"


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """name -> the path of half_check built with that flag set; starts their verify runs."""
    built = build(SOURCE, tmp_path_factory.mktemp("half_check"))
    # the exhaustive runs take 10-20 s each: two at a time, while the other tests run
    with ThreadPoolExecutor(max_workers=2) as pool:
        _verify_runs.update({name: pool.submit(subprocess.run, [str(exe), "verify"],
                                               capture_output=True, text=True, timeout=300)
                             for name, exe in built.items()})
        yield built
    _verify_runs.clear()


_verify_runs = {}


def verify(name):
    """half_check verify's output line on one build."""
    res = _verify_runs[name].result()
    assert res.returncode == 0, f"{name}:\n{res.stdout}{res.stderr}"
    return res.stdout.strip().splitlines()[-1]


# ---- the mirror against ml_dtypes and NumPy ------------------------------------------

SPECIAL_F32 = np.array([
    0, 0x80000000, 1, 0x807fffff, 0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000,
    0x7f800001, 0xffc00000, 0x7fa00000, 0x7fbfffff, 0x7fffffff, 0x7fc00001,
    0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x47800000, 0x38800000, 0x387fffff,
    0x387fe000, 0x387ff000, 0x33000000, 0x33000001, 0x32ffffff, 0x33800000, 0x33c00000,
    0x3f808000, 0x3f818000, 0x3f807fff, 0x3f800fff, 0x3f801000, 0x3f803000, 0x7f7f8000,
    0x7f7f7fff,
], dtype=np.uint32)


def sample_values():
    """A few million float32 bit patterns: random, dense at float16's edges, specials."""
    rng = np.random.default_rng(20240513)
    parts = [
        rng.integers(0, 2**32, 3_000_000, dtype=np.uint64).astype(np.uint32),
        np.arange(0x32F00000, 0x39000000, 37, dtype=np.uint32),  # float16 subnormal / normal
        np.arange(0x477F0000, 0x47810000, dtype=np.uint32),      # float16 overflow
        SPECIAL_F32,
    ]
    b = np.concatenate(parts)
    b = np.concatenate([b, b ^ np.uint32(0x80000000)])
    return b.view(np.float32)


VALUES = sample_values()
NOT_NAN = ~np.isnan(VALUES)


def test_narrow_bf16_matches_ml_dtypes():
    import ml_dtypes

    with np.errstate(invalid="ignore"):
        want = VALUES.astype(ml_dtypes.bfloat16).view(np.uint16)
    got = R.narrow_bf16(VALUES)
    np.testing.assert_array_equal(got[NOT_NAN], want[NOT_NAN])
    nan_bits = VALUES[~NOT_NAN].view(np.uint32)
    np.testing.assert_array_equal(got[~NOT_NAN], ((nan_bits >> 16) | 0x40).astype(np.uint16))


def test_narrow_f16_matches_numpy():
    with np.errstate(over="ignore", invalid="ignore"):
        want = VALUES.astype(np.float16).view(np.uint16)
    got = R.narrow_f16(VALUES)
    np.testing.assert_array_equal(got[NOT_NAN], want[NOT_NAN])
    a = VALUES[~NOT_NAN].view(np.uint32)
    quiet = ((a >> 16) & 0x8000) | 0x7E00 | ((a >> 13) & 0x3FF)
    np.testing.assert_array_equal(got[~NOT_NAN], quiet.astype(np.uint16))


def test_widen_matches_numpy_and_ml_dtypes():
    import ml_dtypes

    h = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    f16 = h.view(np.float16)
    ok = ~np.isnan(f16)
    np.testing.assert_array_equal(R.widen_f16(h)[ok].view(np.uint32),
                                  f16.astype(np.float32)[ok].view(np.uint32))
    nan = h[~ok].astype(np.uint32)
    want_nan = ((nan & 0x8000) << 16) | 0x7FC00000 | ((nan & 0x3FF) << 13)
    np.testing.assert_array_equal(R.widen_f16(h)[~ok].view(np.uint32), want_nan)
    np.testing.assert_array_equal(R.widen_bf16(h).view(np.uint32),
                                  h.view(ml_dtypes.bfloat16).astype(np.float32).view(np.uint32))
    # the round trip is the identity on every non-NaN value
    np.testing.assert_array_equal(R.narrow_f16(R.widen_f16(h))[ok], h[ok])
    np.testing.assert_array_equal(R.narrow_bf16(R.widen_bf16(h)), h | np.where(
        ((h & 0x7F80) == 0x7F80) & ((h & 0x7F) != 0), np.uint16(0x40), np.uint16(0)))


# ---- the mirror against the C, bit for bit ------------------------------------------

KEY = R.sr_key(11, 22, 33)
INDEX0 = 2**32 - 1_000_003  # the index's low half wraps inside the run


DUMPED = VALUES[::3]


@functools.cache
def mirror_of_dump():
    """What half_check dump must write for DUMPED, from the mirror."""
    x = DUMPED
    return (R.narrow_bf16(x), R.narrow_f16(x), R.narrow_bf16_sr(x, KEY, INDEX0),
            R.narrow_f16_sr(x, KEY, INDEX0), R.random32(KEY, INDEX0, x.size))


@pytest.mark.parametrize("name", list(FLAG_SETS))
def test_mirror_matches_c(programs, name):
    res = subprocess.run([str(programs[name]), "dump", str(KEY), str(INDEX0)],
                         input=DUMPED.tobytes(), capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    n = DUMPED.size
    c16 = np.frombuffer(res.stdout[: 8 * n], dtype=np.uint16).reshape(4, n)
    c_random = np.frombuffer(res.stdout[8 * n:], dtype=np.uint32)
    for got, want in zip([*c16, c_random], mirror_of_dump()):
        np.testing.assert_array_equal(got, want)


def test_sr_key_matches_c(programs):
    rng = np.random.default_rng(5)
    triples = np.concatenate([
        np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [2**64 - 1] * 3], np.uint64),
        rng.integers(0, 2**64, (200, 3), dtype=np.uint64),
    ])
    res = subprocess.run([str(programs["baseline"]), "keys"], input=triples.tobytes(),
                         capture_output=True, timeout=60)
    assert res.returncode == 0
    want = [R.sr_key(*map(int, t)) for t in triples]
    assert np.frombuffer(res.stdout, dtype=np.uint64).tolist() == want


# ---- stochastic rounding and its random numbers --------------------------------------

def neighbours(x, rne, widen):
    """The bits of the representable values below and above |x| (equal if x is exact)."""
    near = rne(x)
    w = widen(near)
    exact = w == x
    below = np.abs(w) < np.abs(x)
    lo = np.where(below | exact, near, near - np.uint16(1))
    hi = np.where(exact, near, np.where(below, near + np.uint16(1), near))
    return lo, hi


def test_sr_rounds_to_a_neighbour_without_bias():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(64) * 3).astype(np.float32)
    x = np.concatenate([x, np.float32([1e-6, -3e-7, 6e-8, 1e-5, 60000.5, 1.0, -0.5])])
    draws = 4096
    big = np.repeat(x, draws)
    for sr, rne, widen in ((R.narrow_bf16_sr, R.narrow_bf16, R.widen_bf16),
                           (R.narrow_f16_sr, R.narrow_f16, R.widen_f16)):
        got = sr(big, R.sr_key(1, 2, 3), 0).reshape(-1, draws)
        lo, hi = neighbours(x, rne, widen)
        assert ((got == lo[:, None]) | (got == hi[:, None])).all()
        exact = lo == hi
        assert exact.sum() == 2
        # the mean is x, within 5 standard deviations of the draws' mean
        y = widen(got).astype(np.float64)
        sd = y.std(axis=1) / np.sqrt(draws)
        assert (np.abs(y.mean(axis=1) - x) <= 5 * sd).all()
        assert (sd[~exact] > 0).all()


N = 1_000_000


def chi_square_low16(r):
    counts = np.bincount(r & 0xFFFF, minlength=2**16)
    expected = r.size / 2**16
    return ((counts - expected) ** 2 / expected).sum()


def test_random32_uniform():
    dof = 2**16 - 1
    for key in (0, 1, KEY, 2**63):
        r = R.random32(key, 0, N)
        for bits in (r, r >> 16, r >> 8):
            assert abs(chi_square_low16(bits) - dof) < 6 * np.sqrt(2 * dof), key


def test_random32_related_keys_are_unrelated():
    base = R.random32(KEY, 0, N)
    u = base / 2**32
    for other in (KEY + 1, KEY ^ 1, KEY ^ (1 << 32), KEY ^ (1 << 63)):
        r = R.random32(other, 0, N)
        assert abs(np.corrcoef(u, r / 2**32)[0, 1]) < 6 / np.sqrt(N)
        # shared values among 2^18: about 2^36 / 2^32 = 16 by chance; not a permuted stream
        shared = np.intersect1d(base[: 2**18], r[: 2**18]).size
        assert shared < 16 + 10 * 4, (other, shared)
    # nearby seeds, steps and tensors: unrelated keys (about half the bits differ)
    # (a pair of random 64-bit keys differs in Binomial(64, 1/2) bits: mean 32, sd 4)
    keys = [R.sr_key(s, t, k) for s in range(4) for t in range(4) for k in range(4)]
    diff = [bin(a ^ b).count("1") for i, a in enumerate(keys) for b in keys[i + 1:]]
    assert 10 <= min(diff) and max(diff) <= 54 and abs(np.mean(diff) - 32) < 0.6


def test_no_ml_dtypes_at_import():
    res = run_python("import sys, fastadam._rounding; assert 'ml_dtypes' not in sys.modules",
                     timeout=60)
    assert res.returncode == 0, res.stderr


# ---- last: the exhaustive runs, started with the builds, have had time to finish ----

@pytest.mark.parametrize("name", list(FLAG_SETS))
def test_exhaustive_against_reference(programs, name):
    assert verify(name).startswith("ok:")


if len(FLAG_SETS) > 1:
    def test_builds_give_the_same_bits(programs):
        hashes = {name: verify(name).rsplit("hash=", 1)[1] for name in FLAG_SETS}
        assert len(set(hashes.values())) == 1, hashes
