// gatednorm_add_rmsnorm and gatednorm_group_quant_fp8 (ops.md §3): validate every argument,
// build the [tokens, hidden] problem, dispatch to the backend of the tensors' device.
// Nothing is touched before validation ends.
#include <math.h>
#include <stddef.h>
#include <string.h>

#include <new>

#include "backend.h"
#include "numerics.h"
#include "params.h"
#include "quant_checks.h"
#include "tensor_checks.h"

namespace gn {
// add_rmsnorm_problem: also what gatednorm_allreduce_add_rmsnorm validates with (comm_api.cpp).
gatednorm_status add_rmsnorm_problem(const gatednorm_tensor *, const gatednorm_tensor *, const gatednorm_tensor *, const gatednorm_tensor *,
                                     const gatednorm_tensor *, const gatednorm_tensor *, const gatednorm_tensor *,
                                     const gatednorm_add_rmsnorm_params *, AddRmsnormProblem &);
}  // namespace gn

using namespace gn;

namespace {

constexpr uint32_t kAddSizes[] = {sizeof(gatednorm_add_rmsnorm_params)};
const ParamsLayout kAddParams = {"params", "gatednorm_add_rmsnorm_params_init", kAddSizes, 1};
constexpr uint32_t kGqSizes[] = {sizeof(gatednorm_group_quant_fp8_params)};
const ParamsLayout kGqParams = {"params", "gatednorm_group_quant_fp8_params_init", kGqSizes, 1};

gatednorm_add_rmsnorm_params add_defaults() {
    gatednorm_add_rmsnorm_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.eps = 1e-6f;
    p.quant = quant_fp8_defaults();
    return p;
}

gatednorm_group_quant_fp8_params gq_defaults() {
    gatednorm_group_quant_fp8_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.quant = quant_fp8_defaults();
    return p;
}

gatednorm_status check_reserved(const int32_t *r, int n) {
    for (int i = 0; i < n; ++i)
        if (r[i] != 0) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.reserved[%d]: must be 0, got %d", i, r[i]);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_pdl(int32_t pdl) {
    if (pdl != 0 && pdl != 1) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.pdl: expected 0 or 1, got %d", pdl);
    return GATEDNORM_STATUS_SUCCESS;
}

// Token dims of a [tokens..., hidden] rows shape.
TokenDims token_dims(const RowsShape &r, const char *name) {
    TokenDims t;
    t.name = name;
    t.ndim = r.ndim - 1;
    for (int i = 0; i < t.ndim; ++i) {
        t.shape[i] = r.shape[i];
        t.strides[i] = r.strides[i];
    }
    return t;
}

// A [tokens..., hidden] tensor of x's shape and a float dtype.
gatednorm_status like_x(const gatednorm_tensor &t, const char *name, const RowsShape &xs, RowsShape *s, int *dtype) {
    GN_TRY(float_dtype(t, name, dtype));
    GN_TRY(rows_shape(t, name, 0, s));
    return same_rows_shape(*s, name, xs, "x");
}

gatednorm_status dispatch(AddRmsnormProblem &p, const gatednorm_tensor &x, void *stream) {
    // The device is validated before the empty check: an empty call on a device this build
    // cannot run on is refused, as gatednorm_rmsnorm_gated does (ops.md "Empty input").
    const bool host = is_host_device(x.device.device_type);
    if (host) return (p.tokens == 0 || p.hidden == 0) ? GATEDNORM_STATUS_SUCCESS : cpu_add_rmsnorm(p);
    const int platform = gpu_platform();
    const bool ours = platform && (x.device.device_type == platform ||
                                   (platform == GATEDNORM_DEVICE_TYPE_CUDA && x.device.device_type == GATEDNORM_DEVICE_TYPE_CUDA_MANAGED));
    if (!ours)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "x: on %s, which this build cannot run on (%s)", device_name(x.device).c_str(), gpu_build_info());
    int32_t count = 0;
    gpu_device_count(&count);
    if (p.device_id < 0 || p.device_id >= count)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "x: on %s, but %d GPU(s) are visible", device_name(x.device).c_str(), count);
    if ((p.tokens == 0 || p.hidden == 0)) return GATEDNORM_STATUS_SUCCESS;  // validated, nothing to write
    return gpu_add_rmsnorm(p, stream);
}

