// RMSNorm / fused add-RMSNorm with optional FP8 per-group outputs, and the standalone group
// quantization (ops.md §3): launcher and kernels.  One block per token row.
//  - row kernel (the fast path: 16-bit x, a residual of x's dtype or none, hidden % VEC == 0,
//    256 <= hidden <= 16384, 16-byte aligned rows): hidden / VEC lanes, each holding VEC
//    elements in registers (VEC = 8, one 16-byte load; VEC = 16 above 8192 and, where weight
//    and copy share x's dtype, for the shapes preferred_vec names), read once and written once.
//    VEC 16 is contiguous, or without FP8 outputs two VEC 8 chunks a span apart (the split
//    layout: 16-byte accesses a lane, split_pays).  The sum of squares reduces by
//    xor-shuffles in groups of at most 32 lanes (32 divides every warp width) and then
//    across 256-element spans in shared memory, in an order that does not
//    depend on VEC (row_sum_squares); a group of G elements is G / VEC adjacent lanes, so
//    its amax is fp8_quant.h's lane reduction and never leaves registers.
//  - fp32-residual row kernel (add_rmsnorm with an fp32 residual beside 16-bit x, hidden
//    256..8192, aligned rows): the row kernel's scheme at VEC 8 with the stored row as floats.
//  - flat kernel (group_quant_fp8 only, where the row kernel's layout rules hold at 16
//    elements a lane): no row sum, so no block a row; 256-lane blocks over all rows' lanes,
//    the row kernel's quantize_chunk, the same bits (run 54: 2-3% faster from T = 1024).
//  - generic kernel: any other size, dtype mix or alignment; 256 threads per row, the sum in
//    one pass (which also stores the rounded residual), then groups handed to 32-lane teams
//    that re-read the stored row (amax pass, then codes and y).
#include <stdlib.h>
#include <string.h>

#include "add_rmsnorm_kernels.h"
#include "backend.h"
#include "device_guard.h"

namespace gn {
namespace {

__device__ __forceinline__ void pdl_entry(const AddArgs &a) {
    if (a.pdl) {  // no-ops unless launched with the attribute; a uniform branch
        gn_wait_prior_grid();
        gn_allow_next_grid();
    }
}

// The row's sum of squares, in one order whatever VEC is (so rmsnorm at VEC 16 gives the bits
// add_rmsnorm gives at VEC 8 on the stored residual).  The order is VEC 8's tree, on 8-element
// chunks: each chunk summed k = 0..7 (fmaf, no contraction left to the compiler); 32 chunks
// (a 256-element span) by an xor butterfly over chunk positions, offsets 16, 8, 4, 2, 1; the
// spans' partials added in order, by every thread, from shared memory.
//  - VEC 8: a lane is a chunk, a span 32 lanes (xor-shuffles of width 32).
//  - VEC 16: lane j holds chunks 2j (e) and 2j + 1 (o), a span is 16 lanes.  The levels 16, 8,
//    4, 2 pair chunk p with p ^ m, the same parity in lane j ^ m / 2: shuffles at 8, 4, 2, 1 on
//    e and o, each lane adding own + other exactly as VEC 8's lanes 2j and 2j + 1 do.  Level 1
//    is e + o in the lane: VEC 8's lane 2j (the one that writes its span's partial when j = 0)
//    adds own (chunk 2j) + other (2j + 1), the same operands in the same order.
// Chunks past hidden hold +0 in both (H % 16 == 0 at VEC 16: a lane is all in or all out); only
// the ceil(hidden / 256) spans are summed, so VEC 16's extra all-zero half-group never enters.
// Shuffle groups of at most 32 lanes: 32 divides every warp width.

// The chunk's elements are widened from their 16-bit words at each use: holding the row as
// words, not floats, is what keeps VEC 16 at 32 registers.
template <int XDT>
__device__ __forceinline__ float chunk_squares(const uint32_t *words) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
        const float v = word_element<XDT>(words, k);
        s = fmaf(v, v, s);
    }
    return s;
}

// The spans' partials (each span's lanes hold its sum, `v`) added in span order, by every
// thread: the last step of both row sums below.
// TWO: each LANES-lane group holds two spans' sums, `v` of span 2g and `v_hi` of span 2g + 1
// (the split VEC 16 layout).
template <int LANES, bool TWO = false>
__device__ __forceinline__ float sum_span_partials(float v, int hidden, float v_hi = 0.0f) {
    __shared__ float partial[kMaxSpans];
    if (threadIdx.x % LANES == 0) {
        if constexpr (TWO) {
            partial[2 * (threadIdx.x / LANES)] = v;
            partial[2 * (threadIdx.x / LANES) + 1] = v_hi;
        } else {
            partial[threadIdx.x / LANES] = v;
        }
    }
    __syncthreads();
    const int spans = (hidden + kSpan - 1) / kSpan;
    float s = 0.0f;
    for (int i = 0; i < spans; ++i) s += partial[i];
    return s;
}

