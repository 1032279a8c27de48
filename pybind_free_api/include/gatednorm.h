/* gatednorm: fused norm / quant kernels for hybrid-attention LLMs, plain C ABI.
 *
 * Rules this header keeps so that the Python layer can feed it to cffi unchanged
 * (after dropping preprocessor lines other than integer #defines):
 *   - C99, includes only <stddef.h> and <stdint.h>; no GPU runtime types (streams are void *).
 *   - every prototype is one GATEDNORM_API line; every #define that cffi sees is an integer
 *     literal (the include guard and GATEDNORM_API's definitions are dropped first).
 *   - enum values are explicit, prefixed with their enum's name, and only ever grow.
 *
 * Contract of every call:
 *   - It returns gatednorm_status (0 = success, negative = error).  A call that fails writes
 *     nothing (no output element, no caller struct); gatednorm_last_error() says what was
 *     wrong, naming the argument ("x: ...", "params.eps: ...").
 *     The one exception: a host (CPU backend) call that runs out of host memory part-way
 *     (GATEDNORM_STATUS_OUT_OF_MEMORY from its worker threads) may have written some rows;
 *     every argument check happens before any output is touched.
 *   - Thread safety: calls may run concurrently from any number of threads, on the same or
 *     different streams and devices; the state calls share (the CPU pool, per-device facts
 *     read once) is synchronized, and the current device is restored on return.  Two
 *     concurrent calls that write the same memory race, as any two kernels do.
 *   - The CPU pool serves one host call at a time: a host call arriving while another holds
 *     it runs on its own thread alone (no queueing), so up to callers + pool - 1 threads run.
 *     gatednorm_set_num_threads is process-wide, waits for a running parallel region, and
 *     applies to later calls.  A forked child may call the library whatever its parent was
 *     doing (it starts a fresh pool); a child of _Fork() or a raw clone, which run no atfork
 *     handlers, runs its host calls on the calling thread alone (the parent's locks and
 *     threads are not its own; each thread's first call there still allocates its row
 *     buffers).  The pool's workers (named gatednorm-cpu) run on the CPUs of the process's
 *     main thread, whatever the mask of the thread that started them.  The pool is never
 *     destroyed: its workers end with the process, and the library stays mapped after
 *     dlclose (linked -z nodelete on ELF), so a call still running at exit is not cut from
 *     under.  Each thread's row buffers only grow and live until the thread exits.  The
 *     pool holds at most 256 threads.
 *   - gatednorm_last_error() returns a thread-local buffer: valid until the next gatednorm
 *     call on the same thread (which may overwrite it) or the thread's exit.  Copy it to keep it.
 *   - Host tensors (device type CPU, CUDA_HOST, ROCM_HOST) run on the calling thread and the
 *     library's CPU pool (gatednorm_set_num_threads) and are complete when the call returns;
 *     `stream` is then ignored.  GPU tensors run asynchronously on `stream` (NULL = the
 *     default stream); a call never synchronizes and never allocates device memory.
 *   - Host arithmetic follows IEEE defaults (round to nearest even, subnormals kept, every
 *     exception masked) whatever the calling thread set (flush-to-zero, denormals-are-zero,
 *     another rounding mode, feenableexcept traps: XLA's CPU threads, torch.set_flush_denormal,
 *     fast-math code, a debugging C caller); the thread's settings are put back on return.
 *     Results are then the same bits from any thread, and NaN / Inf inputs never trap.  The
 *     exception flags the computation raised, on the calling thread or on the pool's workers,
 *     are set on the calling thread afterwards (x86-64 and aarch64), as if it had done all of it.
 *   - params == NULL means every option at its default (except where an entry reads or
 *     writes the weight's description in params: the W4A16 prepack and size queries).
 *   - Options structs begin with uint32_t struct_size and are filled by
 *     gatednorm_<op>_params_init(&p, sizeof p) through the caller's pointer (never returned
 *     by value: a struct that grows would overrun the slot of a caller built against an older
 *     header).  New fields are appended; the library accepts each struct_size it has known
 *     (the first layout, each later one) and, from a newer caller, a larger one whose bytes
 *     past the library's layout are all zero.
 *   - Tensors are described by gatednorm_tensor (below).  A tensor's device picks the backend;
 *     all tensors of one call must be on one device. */
#ifndef GATEDNORM_H_
#define GATEDNORM_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(GATEDNORM_BUILDING_LIBRARY)
#    define GATEDNORM_API __declspec(dllexport)
#  else
#    define GATEDNORM_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define GATEDNORM_API __attribute__((visibility("default")))
#else
#  define GATEDNORM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define GATEDNORM_VERSION_MAJOR 0
#define GATEDNORM_VERSION_MINOR 6
#define GATEDNORM_VERSION_PATCH 15

/* Fixed capacity of a tensor descriptor, so no pointer lifetimes cross the ABI. */
#define GATEDNORM_MAX_DIMS 8

/* ---------------------------------------------------------------------------- status */
typedef enum gatednorm_status {
    GATEDNORM_STATUS_SUCCESS = 0,
    GATEDNORM_STATUS_INVALID_ARGUMENT = -1, /* bad shape, dtype, stride, pointer, option */
    GATEDNORM_STATUS_UNSUPPORTED = -2,      /* valid request this build cannot serve */
    GATEDNORM_STATUS_NO_DEVICE = -3,        /* no GPU backend built, or no such device */
    GATEDNORM_STATUS_DEVICE_ERROR = -4,     /* the GPU runtime reported an error */
    GATEDNORM_STATUS_OUT_OF_MEMORY = -5,
    GATEDNORM_STATUS_INTERNAL = -6
} gatednorm_status;