constexpr int kMaxTensors = 8;

// The checks both entries share once the inputs and outputs are known: devices, self
// overlap of outputs, no overlap between outputs and inputs (except the allowed in-place
// views) or among outputs; then the token dims merged into one.
struct Arg {
    const gatednorm_tensor *t;
    const char *name;
    bool out;
    const TokenDims *tok;  // nullptr: no token dims (weight)
};

gatednorm_status common_checks(const Arg *args, int n, const gatednorm_tensor &x, bool (*allowed)(const Arg &, const Arg &),
                               int64_t *tokens, int64_t stride[]) {
    for (int i = 0; i < n; ++i) GN_TRY(check_same_device(*args[i].t, args[i].name, x, "x"));
    for (int i = 0; i < n; ++i)
        if (args[i].out) GN_TRY(check_no_self_overlap(*args[i].t, args[i].name));
    for (int i = 0; i < n; ++i) {
        if (!args[i].out) continue;
        for (int k = 0; k < n; ++k) {
            if (k == i || (args[k].out && k < i)) continue;
            if (allowed && allowed(args[i], args[k])) continue;
            GN_TRY(check_disjoint(*args[i].t, args[i].name, *args[k].t, args[k].name));
        }
    }
    const TokenDims *toks[kMaxTokenTensors];
    int m = 0;
    for (int i = 0; i < n; ++i)
        if (args[i].tok) toks[m++] = args[i].tok;
    int64_t st[kMaxTokenTensors];
    GN_TRY(collapse_tokens(toks, m, tokens, st));
    for (int i = 0, j = 0; i < n; ++i) stride[i] = args[i].tok ? st[j++] : 0;
    return GATEDNORM_STATUS_SUCCESS;
}

// In place: residual_out (or the residual written in place) on exactly the residual, y on exactly x.
bool add_allowed(const Arg &o, const Arg &in) {
    const bool res_pair = (!strcmp(o.name, "residual_out") || !strcmp(o.name, "residual")) && !strcmp(in.name, "residual");
    const bool y_pair = !strcmp(o.name, "y") && !strcmp(in.name, "x");
    return (res_pair || y_pair) && same_view(*o.t, *in.t);
}

}  // namespace

