#!/usr/bin/env bash
# The offline course site: `bash scripts/build_site.sh OUT` writes a static
# HTML site to OUT (open OUT/index.html; no network needed). It holds
# README, docs/*.md, every notebook and exercise with its stored outputs
# (nothing is executed) and the textbook's API with its equations. Sphinx
# with MyST-NB and sphinx-book-theme; MathJax from the site's own _static
# (django-static-mathjax). Needs requirements-test.txt. Warnings fail the
# build (-W), so a broken page fails CI (tests/test_site.py).
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: bash scripts/build_site.sh OUT   (OUT: a new or empty folder, or an earlier site build)" >&2
    exit 2
fi
OUT=$1
REPO=$(cd "$(dirname "$0")/.." && pwd)
# Nothing a user made is overwritten: OUT must be new, empty, or a site this script built.
if [ -e "$OUT" ] && { [ ! -d "$OUT" ] || { [ -n "$(ls -A "$OUT")" ] && [ ! -f "$OUT/.buildinfo" ]; }; }; then
    echo "build_site.sh: $OUT exists and is not an earlier site build; give a new or empty folder" >&2
    exit 2
fi
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/dfbst_site.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# The source tree, laid out as in the repository so that relative links
# (../docs/SPEC.md from a notebook) resolve; the site's own pages at its root.
cp "$REPO/docs/site/index.md" "$REPO/docs/site/api.md" "$REPO/README.md" "$STAGE/"
# Only the pages the site lists: docs/*.md (with their images), the notebooks,
# notebooks/README.md and the exercises as handed out (not their solutions).
cp -r "$REPO/docs" "$STAGE/docs" && rm -rf "$STAGE/docs/site"
find "$STAGE/docs" -mindepth 2 -name "*.md" -delete
mkdir -p "$STAGE/notebooks/exercises"
cp "$REPO"/notebooks/*.ipynb "$REPO/notebooks/README.md" "$STAGE/notebooks/"
cp "$REPO"/notebooks/exercises/*.ipynb "$STAGE/notebooks/exercises/"
# The package's sources, so that links to them (notebook 8 links every equation to its
# function) become files of the site.
(cd "$REPO" && find dfbst_np -name "*.py" -not -path "*/__pycache__/*" -exec cp --parents {} "$STAGE/" \;)
MATHJAX=$(python -c 'import importlib.util as u, pathlib as p; s = u.find_spec("mathjax"); print(p.Path(s.origin).with_name("static") / "mathjax" / "es5" if s else "")')
if [ -z "$MATHJAX" ] || [ ! -f "$MATHJAX/tex-chtml.js" ]; then
    echo "build_site.sh: MathJax not found; pip install -r requirements-test.txt (django-static-mathjax)" >&2
    exit 2
fi
mkdir -p "$STAGE/_static"
cp -r "$MATHJAX" "$STAGE/_static/mathjax"

DFBST_SITE_STAGE=$STAGE DFBST_SITE_REPO=$REPO \
    python -m sphinx -b html -c "$REPO/docs/site" -d "$STAGE/.doctrees" -W --keep-going -q "$STAGE" "$OUT"
echo "site: $OUT/index.html"
