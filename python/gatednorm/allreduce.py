"""Fused all-reduce + add-RMSNorm (+ FP8 per-group quant) for tensor parallelism on one host
(docs/ops.md §5, docs/allreduce.md).

Each rank (one process per GPU, or per CPU worker) builds an ``AllReduceGroup``; ``exchange``
is any callable that all-gathers bytes among the ranks: ``exchange(b: bytes) -> list[bytes]``,
the list ordered by rank (``torch.distributed.all_gather_object`` behind a lambda, a Pipe, a
file, ...).  Then ``group.add_rmsnorm(x_partial, residual, weight, ...)`` on every rank gives,
bit for bit on every rank::

    x = ((x_0 + x_1) + ...) + x_{W-1}     fp32, rank order, rounded to x's dtype
    gatednorm.add_rmsnorm(x, residual, weight, ...)

``AllReduceGroup.in_process(world_size, device)`` builds the W groups of ranks that share one
address space (threads on the CPU, streams of one process on one GPU): no handles exchanged.

``algorithm`` ("auto", "one_shot", "two_shot"; gatednorm_comm_set_algorithm) picks how the sum
is exchanged: one-shot (every rank reads every peer's whole partial) or two-shot
(reduce-scatter, then all-gather); the outputs are the same bits either way.  "auto" takes
two-shot from 4 ranks and more than 16 tokens, a provisional rule (docs/allreduce.md).
"""

from __future__ import annotations

import struct
import threading
import weakref

from . import _call, _dtypes, _ffi, _runtime
from ._ffi import argument_error, check, ffi
from .ops_fp8 import _ADD_ENTRY, _norm

__all__ = ["AllReduceGroup"]

_HANDLE = 64
_MAX_WORLD = 8
_HEADER = struct.Struct("<iiQqqi")  # rank, world_size, buffer bytes, max_tokens, hidden, dtype bytes: checked against every peer's
# gatednorm_allreduce_algorithm's values by name.
_ALGORITHMS = {"auto": 0, "one_shot": 1, "two_shot": 2}


class _CommEntry(_call.Entry):
    """gatednorm_allreduce_add_rmsnorm with this group's comm bound as its first argument."""

    def __init__(self, comm, outputs=("residual", "residual_out", "y_out", "q", "scales"), counter=None):
        self._comm = comm
        self._counter = counter or [0]  # shared with the with_outputs variants: one count a comm
        super().__init__("gatednorm_allreduce_add_rmsnorm", "gatednorm_add_rmsnorm_params", _ADD_ENTRY.names,
                         outputs=outputs, c_names=_ADD_ENTRY.c_names, params_keywords=True)

    def _variant(self, outputs):
        return _CommEntry(self._comm, outputs, self._counter)

    def _bind(self, raw):
        comm, counter = self._comm, self._counter

        def fn(*a):
            counter[0] += 1  # what the library counted: add_rmsnorm pairs its own refusals with it
            return raw(comm, *a)

        return fn

    @property
    def c_calls(self):
        return self._counter[0]


def _release(comm, device, own, peers):
    lib = _ffi.lib()
    if comm is not None:
        lib.gatednorm_comm_destroy(comm)
    for p in peers:
        lib.gatednorm_comm_buffer_close(device, p)
    if own is not None:
        lib.gatednorm_comm_buffer_free(device, own)


def _algorithm(algorithm):
    if not isinstance(algorithm, str) or algorithm not in _ALGORITHMS:
        raise argument_error("algorithm: expected one of %s, got %r" % (", ".join(repr(a) for a in _ALGORITHMS), algorithm))
    return _ALGORITHMS[algorithm]


def _exchanged(items, w):
    """The list an ``exchange`` call returned, checked: world_size items of bytes."""
    try:
        # memoryview, not bytes(): bytes(5) is five zero bytes and bytes([1, 2]) packs a list of
        # ints, so an exchange returning ints or lists passed as a rank's item (review)
        items = [memoryview(b).tobytes() for b in items]
    except TypeError as e:
        raise argument_error("exchange: must return a list of bytes objects, one a rank: %s" % e) from None
    if len(items) != w:
        raise argument_error("exchange: returned %d items, expected world_size %d (do all ranks pass the same "
                             "world_size?)" % (len(items), w))
    return items


