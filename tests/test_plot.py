"""``fastadam-bench --plot FILE.png``: the report's table drawn as a figure (fastadam/_plot.py)."""

import struct
import sys
import zlib

import pytest

from fastadam import _plot, bench

pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the examples extra)")

TINY = ["--quick", "--sizes", "16", "1000", "--optimizers", "adam", "sgd", "--repeats", "1",
        "--no-torch", "--skip-small"]


def _png_chunks(data):
    """The chunks of a PNG file, each checked against its CRC: [(type, payload), ...]."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + payload) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, payload))
        pos += 12 + length
    return chunks


def test_plot_writes_a_valid_png_from_a_tiny_run(tmp_path, capsys):
    out = tmp_path / "bench.png"
    bench.main(TINY + ["--plot", str(out)])
    printed = capsys.readouterr().out
    assert f"plot: wrote {out}" in printed
    chunks = _png_chunks(out.read_bytes())
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert width > 300 and height > 300
    # the pixels decompress: a whole image, not a truncated file
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    assert len(raw) >= height * width


def test_parse_report_reads_every_row_and_the_machine_line(capsys):
    bench.main(TINY)
    lines = capsys.readouterr().out.splitlines()
    header, rows = _plot.parse_report(lines)
    assert any(h.startswith("cpu: ") for h in header)
    assert [(r["optimizer"], r["dtype"], r["n"]) for r in rows] == [
        (opt, dt, n) for opt in ("adam", "sgd") for dt in ("float32", "float64")
        for n in (16, 1000)]
    for r in rows:
        assert r["fastadam"] > 0 and r["ref"] > 0 and r["tuned"] > 0 and r["roof"] > 0
        assert "torch" not in r                        # --no-torch: no column


def test_parse_report_torch_column_and_na():
    lines = [
        "fastadam 0.1.0 | numpy 2.0 | torch 2.13.0 | python 3.11",
        "cpu: Some CPU | x86_64 | features: avx2",
        "",
        "optimizer dtype            n   fastadam    GB/s  %roof        ref   x ref      tuned "
        "x tuned      torch x torch",
        "adam      float32         16       0.50     1.0    50%      10.00   20.0x       5.00 "
        "   10.0x      50.00  100.0x",
        "adam      float64         16       0.50     1.0    25%      10.00   20.0x       5.00 "
        "   10.0x        n/a",
        "",
        "per call, 16 float32 elements, validation included (µs):",
    ]
    header, rows = _plot.parse_report(lines)
    assert len(header) == 2 and len(rows) == 2
    assert rows[0]["torch"] == 50.0 and "torch" not in rows[1]
    assert rows[1]["roof"] == 0.25
    # the roofline curve: reference time over (fastadam time x %roof)
    assert _plot._speedups(rows, "roofline") == ([16, 16], [10 / 0.25, 10 / 0.125])
    assert _plot._speedups(rows, "torch") == ([16], [0.2])


def test_parse_report_without_table_says_so():
    with pytest.raises(ValueError, match="no benchmark table"):
        _plot.parse_report(["fastadam 0.1.0", "", "transformer-shaped params: ..."])


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import matplotlib fails
    with pytest.raises(SystemExit) as exc:
        bench.main(TINY + ["--plot", "never-written.png"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--plot needs matplotlib" in err and "pip install matplotlib" in err


def test_plot_with_only_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--only", "transformer", "--plot", "x.png"])
    assert "--only" in capsys.readouterr().err
