"""No import cycles among dfbst_np's modules (module-level imports, read with ast).

A few imports sit inside functions on purpose: each closes a loop that a
module-level import would make a cycle, and runs only when its function is
first called, after every module has loaded. The test lists them, so that a
new one is a decision, not an accident.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dfbst_np"

#: (importing module, imported module) of the deliberate function-level imports, and why.
LAZY = {
    # the registry loads the built-in methods on first use; they import the textbook,
    # which asks the registry for a method's rule
    **{("dfbst_np.methods", f"dfbst_np.methods.{m}"): "built-ins loaded on first use"
       for m in ("dense", "dst", "dfbst", "gmp", "set", "rigl")},
    ("dfbst_np.textbook", "dfbst_np.methods"): "a method's rule (tau = |t| or t) by its name",
    ("dfbst_np.sparse.mask_rule", "dfbst_np.methods"): "the same, for the fast rule",
    # the cost model measures the kernels (which ask the cost model for their path)
    ("dfbst_np.sparse.costs", "dfbst_np.bench.crossover"): "the first measurement of the kernels",
    # the checker hides the answer from the package while a student's function runs
    ("dfbst_np.exercises.training_step", "dfbst_np.exercises"): "hiding reference_step",
}


def module_names():
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name, path, mods, top_level):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level else list(ast.walk(tree))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{module}.{alias.name}" if module else alias.name
                found.add(target if target in mods else module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in mods and m != name}


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def graph(top_level):
    mods = module_names()
    return {name: imports(name, path, mods, top_level) for name, path in mods.items()}


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycles_among_module_level_imports():
    assert cycles(graph(top_level=True)) == []


def test_function_level_imports_that_close_a_loop_are_the_listed_ones():
    top, every = graph(top_level=True), graph(top_level=False)
    inside = {(m, t) for m in every for t in every[m] - top[m]}
    loops = {(m, t) for (m, t) in inside if _reaches(every, t, m)}
    assert loops == set(LAZY)


def _reaches(edges, start, goal):
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        if v == goal:
            return True
        if v in seen:
            continue
        seen.add(v)
        todo.extend(edges.get(v, ()))
    return False
