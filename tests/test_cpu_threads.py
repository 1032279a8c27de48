"""The CPU backend's thread pool (pybind_free_api/src/cpu_pool.cpp): every op's outputs are
bit-identical with 1 and N threads, whether the count comes from GATEDNORM_NUM_THREADS (read
when the pool starts, here in fresh interpreters) or from gatednorm_set_num_threads."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import gatednorm
from gatednorm import _ffi

# Shapes large enough that the pool splits them (cpu_pool.h: kCpuMinWorkPerThread), with
# tails that do not divide evenly between threads.
SCRIPT = r"""
import hashlib, sys
import numpy as np
import ml_dtypes
import gatednorm

rng = np.random.default_rng(15)
bf16 = ml_dtypes.bfloat16
def arr(shape, dt=bf16, scale=2.0):
    return (rng.standard_normal(shape) * scale).astype(dt)

h = hashlib.sha256()
def put(*xs):
    for v in xs:
        if v is not None:
            h.update(np.ascontiguousarray(v).view(np.uint8).tobytes())

T, H, D = 517, 7, 128
x, z, w = arr((T, H, D)), arr((T, H, D), scale=6.0), arr((D,))
for nbg in (True, False):
    for act in ("silu", "sigmoid"):
        put(gatednorm.rmsnorm_gated(x, z, w, norm_before_gate=nbg, activation=act))
put(gatednorm.rmsnorm_gated(x, None, w))
put(gatednorm.rmsnorm_gated(x.astype(np.float16), z.astype(np.float32), w, eps=1e-5))
put(gatednorm.rmsnorm_gated(x.astype(np.float32), z, w.astype(np.float32)))
put(*gatednorm.rmsnorm_gated_fp8(x, z, w, copy_dtype="bfloat16"))
put(*gatednorm.rmsnorm_gated_fp8(x, z, w, scale_format="ue8m0", quantize_rounded=True))
xs, res, ws = arr((T, 1024)), arr((T, 1024)), arr((1024,))
put(*gatednorm.add_rmsnorm(xs, res.copy(), ws, fp8=True))
put(*gatednorm.rmsnorm(xs, ws))
put(*gatednorm.group_quant_fp8(xs))
for M in (3, 67):
    a = arr((M, 512), scale=1.0)
    W = gatednorm.W4A16Weight.from_float(rng.standard_normal((384, 512)).astype(np.float32), group_size=128)
    put(gatednorm.w4a16_matmul(a, W, bias=arr((384,))))
