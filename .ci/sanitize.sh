#!/usr/bin/env bash
# Build fastadam with AddressSanitizer + UndefinedBehaviorSanitizer (FASTADAM_SANITIZE=1, the
# flags in fastadam/_flags.py), run the whole test suite on that build, then LeakSanitizer
# on a focused loop (.ci/leak_loop.py). Exits non-zero when the build fails, a test fails,
# or a sanitizer reports anything.
#
#   bash .ci/sanitize.sh [VENV]      # VENV: a virtual environment to (re)use; default: a new one
#
# The build is made from a clean copy of the tree in a temporary folder, so the checkout's
# in-place .so files and build/ are never touched, and installed (not editable) into VENV.
# Python itself is not built with ASan, so libasan is preloaded (LD_PRELOAD) and
#   - detect_leaks=0 for the suite: CPython keeps objects, caches and module state alive
#     until exit by design, and a whole test session leaves too many such "leaks" to tell
#     fastadam's apart. LeakSanitizer runs on .ci/leak_loop.py instead: every entry point
#     N times, where only leaks that grow with N or come from fastadam's modules count;
#   - PYTHONMALLOC=malloc: Python's small-object allocator would hide Python-side objects
#     from ASan inside its own arenas; with malloc every object gets redzones;
#   - abort_on_error / halt_on_error / -fno-sanitize-recover: the first report kills the
#     process, so the test (or pytest itself) fails; a report in a child process (the
#     tests' subprocesses inherit this environment) fails the test that started it.
# Not run here:
#   - the three qemu-user dispatch tests of tests/test_dispatch.py: qemu-x86_64 with the ASan
#     runtime preloaded does not start (killed by SIGKILL after ~50 s, no output); they test
#     which path dispatch picks on other CPUs, and the same kernels run natively here on
#     every SIMD path this CPU has;
#   - tests/test_optim.py's resident-memory test skips itself: ASan keeps freed memory in
#     quarantine, so the resident set grows by design (the normal run checks it);
#   - the venv has the `test` extra only: the tests that need torch or the examples' extra
#     skip. These skips, and no others, are allowed: --strict-skips=sanitize
#     (tests/allowed_skips.txt's [sanitize] section) fails the run on any other.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
START=$SECONDS

ASAN_LIB="$(gcc -print-file-name=libasan.so)"
UBSAN_LIB="$(gcc -print-file-name=libubsan.so)"
if [ ! -e "$ASAN_LIB" ] || [ ! -e "$UBSAN_LIB" ]; then
    # gcc's sanitizer runtimes; Debian's gcc normally brings them.
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq libasan8 libubsan1 >/dev/null
    fi
    ASAN_LIB="$(gcc -print-file-name=libasan.so)"
    [ -e "$ASAN_LIB" ] || { echo "sanitize: gcc has no libasan (install libasan8)" >&2; exit 1; }
fi
ASAN_LIB="$(readlink -f "$ASAN_LIB")"

WORK="$(mktemp -d)"
# The temporary folder (copy, build, logs, and the venv unless one was given) goes at exit;
# FASTADAM_SANITIZE_KEEP=1 keeps it to look at.
if [ -z "${FASTADAM_SANITIZE_KEEP:-}" ]; then
    trap 'rm -rf "$WORK"' EXIT
fi
VENV="${1:-$WORK/venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
# Build requirements (pyproject.toml) in the venv itself: the build runs without isolation.
"$PY" -m pip install -q "setuptools>=77" "Cython>=3.0" "numpy>=2.0" wheel

# A clean copy of the sources, without built artefacts.
SRC="$WORK/src"
mkdir -p "$SRC"
tar -C "$ROOT" -cf - --exclude=build --exclude=dist --exclude='*.egg-info' \
    --exclude='*.so' --exclude='*.html' --exclude=__pycache__ \
    --exclude='fastadam/_core.c' --exclude='fastadam/_simd_*.c' \
    --exclude=.venv --exclude=.hypothesis --exclude=.git \
    setup.py pyproject.toml README.md fastadam | tar -C "$SRC" -xf -

echo "sanitize: building with FASTADAM_SANITIZE=1 in $SRC"
# (pip always rebuilds a local folder, so a reused VENV gets this build, not an old one.)
if ! FASTADAM_SANITIZE=1 "$PY" -m pip install --no-build-isolation -v "$SRC[test]" \
        >"$WORK/build.log" 2>&1; then
    tail -50 "$WORK/build.log"
    echo "sanitize: build failed" >&2
    exit 1
