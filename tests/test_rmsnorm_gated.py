"""gatednorm.rmsnorm_gated against the float64 reference, on every backend.

Every output is poisoned with NaN first; every element must be written and lie within
reference.tolerance(): 0.5 ulp of the output dtype + 2e-5 relative (one rounding of an fp32
computation) + a tiny absolute term for subnormals.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import gatednorm
from gatednorm import GatedNormError, _dtypes, reference
from gatednorm.testing import randn

DT = {"bf16": _dtypes.bfloat16, "fp16": _dtypes.float16, "fp32": _dtypes.float32}
NAN = float("nan")


def make_inputs(rng, shape, xd, zd, wd, *, gate="before", weight_offset=0.0, group_size=None, xscale=1.0):
    D = group_size or shape[-1]
    x = randn(rng, shape, DT[xd], scale=xscale)
    z = None if gate == "none" else randn(rng, shape, DT[zd], scale=2.0)
    # weights around 1 (or around 0 for zero-centred "1 + w" weights), sign changes included
    w = randn(rng, (D,), DT[wd], scale=0.5, shift=0.0 if weight_offset else 1.0)
    return x, z, w


def opts(gate="before", activation="silu", weight_offset=0.0, group_size=None, eps=1e-6):
    """Op options.  gate: "before" = norm_before_gate (the default: norm(x) * act(z), Qwen3-Next),
    "after" = the gate enters the norm (norm(x * act(z)), Mamba2)."""
    return dict(norm_before_gate=gate != "after", activation=activation, weight_offset=weight_offset,
                group_size=group_size, eps=eps)


def run_and_check(be, x, z, w, od, kw, *, out=None, out_base=None):
    """Run on backend ``be`` with a NaN-poisoned out (or the given one); check against the
    reference; return the numpy result."""
    ref = reference.rmsnorm_gated(x, z, w, **kw)
    if out is None:
        out = np.full(x.shape, NAN, DT[od] if isinstance(od, str) else od)
    outb = be.put(out, out_base)
    res = gatednorm.rmsnorm_gated(be.put(x), be.put(z), be.put(w), out=outb, **kw)
    assert res is outb
    got = be.get(outb)
    assert got.shape == x.shape and got.dtype == out.dtype
    assert not np.isnan(got.astype(np.float32)).any(), "outputs left unwritten (still NaN)"
    cmp = reference.compare(got, ref, got.dtype)
    assert cmp.ok, cmp
    return got


# ------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("gate", ["before", "after"])
@pytest.mark.parametrize("xd,zd,wd,od", list(itertools.product(DT, DT, DT, DT)))
def test_dtype_combinations(be, rng, xd, zd, wd, od, gate):
    x, z, w = make_inputs(rng, (5, 3, 96), xd, zd, wd, gate=gate)
    run_and_check(be, x, z, w, od, opts(gate))


# ------------------------------------------------------------------------------ sizes
SIZES_D = [1, 7, 64, 96, 128, 256, 1000]
SIZES_T = [1, 3, 17, 1000]


@pytest.mark.parametrize("cfg", ["bf16", "fp32"])
@pytest.mark.parametrize("gate", ["before", "after", "none"])
@pytest.mark.parametrize("T", SIZES_T)
@pytest.mark.parametrize("D", SIZES_D)
def test_sizes(be, rng, D, T, gate, cfg):
    H = 3 if T * D <= 20000 else 1
    xd, wd, od = ("bf16", "fp32", "bf16") if cfg == "bf16" else ("fp32", "fp32", "fp32")
    x, z, w = make_inputs(rng, (T, H, D), xd, xd, wd, gate=gate)
    run_and_check(be, x, z, w, od, opts(gate))


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize("dt", list(DT))
@pytest.mark.parametrize("gate", ["before", "after"])
@pytest.mark.parametrize("shape", [(17, 4, 128), (3, 7)])
def test_sigmoid(be, rng, shape, gate, dt):
    x, z, w = make_inputs(rng, shape, dt, dt, dt, gate=gate)
    run_and_check(be, x, z, w, dt, opts(gate, activation="sigmoid"))


# Gate values far out on both sides, mixed within rows.  The GPU's sigmoid forms exp(-|z|) as
# the square of a flushing exp2 of half the argument (hip/numerics.h), so exp(-|z|)'s
# subnormals (|z| in (87, 103)) must survive it: silu(-88) = -88 e^-88 ~ -5e-37 is a normal
# fp32 number, which a flushed exponential would give as 0 (off by far more than the rule's
# 2^-126).  Large positive z saturates the sigmoid at 1.
EXTREME_Z = (0.0, -0.0, 1.0, -1.0, 20.0, -20.0, 50.0, -50.0, 80.0, -80.0, 87.0, -87.0, 87.5, -87.5, 88.0, -88.0,
             90.0, -90.0, 95.0, -95.0, 100.0, -100.0, 103.0, -103.0, 104.0, -104.0, 110.0, -110.0, 150.0, -150.0,
             200.0, -200.0)


@pytest.mark.parametrize("activation", ["silu", "sigmoid"])
@pytest.mark.parametrize("gate", ["before", "after"])
def test_gate_extremes(be, rng, gate, activation):
    n = len(EXTREME_Z)
    x, _, w = make_inputs(rng, (n, 2, n), "fp32", "fp32", "fp32")
    rows = np.arange(n)[:, None, None] + np.arange(2)[None, :, None] + np.arange(n)[None, None, :]
    z = np.asarray(EXTREME_Z, np.float32)[rows % n]  # every value in every column and row
    got = run_and_check(be, x, z, w, "fp32", opts(gate, activation=activation))
    if gate == "before" and activation == "silu":  # the subnormal exp(-|z|) reached the output
        tiny = np.isin(z, np.float32([-88.0, -90.0, -95.0]))
        assert np.all(got[tiny] != 0.0)


def test_activations_differ(be, rng):
    """silu, "swish" (the same), sigmoid and the two gate orders, each against the reference
    of its own option (which differ pairwise: the option reaches the kernel); "swish" gives
    silu's bits (a mutation mapping it to sigmoid passed every test)."""
    x, z, w = make_inputs(rng, (4, 2, 32), "fp32", "fp32", "fp32")
    combos = [(g, a) for g in ("before", "after") for a in ("silu", "sigmoid")]
    for (g1, a1), (g2, a2) in itertools.combinations(combos, 2):
        assert not np.allclose(reference.rmsnorm_gated(x, z, w, **opts(g1, activation=a1)),
                               reference.rmsnorm_gated(x, z, w, **opts(g2, activation=a2)))
    for g, a in combos:
        got = run_and_check(be, x, z, w, "fp32", opts(g, activation=a))
        if a == "silu":
            assert got.tobytes() == run_and_check(be, x, z, w, "fp32", opts(g, activation="swish")).tobytes()


