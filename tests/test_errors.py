"""Bad inputs: each call raises GatedNormError whose message names the argument, and the
(NaN-poisoned) output is left bit-identical."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

import gatednorm
from gatednorm import GatedNormError, _dtypes, from_pointer, reference

NAN = float("nan")
T, H, D = 5, 3, 32
BF16 = _dtypes.bfloat16


def _inputs(rng, dt=np.float32):
    x = rng.standard_normal((T, H, D)).astype(dt)
    z = rng.standard_normal((T, H, D)).astype(dt)
    w = rng.standard_normal(D).astype(dt)
    return x, z, w


def subject(e: GatedNormError) -> str:
    """The argument a message is about: the text before its first ':' ("x: expected ...",
    "params.activation: ...")."""
    return e.message.split(":", 1)[0].strip()


def assert_names(e: GatedNormError, name: str, anywhere: bool = False):
    assert e.status < 0
    assert e.message, "no message"
    if anywhere:
        assert re.search(r"\b%s\b" % re.escape(name), e.message), e.message
    else:
        s = subject(e)
        assert s == name or s.endswith("." + name), "message does not name %r: %s" % (name, e.message)
    assert e.message in str(e)


def expect_error(be, name, x, z, w, out, anywhere=False, out_base=None, **kw):
    """Run with a poisoned out on backend ``be``; expect an error naming ``name``; check the
    out buffer is bit-identical."""
    xb = be.put(x) if isinstance(x, np.ndarray) else x
    zb = be.put(z) if isinstance(z, np.ndarray) else z
    wb = be.put(w) if isinstance(w, np.ndarray) else w
    ob = be.put(out, out_base) if isinstance(out, np.ndarray) else out
    readable = ob is not None and (isinstance(ob, np.ndarray) or ob.data_ptr != 0)
    before = be.get(ob).tobytes() if readable else None
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(xb, zb, wb, out=ob, **kw)
    assert_names(ei.value, name, anywhere)
    if readable:
        assert be.get(ob).tobytes() == before, "out was modified by a failed call"
    return ei.value


def poisoned(shape, dt=np.float32):
    return np.full(shape, NAN, dt)


# ------------------------------------------------------------------------------ shapes
def test_scalar_x(be, rng):
    x = np.float32(1.5).reshape(())
    expect_error(be, "x", x, None, np.ones(1, np.float32), poisoned(()))


@pytest.mark.parametrize("which", ["x", "out"])
def test_leading_dims_that_do_not_reduce_to_tokens_heads(be, rng, which):
    """Three leading dims whose strides merge nowhere cannot be one [tokens, heads] view."""
    base = rng.standard_normal((3, 4, 5, D)).astype(np.float32)
    odd = base.transpose(1, 0, 2, 3)  # [4, 3, 5, D]: dim 0 no longer merges with dim 1, nor dim 1 with 2
    odd = odd[:, :, ::2]               # [4, 3, 3, D] with dim 2 strided twice
    plain = np.ascontiguousarray(odd)
    w = np.ones(D, np.float32)
    if which == "x":
        expect_error(be, "x", odd, None, w, poisoned(odd.shape))
    else:
        out_base = poisoned(base.shape)
        expect_error(be, "out", plain, None, w, out_base.transpose(1, 0, 2, 3)[:, :, ::2], out_base=out_base)


@pytest.mark.parametrize("which", ["z", "out", "together"])
def test_the_tensor_whose_dims_do_not_reduce_is_named(be, rng, which):
    """x reduces to [tokens, heads] alone (two of its three leading dims merge), z or out does
    not: the error names that one, not x (a review saw x named).  "together": x and z each
    reduce alone, at different dims, so not jointly: z is named."""
    x = rng.standard_normal((2, 5, 4, D)).astype(np.float32)[:, :3]          # [2, 3, 4]: dims 1, 2 merge
    odd = rng.standard_normal((2, 5, 6, D)).astype(np.float32)[:, :3, :4]     # no pair merges
    w = np.ones(D, np.float32)
    if which == "z":
        expect_error(be, "z", x, odd, w, poisoned(x.shape))
    elif which == "out":
        out_base = poisoned((2, 5, 6, D))
        expect_error(be, "out", x, None, w, out_base[:, :3, :4], out_base=out_base)
    else:
        z = rng.standard_normal((2, 3, 6, D)).astype(np.float32)[:, :, :4]   # dims 0, 1 merge; 1, 2 do not
        expect_error(be, "z", x, z, w, poisoned(x.shape))


def test_z_shape_mismatch(be, rng):
    x, z, w = _inputs(rng)
    expect_error(be, "z", x, z[:, :2], w, poisoned(x.shape))


def test_z_and_out_of_another_shape_that_views_alike(be, rng):
    """z and out must have x's shape as given: [T, H * D] views as [T, H, D] at group_size =
    D too, and was accepted (a review)."""
    x, z, w = _inputs(rng)
    x2 = np.ascontiguousarray(x).reshape(T, H * D)
    expect_error(be, "z", x2, np.ascontiguousarray(z), w, poisoned((T, H * D)), group_size=D)
    expect_error(be, "out", x2, None, w, poisoned((T, H, D)), group_size=D)


def test_z_rank_mismatch(be, rng):
    x, z, w = _inputs(rng)
    expect_error(be, "z", x, z.reshape(T * H, D), w, poisoned(x.shape))


@pytest.mark.parametrize("wshape", [(D - 1,), (D + 8,), (1, D), (2, D), ()])
def test_weight_shape(be, rng, wshape):
    x, z, _ = _inputs(rng)
    e = expect_error(be, "weight", x, z, np.ones(wshape, np.float32), poisoned(x.shape))
    assert ("[%d]" % D) in e.message and ("got %d dims" % len(wshape) if len(wshape) != 1 else "got [%d]" % wshape[0]) in e.message, e.message


@pytest.mark.parametrize("oshape", [(T, H, D - 1), (T + 1, H, D), (T * H, D)])
def test_out_shape(be, rng, oshape):
    x, z, w = _inputs(rng)
    expect_error(be, "out", x, z, w, poisoned(oshape))


def test_group_size_not_dividing(be, rng):
    x = rng.standard_normal((T, 3 * D)).astype(np.float32)
    expect_error(be, "group_size", x, None, np.ones(D, np.float32), poisoned(x.shape), anywhere=True,
                 group_size=D - 2)


def test_too_many_dims(rng):
    x = np.zeros((1,) * 9 + (4,), np.float32)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, None, np.ones(4, np.float32))
    assert_names(ei.value, "x")


# ------------------------------------------------------------------------------ strides
def test_non_contiguous_last_dim(be, rng):
    x, z, w = _inputs(rng)
    xs = np.repeat(x, 2, axis=-1)[..., ::2]  # last-dim stride 2
    zs = np.repeat(z, 2, axis=-1)[..., ::2]
    out = poisoned((T, H, 2 * D))
    expect_error(be, "x", xs, z, w, poisoned(x.shape))
    expect_error(be, "z", x, zs, w, poisoned(x.shape))
    expect_error(be, "out", x, z, w, out[..., ::2], out_base=out)


def test_non_contiguous_weight(be, rng):
    x, z, w = _inputs(rng)
    w2 = np.repeat(w, 2)[::2]
    expect_error(be, "weight", x, z, w2, poisoned(x.shape))


# ------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("bad", [np.int32, np.float64, np.uint8, "float8_e4m3fn"])
@pytest.mark.parametrize("arg", ["x", "z", "weight", "out"])
def test_unsupported_dtype(be, rng, arg, bad):
    x, z, w = _inputs(rng)
    out = poisoned(x.shape)
    bad = _dtypes.to_numpy_dtype(bad)
    a = dict(x=x, z=z, weight=w, out=out)
    a[arg] = (np.ones(out.shape) if arg == "out" else a[arg]).astype(bad)
    expect_error(be, arg, a["x"], a["z"], a["weight"], a["out"])


@pytest.mark.parametrize("strided", [False, True])
def test_non_native_byte_order(rng, strided):
    """Named, and said to be the byte order (it said "no DLPack equivalent", a review)."""
    x, z, w = _inputs(rng)
    xs = x.astype(">f4")
    if strided:
        xs = np.repeat(xs, 2, axis=-1)[..., ::2]
    with pytest.raises(GatedNormError, match=r"^x: numpy dtype >f4 is byte-swapped") as ei:
        gatednorm.rmsnorm_gated(xs, z, w)
    assert_names(ei.value, "x")


@pytest.mark.parametrize("bad,match", [(1.0, r"^z: expected an array .* got float"), (True, r"^z: expected an array .* got bool"),
                                       (np.float32(2), r"z: expected at least 1 dim"), (np.bool_(False), r"z: dtype bool not supported")])
def test_a_float_or_bool_is_not_called_a_pointer(rng, bad, match):
    """A float or bool where an array belongs was told to wrap a "bare pointer" (a review);
    numpy's scalars are 0-d arrays, refused as such."""
    x, z, w = _inputs(rng)
    with pytest.raises(gatednorm.InvalidArgumentError, match=match):
        gatednorm.rmsnorm_gated(x, bad, w)


