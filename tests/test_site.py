"""The offline course site (scripts/build_site.sh): built once per session with
warnings as errors, then checked page by page: every notebook, exercise and
docs page is there, the textbook's API with its functions, every local link
and image resolves, nothing is loaded from the network, and (in headless
Chromium, where installed) every equation is typeset by the site's own
MathJax without an error."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD = ["bash", str(REPO / "scripts" / "build_site.sh")]
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)


def env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "html"
    r = subprocess.run(BUILD + [str(out)], capture_output=True, text=True, env=env(), timeout=1200)
    assert r.returncode == 0, f"the site build failed (warnings are errors):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return out


class Refs(HTMLParser):
    """Every (tag, attribute, value) that loads or links something."""

    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.refs.append((tag, name, value, dict(attrs)))


def refs(page):
    parser = Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.refs


def pages(site):
    """The site's pages (not the theme's template fragments that sit in _static)."""
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)


def test_every_notebook_exercise_and_docs_page_is_built(site):
    expected = [p.relative_to(REPO).with_suffix(".html") for p in
                sorted((REPO / "notebooks").glob("0*.ipynb")) + sorted((REPO / "notebooks" / "exercises").glob("*.ipynb"))
                + sorted((REPO / "docs").glob("*.md"))]
    expected += [Path("index.html"), Path("README.html"), Path("api.html"), Path("notebooks/README.html")]
    missing = [str(p) for p in expected if not (site / p).is_file()]
    assert not missing, f"pages missing from the site: {missing}"
    assert len(expected) > 12
    # a notebook page carries its stored outputs: notebook 2's printed table and its figures
    nb2 = (site / "notebooks" / "02_straight_through_estimators.html").read_text(encoding="utf-8")
    assert "precision" in nb2 and "recall" in nb2 and nb2.count("<img") >= 3


def test_the_api_page_documents_every_textbook_function_with_its_equations(site):
    from dfbst_np import textbook
    api = (site / "api.html").read_text(encoding="utf-8")
    names = [n for n in textbook.__all__ if callable(getattr(textbook, n))]
    assert names and all(f'id="dfbst_np.textbook.{n}"' in api for n in names), \
        [n for n in names if f'id="dfbst_np.textbook.{n}"' not in api]
    # the numpydoc `.. math::` blocks reach the page as MathJax input
    assert api.count('class="math') >= len(names) and r"\operatorname{sign}" in api


def test_no_script_or_stylesheet_is_loaded_from_the_network(site):
    remote = re.compile(r"^\s*(https?:)?//", re.I)
    loads = []
    for page in pages(site):
        for tag, attr, value, attrs in refs(page):
            loaded = tag in ("script", "img", "iframe", "embed", "source") or (tag == "link" and attr == "href" and
                                                                                attrs.get("rel") not in (None, "canonical"))
            if loaded and remote.match(value):
                loads.append(f"{page.relative_to(site)}: <{tag} {attr}={value}>")
    assert not loads, "loaded from the network:\n" + "\n".join(loads[:20])
    assert pages(site) and any("mathjax/tex-chtml.js" in v for _, _, v, _ in refs(site / "api.html"))


def test_every_local_link_and_image_resolves(site):
    broken = []
    for page in pages(site):
        for tag, attr, value, _ in refs(page):
            parts = urlsplit(value)
            if parts.scheme or value.startswith(("#", "//")) or not parts.path:
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {value}")
    assert not broken, "broken local links:\n" + "\n".join(broken[:20])


def test_build_refuses_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = subprocess.run(BUILD + [str(mine)], capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 2 and "not an earlier site build" in r.stderr and r.stderr.count("\n") == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    r = subprocess.run(BUILD, capture_output=True, text=True, env=env(), timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("usage:")


def rendered_dom(page):
    """The page's DOM after its scripts ran, from headless Chromium (virtual time: MathJax finishes)."""
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                            "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian's chromium) is not installed")
@pytest.mark.parametrize("page", ["api.html", "notebooks/04_forward_and_backward_masks.html",
                                  "notebooks/02_straight_through_estimators.html"])
def test_equations_are_typeset_in_headless_chromium(site, page):
    static = (site / page).read_text(encoding="utf-8")
    n_math = len(re.findall(r'class="math[ "]', static))
    dom = rendered_dom(site / page)
    assert n_math > 0
    assert dom.count("<mjx-container") >= n_math, (page, n_math, dom.count("<mjx-container"))
    assert "<mjx-merror" not in dom, f"{page}: MathJax reports a TeX error"
