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


HALF_ROW = re.compile(r"^(bf16|fp16|offload|states)\s+(adamw?)\s+(\d+)\s+(\d+)\s+(\d+)\s")
# Bytes read and written per element: all-16-bit Adam 2*(2+2) for p, m, v + 2 for g; the
# offload step 4*2 for each of p, m, v + 2 (grad) + 2 (param_copy); float32 p and g with
# 16-bit moments 4*2 + 4 + 2*2*2.
HALF_BYTES = {"bf16": 14, "fp16": 14, "offload": 28, "states": 20}


def test_16bit_section_rows(capsys, restore_settings):
    lines = run(capsys, "--only", "16-bit", "--half-sizes", "1000", "3000", "--threads", "2")
    start = next(i for i, line in enumerate(lines) if line.startswith("16-bit storage"))
    titles = next(i for i in range(start, len(lines)) if lines[i].startswith("mode"))
    assert lines[titles].split() == ["mode", "opt", "thr", "n", "B/el", "fastadam", "GB/s",
                                     "%roof", "probe"]
    end = lines.index("", titles)
    rows = {}
    for line in lines[titles + 1:end]:
        m = HALF_ROW.match(line)
        assert m, f"not a 16-bit row: {line!r}"
        mode, opt, threads, n, per_el = m.groups()
        key = (mode, int(threads), int(n))
        assert key not in rows, f"duplicate row {key}"
        assert opt == bench.HALF_OPT[mode]
        assert int(per_el) == HALF_BYTES[mode], line
        head, *comparisons = line.split(" | ")
        f = head.split()
        assert len(f) == 9, line
        positive(f[5])                                   # fastadam µs
        positive(f[6])                                   # GB/s
        assert re.fullmatch(r"\d+%!?", f[7]), line       # % of the same-streams probe
        positive(f[8])                                   # probe µs
        labels = []
        for c in comparisons:
            cm = re.fullmatch(r"(.+) ([\d.]+) \(([\d.]+)x\)", c)
            assert cm, c
            positive(cm.group(2))
            positive(cm.group(3))
            labels.append(cm.group(1))
        # --no-torch: only the states mode has a comparison, fastadam's float32 step
        assert labels == (["fastadam float32"] if mode == "states" else []), line
        rows[key] = line
    assert set(rows) == {(mode, k, n) for mode in bench.HALF_MODES for k in (1, 2)
                         for n in (1000, 3000)}

    # where the time goes: one line per mode and thread count at 32768 elements (no size
    # of 1e6 or more was asked for), each part's ns per element
    assert lines[end + 1].startswith("16-bit storage, where the time goes")
    parts = {}
    for line in lines[end + 2:]:
        m = re.fullmatch(r"  (\w+)\s+thr (\d) n=\s*(\d+)  step\s+([\d.]+)  float32 kernel"
                         r"\s+([\d.]+)  converter\s+([\d.]+)  probe\s+([\d.]+)", line)
        assert m, line
        for x in m.groups()[3:]:
            positive(x)
        parts[m.group(1), int(m.group(2)), int(m.group(3))] = line
    assert set(parts) == {(mode, k, 32768) for mode in bench.HALF_MODES for k in (1, 2)}


@pytest.mark.parametrize("mode", ["bf16", "fp16", "offload", "states"])
def test_16bit_case_traffic_and_probe(mode):
    """The 16-bit case's traffic is the mode's; its probe touches the same bytes (16-bit
    streams as 16-bit words over the first half of float32 arrays) and leaves the step's
    arrays alone."""
    n = 1001
    case = bench.make_half_case(mode, n, np.random.default_rng(0), with_torch=False)
    assert case["bytes"] == HALF_BYTES[mode]
    fns = case["fns"]
    assert {"fastadam", "probe"} <= set(fns)
    assert ("fastadam float32" in fns) == (mode == "states")
    step = fns["fastadam"]
    p, g, m, v, copy = case["arrays"]
    assert (copy is not None) == (mode == "offload")
    arrays = [a for a in (p, g, m, v, copy) if a is not None]
    # read p, g, m, v; write p, m, v and the copy
    assert sum(a.nbytes for a in arrays) + p.nbytes + m.nbytes + v.nbytes == \
        HALF_BYTES[mode] * n
    before = [a.copy() for a in arrays]
    fns["probe"]()
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(arrays, before))
    step()
    assert any(not np.array_equal(a, b) for a, b in zip(arrays, before))


def test_probe_16bit_layouts_move_16bit_words():
    """roofline_'s 16-bit layouts: offload copies the grad's first n 16-bit words to
    copy_words and adds 1 to p, m, v; half_states adds the grad's low word to the first n
    words of the moments; nothing past the first 2n bytes moves."""
    n = 10
    p, g, m, v, c = (np.arange(n, dtype=np.float32) + k for k in range(5))
    g0, c0 = g.copy(), c.copy()
    from fastadam import _core
    _core.roofline_(p, g, m, v, offload=True, copy_words=c)
    assert np.array_equal(c.view(np.uint16)[:n], g0.view(np.uint16)[:n])
    assert np.array_equal(c.view(np.uint16)[n:], c0.view(np.uint16)[n:])
    assert np.array_equal(p, np.arange(n, dtype=np.float32) + 1)
    assert np.array_equal(g, g0)
    m0 = m.copy()
    _core.roofline_(p, g, m, v, half_states=True)
    words = m0.view(np.uint16)[:n] + g0.astype(np.uint16)
    assert np.array_equal(m.view(np.uint16)[:n], words)
    assert np.array_equal(m.view(np.uint16)[n:], m0.view(np.uint16)[n:])
