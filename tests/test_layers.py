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


# -- the decoding contract (guide/decoders.py, guide/engine.py)

# what a decoder module may import from w2s: the contract, the decode context, the engine's public names, the
# public types and its fields' ranges; never a model's state, the KV cache or the scorers' internals
DECODER_MAY_IMPORT = {
    "w2s.guide.commands", "w2s.guide.context", "w2s.guide.decoders", "w2s.guide.engine", "w2s.guide.ranges",
    "w2s.guide.stopping", "w2s.guide.streams", "w2s.guide.types",
}  # fmt: skip
GUIDE_INTERNALS = {"LMState", "sync_tokens", "IncrementalScores", "kv"}


def registers_a_decoder(tree: ast.AST) -> bool:
    return any(
        isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register_decoder"
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for d in node.decorator_list
    )


def decoder_violations(module: str, tree: ast.AST, is_package: bool, decoder_modules: set[str]) -> list[str]:
    """Imports of a decoder module that reach past the engine boundary, and private attributes it reads off
    anything but itself."""
    out = []
    for node in ast.walk(tree):
        for target in imported(node, module, is_package):
            if target not in DECODER_MAY_IMPORT | decoder_modules:
                out.append(f"{node.lineno}: imports {target}")
        if isinstance(node, ast.ImportFrom):
            out += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name in GUIDE_INTERNALS]
        private = isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
        if private and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            out.append(f"{node.lineno}: reads {ast.unparse(node)}")
    return out


def test_decoders_use_only_the_engine_boundary():
    found = [(m, p, t) for _, m, p, t in modules() if registers_a_decoder(t)]
    assert {m for m, _, _ in found} >= {"w2s.guide.search", "w2s.guide.draft", "w2s.guide.fusion"}
    decoder_modules = {m for m, _, _ in found}
    bad = [
        f"{path.relative_to(ROOT)}:{v}"
        for module, path, tree in found
        for v in decoder_violations(module, tree, path.name == "__init__.py", decoder_modules)
    ]
    assert not bad, "decoders reaching past the engine boundary (guide/engine.py lists its operations):\n" + "\n".join(
        bad
    )


def test_the_boundary_check_sees_a_decoder_that_reaches_inside():
    source = (
        "from w2s.guide.state import LMState\nfrom w2s.guide.decoders import register_decoder\n"
        "@register_decoder('x')\nclass X:\n    def run(self, ctx):\n        return ctx.start()._state.rollback(0, 1)\n"
    )
    tree = ast.parse(source)
    assert registers_a_decoder(tree)
    found = decoder_violations("w2s.guide.x", tree, False, set())
    assert any("imports w2s.guide.state" in v for v in found) and any("_state" in v for v in found), found


def import_graph(stage: str = "guide") -> dict[str, set[str]]:
    """Module -> the modules of `stage` it imports anywhere: at the top, in functions, under TYPE_CHECKING, lazily."""
    graph: dict[str, set[str]] = {}
    for s, module, path, tree in modules():
        if s != stage:
            continue
        targets = graph.setdefault(module, set())
        for node in ast.walk(tree):
            for target in imported(node, module, path.name == "__init__.py"):
                if stage_of(target) == stage and target != module and target != f"w2s.{stage}":
                    targets.add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as the list of its modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_guide_holds_no_import_cycle():
    cycle = find_cycle(import_graph("guide"))
    assert cycle is None, "an import cycle in guide/ (TYPE_CHECKING imports count): " + " -> ".join(cycle)


def test_the_cycle_check_sees_a_cycle_hidden_behind_type_checking():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from w2s.guide.run import Guide\n")
    assert imported(tree.body[1].body[0], "w2s.guide.decoders", False) == ["w2s.guide.run"]
    graph = {"w2s.guide.run": {"w2s.guide.config"}, "w2s.guide.config": {"w2s.guide.decoders"},
             "w2s.guide.decoders": {"w2s.guide.run"}}  # fmt: skip
    assert find_cycle(graph) == ["w2s.guide.config", "w2s.guide.decoders", "w2s.guide.run", "w2s.guide.config"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_decoder_field_shadows_a_shared_recipe_key():
    import dataclasses

    from w2s.guide.config import GuideConfig
    from w2s.guide.decoders import registered

    shared = {f.name for f in dataclasses.fields(GuideConfig)}
    shadowing = {name: sorted(set(cls.recipe_keys()) & shared) for name, cls in registered().items()}
    assert not any(shadowing.values()), shadowing


def test_a_decoder_field_shadowing_a_shared_key_is_refused_at_registration():
    import dataclasses

    import pytest

    from w2s.guide.commands import GuideError
    from w2s.guide.config import GuideConfig  # noqa: F401  (its keys are reserved when it is imported)
    from w2s.guide.decoders import DECODERS, Decoder, register_decoder

    @dataclasses.dataclass
    class Shadowing(Decoder):
        batch_size: int = 3

    with pytest.raises(GuideError, match=r"decoder 'shadowing': field\(s\) batch_size shadow recipe keys"):
        register_decoder("shadowing")(Shadowing)
    assert "shadowing" not in DECODERS

    @dataclasses.dataclass
    class Retyped(Decoder):
        width: str = "wide"  # cbs's `width` is an int

    with pytest.raises(GuideError, match=r"key 'width' is str here but int in decoder 'cbs'"):
        register_decoder("retyped")(Retyped)