gatednorm_status gn::add_rmsnorm_problem(const gatednorm_tensor *x, const gatednorm_tensor *res, const gatednorm_tensor *weight,
                                     const gatednorm_tensor *res_out, const gatednorm_tensor *y, const gatednorm_tensor *q,
                                     const gatednorm_tensor *scales, const gatednorm_add_rmsnorm_params *params, AddRmsnormProblem &p) {
    gatednorm_add_rmsnorm_params prm = add_defaults();
    GN_TRY(params_read(params, &prm, kAddParams));
    GN_TRY(check_norm_options(prm.eps, prm.weight_offset, prm.pdl));
    GN_TRY(check_reserved(prm.reserved, 4));
    GN_TRY(read_quant_block(prm.quant, &p.quant));

    GN_TRY(check_descriptor(x, "x"));
    if (res) GN_TRY(check_descriptor(res, "residual"));
    GN_TRY(check_descriptor(weight, "weight"));
    if (res_out) GN_TRY(check_descriptor(res_out, "residual_out"));
    if (y) GN_TRY(check_descriptor(y, "y"));
    if (q) GN_TRY(check_descriptor(q, "q"));
    if (scales) GN_TRY(check_descriptor(scales, "scales"));
    if (!q != !scales)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: given without %s (FP8 output needs both q and scales)", q ? "q" : "scales",
                    q ? "scales" : "q");
    if (!y && !q) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "y: no output requested (give y, or q and scales, or both)");
    // As Python refuses it (docs/ops.md §3): a flag that could only act on FP8 outputs, given
    // without them, is a caller's mistake that ignoring would hide (a review, session 45).
    if (!q && prm.quant.quantize_rounded)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                    "params.quant.quantize_rounded: 1 without q and scales (no FP8 output to quantize)");
    if (res_out && !res)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "residual_out: given without a residual (there is no sum to store)");

    RowsShape xs, rs, ros, ys;
    GN_TRY(float_dtype(*x, "x", &p.x_dtype));
    GN_TRY(rows_shape(*x, "x", 0, &xs));
    const int64_t H = xs.shape[xs.ndim - 1];
    if (res) GN_TRY(like_x(*res, "residual", xs, &rs, &p.res_dtype));
    if (res_out) {
        int dt;
        GN_TRY(like_x(*res_out, "residual_out", xs, &ros, &dt));
        if (dt != p.res_dtype)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "residual_out: dtype %s does not match residual's %s",
                        dtype_name(res_out->dtype).c_str(), dtype_name(res->dtype).c_str());
    }
    if (y) GN_TRY(like_x(*y, "y", xs, &ys, &p.y_dtype));
    GN_TRY(check_norm_weight(*weight, H, "hidden, x's last dim", &p.weight_dtype));

    const TokenDims xt = token_dims(xs, "x");
    TokenDims rt, rot, yt, qt, st;
    if (q) GN_TRY(check_quant_outputs(*q, *scales, xt, H, &p.quant, &qt, &st));
    if (res) rt = token_dims(rs, "residual");
    if (res_out) rot = token_dims(ros, "residual_out");
    if (y) yt = token_dims(ys, "y");

    // Arguments in a fixed order; the residual is an output too when it is updated in place.
    Arg args[kMaxTensors];
    int n = 0, ix = n, ir = -1, iro = -1, iy = -1, iq = -1, is = -1;
    args[n++] = {x, "x", false, &xt};
    if (res) { ir = n; args[n++] = {res, "residual", res_out == nullptr, &rt}; }
    args[n++] = {weight, "weight", false, nullptr};
    if (res_out) { iro = n; args[n++] = {res_out, "residual_out", true, &rot}; }
    if (y) { iy = n; args[n++] = {y, "y", true, &yt}; }
    if (q) {
        iq = n; args[n++] = {q, "q", true, &qt};
        is = n; args[n++] = {scales, "scales", true, &st};
    }
    int64_t stride[kMaxTensors];
    GN_TRY(common_checks(args, n, *x, add_allowed, &p.tokens, stride));

    p.hidden = H;
    p.x = data_ptr(*x);
    p.x_st = stride[ix];
    if (res) {
        p.res = data_ptr(*res);
        p.res_st = stride[ir];
        p.res_out = res_out ? data_ptr(*res_out) : data_ptr(*res);
        p.res_out_st = res_out ? stride[iro] : stride[ir];
    }
    if (y) {
        p.y = data_ptr(*y);
        p.y_st = stride[iy];
    }
    if (q) {
        p.has_quant = true;
        p.quant.q_st = stride[iq];
        p.quant.s_st = stride[is];
    }
    p.weight = data_ptr(*weight);
    p.eps = prm.eps;
    p.weight_offset = prm.weight_offset;
    p.normalize = true;
    p.round_dtype = y ? p.y_dtype : p.x_dtype;
    p.device_id = x->device.device_id;
    p.pdl = prm.pdl != 0;
    return GATEDNORM_STATUS_SUCCESS;
}

