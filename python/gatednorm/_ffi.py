"""cffi (ABI mode) binding of libgatednorm.

The cdef is produced from the public header ``gatednorm.h`` itself, never from a hand-kept
copy: comments are stripped, every preprocessor line is dropped except ``#define NAME
<integer literal>``, everything inside ``#ifdef __cplusplus ... #endif`` is dropped, and the
``GATEDNORM_API`` export macro is removed.

Both the header parse and the ``dlopen`` are lazy (first use), so ``import gatednorm`` works
without the library (e.g. for ``gatednorm cmake-dir``).

Header:  ``gatednorm/include/gatednorm.h`` inside the installed package, else
         ``<repo>/pybind_free_api/include/gatednorm.h`` (source checkout).
Library: ``$GATEDNORM_LIBRARY`` if set, else ``gatednorm/lib/libgatednorm.so*`` inside the
         package.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import zlib
from pathlib import Path


__all__ = [
    "ffi",
    "load",
    "lib",
    "GatedNormError",
    "InvalidArgumentError",
    "check",
    "raise_error",
    "header_path",
    "library_path",
    "cdef_from_header",
    "package_dir",
]

def _prebuilt_ffi():
    """The FFI of ``gatednorm._cffi_abi`` (cffi's out-of-line ABI module, written at build time
    from the installed header), if it was built from the very header next to it; else None
    and the header is parsed on first use (a source checkout, or a header edited since)."""
    try:
        from . import _cffi_abi
    except Exception:  # absent, or made by a cffi newer than this run time's backend
        return None
    try:
        text = header_path().read_bytes()
    except GatedNormError:
        return None
    if getattr(_cffi_abi, "HEADER_CRC32", None) != zlib.crc32(text) or getattr(_cffi_abi, "HEADER_BYTES", None) != len(text):
        return None
    return _cffi_abi.ffi


_lib = None  # the dlopen()ed library once loaded; hot paths read this global directly
# Functions and types the finalizers use (load() resolves them before any finalizer can run).
_FINALIZER_FUNCTIONS = ("gatednorm_free", "gatednorm_stream_destroy", "gatednorm_comm_destroy",
                        "gatednorm_comm_buffer_close", "gatednorm_comm_buffer_free")
_FINALIZER_TYPES = ("void *", "gatednorm_device *", "gatednorm_device")
_lock = threading.Lock()
_cdef_done = False


def _new_lock_in_child():
    # A child forked while another thread held _lock (its first call: the header parse and
    # dlopen) would wait on it forever (session 35's review); the child gets a free one.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def package_dir() -> Path:
    """Directory of the installed ``gatednorm`` package."""
    try:
        from importlib.resources import files

        return Path(str(files("gatednorm")))
    except Exception:  # pragma: no cover - importlib.resources always works for a real package
        return Path(__file__).resolve().parent


# --------------------------------------------------------------------------------- errors
class GatedNormError(Exception):
    """An error reported by libgatednorm (or by the Python layer while converting arguments).

    ``status`` is the library's ``gatednorm_status`` code (negative); ``message`` is the
    library's own ``gatednorm_last_error()`` text, which names the offending argument.
    Bad arguments raise the subclass ``InvalidArgumentError``, which is also a
    ``ValueError``.  Instances pickle (multiprocessing workers pass them back intact).
    """

    def __new__(cls, status: int = -6, message: str = "", function: str | None = None):
        if cls is GatedNormError and int(status) == INVALID_ARGUMENT:
            cls = InvalidArgumentError
        return super().__new__(cls)

    def __init__(self, status: int, message: str, function: str | None = None):
        self.status = int(status)
        self.message = message
        self.function = function
        super().__init__(self._format())

    def __reduce__(self):
        return (type(self), (self.status, self.message, self.function))

    @property
    def status_name(self) -> str:
        return _STATUS_NAMES.get(self.status, "unknown status %d" % self.status)

    def _format(self) -> str:
        where = "%s: " % self.function if self.function else ""
        msg = self.message or self.status_name
        return "%s%s [%s]" % (where, msg, self.status_name)


class InvalidArgumentError(GatedNormError, ValueError):
    """A GatedNormError for a bad argument (status GATEDNORM_STATUS_INVALID_ARGUMENT)."""


class LibraryLoadError(GatedNormError):
    """libgatednorm could not be found or loaded (a missing file, not a gatednorm library,
    another major version).  Its status is GATEDNORM_STATUS_NO_DEVICE's, the C enum's
    nearest (nothing can run), but it says what failed."""

    def __init__(self, message: str, status: int = -3, function: str | None = None):
        super().__init__(status, message, function)

    def __reduce__(self):
        return (LibraryLoadError, (self.message, self.status, self.function))

    @property
    def status_name(self) -> str:
        return "library not loaded"


# Python-side names for the status codes (kept only for messages; the values come from the
# header once it is loaded, see _refresh_status_names()).
_STATUS_NAMES = {
    -1: "invalid argument",
    -2: "unsupported",
    -3: "no device",
    -4: "device error",
    -5: "out of memory",
    -6: "internal error",
}
INVALID_ARGUMENT = -1
DEVICE_ERROR = -4
OUT_OF_MEMORY = -5


def last_error_message() -> str:
    """This thread's last-error message from the library ("" before it is loaded)."""
    if _lib is None:
        return ""
    try:
        return ffi.string(_lib.gatednorm_last_error()).decode("utf-8", "replace")
    except Exception:  # pragma: no cover
        return ""


