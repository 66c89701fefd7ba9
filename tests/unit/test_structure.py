"""The project's structure, read from its source: no import circle among its modules, no runner
name tested outside the runner seam, no module over the size limit, and the tests in layers
(no test file importing another)."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("pipeline", "transforms", "models", "scoring", "service")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = (path, ast.parse(path.read_text()))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports, at module level or inside a function alike
    (`from a import b` is an import of the module a.b when there is one, else of a)."""
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for name, (path, tree) in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
                    break
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle_through_a_function_level_import():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_the_projects_modules():
    edges = import_graph()
    assert "scoring.predict" in edges and "pipeline.observers.openlineage" in edges
    assert circles(edges) == []


def runner_name_tests() -> list[str]:
    """Comparisons with a runner's name (`"Direct" in runner`, `runner == "DataflowRunner"`)
    outside the runner seam, pipeline/runners.py."""
    found = []
    for name, (path, tree) in _modules().items():
        if name == "pipeline.runners":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for side in [node.left, *node.comparators]:
                if (
                    isinstance(side, ast.Constant)
                    and isinstance(side.value, str)
                    and ("Direct" in side.value or "Dataflow" in side.value)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_runner_name_test_outside_the_runner_seam():
    assert runner_name_tests() == []


# --- the tests' layers -----------------------------------------------------------------------

# What a test calls that runs the command line, a pipeline or a process (a method call such as
# `predictor.score(` is none of them).
RUNS_CLI = re.compile(r"(?<![\w.])(run_cli|score|main)\(")
RUNS_PIPELINE = re.compile(r"TestPipeline|pipeline_under_test|beam\.Pipeline")
RUNS_PROCESS = re.compile(
    r"process=True|subprocess\.(run|Popen|check_)|(?<![\w.])(drive|kill_hook|_start)\("
)
MODULE_LIMIT = 600


def _test_functions() -> list[tuple[Path, str, ast.FunctionDef, str]]:
    """(file, layer folder, test function, its source with the helpers of its module it calls)."""
    out = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        helpers = {
            n.name: ast.get_source_segment(text, n)
            for n in tree.body
            if isinstance(n, ast.FunctionDef) and not n.name.startswith("test")
        }
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                source = ast.get_source_segment(text, node)
                called = [h for name, h in helpers.items() if f"{name}(" in source]
                layer = path.relative_to(ROOT / "tests").parts[0]
                out.append((path, layer, node, "\n".join([source, *called])))
    return out


def test_every_test_sits_in_a_layer_folder():
    layers = {layer for _, layer, _, _ in _test_functions()}
    assert layers == {"unit", "dofns", "cli", "service"}, layers


def test_a_test_module_imports_only_the_shared_test_modules():
    """A test file of one layer never imports another test file: what layers share is in
    tests/conftest.py, tests/helpers.py and tests/custom_models.py, and a layer's own in its
    conftest.py."""
    shared = {"tests", "tests.conftest", "tests.helpers", "tests.custom_models"}
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        layer = path.relative_to(ROOT / "tests").parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name.startswith("tests.") and name not in shared | {f"tests.{layer}.conftest"}:
                    found.append(f"{path.relative_to(ROOT)}: {name}")
    assert found == []


def test_unit_tests_run_no_cli_pipeline_or_process():
    found = [
        f"{path.relative_to(ROOT)}::{node.name}"
        for path, layer, node, source in _test_functions()
        if layer == "unit"
        and any(p.search(source) for p in (RUNS_CLI, RUNS_PIPELINE, RUNS_PROCESS))
    ]
    assert found == []


def test_dofn_tests_run_the_transforms_under_test_pipeline():
    found = [
        f"{path.relative_to(ROOT)}::{node.name}"
        for path, layer, node, source in _test_functions()
        if layer == "dofns" and not (RUNS_PIPELINE.search(source) or "run_graph(" in source)
    ]
    assert found == []


def test_tests_that_run_a_process_or_talk_to_a_receiver_are_marked_so():
    unmarked = []
    for path, _, node, source in _test_functions():
        if path == Path(__file__):
            continue
        marks = " ".join(ast.unparse(d) for d in node.decorator_list)
        if RUNS_PROCESS.search(source) and "subprocess" not in marks:
            unmarked.append(f"{path.relative_to(ROOT)}::{node.name} (subprocess)")
        if "serving(" in source and "backed" not in marks:
            unmarked.append(f"{path.relative_to(ROOT)}::{node.name} (backed)")
    assert unmarked == []


def test_no_module_of_the_three_packages_is_over_the_limit():
    long = {
        str(path.relative_to(ROOT)): n
        for package in ("pipeline", "transforms", "models")
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MODULE_LIMIT
    }
    assert long == {}
