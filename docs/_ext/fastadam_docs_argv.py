"""The command-line arguments each executed gallery example runs with (sphinx-gallery's
``reset_argv``, named by string in conf.py so that the configuration stays picklable)."""

import ast
import os

from fastadam_docs import GALLERY_FIGURES


def reset_argv(gallery_conf, script_vars):
    """Figures go where the gallery's scraper collects them (never into examples/); the
    MLP runs without progress bars, which would clutter the page's output.

    The examples are scripts first: they find their folder from ``__file__`` and print
    their docstring's first line as ``--help``'s description, which sphinx-gallery's
    namespace lacks (it sets neither). sphinx-gallery calls this hook after it has made
    that namespace and before it runs the code, so both are given here, as Python would
    give them to the script."""
    src = script_vars["src_file"]
    namespace = script_vars["example_globals"]
    namespace["__file__"] = src
    with open(src, encoding="utf-8") as f:
        namespace["__doc__"] = ast.get_docstring(ast.parse(f.read()), clean=False)
    name = os.path.basename(src)
    if name == "compare_optimizers.py":
        return ["--out", GALLERY_FIGURES]
    if name == "train_mlp_digits.py":
        return ["--no-progress"]
    return []
