/* gatednorm: fused norm / quant kernels for hybrid-attention LLMs, plain C ABI.
 *
 * Rules this header keeps so that the Python layer can feed it to cffi unchanged
 * (after dropping preprocessor lines other than integer #defines):
 *   - C99, includes only <stddef.h> and <stdint.h>; no GPU runtime types (streams are void *).
 *   - every prototype is one GATEDNORM_API line; every #define is an integer literal.
 *   - enum values are explicit, prefixed with their enum's name, and only ever grow.
 *
 * Contract of every call:
 *   - It returns gatednorm_status (0 = success, negative = error).  A call that fails writes
 *     nothing (no output element, no caller struct); gatednorm_last_error() says what was
 *     wrong, naming the argument ("x: ...", "params.eps: ...").
 *   - Thread safety: calls may run concurrently from any number of threads, on the same or
 *     different streams and devices; the library keeps no mutable state shared between
 *     calls except what the GPU runtime itself keeps (the current device is restored on
 *     return).  Two concurrent calls that write the same memory race, as any two kernels do.
 *   - gatednorm_last_error() returns a thread-local buffer: valid until the next gatednorm
 *     call on the same thread (which may overwrite it) or the thread's exit.  Copy it to keep it.
 *   - Host tensors (device type CPU, CUDA_HOST, ROCM_HOST) run on the calling thread and are
 *     complete when the call returns; `stream` is then ignored.  GPU tensors run
 *     asynchronously on `stream` (NULL = the default stream); a call never synchronizes and
 *     never allocates device memory.
 *   - params == NULL means every option at its default.
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
#define GATEDNORM_VERSION_MINOR 1
#define GATEDNORM_VERSION_PATCH 0

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

/* --------------------------------------------------------------------------- version */
/* (major << 16) | (minor << 8) | patch of the loaded library. */
GATEDNORM_API uint32_t gatednorm_version(void);
/* Backend, GPU targets and compiler the library was built with, e.g.
 * "gatednorm 0.1.0; cpu; cuda 13.0 (80;90a); gcc 12.2.0". */
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
                               * Saves ~0.2-0.4 us per call between PDL-aware kernels (NOTES.md).  No effect on
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

#ifdef __cplusplus
}
#endif

#endif /* GATEDNORM_H_ */
