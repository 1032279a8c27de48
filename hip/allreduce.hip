// Fused all-reduce + add-RMSNorm (ops.md §5, docs/allreduce.md): GPU side.  One-shot:
//  exchange kernel (fixed grid of kCommGpuBlocks blocks; block b owns tokens b, b + grid, ...):
//    e = own ready[b] + 1 (the epoch lives in device memory: graph replays advance it);
//    copy this rank's rows into own slot e % 2; __syncthreads; thread 0: system fence, then
//    ready[b] = e; thread 0 spins (volatile) until every peer's ready[b] >= e, then a fence;
//    __syncthreads; the block sums its rows over the W slots in rank order in fp32 (volatile
//    loads: peers' memory, never cached in L1) and stores the sum rounded to x's dtype in the
//    rank-local reduced region;
//  then add_rmsnorm (add_rmsnorm.hip's kernels) reads the reduced region, on the same stream.
// Two slots suffice (cpu_allreduce.cpp has the argument): rank r writes slot e % 2 of block b
// only after every peer's block b raised its flag to e - 1, so every peer has started its call
// e - 1, and stream order finished its call e - 2 (hence no PDL here).  The grid is fixed, so
// every block of every rank counts the same epochs whatever the token count.
// The W exchange kernels of one call must be resident at once (they wait on each other): with
// ranks as streams of one GPU that is W * kCommGpuBlocks blocks of 256 threads (128 at W = 8).
#include <string.h>

#include "backend.h"
#include "device_guard.h"
#include "numerics.h"

namespace gn {
namespace {

constexpr int kExThreads = 256;

struct ExArgs {
    char *bufs[kCommMaxWorld];
    const char *x;
    int64_t x_st;    // bytes between tokens of x
    int64_t tokens;
    int64_t row;     // bytes of a row
    size_t slot_bytes;
    int32_t hidden, dtype, world, rank;
};

__device__ __forceinline__ float load_volatile(const char *p, int dt) {
    if (dt == kF32) return *reinterpret_cast<const volatile float *>(p);
    const uint16_t h = *reinterpret_cast<const volatile uint16_t *>(p);
    return dt == kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

__global__ void __launch_bounds__(kExThreads) allreduce_exchange_kernel(const ExArgs a) {
    const int b = blockIdx.x;
    char *own = a.bufs[a.rank];
    volatile uint64_t *flag = reinterpret_cast<volatile uint64_t *>(own + kCommFlags + b * kCommFlagStride);
    const uint64_t e = *flag + 1;
    const size_t slot = kCommHeader + (e & 1) * a.slot_bytes;
    const int64_t units = a.row / 2;  // rows copied as 16-bit units (every dtype's size is a multiple)
    for (int64_t t = b; t < a.tokens; t += gridDim.x) {
        const uint16_t *src = reinterpret_cast<const uint16_t *>(a.x + t * a.x_st);
        uint16_t *dst = reinterpret_cast<uint16_t *>(own + slot + t * a.row);
        for (int64_t i = threadIdx.x; i < units; i += blockDim.x) dst[i] = src[i];
    }
    __syncthreads();  // every thread has read e and written its part
    if (threadIdx.x == 0) {
        __threadfence_system();
        *flag = e;
        for (int r = 0; r < a.world; ++r) {
            if (r == a.rank) continue;
            const volatile uint64_t *f = reinterpret_cast<const volatile uint64_t *>(a.bufs[r] + kCommFlags + b * kCommFlagStride);
            while (*f < e) {
            }
        }
        __threadfence_system();
    }
    __syncthreads();
    const int es = dtype_size(a.dtype);
    char *red = own + kCommHeader + 2 * a.slot_bytes;
    for (int64_t t = b; t < a.tokens; t += gridDim.x) {
        for (int64_t c = threadIdx.x; c < a.hidden; c += blockDim.x) {
            const int64_t off = t * a.row + c * es;
            float acc = load_volatile(a.bufs[0] + slot + off, a.dtype);
            for (int r = 1; r < a.world; ++r) acc += load_volatile(a.bufs[r] + slot + off, a.dtype);
            store_from_f32(red + off, a.dtype, acc);
        }
    }
}

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
    const int es = dtype_size(p.x_dtype);
    a.x = p.x;
    a.x_st = p.x_st * es;
    a.tokens = p.tokens;
    a.row = p.hidden * es;
    a.slot_bytes = c.slot_bytes;
    a.hidden = int32_t(p.hidden);
    a.dtype = p.x_dtype;
    a.world = c.world;
    a.rank = c.rank;
    allreduce_exchange_kernel<<<kCommGpuBlocks, kExThreads, 0, s>>>(a);
    const gatednorm_status st = check_launch("allreduce exchange");
    if (st != GATEDNORM_STATUS_SUCCESS) return st;
    p.x = c.buffers[c.rank] + kCommHeader + 2 * c.slot_bytes;
    p.x_st = p.hidden;
    p.pdl = false;
    return gpu_add_rmsnorm(p, stream_ptr);
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
