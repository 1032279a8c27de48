// The one place where HIP meets CUDA.  Kernels are written against the small HIP subset
// below; under nvcc each name maps onto its CUDA twin, under hipcc it is HIP itself.
// Keep this list short: every name a kernel or launcher uses must appear here.
//
//   runtime: hipError_t hipSuccess hipGetErrorString hipGetLastError hipStream_t
//            hipGetDeviceCount hipGetDevice hipSetDevice hipDeviceProp_t hipGetDeviceProperties
//            hipDeviceGetAttribute hipDeviceAttribute{MultiprocessorCount,WarpSize,L2CacheSize}
//            hipMalloc hipFree hipMemcpyAsync hipMemcpyDefault hipMemsetAsync
//            hipStreamCreateWithFlags hipStreamNonBlocking hipStreamSynchronize
//            hipStreamDestroy hipDeviceSynchronize hipPointerGetAttributes
//            hipPointerAttribute_t hipMemoryType{Host,Device,Managed,Unregistered}
//            hipIpcMemHandle_t hipIpcGetMemHandle hipIpcOpenMemHandle hipIpcCloseMemHandle
//            hipIpcMemLazyEnablePeerAccess (the all-reduce's peer buffers; on HIP only,
//            hipExtMallocWithFlags hipDeviceMallocUncached: fine-grained memory for them)
//            hipOccupancyMaxActiveBlocksPerMultiprocessor (whether ranks sharing a GPU fit)
//            gn_prefer_shared, gn_resident_blocks(_cached), gn_max_dynamic_shared,
//            gn_allow_dynamic_shared, gn_static_shared (CUDA only, with GN_HAS_COPY_ASYNC: a
//            kernel's L1 / shared-memory split; a resident grid's size; dynamic shared memory
//            past 48 KB)
//            hipHostMalloc hipHostMallocMapped hipHostGetDevicePointer hipHostFree (the
//            all-reduce's abort word, host memory its kernel writes)
//   device:  gn_shfl_xor (shuffle within groups of `width` <= 32 lanes, all lanes active)
//            gn_wall_ticks (a constant-rate clock: the all-reduce's wait deadline; gn_wall_tick_hz
//            on the host gives its rate)
//            GN_LAUNCH_BOUNDS (block size and the threads a multiprocessor must keep resident)
//            gn_wait_prior_grid, gn_allow_next_grid (programmatic dependent launch, below)
//            gn_load_b128_hint, gn_store_b128_hint (16-byte accesses with a cache hint, below)
//            gn_load_b128_stream (16-byte read-once load, predicated: W4A16 weights),
//            gn_load_b128_stream_all (the same unpredicated)
//            gn_copy_async_b128, gn_copy_async_commit, gn_copy_async_wait<N> (CUDA only:
//            GN_HAS_COPY_ASYNC; 16-byte global -> shared copies that hold no register while
//            in flight, below), gn_copy_async_warp<CH>, gn_copy_async_warp_span<CH>,
//            gn_copy_async_warp_slot<CH>, gn_copy_async_warp_sync<CH> (a warp's lanes'
//            chunks copied by whole-sector instructions), gn_copy_async_rounds<STAGES> (a
//            ring's loop over a resident grid's rounds)
//   launch:  gn_launch (plain, or PDL where asked for and available), gn_device_has_pdl,
//            gn_launch_pdl (CUDA only: GN_HAS_PDL), gn_launch_smem (CUDA only: a launch with
//            dynamic shared memory, PDL where asked), gn_launch_resident (CUDA only: a
//            resident grid)
//
// No code depends on the warp width (64 on CDNA, 32 on RDNA and NVIDIA): reductions work
// in groups of at most 32 lanes, which divides both.
#pragma once

// Cache hints of gn_load_b128_hint / gn_store_b128_hint.
enum GnHint : int { kHintPrefetch256 = 1, kHintNc = 2, kHintKeepL2 = 3 };

