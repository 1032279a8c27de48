#include "quant_checks.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <string>

#include "numerics.h"

namespace gn {

gatednorm_quant_fp8 quant_fp8_defaults() {
    gatednorm_quant_fp8 b;
    memset(&b, 0, sizeof b);
    b.format = GATEDNORM_FP8_FORMAT_E4M3FN;
    b.fp8_max = 0.0f;
    b.amax_floor = 1e-10f;
    b.scale_format = GATEDNORM_SCALE_FORMAT_FP32;
    b.group_size = 128;
    return b;
}

gatednorm_status check_fp8_max(float fp8_max, int format, const char *name, float *resolved) {
    const float fmax = fp8_format_max(format);
    if (fp8_max == 0.0f && !signbit(fp8_max)) {
        *resolved = fmax;
        return GATEDNORM_STATUS_SUCCESS;
    }
    if (!(fp8_max >= 1.0f && fp8_max <= fmax))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: expected 0 (the format's max) or a value in [1, %g], got %.9g", name,
                    double(fmax), double(fp8_max));
    *resolved = fp8_max;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status read_quant_block(const gatednorm_quant_fp8 &b, QuantFp8Spec *spec) {
    if (b.format != GATEDNORM_FP8_FORMAT_E4M3FN && b.format != GATEDNORM_FP8_FORMAT_E4M3FNUZ)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.quant.format: expected E4M3FN (0) or E4M3FNUZ (1), got %d", b.format);
    float fp8_max = 0.0f;
    GN_TRY(check_fp8_max(b.fp8_max, b.format, "params.quant.fp8_max", &fp8_max));
    // >= 1e-30: every scale (>= floor / 448) is then a normal fp32, whose UE8M0 rounding
    // and E8M0 exponent byte are plain bit operations.
    if (!(b.amax_floor >= 1e-30f) || isinf(b.amax_floor))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.quant.amax_floor: expected a finite value >= 1e-30, got %.9g",
                    double(b.amax_floor));
    if (b.scale_format < GATEDNORM_SCALE_FORMAT_FP32 || b.scale_format > GATEDNORM_SCALE_FORMAT_E8M0_PACKED)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                    "params.quant.scale_format: expected FP32 (0), FP32_UE8M0 (1), E8M0 (2) or E8M0_PACKED (3), got %d", b.scale_format);
    if (b.group_size < 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.quant.group_size: expected >= 1, got %lld", (long long)b.group_size);
    if (b.quantize_rounded != 0 && b.quantize_rounded != 1)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.quant.quantize_rounded: expected 0 or 1, got %d", b.quantize_rounded);
    for (int i = 0; i < 3; ++i)
        if (b.reserved[i] != 0)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.quant.reserved[%d]: must be 0, got %d", i, b.reserved[i]);
    spec->format = b.format;
    spec->fp8_max = fp8_max;
    spec->amax_floor = b.amax_floor;
    spec->scale_format = b.scale_format;
    spec->group = b.group_size;
    spec->quantize_rounded = b.quantize_rounded != 0;
    return GATEDNORM_STATUS_SUCCESS;
}


gatednorm_status collapse_tokens(const TokenDims *const t[], int n, int64_t *tokens, int64_t stride[]) {
    const TokenDims &ref = *t[0];
    int64_t ext[GATEDNORM_MAX_DIMS];
    int64_t st[kMaxTokenTensors][GATEDNORM_MAX_DIMS];
    int m = 0;
    for (int i = 0; i < ref.ndim; ++i) {
        if (ref.shape[i] == 1) continue;  // a unit dim addresses nothing
        if (ref.shape[i] == 0) {  // no token at all: whatever the strides, nothing to address
            *tokens = 0;
            for (int k = 0; k < n; ++k) stride[k] = 0;
            return GATEDNORM_STATUS_SUCCESS;
        }
        ext[m] = ref.shape[i];
        for (int k = 0; k < n; ++k) st[k][m] = t[k]->strides[i];
        ++m;
    }
    // Merge from the innermost pair outwards: dim i-1 folds into dim i when, for every
    // tensor, its stride is dim i's extent times dim i's stride.
    while (m > 1) {
        const int i = m - 1;
        // Extents and strides are bounded (an empty tensor returned above): an overflowing
        // product is no stride, so it does not merge.
        int64_t prod = 0;
        for (int k = 0; k < n; ++k)
            if (__builtin_mul_overflow(ext[i], st[k][i], &prod) || st[k][i - 1] != prod)
                return fail(GATEDNORM_STATUS_INVALID_ARGUMENT,
                            "%s: token dims %s with strides %s do not merge into one token dim (a dim merges with the next "
                            "when its stride is the next dim's extent times its stride)",
                            t[k]->name, dims_text(t[k]->shape, t[k]->ndim).c_str(), dims_text(t[k]->strides, t[k]->ndim).c_str());
        if (__builtin_mul_overflow(ext[i - 1], ext[i], &ext[i - 1])) ext[i - 1] = 0;  // cannot happen: the tensors were checked
        for (int k = 0; k < n; ++k) st[k][i - 1] = st[k][i];
        --m;
    }
    *tokens = m ? ext[0] : 1;
    for (int k = 0; k < n; ++k) stride[k] = m ? st[k][0] : 0;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_quant_outputs(const gatednorm_tensor &q, const gatednorm_tensor &scales, const TokenDims &tok, int64_t row,
                                     QuantFp8Spec *spec, TokenDims *q_tok, TokenDims *s_tok) {
    // q: fp8 of the configured format, or raw bytes
    const gatednorm_dtype &qd = q.dtype;
    const bool fn = qd.code == GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FN && qd.bits == 8;
    const bool fnuz = qd.code == GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FNUZ && qd.bits == 8;
    const bool raw = qd.code == GATEDNORM_DTYPE_CODE_UINT && qd.bits == 8;
    const char *fmt_name = spec->format == kE4M3FNUZ ? "E4M3FNUZ (1)" : "E4M3FN (0)";
    const char *want = spec->format == kE4M3FNUZ ? "float8_e4m3fnuz" : "float8_e4m3fn";
    if (!(raw || (fn && spec->format == kE4M3FN) || (fnuz && spec->format == kE4M3FNUZ))) {
        if (fn || fnuz)
            return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "q: dtype %s does not match params.quant.format %s; expected %s or uint8",
                        dtype_name(qd).c_str(), fmt_name, want);
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "q: dtype %s not supported; expected %s (params.quant.format %s) or uint8",
                    dtype_name(qd).c_str(), want, fmt_name);
    }
    int64_t want_shape[GATEDNORM_MAX_DIMS + 1];
    for (int i = 0; i < tok.ndim; ++i) want_shape[i] = tok.shape[i];
    want_shape[tok.ndim] = row;
    bool same = q.ndim == tok.ndim + 1;
    for (int i = 0; same && i < q.ndim; ++i) same = q.shape[i] == want_shape[i];
    if (!same)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "q: expected shape %s (x's token dims, then the row of heads * head_dim), got %s",
                    dims_text(want_shape, tok.ndim + 1).c_str(), dims_text(q.shape, q.ndim).c_str());
    if (row > 1 && q.strides[tok.ndim] != 1 && !is_empty(q))
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "q: last dim must be contiguous (stride 1), got stride %lld",
                    (long long)q.strides[tok.ndim]);
    GN_TRY(check_no_self_overlap(q, "q"));

    // group size: G divides the row (the op checks G against D)
    const int64_t G = spec->group;
    if (row % G != 0)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "params.quant.group_size: %lld does not divide the token row of %lld elements",
                    (long long)G, (long long)row);
    const int64_t K = row / G;
    const bool packed = spec->scale_format == kScaleE8m0Packed;
    const int64_t cols = packed ? (K + 3) / 4 : K;
    const gatednorm_dtype &sd = scales.dtype;
    bool ok;
    const char *swant;
    switch (spec->scale_format) {
        case kScaleF32:
        case kScaleF32Ue8m0:
            ok = sd.code == GATEDNORM_DTYPE_CODE_FLOAT && sd.bits == 32;
            swant = "float32";
            break;
        case kScaleE8m0:
            ok = (sd.code == GATEDNORM_DTYPE_CODE_UINT || sd.code == GATEDNORM_DTYPE_CODE_FLOAT8_E8M0FNU) && sd.bits == 8;
            swant = "uint8 or float8_e8m0fnu";
            break;
        default:
            ok = (sd.code == GATEDNORM_DTYPE_CODE_INT || sd.code == GATEDNORM_DTYPE_CODE_UINT) && sd.bits == 32;
            swant = "int32 or uint32";
            break;
    }
    static const char *kScaleNames[] = {"FP32 (0)", "FP32_UE8M0 (1)", "E8M0 (2)", "E8M0_PACKED (3)"};
    if (!ok)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "scales: dtype %s does not suit params.quant.scale_format %s; expected %s",
                    dtype_name(sd).c_str(), kScaleNames[spec->scale_format], swant);
    want_shape[tok.ndim] = cols;
    same = scales.ndim == tok.ndim + 1;
    for (int i = 0; same && i < scales.ndim; ++i) same = scales.shape[i] == want_shape[i];
    if (!same)
        return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "scales: expected shape %s (x's token dims, then %s%lld groups of %lld), got %s",
                    dims_text(want_shape, tok.ndim + 1).c_str(), packed ? "4-group words of " : "", (long long)K, (long long)G,
                    dims_text(scales.shape, scales.ndim).c_str());
    GN_TRY(check_no_self_overlap(scales, "scales"));

    spec->q = data_ptr(q);
    spec->scales = data_ptr(scales);
    spec->groups = K;
    spec->s_sk = cols > 1 ? scales.strides[tok.ndim] : 0;
    q_tok->name = "q";
    s_tok->name = "scales";
    q_tok->ndim = s_tok->ndim = tok.ndim;
    for (int i = 0; i < tok.ndim; ++i) {
        q_tok->shape[i] = s_tok->shape[i] = tok.shape[i];
        q_tok->strides[i] = q.strides[i];
        s_tok->strides[i] = scales.strides[i];
    }
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status check_disjoint(const gatednorm_tensor &out, const char *out_name, const gatednorm_tensor &in, const char *in_name) {
    if (memory_overlaps(out, in)) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "%s: overlaps %s", out_name, in_name);
    return GATEDNORM_STATUS_SUCCESS;
}

}  // namespace gn
