"""File and recipe helpers shared by every stage (the lowest layer holds them): atomic writes, strict YAML
recipes, did-you-mean hints."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from w2s.guide.commands import UserError
from w2s.guide.sources import has_prefix


class RecipeError(UserError, ValueError):
    """A recipe or a flag that cannot be used (unknown key, wrong type, missing file or column): every stage's."""


TEMP_MARK = ".w2s-tmp-"  # in the name of every temporary file or folder a w2s run makes beside its outputs


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_file(path: Path) -> tuple[int, Path]:
    """A temporary file beside `path`, named for the process that owns it, with the umask's mode (not
    mkstemp's 0600: others on a shared machine can read the results as they could any file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, Path(tmp)


def temp_dir(path: Path) -> Path:
    """A temporary folder beside `path` (or inside it, for a folder being filled), named for its process,
    with the umask's mode."""
    parent = path if path.is_dir() else path.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", dir=parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temps(folder: str | Path, *, recursive: bool = True) -> int:
    """Removes, in `folder` (and below it if `recursive`), the temporary files and folders of w2s processes
    that no longer run (a run killed mid-write leaves them); returns how many. Runs call it on their output
    folder when they start."""
    folder, removed = Path(folder), 0
    if not folder.is_dir():
        return 0
    for entry in sorted((folder.rglob if recursive else folder.glob)(f"*{TEMP_MARK}*")):
        pid = entry.name.partition(TEMP_MARK)[2].partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)) or not entry.exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def check_writable(path: str | Path) -> None:
    """A clear error now, before any work, if `path` (a file or folder to be written) cannot be: the
    nearest folder that exists on its way must be a writable folder. Nothing is created."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing == path and path.is_file():
        existing = path.parent
    if not existing.is_dir():
        raise RecipeError(f"cannot write {str(path)!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(f"cannot write {str(path)!r}: {str(existing)!r} is not writable (choose another output)")


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OS error raised inside that names no file (a full disk: `No space left on device`) names `path`,
    the file being written."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def write_atomic(path: str | Path, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, syncs it, then renames it over `path`.

    Readers see the old file or the new one, never half of one. The file gets the umask's mode; an OS error
    (a full disk) names `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path)
    try:
        with naming(path), os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def jsonl_rows(lines: Iterable[str | bytes], path: Path, error: type[Exception] = RecipeError) -> list[tuple[str, Any]]:
    """(`<file>:<line>`, row) for each non-blank line of the JSONL file `path`; a line that is not JSON is an
    `error` naming the file and line."""
    rows = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{line_no}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise error(f"{path}:{line_no}: not a JSON object ({e.msg} at column {e.colno})") from None
    return rows


def read_rows(path: Path, error: type[Exception] = RecipeError) -> list[tuple[str, Any]]:
    """(where, row) for each object of a .jsonl file (one per line, `<file>:<line>`) or a .json file (a
    list, `<file>: item <n>`, from 1); a file that is neither is an `error` naming the file and line. A UTF-8
    byte-order mark (as Windows editors and spreadsheets save text) is not part of the first row."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8-sig") as f:
            return jsonl_rows(f, path, error)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list):
        raise error(f"{path}: a .json file of records holds a list of objects (use .jsonl for one per line)")
    return [(f"{path}: item {i}", row) for i, row in enumerate(data, 1)]


class DuplicateKeyError(yaml.YAMLError):
    """A key written twice in one YAML mapping (YAML itself lets the last one win)."""


class _StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`'s loader, except that a key written twice in one mapping, at any depth, is an error
    naming the key and both lines."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}  # key -> the line it was first written on
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(f"key {key!r} written twice (lines {seen[key]} and {line})")
                seen[key] = line
            except TypeError:  # an unhashable key: the base constructor says so
                continue
        return super().construct_mapping(node, deep)


def read_recipe(path: str | Path, error: type[Exception] = RecipeError) -> dict:
    """A recipe file's top-level YAML mapping (empty file: {}); `error` naming the file when it cannot be one,
    or when a key is written twice in one mapping (at any depth: both lines named)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"recipe {str(path)!r}: no such file")
    try:
        values = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_StrictLoader)
    except DuplicateKeyError as e:
        raise error(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from e
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise error(f"{path}: a recipe is a YAML mapping of key: value, got {type(values).__name__}")
    return values


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` to a mistyped key, or ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


SAMPLE_BLOCKS, BLOCK = 16, 1 << 16  # a large file's fingerprint reads 16 blocks of 64 KiB, evenly spaced


def folder_fingerprint(folder: str | Path) -> str:
    """A fingerprint of a model folder's contents that a retrained or replaced model changes and a copy keeps:
    each top-level file's name and size, with its bytes (up to 1 MiB) or 16 evenly spaced 64 KiB blocks of
    them (a weights file: new weights differ throughout, so a sample sees them); cheap at any model size."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as f:
            if size <= SAMPLE_BLOCKS * BLOCK:
                digest.update(f.read())
                continue
            for k in range(SAMPLE_BLOCKS):
                f.seek((size - BLOCK) * k // (SAMPLE_BLOCKS - 1))
                digest.update(f.read(BLOCK))
    return digest.hexdigest()[:16]


def _is_model_folder(path: Path) -> bool:
    try:  # a recipe's other strings (a judge's template, a stop string) are no paths, some too long to be one
        return any((path / name).is_file() for name in ("config.json", "adapter_config.json", "tokenizer_config.json"))
    except (OSError, ValueError):
        return False


def leaves(value, *, keys: bool = False) -> Iterator[Any]:
    """The values inside nested dicts, lists and tuples (with `keys`, the dicts' keys too), depth first."""
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending += [*value.keys(), *value.values()] if keys else list(value.values())
        elif isinstance(value, list | tuple):
            pending += list(value)
        else:
            yield value


def model_folders(recipe: dict) -> dict[str, str]:
    """The fingerprint (`folder_fingerprint`) of every local model, adapter or tokenizer folder a recipe names, by the
    name the recipe gives it (hub ids and `<prefix>:` names are the recipe's own business)."""
    return {
        value: folder_fingerprint(Path(value).expanduser())
        for value in sorted({v for v in leaves(recipe) if isinstance(v, str) and not has_prefix(v)})
        if _is_model_folder(Path(value).expanduser())
    }