namespace {

gatednorm_status add_rmsnorm_checked(const gatednorm_tensor *x, const gatednorm_tensor *res, const gatednorm_tensor *weight,
                                     const gatednorm_tensor *res_out, const gatednorm_tensor *y, const gatednorm_tensor *q,
                                     const gatednorm_tensor *scales, const gatednorm_add_rmsnorm_params *params, void *stream) {
    AddRmsnormProblem p;
    GN_TRY(add_rmsnorm_problem(x, res, weight, res_out, y, q, scales, params, p));
    return dispatch(p, *x, stream);
}

gatednorm_status group_quant_checked(const gatednorm_tensor *x, const gatednorm_tensor *q, const gatednorm_tensor *scales,
                                     const gatednorm_group_quant_fp8_params *params, void *stream) {
    gatednorm_group_quant_fp8_params prm = gq_defaults();
    AddRmsnormProblem p;
    GN_TRY(params_read(params, &prm, kGqParams));
    GN_TRY(check_pdl(prm.pdl));
    GN_TRY(check_reserved(prm.reserved, 2));
    GN_TRY(read_quant_block(prm.quant, &p.quant));
    GN_TRY(check_descriptor(x, "x"));
    GN_TRY(check_descriptor(q, "q"));
    GN_TRY(check_descriptor(scales, "scales"));
    RowsShape xs;
    GN_TRY(float_dtype(*x, "x", &p.x_dtype));
    GN_TRY(rows_shape(*x, "x", 0, &xs));
    const int64_t H = xs.shape[xs.ndim - 1];
    const TokenDims xt = token_dims(xs, "x");
    TokenDims qt, st;
    GN_TRY(check_quant_outputs(*q, *scales, xt, H, &p.quant, &qt, &st));
    Arg args[3] = {{x, "x", false, &xt}, {q, "q", true, &qt}, {scales, "scales", true, &st}};
    int64_t stride[3];
    GN_TRY(common_checks(args, 3, *x, nullptr, &p.tokens, stride));
    p.hidden = H;
    p.x = data_ptr(*x);
    p.x_st = stride[0];
    p.has_quant = true;
    p.quant.q_st = stride[1];
    p.quant.s_st = stride[2];
    p.quant.quantize_rounded = false;  // x holds stored values already
    p.normalize = false;
    p.round_dtype = p.x_dtype;
    p.device_id = x->device.device_id;
    p.pdl = prm.pdl != 0;
    return dispatch(p, *x, stream);
}

}  // namespace

extern "C" {

GATEDNORM_API gatednorm_status gatednorm_add_rmsnorm_params_init(gatednorm_add_rmsnorm_params *params, size_t size) {
    const gatednorm_add_rmsnorm_params d = add_defaults();
    return params_init(params, size, &d, kAddParams);
}

GATEDNORM_API gatednorm_status gatednorm_add_rmsnorm(const gatednorm_tensor *x, const gatednorm_tensor *residual, const gatednorm_tensor *weight,
                                                     const gatednorm_tensor *residual_out, const gatednorm_tensor *y, const gatednorm_tensor *q,
                                                     const gatednorm_tensor *scales, const gatednorm_add_rmsnorm_params *params, void *stream) {
    return guarded("add_rmsnorm", [&] { return add_rmsnorm_checked(x, residual, weight, residual_out, y, q, scales, params, stream); });
}

GATEDNORM_API gatednorm_status gatednorm_group_quant_fp8_params_init(gatednorm_group_quant_fp8_params *params, size_t size) {
    const gatednorm_group_quant_fp8_params d = gq_defaults();
    return params_init(params, size, &d, kGqParams);
}

GATEDNORM_API gatednorm_status gatednorm_group_quant_fp8(const gatednorm_tensor *x, const gatednorm_tensor *q, const gatednorm_tensor *scales,
                                                         const gatednorm_group_quant_fp8_params *params, void *stream) {
    return guarded("group_quant_fp8", [&] { return group_quant_checked(x, q, scales, params, stream); });
}

}  // extern "C"
