"""Every command of README.md and docs/*.md runs (or at least parses) against the tiny world.

Each line of a fenced ```bash block that calls `w2s`, `python`, `accelerate` or `make` (continuation lines
joined, comments dropped) is checked by the command's own code, stopped before any model loads:

* `make <target>`: the target is in the Makefile;
* `w2s ...`, `python train/<x>.py ...`, `python -m <module> ...`, `accelerate launch [flags] <script|-m module>`:
  accelerate's own launch parser accepts its flags (and `--config_file` exists); the script or module exists;
  every `recipes/*.yaml` named exists; the command runs through its dispatcher and its own argparse parser,
  and its recipe loads with the given `--key value` overrides through its stage's recipe reader
  (`GuideConfig.from_yaml`, `w2s.data.recipe.load_recipe`, `w2s.eval.config.load_config`, the training
  scripts' `parse_recipe`); the work that would follow (models, data, decoding) is replaced by a stop.

`EXCEPTIONS` lists the few commands that are not checked, each with why; `PLACEHOLDERS` the values put in
for a doc's placeholders. `python` blocks are compiled and their `from w2s... import` names resolved. A few
cheap commands of the README's tour (`RUN`) run end to end. The checker itself is tested on synthetic
snippets: a made-up flag, a missing recipe, a bad recipe override and an unknown subcommand are caught.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import types
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# a doc's placeholder -> the value checked in its place
PLACEHOLDERS = {"$SLURM_ARRAY_TASK_ID": "0"}
# commands (a substring of the joined line) not checked, and why: none today. GPU-only recipes, multi-node
# launches and real hub models parse here, since the check stops before anything loads or launches (a GPU
# training recipe gets CPU_TRAINING); what would belong here is a command whose own parser needs what is
# not here, e.g. a flag read from a file on a cluster. Keep it short.
EXCEPTIONS: dict[str, str] = {}
# commands of the README's tour that run end to end here (cheap ones; the world is built by the session anyway)
RUN = ["w2s --help", "w2s world build"]

PROGRAMS = ("w2s", "python", "accelerate", "make")
SCRIPTS = {"train/sft.py", "train/dpo.py", "train/distill.py", "train/pretrain.py"}


# GPU recipes train in bf16, which TrainingArguments refuses where there is no GPU: there they are checked
# with these flags added (as tests/train/test_recipes.py runs them)
CPU_TRAINING = ["--bf16", "false"]


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class Parsed(Exception):
    """Raised in place of a command's work, once its arguments parsed and its recipe loaded."""


def doc_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """(line number, body) of each fenced block of `language` in a markdown text (indented fences too)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.fullmatch(r"(\s*)```(\w*)\s*", lines[i])
        if fence:
            start, body, i = i + 1, [], i + 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if fence.group(2) == language:
                blocks.append((start + 1, "\n".join(body)))
        i += 1
    return blocks


def doc_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of each `w2s`/`python`/`accelerate`/`make` line of the ```bash blocks in `text`:
    continuation lines joined, comments and a trailing `&` dropped, the leading `VAR=value`s kept."""
    commands = []
    for start, body in doc_blocks(text, "bash"):
        lines, n = body.splitlines(), 0
        while n < len(lines):
            line_no, line = start + n, lines[n].strip()
            while line.endswith("\\") and n + 1 < len(lines):
                n += 1
                line = line[:-1].rstrip() + " " + lines[n].strip()
            n += 1
            words = shlex.split(line, comments=True)
            if words and words[-1] == "&":
                words = words[:-1]
            if program(words) is not None:
                commands.append((line_no, shlex.join(words)))
    return commands


def program(words: list[str]) -> str | None:
    """`w2s`, `python`, `accelerate` or `make` if that is what `words` runs (after `VAR=value`s), else None."""
    words = [w for w in words if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)]
    name = Path(words[0]).name if words else ""
    return name if name in PROGRAMS else None


