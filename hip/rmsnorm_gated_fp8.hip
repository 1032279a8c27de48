// Gated RMSNorm + FP8 per-group quantization (ops.md §2): launcher and kernels.
//  - vec kernel (the fast path: 16-bit x, z of x's dtype or none, D % 8 == 0, D <= 256, 16-byte
//    aligned rows, a 16-bit copy or none): one pass, nothing in shared memory.  A team of TEAM
//    lanes (8, 16 or 32) owns HPT consecutive heads of one token, HPT = G / D when a group
//    spans heads, else 1; each head is LPR = next_pow2(D / 8) lanes, each lane one 16-byte
//    chunk of x and z (8 elements) held in registers.  The row's sum of squares reduces over
//    the head's LPR lanes, the group amax over the group's GL adjacent lanes (G / 8 when G
//    divides D, the team when it spans heads): a few xor-shuffles in groups of <= 32 lanes,
//    so no code depends on the warp width.  A lane writes 8 codes (one 8-byte store) and,
//    when it owns a group's first element, the group's scale.
//  - generic kernel: every other shape and dtype mix; a team of 32 lanes per segment (a head
//    when G <= D, the G / D heads of a group otherwise), passes over the segment through the
//    cache (sum of squares, group amax, then y again to write).  Correct everywhere, slower.
#include "backend.h"
#include "device_guard.h"
#include "fp8_quant.h"
#include "rmsnorm_gated_kernels.h"

namespace gn {
namespace {

struct Fp8Args {
    const char *x, *z;
    char *y;  // the copy, or nullptr
    const void *weight;
    int64_t x_st, x_sh, z_st, z_sh, y_st, y_sh;  // bytes
    Fp8QuantArgs qa;
    int32_t teams;            // tokens * segments per token (< 2^31, checked)
    int32_t segs;             // segments (teams) per token
    FastDiv segs_div;
    int32_t dim, heads, hpt;  // D, H, heads per segment
    int32_t lpr_log2;         // vec: lanes per head = 1 << lpr_log2
    int32_t gl;               // vec: lanes per group
    int32_t x_dtype, z_dtype, y_dtype, weight_dtype, round_dtype;
    int32_t norm_before_gate, activation, quantize_rounded, pdl;
    float eps, weight_offset, inv_dim;
};

__device__ __forceinline__ void pdl_entry(const Fp8Args &a) {
    if (a.pdl) {  // no-ops unless launched with the attribute; a uniform branch
        gn_wait_prior_grid();
        gn_allow_next_grid();
    }
}

// y rounded to a 16-bit dtype and widened back: the value an unfused pipeline stores and
// re-reads (quantize_rounded), with the copy's own rounding (pack_*x2 == f32_to_*).
__device__ __forceinline__ uint32_t pack16(float lo, float hi, int dt) {
    return dt == kBF16 ? pack_bf16x2(lo, hi) : pack_f16x2(lo, hi);
}

template <int XDT, int TEAM>
__global__ void __launch_bounds__(kBlockThreads) rmsnorm_gated_fp8_vec_kernel(const Fp8Args a) {
    constexpr int VEC = 8;
    const int lane = threadIdx.x % TEAM;
    const int32_t team = blockIdx.x * (kBlockThreads / TEAM) + threadIdx.x / TEAM;
    const bool team_ok = team < a.teams;
    const int lpr = 1 << a.lpr_log2;
    const int hh = lane >> a.lpr_log2, col = (lane & (lpr - 1)) * VEC;
    const uint32_t t = a.segs == 1 ? uint32_t(team) : fast_div(uint32_t(team), a.segs_div);
    const int h = (team - int32_t(t) * a.segs) * a.hpt + hh;
    const bool ok = team_ok && col < a.dim;
    pdl_entry(a);

    // x and z first (the DRAM round trip everything waits on), then the weight's raw bits.
    uint32_t xw[4] = {0u, 0u, 0u, 0u}, zw[4] = {0u, 0u, 0u, 0u};
    if (ok) {
        load_words(a.x + int64_t(t) * a.x_st + int64_t(h) * a.x_sh + col * 2, xw);
        if (a.z) load_words(a.z + int64_t(t) * a.z_st + int64_t(h) * a.z_sh + col * 2, zw);
    }
    RawChunk<VEC> wraw{};
    if (ok) wraw = load_raw_chunk<VEC>(static_cast<const char *>(a.weight) + col * dtype_size(a.weight_dtype), a.weight_dtype);

    const bool has_z = a.z != nullptr;
    const bool gate_first = has_z && !a.norm_before_gate, gate_after = has_z && a.norm_before_gate;
    float u[VEC], g[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
        u[k] = word_element<XDT>(xw, k);
        g[k] = has_z ? activate(word_element<XDT>(zw, k), a.activation) : 1.0f;
    }
    if (gate_first) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) u[k] *= g[k];
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < VEC; ++k) ss += u[k] * u[k];
    for (int o = lpr >> 1; o > 0; o >>= 1) ss += gn_shfl_xor(ss, o, 32);  // the head's lanes
    const float rstd = rsqrtf(ss * a.inv_dim + a.eps);

