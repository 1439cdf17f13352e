"""Injected faults: each is applied to a scratch copy of the sources, and the checks that
must catch it are run on that copy and must fail, saying what they found. This repeats the
table of deliberately broken kernels in docs/development.md; it is not part of .ci/run
(about 10 minutes, most of it the sanitizer builds and suites).

    python .ci/mutants.py                          # every fault, every check
    python .ci/mutants.py --only overflow          # one fault (names: --list)
    python .ci/mutants.py --no-sanitize            # only the checks on a normal build

Per fault, two kinds of check:
- "build": a normal in-place build of the copy (python setup.py build_ext --inplace), then
  the named tests run against it (PYTHONPATH = the copy);
- "sanitize": the copy's own `.ci/sanitize.sh` (an ASan + UBSan build, the whole suite,
  LeakSanitizer on .ci/leak_loop.py), reusing one virtual environment for every fault.
A check passes when its command exits non-zero and its output has the expected text; the
script exits 1 if any check does not. The checkout is never touched, and a fault that no
longer applies to the sources (the code it edits has changed) is an error, not a pass.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = "fastadam/kernels/sgd.pxi"

# The body of sgd_loop that each fault edits.
SGD_HEAD = ("    cdef real gi, pi, b\n"
            "    cdef Py_ssize_t i\n"
            "    for i in range(lo, hi):\n"
            "        pi = p[i]\n"
            "        gi = gmul * g[i]\n")

FAULTS = {
    "overrun": dict(
        what="sgd_loop loops to hi + 1: one element read and written past the end",
        edits=[(SGD_HEAD, SGD_HEAD.replace("range(lo, hi)", "range(lo, hi + 1)"))],
        build=(["tests/test_fuzz.py::test_fuzz_functional"], r"a byte outside every array changed"),
        sanitize=r"AddressSanitizer: heap-buffer-overflow",
    ),
    "overflow": dict(
        what="sgd_loop computes int k = hi; k = k + 2147483647 (signed overflow)",
        edits=[(SGD_HEAD, SGD_HEAD.replace(
            "    cdef Py_ssize_t i\n",
            "    cdef Py_ssize_t i\n    cdef int k = <int>hi\n    k = k + 2147483647\n"
            "    if k == 7:\n        return\n"))],
        build=None,         # defined behaviour under -fwrapv: only UBSan sees it
        sanitize=r"runtime error: signed integer overflow",
    ),
    "leak": dict(
        what="sgd_loop mallocs 24 bytes per call and never frees them",
        # The pointer is tested (its top bit, 0 in user space), so that the compiler cannot
        # drop the unused allocation, and then lost.
        edits=[("# States: momentum_buffer (s[0]).\n",
                "# States: momentum_buffer (s[0]).\nfrom libc.stdlib cimport malloc\n"),
               (SGD_HEAD, SGD_HEAD.replace("    cdef Py_ssize_t i\n",
                                           "    cdef Py_ssize_t i\n"
                                           "    if (<size_t>malloc(24)) >> 63:\n"
                                           "        return\n"))],
        build=(["tests/test_optim.py::test_resident_memory_flat_over_100000_steps[SGD]"],
               r"resident memory grew by \d+ bytes"),
        sanitize=r"leak check: .* [1-9]\d* from fastadam or growing",
    ),
}


def scratch_copy(dest):
    """The checkout's tracked files (no build products) copied into ``dest``."""
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for f in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, f)):
            os.makedirs(os.path.dirname(os.path.join(dest, f)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))


def apply(dest, edits):
    path = os.path.join(dest, KERNELS)
    src = open(path).read()
    for old, new in edits:
        if src.count(old) != 1:
            raise SystemExit(f"mutants: the fault no longer applies: {old!r} occurs "
                             f"{src.count(old)} times in {KERNELS}")
        src = src.replace(old, new)
    open(path, "w").write(src)


def run(cmd, log, **kw):
    """Run ``cmd``; its output goes to ``log``. Returns (exit status, output, seconds)."""
    start = time.perf_counter()
    with open(log, "w") as f:
        status = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, **kw).returncode
    return status, open(log, errors="replace").read(), time.perf_counter() - start


def check(name, kind, status, out, pattern, seconds, log):
    found = re.search(pattern, out)
    ok = status != 0 and found is not None
    line = "(expected text not found)"
    if found:       # the whole line the match is in, as evidence (pytest's "E" line first)
        lines = [t.strip() for t in out.splitlines() if found.group(0) in t]
        line = next((t for t in lines if t.startswith("E ")), lines[0] if lines else line)
    print(f"  {kind:<9} {'caught' if ok else 'MISSED'}: exit {status} after {seconds:.0f} s: "
          f"{line[:200]}" + ("" if ok else f"  (log: {log})"), flush=True)
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(FAULTS), help="these faults only")
    ap.add_argument("--no-sanitize", action="store_true", help="skip the sanitizer checks")
    ap.add_argument("--list", action="store_true", help="list the faults and exit")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args(argv)
    if args.list:
        for name, f in FAULTS.items():
            print(f"{name:<9} {f['what']}")
        return 0
    work = tempfile.mkdtemp(prefix="fastadam-mutants-")
    venv = os.path.join(work, "sanitize-venv")      # shared by every sanitizer run
    print(f"mutants: scratch folder {work}", flush=True)
    missed = 0
    try:
        for name in args.only or list(FAULTS):
            fault = FAULTS[name]
            print(f"{name}: {fault['what']}", flush=True)
            dest = os.path.join(work, name)
            scratch_copy(dest)
            apply(dest, fault["edits"])
            if fault["build"]:
                tests, pattern = fault["build"]
                log = os.path.join(work, f"{name}-build.log")
                status, out, sec = run([sys.executable, "setup.py", "build_ext", "--inplace",
                                        "-j", "2"], log, cwd=dest)
                if status != 0:
                    print(f"  build     MISSED: the copy did not build (log: {log})")
                    missed += 1
                else:
                    log = os.path.join(work, f"{name}-tests.log")
                    env = dict(os.environ, PYTHONPATH=dest)
                    status, out, sec = run(
                        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
                         *[os.path.join(dest, t) for t in tests]], log, cwd=work, env=env)
                    missed += not check(name, "build", status, out, pattern, sec, log)
            if args.no_sanitize and not fault["build"]:
                print("  (only the sanitizer build catches this one: not run)", flush=True)
            if not args.no_sanitize:
                log = os.path.join(work, f"{name}-sanitize.log")
                status, out, sec = run(["bash", os.path.join(dest, ".ci", "sanitize.sh"), venv],
                                       log, cwd=work)
                missed += not check(name, "sanitize", status, out, fault["sanitize"], sec, log)
            if not args.keep:
                shutil.rmtree(dest, ignore_errors=True)
    finally:
        if not args.keep and not missed:
            shutil.rmtree(work, ignore_errors=True)
    print(f"mutants: {'every fault caught' if not missed else f'{missed} check(s) missed'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
