"""One object, one owner: a private attribute (``_x``) is read or written only by its own module.

The rule, checked over the source of every module of the package (ast, no
import): an attribute access ``obj._name`` (read or write; ``_name`` not a
dunder) is allowed when

* ``obj`` is ``self`` or ``cls`` (an object using its own state), or
* ``_name`` is defined in the same module: a function, method or class of
  that name, a module-level or class-level assignment, an import alias, a
  ``__slots__`` entry, or an assignment ``self._name = ...`` / ``cls._name``
  (so a module may read the private state of other instances of its own
  classes, e.g. ``Module._collect`` reading a child's ``_params``, and call
  its own private functions through ``super()``), or
* it is listed in :data:`ALLOWED` with the reason (third-party private names
  we have to use).

Anything else is one module reaching into an object it does not own: give
the owner a public method instead.

The test also proves the checker catches what it should (a read, a write and
a private function of another module) and allows what it should.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dfbst_np"

#: (module path relative to the package, attribute): why it is allowed.
ALLOWED = {
    ("cli.py", "_actions"): "argparse has no public way to list a parser's options "
                            "(the CLI finds which train flags were given)",
    ("cli.py", "_SubParsersAction"): "argparse's subcommand action has no public name",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own(node) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def defined_names(tree: ast.AST) -> set:
    """Private names the module defines (see the module docstring)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _own(node.value):
            names.add(node.attr)
        elif (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__"
                                                   for t in node.targets)):
            for elt in ast.walk(node.value):
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    names.add(elt.value)
    return {n for n in names if _private(n)}


def violations(source: str, rel: str = "<test>"):
    """(line, expression) of every private access the rule forbids."""
    tree = ast.parse(source)
    own = defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and not _own(node.value)
                and node.attr not in own and (rel, node.attr) not in ALLOWED):
            found.append((node.lineno, ast.unparse(node)))
    return found


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reads_another_objects_private_attributes(path):
    rel = str(path.relative_to(PACKAGE))
    assert violations(path.read_text(), rel) == []


def test_the_checker_catches_reads_writes_and_foreign_private_functions():
    source = (
        "from . import kernels\n"
        "class A:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def f(self, other, layer):\n"
        "        a = other._mine + self._mine + super()._mine\n"   # own name: allowed
        "        layer._grads['w'] = 0\n"                          # foreign read: no
        "        layer._dkeep = None\n"                             # foreign write: no
        "        return kernels._index_dtype(1), self.__class__\n"  # foreign function: no
    )
    found = [expr for _, expr in violations(source)]
    assert sorted(found) == sorted(["layer._grads", "layer._dkeep", "kernels._index_dtype"])


def test_the_package_is_scanned():
    names = {str(p.relative_to(PACKAGE)) for p in modules()}
    assert {"train/trainer.py", "sparse/masked.py", "bench/parts.py", "textbook.py"} <= names
