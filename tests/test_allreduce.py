"""gatednorm.AllReduceGroup.add_rmsnorm (docs/ops.md §5, docs/allreduce.md).

What is asserted, on every rank and bit for bit:
  outputs (y, q, scales, the stored residual) == gatednorm.add_rmsnorm on
  x = fp32 sum of the partials in rank order 0..W-1, rounded to x's dtype,
with the library's own single-process add_rmsnorm (itself checked against the float64
reference in test_add_rmsnorm.py); so every rank also equals every other rank.
  - CPU backend, ranks as processes over POSIX shared memory (2 and 4 ranks), every output
    combination of §3, each case called twice (the epoch advances, both slots are used);
  - CPU backend, ranks as threads of one process sharing the buffers (AllReduceGroup.in_process);
  - one GPU, ranks as streams of one process (skipped without a GPU);
  - the GPU exchange's 16-byte and 2-byte paths at W = 1, 3, 8 (x layouts that pick each; the
    same cases on CPU threads, with rows that split unevenly among the ranks, and rows of
    fewer columns than ranks);
  - each of the above with the algorithm left to "auto" and forced to "two_shot"
    (reduce-scatter + all-gather): the same bits either way;
  - which algorithm "auto" runs (the CPU: the second flag in the buffers; the GPU's one-launch
    path: gatednorm.last_kernel());
  - bad input names the argument.
"""

from __future__ import annotations

import ast
import glob
import multiprocessing as mp
import os
import struct
import subprocess
import sys
import threading
import textwrap
import time

import numpy as np
import pytest

import gatednorm
from gatednorm import AllReduceGroup, GatedNormError, _dtypes, from_pointer, ops_fp8, testing
from gatednorm._ffi import InvalidArgumentError
from test_add_rmsnorm import same_values

H = 256
T = 5
DTS = {"bf16": _dtypes.bfloat16, "fp16": _dtypes.float16, "fp32": _dtypes.float32}

# (x dtype, residual dtype or None, options): every output combination of §3.
CASES = [
    ("bf16", "bf16", dict()),                                                   # y, residual in place
    ("bf16", "bf16", dict(y=False, fp8=True)),                                  # q + fp32 scales only
    ("bf16", "bf16", dict(fp8=True, y_dtype="fp32", out_of_place=True)),        # y fp32 + q, residual_out
    ("bf16", "fp32", dict(fp8=True, scale_format="ue8m0", scale_layout="col")),
    ("bf16", "bf16", dict(fp8=True, scale_format="e8m0", scale_layout="col_pad4", quantize_rounded=True)),
    ("bf16", "bf16", dict(y=False, fp8=True, scale_format="e8m0_packed", scale_layout="col_pad4")),
    ("fp16", "fp16", dict(fp8=True, fp8_format="e4m3fnuz", group_size=64)),
    ("fp32", "fp32", dict(fp8=True, y_dtype="bf16")),
    ("bf16", None, dict(fp8=True)),                                             # no residual: all-reduce + rmsnorm
    ("bf16", "bf16", dict(fp8=True, eps=4.0)),                                  # an eps as large as mean(x^2)
]
REPS = 2


def data(case, rep, rank, W):
    xd, rd, _ = CASES[case]
    g = np.random.default_rng(1000 * case + 10 * rep + rank)
    x = (g.standard_normal((T, H)) * 2).astype(np.float32).astype(DTS[xd])
    if rank == 0 and case == 0 and rep == 0:
        x[1] = -0.0  # signed zeros through the sum
    g = np.random.default_rng(1000 * case + 10 * rep + 99)
    res = None if rd is None else g.standard_normal((T, H)).astype(np.float32).astype(DTS[rd])
    w = (g.standard_normal(H) * 0.5 + 1).astype(np.float32)
    return x, res, w


def kwargs(case):
    kw = dict(CASES[case][2])
    kw.pop("out_of_place", None)
    if "y_dtype" in kw:
        kw["y_dtype"] = DTS[kw["y_dtype"]]
    return kw


def run_case(group, case, rep, rank, W, stream=None):
    x, res, w = data(case, rep, rank, W)
    kw = kwargs(case)
    ro = np.full(res.shape, 7.0, res.dtype) if (CASES[case][2].get("out_of_place") and res is not None) else None  # poison
    if res is None:
        out = group.add_rmsnorm(x, None, w, **kw) if stream is None else None
    else:
        out = group.add_rmsnorm(x, res, w, residual_out=ro, **kw)
    return tuple(None if a is None else np.asarray(a).copy() for a in out)


def expected(case, rep, W, be=None):
    """The unfused result: the partials summed in rank order in fp32 and rounded to x's
    dtype (exact on any backend), then the library's own (add_)rmsnorm on backend ``be``
    (None: numpy on the CPU).  The fused path must equal it bit for bit on the same backend;
    across backends the fp32 sum of squares may round differently (the GPU reduces in a
    tree, the CPU in double), so the GPU is held against the GPU."""
    parts = [data(case, rep, r, W) for r in range(W)]
    acc = parts[0][0].astype(np.float32)
    for p in parts[1:]:
        acc = acc + p[0].astype(np.float32)
    x = acc.astype(parts[0][0].dtype)
    _, res, w = parts[0]
    kw = kwargs(case)
    put = (lambda a: a) if be is None else be.put
    get = (lambda a: np.asarray(a)) if be is None else be.get
    if res is None:
        out = gatednorm.rmsnorm(put(x), put(w), **kw)
    else:
        out = gatednorm.add_rmsnorm(put(x), put(res.copy()), put(w), **kw)
    return tuple(None if a is None else get(a) for a in out)


def bits_equal(a, b):
    if a is None or b is None:
        return a is None and b is None
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def check(outs, W):
    for case in range(len(CASES)):
        for rep in range(REPS):
            want = expected(case, rep, W)
            for r in range(W):
                got = outs[r][(case, rep)]
                for name, g, e in zip(("y", "q", "scales", "residual"), got, want):
                    assert bits_equal(g, e), "case %d rep %d rank %d: %s differs" % (case, rep, r, name)


# ------------------------------------------------------------------- ranks as processes
def _worker(rank, W, algorithm, conn):
    try:
        def exchange(b):
            conn.send(("x", b))
            return conn.recv()

        g = AllReduceGroup(rank, W, exchange, "cpu", max_tokens=T, hidden=H, dtype="float32", algorithm=algorithm)
        outs = {}
        for case in range(len(CASES)):
            for rep in range(REPS):
                outs[(case, rep)] = run_case(g, case, rep, rank, W)
        g.close(exchange)  # the barrier close: every rank meets before the buffers go
        conn.send(("done", outs))
    except BaseException as e:  # pragma: no cover - reported by the parent
        conn.send(("error", repr(e)))


def run_processes(W, algorithm, target=None):
    ctx = mp.get_context("fork")
    pipes = [ctx.Pipe() for _ in range(W)]
    procs = [ctx.Process(target=target or _worker, args=(r, W, algorithm, pipes[r][1]), daemon=True) for r in range(W)]
    for p in procs:
        p.start()
    outs = [None] * W
    try:
        while any(o is None for o in outs):
            msgs = []
            for r in range(W):
                if outs[r] is not None:
                    continue
                if not pipes[r][0].poll(60):
                    raise AssertionError("rank %d: no answer in 60 s" % r)
                msgs.append((r, pipes[r][0].recv()))
            kinds = {m[1][0] for m in msgs}
            for r, (kind, payload) in msgs:
                if kind == "error":
                    raise AssertionError("rank %d: %s" % (r, payload))
                if kind == "done":
                    outs[r] = payload
            if kinds == {"x"}:  # an all-gather round
                items = [m[1][1] for m in sorted(msgs)]
                for r, _ in msgs:
                    pipes[r][0].send(items)
            elif "x" in kinds:
                raise AssertionError("ranks out of step: %s" % sorted(kinds))
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    return outs


# "auto" runs one-shot at these sizes (T = 5); "two_shot" forces the other protocol.
ALGORITHMS = ["auto", "two_shot"]  # the process tests: "auto" is one-shot below 4 ranks
GPU_ALGORITHMS = ["auto", "one_shot", "two_shot"]  # "auto" is two-shot at W = 8 above 16 tokens


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("W", [2, 4])
def test_processes_every_output(W, algorithm):
    check(run_processes(W, algorithm), W)


def _shm_names(pid):
    return glob.glob("/dev/shm/gatednorm.%d.*" % pid)


def _setup_only_worker(rank, W, algorithm, conn):
    """Builds the group, reports its process's segment names, and leaves without closing it,
    through os._exit (as a fork child does: no finalizer runs)."""
    try:
        def exchange(b):
            conn.send(("x", b))
            return conn.recv()

        g = AllReduceGroup(rank, W, exchange, "cpu", max_tokens=T, hidden=H, dtype="float32", algorithm=algorithm)
        conn.send(("done", (os.getpid(), _shm_names(os.getpid()), g.max_input_bytes)))
    except BaseException as e:  # pragma: no cover - reported by the parent
        conn.send(("error", repr(e)))
    os._exit(0)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory is not under /dev/shm here")
def test_no_segment_name_outlives_setup():
    """Regression: each rank's /dev/shm segment kept its name until close(), so a killed (or
    os._exit-ed) process left it behind; the name now goes once every peer has mapped it."""
    outs = run_processes(3, "auto", _setup_only_worker)
    for pid, names, _ in outs:
        assert names == [], names
        assert _shm_names(pid) == []
    before = set(_shm_names(os.getpid()))
    groups = AllReduceGroup.in_process(3, "cpu", max_tokens=4, hidden=64, dtype="float32")
    assert set(_shm_names(os.getpid())) == before
    y = [None] * 3

    def body(r):
        y[r] = groups[r].add_rmsnorm(np.ones((2, 64), np.float32), np.zeros((2, 64), np.float32), np.ones(64, np.float32)).y

    in_threads(3, body)  # the unlinked buffers still serve the exchange
    assert all(same_values(v, y[0]) for v in y)


