"""gatednorm.rmsnorm_gated_fp8 (docs/ops.md §2) against the float64 reference, on every backend.

Outputs are poisoned first with finite values no correct result holds (gatednorm.testing:
codes 0x35, fp32 scales 7.0, E8M0 bytes 0x85; the copy 7.0).  What is asserted:
  - scales: within fp32 rounding of max(amax, floor) / fp8_max of the float64 y (2e-5
    relative, as reference.compare); UE8M0 / E8M0: exactly 2^ceil(log2(that)), either
    neighbour only where the reference lies within 2e-5 of a power of two.
  - q: within half an FP8 quantum (+2e-5 relative) of clamp(y / scale) with the op's own
    scale and the float64 y: one quantum apart only where y / scale sits on a rounding
    boundary.  Under quantize_rounded, q and scales are bit-identical to the §2 rule applied
    (in numpy float32, ml_dtypes encoding) to the op's own bf16/fp16 copy.
  - the encoder (gatednorm_fp8_encode, the one rule of hip/numerics.h the CPU backend uses
    and the GPU's hardware converts must equal) equals ml_dtypes after clamping, for every
    finite bf16 value, both formats.
"""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

import gatednorm
from gatednorm import GatedNormError, _dtypes, _ffi, reference
from gatednorm.testing import (POISON_CODE, POISON_E8M0, POISON_VALUE, fp8_codes_ok, fp8_scales_ok, mirror, new_scales,  # noqa: F401
                               poison_codes, poison_scales, randn, scale_values)

from conftest import Backend

DT = {"bf16": _dtypes.bfloat16, "fp16": _dtypes.float16, "fp32": _dtypes.float32}
FP8 = {"e4m3fn": _dtypes.float8_e4m3fn, "e4m3fnuz": _dtypes.float8_e4m3fnuz}
NAN_CODE = {"e4m3fn": 0x7F, "e4m3fnuz": 0x80}
SCALE_DT = {"fp32": np.float32, "ue8m0": np.float32, "e8m0": np.uint8, "e8m0_packed": np.int32}
NAN = float("nan")
# Poison values (finite, no correct result holds them): gatednorm.testing.


# ----------------------------------------------------------------------------- the encoder
def encode(values, fmt, fp8_max=0.0):
    lib = _ffi._lib or _ffi.load()
    v = np.ascontiguousarray(values, np.float32)
    out = np.empty(v.shape, np.uint8)
    st = lib.gatednorm_fp8_encode(_ffi.ffi.cast("const float *", v.ctypes.data), _ffi.ffi.cast("uint8_t *", out.ctypes.data),
                                  v.size, {"e4m3fn": 0, "e4m3fnuz": 1}[fmt], fp8_max)
    _ffi.check(st, "gatednorm_fp8_encode")
    return out


def ml_encode(values, fmt, fp8_max):
    v = np.clip(np.asarray(values, np.float32), -fp8_max, fp8_max)
    return v.astype(FP8[fmt]).view(np.uint8)


@pytest.mark.parametrize("fmt,fp8_max", [("e4m3fn", 448.0), ("e4m3fn", 300.0), ("e4m3fnuz", 240.0), ("e4m3fnuz", 224.0)])
def test_encoder_every_finite_bf16(fmt, fp8_max):
    bits = np.arange(1 << 16, dtype=np.uint32)
    v = (bits << 16).view(np.float32)
    v = v[np.isfinite(v)]
    got = encode(v, fmt, fp8_max)
    want = ml_encode(v, fmt, fp8_max)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, "first mismatches: %s" % [(float(v[i]), hex(got[i]), hex(want[i])) for i in bad[:5]]
    if fmt == "e4m3fnuz":  # no negative zero: 0x80 is fnuz's NaN
        assert not np.any(got == 0x80)


@pytest.mark.parametrize("fmt", list(FP8))
def test_encoder_random_fp32_and_specials(fmt, rng=np.random.default_rng(7)):
    v = np.concatenate([rng.standard_normal(200000).astype(np.float32) * np.exp2(rng.integers(-14, 10, 200000)).astype(np.float32),
                        np.array([0.0, -0.0, 1e-30, -1e-30, np.inf, -np.inf, 1e9, -1e9], np.float32)])
    fmax = reference.fp8_max_of(fmt)
    assert np.array_equal(encode(v, fmt), ml_encode(v, fmt, fmax))
    nan = encode(np.array([np.nan, -np.nan], np.float32), fmt)
    assert list(nan) == [NAN_CODE[fmt]] * 2


def _encoder_sweep(x_dtype, fp8_max):
    """Values v with |v| <= fp8_max, every sign and exponent: for bf16 / fp16 every finite
    value; for fp32 every top-11-bit mantissa with low 12 bits 0, 1, 0x7ff, 0x800, 0x801 or
    0xfff (every rounding position of e4m3, normal or subnormal, its ties and their
    neighbours: e4m3 keeps at most 3 mantissa bits, so bits 12-19 are covered whole)."""
    if x_dtype == "fp32":
        top = np.arange(1 << 20, dtype=np.uint32) << 12  # sign, exponent and 11 mantissa bits
        bits = (top[:, None] | np.array([0, 1, 0x7FF, 0x800, 0x801, 0xFFF], np.uint32)).ravel()
        v = bits.view(np.float32)
    else:
        v = np.arange(1 << 16, dtype=np.uint16).view(DT[x_dtype]).astype(np.float32)
    v = v[np.isfinite(v)]
    return v[np.abs(v) <= fp8_max]


