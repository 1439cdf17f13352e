"""The C check programs of tests/c/, built with each flag set of the kernel modules that this
CPU can run (fastadam/_flags.py, read as setup.py reads it): tests/test_half.py and
tests/test_quant.py compare their outputs across the builds. A flag set this CPU cannot run
is not built (qemu-user cannot run AVX-512, nor the long loops in time)."""

import platform
import runpy
import shutil
import subprocess
from pathlib import Path

from cpu_expect import NEEDS, X86_64_NAMES, cpu_flags

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "fastadam" / "src"
FLAGS = runpy.run_path(str(ROOT / "fastadam" / "_flags.py"))
COMMON = [f for f in FLAGS["COMMON"] if f != "-fno-semantic-interposition"]
COMPILER = shutil.which("cc") or shutil.which("gcc")


def flag_sets():
    """name -> compiler flags, for the kernel modules' flag sets this CPU can run."""
    sets = {"baseline": []}
    if platform.machine().lower() not in X86_64_NAMES:
        return sets
    flags = cpu_flags() or set()
    if set(NEEDS["avx2"]) <= flags:
        sets["avx2"] = FLAGS["SIMD_TARGETS"]["avx2"]
        if set(NEEDS["avx512"]) <= flags:
            sets["avx512"] = FLAGS["SIMD_TARGETS"]["avx512"]
    return sets


FLAG_SETS = flag_sets()


def build(source, out):
    """{flag set name: path of ``source`` (a tests/c/ file) built with it into ``out``}."""
    assert COMPILER, "no C compiler (cc or gcc) on PATH"
    built = {}
    for name, flags in FLAG_SETS.items():
        exe = Path(out) / f"{Path(source).stem}_{name}"
        cmd = [COMPILER, *COMMON, *flags, "-I", str(INCLUDE), str(source), "-o", str(exe),
               "-lm"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
        built[name] = exe
    return built
