"""Pythonic ops over the C ABI (numpy-style signatures, ``out=`` arguments).

Each op is its signature, docstring, option checks and one call into the call layer
(``_call``): the model every new op copies."""

from __future__ import annotations

from . import _call
from ._ffi import argument_error

__all__ = ["rmsnorm_gated"]

_ACTIVATIONS = {"silu": 0, "swish": 0, "sigmoid": 1}
_OUT_DTYPES = ("bfloat16", "float16", "float32")  # what the norm can write

_params_cache: dict = {}  # _call.options_key of the options -> params struct (see _params)
_eps_params: dict = {}  # eps (> 0) -> params struct with every other option at its default
_RMSNORM_GATED = _call.Entry("gatednorm_rmsnorm_gated", "gatednorm_rmsnorm_gated_params",
                             ("x", "z", "weight", "out"), outputs=("out",), compile_now=True, params_keywords=True,
                             packed=True)
_CALL = _RMSNORM_GATED.call
# The defaults as objects: `activation is _SILU` and `weight_offset is _ZERO` hold for an
# option left at its default (and for the literal "silu", which Python interns), without a
# comparison; any other value takes the general path.
_SILU = "silu"
_ZERO = 0.0
_NEW_LIKE_X = _call.New()  # out=None, out_dtype=None: an output like x (the call layer never changes a New)


def _checked_params(eps, norm_before_gate, activation, weight_offset, group_size, pdl):
    """The params struct of these options, each checked (the first bad one is named)."""
    return _RMSNORM_GATED.params(
        norm_before_gate=_call.flag("norm_before_gate", norm_before_gate),
        activation=_call.choice("activation", activation, _ACTIVATIONS),
        eps=_call.eps(eps),
        weight_offset=_call.real("weight_offset", weight_offset),
        group_size=0 if group_size is None else _call.view_size("group_size", group_size),
        pdl=_call.flag("pdl", pdl))


def _params(eps, norm_before_gate, activation, weight_offset, group_size, pdl):
    """The params struct of these options, remembered by their values and types
    (_call.options_key: 1.0 or 1 never passes as True; a -0.0 eps or weight offset is its own)."""
    opts = (eps, norm_before_gate, activation, weight_offset, group_size, pdl)
    key = _call.options_key(opts)
    prm = _call.memo_get(_params_cache, key) or _call.memo_put(_params_cache, key, _checked_params(*opts))
    if (type(eps) is float and eps > 0.0 and norm_before_gate is True and activation is _SILU
            and weight_offset is _ZERO and group_size is None and pdl is False):
        _call.memo_put(_eps_params, eps, prm)  # > 0: no -0.0 / 0.0 or NaN key
    return prm


def rmsnorm_gated(x, z, weight, *, eps=1e-6, norm_before_gate=True, activation=_SILU,
                  weight_offset=_ZERO, group_size=None, out=None, out_dtype=None, stream=None, pdl=False):
    """Gated RMSNorm (RMSNormGated of Qwen3-Next / Qwen3.5 GDN layers, Mamba2)::

        act(z) = silu(z) = z * sigmoid(z)        (or sigmoid(z): activation="sigmoid")
        u      = x                 if norm_before_gate (default; Qwen3-Next, FLA)
                 x * act(z)        otherwise (Mamba2)
        rstd   = 1 / sqrt(mean_D(u^2) + eps)
        y      = u * rstd * (weight + weight_offset)
        y      = y * act(z)        if norm_before_gate and z is given

    computed in fp32 from inputs upcast to fp32 and rounded once (round-to-nearest-even)
    to the output dtype.  Without ``z`` it is plain RMSNorm.

    Args:
        x: ``[..., D]``: any leading dims are rows (``[T, H, D]``, ``[B, T, H, D]``, ``[N, D]``,
            ``[D]``); with ``group_size=G`` the last dim is viewed as ``[L / G, G]`` (a
            ``[T, H*G]`` projection output).  bf16 / fp16 / fp32; any strides on the leading
            dims that reduce to at most two ([tokens, heads]); last dim contiguous.  Any array: numpy, anything
            with ``__dlpack__`` or ``__cuda_array_interface__`` (torch, CuPy, JAX, numba,
            hip-python), a gatednorm.DeviceArray or gatednorm.from_pointer view.
        z: the gate, same shape as x, any of the three dtypes; None for plain RMSNorm.
        weight: ``[D]``, any of the three dtypes, contiguous.  Required.
        eps: added inside the square root.
        norm_before_gate: True: ``norm(x) * act(z)``; False: ``norm(x * act(z))``.
        activation: "silu" or "sigmoid".
        weight_offset: the norm multiplies by ``weight + weight_offset`` (1.0 for
            zero-centred "1 + w" weights).
        group_size: G to view the last dim L as ``[L / G, G]``; None: the last dim.
        out: the output (may be ``x`` itself: in place); same shape as x, any token/head
            strides.  None: a new array of x's kind (numpy for numpy, ``x.new_empty`` for
            torch, else a DeviceArray on x's device).
        out_dtype: dtype of a new ``out`` (default x's dtype); must match ``out`` if given.
        stream: stream to launch on (an int handle, torch/CuPy/hip-python stream objects,
            anything with ``__cuda_stream__``).  Default: torch's current stream for torch
            tensors, else the ``stream`` of x's ``__cuda_array_interface__``, else the
            default stream.  GPU calls are asynchronous.
        pdl: launch with programmatic dependent launch (CUDA, compute capability >= 9.0):
            the kernel may start while the previous kernel on the stream finishes and waits
            for it before touching memory, and lets the next PDL-launched kernel start
            early.  Saved 0.3-0.7 us a call at T <= 128 on an H200 (docs/rmsnorm_gated_kernels.md),
            in CUDA graphs too.
            No effect on the CPU, AMD or older GPUs.

    Returns:
        ``out``.

    Raises:
        GatedNormError: with the library's message naming the bad argument (an
        ``InvalidArgumentError``, also a ``ValueError``, for bad arguments); ``out`` is
        then left untouched.
    """
    if x is None or weight is None:
        if x is None:
            raise argument_error("x: required (an array); got None")
        raise argument_error("weight: required (the [D] norm weight); got None")
    # Every option but eps at its default (the usual call): one lookup keyed on eps.  A
    # params struct is a non-NULL pointer, so true.
    prm = (norm_before_gate is True and activation is _SILU and weight_offset is _ZERO and group_size is None
           and pdl is False and type(eps) is float and _eps_params.get(eps)) \
        or _params(eps, norm_before_gate, activation, weight_offset, group_size, pdl)
    if out is None:
        if out_dtype is not None:
            out_dtype = _call.dtype_arg(out_dtype, "out_dtype")
            if out_dtype.name not in _OUT_DTYPES or not out_dtype.isnative:  # refused before anything is allocated
                raise argument_error("out_dtype: %s; the output must be bf16, fp16 or fp32 (native byte order)" % out_dtype)
        return _CALL(stream, x, z, weight, _NEW_LIKE_X if out_dtype is None else _call.New(out_dtype), prm)[0]
    if out_dtype is not None:
        odt, given = _call.dtype_arg(out_dtype, "out_dtype"), _call.dtype_of(out, "out")
        if odt != given:
            raise argument_error("out_dtype: %s does not match out's dtype %s" % (odt, given))
    _CALL(stream, x, z, weight, out, prm)
    return out
