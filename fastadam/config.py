"""What this build of fastadam is and what it runs on."""

from __future__ import annotations

import platform
import sys
from typing import Any, Dict

import numpy as np

from . import _core, __version__
from ._flags import COMMON, SIMD_TARGETS

def cpu_features() -> str:
    """The SIMD features the kernel dispatch looks at, as the CPU reports them."""
    names = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512vl", "avx512dq", "avx512bw",
             "neon", "asimd")
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


def config() -> Dict[str, Any]:
    """The configuration :func:`show_config` prints, as a dict."""
    return {
        "fastadam": __version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_features": cpu_features(),
        "simd_paths_available": list(_core.available_simd_paths()),
        "simd_path": _core.get_simd_path(),
        "threads": _core.get_num_threads(),
        "build_flags": {"common": " ".join(COMMON),
                        **{path: " ".join(SIMD_TARGETS[path]) or "(none: x86-64 SSE2 / "
                           "aarch64 NEON)" for path in _core.available_simd_paths()}},
    }


def show_config() -> None:
    """Print version, build flags, SIMD paths (available and selected) and threads."""
    for key, value in config().items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<9} {v}")
        else:
            print(f"{key + ':':<22}{value}")
