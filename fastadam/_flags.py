"""Compiler flags for the kernels: the one source setup.py builds with and
fastadam.show_config() reports (setup.py reads this file without importing the package).

Floating-point flags, the same for every path:
  -ffp-contract=off  no a*b+c -> fma contraction, so every path rounds the same way and
                     gives the same bits (IEEE sqrt and divide are exact everywhere);
  -fno-math-errno    lets sqrt vectorise (errno is never read); results are unchanged.
"""

COMMON = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-semantic-interposition"]
DEBUG = ["-O0", "-g", "-ffp-contract=off", "-fno-math-errno"]

# FASTADAM_SANITIZE=1 adds these to every extension's compile and link flags (on top of
# COMMON, so the sanitizers check the optimised, vectorised loops that ship). Any report is
# fatal (no recovery), so a test run under .ci/sanitize.sh fails on the first one. Float
# division by zero is not in "undefined" (IEEE defines it), so inf/NaN results are fine.
# -fno-wrapv undoes CPython's -fwrapv (in the flags every extension inherits), under which
# signed overflow wraps and UBSan cannot report it; the code must not rely on wrapping.
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-wrapv", "-fno-omit-frame-pointer", "-g"]

# SIMD path -> extra target flags. "baseline" is plain x86-64 (SSE2) or aarch64 (NEON); the
# others are built on x86-64 only.
SIMD_TARGETS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx2", "-mfma",
               "-mprefer-vector-width=512"],
}
