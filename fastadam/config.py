"""What this build of fastadam is and what it runs on."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict

import numpy as np

from . import _core, __version__
from ._flags import default_compiler_type, for_compiler

# The flags of the compiler setuptools builds with by default here (MSVC on Windows, else
# GCC or Clang): the ones a wheel for this platform was built with.
_COMMON, _SIMD_TARGETS, _ = for_compiler(default_compiler_type(sys.platform), sys.platform)


def cpu_features() -> str:
    """The SIMD features the kernel dispatch looks at, as the OS lists them (/proc/cpuinfo;
    '?' where there is none).

    The dispatch itself asks the CPU (CPUID, XGETBV), as this process sees it: under an
    emulator such as ``qemu-x86_64 -cpu Nehalem`` that is the emulated CPU, while
    /proc/cpuinfo still lists the host's features."""
    names = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512vl", "avx512dq",
             "avx512bw", "neon", "asimd")
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
                    break
        return " ".join(n for n in names if n in flags) or "?"
    except OSError:
        return "?"


def _bfloat16() -> str:
    """Whether bfloat16 arrays can be made here (ml_dtypes, looked for, not imported)."""
    import importlib.util
    try:
        found = importlib.util.find_spec("ml_dtypes") is not None
    except (ImportError, ValueError):
        found = False
    return "ml_dtypes installed" if found else "needs ml_dtypes (pip install ml_dtypes)"


def config() -> Dict[str, Any]:
    """The configuration :func:`show_config` prints, as a dict."""
    return {
        "fastadam": __version__,
        "location": os.path.dirname(os.path.abspath(__file__)),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        # what the OS lists; the paths below follow CPUID (see cpu_features)
        "os_cpu_features": cpu_features(),
        "simd_paths_available": list(_core.available_simd_paths()),
        # paths this CPU can run whose module did not import: {path: the error}
        "simd_paths_broken": _core.simd_import_errors(),
        "simd_path": _core.get_simd_path(),
        "threads": _core.get_num_threads(),
        # the 16-bit dtypes: float16 is NumPy's; bfloat16 arrays need ml_dtypes
        "bfloat16": _bfloat16(),
        "build_flags": {"common": " ".join(_COMMON),
                        **{path: " ".join(_SIMD_TARGETS[path]) or "(none: x86-64 SSE2 / "
                           "aarch64 NEON)" for path in _core.available_simd_paths()}},
    }


def show_config() -> None:
    """Print version and location, build flags, SIMD paths (available, broken, selected)
    and threads."""
    for key, value in config().items():
        if isinstance(value, dict):
            if not value:
                print(f"{key + ':':<22}none")
                continue
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<9} {v}")
        else:
            print(f"{key + ':':<22}{value}")
