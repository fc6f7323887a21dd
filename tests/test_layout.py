"""The package's layout rules (README "Layout"): no import cycle between modules, deferred imports included, nor
between the package's first-level parts; at most ten top-level modules, none over 400 lines; the README's
layout section names every folder and top-level module there is."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_mtanet"


def modules():
    """``{dotted name: path}`` of every module of the package (a package's ``__init__`` under its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph():
    """``{module: modules it imports}``, every import statement counted wherever it is (inside functions too)."""
    mods = modules()

    def owner(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                if target.startswith("keras_mtanet") and owner(target) not in ("", name):
                    graph[name].add(owner(target))
    return graph


def cycles(graph):
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_are_found_by_hand():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules_or_first_level_parts():
    graph = import_graph()
    assert graph["keras_mtanet.presets.registry"] >= {"keras_mtanet.presets.hub", "keras_mtanet.presets.checks"}
    assert cycles(graph) == []

    def part(name):
        return name.split(".")[1] if name.count(".") else None

    parts = {}
    for name, targets in graph.items():
        for target in targets:
            if part(name) and part(target) and part(name) != part(target):
                parts.setdefault(part(name), set()).add(part(target))
    assert cycles(parts) == []
    assert "model" not in parts.get("presets", ()), "presets find model classes through the Keras registry"


def test_at_most_ten_top_level_modules_and_none_over_400_lines():
    assert len(list(PACKAGE.glob("*.py"))) <= 10
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_the_readme_layout_names_every_folder_and_top_level_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert [name for name in folders if f"  {name}/" not in layout] == []
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__main__", "version"))
    assert [name for name in top if f"{name}.py" not in layout] == []
