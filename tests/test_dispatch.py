"""Runtime SIMD dispatch: the path follows the CPU, every path gives the same bits, and the
FASTADAM_SIMD / FASTADAM_NUM_THREADS environment variables and set_simd_path behave.

The CPU is varied with qemu-user (Debian's qemu-user package): ``qemu-x86_64 -cpu Nehalem``
runs this same Python on an emulated SSE4.2 CPU without AVX, ``-cpu Haswell`` on one with
AVX2 and FMA but no AVX-512, so one x86-64 machine checks that dispatch picks 'baseline'
and 'avx2' from what CPUID reports, and that the emulated runs give the bits this process
gets natively on every path it has (including 'avx512' where the host has it: qemu 7.2's
TCG cannot emulate AVX-512, so that path is only checked natively).

Natively, the paths this CPU must get come from its own feature flags (tests/cpu_expect.py),
not from the package: a path that is not built, or whose module fails to import, fails here.

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
from cpu_expect import expected_simd_paths, linux_cpu_flags, macos_cpu_flags, paths_for

# A watchdog for a hang, not a speed limit: the child takes seconds; 300 s leaves room for
# a loaded machine and the sanitizer build (several times slower).
WATCHDOG_S = 300

needs_qemu = pytest.mark.skipif(QEMU is None or not X86_64,
                                reason="needs qemu-x86_64 (qemu-user) on an x86-64 machine")


# 16-bit layouts for the digests: all-bfloat16 with stochastic rounding, all-float16, a
# float32 param with a bfloat16 param_copy, float32 params with float16 states (and
# grads). The 16-bit inputs are rounded by fastadam._rounding (integer arithmetic), so they
# are the same bits on every CPU. ``bfloat16=False`` leaves out the layouts that need
# ml_dtypes, whose import takes seconds under qemu.
HALF_WORKLOAD = r'''
from fastadam import _rounding


def half_workload(F, n=1037, steps=2, bfloat16=True):
    """{case/layout: [param, param_copy or nothing, *states]} after ``steps`` steps."""
    f32, f16 = np.dtype("float32"), np.dtype("float16")
    narrow = {f16: _rounding.narrow_f16}
    if bfloat16:
        import ml_dtypes
        bf16 = np.dtype(ml_dtypes.bfloat16)
        narrow[bf16] = _rounding.narrow_bf16

    def stored(x, dtype):
        return x.astype(f32) if dtype == f32 else narrow[dtype](x).view(dtype)

    rng = np.random.default_rng(7)
    p0 = ((rng.random(n) - 0.5) * 2.0).astype(f32)
    grads = [((rng.random(n) - 0.5) * 0.2).astype(f32) for _ in range(steps)]
    layouts = [  # name, param, grad, states, param_copy dtype, rounding
        ("f16", f16, f16, f16, None, "nearest"),
        ("f32_f16_states", f32, f16, f16, None, "nearest"),
    ]
    if bfloat16:
        layouts += [("bf16_sr", bf16, bf16, bf16, None, "stochastic"),
                    ("f32_bf16_copy", f32, f32, f32, bf16, "nearest")]
    cases = [   # name, function, positional states, keyword states, hyper, takes step
        ("adam_amsgrad", F.adam_, ["exp_avg", "exp_avg_sq"], ["max_exp_avg_sq"],
         dict(lr=1e-2, amsgrad=True, weight_decay=0.1), True),
        ("sgd_nesterov", F.sgd_, [], ["momentum_buffer"],
         dict(lr=0.1, momentum=0.9, nesterov=True), True),
    ]
    results = {}
    for lay, pdt, gdt, sdt, cdt, rounding in layouts:
        gs = [stored(g, gdt) for g in grads]
        for name, fn, pos, kw, hyper, stepped in cases:
            p = stored(p0, pdt)
            states = {k: stored(np.zeros(n, f32), sdt) for k in pos + kw}
            copy = None if cdt is None else np.zeros(n, cdt)
            for t, g in enumerate(gs, 1):
                fn(p, g, *[states[k] for k in pos], **{k: states[k] for k in kw}, **hyper,
                   **(dict(step=t) if stepped else {}), param_copy=copy, rounding=rounding,
                   seed=11)
            results[f"{name}/{lay}"] = [p] + ([] if copy is None else [copy]) + [
                states[k] for k in pos + kw]
    return results


def half_digests(F, **kwargs):
    return {key: hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()
            for key, arrays in half_workload(F, **kwargs).items()}
'''
_half = {}
exec(WORKLOAD + HALF_WORKLOAD, _half)


def _probe(env=None, cpu=None, with_digests=False, bfloat16=True):
    """check_cpus.probe, with or without the workloads' digests: (info, stderr)."""
    code = (WITH_DIGESTS + HALF_WORKLOAD
            + f'info["half_digests"] = half_digests(fastadam, bfloat16={bfloat16})\n'
            if with_digests else "")
    info, _, stderr = probe(cpu=cpu, env=env, code=code)
    return info, stderr


