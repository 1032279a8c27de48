"""The numpy host call (issue #11): descriptors reused across calls only for the address,
shape and dtype read in the same call, and the C entry's contiguous host fast path giving
what the full checks give.  CPU only."""

from __future__ import annotations

import gc
import math

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


# ------------------------------------------------ the FP8 / add-RMSNorm ops' host paths
# Session 46: their numpy calls with None arguments (optional outputs, no residual) now take
# the numpy fast path of the call layer, and a call with every option but eps (and fp8) at its
# default takes one lookup instead of the option checks.  Both must be the checked call.

def _fresh(v):
    """v as a new object of the same value and type: an option passed so takes the checks
    (the fast paths test the defaults by identity)."""
    return float(repr(v)) if type(v) is float else "".join(list(v))


def _op_call(op, x, r, w, eps, slow):
    """One call of ``op`` on fresh NaN-poisoned outputs (and a copy of the residual): its
    outputs as a tuple of arrays.  ``slow`` passes amax_floor (and weight_offset) as fresh
    objects of the default values."""
    kw = {"amax_floor": _fresh(1e-10)} if slow else {}
    h = x.shape[-1]
    q = np.full(x.shape, np.nan, _dtypes.float8_e4m3fn)
    scales = np.full(x.shape[:-1] + (h // 128,), np.nan, np.float32)
    y = np.full(x.shape, np.nan, x.dtype)
    if op == "group_quant_fp8":
        return gatednorm.group_quant_fp8(x, q=q, scales=scales, **kw)
    if slow:
        kw["weight_offset"] = _fresh(0.0)
    if op == "rmsnorm_gated_fp8":
        xg, zg = x.reshape(x.shape[0], -1, 128), r.reshape(x.shape[0], -1, 128)
        return gatednorm.rmsnorm_gated_fp8(xg, zg, w[:128], eps=eps, q=q, scales=scales, **kw)
    if op == "rmsnorm":
        return tuple(a for a in gatednorm.rmsnorm(x, w, eps=eps, fp8=True, q=q, scales=scales, y_out=y, **kw)
                     if a is not None)
    res = r.copy()
    out = gatednorm.add_rmsnorm(x, res, w, eps=eps, fp8=True, q=q, scales=scales, y_out=y, **kw)
    assert out.residual is res
    return tuple(out)


@pytest.mark.parametrize("op", ["add_rmsnorm", "rmsnorm", "rmsnorm_gated_fp8", "group_quant_fp8"])
def test_default_options_fast_path_is_the_checked_call(rng, op):
    """Calls with default options (the fast path once an eps has been checked) give the bits
    of the same options passed as other objects (the checks), for eps values changing from
    call to call (a memo keyed wrong would reuse another eps's params), -0.0 among them;
    a NaN or negative eps is refused every time, naming eps, with nothing written."""
    x, r, w = _inputs(rng, (3, 256), BF16)
    x *= 4
    for eps in (1e-6, 0.5, 1e-6, 0.0, 2.0, 0.5, -0.0, 0.0):
        fast, slow = _op_call(op, x, r, w, eps, False), _op_call(op, x, r, w, eps, True)
        assert len(fast) == len(slow) >= 2
        for f, s in zip(fast, slow):
            assert f.dtype == s.dtype and f.tobytes() == s.tobytes(), (op, eps)
        if op != "group_quant_fp8":  # y's scale follows eps: 0.5 and 2.0 are far from 1e-6
            got = fast[0].astype(np.float32) if op != "rmsnorm_gated_fp8" else None
            if got is not None:
                want = reference.add_rmsnorm(x, r if op == "add_rmsnorm" else None, w, eps=eps)["y"]
                assert reference.compare(got.astype(BF16), want, BF16).ok, (op, eps)
    if op == "group_quant_fp8":
        return
    for bad in (float("nan"), -1e-3):
        for _ in range(2):
            q = np.full(x.shape, np.nan, _dtypes.float8_e4m3fn)
            with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )eps: "):
                if op == "rmsnorm_gated_fp8":
                    gatednorm.rmsnorm_gated_fp8(x.reshape(3, 2, 128), r.reshape(3, 2, 128), w[:128], eps=bad, q=q)
                elif op == "rmsnorm":
                    gatednorm.rmsnorm(x, w, eps=bad, fp8=True, q=q)
                else:
                    gatednorm.add_rmsnorm(x, r.copy(), w, eps=bad, fp8=True, q=q)
            assert np.isnan(q.astype(np.float32)).all()


def test_fast_paths_take_numpy_bools_and_refuse_what_the_checks_refuse(rng):
    """fp8=np.True_ (not the bool object) takes the checks and gives the same bits; with the
    defaults memoized, outputs the checks never looked at are still judged by the library
    (a y_out of another shape, a read-only q), naming them, and nothing is written."""
    x, r, w = _inputs(rng, (2, 256), BF16)
    y1, y2 = (np.full(x.shape, np.nan, BF16) for _ in range(2))
    q1, q2 = (np.full(x.shape, np.nan, _dtypes.float8_e4m3fn) for _ in range(2))
    gatednorm.rmsnorm(x, w, fp8=True, q=q1, y_out=y1)
    gatednorm.rmsnorm(x, w, fp8=np.True_, q=q2, y_out=y2)
    assert y1.tobytes() == y2.tobytes() and q1.tobytes() == q2.tobytes()
    bad_y = np.full((3, 256), np.nan, BF16)
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )y_out: "):
        gatednorm.rmsnorm(x, w, fp8=True, q=q1, y_out=bad_y)
    assert np.isnan(bad_y.astype(np.float32)).all()
    ro = np.full(x.shape, np.nan, _dtypes.float8_e4m3fn)
    ro.flags.writeable = False
    y3 = np.full(x.shape, np.nan, BF16)
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )q: "):
        gatednorm.add_rmsnorm(x, r.copy(), w, fp8=True, q=ro, y_out=y3)
    assert np.isnan(y3.astype(np.float32)).all()


