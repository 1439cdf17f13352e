"""Sphinx helpers for fastadam's site.

- ``.. fastadam-autoall:: MODULE``: a summary table and the autodoc entry of every name in
  ``MODULE.__all__``, in that order, so that a name added to ``__all__`` (a new optimizer,
  say) appears in the API reference without editing the docs. ``:no-index:`` renders the
  entries without registering them (the contract page shows the reference's rules, whose
  indexed entries are in the API reference); ``:no-summary:`` leaves the table out.
- ``.. fastadam-optional-toctree::``: a toctree of the listed pages that exist (a page
  another change adds, linked once it is in the tree, without a warning before).
- At ``builder-inited``: generates the interactive optimizer race
  (examples/interactive_race.py) into the site's extra files, so the gallery's page can
  embed it; the page is a build product, never committed.
- ``_get_sg_image_scraper``: sphinx-gallery's hook for the PNG files an example writes
  itself (examples/compare_optimizers.py saves its figures and closes them, so the
  matplotlib scraper never sees them).
"""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
import time

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.directives.other import TocTree
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.dirname(HERE)
ROOT = os.path.dirname(DOCS)
# Where examples write their figures during the gallery's run (see conf.py's reset_argv).
GALLERY_FIGURES = os.path.join(DOCS, "_generated", "gallery-figures")
# Copied as-is to the site's root (html_extra_path).
EXTRA = os.path.join(DOCS, "_generated", "extra")
RACE_PAGE = os.path.join(EXTRA, "interactive", "optimizer_race.html")

logger = logging.getLogger(__name__)


class AutoAll(SphinxDirective):
    """Document every public name of a module, in ``__all__``'s order."""

    required_arguments = 1
    option_spec = {"no-index": directives.flag, "no-summary": directives.flag}

    def run(self):
        modname = self.arguments[0]
        module = importlib.import_module(modname)
        names = list(getattr(module, "__all__", None) or [])
        if not names:
            raise self.error(f"{modname} has no __all__ to document")
        lines = []
        if "no-summary" not in self.options:
            lines += [".. autosummary::", "   :nosignatures:", ""]
            lines += [f"   {modname}.{name}" for name in names]
            lines.append("")
        no_index = ["   :no-index:"] if "no-index" in self.options else []
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                lines += [f".. autoclass:: {modname}.{name}", "   :members:",
                          "   :show-inheritance:", *no_index, ""]
            else:
                lines += [f".. autofunction:: {modname}.{name}", *no_index, ""]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=f"<fastadam-autoall {modname}>"),
                                self.content_offset, container)
        return container.children


class OptionalTocTree(TocTree):
    """A toctree of the entries whose page exists; nothing when none does."""

    def run(self):
        src = os.path.dirname(self.env.doc2path(self.env.docname))
        kept = [e for e in self.content
                if any(os.path.exists(os.path.join(src, e.strip() + suffix))
                       for suffix in self.config.source_suffix)]
        if not kept:
            return []
        self.content = StringList(kept, source=self.content.source(0))
        return super().run()


def make_race_page(app) -> None:
    """Generate the interactive race into the site's extra files (about 10 s)."""
    if app.builder.format != "html":
        return
    os.makedirs(os.path.dirname(RACE_PAGE), exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "interactive_race.py"),
                           "--out", RACE_PAGE], capture_output=True, text=True,
                          encoding="utf-8", cwd=DOCS)
    if proc.returncode != 0:
        raise RuntimeError(f"examples/interactive_race.py failed:\n{proc.stderr}")
    logger.info(f"interactive race: {proc.stdout.strip()} in {time.perf_counter() - t0:.1f} s")


def _scrape_written_pngs(block, block_vars, gallery_conf):
    """Move the PNGs an example wrote into GALLERY_FIGURES to the gallery's images."""
    from sphinx_gallery.scrapers import figure_rst

    if not os.path.isdir(GALLERY_FIGURES):
        return ""
    pngs = sorted((os.path.join(GALLERY_FIGURES, f) for f in os.listdir(GALLERY_FIGURES)
                   if f.endswith(".png")), key=os.path.getmtime)     # in the order written
    images = []
    for png in pngs:
        dest = next(block_vars["image_path_iterator"])
        shutil.move(png, dest)
        images.append(dest)
    # one figure_rst each: the figures are wide (three panels), and sphinx-gallery shows a
    # group of images as small side-by-side thumbnails
    return "".join(figure_rst([image], gallery_conf["src_dir"]) for image in images)


def _get_sg_image_scraper():
    """sphinx-gallery's entry point: ``image_scrapers = (..., "fastadam_docs")``."""
    return _scrape_written_pngs


def setup(app):
    os.makedirs(GALLERY_FIGURES, exist_ok=True)
    app.add_directive("fastadam-autoall", AutoAll)
    app.add_directive("fastadam-optional-toctree", OptionalTocTree)
    app.connect("builder-inited", make_race_page)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