template <int XDT, int VEC, bool SPLIT = false>
__device__ __forceinline__ float row_sum_squares(const uint32_t (&r)[VEC / 2], int hidden) {
    static_assert(VEC == 8 || VEC == 16, "chunks of 8, one or two a lane");
    constexpr int kLanes = kSpan / VEC;  // lanes of a span
    if constexpr (SPLIT) {  // VEC 8's butterfly on each of the lane's two spans
        const float lo = span_butterfly<kShuffleGroup>(chunk_squares<XDT>(r));
        const float hi = span_butterfly<kShuffleGroup>(chunk_squares<XDT>(r + kChunk / 2));
        return sum_span_partials<kShuffleGroup, true>(lo, hidden, hi);
    } else if constexpr (VEC == 8) {
        return sum_span_partials<kLanes>(span_butterfly<kLanes>(chunk_squares<XDT>(r)), hidden);
    } else {
        return sum_span_partials<kLanes>(
            span_butterfly<kLanes>(chunk_squares<XDT>(r)) + span_butterfly<kLanes>(chunk_squares<XDT>(r + kChunk / 2)), hidden);
    }
}

// The same sum for a lane holding its 8 stored values as floats (an fp32 residual, VEC 8):
// each chunk summed k = 0..7 by fmaf, then as row_sum_squares at VEC 8, so the same bits as
// the generic kernel's sum of the same stored row.
__device__ __forceinline__ float row_sum_squares_f32(const float (&r)[8], int hidden) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < kChunk; ++k) s = fmaf(r[k], r[k], s);
    return sum_span_partials<kShuffleGroup>(span_butterfly<kShuffleGroup>(s), hidden);
}

// The FP8 outputs of a lane's VEC values y of row t: group amax over the group's lanes, codes,
// and the scale from the group's first lane.  Every lane calls it (the shuffles need them).
// LEAN: the lane's amax by lane_amax_bits and the G = 128 lane levels compiled in (fewer
// instructions: the epilogue is issue-bound at small T); off in the VEC 16 builds capped at
// 32 registers, which spill 4-8 bytes with it (ptxas -v: fp16 on sm_90a, both dtypes on
// sm_80).  The same bits either way.
template <int VEC, bool LEAN = true>
__device__ __forceinline__ void quantize_chunk(const AddArgs &a, int64_t t, int col, bool ok, float (&y)[VEC]) {
    if (a.quantize_rounded) {  // the value an unfused pipeline stored and re-read
#pragma unroll
        for (int k = 0; k < VEC; ++k) y[k] = round_to(y[k], a.round_dtype);
    }
    // Lanes past hidden hold y = 0 and take part in the shuffles (whole groups of them).
    const uint32_t m = LEAN ? lanes_max_bits_at<kShuffleGroup, 128 / VEC>(lane_amax_bits(y, ok), a.gl)
                            : lanes_max_bits<kShuffleGroup>(lane_amax_bits_u32(y, ok), a.gl);
    if (!ok) return;
    const float scale = group_scale(a.qa, m);
    uint32_t codes[VEC / 4];
    encode_codes(a.qa, y, scale, codes);
    char *qp = a.qa.q + t * a.qa.q_st + col;
    if constexpr (VEC == 8) *reinterpret_cast<uint2 *>(qp) = make_uint2(codes[0], codes[1]);
    else *reinterpret_cast<uint4 *>(qp) = make_uint4(codes[0], codes[1], codes[2], codes[3]);
    if ((col & (a.qa.group - 1)) == 0) store_scale(a.qa, t, col >> a.g_log2, scale);  // G: a power of two here
}

// ---- the split VEC 16 layout (SPLIT: no FP8 outputs; by default where split_pays)
// VEC 16 as two VEC 8 chunks a lane: lane j of 32-lane group g holds chunk j of span 2g (`lo`)
// and chunk j of span 2g + 1 (`hi`, kSpan elements on).  Each load and store is then one
// 16-byte access a lane, 512 contiguous bytes a 32-lane group, where the contiguous layout's
// 32 bytes a lane store half of every sector an instruction (run 110's probe: 3.07 against
// 3.95 TB/s for a copy).  The sum of squares and every output are VEC 8's, lane for lane, so
// the bits are VEC 8's by construction.  `ok` / `ok_hi`: each chunk lies before hidden (an
// odd count of spans leaves the last group's hi chunks out).
using Words4 = uint32_t[4];

__device__ __forceinline__ Words4 &words_half(uint32_t (&w)[8], int h) { return *reinterpret_cast<Words4 *>(w + 4 * h); }
__device__ __forceinline__ const Words4 &words_half(const uint32_t (&w)[8], int h) { return *reinterpret_cast<const Words4 *>(w + 4 * h); }

// A lane's first element: VEC contiguous elements, or the split pair's lo chunk.
template <int VEC, bool SPLIT>
__device__ __forceinline__ int lane_col() {
    if constexpr (SPLIT) return int(threadIdx.x / kShuffleGroup) * 2 * kSpan + int(threadIdx.x % kShuffleGroup) * kChunk;
    return int(threadIdx.x) * VEC;
}

// A split lane's 16-bit words loaded from / stored to p (its first element): two 16-byte
// chunks kSpan elements apart.
__device__ __forceinline__ void load_split_words(const char *p, bool ok, bool ok_hi, uint32_t (&w)[8]) {
    if (ok) load_words(p, words_half(w, 0));
    if (ok_hi) load_words(p + kSpan * 2, words_half(w, 1));
}
__device__ __forceinline__ void store_split_words(char *p, bool ok, bool ok_hi, const uint32_t (&w)[8]) {
    if (ok) store_words(p, words_half(w, 0));
    if (ok_hi) store_words(p + kSpan * 2, words_half(w, 1));
}

