"""Pythonic ops over the C ABI (numpy-style signatures, ``out=`` arguments)."""

from __future__ import annotations

import sys

import numpy as np

from . import _adapters, _dtypes, _ffi, _runtime
from ._adapters import NUMPY, TORCH, convert, kind_of, release, resolve_stream
from ._array import DeviceArray
from ._ffi import argument_error, ffi

__all__ = ["rmsnorm_gated"]

_ACTIVATIONS = {"silu": 0, "swish": 0, "sigmoid": 1}
_rms_defaults = None  # gatednorm_rmsnorm_gated_params from the library, fetched once


def _out_dtype(out_dtype, name="out_dtype"):
    try:
        return _dtypes.to_numpy_dtype(out_dtype)
    except TypeError:
        raise argument_error("%s: not a dtype: %r" % (name, out_dtype)) from None


_OUT_DTYPES = (_dtypes.bfloat16, _dtypes.float16, _dtypes.float32)  # what the op can write


def _param_error(e, **values):
    """Name the option that cffi could not store in the params struct."""
    p = ffi.new("gatednorm_rmsnorm_gated_params *")
    for name, v in values.items():
        try:
            if v is not None or name != "group_size":  # group_size=None means "the last dim"
                setattr(p, name, v)
        except (TypeError, OverflowError) as err:
            return argument_error("%s: %s (got %r)" % (name, err, v))
    return argument_error(str(e))


def _alloc_like(x, kind, tx, out_dtype):
    """The default ``out``: same shape as x, contiguous, dtype out_dtype or x's, and of x's
    kind: numpy for numpy, ``x.new_empty`` for torch, else a DeviceArray on x's device."""
    if out_dtype is None:
        dt = x.dtype if kind == NUMPY else _adapters.dtype_of(tx)
        if dt is None:  # x has a dtype numpy does not know; the op will reject x by name
            dt = _dtypes.float32
    else:
        dt = _out_dtype(out_dtype)
        if dt not in _OUT_DTYPES:  # refused before anything is allocated for it
            raise argument_error("out_dtype: %s; the output must be bf16, fp16 or fp32" % dt)
        if (kind == TORCH or hasattr(x, "new_empty")) and _dtypes._torch_dtype_name(out_dtype) is not None:
            return x.new_empty(tuple(x.shape), dtype=out_dtype)  # a torch dtype for a torch x
    if kind == NUMPY:
        return np.empty(x.shape, dt)
    if kind == TORCH or hasattr(x, "new_empty"):
        torch = sys.modules.get("torch")
        if torch is not None:
            return x.new_empty(tuple(x.shape), dtype=_dtypes.to_torch_dtype(torch, dt))
    nd = tx.ndim
    shape = tuple(tx.shape[0:nd])
    devtype, devid = tx.device.device_type, tx.device.device_id
    if devtype in _runtime.HOST_TYPES:
        devtype, devid = _runtime.CPU, 0
    else:  # e.g. CUDA-managed memory: allocate plain memory of the GPU backend
        devtype = _runtime.gpu_device_type() or devtype
    return DeviceArray(shape, dt, (devtype, devid))


def rmsnorm_gated(x, z=None, weight=None, *, eps=1e-6, norm_before_gate=True, activation="silu",
                  weight_offset=0.0, group_size=None, out=None, out_dtype=None, stream=None, pdl=False):
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
        x: ``[T, H, D]`` or ``[N, D]`` (or ``[T, H*G]`` with ``group_size=G``), bf16 / fp16 /
            fp32; any token/head strides, last dim contiguous.  Any array: numpy, anything
            with ``__dlpack__`` or ``__cuda_array_interface__`` (torch, CuPy, JAX, numba,
            hip-python), a gatednorm.DeviceArray or gatednorm.from_pointer view.
        z: the gate, same shape as x, any of the three dtypes; None for plain RMSNorm.
        weight: ``[D]``, any of the three dtypes, contiguous.  Required.
        eps: added inside the square root.
        norm_before_gate: True: ``norm(x) * act(z)``; False: ``norm(x * act(z))``.
        activation: "silu" or "sigmoid".
        weight_offset: the norm multiplies by ``weight + weight_offset`` (1.0 for
            zero-centred "1 + w" weights).
        group_size: G to view a 2-D ``[T, H*G]`` x as ``[T, H, G]``; None: the last dim.
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
            early.  Saves ~0.2-0.4 us per call between PDL-aware kernels, in CUDA graphs too.
            No effect on the CPU, AMD or older GPUs.

    Returns:
        ``out``.

    Raises:
        GatedNormError: with the library's message naming the bad argument; ``out`` is then
        left untouched.
    """
    global _rms_defaults
    lib = _ffi._lib or _ffi.load()
    if weight is None:
        raise argument_error("weight: required (the [D] norm weight); got None")
    act = _ACTIVATIONS.get(activation)
    if act is None:
        if isinstance(activation, int) and not isinstance(activation, bool):
            act = activation  # passed through: the library validates it
        else:
            raise argument_error("activation: expected 'silu' or 'sigmoid', got %r" % (activation,))
    kx = kind_of(x)
    hold = []
    try:
        s, cai = resolve_stream(stream, x, kx)
        tx = convert(x, "x", s, hold, False, kx, cai)
        if out is None:
            out = _alloc_like(x, kx, tx, out_dtype)
            to = convert(out, "out", s, hold, True)
        else:
            to = convert(out, "out", s, hold, True)
            if out_dtype is not None and _dtypes.dl_dtype(_out_dtype(out_dtype)) != (to.dtype.code, to.dtype.bits):
                raise argument_error("out_dtype: %s does not match out's dtype %s"
                                     % (_out_dtype(out_dtype), _dtypes.dl_name(to.dtype.code, to.dtype.bits)))
        tz = ffi.NULL if z is None else convert(z, "z", s, hold, False)
        tw = convert(weight, "weight", s, hold, False)
        if _rms_defaults is None:
            d = ffi.new("gatednorm_rmsnorm_gated_params *")
            _ffi.check(lib.gatednorm_rmsnorm_gated_params_init(d, ffi.sizeof(d[0])), "gatednorm_rmsnorm_gated_params_init")
            _rms_defaults = d[0]
        p = ffi.new("gatednorm_rmsnorm_gated_params *", _rms_defaults)
        p.norm_before_gate = 1 if norm_before_gate else 0
        p.pdl = 1 if pdl else 0
        try:
            p.activation = act
            p.eps = eps
            p.weight_offset = weight_offset
            if isinstance(group_size, bool):  # True would pass as a group of 1
                raise argument_error("group_size: expected an int or None, got %r" % (group_size,))
            if group_size:
                p.group_size = group_size
        except (TypeError, OverflowError) as e:
            raise _param_error(e, activation=act, eps=eps, weight_offset=weight_offset, group_size=group_size) from None
        st = lib.gatednorm_rmsnorm_gated(tx, tz, tw, to, p, ffi.cast("void *", s) if s else ffi.NULL)
        if st:
            _ffi.raise_error(st, "rmsnorm_gated")
    finally:
        if hold:
            release(hold)
    return out
