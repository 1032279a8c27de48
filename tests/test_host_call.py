"""The numpy host call (issue #11): descriptors reused across calls only for the address,
shape and dtype read in the same call, and the C entry's contiguous host fast path giving
what the full checks give.  CPU only."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import gatednorm
from gatednorm import _dtypes, reference

BF16 = _dtypes.bfloat16
F32 = np.dtype(np.float32)


def _inputs(rng, shape, dt=F32):
    x = rng.standard_normal(shape, dtype=np.float32).astype(dt)
    z = rng.standard_normal(shape, dtype=np.float32).astype(dt)
    w = (1.0 + 0.1 * rng.standard_normal(shape[-1])).astype(dt)
    return x, z, w


def _check(x, z, w, out):
    res = gatednorm.rmsnorm_gated(x, z, w, out=out)
    assert res is out
    cmp = reference.compare(out, reference.rmsnorm_gated(x, z, w), out.dtype)
    assert cmp.ok, cmp


def test_reshaped_in_place(rng):
    x, z, w = _inputs(rng, (1, 1, 8))
    out = np.full(x.shape, np.nan, F32)
    _check(x, z, w, out)
    for a in (x, z, out):  # same memory, new shape: the cached descriptor must not be used
        a.shape = (2, 4)
    w4 = np.ascontiguousarray(w[:4])
    out[...] = np.nan
    _check(x, z, w4, out)
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )weight: "):
        gatednorm.rmsnorm_gated(x, z, w, out=out)


def test_dtype_changed_at_same_address(rng):
    x, z, w = _inputs(rng, (1, 1, 8))
    out = np.full(x.shape, np.nan, F32)
    _check(x, z, w, out)
    xb = x.view(np.uint32)  # the same address, another dtype
    assert xb.__array_interface__["data"][0] == x.__array_interface__["data"][0]
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )x: "):
        gatednorm.rmsnorm_gated(xb, z, w, out=out)
    xb16, zb16, wb16 = _inputs(rng, (1, 1, 8), BF16)
    _check(xb16, zb16, wb16, out)
    xh = xb16.view(np.float16)  # same address and shape, fp16: finite values of other bits
    assert xh.__array_interface__["data"][0] == xb16.__array_interface__["data"][0]
    out[...] = np.nan
    _check(xh, zb16, wb16, out)


def test_resized_and_recycled(rng):
    x, z, w = _inputs(rng, (4, 16))
    out = np.full(x.shape, np.nan, F32)
    _check(x, z, w, out)
    out.resize((64, 16), refcheck=False)  # new memory, maybe the old address for another array
    out[...] = np.nan
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )out: "):
        gatednorm.rmsnorm_gated(x, z, w, out=out)
    out = out[:4].copy()
    _check(x, z, w, out)
    for _ in range(50):  # arrays dying and new ones (ids and addresses reused) of other shapes
        del x, z, out
        gc.collect()
        n = int(rng.integers(1, 6))
        x, z, w = _inputs(rng, (n, 16), BF16)
        out = np.full(x.shape, np.nan, BF16)
        _check(x, z, w, out)


def test_no_buffer_pinned_after_the_call(rng):
    x, z, w = _inputs(rng, (2, 8))
    out = np.full(x.shape, np.nan, F32)
    _check(x, z, w, out)
    out.resize((4, 8))  # refcheck on: fails if the call left an export of out alive


def test_errors_write_nothing(rng):
    x, z, w = _inputs(rng, (3, 8))
    out = np.full(x.shape, np.nan, F32)
    _check(x, z, w, out)
    out[...] = np.nan
    ro = out.copy()
    ro.flags.writeable = False
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )out: "):
        gatednorm.rmsnorm_gated(x, z, w, out=ro)
    big = np.zeros(48, F32)
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )out: overlaps x"):
        gatednorm.rmsnorm_gated(big[:24].reshape(3, 8), z, w, out=big[8:32].reshape(3, 8))
    assert not big[24:].any() and not big[:8].any()
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )out: overlaps weight"):
        gatednorm.rmsnorm_gated(x, z, big[:8], out=big[:24].reshape(3, 8))
    assert not big.any()
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )z: "):
        gatednorm.rmsnorm_gated(x, z[:2], w, out=out)
    assert np.isnan(out).all()


def test_in_place_and_strided(rng):
    x, z, w = _inputs(rng, (3, 8), BF16)
    ref = reference.rmsnorm_gated(x, z, w)
    xc = x.copy()
    gatednorm.rmsnorm_gated(xc, z, w, out=xc)
    assert reference.compare(xc, ref, BF16).ok
    zc = z.copy()
    gatednorm.rmsnorm_gated(x, zc, w, out=zc)
    assert reference.compare(zc, ref, BF16).ok
    wide = np.concatenate([z, z], axis=1)[:, :8]  # rows 16 apart: the strided path
    out = np.full(x.shape, np.nan, BF16)
    gatednorm.rmsnorm_gated(x, wide, w, out=out)
    assert reference.compare(out, ref, BF16).ok


def test_output_made_without_out(rng):
    """Without out=: the output is made like x (numpy, x's shape, out_dtype or x's dtype) on
    the all-numpy path and on the general path (a strided z), and an argument's error still
    names it."""
    x, z, w = _inputs(rng, (3, 8), BF16)
    ref = reference.rmsnorm_gated(x, z, w)
    for zz in (z, np.concatenate([z, z], axis=1)[:, :8]):  # contiguous z, then rows 16 apart
        y = gatednorm.rmsnorm_gated(x, zz, w)
        assert type(y) is np.ndarray and y.shape == x.shape and y.dtype == BF16
        assert reference.compare(y, ref, BF16).ok
        y32 = gatednorm.rmsnorm_gated(x, zz, w, out_dtype=np.float32)
        assert y32.dtype == F32 and reference.compare(y32, ref, F32).ok
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )weight: "):
        gatednorm.rmsnorm_gated(x, z, w[:4])
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )z: "):
        gatednorm.rmsnorm_gated(x, z[:2], w)


def test_packed_entry_is_the_same_call(rng):
    """gatednorm_rmsnorm_gated_packed: the same checks and bits as gatednorm_rmsnorm_gated,
    its arguments in one struct; a NULL struct is refused naming args."""
    from gatednorm import ops
    from gatednorm._ffi import ffi

    lib = gatednorm._ffi.lib()
    assert lib.gatednorm_rmsnorm_gated_packed(ffi.NULL) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert ffi.string(lib.gatednorm_last_error()).decode().startswith("args: ")
    x, z, w = _inputs(rng, (3, 8), BF16)
    outs = [np.full(x.shape, np.nan, BF16) for _ in range(2)]
    prm = ops._RMSNORM_GATED.params(eps=1e-5)
    from gatednorm import _call

    hold = []
    t = [_call.convert(a, n, 0, hold, n == "out") for a, n in ((x, "x"), (z, "z"), (w, "weight"))]
    for k, out in enumerate(outs):
        to = _call.convert(out, "out", 0, hold, True)
        if k:
            st = lib.gatednorm_rmsnorm_gated_packed(ffi.new("gatednorm_rmsnorm_gated_args *", (*t, to, prm, ffi.NULL)))
        else:
            st = lib.gatednorm_rmsnorm_gated(*t, to, prm, ffi.NULL)
        assert st == 0
    assert np.array_equal(outs[0].view(np.uint16), outs[1].view(np.uint16))
    bad = _call.convert(w[:4], "weight", 0, hold, False)
    st = lib.gatednorm_rmsnorm_gated_packed(ffi.new("gatednorm_rmsnorm_gated_args *", (t[0], t[1], bad, to, prm, ffi.NULL)))
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert ffi.string(lib.gatednorm_last_error()).decode().startswith("weight: ")
    _call.release(hold)


def test_packed_cache_after_repeats(rng):
    """The all-numpy out= path's packed structs, one per (addresses, params): made the fourth
    time the same arguments come (_call._PACK_AFTER; before, the six-argument call, and only a
    count kept), then used (the packed entry called); another eps on the same arrays is
    another entry; results equal the reference throughout."""
    from gatednorm import _call, ops

    entry = ops._RMSNORM_GATED
    cache, seen = entry._packed_cache, entry._packed_seen
    x, z, w = _inputs(rng, (2, 8), BF16)
    out = np.full(x.shape, np.nan, BF16)
    gatednorm.rmsnorm_gated(x, z, w, out=out)  # the entry loaded (PFN bound) before counting
    cache.clear()
    seen.clear()
    packed_calls = []
    pfn = entry._env["PFN"]
    entry._env["PFN"] = lambda args: packed_calls.append(1) or pfn(args)
    try:
        assert _call._PACK_AFTER == 4
        for eps, entries in zip([1e-6] * 5 + [1e-1] * 5, (0, 0, 0, 1, 1, 1, 1, 1, 2, 2)):
            out[...] = np.nan
            assert gatednorm.rmsnorm_gated(x, z, w, eps=eps, out=out) is out
            assert reference.compare(out, reference.rmsnorm_gated(x, z, w, eps=eps), BF16).ok
            assert len(cache) == entries, eps  # made at each eps's fourth call
        assert len(packed_calls) == 2  # each eps's fifth call
    finally:
        entry._env["PFN"] = pfn
