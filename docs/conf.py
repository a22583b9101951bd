"""Sphinx configuration of the sysid_msstcn documentation.

Build (from the repository root)::

    python -m sphinx -W -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("COLUMNS", "88")  # width of the generated CLI help

import sysid_msstcn  # noqa: E402

project = "sysid_msstcn"
author = "sysid_msstcn developers"
copyright = "2026, sysid_msstcn developers"  # noqa: A001
release = sysid_msstcn.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sysid_docs",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "**/_build", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "code"

autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"exclude-members": "__init__"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"sysid_msstcn {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_show_sourcelink = False
html_copy_source = False

# --------------------------------------------------------------------------
# Docstring hygiene hooks
# --------------------------------------------------------------------------
_SHAPE = re.compile(r"of shape \(([^)]*)\)")
_TRAILING = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?![`\w])")


def _quote_shape_names(app, what, name, obj, options, lines):
    """Quote names ending in "_" inside "of shape (...)" (rst would link them)."""

    def fix(match: re.Match) -> str:
        return "of shape (" + _TRAILING.sub(r"``\1``", match.group(1)) + ")"

    lines[:] = [_SHAPE.sub(fix, line) for line in lines]


def _skip_metadata_requests(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_*_request`` methods."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):  # noqa: D103
    app.connect("autodoc-process-docstring", _quote_shape_names)
    app.connect("autodoc-skip-member", _skip_metadata_requests)