// A lane's VEC weights as raw bits; SAME: a 16-bit weight of x's dtype (half the words; the
// only build SPLIT has).
template <int VEC, bool SAME, bool SPLIT = false>
__device__ __forceinline__ RawChunk<VEC> load_weight_chunk(const char *p, int dtype, bool ok_hi = true) {
    static_assert(!SPLIT || SAME, "the split layout reads a 16-bit weight");
    if constexpr (!SAME) return load_raw_chunk<VEC>(p, dtype);
    RawChunk<VEC> r{};
    if constexpr (SPLIT) load_split_words(p, true, ok_hi, reinterpret_cast<uint32_t (&)[8]>(r.w));
    else load_words(p, reinterpret_cast<uint32_t (&)[VEC / 2]>(r.w));
    return r;
}

// The rest of a row-kernel lane once its x (and residual) words are in registers: the stored
// row, the row sum, y, the copy and the FP8 outputs.  `wraw`: the weight's raw bits (at `wp`)
// where they were loaded beside x (kLateWeight<MINB, VEC> false), else read here after the
// row sum.
// Every thread of the block calls it (the row sum's barrier, the group shuffles).
template <int MINB, int VEC>
constexpr bool kLateWeight = MINB > 1 && VEC == 16;

// The split layout's rest of a lane (add_row_finish's, below, for one chunk at a time): the
// row sum, then each chunk's y and copy.  y = stored * rstd * (weight + offset), as the
// other layouts.  No FP8 outputs: slower than the contiguous layout with them (run 111),
// and their builds spilled at the 32-register cap.
template <int XDT, int VEC, int MINB>
__device__ __forceinline__ void split_finish(const AddArgs &a, int64_t t, int col, bool ok, bool ok_hi, const uint32_t (&sw)[8],
                                             const char *wp, RawChunk<VEC> &wraw) {
    float rstd = 1.0f;
    if (a.normalize) {
        rstd = rsqrtf(fmaf(row_sum_squares<XDT, VEC, true>(sw, a.hidden), a.inv_hidden, a.eps));
        if (kLateWeight<MINB, VEC> && ok) wraw = load_weight_chunk<VEC, true, true>(wp, a.weight_dtype, ok_hi);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const bool in = h ? ok_hi : ok;
        const int c = col + h * kSpan;
        float y[kChunk];
#pragma unroll
        for (int k = 0; k < kChunk; ++k) {
            const float v = word_element<XDT>(sw, h * kChunk + k);
            y[k] = a.normalize ? v * rstd * (word_element<XDT>(wraw.w, h * kChunk + k) + a.weight_offset) : v;
        }
        if (a.y && in) store_vec<XDT, kChunk>(a.y + t * a.y_st + c * 2, y);
    }
}

template <int XDT, int VEC, bool RES, bool QUANT, bool SAME, int MINB, bool SPLIT>
__device__ __forceinline__ void add_row_finish(const AddArgs &a, int64_t t, int col, bool ok, bool ok_hi, const uint32_t (&xw)[VEC / 2],
                                               const uint32_t (&rw)[VEC / 2], const char *wp, RawChunk<VEC> &wraw) {
    constexpr int W = VEC / 2;  // 32-bit words of a 16-bit chunk
    // The row as stored: x, or x + residual rounded to the residual's dtype (x's here).
    uint32_t sw[W];
    if constexpr (RES) {  // the sum rounded to x's dtype (numerics.h's rule), stored
#pragma unroll
        for (int i = 0; i < W; ++i) sw[i] = add_rounded_x2<XDT>(xw[i], rw[i]);
        if constexpr (SPLIT) store_split_words(a.res_out + t * a.res_out_st + col * 2, ok, ok_hi, sw);
        else if (ok) store_words(a.res_out + t * a.res_out_st + col * 2, sw);
    } else {
#pragma unroll
        for (int i = 0; i < W; ++i) sw[i] = xw[i];
    }
    if constexpr (SPLIT) {
        split_finish<XDT, VEC, MINB>(a, t, col, ok, ok_hi, sw, wp, wraw);
        return;
    }
    float y[VEC];
    if (a.normalize) {
        const float rstd = rsqrtf(fmaf(row_sum_squares<XDT, VEC>(sw, a.hidden), a.inv_hidden, a.eps));
        if (kLateWeight<MINB, VEC> && ok) wraw = load_weight_chunk<VEC, SAME>(wp, a.weight_dtype);
        float w[VEC];
        if constexpr (SAME) widen_chunk<XDT>(wraw, a.weight_offset, w);
        else widen_chunk_as(wraw, a.weight_dtype, a.weight_offset, w);
#pragma unroll
        for (int k = 0; k < VEC; ++k) y[k] = word_element<XDT>(sw, k) * rstd * w[k];
    } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) y[k] = word_element<XDT>(sw, k);
    }
    if (a.y && ok) {
        char *yp = a.y + t * a.y_st + col * dtype_size(a.y_dtype);
        if constexpr (SAME) store_vec<XDT, VEC>(yp, y);
        else store_vec_as(yp, a.y_dtype, y);
    }
    if constexpr (QUANT) quantize_chunk<VEC, !(VEC == 16 && MINB == 2)>(a, t, col, ok, y);
}