@pytest.mark.parametrize("layout", [np.array(["row", "col"]), np.array(["col"]), ["col"]])
def test_scale_layout_array_is_refused_by_name(rng, layout):
    """`in` on a tuple compared an array elementwise: a plain ValueError, or ["col"] taken as
    "col" (a review)."""
    x = rng.standard_normal((4, 256)).astype(np.float32)
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"^scale_layout: expected one of"):
        gatednorm.group_quant_fp8(x, scale_layout=layout)


# ------------------------------------------------------------------------------ pointers
@pytest.mark.parametrize("arg", ["x", "z", "weight", "out"])
def test_null_data(be, rng, arg):
    x, z, w = _inputs(rng)
    out = poisoned(x.shape)
    a = dict(x=x, z=z, weight=w, out=out)
    a[arg] = from_pointer(0, a[arg].shape, np.float32)
    expect_error(be, arg, a["x"], a["z"], a["weight"], a["out"])


def test_bare_int_pointer_is_rejected(rng):
    x, z, w = _inputs(rng)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x.ctypes.data, z, w)
    assert_names(ei.value, "x")
    assert "from_pointer" in ei.value.message


@pytest.mark.parametrize("arg", ["x", "z", "weight", "out"])
def test_not_an_array(rng, arg):
    x, z, w = _inputs(rng)
    a = dict(x=x, z=z, weight=w, out=poisoned(x.shape))
    a[arg] = [[1.0, 2.0]]
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(a["x"], a["z"], a["weight"], out=a["out"])
    assert_names(ei.value, arg)


def test_read_only_out(rng):
    x, z, w = _inputs(rng)
    out = poisoned(x.shape)
    out.flags.writeable = False
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, z, w, out=out)
    assert_names(ei.value, "out")
    assert np.isnan(out).all()


def test_read_only_inputs_are_fine(rng):
    x, z, w = _inputs(rng)
    for a in (x, z, w):
        a.flags.writeable = False
    y = gatednorm.rmsnorm_gated(x, z, w)
    assert gatednorm.reference.compare(y, gatednorm.reference.rmsnorm_gated(x, z, w)).ok


# ------------------------------------------------------------------------------ options
def test_missing_weight(be, rng):
    x, z, _ = _inputs(rng)
    expect_error(be, "weight", x, z, None, poisoned(x.shape))


@pytest.mark.parametrize("act", ["relu", "", None, 2, -1, 1.5])
def test_bad_activation(be, rng, act):
    x, z, w = _inputs(rng)
    expect_error(be, "activation", x, z, w, poisoned(x.shape), activation=act)


# -1e-50 rounds to -0.0 in the fp32 field, which C's check passed (a review of 2026-12-06)
@pytest.mark.parametrize("eps", [-1.0, -1e-50, float("nan"), float("inf"), "small"])
def test_bad_eps(be, rng, eps):
    x, z, w = _inputs(rng)
    expect_error(be, "eps", x, z, w, poisoned(x.shape), eps=eps)


@pytest.mark.parametrize("name,value", [("eps", None), ("weight_offset", None), ("weight_offset", float("nan")),
                                        ("weight_offset", float("inf")), ("weight_offset", "one")])
def test_bad_scalar_option(be, rng, name, value):
    """None, NaN, inf or a string for a float option: an error naming the option."""
    x, z, w = _inputs(rng)
    expect_error(be, name, x, z, w, poisoned(x.shape), **{name: value})


def test_out_overlapping_weight(rng):
    """out may alias x or z (in place), never the weight it reads for every row."""
    buf = rng.standard_normal((T, H, D)).astype(np.float32)
    before = buf.tobytes()
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(rng.standard_normal((T, H, D)).astype(np.float32), None, buf[0, 0], out=buf)
    assert_names(ei.value, "out")
    assert "weight" in ei.value.message
    assert buf.tobytes() == before


@pytest.mark.parametrize("g", [-4, "x", True])
def test_bad_group_size_value(be, rng, g):
    x = rng.standard_normal((T, 2 * D)).astype(np.float32)
    expect_error(be, "group_size", x, None, np.ones(D, np.float32), poisoned(x.shape), anywhere=True, group_size=g)


def test_out_dtype_mismatch(rng):
    x, z, w = _inputs(rng)
    out = poisoned(x.shape)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, z, w, out=out, out_dtype="bf16")
    assert_names(ei.value, "out_dtype")
    assert np.isnan(out).all()


@pytest.mark.parametrize("stream", [object(), 1.5, True, -1, 1 << 70, "1", b"1", np.True_, np.float32(2), np.array(0.5),
                                    np.array(True), Decimal("3.9"), Fraction(7, 2)])
def test_bad_stream(rng, stream):
    """Not a stream, a float, bool or string (int() would take them), or an int that is no pointer."""
    x, z, w = _inputs(rng)
    out = poisoned(x.shape)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, z, w, out=out, stream=stream)
    assert_names(ei.value, "stream")
    assert np.isnan(out).all()


@pytest.mark.parametrize("od", [np.int32, "uint8", "fp8_e4m3fn", np.dtype(np.float32).newbyteorder()])  # float32 by name, not native (a review)
def test_new_out_of_unsupported_dtype(rng, od):
    """out_dtype for a new output names out_dtype (not the out it would have allocated)."""
    x, z, w = _inputs(rng)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, z, w, out_dtype=od)
    assert_names(ei.value, "out_dtype")


# ------------------------------------------------------------------------------ devices
@pytest.mark.parametrize("arg", ["z", "weight", "out"])
def test_mixed_devices(requires_gpu, rng, arg):
    from conftest import Backend

    gpu = Backend("gpu")
    x, z, w = _inputs(rng)
    a = dict(x=gpu.put(x), z=gpu.put(z), weight=gpu.put(w), out=gpu.put(poisoned(x.shape)))
    host = poisoned(x.shape) if arg == "out" else dict(z=z, weight=w)[arg]
    a[arg] = host  # numpy (CPU) among GPU arrays
    before = Backend.get(a["out"]).tobytes()
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(a["x"], a["z"], a["weight"], out=a["out"])
    assert_names(ei.value, arg, anywhere=True)
    assert Backend.get(a["out"]).tobytes() == before


