"""Run the ```python code blocks of Markdown files, so that every snippet a user copies works.

    python docs/snippets.py docs/*.md README.md

Each file's blocks run in order in one fresh namespace (a block may use what an earlier
block of the same file defined), in a temporary directory (files a snippet writes go
there), against the fastadam that ``import fastadam`` finds. A block whose opening fence
is preceded by the line ``<!-- snippet: skip -->`` is not run. The first exception fails
the file, naming its line. ``docs/test_snippets.py`` runs the same under pytest.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import traceback
from typing import List, Tuple

FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
SKIP = "<!-- snippet: skip -->"
LANGUAGES = ("python", "py", "python3", "{code-block} python", "{code} python")


def extract(text: str) -> List[Tuple[int, str]]:
    """The python blocks of a Markdown text: ``[(line of the first code line, code)]``."""
    lines = text.splitlines()
    blocks: List[Tuple[int, str]] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group("fence")
        lang = " ".join(m.group("info").lower().split())
        skipped = i > 0 and lines[i - 1].strip() == SKIP
        start = i + 1
        j = start
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence)}{re.escape(fence[0])}*\s*$")
        while j < len(lines) and not closing.match(lines[j]):
            j += 1
        body = lines[start:j]
        if lang in LANGUAGES and not skipped:
            # MyST directive options (":caption: ...") at the top of a {code-block}
            while lang.startswith("{") and body and body[0].startswith(":"):
                body, start = body[1:], start + 1
            blocks.append((start + 1, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def run_file(path: str) -> int:
    """Run every python block of ``path``; returns how many ran. Raises on the first
    failure, with the file and line in the message."""
    with open(path, encoding="utf-8") as f:
        blocks = extract(f.read())
    namespace = {"__name__": "__snippets__"}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="fastadam-snippets-") as tmp:
        os.chdir(tmp)
        try:
            for line, code in blocks:
                # blank lines before the code: tracebacks give the Markdown file's line numbers
                compiled = compile("\n" * (line - 1) + code, path, "exec")
                try:
                    exec(compiled, namespace)
                except BaseException as e:
                    raise SnippetError(f"{path}, block at line {line}: {type(e).__name__}: {e}"
                                       ) from e
        finally:
            os.chdir(cwd)
    return len(blocks)


class SnippetError(Exception):
    """A snippet raised; the message names the file and the block's first line."""


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    failed = 0
    for path in argv:
        try:
            n = run_file(path)
            print(f"{path}: {n} python blocks ran")
        except SnippetError as e:
            failed += 1
            cause = e.__cause__
            traceback.print_exception(type(cause), cause, cause.__traceback__)
            print(f"FAILED {e}")
    print(f"snippets: {len(argv) - failed} files passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