#if defined(__NVCC__) || (defined(__CUDACC__) && !defined(__HIP__))
#include <cuda_runtime.h>

#include <atomic>

#define GN_PLATFORM_CUDA 1
#define GN_PLATFORM_NAME "cuda"

using hipError_t = cudaError_t;
using hipStream_t = cudaStream_t;
using hipDeviceProp_t = cudaDeviceProp;
using hipPointerAttribute_t = cudaPointerAttributes;
#define hipSuccess cudaSuccess
#define hipGetErrorString cudaGetErrorString
#define hipGetLastError cudaGetLastError
#define hipGetDeviceCount cudaGetDeviceCount
#define hipGetDevice cudaGetDevice
#define hipSetDevice cudaSetDevice
#define hipGetDeviceProperties cudaGetDeviceProperties
#define hipDeviceGetAttribute cudaDeviceGetAttribute
#define hipDeviceAttributeMultiprocessorCount cudaDevAttrMultiProcessorCount
#define hipDeviceAttributeWarpSize cudaDevAttrWarpSize
#define hipDeviceAttributeL2CacheSize cudaDevAttrL2CacheSize
#define hipMalloc cudaMalloc
#define hipFree cudaFree
#define hipMemcpyAsync cudaMemcpyAsync
#define hipErrorInvalidConfiguration cudaErrorInvalidConfiguration
#define hipMemcpyDefault cudaMemcpyDefault
#define hipMemsetAsync cudaMemsetAsync
#define hipStreamCreateWithFlags cudaStreamCreateWithFlags
#define hipStreamNonBlocking cudaStreamNonBlocking
#define hipStreamSynchronize cudaStreamSynchronize
#define hipStreamDestroy cudaStreamDestroy
#define hipDeviceSynchronize cudaDeviceSynchronize
#define hipPointerGetAttributes cudaPointerGetAttributes
#define hipOccupancyMaxActiveBlocksPerMultiprocessor cudaOccupancyMaxActiveBlocksPerMultiprocessor
#define hipMemoryTypeHost cudaMemoryTypeHost
#define hipMemoryTypeDevice cudaMemoryTypeDevice
#define hipMemoryTypeManaged cudaMemoryTypeManaged
#define hipMemoryTypeUnregistered cudaMemoryTypeUnregistered
#define GN_POINTER_MEMORY_TYPE(attr) ((attr).type)
using hipIpcMemHandle_t = cudaIpcMemHandle_t;
#define hipIpcGetMemHandle cudaIpcGetMemHandle
#define hipHostMalloc cudaHostAlloc
#define hipHostMallocMapped cudaHostAllocMapped
#define hipHostGetDevicePointer cudaHostGetDevicePointer
#define hipHostFree cudaFreeHost
#define hipIpcOpenMemHandle cudaIpcOpenMemHandle
#define hipIpcCloseMemHandle cudaIpcCloseMemHandle
#define hipIpcMemLazyEnablePeerAccess cudaIpcMemLazyEnablePeerAccess

__device__ __forceinline__ float gn_shfl_xor(float v, int lane_mask, int width) {
    return __shfl_xor_sync(0xffffffffu, v, lane_mask, width);
}

// Launch bounds from the threads each multiprocessor must keep resident: CUDA's second
// argument counts blocks per multiprocessor.
#define GN_LAUNCH_BOUNDS(block, resident_threads) __launch_bounds__(block, (resident_threads) / (block))

