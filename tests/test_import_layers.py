"""The package's layers point one way, and no module imports itself through others.

Every import counts: at the top of a module, inside a function, under ``TYPE_CHECKING``. A module
may import its own layer's package, the layers below it and the foundation; packages that share a
layer (``train`` and ``evaluation``; ``models``, ``data`` and ``attacks``) do not import each
other. docs/design.md draws the same picture.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# lowest first; each entry is one layer of packages (a module belongs to the longest prefix)
LAYERS: list[list[str]] = [
    ["robust_mc.errors"],
    ["robust_mc.limits"],
    ["robust_mc.registry", "robust_mc.settings"],
    ["robust_mc.run", "robust_mc"],  # robust_mc/__init__.py: the version, from provenance
    ["robust_mc.models", "robust_mc.data", "robust_mc.attacks"],
    ["robust_mc.core"],
    ["robust_mc.train", "robust_mc.evaluation"],
    ["robust_mc.config", "robust_mc.configs"],
    ["robust_mc.store"],
    ["robust_mc.report"],
    ["robust_mc.pipelines"],
    ["robust_mc.commands"],
    ["robust_mc.cli"],
    ["robust_mc.__main__"],
]


def modules() -> dict[str, Path]:
    """Every module by its import name; the top-level attacks/ and configs/ are
    robust_mc.attacks and robust_mc.configs (pyproject's package-dir)."""
    found = {}
    for path in [*ROOT.glob("robust_mc/**/*.py"), *ROOT.glob("attacks/*.py"),
                 *ROOT.glob("configs/*.py")]:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[0] != "robust_mc":
            parts.insert(0, "robust_mc")
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that ``name`` imports (a package's ``__init__`` counts as the
    package; ``from pkg import mod`` as ``pkg.mod``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[:len(package) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def package_of(module: str) -> tuple[int, str]:
    """(layer index, package) of the longest matching prefix."""
    best = (-1, "")
    for index, layer in enumerate(LAYERS):
        for package in layer:
            if (module == package or module.startswith(package + ".")) and \
                    len(package) > len(best[1]):
                best = (index, package)
    assert best[0] >= 0, f"{module} belongs to no layer: add its package to LAYERS"
    return best


def test_every_import_points_down_or_sideways_within_its_package() -> None:
    upward = []
    for module, targets in graph().items():
        layer, package = package_of(module)
        for target in targets:
            target_layer, target_package = package_of(target)
            if target_layer > layer or (target_layer == layer and target_package != package
                                        and "robust_mc" not in (package, target_package)):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_the_top_level_folders_are_imported_by_their_installed_names() -> None:
    """``import attacks`` would work from a checkout only, and would load a second copy of
    every attack module (and of its registries) beside robust_mc.attacks."""
    stray = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            stray += [f"{module}: {n}" for n in names
                      if n.split(".")[0] in ("attacks", "configs", "cli")]
    assert not stray, stray


def test_no_import_cycle() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The walk finds imports inside functions and relative ones: the check can fail."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from robust_mc.pipelines import connect\n"
                      "from .records import CurveRun\n", encoding="utf-8")
    known = modules()
    found = imports_of("robust_mc.store.probe", source, known)
    assert {"robust_mc.pipelines", "robust_mc.pipelines.connect",
            "robust_mc.store.records"} <= found
    assert package_of("robust_mc.pipelines.connect")[0] > package_of("robust_mc.store.probe")[0]


def test_every_package_is_installed():
    """pyproject.toml lists the packages a wheel holds: a package left out imports from a
    checkout and is missing from every install."""
    import os
    import re

    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.M | re.S)
    assert block is not None
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    found = {".".join(Path(folder).relative_to(ROOT).parts)
             for folder, _, names in os.walk(ROOT / "robust_mc") if "__init__.py" in names}
    mapped = dict(re.findall(r'^"([\w.]+)" = "(\w+)"$', text, re.M))
    assert mapped == {"robust_mc.attacks": "attacks", "robust_mc.configs": "configs"}
    found |= set(mapped)
    assert found == listed, f"packages: {sorted(found ^ listed)}"


def test_the_checkout_holds_no_links():
    """A link breaks the package on a checkout without links (Windows, a ZIP, git archive):
    the top-level attacks/ and configs/ reach the package through package-dir instead."""
    links = [path for top in ROOT.iterdir() if top.name != ".git" and not top.name.startswith(".")
             for path in [top, *(top.rglob("*") if top.is_dir() and not top.is_symlink() else [])]
             if path.is_symlink()]
    assert not links, f"symbolic links: {links}"


def test_the_library_map_names_every_module():
    """docs/design.md's library map names each module, or the folder it belongs to: a module
    added without a line there is a part of the house nobody was shown."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    unnamed = []
    for path in sorted((ROOT / "robust_mc").rglob("*.py")):
        relative = path.relative_to(ROOT)
        folders = [f"`{folder}/`" for folder in list(relative.parents)[:-2]]
        if path.name == "__init__.py" or f"`{relative}`" in text or f"`{path.name}`" in text:
            continue
        if not any(folder in text for folder in folders):
            unnamed.append(str(relative))
    assert not unnamed, f"docs/design.md's library map lacks {unnamed}"


def test_no_module_is_over_400_lines():
    """A module that long holds more than one concept: split it along its seams."""
    long = {str(p.relative_to(ROOT)): n for p in modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"
