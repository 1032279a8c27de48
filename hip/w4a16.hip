// Launchers of the W4A16 kernels (w4a16_kernels.h): the device's target, the split-K plan
// (which also sizes the caller's workspace), the prepack, the GEMM.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>

#include "backend.h"
#include "device_guard.h"
#include "w4a16_kernels.h"

#define GN_W4_TRY(expr)                                                         \
    do {                                                                        \
        const gatednorm_status gn_w4_status_ = (expr);                          \
        if (gn_w4_status_ != GATEDNORM_STATUS_SUCCESS) return gn_w4_status_;    \
    } while (0)

namespace gn {
namespace {

// Per-device facts asked once: multiprocessor count and W4A16 target (0: none).
struct DeviceFacts {
    int sms = 0;
    int target = 0;
    int wave = 32;
    char arch[64] = {};
};

// arg: the argument whose device it is (the message names it first, as every failure does)
gatednorm_status device_facts(int device, DeviceFacts *f, const char *arg) {
    // ready: 0 empty, 1 being filled by the thread that claimed it, 2 filled.  Only that thread
    // writes the entry; others use their own copy of the facts until it is filled.
    static std::atomic<int> ready[kCachedDevices] = {};
    static DeviceFacts facts[kCachedDevices];
    if (device < 0 || device >= kCachedDevices)
        return fail(GATEDNORM_STATUS_NO_DEVICE, "%s: on GPU %d; this library serves devices 0..%d", arg, device, kCachedDevices - 1);
    if (ready[device].load(std::memory_order_acquire) == 2) {
        *f = facts[device];
        return GATEDNORM_STATUS_SUCCESS;
    }
    hipDeviceProp_t prop;
    const hipError_t err = hipGetDeviceProperties(&prop, device);
    if (err != hipSuccess) return runtime_fail(err, "device properties");
    DeviceFacts d;
    d.sms = prop.multiProcessorCount;
    d.wave = prop.warpSize;
#if defined(GN_PLATFORM_CUDA)
    snprintf(d.arch, sizeof d.arch, "sm_%d%d", prop.major, prop.minor);
    d.target = prop.major >= 8 ? GATEDNORM_W4A16_TARGET_CUDA_MMA : 0;
#else
    snprintf(d.arch, sizeof d.arch, "%s", prop.gcnArchName);
    // gfx908 (MI100) has no bf16 MFMA of the _1k form the kernel uses: no W4A16 target there.
    if (!strncmp(d.arch, "gfx90a", 6) || !strncmp(d.arch, "gfx94", 5) || !strncmp(d.arch, "gfx95", 5))
        d.target = GATEDNORM_W4A16_TARGET_AMD_MFMA;
    else if (!strncmp(d.arch, "gfx11", 5))
        d.target = GATEDNORM_W4A16_TARGET_AMD_WMMA;
#endif
    int empty = 0;
    if (ready[device].compare_exchange_strong(empty, 1, std::memory_order_acq_rel)) {
        facts[device] = d;
        ready[device].store(2, std::memory_order_release);
    }
    *f = d;
    return GATEDNORM_STATUS_SUCCESS;
}

// How a GEMM is cut.  NVIDIA: M <= 8 with K % 64 == 0 takes the gemv kernel, other M <= 48
// (and M 49..64 while ceil(N / 64) < 2 x SMs) the decode kernel (MT 8-row blocks, WN col
// tiles a warp), else the 64 x 128 mma kernel (faster than the 64 x 64 one, which only
// GATEDNORM_W4A16_KERNEL=mma takes: runs 152-153, 155-157); at
// M <= 16 the gemv kernel's lean loop replaces either where use_gemv_lean says, and at M
// 17..64 the lean loop with 4, 6 or 8 row blocks where use_lean_rows says.
// AMD: 16-row blocks, one col tile a block.  Split-K
// across blocks only when the blocks would leave multiprocessors idle: then each split
// writes fp32 partials to the workspace and a second kernel sums them in split order.
struct Plan {
    bool decode = true;
    bool gemv = false;  // NVIDIA gemv_plan: w4a16_gemv_kernel at M <= 8 (K % 64 == 0), or the lean loop
    bool gemv_lean = false;  // w4a16_gemv_lean_kernel (M <= 16: use_gemv_lean; M 17..64: use_lean_rows), MT = mt
    int lean_cpw = 0;  // its chunks a warp where a build has them compiled in, else 0
    int row_groups = 1;  // use_lean_rows: blocks a col tile, 8 x mt rows each (2 at M 33..64 on MT 4 builds)
    bool wide = false;  // NVIDIA, not decode: w4a16_mma_wide_kernel (64 x 128 tiles; M > 64) in place of the 64 x 64 one
    int mt = 1, wn = 1, mblocks = 1, nsplit = 1;
    int bps = 0;  // NVIDIA decode: the build's launch bound in blocks an SM (launch_decode)
    int gemv_warps = 8;  // NVIDIA gemv: warps a block, all on one col tile
    int64_t ctas = 0;
};
// The decode kernel takes M <= 64 (MT = 2 above 8 rows, ceil(M / 16) row blocks a col
// tile; make_plan says where above 48), the lean loop M <= 16.
constexpr int kDecodeMaxM = 64;
constexpr int kDecodeAlwaysM = 48;
constexpr int kLeanMaxM = 16;
constexpr int kMaxSplits = 16;

// Split K across blocks when pl.ctas blocks leave multiprocessors idle: two blocks an SM,
// at most kMaxSplits, every split at least `chunks_min` k chunks (a chunk for every warp).
Plan split_k(Plan pl, const DeviceFacts &f, int64_t kchunks, int64_t chunks_min) {
    const int64_t want = 2 * int64_t(f.sms);
    if (pl.ctas > 0 && pl.ctas < f.sms) {  // 0 blocks (M = 0): nothing to split
        int64_t s = (want + pl.ctas - 1) / pl.ctas;
        s = s < kMaxSplits ? s : kMaxSplits;
        const int64_t by_k = kchunks / chunks_min;
        s = s < by_k ? s : by_k;
        pl.nsplit = int(s > 1 ? s : 1);
    }
    return pl;
}

#if defined(GN_PLATFORM_CUDA)
constexpr int kGemvWideWarps = 16;  // the few-col-tile build: 16 warps a block, two blocks an SM
constexpr int kGemvBlocksPerSm = 4;  // the 8-warp build
#endif

#if defined(GN_PLATFORM_CUDA)
// The gemv kernels' plan (M <= 8 with K % 64 == 0; the lean loop also at M 9..16): one col
// tile a block.  While the col tiles fit one wave of two blocks an SM, 16 warps a block share
// the col tile's K (twice the warps, so twice the bytes in flight, with no second kernel);
// else 8, four blocks an SM.  U = 2 (59 registers).  scripts/tune_w4a16.cu gemv, run 57,
// M = 1, us, the decode kernel's plan in the same process -> this rule: 4096x4096 6.26 ->
// 6.10, 12288x4096 13.63 -> 12.17, 4096x6144 7.67 -> 7.32, 4096x24576 23.19 -> 22.07.  The
// gemv kernel's own loop is not for M 9..16: with two 8-row blocks sharing each dequantized
// chunk (64 registers) it ran 0-10% slower than the decode kernel there (run 63).
Plan gemv_plan(const DeviceFacts &f, int64_t ntiles, int64_t kchunks) {
    Plan pl;
    pl.gemv = true;
    pl.gemv_warps = ntiles <= int64_t(kW4DecodeBlocksPerSm) * f.sms ? kGemvWideWarps : kW4DecodeWarps;
    pl.ctas = ntiles;
    return split_k(pl, f, kchunks, pl.gemv_warps);
}
#endif

Plan make_plan(const DeviceFacts &f, int64_t m, int64_t n, int64_t k) {
    Plan pl;
    const int64_t ntiles = (n + kW4TileN - 1) / kW4TileN, kchunks = (k + kW4TileK - 1) / kW4TileK;
    int64_t chunks_per_split_min = 8;  // every warp of a split gets a chunk
#if defined(GN_PLATFORM_CUDA)
    // M 17..64: each 16-row block of the decode kernel costs about its M = 16 time (each
    // dequantizes its chunks again; L2 may serve the later blocks' weight reads, but the
    // time says their own work sets it), so its time steps up a block at a time, while the
    // 64 x 64 mma kernel's depends on its grid of ceil(N / 64) blocks filling the GPU.  The
    // tiers below were tuned at M 1 and 16 only.  Run 120 (H100, us, decode / mma; cuBLAS
    // dense beside): M = 17 4096x6144 15.32 / 55.54 (20.62), 4096x4096 11.61 / 55.45
    // (14.06), 12288x4096 26.92 / 165.11 (38.34), 4096x24576 50.14 / 78.40 (66.50); M = 48
    // 22.67 / 56.41, 17.46 / 56.50, 43.31 / 168.48, 75.88 / 79.87; M = 64 29.48 / 58.31,
    // 21.81 / 58.33, 56.35 / 174.17, 98.86 / 81.40 (384 blocks of 64 columns: ~3 an SM).  So
    // decode to 48 rows, and to 64 unless the mma grid holds two blocks an SM.  There the
    // 64 x 128 kernel (a block an SM at least; the same bits as the 64 x 64 one): run 156
    // (H100, 4096x24576, us) M = 49 / 64 63.87 / 64.33 against the 64 x 64 kernel's 79.67 /
    // 80.92.  (At G = 128 and K 4096 there the lean loop's row blocks come first, 65.26 /
    // 71.76: use_lean_rows; at K 5120 they were 1.48-1.56x the 64 x 64 kernel, run 138.)
    if (m > kDecodeMaxM || (m > kDecodeAlwaysM && (n + 63) / 64 >= 2 * int64_t(f.sms))) {
        pl.decode = false;
        pl.wide = true;
        return pl;
    }
    pl.mt = m <= 8 ? 1 : 2;
    pl.mblocks = int((m + 8 * pl.mt - 1) / (8 * pl.mt));
    if (m <= 8 && k % kW4TileK == 0) return gemv_plan(f, ntiles, kchunks);
    // Blocks of one col tile a warp while they fit one wave: two an SM in the 93-register
    // build (U = 4), else three in the 80-register one (U = 2); past that, two col tiles a
    // warp (U = 2; three blocks an SM at M <= 8, two above).  scripts/tune_w4a16.cu, run 45,
    // us, M = 1 (M = 16), against the rule before (WN = 2 past one wave of two an SM):
    // 4096x6144 (384 col tiles) 9.39 -> 7.94 (11.05 -> 9.56), 4096x24576 (1536) 24.41 -> 23.40
    // (30.33: M = 16 unchanged, its three-an-SM build 34.04); 4096x4096 and 12288x4096 (256,
    // one wave of two an SM) keep theirs, 6.34 and 13.83 (three an SM: 6.48, 14.23).
    if (ntiles <= int64_t(kW4DecodeBlocksPerSm) * f.sms) {
        pl.wn = 1;
        pl.bps = kW4DecodeBlocksPerSm;
    } else if (ntiles <= int64_t(kW4DecodeBlocksPerSmLean) * f.sms) {
        pl.wn = 1;
        pl.bps = kW4DecodeBlocksPerSmLean;
    } else {
        pl.wn = 2;
        pl.bps = pl.mt == 1 ? kW4DecodeBlocksPerSmLean : kW4DecodeBlocksPerSm;
    }
#else
    pl.mblocks = int((m + 15) / 16);
    chunks_per_split_min = kW4AmdWaves;
#endif
    pl.ctas = (ntiles + pl.wn - 1) / pl.wn * pl.mblocks;
    return split_k(pl, f, kchunks, chunks_per_split_min);
}

size_t workspace_bytes(const Plan &pl, int64_t m, int64_t n) { return pl.nsplit > 1 ? size_t(pl.nsplit) * size_t(m) * size_t(n) * 4 : 0; }

gatednorm_status require_target(int device, DeviceFacts *f, const char *arg) {
    const gatednorm_status st = device_facts(device, f, arg);
    if (st != GATEDNORM_STATUS_SUCCESS) return st;
    if (!f->target)
        return fail(GATEDNORM_STATUS_UNSUPPORTED,
                    "%s: on GPU %d (%s), which has no W4A16 kernels (NVIDIA sm_80+, AMD gfx90a/gfx942/gfx950/gfx11xx)", arg, device, f->arch);
    return GATEDNORM_STATUS_SUCCESS;
}

W4a16Args make_args(const W4a16GemmProblem &p, const W4Tiled &t, const Plan &pl) {
    W4a16Args a;
    a.w = p.w.tiled;
    a.se = p.w.tiled + t.weight_bytes;
    a.a = static_cast<const char *>(p.a);
    a.a_sm = p.a_sm * 2;
    a.bias = static_cast<const char *>(p.bias);
    a.bias_dtype = p.bias_dtype;
    a.out = static_cast<char *>(p.out);
    a.o_sm = p.out_sm * dtype_size(p.out_dtype);
    a.out_dtype = p.out_dtype;
    a.ws = static_cast<float *>(p.workspace);
    a.m = int32_t(p.m);
    a.n = int32_t(t.n);
    a.k = int32_t(t.k);
    a.ntiles = int32_t(t.ntiles);
    a.kchunks = int32_t(t.kchunks);
    a.ngroups = int32_t(t.ngroups);
    a.gshift = t.gshift;
    a.split_chunks = int32_t((t.kchunks + pl.nsplit - 1) / pl.nsplit);
    return a;
}

#if defined(GN_PLATFORM_CUDA)
// *pl becomes the plan of the gemv kernel's lean loop (w4a16_gemv_lean_kernel) where that
// applies: M <= 16 with K % 64 == 0, G = 128, the gemv plan without a split, and whole groups
// a warp (kchunks a multiple of 2 x the block's warps).  6-10% faster than the gemv loop at
// M = 1 (run 66) and, with two 8-row blocks, 3-18% faster than the decode kernel at M = 16
// (run 67).  Its plan needs no workspace, so the size query's plan (make_plan, which knows
// no G) still covers the call.  Where each warp's chunk count is one of kLeanCpw, the build
// with that trip count compiled in (10-14% faster again at M = 1, run 71's tuner): K 4096,
// 8192, 12288 and 16384 on the 16-warp build, 2048, 4096, 6144 and 8192 on the 8-warp one
// (at M 9..16 only 8 chunks a warp there, plus use_two_row_block_warps' choices).
// GATEDNORM_W4A16_KERNEL (a test and bench hook read at each call, not API): `gemv` keeps
// make_plan's kernel, `lean` the lean loop's runtime trip count on M <= 8's warps (so no
// use_two_row_block_warps), so tests can compare the loops bit for bit.
constexpr int kLeanCpw[] = {4, 8, 12, 16};
// last_kernel()'s names of those builds (the runtime count's is "w4a16.gemv.lean")
constexpr const char *kLeanNames[] = {"w4a16.gemv.lean.cpw4", "w4a16.gemv.lean.cpw8", "w4a16.gemv.lean.cpw12", "w4a16.gemv.lean.cpw16"};
constexpr int kLeanCounts = int(sizeof kLeanCpw / sizeof kLeanCpw[0]);
static_assert(sizeof kLeanNames / sizeof kLeanNames[0] == kLeanCounts, "a name a compiled count");

// M 9..16's builds with 16 chunks a warp and fewer warps a col tile (80 registers, no
// spills; their launch bounds leave that many): 12 warps two blocks an SM, 4 warps six.
constexpr int kLean12Warps = 12, kLean12BlocksPerSm = 2, kLean4Warps = 4, kLean4BlocksPerSm = 6;

// Whether a build with CPW compiled in exists at MT for a block of `warps` warps: MT = 1 on
// the 16- and 8-warp builds at every count of kLeanCpw; MT = 2 there only at 8 (its other
// counts spill at the 64-register bound), and at 16 on the 12- and 4-warp builds.  The plan
// asks this; the launcher (warps = 0: any) instantiates what it allows.
constexpr bool lean_cpw_built(int mt, int cpw, int warps = 0) {
    if (mt == 1 || cpw == 8) return warps == 0 || warps == kGemvWideWarps || warps == kW4DecodeWarps;
    return cpw == 16 && (warps == 0 || warps == kLean12Warps || warps == kLean4Warps);
}

// M 9..16 (two 8-row blocks): the warps a col tile where the tuner measured better than
// M <= 8's choice, each with its chunk count compiled in.  lean-shape, run 128 (H100, us,
// M = 16, the spread finish), against the plan before:
//  - K 4096 in the 16-warp tier (4096x4096, 256 col tiles): 8 warps of 8 chunks 5.66, where
//    16 warps ran the runtime count (no MT = 2 build has 4 compiled in) 6.10;
//  - K 12288 there (12288x4096): 12 warps of 16 chunks 11.34 against 16 warps' 12.40;
//  - K 4096 past four 8-warp blocks an SM (4096x24576, 1536 col tiles): 4 warps of 16
//    chunks 20.97 against 8 warps' 21.37.  Below that edge (4096x6144, 384 col tiles) 4
//    warps leave too few an SM: 7.70 against 6.95.
void use_two_row_block_warps(Plan *pl, const DeviceFacts &f, const W4Tiled &t) {
    int warps = 0, cpw = 0;
    if (pl->gemv_warps == kGemvWideWarps) {
        if (t.kchunks == 8 * kW4DecodeWarps) warps = kW4DecodeWarps, cpw = 8;
        else if (t.kchunks == 16 * kLean12Warps) warps = kLean12Warps, cpw = 16;
    } else if (t.kchunks == 16 * kLean4Warps && t.ntiles > int64_t(kGemvBlocksPerSm) * f.sms) {
        warps = kLean4Warps, cpw = 16;
    }
    if (!warps) return;
    pl->gemv_warps = warps;
    pl->lean_cpw = cpw;
}

void use_gemv_lean(Plan *pl, const DeviceFacts &f, int64_t m, const W4Tiled &t) {
    if (m > kLeanMaxM || t.group != 128 || t.k % kW4TileK) return;
    Plan lean = gemv_plan(f, t.ntiles, t.kchunks);  // make_plan's own at M <= 8
    if (lean.nsplit != 1 || t.kchunks % (2 * lean.gemv_warps)) return;
    const char *v = getenv("GATEDNORM_W4A16_KERNEL");
    if (v && !strcmp(v, "gemv")) return;
    lean.gemv_lean = true;
    lean.mt = m <= 8 ? 1 : 2;
    const int64_t cpw = t.kchunks / lean.gemv_warps;
    if (!(v && !strcmp(v, "lean"))) {
        for (const int c : kLeanCpw)
            if (cpw == c && lean_cpw_built(lean.mt, c, lean.gemv_warps)) lean.lean_cpw = c;
        if (lean.mt == 2) use_two_row_block_warps(&lean, f, t);
    }
    *pl = lean;
}

// M 17..64: the lean loop with MT = 4, 6 or 8 row blocks of 8 (M <= 32, 48, 64) sharing each
// dequantized chunk, one col tile a block, no split, where G = 128, K is 4096 or 12288 (other
// K of 8n chunks from 16 on MT 4 builds, below), and there are at least 256 col tiles (N >
// 4080; the tuner measured N 4096 to 24576).  The decode kernel there re-dequantizes each
// chunk for every 16-row block.  Tuner `rows`, run 131 (H100, us,
// the plan's decode build -> the lean loop): M = 32 4096x4096 11.94 -> 8.18, 4096x6144
// 14.62 -> 10.18, 4096x24576 48.70 -> 35.49, 12288x4096 27.98 -> 17.90; M = 64 21.23 ->
// 13.01, 27.61 -> 24.20, 93.82 (the mma kernel's shape in the library) -> 71.05, 55.60 ->
// 33.77.  MT = 8 at M = 48 ran 7-14% slower than MT = 6.  The builds, each without spills
// (ptxas hoists every activation load of the unrolled loop: MT = 4 took 128 registers with
// 4-28 bytes of spills at 4 blocks of 4 warps or 2 of 8, so it runs 3 of 4 and 2 of 6; MT 6
// and 8 take 200-255 registers):
//   K 4096:  4 warps of 16 chunks, 3 blocks an SM at MT = 4, 2 at MT 6 / 8;
//   K 12288: MT = 4 6 warps of 32, 2 an SM; MT 6 / 8 8 warps of 24, 1 an SM.
// At M 17..32 any other K of whole groups a warp on 4 warps (kchunks a multiple of 8, at
// least 16 chunks: K 1024, 2048, 5120, 17408, ...) runs K 4096's launch shape at MT = 4 with
// the runtime trip count (CPW = 0; `last_kernel()`: "w4a16.lean.rows32.anyk"), the loop
// stepping its pointers as at M <= 16.  Run 134 (H100, us, the decode kernel -> this build,
// N 5120): M = 17 K 1024 6.02 -> 4.54, 2048 8.73 -> 6.59, 5120 15.08 -> 12.33, 17408 42.68 ->
// 34.81; M = 32 6.35 -> 4.95, 9.14 -> 7.22, 17.17 -> 13.80, 44.45 -> 38.96.  Its MT 6 / 8
// builds (M 33..64) ran 8-16% slower than the decode kernel at M = 48 and -5..+4% at 64, and
// K 4096's compiled count is 15% faster than the runtime one at M = 32: so no such builds.
// K 5120 (80 chunks, the hidden size of Qwen3-14B / 32B: all their linears but the down
// projection) has its count compiled in at MT = 4 (4 warps of 20 chunks, 161-162 registers;
// run 136: 13% / 10% faster than the runtime count at M 17 / 32).  At M 33..64 these K run
// the same MT = 4 builds on two blocks a col tile (row_groups 2: rows 0..31 and 32..63, side
// by side in the grid so the second block's weight reads meet the first's in L2;
// "w4a16.lean.rows32x2[.anyk]"), each block's sums those of a GEMM of its 32 rows alone.
// Run 138 (H100, us, the decode kernel -> this, N 5120): M = 64 K 1024 10.20 -> 8.64, 2048
// 15.26 -> 13.02, 5120 31.50 -> 23.41, 17408 96.03 -> 79.38; M = 33 / 48 0.97-1.07x (K 2048
// at M = 48 the one loss, 11.83 -> 12.17: kept, one rule); at N 34816 (K 5120, where the
// mma kernel had M 49..64) 174.96 -> 111.80 at M = 49, 179.81 -> 121.53 at 64.
// A block runs only the row blocks it has rows for (hip/w4a16_kernels.h; same bits): run 140
// (H100, us, N 5120, K 5120) M = 17 10.72 (run 136) -> 9.17, M = 33 22.04 (run 138) -> 20.05;
// M 48 / 64 unchanged.  M = 33 still costs ~1.6x M = 32: 640 blocks over 396 slots, so the
// second row group's blocks are a second wave whatever their rows.
// GATEDNORM_W4A16_KERNEL=gemv keeps make_plan's kernel (and =mma the mma kernel), =lean takes
// the runtime-count MT = 4 build (two row groups above 32 rows) at K 4096 / 12288 / 5120 too
// (at K 4096 and 5120 the same ranges, order and bits as the compiled counts, whatever MT:
// each row block's sums are independent of the others'), so tests and the bench run each
// beside the other.
constexpr int kLeanRowsMaxM = 64;
constexpr int64_t kLeanRowsMinTiles = 256;
constexpr int kLeanRowsAnyKWarps = 4;
constexpr int64_t kLeanRowsAnyKMinChunks = 16;
constexpr const char *kLeanRowsNames[] = {"w4a16.lean.rows32", "w4a16.lean.rows48", "w4a16.lean.rows64"};  // MT 4, 6, 8

// last_kernel()'s name of a use_lean_rows plan (MT > 2)
const char *lean_rows_name(const Plan &pl) {
    if (pl.row_groups == 2) return pl.lean_cpw ? "w4a16.lean.rows32x2" : "w4a16.lean.rows32x2.anyk";
    return pl.lean_cpw ? kLeanRowsNames[pl.mt / 2 - 2] : "w4a16.lean.rows32.anyk";
}

void use_lean_rows(Plan *pl, int64_t m, const W4Tiled &t) {
    if (m <= kLeanMaxM || m > kLeanRowsMaxM || t.group != 128 || t.k % kW4TileK || t.ntiles < kLeanRowsMinTiles) return;
    const char *v = getenv("GATEDNORM_W4A16_KERNEL");
    if (v && (!strcmp(v, "gemv") || !strcmp(v, "mma"))) return;
    const bool runtime_asked = v && !strcmp(v, "lean");
    Plan lean;
    lean.gemv_lean = true;
    if ((t.kchunks == 64 || t.kchunks == 192) && !runtime_asked) {  // K 4096, 12288: counts compiled in
        lean.mt = m <= 32 ? 4 : m <= 48 ? 6 : 8;
        lean.gemv_warps = t.kchunks == 64 ? 4 : lean.mt == 4 ? 6 : 8;
        lean.lean_cpw = int(t.kchunks / lean.gemv_warps);
    } else if (t.kchunks % (2 * kLeanRowsAnyKWarps) == 0 && t.kchunks >= kLeanRowsAnyKMinChunks) {
        lean.mt = 4;  // 32 rows a block; at M 33..64 two blocks a col tile
        lean.row_groups = m <= 32 ? 1 : 2;
        lean.gemv_warps = kLeanRowsAnyKWarps;
        // K 5120 (Qwen3-14B / 32B's hidden size) has its count compiled in, other K the runtime count
        lean.lean_cpw = t.kchunks == 80 && !runtime_asked ? 20 : 0;
    } else {
        return;
    }
    lean.ctas = t.ntiles * lean.row_groups;
    *pl = lean;
}

template <int DT, bool ZP>
hipError_t launch_lean_rows(const W4a16Args &a, const Plan &pl, hipStream_t s) {
    const dim3 grid(unsigned(pl.ctas));
    const bool pdl = a.pdl != 0;
    const int w = pl.gemv_warps, c = pl.lean_cpw;
    if (pl.row_groups == 2) {
        if (pl.mt == 4 && w == 4 && c == 20) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 4, 4, 3, 20, 2>, grid, 4 * 32, s, a, pdl);
        if (pl.mt == 4 && w == 4 && c == 0) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 4, 4, 3, 0, 2>, grid, 4 * 32, s, a, pdl);
        return hipErrorInvalidConfiguration;  // no such build
    }
    if (pl.mt == 4 && w == 4 && c == 16) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 4, 4, 3, 16>, grid, 4 * 32, s, a, pdl);
    if (pl.mt == 6 && w == 4 && c == 16) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 6, 4, 2, 16>, grid, 4 * 32, s, a, pdl);
    if (pl.mt == 8 && w == 4 && c == 16) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 8, 4, 2, 16>, grid, 4 * 32, s, a, pdl);
    if (pl.mt == 4 && w == 6 && c == 32) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 4, 6, 2, 32>, grid, 6 * 32, s, a, pdl);
    if (pl.mt == 6 && w == 8 && c == 24) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 6, 8, 1, 24>, grid, 8 * 32, s, a, pdl);
    if (pl.mt == 8 && w == 8 && c == 24) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 8, 8, 1, 24>, grid, 8 * 32, s, a, pdl);
    if (pl.mt == 4 && w == 4 && c == 20) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 4, 4, 3, 20>, grid, 4 * 32, s, a, pdl);
    if (pl.mt == 4 && w == 4 && c == 0) return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 4, 4, 3, 0>, grid, 4 * 32, s, a, pdl);
    return hipErrorInvalidConfiguration;  // no such build: use_lean_rows and this launcher disagree
}

