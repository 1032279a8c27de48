"""Many Python threads making their first calls at once (the concurrency review of
2026-12-04): each check runs in a fresh interpreter, where the entries are still unloaded
and uncompiled, with the GIL switched as often as it can be."""
import os
import subprocess
import sys
from pathlib import Path

import gatednorm

FIRST_PARAMS = r"""
import sys, threading, numpy as np
sys.setswitchinterval(1e-6)
import gatednorm
from gatednorm import ops_fp8
N, ROUNDS = 8, 60
x = np.random.default_rng(0).standard_normal((4, 2, 64)).astype(np.float32); w = np.ones(64, np.float32)
ref = {i: gatednorm.rmsnorm_gated_fp8(x, x, w, eps=1e-3 * (i + 1), group_size=64) for i in range(N)}
e = ops_fp8._ENTRY
for r in range(ROUNDS):
    # the entry as it is before its first call, then N threads' first calls at once
    e._fn = None; e._defaults = None; e._cache.clear(); ops_fp8._GATED_OPTIONS.clear()
    bar, out = threading.Barrier(N), {}
    def run(i):
        bar.wait()
        try:
            out[i] = gatednorm.rmsnorm_gated_fp8(x, x, w, eps=1e-3 * (i + 1), group_size=64)
        except Exception as ex:
            out[i] = ex
    ts = [threading.Thread(target=run, args=(i,)) for i in range(N)]
    [t.start() for t in ts]; [t.join() for t in ts]
    for i, o in out.items():
        assert not isinstance(o, Exception), "round %d: %r" % (r, o)
        assert all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(o, ref[i])), r
    assert all(p.struct_size != 0 for p in e._cache.values())
print("ok")
"""

FIRST_COMPILE = r"""
import sys, threading, numpy as np
sys.setswitchinterval(1e-6)
import gatednorm
from gatednorm import ops_fp8
x = np.ones((2, 128), np.float32)
gatednorm.rmsnorm(x, np.ones(128, np.float32))   # the library loaded by another op
e = ops_fp8._GQ_ENTRY
for r in range(30):
    e.call, e._env, e._fn = e._compile_and_call, None, None  # as before its first call
    bar = threading.Barrier(8)
    def run():
        bar.wait(); gatednorm.group_quant_fp8(x)
    ts = [threading.Thread(target=run) for _ in range(8)]
    [t.start() for t in ts]; [t.join() for t in ts]
    gatednorm.group_quant_fp8(x)
    assert e.call.__globals__ is e._env, "round %d: two compiles, the installed call's globals are not _env" % r
    assert e.call.__globals__["FN"] is e._fn, "round %d: the installed call loads the entry on every call" % r
print("ok")
"""


def _run(script):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(gatednorm.__file__).parents[1])] + sys.path))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def test_first_calls_from_many_threads_get_the_defaults():
    """Entry._load published the C function before the default params (the _init call
    between them releases the GIL): a thread arriving then built its params from nothing, an
    all-zero struct that was cached, so every later call with those options failed."""
    _run(FIRST_PARAMS)


def test_first_calls_from_many_threads_compile_once():
    """Two threads compiling one entry's call left it going through _first_call on every call."""
    _run(FIRST_COMPILE)


_FINALIZER_IN_CFFI_LOCK = r"""
import sys
# The in-line FFI (a source checkout's, or where the prebuilt _cffi_abi does not match the
# header or the cffi run time): its header parse and first lookups hold a Python lock.  The
# prebuilt one does both in C.
sys.modules["gatednorm._cffi_abi"] = None
import gatednorm
from gatednorm import _ffi
assert hasattr(_ffi.ffi, "_lock"), type(_ffi.ffi)
a = gatednorm.DeviceArray((64,), "fp32", device="cpu")  # nothing freed yet: gatednorm_free never looked up
# A finalizer can run inside cffi's own locked section (its type parse or first lookup of a
# function, at any allocation a collection follows): held here, the drop runs the
# allocation's finalizer as that collection would.  cffi's lock is not re-entrant.
with _ffi.ffi._lock:
    del a
print("ok")
"""


def test_finalizer_inside_cffi_lock_does_not_hang():
    """DeviceArray's allocation finalizer looked gatednorm_free up on first use, which takes
    the FFI's lock: run by a collection inside cffi's locked type parse (a test run, session
    30), the thread hung.  The library's load resolves what finalizers use."""
    _run(_FINALIZER_IN_CFFI_LOCK)
