// Launcher for gated RMSNorm: picks the kernel and its team shape from D, the dtypes and
// the alignment, and sizes a persistent grid from the device's multiprocessor count.
#include "backend.h"
#include "device_guard.h"
#include "rmsnorm_gated_kernels.h"

namespace gn {
namespace {

// Largest row the register-resident vec kernel holds: 256 lanes x 4 chunks x 8 elements.
constexpr int kVecMaxDim = kBlockThreads * 4 * 8;

// Rows a team keeps in flight per iteration: two when a lane holds one 16-byte chunk of a
// 16-bit row (short rows, e.g. D = 128); one when its chunk of an fp32 row is already 32
// bytes or it holds four chunks (two would spill).
template <int XDT, int CPT>
constexpr int kRowsPerIteration = CPT == 1 && XDT != kF32 ? 2 : 1;

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

template <typename Kernel>
unsigned grid_for(Kernel kernel, int device_id, int64_t blocks_needed) {
    // Resident blocks per multiprocessor of this kernel, asked once per instantiation.
    static const int per_sm = [kernel] {
        int n = 0;
        if (hipOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kBlockThreads, 0) != hipSuccess || n < 1) {
            (void)hipGetLastError();
            n = 1;
        }
        return n;
    }();
    const int64_t resident = int64_t(multiprocessor_count(device_id)) * per_sm;
    return unsigned(blocks_needed < resident ? blocks_needed : resident);
}

template <int XDT, int ODT, int TPR, int CPT>
void launch_vec(const RmsnormGatedArgs &a, int device_id, hipStream_t stream) {
    constexpr int R = kRowsPerIteration<XDT, CPT>;
    auto kernel = rmsnorm_gated_vec_kernel<XDT, ODT, TPR, CPT, R>;
    constexpr int kRowsPerBlock = kBlockThreads / TPR * R;
    const unsigned grid = grid_for(kernel, device_id, (int64_t(a.rows) + kRowsPerBlock - 1) / kRowsPerBlock);
    kernel<<<grid, kBlockThreads, 0, stream>>>(a);
}

// Team shape from the number of 8-element chunks in a row.
template <int XDT, int ODT>
void launch_vec_shape(const RmsnormGatedArgs &a, int device_id, hipStream_t stream) {
    const int chunks = a.dim / 8;
    if (chunks <= 4) launch_vec<XDT, ODT, 4, 1>(a, device_id, stream);
    else if (chunks <= 8) launch_vec<XDT, ODT, 8, 1>(a, device_id, stream);
    else if (chunks <= 16) launch_vec<XDT, ODT, 16, 1>(a, device_id, stream);
    else if (chunks <= 32) launch_vec<XDT, ODT, 32, 1>(a, device_id, stream);
    else if (chunks <= 32 * 4) launch_vec<XDT, ODT, 32, 4>(a, device_id, stream);
    else launch_vec<XDT, ODT, kBlockThreads, 4>(a, device_id, stream);
}

template <int XDT>
void launch_vec_out(const RmsnormGatedArgs &a, int device_id, hipStream_t stream) {
    switch (a.out_dtype) {
        case kBF16: return launch_vec_shape<XDT, kBF16>(a, device_id, stream);
        case kF16: return launch_vec_shape<XDT, kF16>(a, device_id, stream);
        default: return launch_vec_shape<XDT, kF32>(a, device_id, stream);
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
    return a;
}

}  // namespace

gatednorm_status gpu_rmsnorm_gated(const RmsnormGatedProblem &p, void *stream_ptr) {
    if (p.tokens * p.heads >= (int64_t(1) << 31) || p.dim >= (int64_t(1) << 31))
        return fail(GATEDNORM_STATUS_UNSUPPORTED, "x: %lld rows of %lld; the GPU kernels take fewer than 2^31 of each",
                    (long long)(p.tokens * p.heads), (long long)p.dim);
    if (p.tokens * p.heads == 0) return GATEDNORM_STATUS_SUCCESS;
    DeviceGuard guard(p.device_id);
    if (!guard.ok()) return guard.status();
    const RmsnormGatedArgs a = make_args(p);
    hipStream_t stream = static_cast<hipStream_t>(stream_ptr);
    if (vec_path_ok(p)) {
        switch (a.x_dtype) {
            case kBF16: launch_vec_out<kBF16>(a, p.device_id, stream); break;
            case kF16: launch_vec_out<kF16>(a, p.device_id, stream); break;
            default: launch_vec_out<kF32>(a, p.device_id, stream); break;
        }
    } else {
        auto kernel = rmsnorm_gated_generic_kernel;
        const unsigned grid = grid_for(kernel, p.device_id, (int64_t(a.rows) + kGenericTeams - 1) / kGenericTeams);
        kernel<<<grid, kBlockThreads, 0, stream>>>(a);
    }
    return check_launch("rmsnorm_gated");
}

}  // namespace gn