fi
echo "sanitize: compiler and linker calls with -fsanitize:" \
     "$(grep -c -- "-fsanitize=address,undefined" "$WORK/build.log" || true)"
BUILD_DONE=$SECONDS

# Check that what the tests will import is the sanitized build.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
for so in "$SITE"/fastadam/_core*.so "$SITE"/fastadam/_simd_*.so; do
    if ! readelf -d "$so" | grep -q 'libasan'; then
        echo "sanitize: $so is not linked with ASan" >&2
        exit 1
    fi
done

export LD_PRELOAD="$ASAN_LIB"
# pytest runs with --capture=sys: its default captures file descriptor 2 during a test, and
# a report written there would be lost with the aborted process. ASan also writes each
# report to a file (one per process), which catches those of child processes whose stderr
# a test captured; UBSan (inside libasan's runtime here) ignores log_path and writes to
# stderr, and its abort fails the child and so the test.
REPORTS="$WORK/reports"
mkdir -p "$REPORTS"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$REPORTS/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1"
export PYTHONMALLOC=malloc
export PYTHONFAULTHANDLER=1
# tests/test_fuzz.py: 200 examples per test (a fixed seed, so runs are repeatable), not
# the 600 of the normal run: under ASan each costs ~3x, and the normal run has the 600.
export FASTADAM_FUZZ_EXAMPLES=200
# tests/test_half.py's and tests/test_quant.py's C checks build and run their own programs,
# not the sanitized extension: the normal run has them (about 70 s that would buy nothing
# here; the extension's 8-bit and 16-bit paths run sanitized in the other tests).
# From outside the checkout, so `import fastadam` finds the installed build.
cd "$WORK"
"$PY" -c "import fastadam; fastadam.show_config()"
set +e
"$PY" -m pytest -p no:cacheprovider -q --capture=sys --hypothesis-seed=0 "$ROOT/tests" \
    --strict-skips=sanitize \
    --deselect tests/test_dispatch.py::test_nehalem_runs_baseline_with_the_same_bits \
    --deselect tests/test_dispatch.py::test_haswell_runs_avx2_with_the_same_bits \
    --deselect tests/test_dispatch.py::test_haswell_cannot_be_forced_to_avx512 \
    --deselect tests/test_half.py::test_exhaustive_against_reference \
    --deselect tests/test_half.py::test_mirror_matches_c \
    --deselect tests/test_half.py::test_sr_key_matches_c \
    --deselect tests/test_quant.py::test_kernel_codes_equal_the_table_on_every_build \
    --deselect tests/test_quant.py::test_every_build_gives_the_same_codes \
    --deselect tests/test_quant.py::test_the_avx512_build_has_the_level_tables_and_vbmi_where_the_cpu_does \
    2>&1 | tee "$WORK/pytest.log"
STATUS=${PIPESTATUS[0]}
set -e
# Any report fails the run, even from a process that exited 0 (a child whose exit status a
# test did not check, say).
if grep -q -E "runtime error:|ERROR: AddressSanitizer" "$WORK/pytest.log"; then
    echo "sanitize: a sanitizer reported an error (above)" >&2
    STATUS=1
fi
if [ -n "$(ls -A "$REPORTS")" ]; then
    for f in "$REPORTS"/*; do
        echo "==== $f"
        cat "$f"
    done
    echo "sanitize: a sanitizer reported an error (above)" >&2
    STATUS=1
fi
TESTS_DONE=$SECONDS

# LeakSanitizer, on a focused loop rather than the suite (see .ci/leak_loop.py): every
# entry point N times, then only leaks that grow with N or come from fastadam count.
LEAKS="$WORK/leaks"
mkdir -p "$LEAKS"
set +e
ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:log_path=$LEAKS/leak" \
    "$PY" "$ROOT/.ci/leak_loop.py" >"$WORK/leak_loop.out" 2>&1
set -e
cat "$WORK/leak_loop.out"
if ! grep -q "iterations done" "$WORK/leak_loop.out"; then
    echo "sanitize: the leak loop did not finish" >&2
    STATUS=1
fi
if ! env -u LD_PRELOAD -u PYTHONMALLOC "$PY" "$ROOT/.ci/leak_loop.py" --check "$LEAKS"; then
    STATUS=1
fi
echo "sanitize: build $((BUILD_DONE - START))s, tests $((TESTS_DONE - BUILD_DONE))s," \
     "leak loop $((SECONDS - TESTS_DONE))s, total $((SECONDS - START))s, exit $STATUS"
exit "$STATUS"
