"""Runtime SIMD dispatch: the path follows the CPU, every path gives the same bits, and the
FASTADAM_SIMD / FASTADAM_NUM_THREADS environment variables and set_simd_path behave.

The CPU is varied with qemu-user (Debian's qemu-user package): ``qemu-x86_64 -cpu Nehalem``
runs this same Python on an emulated SSE4.2 CPU without AVX, ``-cpu Haswell`` on one with
AVX2 and FMA but no AVX-512, so one x86-64 machine checks that dispatch picks 'baseline'
and 'avx2' from what CPUID reports, and that the emulated runs give the bits this process
gets natively on every path it has (including 'avx512' where the host has it: qemu 7.2's
TCG cannot emulate AVX-512, so that path is only checked natively).

NumPy 2.x's own baseline is x86-64-v2 (SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT), which Nehalem
has, so NumPy itself runs under ``-cpu Nehalem``; it could not under an older model.
"""

import json
import subprocess
import sys

import pytest

import fastadam
import fastadam.reference
from check_cpus import (HERE, PROBE, QEMU, WITH_DIGESTS, WORKLOAD, X86_64, child_env,
                        not_emulated, probe, reference_errors)
from check_cpus import native_digests as _native_digests

# A watchdog for a hang, not a speed limit: the child takes seconds; 300 s leaves room for
# a loaded machine and the sanitizer build (several times slower).
WATCHDOG_S = 300

needs_qemu = pytest.mark.skipif(QEMU is None or not X86_64,
                                reason="needs qemu-x86_64 (qemu-user) on an x86-64 machine")


def _probe(env=None, cpu=None, with_digests=False):
    """check_cpus.probe, with or without the workload's digests: (info, stderr)."""
    info, _, stderr = probe(cpu=cpu, env=env, code=WITH_DIGESTS if with_digests else "")
    return info, stderr


def _skip_unless_emulated(stderr, feature):
    # A model whose features qemu cannot emulate is not the CPU it names: say so, not fail.
    gap = not_emulated(stderr, feature)
    if gap:
        pytest.skip(f"this qemu cannot emulate {feature}: {gap}")


@pytest.fixture(scope="module")
def native_digests():
    """{path: digests} for every path this CPU and build have, computed in this process."""
    return _native_digests()


def test_native_paths_agree_bit_for_bit(native_digests):
    assert "baseline" in native_digests
    expected = native_digests["baseline"]
    for path, got in native_digests.items():
        differ = sorted(k for k in expected if got[k] != expected[k])
        assert not differ, f"path {path!r} differs from 'baseline' on {differ}"


def test_workload_matches_reference():
    # The digests compare real updates: the workload's results follow fastadam.reference
    # (to the accuracy SPEC §2 gives for 100 steps) and differ from the starting values.
    assert reference_errors(fastadam, fastadam.reference) == []


def test_reference_errors_can_fail():
    # reference_errors must notice a wrong kernel: here, Adam that moves twice as far.
    class Wrong:
        def __getattr__(self, name):
            return getattr(fastadam, name)

        def adam_(self, p, *args, **kwargs):
            before = p.copy()
            fastadam.adam_(p, *args, **kwargs)
            p += p - before

    errors = reference_errors(Wrong(), fastadam.reference)
    assert errors, "a wrong Adam went unnoticed"
    assert all(e.split("/")[0] in ("adam", "adam_amsgrad_l2_maximize") for e in errors), errors


@needs_qemu
def test_nehalem_runs_baseline_with_the_same_bits(native_digests):
    info, _ = _probe(cpu="Nehalem", with_digests=True)
    assert info["path"] == "baseline"
    assert info["available"] == ["baseline"]          # neither avx2 nor avx512
    assert info["warnings"] == []
    assert info["digests"] == native_digests["baseline"]


@needs_qemu
def test_haswell_runs_avx2_with_the_same_bits(native_digests):
    info, stderr = _probe(cpu="Haswell", with_digests=True)
    _skip_unless_emulated(stderr, "avx2")
    assert info["path"] == "avx2"
    assert info["available"] == ["baseline", "avx2"]  # no avx512
    assert info["warnings"] == []
    for path, expected in native_digests.items():
        assert info["digests"] == expected, f"Haswell/avx2 differs from native {path!r}"


@needs_qemu
def test_haswell_cannot_be_forced_to_avx512():
    info, stderr = _probe(cpu="Haswell", env={"FASTADAM_SIMD": "avx512"})
    _skip_unless_emulated(stderr, "avx2")
    assert info["path"] == "avx2"
    assert [c for c, m in info["warnings"] if "FASTADAM_SIMD='avx512'" in m
            and "not available on this CPU" in m] == ["RuntimeWarning"], info["warnings"]


# ------------------------------------------------------------- environment, no emulation

@pytest.mark.parametrize("path", ["baseline", "avx2", " AVX2 "])
def test_fastadam_simd_forces_the_path(path):
    want = path.strip().lower()
    if want not in fastadam.available_simd_paths():
        pytest.skip(f"this CPU or build has no {want!r} path")
    info, _ = _probe(env={"FASTADAM_SIMD": path})
    assert info["path"] == want
    assert info["warnings"] == []
    assert info["available"] == list(fastadam.available_simd_paths())   # forcing hides none


def test_invalid_fastadam_simd_warns_and_uses_the_best_path():
    info, _ = _probe(env={"FASTADAM_SIMD": "sse9"})
    best = fastadam.available_simd_paths()[-1]
    assert info["path"] == best
    assert [(c, m) for c, m in info["warnings"] if "FASTADAM_SIMD" in m] == [
        ("RuntimeWarning", f"FASTADAM_SIMD='sse9' is not a SIMD path; using {best!r}. "
                           f"Choose from {fastadam.available_simd_paths()}.")]


def test_default_path_is_the_best():
    info, _ = _probe()
    assert info["path"] == fastadam.available_simd_paths()[-1]
    assert info["warnings"] == []


def test_fastadam_num_threads():
    info, _ = _probe(env={"FASTADAM_NUM_THREADS": "3"})
    assert info["threads"] == 3
    assert info["warnings"] == []


def test_thread_counts_and_paths_agree_bit_for_bit():
    # Large enough that 3 threads split the work (every kernel's threshold is <= 2**17
    # elements per thread), odd so the chunks have tails. In a subprocess with a timeout, so
    # that a hang fails one test instead of the run.
    code = PROBE + WORKLOAD + r'''
out = {}
for path in fastadam.available_simd_paths():
    fastadam.set_simd_path(path)
    for threads in (1, 2, 3):
        fastadam.set_num_threads(threads)
        out[f"{path}/{threads}"] = digests(fastadam, n=3 * 2**17 + 37, steps=2)
print(json.dumps(out))
'''
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=child_env(), timeout=WATCHDOG_S, cwd=HERE)
    except subprocess.TimeoutExpired as e:
        out = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"a threaded step hung (no result after {WATCHDOG_S} s); stderr:\n{out}")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    first = runs["baseline/1"]
    assert all(got == first for got in runs.values()), sorted(
        run for run, got in runs.items() if got != first)


def test_set_simd_path():
    old = fastadam.get_simd_path()
    with pytest.raises(ValueError, match="Invalid SIMD path 'bogus'"):
        fastadam.set_simd_path("bogus")
    assert fastadam.get_simd_path() == old            # a refused path changes nothing
    try:
        for path in fastadam.available_simd_paths():
            assert fastadam.set_simd_path(path) in fastadam.available_simd_paths()
            assert fastadam.get_simd_path() == path
    finally:
        fastadam.set_simd_path(old)
    assert fastadam.get_simd_path() == old