    float w[VEC], y[VEC];
    if (a.weight_dtype == kBF16) widen_chunk<kBF16>(wraw, a.weight_offset, w);
    else if (a.weight_dtype == kF16) widen_chunk<kF16>(wraw, a.weight_offset, w);
    else widen_chunk<kF32>(wraw, a.weight_offset, w);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
        y[k] = u[k] * rstd * w[k];
        if (gate_after) y[k] *= g[k];
    }
    if (a.y || a.quantize_rounded) {
        const int rdt = a.round_dtype;
        uint32_t pw[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) pw[i] = pack16(y[2 * i], y[2 * i + 1], rdt);
        if (a.y && ok) store_words(a.y + int64_t(t) * a.y_st + int64_t(h) * a.y_sh + col * 2, pw);
        if (a.quantize_rounded) {
            if (rdt == kBF16) {
#pragma unroll
                for (int k = 0; k < VEC; ++k) y[k] = word_element<kBF16>(pw, k);
            } else {
#pragma unroll
                for (int k = 0; k < VEC; ++k) y[k] = word_element<kF16>(pw, k);
            }
        }
    }
    // Lanes past D (and teams past the end) hold y = 0: they take part in the shuffles.
    uint32_t m = 0;
#pragma unroll
    for (int k = 0; k < VEC; ++k) m = ok && abs_bits(y[k]) > m ? abs_bits(y[k]) : m;
    m = lanes_max_bits(m, a.gl);
    if (!ok) return;
    const float scale = group_scale(a.qa, m);
    uint32_t codes[2];
    encode_codes(a.qa, y, scale, codes);
    // Element of the token's row, in 32 bits (vec_team keeps rows under 2^31): a 64-bit
    // division here costs each lane ~100 instructions, as much as the rest of its epilogue.
    const uint32_t e = uint32_t(h) * uint32_t(a.dim) + uint32_t(col);
    *reinterpret_cast<uint2 *>(a.qa.q + int64_t(t) * a.qa.q_st + e) = make_uint2(codes[0], codes[1]);
    const uint32_t group = uint32_t(a.qa.group);
    if (e % group == 0) store_scale(a.qa, t, e / group, scale);
}

// ---- generic kernel
constexpr int kGenericLanes = 32;

struct GenericRow {
    const char *x, *z;
    char *y;
    float rstd;
};

__device__ __forceinline__ float y_at(const Fp8Args &a, const GenericRow &r, int64_t c) {
    const int xs = dtype_size(a.x_dtype), zs = dtype_size(a.z_dtype), ws = dtype_size(a.weight_dtype);
    float u = load_as_f32(r.x + c * xs, a.x_dtype);
    const float g = r.z ? activate(load_as_f32(r.z + c * zs, a.z_dtype), a.activation) : 1.0f;
    if (r.z && !a.norm_before_gate) u *= g;
    float v = u * r.rstd * (load_as_f32(static_cast<const char *>(a.weight) + c * ws, a.weight_dtype) + a.weight_offset);
    if (r.z && a.norm_before_gate) v *= g;
    return v;
}