// RES (a residual is added), QUANT (FP8 outputs) and SAME (weight and copy of x's dtype) are
// compiled in, and the row is held as its 16-bit words, widened at each use: every variant
// then fits 32 registers at VEC 16 without spills (ptxas -v; it was 56 with run-time dtypes
// and floats), so an SM holds 2048 lanes, twice VEC 8's bytes in flight.  MINB is the blocks
// of kMaxRowThreads an SM must hold: 2 caps the registers at 32; VEC 16 with other dtypes
// keeps MINB 1 (56 registers).
// SPLIT: VEC 16 in the split layout (above).
template <int XDT, int VEC, bool RES, bool QUANT, bool SAME, int MINB, bool SPLIT = false>
__global__ void GN_LAUNCH_BOUNDS(kMaxRowThreads, MINB * kMaxRowThreads) add_rmsnorm_row_kernel(const AddArgs a) {
    static_assert(!SPLIT || (VEC == 16 && SAME && !QUANT), "the split layout: VEC 16, x's dtype throughout, no FP8 outputs");
    constexpr int W = VEC / 2;  // 32-bit words of a 16-bit chunk
    const int64_t t = blockIdx.x;
    const int col = lane_col<VEC, SPLIT>();
    const bool ok = col < a.hidden;
    const bool ok_hi = SPLIT ? col + kSpan < a.hidden : ok;
    pdl_entry(a);

    uint32_t xw[W], rw[W];
#pragma unroll
    for (int i = 0; i < W; ++i) xw[i] = rw[i] = 0u;
    if constexpr (SPLIT) {
        load_split_words(a.x + t * a.x_st + col * 2, ok, ok_hi, xw);
        if constexpr (RES) load_split_words(a.res + t * a.res_st + col * 2, ok, ok_hi, rw);
    } else if (ok) {
        load_words(a.x + t * a.x_st + col * 2, xw);
        if constexpr (RES) load_words(a.res + t * a.res_st + col * 2, rw);
    }
    // The weight's raw bits, loaded beside x (one DRAM wait a thread) except in the 32-register
    // build, where they would spill: there they are read after the row sum, from L2 (every
    // row reads the same weight), which other resident blocks hide.
    RawChunk<VEC> wraw{};
    const char *wp = static_cast<const char *>(a.weight) + col * dtype_size(a.weight_dtype);
    if (!kLateWeight<MINB, VEC> && ok && a.normalize) wraw = load_weight_chunk<VEC, SAME, SPLIT>(wp, a.weight_dtype, ok_hi);
    add_row_finish<XDT, VEC, RES, QUANT, SAME, MINB, SPLIT>(a, t, col, ok, ok_hi, xw, rw, wp, wraw);
}