def test_gpu_device_without_gpu():
    if gatednorm.device_count() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(GatedNormError) as ei:
        gatednorm.DeviceArray((4,), np.float32, device="cuda:0")
    assert "device" in ei.value.message


# ------------------------------------------------- sizes, strides and pointers at the limits
# Descriptors no array library would build, handed to the C ABI directly: the library's own
# validation is what must refuse them (and write nothing).
def _desc(ptr, shape, strides, bits=32):
    from gatednorm.testing import host_descriptor

    return host_descriptor(ptr, shape, strides, 2, bits)


def _c_call(x, w, out, **params):
    from gatednorm._ffi import ffi

    lib = gatednorm._ffi.lib()
    p = ffi.new("gatednorm_rmsnorm_gated_params *")
    assert lib.gatednorm_rmsnorm_gated_params_init(p, ffi.sizeof(p[0])) == 0
    for k, v in params.items():
        setattr(p, k, v)
    st = lib.gatednorm_rmsnorm_gated(x, ffi.NULL, w, out, p, ffi.NULL)
    return st, ffi.string(lib.gatednorm_last_error()).decode()


@pytest.mark.parametrize("offset", [1 << 63, (1 << 64) - 4, (1 << 64) - 64])
def test_byte_offset_past_the_address_space_is_refused(offset):
    """Regression: byte_offset = 2^63 passed validation and the CPU backend read through it."""
    x, w, o = np.ones((2, 8), np.float32), np.ones(8, np.float32), poisoned((2, 8))
    tx = _desc(x.ctypes.data, (2, 8), (8, 1))
    tx.byte_offset = offset
    st, msg = _c_call(tx, _desc(w.ctypes.data, (8,), (1,)), _desc(o.ctypes.data, (2, 8), (8, 1)))
    assert st < 0 and msg.startswith("x:") and "byte_offset" in msg, msg
    assert np.isnan(o).all()


def test_negative_strides_below_address_zero_are_refused():
    x, w, o = np.ones((2, 8), np.float32), np.ones(8, np.float32), poisoned((2, 8))
    st, msg = _c_call(_desc(64, (1 << 40, 8), (-8, 1)), _desc(w.ctypes.data, (8,), (1,)), _desc(o.ctypes.data, (2, 8), (8, 1)))
    assert st < 0 and msg.startswith("x:"), msg
    assert np.isnan(o).all()


def test_params_with_unknown_struct_size_are_refused(rng):
    for size in (33, 36):
        st, msg, o = _small_call(rng, struct_size=size)
        assert st < 0 and msg.startswith("params:"), msg
        assert np.isnan(o).all()


def test_shape_past_int64_is_refused():
    """2^61 x 8 elements wraps int64 to 0: must not pass as "empty" with a NULL pointer."""
    w = np.ones(8, np.float32)
    st, msg = _c_call(_desc(0, (2 ** 61, 8), (8, 1)), _desc(w.ctypes.data, (8,), (1,)), _desc(0, (2 ** 61, 8), (8, 1)))
    assert st < 0 and msg.startswith("x:"), msg


def test_strides_past_int64_are_refused(rng):
    """A token stride of 2^62 fp32 elements wraps the byte extent to 0: refused, out untouched."""
    x = rng.standard_normal((2, 8)).astype(np.float32)
    w, o = np.ones(8, np.float32), poisoned((16,))
    st, msg = _c_call(_desc(x.ctypes.data, (2, 8), (8, 1)), _desc(w.ctypes.data, (8,), (1,)),
                      _desc(o.ctypes.data, (2, 8), (2 ** 62, 1)))
    assert st < 0 and msg.startswith("out:"), msg
    assert np.isnan(o).all()


def test_misaligned_pointer():
    buf, o = np.zeros(64, np.float32), poisoned((4, 8))
    w = np.ones(8, np.float32)
    st, msg = _c_call(_desc(buf.ctypes.data + 1, (4, 8), (8, 1)), _desc(w.ctypes.data, (8,), (1,)),
                      _desc(o.ctypes.data, (4, 8), (8, 1)))
    assert st < 0 and msg.startswith("x:") and "aligned" in msg, msg
    assert np.isnan(o).all()


@pytest.mark.parametrize("shape", [(16,), (2, 2, 2, 8), (3, 2, 16)])
def test_group_size_views_the_last_dim_of_any_rank(rng, shape):
    """group_size G views the last dim L as [L / G, G], whatever the rank (1-D and 4-D were
    refused before leading dims were generalised)."""
    x, o, w = rng.standard_normal(shape).astype(np.float32), poisoned(shape), rng.standard_normal(8).astype(np.float32)
    gatednorm.rmsnorm_gated(x, None, w, out=o, group_size=8)
    assert reference.compare(o, reference.rmsnorm_gated(x, None, w, group_size=8), np.float32)


def test_out_partly_overlapping_x(rng):
    """out shifted by one row inside x's buffer: refused (only an exact alias is in place)."""
    xb = rng.standard_normal((T + 1, H, D)).astype(np.float32)
    before = xb.tobytes()
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(xb[:T], None, np.ones(D, np.float32), out=xb[1:])
    assert_names(ei.value, "out")
    assert xb.tobytes() == before


def test_out_of_another_dtype_at_x_address(rng):
    """An fp32 out starting at a bf16 x's address, both contiguous (the fast path's shapes):
    not the same view, so not in place: refused naming out, x untouched (a review's mutant
    that took the same address as an alias passed every test but the fuzz driver)."""
    buf = np.zeros(T * H * D * 2, np.float32)  # room for the fp32 out over the bf16 x
    x = buf.view(BF16)[:T * H * D].reshape(T, H, D)
    x[...] = rng.standard_normal((T, H, D)).astype(BF16)
    before = buf.tobytes()
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, None, np.ones(D, np.float32), out=buf[:T * H * D].reshape(T, H, D))
    assert_names(ei.value, "out")
    assert buf.tobytes() == before


def test_out_rows_overlapping_each_other(rng):
    """A zero token stride would make every token write the same row."""
    x, w, o = rng.standard_normal((T, H, D)).astype(np.float32), np.ones(D, np.float32), poisoned((H, D))
    st, msg = _c_call(_desc(x.ctypes.data, (T, H, D), (H * D, D, 1)), _desc(w.ctypes.data, (D,), (1,)),
                      _desc(o.ctypes.data, (T, H, D), (0, D, 1)))
    assert st < 0 and msg.startswith("out:") and "overlap" in msg, msg
    assert np.isnan(o).all()


def test_byte_offset_is_honoured(rng):
    """The descriptor's byte_offset moves the data start (DLPack semantics)."""
    x, w = rng.standard_normal((3, 8)).astype(np.float32), np.ones(8, np.float32)
    xb = np.concatenate([np.full(4, 7.0, np.float32), x.ravel()])
    o = poisoned((3, 8))
    tx = _desc(xb.ctypes.data, (3, 8), (8, 1))
    tx.byte_offset = 16
    st, msg = _c_call(tx, _desc(w.ctypes.data, (8,), (1,)), _desc(o.ctypes.data, (3, 8), (8, 1)))
    assert st == 0, msg
    assert reference.compare(o, reference.rmsnorm_gated(x, None, w), np.float32).ok


