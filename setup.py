"""Build fastadam's extensions.

The kernels live in fastadam/kernels/ (one file per optimizer), described by
fastadam/_registry.py; fastadam/_generate.py turns the registry into the code that ties them
together (run here first). They are compiled once per instruction set into small modules
(_simd_baseline, _simd_avx2, _simd_avx512); fastadam._core picks one at import from what the
CPU reports, so one binary runs on any x86-64 CPU and uses AVX2 or AVX-512 where present.
No -march=native. Other targets (aarch64, a macOS universal2 build) get the baseline module
only.

The flags are in fastadam/_flags.py (read here without importing the package), one set for
GCC and Clang, one for MSVC, chosen by the compiler setuptools actually uses.
Set FASTADAM_DEBUG=1 to build with bounds checks and assertions on, to hunt a crash.
The version is fastadam.__version__, which pyproject.toml reads.
Set FASTADAM_SANITIZE=1 to build with AddressSanitizer and UndefinedBehaviorSanitizer
(fastadam/_flags.py SANITIZE; .ci/sanitize.sh builds and tests such a build).
"""

import os
import re
import runpy
import sys
import sysconfig

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("FASTADAM_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("FASTADAM_SANITIZE", "") not in ("", "0")
FLAGS = runpy.run_path(os.path.join(HERE, "fastadam", "_flags.py"))
SIMD_PATHS = list(FLAGS["SIMD_TARGETS"])
# The per-optimizer code (kernel table, validation, functional wrappers, type stubs) is
# generated from fastadam/_registry.py before anything is compiled or packaged.
runpy.run_path(os.path.join(HERE, "fastadam", "_generate.py"))["generate"](verbose=True)


def target_archs():
    """The CPU architectures the extensions are compiled for.

    From sysconfig's platform, not the machine running the build: cibuildwheel cross-builds
    (macOS x86_64 on arm64, Windows ARM64 on x64) set _PYTHON_HOST_PLATFORM, and macOS
    builds follow ARCHFLAGS, or else the interpreter's own architectures (universal2 for
    python.org's installers: both)."""
    plat = sysconfig.get_platform().lower()
    if plat.startswith("macosx"):
        archflags = os.environ.get("ARCHFLAGS")
        if archflags:
            return set(re.findall(r"-arch\s+(\S+)", archflags))
        arch = plat.rsplit("-", 1)[1]
        return {"x86_64", "arm64"} if arch in ("universal2", "universal") else {arch}
    arch = plat.rsplit("-", 1)[-1]
    return {"x86_64" if arch in ("x86_64", "amd64") else arch}


# The AVX2 and AVX-512 modules need every compiled architecture to be x86-64: a universal2
# build compiles each module for arm64 too, where those flags do not exist.
X86_64_ONLY = target_archs() == {"x86_64"}
BUILT_PATHS = [p for p in SIMD_PATHS if X86_64_ONLY or p == "baseline"]


class BuildExt(build_ext):
    """Adds the flags of the compiler in use (GCC/Clang or MSVC) to each extension."""

    def build_extensions(self):
        common, targets, threads = FLAGS["for_compiler"](
            self.compiler.compiler_type, sys.platform, DEBUG)
        san = FLAGS["SANITIZE"] if SANITIZE else []     # GCC/Clang only: .ci/sanitize.sh
        for ext in self.extensions:
            path = ext.name.rpartition("._simd_")[2] if "._simd_" in ext.name else None
            if path is None:    # fastadam._core: the thread pool
                ext.extra_compile_args = common + threads + san
                ext.extra_link_args = threads + san
            else:
                ext.extra_compile_args = common + targets[path] + san
                ext.extra_link_args = san
        super().build_extensions()


# What the sdist carries beside the package: the test suite, the examples (with the committed
# figures and recorded output that tests/test_examples.py reads) and the benchmark suite, so
# that the unpacked archive runs its own tests (.ci/run runs them from there).
SHIPPED_DIRS = ("tests", "examples", "bench")
NOT_SHIPPED = (".pyc", ".pyo", ".so", ".pyd")     # build products and bytecode


def shipped_files():
    """Every file under SHIPPED_DIRS, whatever its type, except hidden folders and files,
    __pycache__ and build products. (setuptools alone takes tests/test*.py but not the
    conftest.py they import, nor any data file.)"""
    out = []
    for top in SHIPPED_DIRS:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames
                                 if not d.startswith(".") and d != "__pycache__")
            out += [os.path.join(dirpath, f) for f in sorted(filenames)
                    if not f.startswith(".") and not f.endswith(NOT_SHIPPED)]
    return out


class SDist(sdist):
    """Ships SHIPPED_DIRS whole (shipped_files()), so that the unpacked sdist can run its
    tests and benchmarks."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, list(dict.fromkeys([*files, *shipped_files()])))


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

# NPY_TARGET_VERSION: the oldest NumPy the built modules accept at import, and the C-API
# they may use: the NumPy >= 1.21 that pyproject.toml promises, whichever NumPy 2 builds
# them (its headers' own default follows the Pythons it supports: 1.23 in NumPy 2.4).
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_21_API_VERSION"),
          ("NPY_TARGET_VERSION", "NPY_1_21_API_VERSION")]
include_dirs = [np.get_include(), "fastadam/src"]

extensions = [
    Extension("fastadam._core", ["fastadam/_core.pyx"], include_dirs=include_dirs,
              define_macros=macros)
]
for name in BUILT_PATHS:
    extensions.append(
        Extension(f"fastadam._simd_{name}", [f"fastadam/_simd_{name}.pyx"],
                  include_dirs=include_dirs, define_macros=macros)
    )

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES),
    cmdclass={"build_ext": BuildExt, "sdist": SDist},
)