/* Static text for a status code ("invalid argument", ...). */
GATEDNORM_API const char *gatednorm_status_string(gatednorm_status status);
/* Thread-local message of this thread's last failed call; "" if none failed yet. */
GATEDNORM_API const char *gatednorm_last_error(void);
/* Debug aid: a static name of the kernel this thread's last call that did work ran
 * ("add_rmsnorm.row.vec16", "rmsnorm_gated_fp8.vec.e8", ...; "cpu" for host tensors; "" before
 * any).  Calls with nothing to do and failed calls leave it unchanged.  The names say which
 * path the size rules chose, for tests and benchmarks; they are not a stable interface. */
GATEDNORM_API const char *gatednorm_last_kernel(void);

/* --------------------------------------------------------------------------- version */
/* (major << 16) | (minor << 8) | patch of the loaded library. */
GATEDNORM_API uint32_t gatednorm_version(void);
/* Backend, GPU targets and compiler the library was built with, e.g.
 * "gatednorm 0.6.10; cpu; cuda 13.0 (80,90a); GNU 12.2.0". */
GATEDNORM_API const char *gatednorm_build_info(void);

/* ---------------------------------------------------------------- tensor descriptor */
/* Device codes are DLPack's DLDeviceType values. */
typedef enum gatednorm_device_type {
    GATEDNORM_DEVICE_TYPE_CPU = 1,
    GATEDNORM_DEVICE_TYPE_CUDA = 2,
    GATEDNORM_DEVICE_TYPE_CUDA_HOST = 3,
    GATEDNORM_DEVICE_TYPE_ROCM = 10,
    GATEDNORM_DEVICE_TYPE_ROCM_HOST = 11,
    GATEDNORM_DEVICE_TYPE_CUDA_MANAGED = 13
} gatednorm_device_type;

/* dtype codes are DLPack's DLDataTypeCode values. */
typedef enum gatednorm_dtype_code {
    GATEDNORM_DTYPE_CODE_INT = 0,
    GATEDNORM_DTYPE_CODE_UINT = 1,
    GATEDNORM_DTYPE_CODE_FLOAT = 2,
    GATEDNORM_DTYPE_CODE_BFLOAT = 4,
    GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FN = 10,
    GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FNUZ = 11,
    GATEDNORM_DTYPE_CODE_FLOAT8_E8M0FNU = 14
} gatednorm_dtype_code;

typedef struct gatednorm_device {
    int32_t device_type; /* gatednorm_device_type */
    int32_t device_id;
} gatednorm_device;

typedef struct gatednorm_dtype {
    uint8_t code;   /* gatednorm_dtype_code */
    uint8_t bits;
    uint16_t lanes; /* always 1 */
} gatednorm_dtype;

/* DLTensor's field order and meaning, with shape/strides held inline.
 * strides are in ELEMENTS (as DLPack's); the element at index i is at
 * (char *)data + byte_offset + sizeof(elem) * sum_k i[k] * strides[k]. */
typedef struct gatednorm_tensor {
    void *data;
    gatednorm_device device;
    int32_t ndim;
    gatednorm_dtype dtype;
    int64_t shape[GATEDNORM_MAX_DIMS];
    int64_t strides[GATEDNORM_MAX_DIMS];
    uint64_t byte_offset;
} gatednorm_tensor;

/* ------------------------------------------------------------------ runtime helpers */
/* So that a caller needs nothing but this library.
 * Streams are the GPU runtime's handles (cudaStream_t / hipStream_t) passed as void *;
 * NULL is the default (legacy) stream, and the runtime's special handles (e.g. CUDA's
 * per-thread default stream, 2) are passed through as the runtime accepts them.
 * Memory: gatednorm_malloc/free take device type CPU (64-byte aligned host memory, so the
 * same code runs on a machine with no GPU) or gatednorm_gpu_device_type(). */
/* DLPack device type the GPU backend serves: CUDA (2), ROCM (10), or 0 for a CPU-only build. */
GATEDNORM_API int32_t gatednorm_gpu_device_type(void);
GATEDNORM_API gatednorm_status gatednorm_device_count(int32_t *count);
GATEDNORM_API gatednorm_status gatednorm_device_name(int32_t device_id, char *name, size_t capacity);
/* A GPU's properties that size rules read (the library's kernel choices depend on the
 * multiprocessor count; a caller may size its own work by them). */
typedef enum gatednorm_device_attr {
    GATEDNORM_DEVICE_ATTR_MULTIPROCESSORS = 1, /* SMs (NVIDIA) or compute units (AMD) */
    GATEDNORM_DEVICE_ATTR_WARP_SIZE = 2,       /* 32; 64 on AMD CDNA */
    GATEDNORM_DEVICE_ATTR_L2_BYTES = 3         /* the L2 cache's size */
} gatednorm_device_attr;
GATEDNORM_API gatednorm_status gatednorm_device_attribute(int32_t device_id, int32_t attribute, int64_t *value);
/* Which device a pointer lives on (CPU for host memory the GPU runtime does not know). */
GATEDNORM_API gatednorm_status gatednorm_pointer_device(const void *ptr, gatednorm_device *device);
GATEDNORM_API gatednorm_status gatednorm_malloc(gatednorm_device device, size_t bytes, void **ptr);
GATEDNORM_API gatednorm_status gatednorm_free(gatednorm_device device, void *ptr);
/* Copies between any two of host and device memory; async on stream when the copy
 * touches a device (NULL = the default stream), synchronous on the host otherwise. */
GATEDNORM_API gatednorm_status gatednorm_memcpy(void *dst, const void *src, size_t bytes, void *stream);
GATEDNORM_API gatednorm_status gatednorm_memset(void *dst, int32_t value, size_t bytes, void *stream);
GATEDNORM_API gatednorm_status gatednorm_stream_create(int32_t device_id, void **stream);
GATEDNORM_API gatednorm_status gatednorm_stream_synchronize(void *stream);
GATEDNORM_API gatednorm_status gatednorm_stream_destroy(void *stream);
GATEDNORM_API gatednorm_status gatednorm_device_synchronize(int32_t device_id);
/* Threads of the CPU backend (host tensors): a pool owned by the library, the calling thread
 * included.  num_threads >= 1 sets it (at most 256: larger counts are taken as 256), 0 restores
 * the default: $GATEDNORM_NUM_THREADS if it is a positive integer (any other value is ignored),
 * else the CPUs in the process's main thread's affinity mask.  Small calls run on the calling
 * thread alone.
 * Results are bit-identical whatever the count. */
