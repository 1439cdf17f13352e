"""Smoke test of the benchmark report's 8-bit section (``python -m fastadam.bench --only
8-bit``), run in-process with tiny settings and without torch (so bitsandbytes and torchao
are absent, and marked so): its rows, their bytes per element, and the byte_states layout of
the probe it divides by. Timings are not checked."""

import re

import numpy as np
import pytest

import fastadam
from fastadam import _core, bench, quant

TINY = ["--quick", "--repeats", "1", "--no-torch"]
ROW = re.compile(r"^(\w+)\s+(fastadam 32-bit|fastadam 8-bit|bnb \w+|torchao AdamW8bit)\s+"
                 r"(\d)\s+(\d+)\s+(.*)$")


@pytest.fixture
def restore_settings():
    simd, threads = fastadam.get_simd_path(), fastadam.get_num_threads()
    try:
        yield
    finally:
        fastadam.set_simd_path(simd)
        fastadam.set_num_threads(threads)


def per_element(opt, n, bits):
    """Bytes read and written per element: p (4 + 4), g (4), each state read and written,
    as float32 (4 + 4) or as a code (1 + 1) and its block's float32 absmax (4 + 4 per 256)."""
    states = 2 if opt == "adam" else 1
    if bits == 32:
        return 12 + 8 * states
    return 12 + states * (2 + 8 * quant.nblocks(n) / n)


def test_8bit_section_rows(capsys, restore_settings):
    n = 5000
    capsys.readouterr()
    bench.main(TINY + ["--only", "8-bit", "--8bit-sizes", str(n), "--threads", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("cpu: ") for line in lines[:4])
    start = next(i for i, line in enumerate(lines) if line.startswith("8-bit states"))
    titles = next(i for i in range(start, len(lines)) if lines[i].startswith("opt "))
    assert lines[titles].split() == ["opt", "implementation", "thr", "n", "B/el", "time",
                                     "GB/s", "%roof", "probe", "x", "8-bit"]
    rows = {}
    for line in lines[titles + 1:]:
        if not line:
            continue
        m = ROW.match(line)
        assert m, f"not an 8-bit row: {line!r}"
        opt, impl, threads, size, rest = m.groups()
        key = (opt, impl, int(threads))
        assert key not in rows, f"duplicate row {key}"
        assert int(size) == n
        rows[key] = line
        if impl.startswith(("bnb", "torchao")):       # --no-torch
            assert rest.startswith("absent"), line
            assert "torch not used" in rest, line
            continue
        f = rest.split()
        # B/el, time and unit, GB/s, %roof, probe time and unit, x 8-bit
        assert len(f) == 8, line
        bits = 8 if impl.endswith("8-bit") else 32
        assert float(f[0]) == pytest.approx(per_element(opt, n, bits), abs=0.006), line
        assert f[2] in ("µs", "ms") and f[6] in ("µs", "ms"), line
        assert float(f[1]) > 0 and float(f[3]) > 0 and float(f[5]) > 0, line
        assert re.fullmatch(r"\d+%!?", f[4]), line
        assert f[7].endswith("x") and float(f[7][:-1]) > 0, line
        if impl == "fastadam 8-bit":
            assert f[7] == "1.00x", line
    expected = {(opt, impl, k) for k in (1, 2)
                for opt in ("adam",) + bench.Q8_OTHERS
                for impl in ("fastadam 32-bit", "fastadam 8-bit",
                             f"bnb {bench.BNB_CLASSES[opt][0]}")}
    expected |= {("adam", "torchao AdamW8bit", k) for k in (1, 2)}
    assert set(rows) == expected


@pytest.mark.parametrize("opt", ("adam",) + bench.Q8_OTHERS)
def test_8bit_case_traffic(opt):
    """The case's rows move the bytes their arrays hold, the 8-bit step's states are
    QuantizedState with the registry's maps, and a step changes them."""
    n = 4096 + 17
    case = bench.make_8bit_case(opt, n, np.random.default_rng(0))
    rows = {r["label"]: r for r in case["rows"]}
    assert rows["fastadam 32-bit"]["bytes"] == per_element(opt, n, 32)
    assert rows["fastadam 8-bit"]["bytes"] == pytest.approx(per_element(opt, n, 8))
    assert case["probes"]["probe 8-bit"][1] == pytest.approx(per_element("adam", n, 8))
    assert case["probes"]["probe 32-bit"][1] == per_element("adam", n, 32)
    assert "absent" in rows[f"bnb {bench.BNB_CLASSES[opt][0]}"]      # no libraries given
    for r in case["rows"][:2]:
        r["fn"]()
    for fn, _ in case["probes"].values():
        fn()


def test_probe_byte_states_layout():
    """roofline_(byte_states=True): 1 added to the first n bytes of exp_avg and exp_avg_sq,
    the grad to the param, and 1 to the first 2*nblocks(n) float32 words of copy_words; on
    every thread count, with parts that do not start at block boundaries."""
    n = 70_001
    for threads in (1, 2):
        old = fastadam.set_num_threads(threads)
        try:
            p, g, m, v, c = (np.zeros(n, np.float32) for _ in range(5))
            g[:] = 2
            _core.roofline_(p, g, m, v, byte_states=True, copy_words=c)
        finally:
            fastadam.set_num_threads(old)
        nb = quant.nblocks(n)
        assert np.all(p == 2) and np.all(g == 2)
        for s in (m, v):
            assert np.all(s.view(np.uint8)[:n] == 1) and not s.view(np.uint8)[n:].any()
        assert np.all(c[:2 * nb] == 1) and not c[2 * nb:].any()
    with pytest.raises(ValueError, match="copy_words"):
        _core.roofline_(p, g, m, v, byte_states=True)
    with pytest.raises(ValueError, match="byte_states"):
        _core.roofline_(p, g, m, v, byte_states=True, half_states=True, copy_words=c)
