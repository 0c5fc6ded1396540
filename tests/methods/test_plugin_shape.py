"""The package keeps the shape issue 19 gave it (methods are plug-ins).

What is proven, by reading the source (no import of it):

* nothing outside ``dfbst_np/methods/`` compares a method's name (the regex
  below, the one the issue's audit used), but for an allow-list of files
  being cleaned; the regex itself is checked to find the comparisons it
  must find and to leave alone what is not one;
* no module is over 600 lines, but for an allow-list;
* ``dfbst_np/train/`` never imports ``dfbst_np/reference/`` (absolute or
  relative imports, at the top or inside a function): the torch backend is
  picked outside ``train/``, so there is no import cycle between them.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dfbst_np"
NAMES = "dfbst|dst|dense|gmp|set|rigl"
COMPARISON = re.compile(rf"""method\s*(==|!=|in)\s*[\("']|["']({NAMES})["']\s*(==|!=|in)|\.method\s*(==|!=)""")

NAME_TESTS_ALLOWED: set = set()
MAX_LINES = 600
LONG_ALLOWED: set = set()


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def name_tests(text: str):
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if COMPARISON.search(line)]


def test_the_regex_finds_name_tests_and_only_them():
    found = ['if method == "dfbst":', "x = 1 if layer.method != 'dense' else 2",
             'if method in ("dst", "dfbst"):', 'if "rigl" == name:', 'ok = "set" in chosen',
             "if self.method == other:"]
    not_found = ['if rule.abs_threshold:', 'build(method="dfbst")', 'if path == "dense":',
                 "methods.get(method).masked", 'if method not in METHODS:']
    assert all(name_tests(line) for line in found), [l for l in found if not name_tests(l)]
    assert not any(name_tests(line) for line in not_found), [l for l in not_found if name_tests(l)]


def test_no_method_name_tests_outside_methods():
    found = {}
    for path in modules():
        r = rel(path)
        if r.startswith("methods/") or r in NAME_TESTS_ALLOWED:
            continue
        hits = name_tests(path.read_text(encoding="utf-8"))
        if hits:
            found[r] = hits
    assert not found, ("method names compared outside dfbst_np/methods/ (ask the method object, "
                       f"methods.get(name), for a property instead): {found}")


def test_modules_are_small():
    long = {rel(p): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert set(long) <= LONG_ALLOWED, f"modules over {MAX_LINES} lines: {long}"


def imported_modules(path: Path):
    """Every module ``path`` imports, as a dotted absolute name (relative imports resolved)."""
    package = ["dfbst_np"] + list(path.relative_to(PACKAGE).parent.parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append(module)
            out += [f"{module}.{a.name}" for a in node.names]      # from .. import reference
    return out


def test_train_never_imports_reference():
    offenders = {rel(p): [m for m in imported_modules(p) if m.startswith("dfbst_np.reference")]
                 for p in (PACKAGE / "train").rglob("*.py")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"dfbst_np/train imports dfbst_np/reference: {offenders}"


@pytest.mark.parametrize("source,expected", [
    ("from ..reference import backend", True), ("from ..reference.backend import X", True),
    ("from .. import reference", True), ("import dfbst_np.reference.layers", True),
    ("def f():\n    from dfbst_np.reference import build", True),
    ("from ..sparse import masked", False), ("from . import backend", False),
])
def test_the_import_scan_resolves_relative_imports(source, expected, monkeypatch):
    path = PACKAGE / "train" / "probe_not_a_module.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source)
    found = [m for m in imported_modules(path) if m.startswith("dfbst_np.reference")]
    assert bool(found) == expected, (source, imported_modules(path))
