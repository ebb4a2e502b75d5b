"""The kernels' on-disk cache follows the whole engine's source (compiled.py).

Numba alone checks a cached kernel against the file that defines it, so a
change to a helper the kernel inlines from another file (a stock check in
counters.py, inside transitions.apply_batch) left the old machine code
running.  The end-to-end test changes exactly that in a copy of the package
and sees the kernel follow; the unit tests check the rule that makes it hold
for every kernel: the key covers every module a kernel can take code or
constants from.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from double11.engine import compiled
from double11.engine.compiled import KEYED_SOURCES, PACKAGE, use_key

TESTS = Path(__file__).resolve().parent
COMPILED = "double11.engine.compiled"


# ---------------------------------------------------------------- the key's rule
def _modules(package: Path) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = (package.name, *path.relative_to(package).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(source: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules `source` imports, by name.  `from double11 import
    limits` imports double11.limits; the package's own __init__ only gathers
    names for users of the package and is left out."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            out.update(name for name in names if name in modules)
            if node.module != "double11" and not all(name in modules for name in names):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {name for name in out if name in modules and name != "double11"}


def test_the_key_covers_every_module_a_kernel_takes_code_or_constants_from():
    """The modules that define kernels (they import compiled.py), and every
    module they import from, transitively: a kernel's code and the values
    it freezes as constants come from nowhere else."""
    modules = _modules(PACKAGE)
    imports = {name: _imports(path, modules) for name, path in modules.items()}
    kernel_modules = {name for name, found in imports.items() if COMPILED in found}
    assert {"double11.engine.transitions", "double11.engine.counters", "double11.link.frames"} <= kernel_modules
    reached, todo = set(), list(kernel_modules)
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(imports[name])
    keyed = {path for pattern in KEYED_SOURCES for path in PACKAGE.glob(pattern)}
    assert sorted(name for name in reached if modules[name] not in keyed) == [], (
        "add these to compiled.KEYED_SOURCES: a change to them would leave stale kernels")


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "src" / "double11"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))


def test_the_key_is_of_the_source_and_follows_every_keyed_module(tmp_path):
    key = compiled.source_key.__wrapped__  # uncached: the copy changes under it
    copy = _copy(tmp_path)
    first = key(copy)
    assert first == key(PACKAGE), "the same source in another folder has another key"
    for name in ("engine/counters.py", "errors.py", "link/frames.py", "catalog/model.py"):
        (copy / name).write_text((copy / name).read_text() + "\n# changed\n")
        changed = key(copy)
        assert changed != first, f"a change to {name} left the key as it was"
        first = changed
    (copy / "http" / "app.py").write_text((copy / "http" / "app.py").read_text() + "\n# changed\n")
    assert key(copy) == first, "a module no kernel reads is in the key: editing it costs a compile"


def test_a_new_key_removes_the_old_keys_of_its_root_only(tmp_path):
    root = tmp_path / "kernels"
    old, kept, new, later = "0123456789abcdef", "not-a-key", "fedcba9876543210", "00000000000000aa"
    (root / old / "engine").mkdir(parents=True)
    (root / old / "engine" / "x.nbi").write_bytes(b"old")
    (root / kept).mkdir()
    assert use_key(root, new)
    assert sorted(p.name for p in root.iterdir()) == sorted([kept, new])
    # the key's folder exists already (another process made it): nothing is removed
    (root / later).mkdir()
    assert not use_key(root, new)
    assert sorted(p.name for p in root.iterdir()) == sorted([kept, new, later])


# ------------------------------------------------------------------- end to end
# A checkout of 6 units of a SKU with 5 in stock, applied by the compiled
# loop of the package copy on PYTHONPATH: the result code and how the loop
# was had (compiled here, or loaded from the cache, from where)
SCRIPT = r"""
import json
import double11
from double11.config import FestivalConfig
from double11.engine import transitions
from double11.engine.encode import encode_commands
from double11.engine.machine import Engine
from double11.errors import Result
from model import T0, co, small_catalog

engine = Engine(small_catalog(), FestivalConfig())
code, _ = engine.apply(encode_commands([co("k", [(102, 6)])]), T0)
stats = transitions.apply_batch.stats
print(json.dumps({"package": double11.__file__, "code": Result(int(code[0])).name, "cache": stats.cache_path,
                  "loaded": sum(stats.cache_hits.values()), "compiled": sum(stats.cache_misses.values())}))
"""
STOCK_CHECK = "if available[c] < qty[j]:"
ONE_UNIT_LOOSER = "if available[c] < qty[j] - 1:"


@pytest.mark.slow  # compiles the engine's loop three times, two of them at once
def test_the_kernel_follows_a_change_to_a_helper_it_inlines(tmp_path):
    # two copies of the package: one whose own folder takes the cache, where the helper
    # changes; one whose own folder cannot take it, which falls back to the user's cache
    # folder.  Each compile is a process of its own, so the copies' runs go two at a time
    copy, read_only = _copy(tmp_path / "a"), _copy(tmp_path / "b")
    user_cache = tmp_path / "user-cache"
    in_tree = copy / "__pycache__" / "kernels"
    # as root, permissions do not stop writes, so a file is in the way of its cache
    # folder, which fails the same way as a read-only folder
    (read_only / "__pycache__").write_text("")

    def start(package: Path) -> tuple[Path, subprocess.Popen[str]]:
        env = {name: value for name, value in os.environ.items() if not name.startswith("NUMBA_")}
        env |= {"PYTHONPATH": os.pathsep.join([str(package.parent), str(TESTS)]), "PYTHONDONTWRITEBYTECODE": "1",
                "XDG_CACHE_HOME": str(user_cache)}
        return package, subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)

    def results(*started: tuple[Path, subprocess.Popen[str]]) -> list[dict]:
        ended = [(package, proc, *proc.communicate(timeout=600)) for package, proc in started]  # all, then checked
        found = []
        for package, proc, out, err in ended:
            assert proc.returncode == 0, err[-3000:]
            found.append(json.loads(out.strip().splitlines()[-1]))
            assert Path(found[-1]["package"]).resolve().parent == package
        return found

    first_found, back_found = results(start(copy), start(read_only))
    assert (first_found["code"], first_found["compiled"]) == ("out_of_stock", 1)
    # the copy whose own folder cannot take the cache: the user's cache folder, the same key
    assert (back_found["code"], back_found["compiled"]) == ("out_of_stock", 1)
    assert Path(back_found["cache"]).is_relative_to(user_cache)
    assert Path(back_found["cache"]).parent.name == Path(first_found["cache"]).parent.name, \
        "the same source, another key"

    _edit(copy / "engine" / "counters.py", STOCK_CHECK, ONE_UNIT_LOOSER)
    looser_found, warm_found = results(start(copy), start(read_only))
    assert looser_found["code"] == "ok", "the loop ran the cached stock check, not the one in counters.py"
    assert looser_found["compiled"] == 1
    # in the package's own folder, each key apart, the old one gone
    assert Path(first_found["cache"]).parent.parent == in_tree
    assert [p.name for p in in_tree.iterdir()] == [Path(looser_found["cache"]).parent.name], "the old key stayed"
    # and from the user's cache folder, loaded the next time
    assert (warm_found["code"], warm_found["loaded"], warm_found["compiled"]) == ("out_of_stock", 1, 0)