def _small_call(rng, **params):
    x = rng.standard_normal((4, 8)).astype(np.float32)
    w, o = np.ones(8, np.float32), poisoned((4, 8))
    st, msg = _c_call(_desc(x.ctypes.data, (4, 8), (8, 1)), _desc(w.ctypes.data, (8,), (1,)),
                      _desc(o.ctypes.data, (4, 8), (8, 1)), **params)
    return st, msg, o


@pytest.mark.parametrize("pdl", [2, -1])
def test_bad_pdl(rng, pdl):
    st, msg, o = _small_call(rng, pdl=pdl)
    assert st < 0 and msg.startswith("params.pdl:"), msg
    assert np.isnan(o).all()


def test_params_of_the_first_layout_are_accepted(rng):
    """A caller built against the first params layout (up to group_size) passes a smaller
    struct_size: accepted, and the fields past it (pdl, here garbage) are not read."""
    from gatednorm._ffi import ffi

    v1 = gatednorm._ffi.lib().GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE
    assert v1 == ffi.offsetof("gatednorm_rmsnorm_gated_params", "pdl") < ffi.sizeof("gatednorm_rmsnorm_gated_params")
    st, msg, o = _small_call(rng, struct_size=v1, pdl=77)
    assert st == 0, msg
    assert not np.isnan(o).any()
    st, msg, o = _small_call(rng, struct_size=v1 - 1)
    assert st < 0 and msg.startswith("params:"), msg
    assert np.isnan(o).all()


# ------------------------------------------------------------------ Python option checks (#11)
@pytest.mark.parametrize("kw, name", [
    (dict(norm_before_gate="no"), "norm_before_gate"),
    (dict(norm_before_gate=2), "norm_before_gate"),
    (dict(eps=True), "eps"),
    (dict(eps="1e-6"), "eps"),
    (dict(weight_offset=None), "weight_offset"),
    (dict(pdl="yes"), "pdl"),
    (dict(activation="relu"), "activation"),
    (dict(group_size=8.0), "group_size"),
])
def test_options_are_type_checked(rng, kw, name):
    x, z, w = _inputs(rng)
    o = poisoned(x.shape)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, z, w, out=o, **kw)
    assert ei.value.message.startswith(name + ":"), ei.value.message
    assert isinstance(ei.value, ValueError)
    assert np.isnan(o).all()


def test_weight_is_a_required_argument(rng):
    x, z, w = _inputs(rng)
    with pytest.raises(TypeError):
        gatednorm.rmsnorm_gated(x, w)  # the old signature took this as z = w, weight missing
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, z, None)
    assert ei.value.message.startswith("weight:")


def test_error_pickles():
    import pickle

    e = GatedNormError(-1, "x: bad", "rmsnorm_gated")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is type(e) and isinstance(e2, ValueError)
    assert (e2.status, e2.message, e2.function, str(e2)) == (e.status, e.message, e.function, str(e))
    d = pickle.loads(pickle.dumps(GatedNormError(-4, "device error text")))
    assert d.status == -4 and not isinstance(d, ValueError)


def test_huge_devicearray_names_its_shape():
    with pytest.raises(GatedNormError) as ei:
        gatednorm.DeviceArray((1 << 62,), np.float32, device="cpu")
    assert ei.value.message.startswith("shape:")


@pytest.mark.parametrize("dt, text", [(np.bool_, "bool"), (np.complex64, "complex64")])
def test_bool_and_complex_are_named(dt, text):
    x = np.zeros((2, 8), dt)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.rmsnorm_gated(x, None, np.ones(8, np.float32), out=poisoned((2, 8)))
    assert ei.value.message.startswith("x:") and text in ei.value.message, ei.value.message


def test_empty_call_on_a_device_this_build_cannot_run_is_refused():
    """Regression (fuzz_abi): an empty call returned success on any device, even device type
    99 or a GPU id past the visible ones; it fails like a non-empty call there."""
    w = np.ones(8, np.float32)
    gpu = gatednorm._ffi.lib().gatednorm_gpu_device_type() or 2
    for dev in ((99, 0), (gpu, 1000)):
        tx, tw, to = _desc(0, (0, 8), (8, 1)), _desc(w.ctypes.data, (8,), (1,)), _desc(0, (0, 8), (8, 1))
        for t in (tx, tw, to):
            t.device.device_type, t.device.device_id = dev
        st, msg = _c_call(tx, tw, to)
        assert st == gatednorm._ffi.lib().GATEDNORM_STATUS_NO_DEVICE and msg.startswith("x:"), (dev, msg)


@pytest.mark.parametrize("call", ["gatednorm_stream_synchronize", "gatednorm_stream_destroy"])
def test_stream_handle_without_a_gpu_backend_names_the_stream(call):
    """Regression (fuzz_abi): on a build with no GPU backend a stream handle was refused with
    "this build of gatednorm has no GPU backend", naming no argument."""
    from gatednorm._ffi import ffi

    lib = gatednorm._ffi.lib()
    if lib.gatednorm_gpu_device_type() != 0:
        pytest.skip("this build has a GPU backend")
    st = getattr(lib, call)(ffi.cast("void *", 0x1234))
    msg = ffi.string(lib.gatednorm_last_error()).decode()
    assert st == lib.GATEDNORM_STATUS_NO_DEVICE and msg.startswith("stream:"), msg


def test_w4a16_plain_weight_past_2_31_is_refused():
    """Regression (review): a broadcast qweight [2^32, 2^30] (strides 0, 1: no memory behind
    it) passed validation and the CPU backend's N * K overflowed ("unexpected C++ exception")."""
    from gatednorm._ffi import ffi

    lib = gatednorm._ffi.lib()
    qb, sb = np.zeros(16, np.uint8), np.ones(4, np.float32)
    a, out = np.ones(16, np.float32), np.full(16, np.nan, np.float32)
    q = _desc(qb.ctypes.data, (2 ** 32, 2 ** 30), (0, 1))
    q.dtype.code, q.dtype.bits = 1, 8  # uint8
    s = _desc(sb.ctypes.data, (2 ** 32, 1), (0, 0))
    ta = _desc(a.ctypes.data, (1, 2 ** 31), (2 ** 31, 1), bits=16)  # validated, never read
    ta.dtype.code = 4  # bfloat16
    to = _desc(out.ctypes.data, (1, 2 ** 32), (2 ** 32, 1))
    p = ffi.new("gatednorm_w4a16_params *")
    assert lib.gatednorm_w4a16_params_init(p, ffi.sizeof(p[0])) == 0
    st = lib.gatednorm_w4a16_gemm(ta, q, s, ffi.NULL, ffi.NULL, to, ffi.NULL, p, ffi.NULL)
    msg = ffi.string(lib.gatednorm_last_error()).decode()
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("qweight:") and "2^31" in msg, msg
    assert np.isnan(out).all()


