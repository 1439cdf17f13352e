"""Build fastadam's extensions.

The kernels live in one Cython source (fastadam/_kernels.pxi). It is compiled once per
instruction set into small modules (_simd_baseline, _simd_avx2, _simd_avx512); fastadam._core
picks one at import from what the CPU reports, so one binary runs on any x86-64 CPU and
uses AVX2 or AVX-512 where present. No -march=native.

Floating-point flags, the same for every path:
  -ffp-contract=off  no a*b+c -> fma contraction, so every path rounds the same way and
                     gives the same bits (IEEE sqrt and divide are exact everywhere);
  -fno-math-errno    lets sqrt vectorise (errno is never read); results are unchanged.
Set FASTADAM_DEBUG=1 to build with bounds checks and assertions on, to hunt a crash.
"""

import os
import platform

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTADAM_DEBUG", "") not in ("", "0")
MACHINE = platform.machine().lower()
X86_64 = MACHINE in ("x86_64", "amd64")

COMMON = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-semantic-interposition"]
if DEBUG:
    COMMON = ["-O0", "-g", "-ffp-contract=off", "-fno-math-errno"]

# name -> extra target flags. baseline is plain x86-64 (SSE2) or aarch64 (NEON).
SIMD_TARGETS = {"baseline": []}
if X86_64:
    SIMD_TARGETS["avx2"] = ["-mavx2", "-mfma"]
    SIMD_TARGETS["avx512"] = [
        "-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx2", "-mfma",
        "-mprefer-vector-width=512",
    ]

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_21_API_VERSION")]
include_dirs = [np.get_include(), "fastadam/src"]

extensions = [
    Extension(
        "fastadam._core",
        ["fastadam/_core.pyx"],
        include_dirs=include_dirs,
        define_macros=macros + [("FASTADAM_X86_64", int(X86_64))],
        extra_compile_args=COMMON + ["-pthread"],
        extra_link_args=["-pthread"],
    )
]
for name, flags in SIMD_TARGETS.items():
    extensions.append(
        Extension(
            f"fastadam._simd_{name}",
            [f"fastadam/_simd_{name}.pyx"],
            include_dirs=include_dirs,
            define_macros=macros,
            extra_compile_args=COMMON + flags,
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        compile_time_env={"FASTADAM_X86_64": X86_64},
    ),
)
