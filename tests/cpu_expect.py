"""The SIMD paths this CPU must get, from its own feature bits as the OS lists them, not from
fastadam's list: what the tests compare the package with.

The one table of what each path needs, mirroring fastadam/src/fa_cpu.h (which asks CPUID
and XGETBV):

    avx2    AVX, AVX2 and FMA, with the OS saving the YMM registers
    avx512  that, and AVX-512 F, VL, DQ and BW, with the OS saving the ZMM and opmask state

Linux lists in /proc/cpuinfo only the features the kernel has enabled: it clears the AVX
flags when XCR0 lacks the YMM state and the AVX-512 ones when it lacks the ZMM state, so
the flags already include the OS's part. macOS lists them with sysctl (machdep.cpu), and
turns AVX-512 state saving on at first use, as fa_cpu.h knows. Other systems (Windows)
have no such list here: ``expected_simd_paths()`` returns None there.

Under qemu-user /proc/cpuinfo still shows the host, not the emulated CPU: the emulated runs
(tests/check_cpus.py's models) give their expected paths explicitly.

Only x86-64 builds carry the AVX2 and AVX-512 modules; on other architectures (aarch64)
the one path is 'baseline'.
"""

import platform
import subprocess
import sys

PATHS = ("baseline", "avx2", "avx512")   # lowest first, as fastadam.available_simd_paths()

# path -> the features it needs, besides those of the paths below it (/proc/cpuinfo names)
NEEDS = {
    "baseline": (),
    "avx2": ("avx", "avx2", "fma", "f16c"),
    "avx512": ("avx512f", "avx512vl", "avx512dq", "avx512bw"),
}

X86_64_NAMES = ("x86_64", "amd64")


def linux_cpu_flags(text):
    """The feature flags of the first processor in /proc/cpuinfo's ``text``."""
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def macos_cpu_flags(text):
    """sysctl machdep.cpu.features / leaf7_features output, in /proc/cpuinfo's names
    ("AVX1.0" is avx, "AVX512F" avx512f, ...)."""
    flags = set()
    for word in text.split():
        word = word.lower()
        flags.add("avx" if word == "avx1.0" else word)
    return flags


def cpu_flags():
    """This CPU's feature flags as the OS lists them (/proc/cpuinfo names), or None where
    this OS has no list that can be read here."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as f:
                return linux_cpu_flags(f.read())
        except OSError:
            return None
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features",
                                  "machdep.cpu.leaf7_features"], capture_output=True,
                                 text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return macos_cpu_flags(out.stdout) if out.returncode == 0 else None
    return None


def paths_for(flags, machine):
    """The paths a CPU of architecture ``machine`` with ``flags`` must get, lowest first."""
    if machine.lower() not in X86_64_NAMES:
        return ["baseline"]
    paths = []
    for path in PATHS:
        if not all(f in flags for f in NEEDS[path]):
            break
        paths.append(path)
    return paths


def expected_simd_paths():
    """The paths this CPU must get, or None where its features cannot be read (a non-x86
    architecture needs none: 'baseline' only)."""
    machine = platform.machine()
    if machine.lower() not in X86_64_NAMES:
        return ["baseline"]
    flags = cpu_flags()
    return None if flags is None else paths_for(flags, machine)
