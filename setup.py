"""Build fastadam's extensions.

The kernels live in one Cython source (fastadam/_kernels.pxi). It is compiled once per
instruction set into small modules (_simd_baseline, _simd_avx2, _simd_avx512); fastadam._core
picks one at import from what the CPU reports, so one binary runs on any x86-64 CPU and
uses AVX2 or AVX-512 where present. No -march=native.

The flags are in fastadam/_flags.py (read here without importing the package).
Set FASTADAM_DEBUG=1 to build with bounds checks and assertions on, to hunt a crash.
Set FASTADAM_SANITIZE=1 to build with AddressSanitizer and UndefinedBehaviorSanitizer
(fastadam/_flags.py SANITIZE; .ci/sanitize.sh builds and tests such a build).
"""

import os
import platform
import runpy

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTADAM_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("FASTADAM_SANITIZE", "") not in ("", "0")
MACHINE = platform.machine().lower()
X86_64 = MACHINE in ("x86_64", "amd64")

FLAGS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     "fastadam", "_flags.py"))
SAN = FLAGS["SANITIZE"] if SANITIZE else []
COMMON = (FLAGS["DEBUG"] if DEBUG else FLAGS["COMMON"]) + SAN
SIMD_TARGETS = {name: flags for name, flags in FLAGS["SIMD_TARGETS"].items()
                if X86_64 or name == "baseline"}

# A sanitizer build also turns Cython's index checks on; cdivision stays on (C semantics:
# a float divided by zero gives inf/NaN, as in the build users get).
CHECKS = DEBUG or SANITIZE
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": CHECKS,
    "wraparound": CHECKS,
    "initializedcheck": CHECKS,
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
        define_macros=macros,
        extra_compile_args=COMMON + ["-pthread"],
        extra_link_args=["-pthread"] + SAN,
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
            extra_link_args=SAN,
        )
    )

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES),
)
