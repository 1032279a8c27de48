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
//   launch:  gn_launch (plain, or PDL where asked for and available), gn_device_has_pdl,
//            gn_launch_pdl (CUDA only: GN_HAS_PDL)
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
    asm volatile("ld.global.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
#endif
}

// A 16-byte load of data read once (streamed W4A16 weights): not kept in L1 (the
// activations the kernel re-reads stay there), L2's 256-byte prefetch.  Coherent, not .nc:
// a PDL-launched kernel's weights may come from a prepack still running (hip/w4a16_kernels.h,
// w4_pdl_wait).  Predicated inside the asm (zeros where !ok).  sm_80 and later; plain below.
__device__ __forceinline__ uint4 gn_load_b128_stream(const void *p, bool ok) {
    uint4 r = make_uint4(0u, 0u, 0u, 0u);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    if (ok) r = *static_cast<const uint4 *>(p);
#else
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %4, 0;\n\t@q ld.global.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%5];\n\t}"
                 : "+r"(r.x), "+r"(r.y), "+r"(r.z), "+r"(r.w) : "r"(int(ok)), "l"(p));
#endif
    return r;
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
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = stream;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, args);
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