// GATEDNORM_W4A16_KERNEL=mma / =wide (a test and bench hook, read at each call): the 64 x 64
// / the 64 x 128 mma kernel at any M > 16, in place of the planned kernel, so tests and the
// bench compare them.  Their plans need no workspace.
void use_mma_if_asked(Plan *pl, int64_t m) {
    if (m <= kLeanMaxM) return;  // before the getenv: use_gemv_lean reads it at these M
    const char *v = getenv("GATEDNORM_W4A16_KERNEL");
    if (!v || (strcmp(v, "mma") && strcmp(v, "wide"))) return;
    Plan mma;
    mma.decode = false;
    mma.wide = strcmp(v, "wide") == 0;
    *pl = mma;
}

const char *lean_kernel_name(int cpw) {
    for (int i = 0; i < kLeanCounts; ++i)
        if (kLeanCpw[i] == cpw) return kLeanNames[i];
    return "w4a16.gemv.lean";
}

template <int DT, bool ZP, int MT, int CPW>
hipError_t launch_gemv_lean_cpw(const W4a16Args &a, const Plan &pl, hipStream_t s) {
    const dim3 grid(unsigned(pl.ctas));
    const bool pdl = a.pdl != 0;
    if constexpr (MT == 2 && CPW == 16) {  // use_two_row_block_warps' 12- and 4-warp builds
        if (pl.gemv_warps == kLean12Warps)
            return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 2, kLean12Warps, kLean12BlocksPerSm, 16>, grid, kLean12Warps * 32, s, a, pdl);
        if (pl.gemv_warps == kLean4Warps)
            return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, 2, kLean4Warps, kLean4BlocksPerSm, 16>, grid, kLean4Warps * 32, s, a, pdl);
        return hipErrorInvalidConfiguration;  // no such build: the plan and lean_cpw_built disagree
    } else {
        if (pl.gemv_warps == kGemvWideWarps)
            return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, MT, kGemvWideWarps, 2, CPW>, grid, kGemvWideWarps * 32, s, a, pdl);
        return gn_launch(w4a16_gemv_lean_kernel<DT, ZP, MT, kW4DecodeWarps, kGemvBlocksPerSm, CPW>, grid, kW4DecodeThreads, s, a, pdl);
    }
}