// add_rmsnorm with an fp32 residual beside 16-bit x (an engine keeping its residual stream in
// fp32): VEC 8, the stored row held as 8 floats (x + residual in fp32 is the stored value: no
// rounding), the residual read and written as two 16-byte words a lane.  The generic kernel
// took 3-5x this kernel's time per byte (run 95).  Same sum order, y and quantization as the
// 16-bit row kernel, so add_rmsnorm's y is still rmsnorm's on the stored (fp32) residual.
template <int XDT, bool QUANT>
__global__ void GN_LAUNCH_BOUNDS(kMaxRowThreads, kMaxRowThreads) add_rmsnorm_row_res32_kernel(const AddArgs a) {
    const int64_t t = blockIdx.x;
    const int col = threadIdx.x * 8;
    const bool ok = col < a.hidden;
    pdl_entry(a);
    uint32_t xw[4] = {0u, 0u, 0u, 0u};
    float4 r0 = make_float4(0.f, 0.f, 0.f, 0.f), r1 = r0;
    RawChunk<8> wraw{};
    if (ok) {
        load_words(a.x + t * a.x_st + col * 2, xw);
        const float4 *rp = reinterpret_cast<const float4 *>(a.res + t * a.res_st + col * 4);
        r0 = rp[0];
        r1 = rp[1];
        wraw = load_raw_chunk<8>(static_cast<const char *>(a.weight) + col * dtype_size(a.weight_dtype), a.weight_dtype);
    }
    float r[8] = {r0.x, r0.y, r0.z, r0.w, r1.x, r1.y, r1.z, r1.w};
#pragma unroll
    for (int k = 0; k < 8; ++k) r[k] = word_element<XDT>(xw, k) + r[k];  // the fp32 sum is the stored value
    if (ok) {
        float4 *ro = reinterpret_cast<float4 *>(a.res_out + t * a.res_out_st + col * 4);
        ro[0] = make_float4(r[0], r[1], r[2], r[3]);
        ro[1] = make_float4(r[4], r[5], r[6], r[7]);
    }
    const float rstd = rsqrtf(fmaf(row_sum_squares_f32(r, a.hidden), a.inv_hidden, a.eps));
    float w[8];
    widen_chunk_as(wraw, a.weight_dtype, a.weight_offset, w);
    float y[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = r[k] * rstd * w[k];
    if (a.y && ok) store_vec_as(a.y + t * a.y_st + col * dtype_size(a.y_dtype), a.y_dtype, y);
    if constexpr (QUANT) quantize_chunk<8>(a, t, col, ok, y);
}

// ---- flat group-quant kernel
// group_quant_fp8 has no row reduction (y = x), so its lanes need not be laid out a block a
// row: lane g of the grid takes elements [16 c, 16 c + 16) of row t (g = t * hidden / 16 +
// c) and blocks are 256 lanes whatever the hidden size.  A group is G / 16 adjacent lanes,
// aligned (G divides hidden), so quantize_chunk's lane reduction serves it unchanged; lanes
// past the end form whole groups of their own, load the last lane's chunk and store
// nothing.  The row kernel holds hidden / VEC lanes a block (448 at [T, 7168], 4 blocks and
// 1792 lanes an SM); here an SM holds 2048, in blocks small enough that the last wave is short.
constexpr int kFlatVec = 16, kFlatBlock = 256;

// Flat lane g: row t and column col (a lane past the end as the last lane); whether it is a lane.
__device__ __forceinline__ bool flat_lane_at(const AddArgs &a, uint32_t g, uint32_t &t, int &col) {
    const bool ok = g < uint32_t(a.flat_lanes);
    const uint32_t gc = ok ? g : uint32_t(a.flat_lanes - 1);
    t = fast_div(gc, a.flat_lpr_div);
    col = int(gc - t * uint32_t(a.flat_lpr)) * kFlatVec;
    return ok;
}

template <int XDT>
__global__ void GN_LAUNCH_BOUNDS(kFlatBlock, 2048) group_quant_flat_kernel(const AddArgs a) {
    uint32_t t;
    int col;
    const bool ok = flat_lane_at(a, blockIdx.x * kFlatBlock + threadIdx.x, t, col);
    pdl_entry(a);
    uint32_t xw[kFlatVec / 2];
    load_words(a.x + int64_t(t) * a.x_st + col * 2, xw);
    float y[kFlatVec];
#pragma unroll
    for (int k = 0; k < kFlatVec; ++k) y[k] = word_element<XDT>(xw, k);
    quantize_chunk<kFlatVec>(a, t, col, ok, y);
}

// ---- generic kernel
__global__ void __launch_bounds__(kGenericThreads) add_rmsnorm_generic_kernel(const AddArgs a) {
    pdl_entry(a);
    add_rmsnorm_generic_row(a, blockIdx.x);
}

bool aligned(const void *p, unsigned n) { return (reinterpret_cast<uintptr_t>(p) & (n - 1)) == 0; }

// The row kernel's VEC (8 or 16) for this problem, or 0 where only the generic kernel can take it.
// 16 above 8192 (a block holds at most 1024 lanes).  Below, 16 only in the 32-register build
// (weight and copy of x's dtype: same_dtypes; other dtypes take 56 registers at 16, which
// halves the blocks an SM holds and gained nothing in run 35), and where run 36 measured it
// faster (bf16, us, VEC 8 / VEC 16):
//  - no residual (rmsnorm, group quant; one 16-byte load a lane at 8): hidden 4096 T = 1024
//    6.37 / 6.59, T = 8192 40.6 / 35.0 (97% of copy); hidden 7168 T = 128 3.54 / 3.48,
//    T = 1024 12.09 / 9.86, T = 8192 83.8 / 60.5; group quant [1024, 7168] 10.2 / 8.0.
//    So 16 from 2048 rows, or from 128 above hidden 4096 (at 8, 896 lanes a block: two
//    blocks an SM).
//  - a residual (two loads a lane at 8 already): plain add-RMSNorm 8 is as fast or faster
//    everywhere (hidden 4096 T = 8192 67.7 / 72.4); with FP8 outputs 16 wins above hidden
//    4096 (7168: T = 1024 21.7 / 20.6, T = 8192 141.8 / 137.9; 4096: 11.8 / 13.0 at 1024).
// Small T kept 8 (more lanes, the weight read beside x) until the split layout's early-weight build.
// split_pays adds the rows where VEC 16's split layout is faster still (runs 111-112).
// The sum of squares' order does not depend on VEC (row_sum_squares), so add_rmsnorm still
// gives the bits rmsnorm gives on the stored residual (tests/test_add_rmsnorm.py).
bool same_dtypes(const AddRmsnormProblem &p) {
    return (!p.normalize || p.weight_dtype == p.x_dtype) && (!p.y || p.y_dtype == p.x_dtype);
}

bool vec16_pays(const AddRmsnormProblem &p) {
    if (!same_dtypes(p)) return false;
    const bool wide = p.hidden > 4096;
    if (!p.res) return p.tokens >= 2048 || (wide && p.tokens >= 128);
    return p.has_quant && wide && p.tokens >= 128;
}

// Which build of the split layout runs: none (VEC 8 or contiguous VEC 16), the 32-register
// one (the weight read after the row sum, 2048 lanes an SM), or the one reading the weight
// beside x (43-46 registers: at small T an SM holds a row or two, and a weight read after
// the row sum is one more DRAM round trip on the row's chain).
enum SplitBuild : int { kNoSplit = 0, kSplitLate = 1, kSplitEarly = 2 };

// Where VEC 16's split layout measured faster than both contiguous widths: no FP8 outputs
// (slower with them at every T measured: the late build in run 111, the early one in run
// 113, 0.2-0.35 us behind VEC 8 at T <= 16), weight and copy of x's dtype (its only
// builds), hidden <= 8192, and
//  - hidden 2048-8192 while one wave of the early-weight build holds every row, past which
//    the late build's 32 registers (more blocks an SM) win: on a 132-SM GPU (48 registers
//    a lane allocated: an SM sub-partition's 16384 registers hold 10 warps, so 40 warps an
//    SM, floor(40 / warps a block) blocks, a block being hidden / 512 warps) 10 blocks an SM
//    at hidden 2048, 5 at 4096, 4 at 5120, 3 at 6144, 2 at 7168-8192 (Nsight Compute's
//    register limit at 7168: 2, run 115), so up to 1024 / 512 / 384 / 256 rows.  Run 115
//    (H100, us, late / early): hidden 6144 rmsnorm T = 300 / 384 4.51 / 4.30, 4.95 / 4.77,
//    plain 6.40 / 6.34, 7.79 / 7.49, T = 512 5.41 / 5.99; hidden 7168 T = 300 / 384 4.91 /
//    5.77, 5.22 / 6.04 (past the wave); run 117 saw the rule take the faster build at 6144.
//    Run 112 (H200, us, VEC 8 / early split / liger): rmsnorm [1, 4096] 2.33 / 2.22 /
//    2.14, [128, 4096] 2.84 / 2.71 / 2.47, [1, 7168] 2.73 / 2.53 / 2.30, [128, 7168] 3.36
//    (late split) / 3.18 / 2.87; plain add [1, 7168] 2.94 / 2.70 / 2.59, [128, 7168] 4.23
//    (late) / 4.07 / 3.67.  Run 113
//    (H100, us, before / early): hidden 2048 rmsnorm T = 1 / 256 / 512 1.99 / 1.95, 2.85 /
//    2.68, 3.34 / 3.21, plain 2.22 / 2.18, 3.51 / 3.42, 4.66 / 4.58; rmsnorm [1024, 2048]
//    4.53 (late) / 4.25; [512, 4096] 4.66 (late) / 4.42; [512, 5120] 5.35 (late) / 4.96;
//    past one wave: [512, 7168] 6.11 (late) / 7.04, plain 10.72 / 11.18; [1024, 4096]
//    6.58 / 6.63; H200 rmsnorm [1024, 7168] 9.15 late / 10.86 early;
//  - the late-weight build (run 111, H100, us, before / split) at hidden 4097-8192 from 257
//    rows (rmsnorm [1024, 7168] 11.59 / 10.42, plain add 22.53 / 21.45; at 8192 rows within
//    1%), and rmsnorm at hidden <= 4096 in the one-wave range (T = 1024 7.21 / 6.62; at 8192
//    the contiguous VEC 16 is as fast: H100 48.0 / 49.5, H200 36.12 / 35.31).
SplitBuild split_pays(const AddRmsnormProblem &p) {
    if (!same_dtypes(p) || p.has_quant || p.hidden > 8192) return kNoSplit;
    const int64_t early_rows = p.hidden <= 2048 ? 1024 : p.hidden <= 5120 ? 512 : p.hidden <= 6144 ? 384 : 256;
    if (p.hidden >= 2048 && p.tokens <= early_rows) return kSplitEarly;
    if (p.hidden > 4096) return kSplitLate;
    return !p.res && p.tokens >= 512 && p.tokens < 2048 ? kSplitLate : kNoSplit;
}

// GATEDNORM_ROW_VEC (8, 16, 16s, 16se; else 0): the tests' and the bench's hook to run the
// row kernel at either width (both serve some shapes by default), read at every call (the
// bench's modes set it).  "16s" / "16se": 16 in the split layout (late / early weight) where VEC 16 is taken
// with weight and copy of x's dtype and no FP8 outputs (else contiguous); "16": contiguous.
int forced_row_vec(SplitBuild &split) {
    const char *v = getenv("GATEDNORM_ROW_VEC");
    split = !v ? kNoSplit : !strcmp(v, "16s") ? kSplitLate : !strcmp(v, "16se") ? kSplitEarly : kNoSplit;
    if (split) return 16;
    return v && (!strcmp(v, "8") || !strcmp(v, "16")) ? atoi(v) : 0;
}

// The forced width overrides the rule where legal.
int preferred_vec(const AddRmsnormProblem &p, int forced) {
    const int64_t H = p.hidden;
    if (H > 8192) return 16;
    const bool even16 = H % 16 == 0 && (!p.has_quant || p.quant.group % 16 == 0);
    if (forced) return forced == 16 && !even16 ? 8 : forced;
    return even16 && (vec16_pays(p) || split_pays(p) != kNoSplit) ? 16 : 8;
}

// Whether every lane's `vec`-element chunk can be read and written whole (16-bit rows and
// outputs aligned, FP8 groups a power-of-two count of lanes <= 32): the row kernel's and the
// flat kernel's layout rule.
bool chunks_fit(const AddRmsnormProblem &p, int vec) {
    if (p.hidden % vec) return false;
    if (!aligned(p.x, 16) || (p.x_st * 2) % 16) return false;
    const int rs = dtype_size(p.res_dtype);  // 2, or 4 for the fp32-residual kernel
    if (p.res && (!aligned(p.res, 16) || (p.res_st * rs) % 16 || !aligned(p.res_out, 16) || (p.res_out_st * rs) % 16)) return false;
    if (p.y && (!aligned(p.y, 16) || (p.y_st * dtype_size(p.y_dtype)) % 16)) return false;
    if (p.normalize && !aligned(p.weight, 16)) return false;
    if (p.has_quant) {
        const int64_t G = p.quant.group, gl = G / vec;
        if (G % vec || gl > 32 || (gl & (gl - 1))) return false;
        if (!aligned(p.quant.q, vec) || p.quant.q_st % vec) return false;
    }
    return true;
}

// Whether the row kernel (a block a row) can take this problem at `vec` elements a lane.
bool row_kernel_fits(const AddRmsnormProblem &p, int vec) { return p.hidden / vec <= kMaxRowThreads && chunks_fit(p, vec); }

// Whether add_rmsnorm_row_res32_kernel takes the problem: an fp32 residual beside 16-bit x,
// hidden >= 256, and the row kernel's layout rules at 8 elements a lane (so hidden <= 8192).
bool res32_row(const AddRmsnormProblem &p) {
    return p.normalize && p.res && p.res_dtype == kF32 && p.x_dtype != kF32 && p.hidden >= 256 && row_kernel_fits(p, 8);
}

// Whether group_quant_fp8 takes the flat kernel: 16-bit x, the chunks of 16 elements fit,
// fewer than 2^31 lanes, and no forced row width (which keeps the row kernel).
bool flat_group_quant(const AddRmsnormProblem &p, int forced) {
    if (p.normalize || p.res || p.y || !p.has_quant || p.x_dtype == kF32 || forced) return false;
    return chunks_fit(p, kFlatVec) && p.tokens * (p.hidden / kFlatVec) < (int64_t(1) << 31);
}

// The preferred VEC, else the other one: a problem the row kernel can take at either width
// never leaves it for the generic kernel, which sums squares in the same order (so gives the
// same bits) but takes 3.2-9x the row kernel's time a byte (run 95).  rmsnorm and add_rmsnorm
// may prefer different widths (e.g. G = 512 fits only 16, 8-byte aligned q rows only 8).
int row_vec(const AddRmsnormProblem &p, int forced) {
    if (p.x_dtype == kF32 || (p.res && p.res_dtype != p.x_dtype)) return 0;
    if (p.hidden < 256 || p.hidden > 16384) return 0;
    const int vec = preferred_vec(p, forced);
    if (row_kernel_fits(p, vec)) return vec;
    const int other = vec == 16 ? 8 : 16;
    return row_kernel_fits(p, other) ? other : 0;
}

// split: VEC 16's split layout (same dtypes, no FP8 outputs), a 32-lane group per two spans.
template <int XDT, int VEC, bool RES, bool QUANT>
hipError_t launch_row_as(const AddArgs &a, bool same, SplitBuild split, unsigned grid, hipStream_t s, bool pdl) {
    const unsigned lanes = unsigned(a.hidden / VEC);
    const unsigned block = (lanes + kShuffleGroup - 1) / kShuffleGroup * kShuffleGroup;
    if constexpr (VEC == 8) {
        return gn_launch(add_rmsnorm_row_kernel<XDT, 8, RES, QUANT, false, 2>, grid, block, s, a, pdl);
    } else {
        if constexpr (!QUANT) {
            if (split) {
                const unsigned pairs = unsigned((a.hidden + 2 * kSpan - 1) / (2 * kSpan));
                return split == kSplitEarly
                           ? gn_launch(add_rmsnorm_row_kernel<XDT, 16, RES, false, true, 1, true>, grid, pairs * kShuffleGroup, s, a, pdl)
                           : gn_launch(add_rmsnorm_row_kernel<XDT, 16, RES, false, true, 2, true>, grid, pairs * kShuffleGroup, s, a, pdl);
            }
        }
        if (same) return gn_launch(add_rmsnorm_row_kernel<XDT, 16, RES, QUANT, true, 2>, grid, block, s, a, pdl);
        return gn_launch(add_rmsnorm_row_kernel<XDT, 16, RES, QUANT, false, 1>, grid, block, s, a, pdl);
    }
}

template <int XDT, int VEC>
hipError_t launch_row_vec(const AddArgs &a, bool same, SplitBuild split, unsigned grid, hipStream_t s, bool pdl) {
    if (a.res)
        return a.has_quant ? launch_row_as<XDT, VEC, true, true>(a, same, split, grid, s, pdl)
                           : launch_row_as<XDT, VEC, true, false>(a, same, split, grid, s, pdl);
    return a.has_quant ? launch_row_as<XDT, VEC, false, true>(a, same, split, grid, s, pdl)
                       : launch_row_as<XDT, VEC, false, false>(a, same, split, grid, s, pdl);
}

template <int XDT>
hipError_t launch_row_res32(const AddArgs &a, unsigned grid, unsigned block, hipStream_t s, bool pdl) {
    return a.has_quant ? gn_launch(add_rmsnorm_row_res32_kernel<XDT, true>, grid, block, s, a, pdl)
                       : gn_launch(add_rmsnorm_row_res32_kernel<XDT, false>, grid, block, s, a, pdl);
}

template <int XDT>
hipError_t launch_row(const AddArgs &a, int vec, bool same, SplitBuild split, unsigned grid, hipStream_t s, bool pdl) {
    return vec == 8 ? launch_row_vec<XDT, 8>(a, same, kNoSplit, grid, s, pdl) : launch_row_vec<XDT, 16>(a, same, split, grid, s, pdl);
}

// gatednorm_last_kernel's name of the launch: op, kernel, VEC, the 56-register build, the
// split layout's builds (late / early weight; never group quant, which has FP8 outputs).
const char *kernel_name(bool normalize, int vec, bool same, SplitBuild split) {
    if (split) return split == kSplitEarly ? "add_rmsnorm.row.vec16se" : "add_rmsnorm.row.vec16s";
    static const char *const kNames[2][4] = {
        {"group_quant_fp8.generic", "group_quant_fp8.row.vec8", "group_quant_fp8.row.vec16", "group_quant_fp8.row.vec16.dtypes"},
        {"add_rmsnorm.generic", "add_rmsnorm.row.vec8", "add_rmsnorm.row.vec16", "add_rmsnorm.row.vec16.dtypes"}};
    return kNames[normalize][vec == 0 ? 0 : vec == 8 ? 1 : same ? 2 : 3];
}

}  // namespace