def _sizes(max_tokens, hidden, dtype):
    """(max_tokens, hidden, dtype's bytes), checked."""
    mt = _call.integer("max_tokens", max_tokens)
    h = _call.integer("hidden", hidden)
    if mt < 1:
        raise argument_error("max_tokens: expected >= 1, got %d" % mt)
    if h < 1:
        raise argument_error("hidden: expected >= 1, got %d" % h)
    if mt * h >= 1 << 40:  # 2^40 elements (a terabyte of bf16) is past any one host's buffers
        raise argument_error("max_tokens: %d x hidden %d is past the 2^40 elements a communicator can size" % (mt, h))
    dt = _call.dtype_arg(dtype, "dtype")
    if dt not in (_dtypes.bfloat16, _dtypes.float16, _dtypes.float32):
        raise argument_error("dtype: %s; the activations must be bf16, fp16 or fp32" % dt)
    if mt * h * dt.itemsize > 1 << 40:  # gatednorm_comm_buffer_size's bound, named by this call's argument (review)
        raise argument_error("max_tokens: %d x hidden %d of %s is %d bytes, past the 2^40 bytes a communicator can size"
                             % (mt, h, dt, mt * h * dt.itemsize))
    return mt, h, dt.itemsize


class AllReduceGroup:
    """One rank's communicator for ``add_rmsnorm`` over the sum of every rank's partial.

    Args:
        rank, world_size: this rank and the number of ranks (1 .. 8).
        exchange: ``callable(bytes) -> list[bytes]`` all-gathering among the ranks (rank order);
            called twice here (handles, then a barrier), never by add_rmsnorm.
        device: "cpu" (POSIX shared memory between processes) or a GPU ("cuda:N"; IPC handles).
        max_tokens, hidden, dtype: the largest x of one call (max_tokens * hidden elements of
            dtype); larger calls are refused.  Every rank must pass the same.
        algorithm: "auto" (default), "one_shot" or "two_shot" (see the module docstring).  Every
            rank must pass the same (the barrier exchange checks it; a C caller's ranks on
            different algorithms are found out of step at their first call).
    """

    def __init__(self, rank, world_size, exchange, device="cpu", *, max_tokens=128, hidden=8192, dtype="bfloat16",
                 algorithm="auto", _shared=None):
        alg = _algorithm(algorithm)
        w = _call.integer("world_size", world_size)
        r = _call.integer("rank", rank)
        if not 1 <= w <= _MAX_WORLD:
            raise argument_error("world_size: expected 1 .. %d, got %d" % (_MAX_WORLD, w))
        if not 0 <= r < w:
            raise argument_error("rank: expected 0 .. %d (world_size %d), got %d" % (w - 1, w, r))
        self.rank, self.world_size = r, w
        self._algorithm = algorithm
        lib = _ffi.lib()
        dt, did = _runtime.parse_device(device)
        self.device = (dt, did)
        dev = _runtime.make_device(dt, did)
        nbytes = ffi.new("size_t *")
        mt, hid, isz = _sizes(max_tokens, hidden, dtype)
        check(lib.gatednorm_comm_buffer_size(w, mt * hid * isz, nbytes), "comm_buffer_size")
        self.buffer_bytes = int(nbytes[0])
        own, peers, comm = None, [], None
        try:
            if _shared is not None:  # in_process: the W buffers already exist
                ptrs = _shared
            else:
                if not callable(exchange):
                    raise argument_error("exchange: expected a callable bytes -> list[bytes], got %r" % type(exchange).__name__)
                pp = ffi.new("void **")
                handle = ffi.new("uint8_t[]", _HANDLE)
                check(lib.gatednorm_comm_buffer_alloc(dev, self.buffer_bytes, pp, handle), "comm_buffer_alloc")
                own = pp[0]
                mine = _HEADER.pack(r, w, self.buffer_bytes, mt, hid, isz) + bytes(ffi.buffer(handle, _HANDLE))
                items = _exchanged(exchange(mine), w)
                ptrs = []
                for i, b in enumerate(items):
                    if len(b) != _HEADER.size + _HANDLE:
                        raise argument_error("exchange: item %d has %d bytes, expected %d" % (i, len(b), _HEADER.size + _HANDLE))
                    pr, pw, pb, pmt, ph, pisz = _HEADER.unpack_from(b)
                    if pw != w:
                        raise argument_error("world_size: %d on rank %d, but rank %d has %d" % (w, r, pr, pw))
                    if pr != i:
                        raise argument_error("exchange: item %d came from rank %d (the list must be ordered by rank)" % (i, pr))
                    for what, mine_v, theirs in (("max_tokens", mt, pmt), ("hidden", hid, ph), ("dtype's bytes", isz, pisz)):
                        if mine_v != theirs:
                            raise argument_error("%s: %d on rank %d, but %d on rank %d (every rank must pass the same "
                                                 "max_tokens, hidden and dtype)" % (what, mine_v, r, theirs, i))
                    if pb != self.buffer_bytes:  # the same sizes give the same bytes: a different library
                        raise argument_error("exchange: rank %d sized its buffer %d bytes, rank %d %d (the same library "
                                             "on every rank?)" % (r, self.buffer_bytes, i, pb))
                    if i == r:
                        ptrs.append(own)
                        continue
                    h = ffi.new("uint8_t[]", b[_HEADER.size:])
                    check(lib.gatednorm_comm_buffer_open(dev, h, pp), "comm_buffer_open")
                    peers.append(pp[0])
                    ptrs.append(pp[0])
            arr = ffi.new("void *[]", list(ptrs))
            cp = ffi.new("gatednorm_comm **")
            check(lib.gatednorm_comm_create(r, w, arr, self.buffer_bytes, dev, cp), "comm_create")
            comm = cp[0]
            check(lib.gatednorm_comm_set_algorithm(comm, alg), "comm_set_algorithm")
            if _shared is None:
                # barrier: no rank frees its buffer before every peer has mapped it; it carries
                # each rank's algorithm, which must agree (every rank sees the same list, so all
                # raise together)
                mine = bytes([alg])
                items = _exchanged(exchange(mine), w)
                for i, b in enumerate(items):
                    if b != mine:
                        theirs = [k for k, v in _ALGORITHMS.items() if len(b) == 1 and b[0] == v]
                        raise argument_error("algorithm: %r on rank %d, but %s on rank %d (every rank must pass the same)"
                                             % (algorithm, r, repr(theirs[0]) if theirs else "barrier item %r" % b, i))
                # every peer has mapped this buffer: its name may go, so that from here on none
                # outlives the processes however they end (a killed process left its /dev/shm
                # segment; one killed during the exchanges above still does: docs/allreduce.md)
                check(lib.gatednorm_comm_buffer_unlink(dev, own), "comm_buffer_unlink")
        except BaseException:
            _release(comm, dev, own, peers)
            raise
        self._comm = comm
        self._entry = _CommEntry(comm)
        self._finalizer = weakref.finalize(self, _release, comm, dev, own, peers)
        self._in_use = threading.Lock()  # close() waits for a call in flight
        mb = ffi.new("size_t *")
        check(lib.gatednorm_comm_max_input_bytes(comm, mb), "comm_max_input_bytes")
        self.max_input_bytes = int(mb[0])

    @property
    def algorithm(self):
        """The algorithm this group was built with ("auto", "one_shot" or "two_shot")."""
        return self._algorithm

    @classmethod
    def in_process(cls, world_size, device="cpu", *, max_tokens=128, hidden=8192, dtype="bfloat16", algorithm="auto"):
        """The ``world_size`` groups of ranks that share this process's address space (threads
        on the CPU, streams on one GPU), over buffers allocated here (no IPC); every group with
        ``algorithm``."""
        _algorithm(algorithm)  # before anything is allocated
        w = _call.integer("world_size", world_size)
        if not 1 <= w <= _MAX_WORLD:
            raise argument_error("world_size: expected 1 .. %d, got %d" % (_MAX_WORLD, w))
        lib = _ffi.lib()  # parses the header too (make_device needs its types)
        dt, did = _runtime.parse_device(device)
        dev = _runtime.make_device(dt, did)
        nbytes = ffi.new("size_t *")
        mt, hid, isz = _sizes(max_tokens, hidden, dtype)
        check(lib.gatednorm_comm_buffer_size(w, mt * hid * isz, nbytes), "comm_buffer_size")
        bufs = []
        try:
            for _ in range(w):
                pp = ffi.new("void **")
                handle = ffi.new("uint8_t[]", _HANDLE)
                check(lib.gatednorm_comm_buffer_alloc(dev, int(nbytes[0]), pp, handle), "comm_buffer_alloc")
                bufs.append(pp[0])
                check(lib.gatednorm_comm_buffer_unlink(dev, pp[0]), "comm_buffer_unlink")  # no one opens it by name
            groups = [cls(r, w, None, (dt, did), max_tokens=max_tokens, hidden=hidden, dtype=dtype, algorithm=algorithm, _shared=bufs)
                      for r in range(w)]
        except BaseException:
            for b in bufs:
                lib.gatednorm_comm_buffer_free(dev, b)
            raise
        # The buffers go when the last group goes.
        holder = _BufferOwner(dev, bufs)
        for g in groups:
            g._buffers = holder
        return groups

    def check(self):
        """Raises GatedNormError if this rank's communicator is unusable: a CPU rank found the
        ranks out of step (InvalidArgumentError), waited past GATEDNORM_COMM_TIMEOUT_S (600 s
        by default), found a peer's process exited or a peer give up (the first cause,
        naming the ranks); a GPU
        exchange kernel found a peer's call out of step (docs/allreduce.md), waited that long
        for a peer, or saw a peer give up, and returned (that
        call's outputs, a residual updated in place, and those of calls made since, are not
        valid).  Every later call raises the same.  A GPU kernel's
        giving up is seen after it ran: check after synchronizing, e.g. after replaying a
        CUDA graph (whose replays check nothing)."""
        with self._in_use:
            if not self._finalizer.alive:
                raise argument_error("self: this AllReduceGroup is closed")
            check(_ffi.lib().gatednorm_comm_check(self._comm), "gatednorm_comm_check")

    def close(self, exchange=None):
        """Frees the communicator now (also done when the group is collected); waits for a
        call in flight on another thread (the comm must not be freed under it).

        On a GPU a peer's kernel may still read this rank's buffer after this rank's own last
        call returned: give ``exchange`` (the all-gather the group was built with, or any
        barrier among the ranks) and close() first waits for this GPU's work, then for every
        rank to reach this point, before it unmaps the peers' buffers and frees its own.
        Without it, close only once the ranks have met after their last calls."""
        with self._in_use:
            if exchange is not None and self._finalizer.alive:
                device_type, device_id = self.device
                if device_type != _ffi.lib().GATEDNORM_DEVICE_TYPE_CPU:
                    _runtime.device_synchronize(device_id)
                _exchanged(exchange(b"close"), self.world_size)
            self._finalizer()

    def add_rmsnorm(self, x, residual, weight, *, eps=1e-6, weight_offset=0.0, residual_out=None, y=True, y_dtype=None,
                    fp8=False, group_size=128, fp8_format="e4m3fn", fp8_max=None, amax_floor=1e-10, scale_format="fp32",
                    scale_layout="row", quantize_rounded=False, q=None, scales=None, y_out=None, stream=None):
        """gatednorm.add_rmsnorm of the sum of every rank's ``x`` (this rank's partial), with
        the same arguments and NormOutputs.  Every rank must call it with the same shapes and
        options; it returns (CPU) / its kernels finish (GPU) once every rank has called it."""
        with self._in_use:
            if not self._finalizer.alive:
                raise argument_error("self: this AllReduceGroup is closed")
            counted = self._entry.c_calls
            try:
                return _norm(x, residual, weight, eps, weight_offset, residual_out, y, y_dtype, fp8, group_size, fp8_format,
                             fp8_max, amax_floor, scale_format, scale_layout, quantize_rounded, q, scales, y_out, stream,
                             False, entry=self._entry)
            except BaseException:  # KeyboardInterrupt too: an uncounted refusal pairs the next call with the peers' last (review)
                if self._entry.c_calls == counted:
                    self._null_call()
                raise

    def _null_call(self):
        # A call refused before the library saw it, made to count there too (a call with no x,
        # refused and counted), or this rank's next call would meet the peers' current one and
        # be summed with it.  The caller holds _in_use and has seen the comm alive.
        n = _ffi.ffi.NULL
        _ffi.lib().gatednorm_allreduce_add_rmsnorm(self._comm, n, n, n, n, n, n, n, n, n)

    def _count_refused(self):
        """For callers that refuse a call before add_rmsnorm runs (gatednorm.torch_ops' ops):
        the refusal counts in the library as add_rmsnorm's own do."""
        with self._in_use:
            if self._finalizer.alive:
                self._null_call()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _BufferOwner:
    def __init__(self, dev, bufs):
        self.buffers = list(bufs)  # rank order; the tests read the flags in them (backend.h's layout)
        self._finalizer = weakref.finalize(self, _free_all, dev, list(bufs))


def _free_all(dev, bufs):
    lib = _ffi.lib()
    for b in bufs:
        lib.gatednorm_comm_buffer_free(dev, b)
