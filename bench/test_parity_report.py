"""bench/parity_report.py (docs/torch.md's torch-parity figures) runs: a short run of every
section, so the command docs/torch.md quotes keeps working. Its figures are not checked here
(tests/test_torch_dropin.py asserts the tolerances)."""

import re

import pytest

torch = pytest.importorskip("torch")

from . import parity_report  # noqa: E402


def test_parity_report_runs_every_section(capsys):
    threads = torch.get_num_threads()
    try:
        parity_report.main(["--seeds", "0", "1", "--steps", "3", "--same-grad-steps", "2"])
    finally:
        torch.set_num_threads(threads)      # main() sets one thread
    out = capsys.readouterr().out
    assert f"over {len(parity_report.CASES)} option sets x 2 seeds:" in out, out
    for section in ("1. training", "2. torch itself", "3. the same gradients", "4. checkpoints"):
        assert section in out, out
    # one row per option set and dtype in section 1, one per option set in section 3
    assert len(re.findall(r"(?m)^   \S.* float(32|64) +\S+ +\S+ +[01]$", out)) == \
        2 * len(parity_report.CASES), out
    assert len(re.findall(r"(?m) 1 step .* 2 steps ", out)) == len(parity_report.CASES), out
    figures = [float(x) for x in re.findall(r"largest (?:deviation (?:at step 3 )?)?"
                                            r"(\d\.\de[-+]\d\d)", out)]
    assert len(figures) == 6, out       # section 1's two summaries, 2's and 4's per dtype
    assert all(0 <= f < 1e-3 for f in figures), out