AddArgs make_add_args(const AddRmsnormProblem &p, int vec) {
    const QuantFp8Spec &qs = p.quant;
    AddArgs a{};
    a.x = p.x;
    a.res = p.res;
    a.res_out = p.res_out;
    a.y = p.y;
    a.weight = p.weight;
    a.x_st = p.x_st * dtype_size(p.x_dtype);
    a.res_st = p.res_st * dtype_size(p.res_dtype);
    a.res_out_st = p.res_out_st * dtype_size(p.res_dtype);
    a.y_st = p.y_st * dtype_size(p.y_dtype);
    if (p.has_quant) {
        a.qa = fp8_quant_args(qs);
        a.gl = vec ? int32_t(qs.group / vec) : 1;
        while ((int64_t(1) << a.g_log2) < qs.group) ++a.g_log2;
    }
    a.hidden = int32_t(p.hidden);
    a.x_dtype = p.x_dtype;
    a.res_dtype = p.res_dtype;
    a.y_dtype = p.y_dtype;
    a.weight_dtype = p.weight_dtype;
    a.round_dtype = p.round_dtype;
    a.normalize = p.normalize;
    a.has_quant = p.has_quant;
    a.quantize_rounded = p.has_quant && qs.quantize_rounded;
    a.eps = p.eps;
    a.weight_offset = p.weight_offset;
    a.inv_hidden = 1.0f / float(p.hidden);
    return a;
}