@contextlib.contextmanager
def dry_run():
    """Each stage's work replaced by `Parsed`, raised once the command's own parser and recipe reader ran."""

    def stop(*args, **kwargs):
        raise Parsed(args)

    def after(read):
        def call(*args, **kwargs):
            raise Parsed(read(*args, **kwargs))

        return call

    import w2s.data.cli
    import w2s.eval.cli
    import w2s.guide.cli
    import w2s.train.cli
    import w2s.train.run  # the training scripts' parse_recipe runs, then the tiny references would be built

    guide_config = types.SimpleNamespace(from_yaml=after(w2s.guide.cli.GuideConfig.from_yaml))
    patches = [
        mock.patch.object(w2s.guide.cli, "GuideConfig", guide_config),
        mock.patch.object(w2s.data.cli, "load_recipe", after(w2s.data.cli.load_recipe)),
        mock.patch.object(w2s.data.cli, "binarize_to_disk", stop),
        mock.patch.object(w2s.eval.cli, "load_config", after(w2s.eval.cli.load_config)),
        *(mock.patch.object(w2s.eval.cli, name, stop)
          for name in ("run_demo", "bench_guide", "bench_data", "bench_eval", "bench_serve", "run_server")),
        *(mock.patch.object(w2s.train.cli, name, stop)
          for name in ("ensure_guide", "guides_table", "bases_table", "ensure_world", "show_samples")),
        mock.patch.object(w2s.train.run, "build_tiny_references", stop),
        mock.patch.dict(os.environ),  # a training recipe's `env:` mapping sets variables
    ]  # fmt: skip
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


def _makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def _entry(module: str):
    """The command-line function of a module a doc runs with `python -m` or as a script."""
    mod = importlib.import_module(module)
    return mod.cli if hasattr(mod, "cli") and module.startswith("w2s.train.") else mod.main


def _call(function, argv: list[str]) -> str | None:
    """None if `function(argv)` parsed (reached `Parsed`, or exited 0), else the error it printed."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = function(argv)
    except Parsed:
        return None
    except SystemExit as e:
        code = e.code
    return None if code in (0, None) else (err.getvalue().strip() or f"exit status {code}")


def check_command(command: str) -> str | None:
    """None if `command` (one joined doc line) parses as described in the module docstring, else why not."""
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    words = [w for w in shlex.split(command) if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)]
    env = dict(w.split("=", 1) for w in shlex.split(command)[: shlex.split(command).index(words[0])])
    name, args = Path(words[0]).name, words[1:]
    for word in args:
        for path in re.findall(r"recipes/[\w./-]+\.yaml", word):
            if not (ROOT / path).is_file():
                return f"no such recipe: {path}"
    if name == "make":
        missing = [a for a in args if "=" not in a and a not in _makefile_targets()]
        return f"no make target {missing}" if missing else None
    if name == "accelerate":
        if args[:1] != ["launch"]:
            return f"accelerate {args[:1]}: only `accelerate launch` is documented"
        from accelerate.commands.launch import launch_command_parser

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                launch = launch_command_parser().parse_args(args[1:])
        except SystemExit:
            return f"accelerate launch: {err.getvalue().strip()}"
        if launch.config_file and not (ROOT / launch.config_file).is_file():
            return f"no such accelerate config: {launch.config_file}"
        target, args = launch.training_script, launch.training_script_args
        module = target if launch.module else None
    elif name == "python":
        if args[:1] == ["-m"]:
            module, args = args[1], args[2:]
        else:
            target, args, module = args[0], args[1:], None
    else:  # w2s
        module = "w2s.cli"
    if module is None:
        if target not in SCRIPTS or not (ROOT / target).is_file():
            return f"no such script: {target}"
        module = "w2s." + target.removesuffix(".py").replace("/", ".")
    if module.startswith("w2s.train.") and not _has_gpu():
        args = [*args, *CPU_TRAINING]
    try:
        function = _entry(module)
    except ImportError as e:
        return f"no such module: {module} ({e})"
    with dry_run():
        os.environ.update(env)  # a doc's leading `VAR=value`s set the command's environment (dry_run restores it)
        return _call(function, args)


def all_commands() -> list[tuple[str, str]]:
    return [(f"{doc.relative_to(ROOT)}:{n}", c) for doc in DOCS for n, c in doc_commands(doc.read_text())]


def _excepted(command: str) -> bool:
    return any(key in command for key in EXCEPTIONS)


COMMANDS = all_commands()


@pytest.mark.parametrize("where,command", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_a_documented_command_parses(where, command):
    if _excepted(command):
        pytest.skip(next(why for key, why in EXCEPTIONS.items() if key in command))
    assert check_command(command) is None, f"{where}: {command}\n{check_command(command)}"


def test_the_docs_hold_commands_and_the_exceptions_are_few():
    assert {doc.name for doc in DOCS} >= {"README.md", "guide.md", "data.md", "train.md", "eval.md", "tiny-world.md"}
    assert len(COMMANDS) > 50
    excepted = [c for _, c in COMMANDS if _excepted(c)]
    assert len(excepted) <= 5, excepted
    for key in EXCEPTIONS:  # an exception no doc needs any more goes
        assert any(key in c for _, c in COMMANDS), f"EXCEPTIONS: no doc command holds {key!r}"


def test_the_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "make test" in readme and "make demo" in readme
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)", readme):
        assert (ROOT / link).is_file(), link
    for doc in DOCS[1:]:
        assert f"docs/{doc.name}" in readme, f"the README does not link {doc.name}"


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_links_between_the_pages_resolve(doc):
    for target, anchor in re.findall(r"\]\(((?:docs/)?[\w.-]+\.md)?(?:#([\w-]+))?\)", doc.read_text()):
        page = (doc.parent / target) if target else doc
        assert page.is_file(), f"{doc.name}: no page {target}"
        if anchor:
            assert anchor in _anchors(page.read_text()), f"{doc.name}: {target} has no heading #{anchor}"


def test_the_readme_tables_match_the_docs():
    """A row of figures in the README's headline tables is the same row in a docs page (figures move only once)."""
    docs = "\n".join(doc.read_text() for doc in DOCS[1:])
    figure = re.compile(r"[+-]?\d[\d.,]*%?|yes|NO")  # a cell that is a measured number or a finding's verdict
    rows = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("|") and any(figure.fullmatch(cell.strip()) for cell in line.strip("|").split("|"))
    ]
    assert rows
    for row in rows:
        assert row in docs, f"README row not in docs/: {row}"


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_python_blocks_compile_and_their_w2s_names_exist(doc):
    for start, body in doc_blocks(doc.read_text(), "python"):
        tree = compile(body, f"{doc.name}:{start}", "exec", ast.PyCF_ONLY_AST)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("w2s"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                        f"{doc.name}:{start}: {node.module} has no {alias.name}"
                    )