// The build of the plan's compiled count (kLeanCpw[I..], those lean_cpw_built), else the
// runtime count's (16 or 8 warps: use_two_row_block_warps' choices always have a count).
template <int DT, bool ZP, int MT, int I = 0>
hipError_t launch_gemv_lean(const W4a16Args &a, const Plan &pl, hipStream_t s) {
    if constexpr (I == kLeanCounts) {
        return launch_gemv_lean_cpw<DT, ZP, MT, 0>(a, pl, s);
    } else {
        if constexpr (lean_cpw_built(MT, kLeanCpw[I]))
            if (pl.lean_cpw == kLeanCpw[I]) return launch_gemv_lean_cpw<DT, ZP, MT, kLeanCpw[I]>(a, pl, s);
        return launch_gemv_lean<DT, ZP, MT, I + 1>(a, pl, s);
    }
}

// Every GEMM kernel goes through gn_launch: with a.pdl, the programmatic-dependent-launch
// attribute (the kernels' w4_pdl_* hooks); the launch's own error comes back.
// The plan's decode build: (WN, U, blocks an SM) = (1, 4, 2), (1, 2, 3), (2, 2, 3) at MT 1
// or (2, 2, 2) at MT 2 (make_plan says when each).
template <int DT, bool ZP, int MT>
hipError_t launch_decode(const W4a16Args &a, const Plan &pl, hipStream_t s) {
    constexpr int kLean = kW4DecodeBlocksPerSmLean;
    const dim3 grid(unsigned((a.ntiles + pl.wn - 1) / pl.wn * pl.mblocks), unsigned(pl.nsplit));
    const bool pdl = a.pdl != 0;
    if (pl.wn == 2) {
        if constexpr (MT == 1) return gn_launch(w4a16_decode_kernel<DT, ZP, MT, 2, 2, 1, kLean>, grid, kW4DecodeThreads, s, a, pdl);
        else return gn_launch(w4a16_decode_kernel<DT, ZP, MT, 2, 2>, grid, kW4DecodeThreads, s, a, pdl);
    }
    if (pl.bps == kLean) return gn_launch(w4a16_decode_kernel<DT, ZP, MT, 1, 2, 1, kLean>, grid, kW4DecodeThreads, s, a, pdl);
    return gn_launch(w4a16_decode_kernel<DT, ZP, MT, 1, 4>, grid, kW4DecodeThreads, s, a, pdl);
}