GATEDNORM_API gatednorm_status gatednorm_set_num_threads(int32_t num_threads);
GATEDNORM_API gatednorm_status gatednorm_get_num_threads(int32_t *num_threads);

/* ------------------------------- gated RMSNorm (RMSNormGated), docs/ops.md section 1 */
typedef enum gatednorm_activation {
    GATEDNORM_ACTIVATION_SILU = 0,
    GATEDNORM_ACTIVATION_SIGMOID = 1
} gatednorm_activation;

/* Options; fill with gatednorm_rmsnorm_gated_params_init(&p, sizeof p), then set fields. */
typedef struct gatednorm_rmsnorm_gated_params {
    uint32_t struct_size;     /* set by _params_init: the size the caller's header knows */
    int32_t norm_before_gate; /* 1: y = norm(x) * act(z) (Qwen3-Next, FLA); 0: y = norm(x * act(z)) (Mamba2) */
    int32_t activation;       /* gatednorm_activation */
    float eps;                /* inside the sqrt; default 1e-6 */
    float weight_offset;      /* y uses (weight + weight_offset); 1 for zero-centred "1 + w" weights */
    int64_t group_size;       /* 0: the norm runs over the last dim L; G > 0: L is viewed as [L / G, G] */
    /* Fields after this line were added after the first layout; a caller built against the
     * first one passes a smaller struct_size and gets their defaults. */
    int32_t pdl;              /* 1: launch with programmatic dependent launch (CUDA, compute capability >= 9.0):
                               * the kernel may start while the previous kernel on the stream finishes, and waits
                               * for it before touching memory; it lets the next PDL-launched kernel start early.
                               * Saved 0.3-0.7 us a call at T <= 128 on an H200 (docs/rmsnorm_gated_kernels.md).  No effect on
                               * the CPU, AMD, or older NVIDIA GPUs.  Default 0. */
    int32_t reserved0;        /* padding made explicit; must be 0 */
} gatednorm_rmsnorm_gated_params;

/* struct_size of the first layout (up to group_size): still accepted. */
#define GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE 32u

/* Writes the defaults into the caller's struct of `size` bytes (sizeof as the caller's
 * header has it) and sets struct_size = size.  Fails, writing nothing, if params is NULL or
 * size is no layout this library knows. */
GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated_params_init(gatednorm_rmsnorm_gated_params *params, size_t size);

/* out = RMSNormGated(x, z) over rows of D contiguous elements (docs/ops.md, section 1).
 * x, out: [..., D]: any number of leading dims (0 to 7) are rows, e.g. [T, H, D], [B, T, H, D],
 *         [N, D] or [D]; with params->group_size = G the last dim L is viewed as [L / G, G]
 *         (a [T, H*G] projection output normalized per head).  bf16/fp16/fp32; any strides on
 *         the leading dims as long as they reduce to at most two (dims whose stride is the
 *         next dim's extent times its stride merge into one); last dim contiguous; data
 *         aligned to the element size.
 *         out may be exactly x or z (same address, dtype, shape and strides: in place); any
 *         other overlap of out with an input's address range is rejected, even where the
 *         rows themselves would not intersect.
 * z:      NULL (plain RMSNorm) or the same shape as x, any of the three dtypes.
 * weight: [D], any of the three dtypes, contiguous.
 * Runs on the device of the tensors (all must match); asynchronous on stream for a GPU. */
GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight, const gatednorm_tensor *out, const gatednorm_rmsnorm_gated_params *params, void *stream);

/* gatednorm_rmsnorm_gated with its arguments in one struct (the same names, meanings and
 * checks), for bindings that pay per argument passed (cffi's ABI mode: ~40 ns an argument;
 * the Python package's all-numpy out= call passes one pointer once the same arrays recur).  args NULL is refused, naming args. */
typedef struct gatednorm_rmsnorm_gated_args {
    const gatednorm_tensor *x;
    const gatednorm_tensor *z;
    const gatednorm_tensor *weight;
    const gatednorm_tensor *out;
    const gatednorm_rmsnorm_gated_params *params;
    void *stream;
} gatednorm_rmsnorm_gated_args;
GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated_packed(const gatednorm_rmsnorm_gated_args *args);


/* ------------------------------------------ §2 gated RMSNorm + FP8 per-group quantization */
/* FP8 encodings of q. */
typedef enum gatednorm_fp8_format {
    GATEDNORM_FP8_FORMAT_E4M3FN = 0,  /* OCP E4M3 (NVIDIA, MI350 gfx950): max 448, NaN 0x7f/0xff */
    GATEDNORM_FP8_FORMAT_E4M3FNUZ = 1 /* MI300 gfx942: max 240, no negative zero (0x80 is NaN) */
} gatednorm_fp8_format;

/* How the per-group scales are stored. */
typedef enum gatednorm_scale_format {
    GATEDNORM_SCALE_FORMAT_FP32 = 0,        /* float32: max(amax, amax_floor) / fp8_max */
    GATEDNORM_SCALE_FORMAT_FP32_UE8M0 = 1,  /* float32, rounded up to a power of two (UE8M0) */
    GATEDNORM_SCALE_FORMAT_E8M0 = 2,        /* uint8 (or float8_e8m0fnu): the power of two's biased exponent
                                             * byte (value 2^(e - 127); 0xff for a NaN scale) */
    GATEDNORM_SCALE_FORMAT_E8M0_PACKED = 3  /* int32 (or uint32) words: E8M0 bytes of four consecutive groups
                                             * of a token, group k in byte k % 4 of word k / 4 (little endian),
                                             * bytes past the last group zero (DeepGEMM's layout) */
} gatednorm_scale_format;

