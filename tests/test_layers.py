"""The architecture holds: stages import only downward (guide <- data <- train <- eval <- the `w2s` command),
and no first-party import hides inside a function (where it would hide a cycle until run time)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK = {"guide": 0, "data": 1, "train": 2, "eval": 3, "w2s": 4}  # what each stage may import: lower or equal


def modules():
    """(stage, module name, file, parsed tree) for every Python file of the stages and the command."""
    for stage in RANK:
        for path in sorted((ROOT / stage).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("w2s", *parts[1:])) if stage == "w2s" else ".".join(("w2s", *parts))
            yield stage, name.removesuffix(".__init__"), path, ast.parse(path.read_text(), str(path))


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The first-party modules an import statement names (relative imports resolved)."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy" and node.args:
        target = node.args[0]  # lazy("w2s.x.y:function") in a cli.py (guide/commands.py), or an f-string's prefix
        if isinstance(target, ast.JoinedStr):
            target = target.values[0]
        if not isinstance(target, ast.Constant):
            return []
        name = target.value.partition(":")[0]
        names = [name.rstrip(".") if name.endswith(".") else name]
    elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            names = [".".join([*base, node.module] if node.module else base)]
        else:
            names = [node.module or ""]
    else:
        return []
    return [n for n in names if n == "w2s" or n.startswith("w2s.")]


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "w2s"


def test_stages_import_only_downward():
    upward = []
    for stage, module, path, tree in modules():
        for node in ast.walk(tree):
            for target in imported(node, module, path.name == "__init__.py"):
                if RANK[stage_of(target)] > RANK[stage]:
                    upward.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module} imports {target}")
    assert not upward, "imports against the layers (register the name from above instead):\n" + "\n".join(upward)


def test_the_stage_graph_has_no_cycles():
    edges: dict[str, set[str]] = {s: set() for s in RANK}
    for stage, module, path, tree in modules():
        for node in ast.walk(tree):
            for target in imported(node, module, path.name == "__init__.py"):
                if stage_of(target) != stage:
                    edges[stage].add(stage_of(target))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges[start])

    assert not [s for s in RANK if reaches(s, s, set())], edges


def test_no_first_party_import_inside_a_function():
    hidden = []
    for _, module, path, tree in modules():
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if imported(node, module, path.name == "__init__.py"):
                        hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not hidden, "first-party imports inside functions (move them to the top of the module):\n" + "\n".join(
        hidden
    )


def test_the_checks_see_an_upward_and_a_hidden_import():
    """The checks above can fail: an upward import and an import inside a function are found."""
    tree = ast.parse("def f():\n    from w2s.train.world import ensure_tiny\n")
    node = tree.body[0].body[0]
    (target,) = imported(node, "w2s.guide.models", False)
    assert RANK[stage_of(target)] > RANK["guide"]
    assert imported(ast.parse("from .engine import Engine").body[0], "w2s.guide.run", False) == ["w2s.guide.engine"]
    call = ast.parse('run = lazy("w2s.eval.run:evaluate")').body[0].value
    assert imported(call, "w2s.guide.cli", False) == ["w2s.eval.run"]  # a lazy load counts as an import
    stages = ast.parse('lazy(f"w2s.train.{stage}:cli")').body[0].value
    assert imported(stages, "w2s.train.cli", False) == ["w2s.train"]