def test_thread_count_in_a_forked_child_while_the_parent_runs_a_parallel_region():
    """Regression (review): a child forked while another parent thread held the pool's
    dispatch lock hung in gatednorm_get_num_threads (and in every host W4A16 GEMM)."""
    import os
    import threading

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    x = np.random.default_rng(0).standard_normal((8192, 1024)).astype(np.float32)
    w = np.ones(1024, np.float32)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            gatednorm.rmsnorm_gated(x, None, w)

    th = threading.Thread(target=busy)
    th.start()
    try:
        import time

        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:  # child: must answer, not hang on the parent's lock
            import signal

            signal.alarm(10)
            try:
                from gatednorm._ffi import ffi

                n = ffi.new("int32_t *")
                ok = gatednorm._ffi.lib().gatednorm_get_num_threads(n) == 0 and n[0] >= 1
                y = gatednorm.rmsnorm_gated(x[:64], None, w)
                ok = ok and bool(np.isfinite(y).all())
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        stop.set()
        th.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_forked_child_is_not_held_by_the_parents_python_locks():
    """Regression (session 35's review): a child forked while a parent thread held the
    binding's load lock (its first call: header parse and dlopen) or an entry's compile lock
    waited on it forever; os.register_at_fork gives the child fresh ones.  Here the test's own
    thread holds both across the fork, as that thread would."""
    import os
    import signal

    from gatednorm import _call, _ffi

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    with _ffi._lock, _call._COMPILE_LOCK:
        pid = os.fork()
        if pid == 0:
            signal.alarm(10)
            ok = _ffi._lock.acquire(timeout=5) and _call._COMPILE_LOCK.acquire(timeout=5)
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def _option_cases():
    bf = _dtypes.to_numpy_dtype("bfloat16")
    x, w = np.ones((2, 256), bf), np.ones(256, bf)
    x3, w3 = x.reshape(2, 2, 128), w[:128]
    return [
        ("rmsnorm", "eps", lambda: gatednorm.rmsnorm(x, w, eps=-1.0)),
        ("add_rmsnorm", "eps", lambda: gatednorm.add_rmsnorm(x, x.copy(), w, eps=-1.0)),
        ("rmsnorm", "group_size", lambda: gatednorm.rmsnorm(x, w, fp8=True, group_size=100)),
        ("rmsnorm_gated", "eps", lambda: gatednorm.rmsnorm_gated(x, x, w, eps=float("nan"))),
        ("rmsnorm_gated_fp8", "group_size", lambda: gatednorm.rmsnorm_gated_fp8(x, x, w, group_size=100)),
        ("rmsnorm_gated_fp8", "fp8_max", lambda: gatednorm.rmsnorm_gated_fp8(x3, x3, w3, fp8_max=1000.0)),
        ("group_quant_fp8", "group_size", lambda: gatednorm.group_quant_fp8(x, group_size=96)),
    ]


@pytest.mark.parametrize("op, keyword, call", _option_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_option_errors_name_the_keyword_and_the_op(op, keyword, call):
    """A bad option the library refuses is named by the wrapper's keyword (it was the C field,
    params.eps / params.quant.group_size) under the op the caller called (rmsnorm's said
    add_rmsnorm, whose C entry it shares)."""
    with pytest.raises(GatedNormError) as e:
        call()
    msg = str(e.value)
    assert msg.startswith("%s: %s:" % (op, keyword)), msg
    assert "params." not in msg, msg


@pytest.mark.parametrize("call, match", [
    (lambda x, w: gatednorm.rmsnorm_gated(x, x, w, group_size=0), "group_size: expected None .* got 0"),
    (lambda x, w: gatednorm.rmsnorm_gated(x, x, w, group_size=-128), "group_size: expected None .* got -128"),
    (lambda x, w: gatednorm.rmsnorm_gated_fp8(x, x, w, head_dim=0), "head_dim: expected None .* got 0"),
    (lambda x, w: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), 0), "group_size: 0 does not divide"),
])
def test_zero_is_not_none(call, match):
    """group_size / head_dim = 0 read as "none" (the C entries' 0) and from_float's as
    per-channel, silently; None is the spelling of none, 0 is refused."""
    x, w = np.ones((2, 256), np.float32), np.ones(256, np.float32)
    with pytest.raises(gatednorm.InvalidArgumentError, match=match):
        call(x, w)


# ------------------------------------------- C ABI bounds a mutation review found untested
# Each test is the input that told a weakened check from the real one (a mutant that no test
# or fuzz seed killed): the bound itself, not a value far past it.
def test_nine_dims_are_refused_at_the_c_entry():
    """ndim = 9 (one past GATEDNORM_MAX_DIMS): the 9th dim would be read from strides[0] and
    byte_offset, and a group view writes past its stack array. Python refuses 10 dims first,
    so this goes to the C entry directly."""
    x, w, o = np.ones(8, np.float32), np.ones(1, np.float32), poisoned((8,))
    tx = _desc(x.ctypes.data, (1,) * 7 + (8,), (1,) * 8)
    to = _desc(o.ctypes.data, (1,) * 7 + (8,), (1,) * 8)
    tx.ndim = to.ndim = 9
    st, msg = _c_call(tx, _desc(w.ctypes.data, (1,), (1,)), to)
    assert st < 0 and msg.startswith("x:") and "ndim 9" in msg, msg
    assert np.isnan(o).all()


def test_negative_shape_is_refused_at_the_c_entry():
    x, w, o = np.ones(8, np.float32), np.ones(8, np.float32), poisoned((8,))
    st, msg = _c_call(_desc(x.ctypes.data, (-3, 8), (0, 1)), _desc(w.ctypes.data, (8,), (1,)),
                      _desc(o.ctypes.data, (-3, 8), (0, 1)))
    assert st < 0 and msg.startswith("x:") and "negative" in msg, msg
    assert np.isnan(o).all()


@pytest.mark.parametrize("shape,strides", [((4, 1), (1, -2 ** 63)), ((4, 1), (1, 5)), ((1, 8), (-2 ** 63, 1)),
                                           ((1, 8), (0, 1)), ((1, 8), (-3, 1)), ((2, 1, 8), (8, 2 ** 40, 1))])
def test_unit_dim_strides_fast_and_full_paths_agree(shape, strides):
    """The contiguous host fast path must accept nothing the full checks refuse (and give the
    same bits when both accept): odd strides of unit dims (INT64_MIN, which the full checks
    refuse as they cannot take its magnitude; 0, negative, huge), forced down the full path by
    a group view of the whole last dim (the same computation)."""
    n = int(np.prod(shape))
    x = (np.arange(n, dtype=np.float32) % 7 + 1)
    w = np.ones(shape[-1], np.float32)
    outs, results = [], []
    for group in (0, shape[-1]):
        o = poisoned((n,))
        st, msg = _c_call(_desc(x.ctypes.data, shape, strides), _desc(w.ctypes.data, (shape[-1],), (1,)),
                          _desc(o.ctypes.data, shape, strides), group_size=group)
        results.append((st, msg.split(":")[0] if st else ""))
        outs.append(o)
    assert results[0] == results[1], results
    if results[0][0] == 0:
        assert np.array_equal(outs[0], outs[1])
    else:
        assert results[0][1] == "x" and np.isnan(outs[0]).all()


def test_y_copy_rows_overlapping_each_other_are_refused():
    """gated FP8's y_copy with a token stride of 0 (every row one memory): refused by name."""
    from gatednorm._ffi import ffi

    lib = gatednorm._ffi.lib()
    d = 128
    x, w = np.ones((4, d), np.float32), np.ones(d, np.float32)
    q, s, y = np.zeros((4, d), np.uint8), np.zeros((4, 1), np.float32), poisoned((d,))
    tq = _desc(q.ctypes.data, (4, d), (d, 1), bits=8)
    tq.dtype.code = 10  # float8_e4m3fn
    p = ffi.new("gatednorm_rmsnorm_gated_fp8_params *")
    assert lib.gatednorm_rmsnorm_gated_fp8_params_init(p, ffi.sizeof(p[0])) == 0
    st = lib.gatednorm_rmsnorm_gated_fp8(_desc(x.ctypes.data, (4, d), (d, 1)), ffi.NULL, _desc(w.ctypes.data, (d,), (1,)), tq,
                                         _desc(s.ctypes.data, (4, 1), (1, 1)), _desc(y.ctypes.data, (4, d), (0, 1)), p, ffi.NULL)
    msg = ffi.string(lib.gatednorm_last_error()).decode()
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("y_copy:"), msg
    assert np.isnan(y).all() and not q.any()


