"""The package's layout, read from its imports: the core never imports the lab, no circles."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "deepdream_caffe"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set:
    """Every deepdream_caffe module ``path`` imports, at the top or inside a function."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("deepdream_caffe")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("deepdream_caffe"):
                continue
            found.add(target)
            for alias in node.names:  # `from . import dream` imports a module
                if (
                    (PACKAGE.parent / (target + "." + alias.name).replace(".", "/"))
                    .with_suffix(".py")
                    .is_file()
                ):
                    found.add(f"{target}.{alias.name}")
    found.discard(module_name(path))
    return {m for m in found if m != "deepdream_caffe"}


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


TOP = {
    "deepdream_caffe.cli",
    "deepdream_caffe.parser",
    "deepdream_caffe.flags",
    "deepdream_caffe.job",
    "deepdream_caffe.drawjob",
    "deepdream_caffe.sweep",
    "deepdream_caffe.reproduce",
    "deepdream_caffe.videojob",  # the video command's job, as sweep's
}
CORE = {m for m in GRAPH if m not in TOP and not m.startswith("deepdream_caffe.lab")}


def test_the_core_imports_neither_the_lab_nor_the_job_layer():
    for module in CORE:
        upward = {d for d in GRAPH[module] if d in TOP or d.startswith("deepdream_caffe.lab")}
        assert not upward, (module, upward)


def test_nothing_imports_the_cli():
    assert not [m for m, deps in GRAPH.items() if "deepdream_caffe.cli" in deps]


def test_no_import_circle():
    state = {}

    def visit(module, path):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", " -> ".join(path + [module])
        state[module] = "open"
        for dep in GRAPH.get(module, ()):
            visit(dep, path + [module])
        state[module] = "done"

    for module in GRAPH:
        visit(module, [])


def test_the_graph_was_read():  # the checks above mean nothing over an empty graph
    assert "deepdream_caffe.dream" in GRAPH["deepdream_caffe.job"]
    assert "deepdream_caffe.job" in GRAPH["deepdream_caffe.cli"]
    assert "deepdream_caffe.lab.bundle" in GRAPH["deepdream_caffe.cli"]


def test_the_cli_stays_small():
    assert len((PACKAGE / "cli.py").read_text().splitlines()) < 400
