// Launcher for gated RMSNorm: picks the kernel and its team shape from D, the dtypes and
// the alignment.
#include "backend.h"
#include "device_guard.h"
#include "rmsnorm_gated_kernels.h"

namespace gn {
namespace {

// Largest row the register-resident vec kernel holds: 256 lanes x 4 chunks x 8 elements.
constexpr int kVecMaxDim = kBlockThreads * 4 * 8;

bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

bool vec_path_ok(const RmsnormGatedProblem &p) {
    if (p.dim % 8 != 0 || p.dim > kVecMaxDim || !aligned16(p.weight)) return false;
    if (p.z.data && p.z.dtype != p.x.dtype) return false;
    const RowsView *views[3] = {&p.x, &p.z, &p.out};
    for (const RowsView *v : views) {
        if (!v->data) continue;
        const int64_t es = dtype_size(v->dtype);
        if (!aligned16(v->data) || (v->stride_t * es) % 16 || (v->stride_h * es) % 16) return false;
    }
    return true;
}

// One pass: a block per group of rows, no persistent loop.  Measured on the H100 against
// a persistent grid of SMs x resident blocks: equal at small T, 15% faster at 524k rows
// (the block scheduler overlaps one block's tail with the next one's loads).
unsigned grid_for(int64_t rows, int64_t rows_per_block) { return unsigned((rows + rows_per_block - 1) / rows_per_block); }

// Where and how to launch: the stream, whether with programmatic dependent launch, and
// whether x and z may be read through the non-coherent (read-only) path.
struct Launch {
    hipStream_t stream;
    bool pdl;             // only set where the device has it (gn_device_has_pdl)
    bool inputs_read_only;  // out is neither x nor z: nothing the kernel reads is written by it
};

// The flags of the kernels launched with PDL: the kPdl build, which waits for the prior
// grid.  Platforms without PDL never launch them, so they compile nothing extra.
#if defined(GN_HAS_PDL)
constexpr int kPdlFlags = kPdl;
#else
constexpr int kPdlFlags = 0;
#endif

// The PDL build (which waits for the prior grid) where l.pdl, else the plain one, through
// gn_launch (its launch-size check, its PDL attribute).
template <class Kernel>
hipError_t launch(Kernel plain, Kernel with_pdl, unsigned grid, unsigned block, const RmsnormGatedArgs &a, const Launch &l) {
    return gn_launch(l.pdl ? with_pdl : plain, dim3(grid), dim3(block), l.stream, a, l.pdl);
}

template <int XDT, int ODT, int TPR, int CPT, int VEC = 8, int BLOCK = kBlockThreads,
          int MIN_BLOCKS = kMinBlocksPerSM<XDT, CPT>, int FLAGS = 0>
hipError_t launch_vec(const RmsnormGatedArgs &a, const Launch &l) {
    // The PDL build never reads through the read-only path: a PDL-launched kernel's x and z
    // may still be being written by the previous grid when it starts, and the compiler may
    // issue ld.global.nc above griddepcontrol.wait (it did so in W4A16's lean kernels).
    return launch(rmsnorm_gated_vec_kernel<XDT, ODT, TPR, CPT, VEC, FLAGS, BLOCK, MIN_BLOCKS>,
                  rmsnorm_gated_vec_kernel<XDT, ODT, TPR, CPT, VEC, kPdlFlags ? (FLAGS & ~kLoadNc) | kPdlFlags : FLAGS, BLOCK, MIN_BLOCKS>,
                  grid_for(a.rows, BLOCK / TPR), BLOCK, a, l);
}

// Up to this many rows of D <= 128, lanes take 4-element chunks (8-byte loads of 16-bit
// data): twice the threads of 8-element chunks.  Small problems are latency-bound, and more
// resident threads with less work each hide it better (ncu at T = 128, H = 32: FLA's
// 4-element programs ran at twice our achieved occupancy, docs/perf-log.md run 6).  Run 7's A/B
// (H100): 4-element chunks win at 4k rows (3.17 vs 3.40 us), 8-element ones from 24k rows
// up (10.68 vs 11.16 us at 32k); the switch sits between, untested there.
constexpr int kSmallRows = 8192;

// Above kSmallRows with 64 < D <= 128, one 8-element chunk a lane in 128-thread blocks:
// 0.5-1.8% faster than 256 at every shape from 24k to 131k rows (H200, runs 14 and 15).
// Its register budget, for 16-bit x, by row count (run 18, same process): 40 registers (12
// blocks per multiprocessor) up to kDenseRows, 1.1-1.5% faster than 32 at 24k-32k rows; 32
// registers (16 blocks, no spills) from there, 3.5-5.3% faster than 40 at 98k-524k rows and
// 1.8-1.9% faster than two 8-element chunks a lane at 393k-524k.  The switch sits between
// 32k and 98k, untested there.
constexpr int kDenseRows = 1 << 16;
constexpr int kMinBlocksDense = 8;  // 256 threads' worth: 16 blocks of 128
// Below kDenseRows, x and z are loaded through the read-only path (ld.global.nc) when out is
// neither of them: 1.0-1.4% faster at 24k-32k rows in both passes of run 23's tuner (the
// 40-register kernel, contiguous and strided z); L2's 256-byte prefetch hint was 1.5-2% slower.

// fp32 x (two 16-byte loads a chunk, untested at 32 registers) keeps run 15's switch: two
// 8-element chunks a lane from this many rows (49.0 vs 51.3 us at 262k bf16 rows there).
constexpr int kLargeRows = 1 << 17;

// Chunk size and team shape from D and the row count: 4-element chunks for short rows of
// small problems, then one 8-element chunk per lane (128-thread blocks for 64 < D <= 128;
// more of them resident for 16-bit x past kDenseRows, two chunks a lane for fp32 x past
// kLargeRows), else 8-element chunks, 1 or 4 per lane, teams of 4..256 lanes.
template <int XDT, int ODT>
hipError_t launch_vec_shape(const RmsnormGatedArgs &a, const Launch &l) {
    if (a.dim <= 128 && a.rows <= kSmallRows) {
        const int chunks4 = a.dim / 4;
        if (chunks4 <= 4) return launch_vec<XDT, ODT, 4, 1, 4>(a, l);
        else if (chunks4 <= 8) return launch_vec<XDT, ODT, 8, 1, 4>(a, l);
        else if (chunks4 <= 16) return launch_vec<XDT, ODT, 16, 1, 4>(a, l);
        else return launch_vec<XDT, ODT, 32, 1, 4>(a, l);
    }
    const int chunks = a.dim / 8;
    if (chunks > 8 && chunks <= 16) {
        if constexpr (XDT == kF32) {
            if (a.rows >= kLargeRows) return launch_vec<XDT, ODT, 8, 2>(a, l);
        } else {
            if (a.rows >= kDenseRows) return launch_vec<XDT, ODT, 16, 1, 8, 128, kMinBlocksDense>(a, l);
            if (l.inputs_read_only) return launch_vec<XDT, ODT, 16, 1, 8, 128, kMinBlocksPerSM<XDT, 1>, kLoadNc>(a, l);
        }
        return launch_vec<XDT, ODT, 16, 1, 8, 128>(a, l);
    }
    if (chunks <= 4) return launch_vec<XDT, ODT, 4, 1>(a, l);
    else if (chunks <= 8) return launch_vec<XDT, ODT, 8, 1>(a, l);
    else if (chunks <= 32) return launch_vec<XDT, ODT, 32, 1>(a, l);
    else if (chunks <= 32 * 4) return launch_vec<XDT, ODT, 32, 4>(a, l);
    else return launch_vec<XDT, ODT, kBlockThreads, 4>(a, l);
}

template <int XDT>
hipError_t launch_vec_out(const RmsnormGatedArgs &a, const Launch &l) {
    switch (a.out_dtype) {
        case kBF16: return launch_vec_shape<XDT, kBF16>(a, l);
        case kF16: return launch_vec_shape<XDT, kF16>(a, l);
        default: return launch_vec_shape<XDT, kF32>(a, l);
    }
}

RmsnormGatedArgs make_args(const RmsnormGatedProblem &p) {
    RmsnormGatedArgs a{};
    const int64_t xs = dtype_size(p.x.dtype), zs = dtype_size(p.z.dtype), os = dtype_size(p.out.dtype);
    a.x = p.x.data;
    a.z = p.z.data;
    a.out = p.out.data;
    a.weight = p.weight;
    a.x_st = p.x.stride_t * xs;
    a.x_sh = p.x.stride_h * xs;
    a.z_st = p.z.stride_t * zs;
    a.z_sh = p.z.stride_h * zs;
    a.o_st = p.out.stride_t * os;
    a.o_sh = p.out.stride_h * os;
    a.rows = int32_t(p.tokens * p.heads);
    a.heads = int32_t(p.heads);
    a.dim = int32_t(p.dim);
    a.x_dtype = p.x.dtype;
    a.z_dtype = p.z.dtype;
    a.out_dtype = p.out.dtype;
    a.weight_dtype = p.weight_dtype;
    a.norm_before_gate = p.norm_before_gate;
    a.activation = p.activation;
    a.eps = p.eps;
    a.weight_offset = p.weight_offset;
    a.inv_dim = 1.0f / float(p.dim);
    // Rows r of [T, H] sit at r * stride_h when stride_t == H * stride_h (or H == 1).
    auto flat = [&](const RowsView &v) { return !v.data || p.heads == 1 || v.stride_t == p.heads * v.stride_h; };
    a.flat_rows = flat(p.x) && flat(p.z) && flat(p.out);
    if (!a.flat_rows) a.heads_div = make_fast_div(uint32_t(p.heads));  // read only for rows that are not flat
    a.x_sr = p.heads == 1 ? a.x_st : a.x_sh;
    a.z_sr = p.heads == 1 ? a.z_st : a.z_sh;
    a.o_sr = p.heads == 1 ? a.o_st : a.o_sh;
    return a;
}

}  // namespace

gatednorm_status gpu_rmsnorm_gated(const RmsnormGatedProblem &p, void *stream_ptr) {
    // Rows are indexed in int32 and the generic kernel strides its int32 column index by 32.
    if (p.tokens * p.heads >= (int64_t(1) << 31) || p.dim > (int64_t(1) << 30))
        return fail(GATEDNORM_STATUS_UNSUPPORTED, "x: %lld rows of %lld; the GPU kernels take fewer than 2^31 rows of at most 2^30",
                    (long long)(p.tokens * p.heads), (long long)p.dim);
    if (p.tokens * p.heads == 0) return GATEDNORM_STATUS_SUCCESS;
    DeviceGuard guard(p.device_id);
    if (!guard.ok()) return guard.status();
    const RmsnormGatedArgs a = make_args(p);
    // The API lets out be x or z exactly (in place) and rejects any other overlap
    // (check_out_aliasing), so distinct addresses mean disjoint memory.
    const bool read_only = p.out.data != p.x.data && p.out.data != p.z.data;
#if defined(GN_HAS_PDL)
    const bool pdl = p.pdl && gn_device_has_pdl(p.device_id);
#else
    const bool pdl = false;
#endif
    const Launch l{static_cast<hipStream_t>(stream_ptr), pdl, read_only};
    hipError_t err;
    if (vec_path_ok(p)) {
        switch (a.x_dtype) {
            case kBF16: err = launch_vec_out<kBF16>(a, l); break;
            case kF16: err = launch_vec_out<kF16>(a, l); break;
            default: err = launch_vec_out<kF32>(a, l); break;
        }
    } else {
        err = launch(rmsnorm_gated_generic_kernel<>, rmsnorm_gated_generic_kernel<kPdlFlags>, grid_for(a.rows, kGenericTeams),
                     kBlockThreads, a, l);
    }
    if (err != hipSuccess) return launch_fail(err, "rmsnorm_gated", "x");
    const gatednorm_status st = check_launch("rmsnorm_gated");
    if (st == GATEDNORM_STATUS_SUCCESS) note_kernel(vec_path_ok(p) ? "rmsnorm_gated.vec" : "rmsnorm_gated.generic");
    return st;
}

}  // namespace gn