def test_c_add_rmsnorm_refuses_quantize_rounded_without_fp8_outputs():
    """The C entry refused nothing when quantize_rounded = 1 came without q and scales (Python
    refused it; docs/ops.md §3 says both refuse it): it wrote y and ignored the flag (a
    review, session 45).  Now it names the field, and y is left as it was."""
    from gatednorm._ffi import ffi

    lib = gatednorm._ffi.lib()
    d = 256
    x, w, y = np.ones((4, d), np.float32), np.ones(d, np.float32), poisoned((4, d))
    p = ffi.new("gatednorm_add_rmsnorm_params *")
    assert lib.gatednorm_add_rmsnorm_params_init(p, ffi.sizeof(p[0])) == 0
    p.quant.quantize_rounded = 1
    tx, tw, ty = _desc(x.ctypes.data, (4, d), (d, 1)), _desc(w.ctypes.data, (d,), (1,)), _desc(y.ctypes.data, (4, d), (d, 1))
    st = lib.gatednorm_add_rmsnorm(tx, ffi.NULL, tw, ffi.NULL, ty, ffi.NULL, ffi.NULL, p, ffi.NULL)
    msg = ffi.string(lib.gatednorm_last_error()).decode()
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("params.quant.quantize_rounded:"), msg
    assert np.isnan(y).all()
    p.quant.quantize_rounded = 0  # the same call without the flag runs
    assert lib.gatednorm_add_rmsnorm(tx, ffi.NULL, tw, ffi.NULL, ty, ffi.NULL, ffi.NULL, p, ffi.NULL) == 0
    assert np.isfinite(y).all()


def test_negative_zero_fp8_max_is_a_negative_bound():
    """fp8_max 0 asks for the format's max; -0 was read as that too while -1e-50 was refused
    as out of range (a review, session 45): -0 is now refused by name, in Python and in both C
    entries that take it, and nothing is written."""
    from gatednorm._ffi import ffi

    lib = gatednorm._ffi.lib()
    x = np.ones((2, 128), np.float32)
    q, s = np.zeros((2, 128), _dtypes.float8_e4m3fn), poisoned((2, 1))
    with pytest.raises(GatedNormError, match="^fp8_max: "):
        gatednorm.group_quant_fp8(x, q=q, scales=s, fp8_max=-0.0)
    assert np.isnan(s).all() and not q.view(np.uint8).any()
    q2, s2 = gatednorm.group_quant_fp8(x, fp8_max=0.0)  # +0: the format's max
    assert float(s2.max()) == pytest.approx(1.0 / 448.0)
    # -0 after +0 with the same other options: the wrappers' memo of checked options took -0
    # for +0 (they compare equal and hash alike) and ran it as 448 (a review, session 50)
    z, w = np.ones((2, 1, 128), np.float32), np.ones(128, np.float32)
    for name, op in (("group_quant_fp8", lambda m: gatednorm.group_quant_fp8(x, q=q, scales=s, fp8_max=m)),
                     ("rmsnorm", lambda m: gatednorm.rmsnorm(x, w, fp8=True, y=False, q=q, scales=s, fp8_max=m)),
                     ("add_rmsnorm", lambda m: gatednorm.add_rmsnorm(x, x.copy(), w, fp8=True, y=False, q=q, scales=s,
                                                                     fp8_max=m)),
                     ("rmsnorm_gated_fp8", lambda m: gatednorm.rmsnorm_gated_fp8(x.reshape(2, 1, 128), z, w, q=q,
                                                                                 scales=s, fp8_max=m))):
        op(0.0)
        q[:], s[:] = 0, np.nan
        for neg in (-0.0, np.float64(-0.0), np.float32(-0.0)):
            with pytest.raises(GatedNormError, match="^fp8_max: "):
                op(neg)
            assert np.isnan(s).all() and not q.view(np.uint8).any(), (name, neg)
    v, codes = np.ones(4, np.float32), np.zeros(4, np.uint8)
    st = lib.gatednorm_fp8_encode(ffi.cast("float *", v.ctypes.data), ffi.cast("uint8_t *", codes.ctypes.data), 4,
                                  lib.GATEDNORM_FP8_FORMAT_E4M3FN, -0.0)
    msg = ffi.string(lib.gatednorm_last_error()).decode()
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("fp8_max:") and not codes.any(), msg
    assert lib.gatednorm_fp8_encode(ffi.cast("float *", v.ctypes.data), ffi.cast("uint8_t *", codes.ctypes.data), 4,
                                    lib.GATEDNORM_FP8_FORMAT_E4M3FN, 0.0) == 0 and codes.all()
    # the params block's field, read by every op with FP8 outputs (here group quant's C entry)
    p = ffi.new("gatednorm_group_quant_fp8_params *")
    assert lib.gatednorm_group_quant_fp8_params_init(p, ffi.sizeof(p[0])) == 0
    p.quant.fp8_max = -0.0
    qb = np.zeros((2, 128), np.uint8)
    tq = _desc(qb.ctypes.data, (2, 128), (128, 1), bits=8)
    tq.dtype.code = 10  # float8_e4m3fn
    tx, ts = _desc(x.ctypes.data, (2, 128), (128, 1)), _desc(s.ctypes.data, (2, 1), (1, 1))
    st = lib.gatednorm_group_quant_fp8(tx, tq, ts, p, ffi.NULL)
    msg = ffi.string(lib.gatednorm_last_error()).decode()
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and msg.startswith("params.quant.fp8_max:"), msg
    assert np.isnan(s).all() and not qb.any()
    p.quant.fp8_max = 0.0
    assert lib.gatednorm_group_quant_fp8(tx, tq, ts, p, ffi.NULL) == 0 and qb.any()


def _w4_call(a, q, s, bias, out):
    from gatednorm._ffi import ffi

    lib = gatednorm._ffi.lib()
    p = ffi.new("gatednorm_w4a16_params *")
    assert lib.gatednorm_w4a16_params_init(p, ffi.sizeof(p[0])) == 0
    st = lib.gatednorm_w4a16_gemm(a, q, s, ffi.NULL, ffi.NULL if bias is None else bias, out, ffi.NULL, p, ffi.NULL)
    return st, ffi.string(lib.gatednorm_last_error()).decode()


def _w4_desc(ptr, shape, strides, code, bits):
    t = _desc(ptr, shape, strides, bits=bits)
    t.dtype.code = code
    return t


def test_w4a16_n_at_exactly_2_31_is_refused():
    """N = 2^31 exactly (the bound itself; a broadcast qweight, no memory behind it) with
    M = 0: refused naming qweight (accepting it sent the CPU path dequantizing 16 GiB)."""
    qb, sb, ab, ob = np.zeros(16, np.uint8), np.ones(4, np.float32), np.ones(4, np.uint16), np.zeros(4, np.float32)
    q = _w4_desc(qb.ctypes.data, (2 ** 31, 1), (0, 1), 1, 8)
    s = _desc(sb.ctypes.data, (2 ** 31, 1), (0, 0))
    st, msg = _w4_call(_w4_desc(ab.ctypes.data, (0, 2), (2, 1), 4, 16), q, s, None,
                       _desc(ob.ctypes.data, (0, 2 ** 31), (2 ** 31, 1)))
    assert st < 0 and msg.startswith("qweight:") and "2^31" in msg, msg


