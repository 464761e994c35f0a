"""The package's import graph against the layers docs/design.md declares.

docs/design.md lists the layers of `scorebench/` from top to bottom in its `layers` block; a module
may import from its own layer and the layers below, never from above, and no set of modules may
import each other in a circle. Imports inside functions count too (they are where a lazy import
would hide a cycle). The checker is also run on a small package made in the test, with a planted
upward import and a planted cycle, so the test is known to be able to fail.
"""

from __future__ import annotations

import ast

import pytest
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"


def module_files(package_dir: Path) -> dict[str, Path]:
    """{dotted module name: file} of every module of the package, `__init__` as the package itself."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported_modules(name: str, path: Path, modules: dict) -> set[str]:
    """The package's modules that `name` imports anywhere in its file (top level or in functions)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from pkg.mod import function` names pkg.mod
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    modules = module_files(package_dir)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def declared_layers(text: str) -> list[list[str]]:
    """The `layers` block of a design document: one line per layer, top first, `N. name name ...`."""
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/design.md has no ```layers block"
    return [line.split(".", 1)[1].split() for line in block.group(1).splitlines() if re.match(r"\s*\d+\.", line)]


def layer_of(module: str, layers: list[list[str]], package: str) -> int | None:
    """Index of the layer whose entry is the longest prefix of `module` (entries are relative names)."""
    best, depth = None, -1
    for i, entries in enumerate(layers):
        for entry in entries:
            full = f"{package}.{entry}"
            if (module == full or module.startswith(full + ".")) and full.count(".") > depth:
                best, depth = i, full.count(".")
    return best


def problems(package_dir: Path, layers: list[list[str]]) -> list[str]:
    """Every unmapped module, unknown layer entry, upward import and import cycle, one line each."""
    package = package_dir.name
    graph = import_graph(package_dir)
    out = [f"{m}: in no layer of the design" for m in sorted(graph) if m != package and layer_of(m, layers, package) is None]
    for entries in layers:
        for entry in entries:
            full = f"{package}.{entry}"
            if not any(m == full or m.startswith(full + ".") for m in graph):
                out.append(f"{entry}: named in the design but not in the package")
    for module, targets in sorted(graph.items()):
        mine = layer_of(module, layers, package)
        for target in sorted(targets):
            theirs = layer_of(target, layers, package)
            if mine is not None and theirs is not None and theirs < mine:
                out.append(f"{module} imports {target}: an upward import (layer {mine + 1} -> {theirs + 1})")
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_follows_its_declared_layers():
    assert problems(ROOT / "scorebench", declared_layers(DESIGN.read_text())) == []


def test_the_checker_finds_an_upward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "top.py").write_text("from pkg.low import base\n")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "base.py").write_text("def f():\n    from pkg import top  # hidden in a function\n")
    (pkg / "mid.py").write_text("import pkg.low.base as b\n")
    layers = [["top"], ["mid"], ["low"]]
    found = problems(pkg, layers)
    assert "pkg.low.base imports pkg.top: an upward import (layer 3 -> 1)" in found
    assert "import cycle: pkg.low.base -> pkg.top" in found
    (pkg / "low" / "base.py").write_text("from . import other\n")
    (pkg / "low" / "other.py").write_text("")
    assert problems(pkg, layers) == []
    assert problems(pkg, [["top"], ["low"]]) == ["pkg.mid: in no layer of the design"]


def test_the_map_names_every_module_and_stays_inside_the_repository():
    """docs/design.md is the map: every module file of the package and every rule file is named in
    it (a module `x.py` by `x.py` or by its folder's line), and it points nowhere outside the repo."""
    text = DESIGN.read_text()
    assert "../" not in text, "docs/design.md must not point outside the repository"
    missing = []
    for path in sorted((ROOT / "scorebench").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if path.name == "__init__.py" and path.parent.name == "scorebench":
            continue
        if path.name not in text and str(rel) not in text:
            missing.append(str(rel))
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        if str(path.relative_to(ROOT)) not in text:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == [], f"docs/design.md does not name: {missing}"


def test_the_readme_layout_names_every_top_level_entry():
    """The README's Layout section names every tracked top-level file and folder, and only real ones."""
    import re
    import subprocess

    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    top = {p.split("/", 1)[0] for p in tracked} - {".gitignore", ".gitattributes", "LICENSE", "README.md"}
    missing = sorted(t for t in top if f"`{t}" not in layout)
    assert missing == [], f"README layout does not name: {missing}"
    for named in re.findall(r"`([A-Za-z0-9_.][^`* ]*)`", layout):
        first = named.rstrip("/").split("/")[0]
        if "." in first and not (ROOT / first).exists() and "/" not in named:
            continue  # a module name like default_figures.py, resolved below
        if "/" in named or (ROOT / first).exists():
            assert (ROOT / named.rstrip("/")).exists() or any(ROOT.glob(named)), f"README layout names {named}, not in the tree"
