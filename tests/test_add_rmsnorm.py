"""gatednorm.add_rmsnorm / rmsnorm / group_quant_fp8 (docs/ops.md §3) against the float64
reference, on every backend (conftest's ``be``).

Every output is poisoned first with finite values no correct result holds (gatednorm.testing's
POISON_*: 7.0, FP8 code 0x35, E8M0 byte 0x85), so a NaN group left unwritten fails; a separate
residual_out too.  What is asserted:
  - the stored residual is bit for bit the fp32 sum rounded to the residual's dtype;
  - y within the project tolerance of the float64 norm of that stored value, and bit for bit
    what rmsnorm (the same op without residual) gives on the stored residual, whatever row
    kernel VEC the GPU takes for either (GATEDNORM_ROW_VEC forces one);
  - q and scales as in test_rmsnorm_gated_fp8 (half a quantum of clamp(y / s); scales within
    fp32 rounding), and under quantize_rounded bit for bit the §2 rule applied to y;
  - bad input names the argument and leaves every output (the residual too) untouched.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import gatednorm
from gatednorm import GatedNormError, _dtypes, reference
from gatednorm.testing import poison_scales, randn
from test_rmsnorm_gated_fp8 import (DT, FP8, NAN_CODE, POISON_VALUE, SCALE_DT, check_q, check_scales, encode_rule, new_scales,
                                    poison_codes, scale_values)

NAN = float("nan")


def same_values(a, b):
    return np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_nan=True)


def run(be, x, res, w, *, in_place=True, y=True, y_dtype=None, fp8=False, layout="row", x_base=None, res_base=None, **kw):
    """Runs the op with poisoned outputs; checks everything against the reference; returns
    (y, q, scale values, stored residual) as numpy (None where not asked)."""
    fmt = kw.get("fp8_format", "e4m3fn")
    sf = kw.get("scale_format", "fp32")
    G = kw.get("group_size", 128)
    ref = reference.add_rmsnorm(x, res, w, y=y, y_dtype=y_dtype, fp8=fp8, **kw)
    ydt = DT[y_dtype] if y_dtype else x.dtype
    tok, H = x.shape[:-1], x.shape[-1]
    args = {}
    if y:
        args["y_out"] = be.put(np.full(x.shape, POISON_VALUE, ydt))
    if fp8:
        K = H // G
        cols = (K + 3) // 4 if sf == "e8m0_packed" else K
        s0, sbase = new_scales(tok, cols, sf, layout)
        s_poison = scale_values(np.array(s0), sf, K)  # (s0 itself is the numpy backend's output)
        args["q"] = be.put(poison_codes(x.shape, fmt))
        args["scales"] = be.put(s0, sbase)
    resd = None if res is None else be.put(res, res_base)
    if res is not None and not in_place:
        args["residual_out"] = be.put(np.full(res.shape, POISON_VALUE, res.dtype))
    xd, wd = be.put(x, x_base), be.put(w)
    if res is None:
        out = gatednorm.rmsnorm(xd, wd, y=y, y_dtype=y_dtype, fp8=fp8, **args, **kw)
    else:
        out = gatednorm.add_rmsnorm(xd, resd, wd, y=y, y_dtype=y_dtype, fp8=fp8, **args, **kw)
    r_st = None
    if res is not None:
        assert out.residual is (resd if in_place else args["residual_out"])
        r_st = be.get(out.residual)
        assert r_st.dtype == res.dtype and same_values(r_st, ref["residual"]), "stored residual differs from the fp32 sum rounded"
    else:
        assert out.residual is None
    yv = None
    if y:
        assert out.y is args["y_out"]
        yv = be.get(out.y)
        cmp = reference.compare(yv, ref["y"], ydt)
        assert cmp.ok, cmp
    else:
        assert out.y is None
    q = s = None
    if fp8:
        assert out.q is args["q"] and out.scales is args["scales"]
        q = be.get(out.q)
        s_raw = be.get(out.scales)
        K = H // G
        s = scale_values(s_raw, sf, K).reshape(tuple(tok) + (K,))
        yq, sr = ref["y"], ref["scales"]
        if kw.get("quantize_rounded") and y:  # the op's own rounded y, bit for bit
            want_q, want_s = encode_rule(yv.reshape(-1, H), G, fmt, kw.get("fp8_max"), kw.get("amax_floor", 1e-10), sf)
            assert np.array_equal(q.view(np.uint8).reshape(-1, H), want_q)
            assert same_values(s.reshape(-1, K).astype(np.float32), want_s)
        if not kw.get("quantize_rounded"):
            check_scales(s, sr, sf)
            check_q(q, yq, s, fmt, kw.get("fp8_max"), G)
        elif not y:  # no copy to hold it to here (the callers compare a call that has one): every scale written
            assert not (s == s_poison.reshape(s.shape)).any()
        if sf == "e8m0_packed" and K % 4:
            b = np.ascontiguousarray(s_raw).view(np.uint8).reshape(s_raw.shape[:-1] + (-1,))
            assert not b[..., K:].any()
    else:
        assert out.q is None and out.scales is None
    return yv, q, s, r_st


def inputs(rng, shape, xd="bf16", rd="bf16", wd="fp32", residual=True):
    x = randn(rng, shape, DT[xd])
    r = randn(rng, shape, DT[rd], scale=3.0) if residual else None
    w = randn(rng, (shape[-1],), DT[wd], scale=0.5, shift=1.0)
    return x, r, w


# hidden: fast-path sizes (GPU: row in registers) and odd ones (generic kernel)
@pytest.mark.parametrize("H", [256, 2048, 4096, 5120, 7168, 100, 1000, 16392])
@pytest.mark.parametrize("residual", [True, False])
def test_hidden_sizes(be, rng, H, residual):
    x, r, w = inputs(rng, (5, H), residual=residual)
    G = 128 if H % 128 == 0 else (100 if H % 100 == 0 else 8)
    run(be, x, r, w, fp8=True, group_size=G)


@pytest.mark.parametrize("xd,rd,wd,yd", [("bf16", "bf16", "fp32", None), ("bf16", "bf16", "bf16", "fp32"), ("fp16", "fp16", "fp16", None),
                                         ("fp32", "fp32", "fp32", "bf16"), ("bf16", "fp32", "fp32", "fp16"), ("fp16", "bf16", "fp32", None)])
@pytest.mark.parametrize("in_place", [True, False])
def test_dtypes_and_residual_out(be, rng, xd, rd, wd, yd, in_place):
    x, r, w = inputs(rng, (7, 512), xd, rd, wd)
    r0 = r.copy()
    run(be, x, r, w, in_place=in_place, y_dtype=yd, fp8=True, weight_offset=0.5, eps=1e-5)
    assert r.tobytes() == r0.tobytes() or be.name == "cpu" and in_place  # numpy in place: updated


def test_in_place_numpy_updates_residual(rng):
    x, r, w = inputs(rng, (3, 256))
    want = reference.add_rmsnorm(x, r, w)["residual"]
    out = gatednorm.add_rmsnorm(x, r, w)
    assert out.residual is r and same_values(r, want)


def test_y_in_place_over_x(be, rng):
    """vLLM's fused_add_rms_norm: y written over x, the residual updated in place."""
    x, r, w = inputs(rng, (6, 1024))
    ref = reference.add_rmsnorm(x, r, w)
    xd, rd = be.put(x), be.put(r)
    out = gatednorm.add_rmsnorm(xd, rd, be.put(w), y_out=xd)
    assert out.y is xd
    assert reference.compare(be.get(xd), ref["y"], x.dtype).ok
    assert same_values(be.get(rd), ref["residual"])


