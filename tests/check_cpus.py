"""Run the fastadam this Python imports on emulated CPUs and natively: which SIMD path each
CPU selects, and whether its results are right.

    python tests/check_cpus.py [--require-qemu]

For each CPU model, a fresh interpreter (under ``qemu-x86_64 -cpu MODEL``, from Debian's
qemu-user, or natively) imports fastadam, prints ``fastadam.show_config()``, runs a few
steps of every kernel and checks them against ``fastadam.reference`` (docs/contract.md#accuracy's
tolerances) and, bit for bit, against this process's results on every path it has:

    Nehalem   SSE4.2, no AVX            -> must select 'baseline'
    Haswell   AVX2 and FMA, no AVX-512  -> must select 'avx2'
    native    this machine              -> must have the paths its own feature flags call
                                           for (tests/cpu_expect.py) and select the highest

qemu 7.2's TCG cannot emulate AVX-512, so 'avx512' is only checked natively (where the host
has it). Exits non-zero if any check fails, or, with --require-qemu, if the emulated models
cannot run. .ci/run calls this against the installed wheel; tests/test_dispatch.py imports
the helpers below for its own tests.

Run it from outside the repository root (or as ``python tests/check_cpus.py``, which puts
tests/ first on sys.path, not the root), so that ``import fastadam`` finds the installed
package.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import sys

import fastadam
from cpu_expect import expected_simd_paths

QEMU = shutil.which("qemu-x86_64")
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
# The subprocesses import the same fastadam as this process.
FASTADAM_ROOT = os.path.dirname(os.path.dirname(fastadam.__file__))
# Children run here, not in the repository root: `python -c` puts its cwd first on sys.path,
# and the source tree's fastadam/ has no built modules.
HERE = os.path.dirname(os.path.abspath(__file__))
QEMU_TIMEOUT = 300      # seconds; an emulated run takes a few seconds here, mostly imports

# A few steps of every kernel, with its main options, on float32 and float64 arrays of an
# odd size (SIMD tails). The inputs come from rng.random and + - * only (exact IEEE
# operations), so they are the same bits on every CPU; ``F`` is fastadam or
# fastadam.reference (same signatures). Run here and, as source, in the child processes.
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


def reference_errors(F, R):
    """What in F's workload is not R's to the accuracy of docs/contract.md#accuracy
    (float32: rtol 1e-5, atol 1e-6; float64: rtol 1e-12, atol 1e-14), or did not move the
    param at all: [] when all is well.
    """
    fast, ref, start = workload(F), workload(R), workload(F, steps=0)
    errors = []
    for key, arrays in fast.items():
        rtol, atol = (1e-5, 1e-6) if key.endswith("float32") else (1e-12, 1e-14)
        for i, (got, want) in enumerate(zip(arrays, ref[key])):
            if not np.allclose(got, want, rtol=rtol, atol=atol):
                worst = float(np.max(np.abs(got - want)))
                errors.append(f"{key} array {i}: max |fast - reference| = {worst:.3g}")
        if np.array_equal(arrays[0], start[key][0]):
            errors.append(f"{key}: the param did not change")
    return errors
'''

# What a subprocess reports: the path it chose, the paths it has, the SIMD modules that
# failed to import and those it imported, its thread count and the warnings raised while
# importing fastadam.
PROBE = r'''
import json
import sys
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastadam
info = {"path": fastadam.get_simd_path(), "available": list(fastadam.available_simd_paths()),
        "broken": fastadam._core.simd_import_errors(),
        "modules": sorted(m for m in sys.modules if m.startswith("fastadam._simd_")),
        "threads": fastadam.get_num_threads(),
        "warnings": [[w.category.__name__, str(w.message)] for w in caught]}
'''

# With the workload: its digests, and how it compares with the reference.
WITH_DIGESTS = WORKLOAD + 'info["digests"] = digests(fastadam)\n'

_ns = {}
exec(WORKLOAD, _ns)
workload, digests, reference_errors = (_ns["workload"], _ns["digests"],
                                       _ns["reference_errors"])


def child_env(extra=None):
    """This environment without FASTADAM_* settings, importing this process's fastadam."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTADAM_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (FASTADAM_ROOT, os.environ.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def probe(cpu=None, env=None, code=""):
    """Run PROBE + ``code`` in a fresh interpreter, under ``qemu-x86_64 -cpu <cpu>`` if
    ``cpu``; return (its info dict, what it printed before the info, its stderr).
    Raises AssertionError if it fails."""
    cmd = [sys.executable, "-c", PROBE + code + "print(json.dumps(info))\n"]
    if cpu:
        cmd = [QEMU, "-cpu", cpu] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(env),
                          timeout=QEMU_TIMEOUT, cwd=HERE)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stderr}"
    *printed, last = proc.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed), proc.stderr


