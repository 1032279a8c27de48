// gatednorm_rmsnorm_gated_fp8: validate every argument, build the [tokens, heads, D] problem
// with its quant outputs, dispatch to the backend of the tensors' device.  Nothing is touched
// before validation ends.
#include <math.h>
#include <stddef.h>
#include <string.h>

#include <new>

#include "backend.h"
#include "numerics.h"
#include "params.h"
#include "quant_checks.h"
#include "tensor_checks.h"

using namespace gn;

namespace {

constexpr uint32_t kParamsSizes[] = {sizeof(gatednorm_rmsnorm_gated_fp8_params)};
const ParamsLayout kParams = {"params", "gatednorm_rmsnorm_gated_fp8_params_init", kParamsSizes, 1};

gatednorm_rmsnorm_gated_fp8_params defaults() {
    gatednorm_rmsnorm_gated_fp8_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.norm_before_gate = 1;
    p.activation = GATEDNORM_ACTIVATION_SILU;
    p.eps = 1e-6f;
    p.quant = quant_fp8_defaults();
    return p;
}

gatednorm_status read_params(const gatednorm_rmsnorm_gated_fp8_params *in, gatednorm_rmsnorm_gated_fp8_params *p, QuantFp8Spec *q) {
    *p = defaults();
    GN_TRY(params_read(in, p, kParams));
    GN_TRY(check_gate_options(p->norm_before_gate, p->activation));
    GN_TRY(check_norm_options(p->eps, p->weight_offset, p->pdl));
    if (p->head_dim < 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.head_dim: expected >= 0, got %lld", (long long)p->head_dim);
    return read_quant_block(p->quant, q);
}

// Token dims of a rows shape [tokens..., H, D] (or [tokens..., D] with H = 1 when it has two
// dims or fewer: [N, D] is N tokens of one head).  `viewed`: the rows shape is x's last dim
// viewed as [H, D] by head_dim, so its H is always a head dim: x [H*D] has no token dims (as
// the Python layer's _token_dims reads it), not H tokens.
TokenDims token_dims(const RowsShape &r, const char *name, bool viewed) {
    TokenDims t;
    t.name = name;
    t.ndim = r.ndim >= 3 || viewed ? r.ndim - 2 : r.ndim - 1;
    for (int i = 0; i < t.ndim; ++i) {
        t.shape[i] = r.shape[i];
        t.strides[i] = r.strides[i];
    }
    return t;
}

gatednorm_status rmsnorm_gated_fp8_checked(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight,
                                           const gatednorm_tensor *q, const gatednorm_tensor *scales, const gatednorm_tensor *y,
                                           const gatednorm_rmsnorm_gated_fp8_params *params, void *stream) {
    gatednorm_rmsnorm_gated_fp8_params prm;
    RmsnormGatedFp8Problem pr;
    QuantFp8Spec &qs = pr.quant;
    RmsnormGatedProblem &p = pr.norm;
    GN_TRY(read_params(params, &prm, &qs));
    GN_TRY(check_descriptor(x, "x"));
    if (z) GN_TRY(check_descriptor(z, "z"));
    GN_TRY(check_descriptor(weight, "weight"));
    GN_TRY(check_descriptor(q, "q"));
    GN_TRY(check_descriptor(scales, "scales"));
    if (y) GN_TRY(check_descriptor(y, "y_copy"));

    RowsShape xs, zs, ys;
    GN_TRY(float_dtype(*x, "x", &p.x.dtype));
    GN_TRY(rows_shape(*x, "x", prm.head_dim, &xs, "head_dim"));
    if (z) {
        GN_TRY(float_dtype(*z, "z", &p.z.dtype));
        GN_TRY(rows_shape(*z, "z", prm.head_dim, &zs, "head_dim"));
        GN_TRY(same_shape(*z, "z", *x, "x"));
    }
    if (y) {
        GN_TRY(float_dtype(*y, "y_copy", &p.out.dtype));
        GN_TRY(rows_shape(*y, "y_copy", prm.head_dim, &ys, "head_dim"));
        GN_TRY(same_shape(*y, "y_copy", *x, "x"));
    }
    const int64_t D = xs.shape[xs.ndim - 1];
    // head_dim split x's last dim into [H, D] (rows_shape leaves it whole when it is D)
    const bool viewed = prm.head_dim > 0 && x->shape[x->ndim - 1] != prm.head_dim;
    const bool has_heads = xs.ndim >= 3 || viewed;
    const int64_t H = has_heads ? xs.shape[xs.ndim - 2] : 1;

    GN_TRY(check_norm_weight(*weight, D, "the normalized dim", &p.weight_dtype));

    const int64_t G = qs.group;
    if (D % G != 0 && G % D != 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.quant.group_size: %lld must divide head_dim %lld or be a multiple of it",
                    (long long)G, (long long)D);
    const TokenDims xt = token_dims(xs, "x", viewed);
    TokenDims qt, st;
    GN_TRY(check_quant_outputs(*q, *scales, xt, H * D, &qs, &qt, &st));

    const gatednorm_tensor *outs[3] = {q, scales, y};
    const char *out_names[3] = {"q", "scales", "y_copy"};
    for (int i = 0; i < 3; ++i)
        if (outs[i]) GN_TRY(check_same_device(*outs[i], out_names[i], *x, "x"));
    if (z) GN_TRY(check_same_device(*z, "z", *x, "x"));
    GN_TRY(check_same_device(*weight, "weight", *x, "x"));
    if (y) GN_TRY(check_no_self_overlap(*y, "y_copy"));
    const gatednorm_tensor *ins[3] = {x, z, weight};
    const char *in_names[3] = {"x", "z", "weight"};
    for (int i = 0; i < 3; ++i) {
        if (!outs[i]) continue;
        for (int k = 0; k < 3; ++k)
            if (ins[k]) GN_TRY(check_disjoint(*outs[i], out_names[i], *ins[k], in_names[k]));
        for (int k = i + 1; k < 3; ++k)
            if (outs[k]) GN_TRY(check_disjoint(*outs[i], out_names[i], *outs[k], out_names[k]));
    }

    // One token dim for every tensor; head strides from the rows shapes.
    const TokenDims zt = z ? token_dims(zs, "z", viewed) : TokenDims(), yt = y ? token_dims(ys, "y_copy", viewed) : TokenDims();
    const TokenDims *toks[5] = {&xt, &qt, &st, nullptr, nullptr};
    int n = 3, zi = -1, yi = -1;
    if (z) { zi = n; toks[n++] = &zt; }
    if (y) { yi = n; toks[n++] = &yt; }
    int64_t tstride[kMaxTokenTensors];
    GN_TRY(collapse_tokens(toks, n, &p.tokens, tstride));
    p.heads = H;
    p.dim = D;
    auto head_stride = [&](const RowsShape &r) { return has_heads && H > 1 ? r.strides[r.ndim - 2] : 0; };
    p.x.data = data_ptr(*x);
    p.x.stride_t = tstride[0];
    p.x.stride_h = head_stride(xs);
    if (z) {
        p.z.data = data_ptr(*z);
        p.z.stride_t = tstride[zi];
        p.z.stride_h = head_stride(zs);
    }
    if (y) {
        p.out.data = data_ptr(*y);
        p.out.stride_t = tstride[yi];
        p.out.stride_h = head_stride(ys);
    }
    qs.q_st = tstride[1];
    qs.s_st = tstride[2];
    p.weight = data_ptr(*weight);
    p.norm_before_gate = prm.norm_before_gate != 0;
    p.activation = prm.activation;
    p.eps = prm.eps;
    p.weight_offset = prm.weight_offset;
    p.device_id = x->device.device_id;
    p.pdl = prm.pdl != 0;
    pr.round_dtype = y ? p.out.dtype : p.x.dtype;
    // The device is validated before the empty check: an empty call on a device this build
    // cannot run on is refused, as gatednorm_rmsnorm_gated does (ops.md "Empty input").
    const bool empty = (p.tokens == 0 || p.heads == 0 || p.dim == 0);
    if (is_host_device(x->device.device_type)) return empty ? GATEDNORM_STATUS_SUCCESS : cpu_rmsnorm_gated_fp8(pr);
    const int platform = gpu_platform();
    const bool ours = platform && (x->device.device_type == platform ||
                                   (platform == GATEDNORM_DEVICE_TYPE_CUDA && x->device.device_type == GATEDNORM_DEVICE_TYPE_CUDA_MANAGED));
    if (!ours)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "x: on %s, which this build cannot run on (%s)", device_name(x->device).c_str(), gpu_build_info());
    int32_t count = 0;
    gpu_device_count(&count);
    if (p.device_id < 0 || p.device_id >= count)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "x: on %s, but %d GPU(s) are visible", device_name(x->device).c_str(), count);
    if (empty) return GATEDNORM_STATUS_SUCCESS;  // validated, nothing to write
    return gpu_rmsnorm_gated_fp8(pr, stream);
}

}  // namespace

