"""How the engine's inner loops are compiled (Numba), in one place.

- nogil: the loop runs beside the HTTP side's Python, not under its lock.
- cache: compiled once per machine and version of the source, not at every
  start (see "The cache" below).
- no reference counting (_nrt=False): the loops only index arrays that the
  caller owns and never allocate, and Numba's counting cannot be proven away
  in loops this branchy; it cost two atomic operations per array per helper
  call, which was 70% of the engine's time.
- NumPy's error model: integer division by a constant needs no Python error path.
- `inline` merges a small helper into its caller before type inference;
  `helper` compiles a bigger one on its own.

The cache.  Numba checks a cached kernel against the file that defines it,
but a kernel's machine code also holds the helpers it inlines or links from
other files (`counters.claim_lines` inside `transitions.apply_batch`) and the
constants it froze from other modules (`errors`, `limits`).  Keyed on one
file, a change to a helper left the old rule running until `__pycache__` was
cleared: an upgrade pulled into a clone could run yesterday's stock check.
So every cached kernel of the package is keyed on `source_key()`: one digest
of the source of every module a kernel can take code or constants from
(`KEYED_SOURCES`: tests/test_kernel_cache.py checks that every module that
defines a kernel, and every module those import from, is among them) and of
the Numba and NumPy versions.  The rest of the package (HTTP, storage, the
tools) is left out, so editing it does not cost a compile.  Hashing a few
dozen small files once per process takes about a millisecond.

The key names the folder the cache lives in, `<root>/<key>/<engine|link>/`,
and is also each entry's stamp.  A new key starts an empty folder, and the
process that creates it removes this checkout's other keyed folders, so old
versions do not pile up; a process still running an old version whose
folder goes meanwhile only compiles again (a write into a vanished folder is
skipped, see `_KeyedCache`).  Roots, first usable wins, as Numba's own order:
NUMBA_CACHE_DIR when set (per checkout inside it), the package's
`__pycache__`, then the user's cache folder (a read-only install).

Why a cache locator of our own, set on each dispatcher, and not
NUMBA_CACHE_DIR: that setting is process-wide, and when its folder cannot be
written Numba falls back to locators keyed on one file again; the locator
keeps both the key and the fallbacks ours, and touches no other library's
kernels.  Kernels defined outside the package keep Numba's own locators.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import njit
from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator
from numba.core.dispatcher import Dispatcher
from numba.misc.appdirs import AppDirs

PACKAGE = Path(__file__).resolve().parents[1]
# the modules in the key (paths in the package): the engine, the link's
# framing, and the modules the kernels' modules import constants from (the
# commands' declarations among them: their bounds are the kernels' to check)
KEYED_SOURCES = ("engine/*.py", "promotions/*.py", "quotas/*.py", "link/frames.py",
                 "catalog/model.py", "config.py", "errors.py", "geo.py",
                 "limits.py", "spec.py", "areas.py", "access/roles.py")
_KEY_NAME = re.compile(r"[0-9a-f]{16}")  # a keyed folder's name: source_key()'s digest
_STARTED: set[Path] = set()  # roots whose key folder this process has made sure of


@functools.cache
def source_key(package: Path = PACKAGE) -> str:
    """A digest of the keyed modules' source (paths and bytes) and of the
    compiler's versions: it changes with any of them."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"numba {numba.__version__} numpy {np.__version__}\n".encode())
    for pattern in KEYED_SOURCES:
        for path in sorted(package.glob(pattern)):
            source = path.read_bytes()
            digest.update(f"{path.relative_to(package)} {len(source)}\n".encode())
            digest.update(source)
    return digest.hexdigest()


def use_key(root: Path, key: str) -> bool:
    """Creates `root/key`; the process that creates it removes root's other
    keyed folders (old versions of this checkout) and returns True.  Two
    processes starting together both get the folder; only one removes anything."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        (root / key).mkdir()
    except FileExistsError:
        return False
    for old in root.iterdir():
        if old.name != key and _KEY_NAME.fullmatch(old.name) and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return True


def _checkout_name(package: Path) -> str:
    """A shared cache folder holds one folder per checkout, so that
    checkouts do not remove each other's keys."""
    return "double11_" + hashlib.sha1(str(package).encode()).hexdigest()[:16]