def not_emulated(stderr, feature):
    """qemu's warning that it cannot emulate ``feature`` of the model asked for, or None.

    qemu prints "TCG doesn't support requested feature: CPUID.07H:EBX.avx2 [bit 5]" when
    it cannot (AVX2 needs qemu >= 7.2): the model is then not the CPU it names."""
    m = re.search(r".*doesn't support requested feature: \S+\." + feature + r"\b.*", stderr)
    return m.group(0) if m else None


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


# model -> (qemu -cpu name or None for native, paths it must have, an AVX feature qemu must
# emulate for the model to be what it names). The native CPU's paths come from its own
# feature flags (cpu_expect.py); an emulated one's from its model, since /proc/cpuinfo shows
# the host under qemu-user.
MODELS = {
    "native": (None, None, None),
    "Haswell": ("Haswell", ["baseline", "avx2"], "avx2"),
    "Nehalem": ("Nehalem", ["baseline"], None),
}


def check(model, expected_digests):
    """Run ``model``; return (summary row, [problems])."""
    cpu, must_have, feature = MODELS[model]
    if must_have is None:
        must_have = expected_simd_paths()
        if must_have is None:
            return ((model, "?", "?", "?", "?"),
                    [f"this OS lists no CPU features to derive the expected paths from "
                     f"({sys.platform})"])
    code = (WITH_DIGESTS + "import fastadam.reference\nfastadam.show_config()\n"
            'info["reference_errors"] = reference_errors(fastadam, fastadam.reference)\n'
            'info["file"] = fastadam.__file__\n')
    info, printed, stderr = probe(cpu=cpu, code=code)
    print(f"--- {model}" + (f" (qemu-x86_64 -cpu {cpu})" if cpu else " (no emulation)"))
    print(printed)
    problems = []
    gap = not_emulated(stderr, feature) if feature else None
    if gap:
        problems.append(f"this qemu cannot emulate {model}: {gap}")
    if info["file"] != fastadam.__file__:
        problems.append(f"imported {info['file']}, not {fastadam.__file__}")
    if info["available"] != must_have:
        problems.append(f"has paths {info['available']}, expected {must_have}")
    beyond = [m for m in info["modules"] if m.rpartition("_simd_")[2] not in must_have]
    if beyond:
        problems.append(f"imported modules this CPU cannot run: {beyond}")
    if info["broken"]:
        problems.append(f"SIMD modules that failed to import: {info['broken']}")
    if info["path"] != must_have[-1]:
        problems.append(f"selected {info['path']!r}, expected {must_have[-1]!r}")
    if info["warnings"]:
        problems.append(f"warnings at import: {info['warnings']}")
    problems += [f"against the reference: {e}" for e in info["reference_errors"]]
    same = [p for p, d in expected_digests.items() if d == info["digests"]]
    if same != list(expected_digests):
        differ = sorted(set(expected_digests) - set(same))
        problems.append(f"its bits differ from this process's on {differ}")
    row = (model, info["path"], ", ".join(info["available"]),
           "WRONG" if info["reference_errors"] else "ok",
           "same as native " + "/".join(same) if same else "DIFFERENT")
    return row, problems


def main(argv):
    require_qemu = "--require-qemu" in argv
    print(f"fastadam {fastadam.__version__} from {os.path.dirname(fastadam.__file__)}")
    expected = native_digests()
    models, problems, rows, passed, failed = ["native"], [], [], 0, 0
    if QEMU and X86_64:
        models += ["Haswell", "Nehalem"]
    elif require_qemu:
        problems.append("qemu-x86_64 (Debian's qemu-user) on an x86-64 machine is required; "
                        f"found {QEMU!r} on {platform.machine()}")
        failed += 2     # the emulated models could not run
    else:
        print("qemu-x86_64 not found (or not x86-64): only the native CPU is checked")
    for model in models:
        row, found = check(model, expected)
        rows.append(row)
        problems += [f"{model}: {p}" for p in found]
        passed, failed = passed + (not found), failed + bool(found)
    print("\ncpu model  simd path  paths available         vs reference  bits")
    for model, path, available, ref, bits in rows:
        print(f"{model:<10} {path:<10} {available:<23} {ref:<13} {bits}")
    print("selected: " + " ".join(f"{model}={path}" for model, path, *_ in rows))
    for p in problems:
        print("FAILED:", p)
    print(f"check_cpus: {passed} passed, {failed} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
