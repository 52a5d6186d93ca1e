"""Loading libtaskerworker.so and declaring its C ABI (taskerworker.h) for ctypes.

Every function gets explicit argtypes and restype. Functions that hand back a
string do so as ``c_void_p`` (never ``c_char_p``), so ctypes never owns or
copies-and-forgets library memory: :meth:`Library.take` reads the string and
releases it with taskerworker_free, the only allowed way.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from .errors import LibraryNotFoundError, Status, TaskerWorkerError

ENV_LIB = "TASKERWORKER_LIB"
LIB_NAME = "libtaskerworker.so"

c_char_p = ctypes.c_char_p
c_int = ctypes.c_int
c_void_p = ctypes.c_void_p
c_longlong = ctypes.c_longlong

# name: (argtypes, restype), exactly as taskerworker.h declares them.
SIGNATURES = {
    "taskerworker_start": ([c_char_p, c_char_p], c_int),
    "taskerworker_stop": ([c_int], c_int),
    "taskerworker_poll": ([ctypes.POINTER(c_void_p)], c_int),
    "taskerworker_complete": ([c_char_p, c_char_p], c_int),
    "taskerworker_poll_batch": ([c_int, ctypes.POINTER(c_void_p)], c_int),
    "taskerworker_complete_batch": ([c_char_p, c_char_p, ctypes.POINTER(c_void_p)], c_int),
    "taskerworker_metrics": ([ctypes.POINTER(c_void_p)], c_int),
    "taskerworker_check_starvation": ([ctypes.POINTER(c_void_p)], c_int),
    "taskerworker_cleanup_timeouts": ([ctypes.POINTER(c_int)], c_int),
    "taskerworker_last_error": ([], c_void_p),
    "taskerworker_version": ([], c_void_p),
    "taskerworker_free": ([c_void_p], None),
}

# Declared only when the loaded library exports them: the in-memory event
# source of a benchmark build (go build -tags ffibench), absent from
# production libraries.
OPTIONAL_SIGNATURES = {
    "taskerworker_bench_start": ([c_longlong], c_int),
    "taskerworker_bench_stop": ([ctypes.POINTER(c_longlong)], c_int),
}


class Library:
    """The loaded library: raw ctypes functions as attributes (``lib.taskerworker_poll``)
    plus helpers that follow the header's memory and error rules. Functions of
    OPTIONAL_SIGNATURES are attributes only when the library has them
    (``hasattr(lib, "taskerworker_bench_start")``)."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.cdll = ctypes.CDLL(path)
        except OSError as e:
            raise LibraryNotFoundError(f"cannot load {path}: {e}") from e
        missing = [name for name in SIGNATURES if not hasattr(self.cdll, name)]
        if missing:  # an older build: say so rather than fail on first use
            raise LibraryNotFoundError(f"{path} lacks {', '.join(missing)}: rebuild it from this checkout")
        for name, (argtypes, restype) in (*SIGNATURES.items(), *OPTIONAL_SIGNATURES.items()):
            if hasattr(self.cdll, name):
                fn = getattr(self.cdll, name)
                fn.argtypes = argtypes
                fn.restype = restype
                setattr(self, name, fn)
        self._free = self.taskerworker_free

    def take(self, ptr) -> str | None:
        """Read a library-owned NUL-terminated UTF-8 string and free it. NULL gives None."""
        if isinstance(ptr, c_void_p):
            ptr = ptr.value
        if not ptr:
            return None
        try:
            return ctypes.string_at(ptr).decode("utf-8", "replace")
        finally:
            self._free(ptr)

    def last_error(self) -> str | None:
        """The calling thread's last error message (None if its last call succeeded)."""
        return self.take(self.taskerworker_last_error())

    def version(self) -> str:
        return self.take(self.taskerworker_version()) or ""

    def error(self, code: int, function: str) -> TaskerWorkerError:
        """The exception for a negative code, with the calling thread's message.
        Call it on the thread that made the failing call, right after it."""
        return TaskerWorkerError(code, self.last_error(), function)

    def check(self, code: int, function: str) -> int:
        """Raise for a negative code; return non-negative codes."""
        if code < 0:
            raise self.error(code, function)
        return code


_lock = threading.Lock()
_loaded: Library | None = None


def candidates(path: str | os.PathLike | None = None) -> list[str]:
    """Where load_library looks, in order: the path argument, $TASKERWORKER_LIB,
    the package directory, then bin/ of every parent directory of the package
    (the repository checkout) and of the current directory, then the system's
    library path (plain soname)."""
    if path:
        return [os.fspath(path)]
    env = os.environ.get(ENV_LIB)
    if env:
        return [env]
    out: list[str] = []
    pkg = Path(__file__).resolve().parent
    out.append(str(pkg / LIB_NAME))
    seen = set()
    for base in (pkg, Path.cwd().resolve()):
        for d in (base, *base.parents):
            p = d / "bin" / LIB_NAME
            if p not in seen:
                seen.add(p)
                out.append(str(p))
    out.append(LIB_NAME)  # LD_LIBRARY_PATH / ld.so.cache
    return out


def load_library(path: str | os.PathLike | None = None) -> Library:
    """Load libtaskerworker.so once per process and return it.

    A process can hold one Go runtime, so the first successful load wins; a
    later call naming a different file raises instead of loading a second copy.
    """
    global _loaded
    with _lock:
        if _loaded is not None:
            if path and os.path.realpath(os.fspath(path)) != os.path.realpath(_loaded.path):
                raise LibraryNotFoundError(
                    f"libtaskerworker is already loaded from {_loaded.path}; cannot also load {os.fspath(path)} in one process")
            return _loaded
        tried = []
        for cand in candidates(path):
            if os.sep in cand and not os.path.exists(cand):
                tried.append(f"{cand} (missing)")
                continue
            try:
                _loaded = Library(cand)
                return _loaded
            except LibraryNotFoundError as e:
                tried.append(str(e))
        raise LibraryNotFoundError(
            "libtaskerworker.so not found; build it with `make lib` and/or set "
            f"{ENV_LIB} to its path. Tried:\n  " + "\n  ".join(tried))


def to_c(value, name: str = "argument") -> bytes | None:
    """A Python value for a ``char*`` parameter: None stays NULL, str is UTF-8
    encoded, bytes pass through untouched (so callers can send any bytes)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
        if isinstance(value, bytes):
            return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise TypeError(f"{name}: want str, bytes or None, got {type(value).__name__}")


__all__ = ["Library", "load_library", "candidates", "to_c", "Status", "SIGNATURES", "OPTIONAL_SIGNATURES", "ENV_LIB"]