__device__ __forceinline__ float rounded(const Fp8Args &a, float v) {
    if (!a.quantize_rounded) return v;
    if (a.round_dtype == kBF16) return bf16_to_f32(f32_to_bf16(v));
    if (a.round_dtype == kF16) return f16_to_f32(f32_to_f16(v));
    return v;
}

__device__ GenericRow generic_row(const Fp8Args &a, int64_t t, int64_t h, int lane) {
    GenericRow r;
    r.x = a.x + t * a.x_st + h * a.x_sh;
    r.z = a.z ? a.z + t * a.z_st + h * a.z_sh : nullptr;
    r.y = a.y ? a.y + t * a.y_st + h * a.y_sh : nullptr;
    const int xs = dtype_size(a.x_dtype), zs = dtype_size(a.z_dtype);
    float ss = 0.0f;
    for (int64_t c = lane; c < a.dim; c += kGenericLanes) {
        float u = load_as_f32(r.x + c * xs, a.x_dtype);
        if (r.z && !a.norm_before_gate) u *= activate(load_as_f32(r.z + c * zs, a.z_dtype), a.activation);
        ss += u * u;
    }
    ss = team_sum<kGenericLanes>(ss);
    r.rstd = rsqrtf(ss * a.inv_dim + a.eps);
    return r;
}

// Codes of elements [c0, c1) of row r (element e0 of the token's row at c0), its copy too.
__device__ void write_codes(const Fp8Args &a, const GenericRow &r, int64_t t, int64_t e0, int64_t c0, int64_t c1, int lane, float scale) {
    uint8_t *q = reinterpret_cast<uint8_t *>(a.qa.q + t * a.qa.q_st);
    const bool nan = scale != scale;
    const float inv = 1.0f / scale;
    for (int64_t c = c0 + lane; c < c1; c += kGenericLanes) {
        const float v = y_at(a, r, c);
        if (r.y) store_from_f32(r.y + c * dtype_size(a.y_dtype), a.y_dtype, v);
        q[e0 + c - c0] = nan ? fp8_nan_code(a.qa.format) : uint8_t(fp8_encode_x2(rounded(a, v) * inv, 0.0f, a.qa.format, a.qa.fp8_max));
    }
}

__device__ uint32_t amax_of(const Fp8Args &a, const GenericRow &r, int64_t c0, int64_t c1, int lane, uint32_t m) {
    for (int64_t c = c0 + lane; c < c1; c += kGenericLanes) {
        const uint32_t b = abs_bits(rounded(a, y_at(a, r, c)));
        m = b > m ? b : m;
    }
    return m;
}

template <int PDL_UNUSED = 0>
__global__ void __launch_bounds__(kBlockThreads) rmsnorm_gated_fp8_generic_kernel(const Fp8Args a) {
    const int lane = threadIdx.x % kGenericLanes;
    const int64_t team = int64_t(blockIdx.x) * (kBlockThreads / kGenericLanes) + threadIdx.x / kGenericLanes;
    if (team >= a.teams) return;  // whole teams exit together: their shuffles stay among themselves
    pdl_entry(a);
    const int64_t t = team / a.segs, seg = team % a.segs;
    const int64_t D = a.dim, G = a.qa.group;
    if (G <= D) {  // the segment is one head holding D / G groups
        const GenericRow r = generic_row(a, t, seg, lane);
        for (int64_t c0 = 0; c0 < D; c0 += G) {
            const uint32_t m = lanes_max_bits(amax_of(a, r, c0, c0 + G, lane, 0u), kGenericLanes);
            const float s = group_scale(a.qa, m);
            write_codes(a, r, t, seg * D + c0, c0, c0 + G, lane, s);
            if (lane == 0) store_scale(a.qa, t, (seg * D + c0) / G, s);
        }
    } else {  // one group over hpt heads: amax over every head first, then the codes
        uint32_t m = 0;
        for (int hh = 0; hh < a.hpt; ++hh) m = amax_of(a, generic_row(a, t, seg * a.hpt + hh, lane), 0, D, lane, m);
        m = lanes_max_bits(m, kGenericLanes);
        const float s = group_scale(a.qa, m);
        for (int hh = 0; hh < a.hpt; ++hh) {
            const int64_t h = seg * a.hpt + hh;
            write_codes(a, generic_row(a, t, h, lane), t, h * D, 0, D, lane, s);
        }
        if (lane == 0) store_scale(a.qa, t, seg, s);
    }
}