/* The FP8 per-group quantization options, one block shared by every op with an FP8 output
 * (docs/ops.md §2; §3's rmsnorm / add_rmsnorm and group_quant_fp8 embed the same block).
 * The block's size is fixed; later options take its reserved words (zero = today's behaviour).
 *   amax  = max |y| over a group of group_size consecutive elements of a token's row
 *   scale = max(amax, amax_floor) / fp8_max            (fp32, correctly rounded divide)
 *   scale = 2^ceil(log2(scale))                        for the UE8M0 scale formats
 *   q     = fp8_rne(clamp(y * (1 / scale), +-fp8_max)) (1/scale: one correctly rounded fp32 reciprocal per
 *                                                       group; exact for UE8M0 scales; the clamp first)
 * A group holding a NaN or an infinity gets a NaN scale (E8M0 byte 0xff) and NaN codes. */
typedef struct gatednorm_quant_fp8 {
    int32_t format;           /* gatednorm_fp8_format; default E4M3FN */
    float fp8_max;            /* clamp bound before rounding; 0 (default): the format's max (448, 240); e.g. 224
                               * for fnuz on MI300 engines.  Must lie in [1, format max]; one that is no FP8
                               * value may round up to the next code (310 -> 320). */
    float amax_floor;         /* default 1e-10; finite, >= 1e-30 (so every scale is a normal fp32) */
    int32_t scale_format;     /* gatednorm_scale_format; default FP32 */
    int64_t group_size;       /* G; default 128.  G divides the token row H*D, and G divides D or D divides G */
    int32_t quantize_rounded; /* 1: quantize y rounded to y_copy's dtype (x's dtype without a copy), as an
                               * unfused norm -> bf16 -> quant pipeline does; 0 (default): the fp32 y */
    int32_t reserved[3];      /* must be 0 */
} gatednorm_quant_fp8;

/* Options; fill with gatednorm_rmsnorm_gated_fp8_params_init(&p, sizeof p), then set fields. */
typedef struct gatednorm_rmsnorm_gated_fp8_params {
    uint32_t struct_size;     /* set by _params_init */
    int32_t norm_before_gate; /* as gatednorm_rmsnorm_gated_params (default 1) */
    int32_t activation;       /* gatednorm_activation (default SILU) */
    float eps;                /* default 1e-6 */
    float weight_offset;      /* default 0 */
    int32_t pdl;              /* as gatednorm_rmsnorm_gated_params (default 0) */
    int64_t head_dim;         /* D, the norm's row: 0 (default): x's last dim; > 0: x's last dim L is viewed as
                               * [L / head_dim, head_dim] (a [T, H*D] projection output) */
    gatednorm_quant_fp8 quant;
} gatednorm_rmsnorm_gated_fp8_params;

GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated_fp8_params_init(gatednorm_rmsnorm_gated_fp8_params *params, size_t size);

/* y = RMSNormGated(x, z) (section 1, in fp32, never rounded unless asked), quantized to FP8 per
 * group of G elements of each token's flattened row [H*D]; one kernel launch for any
 * combination of outputs.
 * x, z, weight: as gatednorm_rmsnorm_gated (x [..., H, D], or [..., H*D] with head_dim; the
 *         leading dims before H are tokens and must merge into one token dim).
 * q:      [tokens..., H*D] (x's token dims, then the row), float8_e4m3fn / float8_e4m3fnuz
 *         matching params->quant.format, or uint8 (raw codes); last dim contiguous, rows 1-byte aligned.
 * scales: [tokens..., K], K = H*D / G (FP32, FP32_UE8M0: float32; E8M0: uint8 or float8_e8m0fnu) or
 *         [tokens..., ceil(K / 4)] (E8M0_PACKED: int32 / uint32); ANY strides, so the layout is the
 *         caller's: row-major [T, K], column-major (a transposed view of [K, T]), or column-major
 *         with T padded (a view of the first T columns of [K, T_pad]).
 * y_copy: NULL, or x's shape in bf16 / fp16 / fp32 (any token / head strides): y rounded once.
 * No output may overlap an input or another output.  Asynchronous on stream for a GPU. */
GATEDNORM_API gatednorm_status gatednorm_rmsnorm_gated_fp8(const gatednorm_tensor *x, const gatednorm_tensor *z, const gatednorm_tensor *weight, const gatednorm_tensor *q, const gatednorm_tensor *scales, const gatednorm_tensor *y_copy, const gatednorm_rmsnorm_gated_fp8_params *params, void *stream);

/* The library's FP8 encoder on the host (the one rule the CPU and GPU backends share):
 * codes[i] = fp8_rne(clamp(values[i], +-fp8_max)) (fp8_max 0: the format's max),
 * NaN -> NaN (0x7f for E4M3FN, 0x80 for E4M3FNUZ), -0 -> 0x00 for E4M3FNUZ.  For tests and for
 * callers quantizing on the host. */
GATEDNORM_API gatednorm_status gatednorm_fp8_encode(const float *values, uint8_t *codes, size_t count, int32_t format, float fp8_max);
/* ------------------------------------------------------------ §4 W4A16 GEMM (int4 weights)
 * out[M, N] = a[M, K] @ dequant(W)[K, N] (+ bias[N])  (docs/ops.md section 4, docs/w4a16.md).
 *   dequant(W)[k, n] = w16 = RNE_dt((q[n, k] - z[n, k / G]) * RNE_dt(s[n, k / G])), dt = a's dtype:
 *   the zero point is subtracted exactly, only the scale multiply rounds (once, to 16 bit);
 *   the products a * w16 are summed in fp32 (any order) and the sum (+ bias, in fp32) is
 *   rounded once to out's dtype.
 * Two layouts of W:
 *   PLAIN: qweight uint8 [N, K/2] (two codes 0..15 per byte along K, low nibble first),
 *          scales [N, K/G] (bf16 / fp16 / fp32), zeros uint8 [N, K/G] (codes 0..15; only the
 *          low nibble is read) or NULL (symmetric: z = 8).  Host tensors only: the CPU backend.
 *   TILED: the kernels' own layout, one uint8 buffer made by gatednorm_w4a16_prepack from a
 *          PLAIN weight (on a GPU for that GPU, or on the host for a named target), sized by
 *          gatednorm_w4a16_prepacked_size, tagged (in params, which prepack completes) with the
 *          layout version, the target and the activations' dtype.  GPU GEMMs take only TILED
 *          weights made for their target; the CPU backend reads TILED weights of any target
 *          (and PLAIN ones).  scales and zeros are then NULL. */
