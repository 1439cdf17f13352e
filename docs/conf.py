"""Sphinx configuration for fastadam's site.

Build (from the repository root, with fastadam installed or built in place):

    pip install ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The build needs no network. Links into NumPy's and PyTorch's documentation (intersphinx)
need those sites' inventories, so they are made only when FASTADAM_DOCS_INTERSPHINX is set:
to 1, to fetch the inventories from the web, or to a folder holding ``numpy.inv`` and
``torch.inv`` (``objects.inv`` files saved earlier), to read them from there.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))

import fastadam  # noqa: E402  (the installed package, or PYTHONPATH to an in-place build)

project = "fastadam"
author = "fastadam's authors"
copyright = "fastadam's authors (BSD-3-Clause)"
release = version = fastadam.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
    "fastadam_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store",
                    "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.json", "auto_examples/*.md5", "sg_execution_times.rst"]
templates_path = []

# ---- Markdown (MyST)
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist", "substitution"]
# The checklist for adding an optimizer is a page of its own, docs/adding-an-optimizer.md;
# the development page links it (and its toctree picks it up) when it is in the tree.
_adding = os.path.exists(os.path.join(HERE, "adding-an-optimizer.md"))
myst_substitutions = {
    "adding_an_optimizer": "[Adding an optimizer](adding-an-optimizer.md) is the checklist."
    if _adding else "Its checklist lives in `docs/adding-an-optimizer.md`.",
}

myst_heading_anchors = 3          # `page.md#a-heading` links work as on a code forge

# ---- API reference
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_docstring_signature = True   # the Cython functions carry theirs (embedsignature)
autosummary_generate = False         # fastadam-autoall writes the entries itself
napoleon_google_docstring = False
napoleon_numpy_docstring = True

# ---- links into NumPy and PyTorch (see the module docstring): off unless asked for
_inventories = os.environ.get("FASTADAM_DOCS_INTERSPHINX", "")
_sites = {"numpy": "https://numpy.org/doc/stable/", "torch": "https://docs.pytorch.org/docs/stable/",
          "python": "https://docs.python.org/3/"}
if _inventories == "1":
    intersphinx_mapping = {name: (url, None) for name, url in _sites.items()}
elif _inventories:
    intersphinx_mapping = {
        name: (url, os.path.join(_inventories, f"{name}.inv")) for name, url in _sites.items()
        if os.path.exists(os.path.join(_inventories, f"{name}.inv"))}
else:
    intersphinx_mapping = {}
intersphinx_timeout = 10

# ---- example gallery (examples/ -> auto_examples/)
# Only the examples that are quick run at build time (about 20 s in all on a 2-core
# machine); interactive_race.py is shown, and the page it makes is generated once by
# fastadam_docs and embedded.
_executed = ("compare_optimizers", "train_mlp_digits", "train_mlp_digits_bf16",
             "train_mlp_digits_8bit",
             "minimize_quadratic",
             "linear_regression")
sphinx_gallery_conf = {
    "examples_dirs": os.path.join("..", "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(" + "|".join(_executed) + r")\.py$",
    "ignore_pattern": r"__init__\.py",
    "image_scrapers": ("matplotlib", "fastadam_docs"),
    "reset_argv": "fastadam_docs_argv.reset_argv",
    "download_all_examples": False,
    "show_memory": False,
    "line_numbers": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "plot_gallery": "True",
    "within_subsection_order": "FileNameSortKey",
    "write_computation_times": False,
}

# ---- HTML
html_theme = "furo"
html_title = f"fastadam {release}"
html_static_path = ["_static"]
html_extra_path = [os.path.join("_generated", "extra")]
os.makedirs(os.path.join(HERE, "_generated", "extra"), exist_ok=True)
html_theme_options = {"source_directory": "docs/"}
html_show_sourcelink = False
smartquotes = False        # keep "--out" and quotes in the examples' text as typed