template <int DT, bool ZP>
hipError_t launch_gemm(const W4a16Args &a, const Plan &pl, hipStream_t s) {
    const bool pdl = a.pdl != 0;
    if (pl.gemv_lean) {
        if (pl.mt > 2) return launch_lean_rows<DT, ZP>(a, pl, s);
        return pl.mt == 1 ? launch_gemv_lean<DT, ZP, 1>(a, pl, s) : launch_gemv_lean<DT, ZP, 2>(a, pl, s);
    }
    if (pl.gemv) {
        const dim3 grid(unsigned(pl.ctas), unsigned(pl.nsplit));
        if (pl.gemv_warps == kGemvWideWarps)
            return gn_launch(w4a16_gemv_kernel<DT, ZP, kGemvWideWarps, 2, 2, kGemvWideWarps>, grid, kGemvWideWarps * 32, s, a, pdl);
        return gn_launch(w4a16_gemv_kernel<DT, ZP, kW4DecodeWarps, 2, kGemvBlocksPerSm>, grid, kW4DecodeThreads, s, a, pdl);
    }
    if (!pl.decode && pl.wide) {
        const dim3 grid(unsigned((a.ntiles + kW4WideTiles - 1) / kW4WideTiles), unsigned((a.m + kW4WideRows - 1) / kW4WideRows));
        return gn_launch(w4a16_mma_wide_kernel<DT, ZP>, grid, kW4WideThreads, s, a, pdl);
    }
    if (!pl.decode) {
        const dim3 grid(unsigned((a.ntiles + 3) / 4), unsigned((a.m + 63) / 64));
        return gn_launch(w4a16_mma_kernel<DT, ZP>, grid, kW4MmaThreads, s, a, pdl);
    }
    return pl.mt == 1 ? launch_decode<DT, ZP, 1>(a, pl, s) : launch_decode<DT, ZP, 2>(a, pl, s);
}
#else
template <int DT, bool ZP>
hipError_t launch_gemm(const W4a16Args &a, const Plan &pl, hipStream_t s, int wave) {
    const dim3 grid(unsigned(a.ntiles), unsigned(pl.nsplit), unsigned(pl.mblocks));
    return gn_launch(wave == 64 ? w4a16_amd_kernel<DT, ZP, 64> : w4a16_amd_kernel<DT, ZP, 32>, grid, dim3(kW4AmdWaves * wave), s, a,
                     false);
}
#endif