def test_unpacked_entry_descriptors_follow_the_arrays(rng):
    """The numpy fast path of the entries with optional arguments (None passed as NULL):
    a descriptor is reused only for the address, shape and dtype of this call, as the
    packed entry's (test_reshaped_in_place, test_dtype_changed_at_same_address)."""
    x, _, w = _inputs(rng, (1, 512))
    y = np.full(x.shape, np.nan, F32)

    def check(xa, wa, ya):
        gatednorm.rmsnorm(xa, wa, y_out=ya)
        assert reference.compare(ya, reference.rmsnorm(xa, wa)["y"], ya.dtype).ok

    check(x, w, y)
    for a in (x, y):  # the same memory as [2, 256]
        a.shape = (2, 256)
    y[...] = np.nan
    check(x, np.ascontiguousarray(w[:256]), y)
    xh, yh = x.view(np.float16), y.view(np.float16)  # same addresses, other dtype: [2, 512] fp16
    xh[...] = rng.standard_normal(xh.shape).astype(np.float16)
    yh[...] = np.nan
    wh = (1.0 + 0.1 * rng.standard_normal(512)).astype(np.float16)
    check(xh, wh, yh)
    yh[...] = np.nan
    with pytest.raises(gatednorm.InvalidArgumentError, match="(^|: )weight: "):
        gatednorm.rmsnorm(xh, np.ascontiguousarray(w[:256]), y_out=yh)  # [256] for rows of 512
    assert np.isnan(yh).all()


@pytest.mark.parametrize("op", ["rmsnorm", "rmsnorm_gated_fp8"])
def test_params_keep_the_callers_eps_sign(rng, monkeypatch, op):
    """eps -0.0 and +0.0 compute alike, but the params passed keep the caller's sign in any
    order of calls: neither the default-options memo nor the option memo hands one the
    other's struct (a review, session 46: -0.0 after +0.0 reached C as +0.0, which the CPU
    all-reduce's options hash then told apart)."""
    from gatednorm import ops_fp8

    entry = ops_fp8._RMSNORM_ENTRY if op == "rmsnorm" else ops_fp8._ENTRY
    x, z, w = _inputs(rng, (2, 256))
    if op == "rmsnorm":
        call = lambda eps: gatednorm.rmsnorm(x, w, eps=eps)  # noqa: E731
    else:
        call = lambda eps: gatednorm.rmsnorm_gated_fp8(x.reshape(2, 2, 128), z.reshape(2, 2, 128), w[:128], eps=eps)  # noqa: E731
    call(0.5)
    seen = []
    real_call = entry.call

    def spy(*args, params=None):
        seen.append(math.copysign(1.0, params.eps))
        return real_call(*args, params=params)

    monkeypatch.setattr(entry, "call", spy)
    for eps in (0.0, -0.0, 0.0, -0.0, 0.5, -0.0):
        call(eps)
    assert seen == [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]