_ALLOC_AND_LEAVE = """
import os, sys
from gatednorm import _ffi
from gatednorm._ffi import ffi
lib = _ffi.lib()
cpu = ffi.new("gatednorm_device *", {"device_type": lib.GATEDNORM_DEVICE_TYPE_CPU, "device_id": 0})[0]
nb, pp, h = ffi.new("size_t *"), ffi.new("void **"), ffi.new("uint8_t[64]")
assert lib.gatednorm_comm_buffer_size(2, 1024, nb) == 0
assert lib.gatednorm_comm_buffer_alloc(cpu, nb[0], pp, h) == 0
print(ffi.string(ffi.cast("char *", h)).decode(), flush=True)
sys.stdin.readline()  # alive until the parent says
os._exit(0)           # as if killed: no free, no unlink
"""


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory is not under /dev/shm here")
def test_alloc_removes_segments_of_exited_creators():
    """A rank killed between its alloc and the unlink after setup left its segment in /dev/shm
    for good (review); each CPU alloc now removes the segments whose creator has exited, and
    keeps those of a live one."""
    from gatednorm import _ffi
    from gatednorm._ffi import ffi

    def child():
        p = subprocess.Popen([sys.executable, "-c", _ALLOC_AND_LEAVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        path = "/dev/shm" + p.stdout.readline().strip()
        assert os.path.exists(path), path
        return p, path

    lib = _ffi.lib()
    cpu = ffi.new("gatednorm_device *", {"device_type": lib.GATEDNORM_DEVICE_TYPE_CPU, "device_id": 0})[0]
    nb, pp, h = ffi.new("size_t *"), ffi.new("void **"), ffi.new("uint8_t[64]")
    assert lib.gatednorm_comm_buffer_size(2, 1024, nb) == 0
    gone, gone_path = child()
    alive, alive_path = child()
    gone.communicate("\n")  # exits without unlinking
    assert gone.returncode == 0 and os.path.exists(gone_path)
    try:
        assert lib.gatednorm_comm_buffer_alloc(cpu, nb[0], pp, h) == 0
        mine = "/dev/shm" + ffi.string(ffi.cast("char *", h)).decode()
        assert not os.path.exists(gone_path)
        assert os.path.exists(alive_path) and os.path.exists(mine)
        assert lib.gatednorm_comm_buffer_free(cpu, pp[0]) == 0
        assert not os.path.exists(mine)
    finally:
        alive.communicate("\n")
        if os.path.exists(alive_path):
            os.unlink(alive_path)


def _dead_peer_worker(rank, W, algorithm, conn):
    """The last rank leaves right after setup (os._exit: as if killed); the others then call
    and report how long the call took to fail, and how."""
    try:
        def exchange(b):
            conn.send(("x", b))
            return conn.recv()

        g = AllReduceGroup(rank, W, exchange, "cpu", max_tokens=T, hidden=H, dtype="float32", algorithm=algorithm)
        if rank == W - 1:
            conn.send(("done", "left"))  # not None: run_processes waits for a non-None payload
            os._exit(0)
        time.sleep(0.2)  # the last rank is gone by now
        t0 = time.perf_counter()
        try:
            g.add_rmsnorm(np.ones((2, H), np.float32), np.zeros((2, H), np.float32), np.ones(H, np.float32))
            msg = None
        except GatedNormError as e:
            msg = str(e)
        elapsed = time.perf_counter() - t0
        try:
            g.check()
            check = None
        except GatedNormError as e:
            check = (type(e).__name__, str(e))
        conn.send(("done", (elapsed, msg, check)))
    except BaseException as e:  # pragma: no cover - reported by the parent
        conn.send(("error", repr(e)))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_dead_peer_fails_the_call_at_once(algorithm):
    """A peer process that has exited fails the others' call within ~10 ms of waiting, naming
    it, instead of after the whole wait (600 s by default, GATEDNORM_COMM_TIMEOUT_S)."""
    outs = run_processes(3, algorithm, _dead_peer_worker)
    for r in (0, 1):
        elapsed, msg, check = outs[r]
        assert msg is not None and "rank 2's process" in msg and "has exited" in msg, msg
        assert elapsed < 10.0, elapsed
        # check() (and every later call) keeps the cause and the status: a lost peer, not calls
        # out of step (a review, session 45: it said "out of step", INVALID_ARGUMENT)
        assert check is not None and check[0] == "GatedNormError" and "found rank 2's process exited" in check[1], check
        assert check[1].endswith("[device error]"), check


TIMEOUT_SCRIPT = r"""
import sys, time
import numpy as np
import gatednorm
from gatednorm import AllReduceGroup
groups = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=128, dtype="float32")
x = np.ones((2, 128), np.float32)
t0 = time.perf_counter()
try:
    groups[0].add_rmsnorm(x, x.copy(), np.ones(128, np.float32))  # rank 1 never calls
    print("returned")
except gatednorm.GatedNormError as e:
    print("%.3f %s" % (time.perf_counter() - t0, e))
"""


@pytest.mark.parametrize("value,wait", [("0.75", 0.75), ("1.5", 1.5), ("2", 2.0)])
def test_comm_timeout_is_read_as_decimal_seconds(value, wait):
    """GATEDNORM_COMM_TIMEOUT_S as decimal seconds, fractions included (the library parses it
    itself: atof followed a process's comma locale), in a child process (read once): a rank
    whose peer (alive, in the same process) never calls gives up after that wait, naming it."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", TIMEOUT_SCRIPT], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, GATEDNORM_COMM_TIMEOUT_S=value))
    assert res.returncode == 0, res.stderr[-2000:]
    elapsed, _, msg = res.stdout.strip().partition(" ")
    assert "GATEDNORM_COMM_TIMEOUT_S" in msg and "rank 1" in msg, res.stdout
    assert wait <= float(elapsed) < wait + 5.0, (elapsed, wait)


# --------------------------------------------------------------------- ranks as threads
in_threads = testing.in_threads  # body(r) on W threads at once, each rank's call waiting for its peers


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_in_process(algorithm):
    W = 3
    groups = AllReduceGroup.in_process(W, "cpu", max_tokens=T, hidden=H, dtype="float32", algorithm=algorithm)
    outs = [dict() for _ in range(W)]

    def body(r):
        for case in range(len(CASES)):
            for rep in range(REPS):
                outs[r][(case, rep)] = run_case(groups[r], case, rep, r, W)

    in_threads(W, body)
    check(outs, W)
    for g in groups:
        g.check()  # usable after all those calls


@pytest.mark.parametrize("algorithm", ["one_shot", "two_shot"])
def test_empty_call_keeps_ranks_in_step(algorithm):
    """Zero tokens on every rank ([0, H] and [2, 0, H]: an empty batch has no rows whatever its
    leading dims): outputs of that shape, and the next, non-empty call still pairs the ranks
    (an empty call must leave the exchange's flags as it found them on every rank)."""
    W = 2
    groups = AllReduceGroup.in_process(W, "cpu", max_tokens=T, hidden=H, dtype="float32", algorithm=algorithm)
    outs = [dict() for _ in range(W)]

    def body(r):
        for shape in ((0, H), (2, 0, H)):
            x = np.zeros(shape, np.float32)
            y, q, s, res = groups[r].add_rmsnorm(x, x.copy(), np.ones(H, np.float32), fp8=True)
            outs[r][shape] = [a.shape for a in (y, q, s, res)]
        outs[r][(0, 0)] = run_case(groups[r], 0, 0, r, W)

    in_threads(W, body)
    for r in range(W):
        for shape in ((0, H), (2, 0, H)):
            assert outs[r][shape] == [shape, shape, shape[:-1] + (H // 128,), shape]
    want = expected(0, 0, W)
    for r in range(W):
        for name, g, e in zip(("y", "q", "scales", "residual"), outs[r][(0, 0)], want):
            assert bits_equal(g, e), "rank %d: %s differs after the empty calls" % (r, name)


@pytest.mark.parametrize("algorithm", ["auto", "one_shot", "two_shot"])
def test_single_rank_is_add_rmsnorm(algorithm):
    (g,) = AllReduceGroup.in_process(1, "cpu", max_tokens=T, hidden=H, algorithm=algorithm)
    x, res, w = data(0, 0, 0, 1)
    got = g.add_rmsnorm(x, res.copy(), w, fp8=True)
    want = gatednorm.add_rmsnorm(x, res.copy(), w, fp8=True)
    for a, b in zip(got, want):
        assert bits_equal(np.asarray(a), np.asarray(b))


def test_tensors_inside_the_comm_buffers_are_refused():
    """No tensor of a call may lie in a comm buffer (a review: y over the buffer's header
    was written, leaving the comm unusable and its segment unfreeable; x inside its own
    exchange slot overlapped the copy into it): refused by name, nothing written, the comm
    still usable."""
    from gatednorm._ffi import ffi

    (g,) = AllReduceGroup.in_process(1, "cpu", max_tokens=T, hidden=H)
    base = int(ffi.cast("uintptr_t", g._buffers.buffers[0]))
    header = bytes(ffi.buffer(ffi.cast("char *", base), 8192))
    x, res, w = data(0, 0, 0, 1)
    in_buffer = [from_pointer(base + off, (T, H), _dtypes.bfloat16, device="cpu") for off in (0, 4096 + 2 * 4096)]
    for name, kw in (("y_out", dict(y_out=in_buffer[0])), ("x", dict()), ("residual_out", dict(residual_out=in_buffer[1]))):
        args = (in_buffer[1] if name == "x" else x, res.copy(), w)
        with pytest.raises(GatedNormError, match=r"%s: overlaps the communicator's buffers\[0\]" % name):
            g.add_rmsnorm(*args, **kw)
        assert bytes(ffi.buffer(ffi.cast("char *", base), 8192)) == header, "a refused call wrote the comm buffer"
    got = g.add_rmsnorm(x, res.copy(), w)  # refused on every rank (the only one): still in step
    want = gatednorm.add_rmsnorm(x, res.copy(), w)
    assert bits_equal(np.asarray(got[0]), np.asarray(want[0]))


# ------------------------------------------------------------- which algorithm "auto" runs
def flag_words(groups):
    """(ready, gathered) of block 0 in every rank's buffer: backend.h's layout, the flag lines
    from byte 4096 (kCommFlags), gathered 8 bytes into the line (kCommGatheredOffset).  Only a
    two-shot call advances gathered."""
    from gatednorm._ffi import ffi

    return [(int(ffi.cast("uint64_t *", b)[4096 // 8]), int(ffi.cast("uint64_t *", b)[4096 // 8 + 1])) for b in groups[0]._buffers.buffers]


def run_threads(groups, tokens, hidden):
    def body(r):
        x = np.random.default_rng(r).standard_normal((tokens, hidden)).astype(np.float32)
        groups[r].add_rmsnorm(x, None, np.ones(hidden, np.float32))

    in_threads(len(groups), body)


# (W, algorithm, tokens, two-shot?): "auto" is two-shot from 4 ranks above 16 tokens
# (kCommGpuBlocks), one-shot otherwise; a forced algorithm is kept, except at W = 1 (no peers).
AUTO_RULE = [(4, "auto", 16, False), (4, "auto", 17, True), (8, "auto", 17, True), (3, "auto", 64, False),
             (2, "auto", 64, False), (4, "one_shot", 64, False), (2, "two_shot", 1, True), (1, "two_shot", 17, False)]


@pytest.mark.parametrize("W,algorithm,tokens,two", AUTO_RULE)
def test_algorithm_choice(W, algorithm, tokens, two):
    hidden = 64
    groups = AllReduceGroup.in_process(W, "cpu", max_tokens=64, hidden=hidden, dtype="float32", algorithm=algorithm)
    assert all(g.algorithm == algorithm for g in groups)
    for call in (1, 2):
        run_threads(groups, tokens, hidden)
        assert flag_words(groups) == [(call, call if two else 0)] * W, (call, flag_words(groups))


def test_algorithm_refused_keeps_the_comm():
    """A refused gatednorm_comm_set_algorithm leaves the comm as it was: still two-shot."""
    from gatednorm import _ffi

    lib = _ffi.lib()
    groups = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=64, dtype="float32", algorithm="two_shot")
    for g in groups:
        assert lib.gatednorm_comm_set_algorithm(g._comm, 3) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    run_threads(groups, 4, 64)
    assert flag_words(groups) == [(1, 1)] * 2


def test_algorithm_argument():
    for bad_value in ("three_shot", "ONE_SHOT", 1, None):
        bad("algorithm:", AllReduceGroup.in_process, 2, "cpu", algorithm=bad_value)
        bad("algorithm:", AllReduceGroup, 0, 2, lambda b: [b, b], algorithm=bad_value)
    # Ranks that disagree are refused when the group is built (a call would wait forever):
    # rank 0 asks for two-shot, the other rank (its own buffer mapped twice) answers one-shot.
    calls = []

    def exchange(b):
        calls.append(b)
        if len(calls) == 1:  # the handles: rank 1's item names rank 1 and the same buffer
            return [b, struct.pack("<iiQ", 1, 2, struct.unpack_from("<iiQ", b)[2]) + b[16:]]
        return [b, bytes([1])]  # the barrier: each rank's algorithm

    e = bad("algorithm: 'two_shot' on rank 0, but 'one_shot' on rank 1", AllReduceGroup, 0, 2, exchange, max_tokens=4, hidden=H,
            algorithm="two_shot")
    assert "every rank must pass the same" in str(e)
    assert calls[1] == bytes([2])


# ------------------------------------------------------------------------- bad input
def bad(match, fn, *a, **kw):
    with pytest.raises(GatedNormError) as e:
        fn(*a, **kw)
    assert match in str(e.value), str(e.value)
    return e.value


def test_bad_input():
    g0, g1 = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=H)
    x = np.ones((5, H), _dtypes.bfloat16)
    res = np.zeros((5, H), _dtypes.bfloat16)
    w = np.ones(H, np.float32)
    e = bad("x: 5 tokens", g0.add_rmsnorm, x, res, w)
    assert "fused limit" in str(e)
    bad("x:", g0.add_rmsnorm, np.ones((2, H), np.int32), None, w)
    bad("weight:", g0.add_rmsnorm, x[:2], res[:2], np.ones(H + 1, np.float32))
    bad("y:", g0.add_rmsnorm, x[:2], res[:2], w, y=False)
    bad("world_size", AllReduceGroup, 0, 9, lambda b: [b])
    bad("rank", AllReduceGroup, 2, 2, lambda b: [b, b])
    bad("exchange", AllReduceGroup, 0, 2, None)
    # an exchange answering for a different number of ranks, or a peer of another world size
    bad("exchange: returned 3 items", AllReduceGroup, 0, 2, lambda b: [b, b, b], max_tokens=4, hidden=H)
    hdr = gatednorm.allreduce._HEADER

    def peer(**kw):  # rank 1's exchange item as rank 0's with some fields changed
        def exchange(b):
            f = dict(zip(("rank", "world", "bytes", "max_tokens", "hidden", "isz"), hdr.unpack_from(b)), rank=1)
            f.update(kw)
            return [b, hdr.pack(*f.values()) + b[hdr.size:]]
        return exchange

    bad("world_size: 2 on rank 0, but rank 1 has 4", AllReduceGroup, 0, 2, peer(world=4), max_tokens=4, hidden=H)
    bad("max_tokens: 4 on rank 0, but 8 on rank 1", AllReduceGroup, 0, 2, peer(max_tokens=8), max_tokens=4, hidden=H)
    bad("hidden: %d on rank 0, but %d on rank 1" % (H, 2 * H), AllReduceGroup, 0, 2, peer(hidden=2 * H), max_tokens=4, hidden=H)
    bad("dtype's bytes: 2 on rank 0, but 4 on rank 1", AllReduceGroup, 0, 2, peer(isz=4), max_tokens=4, hidden=H)
    bad("exchange: item 1 has 80 bytes", AllReduceGroup, 0, 2, lambda b: [b, b[:16] + b[hdr.size:]], max_tokens=4, hidden=H)
    bad("dtype", AllReduceGroup, 0, 2, lambda b: [b, b], dtype="int32")
    # The calls above were refused on rank 0 only: the ranks are out of step (rank 1 made
    # none of them), so the next call fails on both, naming it, and every later one is refused.
    outs = [None, None]

    def body(r):
        try:
            (g0, g1)[r].add_rmsnorm(x[:2], res[:2].copy(), w)
        except GatedNormError as e:
            outs[r] = e

    in_threads(2, body)
    for r in range(2):
        assert isinstance(outs[r], GatedNormError) and "meets rank" in str(outs[r]), outs[r]
    bad("comm: unusable", g1.add_rmsnorm, x[:2], res[:2], w)
    g0.close()
    bad("closed", g0.add_rmsnorm, x[:2], res[:2], w)


def test_group_arguments_are_checked_by_name():
    """A review of 2026-12-04: a short barrier list built a group (a rank could unlink its
    buffer before a peer mapped it), non-bytes items and oversized max_tokens raised raw
    TypeError / OverflowError; the group is a context manager that closes."""
    hdr, first = gatednorm.allreduce._HEADER, []

    def short_barrier(b):  # rank 1's item made from rank 0's (its own buffer); the barrier comes back short
        first.append(b)
        if len(first) > 1:
            return [b]
        f = dict(zip(("rank", "world", "bytes", "max_tokens", "hidden", "isz"), hdr.unpack_from(b)), rank=1)
        return [b, hdr.pack(*f.values()) + b[hdr.size:]]

    with pytest.raises(GatedNormError, match="exchange: returned 1 items, expected world_size 2"):
        AllReduceGroup(0, 2, short_barrier, max_tokens=4, hidden=H)
    with pytest.raises(GatedNormError, match="exchange: must return a list of bytes"):
        AllReduceGroup(0, 2, lambda b: [b, None], max_tokens=4, hidden=H)
    with pytest.raises(GatedNormError, match="max_tokens: .* past the 2\\^40 elements"):
        AllReduceGroup(0, 2, lambda b: [b, b], max_tokens=1 << 62, hidden=8192)
    with pytest.raises(GatedNormError, match="device: device type and id"):
        AllReduceGroup(0, 1, lambda b: [b], device=(1, 1 << 40), max_tokens=4, hidden=H)
    with AllReduceGroup.in_process(1, "cpu", max_tokens=4, hidden=H, dtype="float32")[0] as g:
        x = np.ones((2, H), np.float32)
        y = g.add_rmsnorm(x, None, np.ones(H, np.float32)).y  # rows of ones: 1 / sqrt(1 + eps)
        assert np.allclose(y, 1 / np.sqrt(1 + 1e-6), rtol=1e-6, atol=0) and not np.allclose(y, 1.0, rtol=1e-7, atol=0)
    with pytest.raises(GatedNormError, match="closed"):
        g.add_rmsnorm(x, None, np.ones(H, np.float32))


def test_same_refused_call_on_every_rank_keeps_them_in_step():
    """A call every rank makes and every rank refuses leaves them in step: the next pairs up."""
    groups = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=H)
    x, res, w = np.ones((2, H), _dtypes.bfloat16), np.zeros((2, H), _dtypes.bfloat16), np.ones(H, np.float32)
    outs = [None, None]

    def body(r):
        with pytest.raises(GatedNormError, match="weight:"):
            groups[r].add_rmsnorm(x, res.copy(), np.ones(H + 1, np.float32))
        outs[r] = groups[r].add_rmsnorm(x, res.copy(), w)

    in_threads(2, body)
    assert same_values(outs[0].y, outs[1].y) and same_values(outs[0].residual, 2 * x)


class _Interrupt(BaseException):
    """A KeyboardInterrupt stand-in (pytest treats a real one as the user's)."""


@pytest.mark.parametrize("how", ["refused", "refused_in_python", "bad_layout", "tokens", "dtype", "empty", "interrupted"])
def test_ranks_out_of_step_fail_together(how, monkeypatch):
    """Regression: a call refused (or empty, or of other shapes) on one rank only paired the
    ranks' next calls wrongly with no error (rank 0 got its x plus rank 1's x of the call
    before); now every rank's call fails naming the mismatch, and the comm refuses later calls.
    A call the Python layer refuses before the library sees it ("refused_in_python",
    "bad_layout") counts there too (it paired silently: a review of 2026-12-04)."""
    g = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=H, dtype="float32", algorithm="one_shot")
    w = np.ones(H, np.float32)
    errs = [None, None]
    kept = [[], []]  # per rank: each failed call's outputs left as they were

    def call(r, x):
        # every output given, poisoned with finite values (the residual in place, random)
        res = np.random.default_rng(r).standard_normal(x.shape).astype(x.dtype)
        y, q = np.full(x.shape, 3.0, x.dtype), np.full(x.shape, 0x35, np.uint8).view(_dtypes.float8_e4m3fn)
        scales = np.full(x.shape[:-1] + (H // 128,), 7.0, np.float32)
        before = [a.tobytes() for a in (res, y, q, scales)]
        try:
            return g[r].add_rmsnorm(x, res, w, y_out=y, fp8=True, q=q, scales=scales)
        except GatedNormError as e:
            errs[r] = e
            kept[r].append([a.tobytes() for a in (res, y, q, scales)] == before)

    def body(r):
        x = np.full((4, H), 10.0 ** r, np.float32)
        if r == 0 and how == "refused":
            with pytest.raises(GatedNormError, match="weight:"):
                g[0].add_rmsnorm(x, np.zeros_like(x), np.ones(H + 1, np.float32))
        if r == 0 and how == "refused_in_python":
            with pytest.raises(GatedNormError, match="y: no output requested"):
                g[0].add_rmsnorm(x, np.zeros_like(x), w, y=False)
        if r == 0 and how == "bad_layout":
            with pytest.raises(GatedNormError, match="scale_layout"):
                g[0].add_rmsnorm(x, np.zeros_like(x), w, fp8=True, scale_layout="diagonal")
        if r == 0 and how == "interrupted":  # a BaseException before the library call went uncounted (review)
            me, wants = threading.get_ident(), ops_fp8._norm_wants

            def interrupted_here(*a, **k):  # only on this rank's thread
                if threading.get_ident() == me:
                    raise _Interrupt()
                return wants(*a, **k)

            with monkeypatch.context() as m:
                m.setattr(ops_fp8, "_norm_wants", interrupted_here)
                with pytest.raises(_Interrupt):
                    g[0].add_rmsnorm(x, np.zeros_like(x), w)
        if r == 0 and how == "empty":
            g[0].add_rmsnorm(x[:0], np.zeros_like(x[:0]), w)
        if r == 0 and how == "tokens":
            x = x[:2]
        if r == 0 and how == "dtype":
            call(r, x.astype(_dtypes.bfloat16))
            return
        call(r, x)

    in_threads(2, body)  # "refused" / "empty": rank 0's second call meets rank 1's first, well before the timeout
    assert all(isinstance(e, GatedNormError) and "meets rank" in str(e) for e in errs), errs
    assert kept == [[True], [True]], kept  # nothing written on either rank
    for r in range(2):
        errs[r] = None
        call(r, np.ones((1, H), np.float32))
        assert "comm: unusable" in str(errs[r]) and kept[r][-1], errs[r]
        with pytest.raises(GatedNormError, match="comm: unusable"):  # check() says the same
            g[r].check()


OTHER_OPTIONS = {"eps": dict(eps=1e-3), "weight_offset": dict(weight_offset=1.0), "fp8_max": dict(fp8=True, fp8_max=224.0),
                 "group_size": dict(fp8=True, group_size=64), "fp8_one_rank": dict(fp8=True),
                 "quantize_rounded": dict(fp8=True, quantize_rounded=True), "amax_floor": dict(fp8=True, amax_floor=1e-4)}


@pytest.mark.parametrize("how", sorted(OTHER_OPTIONS) + ["weight_dtype"])
def test_ranks_with_other_options_fail_together(how):
    """Ranks whose calls differ only in an option that changes the result (eps, weight_offset,
    the weight's dtype, the FP8 settings, FP8 outputs on one rank only) computed different
    results from one sum with no error (a hostile review, session 43: eps 1e-6 against 4).
    The call signature carries a hash of those options: every rank's call fails naming them,
    nothing is written, and the comm refuses later calls.  Outputs a rank alone asks for (y's
    dtype) are its own choice: such calls pass, with the same residual on every rank."""
    g = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=H, dtype="float32", algorithm="one_shot")
    errs, kept = [None, None], [None, None]
    fp8 = {"fp8": True} if how not in ("eps", "weight_offset", "weight_dtype", "fp8_one_rank") else {}

    def body(r):
        x = np.full((4, H), 1.5 + r, np.float32)
        res = np.random.default_rng(r).standard_normal(x.shape).astype(np.float32)
        w = np.ones(H, _dtypes.bfloat16 if (how == "weight_dtype" and r == 1) else np.float32)
        kw = dict(fp8) if r == 0 else dict(OTHER_OPTIONS.get(how, fp8))
        before = res.tobytes()
        try:
            g[r].add_rmsnorm(x, res, w, **kw)
        except GatedNormError as e:
            errs[r] = e
            kept[r] = res.tobytes() == before

    in_threads(2, body)
    for r in range(2):
        assert isinstance(errs[r], GatedNormError) and "differ in their options" in str(errs[r]), errs[r]
        assert kept[r], "rank %d's residual written" % r
        with pytest.raises(GatedNormError, match="comm: unusable"):
            g[r].check()


def test_ranks_with_other_y_dtypes_pass():
    """y's dtype is each rank's own (not in the options hash): the calls pass, the residual
    (the same sum) is the same on both ranks, and y is that sum's norm in each dtype."""
    g = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=H, dtype="float32", algorithm="one_shot")
    res = [np.random.default_rng(7).standard_normal((4, H)).astype(np.float32) for _ in range(2)]
    ys = [None, None]

    def body(r):
        ys[r] = g[r].add_rmsnorm(np.full((4, H), 1.5 + r, np.float32), res[r], np.ones(H, np.float32),
                                 y_dtype="bfloat16" if r else None).y

    in_threads(2, body)
    assert res[0].tobytes() == res[1].tobytes()
    assert ys[1].dtype == _dtypes.bfloat16 and ys[0].dtype == np.float32
    assert ys[0].astype(_dtypes.bfloat16).tobytes() == ys[1].tobytes()


# ------------------------------------------------------------------ one GPU, ranks as streams
def gpu_args(be, case, rep, r, W):
    """Every tensor of rank r's call on the GPU, outputs poisoned: allocated before any rank
    launches (an allocation or free that synchronizes the device between the W launches
    would wait for a spinning kernel whose peers are not launched yet)."""
    from test_rmsnorm_gated_fp8 import POISON_VALUE, new_scales, poison_codes

    x, res, w = data(case, rep, r, W)
    kw = kwargs(case)
    a = dict(x=be.put(x), residual=be.put(None if res is None else res.copy()), weight=be.put(w))
    if CASES[case][2].get("out_of_place") and res is not None:
        a["residual_out"] = be.put(np.full(res.shape, POISON_VALUE, res.dtype))
    if kw.get("y", True):
        a["y_out"] = be.put(np.full(x.shape, POISON_VALUE, kw.get("y_dtype", x.dtype)))
    if kw.get("fp8"):
        fmt, sf, G = kw.get("fp8_format", "e4m3fn"), kw.get("scale_format", "fp32"), kw.get("group_size", 128)
        K = H // G
        cols = (K + 3) // 4 if sf == "e8m0_packed" else K
        s0, sbase = new_scales((T,), cols, sf, kw.get("scale_layout", "row"))
        a["q"] = be.put(poison_codes(x.shape, fmt))
        a["scales"] = be.put(s0, sbase)
    return a, kw


def fused_kernel(W, algorithm):
    """The name the one-launch path (up to 16 tokens) notes: "auto" is one-shot there at every W."""
    return "allreduce.two_shot.fused" if algorithm == "two_shot" and W > 1 else "allreduce.one_shot.fused"


@pytest.mark.parametrize("algorithm", GPU_ALGORITHMS)
@pytest.mark.parametrize("W", [2, 4])
def test_gpu_streams(requires_gpu, W, algorithm):
    import gc

    from conftest import Backend

    be = Backend("gpu")
    dev = (gatednorm._runtime.gpu_device_type(), 0)
    groups = AllReduceGroup.in_process(W, dev, max_tokens=64, hidden=H, dtype="float32", algorithm=algorithm)
    streams = [gatednorm.Stream(0) for _ in range(W)]
    for case in range(len(CASES)):
        for rep in range(REPS):
            args = [gpu_args(be, case, rep, r, W) for r in range(W)]
            gatednorm._runtime.device_synchronize(0)  # the uploads are done
            gc.disable()  # no free between the launches
            try:
                outs, kernels = [], []
                for r, (a, kw) in enumerate(args):
                    a = dict(a)
                    x, res, w = a.pop("x"), a.pop("residual"), a.pop("weight")
                    outs.append(groups[r].add_rmsnorm(x, res, w, stream=streams[r], **a, **kw))
                    kernels.append(gatednorm.last_kernel())
            finally:
                gc.enable()
            for st in streams:
                st.synchronize()
            # T = 5 <= 16 tokens: one launch a rank, the exchange kernel normalizing its rows, of
            # the algorithm asked for ("auto": one-shot, even at W = 4) (asserted only once every
            # rank launched: a rank alone would wait for its peers)
            assert kernels == [fused_kernel(W, algorithm)] * W
            want = expected(case, rep, W, be)
            for r in range(W):
                for name, g, e in zip(("y", "q", "scales", "residual"), outs[r], want):
                    g = None if g is None else be.get(g)
                    assert bits_equal(g, e), "case %d rep %d rank %d: %s differs" % (case, rep, r, name)


# Helpers of the GPU scripts below, run in a subprocess each (a hang times out, not the suite).
_SCRIPT_HELPERS = r"""
from gatednorm import GatedNormError
def err(f):  # the message f raised, or None
    try:
        f()
    except GatedNormError as e:
        return str(e)
    return None
"""

_LOST_PEER = _SCRIPT_HELPERS + r"""
import sys, time
import numpy as np
import gatednorm
from gatednorm import AllReduceGroup, GatedNormError
dev = (gatednorm._runtime.gpu_device_type(), 0)
g = AllReduceGroup.in_process(2, dev, max_tokens=4, hidden=256, dtype="float32")
s = [gatednorm.Stream(0) for _ in range(2)]
a = lambda v: gatednorm.DeviceArray.from_numpy(np.full((2, 256), v, np.float32), device=dev)
x, r, w = a(1.0), a(0.0), gatednorm.DeviceArray.from_numpy(np.ones(256, np.float32), device=dev)
# Every output allocated here: a y the call made and dropped would be freed right after it,
# and a free waits for the device, i.e. for the spinning kernel (review: the second call then
# came after the give-up, refused by the host, and the script failed).
y0, y1, y2 = a(7.0), a(7.0), a(7.0)
gatednorm._runtime.device_synchronize(0)
t0 = time.time()
g[0].add_rmsnorm(x, r, w, y_out=y0, stream=s[0])  # rank 1 never makes this call
g[0].add_rmsnorm(x, r, w, y_out=y2, stream=s[0])  # enqueued before the host can know: must write nothing
s[0].synchronize()
untouched = bool((y2.numpy() == 7.0).all()) and bool((r.numpy() == 0.0).all())
waited = time.time() - t0
e0 = err(g[0].check)
e0_call = err(lambda: g[0].add_rmsnorm(x, r, w, stream=s[0]))
t1 = time.time()
g[1].add_rmsnorm(x, r, w, y_out=y1, stream=s[1])  # rank 1 late: sees rank 0 gave up, gives up at once
s[1].synchronize()
late = time.time() - t1
e1 = err(g[1].check)
print(repr((waited, late, e0, e0_call, e1, untouched)))
"""


def test_gpu_lost_peer_times_out(requires_gpu):
    """A GPU exchange kernel whose peer never comes gives up after GATEDNORM_COMM_TIMEOUT_S (it
    spun for ever) and makes the comm unusable: check() and every later call name the peer; a
    call enqueued behind it writes nothing; the peer, arriving late, finds it gave up and gives
    up at once."""
    env = dict(os.environ, GATEDNORM_COMM_TIMEOUT_S="1")
    out = subprocess.run([sys.executable, "-c", _LOST_PEER], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    waited, late, e0, e0_call, e1, untouched = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    # the call enqueued behind the one that gave up wrote nothing (its block's flag had wrapped
    # its epoch to 0: it skipped every wait and wrote made-up rows, review); the residual too
    assert untouched
    assert 0.9 < waited < 30, waited
    assert late < 0.9, late
    assert e0 and "waited 1 s for rank 1" in e0 and "unusable" in e0, e0
    assert e0_call and e0_call.split(": ", 1)[1] == e0.split(": ", 1)[1], (e0_call, e0)  # after the entry's name
    assert e1 and "found rank 0 had given up" in e1, e1


_OUT_OF_STEP = _SCRIPT_HELPERS + r"""
import gc, sys, time
import numpy as np
import gatednorm
from gatednorm import AllReduceGroup, GatedNormError
from gatednorm import _ffi
from gatednorm._ffi import ffi
from gatednorm.allreduce import _CommEntry
how = sys.argv[1]
W = {"order": 3, "two_shot": 4}.get(how, 2)
dev = (gatednorm._runtime.gpu_device_type(), 0)
g = AllReduceGroup.in_process(W, dev, max_tokens=4, hidden=256, dtype="float32", algorithm="two_shot" if how == "two_shot" else "auto")
if how == "order":  # rank 2's list puts rank 1's buffer at 0 and rank 0's at 1
    lib = _ffi.lib()
    bufs = g[0]._buffers.buffers
    cdev = ffi.new("gatednorm_device *", {"device_type": dev[0], "device_id": 0})[0]
    cp = ffi.new("gatednorm_comm **")
    assert lib.gatednorm_comm_create(2, W, ffi.new("void *[]", [bufs[1], bufs[0], bufs[2]]), g[0].buffer_bytes, cdev, cp) == 0
    g[2]._comm, g[2]._entry = cp[0], _CommEntry(cp[0])
s = [gatednorm.Stream(0) for _ in range(W)]
a = lambda shape, v, dt=np.float32: gatednorm.DeviceArray.from_numpy(np.full(shape, v, dt), device=dev)
w = a(256, 1.0)
args = []
for r in range(W):
    t = 2 if how in ("tokens", "two_shot") and r == 0 else 4
    dt = gatednorm._dtypes.bfloat16 if how == "dtype" and r == 0 else np.float32
    args.append((a((t, 256), 1.0 + r, dt), a((t, 256), 5.0, dt), a((t, 256), 7.0, dt)))
if how == "refused":  # refused on rank 0 only: its next call is its second
    try:
        g[0].add_rmsnorm(args[0][0], args[0][1], a(257, 1.0), stream=s[0])
    except GatedNormError:
        pass
    else:
        raise AssertionError("not refused")
if how == "empty":  # made on rank 0 only (no x: nothing launched, but counted)
    g[0].add_rmsnorm(a((0, 256), 1.0), a((0, 256), 5.0), w, stream=s[0])
gatednorm._runtime.device_synchronize(0)
t0 = time.time()
gc.disable()
for r in range(W):
    x, res, y = args[r]
    g[r].add_rmsnorm(x, res, w, y_out=y, stream=s[r])
gc.enable()
for st in s:
    st.synchronize()
waited = time.time() - t0
errs = [err(g[r].check) for r in range(W)]
untouched = [bool((args[r][2].numpy().astype(np.float32) == 7.0).all()) and bool((args[r][1].numpy().astype(np.float32) == 5.0).all())
             for r in range(W)]
print(repr((waited, errs, untouched)))
"""


@pytest.mark.parametrize("how", ["refused", "empty", "tokens", "dtype", "order", "two_shot"])
def test_gpu_out_of_step_is_caught(requires_gpu, how):
    """Regression: the GPU exchange checked nothing, so a call refused or empty on one rank
    only, or of other shapes, or a C caller's buffer list out of rank order, paired the ranks' data
    wrongly without a word (the CPU backend compares signatures).  Each flag now carries a tag
    of the call and of its writer ("two_shot": other tokens on rank 0 of 4, reduce-scatter +
    all-gather): the rank that finds a peer's tag wrong gives up at once
    (well before the timeout) naming the peer, writes nothing, and its peers give up with it
    (for "order", only rank 2's list is wrong: the others may finish that call)."""
    env = dict(os.environ, GATEDNORM_COMM_TIMEOUT_S="20")
    out = subprocess.run([sys.executable, "-c", _OUT_OF_STEP, how], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    waited, errs, untouched = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert waited < 5, waited  # found, not timed out
    if how == "order":
        assert errs[2] and "found rank 0's call not the same as its own" in errs[2] and "buffers[0]" in errs[2], errs
        assert untouched[2], untouched
        return
    assert all(e and "unusable" in e for e in errs), errs
    assert any("not the same as its own" in e for e in errs), errs
    assert untouched == [True] * len(errs), untouched


# ------------------------------------------- the exchange's 16-byte and 2-byte paths, every W
# The GPU exchange moves rows 16 bytes at a time when x, its token stride and the row bytes
# are 16-byte aligned, else 2 bytes at a time; it is compiled for each world size.  Each
# layout below picks one path (the comment says which); T = 37 tokens gives block b of the
# fixed 16-block grid tokens b, b + 16 and (b < 5) b + 32, with add_rmsnorm's own launch after
# the exchange; up to 16 tokens (GPU_TOKENS' 5 and 16) the exchange kernel normalizes its rows
# itself (the fused one-launch path; 17: just past it).  The CPU threads run the same cases
# at PT (the test's own check; the CPU has one path).
PT = 37
GPU_TOKENS = (5, 16, 17, 37)
LAYOUTS = [  # (x dtype, hidden, padded row of x's buffer or None, element offset of x in it)
    ("bf16", 256, None, 0),   # 16-byte path
    ("fp32", 196, None, 0),   # 16-byte path (784-byte rows)
    ("fp16", 200, None, 0),   # 16-byte path (400-byte rows)
    ("bf16", 196, None, 0),   # 2-byte path: 392-byte rows
    ("fp32", 197, None, 0),   # 2-byte path: 788-byte rows
    ("bf16", 256, 264, 1),    # 2-byte path: x starts 2 bytes past a 16-byte boundary
    ("bf16", 256, 260, 0),    # 2-byte path: 520-byte token stride
    ("bf16", 2304, None, 0),  # 16-byte path; 9 spans of 256: two rounds of the generic row's sum
    ("bf16", 2300, None, 0),  # 2-byte path (4600-byte rows), two rounds
    ("bf16", 16, None, 0),    # 16-byte path, 2 units a row: two-shot at W = 3, 8 leaves ranks without a share
    ("fp16", 5, None, 0),     # 2-byte path, 5 elements a row: fewer columns than 8 ranks
    ("bf16", 256, 264, (0, 1)),  # 16-byte sum and gather; odd ranks' x 2 bytes off: their copy-in 2-byte
]
# Two-shot splits each row's n columns (16-byte units on the GPU's 16-byte path, else elements)
# into W contiguous shares, rank r's [r * n / W, (r + 1) * n / W): hidden 196, 197, 200, 2300
# and the 2-unit and 5-element rows split unevenly at W = 3 and 8, some shares empty.  The
# last layout gives ranks different x alignments: the units of the shares must not depend on
# them (a rank counting elements while its peers count 16-byte units sums columns nobody
# gathers), only the copy-in width may.
# The data depends on (layout, rank, T, rep): a call that read a slot or reduced region left
# by the previous call (a missing fence or barrier) would not find the right values there.


def layout_data(li, rank, T=PT, rep=0):
    xd, h, padded, off = LAYOUTS[li]
    if isinstance(off, tuple):
        off = off[rank % len(off)]
    g = np.random.default_rng((7000 + 100 * li + rank, T, rep))
    full = (g.standard_normal((T, padded or h)) * 2).astype(np.float32).astype(DTS[xd])
    x = full[:, off:off + h]
    # A row of -0 on every rank, and in the residual: the sum that starts from rank 0's value
    # keeps -0 (the residual stored -0), one that starts from +0 would give +0.
    x[3] = -0.0
    g = np.random.default_rng((7000 + 100 * li + 99, T, rep))
    res = g.standard_normal((T, h)).astype(np.float32).astype(DTS[xd])
    res[3] = -0.0
    w = (g.standard_normal(h) * 0.5 + 1).astype(np.float32)
    return x, full, res, w


def layout_expected(li, W, be=None, T=PT, rep=0):
    parts = [layout_data(li, r, T, rep) for r in range(W)]
    acc = parts[0][0].astype(np.float32)
    for p in parts[1:]:
        acc = acc + p[0].astype(np.float32)
    x = acc.astype(parts[0][0].dtype)
    _, _, res, w = parts[0]
    put = (lambda a: a) if be is None else be.put
    get = (lambda a: np.asarray(a)) if be is None else be.get
    out = gatednorm.add_rmsnorm(put(x), put(res.copy()), put(w))
    return get(out.y), get(out.residual)


@pytest.mark.parametrize("algorithm", GPU_ALGORITHMS)
@pytest.mark.parametrize("W", [1, 3, 8])
def test_threads_layouts(W, algorithm):
    outs = {}
    for li, (xd, h, _, _) in enumerate(LAYOUTS):
        groups = AllReduceGroup.in_process(W, "cpu", max_tokens=PT, hidden=h, dtype="float32", algorithm=algorithm)
        got = [None] * W

        def body(r):
            x, _, res, w = layout_data(li, r)
            o = groups[r].add_rmsnorm(x, res.copy(), w)
            got[r] = (np.asarray(o.y).copy(), np.asarray(o.residual).copy())

        in_threads(W, body)
        outs[li] = got
    for li in outs:
        want = layout_expected(li, W)
        for r in range(W):
            for name, g, e in zip(("y", "residual"), outs[li][r], want):
                assert bits_equal(g, e), "layout %d rank %d: %s differs" % (li, r, name)


@pytest.mark.parametrize("algorithm", GPU_ALGORITHMS)
@pytest.mark.parametrize("W", [1, 3, 8])
def test_gpu_streams_layouts(requires_gpu, W, algorithm):
    import gc

    from conftest import Backend

    be = Backend("gpu")
    dev = (gatednorm._runtime.gpu_device_type(), 0)
    streams = [gatednorm.Stream(0) for _ in range(W)]
    for li, (xd, h, _, _) in enumerate(LAYOUTS):
        groups = AllReduceGroup.in_process(W, dev, max_tokens=PT, hidden=h, dtype="float32", algorithm=algorithm)
        # T up then down on the same comm: "auto" at W = 8 alternates two-shot (T > 16) and
        # one-shot calls over the same slots and reduced regions
        for T in GPU_TOKENS + GPU_TOKENS[::-1]:
            for rep in range(REPS):  # both slots
                args = []
                for r in range(W):
                    x, full, res, w = layout_data(li, r, T, rep)
                    args.append((be.put(x, full), be.put(res.copy()), be.put(w), be.put(np.full(x.shape, 7.0, x.dtype))))  # poisoned y
                gatednorm._runtime.device_synchronize(0)
                gc.disable()  # no free between the launches
                try:
                    outs = [groups[r].add_rmsnorm(x, res, w, y_out=yo, stream=streams[r]) for r, (x, res, w, yo) in enumerate(args)]
                    kernel = gatednorm.last_kernel()  # rank W - 1's call
                finally:
                    gc.enable()
                for st in streams:
                    st.synchronize()
                # up to 16 tokens one launch a rank (of the algorithm asked for; "auto": one-shot);
                # above, the exchange ("auto": two-shot at W = 8) and add_rmsnorm's own
                assert kernel == fused_kernel(W, algorithm) if T <= 16 else kernel.startswith("add_rmsnorm."), (T, kernel)
                want = layout_expected(li, W, be, T, rep)
                for r in range(W):
                    for name, g, e in zip(("y", "residual"), (outs[r].y, outs[r].residual), want):
                        assert bits_equal(be.get(g), e), "layout %d T %d rep %d rank %d: %s differs" % (li, T, rep, r, name)


# ----------------------------------------------------------------------------- the C layer
@pytest.mark.parametrize("extra_tokens", [0, 1])
def test_broadcast_x_past_the_fused_limit_is_refused_not_wrapped(extra_tokens):
    """Regression: tokens x hidden x 4 bytes of a broadcast fp32 x (2^42 tokens of 2^20) wrapped
    to 0 (the call returned success having done nothing) or, one token more, to 4 MiB, which
    passed the fused limit and the CPU exchange copied 2^42 rows into the slot (SIGSEGV)."""
    from gatednorm import _ffi
    from gatednorm._ffi import ffi

    lib = _ffi.lib()
    H, T = 1 << 20, (1 << 42) + extra_tokens
    (g,) = AllReduceGroup.in_process(1, "cpu", max_tokens=1, hidden=H, dtype="float32")  # a 4 MiB slot
    x, w = np.zeros(H, np.float32), np.ones(H, np.float32)

    from gatednorm.testing import host_descriptor as desc

    tx = desc(x.ctypes.data, (T, H), (0, 1), 2, 32)  # broadcast: legal for an input
    tw = desc(w.ctypes.data, (H,), (1,), 2, 32)
    tq = desc(1 << 48, (T, H), (H, 1), 1, 8)  # never touched: validation must stop first
    ts = desc((1 << 62) + (1 << 50), (T, 1), (1, 1), 1, 8)
    p = ffi.new("gatednorm_add_rmsnorm_params *")
    assert lib.gatednorm_add_rmsnorm_params_init(p, ffi.sizeof(p[0])) == 0
    p.quant.group_size, p.quant.scale_format = H, 2  # E8M0 bytes
    st = lib.gatednorm_allreduce_add_rmsnorm(g._comm, tx, ffi.NULL, tw, ffi.NULL, ffi.NULL, tq, ts, p, ffi.NULL)
    msg = ffi.string(lib.gatednorm_last_error()).decode()
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("x:") and "fused limit" in msg, (st, msg)


def test_c_comm_entry_points():
    from gatednorm import _ffi
    from gatednorm._ffi import ffi

    lib = _ffi.lib()
    cpu = ffi.new("gatednorm_device *", {"device_type": 1, "device_id": 0})[0]

    def err(st, match):
        assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT, st
        msg = ffi.string(lib.gatednorm_last_error()).decode()
        assert msg.startswith(match), msg

    nb = ffi.new("size_t *")
    err(lib.gatednorm_comm_buffer_size(9, 1024, nb), "world_size:")
    err(lib.gatednorm_comm_buffer_size(2, 0, nb), "max_input_bytes:")
    err(lib.gatednorm_comm_buffer_size(1, (1 << 40) + 1, nb), "max_input_bytes:")  # the cap itself, + 1
    w9 = lib.GATEDNORM_COMM_MAX_WORLD_SIZE + 1  # one past: buffers[8] would be written past the array
    err(lib.gatednorm_comm_create(0, w9, ffi.new("void *[]", [ffi.NULL] * w9), 1 << 20, cpu, ffi.new("gatednorm_comm **")),
        "world_size:")
    err(lib.gatednorm_comm_buffer_size(2, 1024, ffi.NULL), "bytes:")
    assert lib.gatednorm_comm_buffer_size(2, 1000, nb) == 0
    size = int(nb[0])
    pp, h = ffi.new("void **"), ffi.new("uint8_t[64]")
    err(lib.gatednorm_comm_buffer_alloc(cpu, 100, pp, h), "bytes:")
    err(lib.gatednorm_comm_buffer_open(cpu, ffi.new("uint8_t[64]", b"nonsense"), pp), "handle:")
    err(lib.gatednorm_comm_buffer_open(cpu, ffi.new("uint8_t[64]", b"/gatednorm.no.such"), pp), "handle:")
    bufs = []
    for _ in range(2):
        assert lib.gatednorm_comm_buffer_alloc(cpu, size, pp, h) == 0
        bufs.append(pp[0])
    # the handle opens the same segment: a write through one mapping shows in the other
    assert lib.gatednorm_comm_buffer_open(cpu, h, pp) == 0
    ffi.cast("uint8_t *", bufs[1])[5000] = 77
    assert ffi.cast("uint8_t *", pp[0])[5000] == 77
    assert lib.gatednorm_comm_buffer_close(cpu, pp[0]) == 0
    cp = ffi.new("gatednorm_comm **")
    arr = ffi.new("void *[]", bufs)
    err(lib.gatednorm_comm_create(2, 2, arr, size, cpu, cp), "rank:")
    err(lib.gatednorm_comm_create(0, 2, ffi.new("void *[]", [bufs[0], bufs[0]]), size, cpu, cp), "buffers[1]:")
    err(lib.gatednorm_comm_create(0, 2, arr, size + 256, cpu, cp), "buffers[0]:")
    err(lib.gatednorm_comm_create(0, 2, ffi.new("void *[]", [bufs[0], ffi.NULL]), size, cpu, cp), "buffers[1]:")
    assert lib.gatednorm_comm_create(0, 2, arr, size, cpu, cp) == 0
    mb = ffi.new("size_t *")
    assert lib.gatednorm_comm_max_input_bytes(cp[0], mb) == 0 and mb[0] >= 1000
    x = ffi.new("gatednorm_tensor *")
    err(lib.gatednorm_allreduce_add_rmsnorm(ffi.NULL, x, ffi.NULL, x, ffi.NULL, x, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL), "comm:")
    err(lib.gatednorm_comm_set_algorithm(ffi.NULL, 0), "comm:")
    for v in (-1, 3, (1 << 31) - 1, -(1 << 31)):
        err(lib.gatednorm_comm_set_algorithm(cp[0], v), "algorithm:")
        assert ("got %d" % v) in ffi.string(lib.gatednorm_last_error()).decode()
    for v in (lib.GATEDNORM_ALLREDUCE_ALGORITHM_AUTO, lib.GATEDNORM_ALLREDUCE_ALGORITHM_ONE_SHOT, lib.GATEDNORM_ALLREDUCE_ALGORITHM_TWO_SHOT):
        assert lib.gatednorm_comm_set_algorithm(cp[0], v) == 0
    assert lib.gatednorm_comm_destroy(cp[0]) == 0
    for b in bufs:
        assert lib.gatednorm_comm_buffer_free(cpu, b) == 0


def test_c_allreduce_size_limit_and_pdl_at_the_bound():
    """On a one-rank CPU comm: x of the rank's slot + 2 bytes (the bound itself: accepting it
    wrote 2 bytes into the next slot) is refused naming x, one that fits is taken; params.pdl
    = 1 (no stream ordering for the flag protocol) is refused by name."""
    from gatednorm import _ffi
    from gatednorm._ffi import ffi
    from gatednorm.testing import host_descriptor as desc

    lib = _ffi.lib()
    cpu = ffi.new("gatednorm_device *", {"device_type": 1, "device_id": 0})[0]
    nb = ffi.new("size_t *")
    assert lib.gatednorm_comm_buffer_size(1, 1000, nb) == 0
    pp, h = ffi.new("void **"), ffi.new("uint8_t[64]")
    assert lib.gatednorm_comm_buffer_alloc(cpu, nb[0], pp, h) == 0
    cp = ffi.new("gatednorm_comm **")
    assert lib.gatednorm_comm_create(0, 1, ffi.new("void *[]", [pp[0]]), nb[0], cpu, cp) == 0
    mb = ffi.new("size_t *")
    assert lib.gatednorm_comm_max_input_bytes(cp[0], mb) == 0
    limit = int(mb[0])

    def call(tokens, hidden, pdl=0):
        x = np.full(tokens * hidden, 0x3f80, np.uint16)  # bf16 ones
        w = np.ones(hidden, np.float32)
        y = np.full(tokens * hidden, 0x7fc0, np.uint16)
        p = ffi.new("gatednorm_add_rmsnorm_params *")
        assert lib.gatednorm_add_rmsnorm_params_init(p, ffi.sizeof(p[0])) == 0
        p.pdl = pdl
        st = lib.gatednorm_allreduce_add_rmsnorm(cp[0], desc(x.ctypes.data, (tokens, hidden), (hidden, 1), 4, 16), ffi.NULL,
                                                 desc(w.ctypes.data, (hidden,), (1,)), ffi.NULL,
                                                 desc(y.ctypes.data, (tokens, hidden), (hidden, 1), 4, 16), ffi.NULL, ffi.NULL,
                                                 p, ffi.NULL)
        return st, ffi.string(lib.gatednorm_last_error()).decode(), y

    try:
        st, msg, y = call(limit // 2 + 1, 1)
        assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("x:"), msg
        assert (y == 0x7fc0).all()
        st, msg, y = call(limit // 2, 1)
        assert st == 0, msg
        assert (y == 0x3f80).all()  # one rank: x itself, normalized per token of one element (weight 1)
        st, msg, y = call(2, 8, pdl=1)
        assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("params.pdl:"), msg
        assert (y == 0x7fc0).all()
    finally:
        assert lib.gatednorm_comm_destroy(cp[0]) == 0
        assert lib.gatednorm_comm_buffer_free(cpu, pp[0]) == 0


# A C caller's comm for groups[rank] (a CPU AllReduceGroup.in_process list), built over
# `order` (indices into the group's buffers) for `rank` of `world`, in place of the group's
# own; the comm pointer is returned and swap_back(groups, rank, comm) restores the group's.
# Source text: the in-process tests exec it, the subprocess scripts begin with it.
_COMM_SWAP = r"""
from gatednorm import _ffi as _swap_ffi
from gatednorm.allreduce import _CommEntry as _SwapEntry
def swap_in_comm(groups, rank, world, order, algorithm=None):
    lib, ffi = _swap_ffi.lib(), _swap_ffi.ffi
    bufs = groups[0]._buffers.buffers
    cpu = ffi.new("gatednorm_device *", {"device_type": lib.GATEDNORM_DEVICE_TYPE_CPU, "device_id": 0})[0]
    cp = ffi.new("gatednorm_comm **")
    assert lib.gatednorm_comm_create(rank, world, ffi.new("void *[]", [bufs[i] for i in order]), groups[0].buffer_bytes,
                                     cpu, cp) == 0
    if algorithm is not None:
        assert lib.gatednorm_comm_set_algorithm(cp[0], algorithm) == 0
    g = groups[rank]
    g._swapped_out = g._comm
    g._comm, g._entry = cp[0], _SwapEntry(cp[0])
    return cp[0]
def swap_back(groups, rank, comm):
    g = groups[rank]
    g._comm, g._entry = g._swapped_out, _SwapEntry(g._swapped_out)
    _swap_ffi.lib().gatednorm_comm_destroy(comm)
"""
exec(_COMM_SWAP)


def test_buffers_out_of_rank_order_are_refused():
    """A C caller's buffer list out of rank order (rank 2 passing [B, A, C]) paired the wrong
    partials without a word (review); each comm now claims its own buffer for its rank and a
    call checks every peer's claim: rank 2's call names buffers[0], and the comm is unusable."""
    W = 3
    groups = AllReduceGroup.in_process(W, "cpu", max_tokens=4, hidden=64, dtype="float32")
    comm = swap_in_comm(groups, 2, W, [1, 0, 2])
    errs = [None] * W

    def body(r):
        try:
            groups[r].add_rmsnorm(np.ones((2, 64), np.float32), np.zeros((2, 64), np.float32), np.ones(64, np.float32))
        except GatedNormError as e:
            errs[r] = str(e)

    in_threads(W, body)
    assert errs[2] and "buffers[0]: rank 2's list puts there the buffer of another rank" in errs[2], errs
    with pytest.raises(GatedNormError, match="unusable"):
        groups[0].check()
    swap_back(groups, 2, comm)


def test_ranks_of_other_world_sizes_fail_together():
    """A C caller's rank built for W = 2 among ranks built for W = 3 summed two partials while
    they summed three, and every rank reported success (a review, session 45): the CPU call's
    signature holds the world size (the GPU's tag did), so every rank fails naming both,
    and nothing is written."""
    W, H = 3, 64
    groups = AllReduceGroup.in_process(W, "cpu", max_tokens=4, hidden=H, dtype="float32", algorithm="one_shot")
    comm = swap_in_comm(groups, 0, 2, [0, 1])
    errs, kept = [None] * W, [None] * W

    def body(r):
        res = np.zeros((2, H), np.float32)
        try:
            groups[r].add_rmsnorm(np.full((2, H), r + 1.0, np.float32), res, np.ones(H, np.float32))
        except GatedNormError as e:
            errs[r] = str(e)
        kept[r] = not res.any()

    try:
        in_threads(W, body)
        # rank 0 (W = 2) meets rank 1's signature itself; ranks 1 and 2 may find it first or
        # stop on rank 0's give-up (its cause in their message), or be refused at entry
        assert errs[0] and "world 2) meets rank 1's call 1" in errs[0] and "world 3" in errs[0], errs
        assert all(e and ("world 2" in e or "out of step" in e) for e in errs), errs
        assert kept == [True] * W, kept
        for g in groups:  # rank 0's mark names the cause (it met rank 1's signature)
            with pytest.raises(InvalidArgumentError, match="unusable: rank 0 at its call 1 found the ranks out of step at rank 1 "):
                g.check()
    finally:
        swap_back(groups, 0, comm)


_CPU_GIVE_UP = _COMM_SWAP + r"""
import sys, threading, time
import numpy as np
from gatednorm import AllReduceGroup, GatedNormError, _ffi
W, H = 3, 64
groups = AllReduceGroup.in_process(W, "cpu", max_tokens=4, hidden=H, dtype="float32", algorithm="two_shot")
# the root rank's list out of rank order (two of the others swapped): it fails its claim
# check at once; the other ranks (lists right) pass theirs, sum their shares and wait for
# its reduced share
root = int(sys.argv[1])
swap_in_comm(groups, root, W, [1, 0, 2] if root == 2 else [0, 2, 1], _ffi.lib().GATEDNORM_ALLREDUCE_ALGORITHM_TWO_SHOT)
out = [None] * W
def body(r):
    t0 = time.perf_counter()
    try:
        groups[r].add_rmsnorm(np.ones((2, H), np.float32), np.zeros((2, H), np.float32), np.ones(H, np.float32))
        msg = None
    except GatedNormError as e:
        msg = str(e)
    out[r] = (time.perf_counter() - t0, msg)
ts = [threading.Thread(target=body, args=(r,)) for r in range(W)]
for t in ts: t.start()
for t in ts: t.join()
print(repr(out))
"""


@pytest.mark.parametrize("root", [0, 2])
def test_a_cpu_rank_that_gives_up_stops_its_peers_at_once(root):
    """Two-shot, three ranks: the root rank fails its check (its buffer list out of rank order)
    while the others, whose checks pass, wait for its reduced share.  They waited the whole
    GATEDNORM_COMM_TIMEOUT_S (600 s by default), then named the wrong cause (a review, session
    45); a waiting rank now polls its peers' give-up marks and stops at once, naming the root
    and what it found, with its status (calls out of step: INVALID_ARGUMENT), also where it
    meets another waiting rank's mark first (root 2: rank 0 scans rank 1 before it)."""
    env = dict(os.environ, GATEDNORM_COMM_TIMEOUT_S="60")
    out = subprocess.run([sys.executable, "-c", _CPU_GIVE_UP, str(root)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    res = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert res[root][1] and "rank %d's list puts there the buffer of another rank" % root in res[root][1], res
    for r in {0, 1, 2} - {root}:
        elapsed, msg = res[r]
        assert msg and "rank %d had given up on it (it found the ranks out of step" % root in msg, res
        assert msg.endswith("[invalid argument]"), msg
        assert elapsed < 10.0, res


def test_check_after_a_give_up_reports_the_cause_not_the_echo():
    """After the root-at-rank-2 give-up above, every rank's check() (and so every later call)
    reports the rank that found the cause, what it found and its status (calls out of step:
    InvalidArgumentError), not an echo of it (a mutation review, session 45)."""
    script = _CPU_GIVE_UP.replace("print(repr(out))", """
chk = []
for g in groups:
    try:
        g.check()
        chk.append(None)
    except GatedNormError as e:
        chk.append((type(e).__name__, str(e)))
print(repr(out))
print(repr(chk))""")
    env = dict(os.environ, GATEDNORM_COMM_TIMEOUT_S="60")
    out = subprocess.run([sys.executable, "-c", script, "2"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    chk = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    for c in chk:
        assert c and c[0] == "InvalidArgumentError", chk
        assert "rank 2 at its call 1 found the ranks out of step at rank 0" in c[1] and c[1].endswith("[invalid argument]"), chk


def test_check_after_a_timeout_keeps_its_cause_and_status():
    """A rank that timed out: check() names the peer it waited for and returns DEVICE_ERROR
    (a plain GatedNormError), not "out of step" (INVALID_ARGUMENT) as before session 45."""
    script = TIMEOUT_SCRIPT + """
try:
    groups[0].check()
except gatednorm.GatedNormError as e:
    print("CHECK", type(e).__name__, e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, GATEDNORM_COMM_TIMEOUT_S="0.5"))
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("CHECK")]
    assert lines, out.stdout + out.stderr
    assert lines[0].startswith("CHECK GatedNormError ") and "waited 0.5 s for rank 1" in lines[0], lines
    assert lines[0].endswith("[device error]"), lines


def test_a_mark_of_a_later_call_does_not_fail_this_one():
    """A peer's give-up mark at a later epoch (its next call) is left to that call's entry
    check: a call whose data all arrive completes (a review, session 45: a healthy call failed
    for a peer's next one).  The mark is written into rank 1's header by hand while rank 0
    waits, and cleared before rank 1 calls."""
    import ctypes

    from gatednorm._ffi import ffi

    g = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=64, dtype="float32", algorithm="one_shot")
    mark = ctypes.c_uint64.from_address(int(ffi.cast("uintptr_t", g[0]._buffers.buffers[1])) + 128)
    errs = [None, None]

    def call(r):
        try:
            g[r].add_rmsnorm(np.ones((2, 64), np.float32), np.zeros((2, 64), np.float32), np.ones(64, np.float32))
        except GatedNormError as e:
            errs[r] = str(e)

    t = threading.Thread(target=call, args=(0,))
    t.start()
    time.sleep(0.3)  # rank 0 waits for rank 1's partial of call 1
    mark.value = 1000 | (1 << 48)  # "rank 1 found the ranks out of step at its call 1000"
    time.sleep(0.1)  # ~10 of rank 0's polls
    mark.value = 0
    call(1)
    t.join()
    assert errs == [None, None], errs


@pytest.mark.parametrize("option", ["weight_offset", "eps"])
def test_signed_zeros_agree_across_ranks(option):
    """weight_offset (or eps) -0 on one rank and +0 on the other give the same results: the
    options hash takes them as one (they were "differ in their options"; eps: session 46)."""
    g = AllReduceGroup.in_process(2, "cpu", max_tokens=4, hidden=64, dtype="float32", algorithm="one_shot")
    outs = [None, None]

    def body(r):
        outs[r] = g[r].add_rmsnorm(np.full((2, 64), 1.0 + r, np.float32), np.zeros((2, 64), np.float32),
                                   np.ones(64, np.float32), **{option: -0.0 if r else 0.0})

    in_threads(2, body)
    assert np.array_equal(outs[0].y, outs[1].y)


def test_gpu_comm_create_checks_buffer_headers(requires_gpu):
    """A GPU comm reads each buffer's header (magic, size) as the CPU one does: a buffer not
    from gatednorm_comm_buffer_alloc, or buffer_bytes larger than the buffers (or ranks
    disagreeing on it), is refused by name; the exchange wrote and read past the buffers."""
    from gatednorm import _ffi
    from gatednorm._ffi import ffi

    lib = _ffi.lib()
    dev = ffi.new("gatednorm_device *", {"device_type": gatednorm._runtime.gpu_device_type(), "device_id": 0})[0]

    def err(st, match):
        assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT, st
        msg = ffi.string(lib.gatednorm_last_error()).decode()
        assert msg.startswith(match), msg
        return msg

    nb = ffi.new("size_t *")
    assert lib.gatednorm_comm_buffer_size(2, 1 << 20, nb) == 0
    small = int(nb[0])
    assert lib.gatednorm_comm_buffer_size(2, 64 << 20, nb) == 0
    large = int(nb[0])
    pp, h = ffi.new("void **"), ffi.new("uint8_t[64]")
    bufs = []
    for _ in range(2):
        assert lib.gatednorm_comm_buffer_alloc(dev, small, pp, h) == 0
        bufs.append(pp[0])
    plain = gatednorm.DeviceArray.from_numpy(np.full(small + 256, 0x47, np.uint8), device="gpu:0")  # no header
    plain_at = (plain.data_ptr + 255) // 256 * 256  # aligned as comm buffers must be
    cp = ffi.new("gatednorm_comm **")
    try:
        arr = ffi.new("void *[]", bufs)
        msg = err(lib.gatednorm_comm_create(0, 2, arr, large, dev, cp), "buffers[0]:")
        assert "%d bytes, but buffer_bytes is %d" % (small, large) in msg
        foreign = ffi.new("void *[]", [bufs[0], ffi.cast("void *", plain_at)])
        err(lib.gatednorm_comm_create(0, 2, foreign, small, dev, cp), "buffers[1]: not a GPU comm buffer")
        assert lib.gatednorm_comm_create(0, 2, arr, small, dev, cp) == 0
        assert lib.gatednorm_comm_destroy(cp[0]) == 0
    finally:
        for b in bufs:
            assert lib.gatednorm_comm_buffer_free(dev, b) == 0


def test_cpu_buffer_larger_than_dev_shm_is_refused_not_sigbus(tmp_path):
    """A comm buffer /dev/shm has no room for was created (ftruncate reserves nothing) and the
    first write past the free space killed the process with SIGBUS (review): refused at alloc,
    naming bytes. Run under a private 64 MiB /dev/shm (a container's default), which needs a
    mount namespace (root and unshare)."""
    import shutil

    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a private, small /dev/shm")
    script = tmp_path / "small_shm.py"
    script.write_text(textwrap.dedent("""
        from gatednorm import AllReduceGroup, GatedNormError
        try:
            AllReduceGroup.in_process(1, "cpu", max_tokens=4096, hidden=4096, dtype="bfloat16")
            print("built")
        except GatedNormError as e:
            print("refused:", e)
    """))
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -m is not permitted here: %s" % probe.stderr.decode(errors="replace").strip())
    cmd = "mount -t tmpfs -o size=64m tmpfs /dev/shm && exec %s %s" % (sys.executable, script)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "refused: comm_buffer_alloc: bytes: shared memory (/dev/shm) has no room" in proc.stdout, proc.stdout


def test_group_sizes_and_exchange_items_are_named():
    """A review of 2026-12-07: max_tokens x hidden under 2^40 elements but over 2^40 bytes (fp32,
    bf16) was refused by the library naming its own "max_input_bytes", no argument of the call;
    an exchange returning ints had bytes(n) turn each into n zero bytes, refused as a rank
    "with world_size 0", and one returning lists of ints packed them as bytes."""
    for dtype, isz in (("float32", 4), ("bfloat16", 2)):
        mt, hid = 1 << 21, (1 << 40) // (1 << 21) // isz + 1
        assert mt * hid < 1 << 40  # under the element bound: the bytes bound is the one that must name it
        for make in (lambda: AllReduceGroup(0, 1, lambda b: [b], max_tokens=mt, hidden=hid, dtype=dtype),
                     lambda: AllReduceGroup.in_process(1, "cpu", max_tokens=mt, hidden=hid, dtype=dtype)):
            with pytest.raises(gatednorm.InvalidArgumentError, match="max_tokens: .* past the 2\\^40 bytes"):
                make()
    with pytest.raises(gatednorm.InvalidArgumentError, match="exchange: must return a list of bytes"):
        AllReduceGroup(0, 2, lambda b: [len(b), len(b)], max_tokens=4, hidden=H)
    with pytest.raises(gatednorm.InvalidArgumentError, match="exchange: must return a list of bytes"):
        AllReduceGroup(0, 1, lambda b: [list(b)], max_tokens=4, hidden=H)
    for ok in (bytes, bytearray, memoryview):  # bytes-like items still do
        with AllReduceGroup(0, 1, lambda b: [ok(b)], max_tokens=4, hidden=H, dtype="float32") as g:
            out = g.add_rmsnorm(np.ones((2, H), np.float32), np.zeros((2, H), np.float32), np.ones(H, np.float32))
            assert np.all(out.residual == 1.0)

