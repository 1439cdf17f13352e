"""The benchmark report as a figure: ``fastadam-bench --plot FILE.png``.

Reads the report's text (its header and its main table), so that a saved report can be
drawn again later: ``python -m fastadam._plot REPORT.txt FILE.png``. One panel per
optimizer and dtype: the speedup over ``fastadam.reference`` (readable NumPy) against the
array size, for fastadam, tuned NumPy, torch (when the report has its column) and the
roofline, the time a step would take at the bandwidth of the same-traffic probe
(``fastadam time x %roof``). The header's machine line is in the title.

Needs matplotlib, and only here: the report itself does not.
"""

from __future__ import annotations

import re
import sys
from typing import Dict, Iterable, List, Optional, Tuple

# What each curve is, the report column it is computed from, and how it is drawn.
SERIES = (
    ("fastadam", "fastadam", dict(color="tab:blue", marker="o", lw=2.0)),
    ("tuned NumPy", "tuned", dict(color="tab:green", marker="s", lw=1.3)),
    ("torch.optim", "torch", dict(color="tab:red", marker="^", lw=1.3)),
    ("roofline (same-traffic probe)", "roofline", dict(color="black", ls="--", lw=1.0)),
)


def require_matplotlib() -> None:
    """Raise ImportError with what to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError("fastadam-bench --plot needs matplotlib, which is not installed: "
                          'pip install matplotlib (or pip install "fastadam[examples]")') from e


def _columns(header: str) -> List[str]:
    # "x ref", "x tuned", "x torch" are two words each
    return re.findall(r"x \w+|\S+", header)


def parse_report(lines: Iterable[str]) -> Tuple[List[str], List[Dict[str, object]]]:
    """The report's header lines (up to the first blank line) and its table's rows.

    Each row is a dict: ``optimizer``, ``dtype``, ``n`` and the times in µs under the
    column names (``fastadam``, ``ref``, ``tuned``, ``torch`` when measured), and
    ``roof``, the ``%roof`` column as a fraction. Raises ValueError if there is no table.
    """
    lines = [line.rstrip("\n") for line in lines]
    header: List[str] = []
    for line in lines:
        if not line.strip():
            break
        header.append(line)
    rows: List[Dict[str, object]] = []
    cols: Optional[List[str]] = None
    for line in lines:
        if cols is None:
            if line.startswith("optimizer ") and "fastadam" in line and "ref" in line:
                cols = _columns(line)
            continue
        if not line.strip():
            break           # the table ends at the first blank line
        cells = dict(zip(cols, line.split()))
        row: Dict[str, object] = {"optimizer": cells["optimizer"], "dtype": cells["dtype"],
                                  "n": int(cells["n"])}
        for name in ("fastadam", "ref", "tuned", "torch"):
            value = cells.get(name)
            if value not in (None, "n/a"):
                row[name] = float(value)
        row["roof"] = float(cells["%roof"].rstrip("%")) / 100
        rows.append(row)
    if not rows:
        raise ValueError("no benchmark table in the report (was it run with --only?)")
    return header, rows


def _speedups(rows: List[Dict[str, object]], key: str) -> Tuple[List[int], List[float]]:
    ns, ys = [], []
    for r in rows:
        if key == "roofline":
            t = r["fastadam"] * r["roof"]
        elif key in r:
            t = r[key]
        else:
            continue
        ns.append(r["n"])
        ys.append(r["ref"] / t)
    return ns, ys


def plot_report(lines: Iterable[str], filename: str, dpi: int = 110) -> None:
    """Draw the report ``lines`` (as printed by ``fastadam-bench``) into ``filename``."""
    require_matplotlib()
    from matplotlib.figure import Figure     # no pyplot: no GUI backend is touched

    header, rows = parse_report(lines)
    optimizers = list(dict.fromkeys(r["optimizer"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    fig = Figure(figsize=(4.6 * len(dtypes), 2.9 * len(optimizers) + 1.2),
                 layout="constrained")
    axes = fig.subplots(len(optimizers), len(dtypes), squeeze=False, sharex=True)
    drawn = set()
    for i, opt in enumerate(optimizers):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            sel = [r for r in rows if r["optimizer"] == opt and r["dtype"] == dtype]
            for label, key, style in SERIES:
                ns, ys = _speedups(sel, key)
                if ns:
                    ax.plot(ns, ys, label=label, ms=4, **style)
                    drawn.add(label)
            ax.axhline(1, color="grey", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{opt} {dtype}", fontsize=10)
            if j == 0:
                ax.set_ylabel("speedup over\nfastadam.reference")
            if i == len(optimizers) - 1:
                ax.set_xlabel("elements per array")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9)
    machine = next((h for h in header if h.startswith("cpu:")), "")
    setup = next((h for h in header if h.startswith("simd path:")), "")
    mode = next((h for h in header if h.startswith("mode:")), "")
    mode = mode.split(" | ", 1)[0]
    fig.suptitle("fastadam-bench: speedup over the NumPy reference (higher is faster)\n"
                 + "\n".join(x for x in (machine, " | ".join(y for y in (setup, mode) if y))
                             if x), fontsize=9)
    fig.savefig(filename, dpi=dpi)


def main(argv: Optional[List[str]] = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fastadam._plot",
                                 description="Draw a saved fastadam-bench report.")
    ap.add_argument("report", help="the report's text, as fastadam-bench printed it")
    ap.add_argument("png", help="the figure to write")
    args = ap.parse_args(argv)
    with open(args.report, encoding="utf-8") as f:
        plot_report(f, args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main(sys.argv[1:])