extern "C" {

GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated_fp8_params_init(gatednorm_rmsnorm_gated_fp8_params *params, size_t size) {
    const gatednorm_rmsnorm_gated_fp8_params d = defaults();
    return params_init(params, size, &d, kParams);
}

GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated_fp8(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight,
                                                           const gatednorm_tensor *q, const gatednorm_tensor *scales, const gatednorm_tensor *y_copy,
                                                           const gatednorm_rmsnorm_gated_fp8_params *params, void *stream) {
    return guarded("rmsnorm_gated_fp8", [&] { return rmsnorm_gated_fp8_checked(x, z, weight, q, scales, y_copy, params, stream); });
}

GATEDNORM_API gatednorm_status gatednorm_fp8_encode(const float *values, uint8_t *codes, size_t count, int32_t format, float fp8_max) {
    IeeeFloatScope ieee;  // compares on NaN values and fp8_max: no caller's trap fires (cpu_fenv.h)
    if (format != GATEDNORM_FP8_FORMAT_E4M3FN && format != GATEDNORM_FP8_FORMAT_E4M3FNUZ)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "format: expected E4M3FN (0) or E4M3FNUZ (1), got %d", format);
    float m = 0.0f;
    GN_TRY(check_fp8_max(fp8_max, format, "fp8_max", &m));
    if (count && !values) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "values: NULL");
    if (count && !codes) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "codes: NULL");
    for (size_t i = 0; i < count; ++i) codes[i] = fp8_encode(values[i], format, m);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // extern "C"