class _KeyedLocator(_CacheLocator):
    """Where a kernel of the package is cached: `root()/<key>/<folder of its
    file>/`, stamped with the key (Numba's interface: `_CacheLocator`)."""

    def __init__(self, py_func: Callable[..., Any], py_file: str, root: Path, folder: Path):
        self._py_file = py_file  # read by Numba's warning about an uncachable kernel
        self._lineno = py_func.__code__.co_firstlineno
        self._root = root
        self._key = source_key()
        self._path = root / self._key / folder

    @staticmethod
    def root() -> Path | None:
        raise NotImplementedError

    def ensure_cache_path(self) -> None:
        if self._root not in _STARTED:
            if use_key(self._root, self._key):
                self.after_new_key()
            _STARTED.add(self._root)
        super().ensure_cache_path()

    def after_new_key(self) -> None:
        """What else goes once this root has a new key."""

    def get_cache_path(self) -> str:
        return str(self._path)

    def get_source_stamp(self) -> str:
        return self._key

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func: Callable[..., Any], py_file: str) -> _KeyedLocator | None:
        root = cls.root()
        try:
            folder = Path(py_file).resolve().parent.relative_to(PACKAGE)
        except ValueError:  # not a module of the package: Numba's own locators
            return None
        if root is None:
            return None
        locator = cls(py_func, py_file, root, folder)
        try:
            locator.ensure_cache_path()
        except OSError:  # not writable here: the next root
            return None
        return locator


class _UserProvidedLocator(_KeyedLocator):
    @staticmethod
    def root() -> Path | None:
        return Path(numba.config.CACHE_DIR) / _checkout_name(PACKAGE) if numba.config.CACHE_DIR else None


class _InTreeLocator(_KeyedLocator):
    @staticmethod
    def root() -> Path | None:
        return PACKAGE / "__pycache__" / "kernels"

    def after_new_key(self) -> None:
        # the entries Numba's own locator left beside the bytecode, keyed on
        # one file, before the cache was keyed here: never read again
        for folder in {Path(pattern).parent for pattern in KEYED_SOURCES}:
            for suffix in ("*.nbi", "*.nbc"):
                for old in (PACKAGE / folder / "__pycache__").glob(suffix):
                    old.unlink(missing_ok=True)


class _UserWideLocator(_KeyedLocator):
    @staticmethod
    def root() -> Path | None:
        return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir) / _checkout_name(PACKAGE)


class _KeyedCacheImpl(CompileResultCacheImpl):
    _locator_classes = [_UserProvidedLocator, _InTreeLocator, _UserWideLocator,
                        *CompileResultCacheImpl._locator_classes]


class _KeyedCache(FunctionCache):
    _impl_class = _KeyedCacheImpl

    def save_overload(self, sig: Any, data: Any) -> None:
        # a process of a newer version may remove this key's folder between
        # Numba making sure of it and writing: the entry is skipped, not the
        # compile failed (the next start compiles again)
        with contextlib.suppress(FileNotFoundError):
            super().save_overload(sig, data)


def _cached(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """njit(cache=True, **options), keyed on the whole engine's source."""
    compile_lazily = njit(**options)

    def decorate(func: Callable[..., Any]) -> Any:
        dispatcher = compile_lazily(func)
        if isinstance(dispatcher, Dispatcher):  # not under NUMBA_DISABLE_JIT
            # what njit(cache=True) does, with our locators; Numba's annotations leave the attribute out
            dispatcher._cache = _KeyedCache(func)  # type: ignore[attr-defined]
        return dispatcher

    return decorate


kernel = _cached(nogil=True, _nrt=False, error_model="numpy")
inline = njit(inline="always", _nrt=False, error_model="numpy")
# a function called from kernels but compiled on its own (LLVM still inlines
# it where that pays): Numba-level inlining of big helpers made the first
# compile take minutes
helper = _cached(_nrt=False, error_model="numpy")