typedef enum gatednorm_w4a16_layout {
    GATEDNORM_W4A16_LAYOUT_PLAIN = 0,
    GATEDNORM_W4A16_LAYOUT_TILED = 1
} gatednorm_w4a16_layout;

/* What a TILED weight was made for.  NATIVE (0) asks prepack for the device's own target. */
typedef enum gatednorm_w4a16_target {
    GATEDNORM_W4A16_TARGET_NATIVE = 0,
    GATEDNORM_W4A16_TARGET_CUDA_MMA = 1, /* NVIDIA sm_80 and later: mma.sync m16n8k16 */
    GATEDNORM_W4A16_TARGET_AMD_MFMA = 2, /* AMD CDNA (gfx90a, gfx942, gfx950): MFMA 16x16x16 */
    GATEDNORM_W4A16_TARGET_AMD_WMMA = 3  /* AMD RDNA 3 / 3.5 (gfx11xx): WMMA 16x16x16 */
} gatednorm_w4a16_target;

typedef enum gatednorm_w4a16_dtype {
    GATEDNORM_W4A16_DTYPE_UNSET = 0,
    GATEDNORM_W4A16_DTYPE_BF16 = 1,
    GATEDNORM_W4A16_DTYPE_F16 = 2
} gatednorm_w4a16_dtype;

/* The layout version this library writes and reads. */
#define GATEDNORM_W4A16_TILED_VERSION 1

/* Describes the weight; fill with gatednorm_w4a16_params_init(&p, sizeof p).  prepack fills in
 * every field of a TILED weight; pass the same struct to the GEMM and the size queries. */
typedef struct gatednorm_w4a16_params {
    uint32_t struct_size;   /* set by _params_init */
    int32_t layout;         /* gatednorm_w4a16_layout of `qweight`; default PLAIN */
    int64_t n;              /* N, output features.  PLAIN: 0 = from qweight's shape (else must match) */
    int64_t k;              /* K, input features.   PLAIN: 0 = from qweight's shape (else must match) */
    int64_t group_size;     /* G (K % G == 0; G = K: per-channel).  PLAIN: 0 = from scales' shape.
                             * TILED: a power of two >= 16, or K */
    int32_t symmetric;      /* 1: no zero points (z = 8); 0: zeros given; -1 (default): from zeros (PLAIN) */
    int32_t dtype;          /* gatednorm_w4a16_dtype: TILED: the activations' dtype its scales are stored in
                             * (a must have it); prepack: required.  PLAIN: UNSET or a's dtype */
    int32_t layout_version; /* TILED: GATEDNORM_W4A16_TILED_VERSION of the library that packed it */
    int32_t target;         /* TILED: gatednorm_w4a16_target it was packed for */
    /* Fields after this line were added after the first layout (48 bytes,
     * GATEDNORM_W4A16_PARAMS_V1_SIZE); a caller built against it gets their defaults. */
    int32_t pdl;            /* GEMM: 1 = launch with programmatic dependent launch (CUDA, compute capability
                             * >= 9.0): the kernel may start while the previous kernel on the stream finishes,
                             * waits for it before touching memory, and lets the next PDL-launched kernel start
                             * once its main loop is done.  Same results.  No effect on the CPU, AMD or older
                             * NVIDIA GPUs, nor on prepack and the size queries (prepack keeps the value it is
                             * given).  Default 0. */
    int32_t reserved0;      /* padding made explicit; must be 0 */
} gatednorm_w4a16_params;

/* struct_size of the first layout (up to target): still accepted. */
#define GATEDNORM_W4A16_PARAMS_V1_SIZE 48u

/* Writes the defaults (PLAIN, everything from the tensors) into the caller's struct of `size`
 * bytes and sets struct_size = size.  Fails, writing nothing, for NULL or an unknown size. */
GATEDNORM_API gatednorm_status gatednorm_w4a16_params_init(gatednorm_w4a16_params *params, size_t size);

/* Bytes of the TILED buffer of params' n, k, group_size and symmetric (all required). */
GATEDNORM_API gatednorm_status gatednorm_w4a16_prepacked_size(const gatednorm_w4a16_params *params, size_t *bytes);

/* PLAIN (qweight, scales, zeros or NULL) -> TILED into `packed` (uint8, 1-D, contiguous, at least
 * gatednorm_w4a16_prepacked_size bytes, 16-byte aligned).  On a GPU it runs asynchronously on
 * stream and packs for that GPU (params->target NATIVE or the GPU's own); on the host it packs
 * for params->target, which must then be named.  params->dtype must be BF16 or F16.  On success
 * it writes n, k, group_size, symmetric, layout = TILED, layout_version and target into params
 * (nothing on failure). */
GATEDNORM_API gatednorm_status gatednorm_w4a16_prepack(const gatednorm_tensor *qweight, const gatednorm_tensor *scales, const gatednorm_tensor *zeros, const gatednorm_tensor *packed, gatednorm_w4a16_params *params, void *stream);

/* Bytes of the workspace a GEMM of m rows with this weight needs on `device` (0: none; a
 * NULL workspace is then fine).  params: n, k, group_size (on a GPU those of a TILED weight);
 * m, n, k below 2^31; it fails where the GEMM's checks of these would.  Depends on the device (its multiprocessor count) and on m,
 * not monotonically (a few rows may split K across blocks where more rows do not): a
 * workspace shared by GEMMs of several m needs the largest of their sizes. */
