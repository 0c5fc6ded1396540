"""Sphinx configuration of the offline course site (built by scripts/build_site.sh).

The site is read without a network: the notebooks keep their stored outputs
(nothing is executed), MathJax is served from the site's own _static folder
(copied from the PyPI package django-static-mathjax, which bundles MathJax
3), and tests/test_site.py fails on any script or stylesheet loaded from
http(s).
"""
import importlib.util
import os
import sys
from pathlib import Path

STAGE = Path(os.environ["DFBST_SITE_STAGE"]).resolve()   # the staged source tree (build_site.sh)
REPO = Path(os.environ["DFBST_SITE_REPO"]).resolve()
sys.path.insert(0, str(REPO))                             # autodoc imports this checkout's dfbst_np

project = "dfbst_np"
author = "dfbst_np contributors"
copyright = "dfbst_np contributors, MIT licence"
root_doc = "index"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
# Stored outputs only: the site shows what the committed notebooks show.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = [
    # The notebooks' titles are "# N. Title" and their sections "##"; MyST reads a notebook's
    # later top-level markdown as a sibling section, which is how they are meant.
    "myst.header",
]
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]   # build_site.sh stages only the listed pages

# numpydoc docstrings through napoleon; their `.. math::` blocks become MathJax.
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"

html_theme = "sphinx_book_theme"
html_title = "dfbst_np: a course on DFBST"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "search_bar_text": "Search the course",
}
html_static_path = [str(STAGE / "_static")]   # MathJax, copied there by build_site.sh
html_last_updated_fmt = None
html_copy_source = False

# MathJax from the site itself: build_site.sh copies the package's es5 folder to _static/mathjax.
_spec = importlib.util.find_spec("mathjax")
if _spec is None or not Path(_spec.origin).with_name("static").joinpath("mathjax", "es5", "tex-chtml.js").is_file():
    raise RuntimeError("the course site needs MathJax from PyPI: pip install django-static-mathjax "
                       "(requirements-test.txt)")
mathjax_path = "mathjax/tex-chtml.js"
# An undefined macro is a TeX error (mjx-merror), not red text: tests/test_site.py finds every error.
mathjax3_config = {"tex": {"packages": {"[-]": ["noundefined"]}}}
