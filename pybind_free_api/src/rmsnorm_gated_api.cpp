// gatednorm_rmsnorm_gated: validate every argument, build the [T, H, D] problem, dispatch
// to the backend that owns the tensors' device.  Nothing is touched before validation ends.
#include <math.h>
#include <stddef.h>
#include <string.h>

#include <new>

#include "backend.h"
#include "tensor_checks.h"

using namespace gn;

namespace {

#define GN_TRY(expr)                                              \
    do {                                                          \
        const gatednorm_status gn_try_status_ = (expr);           \
        if (gn_try_status_ != GATEDNORM_STATUS_SUCCESS) return gn_try_status_; \
    } while (0)

gatednorm_status invalid(const char *fmt, const char *name, long long a = 0, long long b = 0) {
    return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, fmt, name, a, b);
}

// Reads x/z/out as rows [T, H, D]; `group` > 0 views a 2-D [T, H*G] tensor as [T, H, G].
gatednorm_status rows_view(const gatednorm_tensor &t, const char *name, int64_t group, int64_t shape[3], RowsView *view) {
    GN_TRY(float_dtype(t, name, &view->dtype));
    int64_t last_stride = 0;
    if (group > 0) {
        if (t.ndim == 2) {
            if (t.shape[1] % group != 0)
                return invalid("%s: last dim %lld is not a multiple of group_size %lld", name, t.shape[1], group);
            shape[0] = t.shape[0];
            shape[1] = t.shape[1] / group;
            shape[2] = group;
            view->stride_t = t.strides[0];
            view->stride_h = group * t.strides[1];
            last_stride = t.strides[1];
        } else if (t.ndim == 3 && t.shape[2] == group) {
            group = 0;  // already [T, H, G]
        } else if (t.ndim == 3) {
            return invalid("%s: group_size %lld does not match head_dim %lld of a 3-D tensor", name, group, t.shape[2]);
        } else {
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: group_size needs a 2-D [T, H*G] or 3-D [T, H, G] tensor, got %d dims",
                        name, t.ndim);
        }
    }
    if (group == 0) {
        if (t.ndim == 3) {
            shape[0] = t.shape[0]; shape[1] = t.shape[1]; shape[2] = t.shape[2];
            view->stride_t = t.strides[0];
            view->stride_h = t.strides[1];
            last_stride = t.strides[2];
        } else if (t.ndim == 2) {
            shape[0] = t.shape[0]; shape[1] = 1; shape[2] = t.shape[1];
            view->stride_t = t.strides[0];
            view->stride_h = 0;
            last_stride = t.strides[1];
        } else {
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: expected 3 dims [tokens, heads, head_dim] or 2 dims [rows, dim], got %d", name, t.ndim);
        }
    }
    if (shape[2] < 1) return invalid("%s: the normalized dim must be >= 1, got %lld", name, shape[2]);
    if (last_stride != 1 && shape[2] > 1)
        return invalid("%s: last dim must be contiguous (stride 1), got stride %lld", name, last_stride);
    view->data = data_ptr(t);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status same_rows_shape(const int64_t got[3], const int64_t want[3], const char *name) {
    if (got[0] != want[0] || got[1] != want[1] || got[2] != want[2])
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: shape [%lld, %lld, %lld] does not match x's [%lld, %lld, %lld]", name,
                    (long long)got[0], (long long)got[1], (long long)got[2], (long long)want[0], (long long)want[1], (long long)want[2]);
    return GATEDNORM_STATUS_SUCCESS;
}

static_assert(offsetof(gatednorm_rmsnorm_gated_params, pdl) == GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE,
              "fields of the first params layout must not move");