// Programmatic dependent launch (Hopper and later): a kernel launched with the
// programmatic-stream-serialization attribute may start while the previous kernel on its
// stream is still running, so it must wait for that grid (and its memory) before touching
// global memory; allowing the next grid early lets its launch overlap this one's tail.
// Both are no-ops when the kernel was launched without the attribute, and on older GPUs.
__device__ __forceinline__ void gn_wait_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void gn_allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// A clock that runs at a constant rate whatever the SM clock does: PTX's %globaltimer, in ns.
__device__ __forceinline__ uint64_t gn_wall_ticks() {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
inline double gn_wall_tick_hz(int /*device_id*/) { return 1e9; }

// 16-byte accesses with a cache hint, for the tuner's A/B of the vec kernel's flags
// (rmsnorm_gated_kernels.h): the L2 prefetch-size hint (256 bytes per miss), the
// non-coherent read-only path (ld.global.nc), and stores that L2 keeps last (an evict-last
// policy).  Loads are predicated inside the asm (zeros where !ok), volatile so that none
// moves above gn_wait_prior_grid.
template <int HINT>
__device__ __forceinline__ uint4 gn_load_b128_hint(const void *p, bool ok) {
    static_assert(HINT == kHintPrefetch256 || HINT == kHintNc, "a load hint");
    uint4 r = make_uint4(0u, 0u, 0u, 0u);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    constexpr bool kPlain = HINT == kHintPrefetch256;  // the L2 prefetch hint is sm_80's
#else
    constexpr bool kPlain = false;
#endif
    if constexpr (kPlain) {
        if (ok) r = *static_cast<const uint4 *>(p);
    } else if constexpr (HINT == kHintPrefetch256)
        asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %4, 0;\n\t@q ld.global.L2::256B.v4.u32 {%0, %1, %2, %3}, [%5];\n\t}"
                     : "+r"(r.x), "+r"(r.y), "+r"(r.z), "+r"(r.w) : "r"(int(ok)), "l"(p));
    else
        asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %4, 0;\n\t@q ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%5];\n\t}"
                     : "+r"(r.x), "+r"(r.y), "+r"(r.z), "+r"(r.w) : "r"(int(ok)), "l"(p));
    return r;
}
template <int HINT>
__device__ __forceinline__ void gn_store_b128_hint(void *p, uint4 v) {
    static_assert(HINT == kHintKeepL2, "a store hint");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800  // cache policies are sm_80's
    *static_cast<uint4 *>(p) = v;
#else
    asm volatile("{\n\t.reg .b64 pol;\n\tcreatepolicy.fractional.L2::evict_last.b64 pol, 1.0;\n\t"
                 "st.global.L2::cache_hint.v4.u32 [%0], {%1, %2, %3, %4}, pol;\n\t}"
                 :: "l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
#endif
}

// The same without a predicate, for loops whose every load is in range (no zeroing of the
// destination first: run 65's lean gemv loop).
__device__ __forceinline__ uint4 gn_load_b128_stream_all(const void *p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    return *static_cast<const uint4 *>(p);
#else
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
#endif
}

// A 16-byte load of data read once (streamed W4A16 weights): through the read-only path,
// not kept in L1 (the activations the kernel re-reads stay there), L2's 256-byte prefetch.
// Predicated inside the asm (zeros where !ok).  sm_80 and later; plain below.
__device__ __forceinline__ uint4 gn_load_b128_stream(const void *p, bool ok) {
    uint4 r = make_uint4(0u, 0u, 0u, 0u);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    if (ok) r = *static_cast<const uint4 *>(p);
#else
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %4, 0;\n\t@q ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%5];\n\t}"
                 : "+r"(r.x), "+r"(r.y), "+r"(r.z), "+r"(r.w) : "r"(int(ok)), "l"(p));
#endif
    return r;
}

// Asynchronous 16-byte copies from global into shared memory (sm_80's
// cp.async.cg: through L2 only, no register held while the copy is in flight), so a thread
// can keep several rows' loads outstanding while it computes on an earlier one.  A copy with
// !ok reads nothing and fills the 16 bytes with zeros.  Copies issued since the last commit
// form one group; gn_copy_async_wait<N> returns once at most N of this thread's groups are
// pending, and the completed copies are then visible to this thread (no barrier is needed
// when each thread reads only what it copied).  Below sm_80: a plain load and store.  CUDA
// only: on AMD a kernel that holds its loads in LDS costs occupancy (64 KB a CU on gfx90a /
// gfx942) and the copies would be synchronous, so the kernels using them are not built there.
#define GN_HAS_COPY_ASYNC 1
__device__ __forceinline__ void gn_copy_async_b128(void *smem, const void *gmem, bool ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    *static_cast<uint4 *>(smem) = ok ? *static_cast<const uint4 *>(gmem) : make_uint4(0u, 0u, 0u, 0u);
#else
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(__cvta_generic_to_global(gmem)), "r"(ok ? 16 : 0)
                 : "memory");
