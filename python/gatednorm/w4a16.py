"""W4A16: int4 weights with 16-bit activations (docs/ops.md section 4, docs/w4a16.md).

``W4A16Weight`` holds a weight in the *plain* layout (codes ``q`` uint8 ``[N, K/2]``, two per
byte along K, low nibble first; ``scales [N, K/G]``; ``zeros`` uint8 ``[N, K/G]`` or None for
symmetric weights) and, once moved to a GPU with ``.to(device)``, the kernels' *tiled*
layout made there by ``gatednorm_w4a16_prepack``.  The importers are pure numpy: they turn
each checkpoint format into the plain layout by that format's own dequantization formula.

``w4a16_matmul(a, w)`` computes ``a @ dequant(W) (+ bias)``::

    w16[k, n] = RNE_dt((q[n, k] - z[n, k // G]) * RNE_dt(s[n, k // G]))   dt = a's dtype
    out[m, n] = RNE_out(sum_k a[m, k] * w16[k, n] (+ bias[n]))           fp32 sum, any order
"""

from __future__ import annotations

import operator
import sys
import warnings

import numpy as np

from . import _call, _dtypes, _ffi, _runtime
from ._array import DeviceArray
from ._ffi import argument_error, ffi

__all__ = ["W4A16Weight", "w4a16_matmul", "TARGETS"]

PLAIN, TILED = 0, 1
#: gatednorm_w4a16_target values by name
TARGETS = {"native": 0, "cuda_mma": 1, "amd_mfma": 2, "amd_wmma": 3}
_W4DT_NAMES = {"bfloat16": 1, "float16": 2}  # keyed by name: ml_dtypes loads on use
_AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AWQ slot i holds column 8c + _AWQ_ORDER[i]
_GEMM = _call.Entry("gatednorm_w4a16_gemm", "gatednorm_w4a16_params",
                    ("a", "qweight", "scales", "zeros", "bias", "out", "workspace"), outputs=("out", "workspace"))
_PREPACK = _call.Entry("gatednorm_w4a16_prepack", "gatednorm_w4a16_params",
                       ("qweight", "scales", "zeros", "packed"), outputs=("packed",))


# ---------------------------------------------------------------------------- int32 nibbles
def _native(x):
    """x in this machine's byte order (a big-endian int32 array viewed as uint32 reads its
    nibbles from the wrong bytes)."""
    return x.astype(x.dtype.newbyteorder("="), copy=False) if x.dtype.byteorder not in "=|" else x