@pytest.mark.parametrize("command", RUN)
def test_a_tour_command_runs(command, world_paths):
    readme = (ROOT / "README.md").read_text()
    assert command in [c for _, c in doc_commands(readme)], f"{command!r} is not a README command any more"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert _entry("w2s.cli")(shlex.split(command)[1:]) == 0
    assert out.getvalue().strip()


# the checker can fail: synthetic snippets
SNIPPET = """
Some prose.

```bash
w2s generate --config recipes/tiny/guide.yaml --width 2 \\
    --num_prompts 4   # a comment
{line}
```
"""


@pytest.mark.parametrize(
    "line,error",
    [
        ("w2s generate --config recipes/tiny/guide.yaml --widht 2", "unknown flag --widht (did you mean 'width'?)"),
        ("w2s generate --config recipes/tiny/nothing.yaml", "no such recipe: recipes/tiny/nothing.yaml"),
        ("w2s eval --config recipes/tiny/eval.yaml --num_instructions many", "invalid int value"),
        ("w2s data build --config recipes/tiny/data.yaml --num_promtps 3", "num_promtps"),
        ("python train/dpo.py --config recipes/tiny/dpo.yaml --bta 0.2", "unknown flag '--bta'"),
        ("accelerate launch --config_file recipes/accelerate_configs/zero9.yaml train/sft.py", "zero9.yaml"),
        ("accelerate launch --num_processes 2 train/nothing.py", "no such script"),
        ("w2s world bild", "invalid choice"),
        ("w2s generat --config recipes/tiny/guide.yaml", "unknown command"),
        ("make tset", "no make target"),
    ],
)
def test_the_checker_catches_a_bad_command(line, error):
    commands = doc_commands(SNIPPET.format(line=line))
    assert commands[0] == (5, "w2s generate --config recipes/tiny/guide.yaml --width 2 --num_prompts 4")
    assert check_command(commands[0][1]) is None  # the good line parses
    assert commands[1][1] == shlex.join(shlex.split(line))
    problem = check_command(commands[1][1])
    assert problem is not None and error in problem, problem
