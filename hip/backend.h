// The contract between the C ABI layer (validation + dispatch, pybind_free_api/) and the
// backends: the CPU one in pybind_free_api/src/cpu_*.cpp and the GPU one in hip/.
// Plain C++ host types only, so it compiles with or without a GPU compiler.
// By the time a backend sees a problem, every argument has been validated.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "gatednorm.h"

namespace gn {

// The GPU backend's per-device caches (launch facts asked once a device) hold this many
// devices; a device past them is asked at every call, or refused where the cache is needed.
constexpr int kCachedDevices = 64;

// A [T, H, D] view of rows with strides in elements; D is contiguous.
struct RowsView {
    char *data = nullptr;  // byte_offset already applied; nullptr for an absent gate
    int dtype = 0;         // gn::Dtype
    int64_t stride_t = 0;
    int64_t stride_h = 0;
};

struct RmsnormGatedProblem {
    int64_t tokens = 0, heads = 0, dim = 0;  // T, H, D
    RowsView x, z, out;
    const void *weight = nullptr;
    int weight_dtype = 0;
    bool norm_before_gate = true;
    int activation = 0;  // gn::Activation
    float eps = 1e-6f;
    float weight_offset = 0.0f;
    int device_id = 0;
    bool pdl = false;  // programmatic dependent launch, where the GPU has it
};

// Records the static name of the kernel this thread's call ran (gatednorm_last_kernel).
void note_kernel(const char *name);

// Sets this thread's last-error message (printf-style) and returns status, so that
// backends can `return fail(STATUS, "...")`.
gatednorm_status fail(gatednorm_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// FP8 per-group quantization outputs (ops.md §2), as validated: what every op with an FP8
// output hands its backend.
struct QuantFp8Spec {
    int format = 0;          // gn::Fp8Format
    float fp8_max = 448.0f;  // resolved (never 0)
    float amax_floor = 1e-10f;
    int scale_format = 0;    // gn::ScaleFormat
    int64_t group = 128;     // G
    bool quantize_rounded = false;
    char *q = nullptr;       // byte_offset applied
    int64_t q_st = 0;        // token stride of q, in bytes (= elements); a token's row is contiguous
    char *scales = nullptr;  // byte_offset applied
    int64_t s_st = 0, s_sk = 0;  // token / group strides of scales in elements of the scale dtype
                                 // (packed E8M0: in int32 words)
    int64_t groups = 0;          // K = row / G
};

// Gated RMSNorm + FP8 quantization: §1's problem (out = the optional bf16/fp16/fp32 copy,
// out.data == nullptr without one) plus the quant outputs.  Rows are [tokens, heads] as in
// §1, with heads the H of the flattened token row [H * D].
struct RmsnormGatedFp8Problem {
    RmsnormGatedProblem norm;
    QuantFp8Spec quant;
    int round_dtype = 0;  // the dtype y is rounded to when quant.quantize_rounded
};

// RMSNorm / add-RMSNorm (ops.md §3), optionally with FP8 outputs; also the standalone group
// quantization (normalize = false: y = x, no weight, no residual).  Rows are tokens of
// `hidden` contiguous elements; strides in elements of each tensor's dtype.
struct AddRmsnormProblem {
    int64_t tokens = 0, hidden = 0;
    const char *x = nullptr;
    int x_dtype = 0;
    int64_t x_st = 0;
    const char *res = nullptr;  // residual, or nullptr
    int res_dtype = 0;
    int64_t res_st = 0;
    char *res_out = nullptr;    // where r is stored (== res in place); nullptr without a residual
    int64_t res_out_st = 0;
    char *y = nullptr;          // or nullptr
    int y_dtype = 0;
    int64_t y_st = 0;
    const void *weight = nullptr;
    int weight_dtype = 0;
    float eps = 1e-6f, weight_offset = 0.0f;
    bool normalize = true;      // false: group_quant_fp8 (y = x)
    bool has_quant = false;
    QuantFp8Spec quant;
    int round_dtype = 0;        // the dtype y is rounded to when quant.quantize_rounded
    int device_id = 0;
    bool pdl = false;
};

gatednorm_status cpu_rmsnorm_gated(const RmsnormGatedProblem &p);
gatednorm_status cpu_add_rmsnorm(const AddRmsnormProblem &p);
gatednorm_status cpu_rmsnorm_gated_fp8(const RmsnormGatedFp8Problem &p);

// W4A16 (ops.md section 4, w4a16.md).  Shapes and strides validated; strides in elements.
struct W4a16Weight {
    int layout = 0;                    // gatednorm_w4a16_layout
    int64_t n = 0, k = 0, group = 0;   // N, K, G (G = K: per-channel)
    bool symmetric = false;
    int dtype = 0;                     // TILED: gn::Dtype its scales are stored in
    // PLAIN
    const uint8_t *q = nullptr;        // [N, K/2]
    int64_t q_sn = 0;
    const void *s = nullptr;           // [N, K/G]
    int s_dtype = 0;
    int64_t s_sn = 0, s_sg = 0;
    const uint8_t *z = nullptr;        // [N, K/G] or null
    int64_t z_sn = 0, z_sg = 0;
    // TILED
    const uint8_t *tiled = nullptr;
};

struct W4a16GemmProblem {
    int64_t m = 0;
    const void *a = nullptr;           // [M, K]
    int a_dtype = 0;                   // kBF16 / kF16
    int64_t a_sm = 0;
    W4a16Weight w;
    const void *bias = nullptr;        // [N] or null
    int bias_dtype = 0;
    void *out = nullptr;               // [M, N]
    int out_dtype = 0;
    int64_t out_sm = 0;
    void *workspace = nullptr;
    size_t workspace_bytes = 0;
    int device_id = 0;
    bool pdl = false;                  // params.pdl (the GPU launcher honours it on CUDA >= 9.0)
};

struct W4a16PrepackProblem {
    W4a16Weight w;                     // PLAIN
    uint8_t *packed = nullptr;         // W4Tiled::total_bytes
    int dtype = 0;                     // gn::Dtype of the stored scales
    int device_id = 0;
};

gatednorm_status cpu_w4a16_gemm(const W4a16GemmProblem &p);
gatednorm_status cpu_w4a16_prepack(const W4a16PrepackProblem &p);

// GPU backend.  Built from hip/ when a GPU toolchain is present, otherwise from a stub
// that answers GATEDNORM_STATUS_NO_DEVICE.  gpu_platform() is the DLPack device type the
// backend serves (CUDA or ROCM), or 0 for none.
int gpu_platform();
const char *gpu_build_info();
gatednorm_status gpu_device_count(int32_t *count);
gatednorm_status gpu_device_name(int32_t device_id, char *name, size_t capacity);
gatednorm_status gpu_device_attribute(int32_t device_id, int32_t attribute, int64_t *value);  // attribute already checked
gatednorm_status gpu_pointer_device(const void *ptr, gatednorm_device *device);
gatednorm_status gpu_malloc(int32_t device_id, size_t bytes, void **ptr);
gatednorm_status gpu_free(int32_t device_id, void *ptr);
gatednorm_status gpu_memcpy(void *dst, const void *src, size_t bytes, void *stream);
gatednorm_status gpu_memset(void *dst, int32_t value, size_t bytes, void *stream);
gatednorm_status gpu_stream_create(int32_t device_id, void **stream);
gatednorm_status gpu_stream_synchronize(void *stream);
gatednorm_status gpu_stream_destroy(void *stream);
gatednorm_status gpu_device_synchronize(int32_t device_id);
gatednorm_status gpu_rmsnorm_gated(const RmsnormGatedProblem &p, void *stream);
// The gatednorm_w4a16_target of a device (0 with a message when it has none).
gatednorm_status gpu_w4a16_target(int32_t device_id, int32_t *target, const char *arg);  // arg: the argument blamed
// Workspace bytes of a GEMM of m rows on a device (the launcher's split-K choice).
gatednorm_status gpu_w4a16_workspace_size(int32_t device_id, int64_t m, int64_t n, int64_t k, int64_t group, size_t *bytes, const char *arg);
gatednorm_status gpu_w4a16_prepack(const W4a16PrepackProblem &p, void *stream);
gatednorm_status gpu_w4a16_gemm(const W4a16GemmProblem &p, void *stream);
gatednorm_status gpu_rmsnorm_gated_fp8(const RmsnormGatedFp8Problem &p, void *stream);
gatednorm_status gpu_add_rmsnorm(const AddRmsnormProblem &p, void *stream);

// Fused all-reduce + add-RMSNorm (ops.md §5, docs/allreduce.md).  Each rank's buffer:
//   [0, kCommFlags)                 header: magic and buffer bytes (uint64 each; every comm
//                                   checks them on every rank's buffer); CPU: then the
//                                   segment's name and the calls' signatures
//   [kCommFlags, kCommHeader)       one flag line per block, kCommFlagStride bytes apart, two
//                                   uint64 in it (only this rank writes them; peers read them):
//                                     +0 ready: the last epoch whose partial that block of this
//                                        rank has written into its slot (GPU: epoch << 16 |
//                                        the call's tag, allreduce.hip);
//                                     +kCommGatheredOffset gathered (two-shot): the last epoch
//                                        whose share of the sum that block has written into
//                                        this rank's reduced region (one-shot calls leave it
//                                        behind; waits are ">= epoch", so a stale value only
//                                        means "not yet")
//   kCommHeader + i * slot_bytes    slot i = 0, 1: the partial of epochs with epoch % 2 == i
//   kCommHeader + 2 * slot_bytes    the reduced x, rows as in the slots.  One-shot: this rank
//                                   sums every column and alone reads it back.  Two-shot: this
//                                   rank sums its share of the columns, peers read that share,
//                                   and this rank copies the peers' shares in beside it.
// The layout (and so gatednorm_comm_buffer_size) is the same for both algorithms.
// "GNCOMM02", the header's first uint64; 02: the GPU flags' tag (a rank of an older library,
// which read a tagged flag as an epoch far ahead, is refused at comm_create)
constexpr uint64_t kCommMagic = 0x32304d4d4f434e47ull;
constexpr size_t kCommFlags = 4096;
constexpr int kCommMaxBlocks = 64;
constexpr size_t kCommFlagStride = 64;
constexpr size_t kCommGatheredOffset = 8;
static_assert(kCommGatheredOffset + 8 <= kCommFlagStride, "gathered shares the ready flag's line");
constexpr size_t kCommHeader = kCommFlags + kCommMaxBlocks * kCommFlagStride;
constexpr size_t kCommSlotAlign = 256;
// CPU buffers' header words past the magic, size and name (cpu_allreduce.cpp holds their
// layout): the owner's process (pid, pid namespace, start time), stamped at alloc, which a
// waiting peer reads to find an exited process; the rank that uses the buffer as its own,
// claimed at comm_create, which every peer's call checks against its list.
void cpu_comm_stamp_owner(char *buffer);
void cpu_comm_claim(char *own, int rank);
// Unlinks /dev/shm segments of exited creators (a rank killed during setup); each CPU alloc.
void cpu_comm_remove_stale_segments();
constexpr int kCommMaxWorld = GATEDNORM_COMM_MAX_WORLD_SIZE;
constexpr int kCommGpuBlocks = 16;  // fixed grid of the GPU exchange kernel (docs/allreduce.md)

struct CommState {
    int rank = 0, world = 0;
    char *buffers[kCommMaxWorld] = {};
    size_t buffer_bytes = 0, slot_bytes = 0;
    gatednorm_device device{};
    int algorithm = GATEDNORM_ALLREDUCE_ALGORITHM_AUTO;  // gatednorm_comm_set_algorithm's
    // Every gatednorm_allreduce_add_rmsnorm made on this comm, refused ones too: the CPU
    // backend checks it (with the call's shapes) against every peer's, so that a call refused
    // or made on one rank only is caught instead of pairing the ranks' later calls wrongly.
    uint64_t calls = 0;
    // GPU comms: the abort word (host memory the exchange kernel writes, as the host and as the
    // device address it) and the kernel's wait deadline in gn_wall_ticks; gpu_comm_abort_alloc.
    uint32_t *abort_host = nullptr, *abort_dev = nullptr;
    uint64_t timeout_ticks = 0;
};

// The first column (element, or 16-byte unit on the GPU's 16-byte path) of rank q's share of
// a row of n columns in a two-shot call: rank q reduces [comm_share_begin(q), comm_share_begin(q + 1)).
// Contiguous, sizes floor or ceil of n / world (empty when n < world), covering [0, n).
inline int64_t comm_share_begin(int q, int world, int64_t n) { return int64_t(q) * n / world; }

// CPU comms: refuses a call once any rank found the ranks out of step (its mark in its own
// buffer's header, which every peer reads).
gatednorm_status cpu_comm_usable(const CommState &c);

// p.x is this rank's partial; the backend reduces it with the peers' (two_shot: reduce-scatter
// then all-gather, else one-shot; comm_api.cpp chose, the same on every rank) and runs
// add_rmsnorm on the reduced x (contiguous, p.x_dtype).
gatednorm_status cpu_allreduce_add_rmsnorm(const CommState &c, AddRmsnormProblem p, bool two_shot);
gatednorm_status gpu_allreduce_add_rmsnorm(const CommState &c, AddRmsnormProblem p, bool two_shot, void *stream);
// GPU buffers: zeroed device memory but for the header's magic and size, and its IPC handle;
// open / close a peer's; read a buffer's header (magic, bytes) to the host.
gatednorm_status gpu_comm_buffer_alloc(int32_t device_id, size_t bytes, void **buffer, uint8_t *handle);
gatednorm_status gpu_comm_buffer_header(int32_t device_id, const void *buffer, uint64_t header[2], const char *name);
gatednorm_status gpu_comm_buffer_open(int32_t device_id, const uint8_t *handle, void **buffer);
gatednorm_status gpu_comm_buffer_close(int32_t device_id, void *buffer);
// Ranks whose buffers live on GPU device_id (ranks as streams of one process, or processes
// sharing a GPU): their exchange kernels wait on each other, so all must be resident at once.
// Refuses (naming buffers) when two or more share it and the device cannot hold their blocks.
gatednorm_status gpu_comm_check_residency(int32_t device_id, int32_t world, void *const *buffers);
// A GPU comm's abort word (zeroed, mapped host memory) and deadline (comm_wait_seconds on the
// device's clock); freed with the comm.  gpu_comm_usable: SUCCESS, or why an exchange kernel
// gave up (the word it wrote), which makes the comm unusable.
gatednorm_status gpu_comm_abort_alloc(CommState &c);
void gpu_comm_abort_free(CommState &c);
gatednorm_status gpu_comm_usable(const CommState &c);
// How long an all-reduce call waits for its peers in all: GATEDNORM_COMM_TIMEOUT_S (read once
// a process; default 600 s), on the CPU and the GPU.
double comm_wait_seconds();

}  // namespace gn