@pytest.mark.parametrize("which", ["qweight", "bias"])
def test_w4a16_strided_qweight_or_bias_is_refused(which):
    """A plain qweight whose last dim is strided (q[:, ::2]) or a strided bias: each read as
    if contiguous (a wrong product; a stride 0 reads past one element) unless refused."""
    rng = np.random.default_rng(0)
    qb = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    sb, bb = np.ones((4, 1), np.float32), np.arange(8, dtype=np.float32)
    ab, ob = np.full((1, 32), 0x3f80, np.uint16), poisoned((1, 4))
    q = _w4_desc(qb.ctypes.data, (4, 16), (32, 2) if which == "qweight" else (32, 1), 1, 8)
    bias = _desc(bb.ctypes.data, (4,), (2,)) if which == "bias" else None
    st, msg = _w4_call(_w4_desc(ab.ctypes.data, (1, 32), (32, 1), 4, 16), q, _desc(sb.ctypes.data, (4, 1), (1, 1)), bias,
                       _desc(ob.ctypes.data, (1, 4), (4, 1)))
    assert st < 0 and msg.startswith(which + ":"), msg
    assert np.isnan(ob).all()


def _huge_view(dt, hidden):
    """[2^40, hidden] of one element (stride 0): a valid input whose like-shaped outputs no
    machine can hold."""
    return np.lib.stride_tricks.as_strided(np.ones(1, dt), shape=(1 << 40, hidden), strides=(0, 0), writeable=False)


@pytest.mark.parametrize("op, out_name, itemsize", [("rmsnorm_gated", "out", 4), ("rmsnorm_gated_fp8", "q", 1),
                                                    ("rmsnorm", "y_out", 4), ("add_rmsnorm", "y_out", 4),
                                                    ("rmsnorm_fp8_only", "q", 1), ("group_quant_fp8", "q", 1)])
def test_output_too_large_to_allocate_is_named(op, out_name, itemsize):
    """An output made like a huge broadcast input cannot be allocated: a GatedNormError with
    the out-of-memory status naming that output, its size and what it was made like (a review:
    numpy's bare MemoryError escaped), whatever the other arguments hold."""
    x, w = _huge_view(np.float32, 128), np.ones(128, np.float32)
    calls = {"rmsnorm_gated": lambda: gatednorm.rmsnorm_gated(x, x, w),
             "rmsnorm_gated_fp8": lambda: gatednorm.rmsnorm_gated_fp8(x, x, w),
             "rmsnorm": lambda: gatednorm.rmsnorm(x, w),
             "add_rmsnorm": lambda: gatednorm.add_rmsnorm(x, x, w, residual_out=x),
             "rmsnorm_fp8_only": lambda: gatednorm.rmsnorm(x, w, y=False, fp8=True),
             "group_quant_fp8": lambda: gatednorm.group_quant_fp8(x)}
    with pytest.raises(GatedNormError) as ei:
        calls[op]()
    e = ei.value
    assert not isinstance(e, ValueError) and e.status == -5, (e.status, e.message)  # out of memory, not a bad argument
    assert_names(e, out_name)
    assert "made like x" in e.message and "%d bytes" % (itemsize * 128 << 40) in e.message, e.message


@pytest.mark.parametrize("rows", [1 << 40, 1 << 58])  # the allocator's refusal; past 2^63 bytes (a review)
@pytest.mark.parametrize("op, out_name", [("rmsnorm_gated", "out"), ("rmsnorm", "y_out"), ("group_quant_fp8", "q")])
def test_output_too_large_for_the_library_allocator_is_named(op, out_name, rows):
    """The same through a DeviceArray input (the output is the library's allocation): at 2^58
    rows the bytes pass 2^63, which DeviceArray refuses naming its own ``shape``."""
    base = gatednorm.DeviceArray((128,), np.float32)
    x = from_pointer(base.data_ptr, (rows, 128), np.float32, strides=(0, 1), device=(base.device_type, base.device_id),
                     owner=base)
    _assert_unallocated_named(op, out_name, x, np.ones(128, np.float32))


def _assert_unallocated_named(op, out_name, x, w):
    """``op`` on x (and w), whose output cannot be allocated: out of memory, naming it."""
    calls = {"rmsnorm_gated": lambda: gatednorm.rmsnorm_gated(x, x, w), "rmsnorm": lambda: gatednorm.rmsnorm(x, w),
             "group_quant_fp8": lambda: gatednorm.group_quant_fp8(x)}
    with pytest.raises(GatedNormError) as ei:
        calls[op]()
    assert ei.value.status == -5, ei.value.message
    assert_names(ei.value, out_name)


@pytest.mark.parametrize("op, name", [("rmsnorm_gated", "weight_offset"), ("add_rmsnorm", "weight_offset"),
                                      ("group_quant_fp8", "amax_floor")])
@pytest.mark.parametrize("value", [10 ** 400, -10 ** 400])
def test_option_int_past_float_range_is_named(op, name, value):
    """An int option past float's range: named as out of range (the options' memo key took
    its zero sign first, and math.copysign's OverflowError escaped: a review)."""
    x, w = np.ones((2, 128), np.float32), np.ones(128, np.float32)
    calls = {"rmsnorm_gated": lambda: gatednorm.rmsnorm_gated(x, None, w, weight_offset=value),
             "add_rmsnorm": lambda: gatednorm.add_rmsnorm(x, x.copy(), w, weight_offset=value),
             "group_quant_fp8": lambda: gatednorm.group_quant_fp8(x, amax_floor=value)}
    with pytest.raises(GatedNormError) as ei:
        calls[op]()
    assert_names(ei.value, name)


@pytest.mark.parametrize("bad", [("f4", -1), "f4,("])
def test_malformed_dtype_is_named(bad):
    """A dtype numpy cannot parse (ValueError, SyntaxError from np.dtype) is named like any
    non-dtype (a review: both escaped raw)."""
    x, w = np.ones((2, 128), np.float32), np.ones(128, np.float32)
    for call, name in ((lambda: gatednorm.rmsnorm_gated(x, None, w, out_dtype=bad), "out_dtype"),
                       (lambda: gatednorm.rmsnorm(x, w, y_dtype=bad), "y_dtype"),
                       (lambda: gatednorm.DeviceArray((2,), bad), "dtype")):
        with pytest.raises(GatedNormError) as ei:
            call()
        assert_names(ei.value, name)


@pytest.mark.parametrize("op, out_name", [("rmsnorm_gated", "out"), ("rmsnorm", "y_out"), ("group_quant_fp8", "q")])
def test_torch_output_too_large_to_allocate_is_named(op, out_name):
    """The same on torch tensors: torch's allocation error (a RuntimeError, naming nothing)
    becomes the out-of-memory GatedNormError naming the output."""
    torch = pytest.importorskip("torch")
    _assert_unallocated_named(op, out_name, torch.ones(1, 128).expand(1 << 40, 128), torch.ones(128))


