from .fused_norm_gate import BREAK, _norm_gate


def rmsnorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True, is_rms_norm=True):
    assert bias is None and z is not None and norm_before_gate and group_size is None
    if BREAK == "raise":
        raise RuntimeError("fake FLA: broken on purpose")
    return _norm_gate(x, z, weight, eps)