def raise_error(status: int, function: str | None = None, rename=None, message: str | None = None):
    """Raise GatedNormError for a failed call, carrying the library's last-error message
    (``message`` where the caller read it already; through ``rename``, where a wrapper's
    keywords differ from the C argument names)."""
    msg = last_error_message() if message is None else message
    if rename is not None:
        msg = rename(msg)
    raise GatedNormError(status, msg, function)


def check(status: int, function: str | None = None) -> None:
    """Raise GatedNormError if ``status`` is not GATEDNORM_STATUS_SUCCESS (0)."""
    if status:
        raise_error(status, function)


def argument_error(message: str, status: int = INVALID_ARGUMENT) -> GatedNormError:
    """A GatedNormError raised by the Python layer while converting an argument."""
    return GatedNormError(status, message)


# ------------------------------------------------------------------------- header / cdef
def header_path() -> Path:
    """Path of gatednorm.h: inside the installed package, else the source checkout's."""
    candidates = [
        package_dir() / "include" / "gatednorm.h",
        Path(__file__).resolve().parents[2] / "pybind_free_api" / "include" / "gatednorm.h",
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise GatedNormError(
        -3,
        "cannot find gatednorm.h (looked in: %s); reinstall the gatednorm package"
        % ", ".join(str(c) for c in candidates),
    )


from ._cdef import cdef_from_header  # noqa: E402  (re-exported: the header's one parse rule)


def _ensure_cdef() -> None:
    global _cdef_done
    if not _cdef_done:
        ffi.cdef(cdef_from_header(header_path().read_text()))
        _cdef_done = True


# The FFI every module binds at import: the prebuilt one (no parse: ~60 ms saved on the first
# call) when it matches the header, else a cffi.FFI whose cdef is parsed on first use.
ffi = _prebuilt_ffi()
if ffi is not None:
    _cdef_done = True
    PREBUILT = True
else:
    import cffi

    ffi = cffi.FFI()
    PREBUILT = False


# ------------------------------------------------------------------------------- library
def _library_candidates(d: Path):
    names = sorted(glob.glob(str(d / "libgatednorm.so*")), key=lambda p: (len(p), p))
    names += sorted(glob.glob(str(d / "libgatednorm*.dylib")))
    names += sorted(glob.glob(str(d / "gatednorm*.dll")))
    return names


def library_path() -> str:
    """Path of libgatednorm: $GATEDNORM_LIBRARY, else the copy bundled in the package."""
    env = os.environ.get("GATEDNORM_LIBRARY")
    if env:
        # absolute: dlopen of a bare name searches LD_LIBRARY_PATH and the system, not the
        # directory the check below looked in (a relative path loaded another library)
        env = os.path.abspath(env)
        if not os.path.exists(env):
            raise LibraryLoadError("GATEDNORM_LIBRARY=%s does not exist" % env)
        return env
    for d in (package_dir() / "lib", package_dir()):
        found = _library_candidates(d)
        if found:
            return found[0]
    raise LibraryLoadError(
        "cannot find libgatednorm.so in %s; install the gatednorm package, or set "
        "GATEDNORM_LIBRARY=/path/to/libgatednorm.so" % (package_dir() / "lib"),
    )


# What dlopen and a first symbol lookup raise for a file that is not (this) gatednorm: OSError
# and AttributeError from cffi.FFI, the binding's own `error` type from a prebuilt module.
_LOAD_ERRORS = tuple(e for e in (OSError, AttributeError, getattr(ffi, "error", None))
                     if isinstance(e, type) and issubclass(e, BaseException))


def load():
    """dlopen libgatednorm once (thread-safe) and return the cffi library object."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        _ensure_cdef()
        path = library_path()
        try:
            lib_ = ffi.dlopen(path)
        except _LOAD_ERRORS as e:
            raise LibraryLoadError("cannot load %s: %s" % (path, e)) from None
        hdr_major, hdr_minor = lib_.GATEDNORM_VERSION_MAJOR, lib_.GATEDNORM_VERSION_MINOR
        try:
            v = int(lib_.gatednorm_version())
        except _LOAD_ERRORS as e:  # symbol missing: not a gatednorm library
            raise LibraryLoadError("%s is not a gatednorm library: %s" % (path, e)) from None
        # The same major, and at least this header's minor: an older library lacks entry
        # points the package calls (each would fail on first use, naming no version).
        if (v >> 16) != hdr_major or ((v >> 8) & 0xFF) < hdr_minor:
            raise LibraryLoadError(
                "%s is gatednorm %d.%d.%d but this package needs %d.%d or a later %d.x: rebuild or reinstall the library"
                % (path, v >> 16, (v >> 8) & 0xFF, v & 0xFF, hdr_major, hdr_minor, hdr_major),
                status=-2,
            )
        # What the finalizers call (DeviceArray's allocation, Stream, the communicator's
        # buffers), resolved now: a finalizer runs at any allocation, also inside cffi's own
        # type parse or first lookup of a function, which hold the FFI's lock, and that lock
        # is not re-entrant.  A finalizer's own first lookup there hung the thread (a test
        # run, session 30); looked up once here, those are plain attribute reads.
        for name in _FINALIZER_FUNCTIONS:
            getattr(lib_, name)
        for cdecl in _FINALIZER_TYPES:
            ffi.typeof(cdecl)
        _lib = lib_
        _refresh_status_names()
        return _lib


def lib():
    """The loaded cffi library (loads it on first use)."""
    return _lib if _lib is not None else load()


def _refresh_status_names() -> None:
    for name in dir(_lib):
        if name.startswith("GATEDNORM_STATUS_") and name != "GATEDNORM_STATUS_SUCCESS":
            code = int(getattr(_lib, name))
            try:
                text = ffi.string(_lib.gatednorm_status_string(code)).decode()
            except Exception:  # pragma: no cover
                text = name[len("GATEDNORM_STATUS_"):].lower().replace("_", " ")
            _STATUS_NAMES[code] = text


def loaded_library_path() -> str | None:
    """Path the library was loaded from (None before load())."""
    return library_path() if _lib is not None else None