print(h.hexdigest())
"""


def _digest(threads):
    env = dict(os.environ, GATEDNORM_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_outputs_identical_with_1_and_4_threads_env():
    one = _digest(1)
    assert one == _digest(4)
    assert one == _digest(3)


def _threads():
    n = _ffi.ffi.new("int32_t *")
    assert _ffi.lib().gatednorm_get_num_threads(n) == 0
    return n[0]


def test_set_num_threads_c_entry():
    lib = _ffi.lib()
    before = _threads()
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((300, 16, 128)).astype(np.float32)
        z = rng.standard_normal((300, 16, 128)).astype(np.float32)
        w = rng.standard_normal(128).astype(np.float32)
        outs = []
        for n in (1, 2, 5):
            assert lib.gatednorm_set_num_threads(n) == 0
            assert _threads() == n
            outs.append(gatednorm.rmsnorm_gated(x, z, w))
        for o in outs[1:]:
            assert o.tobytes() == outs[0].tobytes()
        assert lib.gatednorm_set_num_threads(-1) != 0
        assert _ffi.ffi.string(lib.gatednorm_last_error()).decode().startswith("num_threads:")
        assert lib.gatednorm_set_num_threads(0) == 0
        assert _threads() >= 1
    finally:
        lib.gatednorm_set_num_threads(before)


def test_set_num_threads_from_python():
    """gatednorm.set_num_threads / get_num_threads: the C entries for Python users (README named
    only the C function and the environment variable); bad counts named, nothing changed."""
    before = gatednorm.get_num_threads()
    try:
        rng = np.random.default_rng(1)
        x = rng.standard_normal((300, 16, 128)).astype(np.float32)
        w = rng.standard_normal(128).astype(np.float32)
        gatednorm.set_num_threads(1)
        assert gatednorm.get_num_threads() == 1
        one = gatednorm.rmsnorm_gated(x, None, w)
        gatednorm.set_num_threads(3)
        assert gatednorm.get_num_threads() == 3
        assert gatednorm.rmsnorm_gated(x, None, w).tobytes() == one.tobytes()
        for bad in (-1, 257, 2 ** 40, 1.5, True, "2", None):
            with pytest.raises(gatednorm.InvalidArgumentError, match="num_threads"):
                gatednorm.set_num_threads(bad)
            assert gatednorm.get_num_threads() == 3
        gatednorm.set_num_threads(256)  # the pool's most
        assert gatednorm.get_num_threads() == 256
        gatednorm.set_num_threads(0)
        assert gatednorm.get_num_threads() >= 1
    finally:
        gatednorm.set_num_threads(before)


# fesetround's FE_UPWARD by machine (glibc's <fenv.h>); FE_TONEAREST is 0 on both.
_FE_UPWARD = {"x86_64": 0x800, "AMD64": 0x800, "aarch64": 0x400000, "arm64": 0x400000}


def test_caller_rounding_mode_is_not_used(rng):
    """A thread in another rounding mode (here fesetround(FE_UPWARD) through libm) gets the
    bits a round-to-nearest thread gets, from every op, pooled and inline, and keeps its mode
    afterwards: the host arithmetic runs under the IEEE defaults (cpu_fenv.h)."""
    import ctypes
    import ctypes.util
    import platform

    upward = _FE_UPWARD.get(platform.machine())
    name = ctypes.util.find_library("m")
    if upward is None or name is None:
        pytest.skip("no known FE_UPWARD / libm on %s" % platform.machine())
    libm = ctypes.CDLL(name)
    bf16 = gatednorm._dtypes.bfloat16
    x = rng.standard_normal((4096, 64)).astype(np.float32)
    z = rng.standard_normal((4096, 64)).astype(np.float32)
    w = (rng.standard_normal(64) + 1).astype(np.float32)
    xs, zs = x[:3], z[:3]
    h = rng.standard_normal((5, 256)).astype(bf16)
    r = rng.standard_normal((5, 256)).astype(bf16)
    wh = (rng.standard_normal(256) + 1).astype(np.float32)
    wq = gatednorm.W4A16Weight.from_float(rng.standard_normal((64, 128)).astype(np.float32), group_size=32)
    a = rng.standard_normal((3, 128)).astype(bf16)
    ops = {
        "gated pooled": lambda: gatednorm.rmsnorm_gated(x, z, w),
        "gated inline": lambda: gatednorm.rmsnorm_gated(xs, zs, w),
        "gated fp8": lambda: gatednorm.rmsnorm_gated_fp8(xs, zs, w, group_size=32, copy_dtype=np.float32),
        "add fp8": lambda: gatednorm.add_rmsnorm(h, r.copy(), wh, fp8=True, y_dtype=np.float32),
        "w4a16": lambda: gatednorm.w4a16_matmul(a, wq, out_dtype=np.float32),
    }

    def bits(v):
        if isinstance(v, tuple):
            return tuple(bits(e) for e in v if e is not None)
        return np.ascontiguousarray(v).view(np.uint8).tobytes()

    want = {k: bits(f()) for k, f in ops.items()}
    one = np.float32(1.0)
    assert libm.fegetround() == 0
    assert libm.fesetround(upward) == 0
    try:
        assert one + np.float32(2.0 ** -30) > one  # numpy now rounds up on this thread
        for k, f in ops.items():
            assert bits(f()) == want[k], k
        assert libm.fegetround() == upward  # the thread's mode is its own again
    finally:
        libm.fesetround(0)


TRAP_SCRIPT = r"""
import ctypes, ctypes.util, hashlib
import numpy as np
import gatednorm

bf16 = gatednorm._dtypes.bfloat16
rng = np.random.default_rng(3)
x = rng.standard_normal((64, 128)).astype(np.float32)
x[1] = np.inf; x[2] = np.nan; x[3] = 3e38; x[4, 5] = -np.inf   # rows that overflow, inf * 0, NaN
z = (rng.standard_normal((64, 128)) * 50).astype(np.float32); z[5] = -1000.0
w = (rng.standard_normal(128) + 1).astype(np.float32)
xb = x.astype(bf16)
r = rng.standard_normal((64, 128)).astype(bf16)
wq = gatednorm.W4A16Weight.from_float(rng.standard_normal((32, 128)).astype(np.float32), group_size=32)
a = xb[:3].copy(); a[1, 3] = np.inf

def run():
    h = hashlib.sha256()
    outs = [gatednorm.rmsnorm_gated(x, z, w),
            gatednorm.rmsnorm_gated(x, z, w, norm_before_gate=False, activation="sigmoid"),
            *gatednorm.rmsnorm_gated_fp8(x, z, w, group_size=64, copy_dtype=np.float32),
            *[v for v in gatednorm.add_rmsnorm(xb, r.copy(), w, fp8=True, scale_format="ue8m0") if v is not None],
            *gatednorm.group_quant_fp8(x, group_size=32),
            gatednorm.w4a16_matmul(a, wq, out_dtype=np.float32)]
    for v in outs:
        h.update(np.ascontiguousarray(v).view(np.uint8).tobytes())
    return h.hexdigest()

want = run()
libm = ctypes.CDLL(ctypes.util.find_library("m"))
if libm.feenableexcept(0x01 | 0x04 | 0x08 | 0x10) == -1:   # invalid, divide-by-zero, overflow, underflow
    print("no traps")