bool aligned(const void *p, unsigned n) { return (reinterpret_cast<uintptr_t>(p) & (n - 1)) == 0; }

int log2_ceil(int64_t v) {
    int l = 0;
    while ((int64_t(1) << l) < v) ++l;
    return l;
}

// The vec kernel's team (lanes) for this problem, or 0 where it cannot take it.
int vec_team(const RmsnormGatedFp8Problem &pr) {
    const RmsnormGatedProblem &p = pr.norm;
    const int64_t D = p.dim, G = pr.quant.group;
    if (p.x.dtype == kF32 || (p.z.data && p.z.dtype != p.x.dtype)) return 0;
    if (p.out.data && p.out.dtype == kF32) return 0;
    if (D % 8 != 0 || D > 256 || !aligned(p.weight, 16)) return 0;
    if (p.heads * D >= (int64_t(1) << 31)) return 0;  // a token's row indexed in 32 bits (the kernel's e)
    const RowsView *views[3] = {&p.x, &p.z, &p.out};
    for (const RowsView *v : views)
        if (v->data && (!aligned(v->data, 16) || (v->stride_t * 2) % 16 || (v->stride_h * 2) % 16)) return 0;
    if (!aligned(pr.quant.q, 8) || pr.quant.q_st % 8) return 0;
    const int lpr = 1 << log2_ceil(D / 8);
    int hpt = 1;
    if (G < D) {
        if (G % 8 || (G / 8) & (G / 8 - 1)) return 0;  // G / 8 lanes, a power of two
    } else if (G > D) {
        const int64_t r = G / D;
        if (r & (r - 1) || r > 32) return 0;
        hpt = int(r);
    }
    const int team = lpr * hpt;
    return team == 8 || team == 16 || team == 32 ? team : 0;
}

Fp8Args make_args(const RmsnormGatedFp8Problem &pr, int team) {
    const RmsnormGatedProblem &p = pr.norm;
    const QuantFp8Spec &qs = pr.quant;
    Fp8Args a{};
    const int64_t xs = dtype_size(p.x.dtype), zs = dtype_size(p.z.dtype), ys = dtype_size(p.out.dtype);
    a.x = p.x.data;
    a.z = p.z.data;
    a.y = p.out.data;
    a.weight = p.weight;
    a.x_st = p.x.stride_t * xs;
    a.x_sh = p.x.stride_h * xs;
    a.z_st = p.z.stride_t * zs;
    a.z_sh = p.z.stride_h * zs;
    a.y_st = p.out.stride_t * ys;
    a.y_sh = p.out.stride_h * ys;
    a.qa.q = qs.q;
    a.qa.scales = qs.scales;
    a.qa.q_st = qs.q_st;
    a.qa.s_st_bytes = qs.s_st * (qs.scale_format == kScaleE8m0 ? 1 : 4);
    a.qa.s_sk = qs.s_sk;
    a.qa.group = int32_t(qs.group);
    a.qa.groups = int32_t(qs.groups);
    a.qa.format = qs.format;
    a.qa.scale_format = qs.scale_format;
    a.qa.fp8_max = qs.fp8_max;
    a.qa.amax_floor = qs.amax_floor;
    a.dim = int32_t(p.dim);
    a.heads = int32_t(p.heads);
    a.hpt = qs.group > p.dim ? int32_t(qs.group / p.dim) : 1;
    a.segs = a.heads / a.hpt;
    a.teams = int32_t(p.tokens * a.segs);
    a.segs_div = make_fast_div(uint32_t(a.segs));
    a.lpr_log2 = log2_ceil(p.dim / 8);
    a.gl = qs.group >= p.dim ? team : int32_t(qs.group / 8);
    a.x_dtype = p.x.dtype;
    a.z_dtype = p.z.dtype;
    a.y_dtype = p.out.dtype;
    a.weight_dtype = p.weight_dtype;
    a.round_dtype = pr.round_dtype;
    a.norm_before_gate = p.norm_before_gate;
    a.activation = p.activation;
    a.quantize_rounded = qs.quantize_rounded;
    a.eps = p.eps;
    a.weight_offset = p.weight_offset;
    a.inv_dim = 1.0f / float(p.dim);
    return a;
}

