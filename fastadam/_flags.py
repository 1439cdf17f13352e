"""Compiler flags for the kernels: the one source setup.py builds with and
fastadam.show_config() reports (setup.py reads this file without importing the package).

Floating-point flags, the same for every path:
  -ffp-contract=off  no a*b+c -> fma contraction, so every path rounds the same way and
                     gives the same bits (IEEE sqrt and divide are exact everywhere);
  -fno-math-errno    lets sqrt vectorise (errno is never read); results are unchanged.
"""

COMMON = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-semantic-interposition"]
DEBUG = ["-O0", "-g", "-ffp-contract=off", "-fno-math-errno"]

# SIMD path -> extra target flags. "baseline" is plain x86-64 (SSE2) or aarch64 (NEON); the
# others are built on x86-64 only.
SIMD_TARGETS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx2", "-mfma",
               "-mprefer-vector-width=512"],
}
