"""Smoke test of the benchmark report (``python -m fastadam.bench``,
docs/contract.md#performance), run in-process with tiny settings: its header, one numeric
row per (optimizer, dtype, size), the per-call and many-tensor sections, and ``--simd`` /
``--threads``. Timings are not checked, only the shape of the report."""

import math
import re

import numpy as np
import pytest

import fastadam
from fastadam import bench

TINY = ["--quick", "--repeats", "1", "--no-torch"]
ROW = re.compile(r"^(sgd|rmsprop|adam|adamw)\s+(float32|float64)\s+(\d+)\s")


@pytest.fixture
def restore_settings():
    """bench.main() leaves --simd / --threads in force (and sets torch's thread count to
    fastadam's whenever torch is importable): put everything back after each test."""
    simd, threads = fastadam.get_simd_path(), fastadam.get_num_threads()
    torch_threads = bench.torch.get_num_threads() if bench.torch is not None else None
    try:
        yield
    finally:
        fastadam.set_simd_path(simd)
        fastadam.set_num_threads(threads)
        if torch_threads is not None:
            bench.torch.set_num_threads(torch_threads)
    assert fastadam.get_simd_path() == simd
    assert fastadam.get_num_threads() == threads


def run(capsys, *argv):
    capsys.readouterr()
    bench.main(list(TINY) + list(argv))
    return capsys.readouterr().out.splitlines()


def header_fields(lines):
    text = "\n".join(lines[:4])
    simd = re.search(r"^simd path: (\w+) \(available: ([\w, ]+)\) \| threads: (\d+)", text,
                     re.M)
    assert simd, text
    return simd.group(1), simd.group(2).split(", "), int(simd.group(3))


def positive(s):
    x = float(s)
    assert math.isfinite(x) and x > 0, s
    return x


def test_report_header_table_and_sections(capsys, restore_settings):
    lines = run(capsys, "--sizes", "16", "1000", "--optimizers", "adam", "sgd")
    # header
    assert lines[0].startswith(f"fastadam {fastadam.__version__} | numpy {np.__version__}")
    path, available, threads = header_fields(lines)
    assert path == fastadam.get_simd_path()
    assert available == list(fastadam.available_simd_paths())
    assert threads == fastadam.get_num_threads()
    assert any(line.startswith("mode: quick") for line in lines[:5])

    # the table: column titles, then exactly one numeric row per (optimizer, dtype, size)
    titles = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    assert lines[titles].split() == ["optimizer", "dtype", "n", "fastadam", "GB/s", "%roof",
                                     "ref", "x", "ref", "tuned", "x", "tuned"]
    rows = {}
    for line in lines:
        m = ROW.match(line)
        if not m:
            continue
        key = (m.group(1), m.group(2), int(m.group(3)))
        assert key not in rows, f"duplicate row {key}"
        f = line.split()
        assert len(f) == 10, line
        positive(f[3])                                   # fastadam µs
        positive(f[4])                                   # GB/s
        assert f[5].endswith("%"), line
        positive(f[5][:-1])                              # % of the roofline probe
        positive(f[6])                                   # reference µs
        assert f[7].endswith("x"), line
        positive(f[7][:-1])
        positive(f[8])                                   # tuned µs
        assert f[9].endswith("x"), line
        positive(f[9][:-1])
        rows[key] = f
    assert set(rows) == {(o, d, n) for o in ("adam", "sgd") for d in ("float32", "float64")
                         for n in (16, 1000)}

    # per-call and many-tensor sections, each entry with a positive time
    text = "\n".join(lines)
    assert "per call, 16 float32 elements" in text
    assert "many tensors: one Adam step over 1000 float32 arrays of 100 elements" in text
    start = next(i for i, line in enumerate(lines) if line.startswith("per call"))
    entries = {}
    for line in lines[start + 1:]:
        m = re.match(r"^  (\S.*?)\s{2,}([\d.]+)", line)
        if m:
            entries[m.group(1)] = positive(m.group(2))
    for name in ("sgd_", "rmsprop_", "adam_", "adamw_", "reference.adam_",
                 "fastadam Adam.step", "fastadam packed", "reference loop",
                 "tuned NumPy loop"):
        assert name in entries, f"{name!r} missing from the report:\n{text}"
    assert not any("torch" in k for k in entries)        # --no-torch


def test_simd_option_switches_the_reported_path(capsys, restore_settings):
    before = fastadam.get_simd_path()
    lines = run(capsys, "--sizes", "16", "--optimizers", "sgd", "--skip-small",
                "--simd", "baseline")
    assert header_fields(lines)[0] == "baseline"
    assert len([line for line in lines if ROW.match(line)]) == 2
    # bench.main() does not restore the path itself (the fixture does); once restored, the
    # report shows the original path again
    fastadam.set_simd_path(before)
    lines = run(capsys, "--sizes", "16", "--optimizers", "sgd", "--skip-small")
    assert header_fields(lines)[0] == before


def test_threads_option_is_reported(capsys, restore_settings):
    lines = run(capsys, "--sizes", "16", "--optimizers", "sgd", "--skip-small",
                "--threads", "1")
    assert header_fields(lines)[2] == 1