gatednorm_status read_params(const gatednorm_rmsnorm_gated_params *in, gatednorm_rmsnorm_gated_params *p) {
    *p = gatednorm_rmsnorm_gated_params_default();
    if (in) {
        // The first layout is the smallest a caller can hand us; fields past a caller's
        // struct_size keep their defaults, bytes past ours (a newer caller) are not read.
        if (in->struct_size < GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                        "params: struct_size %u is too small; start from gatednorm_rmsnorm_gated_params_default()", in->struct_size);
        memcpy(p, in, in->struct_size < sizeof *p ? in->struct_size : sizeof *p);
        p->struct_size = sizeof *p;
    }
    if (p->norm_before_gate != 0 && p->norm_before_gate != 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.norm_before_gate: expected 0 or 1, got %d", p->norm_before_gate);
    if (p->activation != GATEDNORM_ACTIVATION_SILU && p->activation != GATEDNORM_ACTIVATION_SIGMOID)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.activation: expected SILU (0) or SIGMOID (1), got %d", p->activation);
    if (!(p->eps >= 0.0f) || isinf(p->eps))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.eps: expected a finite value >= 0, got %g", double(p->eps));
    if (!isfinite(p->weight_offset))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.weight_offset: expected a finite value, got %g", double(p->weight_offset));
    if (p->group_size < 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.group_size: expected >= 0, got %lld", (long long)p->group_size);
    if (p->pdl != 0 && p->pdl != 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.pdl: expected 0 or 1, got %d", p->pdl);
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

GATEDNORM_API gatednorm_rmsnorm_gated_params gatednorm_rmsnorm_gated_params_default(void) {
    gatednorm_rmsnorm_gated_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.norm_before_gate = 1;
    p.activation = GATEDNORM_ACTIVATION_SILU;
    p.eps = 1e-6f;
    p.weight_offset = 0.0f;
    p.group_size = 0;
    p.pdl = 0;
    return p;
}

namespace {
gatednorm_status rmsnorm_gated_checked(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight,
                                       const gatednorm_tensor *out, const gatednorm_rmsnorm_gated_params *params, void *stream) {
    gatednorm_rmsnorm_gated_params prm;
    GN_TRY(read_params(params, &prm));
    GN_TRY(check_descriptor(x, "x"));
    if (z) GN_TRY(check_descriptor(z, "z"));
    GN_TRY(check_descriptor(weight, "weight"));
    GN_TRY(check_descriptor(out, "out"));

    RmsnormGatedProblem p;
    int64_t xs[3], zs[3], os[3];
    GN_TRY(rows_view(*x, "x", prm.group_size, xs, &p.x));
    if (z) {
        GN_TRY(rows_view(*z, "z", prm.group_size, zs, &p.z));
        GN_TRY(same_rows_shape(zs, xs, "z"));
    }
    GN_TRY(rows_view(*out, "out", prm.group_size, os, &p.out));
    GN_TRY(same_rows_shape(os, xs, "out"));

    GN_TRY(float_dtype(*weight, "weight", &p.weight_dtype));
    if (weight->ndim != 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "weight: expected shape [%lld] (the normalized dim), got %d dims",
                    (long long)xs[2], weight->ndim);
    if (weight->shape[0] != xs[2])
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "weight: expected shape [%lld] (the normalized dim), got [%lld]",
                    (long long)xs[2], (long long)weight->shape[0]);
    if (weight->shape[0] > 1 && weight->strides[0] != 1)
        return invalid("%s: must be contiguous (stride 1), got stride %lld", "weight", weight->strides[0]);

    if (z) GN_TRY(check_same_device(*z, "z", *x, "x"));
    GN_TRY(check_same_device(*weight, "weight", *x, "x"));
    GN_TRY(check_same_device(*out, "out", *x, "x"));
    GN_TRY(check_no_self_overlap(*out, "out"));
    GN_TRY(check_out_aliasing(*out, *x, "x", true));
    if (z) GN_TRY(check_out_aliasing(*out, *z, "z", true));
    GN_TRY(check_out_aliasing(*out, *weight, "weight", false));

    p.tokens = xs[0];
    p.heads = xs[1];
    p.dim = xs[2];
    p.weight = data_ptr(*weight);
    p.norm_before_gate = prm.norm_before_gate != 0;
    p.activation = prm.activation;
    p.eps = prm.eps;
    p.weight_offset = prm.weight_offset;
    p.device_id = x->device.device_id;
    p.pdl = prm.pdl != 0;
    if (!z) p.z = RowsView{};
    if (p.tokens * p.heads == 0) return GATEDNORM_STATUS_SUCCESS;  // validated, nothing to write

    if (is_host_device(x->device.device_type)) return cpu_rmsnorm_gated(p);
    const int platform = gpu_platform();
    const bool ours = platform && (x->device.device_type == platform ||
                                   (platform == GATEDNORM_DEVICE_TYPE_CUDA && x->device.device_type == GATEDNORM_DEVICE_TYPE_CUDA_MANAGED));
    if (!ours)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "x: on %s, which this build cannot run on (%s)", device_name(x->device).c_str(), gpu_build_info());
    int32_t count = 0;
    gpu_device_count(&count);
    if (p.device_id < 0 || p.device_id >= count)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "x: on %s, but %d GPU(s) are visible", device_name(x->device).c_str(), count);
    return gpu_rmsnorm_gated(p, stream);
}
}  // namespace

GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight,
                                                       const gatednorm_tensor *out, const gatednorm_rmsnorm_gated_params *params, void *stream) {
    try {  // no C++ exception may cross the C ABI
        return rmsnorm_gated_checked(x, z, weight, out, params, stream);
    } catch (const std::bad_alloc &) {
        return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "rmsnorm_gated: out of host memory");
    } catch (...) {
        return fail(GATEDNORM_STATUS_INTERNAL, "rmsnorm_gated: unexpected C++ exception");
    }
}

}  // extern "C"
