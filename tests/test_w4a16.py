"""W4A16: importers against each checkpoint format's own dequantization formula, the GEMM
against the float64 reference on every backend, the tiled layout against its documented
byte map, and bad inputs.

Backends: "cpu" (the plain layout, numpy arrays), "cpu-tiled" (the tiled layout made on the
host for the CUDA target and read back by the CPU backend), "gpu" (prepacked on GPU 0,
DeviceArray activations; skipped without a GPU).  Tolerance (docs/w4a16.md "Accuracy"):
reference.w4a16_tolerance, derived from K and the output dtype's ulp.
"""

from __future__ import annotations

import functools
import re
import warnings

import ml_dtypes
import numpy as np
import pytest

import gatednorm
from gatednorm import _dtypes, reference
from gatednorm import w4a16 as W4
from gatednorm._ffi import ffi
from gatednorm.testing import host_descriptor as _host_desc

from conftest import gpu_count

BF16, F16, F32 = _dtypes.bfloat16, _dtypes.float16, _dtypes.float32
DT = {"bf16": BF16, "fp16": F16}
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


# ------------------------------------------------------------------------ format builders
def pack8(codes, axis):
    """int codes (0..15) -> int32, eight per int32 along ``axis``, slot i = bits 4i..4i+3
    holding index 8c + i (the formats' sequential packing)."""
    c = np.moveaxis(np.asarray(codes, np.int64), axis, -1)
    pad = (-c.shape[-1]) % 8
    if pad:
        c = np.concatenate([c, np.zeros(c.shape[:-1] + (pad,), np.int64)], axis=-1)
    c = c.reshape(c.shape[:-1] + (c.shape[-1] // 8, 8))
    v = np.zeros(c.shape[:-1], np.uint64)
    for i in range(8):
        v |= (c[..., i].astype(np.uint64) & 0xF) << np.uint64(4 * i)
    return np.moveaxis(v.astype(np.uint32).view(np.int32), -1, axis)


def rand_quant(rng, n, k, g, zlo=0, zhi=15, sdtype=F16):
    """Codes q [N, K], zero points z [N, K/G], scales s [N, K/G] (positive and negative)."""
    q = rng.integers(0, 16, (n, k))
    z = rng.integers(zlo, zhi + 1, (n, k // g))
    s = (rng.uniform(0.002, 0.05, (n, k // g)) * rng.choice([-1, 1], (n, k // g))).astype(sdtype)
    return q, z, s


def expected_w16(q, z, s, g, dtype):
    """The format-independent truth: w16[k, n] = RNE_dt((q - z) * RNE_dt(s)), [K, N]."""
    s16 = np.asarray(s, np.float32).astype(dtype).astype(np.float64)
    zz = np.repeat(np.asarray(z, np.float64), g, axis=1)
    w = (q - zz) * np.repeat(s16, g, axis=1)
    return w.astype(np.float32).astype(dtype).astype(np.float32).T


# ------------------------------------------------------------------------------ importers
def gptq_v1_qzeros(z_kn):
    """GPTQ v1 qzeros as GPTQModel writes them: the zero points packed (v2's int32s), then
    0x11111111 subtracted from each int32, so a zero point of 0 borrows from the slot above."""
    v2 = pack8(z_kn, 1).view(np.uint32).astype(np.int64)
    return ((v2 - 0x11111111) % (1 << 32)).astype(np.uint32).view(np.int32)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("version", [1, 2])
def test_gptq(rng, version, dtype):
    n, k, g = 24, 128, 32
    q, z, s = rand_quant(rng, n, k, g, zlo=1)                 # no zero point of 0: every v1 slot is z - 1
    qweight = pack8(q.T, 0)                                   # [K/8, N], slot i of row r: k = 8r + i
    qzeros = pack8((z - 1 if version == 1 else z).T, 1)       # [K/G, N/8]: v1 stores z - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        w = gatednorm.W4A16Weight.from_gptq(qweight, qzeros, s.T, version=version)
    assert (w.n, w.k, w.group_size, w.symmetric, w.perm) == (n, k, g, False, None)
    np.testing.assert_array_equal(w.dequantize(DT[dtype]), expected_w16(q, z, s, g, DT[dtype]))


def test_gptq_config_group_size_above_k_is_per_channel(rng):
    """A layer narrower than the config's group size (K = 64 at group_size 128): quantizers
    write ceil(K / G) = 1 group, per channel; passing the config's group_size refused it as a
    partial group (review). Read as G = K, what it is; two groups there still refused."""
    n, k = 16, 64
    q, z, s = rand_quant(rng, n, k, k, zlo=1)
    args = (pack8(q.T, 0), pack8((z - 1).T, 1), s.T)
    w = gatednorm.W4A16Weight.from_gptq(*args, group_size=128)
    assert w.group_size == k
    np.testing.assert_array_equal(w.dequantize(BF16), expected_w16(q, z, s, k, BF16))
    q2, z2, s2 = rand_quant(rng, n, k, k // 2, zlo=1)
    with pytest.raises(gatednorm.GatedNormError, match="^group_size: K = 64 is not a multiple of 128"):
        gatednorm.W4A16Weight.from_gptq(pack8(q2.T, 0), pack8((z2 - 1).T, 1), s2.T, group_size=128)


def test_gptq_v1_zero_point_0_borrows_word_wise(rng):
    """A v1 zero point of 0, as GPTQModel writes it (whole-int32 subtraction: the slot holds
    15 and the slot above is one lower), reads back exactly (it raised, saying version=2)."""
    n, k, g = 24, 128, 32
    q, z, s = rand_quant(rng, n, k, g, zlo=0)
    z[:8, 0] = [0, 5, 8, 8, 8, 8, 8, 8]         # the int32 0x88888850 of v2, 0x7777773F in v1
    z[8:16, 1] = [3, 0, 0, 15, 0, 1, 0, 0]      # chained borrows, and one out of the top slot
    qzeros = gptq_v1_qzeros(z.T)
    assert qzeros.view(np.uint32)[0, 0] == 0x7777773F
    with pytest.warns(UserWarning, match="hold 15") as rec:
        w = gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), qzeros, s.T, version=1)
    assert len(rec) == 1
    np.testing.assert_array_equal(w.to_plain()[2], z.astype(np.uint8))
    np.testing.assert_array_equal(w.dequantize(BF16), expected_w16(q, z, s, g, BF16))


def test_gptq_v2_labelled_v1_warns_or_raises(rng):
    """A v2 checkpoint read as v1: asymmetric with a stored 15 warns (naming version=2);
    symmetric (0x88888888 -> every zero point 9, what GPTQModel v5+ writes under
    checkpoint_format "gptq") raises naming version, with or without symmetric=True."""
    n, k, g = 16, 64, 32
    q, z, s = rand_quant(rng, n, k, g)
    z[3, 1] = 15  # v2 stores 15 for z = 15
    with pytest.warns(UserWarning, match="version=2"):
        gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), pack8(z.T, 1), s.T, version=1)
    sym_v2 = np.full((k // g, n // 8), 0x88888888, np.uint32).view(np.int32)
    for symmetric in (None, True):
        with pytest.raises(ValueError, match="^version: 1, but every zero point then decodes to 9.*pass version=2"):
            gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), sym_v2, s.T, version=1, symmetric=symmetric)
    w = gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), sym_v2, s.T, version=2, symmetric=True)
    np.testing.assert_array_equal(w.dequantize(BF16), expected_w16(q, np.full((n, k // g), 8), s, g, BF16))


def test_compressed_tensors_symmetric_flag_checks_the_zero_point(rng):
    """symmetric= (the config's) makes a missing or an unexpected weight_zero_point an error
    naming it (without it an asymmetric checkpoint missing its zero point read as symmetric)."""
    n, k, g = 16, 64, 32
    q, z, s = rand_quant(rng, n, k, g)
    packed = pack8(q, 1)  # [N, K/8], codes stored as is (signed code + 8)
    zp = pack8(z, 0)      # [N/8, K/G], packed along N
    with pytest.raises(ValueError, match="^weight_zero_point: required with symmetric=False"):
        gatednorm.W4A16Weight.from_compressed_tensors(packed, s, None, weight_shape=[n, k], symmetric=False)
    with pytest.raises(ValueError, match="^weight_zero_point: given, but symmetric=True"):
        gatednorm.W4A16Weight.from_compressed_tensors(packed, s, zp, weight_shape=[n, k], symmetric=True)
    with pytest.raises(ValueError, match="^symmetric"):
        gatednorm.W4A16Weight.from_compressed_tensors(packed, s, zp, weight_shape=[n, k], symmetric="no")
    w = gatednorm.W4A16Weight.from_compressed_tensors(packed, s, zp, weight_shape=[n, k], symmetric=False)
    np.testing.assert_array_equal(w.dequantize(BF16), expected_w16(q, z, s, g, BF16))


def test_awq_unpacked_qweight_is_named(rng):
    """An unpacked int32 AWQ qweight [K, N] reads as N * 8 columns: refused naming qweight (it
    blamed scales; docs/ops.md promises such tensors are refused by name)."""
    n, k, g = 16, 64, 32
    q, z, s = rand_quant(rng, n, k, g)
    with pytest.raises(ValueError, match="^qweight: .*unpacked"):
        gatednorm.W4A16Weight.from_awq(q.T.astype(np.int32), pack8(z.T, 1), s.T)


def test_g_idx_and_weight_shape_exactly_their_shapes(rng):
    """g_idx exactly [K] and weight_shape exactly [N, K]: a [1, K] g_idx or a [[N], [K]]
    weight_shape is refused by name, never flattened (docs/ops.md: exactly the shapes)."""
    n, k, g = 16, 64, 32
    q, z, s = rand_quant(rng, n, k, g)
    with pytest.raises(ValueError, match=r"^g_idx: expected \[K\] = \[64\], got \(1, 64\)"):
        gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), pack8(z.T, 1), s.T, g_idx=(np.arange(k) // g)[None].astype(np.int32),
                                        version=2)
    with pytest.raises(ValueError, match="^weight_shape: expected \\[N, K\\]"):
        gatednorm.W4A16Weight.from_compressed_tensors(pack8(q, 1), s, pack8(z, 0), weight_shape=[[n], [k]])
    w = gatednorm.W4A16Weight.from_compressed_tensors(pack8(q, 1), s, pack8(z, 0), weight_shape=[n, k])
    np.testing.assert_array_equal(w.dequantize(BF16), expected_w16(q, z, s, g, BF16))


def test_gptq_v1_symmetric_read_as_v2_raises(rng):
    n, k, g = 16, 64, 32
    q, _, s = rand_quant(rng, n, k, g)
    qzeros = np.full((k // g, n // 8), 0x77777777, np.int32)  # v1 symmetric: z - 1 = 7
    with pytest.raises(ValueError, match="^version: 2, but every zero point then decodes to 7.*pass version=1"):
        gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), qzeros, s.T, version=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), qzeros, s.T, version=1, symmetric=True)
    assert w.symmetric
    np.testing.assert_array_equal(w.dequantize(BF16), expected_w16(q, np.full((n, k // g), 8), s, g, BF16))


@pytest.mark.parametrize("version", [1, 2])
def test_gptq_act_order(rng, version):
    n, k, g = 16, 128, 32
    q, z, s = rand_quant(rng, n, k, g, zlo=1)
    g_idx = rng.permutation(np.arange(k) // g).astype(np.int32)  # each group: G features, scattered
    qzeros = pack8((z - 1 if version == 1 else z).T, 1)
    w = gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), qzeros, s.T, g_idx=g_idx, version=version)
    assert w.perm is not None
    # the format's formula in the checkpoint's own k order
    s16 = s.astype(np.float32).astype(BF16).astype(np.float64)
    want = ((q - z[:, g_idx]) * s16[:, g_idx]).astype(np.float32).astype(BF16).astype(np.float32).T
    np.testing.assert_array_equal(w.dequantize(BF16), want)
    a = rng.standard_normal((5, k)).astype(BF16)
    got = gatednorm.w4a16_matmul(a, w, out_dtype=np.float32)
    ref = a.astype(np.float64) @ want.astype(np.float64)
    tol = reference.w4a16_tolerance(a[:, w.perm], w.q, w.scales, w.zeros, None, F32)
    assert np.all(np.abs(got - ref) <= tol)
    # a trivial g_idx is no reorder
    w2 = gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), qzeros, s.T, g_idx=np.arange(k) // g, version=version)
    assert w2.perm is None


def test_gptq_act_order_uneven_groups_rejected(rng):
    n, k, g = 16, 64, 32
    q, z, s = rand_quant(rng, n, k, g, zlo=1)
    g_idx = np.zeros(k, np.int32)
    g_idx[:40] = 1  # 40 and 24 members
    with pytest.raises(ValueError, match="g_idx"):
        gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), pack8((z - 1).T, 1), s.T, g_idx=g_idx)


def test_awq(rng):
    n, k, g = 32, 128, 64
    q, z, s = rand_quant(rng, n, k, g)

    def awq_pack(x):  # x [rows, N]: slot i of column c holds n = 8c + AWQ_ORDER[i]
        rows, cols = x.shape
        out = np.zeros((rows, cols // 8), np.uint64)
        for c in range(cols // 8):
            for i in range(8):
                out[:, c] |= x[:, 8 * c + AWQ_ORDER[i]].astype(np.uint64) << np.uint64(4 * i)
        return out.astype(np.uint32).view(np.int32)

    w = gatednorm.W4A16Weight.from_awq(awq_pack(q.T), awq_pack(z.T), s.T)
    np.testing.assert_array_equal(w.dequantize(F16), expected_w16(q, z, s, g, F16))


@pytest.mark.parametrize("symmetric", [False, True])
def test_compressed_tensors(rng, symmetric):
    n, k, g = 20, 36, 12  # N and K not multiples of 8: both packed with padding
    q, z, s = rand_quant(rng, n, k, g, sdtype=BF16)
    signed = q - 8                                             # the quantizer's signed codes
    weight_packed = pack8(signed + 8, 1)                       # [N, ceil(K/8)], stored = signed + 8
    zp = None if symmetric else pack8(z - 8 + 8, 0)            # [ceil(N/8), K/G], stored = z_signed + 8
    # G = 12 is no power of two: the config's group_size names it (it is never guessed)
    w = gatednorm.W4A16Weight.from_compressed_tensors(weight_packed, s, zp, weight_shape=np.array([n, k]), group_size=g)
    assert w.symmetric == symmetric and (w.n, w.k, w.group_size) == (n, k, g)
    zz = np.full_like(z, 8) if symmetric else z
    np.testing.assert_array_equal(w.dequantize(BF16), expected_w16(q, zz, s, g, BF16))


def test_plain_layout_nibble_order(wbe):
    """The plain layout by hand, from its definition (docs/w4a16.md: q[n, k / 2], the low
    nibble holds the even k): row 0's bytes 0x10, 0x32, ... hold codes 0, 1, 2, 3, ... along K.
    Codes counted up along K, a zero point of 8 and unit scales make w[k, n] = code - 8; a
    one-hot activation row reads one k of it on every backend."""
    n, k, g = 3, 64, 32
    codes = (np.arange(k)[None, :] + 5 * np.arange(n)[:, None]) % 16         # [N, K]
    q = np.zeros((n, k // 2), np.uint8)
    for kk in range(0, k, 2):
        q[:, kk // 2] = codes[:, kk] | (codes[:, kk + 1] << 4)
    assert q[0, 0] == 0x10 and q[0, 1] == 0x32
    w = gatednorm.W4A16Weight(q, np.ones((n, k // g), np.float32), np.full((n, k // g), 8, np.uint8))
    want = (codes - 8).T.astype(np.float32)                                  # [K, N]
    np.testing.assert_array_equal(w.dequantize(BF16), want)
    a = np.eye(k, dtype=np.float32)[[0, 1, 2, 37, 63]].astype(BF16)         # rows: k = 0, 1, 2, 37, 63
    out = get(gatednorm.w4a16_matmul(put(wbe, a), place(wbe, w, BF16), out_dtype=np.float32))
    np.testing.assert_array_equal(out, want[[0, 1, 2, 37, 63]])


@pytest.mark.parametrize("symmetric", [False, True])
def test_compressed_tensors_actorder_group(rng, symmetric):
    """actorder=group: weights in the original column order, weight_g_idx mapping feature k
    to its group: w[n, k] = (stored - zp[n, g_idx[k]]) * s[n, g_idx[k]] (it was ignored)."""
    n, k, g = 12, 36, 12  # K not a multiple of 8: weight_packed padded
    q, z, s = rand_quant(rng, n, k, g, sdtype=BF16)
    g_idx = rng.permutation(np.arange(k) // g).astype(np.int32)
    zp = None if symmetric else pack8(z, 0)
    w = gatednorm.W4A16Weight.from_compressed_tensors(pack8(q, 1), s, zp, weight_shape=[n, k], weight_g_idx=g_idx,
                                                      group_size=g)
    assert w.perm is not None
    zz = np.full_like(z, 8) if symmetric else z
    s16 = s.astype(np.float32).astype(BF16).astype(np.float64)
    want = ((q - zz[:, g_idx]) * s16[:, g_idx]).astype(np.float32).astype(BF16).astype(np.float32).T
    np.testing.assert_array_equal(w.dequantize(BF16), want)
    a = rng.standard_normal((3, k)).astype(BF16)
    got = gatednorm.w4a16_matmul(a, w, out_dtype=np.float32)
    tol = reference.w4a16_tolerance(a[:, w.perm], w.q, w.scales, w.zeros, None, F32)
    assert np.all(np.abs(got - a.astype(np.float64) @ want.astype(np.float64)) <= tol)
    with pytest.raises(ValueError, match="weight_g_idx"):
        gatednorm.W4A16Weight.from_compressed_tensors(pack8(q, 1), s, zp, weight_shape=[n, k],
                                                      weight_g_idx=np.zeros(k, np.int32), group_size=g)


def test_partial_last_group_is_never_read_as_another_group_size(rng):
    """A checkpoint whose K is no multiple of its group size (K = 960 at G = 128, SmolLM2's
    hidden size) has ceil(K/G) = 8 groups, the last partial; read as K / 8 = 120-wide groups it
    misplaced 224 of every 1600 weights without a word (review).  Without group_size a G that
    is not a power of two is refused; with the config's 128 the partial group is refused; a
    real G = 120 passes when named; -1 means per channel; big-endian packed tensors read as
    native ones.  K = 128 at G = 96 has the shapes of G = 64 (2 groups): only a named
    group_size refuses it (session 35's review), unnamed it reads as 64."""
    n, k = 16, 960
    q, z, s = rand_quant(rng, n, k, 120)  # 8 groups of 120: the shapes of the 8 groups of 128
    for f, args, kw in ((gatednorm.W4A16Weight.from_gptq, (pack8(q.T, 0), pack8(z.T, 1), s.T), dict(version=2)),
                        (gatednorm.W4A16Weight.from_compressed_tensors, (pack8(q, 1), s, pack8(z, 0)),
                         dict(weight_shape=[n, k]))):
        with pytest.raises(ValueError, match="groups of 120.*pass group_size"):
            f(*args, **kw)
        with pytest.raises(ValueError, match="group_size: K = 960 is not a multiple of 128"):
            f(*args, group_size=128, **kw)
        w = f(*args, group_size=120, **kw)
        np.testing.assert_array_equal(w.dequantize(BF16), expected_w16(q, z, s, 120, BF16))
    q, z, s = rand_quant(rng, n, 256, 256)  # per channel, as configs write it: -1
    w = gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), pack8(z.T, 1), s.T, version=2, group_size=-1)
    assert w.group_size == 256
    with pytest.raises(ValueError, match="scales: 1 groups, but K = 256 at group_size 128 has 2"):
        gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), pack8(z.T, 1), s.T, version=2, group_size=128)
    assert gatednorm.W4A16Weight.from_float(rng.standard_normal((4, 64)).astype(np.float32), group_size=-1).group_size == 64
    with warnings.catch_warnings():  # version 1's word-wise decoding warns of slots holding 15 (random z here)
        warnings.simplefilter("ignore")
        be = gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0).astype(">i4"), pack8(z.T, 1).astype(">i4"), s.T, version=1)
        ne = gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), pack8(z.T, 1), s.T, version=1)
    np.testing.assert_array_equal(be.dequantize(BF16), ne.dequantize(BF16))
    q, z, s = rand_quant(rng, n, 128, 64)
    for g in (96, 80):
        with pytest.raises(ValueError, match="group_size: K = 128 is not a multiple of %d" % g):
            gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), pack8(z.T, 1), s.T, version=2, group_size=g)
    assert gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), pack8(z.T, 1), s.T, version=2).group_size == 64
    # K = 576 at G = 128 (SmolLM2-135M's hidden size): ceil(576 / 128) = 5 groups, the last 64
    # wide, as GPTQ quantizers write them; 5 does not divide 576, and the refusal says it is a
    # partial group, not a malformed scales tensor (review).
    k, ng = 576, 5
    q = rng.integers(0, 16, (n, k))
    z = rng.integers(0, 16, (n, ng))
    s = rng.uniform(0.002, 0.05, (n, ng)).astype(F16)
    gptq, awq = (pack8(q.T, 0), pack8(z.T, 1), s.T), (pack8(q.T, 1), pack8(z.T, 1), s.T)  # (AWQ's slot order: no matter here)
    for f, args, kw in ((gatednorm.W4A16Weight.from_gptq, gptq, dict(version=2)),
                        (gatednorm.W4A16Weight.from_awq, awq, {}),
                        (gatednorm.W4A16Weight.from_compressed_tensors, (pack8(q, 1), s, pack8(z, 0)),
                         dict(weight_shape=[n, k]))):
        scales = "weight_scale" if f.__name__ == "from_compressed_tensors" else "scales"
        with pytest.raises(ValueError, match="%s: 5 groups over K = 576, which they do not divide.*partial" % scales):
            f(*args, **kw)
        with pytest.raises(ValueError, match="group_size: K = 576 is not a multiple of 128.*partial"):
            f(*args, group_size=128, **kw)


def test_importers_refuse_wider_packed_tensors(rng):
    """Packed tensors wider than the format's ceil(./8) (e.g. unpacked zero points) are
    refused by name; they were sliced and read as garbage."""
    n, k, g = 16, 64, 32
    q, z, s = rand_quant(rng, n, k, g, zlo=1)
    unpacked_zeros = z.T.astype(np.int32)  # [K/G, N], not [K/G, N/8]
    with pytest.raises(ValueError, match="qzeros"):
        gatednorm.W4A16Weight.from_gptq(pack8(q.T, 0), unpacked_zeros, s.T, version=2)
    with pytest.raises(ValueError, match="weight_zero_point"):
        gatednorm.W4A16Weight.from_compressed_tensors(pack8(q, 1), s, z.astype(np.int32), weight_shape=[n, k])
    wide = np.concatenate([pack8(q, 1), pack8(q, 1)], axis=1)
    with pytest.raises(ValueError, match="weight_packed"):
        gatednorm.W4A16Weight.from_compressed_tensors(wide, s, None, weight_shape=[n, k])


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [32, None])
def test_from_float(rng, symmetric, group_size):
    W = rng.standard_normal((24, 128)).astype(np.float32)
    w = gatednorm.W4A16Weight.from_float(W, group_size, symmetric)
    g = group_size or 128
    assert w.group_size == g and w.symmetric == symmetric
    # round to nearest: within half a step of the float weight, plus the bf16 rounding of the
    # scale (|q - z| <= 15 times half a bf16 ulp of s) and of the product (half an ulp)
    deq = w.dequantize(BF16).T.astype(np.float64)
    step = np.repeat(np.abs(w.scales.astype(np.float64)), g, axis=1)
    assert np.all(np.abs(deq - W) <= 0.5 * step + 15 * 2.0 ** -9 * step + 2.0 ** -9 * np.abs(deq))
    # the scales and zero points are the documented ones (a scale twice as fine passes the
    # bound above), from the group's values alone
    Wg = W.astype(np.float64).reshape(W.shape[0], -1, g)
    if symmetric:
        want_s = np.abs(Wg).max(axis=2) / 7.0
    else:
        lo, hi = np.minimum(Wg.min(axis=2), 0.0), np.maximum(Wg.max(axis=2), 0.0)
        want_s = (hi - lo) / 15.0
        np.testing.assert_array_equal(w.zeros, np.rint(-lo / want_s.astype(np.float32).astype(np.float64)).astype(np.uint8))
    np.testing.assert_array_equal(w.scales, want_s.astype(np.float32))
    with pytest.raises(ValueError, match="group_size"):
        gatednorm.W4A16Weight.from_float(W, 48)


# ------------------------------------------------------------------ tiled layout vs docs
def test_tiled_layout_matches_docs(rng):
    """Decode a host-packed tiled buffer with numpy from docs/w4a16.md's byte map alone."""
    n, k, g = 40, 192, 64  # N tail (40 = 2.5 col tiles), K = 3 chunks
    W = rng.standard_normal((n, k)).astype(np.float32)
    w = gatednorm.W4A16Weight.from_float(W, g, False)
    t = w.prepack_host("cuda_mma", "bfloat16")
    buf = t._packed
    np_, kp = 48, 192
    kc_n = kp // 64
    codes = reference.int4_unpack(w.q)
    for nn in range(np_):
        for kk in range(kp):
            nt, nl, kc, kl = nn // 16, nn % 16, kk // 64, kk % 64
            gg, h, tt, j, s = nl & 7, nl >> 3, kl // 16, (kl % 16) // 4, kl % 4
            p = h + 4 * (s & 1) + 2 * (s >> 1)
            word = int.from_bytes(buf[(nt * kc_n + kc) * 512 + (4 * gg + tt) * 16 + 4 * j:][:4].tobytes(), "little")
            code = (word >> (4 * p)) & 0xF
            want = codes[nn, kk] if nn < n and kk < k else 8
            assert code == want, (nn, kk)
    weight_bytes = (np_ // 16) * kc_n * 512
    ng = kp // g
    for nn in range(np_):
        for gi in range(ng):
            off = weight_bytes + (((nn // 16) * ng + gi) * 8 + (nn % 16 & 7)) * 8
            ent = buf[off:off + 8].view(np.uint16)
            h = (nn % 16) >> 3
            if nn < n:
                assert ent[h] == np.float32(w.scales[nn, gi]).astype(BF16).view(np.uint16)
                assert ent[2 + h] == (0x4300 | int(w.zeros[nn, gi]))
            else:
                assert ent[h] == 0 and ent[2 + h] == 0x4308
    assert buf.nbytes == weight_bytes + (np_ // 16) * ng * 8 * 8


# ----------------------------------------------------------------------------- the GEMM
BACKENDS = ["cpu", "cpu-tiled", "gpu"]
M_LIST = [1, 2, 7, 16, 33, 128, 300, 2048]
GROUPS = [32, 64, 128, "channel"]


@pytest.fixture(params=BACKENDS)
def wbe(request):
    if request.param == "gpu" and gpu_count() == 0:
        pytest.skip("no GPU visible to libgatednorm (%s)" % gatednorm.build_info())
    return request.param


def place(wbe, w, dtype):
    if wbe == "cpu":
        return w
    if wbe == "cpu-tiled":
        return w.prepack_host("cuda_mma", dtype)
    return w.to("gpu:0", dtype)


def put(wbe, x):
    if x is None or wbe != "gpu":
        return x
    return gatednorm.DeviceArray.from_numpy(x, device="gpu:0")


def get(x):
    return x if isinstance(x, np.ndarray) else x.numpy()


# The GPU tests that assert which W4A16 kernel ran (last_kernel) name NVIDIA kernels, and most
# chose their shapes for the plan of a GPU of 129-191 SMs (the H100 SXM and H200 have 132):
# 256 and 257 col tiles take the 16-warp gemv build without a split there, 384 the 8-warp
# one.  Elsewhere they skip rather than fail on a name.
NVIDIA_PLAN_SMS = (129, 191)


@functools.lru_cache(maxsize=1)
def _nvidia_sms():
    """The SM count of GPU 0 in a CUDA build, else None (asked once: a properties query)."""
    if gpu_count() == 0 or gatednorm._runtime.gpu_device_type() != 2:
        return None
    return gatednorm.device_properties(0)["multiprocessors"]


def _in_nvidia_plan():
    """GPU 0 is an NVIDIA GPU of the SM count the kernel-name shapes were chosen for."""
    sms = _nvidia_sms()
    return sms is not None and NVIDIA_PLAN_SMS[0] <= sms <= NVIDIA_PLAN_SMS[1]


@pytest.fixture
def nvidia_gpu(requires_gpu):
    if _nvidia_sms() is None:
        pytest.skip("asserts NVIDIA W4A16 kernel names (this build: %s)" % gatednorm.build_info())


@pytest.fixture
def nvidia_plan(nvidia_gpu):
    if not _in_nvidia_plan():
        pytest.skip("asserts the NVIDIA W4A16 plan of a GPU of %d-%d SMs; this one has %d" % (NVIDIA_PLAN_SMS + (_nvidia_sms(),)))


@functools.lru_cache(maxsize=4)
def _quantized(n, k, g, symmetric):
    """from_float of a seeded random [N, K], one per shape and format: run_gemm's cases of one
    shape (every M) share it, as the host-side quantization of the plan shapes' weights (up
    to 19 M elements, ~1 s each) would otherwise repeat for each M."""
    W = np.random.default_rng(n * 1000003 + k * 31 + (0 if g == "channel" else g) * 2 + symmetric).standard_normal((n, k))
    return gatednorm.W4A16Weight.from_float(W.astype(np.float32), None if g == "channel" else g, symmetric)


def run_gemm(wbe, rng, m, n, k, g, symmetric, dtype, out_dtype=None, bias=False, bias_dtype=F32):
    w = _quantized(n, k, g, symmetric)
    a = rng.standard_normal((m, k)).astype(DT[dtype])
    b = rng.standard_normal(n).astype(bias_dtype) if bias else None
    od = DT[dtype] if out_dtype is None else out_dtype
    out = put(wbe, np.full((m, n), np.nan, od))
    res = gatednorm.w4a16_matmul(put(wbe, a), place(wbe, w, DT[dtype]), put(wbe, b), out=out)
    assert res is out
    got = get(out)
    _assert_near_reference(got, a, w, b, od)
    return got


def _assert_near_reference(got, a, w, b, out_dtype):
    """Every output written (no poison NaN left) and within the float64 reference's tolerance."""
    assert not np.isnan(got.astype(np.float32)).any(), "outputs left unwritten (still NaN)"
    ref = reference.w4a16_matmul(a, w.q, w.scales, w.zeros, b)
    tol = reference.w4a16_tolerance(a, w.q, w.scales, w.zeros, b, out_dtype, ref)
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= tol), "max err %g (tol there %g)" % (err.max(), tol.flat[np.argmax(err - tol)])


@pytest.mark.parametrize("m", M_LIST)
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("g", GROUPS)
def test_gemm(wbe, rng, g, symmetric, dtype, m):
    # CPU: small K/N so the suite stays fast; GPU: N with a tail and few col tiles (split-K)
    n, k = (40, 256) if wbe != "gpu" else (200, 1024)
    run_gemm(wbe, rng, m, n, k, g, symmetric, dtype)


@pytest.mark.parametrize("m", [1, 16, 64])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_gemm_fp32_out_and_bias(wbe, rng, dtype, m):
    """fp32 output: the tolerance is the accumulation bound alone, so a dequant off by one
    16-bit rounding would show."""
    n, k = (24, 512) if wbe != "gpu" else (4096, 4096)
    run_gemm(wbe, rng, m, n, k, 128, False, dtype, out_dtype=F32, bias=True)


@pytest.mark.parametrize("out_dtype", [BF16, F32], ids=["out_bf16", "out_fp32"])
@pytest.mark.parametrize("bias_dtype", [BF16, F16, F32], ids=["bias_bf16", "bias_fp16", "bias_fp32"])
def test_gemm_bias_dtypes(wbe, rng, bias_dtype, out_dtype):
    """The bias in any float dtype beside any output dtype (a review's mutant read the bias at
    the output's element size and passed: every bias was fp32, every biased output fp32)."""
    n, k = (40, 256) if wbe != "gpu" else (200, 1024)
    run_gemm(wbe, rng, 3, n, k, 128, False, "bf16", out_dtype=out_dtype, bias=True, bias_dtype=bias_dtype)


@pytest.mark.parametrize("k,g", [(130, "channel"), (134, 67), (66, 2)])
@pytest.mark.parametrize("m", [1, 3])
def test_gemm_cpu_k_tails(rng, k, g, m):
    """K % 4 != 0 on the CPU's plain layout (any G dividing K there): the dot product's
    scalar tail (a mutation dropping it passed every test: all K were multiples of 4)."""
    run_gemm("cpu", rng, m, 24, k, g, False, "bf16", out_dtype=F32, bias=True)


@pytest.mark.parametrize("shape", [(1, 6144, 4096), (4, 4096, 12288), (16, 24576, 4096), (300, 1000, 512)])
def test_gemm_gpu_shapes(rng, requires_gpu, shape):
    m, n, k = shape
    run_gemm("gpu", rng, m, n, k, 128, False, "bf16")


# Shapes that reach the decode plan's other paths on a GPU of ~132 SMs (split-K on with a
# K tail; no split with a partial last col tile; many col tiles of short K; two col tiles a
# warp with K of two chunks, so six of a block's eight warps have no chunk; 313 col tiles,
# the last partial: the three-blocks-an-SM build of one col tile a warp; the gemv kernels'
# lean loop with a partial last col tile), every M (M 17..64 the decode kernel's row blocks,
# M > 64 the mma kernel).
PLAN_SHAPES = [(24, 70016), (2120, 4224), (4104, 4224), (16904, 1152), (70016, 128), (5000, 1152), (4100, 2048)]


@pytest.mark.parametrize("m", M_LIST)
@pytest.mark.parametrize("shape", PLAN_SHAPES, ids=["split", "nosplit", "ctn2", "wn2", "wn2_two_chunks", "bps3", "gemv_lean_ntail"])
def test_gemm_gpu_plan_paths(rng, requires_gpu, monkeypatch, shape, m):
    monkeypatch.delenv("GATEDNORM_W4A16_KERNEL", raising=False)
    n, k = shape
    run_gemm("gpu", rng, m, n, k, 128, False, "bf16")
    if _in_nvidia_plan() and shape == (4100, 2048) and m <= 16:  # 257 col tiles (the last partial), 2 chunks a warp
        assert gatednorm.last_kernel() == "w4a16.gemv.lean"


# Kernel names whose choice does not depend on the GPU's SM count (any GPU of < 500 SMs).
# M <= 8 with K % 64 == 0 is the gemv kernel; a K tail (K % 64 = 32 at G = 32) or M 9..64 the
# decode kernel; M > 64 the 64 x 128 mma kernel ("w4a16.mma.wide"), and M 49..64 too where
# ceil(N / 64) blocks hold two an SM (N 70016: 1094 blocks, two an SM of any GPU of < 500 SMs;
# N 64: one).  M
# 17..64 at G = 128, >= 256 col tiles and K 4096 or 12288: the lean loop's row-block builds
# (use_lean_rows), K 5120 too (its count compiled in) and any other K of a multiple of 8
# chunks from 16 (K 1024, 2560) the runtime-count build (".anyk"), at M 33..64 on two row
# groups ("rows32x2"); one col tile fewer, a K of 66 or 20 chunks (no multiple of 8: 20 would
# give 4 warps 5 chunks each, ranges splitting a 128-k group), 8 chunks (K 1024's half), or
# G = 64: the decode kernel.
@pytest.mark.parametrize("m, n, k, g, kernel", [(1, 64, 8192, 128, "w4a16.gemv.splitk"), (8, 64, 8192, 128, "w4a16.gemv.splitk"),
                                                (16, 64, 8192, 128, "w4a16.decode.splitk"),
                                                (1, 70016, 128, 128, "w4a16.gemv"), (9, 70016, 128, 128, "w4a16.decode"),
                                                (1, 70016, 96, 32, "w4a16.decode"), (17, 64, 128, 128, "w4a16.decode"),
                                                (64, 64, 128, 128, "w4a16.decode"), (65, 64, 128, 128, "w4a16.mma.wide"),
                                                (49, 64, 128, 128, "w4a16.decode"), (49, 70016, 128, 128, "w4a16.mma.wide"),
                                                (48, 70016, 128, 128, "w4a16.decode"),
                                                (17, 4096, 4096, 128, "w4a16.lean.rows32"), (33, 4096, 4096, 128, "w4a16.lean.rows48"),
                                                (64, 4096, 12288, 128, "w4a16.lean.rows64"), (33, 4080, 4096, 128, "w4a16.decode"),
                                                (40, 4096, 4224, 128, "w4a16.decode"), (48, 4096, 4096, 64, "w4a16.decode"),
                                                (17, 4096, 5120, 128, "w4a16.lean.rows32"),
                                                (24, 4096, 2560, 128, "w4a16.lean.rows32.anyk"),
                                                (32, 4096, 1024, 128, "w4a16.lean.rows32.anyk"),
                                                (33, 4096, 5120, 128, "w4a16.lean.rows32x2"),
                                                (48, 4096, 2560, 128, "w4a16.lean.rows32x2.anyk"),
                                                (64, 4096, 1024, 128, "w4a16.lean.rows32x2.anyk"),
                                                (40, 4096, 512, 128, "w4a16.decode"), (40, 4096, 1280, 128, "w4a16.decode"),
                                                (40, 4080, 5120, 128, "w4a16.decode"),
                                                (1024, 4096, 256, 128, "w4a16.mma.wide"), (256, 4096, 256, 128, "w4a16.mma.wide"),
                                                (65, 70016, 128, 128, "w4a16.mma.wide"), (64, 70016, 128, 128, "w4a16.mma.wide")])
def test_gpu_kernel_choice(rng, nvidia_gpu, m, n, k, g, kernel):
    run_gemm("gpu", rng, m, n, k, g, False, "bf16")
    assert gatednorm.last_kernel() == kernel


# M 17..64: the decode kernel streams each col tile once a 16-row block, the blocks of one
# col tile launched side by side (the last block partial at 17 / 33 / 50); against the
# reference and against the 64 x 64 mma kernel (GATEDNORM_W4A16_KERNEL=mma, the kernel these
# M took before), each in its own sum order, so each is held to the tolerance. N 4096 at K
# 4096: no split, where the plan takes the lean loop's row blocks (use_lean_rows) and
# GATEDNORM_W4A16_KERNEL=gemv the decode kernel; N 200 at K 1024: split-K with its workspace.
@pytest.mark.parametrize("m", [17, 33, 50, 64])
@pytest.mark.parametrize("n, k", [(4096, 4096), (200, 1024)])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_gpu_decode_rows_17_to_64(rng, nvidia_plan, monkeypatch, dtype, n, k, m):
    w = _rand_plain(rng, n, k, False)
    wg = w.to("gpu:0", DT[dtype])
    a = rng.standard_normal((m, k)).astype(DT[dtype])
    ag = put("gpu", a)
    if n == 200:
        hooks = ((None, "w4a16.decode.splitk"), ("mma", "w4a16.mma"))
    else:
        hooks = ((None, _lean_rows_name(m)), ("gemv", "w4a16.decode"), ("mma", "w4a16.mma"))
    for hook, kernel in hooks:
        got = _gemm_with_hook(monkeypatch, hook, ag, wg, m, n, dtype, kernel)
        _assert_ref_cols(rng, a, w, got, dtype)


def _lean_rows_name(m, k=4096):
    """The row-block build of the lean loop at M 17..64 (hip/w4a16.hip use_lean_rows: K 4096
    / 12288 MT 4, 6 or 8 row blocks of 8 rows; other K MT 4, at M 33..64 on two row groups,
    K 5120 with its count compiled in, other K (k = 0: the runtime count asked for) the
    runtime-count build)."""
    if k in (4096, 12288):
        return "w4a16.lean.rows%d" % (32 if m <= 32 else 48 if m <= 48 else 64)
    return "w4a16.lean.rows32%s%s" % ("" if m <= 32 else "x2", "" if k == 5120 else ".anyk")


# M 17..64 where use_lean_rows applies (G = 128, K 4096 on 4 warps of 16 chunks, K 12288 on
# 6 warps of 32 at MT 4 and 8 of 24 above, K 5120 on 4 warps of 20 and any other K of 8n
# chunks from 16 on 4 warps with the runtime trip count (K 1024: 4 chunks a warp), those at
# M 33..64 on two row groups of 32 rows, >= 256 col tiles, whatever the SM count): MT 4, 6
# or 8 row blocks share each dequantized chunk, the last block partial at 17 / 33 / 50 (rows
# past M read row M - 1 and are never written: the output, a view of a poisoned buffer with
# 8 more rows and 16 more columns, shows any store past it).  N 4088 and 4104: 256 / 257 col
# tiles, the last partial (4088: the rule's edge below N 4096).  Against the float64
# reference on a column of every col tile with every output written; make_plan's kernel (=gemv: the decode
# kernel, or the mma kernel at M 49..64 where its ceil(N / 64) blocks hold two an SM) beside
# it, in its own sum order, held to the same tolerance.  At K 4096 and 5120 the runtime-count
# build (=lean: MT 4, two row groups above 32 rows) has the compiled count's ranges and order
# (each row block's sums are independent of the other blocks'): the same bits.
LEAN_ROWS_CASES = [(m, n, k) for n, k in [(4096, 4096), (4088, 4096), (4104, 12288), (4096, 5120), (4104, 1024)]
                   for m in (17, 32, 33, 48, 50, 64)] + [(m, n, k) for n, k in [(4096, 5120), (4104, 1024)] for m in (24, 40)]
# N 17024 (266 col tiles of 64: two an SM of a 132-SM GPU) at M 49..64: where make_plan takes the
# mma kernel, the two-group MT 4 build replaces it (K 5120 compiled, K 1024 the runtime count)
LEAN_ROWS_CASES += [(m, 17024, k) for k in (5120, 1024) for m in (50, 64)]
# the MT 4 builds' active row blocks at their edges: M 25 (one group, 4 row blocks), 41 / 56 /
# 57 (the second group's 2 / 3 / 4)
LEAN_ROWS_CASES += [(m, n, k) for n, k in [(4096, 5120), (4104, 1024)] for m in (25, 41, 56, 57)]


@pytest.mark.parametrize("m, n, k", LEAN_ROWS_CASES)
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_gpu_lean_rows(rng, nvidia_gpu, monkeypatch, dtype, symmetric, n, k, m):
    w = _rand_plain(rng, n, k, symmetric)
    wg = w.to("gpu:0", DT[dtype])
    a = rng.standard_normal((m, k)).astype(DT[dtype])
    ag = put("gpu", a)
    # the row blocks' output as a view of a poisoned [M + 8, N + 16] buffer: a store past row M
    # or column N would land in the poison
    monkeypatch.delenv("GATEDNORM_W4A16_KERNEL", raising=False)
    full = put("gpu", np.full((m + 8, n + 16), np.nan, DT[dtype]))
    gatednorm.w4a16_matmul(ag, wg, out=full[:m, :n])
    assert gatednorm.last_kernel() == _lean_rows_name(m, k)
    whole = get(full)
    assert not np.isnan(whole[:m, :n].astype(np.float32)).any(), "outputs left unwritten (still NaN)"
    assert np.isnan(whole[m:].astype(np.float32)).all() and np.isnan(whole[:, n:].astype(np.float32)).all(), \
        "stored past row M or column N"
    _assert_ref_cols(rng, a, w, np.ascontiguousarray(whole[:m, :n]), dtype, every_tile=True)
    planned = "w4a16.mma.wide" if m > 48 and (n + 63) // 64 >= 2 * _nvidia_sms() else "w4a16.decode"
    got = _gemm_with_hook(monkeypatch, "gemv", ag, wg, m, n, dtype, planned)
    _assert_ref_cols(rng, a, w, got, dtype, every_tile=True)
    if k in (4096, 5120):
        runtime = _gemm_with_hook(monkeypatch, "lean", ag, wg, m, n, dtype, _lean_rows_name(m, 0))
        assert runtime.tobytes() == np.ascontiguousarray(whole[:m, :n]).tobytes()


def _lean_rows_gemm(monkeypatch, hook, rows, wg, n, k):
    """A bf16 GEMM of `rows` alone on the lean loop's row-block build for their M (k = 0: the
    runtime count asked for), its output back on the host."""
    m = rows.shape[0]
    return _gemm_with_hook(monkeypatch, hook, put("gpu", np.ascontiguousarray(rows)), wg, m, n, "bf16", _lean_rows_name(m, k))


# M 33..64 at K other than 4096 / 12288 (two row groups of the MT 4 build, rows 0..31 and
# 32..M-1): each group's block runs the M <= 32 build's loop on its own rows, so its outputs
# are bit for bit those of a GEMM of those rows alone (M 32 and M - 32 >= 17: the one-group
# build with the same count), at K 5120 (compiled count) and K 1024 (runtime count), with the
# second group full (64), partial (50) and of 17 rows (49).
@pytest.mark.parametrize("m", [49, 50, 64])
@pytest.mark.parametrize("n, k", [(4096, 5120), (4104, 1024)])
def test_gpu_lean_rows_two_groups_are_two_gemms(rng, nvidia_gpu, monkeypatch, n, k, m):
    w = _rand_plain(rng, n, k, False)
    wg = w.to("gpu:0", BF16)
    a = rng.standard_normal((m, k)).astype(BF16)
    both = _lean_rows_gemm(monkeypatch, None, a, wg, n, k)
    first = _lean_rows_gemm(monkeypatch, None, a[:32], wg, n, k)
    second = _lean_rows_gemm(monkeypatch, None, a[32:], wg, n, k)
    assert both[:32].tobytes() == first.tobytes()
    assert both[32:].tobytes() == second.tobytes()


# MT 4 builds run only the row blocks a block has rows for (ceil((M - row0) / 8) < 4): those
# rows' bits are the 4-row-block run's on the same activations (M 24 against 32 on one row
# group; M 40 / 48 / 56, one / two / three row blocks in the second group, against 64: every
# row block run is full, so its inputs are the longer GEMM's), on every MT 4 build: K 4096 /
# 12288 / 5120 compiled (M <= 32; above, K 4096 / 12288 take the MT 6 / 8 builds), K 1024 and
# (=lean) K 4096 / 12288 the runtime count.
ACTIVE_BLOCK_CASES = ([(24, 32, n, k, None) for n, k in [(4096, 4096), (4104, 12288)]]
                      + [(m, mf, n, k, hook) for m, mf in [(24, 32), (40, 64), (48, 64), (56, 64)]
                         for n, k, hook in [(4096, 5120, None), (4104, 1024, None), (4096, 4096, "lean"), (4104, 12288, "lean")]])


@pytest.mark.parametrize("m, m_full, n, k, hook", ACTIVE_BLOCK_CASES)
def test_gpu_lean_rows_active_blocks_same_bits(rng, nvidia_gpu, monkeypatch, m, m_full, n, k, hook):
    w = _rand_plain(rng, n, k, False)
    wg = w.to("gpu:0", BF16)
    a = rng.standard_normal((m_full, k)).astype(BF16)
    kk = 0 if hook == "lean" else k
    full = _lean_rows_gemm(monkeypatch, hook, a, wg, n, kk)
    part = _lean_rows_gemm(monkeypatch, hook, a[:m], wg, n, kk)
    assert part.tobytes() == np.ascontiguousarray(full[:m]).tobytes()


# The M 49..64 rule's edge on this GPU: the 64 x 128 mma kernel where ceil(N / 64) blocks reach
# two an SM, the decode kernel one block short of that (K 128: small weights).
@pytest.mark.parametrize("m", [49, 64])
def test_gpu_rows_49_to_64_take_mma_from_two_blocks_an_sm(rng, nvidia_gpu, m):
    edge = 2 * _nvidia_sms()
    for blocks, kernel in ((edge - 1, "w4a16.decode"), (edge, "w4a16.mma.wide")):
        run_gemm("gpu", rng, m, 64 * blocks, 128, 128, False, "bf16")
        assert gatednorm.last_kernel() == kernel, (blocks, edge)


# The 64 x 128 mma kernel (every M > 64; GATEDNORM_W4A16_KERNEL=wide forces it at any M > 16):
# row tails (17 rows of a 64-row block; 65, 130, 257: a partial last block), N tails (200: 13
# col tiles, a block of 8 and one of 5; 4144: a last block of 3), K past the last whole
# 64-element chunk by 16 / 32 / 48 (G 16, 32, per-channel), K of one, two and three chunks
# (the ring's first stages; a review's ask), sym / asym, both dtypes.  Its sums
# run in the 64 x 64 kernel's order (chunk by chunk, 16 k an mma, one accumulator an output),
# so the two agree bit for bit on every output; both against the reference on a column of
# every col tile, and nothing stored past [M, N] of a poisoned buffer.
WIDE_CASES = [(65, 200, 1024, 128), (130, 4144, 1056, 32), (17, 200, 64, 64), (300, 4096, 4096, 128),
              (64, 4144, 1072, "channel"), (257, 200, 1040, 16), (65, 200, 128, 64), (65, 200, 160, 32)]


@pytest.mark.parametrize("m, n, k, g", WIDE_CASES)
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_gpu_mma_wide(rng, nvidia_gpu, monkeypatch, dtype, symmetric, m, n, k, g):
    w = _rand_plain(rng, n, k, symmetric, k if g == "channel" else g)
    wg = w.to("gpu:0", DT[dtype])
    a = rng.standard_normal((m, k)).astype(DT[dtype])
    ag = put("gpu", a)
    monkeypatch.setenv("GATEDNORM_W4A16_KERNEL", "wide")
    full = put("gpu", np.full((m + 8, n + 16), np.nan, DT[dtype]))
    gatednorm.w4a16_matmul(ag, wg, out=full[:m, :n])
    assert gatednorm.last_kernel() == "w4a16.mma.wide"
    whole = get(full)
    assert np.isnan(whole[m:].astype(np.float32)).all() and np.isnan(whole[:, n:].astype(np.float32)).all(), \
        "stored past row M or column N"
    got = np.ascontiguousarray(whole[:m, :n])
    assert not np.isnan(got.astype(np.float32)).any(), "outputs left unwritten (still NaN)"
    _assert_ref_cols(rng, a, w, got, dtype, every_tile=True)
    narrow = _gemm_with_hook(monkeypatch, "mma", ag, wg, m, n, dtype, "w4a16.mma")
    assert got.tobytes() == narrow.tobytes()


# Activation rows at a stride other than K: padded rows (a column slice of a wider array) and
# reversed rows (a negative stride), on every backend.  On an NVIDIA GPU the M reach the gemv
# kernel (1, 5), the lean loop's two row blocks (16), the decode kernel (40) and the 64 x 128
# mma kernel (130), each of which forms its rows' addresses from the stride.  Against the
# same rows made contiguous, bit for bit, and the reference.
@pytest.mark.parametrize("m", [1, 5, 16, 40, 130])
@pytest.mark.parametrize("rows", ["padded", "reversed"])
def test_gemm_row_strides(wbe, rng, monkeypatch, rows, m):
    monkeypatch.delenv("GATEDNORM_W4A16_KERNEL", raising=False)
    n, k, g = (40, 256, 128) if wbe != "gpu" else (200, 1024, 128)
    w = _quantized(n, k, g, False)
    wp = place(wbe, w, BF16)
    a = rng.standard_normal((m, k)).astype(BF16)
    if rows == "padded":
        host = np.zeros((m, k + 24), BF16)
        host[:, :k] = a
        av = put(wbe, host)[:, :k]
        stride = k + 24
    else:
        av = put(wbe, np.ascontiguousarray(a[::-1]))[::-1]
        stride = -k
    if m > 1:  # (a one-row view's stride is whatever its maker kept: never used)
        assert (av.strides[0] // 2 if isinstance(av, np.ndarray) else av.element_strides[0]) == stride
    out = put(wbe, np.full((m, n), np.nan, BF16))
    gatednorm.w4a16_matmul(av, wp, out=out)
    got = get(out)
    _assert_near_reference(got, a, w, None, BF16)
    same = put(wbe, np.full((m, n), np.nan, BF16))
    gatednorm.w4a16_matmul(put(wbe, a), wp, out=same)
    assert got.tobytes() == get(same).tobytes()


@pytest.mark.parametrize("k, g", [(1024, 128), (1056, 32)])
def test_gemm_zero_rows(wbe, k, g):
    """M = 0: an empty [0, N] output. On a GPU with a K tail (the decode plan, not the gemv
    kernel's) the plan split K over its zero blocks by dividing by their count: SIGFPE in the
    workspace query w4a16_matmul makes, and in the GEMM (session 34's review)."""
    n = 200
    w = place(wbe, _quantized(n, k, g, False), BF16)
    out = gatednorm.w4a16_matmul(put(wbe, np.zeros((0, k), BF16)), w)
    assert tuple(get(out).shape) == (0, n)


# M past one launch: the row blocks of the large-M kernels sit in a grid dimension of at most
# 65535 blocks (CUDA's mma kernel: 64 rows a block, grid y; AMD's: 16, grid z), so larger M runs
# as launches over row windows.  GATEDNORM_W4A16_ROWS_PER_LAUNCH lowers the window (a test hook)
# so that small M crosses window edges; each row's sums do not depend on the window.
@pytest.mark.parametrize("m, window", [(65, 64), (300, 64), (300, 128), (1000, 320)])
def test_gemm_gpu_row_windows(rng, requires_gpu, monkeypatch, m, window):
    n, k = 200, 1024
    monkeypatch.delenv("GATEDNORM_W4A16_ROWS_PER_LAUNCH", raising=False)
    whole = run_gemm("gpu", np.random.default_rng(m), m, n, k, 128, False, "bf16")
    assert not gatednorm.last_kernel().endswith(".windowed")
    monkeypatch.setenv("GATEDNORM_W4A16_ROWS_PER_LAUNCH", str(window))
    windowed = run_gemm("gpu", np.random.default_rng(m), m, n, k, 128, False, "bf16")
    assert gatednorm.last_kernel().endswith(".windowed")  # the windows ran
    np.testing.assert_array_equal(windowed.view(np.uint16), whole.view(np.uint16))


def test_gemm_gpu_rows_past_one_grid_dimension(rng, requires_gpu):
    """M = 65535 x 64 + 1: one row past what one launch of 64-row blocks holds in a grid
    dimension of 65535 (a launch error, 'invalid configuration', before the windows)."""
    m, n, k, g = 65535 * 64 + 1, 16, 64, 64
    w = _quantized(n, k, g, False)
    a = rng.standard_normal((m, k), dtype=np.float32).astype(BF16)
    out = gatednorm.DeviceArray.from_numpy(np.full((m, n), np.nan, BF16), device="gpu:0")
    gatednorm.w4a16_matmul(put("gpu", a), place("gpu", w, BF16), out=out)
    assert gatednorm.last_kernel().endswith(".windowed")
    got = out.numpy()
    assert not np.isnan(got.astype(np.float32)).any(), "rows left unwritten (still NaN)"
    edges = [0, 65535 * 16, 65535 * 64, m]  # the window edges of both platforms, and the ends
    rows = np.unique(np.concatenate([np.arange(max(e - 40, 0), min(e + 40, m)) for e in edges]
                                    + [rng.integers(0, m, 4000)]))
    ref = reference.w4a16_matmul(a[rows], w.q, w.scales, w.zeros, None)
    tol = reference.w4a16_tolerance(a[rows], w.q, w.scales, w.zeros, None, BF16, ref)
    err = np.abs(got[rows].astype(np.float64) - ref)
    assert np.all(err <= tol), "max err %g" % err.max()


# K % 64 = 32 (G = 32): the decode kernel's K tail at M <= 8, beside the gemv kernel's M range.
@pytest.mark.parametrize("m", [1, 7, 9])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_gemm_gpu_k_tail(rng, requires_gpu, dtype, m):
    run_gemm("gpu", rng, m, 200, 1056, 32, False, dtype)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("g", [32, "channel"])
def test_dequant_bit_exact_through_identity(wbe, rng, g, dtype):
    """a = I (K x K), fp32 out: every output is one product w16 * 1 plus zeros, exact in any
    summation order, so out must equal the dequantized weight bit for bit."""
    n, k = 48, 128
    W = rng.standard_normal((n, k)).astype(np.float32) * 3
    w = gatednorm.W4A16Weight.from_float(W, None if g == "channel" else g, False)
    a = np.eye(k, dtype=np.float32).astype(DT[dtype])
    out = put(wbe, np.full((k, n), np.nan, F32))
    gatednorm.w4a16_matmul(put(wbe, a), place(wbe, w, DT[dtype]), out=out)
    np.testing.assert_array_equal(get(out), w.dequantize(DT[dtype]))


@functools.lru_cache(maxsize=4)  # the cases of one (dtype, symmetric, g) share it (~2 s each on the GPU sizes)
def _dequant_sweep(dtype, symmetric, g, k, stride):
    """A plain weight whose (scale, zero point) pairs are every `stride`-th finite scale of
    `dtype` whose products with every code stay finite, times every zero point (8 only when
    symmetric), each pair one group; the codes of a group run 0..15 (k % 16); and w16, the
    dequantized weight by docs/w4a16.md's rule, computed here from that definition."""
    dt = DT[dtype]
    s = np.arange(0, 1 << 16, stride, dtype=np.uint32).astype(np.uint16).view(dt)
    s = s[np.isfinite(s.astype(np.float32))].astype(np.float64)
    s = s[np.abs(s) * 15 <= float(ml_dtypes.finfo(dt).max)]
    zs = [8] if symmetric else list(range(16))
    ps, pz = np.repeat(s, len(zs)), np.tile(np.array(zs, np.float64), s.size)
    per_col = k // g
    pad = -ps.size % per_col
    ps, pz = np.concatenate([ps, ps[:pad]]), np.concatenate([pz, pz[:pad]])
    n = ps.size // per_col
    scales, zeros = ps.reshape(n, per_col).astype(dt), pz.reshape(n, per_col).astype(np.uint8)
    codes = np.tile(np.arange(k) % 16, (n, 1)).astype(np.uint8)
    q = (codes[:, 0::2] | codes[:, 1::2] << 4).astype(np.uint8)  # low nibble = even k
    # (q - z) * s is exact in float64 (a 5-bit integer times an 11-bit mantissa): one rounding
    w16 = ((codes - np.repeat(pz.reshape(n, per_col), g, axis=1)) * np.repeat(ps.reshape(n, per_col), g, axis=1))
    w = gatednorm.W4A16Weight(q, scales, None if symmetric else zeros)
    return w, w16.astype(np.float32).astype(dt)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("g,rows", [(32, 16), (32, 64), (128, 16), (128, 1)])
def test_dequant_sweep_through_identity(wbe, dtype, symmetric, g, rows):
    """Every finite scale (every 97th off the GPU) times every zero point and code, the
    products finite: a = I (K x K) fed `rows` rows a call (on the GPU 16: the decode kernel,
    1: the gemv kernel, whose dequant helpers the lean loop shares; 64: the tensor-core one;
    K = 64 / 128 is too short for the lean loop itself), fp32 out, so each output is one w16 and
    must equal it (the GPU's packed fma.rn rounding, its subnormal and largest scales, the
    symmetric path's hard-coded 8, against the rule computed here; a review found only
    scales of order 1 tested)."""
    k = 128 if g == 128 else 64
    w, w16 = _dequant_sweep(dtype, symmetric, g, k, 1 if wbe == "gpu" else 97)
    placed = place(wbe, w, DT[dtype])
    eye = np.eye(k, dtype=np.float32).astype(DT[dtype])
    got = np.empty((k, w.n), F32)
    for r0 in range(0, k, rows):
        out = put(wbe, np.full((rows, w.n), np.nan, F32))
        gatednorm.w4a16_matmul(put(wbe, eye[r0:r0 + rows]), placed, out=out)
        got[r0:r0 + rows] = get(out)
    want = w16.astype(np.float32).T
    bad = np.argwhere(got != want)
    assert bad.size == 0, "%d mismatches, first (k, n, got, want): %s" % (
        len(bad), [(int(i), int(j), float(got[i, j]), float(want[i, j])) for i, j in bad[:5]])


def test_deterministic(wbe, rng):
    n, k = (40, 256) if wbe != "gpu" else (256, 8192)  # GPU: few col tiles, long K: split-K
    W = rng.standard_normal((n, k)).astype(np.float32)
    w = place(wbe, gatednorm.W4A16Weight.from_float(W, 128, False), BF16)
    a = put(wbe, rng.standard_normal((3, k)).astype(BF16))
    r1, r2 = (get(gatednorm.w4a16_matmul(a, w, out=put(wbe, np.full((3, n), v, BF16)))) for v in (np.nan, 7.0))
    assert r1.tobytes() == r2.tobytes()  # differently poisoned outputs, the same bits
    assert not np.isnan(r1.astype(np.float32)).any()


# The gemv kernel's lean loop (w4a16_gemv_lean_kernel: G = 128, one split, whole groups a
# warp), the library's choice where it applies; GATEDNORM_W4A16_KERNEL=gemv keeps the gemv
# kernel's own loop, =lean the lean loop's runtime trip count: the same K ranges and order, so
# the same bits.  N 4096 / 6144 at K 4096 are 256 / 384 col tiles: the 16- and the 8-warp
# build on a GPU of ~132 SMs, 4 and 8 chunks a warp, so the builds with that trip count
# compiled in (last_kernel's `.cpw4` / `.cpw8`).
LEAN = "w4a16.gemv.lean"


def _rand_plain(rng, n, k, symmetric, g=128):
    """A plain W4A16Weight of random codes (any byte is two valid codes), signed scales and
    zero points, built without from_float's quantization (tested on its own above), so the
    GPU kernel tests' big weights cost no host time to speak of."""
    q = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
    s = (rng.uniform(0.002, 0.05, (n, k // g)) * rng.choice([-1, 1], (n, k // g))).astype(np.float32)
    z = None if symmetric else rng.integers(0, 16, (n, k // g), dtype=np.uint8)
    return gatednorm.W4A16Weight(q, s, z)


def _assert_ref_cols(rng, a, w, got, dtype, ncols=512, every_tile=False):
    """``got`` ([M, N]) against the float64 reference on the first and last col tiles' 16
    columns each and ``ncols`` others drawn from the test's ``rng`` (each case its own): the
    reference of all N costs a float64 dequantization of the whole weight (1-4 s a case at
    these sizes).  Where two kernels must agree bit for bit, callers also compare all N;
    ``every_tile`` adds one random column of every 16-column col tile, for kernels with no
    such twin (each col tile is one block's output)."""
    n = w.n
    pick = rng.choice(n, min(n, ncols), replace=False)
    if every_tile:
        starts = np.arange(0, n, 16)
        pick = np.concatenate([pick, np.minimum(starts + rng.integers(0, 16, size=starts.size), n - 1)])
    cols = np.unique(np.concatenate([np.arange(min(16, n)), np.arange(max(0, n - 16), n), pick]))
    z = None if w.zeros is None else w.zeros[cols]
    ref = reference.w4a16_matmul(a, w.q[cols], w.scales[cols], z, None)
    tol = reference.w4a16_tolerance(a, w.q[cols], w.scales[cols], z, None, DT[dtype], ref)
    err = np.abs(got[:, cols].astype(np.float64) - ref)
    assert np.all(err <= tol), "%s M %d: max err %g" % (dtype, a.shape[0], err.max())


def _gemm_with_hook(monkeypatch, hook, a, w, m, n, dtype, kernel, pdl=False):
    """w4a16_matmul with GATEDNORM_W4A16_KERNEL=hook (None: unset) into a NaN-poisoned out;
    asserts the kernel that ran and that every output was written; returns the output."""
    if hook:
        monkeypatch.setenv("GATEDNORM_W4A16_KERNEL", hook)
    else:
        monkeypatch.delenv("GATEDNORM_W4A16_KERNEL", raising=False)
    out = put("gpu", np.full((m, n), np.nan, DT[dtype]))
    gatednorm.w4a16_matmul(a, w, out=out, pdl=pdl)
    assert gatednorm.last_kernel() == kernel
    got = get(out)
    assert not np.isnan(got.astype(np.float32)).any(), "outputs left unwritten (still NaN)"
    return got


@pytest.mark.parametrize("m", [1, 5, 8])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("n", [4096, 6144])
def test_gpu_gemv_lean_same_bits(rng, nvidia_plan, monkeypatch, n, symmetric, dtype, m):
    k = 4096
    w = _rand_plain(rng, n, k, symmetric).to("gpu:0", DT[dtype])
    a = put("gpu", rng.standard_normal((m, k)).astype(DT[dtype]))
    monkeypatch.setenv("GATEDNORM_W4A16_KERNEL", "gemv")
    want = get(gatednorm.w4a16_matmul(a, w))
    assert gatednorm.last_kernel() == "w4a16.gemv"
    for hook, kernel in (("lean", LEAN), (None, LEAN + (".cpw4" if n == 4096 else ".cpw8"))):
        for pdl in (False, True):
            got = _gemm_with_hook(monkeypatch, hook, a, w, m, n, dtype, kernel, pdl)
            assert got.tobytes() == want.tobytes(), (kernel, pdl)


def _lean_plan(m, n, k):
    """The lean loop's kernel name at M (1..16) for [N, K] (G = 128, K % 64 == 0, no split) on
    this GPU, and whether its warps are the runtime count's (GATEDNORM_W4A16_KERNEL=lean: M <=
    8's warps), so that the two give the same bits: hip/w4a16.hip's use_gemv_lean and
    use_two_row_block_warps, restated.  16 warps while the col tiles fit two blocks an SM, else
    8; at M 9..16, K 4096 takes 8 warps in the 16-warp tier and 4 past four 8-warp blocks an
    SM, K 12288 12 warps in the 16-warp tier."""
    sms, ntiles, kchunks = _nvidia_sms(), (n + 15) // 16, k // 64
    warps = 16 if ntiles <= 2 * sms else 8
    if m > 8:
        if warps == 16 and kchunks in (64, 192):
            return LEAN + (".cpw8" if kchunks == 64 else ".cpw16"), False
        if warps == 8 and kchunks == 64 and ntiles > 4 * sms:
            return LEAN + ".cpw16", False
    cpw = kchunks // warps
    built = cpw in (4, 8, 12, 16) if m <= 8 else cpw == 8
    return (LEAN + ".cpw%d" % cpw if built else LEAN), True


# (N, K): each trip count the lean loop has compiled in, on the 16-warp build (N 4096: 256 col
# tiles: 4, 8, 12, 16 chunks a warp) and the 8-warp one (N 6144), and a partial last col tile
# (N 4100); on a GPU of ~132 SMs.  At M 9..16 K 4096 and 12288 on the 16-warp build take
# other warps (their own K ranges, so their own bits: held to the reference).
LEAN_CPW_SHAPES = [(4096, 4096), (4096, 8192), (4096, 12288), (4096, 16384),
                   (6144, 2048), (6144, 4096), (6144, 6144), (6144, 8192), (4100, 4096)]


@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("n, k", LEAN_CPW_SHAPES)
def test_gpu_gemv_lean_compiled_trip_count(rng, nvidia_plan, monkeypatch, n, k, symmetric):
    """The builds with the trip count compiled in give the runtime count's bits where they
    have its warps, at M 1, 8, 9 and 16 in bf16 and fp16, and agree with the float64
    reference (sampled columns)."""
    w = _rand_plain(rng, n, k, symmetric)
    for dtype in ("bf16", "fp16"):
        wg = w.to("gpu:0", DT[dtype])
        for m in (1, 8, 9, 16):
            a = rng.standard_normal((m, k)).astype(DT[dtype])
            ag = put("gpu", a)
            fixed, same_warps = _lean_plan(m, n, k)
            runtime = _gemm_with_hook(monkeypatch, "lean", ag, wg, m, n, dtype, LEAN)
            compiled = _gemm_with_hook(monkeypatch, None, ag, wg, m, n, dtype, fixed)
            if same_warps:
                assert compiled.tobytes() == runtime.tobytes(), (dtype, m)
            else:
                _assert_ref_cols(rng, a, w, runtime, dtype)
            if m in (1, 16) or not same_warps:
                _assert_ref_cols(rng, a, w, compiled, dtype)


@pytest.mark.parametrize("n, k, g, kernel", [(4096, 4096, 64, "w4a16.gemv"), (64, 8192, 128, "w4a16.gemv.splitk"),
                                             (4096, 4224, 128, "w4a16.gemv"), (4096, 3072, 128, "w4a16.gemv"),
                                             (6144, 1536, 128, "w4a16.gemv"), (4096, 4096, 128, "w4a16.gemv.lean.cpw4")])
def test_gpu_gemv_lean_where_it_applies(rng, nvidia_plan, monkeypatch, n, k, g, kernel):
    """The lean loop at a bench shape; where its conditions fail (G = 64; a split; K
    ranges not whole groups a warp: 66 chunks over 16 warps, and 48 / 24 chunks, whole ranges
    of 3 over the 16- / 8-warp build) the gemv kernel runs, correctly."""
    monkeypatch.delenv("GATEDNORM_W4A16_KERNEL", raising=False)
    run_gemm("gpu", rng, 1, n, k, g, False, "bf16")
    assert gatednorm.last_kernel() == kernel


# M 9..16 with other warps than M <= 8's (use_two_row_block_warps), at the edges of its
# rules: the 12-warp build at K 12288 while the col tiles fit two 16-warp blocks an SM, and
# one col tile past that (the 8-warp tier: the runtime count); the 4-warp build at K 4096
# one col tile past four 8-warp blocks an SM (the last one partial) and the 8-warp build at
# the edge.  Each against the reference (sampled columns), every output written; the decode
# kernel (GATEDNORM_W4A16_KERNEL=gemv) beside it, held to the same tolerance.
@pytest.mark.parametrize("m", [9, 16])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("shape", ["k12288", "k12288_past_edge", "k4096_past_edge", "k4096_at_edge"])
def test_gpu_gemv_lean_two_row_block_warps(rng, nvidia_plan, monkeypatch, shape, symmetric, dtype, m):
    sms = _nvidia_sms()
    n, k, kernel = {"k12288": (4096, 12288, LEAN + ".cpw16"), "k12288_past_edge": (16 * (2 * sms + 1), 12288, LEAN),
                    "k4096_past_edge": (16 * 4 * sms + 8, 4096, LEAN + ".cpw16"),
                    "k4096_at_edge": (16 * 4 * sms, 4096, LEAN + ".cpw8")}[shape]
    assert _lean_plan(m, n, k)[0] == kernel
    w = _rand_plain(rng, n, k, symmetric)
    wg = w.to("gpu:0", DT[dtype])
    a = rng.standard_normal((m, k)).astype(DT[dtype])
    ag = put("gpu", a)
    for hook, name in ((None, kernel), ("gemv", "w4a16.decode")):
        _assert_ref_cols(rng, a, w, _gemm_with_hook(monkeypatch, hook, ag, wg, m, n, dtype, name), dtype)


@pytest.mark.parametrize("m", [9, 16])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
@pytest.mark.parametrize("n", [4096, 6144])
def test_gpu_gemv_lean_two_row_blocks(rng, nvidia_plan, monkeypatch, n, symmetric, dtype, m):
    """M 9..16: the lean loop with two 8-row blocks (rows past M read row M - 1 and are never
    written) on 8 warps with 8 chunks each compiled in (N 4096: use_two_row_block_warps' choice
    in the 16-warp tier; N 6144: the 8-warp tier's); with GATEDNORM_W4A16_KERNEL=lean the
    runtime count on M <= 8's warps (16 at N 4096, 8 at N 6144); with =gemv the decode kernel;
    each against the reference (sampled columns).  The 8-warp lean builds and the decode
    kernel's one col tile a warp (N 4096 and 6144 on GPUs of < 192 SMs) split K over 8 warps
    alike and add in warp order, so their bits agree too, and at N 6144 the runtime count's."""
    k = 4096
    w = _rand_plain(rng, n, k, symmetric)
    wg = w.to("gpu:0", DT[dtype])
    a = rng.standard_normal((m, k)).astype(DT[dtype])
    ag = put("gpu", a)
    got = {}
    for hook, kernel in ((None, LEAN + ".cpw8"), ("lean", LEAN), ("gemv", "w4a16.decode")):
        got[hook] = _gemm_with_hook(monkeypatch, hook, ag, wg, m, n, dtype, kernel)
        _assert_ref_cols(rng, a, w, got[hook], dtype)
    assert got[None].tobytes() == got["gemv"].tobytes()
    if n == 6144:
        assert got["lean"].tobytes() == got["gemv"].tobytes()


# ------------------------------------------------ programmatic dependent launch (pdl=True)
# (m, n, k, g, n2, kernel of the first GEMM on a GPU of ~132 SMs, of the second or None): the
# lean loop (M <= 8; M 9..16; many col tiles: several waves; a lean GEMM after a lean one;
# M 17..64's row blocks, after one another, at K 12288, and K 2048's runtime count before K
# 5120's compiled one, on one and on two row groups),
# gemv (G = 64; many col tiles), gemv split-K, decode (M > 8; K tail at M <= 8 and M > 8;
# M 33: three row blocks), the 64 x 128 mma (M > 64; after itself too), the 64 x 64 one
# (M 49..64).  The second GEMM (K = the first's N) has 512 outputs (few col tiles: a split)
# unless n2 says otherwise.
GEMV, DECODE, LEAN4, LEAN8, LEAN12, LEAN16 = ("w4a16.gemv", "w4a16.decode", LEAN + ".cpw4", LEAN + ".cpw8", LEAN + ".cpw12",
                                              LEAN + ".cpw16")
PDL_CASES = [(1, 4096, 4096, 128, 512, LEAN4, None), (9, 4096, 4096, 128, 512, LEAN8, None), (4, 24576, 4096, 128, 512, LEAN8, None),
             (12, 6144, 4096, 128, 512, LEAN8, None), (1, 4096, 12288, 128, 512, LEAN12, None),
             (16, 12288, 4096, 128, 4096, LEAN16, LEAN16), (9, 4096, 12288, 128, 512, LEAN16, None),
             (1, 4096, 4096, 128, 4096, LEAN4, LEAN4), (1, 4096, 4096, 64, 512, GEMV, None), (4, 24576, 4096, 64, 512, GEMV, None),
             (1, 64, 8192, 128, 512, "w4a16.gemv.splitk", None), (9, 4096, 4096, 64, 512, DECODE, None),
             (3, 4096, 4128, 32, 512, DECODE, None), (10, 4096, 4128, 32, 512, DECODE, None), (33, 4096, 4096, 64, 512, DECODE, None),
             (65, 4096, 4096, 64, 512, "w4a16.mma.wide", None), (49, 70016, 128, 128, 512, "w4a16.mma.wide", None),
             (1024, 4096, 1024, 128, 4096, "w4a16.mma.wide", "w4a16.mma.wide"),
             (33, 4096, 4096, 128, 4096, "w4a16.lean.rows48", "w4a16.lean.rows48"),
             (24, 4096, 12288, 128, 512, "w4a16.lean.rows32", None),
             (24, 5120, 2048, 128, 4096, "w4a16.lean.rows32.anyk", "w4a16.lean.rows32"),
             (48, 5120, 2048, 128, 4096, "w4a16.lean.rows32x2.anyk", "w4a16.lean.rows32x2"),
             (33, 5120, 2048, 128, 4096, "w4a16.lean.rows32x2.anyk", "w4a16.lean.rows32x2")]


@pytest.mark.parametrize("m, n, k, g, n2, kernel1, kernel2", PDL_CASES)
def test_gpu_pdl_chain_same_bits(rng, nvidia_plan, monkeypatch, m, n, k, g, n2, kernel1, kernel2):
    """pdl=True gives the bits pdl=False gives, on the same kernel; in a chain the second GEMM
    reads the first one's output, so a GEMM that read its activations before the previous
    kernel finished would see the NaN poison.  Outputs are preallocated: nothing between the
    launches synchronizes."""
    monkeypatch.delenv("GATEDNORM_W4A16_KERNEL", raising=False)
    w = _rand_plain(rng, n, k, False, g).to("gpu:0", BF16)
    w2 = gatednorm.W4A16Weight.from_float(rng.standard_normal((n2, n)).astype(np.float32) * 0.03, min(128, n), False).to("gpu:0", BF16)
    a = put("gpu", rng.standard_normal((m, k)).astype(BF16))
    outs = {}
    for pdl in (False, True):
        o1, o2 = put("gpu", np.full((m, n), np.nan, BF16)), put("gpu", np.full((m, n2), np.nan, BF16))
        gatednorm.w4a16_matmul(a, w, out=o1, pdl=pdl)
        first = gatednorm.last_kernel()
        gatednorm.w4a16_matmul(o1, w2, out=o2, pdl=pdl)
        outs[pdl] = (get(o1), get(o2), first, gatednorm.last_kernel())
    (r1, r2, k1, k2), (p1, p2, q1, q2) = outs[False], outs[True]
    assert (k1, k2) == (q1, q2)
    assert k1 == kernel1 and (kernel2 is None or k2 == kernel2), (k1, k2)
    assert not np.isnan(r2.astype(np.float32)).any()
    assert r1.tobytes() == p1.tobytes() and r2.tobytes() == p2.tobytes()


def test_pdl_flag_and_params(rng):
    """pdl is a bool; params.pdl must be 0 or 1 and params.reserved0 0 (each named); the first
    (48-byte) params layout is still read; the host backends ignore pdl (same bits)."""
    w = _plain(rng)
    wt = w.prepack_host("cuda_mma", BF16)
    a = rng.standard_normal((3, 128)).astype(BF16)
    ref = gatednorm.w4a16_matmul(a, wt)
    np.testing.assert_array_equal(gatednorm.w4a16_matmul(a, wt, pdl=True), ref)
    np.testing.assert_array_equal(gatednorm.w4a16_matmul(a, w, pdl=True), gatednorm.w4a16_matmul(a, w))
    out = np.empty((3, 32), BF16)
    _expect_error(lambda: gatednorm.w4a16_matmul(a, wt, out=out, pdl=1), "pdl: expected True or False", out)
    for field, value, match in [("pdl", 2, "params.pdl: expected 0 or 1, got 2"), ("reserved0", 1, "params.reserved0: must be 0, got 1")]:
        bad = _with_own_params(wt)
        setattr(bad._params, field, value)
        _expect_error(lambda: gatednorm.w4a16_matmul(a, bad, out=out), match, out)
    v1 = gatednorm._ffi.lib().GATEDNORM_W4A16_PARAMS_V1_SIZE
    assert v1 == 48 and ffi.offsetof("gatednorm_w4a16_params", "pdl") == v1
    old = _with_own_params(wt)
    old._params.struct_size = v1
    old._params.pdl = 5  # past the caller's 48 bytes: never read
    np.testing.assert_array_equal(gatednorm.w4a16_matmul(a, old), ref)
    p = ffi.new("gatednorm_w4a16_params *")
    p.pdl = 7
    assert gatednorm._ffi.lib().gatednorm_w4a16_params_init(p, v1) == 0
    assert p.struct_size == v1 and p.symmetric == -1 and p.pdl == 7  # nothing written past the 48 bytes


# ------------------------------------------------------------------------------ bad input
def _plain(rng, n=32, k=128, g=32, symmetric=False):
    W = rng.standard_normal((n, k)).astype(np.float32)
    return gatednorm.W4A16Weight.from_float(W, g, symmetric)


def _with_own_params(w):
    """A shallow copy of the tiled weight w with its own params struct, to alter."""
    c = w.__class__.__new__(w.__class__)
    c.__dict__.update(w.__dict__)
    c._params = ffi.new("gatednorm_w4a16_params *", w._params[0])
    return c


def _expect_error(fn, match, *outs):
    for o in outs:
        o[...] = np.nan
    with pytest.raises(gatednorm.GatedNormError, match=match):
        fn()
    for o in outs:
        assert np.isnan(o.astype(np.float32)).all(), "a failed call wrote its output"


def test_bad_scales_shape(rng):
    w = _plain(rng)
    a = rng.standard_normal((2, 128)).astype(BF16)
    out = np.empty((2, 32), BF16)
    bad = gatednorm.W4A16Weight.__new__(gatednorm.W4A16Weight)
    bad.__dict__.update(w.__dict__)
    bad.scales = np.ones((31, 4), np.float32)  # rows != N
    _expect_error(lambda: gatednorm.w4a16_matmul(a, bad, out=out), "scales", out)
    bad.scales = np.ones((32, 3), np.float32)  # 3 groups do not divide K = 128
    _expect_error(lambda: gatednorm.w4a16_matmul(a, bad, out=out), "scales: 3 groups", out)


def test_bad_k_and_shapes(rng):
    w = _plain(rng)
    out = np.empty((2, 32), BF16)
    _expect_error(lambda: gatednorm.w4a16_matmul(rng.standard_normal((2, 96)).astype(BF16), w, out=out), "a: .*K = 96", out)
    _expect_error(lambda: gatednorm.w4a16_matmul(rng.standard_normal((2, 128)).astype(np.float32), w, out=out), "a: dtype float32", out)
    a = rng.standard_normal((2, 128)).astype(BF16)
    bad_out = np.empty((2, 31), BF16)
    _expect_error(lambda: gatednorm.w4a16_matmul(a, w, out=bad_out), "out: expected shape", bad_out)
    _expect_error(lambda: gatednorm.w4a16_matmul(a, w, np.ones(31, np.float32), out=out), r"bias: expected shape \[N\] = \[32\], got \[31\]", out)
    _expect_error(lambda: gatednorm.w4a16_matmul(a, w, np.ones((1, 32), np.float32), out=out), r"bias: .* got 2 dims", out)
    with pytest.raises(gatednorm.GatedNormError, match="w: expected a gatednorm.W4A16Weight"):
        gatednorm.w4a16_matmul(a, object())


def test_scales_that_overflow_fp16_are_refused_for_fp16_activations(rng):
    """A finite bf16 scale beyond fp16's range (1e5) became inf when rounded for fp16
    activations: its group dequantized to inf and the outputs to NaN (review). Refused naming
    scales wherever fp16 is asked (dequantize, the GEMM, prepack), out untouched; bf16 fine."""
    q, z, s = rand_quant(rng, 8, 64, 32, sdtype=BF16)
    s[3, 1] = 1e5
    plain = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)  # low nibble first
    w = gatednorm.W4A16Weight(plain, s, z.astype(np.uint8))
    for call in (lambda: w.dequantize("float16"), lambda: w.prepack_host("cuda_mma", "float16")):
        with pytest.raises(gatednorm.GatedNormError, match=r"^scales: scale at \(3, 1\) .* overflows float16"):
            call()
    out = np.empty((2, 8), F16)
    _expect_error(lambda: gatednorm.w4a16_matmul(np.ones((2, 64), F16), w, out=out), "scales: scale at", out)
    assert np.isfinite(w.dequantize("bfloat16")).all()
    assert np.isfinite(gatednorm.w4a16_matmul(np.ones((2, 64), BF16), w).astype(np.float32)).all()


@pytest.mark.parametrize("zeros", [True, False])
def test_scales_whose_products_overflow_fp16_are_refused(rng, zeros):
    """A scale that fits fp16 (1e4) while |q - z| times it does not (up to 15e4): the product
    rounded into fp16 is inf, so the group dequantized to inf and the outputs to NaN; the
    scale's own check let it through (review).  Refused exactly where the float64 reference's
    dequantized weight is not finite, naming the group's scale; bf16 fine."""
    q, z, s = rand_quant(rng, 8, 64, 32, sdtype=BF16)
    if not zeros:
        z[:] = 8
    s[2, 1] = 5000.0
    q[2, 32:64] = z[2, 1] + 3 if z[2, 1] <= 12 else z[2, 1] - 3  # |q - z| = 3 over the group: 15000 fits
    s[5, 0] = 1e4
    q[5, 0:32] = z[5, 0]  # all |q - z| = 0, one of 7 (7e4 overflows) below
    q[5, 7] = z[5, 0] + 7 if z[5, 0] <= 8 else z[5, 0] - 7
    plain = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    zz = z.astype(np.uint8) if zeros else None
    with np.errstate(over="ignore"):
        want = reference.w4a16_dequantize(plain, s, zz, "float16")  # [K, N]
    assert not np.isfinite(want[:, 5]).all() and np.isfinite(want[:, 2]).all()  # the case is what it says
    w = gatednorm.W4A16Weight(plain, s, zz)
    with pytest.raises(gatednorm.GatedNormError, match=r"^scales: scale at \(5, 0\) .* largest \|code - zero point\| \(7\) "
                                                       r"overflows float16"):
        w.dequantize("float16")
    s[5, 0] = 9000.0  # 7 x 9024 (its bf16) = 63168 fits
    w = gatednorm.W4A16Weight(plain, s, zz)
    assert np.array_equal(w.dequantize("float16"), reference.w4a16_dequantize(plain, s, zz, "float16"))
    assert np.isfinite(w.dequantize("bfloat16")).all()


def test_product_overflow_check_with_an_odd_group_size():
    """G = 3: bytes straddle groups, which the check's first unpacking of a group's bytes
    alone could not take (a review: a ValueError where the weight was fine)."""
    q = np.full((1, 3), 0xFF, np.uint8)  # K = 6, codes all 15
    zeros = np.zeros((1, 2), np.uint8)  # |q - z| = 15
    fine = gatednorm.W4A16Weight(q, np.array([[5000.0, 1.0]], np.float32))  # z = 8: 7 x 5000 fits
    assert np.array_equal(fine.dequantize("float16"), reference.w4a16_dequantize(fine.q, fine.scales, None, "float16"))
    with pytest.raises(gatednorm.GatedNormError, match=r"^scales: scale at \(0, 1\) .* \(15\) overflows float16"):
        gatednorm.W4A16Weight(q, np.array([[1.0, 5000.0]], np.float32), zeros).dequantize("float16")


def test_odd_k_names_the_argument_it_came_from(rng):
    """An odd K (two codes a byte) was reported as "K: ...", naming no argument (review)."""
    ws = np.zeros((8, 255 // 8 + 1), np.int32)  # packed along K: ceil(255 / 8) words a row
    with pytest.raises(gatednorm.GatedNormError, match=r"^weight_shape: K = 255 is odd"):
        gatednorm.W4A16Weight.from_compressed_tensors(ws, np.ones((8, 1), np.float32), weight_shape=[8, 255])
    with pytest.raises(gatednorm.GatedNormError, match=r"^W: K = 63 is odd"):
        gatednorm.W4A16Weight.from_float(rng.standard_normal((8, 63)).astype(np.float32), -1, False)


def test_k_not_multiple_of_group_rejected(rng):
    w = _plain(rng)
    # params.group_size that does not divide K, on the plain weight: named
    a = rng.standard_normal((2, 128)).astype(BF16)
    out = np.empty((2, 32), BF16)
    t = w.prepack_host("cuda_mma", BF16)
    bad = t.__class__.__new__(t.__class__)
    bad.__dict__.update(t.__dict__)
    bad._params = ffi.new("gatednorm_w4a16_params *", t._params[0])
    bad._params.group_size = 48
    _expect_error(lambda: gatednorm.w4a16_matmul(a, bad, out=out), "params.group_size: K = 128 is not a multiple of G = 48", out)
    # a tiled layout cannot hold G = 24 (not a power of two): prepack names it
    w24 = gatednorm.W4A16Weight.from_float(rng.standard_normal((16, 96)).astype(np.float32), 24, False)
    with pytest.raises(gatednorm.GatedNormError, match="params.group_size: G = 24"):
        w24.prepack_host("cuda_mma", BF16)


@pytest.mark.parametrize("field,value,match", [
    ("layout_version", 2, "params.layout_version: 2"),
    ("target", 0, "params.target: NATIVE"),
    ("dtype", 2, "a: dtype bfloat16, but the weight"),
    ("symmetric", 1, "params.n|tiled weight|qweight"),
    ("n", 64, "qweight: .* bytes"),
])
def test_tiled_tag_mismatch(rng, field, value, match):
    w = _plain(rng).prepack_host("cuda_mma", BF16)
    bad = _with_own_params(w)
    setattr(bad._params, field, value)
    a = rng.standard_normal((2, 128)).astype(BF16)
    out = np.empty((2, bad._params.n), BF16)
    if field == "symmetric":  # a tiled buffer read with the other entry size: its size no longer matches
        bad._params.symmetric = 1
        ok = gatednorm.w4a16_matmul(a, bad, out=np.empty((2, 32), BF16))  # smaller need: reads, differently
        assert not np.array_equal(ok, gatednorm.w4a16_matmul(a, w))
        return
    _expect_error(lambda: gatednorm.w4a16_matmul(a, bad, out=out), match, out)


def test_plain_gemm_symmetric_flag_against_zeros(rng):
    """params.symmetric must agree with the zeros the plain call is given: 1 with zeros, or 0
    without, is refused naming zeros, nothing written (a review's mutant accepting the first
    passed every test but the fuzz driver)."""
    w = _plain(rng, g=32)
    a = rng.standard_normal((2, 128)).astype(BF16)
    out = np.empty((2, w.n), np.float32)
    _expect_error(lambda: W4._GEMM(None, a, w.q, w.scales, w.zeros, None, out, None, params=W4._GEMM.params(symmetric=1)),
                  "w4a16_gemm: zeros: given, but params.symmetric = 1", out)
    _expect_error(lambda: W4._GEMM(None, a, w.q, w.scales, None, None, out, None, params=W4._GEMM.params(symmetric=0)),
                  "w4a16_gemm: zeros: NULL, but params.symmetric = 0", out)


@pytest.mark.parametrize("symmetric", [False, True], ids=["asym", "sym"])
def test_plain_gemm_strided_scales_and_zeros(rng, symmetric):
    """The plain layout's scales and zeros as column-major views (a GPTQ [K/G, N] tensor
    transposed, as a caller of the C entry may pass them): the same bits as contiguous ones.
    W4A16Weight copies to contiguous arrays, so only a direct call reaches these strides (a
    review's mutants ignoring them passed every test but the fuzz driver)."""
    w = _plain(rng, n=24, k=256, g=64, symmetric=symmetric)
    a = rng.standard_normal((3, 256)).astype(BF16)
    want = W4.gemm(a, a, w.n, (w.q, w.scales, w.zeros), W4._GEMM.params(), None, None, F32, None, None)
    s_col = np.ascontiguousarray(w.scales.T).T
    z_col = None if w.zeros is None else np.ascontiguousarray(w.zeros.T).T
    assert s_col.strides != w.scales.strides
    out = np.full((3, w.n), np.nan, np.float32)
    W4.gemm(a, a, w.n, (w.q, s_col, z_col), W4._GEMM.params(), None, out, None, None, None)
    assert out.tobytes() == want.tobytes()
    ref = reference.w4a16_matmul(a, w.q, w.scales, w.zeros, None)
    assert np.all(np.abs(out - ref) <= reference.w4a16_tolerance(a, w.q, w.scales, w.zeros, None, F32, ref))


def test_misaligned_pointer(rng):
    w = _plain(rng)
    raw = np.zeros(2 * 128 * 2 + 1, np.uint8)
    a = raw[1:].view(BF16).reshape(2, 128) if False else None  # numpy refuses a misaligned view; use from_pointer
    buf = rng.standard_normal((2, 129)).astype(BF16)
    a = gatednorm.from_pointer(buf.ctypes.data + 1, (2, 128), BF16, strides=(129, 1), device="cpu", owner=buf)
    out = np.empty((2, 32), BF16)
    _expect_error(lambda: gatednorm.w4a16_matmul(a, w, out=out), "a: data pointer .* not aligned", out)


def test_prepack_errors(rng):
    w = _plain(rng)
    with pytest.raises(gatednorm.GatedNormError, match="params.target: NATIVE on the host"):
        w.prepack_host(0, BF16)
    # float32 activations: refused by the wrapper, naming its keyword ...
    with pytest.raises(gatednorm.InvalidArgumentError, match="dtype: expected bfloat16 or float16 activations, got float32"):
        w.prepack_host("cuda_mma", F32)
    # ... and by the C entry, which the wrapper no longer reaches with it
    from gatednorm import w4a16 as w4

    prm = w4._new_params(gatednorm._ffi.lib())
    w._describe(prm)
    prm.target, prm.symmetric = w4.TARGETS["cuda_mma"], -1
    packed = np.zeros(1 << 16, np.uint8)
    with pytest.raises(gatednorm.GatedNormError, match="params.dtype: UNSET"):
        w4._PREPACK(None, w.q, w.scales, w.zeros, packed, params=prm)
    assert not packed.any()


def test_plain_weight_on_gpu_rejected(rng, requires_gpu):
    w = _plain(rng)
    a = gatednorm.DeviceArray.from_numpy(rng.standard_normal((2, 128)).astype(BF16), device="gpu:0")
    with pytest.raises(gatednorm.GatedNormError, match=r"w: a plain \(host\) weight, but a is on cuda:0; prepack"):
        gatednorm.w4a16_matmul(a, w)
    # In the C ABI, a PLAIN weight in GPU memory is refused by layout, naming qweight.
    qd = gatednorm.DeviceArray.from_numpy(w.q, device="gpu:0")
    sd = gatednorm.DeviceArray.from_numpy(w.scales, device="gpu:0")
    zd = None if w.zeros is None else gatednorm.DeviceArray.from_numpy(w.zeros, device="gpu:0")
    out = gatednorm.DeviceArray.from_numpy(np.full((2, w.n), np.nan, BF16), device="gpu:0")
    entry = gatednorm.w4a16._GEMM
    with pytest.raises(gatednorm.GatedNormError, match="qweight: a PLAIN weight"):
        entry(None, a, qd, sd, zd, None, out, None, params=entry.params())
    assert np.isnan(out.numpy().astype(np.float32)).all()


def test_gpu_target_and_alignment(rng, requires_gpu):
    w = _plain(rng)
    wt = w.to("gpu:0", BF16)
    other = 2 if wt._params.target != 2 else 1
    bad = wt.__class__.__new__(wt.__class__)
    bad.__dict__.update(wt.__dict__)
    bad._params = ffi.new("gatednorm_w4a16_params *", wt._params[0])
    bad._params.target = other
    host = rng.standard_normal((2, 136)).astype(BF16)
    a_ok = gatednorm.DeviceArray.from_numpy(host[:, :128].copy(), device="gpu:0")
    out = gatednorm.DeviceArray.from_numpy(np.full((2, 32), np.nan, BF16), device="gpu:0")
    with pytest.raises(gatednorm.GatedNormError, match="params.target: the weight was packed for"):
        gatednorm.w4a16_matmul(a_ok, bad, out=out)
    # rows of 130 elements: not 16-byte aligned
    dev = gatednorm.DeviceArray.from_numpy(rng.standard_normal((2, 130)).astype(BF16), device="gpu:0")
    a_bad = dev[:, :128]
    with pytest.raises(gatednorm.GatedNormError, match="a: the GPU GEMM reads rows in 16-byte pieces"):
        gatednorm.w4a16_matmul(a_bad, wt, out=out)
    assert np.isnan(out.numpy().astype(np.float32)).all()
    # one row: its stride is never used, so any is accepted (0.6.6; it was refused)
    one = gatednorm.DeviceArray.from_numpy(np.full((1, 32), np.nan, BF16), device="gpu:0")
    gatednorm.w4a16_matmul(dev[:1, :128], wt, out=one)
    _assert_ref_cols(rng, np.ascontiguousarray(dev.numpy()[:1, :128]), w, one.numpy(), "bf16")


def test_gpu_workspace_too_small(rng, requires_gpu):
    n, k = 64, 8192  # 4 col tiles: split-K needs a workspace
    w = gatednorm.W4A16Weight.from_float(rng.standard_normal((n, k)).astype(np.float32), 128, False).to("gpu:0", BF16)
    a = gatednorm.DeviceArray.from_numpy(rng.standard_normal((1, k)).astype(BF16), device="gpu:0")
    out = gatednorm.DeviceArray.from_numpy(np.full((1, n), np.nan, BF16), device="gpu:0")
    ws = gatednorm.DeviceArray.empty((4,), np.uint8, device="gpu:0")
    with pytest.raises(gatednorm.GatedNormError, match="workspace: 4 bytes"):
        gatednorm.w4a16_matmul(a, w, out=out, workspace=ws)
    assert np.isnan(out.numpy().astype(np.float32)).all()


# ------------------------------------------------- the C entries at their limits (review of 2026-12-04)
def _params(**fields):
    lib = gatednorm._ffi.lib()
    p = ffi.new("gatednorm_w4a16_params *")
    assert lib.gatednorm_w4a16_params_init(p, ffi.sizeof(p[0])) == 0
    for k, v in fields.items():
        setattr(p, k, v)
    return lib, p


def _last_error(lib):
    return ffi.string(lib.gatednorm_last_error()).decode()


@pytest.mark.parametrize("fields,name", [
    (dict(n=16, k=0, group_size=16), "params.k:"),
    (dict(n=16, k=64, group_size=0), "params.group_size:"),
    (dict(n=0, k=64, group_size=16), "params.n:"),
])
def test_workspace_size_names_the_field_at_fault(fields, name):
    lib, p = _params(**fields)
    cpu = ffi.new("gatednorm_device *", {"device_type": 1, "device_id": 0})[0]
    nb = ffi.new("size_t *", 77)
    assert lib.gatednorm_w4a16_workspace_size(p, 1, cpu, nb) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert _last_error(lib).startswith(name), _last_error(lib)
    assert nb[0] == 77


# The query fails where the GEMM would: m, N, K past 2^31, K not a multiple of G (a review
# of 2026-12-06 found it returning 0 bytes for any of them on the host).
@pytest.mark.parametrize("m,fields,name", [
    (1 << 31, dict(n=16, k=64, group_size=16), "m:"),
    (1, dict(n=1 << 31, k=64, group_size=16), "params.n:"),
    (1, dict(n=16, k=(1 << 62), group_size=16), "params.k:"),
    (1, dict(n=16, k=96, group_size=64), "params.group_size:"),
])
def test_workspace_size_applies_the_gemms_limits(m, fields, name):
    lib, p = _params(**fields)
    cpu = ffi.new("gatednorm_device *", {"device_type": 1, "device_id": 0})[0]
    nb = ffi.new("size_t *", 77)
    assert lib.gatednorm_w4a16_workspace_size(p, m, cpu, nb) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert _last_error(lib).startswith(name), _last_error(lib)
    assert nb[0] == 77


def test_plain_qweight_of_2_62_bytes_a_row_is_refused_before_k_overflows():
    """K = 2 x qweight.shape[1] was computed before its range check: [1, 2^62 + 1] overflowed
    (undefined behaviour; the message blamed K/2 >= 1).  A broadcast view claims the extent with
    no memory behind it."""
    lib, p = _params()  # PLAIN, symmetric from zeros
    buf = np.zeros(64, np.uint8)
    at = buf.ctypes.data
    uint, bfloat = lib.GATEDNORM_DTYPE_CODE_UINT, lib.GATEDNORM_DTYPE_CODE_BFLOAT
    q = _host_desc(at, (1, (1 << 62) + 1), (0, 0), uint, 8)
    scales = _host_desc(at, (1, 1), (1, 1), bfloat, 16)
    a = _host_desc(at, (1, 2), (2, 1), bfloat, 16)
    out = _host_desc(at, (1, 1), (1, 1), bfloat, 16)
    before = buf.copy()
    st = lib.gatednorm_w4a16_gemm(a, q, scales, ffi.NULL, ffi.NULL, out, ffi.NULL, p, ffi.NULL)
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert re.match(r"qweight: .*below 2\^31", _last_error(lib)), _last_error(lib)
    assert buf.tobytes() == before.tobytes()


def test_prepack_names_scales_when_they_give_a_g_the_tiled_layout_cannot_hold():
    """G read from scales' shape (params.group_size left 0): the error names scales, not the
    field the caller never set (review of 2026-12-06); nothing is written."""
    lib, p = _params(dtype=1, target=1)
    n, k, groups = 16, 64, 8  # G = 8: no tiled layout
    qbuf, sbuf, packed = np.zeros((n, k // 2), np.uint8), np.ones((n, groups), BF16), np.full(4096, 0xAB, np.uint8)
    q = _host_desc(qbuf.ctypes.data, qbuf.shape, (k // 2, 1), lib.GATEDNORM_DTYPE_CODE_UINT, 8)
    sc = _host_desc(sbuf.ctypes.data, sbuf.shape, (groups, 1), lib.GATEDNORM_DTYPE_CODE_BFLOAT, 16)
    pk = _host_desc(packed.ctypes.data, packed.shape, (1,), lib.GATEDNORM_DTYPE_CODE_UINT, 8)
    st = lib.gatednorm_w4a16_prepack(q, sc, ffi.NULL, pk, p, ffi.NULL)
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert _last_error(lib).startswith("scales: 8 groups per row give G = 8"), _last_error(lib)
    assert (packed == 0xAB).all() and p.group_size == 0 and p.layout == 0


@pytest.mark.parametrize("n,k,name", [(16, 1 << 31, "params.k:"), (1 << 31, 64, "params.n:")])
def test_prepacked_size_names_n_or_k_past_2_31(n, k, name):
    lib, p = _params(n=n, k=k, group_size=16, symmetric=1, dtype=1, target=1)
    nb = ffi.new("size_t *")
    assert lib.gatednorm_w4a16_prepacked_size(p, nb) == lib.GATEDNORM_STATUS_INVALID_ARGUMENT
    assert _last_error(lib).startswith(name), _last_error(lib)




def test_plain_gemm_past_host_memory_is_out_of_memory():
    """Regression: a broadcast PLAIN weight of N x K ~ 2^62 (each below 2^31) made the CPU
    backend's buffer throw std::length_error, reported as INTERNAL naming nothing."""
    lib, p = _params()
    N, K = (1 << 31) - 1, (1 << 31) - 2
    fake = 1 << 44  # never read: the size fails first
    qw = _host_desc(fake, (N, K // 2), (0, 1), 1, 8)
    sc = _host_desc(fake + (1 << 40), (N, 1), (0, 0), 2, 32)
    ta = _host_desc(fake + (1 << 41), (1, K), (K, 1), 4, 16)  # a and out at fake addresses: never written
    to = _host_desc(fake + (1 << 42), (1, N), (N, 1), 2, 32)
    st = lib.gatednorm_w4a16_gemm(ta, qw, sc, ffi.NULL, ffi.NULL, to, ffi.NULL, p, ffi.NULL)
    assert st == lib.GATEDNORM_STATUS_OUT_OF_MEMORY, (st, _last_error(lib))
    assert _last_error(lib).startswith("w4a16_gemm: out of host memory"), _last_error(lib)


def test_empty_a_and_out_strides_are_free(rng):
    """M = 0: an empty a / out addresses nothing, so its strides are free (docs/c_abi.md)."""
    w = _plain(rng)
    lib, p = _params()
    buf = np.zeros(64, BF16)
    ta = _host_desc(buf.ctypes.data, (0, 128), (5, 3), 4, 16)
    to = _host_desc(buf.ctypes.data, (0, 32), (7, 3), 4, 16)
    tq = _host_desc(w.q.ctypes.data, w.q.shape, (w.q.shape[1], 1), 1, 8)
    ts = _host_desc(w.scales.ctypes.data, w.scales.shape, (w.scales.shape[1], 1), 2, 32)
    tz = _host_desc(w.zeros.ctypes.data, w.zeros.shape, (w.zeros.shape[1], 1), 1, 8)
    st = lib.gatednorm_w4a16_gemm(ta, tq, ts, tz, ffi.NULL, to, ffi.NULL, p, ffi.NULL)
    assert st == 0, _last_error(lib)


def test_host_prepack_into_a_misaligned_buffer_is_refused(rng):
    """The header asks a 16-byte aligned packed buffer; the host path wrote there unchecked."""
    w = _plain(rng)
    lib, p = _params(n=w.n, k=w.k, group_size=w.group_size, symmetric=0, dtype=1, target=1)
    nb = ffi.new("size_t *")
    assert lib.gatednorm_w4a16_prepacked_size(p, nb) == 0
    raw = np.zeros(int(nb[0]) + 32, np.uint8)
    off = (-raw.ctypes.data) % 16 + 1  # 1 byte past a 16-byte boundary
    tq = _host_desc(w.q.ctypes.data, w.q.shape, (w.q.shape[1], 1), 1, 8)
    ts = _host_desc(w.scales.ctypes.data, w.scales.shape, (w.scales.shape[1], 1), 2, 32)
    tz = _host_desc(w.zeros.ctypes.data, w.zeros.shape, (w.zeros.shape[1], 1), 1, 8)
    tp = _host_desc(raw.ctypes.data + off, (int(nb[0]),), (1,), 1, 8)
    st = lib.gatednorm_w4a16_prepack(tq, ts, tz, tp, p, ffi.NULL)
    assert st == lib.GATEDNORM_STATUS_INVALID_ARGUMENT and _last_error(lib).startswith("packed:"), _last_error(lib)
    assert not raw.any()


# --------------------------------------------- the Python API at its edges (review of 2026-12-04)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_from_float_group_of_one_sign_keeps_its_range(rng, sign):
    """Regression: an asymmetric group whose values all had one sign clamped its zero point
    to 0 / 15 and saturated its codes (values near 11 came back as 1).  The range now holds 0,
    so every value is within half a step of its code (plus the bf16 rounding of s and of w16)."""
    W = sign * (10.0 + rng.random((4, 64))).astype(np.float32)
    W[1] = np.linspace(-3.0, 5.0, 64, dtype=np.float32)  # a row that straddles 0: unchanged rule
    w = gatednorm.W4A16Weight.from_float(W, 32, symmetric=False)
    deq = w.dequantize().T  # [N, K], bf16 values
    g = W.reshape(4, 2, 32)
    step = (np.maximum(g.max(axis=2), 0) - np.minimum(g.min(axis=2), 0)) / 15.0  # [N, groups]
    bound = np.repeat(0.5 * step + 16 * step * 2.0 ** -8, 32, axis=1) + np.abs(W) * 2.0 ** -8
    err = np.abs(deq.astype(np.float64) - W)
    assert (err <= bound).all(), float((err / bound).max())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_from_float_refuses_non_finite(rng, bad):
    W = rng.standard_normal((8, 64)).astype(np.float32)
    W[3, 5] = bad
    for sym in (False, True):
        with pytest.raises(gatednorm.InvalidArgumentError, match="W: holds NaN or Inf"):
            gatednorm.W4A16Weight.from_float(W, 32, sym)


def _act_order_weight(rng, n=16, k=64, g=32):
    q, s, z = _plain(rng, n, k, g).to_plain()
    return gatednorm.W4A16Weight(q, s, z, perm=rng.permutation(k))


@pytest.mark.parametrize("shape", [(2, 72), (2, 56), (64,), (2, 1, 64)])
def test_act_order_matmul_checks_a_before_permuting(rng, shape):
    """Regression: a[:, perm] ran first, dropping extra columns silently or raising IndexError."""
    w = _act_order_weight(rng)
    a = rng.standard_normal(shape).astype(BF16)
    out = np.empty((2, 16), BF16)
    _expect_error(lambda: gatednorm.w4a16_matmul(a, w, out=out), r"a: expected \[M, K\] with K = 64", out)


@pytest.mark.parametrize("perm,why", [
    (np.zeros(64, np.int64), "duplicates"),
    (np.arange(63), "short"),
    (np.arange(1, 65), "out of range"),
    (np.arange(64, dtype=np.float64), "float"),
])
def test_constructor_checks_perm(rng, perm, why):
    q, s, z = _plain(rng, 16, 64).to_plain()
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"perm: expected a permutation of range\(K\)"):
        gatednorm.W4A16Weight(q, s, z, perm=perm)


def test_out_dtype_is_checked_against_out(rng):
    w = _plain(rng)
    a = rng.standard_normal((2, 128)).astype(BF16)
    out = np.empty((2, 32), BF16)
    _expect_error(lambda: gatednorm.w4a16_matmul(a, w, out=out, out_dtype="float32"), "out_dtype: float32 does not match", out)
    with pytest.raises(gatednorm.InvalidArgumentError, match="out_dtype: int8"):
        gatednorm.w4a16_matmul(a, w, out_dtype="int8")
    assert gatednorm.w4a16_matmul(a, w, out_dtype="float32").dtype == np.float32


def _gptq_parts(rng, n=16, k=64, g=32):
    qweight = rng.integers(-2 ** 31, 2 ** 31, (k // 8, n), dtype=np.int64).astype(np.int32)
    qzeros = np.full((k // g, (n + 7) // 8), 0x66666666, np.int32)
    scales = rng.random((k // g, n)).astype(np.float32)
    return qweight, qzeros, scales


@pytest.mark.parametrize("call,match", [
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0].astype(np.float32), p[1], p[2]), "qweight: expected an int32"),
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0].reshape(-1), p[1], p[2]), "qweight: expected a 2-D"),
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0], p[1].reshape(-1), p[2]), "qzeros: expected a 2-D"),
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0], p[1], p[2], version=True), "version:"),
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0], p[1], p[2], version=1.0), "version:"),
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0], p[1], p[2], symmetric="yes"), "symmetric:"),
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0], p[1], p[2], g_idx=np.zeros(64, np.float32)), "g_idx: expected integer"),
    (lambda p: gatednorm.W4A16Weight.from_compressed_tensors(np.zeros((16, 8), np.int32), np.ones(3, np.float32),
                                                             weight_shape=(16, 64)), "weight_scale: expected"),
    (lambda p: gatednorm.W4A16Weight.from_compressed_tensors(np.zeros((16, 8), np.int32), np.ones((16, 2), np.float32),
                                                             weight_shape=(16.5, 64)), "weight_shape: expected"),
    (lambda p: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), True), "group_size:"),
    (lambda p: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), 32.7), "group_size:"),
    (lambda p: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), "32"), "group_size:"),
    (lambda p: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), 32, "no"), "symmetric:"),
    (lambda p: gatednorm.W4A16Weight(np.zeros((4, 32), np.uint8), np.ones((4, 2), np.float32), np.full((4, 2), 3.7)),
     "zeros: expected integer codes"),
    (lambda p: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), 32).prepack_host("bogus"), "target:"),
    # (the new-user review of 2026-12-04) a transposed qweight was blamed on scales
    (lambda p: gatednorm.W4A16Weight.from_gptq(np.ascontiguousarray(p[0].T), p[1], p[2]),
     "qweight: holds N = 8 columns but scales .* have 16, the N it would hold transposed; is it transposed"),
    (lambda p: gatednorm.W4A16Weight.from_awq(np.zeros((2, 16), np.int32), np.zeros((1, 2), np.int32),
                                              np.ones((1, 16), np.float32)), "qweight: holds N = 128 columns .* is it transposed"),
    # ... but a right qweight with wrong (here transposed) scales names the scales
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0], p[1], np.ascontiguousarray(p[2].T)), r"scales: expected \[K/G, N\]"),
    (lambda p: gatednorm.W4A16Weight.from_awq(np.zeros((16, 2), np.int32), np.zeros((2, 2), np.int32),
                                              np.ones((16, 2), np.float32)), r"scales: expected \[K/G, N\]"),
    # non-finite or integer scales (a NaN scale made NaN outputs; int32 scales were converted)
    (lambda p: gatednorm.W4A16Weight(np.zeros((4, 32), np.uint8), np.array([[1, np.nan]] * 4, np.float32)),
     r"scales: scale at \(0, 1\) is nan"),
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0], p[1], np.where(np.arange(16) == 3, np.inf, p[2]).astype(np.float32)),
     r"scales: scale at \(0, 3\) is inf"),
    (lambda p: gatednorm.W4A16Weight.from_gptq(p[0], p[1], np.full(p[2].shape, 1e39)), r"scales: .* is inf"),
    (lambda p: gatednorm.W4A16Weight(np.zeros((4, 32), np.uint8), np.ones((4, 2), np.int32)),
     "scales: expected floating-point scales"),
    (lambda p: gatednorm.W4A16Weight.from_compressed_tensors(np.zeros((16, 8), np.int32), np.full((16, 2), np.nan, np.float32),
                                                             weight_shape=(16, 64)), "weight_scale: scale at"),
    # prepack_host named the C field (params.dtype: UNSET) for a dtype the activations cannot have
    (lambda p: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), 32).prepack_host(dtype="float32"),
     "dtype: expected bfloat16 or float16 activations"),
    # (a review of 2026-12-06) empty checkpoints named the constructor's q; a target past
    # int32 raised cffi's OverflowError
    (lambda p: gatednorm.W4A16Weight.from_gptq(np.zeros((16, 0), np.int32), np.zeros((4, 0), np.int32),
                                               np.zeros((4, 0), np.float32)), r"qweight: expected int32 \[K/8, N\]"),
    (lambda p: gatednorm.W4A16Weight.from_awq(np.zeros((0, 8), np.int32), np.zeros((1, 8), np.int32),
                                              np.ones((1, 64), np.float32)), r"qweight: expected int32 \[K, N/8\]"),
    # a weight_shape given as [K, N]: the message says which weight_shape the packed shape was
    # derived from (a review of 2026-12-06 read it as blaming weight_packed alone)
    (lambda p: gatednorm.W4A16Weight.from_compressed_tensors(np.zeros((16, 8), np.int32), np.ones((16, 1), np.float32),
                                                             weight_shape=(64, 16)), r"from weight_shape \[N, K\] = \[64, 16\]"),
    (lambda p: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), 32).prepack_host(target=1 << 40),
     "target: 1099511627776 is not a target"),
    (lambda p: gatednorm.W4A16Weight.from_float(np.ones((4, 64), np.float32), 32).prepack_host(target=np.int64(-(1 << 40))),
     "target: -1099511627776 is not a target"),
])
def test_importer_errors_name_their_argument(rng, call, match):
    with pytest.raises(gatednorm.InvalidArgumentError, match=match):
        call(_gptq_parts(rng))


