"""fastadam.show_config() / config and the build flags in fastadam/_flags.py."""

import os
import sys

import pytest

import fastadam
from cpu_expect import expected_simd_paths
from fastadam import _flags
from fastadam.config import config


def test_config_reports_this_build():
    c = config()
    assert c["fastadam"] == fastadam.__version__
    assert c["location"] == os.path.dirname(os.path.abspath(fastadam.__file__))
    assert c["simd_path"] == fastadam.get_simd_path()
    assert c["threads"] == fastadam.get_num_threads()
    assert c["simd_paths_broken"] == {}
    # The paths this CPU's own feature flags call for, not the package's list.
    expected = expected_simd_paths()
    if expected is None:
        pytest.skip(f"this OS ({sys.platform}) lists no CPU features to derive the paths from")
    assert c["simd_paths_available"] == expected
    assert list(c["build_flags"]) == ["common"] + expected


def test_show_config_prints_the_selected_path(capsys):
    old = fastadam.set_simd_path("baseline")
    try:
        fastadam.show_config()
    finally:
        fastadam.set_simd_path(old)
    lines = capsys.readouterr().out.splitlines()
    assert "simd_path:            baseline" in lines
    assert "simd_paths_broken:    none" in lines
    assert any(line.startswith("  baseline ") for line in lines)


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
@pytest.mark.parametrize("compiler", ["unix", "mingw32", "msvc"])
def test_every_compiler_keeps_contraction_off(compiler, platform):
    # The same bits on every SIMD path need a*b+c rounded twice: no FMA contraction, with
    # each compiler's own way of saying so.
    common, targets, threads = _flags.for_compiler(compiler, platform)
    assert list(targets) == ["baseline", "avx2", "avx512"]
    if compiler == "msvc":
        assert "/fp:precise" in common and "/FIfa_msvc.h" in common
        assert targets["avx2"] == ["/arch:AVX2"] and threads == []
    else:
        assert "-ffp-contract=off" in common and "-O3" in common
        assert ("-fno-semantic-interposition" in common) == (platform == "linux")
        assert threads == ([] if platform == "win32" else ["-pthread"])
    debug, _, _ = _flags.for_compiler(compiler, platform, debug=True)
    assert ("/fp:precise" if compiler == "msvc" else "-ffp-contract=off") in debug


def test_default_compiler():
    assert _flags.default_compiler_type("win32") == "msvc"
    assert _flags.default_compiler_type("linux") == "unix"
    assert _flags.default_compiler_type("darwin") == "unix"


@pytest.mark.parametrize("core", ["missing", "broken"])
def test_import_says_what_is_wrong_with_the_compiled_core(tmp_path, core):
    """Without _core, the package is an unbuilt source tree and import says how to build;
    a _core that is there but cannot load raises its own error instead of that hint."""
    import shutil
    import subprocess
    pkg = tmp_path / "fastadam"
    shutil.copytree(os.path.dirname(fastadam.__file__), pkg)
    cores = [f for f in os.listdir(pkg) if f.startswith("_core.") and
             f.endswith((".so", ".pyd"))]
    assert cores, "the installed package has a compiled _core"
    for f in cores:
        os.remove(pkg / f)
        if core == "broken":
            (pkg / f).write_bytes(b"not a shared library")
    out = subprocess.run([sys.executable, "-c", "import fastadam"], cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    hint = "this is the source tree, not an installed fastadam" in out.stderr
    assert hint == (core == "missing"), out.stderr