def _expected():
    """The paths this CPU must get (from its feature flags); skip where the OS lists none."""
    expected = expected_simd_paths()
    if expected is None:
        pytest.skip(f"this OS ({sys.platform}) lists no CPU features to derive the paths from")
    return expected


def _skip_unless_emulated(stderr, feature):
    # A model whose features qemu cannot emulate is not the CPU it names: say so, not fail.
    gap = not_emulated(stderr, feature)
    if gap:
        pytest.skip(f"this qemu cannot emulate {feature}: {gap}")


@pytest.fixture(scope="module")
def native_digests():
    """{path: digests} for every path this CPU and build have, computed in this process."""
    return _native_digests()


@pytest.fixture(scope="module")
def native_half_digests():
    """{path: 16-bit layouts' digests} for every path this CPU and build have."""
    result = {}
    old = fastadam.get_simd_path()
    try:
        for path in fastadam.available_simd_paths():
            fastadam.set_simd_path(path)
            result[path] = _half["half_digests"](fastadam)
    finally:
        fastadam.set_simd_path(old)
    return result


def test_native_paths_agree_bit_for_bit(native_digests, native_half_digests):
    assert "baseline" in native_digests
    for digests in (native_digests, native_half_digests):
        expected = digests["baseline"]
        for path, got in digests.items():
            differ = sorted(k for k in expected if got[k] != expected[k])
            assert not differ, f"path {path!r} differs from 'baseline' on {differ}"


def test_half_workload_moves_every_array():
    # The 16-bit digests compare real updates: every param, copy and state changes.
    start = _half["half_workload"](fastadam, steps=0)
    for key, arrays in _half["half_workload"](fastadam).items():
        assert len(arrays) == len(start[key])
        for i, (a, b) in enumerate(zip(arrays, start[key])):
            assert a.tobytes() != b.tobytes(), f"{key} array {i} did not change"


def test_workload_matches_reference():
    # The digests compare real updates: the workload's results follow fastadam.reference
    # (to the accuracy docs/contract.md#accuracy gives for 100 steps) and differ from the
    # starting values.
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
def test_nehalem_runs_baseline_with_the_same_bits(native_digests, native_half_digests):
    # float16 only: its software conversions (no F16C); bfloat16's are integer arithmetic
    info, _ = _probe(cpu="Nehalem", with_digests=True, bfloat16=False)
    assert info["path"] == "baseline"
    assert info["available"] == ["baseline"]          # neither avx2 nor avx512
    assert info["modules"] == ["fastadam._simd_baseline"]   # the others were not imported
    assert info["broken"] == {}
    assert info["warnings"] == []
    assert info["digests"] == native_digests["baseline"]
    native = native_half_digests["baseline"]
    assert info["half_digests"] == {k: v for k, v in native.items() if "bf16" not in k}


@needs_qemu
def test_haswell_runs_avx2_with_the_same_bits(native_digests, native_half_digests):
    info, stderr = _probe(cpu="Haswell", with_digests=True)
    _skip_unless_emulated(stderr, "avx2")
    assert info["path"] == "avx2"
    assert info["available"] == ["baseline", "avx2"]  # no avx512
    assert "fastadam._simd_avx512" not in info["modules"]
    assert info["broken"] == {}
    assert info["warnings"] == []
    for path, expected in native_digests.items():
        assert info["digests"] == expected, f"Haswell/avx2 differs from native {path!r}"
    for path, expected in native_half_digests.items():
        assert info["half_digests"] == expected, \
            f"Haswell/avx2 differs from native {path!r} on 16-bit layouts"


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
    if want not in _expected():
        pytest.skip(f"this CPU has no {want!r} path")
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


def test_this_cpu_gets_every_path_its_features_call_for():
    # The CPU's flags, not the package's list: a path missing from the build, or whose module
    # fails to import (an undefined symbol, say), fails here with the module's error.
    expected = _expected()
    broken = fastadam._core.simd_import_errors()
    assert broken == {}, f"SIMD modules that failed to import: {broken}"
    assert list(fastadam.available_simd_paths()) == expected


def test_default_path_is_the_highest_the_cpu_calls_for():
    expected = _expected()
    info, _ = _probe()      # without FASTADAM_* settings
    assert info["path"] == expected[-1]
    assert info["available"] == expected
    assert info["broken"] == {}
    assert info["warnings"] == []


