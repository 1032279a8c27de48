"""The oracle itself: gatednorm.reference against independent per-row arithmetic and the
properties of the spec, and the comparison rule (it must reject one-ulp errors)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from gatednorm import _dtypes, reference


def _row_by_row(x, z, w, eps, nbg, act, off):
    """Plain-Python (math module) gated RMSNorm of one row, straight from docs/ops.md section 1."""
    a = None
    if z is not None:
        if act == "silu":
            a = [v / (1.0 + math.exp(-v)) for v in z]
        else:
            a = [1.0 / (1.0 + math.exp(-v)) for v in z]
    u = list(x) if (a is None or nbg) else [xi * ai for xi, ai in zip(x, a)]
    rstd = 1.0 / math.sqrt(sum(v * v for v in u) / len(u) + eps)
    y = [ui * rstd * (wi + off) for ui, wi in zip(u, w)]
    if a is not None and nbg:
        y = [yi * ai for yi, ai in zip(y, a)]
    return y


@pytest.mark.parametrize("nbg", [True, False])
@pytest.mark.parametrize("act", ["silu", "sigmoid"])
@pytest.mark.parametrize("gate", [True, False])
def test_matches_row_by_row(rng, nbg, act, gate):
    x = rng.standard_normal((3, 2, 9)).astype(np.float32)
    z = rng.standard_normal((3, 2, 9)).astype(np.float32) * 3 if gate else None
    w = rng.standard_normal(9).astype(np.float32)
    eps, off = 0.25, 0.5  # representable in fp32: no rounding of the options
    y = reference.rmsnorm_gated(x, z, w, eps=eps, norm_before_gate=nbg, activation=act, weight_offset=off)
    assert y.dtype == np.float64 and y.shape == x.shape
    for t in range(3):
        for h in range(2):
            expect = _row_by_row(x[t, h].astype(float), None if z is None else z[t, h].astype(float),
                                 w.astype(float), eps, nbg, act, off)
            np.testing.assert_allclose(y[t, h], expect, rtol=1e-13, atol=1e-15)


def test_bf16_inputs_upcast_exactly(rng):
    xb = rng.standard_normal((4, 16)).astype(_dtypes.bfloat16)
    w = np.ones(16, np.float32)
    a = reference.rmsnorm_gated(xb, None, w)
    b = reference.rmsnorm_gated(xb.astype(np.float64), None, w)
    assert np.array_equal(a, b)


def test_group_size_view(rng):
    x = rng.standard_normal((5, 3 * 8))
    z = rng.standard_normal((5, 3 * 8))
    w = rng.standard_normal(8)
    a = reference.rmsnorm_gated(x, z, w, group_size=8)
    b = reference.rmsnorm_gated(x.reshape(5, 3, 8), z.reshape(5, 3, 8), w).reshape(5, 24)
    assert np.array_equal(a, b)


def test_plain_rmsnorm_has_unit_rms(rng):
    x = rng.standard_normal((7, 64)) * 5
    y = reference.rmsnorm_gated(x, None, np.ones(64), eps=0.0)
    np.testing.assert_allclose(np.sqrt(np.mean(y * y, axis=-1)), 1.0, rtol=1e-12)


def test_silu_extremes():
    z = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    s = reference.silu(z)
    assert np.all(np.isfinite(s)) and s[2] == 0 and s[-1] == 1000.0 and abs(s[0]) < 1e-300


def test_ulp():
    bf, f16, f32 = _dtypes.bfloat16, _dtypes.float16, _dtypes.float32
    assert reference.ulp(1.0, bf) == 2.0 ** -7
    assert reference.ulp(1.5, f16) == 2.0 ** -10
    assert reference.ulp(-3.0, f32) == 2.0 ** -22
    assert reference.ulp(0.0, f16) == 2.0 ** -24           # fp16 subnormal spacing
    assert reference.ulp(1e-6, f16) == 2.0 ** -24
    assert reference.ulp(2.0 ** -130, f32) == 2.0 ** -149  # fp32 subnormal spacing
    for dt in (bf, f16, f32):  # agrees with the gap to the next value up, for normal values
        for v in (0.3, 7.0, 1234.5, 0.75, 3e4):
            assert reference.ulp(v, dt) == _gap_above(v, dt), (dt, v)
            assert reference.ulp(-v, dt) == _gap_above(v, dt), (dt, v)
            if dt != bf:  # numpy's spacing (ml_dtypes' bf16 may not implement it)
                assert reference.ulp(v, dt) == float(np.spacing(np.array(v, dt)).astype(np.float64))


def _gap_above(v, dt):
    """Distance from ``v`` rounded to ``dt`` to the next larger ``dt`` value, found by
    incrementing the bit pattern (independent of reference.ulp's exponent arithmetic)."""
    a = np.array(v, dt)
    bits = a.view({2: np.uint16, 4: np.uint32}[a.itemsize])
    up = (bits + bits.dtype.type(1)).view(dt)
    return float(up.astype(np.float64)) - float(a.astype(np.float64))


@pytest.mark.parametrize("dt", ["bf16", "fp16", "fp32"])
def test_compare_accepts_rounding_rejects_one_ulp(rng, dt):
    d = _dtypes.to_numpy_dtype(dt)
    ref = rng.standard_normal(1000) * 3
    rounded = ref.astype(np.float32).astype(d)  # single(ish) rounding: accepted
    assert reference.compare(rounded, ref, d).ok
    # one element off by one ulp (bf16/fp16), or by 2e-5 relative plus one ulp (fp32, whose
    # tolerance is dominated by the fp32 arithmetic term): rejected, and located
    bad = rounded.astype(np.float64)
    step = reference.ulp(bad[123], d) + (2 * reference.DEFAULT_RTOL * abs(bad[123]) if dt == "fp32" else 0)
    bad[123] += step if bad[123] >= ref[123] else -step  # away from the reference
    c = reference.compare(bad.astype(d), ref, d)
    assert not c.ok and c.n_bad >= 1 and "(123,)" in c.worst
    # a poisoned (unwritten) element: rejected and counted
    nanned = rounded.copy()
    nanned[7] = np.nan
    c = reference.compare(nanned, ref, d)
    assert not c.ok and c.n_nan == 1
    # shape mismatch
    assert not reference.compare(rounded[:10], ref, d).ok


def test_compare_infinite_reference_allows_only_itself():
    # tolerance() is infinite at an infinite reference: compare once accepted any output there
    inf = np.array([np.inf, -np.inf])
    assert reference.compare(np.array([np.inf, -np.inf], np.float32), inf).ok
    assert not reference.compare(np.array([5.0, -np.inf], np.float32), inf).ok
    assert not reference.compare(np.array([-np.inf, np.inf], np.float32), inf).ok
    assert not reference.compare(np.array([np.nan, -np.inf], np.float32), inf).ok


@pytest.mark.parametrize("dt", ["float16", "bfloat16"])
def test_compare_overflow_of_the_output_dtype_is_infinity(dt):
    """A finite reference past the output dtype's overflow edge (max + half an ulp: 65520 for
    fp16) rounds to an infinity of its sign, which compare refused (only the reference's own
    infinities passed; review): accepted there, the max finite too where the fp32 error lets
    the value fall below the edge, never the other sign or well below the edge."""
    top = float(ml_dtypes.finfo(getattr(_dtypes, dt)).max)
    half = {"float16": 16.0, "bfloat16": 2.0 ** 119}[dt]
    D = getattr(_dtypes, dt)
    past, at, below = np.array([top + 3 * half]), np.array([top + half * 0.999]), np.array([top * 0.99])
    assert reference.compare(np.array([np.inf], D), past).ok and not reference.compare(np.array([top], D), past).ok
    assert reference.compare(np.array([-np.inf], D), -past).ok and not reference.compare(np.array([-np.inf], D), past).ok
    assert reference.compare(np.array([np.inf], D), at).ok and reference.compare(np.array([top], D), at).ok
    assert not reference.compare(np.array([np.inf], D), below).ok
    assert reference.compare(np.array([np.inf], D), past).max_ulp == 0.0


def test_fp32_range():
    y = np.array([1e39, -1e39, 3.4028234e38, 3.4028235e38 * (1 + 2.0 ** -24), 1.0, np.nan])
    r = reference.fp32_range(y)
    assert r[0] == np.inf and r[1] == -np.inf and r[2] == 3.4028234e38 and r[3] == np.inf
    assert r[4] == 1.0 and np.isnan(r[5])


def test_compare_nan_in_both_is_fine():
    ref = np.array([1.0, np.nan])
    assert reference.compare(np.array([1.0, np.nan], np.float32), ref).ok


@pytest.mark.parametrize("fmt", ["e4m3fn", "e4m3fnuz"])
@pytest.mark.parametrize("sf", ["fp32", "ue8m0"])
def test_reference_codes_within_half_a_quantum(fmt, sf):
    """The reference's own codes against its own scales by the rule the tests hold the
    library to (fp8_codes_ok): a reference that scaled its codes wrongly was otherwise seen by
    one test only (mutation review)."""
    from gatednorm.testing import fp8_codes_ok

    rng = np.random.default_rng(4)
    y = rng.standard_normal((64, 512)) * 2.0 ** rng.integers(-8, 8, (64, 1))
    q, s = reference.fp8_group_quant(y, 128, fp8_format=fmt, scale_format=sf)
    ok, detail = fp8_codes_ok(q, y, s, fmt, None, 128)
    assert ok, detail


def test_reference_quantize_rounded():
    """The reference's quantize_rounded quantizes y rounded to the copy's dtype (x's without
    a copy) and so differs from the unrounded rule; tests replace it by the op's own copy, so
    these branches were otherwise dead (mutation review)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 4, 128)).astype(_dtypes.bfloat16)
    z = rng.standard_normal((16, 4, 128)).astype(_dtypes.bfloat16)
    w = np.ones(128, np.float32)
    _, s0, _ = reference.rmsnorm_gated_fp8(x, z, w)
    for cd in ("bf16", "fp16"):
        q, s, y = reference.rmsnorm_gated_fp8(x, z, w, quantize_rounded=True, copy_dtype=cd)
        yr = y.astype(_dtypes.to_numpy_dtype(cd)).astype(np.float64).reshape(16, 512)
        q2, s2 = reference.fp8_group_quant(yr, 128)
        assert np.array_equal(s, s2) and np.array_equal(q.view(np.uint8), q2.view(np.uint8))
        assert not np.array_equal(s, s0)
    xr = rng.standard_normal((16, 512)).astype(_dtypes.bfloat16)
    for yd in ("bf16", "fp16"):
        r = reference.add_rmsnorm(xr, None, np.ones(512, np.float32), fp8=True, quantize_rounded=True, y_dtype=yd)
        q2, s2 = reference.fp8_group_quant(r["y"].astype(_dtypes.to_numpy_dtype(yd)).astype(np.float64), 128)
        assert np.array_equal(r["scales"], s2) and np.array_equal(r["q"].view(np.uint8), q2.view(np.uint8))
        plain = reference.add_rmsnorm(xr, None, np.ones(512, np.float32), fp8=True, y_dtype=yd)
        assert not np.array_equal(r["scales"], plain["scales"])


def test_fp32_overflow_inside_y_is_an_infinity():
    """ops.md §1 computes y = a * rstd * (w + weight_offset) in fp32, then the gate: a y past
    fp32's range there is an infinity that a small gate cannot bring back, and w + offset is
    itself an fp32 add (an audit found the reference finite in both cases, the library inf)."""
    x = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    z = np.full((1, 4), -20.0, np.float32)  # silu(-20) ~ -4e-8
    w = np.full(4, 3e38, np.float32)  # a * rstd = 2: y = 6e38 before the gate
    y = reference.rmsnorm_gated(x, z, w)
    assert y[0, 0] == -np.inf and (y[0, 1:] == 0).all()
    q, s, _ = reference.rmsnorm_gated_fp8(x.reshape(1, 1, 4), z.reshape(1, 1, 4), w, group_size=4)
    assert np.isnan(s).all()
    x2 = np.array([[1.0, 0.5, 0.5, 0.5]], np.float32)  # w + 1e38 = 4e38: inf in fp32
    assert np.isinf(reference.rmsnorm_gated(x2, None, w, weight_offset=1e38)).all()
    assert np.isinf(reference.rmsnorm(x2, w, weight_offset=1e38)["y"]).all()