gatednorm_status gpu_add_rmsnorm(const AddRmsnormProblem &p, void *stream_ptr) {
    if (p.tokens >= (int64_t(1) << 31) || p.hidden > (int64_t(1) << 30) || p.quant.groups >= (int64_t(1) << 31))
        return fail(GATEDNORM_STATUS_UNSUPPORTED, "x: %lld rows of %lld; the GPU kernels take fewer than 2^31 rows of at most 2^30",
                    (long long)p.tokens, (long long)p.hidden);
    if (p.tokens * p.hidden == 0) return GATEDNORM_STATUS_SUCCESS;
    DeviceGuard guard(p.device_id);
    if (!guard.ok()) return guard.status();
#if defined(GN_HAS_PDL)
    const bool pdl = p.pdl && gn_device_has_pdl(p.device_id);
#else
    const bool pdl = false;
#endif
    const hipStream_t s = static_cast<hipStream_t>(stream_ptr);
    SplitBuild force_split = kNoSplit;
    const int forced = forced_row_vec(force_split);
    if (flat_group_quant(p, forced)) {
        AddArgs a = make_add_args(p, kFlatVec);
        a.pdl = pdl;
        a.flat_lpr = int32_t(p.hidden / kFlatVec);
        a.flat_lanes = int32_t(p.tokens * a.flat_lpr);
        a.flat_lpr_div = make_fast_div(uint32_t(a.flat_lpr));
        const unsigned grid = unsigned((int64_t(a.flat_lanes) + kFlatBlock - 1) / kFlatBlock);
        const hipError_t err = p.x_dtype == kBF16 ? gn_launch(group_quant_flat_kernel<kBF16>, grid, kFlatBlock, s, a, pdl)
                                                  : gn_launch(group_quant_flat_kernel<kF16>, grid, kFlatBlock, s, a, pdl);
        if (err != hipSuccess) return launch_fail(err, "group_quant_fp8", "x");
        const gatednorm_status st = check_launch("group_quant_fp8");
        if (st == GATEDNORM_STATUS_SUCCESS) note_kernel("group_quant_fp8.flat");
        return st;
    }
    if (res32_row(p)) {
        AddArgs a = make_add_args(p, 8);
        a.pdl = pdl;
        const unsigned block = unsigned((p.hidden / 8 + kShuffleGroup - 1) / kShuffleGroup * kShuffleGroup);
        const hipError_t err = p.x_dtype == kBF16 ? launch_row_res32<kBF16>(a, unsigned(p.tokens), block, s, pdl)
                                                  : launch_row_res32<kF16>(a, unsigned(p.tokens), block, s, pdl);
        if (err != hipSuccess) return launch_fail(err, "add_rmsnorm", "x");
        const gatednorm_status st = check_launch("add_rmsnorm");
        if (st == GATEDNORM_STATUS_SUCCESS) note_kernel("add_rmsnorm.row.vec8.res32");
        return st;
    }
    const int vec = row_vec(p, forced);
    const bool same = same_dtypes(p);
    // The split layout: VEC 16 taken, x's dtype throughout, no FP8 outputs (its builds).
    SplitBuild split = kNoSplit;
    if (vec == 16 && same && !p.has_quant) split = forced ? force_split : split_pays(p);
    AddArgs a = make_add_args(p, vec);
    a.pdl = pdl;
    const unsigned grid = unsigned(p.tokens);
    hipError_t err;
    if (vec)
        err = p.x_dtype == kBF16 ? launch_row<kBF16>(a, vec, same, split, grid, s, pdl) : launch_row<kF16>(a, vec, same, split, grid, s, pdl);
    else err = gn_launch(add_rmsnorm_generic_kernel, grid, kGenericThreads, s, a, pdl);
    if (err != hipSuccess) return launch_fail(err, p.normalize ? "add_rmsnorm" : "group_quant_fp8", "x");
    const gatednorm_status st = check_launch(p.normalize ? "add_rmsnorm" : "group_quant_fp8");
    if (st == GATEDNORM_STATUS_SUCCESS) note_kernel(kernel_name(p.normalize, vec, same, split));
    return st;
}

}  // namespace gn