def test_in_place_through_views_differing_in_unit_dim_strides(rng):
    """y_out = x and residual_out = residual through views whose size-1 dims carry other
    strides (torch's unsqueeze and DLPack exporters make such views of one buffer): the same
    elements, so in place, accepted (a review's mutant comparing those strides too refused them
    and passed every test)."""
    T, H = 2, 256
    x, r, w = inputs(rng, (T, 1, H))
    ref = reference.add_rmsnorm(x, r, w)

    def view(a, unit_stride):
        return gatednorm.from_pointer(a.ctypes.data, a.shape, a.dtype, strides=(H, unit_stride, 1), device="cpu", owner=a)

    xa, xb, ra, rb = view(x, H), view(x, 3), view(r, H), view(r, 5)
    out = gatednorm.add_rmsnorm(xa, ra, w, y_out=xb, residual_out=rb)
    assert out.y is xb and out.residual is rb
    assert same_values(r, ref["residual"])
    assert reference.compare(x, ref["y"], x.dtype).ok
    x2 = inputs(rng, (T, 1, H), residual=False)[0]
    ref2 = reference.rmsnorm(x2, w)
    gatednorm.rmsnorm(view(x2, H), w, y_out=view(x2, 7))
    assert reference.compare(x2, ref2["y"], x2.dtype).ok


@pytest.mark.parametrize("H", [256, 4096, 1000])
def test_normalizes_the_stored_residual(be, rng, H):
    """y equals what the unfused pipeline computes: add, round, store, then rmsnorm of it."""
    x, r, w = inputs(rng, (9, H), "bf16", "bf16")
    x *= 300  # sums that lose bits when rounded to bf16
    y, _, _, r_st = run(be, x, r, w, in_place=False, y_dtype="fp32")
    y2, _, _, _ = run(be, r_st, None, w, y_dtype="fp32")
    assert y.tobytes() == y2.tobytes()
    # and not the norm of the unrounded sum (the test can tell the two apart)
    unrounded = x.astype(np.float64) + r.astype(np.float64)
    wrong = unrounded / np.sqrt(np.mean(unrounded ** 2, -1, keepdims=True) + 1e-6) * w.astype(np.float64)
    assert not reference.compare(y, wrong, np.float32).ok


# An fp32 residual beside 16-bit x (an engine keeping its residual stream in fp32): on the GPU
# the row kernel's fp32-residual build up to hidden 8192 (run 95: the generic kernel took 3-5x
# its time per byte), the generic kernel past it or for misaligned rows.  Either way the
# stored residual is the fp32 sum, y is rmsnorm's of it bit for bit (the same sum order), and
# everything matches the reference (run() checks the outputs).
@pytest.mark.parametrize("H,T,xd,gpu_kernel", [(256, 3, "bf16", "add_rmsnorm.row.vec8.res32"),
                                               (4096, 9, "bf16", "add_rmsnorm.row.vec8.res32"),
                                               (4096, 300, "fp16", "add_rmsnorm.row.vec8.res32"),
                                               (8192, 5, "bf16", "add_rmsnorm.row.vec8.res32"),
                                               (1000, 5, "bf16", "add_rmsnorm.row.vec8.res32"),
                                               (8320, 5, "bf16", "add_rmsnorm.generic")])
@pytest.mark.parametrize("fp8", [False, True])
def test_fp32_residual(be, rng, monkeypatch, H, T, xd, gpu_kernel, fp8):
    monkeypatch.delenv("GATEDNORM_ROW_VEC", raising=False)
    x, r, w = inputs(rng, (T, H), xd, "fp32", "bf16")
    G = 128 if H % 128 == 0 else 8
    y, _, _, r_st = run(be, x, r, w, in_place=False, y_dtype="fp32", fp8=fp8, group_size=G)
    assert gatednorm.last_kernel() == (gpu_kernel if be.name == "gpu" else "cpu")
    assert r_st.tobytes() == (x.astype(np.float32) + r).tobytes()
    y2, _, _, _ = run(be, r_st, None, w, y_dtype="fp32")
    assert y.tobytes() == y2.tobytes()