// Rows one launch covers.  The row blocks of the mma kernel (64 rows, CUDA) and of the AMD
// kernel (16) sit in a grid dimension of at most 65535 blocks (CUDA's y; AMD's z); more rows
// run as launches over windows of rows, each the GEMM of its rows (such M fill every
// multiprocessor: their plans have no split-K, and a split-K plan is never windowed).  The
// decode and gemv kernels (CUDA, M <= 64) take M whole.  GATEDNORM_W4A16_ROWS_PER_LAUNCH (a
// test hook, read only where M > 16; a multiple of the row block) lowers the window, so
// tests cross window edges at small M.
#if defined(GN_PLATFORM_CUDA)
constexpr int64_t kW4RowBlock = 64;
static_assert(kW4RowBlock == kW4WideRows && kW4RowBlock == 64, "windows of whole row blocks of both mma kernels");
#else
constexpr int64_t kW4RowBlock = 16;
#endif
constexpr int64_t kW4MaxRowsPerLaunch = 65535 * kW4RowBlock;

int64_t rows_per_launch(const Plan &pl, int64_t m) {
#if defined(GN_PLATFORM_CUDA)
    if (pl.decode) return m;
#endif
    if (pl.nsplit > 1) return m;  // split-K plans are for few row blocks (one window)
    int64_t rows = kW4MaxRowsPerLaunch;
    if (m > kLeanMaxM) {
        if (const char *v = getenv("GATEDNORM_W4A16_ROWS_PER_LAUNCH")) {
            const long long asked = atoll(v);
            if (asked >= kW4RowBlock && asked % kW4RowBlock == 0 && asked < rows) rows = asked;
        }
    }
    return rows;
}

}  // namespace

