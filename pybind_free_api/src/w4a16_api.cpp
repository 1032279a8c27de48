// gatednorm_w4a16_*: validate every argument, describe the weight, dispatch to the backend
// that owns the tensors' device.  Nothing is touched before validation ends.
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <new>

#include "backend.h"
#include "params.h"
#include "tensor_checks.h"
#include "w4a16_layout.h"

using namespace gn;

namespace {

static_assert(offsetof(gatednorm_w4a16_params, pdl) == GATEDNORM_W4A16_PARAMS_V1_SIZE, "fields of the first params layout must not move");
static_assert(sizeof(gatednorm_w4a16_params) == 56, "the second W4A16 params layout (pdl) is 56 bytes");
constexpr uint32_t kParamsSizes[] = {GATEDNORM_W4A16_PARAMS_V1_SIZE, sizeof(gatednorm_w4a16_params)};
const ParamsLayout kParams = {"params", "gatednorm_w4a16_params_init", kParamsSizes, 2};

gatednorm_w4a16_params defaults() {
    gatednorm_w4a16_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.layout = GATEDNORM_W4A16_LAYOUT_PLAIN;
    p.symmetric = -1;
    p.dtype = GATEDNORM_W4A16_DTYPE_UNSET;
    return p;
}

gatednorm_status invalid(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
gatednorm_status invalid(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s", buf);
}

gatednorm_status read_params(const gatednorm_w4a16_params *in, gatednorm_w4a16_params *p) {
    *p = defaults();
    GN_TRY(params_read(in, p, kParams));
    if (p->layout != GATEDNORM_W4A16_LAYOUT_PLAIN && p->layout != GATEDNORM_W4A16_LAYOUT_TILED)
        return invalid("params.layout: expected PLAIN (0) or TILED (1), got %d", p->layout);
    if (p->n < 0) return invalid("params.n: expected >= 0, got %lld", (long long)p->n);
    if (p->k < 0) return invalid("params.k: expected >= 0, got %lld", (long long)p->k);
    if (p->group_size < 0) return invalid("params.group_size: expected >= 0, got %lld", (long long)p->group_size);
    if (p->symmetric < -1 || p->symmetric > 1) return invalid("params.symmetric: expected -1, 0 or 1, got %d", p->symmetric);
    if (p->dtype < GATEDNORM_W4A16_DTYPE_UNSET || p->dtype > GATEDNORM_W4A16_DTYPE_F16)
        return invalid("params.dtype: expected UNSET (0), BF16 (1) or F16 (2), got %d", p->dtype);
    if (p->target < GATEDNORM_W4A16_TARGET_NATIVE || p->target > GATEDNORM_W4A16_TARGET_AMD_WMMA)
        return invalid("params.target: expected 0..3 (a gatednorm_w4a16_target), got %d", p->target);
    if (p->pdl != 0 && p->pdl != 1) return invalid("params.pdl: expected 0 or 1, got %d", p->pdl);
    if (p->reserved0 != 0) return invalid("params.reserved0: must be 0, got %d", p->reserved0);
    return GATEDNORM_STATUS_SUCCESS;
}

int dtype_code_of(int w4dt) { return w4dt == GATEDNORM_W4A16_DTYPE_BF16 ? kBF16 : kF16; }
int w4dt_of(int dt) { return dt == kBF16 ? GATEDNORM_W4A16_DTYPE_BF16 : GATEDNORM_W4A16_DTYPE_F16; }
const char *w4dt_name(int w4dt) { return w4dt == GATEDNORM_W4A16_DTYPE_BF16 ? "bfloat16" : w4dt == GATEDNORM_W4A16_DTYPE_F16 ? "float16" : "unset"; }
const char *target_name(int t) {
    switch (t) {
        case GATEDNORM_W4A16_TARGET_CUDA_MMA: return "CUDA_MMA";
        case GATEDNORM_W4A16_TARGET_AMD_MFMA: return "AMD_MFMA";
        case GATEDNORM_W4A16_TARGET_AMD_WMMA: return "AMD_WMMA";
    }
    return "NATIVE";
}

bool is_uint8(const gatednorm_tensor &t) { return t.dtype.code == GATEDNORM_DTYPE_CODE_UINT && t.dtype.bits == 8; }
bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// A 1-D contiguous uint8 buffer of at least `need` bytes.
gatednorm_status check_bytes(const gatednorm_tensor &t, const char *name, size_t need, const char *what) {
    if (!is_uint8(t)) return invalid("%s: dtype %s; expected uint8 (a byte buffer)", name, dtype_name(t.dtype).c_str());
    if (t.ndim != 1) return invalid("%s: expected 1 dim [bytes], got %d", name, t.ndim);
    if (t.shape[0] > 1 && t.strides[0] != 1) return invalid("%s: must be contiguous (stride 1), got stride %lld", name, (long long)t.strides[0]);
    if (uint64_t(t.shape[0]) < need)
        return invalid("%s: %lld bytes, but %s needs %zu", name, (long long)t.shape[0], what, need);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_matrix(const gatednorm_tensor &t, const char *name, int64_t rows, int64_t cols, const char *shape_text) {
    if (t.ndim != 2) return invalid("%s: expected 2 dims %s, got %d", name, shape_text, t.ndim);
    if (t.shape[0] != rows || t.shape[1] != cols)
        return invalid("%s: expected shape %s = [%lld, %lld], got [%lld, %lld]", name, shape_text, (long long)rows, (long long)cols,
                       (long long)t.shape[0], (long long)t.shape[1]);
    return GATEDNORM_STATUS_SUCCESS;
}

// The PLAIN weight: qweight [N, K/2] uint8, scales [N, K/G], zeros [N, K/G] uint8 or NULL.
gatednorm_status plain_weight(const gatednorm_tensor *q, const gatednorm_tensor *s, const gatednorm_tensor *z, const gatednorm_w4a16_params &prm,
                              W4a16Weight *w) {
    GN_TRY(check_descriptor(q, "qweight"));
    if (!is_uint8(*q)) return invalid("qweight: dtype %s; expected uint8 [N, K/2] (two 4-bit codes per byte)", dtype_name(q->dtype).c_str());
    if (q->ndim != 2) return invalid("qweight: expected 2 dims [N, K/2], got %d", q->ndim);
    // K/2 range-checked before doubling (a broadcast qweight may claim any extent: 2 x 2^62 overflows)
    const int64_t N = q->shape[0], half_k = q->shape[1];
    if (N < 1 || half_k < 1) return invalid("qweight: shape [%lld, %lld]; N and K/2 must be >= 1", (long long)N, (long long)half_k);
    if (half_k >= (int64_t(1) << 30)) return invalid("qweight: shape [%lld, %lld]; N and K must be below 2^31", (long long)N, (long long)half_k);
    const int64_t K = 2 * half_k;
    // The CPU backend dequantizes N x K fp32 values (a broadcast qweight can claim any N, K
    // with no memory behind them): both below 2^31, as the TILED layout requires too.
    if (N >= (int64_t(1) << 31) || K >= (int64_t(1) << 31))
        return invalid("qweight: shape [%lld, %lld]; N and K must be below 2^31", (long long)N, (long long)q->shape[1]);
    if (q->shape[1] > 1 && q->strides[1] != 1) return invalid("qweight: last dim must be contiguous (stride 1), got stride %lld", (long long)q->strides[1]);
    if (prm.n && prm.n != N) return invalid("params.n: %lld, but qweight has N = %lld rows", (long long)prm.n, (long long)N);
    if (prm.k && prm.k != K) return invalid("params.k: %lld, but qweight [N, K/2] has K = %lld", (long long)prm.k, (long long)K);
    if (!s) return invalid("scales: required with a PLAIN weight ([N, K/G]); got NULL");
    GN_TRY(check_descriptor(s, "scales"));
    if (s->ndim != 2) return invalid("scales: expected 2 dims [N, K/G], got %d", s->ndim);
    const int64_t ng = s->shape[1];
    if (s->shape[0] != N) return invalid("scales: expected [N, K/G] with N = %lld, got [%lld, %lld]", (long long)N, (long long)s->shape[0], (long long)ng);
    if (ng < 1 || K % ng) return invalid("scales: %lld groups per row do not divide K = %lld", (long long)ng, (long long)K);
    const int64_t G = K / ng;
    if (prm.group_size && prm.group_size != G)
        return invalid("params.group_size: %lld, but scales [%lld, %lld] give G = K / %lld = %lld", (long long)prm.group_size, (long long)N,
                       (long long)ng, (long long)ng, (long long)G);
    GN_TRY(float_dtype(*s, "scales", &w->s_dtype));
    if (z) {
        GN_TRY(check_descriptor(z, "zeros"));
        if (!is_uint8(*z)) return invalid("zeros: dtype %s; expected uint8 [N, K/G] codes 0..15", dtype_name(z->dtype).c_str());
        GN_TRY(check_matrix(*z, "zeros", N, ng, "[N, K/G]"));
        if (prm.symmetric == 1) return invalid("zeros: given, but params.symmetric = 1 (no zero points)");
    } else if (prm.symmetric == 0) {
        return invalid("zeros: NULL, but params.symmetric = 0 (zero points expected)");
    }
    w->layout = GATEDNORM_W4A16_LAYOUT_PLAIN;
    w->n = N;
    w->k = K;
    w->group = G;
    w->symmetric = z == nullptr;
    w->q = reinterpret_cast<const uint8_t *>(data_ptr(*q));
    w->q_sn = q->strides[0];
    w->s = data_ptr(*s);
    w->s_sn = s->strides[0];
    w->s_sg = s->strides[1];
    if (z) {
        w->z = reinterpret_cast<const uint8_t *>(data_ptr(*z));
        w->z_sn = z->strides[0];
        w->z_sg = z->strides[1];
    }
    return GATEDNORM_STATUS_SUCCESS;
}

// params' N, K and G as every GEMM takes them (N, K below 2^31, G dividing K; even_k: K even,
// as a TILED weight needs).
gatednorm_status shape_params(const gatednorm_w4a16_params &prm, const char *for_what, bool even_k) {
    if (prm.n < 1) return invalid("params.n: %s needs N >= 1, got %lld", for_what, (long long)prm.n);
    if (prm.k < 2) return invalid("params.k: %s needs K >= 2, got %lld", for_what, (long long)prm.k);
    if (even_k && (prm.k & 1)) return invalid("params.k: K = %lld is odd; int4 weights pack two codes per byte along K", (long long)prm.k);
    if (prm.n >= (int64_t(1) << 31)) return invalid("params.n: N = %lld; must be below 2^31", (long long)prm.n);
    if (prm.k >= (int64_t(1) << 31)) return invalid("params.k: K = %lld; must be below 2^31", (long long)prm.k);
    if (prm.group_size < 1) return invalid("params.group_size: %s needs G >= 1, got %lld", for_what, (long long)prm.group_size);
    if (prm.k % prm.group_size)
        return invalid("params.group_size: K = %lld is not a multiple of G = %lld", (long long)prm.k, (long long)prm.group_size);
    return GATEDNORM_STATUS_SUCCESS;
}

// TILED: everything from params; returns the geometry.  g_from_scales: G was read from the
// shape of scales (prepack with params.group_size 0), so a G the layout cannot hold blames scales.
gatednorm_status tiled_params(const gatednorm_w4a16_params &prm, W4Tiled *t, const char *for_what, bool g_from_scales = false) {
    GN_TRY(shape_params(prm, for_what, true));
    if (prm.symmetric != 0 && prm.symmetric != 1) return invalid("params.symmetric: %s needs 0 or 1, got %d", for_what, prm.symmetric);
    if (w4_tiled_geometry(prm.n, prm.k, prm.group_size, prm.symmetric == 1, t)) return GATEDNORM_STATUS_SUCCESS;
    if (g_from_scales)
        return invalid("scales: %lld groups per row give G = %lld; the tiled layout takes a power of two >= 16 or G = K (per-channel, K = %lld)",
                       (long long)(prm.k / prm.group_size), (long long)prm.group_size, (long long)prm.k);
    return invalid("params.group_size: G = %lld; the tiled layout takes a power of two >= 16 or G = K (per-channel, K = %lld)",
                   (long long)prm.group_size, (long long)prm.k);
}

// The device a call runs on: host, or a GPU this build serves.  name: the tensor blamed.
gatednorm_status check_runnable(const gatednorm_tensor &t, const char *name, bool *host) {
    *host = is_host_device(t.device.device_type);
    if (*host) return GATEDNORM_STATUS_SUCCESS;
    const int platform = gpu_platform();
    const bool ours = platform && (t.device.device_type == platform ||
                                   (platform == GATEDNORM_DEVICE_TYPE_CUDA && t.device.device_type == GATEDNORM_DEVICE_TYPE_CUDA_MANAGED));
    if (!ours) return fail(GATEDNORM_STATUS_NO_DEVICE, "%s: on %s, which this build cannot run on (%s)", name, device_name(t.device).c_str(), gpu_build_info());
    int32_t count = 0;
    gpu_device_count(&count);
    if (t.device.device_id < 0 || t.device.device_id >= count)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "%s: on %s, but %d GPU(s) are visible", name, device_name(t.device).c_str(), count);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_disjoint(const gatednorm_tensor &out, const char *out_name, const gatednorm_tensor *in, const char *in_name) {
    if (in && memory_overlaps(out, *in)) return invalid("%s: overlaps %s", out_name, in_name);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status prepack_checked(const gatednorm_tensor *q, const gatednorm_tensor *s, const gatednorm_tensor *z, const gatednorm_tensor *packed,
                                 gatednorm_w4a16_params *params, void *stream) {
    if (!params) return invalid("params: NULL; prepack needs params.dtype (and completes params for the GEMM)");
    gatednorm_w4a16_params prm;
    GN_TRY(read_params(params, &prm));
    if (prm.layout != GATEDNORM_W4A16_LAYOUT_PLAIN) return invalid("params.layout: prepack reads a PLAIN weight (0), got %d", prm.layout);
    if (prm.dtype == GATEDNORM_W4A16_DTYPE_UNSET)
        return invalid("params.dtype: UNSET; name the activations' dtype the packed weight is for (BF16 = 1 or F16 = 2)");
    W4a16PrepackProblem p;
    GN_TRY(plain_weight(q, s, z, prm, &p.w));
    gatednorm_w4a16_params want = prm;
    want.n = p.w.n;
    want.k = p.w.k;
    want.group_size = p.w.group;
    want.symmetric = p.w.symmetric ? 1 : 0;
    W4Tiled t;
    GN_TRY(tiled_params(want, &t, "prepack", prm.group_size == 0));
    GN_TRY(check_descriptor(packed, "packed"));
    GN_TRY(check_bytes(*packed, "packed", size_t(t.total_bytes), "the tiled weight"));
    GN_TRY(check_same_device(*s, "scales", *q, "qweight"));
    if (z) GN_TRY(check_same_device(*z, "zeros", *q, "qweight"));
    GN_TRY(check_same_device(*packed, "packed", *q, "qweight"));
    GN_TRY(check_disjoint(*packed, "packed", q, "qweight"));
    GN_TRY(check_disjoint(*packed, "packed", s, "scales"));
    GN_TRY(check_disjoint(*packed, "packed", z, "zeros"));
    bool host;
    GN_TRY(check_runnable(*q, "qweight", &host));
    int32_t target = prm.target;
    if (host) {
        if (target == GATEDNORM_W4A16_TARGET_NATIVE)
            return invalid("params.target: NATIVE on the host; name the GPU target to pack for (CUDA_MMA = 1, AMD_MFMA = 2, AMD_WMMA = 3)");
    } else {
        int32_t native = 0;
        GN_TRY(gpu_w4a16_target(q->device.device_id, &native, "qweight"));
        if (target != GATEDNORM_W4A16_TARGET_NATIVE && target != native)
            return invalid("params.target: %s, but %s is a %s device; a GPU packs for itself (pack on the host for another target)",
                           target_name(target), device_name(q->device).c_str(), target_name(native));
        target = native;
    }
    if (!aligned16(data_ptr(*packed))) return invalid("packed: data %p is not 16-byte aligned", (void *)data_ptr(*packed));
    p.packed = reinterpret_cast<uint8_t *>(data_ptr(*packed));
    p.dtype = dtype_code_of(prm.dtype);
    p.device_id = q->device.device_id;
    GN_TRY(host ? cpu_w4a16_prepack(p) : gpu_w4a16_prepack(p, stream));
    // Success: complete the caller's description (every field is in the first layout).
    params->layout = GATEDNORM_W4A16_LAYOUT_TILED;
    params->n = p.w.n;
    params->k = p.w.k;
    params->group_size = p.w.group;
    params->symmetric = p.w.symmetric ? 1 : 0;
    params->layout_version = GATEDNORM_W4A16_TILED_VERSION;
    params->target = target;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gemm_checked(const gatednorm_tensor *a, const gatednorm_tensor *q, const gatednorm_tensor *s, const gatednorm_tensor *z,
                              const gatednorm_tensor *bias, const gatednorm_tensor *out, const gatednorm_tensor *ws,
                              const gatednorm_w4a16_params *params, void *stream) {
    gatednorm_w4a16_params prm;
    GN_TRY(read_params(params, &prm));
    W4a16GemmProblem p;
    GN_TRY(check_descriptor(a, "a"));
    int adt = -1;
    if (float_dtype(*a, "a", &adt) != GATEDNORM_STATUS_SUCCESS || adt == kF32)  // one message for every other dtype
        return invalid("a: dtype %s; the W4A16 GEMM takes bfloat16 or float16 activations", dtype_name(a->dtype).c_str());
    if (a->ndim != 2) return invalid("a: expected 2 dims [M, K], got %d", a->ndim);
    // An empty a or out (M = 0) addresses nothing: its strides are free (docs/c_abi.md).
    if (!is_empty(*a) && a->shape[1] > 1 && a->strides[1] != 1)
        return invalid("a: last dim must be contiguous (stride 1), got stride %lld", (long long)a->strides[1]);
    if (prm.dtype != GATEDNORM_W4A16_DTYPE_UNSET && prm.dtype != w4dt_of(adt))
        return invalid("a: dtype %s, but the weight (params.dtype) is for %s activations", dtype_name(a->dtype).c_str(), w4dt_name(prm.dtype));
    W4Tiled t;
    if (prm.layout == GATEDNORM_W4A16_LAYOUT_PLAIN) {
        GN_TRY(plain_weight(q, s, z, prm, &p.w));
    } else {
        if (s) return invalid("scales: must be NULL with a TILED weight (its scales are inside qweight)");
        if (z) return invalid("zeros: must be NULL with a TILED weight (its zero points are inside qweight)");
        if (prm.layout_version != GATEDNORM_W4A16_TILED_VERSION)
            return invalid("params.layout_version: %d, but this library (%u.%u.%u) reads tiled version %d; prepack the weight again",
                           prm.layout_version, GATEDNORM_VERSION_MAJOR, GATEDNORM_VERSION_MINOR, GATEDNORM_VERSION_PATCH, GATEDNORM_W4A16_TILED_VERSION);
        if (prm.target == GATEDNORM_W4A16_TARGET_NATIVE)
            return invalid("params.target: NATIVE; a TILED weight carries the target prepack wrote");
        if (prm.dtype == GATEDNORM_W4A16_DTYPE_UNSET) return invalid("params.dtype: UNSET; a TILED weight carries the dtype prepack wrote");
        GN_TRY(tiled_params(prm, &t, "a TILED weight"));
        GN_TRY(check_descriptor(q, "qweight"));
        GN_TRY(check_bytes(*q, "qweight", size_t(t.total_bytes), "the tiled weight of params' N, K, G"));
        p.w.layout = GATEDNORM_W4A16_LAYOUT_TILED;
        p.w.n = prm.n;
        p.w.k = prm.k;
        p.w.group = prm.group_size;
        p.w.symmetric = prm.symmetric == 1;
        p.w.dtype = dtype_code_of(prm.dtype);
        p.w.tiled = reinterpret_cast<const uint8_t *>(data_ptr(*q));
    }
    const int64_t M = a->shape[0], N = p.w.n, K = p.w.k;
    if (a->shape[1] != K) return invalid("a: [M, K] with K = %lld, but the weight has K = %lld", (long long)a->shape[1], (long long)K);
    if (M >= (int64_t(1) << 31)) return invalid("a: M = %lld rows; at most 2^31 - 1", (long long)M);
    if (bias) {
        GN_TRY(check_descriptor(bias, "bias"));
        GN_TRY(float_dtype(*bias, "bias", &p.bias_dtype));
        if (bias->ndim != 1 || bias->shape[0] != N)
            return bias->ndim == 1 ? invalid("bias: expected shape [N] = [%lld], got [%lld]", (long long)N, (long long)bias->shape[0])
                                   : invalid("bias: expected shape [N] = [%lld], got %d dims", (long long)N, bias->ndim);
        if (N > 1 && bias->strides[0] != 1) return invalid("bias: must be contiguous (stride 1), got stride %lld", (long long)bias->strides[0]);
    }
    GN_TRY(check_descriptor(out, "out"));
    GN_TRY(float_dtype(*out, "out", &p.out_dtype));
    GN_TRY(check_matrix(*out, "out", M, N, "[M, N]"));
    if (!is_empty(*out) && N > 1 && out->strides[1] != 1)
        return invalid("out: last dim must be contiguous (stride 1), got stride %lld", (long long)out->strides[1]);
    GN_TRY(check_no_self_overlap(*out, "out"));

    const gatednorm_tensor *inputs[] = {a, q, s, z, bias};
    const char *in_names[] = {"a", "qweight", "scales", "zeros", "bias"};
    for (int i = 0; i < 5; ++i) {
        if (!inputs[i]) continue;
        GN_TRY(check_same_device(*inputs[i], in_names[i], *a, "a"));
        GN_TRY(check_disjoint(*out, "out", inputs[i], in_names[i]));
    }
    GN_TRY(check_same_device(*out, "out", *a, "a"));
    bool host;
    GN_TRY(check_runnable(*a, "a", &host));

    size_t ws_need = 0;
    if (!host) {
        if (p.w.layout != GATEDNORM_W4A16_LAYOUT_TILED)
            return invalid("qweight: a PLAIN weight on %s; the GPU GEMM takes the TILED layout (gatednorm_w4a16_prepack)", device_name(a->device).c_str());
        int32_t native = 0;
        GN_TRY(gpu_w4a16_target(a->device.device_id, &native, "a"));
        if (prm.target != native)
            return invalid("params.target: the weight was packed for %s, but %s is a %s device; prepack it for this device",
                           target_name(prm.target), device_name(a->device).c_str(), target_name(native));
        if (!aligned16(p.w.tiled)) return invalid("qweight: data %p is not 16-byte aligned", (const void *)p.w.tiled);
        // the row stride in elements a multiple of 8 (16 bytes); a unit dim's stride is never used
        if (M > 0 && (!aligned16(data_ptr(*a)) || (M > 1 && a->strides[0] % 8)))
            return invalid("a: the GPU GEMM reads rows in 16-byte pieces: data %p and the row stride (%lld elements) must be 16-byte aligned",
                           (void *)data_ptr(*a), (long long)a->strides[0]);
        GN_TRY(gpu_w4a16_workspace_size(a->device.device_id, M, N, K, p.w.group, &ws_need, "a"));
    }
    if (ws) {
        GN_TRY(check_descriptor(ws, "workspace"));
        GN_TRY(check_bytes(*ws, "workspace", ws_need, "this GEMM (gatednorm_w4a16_workspace_size)"));
        GN_TRY(check_same_device(*ws, "workspace", *a, "a"));
        if (ws_need && !aligned16(data_ptr(*ws))) return invalid("workspace: data %p is not 16-byte aligned", (void *)data_ptr(*ws));
        GN_TRY(check_disjoint(*ws, "workspace", out, "out"));
        for (int i = 0; i < 5; ++i) GN_TRY(check_disjoint(*ws, "workspace", inputs[i], in_names[i]));
        p.workspace = data_ptr(*ws);
        p.workspace_bytes = size_t(ws->shape[0]);
    } else if (ws_need) {
        return invalid("workspace: NULL, but this GEMM needs %zu bytes on %s (gatednorm_w4a16_workspace_size)", ws_need, device_name(a->device).c_str());
    }

    p.m = M;
    p.a = data_ptr(*a);
    p.a_dtype = adt;
    p.a_sm = a->strides[0];
    p.bias = bias ? data_ptr(*bias) : nullptr;
    p.out = data_ptr(*out);
    p.out_sm = out->strides[0];
    p.device_id = a->device.device_id;
    p.pdl = prm.pdl != 0;
    if (M == 0) return GATEDNORM_STATUS_SUCCESS;  // validated, nothing to write
    return host ? cpu_w4a16_gemm(p) : gpu_w4a16_gemm(p, stream);
}

}  // namespace

extern "C" {

GATEDNORM_API gatednorm_status gatednorm_w4a16_params_init(gatednorm_w4a16_params *params, size_t size) {
    const gatednorm_w4a16_params d = defaults();
    return params_init(params, size, &d, kParams);
}

GATEDNORM_API gatednorm_status gatednorm_w4a16_prepacked_size(const gatednorm_w4a16_params *params, size_t *bytes) {
    return guarded("w4a16_prepacked_size", [&] {
        if (!bytes) return invalid("bytes: NULL");
        if (!params) return invalid("params: NULL; the size needs params.n, k, group_size and symmetric");
        gatednorm_w4a16_params prm;
        GN_TRY(read_params(params, &prm));
        W4Tiled t;
        GN_TRY(tiled_params(prm, &t, "the tiled size"));
        *bytes = size_t(t.total_bytes);
        return GATEDNORM_STATUS_SUCCESS;
    });
}

GATEDNORM_API gatednorm_status gatednorm_w4a16_prepack(const gatednorm_tensor *qweight, const gatednorm_tensor *scales, const gatednorm_tensor *zeros,
                                                       const gatednorm_tensor *packed, gatednorm_w4a16_params *params, void *stream) {
    return guarded("w4a16_prepack", [&] { return prepack_checked(qweight, scales, zeros, packed, params, stream); });
}

GATEDNORM_API gatednorm_status gatednorm_w4a16_workspace_size(const gatednorm_w4a16_params *params, int64_t m, gatednorm_device device, size_t *bytes) {
    return guarded("w4a16_workspace_size", [&] {
        if (!bytes) return invalid("bytes: NULL");
        if (!params) return invalid("params: NULL; the size needs params.n, k and group_size");
        gatednorm_w4a16_params prm;
        GN_TRY(read_params(params, &prm));
        // the GEMM's own limits, so the query fails where the GEMM would (and its sizes cannot overflow)
        if (m < 0) return invalid("m: expected >= 0, got %lld", (long long)m);
        if (m >= (int64_t(1) << 31)) return invalid("m: %lld rows; at most 2^31 - 1", (long long)m);
        if (is_host_device(device.device_type)) {  // a PLAIN weight of any G dividing K; no workspace
            GN_TRY(shape_params(prm, "the workspace size", false));
            *bytes = 0;
            return GATEDNORM_STATUS_SUCCESS;
        }
        // The GPU GEMM takes a TILED weight: the same checks as its params.  symmetric does not
        // change the workspace: left unset (-1), it is not asked for.
        gatednorm_w4a16_params geometry = prm;
        if (geometry.symmetric == -1) geometry.symmetric = 0;
        W4Tiled t;
        GN_TRY(tiled_params(geometry, &t, "the workspace size"));
        gatednorm_tensor probe;
        memset(&probe, 0, sizeof probe);
        probe.device = device;
        bool host;
        GN_TRY(check_runnable(probe, "device", &host));
        size_t b = 0;
        GN_TRY(gpu_w4a16_workspace_size(device.device_id, m, prm.n, prm.k, prm.group_size, &b, "device"));
        *bytes = b;
        return GATEDNORM_STATUS_SUCCESS;
    });
}

GATEDNORM_API gatednorm_status gatednorm_w4a16_gemm(const gatednorm_tensor *a, const gatednorm_tensor *qweight, const gatednorm_tensor *scales,
                                                    const gatednorm_tensor *zeros, const gatednorm_tensor *bias, const gatednorm_tensor *out,
                                                    const gatednorm_tensor *workspace, const gatednorm_w4a16_params *params, void *stream) {
    return guarded("w4a16_gemm", [&] { return gemm_checked(a, qweight, scales, zeros, bias, out, workspace, params, stream); });
}

}  // extern "C"
