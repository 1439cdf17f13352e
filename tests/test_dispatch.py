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
import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastadam
import fastadam.reference

QEMU = shutil.which("qemu-x86_64")
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
# The subprocesses import the same fastadam as this test process.
FASTADAM_ROOT = os.path.dirname(os.path.dirname(fastadam.__file__))
# Children run here, not in the repository root: `python -c` puts its cwd first on sys.path,
# and the source tree's fastadam/ has no built modules.
HERE = os.path.dirname(os.path.abspath(__file__))
QEMU_TIMEOUT = 300      # seconds; an emulated run takes a few seconds here, mostly imports

needs_qemu = pytest.mark.skipif(QEMU is None or not X86_64,
                                reason="needs qemu-x86_64 (qemu-user) on an x86-64 machine")


# A few steps of every kernel, with its main options, on float32 and float64 arrays of an
# odd size (SIMD tails), run here on every path and in the emulated processes. The inputs
# come from rng.random and + - * only (exact IEEE operations), so they are the same bits on
# every CPU; ``F`` is fastadam or fastadam.reference (same signatures).
WORKLOAD = r'''
import hashlib
import numpy as np


def workload(F, n=1037, steps=4):
    """{case/dtype: [param, *states]} after ``steps`` steps."""
    results = {}
    for dtype in ("float32", "float64"):
        rng = np.random.default_rng(2024)
        p0 = ((rng.random(n) - 0.5) * 2.0).astype(dtype)
        grads = [((rng.random(n) - 0.5) * 0.2).astype(dtype) for _ in range(steps)]
        cases = [   # name, function, positional states, keyword states, hyper, takes step
            ("adam", F.adam_, ["exp_avg", "exp_avg_sq"], [], dict(lr=1e-2), True),
            ("adam_amsgrad_l2_maximize", F.adam_, ["exp_avg", "exp_avg_sq"],
             ["max_exp_avg_sq"], dict(lr=1e-2, amsgrad=True, weight_decay=0.1,
                                      maximize=True), True),
            ("adamw", F.adamw_, ["exp_avg", "exp_avg_sq"], [], dict(lr=1e-2, weight_decay=0.1),
             True),
            ("sgd", F.sgd_, [], [], dict(lr=0.1), False),
            ("sgd_nesterov", F.sgd_, [], ["momentum_buffer"],
             dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), True),
            ("rmsprop", F.rmsprop_, ["square_avg"], [], dict(lr=1e-2), False),
            ("rmsprop_centered_momentum", F.rmsprop_, ["square_avg"],
             ["momentum_buffer", "grad_avg"], dict(lr=1e-2, momentum=0.9, centered=True),
             False),
        ]
        for name, fn, pos, kw, hyper, stepped in cases:
            p = p0.copy()
            states = {k: np.zeros_like(p) for k in pos + kw}
            for t, g in enumerate(grads, 1):
                fn(p, g, *[states[k] for k in pos], **{k: states[k] for k in kw}, **hyper,
                   **(dict(step=t) if stepped else {}))
            results[f"{name}/{dtype}"] = [p] + [states[k] for k in pos + kw]
    return results


def digests(F, **kwargs):
    return {key: hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()
            for key, arrays in workload(F, **kwargs).items()}
'''

# What a subprocess reports: the path it chose, the paths it has, its thread count and the
# warnings raised while importing fastadam (then, with the workload, its digests).
PROBE = r'''
import json
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastadam
info = {"path": fastadam.get_simd_path(), "available": list(fastadam.available_simd_paths()),
        "threads": fastadam.get_num_threads(),
        "warnings": [[w.category.__name__, str(w.message)] for w in caught]}
'''

ns = {}
exec(WORKLOAD, ns)
workload, digests = ns["workload"], ns["digests"]


def _env(extra=None):
    """This environment without FASTADAM_* settings, importing this process's fastadam."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTADAM_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (FASTADAM_ROOT, os.environ.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def _probe(env=None, cpu=None, with_digests=False):
    """Run PROBE (+ the workload) in a fresh interpreter, under ``qemu-x86_64 -cpu <cpu>``
    if ``cpu``; return (its info dict, its stderr)."""
    code = PROBE
    if with_digests:
        code += WORKLOAD + 'info["digests"] = digests(fastadam)\n'
    code += "print(json.dumps(info))\n"
    cmd = [sys.executable, "-c", code]
    if cpu:
        cmd = [QEMU, "-cpu", cpu] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(env),
                          timeout=QEMU_TIMEOUT if cpu else 60, cwd=HERE)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _skip_unless_emulated(stderr, feature):
    # qemu warns "TCG doesn't support requested feature: CPUID.07H:EBX.avx2 [bit 5]" when it
    # cannot emulate a feature of the model (AVX2 needs qemu >= 7.2): then the model is not
    # the CPU it names, and the test says so instead of failing.
    if re.search(r"doesn't support requested feature: \S+\." + feature + r"\b", stderr):
        pytest.skip(f"this qemu cannot emulate {feature}: {stderr.strip().splitlines()[0]}")


@pytest.fixture(scope="module")
def native_digests():
    """{path: digests} for every path this CPU and build have, computed in this process."""
    result = {}
    old = fastadam.get_simd_path()
    try:
        for path in fastadam.available_simd_paths():
            fastadam.set_simd_path(path)
            result[path] = digests(fastadam)
    finally:
        fastadam.set_simd_path(old)
    return result


def test_native_paths_agree_bit_for_bit(native_digests):
    assert "baseline" in native_digests
    expected = native_digests["baseline"]
    for path, got in native_digests.items():
        differ = sorted(k for k in expected if got[k] != expected[k])
        assert not differ, f"path {path!r} differs from 'baseline' on {differ}"


def test_workload_matches_reference():
    # The digests compare real updates: the workload's results follow fastadam.reference
    # (to the accuracy SPEC §2 gives for 100 steps) and differ from the starting values.
    fast, ref = workload(fastadam), workload(fastadam.reference)
    start = workload(fastadam, steps=0)
    for key, arrays in fast.items():
        rtol, atol = (1e-5, 1e-6) if key.endswith("float32") else (1e-12, 1e-14)
        for got, want in zip(arrays, ref[key]):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=key)
        assert not np.array_equal(arrays[0], start[key][0]), key


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
                              env=_env(), timeout=15, cwd=HERE)
    except subprocess.TimeoutExpired:
        pytest.fail("a threaded step hung (no result after 15 s)")
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
