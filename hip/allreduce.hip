// Fused all-reduce + add-RMSNorm (ops.md §5, docs/allreduce.md): GPU side.  One-shot:
//  exchange kernel (fixed grid of kCommGpuBlocks blocks; block b owns tokens b, b + grid, ...):
//    e = own ready[b] + 1 (the epoch lives in device memory: graph replays advance it);
//    copy this rank's rows into own slot e % 2; __syncthreads; thread 0: system fence, then
//    ready[b] = e; thread 0 spins (volatile) until every peer's ready[b] >= e, then a fence;
//    __syncthreads; the block sums its rows over the W slots in rank order in fp32 (peers'
//    memory read with loads that bypass L1 (below), issued after that fence and barrier) and
//    stores the sum rounded to x's dtype in the rank-local reduced region;
//  then, up to kCommGpuBlocks tokens (one a block), the same block runs add_rmsnorm's generic
//  row body (add_rmsnorm_kernels.h: the row kernel's sum order, so the unfused path's bits) on
//  the row it reduced: one launch a rank; above, add_rmsnorm.hip's kernels read the reduced
//  region in a second launch on the same stream.
// Two slots suffice (cpu_allreduce.cpp has the argument): rank r writes slot e % 2 of block b
// only after every peer's block b raised its flag to e - 1, so every peer has started its call
// e - 1, and stream order finished its call e - 2 (hence no PDL here).  The grid is fixed, so
// every block of every rank counts the same epochs whatever the token count.
// The W exchange kernels of one call must be resident at once (they wait on each other): with
// ranks as streams of one GPU that is W * kCommGpuBlocks blocks of 256 threads.
//
// The kernel is a template on the world size W (every legal one, 1 .. kCommMaxWorld) so that
// the loops over ranks unroll and every peer pointer is a kernel parameter read at a constant
// offset (a run-time index into the parameter array put a copy of it on the stack: 120 bytes
// of local memory), and on VEC: rows move in 16-byte units (uint4 copy-in, one 16-byte load
// per peer per unit, 8 bf16 / fp16 or 4 fp32 values) when the launcher finds every row start
// 16-byte aligned (x, its token stride, the row bytes; the buffers, slots and reduced region
// are 256-byte aligned by construction), else in 2-byte units as before.  The arithmetic is
// the same on both paths: rank 0's value, then + rank 1's, ... + rank W-1's in fp32, rounded
// by numerics.h's f32_to_bf16 / f32_to_f16 (the CPU protocol's store_from_f32).
#include <string.h>

#include "add_rmsnorm_kernels.h"
#include "backend.h"
#include "device_guard.h"
#include "numerics.h"