GATEDNORM_API gatednorm_status gatednorm_w4a16_workspace_size(const gatednorm_w4a16_params *params, int64_t m, gatednorm_device device, size_t *bytes);

/* out = a @ dequant(W) (+ bias).
 * a:         [M, K] bf16 / fp16, last dim contiguous, any row stride; M < 2^31.  GPU: data (and,
 *            for M > 1, the row stride) 16-byte aligned, else INVALID_ARGUMENT; K a multiple of 16,
 *            else UNSUPPORTED.
 * qweight, scales, zeros: the weight in params->layout (see above).  GPU: TILED, 16-byte aligned.
 * bias:      NULL or [N], bf16 / fp16 / fp32, contiguous.
 * out:       [M, N] bf16 / fp16 / fp32, last dim contiguous, any row stride; overlaps no input.
 * workspace: uint8 [bytes] (1-D, contiguous, 16-byte aligned) of at least
 *            gatednorm_w4a16_workspace_size bytes, or NULL where that is 0.  Its contents need no
 *            initialisation; two GEMMs in flight at once need two workspaces.
 * GPU: asynchronous on stream; no allocation, no synchronization: safe to capture in a graph.
 * The result does not depend on the run (fixed reduction order). */
GATEDNORM_API gatednorm_status gatednorm_w4a16_gemm(const gatednorm_tensor *a, const gatednorm_tensor *qweight, const gatednorm_tensor *scales, const gatednorm_tensor *zeros, const gatednorm_tensor *bias, const gatednorm_tensor *out, const gatednorm_tensor *workspace, const gatednorm_w4a16_params *params, void *stream);

/* ---------------------------------- §3 RMSNorm / fused add-RMSNorm (+ FP8 per-group quant) */
/* Options; fill with gatednorm_add_rmsnorm_params_init(&p, sizeof p), then set fields. */
typedef struct gatednorm_add_rmsnorm_params {
    uint32_t struct_size;     /* set by _params_init */
    float eps;                /* inside the sqrt; default 1e-6 */
    float weight_offset;      /* y uses (weight + weight_offset); default 0 */
    int32_t pdl;              /* as gatednorm_rmsnorm_gated_params (default 0) */
    int32_t reserved[4];      /* must be 0 */
    gatednorm_quant_fp8 quant; /* used when q is given; quantize_rounded rounds y to y's dtype (x's without y), and
                                * is refused without q (a bad value of another field is refused either way) */
} gatednorm_add_rmsnorm_params;

GATEDNORM_API gatednorm_status gatednorm_add_rmsnorm_params_init(gatednorm_add_rmsnorm_params *params, size_t size);

/* RMSNorm over the last dim (hidden), optionally after a residual add (docs/ops.md §3):
 *   r    = x + residual  in fp32, rounded to residual's dtype and stored (without residual: r = x)
 *   y    = r_stored * 1/sqrt(mean(r_stored^2) + eps) * (weight + weight_offset)
 * x:            [tokens..., hidden], bf16/fp16/fp32; leading dims any strides that merge into one token
 *               dim; last dim contiguous.
 * residual:     NULL, or x's shape, bf16/fp16/fp32.
 * weight:       [hidden], bf16/fp16/fp32, contiguous.
 * residual_out: NULL (with a residual: residual is updated in place), or x's shape in residual's
 *               dtype (may be exactly residual: same view); must be NULL without a residual.
 * y:            NULL, or x's shape, bf16/fp16/fp32; may be exactly x (in place).
 * q, scales:    both NULL, or both given: FP8 codes of y per group of params->quant.group_size
 *               elements of hidden, as gatednorm_rmsnorm_gated_fp8's q and scales (any scale strides).
 * At least one of y and q.  No other overlaps between outputs and inputs or among outputs.
 * Asynchronous on stream for a GPU. */
GATEDNORM_API gatednorm_status gatednorm_add_rmsnorm(const gatednorm_tensor *x, const gatednorm_tensor *residual, const gatednorm_tensor *weight, const gatednorm_tensor *residual_out, const gatednorm_tensor *y, const gatednorm_tensor *q, const gatednorm_tensor *scales, const gatednorm_add_rmsnorm_params *params, void *stream);

/* Options of gatednorm_group_quant_fp8; fill with gatednorm_group_quant_fp8_params_init. */
typedef struct gatednorm_group_quant_fp8_params {
    uint32_t struct_size;     /* set by _params_init */
    int32_t pdl;              /* default 0 */
    int32_t reserved[2];      /* must be 0 */
    gatednorm_quant_fp8 quant; /* quantize_rounded has no effect (x already holds stored values) */
} gatednorm_group_quant_fp8_params;

GATEDNORM_API gatednorm_status gatednorm_group_quant_fp8_params_init(gatednorm_group_quant_fp8_params *params, size_t size);

/* §2's per-group FP8 quantization of an existing tensor x [tokens..., hidden] (bf16/fp16/fp32,
 * last dim contiguous) into q [tokens..., hidden] and scales, as gatednorm_add_rmsnorm's. */
GATEDNORM_API gatednorm_status gatednorm_group_quant_fp8(const gatednorm_tensor *x, const gatednorm_tensor *q, const gatednorm_tensor *scales, const gatednorm_group_quant_fp8_params *params, void *stream);

