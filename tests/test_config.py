"""fastadam.show_config() / config and the build flags in fastadam/_flags.py."""

import os

import pytest

import fastadam
from fastadam import _flags
from fastadam.config import config


def test_config_reports_this_build():
    c = config()
    assert c["fastadam"] == fastadam.__version__
    assert c["location"] == os.path.dirname(os.path.abspath(fastadam.__file__))
    assert c["simd_path"] == fastadam.get_simd_path()
    assert c["simd_paths_available"] == list(fastadam.available_simd_paths())
    assert c["threads"] == fastadam.get_num_threads()
    assert list(c["build_flags"]) == ["common"] + list(fastadam.available_simd_paths())


def test_show_config_prints_the_selected_path(capsys):
    old = fastadam.set_simd_path("baseline")
    try:
        fastadam.show_config()
    finally:
        fastadam.set_simd_path(old)
    lines = capsys.readouterr().out.splitlines()
    assert "simd_path:            baseline" in lines
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