def test_descriptor_extents_and_strides_past_int64_are_named():
    """A DeviceArray / from_pointer shape or stride past int64 raised struct.error when the call
    layer packed its descriptor (a review): refused where it is given, by name."""
    base = gatednorm.DeviceArray((8,), np.float32, device="cpu")
    for call, name in ((lambda: gatednorm.DeviceArray((0, 1 << 70), np.float32, device="cpu"), "shape"),
                       (lambda: from_pointer(base.data_ptr, (1 << 63, 4), np.float32, owner=base), "shape"),
                       (lambda: from_pointer(base.data_ptr, (2, 4), np.float32, strides=(1 << 70, 1), owner=base), "strides"),
                       (lambda: from_pointer(base.data_ptr, (2, 4), np.float32, strides=(-(1 << 63) - 1, 1), owner=base),
                        "strides"),
                       (lambda: base.view(element_strides=(1 << 70,)), "element_strides"),
                       # strides past int64 that no argument gave: a slice's step (2^61 x 4) and a
                       # zero-size shape's C strides (4 x 2^62), which escaped as struct.error /
                       # OverflowError at the first call or export (a review)
                       (lambda: base.reshape(2, 4)[::1 << 61], "key"),
                       (lambda: gatednorm.DeviceArray((0, 1 << 62, 4), np.float32, device="cpu"), "shape"),
                       (lambda: from_pointer(0, (0, 1 << 62, 4), np.float32, device="cpu"), "shape")):
        with pytest.raises(GatedNormError) as ei:
            call()
        assert_names(ei.value, name)
    ok = base.reshape(2, 4)[::1 << 60]  # a stride of 2^62: fits
    assert ok.shape == (1, 4) and ok.element_strides == (1 << 62, 1)


def test_from_pointer_refuses_a_float_array_as_address():
    """A one-element float array has __int__ (np.array(4096.7) -> 4096) and was taken as an
    address (a review); integer arrays are addresses as ints are."""
    with pytest.raises(GatedNormError) as ei:
        from_pointer(np.array(4096.7), (2,), "f4")
    assert_names(ei.value, "ptr")
    assert from_pointer(np.array(4096, np.int64), (2,), "f4").data_ptr == 4096
    torch = pytest.importorskip("torch")
    with pytest.raises(GatedNormError) as ei:
        from_pointer(torch.tensor([4096.7]), (2,), "f4")
    assert_names(ei.value, "ptr")
    assert from_pointer(torch.tensor(4096), (2,), "f4").data_ptr == 4096


def test_device_array_methods_name_their_argument():
    """DeviceArray's host copies, reshape, constructor and device parsing raised numpy's /
    cffi's errors naming nothing (a review); each now names the argument."""
    a = gatednorm.DeviceArray((6,), np.float32, device="cpu")
    a.fill_(7.0)
    for call, name in ((lambda: a.copy_(np.ones(5)), "src"), (lambda: a.fill_("x"), "value"),
                       (lambda: a.fill_(10 ** 400), "value"), (lambda: a.reshape(2.5), "shape"),
                       (lambda: a.reshape(None), "shape"),
                       (lambda: gatednorm.DeviceArray((2,), "f4", device=gatednorm._ffi.ffi.new("int *")), "device")):
        with pytest.raises(GatedNormError) as ei:
            call()
        assert_names(ei.value, name)
    assert (a.numpy() == 7.0).all()  # nothing written by the refused copies

    class BadDevice:
        def __dlpack_device__(self):
            return ("x", 0)
    with pytest.raises(GatedNormError) as ei:
        gatednorm.DeviceArray((2,), "f4", device=BadDevice())
    assert_names(ei.value, "device")
    with pytest.raises(GatedNormError) as ei:  # the library's refusal named its own bytes
        gatednorm.DeviceArray((1 << 59,), np.float32, device="cpu")
    assert ei.value.status == -5
    assert_names(ei.value, "shape")


def test_torch_without_strided_storage_is_named():
    """Nested and sparse torch tensors raised torch's errors (NestedTensorImpl has no sizes;
    as_strided of a sparse tensor) from the ops that make their outputs first (a review)."""
    torch = pytest.importorskip("torch")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested tensors are a prototype
        nested = torch.nested.nested_tensor([torch.ones(2, 128), torch.ones(2, 128)])
    sparse = torch.ones(8, 128).to_sparse()
    w = torch.ones(128)
    for call in (lambda: gatednorm.rmsnorm(nested, w), lambda: gatednorm.group_quant_fp8(nested),
                 lambda: gatednorm.add_rmsnorm(nested, nested, w), lambda: gatednorm.rmsnorm_gated_fp8(nested, nested, w),
                 lambda: gatednorm.rmsnorm(sparse, w, fp8=True, scale_layout="col"), lambda: gatednorm.rmsnorm(sparse, w)):
        with pytest.raises(GatedNormError) as ei:
            call()
        assert_names(ei.value, "x")


def test_torch_refusing_to_allocate_is_named_by_its_cause():
    """torch's RuntimeError while making an output is out of memory only when it says so (a
    review: every RuntimeError read as -5, a sticky CUDA error included): else it names the
    tensor the output was made like, with the device-error status for a device's error."""
    torch = pytest.importorskip("torch")

    class Refusing(torch.Tensor):
        message = ""

        def new_empty(self, *args, **kw):
            raise RuntimeError(Refusing.message)

    x = torch.ones(2, 128).as_subclass(Refusing)
    w = torch.ones(128)
    for message, status in (("CUDA error: an illegal memory access was encountered", -4), ("boom", -1),
                            ("CUDA out of memory. Tried to allocate 2.00 GiB", -5)):
        Refusing.message = message
        for call, out_name in ((lambda: gatednorm.rmsnorm_gated(x, None, w), "out"),
                               (lambda: gatednorm.rmsnorm(x, w), "y_out")):
            with pytest.raises(GatedNormError) as ei:
                call()
            assert ei.value.status == status, ei.value.message
            assert_names(ei.value, out_name if status == -5 else "x")


def test_device_array_copy_from_a_grad_tensor_is_named():
    """torch's refusal to hand out a tensor that requires grad escaped DeviceArray.copy_ raw."""
    torch = pytest.importorskip("torch")
    a = gatednorm.DeviceArray((2,), np.float32, device="cpu")
    with pytest.raises(GatedNormError) as ei:
        a.copy_(torch.ones(2, requires_grad=True))
    assert_names(ei.value, "src")


@pytest.mark.parametrize("dt,label", [(np.longdouble, "float128 (<f16)"), ("float8_e5m2", "float8_e5m2 (<f1)"),
                                      (np.dtype([("a", "<f4")]), "[('a', '<f4')] (|V4)"), (object, "object (|O)")])
@pytest.mark.parametrize("arg", ["x", "out"])
def test_dtype_without_dlpack_code_is_named_as_numpy_names_it(rng, dt, label, arg):
    """Its type string alone read "numpy dtype <f16 has no DLPack equivalent" for float128,
    the name of float16, a dtype the op takes (and "<f1" for float8_e5m2): the dtype's name
    comes first (hostile review)."""
    dt = np.dtype(getattr(_dtypes.load_ml_dtypes() or __import__("ml_dtypes"), dt) if isinstance(dt, str) else dt)
    if dt.str != label.rpartition("(")[2][:-1]:  # pragma: no cover - a long double that is not float128 (MSVC, arm64)
        pytest.skip("numpy names %s %s here" % (dt, dt.str))
    x, z, w = _inputs(rng)
    out = poisoned(x.shape)
    a = dict(x=x, out=out)
    a[arg] = np.zeros(x.shape, dt)
    before = a["out"].tobytes() if a["out"].dtype != object else None
    with pytest.raises(gatednorm.InvalidArgumentError) as ei:
        gatednorm.rmsnorm_gated(a["x"], z, w, out=a["out"])
    assert ei.value.message == "%s: numpy dtype %s has no DLPack equivalent" % (arg, label)
    assert_names(ei.value, arg)
    if before is not None:
        assert a["out"].tobytes() == before