/* ------------------- §5 fused all-reduce + add-RMSNorm (+ FP8 quant), tensor parallel, one host */
/* docs/allreduce.md has the protocol.  Every rank r of world_size W holds a partial x_r; every
 * rank computes, bit for bit the same:
 *   x = ((x_0 + x_1) + ...) + x_{W-1}    in fp32, fixed rank order, rounded to x's dtype (as an
 *                                         unfused all-reduce would), then gatednorm_add_rmsnorm.
 * Setup, once per rank:
 *   1. bytes = gatednorm_comm_buffer_size(W, max_input_bytes)  (max_input_bytes: the largest
 *      x of one call, tokens * hidden * element size; past it a call is refused).
 *   2. gatednorm_comm_buffer_alloc(device, bytes, &mine, handle): the rank's own buffer, zeroed,
 *      and GATEDNORM_COMM_HANDLE_BYTES bytes naming it (CPU: a POSIX shared-memory segment;
 *      GPU: the runtime's IPC memory handle).
 *   3. the caller all-gathers the handles among its processes, however it likes;
 *   4. gatednorm_comm_buffer_open(device, handle_of_peer, &peer) for every other rank;
 *   5. gatednorm_comm_create(rank, W, buffers (W pointers, in rank order, buffers[rank] = mine),
 *      bytes, device, &comm);
 *   6. once every peer has opened it (a barrier), gatednorm_comm_buffer_unlink(device, mine), so
 *      that no name of it outlives the processes however they end (CPU: a killed process
 *      would leave its segment in /dev/shm; one killed before this step does, until the next
 *      CPU gatednorm_comm_buffer_alloc of the same user in the same pid namespace, which
 *      removes this library version's segments whose creating process has exited).
 * Ranks that share one address space (threads, or streams of one process on one GPU) skip the
 * handles and pass the same W buffers to W comms.  Teardown, once every rank's last call has
 * finished (GPU: each rank synchronizes its device, then the ranks meet in a barrier: a peer's
 * kernel may read this rank's buffer after this rank's own last call is done):
 * gatednorm_comm_destroy, then gatednorm_comm_buffer_close on each opened peer buffer (it waits
 * for this device's work first), gatednorm_comm_buffer_free on one's own.
 * Every rank must make the same sequence of calls with the same shapes and options; a call
 * returns (CPU) or its kernels finish (GPU) only when every rank has made the matching call, or once a rank has
 * waited the seconds the environment variable GATEDNORM_COMM_TIMEOUT_S gives (default 600; docs/allreduce.md)
 * and given up (gatednorm_comm_check): then that call's outputs, a residual updated
 * in place and the outputs of calls enqueued since are not valid, and the comm is unusable.  Ranks out of step are
 * found at once where the matched calls differ in the comm's call count (every call counts, refused and empty ones
 * and graph captures too; the count belongs to the comm), tokens, hidden, dtype or algorithm (CPU: the calls'
 * signatures, which hold the world size too, INVALID_ARGUMENT; GPU: a 16-bit tag in the exchange's flags, which holds the world size too and misses
 * a difference once in 65536, DEVICE_ERROR), and the comm is unusable; on the CPU also where they differ in an
 * option that changes the result (a 48-bit hash of eps, weight_offset, the weight's dtype, a residual or none and
 * the FP8 settings, FP8 outputs asked on one rank only included; not y's presence or dtype); an extra call of the
 * same shapes on one rank, or one more replay of a captured graph, cannot be told from a matching one. */
#define GATEDNORM_COMM_HANDLE_BYTES 64
#define GATEDNORM_COMM_MAX_WORLD_SIZE 8

typedef struct gatednorm_comm gatednorm_comm;

/* Bytes of each rank's buffer for calls of up to max_input_bytes of x. */
GATEDNORM_API gatednorm_status gatednorm_comm_buffer_size(int32_t world_size, size_t max_input_bytes, size_t *bytes);
/* A rank's own buffer on device (CPU, or the GPU backend's device type), zeroed, and its handle. */
GATEDNORM_API gatednorm_status gatednorm_comm_buffer_alloc(gatednorm_device device, size_t bytes, void **buffer, uint8_t *handle);
/* Maps a peer's buffer from its handle into this process (GPU: onto device.device_id). */
GATEDNORM_API gatednorm_status gatednorm_comm_buffer_open(gatednorm_device device, const uint8_t *handle, void **buffer);
/* Removes the name of one's own buffer (CPU: its shared-memory segment's; GPU: nothing to do):
 * it stays mapped and usable, and its handle opens nothing any more.  Idempotent; the buffer
 * is still freed with gatednorm_comm_buffer_free. */
GATEDNORM_API gatednorm_status gatednorm_comm_buffer_unlink(gatednorm_device device, void *buffer);
/* Unmaps a buffer from gatednorm_comm_buffer_open (GPU: after waiting for the device's work). */
GATEDNORM_API gatednorm_status gatednorm_comm_buffer_close(gatednorm_device device, void *buffer);
/* Frees a buffer from gatednorm_comm_buffer_alloc (CPU: also removes the segment's name). */
GATEDNORM_API gatednorm_status gatednorm_comm_buffer_free(gatednorm_device device, void *buffer);
/* A communicator for `rank` of world_size (1 .. GATEDNORM_COMM_MAX_WORLD_SIZE; 1 is the plain op) over buffers[0..W)
 * of buffer_bytes each, in rank order (CPU: each comm claims buffers[rank] for its rank and a call refuses a list
 * whose buffers[q] another rank claimed; GPU: the exchange kernel finds a peer's flags carrying another rank's tag
 * and gives up, gatednorm_comm_check; a list naming one buffer as two ranks' is found only by the timeout).  Holds no resource but host memory; the buffers must outlive it.  GPU: when two or
 * more of the buffers live on the comm's GPU (ranks as streams of one process, or processes sharing a GPU),
 * their exchange kernels wait on each other and must all be resident at once; a GPU that cannot hold
 * them is refused (GATEDNORM_STATUS_UNSUPPORTED naming buffers) rather than left to hang. */