# GPU: the row kernel's VEC (8 or 16 elements a lane) changes no bit.  The GPU takes VEC 16
# above hidden 8192 and where it measured faster (hip/add_rmsnorm.hip, preferred_vec; 9 rows
# here: the split layout's early-weight build by default at hidden 2048-8192 with weight and
# copy of x's dtype and no FP8 outputs, else VEC 8 unless forced); the sum of squares has one order for both
# (row_sum_squares); GATEDNORM_ROW_VEC (read at each call) forces either where legal (16
# needs hidden % 16 == 0).  VEC 16 has two builds: weight and copy of x's dtype (32
# registers, the weight read after the row sum) and any other dtypes (the fp32 copy here);
# "16s" / "16se" force the split layout (two 8-element chunks a lane, a span apart; the weight
# read after / beside x) where the first build would run without FP8 outputs, else the
# contiguous one.  2176 and 4352 are odd counts of spans (2176's last one half full), so
# the last 32 lanes' second chunks lie past hidden; 16384 is the widest row (1024 lanes).
# On the CPU backends the variable changes nothing and the test checks the same equalities.
@pytest.mark.parametrize("H", [2000, 2048, 2176, 4096, 4352, 5120, 7168, 12288, 16384])
@pytest.mark.parametrize("variant", ["fp32_copy", "bf16_copy", "fp8", "fp8_bf16_copy"])
def test_row_vec_changes_no_bit(be, rng, monkeypatch, H, variant):
    G = 128 if H % 128 == 0 else 16
    kw = {"fp32_copy": dict(y_dtype="fp32"), "bf16_copy": dict(y_dtype="bf16"),
          "fp8": dict(fp8=True, quantize_rounded=True, group_size=G),  # an fp32 weight: VEC 16 is the 56-register build
          "fp8_bf16_copy": dict(fp8=True, quantize_rounded=True, group_size=G, y_dtype="bf16")}[variant]
    check_row_vec_changes_no_bit(be, rng, monkeypatch, H, kw)


# G = 512: 64 lanes a group at VEC 8 (over the 32-lane limit), 32 at VEC 16, so whatever width
# an op prefers, both must land on the row kernel at 16 (the generic kernel sums squares in
# another order: a review found add_rmsnorm there while rmsnorm took the row kernel).
@pytest.mark.parametrize("H", [2048, 4096])
def test_row_vec_wide_group_no_bit(be, rng, monkeypatch, H):
    check_row_vec_changes_no_bit(be, rng, monkeypatch, H, dict(fp8=True, group_size=512, y_dtype="fp32"))


def check_row_vec_changes_no_bit(be, rng, monkeypatch, H, kw):
    x, r, w = inputs(rng, (9, H), "bf16", "bf16", "bf16" if kw.get("y_dtype") == "bf16" else "fp32")
    x *= 300  # sums that lose bits when rounded to bf16
    fp8 = kw.get("fp8", False)
    got = {}
    for vec in (None, "8", "16", "16s", "16se"):
        if vec is None:
            monkeypatch.delenv("GATEDNORM_ROW_VEC", raising=False)
        else:
            monkeypatch.setenv("GATEDNORM_ROW_VEC", vec)
        y, q, s, r_st = run(be, x, r, w, in_place=False, **kw)
        y2, q2, s2, _ = run(be, r_st, None, w, **kw)
        assert y.tobytes() == y2.tobytes(), "add_rmsnorm's y is not rmsnorm's on the stored residual (GATEDNORM_ROW_VEC=%s)" % vec
        if fp8:
            assert q.tobytes() == q2.tobytes() and s.tobytes() == s2.tobytes()
        got[vec] = (y.tobytes(), r_st.tobytes(), None if q is None else q.tobytes(), None if s is None else s.tobytes())
        if be.name == "gpu" and vec in ("16s", "16se") and kw.get("y_dtype") == "bf16":  # weight and copy of x's dtype
            assert gatednorm.last_kernel() == "add_rmsnorm.row.vec" + ("16" if fp8 else vec), (vec, gatednorm.last_kernel())
    assert all(got[v] == got[None] for v in ("8", "16", "16s", "16se")), "the forced VEC changed a bit"


# Many rows (300: more than one block an SM) with weight and copy of x's dtype: on the GPU
# VEC 16, by default (without FP8 outputs the split layout, its early-weight build at 2048
# and 4096 and its late one at 7168; with them the contiguous layout at 7168) or forced
# (contiguous, split late or early weight).  Against the reference, every output
# combination, fp16 and bf16.
@pytest.mark.parametrize("H", [2048, 4096, 7168])
@pytest.mark.parametrize("xd", ["bf16", "fp16"])
@pytest.mark.parametrize("variant", ["rmsnorm", "add", "add_fp8_copy", "rmsnorm_fp8"])
@pytest.mark.parametrize("vec", [None, "16", "16s", "16se"])
def test_many_rows_same_dtypes(be, rng, monkeypatch, H, xd, variant, vec):
    if vec:
        monkeypatch.setenv("GATEDNORM_ROW_VEC", vec)
    x, r, w = inputs(rng, (300, H), xd, xd, xd, residual=variant.startswith("add"))
    x[7] *= 1e3  # a row far from the others' scale
    kw = dict(fp8=True, group_size=128) if "fp8" in variant else {}
    run(be, x, r, w, in_place=False, y=variant != "rmsnorm_fp8", **kw)
    if vec in ("16s", "16se") and be.name == "gpu":  # the hook took the split layout (contiguous with FP8)
        assert gatednorm.last_kernel() == "add_rmsnorm.row.vec" + ("16" if "fp8" in variant else vec)


# A misaligned input residual (rows 2 bytes past 16-byte alignment) sends add_rmsnorm to the
# GPU's generic kernel, while rmsnorm of the stored (aligned) residual takes the row kernel:
# the generic kernel sums squares in the row kernel's order (hip/add_rmsnorm.hip,
# generic_sum_squares), so y, q and scales still agree bit for bit.
# Many rows only at the smaller hidden sizes: the large rows are covered at T = 9.
@pytest.mark.parametrize("T, H", [(9, 2048), (9, 7168), (9, 16384), (9, 20000), (300, 2048), (300, 7168)])
@pytest.mark.parametrize("fp8", [False, True])
def test_misaligned_residual_same_bits(be, rng, H, T, fp8):
    x, _, w = inputs(rng, (T, H), "bf16", "bf16", "bf16", residual=False)
    x *= 300  # sums that lose bits when rounded to bf16
    rb = randn(rng, (T, H + 1), DT["bf16"], scale=3.0)
    r = rb[:, 1:]
    G = 128 if H % 128 == 0 else 16
    kw = dict(fp8=True, quantize_rounded=True, group_size=G) if fp8 else {}
    y, q, s, r_st = run(be, x, r, w, in_place=False, res_base=rb, **kw)
    y2, q2, s2, _ = run(be, r_st, None, w, **kw)
    assert y.tobytes() == y2.tobytes(), "add_rmsnorm (misaligned residual) is not rmsnorm on the stored residual"
    if fp8:
        assert q.tobytes() == q2.tobytes() and s.tobytes() == s2.tobytes()