@pytest.mark.parametrize("x_dtype", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("fmt,fp8_max", [("e4m3fn", 448.0), ("e4m3fn", 300.0), ("e4m3fnuz", 240.0), ("e4m3fnuz", 224.0)])
def test_encoder_sweep_on_every_backend(be, x_dtype, fmt, fp8_max):
    """Each backend's FP8 encode of the kernels (on the GPU the hardware converts: satfinite at
    448, clamp + cvt otherwise, the software rule for fnuz on NVIDIA) equals the shared rule
    and ml_dtypes over _encoder_sweep: group_quant_fp8 with a group's largest element at
    +fp8_max makes its scale fp8_max / fp8_max = 1 exactly, so every code is encode(v).
    bf16 / fp16 x take the GPU's flat kernel, fp32 x the generic one."""
    v = _encoder_sweep(x_dtype, fp8_max)
    per_row, G = 8 * 127, 128
    rows = -(-v.size // per_row)
    vals = np.zeros(rows * per_row, np.float32)
    vals[:v.size] = v
    x = np.full((rows, 8, G), fp8_max, np.float32)
    x[:, :, :G - 1] = vals.reshape(rows, 8, G - 1)
    x = x.reshape(rows, 8 * G).astype(DT[x_dtype])
    assert np.array_equal(x.astype(np.float32).reshape(rows, 8, G)[:, :, :G - 1].ravel()[:v.size], v)  # exact in x's dtype
    qd = be.put(poison_codes((rows, 8 * G), fmt))
    q, s = gatednorm.group_quant_fp8(be.put(x), group_size=G, fp8_format=fmt, fp8_max=fp8_max, q=qd)
    assert (be.get(s) == 1.0).all()
    got = be.get(q).view(np.uint8).reshape(rows, 8, G)
    assert (got[:, :, G - 1] == encode(np.float32(fp8_max), fmt, fp8_max)).all()
    got = got[:, :, :G - 1].ravel()[:v.size]
    for name, want in (("the shared rule", encode(v, fmt, fp8_max)), ("ml_dtypes", ml_encode(v, fmt, fp8_max))):
        bad = np.nonzero(got != want)[0]
        assert bad.size == 0, "%s: %d mismatches vs %s, first %s" % (be.name, bad.size, name,
                                                                     [(float(v[i]), hex(got[i]), hex(want[i])) for i in bad[:5]])


def test_encoder_bad_arguments():
    lib = _ffi._lib or _ffi.load()
    v = np.ones(4, np.float32)
    o = np.zeros(4, np.uint8)
    p = (_ffi.ffi.cast("const float *", v.ctypes.data), _ffi.ffi.cast("uint8_t *", o.ctypes.data), 4)
    assert lib.gatednorm_fp8_encode(*p, 2, 0.0) < 0 and _ffi.ffi.string(lib.gatednorm_last_error()).startswith(b"format:")
    assert lib.gatednorm_fp8_encode(*p, 1, 300.0) < 0 and _ffi.ffi.string(lib.gatednorm_last_error()).startswith(b"fp8_max:")
    assert not o.any()


# ----------------------------------------------------------------------------- the op
def make_inputs(rng, shape, xd="bf16", wd="fp32", gate=True, xscale=1.0):
    x = randn(rng, shape, DT[xd], scale=xscale)
    z = randn(rng, shape, DT[xd], scale=2.0) if gate else None
    D = shape[-1]
    w = randn(rng, (D,), DT[wd], scale=0.5, shift=1.0)
    return x, z, w








def check_scales(got, ref, scale_format):
    ok, detail = fp8_scales_ok(got, ref, scale_format)
    assert ok, detail


def check_q(q, y_ref, s_got, fmt, fp8_max, G):
    """q (fp8 numpy) within half a quantum of clamp(y / s) per element; NaN where s is NaN."""
    ok, detail = fp8_codes_ok(q, y_ref, s_got, fmt, fp8_max, G)
    assert ok, detail


def run(be, x, z, w, *, layout="row", copy_dtype=None, x_base=None, z_base=None, **kw):
    """Run the op with poisoned outputs on backend be; check everything against the
    reference; return (q, scales values, copy) as numpy."""
    fmt = kw.get("fp8_format", "e4m3fn")
    sf = kw.get("scale_format", "fp32")
    G = kw.get("group_size", 128)
    qr, sr, yr = reference.rmsnorm_gated_fp8(x, z, w, copy_dtype=copy_dtype, **kw)
    tok, row = qr.shape[:-1], qr.shape[-1]
    K = row // G
    cols = (K + 3) // 4 if sf == "e8m0_packed" else K
    q0 = poison_codes(qr.shape, fmt)
    s0, sbase = new_scales(tok, cols, sf, layout)
    sbase_before = sbase.copy()
    s_poison = scale_values(np.array(s0), sf, K)  # (s0 itself is the numpy backend's output)
    y0 = None if copy_dtype is None else np.full(x.shape, POISON_VALUE, DT[copy_dtype])
    qd, sd = be.put(q0), be.put(s0, sbase)
    yd = None if y0 is None else be.put(y0)
    res = gatednorm.rmsnorm_gated_fp8(be.put(x, x_base), be.put(z, z_base), be.put(w), q=qd, scales=sd, y=yd, **kw)
    assert res[0] is qd and res[1] is sd and (len(res) == 2 if yd is None else res[2] is yd)
    q = be.get(qd)
    assert q.dtype == FP8[fmt] and q.shape == qr.shape
    s_raw = be.get(sd)
    s = scale_values(s_raw, sf, K).reshape(tuple(tok) + (K,))
    y = None if yd is None else be.get(yd)
    yq = yr
    if kw.get("quantize_rounded"):
        # The op rounds its fp32 y; rounding the float64 y instead differs by one bf16/fp16
        # ulp where y sits on a midpoint, so the rounded values are the op's own copy (checked
        # below against the reference, and bit for bit by the caller's encode_rule).  Without
        # a copy there is nothing to compare here: test_quantize_rounded_without_copy_...
        # compares such a call with one that has a copy.
        if y is None:  # every scale written (a partial write passed "not all poison")
            assert not (s == s_poison.reshape(s.shape)).any()
            return q, s, None
        yq = y.astype(np.float64)
        _, sr = reference.fp8_group_quant(yq.reshape(tuple(tok) + (row,)), G, fp8_format=fmt, fp8_max=kw.get("fp8_max"),
                                          amax_floor=kw.get("amax_floor", 1e-10), scale_format=sf)
    check_scales(s, sr, sf)
    check_q(q, yq.reshape(tuple(tok) + (row,)), s, fmt, kw.get("fp8_max"), G)
    if sf == "e8m0_packed" and K % 4:  # bytes past the last group are zero
        b = np.ascontiguousarray(s_raw).view(np.uint8).reshape(s_raw.shape[:-1] + (-1,))
        assert not b[..., K:].any()
    if layout == "col_pad4":  # the padding columns are the caller's: untouched
        full = be.get_base(sd, sbase)
        T = int(np.prod(tok)) if tok else 1
        assert full[:, T:].tobytes() == sbase_before[:, T:].tobytes()
    if y is not None:
        cmp = reference.compare(y, yr, DT[copy_dtype])
        assert cmp.ok, cmp
    return q, s, y


GATES = ["before", "after", "none"]


def opts(gate="before", **kw):
    return dict(norm_before_gate=gate != "after", **kw)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("xd,wd", [("bf16", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32"), ("fp16", "bf16")])
@pytest.mark.parametrize("fmt", list(FP8))
def test_dtypes_formats(be, rng, xd, wd, gate, fmt):
    x, z, w = make_inputs(rng, (7, 4, 128), xd, wd, gate != "none")
    run(be, x, z, w, **opts(gate, fp8_format=fmt))


@pytest.mark.parametrize("sf", list(SCALE_DT))
@pytest.mark.parametrize("layout", ["row", "col", "col_pad4"])
@pytest.mark.parametrize("T,H", [(1, 4), (5, 3), (33, 8)])
def test_scale_formats_and_layouts(be, rng, sf, layout, T, H):
    x, z, w = make_inputs(rng, (T, H, 128))
    run(be, x, z, w, layout=layout, scale_format=sf)


# (D, G): G dividing D, D dividing G, and odd head dims (generic kernel on the GPU).  On the
# GPU's vec kernel, 16 elements a lane where D % 16 == 0 and (G >= D or G % 16 == 0), else
# 8: (128, 8) and (8, 128) take 8; (64, 64) and (16, 64) take its 4-lane teams, (16, 64) one
# lane a head; (256, 512) is generic (a 64-lane team at 8 elements a lane).
@pytest.mark.parametrize("D,G,H", [(128, 128, 4), (128, 64, 3), (128, 32, 2), (128, 16, 2), (128, 8, 1), (64, 128, 4),
                                   (128, 256, 4), (128, 512, 8), (32, 128, 8), (96, 32, 4), (96, 96, 3), (96, 192, 4),
                                   (256, 128, 3), (200, 40, 2), (8, 128, 16), (1000, 125, 2), (512, 128, 2), (2048, 128, 1),
                                   (256, 32, 3), (256, 64, 2), (256, 256, 3), (256, 512, 4), (64, 64, 3), (64, 32, 2),
                                   (16, 64, 8), (40, 80, 4), (72, 72, 2), (100, 50, 2), (100, 100, 3)])
@pytest.mark.parametrize("sf", ["fp32", "e8m0_packed"])
def test_group_sizes(be, rng, D, G, H, sf):
    x, z, w = make_inputs(rng, (9, H, D))
    run(be, x, z, w, group_size=G, scale_format=sf, layout="col")


# With GATEDNORM_FP8_LANE_ELEMS (hip/rmsnorm_gated_fp8.hip's hook forcing a width): the vec
# kernel's 4-, 8- and 16-element lanes give the same bits (the 4- and 16-element sums of
# squares keep the 8-element order), wherever they are legal and where 4 or 16 falls back to 8.
AB_SHAPES = [(37, 3, 128, 128), (37, 4, 128, 64), (37, 4, 128, 32), (37, 2, 128, 16), (37, 4, 128, 256), (37, 8, 128, 512),
             (37, 4, 64, 128), (37, 3, 64, 64), (37, 8, 16, 64), (37, 4, 96, 32), (37, 4, 96, 192), (37, 3, 256, 128),
             (37, 2, 256, 32), (37, 2, 256, 256), (37, 4, 128, 8), (1001, 5, 128, 128)]


@pytest.mark.parametrize("T,H,D,G", AB_SHAPES)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("extra", ["plain", "copy_rounded_ue8m0", "fp16_inf"])
def test_lane_elems_ab_bit_equal(requires_gpu, monkeypatch, rng, T, H, D, G, gate, extra):
    xd, wd = ("fp16", "bf16") if extra == "fp16_inf" else ("bf16", "fp32")
    x, z, w = make_inputs(rng, (T, H, D), xd, wd, gate != "none")
    kw = opts(gate, group_size=G)
    if extra == "copy_rounded_ue8m0":
        kw.update(copy_dtype="bf16", quantize_rounded=True, scale_format="ue8m0")
    if extra == "fp16_inf":
        x[T // 2, H - 1, D // 2] = np.inf
    outs = {}
    for elems in ("4", "8", "16"):  # each width's outputs poisoned and checked against the reference by run()
        monkeypatch.setenv("GATEDNORM_FP8_LANE_ELEMS", elems)
        outs[elems] = [None if r is None else r.tobytes() for r in run(Backend("gpu"), x, z, w, **kw)]
    assert outs["4"] == outs["8"] == outs["16"]


# The vec kernel at 16 elements a lane over many blocks, against the reference: teams of 8
# lanes (D = 128), 4 (D = 64), 16 (D = 256; and D = 128 with G = 256, a group over two heads),
# lanes past D (D = 96: 6 lanes of a head's 8), fp16; H = 13: the last block ends inside a
# warp; each gate order, the copy in x's dtype.
@pytest.mark.parametrize("T,H,D,G,xd,gate", [(8191, 12, 128, 128, "bf16", "before"), (8191, 12, 128, 128, "bf16", "after"),
                                             (8191, 13, 128, 128, "bf16", "before"),
                                             (8191, 12, 128, 128, "bf16", "none"), (8191, 24, 64, 64, "fp16", "before"),
                                             (4099, 12, 256, 128, "bf16", "before"), (4099, 24, 128, 256, "bf16", "after"),
                                             (8191, 16, 96, 96, "bf16", "before")])
def test_vec_e16_many_rows(requires_gpu, monkeypatch, rng, T, H, D, G, xd, gate):
    x, z, w = make_inputs(rng, (T, H, D), xd, "bf16", gate != "none")
    x[T // 3] *= 300.0
    monkeypatch.setenv("GATEDNORM_FP8_LANE_ELEMS", "16")
    run(Backend("gpu"), x, z, w, copy_dtype=xd, **opts(gate, group_size=G))  # checked against the reference
    assert gatednorm.last_kernel() == "rmsnorm_gated_fp8.vec.e16"


# Which kernel the size rules pick (hip/rmsnorm_gated_fp8.hip, lane_elems), read back through
# gatednorm.last_kernel(): "cpu" for host arrays; on the GPU 4 elements a lane below 2048 rows
# where a head takes at most 32 such lanes (not at D = 256), 8 up to 16384 rows, 16 from
# there where legal (not at D = 72: D % 16 != 0), the generic kernel for an fp32 x.
@pytest.mark.parametrize("T,H,D,xd,gpu_kernel", [(1, 32, 128, "bf16", "rmsnorm_gated_fp8.vec.e4"),
                                                 (63, 32, 128, "bf16", "rmsnorm_gated_fp8.vec.e4"),
                                                 (64, 32, 128, "bf16", "rmsnorm_gated_fp8.vec.e8"),
                                                 (1, 4, 256, "bf16", "rmsnorm_gated_fp8.vec.e8"),
                                                 (511, 32, 128, "bf16", "rmsnorm_gated_fp8.vec.e8"),
                                                 (512, 32, 128, "bf16", "rmsnorm_gated_fp8.vec.e16"),
                                                 (2048, 8, 72, "bf16", "rmsnorm_gated_fp8.vec.e8"),
                                                 (4, 8, 128, "fp32", "rmsnorm_gated_fp8.generic")])
def test_kernel_choice(be, rng, monkeypatch, T, H, D, xd, gpu_kernel):
    monkeypatch.delenv("GATEDNORM_FP8_LANE_ELEMS", raising=False)
    x, z, w = make_inputs(rng, (T, H, D), xd, "bf16")
    gatednorm.rmsnorm_gated_fp8(be.put(x), be.put(z), be.put(w), group_size=72 if D == 72 else 128)
    if be.name == "gpu":
        gatednorm.synchronize()
    assert gatednorm.last_kernel() == (gpu_kernel if be.name == "gpu" else "cpu")


@pytest.mark.parametrize("T", [1, 3, 17, 1000])
@pytest.mark.parametrize("fmt,fp8_max", [("e4m3fn", None), ("e4m3fnuz", None), ("e4m3fnuz", 224.0), ("e4m3fn", 300.0)])
def test_sizes_and_fp8_max(be, rng, T, fmt, fp8_max):
    x, z, w = make_inputs(rng, (T, 3, 128))
    q, s, _ = run(be, x, z, w, fp8_format=fmt, fp8_max=fp8_max)
    fmax = reference.fp8_max_of(fmt, fp8_max)
    assert np.nanmax(np.abs(q.astype(np.float32))) <= fmax


@pytest.mark.parametrize("gate", GATES)
def test_large_grid(be, rng, gate):
    """A grid of many vec-kernel blocks (25348 heads: ~1600 blocks at 16 elements a lane, ~3200
    at 8): several waves on any GPU, with the last block partly past the end."""
    x, z, w = make_inputs(rng, (6337, 4, 128), "bf16", "bf16", gate != "none")
    run(be, x, z, w, copy_dtype="bf16", **opts(gate))


@pytest.mark.parametrize("copy", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("gate", GATES)
def test_copy_output(be, rng, copy, gate):
    x, z, w = make_inputs(rng, (11, 4, 128), "bf16", "fp32", gate != "none")
    run(be, x, z, w, copy_dtype=copy, **opts(gate))


def encode_rule(yc, G, fmt, fp8_max, floor, sf):
    """§2 applied in numpy float32 to the copy yc [T, R]: the bits the op must produce."""
    fmax = np.float32(reference.fp8_max_of(fmt, fp8_max))
    yg = yc.astype(np.float32).reshape(yc.shape[0], -1, G)
    amax = np.max(np.abs(yg), axis=-1)
    s = np.maximum(amax, np.float32(floor)) / fmax
    if sf != "fp32":
        b = s.view(np.uint32)
        b = np.where(b & 0x7FFFFF, (b + 0x800000) & 0xFF800000, b).astype(np.uint32)
        s = b.view(np.float32)
    inv = np.float32(1) / s
    v = np.clip(yg * inv[..., None], -fmax, fmax)
    return v.astype(FP8[fmt]).view(np.uint8).reshape(yc.shape), s


@pytest.mark.parametrize("copy", ["bf16", "fp16"])
@pytest.mark.parametrize("fmt", list(FP8))
@pytest.mark.parametrize("sf", ["fp32", "ue8m0"])
@pytest.mark.parametrize("G", [128, 64, 256])
def test_quantize_rounded_is_bit_consistent(be, rng, copy, fmt, sf, G):
    """q and scales are exactly the §2 rule applied to the op's own rounded copy: what an
    unfused norm -> bf16 -> quant pipeline produces."""
    T, H, D = 37, 4, 128
    x, z, w = make_inputs(rng, (T, H, D), "bf16", "bf16")
    x[3, 1, :] *= 1e-3  # small groups: FP8 subnormal codes
    q, s, y = run(be, x, z, w, copy_dtype=copy, quantize_rounded=True, fp8_format=fmt, scale_format=sf, group_size=G)
    want_q, want_s = encode_rule(y.reshape(T, H * D), G, fmt, None, 1e-10, sf)
    assert np.array_equal(q.view(np.uint8), want_q)
    assert np.array_equal(s.astype(np.float32), want_s)


def test_quantize_rounded_without_copy_rounds_to_x_dtype(be, rng):
    x, z, w = make_inputs(rng, (5, 4, 128), "fp16", "fp32")
    q1, s1, y = run(be, x, z, w, copy_dtype="fp16", quantize_rounded=True)
    q2, s2, _ = run(be, x, z, w, quantize_rounded=True)
    assert q1.tobytes() == q2.tobytes() and s1.tobytes() == s2.tobytes()


@pytest.mark.parametrize("T", [5, 8])
def test_new_col_pad4_scales_are_padded(be, rng, T):
    """Scales the op allocates for the col_pad4 layout live in [K, T4], T4 = 4 * ceil(T / 4)
    (every caller-given layout was tested; a mutation dropping the padding of new ones passed)."""
    x, z, w = make_inputs(rng, (T, 2, 128))
    q, s = gatednorm.rmsnorm_gated_fp8(be.put(x), be.put(z), be.put(w), scale_layout="col_pad4")
    assert s.shape == (T, 2) and s.strides == (4, 4 * ((T + 3) // 4 * 4))
    _, sr, _ = reference.rmsnorm_gated_fp8(x, z, w)
    check_scales(be.get(s), sr, "fp32")


@pytest.mark.parametrize("offset", [1.0, 0.5])
def test_weight_offset_fp8(be, rng, offset):
    """weight_offset against the reference (the codes, scales and copy): only its sign rule
    was tested, so a doubled offset passed (mutation review)."""
    x, z, _ = make_inputs(rng, (9, 4, 128))
    w = randn(rng, (128,), np.float32, scale=0.5)
    run(be, x, z, w, weight_offset=offset, copy_dtype="fp32")


@pytest.mark.parametrize("fmt", list(FP8))
@pytest.mark.parametrize("sf", list(SCALE_DT))
def test_all_zero_group(be, rng, fmt, sf):
    """A zero group: scale = amax_floor / fp8_max (rounded up for UE8M0), q = 0 (0x00; and in
    fnuz never 0x80, even for -0 from a negative weight)."""
    T, H, D = 4, 4, 128
    x, z, w = make_inputs(rng, (T, H, D), "fp32", "fp32")
    x[2, 1] = 0.0
    w[::3] = -w[::3]  # -0 outputs
    q, s, _ = run(be, x, z, w, fp8_format=fmt, scale_format=sf, amax_floor=1e-6)
    fmax = reference.fp8_max_of(fmt)
    want = np.float32(np.float32(1e-6) / np.float32(fmax))
    if sf != "fp32":
        want = 2.0 ** np.ceil(np.log2(want))
    assert s[2, 1] == want
    codes = q.view(np.uint8)[2, D:2 * D]
    assert set(np.unique(codes)) <= ({0x00} if fmt == "e4m3fnuz" else {0x00, 0x80})
    if fmt == "e4m3fnuz":
        assert not np.any(q.view(np.uint8)[np.abs(q.astype(np.float32)) == 0] == 0x80)


@pytest.mark.parametrize("xd", ["bf16", "fp32"])
def test_eps(be, rng, xd):
    """eps read by every path: small inputs, where eps = 1e-2 is most of mean(x^2), give the
    reference's codes and scales, and not the default eps's."""
    x, z, w = make_inputs(rng, (9, 4, 128), xd, xscale=0.03)
    _, s, _ = run(be, x, z, w, eps=1e-2)
    _, s_default, _ = reference.rmsnorm_gated_fp8(x, z, w)
    assert not np.allclose(s, s_default.reshape(s.shape), rtol=1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("G", [128, 64, 256])
@pytest.mark.parametrize("sf", ["fp32", "e8m0"])
def test_nan_inf_propagate(be, rng, bad, G, sf):
    T, H, D = 4, 4, 128
    x, z, w = make_inputs(rng, (T, H, D), "fp32", "fp32")
    x[1, 2, 7] = bad
    q, s, _ = run(be, x, z, w, group_size=G, scale_format=sf)
    K = H * D // G
    nan_groups = np.isnan(s)
    assert nan_groups[1].any() and not nan_groups[[0, 2, 3]].any()
    assert np.isnan(q.astype(np.float32)[1].reshape(K, G)[nan_groups[1]]).all()


# ------------------------------------------------------------------------------ views
def test_strided_qkvz_and_head_dim(be, rng):
    """GDN layout: x and z 2-D [T, H*D] column slices of wider projections, head_dim = D."""
    T, H, D = 13, 4, 128
    xb = randn(rng, (T, 3 * H * D), _dtypes.bfloat16)
    zb = randn(rng, (T, 4 * H * D), _dtypes.bfloat16, scale=2.0)
    x, z = xb[:, H * D:2 * H * D], zb[:, 3 * H * D:]
    w = randn(rng, (D,), _dtypes.float32, scale=0.5, shift=1.0)
    run(be, x, z, w, x_base=xb, z_base=zb, head_dim=D, copy_dtype="bf16")


def test_leading_dims(be, rng):
    x, z, w = make_inputs(rng, (2, 3, 4, 128))
    q, s, _ = run(be, x, z, w, layout="col_pad4", scale_format="e8m0_packed")
    assert q.shape == (2, 3, 512) and s.shape == (2, 3, 4)


def test_2d_is_one_head(be, rng):
    x, z, w = make_inputs(rng, (6, 256))
    q, s, _ = run(be, x, z, w)
    assert q.shape == (6, 256) and s.shape == (6, 2)


def test_default_outputs_numpy(rng):
    x, z, w = make_inputs(rng, (5, 2, 128))
    q, s = gatednorm.rmsnorm_gated_fp8(x, z, w, fp8_format="e4m3fnuz", scale_format="e8m0")
    assert q.dtype == _dtypes.float8_e4m3fnuz and q.shape == (5, 256) and s.dtype == np.uint8 and s.shape == (5, 2)
    q, s, y = gatednorm.rmsnorm_gated_fp8(x, z, w, copy_dtype="bf16", scale_layout="col")
    assert y.dtype == _dtypes.bfloat16 and s.strides == (4, 20)  # [2, 5] column-major


@pytest.mark.parametrize("norm_before_gate", [True, False])
@pytest.mark.parametrize("copy_dtype", ["bf16", "fp16", "fp32"])
def test_cpu_copy_is_rmsnorm_gated(rng, norm_before_gate, copy_dtype):
    """On the CPU the copy is rmsnorm_gated's output bit for bit: both compute a row with
    cpu_rows.h's gated_row_f32 (the FP8 backend had a loop of its own, summing squares in
    another order, which could differ from it in a last bit)."""
    x, z, w = make_inputs(rng, (7, 3, 256), xscale=3.0)
    y = np.full(x.shape, 7.0, _dtypes.to_numpy_dtype(copy_dtype))
    gatednorm.rmsnorm_gated_fp8(x, z, w, norm_before_gate=norm_before_gate, y=y)
    ref = gatednorm.rmsnorm_gated(x, z, w, norm_before_gate=norm_before_gate, out_dtype=copy_dtype)
    assert y.tobytes() == ref.tobytes()


def test_raw_uint8_q(be, rng):
    """uint8 q takes the same codes as a float8 q (same backend: same kernel)."""
    x, z, w = make_inputs(rng, (3, 2, 128))
    qref, _, _ = run(be, x, z, w)
    q = be.put(np.full((3, 256), 0x7F, np.uint8))
    gatednorm.rmsnorm_gated_fp8(be.put(x), be.put(z), be.put(w), q=q, scales=be.put(np.full((3, 2), NAN, np.float32)))
    assert be.get(q).tobytes() == qref.tobytes()


# ------------------------------------------------------------------------------ bad inputs
def expect_error(be, name, x, z, w, q, s, y=None, **kw):
    outs = [o for o in (q, s, y) if o is not None]
    devs = [be.put(o) for o in outs]
    before = [be.get(d).tobytes() for d in devs]
    qd, sd = devs[0], devs[1]
    yd = devs[2] if y is not None else None
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated_fp8(be.put(x), be.put(z), be.put(w), q=qd, scales=sd, y=yd, **kw)
    msg = ei.value.message
    assert msg.split(":", 1)[0].strip().endswith(name), msg
    for d, b in zip(devs, before):
        assert be.get(d).tobytes() == b, "an output was modified by a failed call"
    return msg


def _outs(T=5, H=3, D=128, K=None, fmt="e4m3fn", sdt=np.float32):
    K = H * D // 128 if K is None else K
    return np.full((T, H * D), NAN_CODE[fmt], np.uint8).view(FP8[fmt]), np.full((T, K), 7, sdt)


@pytest.mark.parametrize("G,name", [(100, "group_size"), (48, "group_size"), (0, "group_size")])
def test_bad_group_size(be, rng, G, name):
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs()
    expect_error(be, name, x, z, w, q, s, group_size=G)


def test_group_not_dividing_row(be, rng):
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs()
    expect_error(be, "group_size", x, z, w, q, s, group_size=256)


@pytest.mark.parametrize("sshape", [(5, 2), (5, 4), (3, 5), (5,)])
def test_bad_scales_shape(be, rng, sshape):
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, _ = _outs()
    expect_error(be, "scales", x, z, w, q, np.full(sshape, 7, np.float32))


@pytest.mark.parametrize("sf,sdt", [("fp32", np.uint8), ("ue8m0", np.float16), ("e8m0", np.float32), ("e8m0_packed", np.uint8),
                                    ("e8m0_packed", np.float32)])
def test_bad_scales_dtype(be, rng, sf, sdt):
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs(sdt=sdt, K=1 if sf == "e8m0_packed" else None)
    expect_error(be, "scales", x, z, w, q, s, scale_format=sf)


def test_overlapping_scales_strides(be, rng):
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, _ = _outs()
    base = np.full(8, 7, np.float32)
    s = np.lib.stride_tricks.as_strided(base, (5, 3), (4, 4))
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated_fp8(x, z, w, q=q, scales=s)
    assert ei.value.message.startswith("scales:")


@pytest.mark.parametrize("fmt,qdt", [("e4m3fn", _dtypes.float8_e4m3fnuz), ("e4m3fnuz", _dtypes.float8_e4m3fn),
                                     ("e4m3fn", _dtypes.bfloat16), ("e4m3fn", np.int8)])
def test_q_dtype_not_matching_format(be, rng, fmt, qdt):
    x, z, w = make_inputs(rng, (5, 3, 128))
    _, s = _outs()
    q = np.zeros((5, 384), np.uint8).view(qdt) if np.dtype(qdt).itemsize == 1 else np.zeros((5, 384), qdt)
    msg = expect_error(be, "q", x, z, w, q, s, fp8_format=fmt)
    assert "format" in msg or "expected" in msg


@pytest.mark.parametrize("qshape", [(5, 383), (5, 3, 128), (4, 384)])
def test_bad_q_shape(be, rng, qshape):
    x, z, w = make_inputs(rng, (5, 3, 128))
    _, s = _outs()
    expect_error(be, "q", x, z, w, np.zeros(qshape, np.uint8).view(FP8["e4m3fn"]), s)


def test_q_not_contiguous(rng):
    x, z, w = make_inputs(rng, (5, 3, 128))
    qb = np.zeros((5, 768), np.uint8).view(FP8["e4m3fn"])
    _, s = _outs()
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated_fp8(x, z, w, q=qb[:, ::2], scales=s)
    assert ei.value.message.startswith("q:")


@pytest.mark.parametrize("opt,val,name", [("fp8_max", 449.0, "fp8_max"), ("fp8_max", 0.5, "fp8_max"),
                                          ("fp8_max", 1e-50, "fp8_max"),  # 0 in fp32 was read as "the format's max"
                                          ("fp8_max", float("nan"), "fp8_max"),
                                          ("amax_floor", 0.0, "amax_floor"),
                                          ("amax_floor", float("inf"), "amax_floor"), ("fp8_format", "e5m2", "fp8_format"),
                                          ("scale_format", "bf16", "scale_format"), ("quantize_rounded", 1, "quantize_rounded"),
                                          ("eps", -1.0, "eps"), ("eps", -1e-50, "eps"),  # -1e-50: fp32 -0.0 passed C
                                          ("scale_layout", "diag", "scale_layout")])
def test_bad_options(be, rng, opt, val, name):
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs()
    expect_error(be, name, x, z, w, q, s, **{opt: val})


@pytest.mark.parametrize("op", ["rmsnorm_gated_fp8", "group_quant_fp8", "rmsnorm"])
@pytest.mark.parametrize("val", [1e-50, -1e-50])
def test_amax_floor_below_fp32_range_shows_the_value_given(rng, op, val):
    """An amax_floor below fp32's range is 0 in the C field, and the refusal said "got 0" for
    the 1e-50 the caller gave: refused naming the value given; outputs untouched (hostile review)."""
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs()
    before = (q.tobytes(), s.tobytes())
    call = {"rmsnorm_gated_fp8": lambda: gatednorm.rmsnorm_gated_fp8(x, z, w, q=q, scales=s, amax_floor=val),
            "group_quant_fp8": lambda: gatednorm.group_quant_fp8(x.reshape(5, 384), q=q, scales=s, amax_floor=val),
            "rmsnorm": lambda: gatednorm.rmsnorm(x.reshape(5, 384), w.repeat(3), q=q, scales=s, y=False,
                                                 amax_floor=val)}[op]
    with pytest.raises(gatednorm.InvalidArgumentError) as ei:
        call()
    assert ei.value.message == "amax_floor: expected a finite value >= 1e-30, got %r" % val, ei.value.message
    assert (q.tobytes(), s.tobytes()) == before


def test_missing_x_is_named(rng):
    """x=None said "x: descriptor is NULL" (C's words) where rmsnorm_gated says "x: required"
    (a review of 2026-12-06); outputs untouched."""
    _, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs()
    before = (q.tobytes(), s.tobytes())
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"^x: required \(an array\); got None"):
        gatednorm.rmsnorm_gated_fp8(None, z, w, q=q, scales=s)
    assert (q.tobytes(), s.tobytes()) == before


def test_options_memo_keeps_types_and_zero_signs(rng):
    """The wrappers remember checked options by value and type: after a call with
    quantize_rounded=True, quantize_rounded=1 is still refused (True == 1); after
    weight_offset=0.0, weight_offset=-0.0 is its own option (w + -0.0 keeps a -0.0 weight's
    sign: every y is then a zero of the other sign, so every code flips its sign bit)."""
    x, z, w = make_inputs(rng, (2, 3, 128))
    gatednorm.rmsnorm_gated_fp8(x, z, w, quantize_rounded=True)
    with pytest.raises(gatednorm.InvalidArgumentError, match="quantize_rounded"):
        gatednorm.rmsnorm_gated_fp8(x, z, w, quantize_rounded=1)
    for call in (lambda **kw: gatednorm.rmsnorm_gated_fp8(x, z, w0, **kw)[0],
                 lambda **kw: gatednorm.add_rmsnorm(x.reshape(2, 384), x.reshape(2, 384).copy(), w0_row, fp8=True, y=False,
                                                    **kw).q):
        w0 = np.full(128, -0.0, w.dtype)
        w0_row = np.full(384, -0.0, w.dtype)
        plus = call(weight_offset=0.0).view(np.uint8)
        minus = call(weight_offset=-0.0).view(np.uint8)
        assert (plus & 0x7F == 0).all() and (minus & 0x7F == 0).all()
        assert ((plus ^ minus) == 0x80).all()
        # numpy zeros: -0.0 equals and hashes as 0.0, and a review found np.float64(-0.0)
        # served from np.float64(0.0)'s memo entry (only Python floats kept their sign)
        for zero, neg in ((np.float64(0.0), np.float64(-0.0)), (np.float32(0.0), np.float32(-0.0))):
            assert (call(weight_offset=zero).view(np.uint8) == plus).all()
            assert (call(weight_offset=neg).view(np.uint8) == minus).all()
    y0 = np.full((2, 128), -0.0, np.float32)
    for zero, neg in ((0.0, -0.0), (np.float64(0.0), np.float64(-0.0)), (np.float32(0.0), np.float32(-0.0))):
        assert not np.signbit(gatednorm.rmsnorm_gated(np.ones((2, 128), np.float32), None, y0[0], weight_offset=zero)).any()
        assert np.signbit(gatednorm.rmsnorm_gated(np.ones((2, 128), np.float32), None, y0[0], weight_offset=neg)).all()
    with pytest.raises(gatednorm.InvalidArgumentError, match="amax_floor"):
        gatednorm.group_quant_fp8(x.reshape(6, 128), amax_floor=0.0)


def test_fnuz_max_240(be, rng):
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs(fmt="e4m3fnuz")
    expect_error(be, "fp8_max", x, z, w, q, s, fp8_format="e4m3fnuz", fp8_max=448.0)


@pytest.mark.parametrize("which", ["q", "scales", "y"])
def test_outputs_overlapping_inputs(rng, which):
    T, H, D = 4, 2, 128
    buf = randn(rng, (T * H * D * 2,), _dtypes.bfloat16)
    x = buf[:T * H * D].reshape(T, H, D)
    z = randn(rng, (T, H, D), _dtypes.bfloat16)
    w = np.ones(D, np.float32)
    q = np.zeros((T, H * D), np.uint8).view(FP8["e4m3fn"])
    s = np.zeros((T, 2), np.float32)
    y = None
    if which == "q":
        q = buf.view(np.uint8)[:T * H * D].reshape(T, H * D).view(FP8["e4m3fn"])
    elif which == "scales":
        s = buf.view(np.float32)[:T * 2].reshape(T, 2)
    else:
        y = x
    before = buf.tobytes()
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated_fp8(x, z, w, q=q, scales=s, y=y)
    assert ei.value.message.startswith(which + ":"), ei.value.message
    assert buf.tobytes() == before


@pytest.mark.parametrize("shape", [(2, 0, 4, 128), (0, 3, 4, 128)])
def test_empty_token_dims(be, shape):
    """No token at all, whatever the leading dims: outputs of the asked shapes, as
    rmsnorm_gated gives (the token-dim merge once refused [2, 0, H, D])."""
    bf = DT["bf16"]
    x, z, w = be.put(np.empty(shape, bf)), be.put(np.empty(shape, bf)), be.put(np.ones(128, bf))
    q, s, y = gatednorm.rmsnorm_gated_fp8(x, z, w, group_size=128, scale_layout="col", copy_dtype="bfloat16")
    lead = shape[:-2]
    assert [tuple(be.get(a).shape) for a in (q, s, y)] == [lead + (512,), lead + (4,), shape]


def test_bad_copy_shape(be, rng):
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs()
    # the C argument is y_copy; the message names the wrapper's keyword, y
    assert expect_error(be, "y", x, z, w, q, s, np.full((5, 3, 64), NAN, np.float32)).startswith("y: ")


def test_copy_and_gate_of_another_shape_that_views_alike(be, rng):
    """z and the copy must have x's shape as given: [5, 384] views as [5, 3, 128] at
    head_dim = 128 too, and was accepted (a review)."""
    x, z, w = make_inputs(rng, (5, 3, 128))
    q, s = _outs()
    assert expect_error(be, "y", x, z, w, q, s, np.full((5, 384), NAN, np.float32), head_dim=128).startswith("y: ")
    assert expect_error(be, "z", x, z.reshape(5, 384), w, q, s, None, head_dim=128).startswith("z: ")


def test_token_dims_that_do_not_merge(rng):
    base = randn(rng, (4, 6, 2, 128), _dtypes.bfloat16)
    x = base[:, :3]  # [4, 3, 2, 128] with token strides (1536, 256): they do not merge
    w = np.ones(128, np.float32)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated_fp8(x, None, w, q=np.zeros((4, 3, 256), np.uint8), scales=np.zeros((4, 3, 2), np.float32))
    assert ei.value.message.startswith("x:"), ei.value.message


def test_params_init_and_struct_size():
    lib = _ffi._lib or _ffi.load()
    ffi = _ffi.ffi
    p = ffi.new("gatednorm_rmsnorm_gated_fp8_params *")
    assert lib.gatednorm_rmsnorm_gated_fp8_params_init(p, ffi.sizeof(p[0])) == 0
    assert p.norm_before_gate == 1 and p.quant.group_size == 128 and p.quant.fp8_max == 0 and p.quant.format == 0
    assert abs(p.quant.amax_floor - 1e-10) < 1e-16 and p.quant.scale_format == 0 and p.head_dim == 0
    assert lib.gatednorm_rmsnorm_gated_fp8_params_init(p, 12) < 0


def test_reserved_must_be_zero(rng):
    lib = _ffi._lib or _ffi.load()
    ffi = _ffi.ffi
    x, z, w = make_inputs(rng, (2, 1, 128), "fp32", "fp32")
    p = ffi.new("gatednorm_rmsnorm_gated_fp8_params *")
    lib.gatednorm_rmsnorm_gated_fp8_params_init(p, ffi.sizeof(p[0]))
    p.quant.reserved[1] = 3
    hold = []
    from gatednorm._adapters import convert
    q = np.zeros((2, 128), np.uint8)
    s = np.zeros((2, 1), np.float32)
    t = [convert(a, n, 0, hold, wr) for a, n, wr in ((x, "x", False), (w, "weight", False), (q, "q", True), (s, "scales", True))]
    st = lib.gatednorm_rmsnorm_gated_fp8(t[0], ffi.NULL, t[1], t[2], t[3], ffi.NULL, p, ffi.NULL)
    assert st < 0 and ffi.string(lib.gatednorm_last_error()).startswith(b"params.quant.reserved[1]:")
    assert not q.any() and not s.any()


def test_head_dim_not_dividing_names_head_dim(rng):
    """The message named group_size (128 here) when head_dim (48) did not divide x's last dim."""
    x = randn(rng, (5, 256), _dtypes.bfloat16)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated_fp8(x, None, np.ones(48, np.float32), head_dim=48, group_size=48)
    assert ei.value.message.startswith("x: last dim 256 is not a multiple of head_dim 48"), ei.value.message