def test_a_broken_simd_module_is_reported_and_the_rest_run():
    # An import that fails (here: raised by an import hook, as an undefined symbol would be)
    # leaves that path out, keeps its error for show_config(), and dispatch takes the best
    # of the others; a CPU without the path never imports its module (it is not broken).
    expected = _expected()
    if len(expected) < 2:
        pytest.skip("this CPU calls for the baseline path only")
    top = expected[-1]
    hook = f"""
import importlib.abc
import sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fastadam._simd_{top}":
            raise ImportError("injected: undefined symbol fa_{top}_table")

sys.meta_path.insert(0, Refuse())
"""
    code = hook + PROBE + "fastadam.show_config()\nprint(json.dumps(info))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=120, cwd=HERE)
    assert proc.returncode == 0, proc.stderr
    *printed, last = proc.stdout.strip().splitlines()
    info = json.loads(last)
    error = f"ImportError: injected: undefined symbol fa_{top}_table"
    assert info["broken"] == {top: error}
    assert info["available"] == expected[:-1]
    assert info["path"] == expected[-2]
    assert "simd_paths_broken:" in printed
    assert f"  {top:<9} {error}" in printed


def test_expected_paths_follow_the_flags():
    # cpu_expect's table itself, on flag sets of known CPUs (as /proc/cpuinfo names them).
    nehalem = {"sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt"}
    haswell = nehalem | {"xsave", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2"}
    skylake_x = haswell | {"avx512f", "avx512vl", "avx512dq", "avx512bw", "avx512cd"}
    assert paths_for(nehalem, "x86_64") == ["baseline"]
    assert paths_for(haswell, "x86_64") == ["baseline", "avx2"]
    assert paths_for(skylake_x, "AMD64") == ["baseline", "avx2", "avx512"]
    assert paths_for(haswell - {"fma"}, "x86_64") == ["baseline"]      # dispatch needs FMA
    assert paths_for(haswell - {"f16c"}, "x86_64") == ["baseline"]     # and F16C
    assert paths_for(skylake_x - {"avx512bw"}, "x86_64") == ["baseline", "avx2"]
    assert paths_for(skylake_x - {"avx2"}, "x86_64") == ["baseline"]   # no AVX-512 alone
    assert paths_for(skylake_x, "aarch64") == ["baseline"]             # only x86-64 has more
    assert linux_cpu_flags("processor\t: 0\nflags\t\t: fpu avx2 fma\nbugs\t: x\n") == {
        "fpu", "avx2", "fma"}
    assert paths_for(macos_cpu_flags("FPU AVX1.0 FMA F16C\nAVX2 AVX512F AVX512DQ AVX512BW "
                                     "AVX512VL\n"), "x86_64") == ["baseline", "avx2", "avx512"]


def test_fastadam_num_threads():
    info, _ = _probe(env={"FASTADAM_NUM_THREADS": "3"})
    assert info["threads"] == 3
    assert info["warnings"] == []


def test_local_world_size_shares_the_cpus():
    """Ranks on one node (torchrun's LOCAL_WORLD_SIZE) split this process's CPUs; an
    invalid value warns and is ignored; FASTADAM_NUM_THREADS wins."""
    import os
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    for ranks, want in (("1", cpus), ("2", max(1, cpus // 2)), ("1000", 1)):
        info, _ = _probe(env={"LOCAL_WORLD_SIZE": ranks, "FASTADAM_NUM_THREADS": ""})
        assert info["threads"] == want, (ranks, info["threads"])
        assert info["warnings"] == []
    for bad in ("x", "0"):
        info, _ = _probe(env={"LOCAL_WORLD_SIZE": bad, "FASTADAM_NUM_THREADS": ""})
        assert info["threads"] == cpus
        assert any("LOCAL_WORLD_SIZE" in w[-1] for w in info["warnings"]), info["warnings"]
    info, _ = _probe(env={"LOCAL_WORLD_SIZE": "2", "FASTADAM_NUM_THREADS": "3"})
    assert info["threads"] == 3


def test_thread_counts_and_paths_agree_bit_for_bit():
    # Large enough that 3 threads split the work (every kernel's threshold is <= 2**17
    # elements per thread; the 16-bit layouts' Adam and SGD <= 2**16), odd so the chunks
    # have tails. In a subprocess with a timeout, so
    # that a hang fails one test instead of the run.
    code = PROBE + WORKLOAD + HALF_WORKLOAD + r'''
out = {}
for path in fastadam.available_simd_paths():
    fastadam.set_simd_path(path)
    for threads in (1, 2, 3):
        fastadam.set_num_threads(threads)
        out[f"{path}/{threads}"] = digests(fastadam, n=3 * 2**17 + 37, steps=2)
        out[f"{path}/{threads}"].update(half_digests(fastadam, n=3 * 2**16 + 37))
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
