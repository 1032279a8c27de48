"""JAX CPU arrays into gatednorm (issue #15): straight through DLPack, into ``out=`` of a
numpy array / DeviceArray, refused as ``out=`` (jax arrays are immutable), and embedded in a
``jax.jit``-compiled function through ``jax.pure_callback`` (the "non-PyTorch runtime" case).

Runs on the CPU CI machine (jax comes with the ``test`` extra); skipped when jax is missing.
Every output the test passes as ``out=`` is NaN-poisoned first.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import gatednorm  # noqa: E402
from gatednorm import DeviceArray, _dtypes, reference  # noqa: E402
from gatednorm.testing import poison_value, randn  # noqa: E402

DT = {"bf16": _dtypes.bfloat16, "fp32": _dtypes.float32}
SHAPE = (4, 3, 64)  # [T, H, D]


@pytest.fixture(autouse=True)
def _jax_cpu():
    with jax.default_device(jax.devices("cpu")[0]):
        yield


def inputs(rng, dt):
    x = randn(rng, SHAPE, DT[dt])
    z = randn(rng, SHAPE, DT[dt], scale=2.0)
    w = randn(rng, SHAPE[-1:], DT[dt], scale=0.5, shift=1.0)
    return x, z, w


def to_jax(*arrays):
    out = tuple(jnp.asarray(a) for a in arrays)
    for a, j in zip(arrays, out):
        assert j.dtype == a.dtype and j.shape == a.shape
        assert j.devices() == {jax.devices("cpu")[0]}
    return out


def check(got, x, z, w, **kw):
    got = np.asarray(got)
    assert got.shape == x.shape and got.dtype == x.dtype
    assert not np.isnan(got.astype(np.float32)).any(), "outputs left unwritten (still NaN)"
    cmp = reference.compare(got, reference.rmsnorm_gated(x, z, w, **kw), got.dtype)
    assert cmp.ok, cmp


@pytest.mark.parametrize("dt", list(DT))
def test_jax_inputs_new_output(rng, dt):
    x, z, w = inputs(rng, dt)
    jx, jz, jw = to_jax(x, z, w)
    y = gatednorm.rmsnorm_gated(jx, jz, jw)  # not numpy: the new out is a DeviceArray on the CPU
    assert isinstance(y, DeviceArray)
    check(y.numpy(), x, z, w)
    # and back into jax through DLPack
    check(np.asarray(jax.dlpack.from_dlpack(y)), x, z, w)


@pytest.mark.parametrize("dt", list(DT))
@pytest.mark.parametrize("out_kind", ["numpy", "devicearray"])
def test_jax_inputs_into_out(rng, dt, out_kind):
    x, z, w = inputs(rng, dt)
    jx, jz, jw = to_jax(x, z, w)
    out = np.full(SHAPE, poison_value(DT[dt]), DT[dt])
    if out_kind == "devicearray":
        out = DeviceArray.from_numpy(out, device="cpu")
    res = gatednorm.rmsnorm_gated(jx, jz, jw, out=out, norm_before_gate=False, activation="sigmoid")
    assert res is out
    check(out if out_kind == "numpy" else out.numpy(), x, z, w, norm_before_gate=False, activation="sigmoid")


def test_jax_out_refused(rng):
    """jax arrays are immutable: as ``out=`` one is refused, naming out, and left unwritten."""
    x, z, w = inputs(rng, "fp32")
    jx, jz, jw = to_jax(x, z, w)
    jout = jnp.full(SHAPE, jnp.nan, jnp.float32)
    before = np.array(jout)
    with pytest.raises(gatednorm.GatedNormError, match=r"\bout\b"):
        gatednorm.rmsnorm_gated(jx, jz, jw, out=jout)
    assert np.array_equal(np.array(jout), before, equal_nan=True)
    # in place on x (out=x) is refused the same way, x unchanged
    with pytest.raises(gatednorm.GatedNormError, match=r"\bout\b"):
        gatednorm.rmsnorm_gated(jx, jz, jw, out=jx)
    assert np.array_equal(np.array(jx), x)


def test_jax_residual_read_only_with_residual_out(rng):
    """add_rmsnorm with residual_out reads the residual only: a jax residual is taken (it was
    refused as immutable, review), and in place it is refused naming residual, unwritten."""
    x = rng.standard_normal((4, 256)).astype(np.float32)
    r = rng.standard_normal((4, 256)).astype(np.float32)
    w = np.ones(256, np.float32)
    jr = jnp.asarray(r)
    out = gatednorm.add_rmsnorm(jnp.asarray(x), jr, w, residual_out=np.full_like(r, 7.0))
    want = gatednorm.add_rmsnorm(x, r.copy(), w)
    assert np.array_equal(out.residual, want.residual) and np.array_equal(np.asarray(out.y), np.asarray(want.y))
    with pytest.raises(gatednorm.GatedNormError, match=r"^residual:"):
        gatednorm.add_rmsnorm(jnp.asarray(x), jr, w)
    assert np.array_equal(np.array(jr), r)


def test_jax_tracer_is_refused_with_advice(rng):
    """A jax array inside jax.jit is a tracer with no data: refused naming x and pointing to
    gatednorm.jax_ops first, jax.pure_callback second (it said "has __dlpack__ but no
    __dlpack_device__", review; then it named only the slow pure_callback, a docs review)."""
    x, z, w = inputs(rng, "fp32")
    msgs = []

    def f(a):
        try:
            gatednorm.rmsnorm_gated(a, np.asarray(z), np.asarray(w))
        except gatednorm.GatedNormError as e:
            msgs.append(str(e))
        return a

    jax.jit(f)(jnp.asarray(x))
    assert msgs and msgs[0].startswith("x: a jax tracer") and "gatednorm.jax_ops" in msgs[0], msgs


def _gated_norm_callback(x, z, w):
    """The host function jax calls: numpy arrays in, a numpy array out."""
    return gatednorm.rmsnorm_gated(np.asarray(x), np.asarray(z), np.asarray(w))


@pytest.mark.parametrize("dt", list(DT))
def test_jit_pure_callback(rng, dt):
    x, z, w = inputs(rng, dt)
    jx, jz, jw = to_jax(x, z, w)

    @jax.jit
    def layer(x, z, w):
        y = jax.pure_callback(_gated_norm_callback, jax.ShapeDtypeStruct(x.shape, x.dtype), x, z, w)
        return y, y.astype(jnp.float32) * 2.0  # some jax work after the callback

    y, y2 = layer(jx, jz, jw)
    assert y.dtype == jx.dtype and y.shape == SHAPE
    check(y, x, z, w)
    np.testing.assert_array_equal(np.asarray(y2), np.asarray(y).astype(np.float32) * 2.0)
    # the compiled function again, with other values (no retrace needed, same result checks)
    x2 = randn(rng, SHAPE, DT[dt], scale=3.0)
    y, _ = layer(jnp.asarray(x2), jz, jw)
    check(y, x2, z, w)


def _fp8_callback(x, z, w):
    q, s = gatednorm.rmsnorm_gated_fp8(np.asarray(x), np.asarray(z), np.asarray(w), group_size=64)
    return q, s


def test_jit_pure_callback_fp8(rng):
    x, z, w = inputs(rng, "bf16")
    jx, jz, jw = to_jax(x, z, w)
    T, H, D = SHAPE
    K = H * D // 64

    @jax.jit
    def layer(x, z, w):
        return jax.pure_callback(_fp8_callback, (jax.ShapeDtypeStruct((T, H * D), jnp.float8_e4m3fn),
                                                 jax.ShapeDtypeStruct((T, K), jnp.float32)), x, z, w)

    q, s = layer(jx, jz, jw)
    assert q.dtype == jnp.float8_e4m3fn and q.shape == (T, H * D) and s.shape == (T, K)
    _, sr, yr = reference.rmsnorm_gated_fp8(x, z, w, group_size=64)
    q, s = np.asarray(q), np.asarray(s)
    cmp = reference.compare(s, sr, np.float32)
    assert cmp.ok, cmp
    # codes within half a quantum of y / scale
    y = yr.reshape(T, K, 64)
    target = np.clip(y / s[..., None], -448, 448).reshape(T, H * D)
    cmp = reference.compare(q.astype(np.float64), target, _dtypes.float8_e4m3fn)
    assert cmp.ok, cmp


# ----------------------------------------------------------------- gatednorm.jax_ops (XLA FFI)
def _bits(a):
    a = np.asarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def _same(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    assert np.array_equal(_bits(got), _bits(want))


@pytest.mark.parametrize("dt", list(DT))
def test_jax_ops_in_jit_match_the_functions(rng, dt):
    """gatednorm.jax_ops inside jax.jit: one XLA custom call an op, on XLA's buffers; every op
    and output set gives the numpy function's bits (which the other tests hold to the float64
    reference), the input residual untouched and the sum returned."""
    jo = pytest.importorskip("gatednorm.jax_ops")
    x, z, w = inputs(rng, dt)
    jx, jz, jw = to_jax(x, z, w)
    kw = dict(eps=1e-5, weight_offset=0.5)
    _same(jax.jit(lambda a, b: jo.rmsnorm_gated(a, b, jw, out_dtype=jnp.float32, **kw))(jx, jz),
          gatednorm.rmsnorm_gated(x, z, w, out_dtype=np.float32, **kw))
    _same(jax.jit(lambda a: jo.rmsnorm_gated(a, None, jw, norm_before_gate=False))(jx),
          gatednorm.rmsnorm_gated(x, None, w, norm_before_gate=False))
    fkw = dict(group_size=32, scale_format="ue8m0", quantize_rounded=True)
    for got, want in zip(jax.jit(lambda a, b: jo.rmsnorm_gated_fp8(a, b, jw, copy_dtype=jnp.float16, **fkw))(jx, jz),
                         gatednorm.rmsnorm_gated_fp8(x, z, w, copy_dtype=np.float16, **fkw), strict=True):
        _same(got, want)
    h = x.reshape(4, -1)
    r = randn(rng, h.shape, h.dtype)
    wh = randn(rng, h.shape[-1:], np.float32, scale=0.5, shift=1.0)
    jh, jr, jwh = to_jax(h, r, wh)
    for fp8, y in ((False, True), (True, True), (True, False)):
        okw = dict(fp8=fp8, y=y, fp8_format="e4m3fnuz", scale_format="e8m0_packed", group_size=64)
        got = jax.jit(lambda a, b: jo.add_rmsnorm(a, b, jwh, **okw))(jh, jr)
        r_np = r.copy()
        want = gatednorm.add_rmsnorm(h, r_np, wh, **okw)
        for g_, w_ in zip(got, want, strict=True):
            assert (g_ is None) == (w_ is None)
            if g_ is not None:
                _same(g_, w_)
        got = jax.jit(lambda a: jo.rmsnorm(a, jwh, **okw))(jh)
        want = gatednorm.rmsnorm(h, wh, **okw)
        for g_, w_ in zip(got, want, strict=True):
            assert (g_ is None) == (w_ is None)
            if g_ is not None:
                _same(g_, w_)
    for got, want in zip(jax.jit(lambda a: jo.group_quant_fp8(a, group_size=64, scale_format="e8m0"))(jh),
                         gatednorm.group_quant_fp8(h, group_size=64, scale_format="e8m0"), strict=True):
        _same(got, want)


def test_jax_ops_errors_and_vmap(rng):
    """Errors come at trace time, as GatedNormErrors naming the argument: the options by the
    functions' own checks, shapes and dtypes by the C entry's validation of token-less
    stand-ins, so an empty batch is checked too (XLA skips a custom call whose results are
    empty; review).  Under vmap the calls run one element at a time with the same bits."""
    jo = pytest.importorskip("gatednorm.jax_ops")
    x, z, w = inputs(rng, "bf16")
    jx, jz, jw = to_jax(x, z, w)
    cases = [
        (r"^rmsnorm_gated: weight: expected shape \[64\]", lambda: jo.rmsnorm_gated(jx, None, jw[:32])),
        (r"^rmsnorm_gated: weight: expected shape \[64\]", lambda: jo.rmsnorm_gated(jx[:0], None, jw[:32])),
        (r"^activation:", lambda: jo.rmsnorm_gated(jx, jz, jw, activation="tanh")),
        (r"eps", lambda: jo.rmsnorm_gated(jx, jz, jw, eps=-1.0)),
        (r"^scale_layout: expected one of 'row', 'col', 'col_pad4', got 'column'", lambda: jo.group_quant_fp8(jx.reshape(4, -1), scale_layout="column")),
        (r"group_size", lambda: jo.group_quant_fp8(jx.reshape(4, -1)[:0], group_size=100)),
        (r"fp8_max", lambda: jo.group_quant_fp8(jx.reshape(4, -1), fp8_format="e4m3fnuz", fp8_max=448.0)),
        (r"^y: no output requested", lambda: jo.rmsnorm(jx, jw, y=False)),
        (r"^rmsnorm: weight", lambda: jo.rmsnorm(jx.reshape(4, -1), jw)),
        (r"^x: required", lambda: jo.rmsnorm(None, jw)),
        (r"^x: expected a JAX array", lambda: jo.group_quant_fp8([1.0, 2.0])),
        (r"^residual: required", lambda: jo.add_rmsnorm(jx, None, jw)),
        (r"^add_rmsnorm: residual", lambda: jo.add_rmsnorm(jx.reshape(4, -1), jx.reshape(4, -1)[:, :64], jw)),
        # leading dims checked on the real shapes (review: zeroed, x[0, 64] with z[5, 64] passed)
        (r"^z: shape \[5, 64\] does not lead with x's tokens \(x is \[4, 64\]\)",
         lambda: jo.rmsnorm_gated(jx[:, 0], jnp.zeros((5, 64), jx.dtype), jw)),
        (r"^z: shape \[5, 64\] does not lead with x's tokens \(x is \[0, 64\]\)",
         lambda: jo.rmsnorm_gated(jx[:0, 0], jnp.zeros((5, 64), jx.dtype), jw)),
        (r"^z: shape \[64\] does not lead", lambda: jo.rmsnorm_gated(jx[:, 0], jw.astype(jx.dtype), jw)),
    ]
    for pattern, call in cases:
        with pytest.raises(gatednorm.GatedNormError, match=pattern):
            jax.jit(call)()
    batched = jax.jit(jax.vmap(lambda a, b: jo.rmsnorm_gated(a, b, jw)))(jx, jz)
    _same(batched, np.stack([gatednorm.rmsnorm_gated(x[i], z[i], w) for i in range(x.shape[0])]))


def _col_buffer(s, layout):
    """The column-major buffer under a numpy function's [T..., K] scales view: [K, T] for
    "col", [K, T4] for "col_pad4" with the padding 0 (what jax_ops returns)."""
    k = s.shape[-1]
    cols = np.ascontiguousarray(s.reshape(-1, k).T)
    t = cols.shape[1]
    pad = (t + 3) // 4 * 4 - t if layout == "col_pad4" else 0
    return np.concatenate([cols, np.zeros((k, pad), cols.dtype)], axis=1)


@pytest.mark.parametrize("layout", ["col", "col_pad4"])
@pytest.mark.parametrize("sfmt", ["fp32", "e8m0_packed"])
def test_jax_ops_column_scales(rng, layout, sfmt):
    """Column-major scales inside jax.jit come back as their buffer ([K, T] or [K, T4], T the
    tokens' product), holding the numpy functions' scales at [k, t] and 0 in col_pad4's
    padding, for every op with FP8 outputs, tokens of several dims and T not a multiple of 4;
    q is unchanged.  The C entry writes through a strided view of XLA's buffer (the handler's
    `views` attribute), so its own checks of the scales apply to the view."""
    jo = pytest.importorskip("gatednorm.jax_ops")
    g = 32 if sfmt == "e8m0_packed" else 64
    kw = dict(scale_layout=layout, scale_format=sfmt, group_size=g)
    for shape in ((5, 2, 128), (2, 3, 2, 128)):  # T = 5; tokens [2, 3]
        x, z = randn(rng, shape, DT["bf16"]), randn(rng, shape, DT["bf16"])
        w = randn(rng, shape[-1:], np.float32, scale=0.5, shift=1.0)
        jx, jz, jw = to_jax(x, z, w)
        jq, js = jax.jit(lambda a, b: jo.rmsnorm_gated_fp8(a, b, jw, **kw))(jx, jz)
        q, s = gatednorm.rmsnorm_gated_fp8(x, z, w, **kw)
        _same(jq, q)
        _same(js, _col_buffer(s, layout))
        # a group spanning both heads of a token: one scale a token
        jq, js = jax.jit(lambda a, b: jo.rmsnorm_gated_fp8(a, b, jw, **dict(kw, group_size=256)))(jx, jz)
        q, s = gatednorm.rmsnorm_gated_fp8(x, z, w, **dict(kw, group_size=256))
        _same(js, _col_buffer(s, layout))
        h = x.reshape(shape[:-2] + (-1,))
        r = randn(rng, h.shape, h.dtype)
        wh = randn(rng, h.shape[-1:], np.float32, scale=0.5, shift=1.0)
        jh, jr, jwh = to_jax(h, r, wh)
        got = jax.jit(lambda a, b: jo.add_rmsnorm(a, b, jwh, fp8=True, **kw))(jh, jr)
        want = gatednorm.add_rmsnorm(h, r.copy(), wh, fp8=True, **kw)
        _same(got.y, want.y), _same(got.q, want.q), _same(got.residual, want.residual)
        _same(got.scales, _col_buffer(want.scales, layout))
        got = jax.jit(lambda a: jo.rmsnorm(a, jwh, fp8=True, y=False, **kw))(jh)
        want = gatednorm.rmsnorm(h, wh, fp8=True, y=False, **kw)
        assert got.y is None
        _same(got.q, want.q), _same(got.scales, _col_buffer(want.scales, layout))
        jq, js = jax.jit(lambda a: jo.group_quant_fp8(a, **kw))(jh)
        q, s = gatednorm.group_quant_fp8(h, **kw)
        _same(jq, q), _same(js, _col_buffer(s, layout))
    # under vmap each element has its own buffer: [B, K, T(4)]
    xb = randn(rng, (3, 5, 256), DT["bf16"])
    jq, js = jax.jit(jax.vmap(lambda a: jo.group_quant_fp8(a, **kw)))(jnp.asarray(xb))
    for i in range(3):
        q, s = gatednorm.group_quant_fp8(xb[i], **kw)
        _same(jq[i], q), _same(js[i], _col_buffer(s, layout))
    # no tokens: [K, 0] (col_pad4: [K, 0] too), checked at trace time all the same
    jq, js = jax.jit(lambda a: jo.group_quant_fp8(a, **kw))(jnp.zeros((0, 256), jnp.bfloat16))
    assert jq.shape == (0, 256) and js.shape == ((2 if sfmt == "e8m0_packed" else 4), 0)
    with pytest.raises(gatednorm.GatedNormError, match=r"^group_quant_fp8: group_size: 100 does not divide"):
        jax.jit(lambda a: jo.group_quant_fp8(a, **dict(kw, group_size=100)))(jnp.zeros((3, 256), jnp.bfloat16))


def test_jax_ops_donated_residual_and_reload(rng):
    """add_rmsnorm's custom call aliases the residual to the stored sum: a donated residual's
    buffer holds the new one (the donation is used, no extra copy), an undonated one is left
    as it was; a reload of the module keeps the registration (the handlers are the library's C
    functions) and compiled functions keep working."""
    import importlib

    jo = pytest.importorskip("gatednorm.jax_ops")
    h = randn(rng, (4, 256), _dtypes.bfloat16)
    r = randn(rng, (4, 256), _dtypes.bfloat16)
    w = randn(rng, (256,), np.float32, scale=0.5, shift=1.0)
    want = gatednorm.add_rmsnorm(h, r.copy(), w)
    jh, jw = to_jax(h, w)
    f = jax.jit(lambda a, b: jo.add_rmsnorm(a, b, jw), donate_argnums=1)
    jr = jnp.asarray(r)
    got = f(jh, jr)
    assert jr.is_deleted()  # XLA took the donated buffer for the aliased result
    _same(got.residual, want.residual)
    _same(got.y, want.y)
    assert "copy(" not in f.lower(jh, jnp.asarray(r)).compile().as_text().split("custom-call")[-1]
    jr2 = jnp.asarray(r)
    g = jax.jit(lambda a, b: jo.add_rmsnorm(a, b, jw))
    _same(g(jh, jr2).residual, want.residual)
    _same(jr2, r)
    jo2 = importlib.reload(jo)
    _same(g(jh, jnp.asarray(r)).y, want.y)
    _same(jax.jit(lambda a, b: jo2.add_rmsnorm(a, b, jw).y)(jh, jnp.asarray(r)), want.y)


@pytest.mark.parametrize("dt", ["bf16", "fp16"])
def test_jax_ops_w4a16_in_jit(rng, dt):
    """jax_ops.w4a16_matmul inside jax.jit, its weight a W4A16Arrays passed as a jit argument
    (the arrays traced, meta static): within the float64 reference's bound and the bits of
    gatednorm.w4a16_matmul for plain (asym / sym, G = 32 / per channel), host-tiled and
    act-order weights, with a bias and an fp32 output; one compile serves two weights of one
    meta; M = 0 and vmap work; errors come at trace time naming the argument."""
    jo = pytest.importorskip("gatednorm.jax_ops")
    adt = _dtypes.bfloat16 if dt == "bf16" else _dtypes.float16
    n, k = 48, 256
    f = jax.jit(lambda a, w, b: jo.w4a16_matmul(a, w, b, out_dtype=jnp.float32))
    f_nobias = jax.jit(lambda a, w: jo.w4a16_matmul(a, w))
    for g, sym, perm in ((32, False, False), (256, True, False), (64, False, True)):
        w = gatednorm.W4A16Weight.from_float(randn(rng, (n, k), np.float32), group_size=g, symmetric=sym)
        if perm:
            w = gatednorm.W4A16Weight(w.q, w.scales, w.zeros, perm=rng.permutation(k))
        a = randn(rng, (5, k), adt)
        bias = randn(rng, (n,), np.float32)
        a_eff = a[:, w.perm] if perm else a
        want = gatednorm.w4a16_matmul(a, w, bias, out_dtype=np.float32)
        ref = reference.w4a16_matmul(a_eff, w.q, w.scales, w.zeros, bias)
        tol = reference.w4a16_tolerance(a_eff, w.q, w.scales, w.zeros, bias, np.float32, ref)
        ja, jb = to_jax(a, bias)
        for weight in (w, w.prepack_host("cuda_mma", adt)):
            wj = jo.w4a16_weight(weight)
            assert wj.meta[0] == (0 if weight is w else 1)
            got = f(ja, wj, jb)
            _same(got, want)
            assert (np.abs(np.asarray(got, np.float64) - ref) <= tol).all()
            _same(f_nobias(ja, wj), gatednorm.w4a16_matmul(a, weight))
            # M = 0 (an empty batch): checked at trace time, an empty result
            assert f_nobias(ja[:0], wj).shape == (0, n)
    # a second weight of the same meta reuses the compiled function (meta is the static part)
    w2 = gatednorm.W4A16Weight.from_float(randn(rng, (n, k), np.float32), group_size=32)
    a = randn(rng, (3, k), adt)
    g2 = jax.jit(lambda a, w: jo.w4a16_matmul(a, w))
    _same(g2(jnp.asarray(a), jo.w4a16_weight(w2)), gatednorm.w4a16_matmul(a, w2))
    w3 = gatednorm.W4A16Weight.from_float(randn(rng, (n, k), np.float32), group_size=32)
    _same(g2(jnp.asarray(a), jo.w4a16_weight(w3)), gatednorm.w4a16_matmul(a, w3))
    assert g2._cache_size() == 1
    batched = jax.jit(jax.vmap(lambda a: jo.w4a16_matmul(a, jo.w4a16_weight(w2))))(jnp.asarray(a)[:, None])
    _same(batched[:, 0], gatednorm.w4a16_matmul(a, w2))
    wj = jo.w4a16_weight(w2)
    ja = jnp.asarray(a)
    cases = [
        (r"^a: expected \[M, K\] with K = 256", lambda: jo.w4a16_matmul(ja[:, :128], wj)),
        (r"^a: expected \[M, K\]", lambda: jo.w4a16_matmul(ja[0], wj)),
        (r"^w4a16_gemm: a: dtype float32", lambda: jo.w4a16_matmul(ja.astype(jnp.float32), wj)),
        (r"^w4a16_gemm: bias: expected shape \[N\] = \[48\]", lambda: jo.w4a16_matmul(ja, wj, jnp.zeros((47,)))),
        (r"^w4a16_gemm: bias: expected shape \[N\] = \[48\]", lambda: jo.w4a16_matmul(ja[:0], wj, jnp.zeros((47,)))),
        (r"^out_dtype:", lambda: jo.w4a16_matmul(ja, wj, out_dtype=jnp.int8)),
        (r"^w: expected a gatednorm.jax_ops.W4A16Arrays", lambda: jo.w4a16_matmul(ja, w2)),
        (r"^meta\[1\] \(n\): -1 is outside",
         lambda: jo.w4a16_matmul(ja, jo.W4A16Arrays(wj.qweight, wj.scales, wj.zeros, None, (0, -1) + wj.meta[2:]))),
        # a float or a string was converted before the check (48.9 -> 48, '48' -> 48; review)
        (r"^meta\[1\] \(n\): expected an integer, got 48.9",
         lambda: jo.w4a16_matmul(ja, jo.W4A16Arrays(wj.qweight, wj.scales, wj.zeros, None, (0, 48.9) + wj.meta[2:]))),
        (r"^meta\[2\] \(k\): expected an integer, got '256'",
         lambda: jo.w4a16_matmul(ja, jo.W4A16Arrays(wj.qweight, wj.scales, wj.zeros, None, wj.meta[:2] + ("256",) + wj.meta[3:]))),
        (r"^w4a16_gemm: params.group_size: 32, but scales \[48, 4\]",
         lambda: jo.w4a16_matmul(ja, jo.W4A16Arrays(wj.qweight, wj.scales[:, :4], wj.zeros, None, wj.meta))),
    ]
    for pattern, call in cases:
        with pytest.raises(gatednorm.GatedNormError, match=pattern):
            jax.jit(call)()
    with pytest.raises(gatednorm.GatedNormError, match=r"^w: expected a gatednorm.W4A16Weight"):
        jo.w4a16_weight(wj)


def _subnormal_case(rng, rows):
    """fp32 x and a weight of 1e-39 (subnormal): every output of the norm is subnormal."""
    x = randn(rng, (rows, 64), np.float32)
    w = np.full(64, 1e-39, np.float32)
    return x, w


def test_jax_ops_keep_subnormals(rng):
    """XLA's CPU threads flush subnormals to zero (FTZ / DAZ), and the custom call runs on
    one: outputs that should be subnormal came out 0 (so did a W4A16 weight's subnormal
    dequantized values), and a pool first started from such a thread left its workers
    flushing for every later call.  The library runs host arithmetic under the IEEE defaults
    whatever the thread set: the jitted ops give the numpy functions' bits, and a direct call
    after the pool was (re)started inside a custom call keeps its subnormals."""
    jo = pytest.importorskip("gatednorm.jax_ops")
    tiny = np.float32(2.0 ** -126)
    x, w = _subnormal_case(rng, 4)
    want = gatednorm.rmsnorm_gated(x, None, w)
    assert np.count_nonzero(want) > 0.9 * want.size and (np.abs(want) < tiny).all()  # a few underflow to 0
    _same(jax.jit(lambda a, b: jo.rmsnorm_gated(a, None, b))(*to_jax(x, w)), want)
    # W4A16: scales of 2^-130 make every dequantized weight (q - z) * s subnormal; a = I
    k, n = 64, 32
    q = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
    z = rng.integers(0, 16, (n, k // 32), dtype=np.uint8)
    s = np.full((n, k // 32), 2.0 ** -130, np.float32)
    wq = gatednorm.W4A16Weight(q, s, z)
    eye = np.eye(k, dtype=np.float32).astype(_dtypes.bfloat16)  # bf16 holds subnormal scales (fp16 rounds them to 0)
    want = gatednorm.w4a16_matmul(eye, wq, out_dtype=np.float32)
    assert np.count_nonzero(want) > want.size // 2
    _same(jax.jit(lambda a, ww: jo.w4a16_matmul(a, ww, out_dtype=jnp.float32))(jnp.asarray(eye), jo.w4a16_weight(wq)),
          want)
    # the pool's workers (re)started from inside a custom call, then a direct call
    threads = gatednorm.get_num_threads()
    try:
        gatednorm.set_num_threads(2)  # stops the workers: the next parallel call starts them
        big, wb = _subnormal_case(rng, 4096)
        want_big = gatednorm.rmsnorm_gated(big, None, wb)
        gatednorm.set_num_threads(2)
        _same(jax.jit(lambda a, b: jo.rmsnorm_gated(a, None, b))(*to_jax(big, wb)), want_big)
        _same(gatednorm.rmsnorm_gated(big, None, wb), want_big)
        assert np.count_nonzero(want_big) > 0.9 * want_big.size
    finally:
        gatednorm.set_num_threads(threads)