#endif
}
__device__ __forceinline__ void gn_copy_async_commit() {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void gn_copy_async_wait() {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// The copies of a warp whose lanes each own CH (1 or 2) adjacent 16-byte chunks at their own
// `p` (a lane's 16 * CH contiguous bytes, as the kernels' lanes hold them), made so that each
// instruction covers 32 consecutive chunks of the warp's instead of every lane's c-th chunk:
// where the lanes' bytes are contiguous, every instruction reads whole sectors.  Why: with
// CH = 2, a lane copying its own chunks reads 16 bytes at a 32-byte stride, half of each
// sector, and cp.async.cg does not pass through L1, which would serve the other half to the
// next instruction: L2 may send every sector twice.  Run 109 measured the pipes with two
// chunks a lane 1.2-1.95x slower than plain loads, those with one within 1.15x
// (scripts/copy_probe.cu tests the cause on a bare stream).  Each copy takes its owner's
// address and `ok` by shuffle; chunk c of a lane lands at its
// warp_slots[gn_copy_async_warp_slot<CH>(c)] (the placing is below).  All 32
// lanes of the warp call it together (this path is CUDA only, where a warp is 32 lanes); a
// lane reads another lane's chunks only after gn_copy_async_wait and __syncwarp, and a slot
// is refilled only after a __syncwarp past every lane's reads of it.
// Slots: the warp's chunk j (chunk j % CH of lane j / CH) at j with one chunk a lane; with
// two, a lane's pair swapped in every other group of 4 lanes (j ^ bit 3 of j), so that each
// 8 lanes' 16-byte reads (2l + c, 32 bytes apart, would fall twice on the same banks) and the
// copies' writes fall in 8 different 16-byte bank groups.
template <int CH>
__device__ __forceinline__ int gn_copy_async_warp_place(int j) {
    return CH == 1 ? j : j ^ ((j >> 3) & 1);
}
template <int CH>
__device__ __forceinline__ int gn_copy_async_warp_slot(int c) {
    return gn_copy_async_warp_place<CH>(int(threadIdx.x % 32) * CH + c);
}
template <int CH>
__device__ __forceinline__ void gn_copy_async_warp(uint4 *warp_slots, const char *p, bool ok) {
    static_assert(CH == 1 || CH == 2, "one or two chunks a lane");
    const int lane = threadIdx.x % 32;
    if constexpr (CH == 1) {
        gn_copy_async_b128(warp_slots + lane, p, ok);
    } else {
#pragma unroll
        for (int i = 0; i < CH; ++i) {
            const int j = i * 32 + lane, owner = j / CH;  // the warp's chunk j is chunk j % CH of lane `owner`
            const auto src = reinterpret_cast<const char *>(__shfl_sync(0xffffffffu, reinterpret_cast<unsigned long long>(p), owner));
            const bool src_ok = __shfl_sync(0xffffffffu, int(ok), owner) != 0;
            gn_copy_async_b128(warp_slots + gn_copy_async_warp_place<CH>(j), src + 16 * (j % CH), src_ok);
        }
    }
}
// The same where the warp's chunks are known to be contiguous (a row's span): the 32 x CH
// chunks from `warp_src`, the first `chunks` of them read, zeros past; no shuffles.
template <int CH>
__device__ __forceinline__ void gn_copy_async_warp_span(uint4 *warp_slots, const char *warp_src, int chunks) {
    static_assert(CH == 1 || CH == 2, "one or two chunks a lane");
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < CH; ++i) {
        const int j = i * 32 + lane;
        gn_copy_async_b128(warp_slots + gn_copy_async_warp_place<CH>(j), j < chunks ? warp_src + 16 * j : warp_src, j < chunks);
    }
}
// The ring's loop over a resident grid's rounds first, first + step, ... < end, with each
// block's next STAGES - 1 rounds in flight: issue(round, slot) copies a round into a ring slot
// and commits (a round past the end commits an empty group, which keeps the wait count
// uniform); use(round, slot) waits for its round (gn_copy_async_wait<STAGES - 1>) and uses
// it.  The slot refilled each round is the one the round before used.  Nothing is left in
// flight at the end.
template <int STAGES, class Issue, class Use>
__device__ __forceinline__ void gn_copy_async_rounds(uint32_t first, uint32_t step, uint32_t end, Issue &&issue, Use &&use) {
    static_assert(STAGES >= 2, "a round in flight while one is used");
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) issue(first + uint32_t(s) * step, s);
    int s = 0;  // the slot of round r
    for (uint32_t r = first; r < end; r += step) {
        issue(r + uint32_t(STAGES - 1) * step, s == 0 ? STAGES - 1 : s - 1);
        use(r, s);
        s = s + 1 == STAGES ? 0 : s + 1;
    }
    gn_copy_async_wait<0>();
}
// The barrier a lane needs between gn_copy_async_wait and reading chunks other lanes copied
// (and between those reads and the slot's refill): none with one chunk a lane.
template <int CH>
__device__ __forceinline__ void gn_copy_async_warp_sync() {
    if constexpr (CH > 1) __syncwarp();
}