else:
    got = run()
    libm.fedisableexcept(0x3d)
    print("same" if got == want else "differ")
"""


def test_caller_fp_traps_do_not_fire():
    """A C caller debugging with feenableexcept (invalid, divide-by-zero, overflow, underflow
    trapped) and inputs whose documented results are NaN / Inf (an infinite row: inf * 0, a
    NaN row, a row whose squares overflow): every op returns the untrapped bits instead of
    killing the process with SIGFPE (it did), as the host arithmetic masks every exception
    (cpu_fenv.h).  In a child process: a trap ends it."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("trap enables through glibc's feenableexcept: x86-64 only")
    res = subprocess.run([sys.executable, "-c", TRAP_SCRIPT], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, GATEDNORM_NUM_THREADS="2"))
    assert res.returncode == 0, "child died (%d): %s" % (res.returncode, res.stderr[-2000:])
    assert res.stdout.strip() == "same", res.stdout + res.stderr[-2000:]


AFFINITY_SCRIPT = r"""
import os, threading
import numpy as np
import gatednorm

process_cpus = os.sched_getaffinity(0)       # the main thread's mask: the process's
pinned = min(process_cpus)
x = np.random.default_rng(0).standard_normal((4096, 64)).astype(np.float32)
w = np.ones(64, np.float32)

def first_caller():  # a framework thread pinned to one core makes the library's first call
    os.sched_setaffinity(0, {pinned})
    print("threads", gatednorm.get_num_threads())
    gatednorm.rmsnorm_gated(x, x, w)          # pooled: starts the workers from this thread

t = threading.Thread(target=first_caller); t.start(); t.join()
workers = []
for tid in os.listdir("/proc/self/task"):
    # A task listed here may be gone by the time it is read: first_caller's OS thread can
    # outlive its join() by a moment (CI saw it once).  The pool's workers never exit, so a
    # task that vanished was not one of them.
    try:
        with open("/proc/self/task/%s/comm" % tid) as f:
            name = f.read().strip()
    except FileNotFoundError:
        continue
    if name == "gatednorm-cpu":
        workers.append(sorted(os.sched_getaffinity(int(tid))))
print("process", len(process_cpus))
print("workers", len(workers), all(m == sorted(process_cpus) for m in workers))
"""


def test_pool_takes_the_process_cpus_not_the_first_callers():
    """Regression (session 35's review, fixed in session 36): the pool's size and its
    workers' CPUs came from whichever thread called first (a thread pinned to one core gave
    a one-thread pool, or workers all on that core).  Now both come from the process's main
    thread; the workers are named gatednorm-cpu."""
    import platform

    if platform.system() != "Linux":
        pytest.skip("CPU affinity through /proc: Linux only")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: a pinned caller and the process cannot differ")
    env = {k: v for k, v in os.environ.items() if k != "GATEDNORM_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", AFFINITY_SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    got = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    n = int(got["process"])
    assert int(got["threads"]) == min(n, 256), r.stdout
    assert got["workers"] == "%d True" % (min(n, 256) - 1), r.stdout


def test_workers_exception_flags_reach_the_caller():
    """Regression (session 35's review, fixed in session 36): the IEEE exception flags a
    call raises are the caller's afterwards (cpu_fenv.h), but those raised in rows a pool
    worker computed were lost, so fetestexcept after a call depended on which thread took the
    one infinite row (inf * 0: FE_INVALID).  Now the workers hand theirs to the caller."""
    import ctypes
    import ctypes.util
    import platform

    fe_invalid = {"x86_64": 0x01, "AMD64": 0x01, "aarch64": 0x01, "arm64": 0x01}.get(platform.machine())
    name = ctypes.util.find_library("m")
    if fe_invalid is None or name is None:
        pytest.skip("no known FE_INVALID / libm on %s" % platform.machine())
    libm = ctypes.CDLL(name)
    before = gatednorm.get_num_threads()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4096, 64)).astype(np.float32)
    w = np.ones(64, np.float32)
    out = np.empty_like(x)
    try:
        gatednorm.set_num_threads(8)  # 8 parts: most of the rows are a worker's
        raised = []
        for row in range(0, 4096, 4096 // 24):
            bad = x.copy()
            bad[row] = np.inf  # rstd 0, inf * 0 = NaN: FE_INVALID wherever the row is computed
            libm.feclearexcept(fe_invalid)
            gatednorm.rmsnorm_gated(bad, None, w, out=out)
            raised.append(bool(libm.fetestexcept(fe_invalid)))
            assert np.isnan(out[row]).all() and not np.isnan(np.delete(out, row, 0)).any()
        libm.feclearexcept(fe_invalid)
        gatednorm.rmsnorm_gated(x, None, w, out=out)  # finite rows raise no invalid
        assert not libm.fetestexcept(fe_invalid)
        assert all(raised), raised
    finally:
        gatednorm.set_num_threads(before)
