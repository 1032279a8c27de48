import os

import torch

# FAKE_FLA_BREAK=wrong: rms_norm_gated returns a wrong result; =raise: rmsnorm_fn raises.
BREAK = os.environ.get("FAKE_FLA_BREAK", "")


class _Autotuner:
    """Triton's Autotuner as far as the bench looks: a cache of picks by key, a disk flag."""

    def __init__(self):
        self.cache = {}
        self.cache_results = True
        self.tunings = 0


class _Heuristics:
    def __init__(self, fn):
        self.fn = fn


layer_norm_gated_fwd_kernel = _Heuristics(_Autotuner())


def _norm_gate(x, z, w, eps):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()
    return (y * torch.nn.functional.silu(z.float())).to(x.dtype)


def rms_norm_gated(x, g, weight, bias, activation="swish", residual=None, prenorm=False, residual_in_fp32=False, eps=1e-6):
    assert bias is None and activation == "swish"
    tuner = layer_norm_gated_fwd_kernel.fn
    rows = x.numel() // x.shape[-1]
    key = ("rows/64k", (rows + 65535) // 65536, str(x.dtype))
    if key not in tuner.cache:  # tune on this call's shape
        tuner.tunings += 1
        tuner.cache[key] = f"BT: 16, num_warps: 8 (tuned at rows={rows})"
    if BREAK == "wrong":
        return x * 1.0
    return _norm_gate(x, g, weight, eps)