template <class Kernel>
hipError_t launch(Kernel k, unsigned grid, const Fp8Args &a, hipStream_t stream, bool pdl) {
#if defined(GN_HAS_PDL)
    if (pdl) return gn_launch_pdl(k, grid, kBlockThreads, stream, a);
#else
    (void)pdl;
#endif
    k<<<grid, kBlockThreads, 0, stream>>>(a);
    return hipSuccess;
}

template <int XDT>
hipError_t launch_vec(const Fp8Args &a, int team, hipStream_t s, bool pdl) {
    const unsigned grid = unsigned((int64_t(a.teams) * team + kBlockThreads - 1) / kBlockThreads);
    if (team == 8) return launch(rmsnorm_gated_fp8_vec_kernel<XDT, 8>, grid, a, s, pdl);
    if (team == 16) return launch(rmsnorm_gated_fp8_vec_kernel<XDT, 16>, grid, a, s, pdl);
    return launch(rmsnorm_gated_fp8_vec_kernel<XDT, 32>, grid, a, s, pdl);
}

}  // namespace

gatednorm_status gpu_rmsnorm_gated_fp8(const RmsnormGatedFp8Problem &pr, void *stream_ptr) {
    const RmsnormGatedProblem &p = pr.norm;
    if (p.tokens * p.heads >= (int64_t(1) << 31) || p.dim > (int64_t(1) << 30) || pr.quant.group >= (int64_t(1) << 31) ||
        pr.quant.groups >= (int64_t(1) << 31))
        return fail(GATEDNORM_STATUS_UNSUPPORTED, "x: %lld rows of %lld; the GPU kernels take fewer than 2^31 rows of at most 2^30",
                    (long long)(p.tokens * p.heads), (long long)p.dim);
    if (p.tokens * p.heads == 0) return GATEDNORM_STATUS_SUCCESS;
    DeviceGuard guard(p.device_id);
    if (!guard.ok()) return guard.status();
#if defined(GN_HAS_PDL)
    const bool pdl = p.pdl && gn_device_has_pdl(p.device_id);
#else
    const bool pdl = false;
#endif
    const hipStream_t s = static_cast<hipStream_t>(stream_ptr);
    const int team = vec_team(pr);
    Fp8Args a = make_args(pr, team);
    a.pdl = pdl;
    hipError_t err;
    if (team) {
        err = p.x.dtype == kBF16 ? launch_vec<kBF16>(a, team, s, pdl) : launch_vec<kF16>(a, team, s, pdl);
    } else {
        const unsigned grid = unsigned((int64_t(a.teams) + kBlockThreads / kGenericLanes - 1) / (kBlockThreads / kGenericLanes));
        err = launch(rmsnorm_gated_fp8_generic_kernel<>, grid, a, s, pdl);
    }
    if (err != hipSuccess) return runtime_fail(err, "rmsnorm_gated_fp8 launch");
    return check_launch("rmsnorm_gated_fp8");
}

}  // namespace gn
