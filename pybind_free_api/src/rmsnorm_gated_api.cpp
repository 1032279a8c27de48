// gatednorm_rmsnorm_gated: validate every argument, build the [T, H, D] problem, dispatch
// to the backend that owns the tensors' device.  Nothing is touched before validation ends.
#include <math.h>
#include <stddef.h>
#include <string.h>

#include <new>

#include "backend.h"
#include "params.h"
#include "tensor_checks.h"

using namespace gn;

namespace {

static_assert(offsetof(gatednorm_rmsnorm_gated_params, pdl) == GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE,
              "fields of the first params layout must not move");

constexpr uint32_t kParamsSizes[] = {GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE, sizeof(gatednorm_rmsnorm_gated_params)};
const ParamsLayout kParams = {"params", "gatednorm_rmsnorm_gated_params_init", kParamsSizes, 2};

gatednorm_rmsnorm_gated_params defaults() {
    gatednorm_rmsnorm_gated_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.norm_before_gate = 1;
    p.activation = GATEDNORM_ACTIVATION_SILU;
    p.eps = 1e-6f;
    return p;
}

gatednorm_status read_params(const gatednorm_rmsnorm_gated_params *in, gatednorm_rmsnorm_gated_params *p) {
    *p = defaults();
    GN_TRY(params_read(in, p, kParams));
    GN_TRY(check_gate_options(p->norm_before_gate, p->activation));
    GN_TRY(check_norm_options(p->eps, p->weight_offset, p->pdl));
    if (p->group_size < 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.group_size: expected >= 0, got %lld", (long long)p->group_size);
    if (p->reserved0 != 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.reserved0: must be 0, got %d", p->reserved0);
    return GATEDNORM_STATUS_SUCCESS;
}

// out may be exactly x or z (in place) but must not partly overlap any input.
gatednorm_status check_out_aliasing(const gatednorm_tensor &out, const gatednorm_tensor &in, const char *in_name, bool may_alias) {
    if (!memory_overlaps(out, in)) return GATEDNORM_STATUS_SUCCESS;
    if (may_alias && same_view(out, in)) return GATEDNORM_STATUS_SUCCESS;
    return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "out: overlaps %s%s", in_name,
                may_alias ? " without being the same view (in place needs the same address, dtype and strides)" : "");
}

}  // namespace

extern "C" {

GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated_params_init(gatednorm_rmsnorm_gated_params *params, size_t size) {
    const gatednorm_rmsnorm_gated_params d = defaults();
    return params_init(params, size, &d, kParams);
}

namespace {
// The fast path: host tensors, all row-major contiguous with x's shape, weight [D], no group
// view (or one group of the whole last dim), out either x or z exactly or apart from every
// input.  Fills *p as the full checks below would for these arguments (its rows as one
// token dim: the CPU backend walks rows r at r * D either way) and returns true; false
// (nothing decided) sends the call through the full checks.  Params are read first in both.
bool contiguous_host_problem(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight,
                             const gatednorm_tensor *out, const gatednorm_rmsnorm_gated_params &prm, RmsnormGatedProblem *p) {
    uintptr_t xl, xh, zl = 0, zh = 0, wl, wh, ol, oh;
    if (!host_contiguous(x, &p->x.dtype, &xl, &xh) || !host_contiguous(out, &p->out.dtype, &ol, &oh) ||
        !host_contiguous(weight, &p->weight_dtype, &wl, &wh) || (z && !host_contiguous(z, &p->z.dtype, &zl, &zh)))
        return false;
    const int nd = x->ndim;
    if (out->ndim != nd || (z && z->ndim != nd) || weight->ndim != 1) return false;
    for (int i = 0; i < nd; ++i)
        if (out->shape[i] != x->shape[i] || (z && z->shape[i] != x->shape[i])) return false;
    const int64_t D = x->shape[nd - 1];
    if (weight->shape[0] != D || (prm.group_size != 0 && prm.group_size != D)) return false;
    // out: the same view as x or z (same first byte and dtype: shapes and strides already
    // agree), or disjoint from it; disjoint from the weight.
    const auto apart = [&](uintptr_t lo, uintptr_t hi) { return oh <= lo || hi <= ol; };
    if (!apart(xl, xh) && !(ol == xl && p->out.dtype == p->x.dtype)) return false;
    if (z && !apart(zl, zh) && !(ol == zl && p->out.dtype == p->z.dtype)) return false;
    if (!apart(wl, wh)) return false;
    const int64_t rows = element_count(*x) / D;
    p->tokens = rows;
    p->heads = 1;
    p->dim = D;
    p->x.data = data_ptr(*x);
    p->x.stride_t = D;
    p->x.stride_h = 0;
    p->out.data = data_ptr(*out);
    p->out.stride_t = D;
    p->out.stride_h = 0;
    if (z) {
        p->z.data = data_ptr(*z);
        p->z.stride_t = D;
        p->z.stride_h = 0;
    }
    p->weight = data_ptr(*weight);
    p->norm_before_gate = prm.norm_before_gate != 0;
    p->activation = prm.activation;
    p->eps = prm.eps;
    p->weight_offset = prm.weight_offset;
    p->device_id = x->device.device_id;
    p->pdl = prm.pdl != 0;
    return true;
}

gatednorm_status rmsnorm_gated_checked(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight,
                                       const gatednorm_tensor *out, const gatednorm_rmsnorm_gated_params *params, void *stream) {
    gatednorm_rmsnorm_gated_params prm;
    GN_TRY(read_params(params, &prm));
    {
        RmsnormGatedProblem fast;
        if (contiguous_host_problem(x, z, weight, out, prm, &fast)) return cpu_rmsnorm_gated(fast);
    }
    GN_TRY(check_descriptor(x, "x"));
    if (z) GN_TRY(check_descriptor(z, "z"));
    GN_TRY(check_descriptor(weight, "weight"));
    GN_TRY(check_descriptor(out, "out"));

    RmsnormGatedProblem p;
    RowsShape xs, zs, os;
    GN_TRY(float_dtype(*x, "x", &p.x.dtype));
    GN_TRY(rows_shape(*x, "x", prm.group_size, &xs));
    if (z) {
        GN_TRY(float_dtype(*z, "z", &p.z.dtype));
        GN_TRY(rows_shape(*z, "z", prm.group_size, &zs));
        GN_TRY(same_shape(*z, "z", *x, "x"));
    }
    GN_TRY(float_dtype(*out, "out", &p.out.dtype));
    GN_TRY(rows_shape(*out, "out", prm.group_size, &os));
    GN_TRY(same_shape(*out, "out", *x, "x"));
    const int64_t D = xs.shape[xs.ndim - 1];

    GN_TRY(check_norm_weight(*weight, D, "the normalized dim", &p.weight_dtype));

    if (z) GN_TRY(check_same_device(*z, "z", *x, "x"));
    GN_TRY(check_same_device(*weight, "weight", *x, "x"));
    GN_TRY(check_same_device(*out, "out", *x, "x"));
    GN_TRY(check_no_self_overlap(*out, "out"));
    GN_TRY(check_out_aliasing(*out, *x, "x", true));
    if (z) GN_TRY(check_out_aliasing(*out, *z, "z", true));
    GN_TRY(check_out_aliasing(*out, *weight, "weight", false));

    RowsGeometry g;
    const RowsShape *shapes[3] = {&xs, &os, &zs};
    const char *names[3] = {"x", "out", "z"};
    GN_TRY(collapse_rows(shapes, names, z ? 3 : 2, &g));
    p.tokens = g.tokens;
    p.heads = g.heads;
    p.dim = g.dim;
    p.x.data = data_ptr(*x);
    p.x.stride_t = g.stride_t[0];
    p.x.stride_h = g.stride_h[0];
    p.out.data = data_ptr(*out);
    p.out.stride_t = g.stride_t[1];
    p.out.stride_h = g.stride_h[1];
    if (z) {
        p.z.data = data_ptr(*z);
        p.z.stride_t = g.stride_t[2];
        p.z.stride_h = g.stride_h[2];
    }
    p.weight = data_ptr(*weight);
    p.norm_before_gate = prm.norm_before_gate != 0;
    p.activation = prm.activation;
    p.eps = prm.eps;
    p.weight_offset = prm.weight_offset;
    p.device_id = x->device.device_id;
    p.pdl = prm.pdl != 0;
    // The device is checked before the emptiness: an empty call on a device this build
    // cannot run on fails like any other call there.
    const bool host = is_host_device(x->device.device_type);
    if (!host) {
        const int platform = gpu_platform();
        const bool ours = platform && (x->device.device_type == platform ||
                                       (platform == GATEDNORM_DEVICE_TYPE_CUDA && x->device.device_type == GATEDNORM_DEVICE_TYPE_CUDA_MANAGED));
        if (!ours)
            return fail(GATEDNORM_STATUS_NO_DEVICE, "x: on %s, which this build cannot run on (%s)", device_name(x->device).c_str(),
                        gpu_build_info());
        int32_t count = 0;
        gpu_device_count(&count);
        if (p.device_id < 0 || p.device_id >= count)
            return fail(GATEDNORM_STATUS_NO_DEVICE, "x: on %s, but %d GPU(s) are visible", device_name(x->device).c_str(), count);
    }
    if (p.tokens * p.heads == 0) return GATEDNORM_STATUS_SUCCESS;  // validated, nothing to write
    return host ? cpu_rmsnorm_gated(p) : gpu_rmsnorm_gated(p, stream);
}
}  // namespace

GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight,
                                                       const gatednorm_tensor *out, const gatednorm_rmsnorm_gated_params *params, void *stream) {
    return guarded("rmsnorm_gated", [&] { return rmsnorm_gated_checked(x, z, weight, out, params, stream); });
}

GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated_packed(const gatednorm_rmsnorm_gated_args *a) {
    return guarded("rmsnorm_gated", [&] {
        if (!a) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "args: must not be NULL");
        return rmsnorm_gated_checked(a->x, a->z, a->weight, a->out, a->params, a->stream);
    });
}

}  // extern "C"