GATEDNORM_API gatednorm_status gatednorm_comm_create(int32_t rank, int32_t world_size, void *const *buffers, size_t buffer_bytes, gatednorm_device device, gatednorm_comm **comm);
GATEDNORM_API gatednorm_status gatednorm_comm_destroy(gatednorm_comm *comm);
/* SUCCESS while comm is usable; else why not (a CPU rank found the ranks out of step,
 * INVALID_ARGUMENT, or waited past GATEDNORM_COMM_TIMEOUT_S, found a peer's process exited or
 * a peer gave up, DEVICE_ERROR: the first cause, naming the ranks; a GPU exchange kernel found a peer's call out of step, waited
 * that long for a peer, or saw a peer give up, and returned, its call's outputs not valid), the same error every later call on comm
 * returns.  A GPU kernel that gives up is only seen by the host after it ran: check here after
 * synchronizing (e.g. after replaying a CUDA graph, whose calls check nothing). */
GATEDNORM_API gatednorm_status gatednorm_comm_check(const gatednorm_comm *comm);
/* The largest x (bytes) one call serves; larger ones are refused (use the collective library's
 * all-reduce, then gatednorm_add_rmsnorm). */
GATEDNORM_API gatednorm_status gatednorm_comm_max_input_bytes(const gatednorm_comm *comm, size_t *bytes);

/* How a comm's calls exchange the partials (docs/allreduce.md, "Protocol (two-shot)", "Choosing the
 * algorithm").  The outputs are the same bits either way: each element is still summed by one rank
 * in rank order. */
typedef enum gatednorm_allreduce_algorithm {
    GATEDNORM_ALLREDUCE_ALGORITHM_AUTO = 0,     /* the default: ONE_SHOT when world_size < 4 or tokens <= 16,
                                                 * else TWO_SHOT.  Provisional: the switch-over has never been
                                                 * measured (no machine with 4 or more GPUs has been lent). */
    GATEDNORM_ALLREDUCE_ALGORITHM_ONE_SHOT = 1, /* every rank reads every peer's whole partial and sums every
                                                 * row: (W - 1) * x's bytes read over the links, one barrier */
    GATEDNORM_ALLREDUCE_ALGORITHM_TWO_SHOT = 2  /* reduce-scatter, then all-gather: each rank sums 1 / W of
                                                 * every row's columns and copies the peers' sums of the rest:
                                                 * 2 (W - 1) / W * x's bytes, two barriers */
} gatednorm_allreduce_algorithm;

/* Sets the algorithm (gatednorm_allreduce_algorithm) of comm's later calls; AUTO until set.
 * Every rank must set the same before the same call: ranks on different algorithms are found
 * out of step at that call (the algorithm is part of its signature / tag, above) and the comm
 * is unusable from then on (gatednorm_comm_check).  With world_size
 * 1 every algorithm is the same (there are no peers).  Not while a call on comm is running
 * (calls on one comm are ordered anyway).  On error (comm NULL, algorithm not one of the
 * enum's values) the comm is left as it was. */
GATEDNORM_API gatednorm_status gatednorm_comm_set_algorithm(gatednorm_comm *comm, int32_t algorithm);

/* The fused step on this rank: x is this rank's partial ([tokens..., hidden], bf16 / fp16 / fp32,
 * as gatednorm_add_rmsnorm's x, on the comm's device; tokens * hidden * element size at most
 * gatednorm_comm_max_input_bytes); every other argument and params exactly as
 * gatednorm_add_rmsnorm's, applied to the reduced x (y may be x).  params->pdl must be 0.
 * GPU: one launch per rank up to 16 tokens (the exchange kernel normalizes the rows it holds),
 * two above (the exchange, then add_rmsnorm's kernels on the reduced x); either algorithm.
 * GPU: asynchronous on stream, no allocation, no host synchronization; the epoch advances in
 * device memory, so the call can be captured in a graph and replayed.  Calls on one comm must
 * be ordered (one stream, or the host's call order on the CPU). */
GATEDNORM_API gatednorm_status gatednorm_allreduce_add_rmsnorm(gatednorm_comm *comm, const gatednorm_tensor *x, const gatednorm_tensor *residual, const gatednorm_tensor *weight, const gatednorm_tensor *residual_out, const gatednorm_tensor *y, const gatednorm_tensor *q, const gatednorm_tensor *scales, const gatednorm_add_rmsnorm_params *params, void *stream);

/* ------------------------------------------------------------ XLA FFI handlers (JAX)
 * XLA_FFI_Handler functions of XLA's FFI C API (major version 0), through which
 * gatednorm.jax_ops runs the ops as XLA custom calls inside jax.jit, with no Python at run
 * time: register _host for platform "cpu" and _gpu for the GPU's ("CUDA" / "ROCM"; the
 * stream and device ordinal come from XLA).  A call carries three attributes: entry (int64:
 * 0 rmsnorm_gated, 1 rmsnorm_gated_fp8, 2 add_rmsnorm, 3 group_quant_fp8, 4 w4a16_gemm (since
 * 0.4)), slots (int64 array, one per tensor argument of that entry: i >= 0 operand i, -1
 * NULL, -2 - j result j) and params (uint8 array: the entry's params struct, exactly its
 * struct_size bytes (at most 4096), or empty for the defaults).  Buffers are dense and
 * row-major; an optional fourth attribute, views (int64 array, since 0.5: records slot, ndim,
 * shape[ndim], strides[ndim] in elements), makes a slot's tensor that strided view of its
 * buffer (jax_ops' column-major scales), refused unless it lies inside the buffer with
 * strides >= 0, one view a slot.  The GPU handler takes the device from XLA's device ordinal (or, without that
 * API, from the operands' memory).  add_rmsnorm given the same buffer as residual and
 * residual_out (an aliased result) runs in place; w4a16_gemm's workspace is a result the
 * caller discards.  Returns NULL, or an XLA error made through the call frame's API carrying
 * the entry's name and gatednorm_last_error(); answers XLA's metadata
 * query (API 0.1, no traits).  NULL call_frame: NULL; a frame without XLA's API table can
 * report nothing (XLA always passes one). */
GATEDNORM_API void *gatednorm_xla_ffi_host(void *call_frame);
GATEDNORM_API void *gatednorm_xla_ffi_gpu(void *call_frame);

#ifdef __cplusplus
}
#endif

#endif /* GATEDNORM_H_ */