def test_weight_owns_its_arrays_and_checks_its_arguments():
    """A review of 2026-12-04: a weight kept the caller's q / scales / perm by reference (NaN
    written into the caller's scales reached the GEMM; a perm zeroed after the checks ran
    silently) and to_plain handed its arrays out writable; from_float refused bf16 weights and
    made NaN weights of finite ones past fp32's range; dequantize and .to("cpu") took any
    dtype; an empty weight was accepted and refused later under another name."""
    rng = np.random.default_rng(7)
    n, k = 8, 64
    q = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
    s = rng.uniform(0.01, 0.1, (n, k // 32)).astype(np.float32)
    perm = np.arange(k)[::-1].copy()
    w = gatednorm.W4A16Weight(q, s, perm=perm)
    before = w.dequantize()
    q[:], s[:], perm[:] = 0, np.nan, 0
    assert np.array_equal(w.dequantize(), before) and sorted(w.perm) == list(range(k))
    for arr in w.to_plain()[:2] + (w.perm,):
        with pytest.raises(ValueError):
            arr[...] = 0
    wf = gatednorm.W4A16Weight.from_float(rng.standard_normal((n, k)).astype(_dtypes.bfloat16), 32)
    assert wf.group_size == 32
    with pytest.raises(gatednorm.GatedNormError, match="W: a group's scale overflows"):
        gatednorm.W4A16Weight.from_float(np.array([[1e40, 0.0]]), None)
    for bad in (np.int8, "float32", "garbage"):
        with pytest.raises(gatednorm.GatedNormError, match="dtype:"):
            w.dequantize(bad)
        with pytest.raises(gatednorm.GatedNormError, match="dtype:"):
            w.to("cpu", bad)
    for shape in ((4, 0), (0, 8)):
        with pytest.raises(gatednorm.GatedNormError, match="q: expected uint8"):
            gatednorm.W4A16Weight(np.zeros(shape, np.uint8), np.ones((shape[0], 1), np.float32))


def test_device_spec_takes_any_integer():
    """.to(device): the docs' "an int" is any integer, numpy's too (np.int64(0) was refused as
    the string "0", review); a negative index and a bool are refused by name."""
    from gatednorm.w4a16 import _parse_device
    assert _parse_device(np.int64(1)) == "gpu:1" and _parse_device(2) == "gpu:2" and _parse_device(np.uint8(0)) == "gpu:0"
    assert _parse_device("cuda:3") == "gpu:3" and _parse_device("cpu") is None
    for bad in (-1, np.int32(-2), True, np.bool_(False), "cuda:x", 1.0):
        with pytest.raises(gatednorm.GatedNormError, match="device:"):
            _parse_device(bad)


def test_unpacked_gptq_qweight_warns_and_group_size_refuses_it(rng):
    """GPTQ's K comes from qweight's rows, so an unpacked [K, N] qweight has a valid shape (K * 8,
    scales read as G * 8) and was taken silently (review): it warns, naming the K it reads as,
    and group_size= refuses it by the group count; a packed one does not warn."""
    n, k, g = 16, 64, 32
    codes = rng.integers(0, 16, (k, n)).astype(np.int32)
    qzeros = np.full((k // g, n // 8), 0x77777777, np.int32)
    scales = rng.random((k // g, n)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"from_gptq: every int32 of qweight holds a code in slot 0 only .* K = 512"):
        gatednorm.W4A16Weight.from_gptq(codes, qzeros, scales)
    with pytest.warns(UserWarning), pytest.raises(gatednorm.InvalidArgumentError, match=r"^scales: 2 groups, but K = 512"):
        gatednorm.W4A16Weight.from_gptq(codes, qzeros, scales, group_size=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = gatednorm.W4A16Weight.from_gptq(pack8(codes, 0), qzeros, scales, group_size=g)
    assert (w.n, w.k) == (n, k)


def test_to_cpu_checks_the_scales_fit_the_dtype():
    """.to("cpu", "float16") returned a weight whose fp16 scales overflow (review): dequantize
    and the GEMM refused it later; .to refuses it now, as for a GPU."""
    w = gatednorm.W4A16Weight(np.zeros((4, 16), np.uint8), np.full((4, 2), 1e4, np.float32))
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"^scales: scale at \(0, 0\) .* overflows float16"):
        w.to("cpu", "float16")
    assert w.to("cpu", "bfloat16").n == 4


@pytest.mark.parametrize("shape,g", [((0, 32), 32), ((4, 0), None)])
def test_from_float_empty_weight_names_w(shape, g):
    """An empty W was blamed on q or group_size, arguments the caller never passed (review)."""
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"^W: expected \[N, K\] with N, K >= 1"):
        gatednorm.W4A16Weight.from_float(np.zeros(shape), g)


@pytest.mark.parametrize("symmetric", [False, True])
def test_from_float_group_whose_scale_underflows_float32(symmetric):
    """A nonzero group whose float64 scale underflows float32 divided by zero and cast NaN to
    codes (four RuntimeWarnings, review): it quantizes as an all-zero group, to 0."""
    W = np.full((2, 32), 1e-46)
    W[1] = np.linspace(-1, 1, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = gatednorm.W4A16Weight.from_float(W, 32, symmetric)
    assert w.scales[0, 0] == 1.0 and not w.dequantize("float16")[:, 0].astype(np.float32).any()
    if not symmetric:
        assert w.zeros[0, 0] == 0


@pytest.mark.parametrize("adt", [np.float64, np.float32, np.int32])
def test_matmul_activation_dtype_error_names_what_it_takes(rng, adt):
    """float64 activations were told "expected bfloat16, float16 or float32", float32 then
    refused (review): every other dtype gets the GEMM's own message."""
    w = gatednorm.W4A16Weight.from_float(rng.standard_normal((16, 32)), 32)
    out = np.empty((1, 16), BF16)
    _expect_error(lambda: gatednorm.w4a16_matmul(np.ones((1, 32), adt), w, out=out),
                  r"a: dtype \w+; the W4A16 GEMM takes bfloat16 or float16 activations", out)


@pytest.mark.parametrize("odt", [">f4", ">f2"])
def test_matmul_byte_swapped_out_dtype_is_refused_by_name(rng, odt):
    """A byte-swapped out_dtype named out (which the caller did not pass) for numpy a and was
    taken for torch a (a review): refused as out_dtype, before anything is allocated."""
    w = gatednorm.W4A16Weight.from_float(rng.standard_normal((64, 128)), group_size=32)
    with pytest.raises(gatednorm.InvalidArgumentError, match="out_dtype: .*native byte order"):
        gatednorm.w4a16_matmul(np.ones((2, 128), ml_dtypes.bfloat16), w, out_dtype=odt)


def test_importers_name_torch_tensors_without_host_values(rng):
    """Meta-device and fp8 torch tensors raised torch's errors from the importers (a review):
    named as the argument, not convertible to numpy."""
    torch = pytest.importorskip("torch")
    with pytest.raises(gatednorm.InvalidArgumentError, match="W: not convertible to numpy"):
        gatednorm.W4A16Weight.from_float(torch.empty(64, 128, device="meta"))
    with pytest.raises(gatednorm.InvalidArgumentError, match="qweight: not convertible to numpy"):
        gatednorm.W4A16Weight.from_gptq(torch.zeros(16, 64, dtype=torch.int32, device="meta"), None, None)
    if hasattr(torch, "float8_e4m3fn"):
        with pytest.raises(gatednorm.InvalidArgumentError, match="W: not convertible to numpy"):
            gatednorm.W4A16Weight.from_float(torch.randn(64, 128).to(torch.float8_e4m3fn))


def test_act_order_permuted_copy_too_large_is_named(rng):
    """The act-order GEMM's permuted copy of a huge broadcast a raised numpy's bare MemoryError
    (a review): the out-of-memory error names a and the copy."""
    w0 = gatednorm.W4A16Weight.from_float(rng.standard_normal((64, 128)), group_size=32)
    w = gatednorm.W4A16Weight(*w0.to_plain(), perm=rng.permutation(128))
    a = np.lib.stride_tricks.as_strided(np.ones(1, ml_dtypes.bfloat16), shape=(1 << 40, 128), strides=(0, 0))
    with pytest.raises(gatednorm.GatedNormError, match=r"a: the permuted copy a\[:, w.perm\] cannot be allocated") as ei:
        gatednorm.w4a16_matmul(a, w)
    assert ei.value.status == -5


def test_act_order_mkldnn_a_is_named_not_out_of_memory(rng):
    """An mkldnn a has no index_select: an argument error naming a, not out of memory (a
    review: it read as the permuted copy failing to allocate)."""
    torch = pytest.importorskip("torch")
    w0 = gatednorm.W4A16Weight.from_float(rng.standard_normal((64, 128)), group_size=32)
    w = gatednorm.W4A16Weight(*w0.to_plain(), perm=rng.permutation(128))
    with pytest.raises(gatednorm.InvalidArgumentError, match="a: a torch tensor of layout .*, not a strided array"):
        gatednorm.w4a16_matmul(torch.ones(2, 128).to_mkldnn(), w)


@pytest.mark.parametrize("n,k,g", [(32, 128, 64), (64, 64, 32)])  # (64, 64): square, as q_proj / o_proj
def test_awq_and_gptq_tensors_swapped_name_qweight(rng, n, k, g):
    """AWQ and GPTQ checkpoints name their tensors alike (qweight, qzeros, scales), so an
    engine reading the wrong quant_method hands one format's tensors to the other importer: the
    error blamed the (right) scales (a hostile review); it names qweight and the other format.
    Each format's tensors still import through their own importer."""
    q, z, s = rand_quant(rng, n, k, g, zlo=1)

    def awq_pack(x):  # x [rows, N]: slot i of column c holds n = 8c + AWQ_ORDER[i]
        return pack8(x.reshape(x.shape[0], -1, 8)[:, :, AWQ_ORDER].reshape(x.shape), 1)

    awq = (awq_pack(q.T), awq_pack(z.T), s.T)
    gptq = (pack8(q.T, 0), pack8((z - 1).T, 1), s.T)
    for args in (awq, awq[:2] + (s.T.astype(np.float32),)):
        with pytest.raises(gatednorm.InvalidArgumentError, match=r"^qweight: .* packed along N, as AWQ's .*from_awq"):
            gatednorm.W4A16Weight.from_gptq(*args)
        with pytest.raises(gatednorm.InvalidArgumentError, match=r"^qweight: .* packed along N, as AWQ's"):
            gatednorm.W4A16Weight.from_gptq(*args, group_size=g)
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"^qweight: .* packed along K, as GPTQ's .*from_gptq"):
        gatednorm.W4A16Weight.from_awq(*gptq)
    want = expected_w16(q, z, s, g, BF16)
    np.testing.assert_array_equal(gatednorm.W4A16Weight.from_awq(*awq).dequantize(BF16), want)
    np.testing.assert_array_equal(gatednorm.W4A16Weight.from_gptq(*gptq).dequantize(BF16), want)


def test_importers_refuse_masked_arrays_and_none_by_name(rng):
    """Masked arrays were taken by every importer and the constructor with their masks
    ignored (a fully masked qweight imported), while w4a16_matmul refuses a masked `a` for
    that reason; a None tensor said "got dtype object" (a hostile review).  Each argument
    now names itself, as a masked or missing array."""
    q, z, s = rand_quant(rng, 16, 64, 32, zlo=1)
    gptq = [pack8(q.T, 0), pack8((z - 1).T, 1), s.T.copy()]
    awq = [pack8(q.T.reshape(64, -1, 8)[:, :, AWQ_ORDER].reshape(64, 16), 1),
           pack8(z.T.reshape(2, -1, 8)[:, :, AWQ_ORDER].reshape(2, 16), 1), s.T.copy()]
    plain = list(gatednorm.W4A16Weight.from_gptq(*gptq).to_plain()[:3])
    ct = [pack8(q, 1), s.copy(), pack8(z, 0)]
    cases = [(gatednorm.W4A16Weight.from_gptq, gptq, ("qweight", "qzeros", "scales"), {}),
             (gatednorm.W4A16Weight.from_awq, awq, ("qweight", "qzeros", "scales"), {}),
             (gatednorm.W4A16Weight, plain, ("q", "scales", "zeros"), {}),
             (lambda *a: gatednorm.W4A16Weight.from_compressed_tensors(*a, weight_shape=(16, 64)), ct,
              ("weight_packed", "weight_scale", "weight_zero_point"), {})]
    for make, args, names, kw in cases:
        make(*args, **kw)  # as given: imports
        for i, name in enumerate(names):
            bad = list(args)
            bad[i] = np.ma.masked_array(args[i], mask=np.ones(np.shape(args[i]), bool))
            with pytest.raises(gatednorm.InvalidArgumentError, match=r"^%s: numpy masked arrays .* pass %s\.data" % (name, name)):
                make(*bad, **kw)
    for make, args in ((gatednorm.W4A16Weight.from_gptq, gptq), (gatednorm.W4A16Weight.from_awq, awq)):
        for i, name in enumerate(("qweight", "qzeros", "scales")):
            bad = list(args)
            bad[i] = None
            with pytest.raises(gatednorm.InvalidArgumentError, match=r"^%s: required" % name):
                make(*bad)
    w = rng.standard_normal((8, 64))
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"^W: numpy masked arrays"):
        gatednorm.W4A16Weight.from_float(np.ma.masked_array(w), group_size=32)
    with pytest.raises(gatednorm.InvalidArgumentError, match=r"^g_idx: numpy masked arrays"):
        gatednorm.W4A16Weight.from_gptq(*gptq, g_idx=np.ma.masked_array(np.arange(64) // 32))


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [128, 65])
def test_from_float_group_size_above_k_is_per_channel(rng, symmetric, group_size):
    """from_float refused a group_size above K ("does not divide K"), so the usual
    group_size=128 failed on a K = 64 layer, while the importers read a config's group_size
    above K as one group, per channel, as GPTQ's quantizer groups such a layer (a hostile
    review): the same weight as group_size=None, bit for bit."""
    w = rng.standard_normal((24, 64))
    got = gatednorm.W4A16Weight.from_float(w, group_size=group_size, symmetric=symmetric)
    want = gatednorm.W4A16Weight.from_float(w, group_size=None, symmetric=symmetric)
    assert got.group_size == 64
    for a, b in zip(got.to_plain(), want.to_plain()):
        if b is None:
            assert a is None
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_weight_copies_keep_its_arrays_read_only(rng, how):
    """A hostile review (session 45): copy.deepcopy and pickle made the weight's arrays
    writable, so a copy's to_plain() handed out its own arrays writable (the promise is
    read-only).  Scales written past fp16's range after an fp16 GEMM judged them fit then
    passed the cached judgement and gave NaN outputs, where the weight refuses them."""
    import copy
    import pickle

    w = gatednorm.W4A16Weight(*gatednorm.W4A16Weight.from_float(rng.standard_normal((16, 64)), 32).to_plain(),
                              perm=rng.permutation(64))
    a = rng.standard_normal((3, 64)).astype(F16)
    want = gatednorm.w4a16_matmul(a, w)  # judges (and caches) the fp16 fit
    c = copy.deepcopy(w) if how == "deepcopy" else pickle.loads(pickle.dumps(w))
    for arr in c.to_plain() + (c.perm,):
        with pytest.raises(ValueError, match="read-only"):
            arr[...] = 0
    np.testing.assert_array_equal(gatednorm.w4a16_matmul(a, c), want)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_tiled_weight_copies_and_pickles(rng, how, dtype):
    """A hostile review (session 45): copy.deepcopy and pickle of a tiled weight raised cffi's
    TypeError ("cannot pickle '_cffi_backend.__CDataOwn' object", its params struct), while a
    plain weight and a DeviceArray (the GPU buffer) copy and pickle.  The copy is the same
    tiled weight: same params, same bits, pdl=True too."""
    import copy
    import pickle

    w = gatednorm.W4A16Weight(*gatednorm.W4A16Weight.from_float(rng.standard_normal((24, 128)), 64).to_plain(),
                              perm=rng.permutation(128)).prepack_host("cuda_mma", DT[dtype])
    a = rng.standard_normal((5, 128)).astype(DT[dtype])
    want = gatednorm.w4a16_matmul(a, w, pdl=True)
    c = copy.deepcopy(w) if how == "deepcopy" else pickle.loads(pickle.dumps(w))
    assert repr(c) == repr(w) and c.layout == "tiled" and c.dtype == w.dtype
    assert W4.weight_meta(c) == W4.weight_meta(w) and c._params is not w._params
    for pdl in (False, True):
        np.testing.assert_array_equal(gatednorm.w4a16_matmul(a, c, pdl=pdl), want)