gatednorm_status gpu_w4a16_target(int32_t device_id, int32_t *target, const char *arg) {
    DeviceFacts f;
    GN_W4_TRY(require_target(device_id, &f, arg));
    *target = f.target;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_w4a16_workspace_size(int32_t device_id, int64_t m, int64_t n, int64_t k, int64_t group, size_t *bytes, const char *arg) {
    (void)group;
    DeviceFacts f;
    GN_W4_TRY(require_target(device_id, &f, arg));
    *bytes = workspace_bytes(make_plan(f, m, n, k), m, n);
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_w4a16_prepack(const W4a16PrepackProblem &p, void *stream) {
    W4Tiled t;
    w4_tiled_geometry(p.w.n, p.w.k, p.w.group, p.w.symmetric, &t);  // validated by the API
    W4Plain w;
    w.q = p.w.q;
    w.q_sn = p.w.q_sn;
    w.s = static_cast<const char *>(p.w.s);
    w.s_dt = p.w.s_dtype;
    w.s_sn = p.w.s_sn;
    w.s_sg = p.w.s_sg;
    w.z = p.w.z;
    w.z_sn = p.w.z_sn;
    w.z_sg = p.w.z_sg;
    w.n = p.w.n;
    w.k = p.w.k;
    w.group = p.w.group;
    DeviceGuard guard(p.device_id);
    if (!guard.ok()) return guard.status();
    const int64_t threads = t.ntiles * t.kchunks * 32 + t.ntiles * t.ngroups * 8;
    constexpr int kBlock = 256;
    const int64_t blocks = (threads + kBlock - 1) / kBlock;
    if (blocks >= (int64_t(1) << 31) || !gn_launch_fits(dim3(unsigned(blocks)), dim3(kBlock)))
        return fail(GATEDNORM_STATUS_UNSUPPORTED, "qweight: too large to prepack in one launch on this GPU");
    w4a16_prepack_kernel<<<unsigned(blocks), kBlock, 0, static_cast<hipStream_t>(stream)>>>(w, t, p.packed, p.dtype);
    return check_launch("w4a16_prepack");
}

gatednorm_status gpu_w4a16_gemm(const W4a16GemmProblem &p, void *stream_ptr) {
    if (p.w.k % 16)
        return fail(GATEDNORM_STATUS_UNSUPPORTED, "a: K = %lld; the GPU kernels read activations in 16-element pieces (K a multiple of 16)",
                    (long long)p.w.k);
    DeviceFacts f;
    GN_W4_TRY(require_target(p.device_id, &f, "a"));
    W4Tiled t;
    w4_tiled_geometry(p.w.n, p.w.k, p.w.group, p.w.symmetric, &t);  // validated by the API
    Plan pl = make_plan(f, p.m, p.w.n, p.w.k);
#if defined(GN_PLATFORM_CUDA)
    use_gemv_lean(&pl, f, p.m, t);
    use_lean_rows(&pl, p.m, t);
    use_mma_if_asked(&pl, p.m);
#endif
    if (workspace_bytes(pl, p.m, p.w.n) > p.workspace_bytes)
        return fail(GATEDNORM_STATUS_INTERNAL, "workspace: the plan needs more than the size query said");
    DeviceGuard guard(p.device_id);
    if (!guard.ok()) return guard.status();
    W4a16Args a = make_args(p, t, pl);
    const hipStream_t s = static_cast<hipStream_t>(stream_ptr);
    const bool zp = !p.w.symmetric;
    hipError_t err;
#if defined(GN_HAS_PDL)
    a.pdl = p.pdl && gn_device_has_pdl(p.device_id);
#endif
    const int64_t window = rows_per_launch(pl, p.m);
    const bool windowed = window < p.m;  // last_kernel() says so: tests check the windows ran
    err = hipSuccess;
    for (int64_t m0 = 0; m0 < p.m && err == hipSuccess; m0 += window) {
        W4a16Args aw = a;  // rows m0 .. m0 + aw.m of a and out
        aw.a += m0 * a.a_sm;
        aw.out += m0 * a.o_sm;
        aw.m = int32_t(p.m - m0 < window ? p.m - m0 : window);
#if defined(GN_PLATFORM_CUDA)
        if (p.a_dtype == kBF16) err = zp ? launch_gemm<kBF16, true>(aw, pl, s) : launch_gemm<kBF16, false>(aw, pl, s);
        else err = zp ? launch_gemm<kF16, true>(aw, pl, s) : launch_gemm<kF16, false>(aw, pl, s);
#else
        Plan pw = pl;
        pw.mblocks = int((aw.m + kW4RowBlock - 1) / kW4RowBlock);
        if (p.a_dtype == kBF16) err = zp ? launch_gemm<kBF16, true>(aw, pw, s, f.wave) : launch_gemm<kBF16, false>(aw, pw, s, f.wave);
        else err = zp ? launch_gemm<kF16, true>(aw, pw, s, f.wave) : launch_gemm<kF16, false>(aw, pw, s, f.wave);
#endif
    }
    if (err != hipSuccess) return launch_fail(err, "w4a16_gemm", "a");
    if (pl.nsplit > 1) {  // M <= 16 or so: one window
        constexpr int kBlock = 256;
        const int64_t outs = p.m * p.w.n;
        const dim3 grid(unsigned((outs + kBlock - 1) / kBlock));
        if (!gn_launch_fits(grid, dim3(kBlock))) return launch_fail(hipErrorInvalidConfiguration, "w4a16_gemm", "a");
        w4a16_splitk_reduce_kernel<<<grid, kBlock, 0, s>>>(a, pl.nsplit);
    }
    const gatednorm_status st = check_launch("w4a16_gemm");
#if defined(GN_PLATFORM_CUDA)
    const char *name = !pl.decode     ? (pl.wide ? (windowed ? "w4a16.mma.wide.windowed" : "w4a16.mma.wide")
                                                 : (windowed ? "w4a16.mma.windowed" : "w4a16.mma"))
                       : pl.gemv_lean ? (pl.mt > 2 ? lean_rows_name(pl) : lean_kernel_name(pl.lean_cpw))
                       : pl.gemv      ? (pl.nsplit > 1 ? "w4a16.gemv.splitk" : "w4a16.gemv")
                       : pl.nsplit > 1 ? "w4a16.decode.splitk" : "w4a16.decode";
#else
    const char *name = pl.nsplit > 1 ? "w4a16.amd.splitk" : windowed ? "w4a16.amd.windowed" : "w4a16.amd";
#endif
    if (st == GATEDNORM_STATUS_SUCCESS) note_kernel(name);
    return st;
}

}  // namespace gn