def _checkpoint_groups(k, ngroups, group_size, name):
    """G of a checkpoint whose scales hold ``ngroups`` groups over K, with the quantization
    config's ``group_size`` when given (-1 or K: per channel; above K, one group: per channel,
    as a quantizer writes ceil(K / G) = 1 group there).  Quantizers write ceil(K / G)
    groups, a partial last one when G does not divide K, which this layout cannot hold: such a
    weight is refused, never read with G = K / ngroups (K = 960 at G = 128 has 8 groups, which
    read as G = 120 misplaced 224 of every 1600 weights).  Without group_size, a G that is not
    a power of two (nor K) is refused, since no quantizer writes one unasked; a G that does
    not divide K can still look like a power of two (K = 128 at G = 96: 2 groups, read as
    64), which only the config's group_size reveals (from_gptq's docstring says so)."""
    if group_size is not None:
        g = _call.integer("group_size", group_size)
        g = k if g == -1 else g
        if g < 1:
            raise argument_error("group_size: expected a positive group size or -1 (per channel), got %r" % (group_size,))
        if g > k and ngroups == 1:  # ceil(K / G) = 1 group: the config's G over a narrow layer is per channel (review)
            g = k
        if k % g:
            raise argument_error("group_size: K = %d is not a multiple of %d: the checkpoint's last group is partial "
                                 "(ceil(K/G) groups), which this library's layout cannot hold" % (k, g))
        if ngroups != k // g:
            raise argument_error("%s: %d groups, but K = %d at group_size %d has %d" % (name, ngroups, k, g, k // g))
        return g
    if k % ngroups:  # the config's G names it above; unnamed, say what the shapes show
        raise argument_error("%s: %d groups over K = %d, which they do not divide: a quantizer writes ceil(K/G) "
                             "groups, so the last group is partial (K not a multiple of the group size), which this "
                             "library's layout cannot hold" % (name, ngroups, k))
    g = k // ngroups
    if g != k and g & (g - 1):
        raise argument_error("%s: %d groups over K = %d would be groups of %d, which no quantizer writes unasked (a K "
                             "that is not a multiple of the group size leaves a partial last group); pass group_size= "
                             "from the checkpoint's quantization config" % (name, ngroups, k, g))
    return g


def _unpack_int32(x, axis, name):
    """Eight 4-bit slots of each int32 (slot i = bits 4i+3..4i) of 2-D ``x`` laid out along
    ``axis`` (slot-major inside each int32): [..., c, ...] -> [..., 8c + i, ...]."""
    x = _native(np.asarray(x))
    if x.dtype.kind not in "iu" or x.dtype.itemsize != 4:
        raise argument_error("%s: expected an int32 packed tensor, got dtype %s" % (name, x.dtype))
    if x.ndim != 2:
        raise argument_error("%s: expected a 2-D packed tensor, got %d dims" % (name, x.ndim))
    u = x.view(np.uint32)
    parts = [((u >> np.uint32(4 * i)) & np.uint32(0xF)).astype(np.uint8) for i in range(8)]
    st = np.stack(parts, axis=axis + 1 if axis >= 0 else axis)  # [..., c, 8, ...]
    shape = list(u.shape)
    shape[axis] *= 8
    return st.reshape(shape)


def _act_order(codes, g_idx, groups, name):
    """Codes ``[N, K]`` with K reordered so that each group's features are contiguous, and the
    order (None where ``g_idx`` is None or ``k // G``): act-order checkpoints (GPTQ desc_act,
    compressed-tensors actorder=group) map feature k to group ``g_idx[k]``."""
    if g_idx is None:
        return codes, None
    k = codes.shape[1]
    g = k // groups
    gi = _np(g_idx, name)
    if gi.dtype.kind not in "iu":
        raise argument_error("%s: expected integer group indices, got dtype %s" % (name, gi.dtype))
    if gi.shape != (k,):  # exactly [K]: a [1, K] tensor is refused, never flattened (docs/ops.md)
        raise argument_error("%s: expected [K] = [%d], got %s" % (name, k, gi.shape))
    gi = gi.astype(np.int64)
    if np.any((gi < 0) | (gi >= groups)):
        raise argument_error("%s: group indices must lie in 0..%d" % (name, groups - 1))
    if np.array_equal(gi, np.arange(k) // g):
        return codes, None
    order = np.argsort(gi, kind="stable")
    if not np.array_equal(gi[order], np.arange(k) // g):
        raise argument_error("%s: act-order groups must each hold G = %d input features; they do not" % (name, g))
    return codes[:, order], order


def _pack_plain(codes, name):
    """int codes [N, K] (0..15) -> plain uint8 [N, K/2], low nibble first; ``name``: the
    argument K came from, for the error."""
    codes = np.asarray(codes, np.uint8)
    if codes.shape[1] % 2:
        raise argument_error("%s: K = %d is odd; the plain layout packs two codes per byte" % (name, codes.shape[1]))
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def _np(x, name):
    """numpy view of a host array (numpy, torch CPU, anything np.asarray takes).  None and
    masked arrays are refused by name (a mask would be ignored, as the GEMM refuses one)."""
    if isinstance(x, np.ndarray):
        if isinstance(x, np.ma.MaskedArray):
            _call.refuse_masked(name)
        return x
    if x is None:
        raise argument_error("%s: required (an array); got None" % name)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch
        try:
            t = x.detach().cpu()
            if str(t.dtype) == "torch.bfloat16":
                return t.view(__import__("torch").int16).numpy().view(_dtypes.bfloat16)
            return t.resolve_conj().resolve_neg().numpy()
        except (RuntimeError, TypeError, NotImplementedError) as e:  # meta, sparse, nested, fp8 tensors
            raise argument_error("%s: not convertible to numpy (%s: %s)" % (name, type(e).__name__, e)) from None
    try:
        return np.asarray(x)
    except Exception as e:
        raise argument_error("%s: not convertible to numpy (%s)" % (name, e)) from None


def _scales(s, name):
    """Scales as given (bf16 / fp16 / fp32; float64 becomes fp32), every one finite: a NaN or
    infinite scale is a damaged checkpoint, refused here rather than found as NaN outputs."""
    s = _np(s, name)
    if s.dtype not in (_dtypes.bfloat16, _dtypes.float16, _dtypes.float32):
        if s.dtype.kind != "f":
            raise argument_error("%s: expected floating-point scales (bfloat16, float16, float32; float64 is converted), "
                                 "got dtype %s" % (name, s.dtype))
        s = _f32_scales(s)
    finite = np.isfinite(s.astype(np.float32))
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise argument_error("%s: scale at %s is %s: every scale must be finite (float32's range)"
                             % (name, tuple(int(i) for i in bad), s[tuple(bad)]))
    return s


def _transposed(n_codes, n_if_transposed, s, name):
    """A packed weight read as N = n_codes columns whose [K/G, N] scales have the N it would
    hold transposed (``n_if_transposed``): named as the one at fault.  Any other mismatch of N
    is the scales' (their own shape check names them)."""
    if s.ndim == 2 and s.shape[1] != n_codes and s.shape[1] == n_if_transposed:
        raise argument_error("%s: holds N = %d columns but scales (%s, [K/G, N]) have %d, the N it would hold "
                             "transposed; is it transposed?" % (name, n_codes, s.shape, s.shape[1]))


def _f32_scales(s):
    """Scales as float32; one past its range becomes inf, which from_float then refuses by name."""
    with np.errstate(over="ignore"):
        return s.astype(np.float32)


def _unit_if_zero(s):
    """An all-zero group's scale (or one that underflows float32) as 1: its codes are then the
    zero point and it dequantizes to 0, with no division by zero on the way."""
    return np.where(s > 0, s, np.float32(1.0))


def _own(a, dtype=None):
    """A read-only C-contiguous copy of ``a`` (as ``dtype`` if given)."""
    a = np.array(a, dtype=dtype, order="C", copy=True)
    a.flags.writeable = False
    return a


def _act_dtype(dtype) -> np.dtype:
    """The activations' dtype a weight is packed or dequantized for: bf16 or fp16."""
    dt = _dtypes.dtype_arg(dtype, "dtype")
    if not dt.isnative or dt.name not in _W4DT_NAMES:
        raise argument_error("dtype: expected bfloat16 or float16 activations, got %s" % dt)
    return dt


def _codes(z, name):
    """Zero-point codes 0..15 of an integer array as uint8 (floats are refused, not truncated)."""
    if z.dtype.kind not in "iu":
        raise argument_error("%s: expected integer codes 0..15, got dtype %s" % (name, z.dtype))
    if z.size and (int(z.min()) < 0 or int(z.max()) > 15):
        raise argument_error("%s: codes must lie in 0..15" % name)
    return z.astype(np.uint8)


def _group_size(group_size, k):
    """G from a group_size argument (None: per channel, G = K), checked to divide K (0 is
    refused: it read as per-channel, a meaning no other group_size gives it).  Above K it is
    one group, per channel, as the importers read a config's group_size and as GPTQ's
    quantizer groups a layer narrower than its group size (a model's group_size=128 on a
    K = 64 layer)."""
    g = k if group_size is None else _call.integer("group_size", group_size)
    g = k if g == -1 or g > k else g  # -1: per channel, as GPTQ / AWQ configs write it
    if g < 1 or k % g:
        raise argument_error("group_size: %r does not divide K = %d" % (group_size, k))
    return g


def scales_overflow(q, scales, zeros, dt):
    """The error naming the first group whose weights overflow the activations' dtype ``dt``
    when dequantized, or None.  The scale is held in ``dt`` and ``(q - z) * s`` rounded once
    into it (docs/ops.md section 4), so a group overflows where its scale does (a bf16 or
    fp32 scale past fp16's 65504 with fp16 activations) or where its largest ``|q - z|``
    (up to 15) times the scale does (a review: 1e4 passed the scale's own check); either way
    its weights dequantize to inf and the outputs to NaN.  q: plain ``[N, K/2]``; zeros:
    ``[N, K/G]`` codes or None (z = 8).  Only groups whose scale times 15 overflows are
    unpacked."""
    from .reference import int4_unpack

    s32 = np.asarray(scales, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is what is looked for
        s16 = s32.astype(dt).astype(np.float32)
        rows, cols = np.nonzero(~np.isfinite((s16 * 15).astype(dt)))
    if rows.size == 0:
        return None
    groups = s32.shape[1]
    q = np.asarray(q, np.uint8)
    z = np.full(rows.size, 8, np.int64) if zeros is None else np.asarray(zeros)[rows, cols].astype(np.int64) & 0xF
    m = np.empty(rows.size, np.int64)  # each candidate group's largest |q - z|
    batch = 256  # whole rows unpacked (an odd G splits a byte), a few at a time
    for lo in range(0, rows.size, batch):
        part = slice(lo, lo + batch)
        r, c = rows[part], cols[part]
        codes = int4_unpack(q[r]).reshape(r.size, groups, -1)[np.arange(r.size), c]  # [candidates, G]
        m[part] = np.abs(codes - z[part, None]).max(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite((m * s16[rows, cols]).astype(dt))
    if not bad.any():
        return None
    i = int(np.argmax(bad))  # rows, cols in C order: the first bad group
    at = (int(rows[i]), int(cols[i]))
    scale = np.asarray(scales)[at]
    if np.isfinite(s16[at]):
        why = "times its group's largest |code - zero point| (%d) overflows %s" % (m[i], dt.name)
    else:
        why = "overflows %s" % dt.name
    return argument_error("scales: scale at %s (%s) %s, the activations' dtype it is rounded to: its group would "
                          "dequantize to inf" % (at, scale, why))


class W4A16Weight:
    """An int4 weight ``W [N, K]`` (N output features, K input features) for w4a16_matmul.

    Build it with an importer (``from_float``, ``from_gptq``, ``from_awq``,
    ``from_compressed_tensors``) or from plain tensors (``W4A16Weight(q, scales, zeros)``).
    ``.to("cuda:0")`` (or any GPU device) returns a copy prepacked for that GPU.

    Attributes: ``n``, ``k``, ``group_size``, ``symmetric``; ``q``, ``scales``, ``zeros``
    (the plain layout, host numpy); ``perm`` (int64 ``[K]`` or None): for act-order GPTQ
    weights, K was reordered at import and ``a[:, perm]`` is what the kernel multiplies
    (w4a16_matmul applies it for numpy and torch activations); ``device`` ("cpu" or a GPU);
    ``dtype`` (the activations' dtype a tiled weight was packed for).
    """

    def __init__(self, q, scales, zeros=None, *, perm=None):
        q = _np(q, "q")
        if q.dtype != np.uint8 or q.ndim != 2:
            raise argument_error("q: expected uint8 [N, K/2], got %s %s" % (q.dtype, q.shape))
        s = _scales(scales, "scales")
        n, k = q.shape[0], 2 * q.shape[1]
        if n < 1 or k < 1:
            raise argument_error("q: expected uint8 [N, K/2] with N >= 1 and K/2 >= 1, got shape %s" % (q.shape,))
        if s.ndim != 2 or s.shape[0] != n or s.shape[1] < 1 or k % s.shape[1]:
            raise argument_error("scales: expected [N, K/G] = [%d, K/G] with K/G dividing K = %d, got %s" % (n, k, s.shape))
        if zeros is not None:
            zeros = _np(zeros, "zeros")
            if zeros.shape != s.shape:
                raise argument_error("zeros: expected shape %s (as scales), got %s" % (s.shape, zeros.shape))
            zeros = _codes(zeros, "zeros")
        if perm is not None:
            perm = _np(perm, "perm")
            if perm.dtype.kind not in "iu" or perm.shape != (k,) or not np.array_equal(np.sort(perm), np.arange(k)):
                raise argument_error("perm: expected a permutation of range(K) = range(%d) (int [K]), got %s %s"
                                     % (k, perm.dtype, perm.shape))
        # The weight's own arrays: copies (the caller's arrays may change after the checks
        # above), read-only (to_plain hands them out; copies of this weight share them).
        self.q = _own(q)
        self.scales = _own(s)
        self.zeros = None if zeros is None else _own(zeros)
        self.n, self.k = n, k
        self.group_size = k // s.shape[1]
        self.symmetric = zeros is None
        self.perm = None if perm is None else _own(perm, np.int64)
        self.device = "cpu"
        self.dtype = None
        self._packed = None   # tiled buffer (DeviceArray or numpy) once prepacked
        self._params = None   # gatednorm_w4a16_params of the tiled buffer
        self._params_pdl = None  # the same with pdl = 1 (made on the first pdl=True call)
        self._perm_dev = {}   # device copies of perm (torch), by device

    def __getstate__(self):
        """copy and pickle: a tiled weight's params (a cffi struct, which neither deep-copies
        nor pickles: a review found both raising cffi's TypeError) as its bytes; the pdl
        variant and the device copies of perm are made again on use.  The packed buffer
        copies as itself (a DeviceArray pickles as its elements and device)."""
        state = dict(self.__dict__)
        if state.get("_params") is not None:
            state["_params"] = bytes(ffi.buffer(state["_params"]))
        state["_params_pdl"], state["_perm_dev"] = None, {}
        return state

    def __setstate__(self, state):
        """copy.deepcopy and pickle: the copied arrays read-only again, as __init__ leaves them
        (a review: a copy handed out its own arrays writable through to_plain, and scales
        written past fp16's range after its fit was judged, _scales_fit, gave NaN outputs),
        and the params struct rebuilt from __getstate__'s bytes."""
        state = dict(state)
        raw = state.get("_params")
        if isinstance(raw, bytes):
            prm = ffi.new("gatednorm_w4a16_params *")
            if len(raw) != ffi.sizeof(prm[0]):  # a pickle of a library whose params have another layout
                raise argument_error("state: the pickled weight's params are %d bytes, this library's %d; prepack "
                                     "the weight again" % (len(raw), ffi.sizeof(prm[0])))
            ffi.memmove(prm, raw, len(raw))
            state["_params"] = prm
        for name in ("q", "scales", "zeros", "perm"):
            if state.get(name) is not None:
                state[name].flags.writeable = False
        self.__dict__.update(state)

    def __repr__(self):
        return "W4A16Weight(N=%d, K=%d, group_size=%d, %s, %s%s%s)" % (
            self.n, self.k, self.group_size, "symmetric" if self.symmetric else "asymmetric", self.device,
            ", act-order" if self.perm is not None else "", ", tiled for %s" % self.dtype if self._packed is not None else "")

    @property
    def layout(self) -> str:
        return "plain" if self._packed is None else "tiled"

    # ------------------------------------------------------------------------- importers
    @classmethod
    def from_float(cls, w, group_size=128, symmetric=False):
        """Round-to-nearest quantization of a float weight ``W [N, K]`` (numpy or torch CPU).

        Per group of ``group_size`` consecutive k (``group_size=None``, -1, K or above K:
        per-channel, as GPTQ groups a layer narrower than its group size):
        symmetric: ``s = absmax / 7``, ``q = clamp(round(w / s) + 8, 0, 15)``; asymmetric,
        over the group's range widened to hold 0 (``lo = min(min, 0)``, ``hi = max(max, 0)``,
        as GPTQ's quantizer does, so that the zero point is a code and a group of one sign
        loses no range to clamping): ``s = (hi - lo) / 15``, ``z = round(-lo / s)``,
        ``q = clamp(round(w / s) + z, 0, 15)``.  Scales are kept in float32 (the GEMM rounds
        them to the activations' dtype).  W must be finite."""
        w = _np(w, "W")
        if w.dtype.kind not in "fiu" and w.dtype != _dtypes.bfloat16:
            raise argument_error("W: expected a real [N, K] weight, got dtype %s" % w.dtype)
        w = w.astype(np.float64)
        if w.ndim != 2:
            raise argument_error("W: expected [N, K], got %d dims" % w.ndim)
        symmetric = _call.flag("symmetric", symmetric) == 1
        n, k = w.shape
        if n == 0 or k == 0:
            raise argument_error("W: expected [N, K] with N, K >= 1, got %s" % (w.shape,))
        g = _group_size(group_size, k)
        if not np.isfinite(w).all():
            raise argument_error("W: holds NaN or Inf; a scale cannot represent them")
        wg = w.reshape(n, k // g, g)
        if symmetric:
            s = np.abs(wg).max(axis=2) / 7.0
            s = _unit_if_zero(_f32_scales(s))
            q = np.clip(np.rint(wg / s.astype(np.float64)[..., None]) + 8, 0, 15)
            z = None
        else:
            lo, hi = np.minimum(wg.min(axis=2), 0.0), np.maximum(wg.max(axis=2), 0.0)
            s = (hi - lo) / 15.0
            s = _unit_if_zero(_f32_scales(s))
            z = np.clip(np.rint(-lo / s.astype(np.float64)), 0, 15)
            q = np.clip(np.rint(wg / s.astype(np.float64)[..., None]) + z[..., None], 0, 15)
            z = z.astype(np.uint8)
        if not np.isfinite(s).all():
            raise argument_error("W: a group's scale overflows float32 (|W| up to %g): such weights have no W4A16 form"
                                 % np.abs(w).max())
        return cls(_pack_plain(q.reshape(n, k).astype(np.uint8), "W"), s, z)

    @classmethod
    def from_gptq(cls, qweight, qzeros, scales, g_idx=None, version=1, symmetric=None, group_size=None):
        """A GPTQ checkpoint's tensors (AutoGPTQ / GPTQModel / optimum; docs/ops.md section 4).

        qweight int32 ``[K/8, N]`` (slot i of row r holds k = 8r + i); qzeros int32
        ``[K/G, ceil(N/8)]`` (slot i of column c holds n = 8c + i); scales ``[K/G, N]``; g_idx
        int32 ``[K]`` or None.  Dequantization: ``(q - z) * s`` with

        * ``version=1`` (the default of AutoGPTQ and GPTQModel, and what most GPTQ checkpoints
          hold): qzeros store ``z - 1``.  GPTQModel writes them by subtracting 0x11111111 from
          each int32, so a zero point of 0 borrows from the slot above (that slot holds 15, the
          next one is one lower); they are read back the same way (each int32 plus 0x11111111,
          modulo 2^32), which inverts that writer exactly and equals ``stored + 1`` in every
          slot wherever no slot of the int32 holds 15.  Readers that add 1 slot by slot (vLLM's
          GPTQ kernels, AutoGPTQ) differ on such int32s, so a stored 15 warns.
        * ``version=2`` (``checkpoint_format: gptq_v2``: GPTQModel with ``format="gptq_v2"``,
          asymmetric optimum exports): qzeros store ``z``.

        The tensors cannot say their version, and the library does not guess it: ``version``
        is 1 unless given (vLLM's rule: 2 exactly where the checkpoint's quantization config,
        ``quantize_config.json`` or ``quantization_config`` in ``config.json``, says
        ``checkpoint_format: gptq_v2``), so pass ``version=2`` for those.  The label can be
        wrong: GPTQModel v5+ writes v2 zero points under ``checkpoint_format: gptq``
        (Qwen/Qwen3.5-27B-GPTQ-Int4 holds 0x88888888).  A checkpoint read under the other
        version has every zero point off by one; where that shows it raises, naming
        ``version``: ``version=1`` decoding every zero point to 9 (v2's symmetric 0x88888888),
        ``version=2`` decoding every one to 7 (v1's symmetric 0x77777777); an asymmetric v2
        checkpoint read as v1 with a stored 15 warns.  Otherwise an asymmetric v2 checkpoint
        read as v1 shows nothing: check its zero points against the config.  For a
        symmetric checkpoint pass ``symmetric=quantize_config["sym"]``: ``True`` requires every
        zero point to be 8 (so a symmetric checkpoint under the wrong version raises) and drops
        them; None keeps them.

        Act-order (``g_idx`` not ``k // G``): K is reordered at import so that each group is
        contiguous; ``perm`` records the order (the kernel multiplies ``a[:, perm]``).  A
        g_idx whose groups do not all have G members is rejected.

        ``group_size`` (the config's; -1: per channel) checks the scales' group count against
        it.  Pass it: a K that is not a multiple of the group size leaves a partial last group
        (quantizers write ceil(K / G) groups), which this layout cannot hold, and only the
        config tells such a checkpoint apart from one of G = K / groups (K = 128 at G = 96
        writes 2 groups, as G = 64 does).  With it such checkpoints are refused; without it G
        is K over the group count, refused where that is not a power of two."""
        if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)) or version not in (1, 2):
            raise argument_error("version: expected 1 (qzeros store z - 1) or 2 (checkpoint_format gptq_v2: z), got %r" % (version,))
        if symmetric is not None:
            symmetric = _call.flag("symmetric", symmetric) == 1
        qw = _np(qweight, "qweight")
        codes = _unpack_int32(qw, 0, "qweight").T  # [N, K]
        s = _scales(scales, "scales")
        n, k = codes.shape
        if n < 1 or k < 1:  # named here: the constructor would name its own q
            raise argument_error("qweight: expected int32 [K/8, N] with K/8, N >= 1, got shape %s" % (qw.shape,))
        if s.ndim == 2 and s.shape[1] == 8 * n and s.shape[0] != n:  # packed along N: AWQ's layout (or transposed)
            raise argument_error("qweight: holds N = %d columns read as GPTQ's [K/8, N], but scales (%s, [K/G, N]) "
                                 "have 8 times as many: it is packed along N, as AWQ's [K, N/8] qweight is (AWQ "
                                 "checkpoints name their tensors as GPTQ's do: from_awq), or is it transposed?"
                                 % (n, s.shape))
        _transposed(n, qw.shape[0] if qw.ndim == 2 else -1, s, "qweight")  # [N, K/8] given for [K/8, N]
        by_word = codes.reshape(n, k // 8, 8)
        if not by_word[:, :, 1:].any() and by_word[:, :, 0].any():
            # K is read from qweight's rows, so an unpacked [K, N] tensor has a valid shape (as
            # K * 8, with scales giving G * 8): only its values show it.  group_size= refuses it.
            warnings.warn("from_gptq: every int32 of qweight holds a code in slot 0 only (values 0..15), as an "
                          "unpacked [K, N] tensor would; it reads as K = %d. Pass the packed [K/8, N] qweight "
                          "(group_size= refuses the mismatch)" % k, stacklevel=2)
        if s.ndim != 2 or s.shape[1] != n or s.shape[0] < 1:  # groups not dividing K: _checkpoint_groups says why
            raise argument_error("scales: expected [K/G, N] = [K/G, %d] (K = %d), got %s" % (n, k, s.shape))
        ng = s.shape[0]
        _checkpoint_groups(k, ng, group_size, "scales")
        qz = _native(_np(qzeros, "qzeros"))
        zs = _unpack_int32(qz, 1, "qzeros")  # [K/G, N (padded to 8)]; checks dtype and rank
        if zs.shape[0] != ng or zs.shape[1] != 8 * ((n + 7) // 8):
            raise argument_error("qzeros: expected [K/G, ceil(N/8)] = [%d, %d], got %s" % (ng, (n + 7) // 8, np.shape(qzeros)))
        if version == 1:
            # z - 1 was written word-wise (a zero point of 0 borrows from the slot above):
            # add 0x11111111 to each int32 the same way (uint32 arithmetic wraps modulo 2^32).
            borrowed = int(np.count_nonzero(zs[:, :n] == 15))
            zs = _unpack_int32(np.asarray(qz).view(np.uint32) + np.uint32(0x11111111), 1, "qzeros")
            if borrowed:
                warnings.warn("from_gptq(version=1): %d zero-point slots of qzeros hold 15, a zero point of 0 "
                              "stored as z - 1 with a borrow from the slot above (GPTQModel's v1 writer); decoded "
                              "word-wise, which inverts that writer, while readers adding 1 slot by slot (vLLM's "
                              "GPTQ kernels, AutoGPTQ) read those int32s differently. A writer that ORs z - 1 into "
                              "the word (AutoGPTQ's pack) instead set every slot above to 15, which no reader can "
                              "undo: such a checkpoint is wrong in those slots whatever reads it. If the "
                              "checkpoint's checkpoint_format is gptq_v2, pass version=2" % borrowed, stacklevel=2)
        z = zs[:, :n].astype(np.int64)
        # Every zero point one off the symmetric 8 is the other version's symmetric layout (no
        # quantizer writes one zero point 9 or 7 for every group and column): refused, as the
        # weight would be wrong by one scale everywhere.  GPTQModel v5+ writes v2's zero points
        # under checkpoint_format "gptq" (Qwen/Qwen3.5-27B-GPTQ-Int4), so the label misleads.
        if version == 1 and np.all(z == 9):
            raise argument_error("version: 1, but every zero point then decodes to 9: qzeros hold 0x88888888, the "
                                 "symmetric GPTQ v2 layout (zero points stored as they are), which GPTQModel v5+ "
                                 "also writes under checkpoint_format 'gptq'; pass version=2")
        if version == 2 and np.all(z == 7):
            raise argument_error("version: 2, but every zero point then decodes to 7: qzeros hold 0x77777777, the "
                                 "symmetric GPTQ v1 layout (z - 1 stored); pass version=1")
        codes, perm = _act_order(codes, g_idx, ng, "g_idx")
        s_nk = np.ascontiguousarray(s.T)
        z_nk = np.ascontiguousarray(z.T).astype(np.uint8)
        if symmetric:
            if not np.all(z_nk == 8):
                raise argument_error("symmetric: True, but the zero points are not all 8")
            z_nk = None
        return cls(_pack_plain(codes, "qweight"), s_nk, z_nk, perm=perm)

    @classmethod
    def from_awq(cls, qweight, qzeros, scales, group_size=None):
        """An AutoAWQ (GEMM) checkpoint's tensors: qweight int32 ``[K, N/8]`` and qzeros int32
        ``[K/G, N/8]`` packed along N with slot i of column c holding n = 8c + [0, 2, 4, 6, 1,
        3, 5, 7][i]; scales ``[K/G, N]``.  Dequantization ``(q - z) * s``, zeros stored raw.
        ``group_size``: as from_gptq's."""
        inv = np.argsort(np.array(_AWQ_ORDER))  # position of column offset j among the slots

        def unpack(x, name):
            u = _unpack_int32(_np(x, name), 1, name)  # [rows, 8c + i]
            r, c8 = u.shape
            return u.reshape(r, c8 // 8, 8)[:, :, inv].reshape(r, c8)

        qw = _np(qweight, "qweight")
        codes = unpack(qw, "qweight")  # [K, N]
        k, n = codes.shape
        if n < 1 or k < 1:  # named here: the constructor would name its own q
            raise argument_error("qweight: expected int32 [K, N/8] with K, N/8 >= 1, got shape %s" % (np.shape(qweight),))
        s = _scales(scales, "scales")
        if s.ndim == 2 and s.shape[1] * 8 == n:  # an unpacked [K, N] qweight reads as N * 8 columns ...
            raw = qw.astype(np.int64)  # any byte order
            if raw.any() and not (raw & ~np.int64(0xF)).any():  # ... and holds codes 0..15
                raise argument_error("qweight: shape %s, every int32 a code 0..15, with scales of N = %d columns: an "
                                     "unpacked [K, N] tensor; expected int32 [K, N/8], eight codes an int32 along N"
                                     % (np.shape(qweight), s.shape[1]))
            if s.shape[0] != n:  # ... as does GPTQ's [K/8, N], packed along K (scales [N, K/G]: theirs, below)
                raise argument_error("qweight: holds N = %d columns read as AWQ's [K, N/8], but scales (%s, [K/G, N]) "
                                     "have an eighth as many: it is packed along K, as GPTQ's [K/8, N] qweight is "
                                     "(GPTQ checkpoints name their tensors as AWQ's do: from_gptq), or is it transposed?"
                                     % (n, s.shape))
        _transposed(n, 8 * np.shape(qweight)[0], s, "qweight")  # [N/8, K] given for [K, N/8]
        if s.ndim != 2 or s.shape[1] != n or s.shape[0] < 1:  # groups not dividing K: _checkpoint_groups says why
            raise argument_error("scales: expected [K/G, N] = [K/G, %d], got %s" % (n, s.shape))
        _checkpoint_groups(k, s.shape[0], group_size, "scales")
        z = unpack(qzeros, "qzeros")
        if z.shape != s.shape:
            raise argument_error("qzeros: expected [K/G, N/8] = [%d, %d], got %s" % (s.shape[0], n // 8, np.shape(qzeros)))
        return cls(_pack_plain(codes.T, "qweight"), np.ascontiguousarray(s.T), np.ascontiguousarray(z.T))

    @classmethod
    def from_compressed_tensors(cls, weight_packed, weight_scale, weight_zero_point=None, weight_shape=None,
                                weight_g_idx=None, group_size=None, symmetric=None):
        """compressed-tensors ``pack-quantized`` int4 (e.g. RedHatAI ``*-quantized.w4a16``):
        weight_packed int32 ``[N, ceil(K/8)]`` packed along K, sequential slots, each holding
        the signed code + 8; weight_scale ``[N, K/G]``; weight_zero_point int32
        ``[ceil(N/8), K/G]`` packed along N, also + 8 (None: symmetric); weight_shape
        ``[N, K]``; weight_g_idx int32 ``[K]`` (``actorder: group`` checkpoints: feature k
        belongs to group ``weight_g_idx[k]``; reordered at import as GPTQ act-order, see
        from_gptq) or None.  Dequantization ``(stored - zp_stored) * s`` (symmetric:
        ``(stored - 8) * s``).  ``group_size`` (the config's ``group_size``; -1 or None with
        ``strategy: channel``): as from_gptq's.  ``symmetric`` (the config's ``symmetric``):
        False requires ``weight_zero_point`` (a checkpoint missing it would otherwise read as
        symmetric, wrong in every group), True refuses one; None takes what is given.  The
        zero point's orientation cannot be checked where K/G == ceil(N/8): a ``[K/G, N/8]``
        tensor then has the expected shape; pass the checkpoint's tensor as stored."""
        if weight_shape is None:
            raise argument_error("weight_shape: required ([N, K])")
        shp = np.asarray(_np(weight_shape, "weight_shape"))
        if shp.shape != (2,) or shp.dtype.kind not in "iu" or shp.min() < 1:
            raise argument_error("weight_shape: expected [N, K] (two positive integers), got %r" % (weight_shape,))
        n, k = (int(v) for v in shp)
        codes = _unpack_int32(_np(weight_packed, "weight_packed"), 1, "weight_packed")
        if codes.shape != (n, 8 * ((k + 7) // 8)):
            raise argument_error("weight_packed: expected [N, ceil(K/8)] = [%d, %d] (from weight_shape [N, K] = [%d, %d]), got %s"
                                 % (n, (k + 7) // 8, n, k, np.shape(weight_packed)))
        codes = codes[:, :k]
        s = _scales(weight_scale, "weight_scale")
        if s.ndim == 1 and s.shape[0] == n:  # one scale a row: per channel
            s = s.reshape(n, 1)
        if s.ndim != 2 or s.shape[0] != n or s.shape[1] < 1:  # groups not dividing K: _checkpoint_groups says why
            raise argument_error("weight_scale: expected [N, K/G] = [%d, K/G] (K = %d), got %s" % (n, k, s.shape))
        _checkpoint_groups(k, s.shape[1], group_size, "weight_scale")
        if symmetric is not None:
            symmetric = _call.flag("symmetric", symmetric) == 1
            if symmetric and weight_zero_point is not None:
                raise argument_error("weight_zero_point: given, but symmetric=True (a symmetric checkpoint has none)")
            if not symmetric and weight_zero_point is None:
                raise argument_error("weight_zero_point: required with symmetric=False (the config's asymmetric "
                                     "checkpoint stores one a group); got None")
        z = None
        if weight_zero_point is not None:
            zp = _unpack_int32(_np(weight_zero_point, "weight_zero_point"), 0, "weight_zero_point")  # [N (padded), K/G]
            if zp.shape != (8 * ((n + 7) // 8), s.shape[1]):
                raise argument_error("weight_zero_point: expected [ceil(N/8), K/G] = [%d, %d], got %s"
                                 % ((n + 7) // 8, s.shape[1], np.shape(weight_zero_point)))
            z = np.ascontiguousarray(zp[:n])
        codes, perm = _act_order(codes, weight_g_idx, s.shape[1], "weight_g_idx")
        return cls(_pack_plain(codes, "weight_shape"), s, z, perm=perm)

    # ---------------------------------------------------------------------------- views
    def to_plain(self):
        """(q uint8 [N, K/2], scales [N, K/G], zeros uint8 [N, K/G] or None), host numpy,
        in the weight's (possibly act-order-reordered) K order: the weight's own arrays,
        read-only (copy them to change them)."""
        return self.q, self.scales, self.zeros

    def dequantize(self, dtype="bfloat16") -> np.ndarray:
        """The dequantized weight ``[K, N]`` (float32 holding ``dtype`` values, the GEMM's
        rounding rule), in the checkpoint's original K order (act-order undone), so that
        ``a @ w.dequantize()`` is the GEMM's exact-math result."""
        from .reference import w4a16_dequantize

        dt = _act_dtype(dtype)
        self._check_scales_fit(dt)
        w = w4a16_dequantize(self.q, self.scales, self.zeros, dt).astype(np.float32)
        if self.perm is not None:
            out = np.empty_like(w)
            out[self.perm] = w
            w = out
        return w

    def _check_scales_fit(self, dt):
        """Refuse, naming scales, a weight whose scales overflow the activations' dtype when
        rounded into it (scales_overflow).  Once per weight and dtype."""
        fits = self.__dict__.setdefault("_scales_fit", {})
        if dt.name not in fits:
            err = scales_overflow(self.q, self.scales, self.zeros, dt)
            if err is not None:
                raise err
            fits[dt.name] = True

    def _describe(self, params):
        params.n, params.k, params.group_size = self.n, self.k, self.group_size
        params.symmetric = 1 if self.symmetric else 0

    def to(self, device, dtype="bfloat16", stream=None):
        """This weight on ``device``: "cpu" (the plain layout; the CPU backend's), or a GPU
        ("cuda:0", "rocm:1", "gpu:0", an int, a torch device), where it is prepacked into the
        tiled layout for that GPU and activations of ``dtype`` (bf16 / fp16)."""
        dev = _parse_device(device)
        dt = _act_dtype(dtype)  # checked on the CPU too, where the plain layout serves both
        self._check_scales_fit(dt)  # as dequantize(dtype) and the GEMM would on the CPU
        if dev is None:
            return self._copy()
        lib = _ffi._lib or _ffi.load()
        q = DeviceArray.from_numpy(self.q, device=dev)
        s = DeviceArray.from_numpy(self.scales, device=dev)
        z = None if self.zeros is None else DeviceArray.from_numpy(self.zeros, device=dev)
        prm = _new_params(lib)
        self._describe(prm)
        prm.dtype = _W4DT_NAMES[dt.name]
        size = ffi.new("size_t *")
        _ffi.check(lib.gatednorm_w4a16_prepacked_size(prm, size), "gatednorm_w4a16_prepacked_size")
        packed = DeviceArray.empty((int(size[0]),), np.uint8, device=dev)
        _PREPACK(stream, q, s, z, packed, params=prm)  # completes prm: layout, version, target
        _runtime.synchronize(stream)  # the plain device copies are freed on return
        # ... and the prepacked buffer is complete: it is no pending write any more, so a
        # GEMM on another stream (a CUDA graph's capture stream too, where a host wait is
        # illegal) reads it without waiting (run 29 found the capture refused).
        packed._sync.stream = None
        w = self._copy()
        w._packed, w._params, w.dtype = packed, prm, dt
        w.device = packed.device
        return w

    def prepack_host(self, target="cuda_mma", dtype="bfloat16"):
        """The tiled layout made on the host for ``target`` (a TARGETS name): a host weight
        the CPU backend reads back (what the tests use to check the layout without a GPU)."""
        dt = _act_dtype(dtype)
        self._check_scales_fit(dt)
        lib = _ffi._lib or _ffi.load()
        prm = _new_params(lib)
        prm.dtype = _W4DT_NAMES[dt.name]
        t = _call.choice("target", target, TARGETS) if isinstance(target, str) else _call.integer("target", target)
        if not -(1 << 31) <= t < 1 << 31:  # the field is an int32 enum; C names any other unknown value
            raise argument_error("target: %d is not a target (%s)" % (t, ", ".join(TARGETS)))
        prm.target = t
        self._describe(prm)
        size = ffi.new("size_t *")
        _ffi.check(lib.gatednorm_w4a16_prepacked_size(prm, size), "gatednorm_w4a16_prepacked_size")
        packed = np.zeros(int(size[0]), np.uint8)
        prm.symmetric = -1
        _PREPACK(None, self.q, self.scales, self.zeros, packed, params=prm)
        w = self._copy()
        w._packed, w._params, w.dtype = packed, prm, dt
        return w

    def _copy(self):
        w = object.__new__(W4A16Weight)
        w.__dict__.update(self.__dict__)
        w._perm_dev = {}
        w._packed, w._params, w.dtype, w.device = None, None, None, "cpu"
        w._params_pdl = None
        return w


def _new_params(lib):
    p = ffi.new("gatednorm_w4a16_params *")
    _ffi.check(lib.gatednorm_w4a16_params_init(p, ffi.sizeof(p[0])), "gatednorm_w4a16_params_init")
    return p


def _parse_device(device):
    """None for the host, else a device spec DeviceArray accepts."""
    if device is None:
        return None
    if not isinstance(device, (bool, np.bool_, str)) and hasattr(type(device), "__index__"):
        # an int: Python's or numpy's (str(np.int64(0)) is "0", which named no device; review)
        idx = operator.index(device)
        if idx < 0:
            raise argument_error("device: a GPU index is >= 0, got %d" % idx)
        return "gpu:%d" % idx
    s = str(device)
    if s in ("cpu", "host"):
        return None
    if s in ("cuda", "gpu", "rocm", "hip"):
        return "gpu:0"
    name, _, idx = s.partition(":")
    if name in ("cuda", "gpu", "rocm", "hip") and idx.isdigit():
        return "gpu:%s" % idx
    raise argument_error("device: expected 'cpu' or a GPU ('cuda:0', 'gpu:0', an int), got %r" % (device,))


def _apply_perm(a, w):
    """a[:, w.perm] for numpy and torch activations (act-order weights), after checking a is
    [M, K]: an index would drop extra columns silently, or fail with an IndexError."""
    shape = _call.shape_of(a, "a")
    if len(shape) != 2 or int(shape[1]) != w.k:
        raise argument_error("a: expected [M, K] with K = %d (the weight's), got shape %s" % (w.k, tuple(shape)))
    kind = _call.kind_of(a)
    if kind == _call.NUMPY:
        try:
            return np.ascontiguousarray(a[:, w.perm])
        except MemoryError as e:  # the permuted copy, named as the library's own outputs are
            raise _call.unallocated("a", "a", shape, a.dtype, e, what="the permuted copy a[:, w.perm]") from None
    if kind == _call.TORCH:
        key = str(a.device)
        p = w._perm_dev.get(key)
        if p is None:
            torch = sys.modules["torch"]
            # a copy: w.perm is read-only, which torch.as_tensor warns about (it cannot say so)
            p = w._perm_dev[key] = torch.tensor(w.perm, device=a.device)
        try:
            return a.index_select(1, p)
        except NotImplementedError:  # mkldnn, sparse: index_select has no kernel for its layout
            raise argument_error("a: a torch tensor of layout %s, not a strided array" % a.layout) from None
        except RuntimeError as e:  # out of memory, or named as made like a
            raise _call.torch_allocation_error(e, "a", "a", shape, a.dtype, what="the permuted copy a[:, w.perm]") from None
    raise argument_error("a: the weight is act-order (w.perm set) and w4a16_matmul permutes numpy and torch "
                         "activations only; permute a yourself (a[:, w.perm]) and multiply by the weight without its "
                         "permutation, W4A16Weight(*w.to_plain())")


# A framework op (torch_ops, jax_ops) cannot take a W4A16Weight: it takes the weight's parts
# as the C GEMM reads them and its params as a tuple of ints in this order.  The C layer
# checks layout, version and target as for any caller.
META_FIELDS = ("layout", "n", "k", "group_size", "symmetric", "dtype", "layout_version", "target")
_META_PARAMS: dict = {}


def weight_meta(w) -> tuple:
    """The params of W4A16Weight ``w`` as the ints META_FIELDS names: a plain weight's from
    its shape, a tiled one's as prepack completed them."""
    if w._packed is None:
        return (PLAIN, w.n, w.k, w.group_size, 1 if w.symmetric else 0, 0, 0, 0)
    return tuple(int(getattr(w._params, f)) for f in META_FIELDS)


def _meta_name(i):
    return "meta[%d] (%s)" % (i, META_FIELDS[i]) if i < len(META_FIELDS) else "meta[%d]" % i


def meta_ints(meta) -> tuple:
    """``meta`` as a tuple of Python ints, each checked as an integer naming meta[i] (no float,
    bool or string converted); its length and ranges are params_from_meta's to check."""
    try:
        items = tuple(meta)
    except TypeError:
        raise argument_error("meta: expected %d ints (%s), got %r" % (len(META_FIELDS), ", ".join(META_FIELDS), meta)) from None
    return tuple(v if type(v) is int else _call.integer(_meta_name(i), v) for i, v in enumerate(items))


def params_from_meta(meta, concrete=None):
    """gatednorm_w4a16_params holding ``meta`` (one struct per distinct meta, kept); each value
    checked here, naming meta[i] (an integer: no float, bool or string is converted; n, k and
    group_size >= 0, the others int32).  ``concrete``: makes each non-int value a Python int
    first (torch_ops' specializes symbolic ints)."""
    if concrete is None:
        key = meta_ints(meta)
    else:
        key = tuple(v if type(v) is int else concrete(v) for v in meta)
    prm = _META_PARAMS.get(key)
    if prm is None:
        if len(key) != len(META_FIELDS):
            raise argument_error("meta: expected %d ints (%s), got %d" % (len(META_FIELDS), ", ".join(META_FIELDS),
                                                                          len(key)))
        fields = {}
        for i, (f, v) in enumerate(zip(META_FIELDS, key)):  # Python ints already (meta_ints / concrete)
            lo, hi = (0, 2 ** 63 - 1) if f in ("n", "k", "group_size") else (-2 ** 31, 2 ** 31 - 1)
            if not lo <= v <= hi:
                raise argument_error("meta[%d] (%s): %d is outside [%d, %d]" % (i, f, v, lo, hi))
            fields[f] = v
        prm = _GEMM.params(**fields)
        if len(_META_PARAMS) >= 256:
            _META_PARAMS.clear()
        _META_PARAMS[key] = prm
    return prm


def _pdl_params(w):
    """w's tiled params with pdl = 1, made once per weight."""
    p = ffi.new("gatednorm_w4a16_params *")
    ffi.memmove(p, w._params, ffi.sizeof(p[0]))
    p.pdl = 1
    w._params_pdl = p
    return p


def w4a16_matmul(a, w, bias=None, out=None, *, out_dtype=None, workspace=None, stream=None, pdl=False):
    """``out = a @ dequant(W) (+ bias)`` for a W4A16Weight ``w`` (docs/ops.md section 4)::

        w16[k, n] = RNE_dt((q[n, k] - z[n, k // G]) * RNE_dt(s[n, k // G]))   dt = a's dtype
        out[m, n] = RNE_out(sum_k a[m, k] * w16[k, n] + bias[n])             fp32 sum

    Args:
        a: ``[M, K]`` bf16 / fp16 (numpy on the host; any GPU array with a GPU weight).
            GPU: 16-byte aligned rows.
        w: W4A16Weight: plain (host) or tiled for a's GPU and dtype (``w.to(device, dtype)``).
            Act-order weights: a's columns are permuted by ``w.perm`` here (numpy, torch).
        bias: None or ``[N]`` bf16 / fp16 / fp32.
        out: ``[M, N]`` bf16 / fp16 / fp32; None: a new array of a's kind and ``out_dtype``
            (default a's dtype).
        workspace: uint8 buffer of at least the size the library asks for (split-K partials;
            needed for small N on a GPU); None: allocated here when needed.  Pass one to
            capture the call in a CUDA/HIP graph.
        stream: as for rmsnorm_gated.
        pdl: launch with programmatic dependent launch (CUDA, compute capability 9.0 and
            newer; ignored elsewhere): the kernel may start while the previous kernel on the
            stream finishes and waits for it before touching memory. Same results.

    Returns ``out``.  Raises GatedNormError naming the bad argument; ``out`` is then untouched.

    Speed: the NVIDIA kernels are built for decode (M = 1 streams the weight at 57-89% of
    copy bandwidth on an H100).  Above M = 64 a tensor-core kernel not yet tuned for large M
    runs: at M = 1024-4096 it takes 3.1-3.7x the time of cuBLAS's dense bf16 GEMM (H100,
    docs/w4a16.md), so for prefill-sized M a dense GEMM on the dequantized weight, made
    once, is faster (``w.dequantize(dtype)`` is float32 holding exact ``dtype`` values:
    cast it losslessly).
    """
    if not isinstance(w, W4A16Weight):
        raise argument_error("w: expected a gatednorm.W4A16Weight, got %s" % type(w).__name__)
    use_pdl = _call.flag("pdl", pdl)
    if out_dtype is not None:
        out_dtype = _call.dtype_arg(out_dtype, "out_dtype")
        if out_dtype.name not in ("bfloat16", "float16", "float32") or not out_dtype.isnative:  # refused before anything is allocated
            raise argument_error("out_dtype: %s; the output must be bf16, fp16 or fp32 (native byte order)" % out_dtype)
        if out is not None:
            given = _call.dtype_of(out, "out")
            if given != out_dtype:
                raise argument_error("out_dtype: %s does not match out's dtype %s" % (out_dtype, given))
    ad = _call.described(a, "a")  # a itself for numpy / torch / DeviceArray; else read once here
    if w.perm is not None:
        a = ad = _apply_perm(ad, w)  # numpy and torch only (others are refused)
    if w._packed is None:
        dev = _call.device_of(ad, "a")
        if dev[0] != _runtime.CPU:  # the C layer would say only that the devices differ
            raise argument_error("w: a plain (host) weight, but a is on %s; prepack it for the GPU with "
                                 "w.to(%r) first" % (_runtime.device_str(*dev), _runtime.device_str(*dev)))
        adt = _call.dtype_of(ad, "a")
        if adt is not None and adt.name in _W4DT_NAMES:  # others: the C call names a's dtype
            w._check_scales_fit(adt)
        return gemm(a, ad, w.n, (w.q, w.scales, w.zeros), _GEMM.params(), bias, out, out_dtype, workspace, stream)
    prm = (w._params_pdl or _pdl_params(w)) if use_pdl else w._params
    return gemm(a, ad, w.n, (w._packed, None, None), prm, bias, out, out_dtype, workspace, stream)


def gemm(a, ad, n, weight, prm, bias, out, out_dtype, workspace, stream):
    """The GEMM once the weight is resolved to the C call's (qweight, scales, zeros) and params
    (w4a16_matmul's and torch_ops' w4a16_matmul's one road): a new ``out`` [M, N] of a's kind
    when None, the workspace a GPU weight needs when None, one C call.  ``ad``: a as
    _call.described gives it."""
    a_shape = _call.shape_of(ad, "a")
    m = int(a_shape[0]) if len(a_shape) == 2 else 0
    if out is None:
        out = _call.empty_like(ad, (m, n), out_dtype, name="a")
    if workspace is None and prm.layout == TILED:
        dev = _call.device_of(weight[0], "qweight")
        if dev[0] != _runtime.CPU and m < (1 << 31):  # the host backend needs none; past 2^31 rows the GEMM names a
            need = workspace_bytes(prm, m, dev)
            if need:
                workspace = _call.empty_like(ad, (need,), np.uint8, name="a", out="workspace")
    return _GEMM(stream, a, *weight, bias, out, workspace, params=prm)[0]


def workspace_bytes(prm, m, device) -> int:
    """Bytes of workspace a GEMM of m rows with params ``prm`` needs on ``device`` (a
    (device type, id) pair): gatednorm_w4a16_workspace_size."""
    lib = _ffi._lib or _ffi.load()
    need = ffi.new("size_t *")
    dev = ffi.new("gatednorm_device *", device)
    _ffi.check(lib.gatednorm_w4a16_workspace_size(prm, m, dev[0], need), "gatednorm_w4a16_workspace_size")
    return int(need[0])
