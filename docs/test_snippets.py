"""Every ```python block of the docs' pages and of the README runs (docs/snippets.py),
under pytest.

    pytest docs/test_snippets.py                 # every page under docs/, and README.md
    FASTADAM_SNIPPET_FILES="OTHER.md" pytest docs/test_snippets.py   # + other files

FASTADAM_SNIPPET_FILES: more Markdown files, separated by os.pathsep or spaces, relative to
the repository root (or absolute). Run from outside the repository root, so that the
installed fastadam is imported, not the source tree.
"""

import glob
import os
import sys

import pytest

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path.insert(0, DOCS)

import snippets  # noqa: E402

PAGES = sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
PAGES = [p for p in PAGES if os.sep + "_build" + os.sep not in p]
README = os.path.join(ROOT, "README.md")      # the front page: its snippets are run too
EXTRA = [os.path.join(ROOT, p) for p in
         os.environ.get("FASTADAM_SNIPPET_FILES", "").replace(os.pathsep, " ").split()]


@pytest.mark.parametrize("path", PAGES + [README] + [p for p in EXTRA if p != README],
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_every_python_block_runs(path):
    snippets.run_file(path)


def test_pages_have_snippets():
    counts = {os.path.relpath(p, DOCS): len(snippets.extract(open(p, encoding="utf-8").read()))
              for p in PAGES}
    for page in ("user-guide.md", "torch.md", "contract.md", "install.md"):
        assert counts[page] > 0, counts
    # the README's quick start: the kernels, the classes and the torch drop-in
    assert len(snippets.extract(open(README, encoding="utf-8").read())) >= 3


def test_extract_follows_fences_and_the_skip_marker():
    text = "\n".join([
        "# t", "```python", "a = 1", "```", "", "<!-- snippet: skip -->", "```python",
        "undefined_name", "```", "````python", "b = a + 1", "```", "still inside", "````",
        "```bash", "echo no", "```", "```{code-block} python", ":caption: c", "c = b", "```",
    ])
    blocks = snippets.extract(text)
    assert [code for _, code in blocks] == ["a = 1\n", "b = a + 1\n```\nstill inside\n",
                                           "c = b\n"]
    assert [line for line, _ in blocks] == [3, 11, 20]


def test_a_failing_block_fails_with_its_file_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n```python\nassert x == 2, 'x is 1'\n```\n")
    with pytest.raises(snippets.SnippetError, match=r"page\.md, block at line 8: "
                                                    r"AssertionError: x is 1"):
        snippets.run_file(str(page))


def test_the_user_guides_dtype_table_is_the_registrys():
    """The table of dtypes that go together (user-guide.md) says what MIXING says."""
    from fastadam import _registry
    text = open(os.path.join(DOCS, "user-guide.md"), encoding="utf-8").read()
    rows = {}
    for line in text.split("(low-precision)=")[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in _registry.DTYPE_NAMES:
            rows[cells[0]] = [tuple(x.strip() for x in c.split(","))
                              for c in cells[1:]]
    assert set(rows) == set(_registry.DTYPE_NAMES)
    for param, (grad, state, copy) in rows.items():
        mix = _registry.MIXING[param]
        assert set(grad) == set(mix["grad"]) and set(state) == set(mix["state"]), param
        assert set(copy) - {"none"} == set(mix["copy"]), param
