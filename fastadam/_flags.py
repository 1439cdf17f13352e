"""Compiler flags for the kernels: the one source setup.py builds with and
fastadam.show_config() reports (setup.py reads this file without importing the package).

Floating-point flags, the same for every path, so that every path rounds the same way and
gives the same bits (IEEE sqrt and divide are exact everywhere):

GCC and Clang (Linux, macOS, MinGW):
  -ffp-contract=off  no a*b+c -> fma contraction (GCC's default is to contract, Clang's
                     to contract within a statement);
  -fno-math-errno    lets sqrt vectorise (errno is never read); results are unchanged.
MSVC has no -ffp-contract. /fp:precise (its default, stated anyway) keeps IEEE semantics
and, from Visual Studio 2022 (17.0) on, does not contract; older versions did, so
src/fa_msvc.h, forced into every module with /FI, also says ``#pragma fp_contract(off)``.
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
# others are built for x86-64 targets only.
SIMD_TARGETS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx2", "-mfma",
               "-mf16c", "-mprefer-vector-width=512"],
}

MSVC_COMMON = ["/O2", "/fp:precise", "/FIfa_msvc.h"]
MSVC_DEBUG = ["/Od", "/Zi", "/fp:precise", "/FIfa_msvc.h"]
# /arch:AVX2 also allows FMA and F16C instructions (contraction stays off, as above).
MSVC_SIMD_TARGETS = {
    "baseline": [],
    "avx2": ["/arch:AVX2"],
    "avx512": ["/arch:AVX512"],
}


def for_compiler(compiler_type, platform, debug=False):
    """(common flags, {path: target flags}, thread flags) for a setuptools compiler type
    ('msvc', 'unix', 'mingw32', ...) building for ``platform`` (a ``sys.platform`` value)."""
    if compiler_type == "msvc":
        return (MSVC_DEBUG if debug else MSVC_COMMON), MSVC_SIMD_TARGETS, []
    common = DEBUG if debug else COMMON
    if platform.startswith(("darwin", "win32", "cygwin")):
        # Semantic interposition is an ELF matter: Mach-O and PE toolchains warn that the
        # flag is unused.
        common = [f for f in common if f != "-fno-semantic-interposition"]
    # Windows builds use Win32 threads (src/fa_pool.h); elsewhere POSIX threads.
    threads = [] if platform.startswith("win32") else ["-pthread"]
    return common, SIMD_TARGETS, threads


def default_compiler_type(platform):
    """The compiler setuptools uses unless told otherwise: MSVC on Windows, else 'unix'."""
    return "msvc" if platform.startswith("win32") else "unix"