namespace gn {
namespace {

constexpr int kExThreads = 256;
static_assert(kExThreads == kGenericThreads, "the fused path runs add_rmsnorm's generic body with the exchange's block");
static_assert(kCommHeader % 16 == 0 && kCommSlotAlign % 16 == 0, "slots and the reduced region start 16-byte aligned");

struct ExArgs {
    char *bufs[kCommMaxWorld];  // read only at compile-time indices (the kernel's W loops unroll)
    char *own;                  // bufs[rank]
    const char *x;
    int64_t x_st;    // bytes between tokens of x
    int64_t tokens;
    int64_t row;     // bytes of a row
    size_t slot_bytes;
    int32_t hidden, dtype, rank;
    int32_t fused;   // one-shot fused: the block normalizes the rows it reduced (norm's x: the reduced region)
    AddArgs norm;
};

__device__ __forceinline__ float load_volatile(const char *p, int dt) {
    if (dt == kF32) return *reinterpret_cast<const volatile float *>(p);
    const uint16_t h = *reinterpret_cast<const volatile uint16_t *>(p);
    return dt == kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// 16 bytes of a peer's slot, read after the acquire (thread 0's spin + system fence, then
// __syncthreads), never from a stale cache line.  CUDA: one ld.volatile.global.v4.u32 (a
// volatile load is not cached in L1).  HIP: the buffers are fine-grained uncached memory
// (gpu_comm_buffer_alloc) and the system-scope acquire fence invalidates the compute unit's
// L1, so one 16-byte global load is coherent; nontemporal (read once) rather than volatile,
// whose lowering waits for each load to complete before the next issues.  Neither moves
// above the __syncthreads (asm volatile / the barrier's acquire fence).
__device__ __forceinline__ uint4 load_peer_b128(const char *p) {
#if defined(GN_PLATFORM_CUDA)
    uint4 r;
    asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
#else
    typedef unsigned int u32x4 __attribute__((ext_vector_type(4)));
    const u32x4 v = __builtin_nontemporal_load(reinterpret_cast<const u32x4 *>(p));
    return make_uint4(v.x, v.y, v.z, v.w);
#endif
}

__device__ __forceinline__ uint32_t word_of(const uint4 &v, int j) { return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w; }

template <int DT>
__device__ __forceinline__ float lane_f32(const uint4 &v, int k) {  // value k of a 16-byte unit
    if constexpr (DT == kF32) return f32_from_bits(word_of(v, k));
    const uint16_t h = uint16_t(word_of(v, k / 2) >> (16 * (k % 2)));
    if constexpr (DT == kBF16) return bf16_to_f32(h);
    return f16_to_f32(h);
}

template <int DT>
__device__ __forceinline__ uint32_t round_bits(float v) {  // numerics.h's rounding to DT, as bits
    if constexpr (DT == kF32) return f32_bits(v);
    if constexpr (DT == kBF16) return f32_to_bf16(v);
    return f32_to_f16(v);
}

// Sum of the W slots of block b's tokens, 16 bytes a thread a step.
template <int W, int DT>
__device__ __forceinline__ void sum_rows_b128(const ExArgs &a, size_t slot, char *red) {
    constexpr int kN = DT == kF32 ? 4 : 8;  // values per 16 bytes
    const int64_t units = a.row / 16;
    for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
        for (int64_t i = threadIdx.x; i < units; i += blockDim.x) {
            const int64_t off = t * a.row + i * 16;
            uint4 v[W];
#pragma unroll
            for (int r = 0; r < W; ++r) v[r] = load_peer_b128(a.bufs[r] + slot + off);
            float acc[kN];
#pragma unroll
            for (int k = 0; k < kN; ++k) acc[k] = lane_f32<DT>(v[0], k);  // rank 0's value itself: no 0 + x (keeps -0)
#pragma unroll
            for (int r = 1; r < W; ++r)
#pragma unroll
                for (int k = 0; k < kN; ++k) acc[k] += lane_f32<DT>(v[r], k);
            uint32_t w[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                if constexpr (kN == 4) w[j] = round_bits<DT>(acc[j]);
                else w[j] = round_bits<DT>(acc[2 * j]) | (round_bits<DT>(acc[2 * j + 1]) << 16);
            }
            *reinterpret_cast<uint4 *>(red + off) = make_uint4(w[0], w[1], w[2], w[3]);
        }
    }
}

template <int W, bool VEC>
__global__ void __launch_bounds__(kExThreads) allreduce_exchange_kernel(const ExArgs a) {
    const int b = blockIdx.x;
    char *own = a.own;
    volatile uint64_t *flag = reinterpret_cast<volatile uint64_t *>(own + kCommFlags + b * kCommFlagStride);
    const uint64_t e = *flag + 1;
    const size_t slot = kCommHeader + (e & 1) * a.slot_bytes;
    if constexpr (VEC) {
        const int64_t units = a.row / 16;
        for (int64_t t = b; t < a.tokens; t += gridDim.x) {
            const uint4 *src = reinterpret_cast<const uint4 *>(a.x + t * a.x_st);
            uint4 *dst = reinterpret_cast<uint4 *>(own + slot + t * a.row);
            for (int64_t i = threadIdx.x; i < units; i += blockDim.x) dst[i] = src[i];
        }
    } else {
        const int64_t units = a.row / 2;  // rows copied as 16-bit units (every dtype's size is a multiple)
        for (int64_t t = b; t < a.tokens; t += gridDim.x) {
            const uint16_t *src = reinterpret_cast<const uint16_t *>(a.x + t * a.x_st);
            uint16_t *dst = reinterpret_cast<uint16_t *>(own + slot + t * a.row);
            for (int64_t i = threadIdx.x; i < units; i += blockDim.x) dst[i] = src[i];
        }
    }
    __syncthreads();  // every thread has read e and written its part
    if (threadIdx.x == 0) {
        __threadfence_system();
        *flag = e;
#pragma unroll
        for (int r = 0; r < W; ++r) {
            if (r == a.rank) continue;
            const volatile uint64_t *f = reinterpret_cast<const volatile uint64_t *>(a.bufs[r] + kCommFlags + b * kCommFlagStride);
            while (*f < e) {
            }
        }
        __threadfence_system();
    }
    __syncthreads();
    char *red = own + kCommHeader + 2 * a.slot_bytes;
    if constexpr (VEC) {
        if (a.dtype == kBF16) sum_rows_b128<W, kBF16>(a, slot, red);
        else if (a.dtype == kF16) sum_rows_b128<W, kF16>(a, slot, red);
        else sum_rows_b128<W, kF32>(a, slot, red);
    } else {
        const int es = dtype_size(a.dtype);
        for (int64_t t = b; t < a.tokens; t += gridDim.x) {
            for (int64_t c = threadIdx.x; c < a.hidden; c += blockDim.x) {
                const int64_t off = t * a.row + c * es;
                float acc = load_volatile(a.bufs[0] + slot + off, a.dtype);
#pragma unroll
                for (int r = 1; r < W; ++r) acc += load_volatile(a.bufs[r] + slot + off, a.dtype);
                store_from_f32(red + off, a.dtype, acc);
            }
        }
    }
    if (a.fused) {  // uniform: every thread of every block
        __syncthreads();  // the rows this block reduced, visible to all its threads
        for (int64_t t = b; t < a.tokens; t += gridDim.x) add_rmsnorm_generic_row(a.norm, t);
    }
}

using ExKernel = void (*)(ExArgs);

template <bool VEC>
ExKernel exchange_kernel(int world) {
    switch (world) {
        case 1: return allreduce_exchange_kernel<1, VEC>;
        case 2: return allreduce_exchange_kernel<2, VEC>;
        case 3: return allreduce_exchange_kernel<3, VEC>;
        case 4: return allreduce_exchange_kernel<4, VEC>;
        case 5: return allreduce_exchange_kernel<5, VEC>;
        case 6: return allreduce_exchange_kernel<6, VEC>;
        case 7: return allreduce_exchange_kernel<7, VEC>;
        case 8: return allreduce_exchange_kernel<8, VEC>;
        default: return nullptr;
    }
}
static_assert(kCommMaxWorld == 8, "exchange_kernel instantiates W = 1 .. kCommMaxWorld");

}  // namespace

gatednorm_status gpu_allreduce_add_rmsnorm(const CommState &c, AddRmsnormProblem p, void *stream_ptr) {
    if (p.tokens >= (int64_t(1) << 31) || p.hidden > (int64_t(1) << 30))
        return fail(GATEDNORM_STATUS_UNSUPPORTED, "x: %lld rows of %lld; the GPU kernels take fewer than 2^31 rows of at most 2^30",
                    (long long)p.tokens, (long long)p.hidden);
    DeviceGuard guard(p.device_id);
    if (!guard.ok()) return guard.status();
    const hipStream_t s = static_cast<hipStream_t>(stream_ptr);
    ExArgs a;
    memset(&a, 0, sizeof a);
    for (int r = 0; r < c.world; ++r) a.bufs[r] = c.buffers[r];
    a.own = c.buffers[c.rank];
    const int es = dtype_size(p.x_dtype);
    a.x = p.x;
    a.x_st = p.x_st * es;
    a.tokens = p.tokens;
    a.row = p.hidden * es;
    a.slot_bytes = c.slot_bytes;
    a.hidden = int32_t(p.hidden);
    a.dtype = p.x_dtype;
    a.rank = c.rank;
    // 16-byte units when every row of x, of the slots and of the reduced region starts on a
    // 16-byte boundary: x and its token stride (when there is more than one token), the row
    // bytes (token t's row starts t * row into a slot); buffers are 256-byte aligned
    // (gatednorm_comm_create) and so are the slots (the static_assert above).
    const bool vec = a.row % 16 == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 && (a.tokens == 1 || a.x_st % 16 == 0) &&
                     c.slot_bytes % 16 == 0;
    const ExKernel k = vec ? exchange_kernel<true>(c.world) : exchange_kernel<false>(c.world);
    if (!k) return fail(GATEDNORM_STATUS_INVALID_ARGUMENT, "comm: world_size %d", c.world);
    // The norm reads the reduced region (rank-local, x's dtype, rows of `hidden`).
    p.x = c.buffers[c.rank] + kCommHeader + 2 * c.slot_bytes;
    p.x_st = p.hidden;
    p.pdl = false;
    // Up to one token a block: one launch, each block normalizing the row it reduced with
    // add_rmsnorm's generic body (the row kernel's sum order, so the same bits as the
    // unfused path).  More tokens: the row kernel's own launch after the exchange, which
    // streams large T faster than 16 blocks of 256 threads would.
    a.fused = p.tokens <= kCommGpuBlocks;
    if (a.fused) a.norm = make_add_args(p, 0);
    k<<<kCommGpuBlocks, kExThreads, 0, s>>>(a);
    const gatednorm_status st = check_launch("allreduce exchange");
    if (st != GATEDNORM_STATUS_SUCCESS) return st;
    if (!a.fused) return gpu_add_rmsnorm(p, stream_ptr);
    note_kernel("allreduce.one_shot.fused");
    return st;
}

gatednorm_status gpu_comm_buffer_alloc(int32_t device_id, size_t bytes, void **buffer, uint8_t *handle) {
    static_assert(sizeof(hipIpcMemHandle_t) == GATEDNORM_COMM_HANDLE_BYTES, "IPC handle size");
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    void *p = nullptr;
#if defined(GN_PLATFORM_HIP)
    // Uncached (fine-grained) memory: peers on other GPUs see the flags and partials while
    // the kernels run (coarse-grained hipMalloc memory is coherent only at kernel boundaries).
    hipError_t err = hipExtMallocWithFlags(&p, bytes, hipDeviceMallocUncached);
#else
    hipError_t err = hipMalloc(&p, bytes);
#endif
    if (err != hipSuccess) {
        (void)hipGetLastError();
        return fail(GATEDNORM_STATUS_OUT_OF_MEMORY, "bytes: could not allocate %zu bytes on device %d: %s", bytes, device_id, hipGetErrorString(err));
    }
    err = hipMemsetAsync(p, 0, bytes, nullptr);
    if (err == hipSuccess) err = hipStreamSynchronize(nullptr);
    hipIpcMemHandle_t h;
    if (err == hipSuccess) err = hipIpcGetMemHandle(&h, p);
    if (err != hipSuccess) {
        (void)hipFree(p);
        return runtime_fail(err, "comm_buffer_alloc");
    }
    memcpy(handle, &h, sizeof h);
    *buffer = p;
    return GATEDNORM_STATUS_SUCCESS;
}

gatednorm_status gpu_comm_buffer_open(int32_t device_id, const uint8_t *handle, void **buffer) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    hipIpcMemHandle_t h;
    memcpy(&h, handle, sizeof h);
    const hipError_t err = hipIpcOpenMemHandle(buffer, h, hipIpcMemLazyEnablePeerAccess);
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "handle");
}

gatednorm_status gpu_comm_buffer_close(int32_t device_id, void *buffer) {
    DeviceGuard guard(device_id);
    if (!guard.ok()) return guard.status();
    const hipError_t err = hipIpcCloseMemHandle(buffer);
    return err == hipSuccess ? GATEDNORM_STATUS_SUCCESS : runtime_fail(err, "buffer");
}

}  // namespace gn