@pytest.mark.parametrize("od", ["bf16", "fp16"])
def test_16bit_output_is_the_fp32_output_rounded(be, rng, od):
    """A 16-bit out is the fp32 out rounded once (RNE): the CPU's all-bf16 fast path and the
    GPU kernels compute the same fp32 y as their generic / fp32-out paths (docs/ops.md) — a
    one-ulp change of the fast path's silu passed the tolerance tests (mutation review)."""
    x, z, w = make_inputs(rng, (2048, 4, 128), "bf16", "bf16", "fp32")
    for g in ("before", "after"):
        for a in ("silu", "sigmoid"):
            y32 = run_and_check(be, x, z, w, "fp32", opts(g, activation=a))
            y16 = run_and_check(be, x, z, w, od, opts(g, activation=a))
            assert y16.tobytes() == y32.astype(DT[od]).tobytes(), (g, a)


@pytest.mark.parametrize("od", ["bf16", "fp16"])
def test_nan_row_stays_nan_in_16bit_out(be, od):
    """A NaN in x makes its row NaN in a 16-bit out too (stored as NaN, not inf), the other
    rows finite."""
    x = np.ones((2, 64), np.float32)
    x[1, 3] = np.nan
    out = be.put(np.full((2, 64), 7.0, DT[od]))
    y = be.get(gatednorm.rmsnorm_gated(be.put(x), None, be.put(np.ones(64, np.float32)), out=out)).astype(np.float32)
    assert np.isnan(y[1]).all() and np.isfinite(y[0]).all()