# Which kernel the size rules pick (hip/add_rmsnorm.hip, preferred_vec / row_vec), read back
# through gatednorm.last_kernel(): "cpu" for host arrays; on the GPU the row kernel's VEC by
# hidden, rows, residual, FP8 outputs and dtypes, the generic kernel where the row kernel
# cannot go.  (op, T, hidden, residual, fp8, weight dtype, misaligned residual) -> GPU kernel.
KERNEL_CHOICES = [
    ("rmsnorm", 9, 4096, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 256, 4096, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 257, 4096, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 300, 4096, False, False, "fp32", False, "add_rmsnorm.row.vec8"),
    ("rmsnorm", 9, 2048, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 9, 1024, False, False, "bf16", False, "add_rmsnorm.row.vec8"),
    ("rmsnorm", 9, 4096, False, False, "fp32", False, "add_rmsnorm.row.vec8"),
    ("rmsnorm", 511, 4096, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 512, 4096, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 513, 4096, False, False, "bf16", False, "add_rmsnorm.row.vec16s"),
    ("rmsnorm", 2047, 4096, False, False, "bf16", False, "add_rmsnorm.row.vec16s"),
    ("rmsnorm", 2048, 4096, False, False, "bf16", False, "add_rmsnorm.row.vec16"),
    ("rmsnorm", 1024, 4096, False, False, "fp32", False, "add_rmsnorm.row.vec8"),
    ("rmsnorm", 2048, 4096, False, False, "fp32", False, "add_rmsnorm.row.vec8"),
    ("rmsnorm", 1024, 4096, False, True, "bf16", False, "add_rmsnorm.row.vec8"),
    ("rmsnorm", 128, 7168, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 257, 7168, False, False, "bf16", False, "add_rmsnorm.row.vec16s"),
    ("rmsnorm", 512, 5120, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 513, 5120, False, False, "bf16", False, "add_rmsnorm.row.vec16s"),
    ("rmsnorm", 384, 6144, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 385, 6144, False, False, "bf16", False, "add_rmsnorm.row.vec16s"),
    ("add", 384, 6144, True, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("add", 257, 7168, True, False, "bf16", False, "add_rmsnorm.row.vec16s"),
    ("rmsnorm", 1024, 2048, False, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("rmsnorm", 1025, 2048, False, False, "bf16", False, "add_rmsnorm.row.vec16s"),
    ("rmsnorm", 128, 7168, False, True, "bf16", False, "add_rmsnorm.row.vec16"),
    ("rmsnorm", 127, 7168, False, True, "bf16", False, "add_rmsnorm.row.vec8"),
    ("rmsnorm", 127, 7168, False, False, "fp32", False, "add_rmsnorm.row.vec8"),
    ("rmsnorm", 9, 12288, False, False, "bf16", False, "add_rmsnorm.row.vec16"),
    ("rmsnorm", 9, 12288, False, False, "fp32", False, "add_rmsnorm.row.vec16.dtypes"),
    ("rmsnorm", 9, 20000, False, False, "bf16", False, "add_rmsnorm.generic"),
    ("add", 2048, 4096, True, False, "bf16", False, "add_rmsnorm.row.vec8"),
    ("add", 1024, 4096, True, False, "bf16", False, "add_rmsnorm.row.vec8"),
    ("add", 16, 4096, True, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("add", 256, 7168, True, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("add", 300, 7168, True, False, "bf16", False, "add_rmsnorm.row.vec16s"),
    ("add", 512, 4096, True, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("add", 1024, 2048, True, False, "bf16", False, "add_rmsnorm.row.vec16se"),
    ("add", 1025, 2048, True, False, "bf16", False, "add_rmsnorm.row.vec8"),
    ("add", 300, 7168, True, False, "fp32", False, "add_rmsnorm.row.vec8"),
    ("add", 300, 4096, True, True, "bf16", False, "add_rmsnorm.row.vec8"),
    ("add", 300, 7168, True, True, "bf16", False, "add_rmsnorm.row.vec16"),
    ("add", 300, 7168, True, True, "bf16", True, "add_rmsnorm.generic"),
    ("group_quant", 9, 7168, False, True, None, False, "group_quant_fp8.flat"),
    ("group_quant", 128, 7168, False, True, None, False, "group_quant_fp8.flat"),
]


@pytest.mark.parametrize("op,T,H,res,fp8,wd,misaligned,gpu_kernel", KERNEL_CHOICES)
def test_kernel_choice(be, rng, monkeypatch, op, T, H, res, fp8, wd, misaligned, gpu_kernel):
    monkeypatch.delenv("GATEDNORM_ROW_VEC", raising=False)
    x = randn(rng, (T, H), DT["bf16"])
    kw = dict(group_size=128 if H % 128 == 0 else 16)
    if op == "group_quant":
        gatednorm.group_quant_fp8(be.put(x), **kw)
    else:
        w = be.put(randn(rng, (H,), DT[wd], shift=1.0))
        if fp8:
            kw["fp8"] = True
        if res:
            rb = randn(rng, (T, H + 1), DT["bf16"])
            r = rb[:, 1:] if misaligned else np.ascontiguousarray(rb[:, :H])
            gatednorm.add_rmsnorm(be.put(x), be.put(r, rb if misaligned else None), w, **kw)
        else:
            gatednorm.rmsnorm(be.put(x), w, **kw)
    if be.name == "gpu":
        gatednorm.synchronize()
    assert gatednorm.last_kernel() == (gpu_kernel if be.name == "gpu" else "cpu")


@pytest.mark.parametrize("yd", ["bf16", "fp16", None])
@pytest.mark.parametrize("fmt", list(FP8))
@pytest.mark.parametrize("sf", ["fp32", "ue8m0"])
@pytest.mark.parametrize("H", [2048, 1000])
def test_dual_outputs_bit_consistent(be, rng, yd, fmt, sf, H):
    G = 128 if H % 128 == 0 else 40
    x, r, w = inputs(rng, (11, H), "bf16", "bf16", "bf16")
    x[3] *= 1e-3
    run(be, x, r, w, y_dtype=yd, fp8=True, quantize_rounded=True, fp8_format=fmt, scale_format=sf, group_size=G)


def test_quantize_rounded_without_y_rounds_to_x_dtype(be, rng):
    x, r, w = inputs(rng, (5, 512), "fp16", "fp16")
    _, q1, s1, _ = run(be, x, r, w, in_place=False, y_dtype="fp16", fp8=True, quantize_rounded=True)
    _, q2, s2, _ = run(be, x, r, w, in_place=False, y=False, fp8=True, quantize_rounded=True)
    assert q1.tobytes() == q2.tobytes() and s1.tobytes() == s2.tobytes()


@pytest.mark.parametrize("sf", list(SCALE_DT))
@pytest.mark.parametrize("layout", ["row", "col", "col_pad4"])
def test_scale_formats_and_layouts(be, rng, sf, layout):
    x, r, w = inputs(rng, (13, 1536))
    run(be, x, r, w, fp8=True, y=False, scale_format=sf, layout=layout, fp8_format="e4m3fnuz", fp8_max=224.0)


def test_strided_rows(be, rng):
    T, H = 7, 2048
    xb = randn(rng, (T, 3 * H), _dtypes.bfloat16)
    rb = randn(rng, (T, 2 * H), _dtypes.bfloat16)
    w = randn(rng, (H,), _dtypes.float32, shift=1.0)
    x, r = xb[:, H:2 * H], rb[:, :H]
    run(be, x, r, w, in_place=False, fp8=True, x_base=xb, res_base=rb)
    run(be, x[1::2], r[::2][:3], w, fp8=True, x_base=xb, res_base=rb)


def test_leading_dims(be, rng):
    x, r, w = inputs(rng, (2, 3, 256))
    run(be, x, r, w, fp8=True, scale_format="e8m0", layout="col")


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("H", [2048, 1000])
def test_eps(be, rng, residual, H):
    """eps read on every path (the row kernel at 2048, the generic one at 1000): small inputs,
    where eps = 1e-2 is most of mean(x^2), match the reference and not the default eps."""
    x, r, w = inputs(rng, (6, H), residual=residual)
    x = (x.astype(np.float32) * 0.02).astype(x.dtype)
    r = None if r is None else (r.astype(np.float32) * 0.01).astype(r.dtype)
    G = 128 if H % 128 == 0 else 100
    y, _, s, _ = run(be, x, None if r is None else r.copy(), w, fp8=True, group_size=G, eps=1e-2)
    ref_default = reference.add_rmsnorm(x, r, w, fp8=True, group_size=G)
    assert not reference.compare(y, ref_default["y"], y.dtype).ok
    assert not np.allclose(s, ref_default["scales"], rtol=1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dt", ["fp32", "bf16"])
def test_zero_and_nan_inf_rows(be, rng, bad, dt):
    x, r, w = inputs(rng, (4, 512), dt, dt, "fp32")
    x[1] = 0.0
    r[1] = 0.0
    x[2, 7] = bad
    _, q, s, _ = run(be, x, r, w, fp8=True, amax_floor=1e-6)
    assert (q.astype(np.float32)[1] == 0).all() and (s[1] == np.float32(np.float32(1e-6) / np.float32(448.0))).all()
    # an infinite element: rstd 0, that element NaN: every group of the row has a NaN scale
    # only if NaN reached it, so ask the reference which groups are NaN
    assert np.isnan(s[2]).any() and not np.isnan(s[[0, 1, 3]]).any()
    assert np.isnan(q.astype(np.float32)[2].reshape(s.shape[1], -1)[np.isnan(s[2])]).all()


def check_group_quant(be, x, G, sf, layout, x_base=None):
    """group_quant_fp8 of x (a view of x_base, if given) into poisoned q and scales of the
    layout, checked against the reference: scales within fp32 rounding, codes within half a
    quantum."""
    _, sr = reference.group_quant_fp8(x, group_size=G, scale_format=sf)
    K = x.shape[1] // G
    cols = (K + 3) // 4 if sf == "e8m0_packed" else K
    s0, sbase = new_scales((x.shape[0],), cols, sf, layout)
    qd = be.put(poison_codes(x.shape, "e4m3fn"))
    sd = be.put(s0, sbase)
    q, s = gatednorm.group_quant_fp8(be.put(x, x_base), group_size=G, scale_format=sf, q=qd, scales=sd)
    assert q is qd and s is sd
    sv = scale_values(be.get(sd), sf, K)
    check_scales(sv, sr, sf)
    check_q(be.get(qd), x.astype(np.float64), sv, "e4m3fn", None, G)


def test_group_quant_fp8(be, rng):
    for xd, G, sf, layout in [("bf16", 128, "fp32", "row"), ("fp16", 64, "e8m0_packed", "col_pad4"), ("fp32", 100, "ue8m0", "col")]:
        x = randn(rng, (9, 1000 if G == 100 else 1024), DT[xd])
        x[2, 5] = np.nan
        x[4, 3 * G + 1] = np.inf  # an infinite element: its group's scale is NaN, as a NaN's
        x[6, G - 1] = -np.inf
        check_group_quant(be, x, G, sf, layout)
    # new outputs
    q, s = gatednorm.group_quant_fp8(be.put(x), group_size=G)
    assert tuple(be.get(q).shape) == x.shape and tuple(be.get(s).shape) == (9, 10)


def test_group_quant_consumer_scale_buffers(be, rng):
    """Scale buffers consumers allocate beyond the three named layouts (a review): E8M0 bytes
    column-major with T padded to 16 (16-byte columns: DeepGEMM's TMA rule pads T to 16 /
    element size, and col_pad4's 4 suits only 4-byte scales), and a batched [B, K, M_pad]
    buffer (M padded a batch, as DeepGEMM's grouped layouts and vLLM's batched TMA-aligned
    scales are; a [B, M, hidden] x's tokens flatten to one T, so that buffer is filled a
    batch at a time, through each batch's slice: docs/ops.md).  Each against the float64
    reference; the padding keeps its poison."""
    G, T, H = 64, 5, 256
    K = H // G
    for sf, pad in (("e8m0", 16), ("fp32", 4), ("e8m0_packed", 4)):
        x = randn(rng, (T, H), DT["bf16"])
        cols = (K + 3) // 4 if sf == "e8m0_packed" else K
        base = poison_scales((cols, pad * ((T + pad - 1) // pad)), sf)
        sd = be.put(base.T[:T], base)
        qd = be.put(poison_codes(x.shape, "e4m3fn"))
        q, s = gatednorm.group_quant_fp8(be.put(x), group_size=G, scale_format=sf, q=qd, scales=sd)
        assert q is qd and s is sd
        sv = scale_values(be.get(sd), sf, K)
        check_scales(sv, reference.group_quant_fp8(x, group_size=G, scale_format=sf)[1], sf)
        check_q(be.get(qd), x.astype(np.float64), sv, "e4m3fn", None, G)
        padding = be.get_base(sd, base)[:, T:]
        assert padding.size and (padding.view(np.uint8) == poison_scales(padding.shape, sf).view(np.uint8)).all(), sf
    B, M = 3, 3
    x = randn(rng, (B, M, H), DT["bf16"])
    base = poison_scales((B, K, 4), "fp32")  # [B, K, M_pad]
    _, ref = reference.group_quant_fp8(x.reshape(B * M, H), group_size=G)
    for b in range(B):
        sd, qd = be.put(base[b].T[:M], base), be.put(poison_codes((M, H), "e4m3fn"))
        gatednorm.group_quant_fp8(be.put(x[b]), group_size=G, q=qd, scales=sd)
        sv = be.get(sd).astype(np.float64)
        check_scales(sv, ref[b * M:(b + 1) * M], "fp32")
        check_q(be.get(qd), x[b].astype(np.float64), sv, "e4m3fn", None, G)
    assert (be.get_base(sd, base)[:, :, M:] == poison_scales((1,), "fp32")[0]).all()


@pytest.mark.parametrize("rd", ["fp16", "bf16"])
def test_residual_store_is_rne_everywhere(be, rd):
    """The stored residual of an fp32 x and a zero residual is x + 0 rounded once to the
    residual's dtype, bit for bit, as ml_dtypes / numpy round: random fp32 bit patterns, ties and their
    neighbours, subnormals, the overflow edge (fp16: 65504 stays, 65520 is inf) and NaN (a
    NaN, never inf). No other test reached fp16's overflow edge or a NaN stored to fp16
    (mutation review)."""
    rng = np.random.default_rng(11)
    big = 65504.0 if rd == "fp16" else float(ml_dtypes.finfo(DT["bf16"]).max)
    specials = np.array([big, -big, big * (1 + 2 ** -12), 65519.99, 65520.0, np.nan, -np.nan, np.inf, -np.inf, 2 ** -24,
                         2 ** -25, 3 * 2 ** -26, 6.1e-5, 1.5 * 2 ** -15, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -11,
                         1 + 3 * 2 ** -11, -0.0], np.float32)
    patterns = rng.integers(0, 2 ** 32, 1 << 16, dtype=np.uint64).astype(np.uint32).view(np.float32)
    scaled = (rng.standard_normal(4096) * np.exp2(rng.integers(-26, 17, 4096))).astype(np.float32)
    x = np.concatenate([specials, patterns, scaled])
    x = x[:x.size // 256 * 256].reshape(-1, 256)
    r = np.zeros(x.shape, DT[rd])
    with np.errstate(invalid="ignore", over="ignore"):  # signalling NaN patterns; overflow to inf
        want = (x + r.astype(np.float32)).astype(DT[rd])  # the fp32 sum (-0 + 0 is +0), rounded
    out = gatednorm.add_rmsnorm(be.put(x), be.put(r), be.put(np.ones(256, np.float32)), y_dtype="fp32")  # r in place
    got = be.get(out.residual)
    nan = np.isnan(want.astype(np.float32))
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
    bad = np.nonzero(got.view(np.uint16)[~nan] != want.view(np.uint16)[~nan])[0]
    assert bad.size == 0, [(float(x[~nan][i]), hex(got.view(np.uint16)[~nan][i]), hex(want.view(np.uint16)[~nan][i])) for i in bad[:5]]


# The row kernels add 16-bit x and residual pairs with the packed hardware add (numerics.h's
# add_rounded_x2: one rounding of the exact sum, the same value as the fp32 sum rounded by
# the double-rounding argument there).  Held to the fp32 rule bit for bit at every row width
# and layout, with and without FP8 outputs (their builds differ): random bit patterns of both
# (subnormals, exponents far apart, inf, NaN), exact ties at half an ulp of x and their
# neighbours a few bits off, the overflow edge (max + max, max + half an ulp: a tie that
# rounds to inf) and signed zeros.
@pytest.mark.parametrize("rd", ["bf16", "fp16"])
@pytest.mark.parametrize("vec,fp8", [(None, False), ("8", False), ("16", False), ("16s", False), ("16se", False), ("8", True),
                                     ("16", True)])
def test_residual_sum_of_16bit_pairs_is_rne(be, monkeypatch, rd, vec, fp8):
    if vec:
        monkeypatch.setenv("GATEDNORM_ROW_VEC", vec)
    dt = DT[rd]
    rng = np.random.default_rng(12)
    T, H = 64, 2048
    bits = lambda n: rng.integers(0, 1 << 16, n, dtype=np.uint32).astype(np.uint16).view(dt)
    x, r = bits(T * H), bits(T * H)
    # ties: r = +-half an ulp of x (a power of two), times 1 +- one unit of r's last place
    n = T * H // 4
    xs = rng.standard_normal(n).astype(np.float32) * np.exp2(rng.integers(-12, 12, n)).astype(np.float32)
    xt = xs.astype(dt)
    ulp = np.spacing(np.abs(xt)).astype(np.float32)
    p = 8 if rd == "bf16" else 11
    nudge = rng.choice(np.array([1.0, 1 + 2.0 ** (1 - p), 1 - 2.0 ** -p], np.float32), n)
    rt = (ulp / 2 * nudge * rng.choice(np.array([1.0, -1.0], np.float32), n)).astype(dt)
    x[:n], r[:n] = xt, rt
    big = float(ml_dtypes.finfo(dt).max)
    half_ulp_of_big = 16.0 if rd == "fp16" else 2.0 ** 119
    edge = np.array([[big, big], [big, half_ulp_of_big], [big, -half_ulp_of_big],
                     [-big, -big], [0.0, -0.0], [-0.0, -0.0], [-0.0, 0.0], [np.inf, -np.inf], [np.nan, 1.0], [1.0, -1.0]], np.float32)
    x[n:n + len(edge)], r[n:n + len(edge)] = edge[:, 0].astype(dt), edge[:, 1].astype(dt)
    x, r = x.reshape(T, H), r.reshape(T, H)
    with np.errstate(invalid="ignore", over="ignore"):
        want = (x.astype(np.float32) + r.astype(np.float32)).astype(dt)
    out = gatednorm.add_rmsnorm(be.put(x), be.put(r), be.put(np.ones(H, dt)), fp8=fp8)  # residual in place
    got = be.get(out.residual)
    if be.name == "gpu":  # the build each case is for ran (the split ones only without FP8 outputs)
        assert gatednorm.last_kernel() == "add_rmsnorm.row.vec" + (vec or "16se"), gatednorm.last_kernel()
    nan = np.isnan(want.astype(np.float32))
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
    g, w = got.view(np.uint16)[~nan], want.view(np.uint16)[~nan]
    bad = np.nonzero(g != w)[0]
    xf, rf = x[~nan], r[~nan]
    assert bad.size == 0, [(float(xf[i]), float(rf[i]), hex(g[i]), hex(w[i])) for i in bad[:5]]


def test_residual_out_takes_a_read_only_residual(rng):
    """With residual_out the residual is read only, so a read-only array is taken (refused as
    an output before, review); in place it is refused naming residual, nothing written."""
    x, r, w = inputs(rng, (3, 256))
    r.flags.writeable = False
    want = reference.add_rmsnorm(x, r, w)
    out = gatednorm.add_rmsnorm(x, r, w, residual_out=np.full(r.shape, POISON_VALUE, r.dtype))
    assert same_values(out.residual, want["residual"]) and reference.compare(out.y, want["y"], x.dtype).ok
    y = np.full(x.shape, POISON_VALUE, x.dtype)
    bad(lambda: gatednorm.add_rmsnorm(x, r, w, y_out=y), "residual", [y])


# A y past fp32's range (a huge weight): the library's fp32 y is infinite there, so the group
# gets a NaN scale and NaN codes and the fp32 copy holds the infinity; the reference models
# fp32's range (reference.fp32_range), so run() checks every output against it.  (It once
# quantized the float64 y to finite codes.)
@pytest.mark.parametrize("fmt", ["e4m3fn", "e4m3fnuz"])
def test_y_past_fp32_range(be, rng, fmt):
    x, _, _ = inputs(rng, (3, 256), "bf16", "bf16", "fp32", residual=False)
    w = np.full(256, 2e38, np.float32)
    w[128:] = 1.0  # the second group stays finite
    x[1, 5] = -4.0 * np.abs(x[1]).max()  # an element whose y overflows to -inf
    y, q, s, _ = run(be, x, None, w, y_dtype="fp32", fp8=True, fp8_format=fmt, group_size=128)
    assert np.isinf(y[1, 5]) and y[1, 5] < 0
    assert np.isnan(s[:, 0]).all() and np.isfinite(s[:, 1]).all(), s
    assert (q.view(np.uint8)[:, :128] == NAN_CODE[fmt]).all()


@pytest.mark.parametrize("sf", ["ue8m0", "e8m0"])
def test_ue8m0_scale_is_held_at_2_127(be, sf):
    """Regression: with fp8_max < 2 a group near fp32's largest value rounded its UE8M0 scale up
    to 2^128 = inf (E8M0 byte 255, the NaN scale) and its codes to 0.  The rule holds the scale
    at 2^127 (ops.md §2), and the codes saturate at fp8_max, as the reference says."""
    x = np.full((2, 64), 3e38, np.float32)
    x[:, 32:] = 1.5  # a second, ordinary group
    x[1, :32] *= -1
    q, sc = gatednorm.group_quant_fp8(be.put(x), group_size=32, fp8_max=1.0, scale_format=sf)
    qr, sr = reference.group_quant_fp8(x, group_size=32, fp8_max=1.0, scale_format=sf)
    sv = scale_values(be.get(sc), sf, 2)
    assert (sv[:, 0] == 2.0 ** 127).all() and (sr[:, 0] == 2.0 ** 127).all(), sv
    assert np.array_equal(sv, sr)
    qv = be.get(q).astype(np.float64)
    assert np.array_equal(qv, qr.astype(np.float64)) and (np.abs(qv[:, :32]) == 1.0).all()


# group_quant_fp8 over more blocks than the GPU holds at once: the flat kernel (the default;
# 4999 x 1024 leaves a partial last block) and the row kernel at VEC 8 and 16 (a block a
# row, forced by the hook): every row's codes and column-major scales, a NaN row and a row of
# another scale among them.  Rows padded by 40 elements at hidden 2176 (136 flat lanes a row):
# a warp of the flat kernel straddles two rows that are not adjacent in memory.
@pytest.mark.parametrize("T,H,xd,pad", [(1200, 7168, "bf16", 0), (4999, 1024, "fp16", 0), (333, 2176, "bf16", 0),
                                        (4099, 2176, "bf16", 40)])
@pytest.mark.parametrize("vec", [None, "8", "16"])
def test_group_quant_many_rows(be, rng, monkeypatch, T, H, xd, pad, vec):
    if vec:
        monkeypatch.setenv("GATEDNORM_ROW_VEC", vec)
    x_base = randn(rng, (T, H + pad), DT[xd])
    x = x_base[:, :H]
    x[T // 3] *= 300.0
    x[T - 1, 7] = np.nan
    check_group_quant(be, x, 128, "fp32", "col", x_base)


@pytest.mark.parametrize("shape", [(2, 0, 256), (0, 3, 256), (0, 256)])
@pytest.mark.parametrize("layout,sf", [("row", "fp32"), ("col", "ue8m0"), ("col_pad4", "e8m0_packed")])
def test_empty_token_dims(be, shape, layout, sf):
    """No token at all, whatever the leading dims: each op returns outputs of the asked shapes
    (the token-dim merge once refused [2, 0, D], which rmsnorm_gated accepts); argument
    checks still run on an empty call."""
    bf = DT["bf16"]
    x, r, w = be.put(np.empty(shape, bf)), be.put(np.empty(shape, bf)), be.put(np.ones(256, bf))
    lead, cols = shape[:-1], 1 if sf == "e8m0_packed" else 2
    y, q, s, res = gatednorm.add_rmsnorm(x, r, w, fp8=True, scale_layout=layout, scale_format=sf)
    assert [tuple(be.get(a).shape) for a in (y, q, s, res)] == [shape, shape, lead + (cols,), shape]
    assert tuple(be.get(gatednorm.rmsnorm(x, w)[0]).shape) == shape
    q, s = gatednorm.group_quant_fp8(x, scale_layout=layout, scale_format=sf)
    assert (tuple(be.get(q).shape), tuple(be.get(s).shape)) == (shape, lead + (cols,))
    with pytest.raises(GatedNormError, match="weight"):
        gatednorm.add_rmsnorm(x, r, be.put(np.ones(255, bf)))


# ------------------------------------------------------------------------- bad input
def bad(fn, name, outs, match=None):
    before = [o.tobytes() for o in outs]
    with pytest.raises(GatedNormError, match=match) as e:
        fn()
    assert str(e.value).startswith(name + ":") or (name + ":") in str(e.value), str(e.value)
    assert [o.tobytes() for o in outs] == before, "an output was written by a rejected call"


def test_bad_inputs(rng):
    x, r, w = inputs(rng, (4, 256))
    y = np.full(x.shape, NAN, x.dtype)
    ro = np.full(x.shape, NAN, r.dtype)
    q = np.full(x.shape, 0x7F, np.uint8).view(FP8["e4m3fn"])
    s = np.full((4, 2), NAN, np.float32)
    outs = [r, y, ro, q, s]
    A = gatednorm.add_rmsnorm
    bad(lambda: A(x, r[:, :128], w, y_out=y), "residual", outs)
    bad(lambda: A(x, r, w[:128], y_out=y), "weight", outs)
    bad(lambda: A(x, r, w, y_out=y[:3]), "y_out", outs)
    bad(lambda: A(x, r, w, y=False), "y", outs)
    bad(lambda: A(x, r, w, q=q, scales=s, group_size=96, y=False), "group_size", outs)
    bad(lambda: A(x, r, w, q=q, scales=s[:, :1], y=False), "scales", outs)
    bad(lambda: A(x, r, w, residual_out=r[::-1], y_out=y), "residual_out", outs)  # overlaps residual, not the same view
    bad(lambda: A(x, r, w, residual_out=ro.astype(np.float32), y_out=y), "residual_out", outs)  # dtype
    bad(lambda: A(x, r, w, residual_out=x, y_out=y), "residual_out", outs)  # overlaps x
    bad(lambda: A(x, r, w, y_out=r), "residual", outs)  # y_out over the residual updated in place ("residual: overlaps y_out")
    bad(lambda: A(x, r, w, q=q.view(np.uint16)[:, :128], scales=s, y=False), "q", outs)  # dtype
    bad(lambda: A(x.astype(np.int32), r, w, y_out=y), "x", outs)
    bad(lambda: A(x, r, w.astype(np.float64), y_out=y), "weight", outs)
    bad(lambda: A(x, r, w, y_out=y, eps=-1.0), "eps", outs)  # the keyword, not the C field params.eps
    bad(lambda: A(x, r, w, y_out=y, eps=-1e-50), "eps", outs, r"^eps: .* got -1e-50")  # fp32 -0.0 passed C
    # x missing: named as rmsnorm_gated names it, not as a NULL descriptor (a review of 2026-12-06)
    bad(lambda: A(None, r, w, y_out=y), "x", outs, r"^x: required")
    bad(lambda: gatednorm.rmsnorm(None, w, y_out=y), "x", outs, r"^x: required")
    bad(lambda: A(x, r, w, q=q, scales=s, scale_format="e8m0", y=False), "scales", outs)
    bad(lambda: gatednorm.rmsnorm(x, w, y=False), "y", outs)
    bad(lambda: gatednorm.group_quant_fp8(x, q=q, scales=s, group_size=100), "group_size", outs)
    bad(lambda: gatednorm.group_quant_fp8(x, q=q[:2], scales=s), "q", outs)
    # y_dtype with y=False would be ignored (quantize_rounded then rounds to x's dtype): refused
    bad(lambda: A(x, r, w, q=q, scales=s, y=False, y_dtype="float16", quantize_rounded=True), "y_dtype", outs)
    bad(lambda: A(x, r, w, y=False, y_out=y, q=q, scales=s), "y_out", outs)  # y=False, yet a y buffer
    bad(lambda: A(x, r, w, y_out=y, quantize_rounded=True), "quantize_rounded", outs)  # no FP8 output to round for
    bad(lambda: gatednorm.rmsnorm(x, w, y_out=y, quantize_rounded=np.True_), "quantize_rounded", outs)
    # an integer option past its C field's range is named as the caller spelled it (a review
    # saw "quant__group_size: int too big to convert")
    for g in (2**63, np.uint64(2**64 - 1)):
        bad(lambda: A(x, r, w, q=q, scales=s, y=False, group_size=g), "group_size", outs, r"^group_size: .* is out of range")
        bad(lambda: gatednorm.group_quant_fp8(x, q=q, scales=s, group_size=g), "group_size", outs,
            r"^group_size: .* is out of range")
    # a finite float option past fp32's range is named with its value (it reached C as inf)
    for name, v in (("eps", 1e300), ("weight_offset", -1e39), ("amax_floor", np.float64(1e40))):
        bad(lambda: A(x, r, w, q=q, scales=s, y=False, **{name: v}), name, outs, r"^%s: .*beyond fp32's range" % name)
    # a float option's message shows the value as given, not %g's six digits (448.0001 -> 448)
    before = [o.tobytes() for o in outs]
    with pytest.raises(GatedNormError, match="got 448.000092"):
        A(x, r, w, q=q, scales=s, y=False, fp8_max=448.0001)
    assert [o.tobytes() for o in outs] == before