// Ask for the largest shared-memory carveout for `kernel` (a hint CUDA may override; the
// default, no preference, need not give a kernel holding 24 KB a block its full occupancy).
template <class Kernel>
inline hipError_t gn_prefer_shared(Kernel kernel) {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, int(cudaSharedmemCarveoutMaxShared));
}

// The blocks of `block` threads with `smem` bytes of dynamic shared memory that `kernel` keeps
// resident on `device` in all (occupancy x multiprocessors; 0 where none fits), the largest
// shared carveout asked first: a resident grid's size.
template <class Kernel>
inline hipError_t gn_resident_blocks(Kernel kernel, int block, int smem, int device, int *blocks) {
    int per_sm = 0, sms = 0;
    hipError_t err = gn_prefer_shared(kernel);
    if (err == hipSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, block, smem);
    if (err == hipSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    *blocks = err == hipSuccess ? per_sm * sms : 0;
    return err;
}

// The same for a kernel launched at one block size without dynamic shared memory, asked once
// a device: `cache` is the kernel's own (zero-initialised; 0 = not asked yet); at least 1.
template <class Kernel, int N>
inline hipError_t gn_resident_blocks_cached(Kernel kernel, int block, int device, std::atomic<int> (&cache)[N], int *blocks) {
    const bool cached = device >= 0 && device < N;
    *blocks = cached ? cache[device].load(std::memory_order_relaxed) : 0;
    if (*blocks > 0) return hipSuccess;
    const hipError_t err = gn_resident_blocks(kernel, block, 0, device, blocks);
    if (err != hipSuccess) return err;
    if (*blocks < 1) *blocks = 1;
    if (cached) cache[device].store(*blocks, std::memory_order_relaxed);
    return hipSuccess;
}

// The most dynamic shared memory a block may ask for on `device` (past the 48 KB default,
// once gn_allow_dynamic_shared raised the kernel's limit): 227 KB on sm_90, 163 KB on sm_80.
inline hipError_t gn_max_dynamic_shared(int device, int *bytes) {
    return cudaDeviceGetAttribute(bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
}
template <class Kernel>
inline hipError_t gn_allow_dynamic_shared(Kernel kernel, int bytes) {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
// The kernel's static shared memory (its __shared__ arrays): the dynamic limit a block may
// be allowed is the device's opt-in maximum less this.
template <class Kernel>
inline hipError_t gn_static_shared(Kernel kernel, int *bytes) {
    cudaFuncAttributes f{};
    const cudaError_t err = cudaFuncGetAttributes(&f, kernel);
    *bytes = int(f.sharedSizeBytes);
    return err;
}

// kernel<<<grid, block, smem, stream>>>(args), with programmatic dependent launch where asked
// for (as gn_launch; `smem` bytes of dynamic shared memory).
inline bool gn_launch_fits(dim3 grid, dim3 block);  // (below, for both platforms)
template <class Args>
hipError_t gn_launch_smem(void (*kernel)(Args), dim3 grid, dim3 block, unsigned smem, hipStream_t stream, const Args &args,
                          bool pdl) {
    if (!gn_launch_fits(grid, block)) return cudaErrorInvalidConfiguration;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = &attr;
    cfg.numAttrs = pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, args);
}

#define GN_HAS_PDL 1
// Whether kernels may be launched with PDL on `device` (the current device; asked once per
// device, hip/runtime.hip): compute capability >= 9.0 and the code this build runs there
// compiled for 9.0+ (griddepcontrol exists only there: a newer GPU that JIT-compiles the
// build's compute_80 PTX would run kernels that never wait for the previous grid).
bool gn_device_has_pdl(int device);

// kernel<<<grid, block, 0, stream>>>(args) with the programmatic-stream-serialization
// attribute; kernel must wait for the prior grid (gn_wait_prior_grid) before touching memory.
template <class Args>
cudaError_t gn_launch_pdl(void (*kernel)(Args), dim3 grid, dim3 block, cudaStream_t stream, const Args &args) {
    return gn_launch_smem(kernel, grid, block, 0, stream, args, true);
}

#else  // HIP (AMD)
#include <hip/hip_runtime.h>

#define GN_PLATFORM_HIP 1
#define GN_PLATFORM_NAME "hip"
#define GN_POINTER_MEMORY_TYPE(attr) ((attr).type)

__device__ __forceinline__ float gn_shfl_xor(float v, int lane_mask, int width) {
    return __shfl_xor(v, lane_mask, width);
}
// HIP reads __launch_bounds__'s second argument as waves per execution unit (a SIMD; clang
// turns it into amdgpu-waves-per-eu).  The unit a block runs on has 4 SIMDs on both AMD
// families: a CDNA compute unit (64-lane waves: resident threads / 256) and, in the default
// WGP mode, an RDNA work-group processor (32-lane waves: resident threads / 128).  A
// blocks-per-multiprocessor count there asked 128-thread blocks for 12 waves per SIMD, past
// CDNA's 8; dividing by 256 on RDNA asked half the waves meant.  RDNA is told by the device
// pass's family macro (gfx10-12, compiled wave32, HIP's default there; clang deprecates the
// wave-size macro); the host pass, which has none, never uses the bound.
#if defined(__GFX10__) || defined(__GFX11__) || defined(__GFX12__)
#define GN_WAVE_LANES 32
#else
#define GN_WAVE_LANES 64
#endif
#define GN_LAUNCH_BOUNDS(block, resident_threads) __launch_bounds__(block, (resident_threads) / (4 * GN_WAVE_LANES))
// No programmatic dependent launch on AMD: stream order alone.
__device__ __forceinline__ void gn_wait_prior_grid() {}
__device__ __forceinline__ void gn_allow_next_grid() {}
// A clock that runs at a constant rate whatever the shader clock does: s_memrealtime, at the
// device's wall-clock rate (hipDeviceAttributeWallClockRate, kHz; 100 MHz on CDNA).
__device__ __forceinline__ uint64_t gn_wall_ticks() { return uint64_t(wall_clock64()); }
inline double gn_wall_tick_hz(int device_id) {
    int khz = 0;
    if (hipDeviceGetAttribute(&khz, hipDeviceAttributeWallClockRate, device_id) != hipSuccess || khz <= 0) khz = 100000;
    return 1e3 * khz;
}
// Cache-hinted 16-byte accesses (CUDA twins above): plain accesses here.
template <int HINT>
__device__ __forceinline__ uint4 gn_load_b128_hint(const void *p, bool ok) {
    return ok ? *static_cast<const uint4 *>(p) : make_uint4(0u, 0u, 0u, 0u);
}
template <int HINT>
__device__ __forceinline__ void gn_store_b128_hint(void *p, uint4 v) {
    *static_cast<uint4 *>(p) = v;
}
__device__ __forceinline__ uint4 gn_load_b128_stream_all(const void *p) {
    typedef unsigned int u32x4 __attribute__((ext_vector_type(4)));
    const u32x4 v = __builtin_nontemporal_load(static_cast<const u32x4 *>(p));
    return make_uint4(v.x, v.y, v.z, v.w);
}
__device__ __forceinline__ uint4 gn_load_b128_stream(const void *p, bool ok) {
    typedef unsigned int u32x4 __attribute__((ext_vector_type(4)));
    if (!ok) return make_uint4(0u, 0u, 0u, 0u);
    const u32x4 v = __builtin_nontemporal_load(static_cast<const u32x4 *>(p));
    return make_uint4(v.x, v.y, v.z, v.w);
}
#endif

// Whether one launch of `grid` blocks of `block` threads is within what the platform takes.
// AMD's dispatch packet counts each dimension's threads in 32 bits (grid x block <= 2^32 - 1;
// runtimes before early 2026 wrapped a larger count, so a truncated grid ran and rows went
// unwritten with no error, later ones refuse it); CUDA counts blocks, 2^31 - 1 in x and 65535
// in y and z.  Every launcher asks before launching (gn_launch does), so a call past it is
// refused with nothing written (launch_fail names the argument).
inline bool gn_launch_fits(dim3 grid, dim3 block) {
#if defined(GN_PLATFORM_HIP)
    constexpr unsigned long long kMax = 0xFFFFFFFFull;
    return (unsigned long long)grid.x * block.x <= kMax && (unsigned long long)grid.y * block.y <= kMax &&
           (unsigned long long)grid.z * block.z <= kMax;
#else
    return grid.x <= 0x7FFFFFFFu && grid.y <= 65535u && grid.z <= 65535u;
#endif
}

// kernel<<<grid, block, 0, stream>>>(args), with programmatic dependent launch where asked
// for and the platform has it (GN_HAS_PDL: gn_launch_pdl); a plain launch otherwise.  The
// launch's own error comes back (hipErrorInvalidConfiguration, launching nothing, where
// gn_launch_fits says no); a kernel's is for check_launch.
template <class Args>
hipError_t gn_launch(void (*kernel)(Args), dim3 grid, dim3 block, hipStream_t stream, const Args &args, bool pdl) {
    if (!gn_launch_fits(grid, block)) return hipErrorInvalidConfiguration;
#if defined(GN_HAS_PDL)
    if (pdl) return gn_launch_pdl(kernel, grid, block, stream, args);
#else
    (void)pdl;
#endif
    kernel<<<grid, block, 0, stream>>>(args);
    return hipSuccess;
}

#if defined(GN_HAS_COPY_ASYNC)
// `kernel` on a resident grid: as many blocks of `block` threads as `device` keeps resident
// (asked once a device; `cache` is the kernel's own, as gn_resident_blocks_cached's), fewer
// where there are fewer `rounds` of work.
template <class Args, int N>
hipError_t gn_launch_resident(void (*kernel)(Args), unsigned block, int device, std::atomic<int> (&cache)[N], int64_t rounds,
                              hipStream_t stream, const Args &args, bool pdl) {
    int blocks = 0;
    const hipError_t err = gn_resident_blocks_cached(kernel, int(block), device, cache, &blocks);
    if (err != hipSuccess) return err;
    return gn_launch(kernel, unsigned(rounds < blocks ? rounds : blocks), block, stream, args, pdl);
}
#endif