@pytest.mark.parametrize("gate", ["before", "after", "none"])
@pytest.mark.parametrize("dt", ["bf16", "fp32"])
def test_weight_offset(be, rng, gate, dt):
    x, z, w = make_inputs(rng, (9, 2, 128), dt, dt, dt, gate=gate, weight_offset=1.0)
    got = run_and_check(be, x, z, w, dt, opts(gate, weight_offset=1.0))
    ref0 = reference.rmsnorm_gated(x, z, w, **opts(gate))  # without the offset: must differ
    assert not reference.compare(got, ref0, DT[dt]).ok


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-2])
@pytest.mark.parametrize("dt", ["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(6, 2, 64), (70, 4, 128)], ids=["small", "vec"])
def test_eps(be, rng, eps, dt, shape):
    # small inputs, so that eps is a large part of mean(x^2); 16-bit rows of D = 128 take the
    # GPU's vectorized kernel, fp32 and D = 64 its other paths
    x, z, w = make_inputs(rng, shape, dt, dt, dt, xscale=0.03)
    got = run_and_check(be, x, z, w, dt, opts(eps=eps))
    if eps == 1e-2:  # eps is read: the default's result is another one
        assert not reference.compare(got, reference.rmsnorm_gated(x, z, w, **opts()), DT[dt]).ok


def test_zero_rows_input(be, rng):
    # x = 0: rstd = 1/sqrt(eps) stays finite and the output is exactly 0
    x = np.zeros((3, 2, 16), _dtypes.float32)
    _, z, w = make_inputs(rng, (3, 2, 16), "fp32", "fp32", "fp32")
    got = run_and_check(be, x, z, w, "fp32", opts())
    assert np.all(got == 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dt,D", [("fp32", 32), ("bf16", 128)])
def test_nan_inf_propagate(be, rng, bad, dt, D):
    """A NaN row is NaN, not clamped; an infinite element makes its row's rstd 0 (the element
    NaN, the others 0), as the reference computes; other rows are untouched by it."""
    x, z, w = make_inputs(rng, (4, 3, D), dt, dt, dt)
    x[2, 1, 5] = bad
    ref = reference.rmsnorm_gated(x, z, w)
    out = be.put(np.full(x.shape, 7.0, DT[dt]))  # finite poison: an unwritten NaN row must not pass
    got = be.get(gatednorm.rmsnorm_gated(be.put(x), be.put(z), be.put(w), out=out))
    assert np.isnan(got[2, 1, 5].astype(np.float32))
    if bad != bad:
        assert np.isnan(got[2, 1].astype(np.float32)).all()
    cmp = reference.compare(got, ref, DT[dt])
    assert cmp.ok, cmp


def test_deterministic(be, rng):
    """Two calls give the same bits, and those bits are the op's result (checked, so two
    equally unwritten outputs cannot pass)."""
    x, z, w = make_inputs(rng, (33, 4, 128), "bf16", "bf16", "fp32")
    a = run_and_check(be, x, z, w, "bf16", opts())
    b = run_and_check(be, x, z, w, "bf16", opts())
    assert a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------------ views
@pytest.mark.parametrize("gate", ["before", "after", "none"])
def test_2d_is_3d_with_one_head(be, rng, gate):
    """[N, D] is [N, 1, D]; and a [T, H, D] input gives the rows of [T*H, D]."""
    x, z, w = make_inputs(rng, (7, 5, 64), "bf16", "bf16", "fp32", gate=gate)
    y3 = run_and_check(be, x, z, w, "bf16", opts(gate))
    z2 = None if z is None else z.reshape(35, 64)
    y2 = run_and_check(be, x.reshape(35, 64), z2, w, "bf16", opts(gate))
    assert y2.tobytes() == y3.reshape(35, 64).tobytes()


@pytest.mark.parametrize("gate", ["before", "after"])
@pytest.mark.parametrize("D", [64, 128])
def test_group_size(be, rng, gate, D):
    T, H = 11, 4
    x, z, w = make_inputs(rng, (T, H * D), "bf16", "bf16", "bf16", gate=gate, group_size=D)
    y = run_and_check(be, x, z, w, "bf16", opts(gate, group_size=D))
    y3 = run_and_check(be, x.reshape(T, H, D), z.reshape(T, H, D), w, "bf16", opts(gate))
    assert y.tobytes() == y3.tobytes()


def test_group_size_alone_after_a_default_call(be, rng):
    """group_size as the only option, after a default call with the same eps: the wrapper's
    cached-params shortcut for default options must not serve it (a review's mutant taking the
    shortcut whatever group_size was passed every value test: they pass every option)."""
    T, H, D = 6, 4, 32
    x, z, w = make_inputs(rng, (T, H * D), "bf16", "bf16", "bf16", group_size=D)
    ref = reference.rmsnorm_gated(x, z, w, **opts(group_size=D))
    shaped = [a.reshape(T, H, D) for a in (x, z)]
    for args, kw in (((*shaped, w), {}), ((x, z, w), {"group_size": D})):  # the default call first
        outb = be.put(np.full(args[0].shape, NAN, x.dtype))
        gatednorm.rmsnorm_gated(*(be.put(a) for a in args), out=outb, **kw)
        cmp = reference.compare(be.get(outb).reshape(T, H * D), ref, x.dtype)
        assert cmp.ok, cmp


def _column_slice(rng, T, inner, extra, col0, dtype, fill=None):
    """(view [T, inner], base [T, inner + extra]): a column slice of a wider buffer."""
    if fill is None:
        base = randn(rng, (T, inner + extra), dtype)
    else:
        base = np.full((T, inner + extra), fill, dtype)
    return base[:, col0:col0 + inner], base


@pytest.mark.parametrize("gate", ["before", "after"])
@pytest.mark.parametrize("dt", ["bf16", "fp32"])
def test_strided_qkvz(be, rng, gate, dt):
    """z as a column slice of a fused qkvz projection, x with a head stride of 2*D, out as a
    column slice of a wider buffer: results correct, and the rest of out's buffer untouched."""
    T, H, D = 19, 4, 128
    d = DT[dt]
    qkvz = randn(rng, (T, 4 * H * D), d, scale=2.0)
    z = qkvz[:, 3 * H * D:].reshape(T, H, D)  # token stride 4HD, head stride D
    xb = randn(rng, (T, H, 2 * D), d)
    x = xb[:, :, D:]  # head stride 2D
    w = randn(rng, (D,), d, scale=0.5, shift=1.0)
    ob = np.full((T, H * D + 40), NAN, d)
    out = ob[:, 24:24 + H * D].reshape(T, H, D)
    assert not (x.flags.c_contiguous or z.flags.c_contiguous or out.flags.c_contiguous)
    kw = opts(gate)
    ref = reference.rmsnorm_gated(x, z, w, **kw)
    xdev, zdev, wdev = be.put(x, xb), be.put(z, qkvz), be.put(w)
    odev = be.put(out, ob)
    assert gatednorm.rmsnorm_gated(xdev, zdev, wdev, out=odev, **kw) is odev
    got = be.get(odev)
    assert not np.isnan(got.astype(np.float32)).any()
    assert reference.compare(got, ref, d).ok
    full = be.get_base(odev, ob).astype(np.float32)
    assert np.isnan(full[:, :24]).all() and np.isnan(full[:, 24 + H * D:]).all(), "wrote outside out"


@pytest.mark.parametrize("T,H", [(5, 3), (1300, 7), (7, 24), (200, 48), (3, 65), (37, 100), (1366, 96)])
def test_strided_gate_head_counts(be, rng, T, H):
    """Rows that are not flat (z a column slice of qkvz) are split into (t, h) on the GPU by a
    multiply-high and a shift in place of a division by H: every head count, on both sides
    of the 8192-row switch and past 2^16 rows, must put each row where it belongs (T > 1: with
    one token every view is flat)."""
    D = 128
    qkvz = randn(rng, (T, 4 * H * D), _dtypes.bfloat16, scale=2.0)
    z = qkvz[:, 3 * H * D:].reshape(T, H, D)
    x = randn(rng, (T, H, D), _dtypes.bfloat16)
    w = randn(rng, (D,), _dtypes.bfloat16, scale=0.5, shift=1.0)
    kw = opts("before")
    ref = reference.rmsnorm_gated(x, z, w, **kw)
    odev = be.put(np.full(x.shape, NAN, _dtypes.bfloat16))
    gatednorm.rmsnorm_gated(be.put(x), be.put(z, qkvz), be.put(w), out=odev, **kw)
    got = be.get(odev)
    assert not np.isnan(got.astype(np.float32)).any()
    assert reference.compare(got, ref, _dtypes.bfloat16).ok


@pytest.mark.parametrize("gate", ["before", "after"])
def test_strided_2d_group_size(be, rng, gate):
    """The GDN layout: 2-D [T, H*D] x and z column slices with group_size = D."""
    T, H, D = 8, 3, 128
    x, xb = _column_slice(rng, T, H * D, 3 * H * D, H * D, _dtypes.bfloat16)
    z, zb = _column_slice(rng, T, H * D, 2 * H * D, 2 * H * D, _dtypes.bfloat16)
    w = randn(rng, (D,), _dtypes.float32, scale=0.5, shift=1.0)
    out, ob = _column_slice(rng, T, H * D, 8, 8, _dtypes.bfloat16, fill=NAN)
    kw = opts(gate, group_size=D)
    ref = reference.rmsnorm_gated(x, z, w, **kw)
    odev = be.put(out, ob)
    gatednorm.rmsnorm_gated(be.put(x, xb), be.put(z, zb), be.put(w), out=odev, **kw)
    got = be.get(odev)
    assert not np.isnan(got.astype(np.float32)).any()
    assert reference.compare(got, ref, _dtypes.bfloat16).ok
    full = be.get_base(odev, ob).astype(np.float32)
    assert np.isnan(full[:, :8]).all()


@pytest.mark.parametrize("gate", ["before", "after", "none"])
@pytest.mark.parametrize("dt", ["bf16", "fp16", "fp32"])
def test_in_place(be, rng, gate, dt):
    x, z, w = make_inputs(rng, (13, 4, 96), dt, dt, "fp32", gate=gate)
    kw = opts(gate)
    ref = reference.rmsnorm_gated(x, z, w, **kw)
    xdev = be.put(x)
    assert gatednorm.rmsnorm_gated(xdev, be.put(z), be.put(w), out=xdev, **kw) is xdev
    got = be.get(xdev)
    assert reference.compare(got, ref, DT[dt]).ok


@pytest.mark.parametrize("target", ["x", "z"])
@pytest.mark.parametrize("gate", ["before", "after"])
@pytest.mark.parametrize("shape", [(1024, 16, 128), (2185, 30, 128)], ids=["8-element-chunks-16k-rows", "dense-blocks-65k-rows"])
def test_in_place_kernel_paths(be, rng, shape, gate, target):
    """In place on the large-row kernels, right in both gate orders with out = x and out = z.
    (Below 2^16 rows an out distinct from x and z sends x and z through the read-only path,
    ld.global.nc; in place keeps the plain loads.  Each element is read by the thread that
    later writes it, before it does, so results cannot show which loads ran: this checks the
    results, not the launcher's choice.)"""
    x, z, w = make_inputs(rng, shape, "bf16", "bf16", "bf16", gate=gate)
    kw = opts(gate)
    ref = reference.rmsnorm_gated(x, z, w, **kw)
    xdev, zdev = be.put(x), be.put(z)
    out = xdev if target == "x" else zdev
    assert gatednorm.rmsnorm_gated(xdev, zdev, be.put(w), out=out, **kw) is out
    cmp = reference.compare(be.get(out), ref, DT["bf16"])
    assert cmp.ok, cmp


def test_in_place_strided(be, rng):
    T, H, D = 6, 2, 64
    xb = randn(rng, (T, H, 3 * D), _dtypes.bfloat16)
    x = xb[:, :, D:2 * D]
    _, z, w = make_inputs(rng, (T, H, D), "bf16", "bf16", "bf16")
    ref = reference.rmsnorm_gated(x, z, w)
    before = xb.copy()
    xdev = be.put(x, xb)
    gatednorm.rmsnorm_gated(xdev, be.put(z), be.put(w), out=xdev)
    assert reference.compare(be.get(xdev), ref, _dtypes.bfloat16).ok
    full = be.get_base(xdev, xb)
    for sl in (slice(0, D), slice(2 * D, 3 * D)):  # neighbours of the view are untouched
        assert full[:, :, sl].tobytes() == before[:, :, sl].tobytes()


# ------------------------------------------------------------------------------ default out
@pytest.mark.parametrize("dt", list(DT))
def test_default_out_numpy(rng, dt):
    x, z, w = make_inputs(rng, (5, 2, 32), dt, dt, "fp32")
    y = gatednorm.rmsnorm_gated(x, z, w)
    assert isinstance(y, np.ndarray) and y.dtype == DT[dt] and y.shape == x.shape
    assert reference.compare(y, reference.rmsnorm_gated(x, z, w), DT[dt]).ok


@pytest.mark.parametrize("od", ["bf16", "fp16", np.float32, "float32"])
def test_out_dtype(rng, od):
    x, z, w = make_inputs(rng, (5, 2, 32), "bf16", "bf16", "fp32")
    y = gatednorm.rmsnorm_gated(x, z, w, out_dtype=od)
    assert y.dtype == _dtypes.to_numpy_dtype(od)
    assert reference.compare(y, reference.rmsnorm_gated(x, z, w), y.dtype).ok


def test_default_out_devicearray(be, rng):
    if be.name == "cpu":
        pytest.skip("numpy inputs give numpy outputs (test_default_out_numpy)")
    x, z, w = make_inputs(rng, (5, 2, 32), "bf16", "bf16", "fp32")
    xd = be.put(x)
    y = gatednorm.rmsnorm_gated(xd, be.put(z), be.put(w), out_dtype="fp32")
    assert isinstance(y, gatednorm.DeviceArray)
    assert y.device == xd.device and y.dtype == np.float32 and y.shape == x.shape
    assert reference.compare(y.numpy(), reference.rmsnorm_gated(x, z, w), np.float32).ok


# ------------------------------------------------------------- every kernel path on the GPU
# The GPU launcher picks among: 4-element chunks (D <= 128, <= 8192 rows), 8-element chunks
# (D <= 128 above that, with 16 resident blocks of 128 threads instead of 12 for 16-bit x from
# 2^16 rows, and D <= 256), two per lane (fp32 x, 64 < D <= 128, from 2^17 rows), four
# chunks per lane (D <= 1024), a whole-block team (D <= 8192), and the generic two-pass
# kernel (D > 8192, D % 8 != 0, rows not 16-byte aligned, z dtype != x dtype).  Each shape
# below lands on one of them (on the CPU backend they are plain cases).
# Row counts that leave the last block part-full (8 rows a block for one 8-element chunk,
# 32 for two) send rows past the end through the team's shuffles.
@pytest.mark.parametrize("shape,xd", [((1024, 16, 128), "bf16"), ((1025, 13, 128), "bf16"), ((1025, 13, 128), "fp16"),
                                      ((1024, 16, 128), "fp32"), ((2048, 32, 128), "fp16"),
                                      ((2185, 30, 128), "bf16"), ((4370, 30, 128), "bf16"), ((1366, 96, 96), "bf16"),
                                      ((2048, 64, 128), "fp32"), ((4370, 30, 128), "fp32"),
                                      ((3, 2, 2048), "bf16"), ((2, 1, 8200), "bf16")],
                         ids=["8-element-chunks-16k-rows", "8-element-chunks-partial-block", "8-element-chunks-partial-block-fp16",
                              "8-element-chunks-fp32", "dense-blocks-64k-rows-fp16",
                              "dense-blocks-partial-block", "dense-blocks-131k-partial-block", "dense-blocks-D96",
                              "two-chunks-fp32-128k-rows", "two-chunks-fp32-partial-block", "whole-block-team",
                              "generic-D8200"])
@pytest.mark.parametrize("gate", ["before", "after"])
def test_kernel_paths(be, rng, shape, xd, gate):
    x, z, w = make_inputs(rng, shape, xd, xd, "fp32", gate=gate)
    run_and_check(be, x, z, w, "bf16", opts(gate))


@pytest.mark.parametrize("od", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("gate", ["before", "after", "none"])
@pytest.mark.parametrize("shape", [(1024, 16, 128), (1024, 16, 96)], ids=["D128", "D96"])
def test_read_only_path(be, rng, shape, gate, od):
    """The 8k-64k-row kernel that loads x and z through the read-only path (16-bit x, out
    distinct from both): every output dtype, no gate (z's load predicated off), and D = 96
    (a quarter of each row team's lanes past the end of the row)."""
    x, z, w = make_inputs(rng, shape, "bf16", "bf16", "bf16", gate=gate)
    run_and_check(be, x, z, w, od, opts(gate))


def test_rows_not_16_byte_aligned(be, rng):
    """D = 128 rows starting 8 bytes into a buffer take the generic kernel, correctly."""
    T, H, D = 9, 4, 128
    xb = randn(rng, (T * H * D + 4,), DT["bf16"])
    x = xb[4:].reshape(T, H, D)
    z = randn(rng, (T, H, D), DT["bf16"], scale=2.0)
    w = randn(rng, (D,), DT["bf16"], scale=0.5, shift=1.0)
    kw = opts("after")
    ref = reference.rmsnorm_gated(x, z, w, **kw)
    res = gatednorm.rmsnorm_gated(be.put(x, xb), be.put(z), be.put(w), out=be.put(np.full(x.shape, NAN, DT["bf16"])), **kw)
    assert reference.compare(be.get(res), ref, DT["bf16"]).ok


def test_negative_strides(rng):
    """Reversed views (numpy, negative strides) for inputs and output."""
    x, z, w = make_inputs(rng, (6, 3, 64), "fp32", "fp32", "fp32")
    xr, zr = x[::-1, ::-1], z[::-1]
    ob = np.full(x.shape, NAN, np.float32)
    out = ob[::-1]
    gatednorm.rmsnorm_gated(xr, zr, w, out=out)
    assert reference.compare(out, reference.rmsnorm_gated(xr, zr, w), np.float32).ok


# ------------------------------------------------ programmatic dependent launch (pdl=True)
@pytest.mark.parametrize("shape", [(4, 8, 128), (1024, 16, 128), (3, 2, 2048), (2, 1, 8200)],
                         ids=["4-element-chunks", "8-element-chunks", "whole-block-team", "generic-D8200"])
@pytest.mark.parametrize("gate", ["before", "after"])
def test_pdl(be, rng, shape, gate):
    """pdl=True computes the same (on a GPU without PDL, the CPU or AMD it is a plain launch)."""
    x, z, w = make_inputs(rng, shape, "bf16", "bf16", "bf16")
    kw = opts(gate)
    ref = reference.rmsnorm_gated(x, z, w, **kw)
    res = gatednorm.rmsnorm_gated(be.put(x), be.put(z), be.put(w), out=be.put(np.full(x.shape, NAN, DT["bf16"])), pdl=True, **kw)
    got = be.get(res)
    assert not np.isnan(got.astype(np.float32)).any()
    assert reference.compare(got, ref, DT["bf16"]).ok


@pytest.mark.parametrize("shape", [(128, 32, 128), (1024, 32, 128)])
def test_pdl_chain_reads_finished_outputs(be, rng, shape):
    """Each call of a PDL chain reads the previous call's output: a kernel that touched memory
    before the prior grid finished would read NaN poison or half-written rows.  Every link
    is checked against the reference applied to the previous link's actual output."""
    links = 6
    x, z, w = make_inputs(rng, shape, "bf16", "bf16", "bf16")
    kw = opts("before")
    outs = [be.put(np.full(shape, NAN, DT["bf16"])) for _ in range(links)]
    zb, wb = be.put(z), be.put(w)
    prev = be.put(x)
    for o in outs:  # back to back on one stream, nothing in between
        gatednorm.rmsnorm_gated(prev, zb, wb, out=o, pdl=True, **kw)
        prev = o
    inputs = [x] + [be.get(o) for o in outs[:-1]]
    for i, (inp, o) in enumerate(zip(inputs, outs)):
        got = be.get(o)
        assert not np.isnan(got.astype(np.float32)).any(), "link %d: outputs left unwritten" % i
        cmp = reference.compare(got, reference.rmsnorm_gated(inp, z, w, **kw), DT["bf16"])
        assert cmp.ok, "link %d: %s" % (i, cmp)


# --------------------------------------------------------------- any number of leading dims
@pytest.mark.parametrize("shape", [(128,), (3, 128), (2, 3, 4, 128), (2, 1, 3, 1, 2, 64), (1, 1, 1, 32)])
def test_any_leading_dims(be, rng, shape):
    """[D], [N, D], [B, T, H, D], ...: every leading dim is rows, as torch's rms_norm, FLA and
    mamba accept."""
    x = rng.standard_normal(shape).astype(DT["bf16"])
    z = rng.standard_normal(shape).astype(DT["bf16"])
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    out = be.put(np.full(shape, NAN, DT["bf16"]))
    gatednorm.rmsnorm_gated(be.put(x), be.put(z), be.put(w), out=out)
    assert reference.compare(be.get(out), reference.rmsnorm_gated(x, z, w), DT["bf16"])


def test_empty_rows_any_strides():
    """Zero rows whatever the leading dims and strides: an empty tensor addresses nothing, so
    neither the merge rule (three unmergeable dims here) nor the contiguity rule applies to
    it; the weight is still checked."""
    bf = DT["bf16"]
    shape, strides = (2, 0, 3, 4, 8), (5, 7, 11, 13, 3)
    x, z, o = (gatednorm.from_pointer(0, shape, bf, strides=strides, device="cpu") for _ in range(3))
    w = np.ones(8, np.float32)
    assert gatednorm.rmsnorm_gated(x, z, w, out=o) is o
    with pytest.raises(GatedNormError, match="weight"):
        gatednorm.rmsnorm_gated(x, z, np.ones(7, np.float32), out=o)


def test_four_dim_column_slice_gate(be, rng):
    """z as a head-sliced [B, T, H, D] view of a fused projection: B and T merge, H keeps its stride."""
    B, T, H, D = 2, 3, 4, 64
    qkvz = rng.standard_normal((B, T, 2 * H * D)).astype(DT["bf16"])
    z = qkvz[:, :, H * D:].reshape(B, T, H, D)
    x = rng.standard_normal((B, T, H, D)).astype(DT["bf16"])
    w = rng.standard_normal(D).astype(np.float32)
    out = be.put(np.full(x.shape, NAN, DT["bf16"]))
    gatednorm.rmsnorm_gated(be.put(x), be.put(z, qkvz), be.put(w), out=out)
    assert reference.compare(be.get(out), reference.rmsnorm_gated(x, z, w), DT["bf16"])
