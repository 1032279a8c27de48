/* fuzz_abi: a seeded fuzz driver of every entry point of gatednorm.h.
 *
 *   fuzz_abi [--seed S] [--cases N] [--case K] [--verbose]
 *
 * Case k of seed S draws everything from its own generator state (a hash of S and k), so
 * `--seed S --case K` replays one case alone.  Inputs are random but memory-honest: a
 * descriptor that could be accepted points into a real allocation that holds everything its
 * shape, strides and byte_offset address (each buffer is allocated to the exact byte, so the
 * sanitizers see any access past it); descriptors that lie about memory do so only in ways
 * validation must refuse without touching anything (addresses past 2^63, NULL data with
 * elements, element counts past 2^63).
 *
 * Checks, each failing the run with the seed and case number:
 *   - no crash and no sanitizer report (built with GATEDNORM_SANITIZE the first one aborts);
 *   - a rejected call (status < 0) returns a known status, leaves gatednorm_last_error()
 *     starting with one of the call's own argument names and ':' ("x:", "params.eps:", ...),
 *     and leaves every byte of every buffer of the case unchanged;
 *   - a call the contract says must be accepted is, and one it says must be refused is
 *     (naming the argument the case broke); cases the contract leaves open may go either way;
 *   - an accepted gatednorm_rmsnorm_gated writes exactly the bytes of out's elements, and each
 *     matches a double-precision reference of the op's formula (docs/ops.md §1: rstd =
 *     1/sqrt(mean(u^2) + eps), both gate orders, silu/sigmoid, weight_offset, group_size)
 *     to within fp32 evaluation (relative 2^-17) followed by rounding to out's dtype (so
 *     within an ulp of bf16/fp16 outputs, some 2^-17 of fp32 ones); in place too;
 *   - the FP8 ops (gatednorm_rmsnorm_gated_fp8, gatednorm_add_rmsnorm, gatednorm_group_quant_fp8;
 *     ops.md §2, §3): every scale against max(amax, amax_floor) / fp8_max over the interval of
 *     fp32 y values the double reference allows (rounded up to a power of two for UE8M0; E8M0
 *     bytes, packed words with zero tails; NaN for a group with a NaN / inf), every code
 *     within the RNE-saturating encodings of that interval over the scale the call wrote
 *     (group_quant_fp8, whose y is x exactly: bit for bit, with fp32's reciprocal); y /
 *     y_copy as §1; add_rmsnorm's stored residual sum exactly; in place (residual, y = x),
 *     residual_out = residual, optional outputs NULL; row / column-major / padded scale
 *     strides; q / scales dtypes against the formats; params struct_size and fields;
 *   - gatednorm_fp8_encode bit for bit; the newer _params_init defaults;
 *   - W4A16 on the host: PLAIN GEMMs and prepack + TILED GEMMs against a double a @ dequant(W)
 *     (+ bias) within reference.w4a16_tolerance's bound ((K + 64) 2^-23 (|a| @ |w16| + |bias|)
 *     plus half an ulp of out); prepack completing params and writing only its size;
 *     prepacked_size / workspace_size;
 *   - the runtime helpers do what the header says on host memory;
 *   - gatednorm_comm_set_algorithm on a one-rank CPU comm made for the case: every value of
 *     gatednorm_allreduce_algorithm accepted, any other refused naming "algorithm", a NULL comm
 *     naming "comm"; after either, the comm's all-reduce of one rank equals gatednorm_add_rmsnorm
 *     bit for bit (a refused value left the comm as it was), and gatednorm_comm_check says the
 *     comm is usable (NULL: refused naming "comm").
 * Input values stay where every fp32 intermediate is normal and finite (the contract computes
 * in fp32), plus NaN / inf / zeros.  Fixed cases (the defects the driver found) run first.
 * At the end: "fuzz_abi: N cases (A accepted, R rejected), seed S: ok".
 *
 * It is meant for a CPU-only build: with a GPU backend it keeps garbage handles and host
 * memory away from the GPU runtime, but has not been run there. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* feenableexcept (glibc), for the fixed case under floating-point traps */
#endif
#include <gatednorm.h>

#include <fenv.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Huge gatednorm_malloc requests must come back as NULL (the library then reports
 * OUT_OF_MEMORY), not end the run: the sanitizer reads this hook when it is linked in. */
static int g_asan; /* set when AddressSanitizer reads the hook below */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    g_asan = 1;
    return "allocator_may_return_null=1";
}

/* ------------------------------------------------------------------ run state, failing */
static uint64_t g_seed = 1, g_case;
static const char *g_entry = "";
static int g_verbose;
static int g_gpu_type; /* gatednorm_gpu_device_type(): 0 on a CPU-only build */
static void (*g_describe)(void); /* prints the case being run, on failure */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "fuzz_abi: FAIL in case %llu of seed %llu (%s): ", (unsigned long long)g_case,
            (unsigned long long)g_seed, g_entry);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (g_describe) g_describe();
    fprintf(stderr, "fuzz_abi: reproduce with: fuzz_abi --seed %llu --case %llu --verbose\n", (unsigned long long)g_seed,
            (unsigned long long)g_case);
    exit(1);
}

/* UBSan: a stack with each report, and abort() (so the SIGABRT handler below names the case). */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) { return "print_stacktrace=1:abort_on_error=1"; }

/* A sanitizer report or a crash ends the process: say which case it was first.  ASan calls
 * the death callback (declared weak: absent from plain builds); UBSan aborts; plain builds
 * crash. */
void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));
static void on_death(void) {
    fflush(stdout);
    fprintf(stderr, "fuzz_abi: FAIL: the process dies in case %llu of seed %llu (%s)\n", (unsigned long long)g_case,
            (unsigned long long)g_seed, g_entry);
    if (g_describe) g_describe();
    fprintf(stderr, "fuzz_abi: reproduce with: fuzz_abi --seed %llu --case %llu --verbose\n", (unsigned long long)g_seed,
            (unsigned long long)g_case);
}
static void on_signal(int sig) {
    signal(sig, SIG_DFL);
    on_death();
    raise(sig);
}

/* -------------------------------------------------------------------------------- rng */
typedef struct {
    uint64_t s;
} rng_t;

static uint64_t rnd(rng_t *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t below(rng_t *r, uint64_t n) { return n ? rnd(r) % n : 0; }
static int64_t between(rng_t *r, int64_t lo, int64_t hi) { return lo + (int64_t)below(r, (uint64_t)(hi - lo) + 1); }
static int pct(rng_t *r, unsigned p) { return below(r, 1000) < p * 10u; }  /* p percent */
static int permille(rng_t *r, unsigned p) { return below(r, 1000) < p; }
#define PICK(r, arr) ((arr)[below((r), sizeof(arr) / sizeof((arr)[0]))])

/* ------------------------------------------------------------- buffers of one case */
/* Every byte a case hands the library lives in one of these; each is snapshotted before the
 * call and compared after it. */
enum { MAX_BUFS = 12 };
typedef struct {
    unsigned char *p;
    size_t n;
    unsigned char *snap;
    unsigned char *may_change; /* per byte: the call may write it (out's elements) */
} buf_t;
static buf_t g_bufs[MAX_BUFS];
static int g_nbufs;

static unsigned char *buf_new(size_t n) {
    if (g_nbufs == MAX_BUFS) die("driver: too many buffers");
    buf_t *b = &g_bufs[g_nbufs++];
    b->n = n;
    b->p = (unsigned char *)malloc(n ? n : 1);
    b->snap = (unsigned char *)malloc(n ? n : 1);
    b->may_change = (unsigned char *)calloc(n ? n : 1, 1);
    if (!b->p || !b->snap || !b->may_change) die("driver: out of memory for a %zu-byte buffer", n);
    return b->p;
}
static void bufs_snapshot(void) {
    for (int i = 0; i < g_nbufs; ++i) memcpy(g_bufs[i].snap, g_bufs[i].p, g_bufs[i].n);
}
static buf_t *buf_of(const void *addr) {
    const unsigned char *a = (const unsigned char *)addr;
    for (int i = 0; i < g_nbufs; ++i)
        if ((uintptr_t)a >= (uintptr_t)g_bufs[i].p && (uintptr_t)a < (uintptr_t)g_bufs[i].p + g_bufs[i].n) return &g_bufs[i];
    return NULL;
}
/* Marks [addr, addr + n) as writable by the call. */
static void buf_allow(const void *addr, size_t n) {
    buf_t *b = buf_of(addr);
    if (!b || (uintptr_t)addr + n > (uintptr_t)b->p + b->n) die("driver: an output element lies outside every buffer");
    memset(b->may_change + ((const unsigned char *)addr - b->p), 1, n);
}
static void bufs_check(const char *when) {
    for (int i = 0; i < g_nbufs; ++i) {
        const buf_t *b = &g_bufs[i];
        for (size_t k = 0; k < b->n; ++k)
            if (b->p[k] != b->snap[k] && !b->may_change[k])
                die("%s: byte %zu of buffer %d (%zu bytes at %p) changed from 0x%02x to 0x%02x", when, k, i, b->n, (void *)b->p,
                    b->snap[k], b->p[k]);
    }
}
static void bufs_free(void) {
    for (int i = 0; i < g_nbufs; ++i) {
        free(g_bufs[i].p);
        free(g_bufs[i].snap);
        free(g_bufs[i].may_change);
    }
    g_nbufs = 0;
}

/* ------------------------------------------------------- argument names, statuses */
/* Every argument name a message may start with, from the header's prototypes and the
 * params fields (rmsnorm_gated_api.cpp's read_params).  Each entry point allows a subset. */
enum {
    N_X, N_Z, N_WEIGHT, N_OUT, N_PARAMS, N_P_NBG, N_P_ACT, N_P_EPS, N_P_WOFF, N_P_GROUP, N_P_PDL, N_P_RES0,
    N_COUNT, N_NAME, N_PTR, N_DEVICE, N_BYTES, N_DST, N_SRC, N_STREAM, N_DEVICE_ID,
    /* the FP8 ops (ops.md §2, §3) */
    N_RES, N_RES_OUT, N_Y, N_Q, N_SCALES, N_YCOPY, N_P_HEADDIM, N_P_RESV, N_PQ_FORMAT, N_PQ_FMAX, N_PQ_FLOOR, N_PQ_SFMT,
    N_PQ_GROUP, N_PQ_QR, N_PQ_RESV, N_VALUES, N_CODES, N_FORMAT, N_FP8MAX,
    /* W4A16 (ops.md §4) */
    N_A, N_QWEIGHT, N_ZEROS, N_BIAS, N_PACKED, N_WORKSPACE, N_M, N_P_LAYOUT, N_P_N, N_P_K, N_P_SYM, N_P_DTYPE, N_P_LVER,
    N_P_TARGET,
    /* the all-reduce communicator (ops.md §5) */
    N_COMM, N_ALGORITHM,
    /* gatednorm_device_attribute, gatednorm_device_name, the pool, comm buffers */
    N_ATTRIBUTE, N_VALUE, N_CAPACITY, N_NUM_THREADS, N_HANDLE, N_BUFFER, N_NAMES
};
static const char *const kNames[N_NAMES] = {
    "x", "z", "weight", "out", "params", "params.norm_before_gate", "params.activation", "params.eps",
    "params.weight_offset", "params.group_size", "params.pdl", "params.reserved0",
    "count", "name", "ptr", "device", "bytes", "dst", "src", "stream", "device_id",
    "residual", "residual_out", "y", "q", "scales", "y_copy", "params.head_dim", "params.reserved[", "params.quant.format",
    "params.quant.fp8_max", "params.quant.amax_floor", "params.quant.scale_format", "params.quant.group_size",
    "params.quant.quantize_rounded", "params.quant.reserved[", "values", "codes", "format", "fp8_max",
    "a", "qweight", "zeros", "bias", "packed", "workspace", "m", "params.layout", "params.n", "params.k", "params.symmetric",
    "params.dtype", "params.layout_version", "params.target", "comm", "algorithm", "attribute", "value", "capacity",
    "num_threads", "handle", "buffer"};
/* A name ending in '[' ("params.reserved[") matches "params.reserved[2]:" and the like. */
typedef uint64_t nameset_t; /* N_NAMES <= 64 */
#define BIT(n) ((nameset_t)1 << (n))
#define PARAM_BITS (BIT(N_PARAMS) | BIT(N_P_NBG) | BIT(N_P_ACT) | BIT(N_P_EPS) | BIT(N_P_WOFF) | BIT(N_P_GROUP) | BIT(N_P_PDL) | BIT(N_P_RES0))

static void names_text(nameset_t set, char *out, size_t cap) {
    out[0] = 0;
    for (int i = 0; i < N_NAMES; ++i)
        if (set & BIT(i)) snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? ", " : "", kNames[i]);
}

/* The name a message starts with ("x: ..." -> N_X), or -1. */
static int message_name(const char *msg) {
    int best = -1;
    size_t best_len = 0;
    for (int i = 0; i < N_NAMES; ++i) {
        const size_t n = strlen(kNames[i]);
        if (strncmp(msg, kNames[i], n) != 0 || n <= best_len) continue;
        if (kNames[i][n - 1] == '[') {
            size_t j = n;
            while (msg[j] >= '0' && msg[j] <= '9') ++j;
            if (j > n && msg[j] == ']' && msg[j + 1] == ':') best = i, best_len = n;
        } else if (msg[n] == ':') {
            best = i, best_len = n;
        }
    }
    return best;
}

static uint64_t g_sentinel_id;
/* Leaves a message no call of the case can produce, so that a rejected call is seen to have
 * written its own. */
static void set_sentinel(void) {
    gatednorm_device d;
    void *p = NULL;
    d.device_type = 7777;
    d.device_id = (int32_t)(0x5EED0000u | (uint32_t)(g_case & 0xffffu));
    g_sentinel_id = (uint64_t)(uint32_t)d.device_id;
    if (gatednorm_malloc(d, 1, &p) >= 0 || p) die("gatednorm_malloc on device type 7777 succeeded");
}

/* A rejected call: known status, a message of its own naming one of `allowed`, and (when
 * `blame` is not 0) one of `blame`. */
static void check_rejection(gatednorm_status st, nameset_t allowed, nameset_t blame, const char *what) {
    char set[1536], buf[64];
    if (st >= 0) die("%s: status %d is not an error", what, (int)st);
    if (st < GATEDNORM_STATUS_INTERNAL) die("%s: status %d is no gatednorm_status", what, (int)st);
    const char *msg = gatednorm_last_error();
    if (!msg) die("%s: gatednorm_last_error() is NULL", what);
    snprintf(buf, sizeof buf, "device: cannot allocate on device type 7777:%d ", (int)(int32_t)g_sentinel_id);
    if (strncmp(msg, buf, strlen(buf)) == 0) die("%s: failed (status %d) without setting gatednorm_last_error()", what, (int)st);
    const int n = message_name(msg);
    if (n < 0 || !(allowed & BIT(n))) {
        names_text(allowed, set, sizeof set);
        die("%s: status %d, message \"%s\" does not start with one of its arguments (%s) and ':'", what, (int)st, msg, set);
    }
    if (blame && !(blame & BIT(n))) {
        names_text(blame, set, sizeof set);
        die("%s: rejected for \"%s\", but the case broke %s", what, msg, set);
    }
}

/* ============================================================ numbers: formats, rounding */
enum { DT_BF16, DT_F16, DT_F32, DT_COUNT };
static const char *const kDtName[DT_COUNT] = {"bf16", "fp16", "fp32"};
static const int kDtSize[DT_COUNT] = {2, 2, 4};

/* Round to nearest even into a binary format of p significant bits, smallest normal exponent
 * emin and largest finite value maxv (IEEE semantics: subnormals, overflow to inf).  Pure
 * double arithmetic, independent of the library's bit tricks. */
static double round_fmt(double v, int p, int emin, double maxv) {
    if (v != v || v == 0 || isinf(v)) return v;
    int e;
    frexp(v, &e); /* |v| in [2^(e-1), 2^e) */
    int q = (e - 1 < emin ? emin : e - 1) - (p - 1);
    double r = ldexp(nearbyint(ldexp(v, -q)), q);
    if (fabs(r) > maxv) return copysign(INFINITY, v);
    return r;
}
static double round_to(double v, int dt) {
    switch (dt) {
        case DT_BF16: return round_fmt(v, 8, -126, 3.38953138925153547590470800371487866880e+38);
        case DT_F16: return round_fmt(v, 11, -14, 65504.0);
        default: return round_fmt(v, 24, -126, FLT_MAX);
    }
}

static double decode(const void *p, int dt) {
    if (dt == DT_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    if (dt == DT_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    const int sign = h >> 15, ex = (h >> 10) & 31, man = h & 1023;
    double v;
    if (ex == 31) v = man ? NAN : INFINITY;
    else if (ex == 0) v = ldexp(man, -24);
    else v = ldexp(1024 + man, ex - 25);
    return sign ? -v : v;
}

/* Stores v, which must be exactly representable in dt (NaN and inf included). */
static void encode(void *p, int dt, double v) {
    if (dt == DT_F32) {
        float f = (float)v;
        memcpy(p, &f, 4);
        return;
    }
    uint16_t h;
    if (dt == DT_BF16) {
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, 4);
        h = (uint16_t)(u >> 16);
        if (v != v) h = 0x7fc0;
    } else {
        const int sign = signbit(v) ? 0x8000 : 0;
        const double a = fabs(v);
        if (v != v) h = 0x7e00;
        else if (isinf(a)) h = (uint16_t)(sign | 0x7c00);
        else if (a < ldexp(1, -14)) h = (uint16_t)(sign | (int)ldexp(a, 24));
        else {
            int e;
            double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
            h = (uint16_t)(sign | ((e + 14) << 10) | ((int)ldexp(m, 11) - 1024));
        }
    }
    memcpy(p, &h, 2);
}

/* A value for an input: mostly sign * [1, 2) * 2^[elo, ehi] rounded to dt, some zeros, and
 * (when specials) NaN / +-inf.  The ranges keep every fp32 intermediate of the op normal and
 * finite, so the fp32 evaluation stays within a few ulp of the double reference. */
static double input_value(rng_t *r, int dt, int elo, int ehi, int specials) {
    if (specials && permille(r, 30)) {
        static const double sp[] = {NAN, INFINITY, -INFINITY, 0.0, -0.0};
        return PICK(r, sp);
    }
    if (permille(r, 20)) return permille(r, 500) ? 0.0 : -0.0;
    double m = 1.0 + (double)below(r, 1u << 20) / (double)(1u << 20);
    double v = ldexp(m, (int)between(r, elo, ehi));
    return round_to(pct(r, 50) ? -v : v, dt);
}

/* ==================================================== gatednorm_rmsnorm_gated (ops.md §1) */
enum { T_X, T_Z, T_W, T_OUT, T_COUNT };
static const int kTName[T_COUNT] = {N_X, N_Z, N_WEIGHT, N_OUT};

typedef struct {
    int present;          /* 0: the descriptor pointer is NULL (z: no gate) */
    gatednorm_tensor t;   /* what the call gets */
    int dt;               /* DT_*: the element format (valid dtype) */
    int bogus_dtype;      /* t.dtype is no float format; memory sized with elem */
    int elem;             /* bytes per element the memory was sized with */
    int shape_mutated;    /* shape differs from x's on purpose */
    int64_t lo, hi;       /* element offsets reached, relative to the first element; empty: 0, -1 */
    int grp;              /* allocation group (tensors sharing a buffer) */
    int64_t pos;          /* byte position of the first element within the group */
    int misalign;         /* bytes added to the first element's address */
    unsigned char *first; /* address of the first element */
} tens_t;

typedef struct {
    tens_t T[T_COUNT];
    int params_null;
    unsigned char *params_buf;
    size_t params_len;
    uint32_t struct_size;
    /* what the library must use: the caller's fields within struct_size, defaults beyond */
    int nbg, act;
    float eps, woff;
    int64_t G, L, D;         /* group_size, last dim, normalized dim */
    int lead;                /* leading dims of x */
    int64_t ext[GATEDNORM_MAX_DIMS];
    void *stream;
    /* expectation: must_reject (blame: what the call may name), else open (either way) */
    int must_reject, open;
    unsigned blame;
    char notes[512];
} rcase_t;
static rcase_t C;

/* Appends "; " and the formatted text to the case notes in buf (cap bytes), while room is left. */
static void append_note(char *buf, size_t cap, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
static void append_note(char *buf, size_t cap, const char *fmt, va_list ap) {
    const size_t n = strlen(buf);
    if (n + 2 >= cap) return;
    if (n) strcat(buf, "; ");
    vsnprintf(buf + strlen(buf), cap - strlen(buf), fmt, ap);
}
static void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    append_note(C.notes, sizeof C.notes, fmt, ap);
    va_end(ap);
}
static void must_reject(unsigned blame, const char *why) {
    C.must_reject = 1;
    C.blame |= blame;
    note("must reject: %s", why);
}
static void open_case(unsigned blame, const char *why) {
    C.open = 1;
    C.blame |= blame;
    note("either way: %s", why);
}

static void describe_tensor(const char *name, const tens_t *T) {
    if (!T->present) {
        fprintf(stderr, "  %-6s NULL\n", name);
        return;
    }
    const gatednorm_tensor *t = &T->t;
    fprintf(stderr, "  %-6s data %p + %llu, device %d:%d, dtype %u/%u/%u, ndim %d, shape [", name, t->data,
            (unsigned long long)t->byte_offset, t->device.device_type, t->device.device_id, t->dtype.code, t->dtype.bits,
            t->dtype.lanes, t->ndim);
    const int n = t->ndim < 0 ? 0 : t->ndim > GATEDNORM_MAX_DIMS ? GATEDNORM_MAX_DIMS : t->ndim;
    for (int i = 0; i < n; ++i) fprintf(stderr, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    fprintf(stderr, "] strides [");
    for (int i = 0; i < n; ++i) fprintf(stderr, "%s%lld", i ? ", " : "", (long long)t->strides[i]);
    fprintf(stderr, "]\n");
}
static void describe_rmsnorm(void) {
    describe_tensor("x", &C.T[T_X]);
    describe_tensor("z", &C.T[T_Z]);
    describe_tensor("weight", &C.T[T_W]);
    describe_tensor("out", &C.T[T_OUT]);
    if (C.params_null) fprintf(stderr, "  params NULL\n");
    else
        fprintf(stderr, "  params struct_size %u (buffer %zu bytes): norm_before_gate %d activation %d eps %g weight_offset %g group_size %lld\n",
                C.struct_size, C.params_len, C.nbg, C.act, (double)C.eps, (double)C.woff, (long long)C.G);
    fprintf(stderr, "  notes: %s\n", C.notes[0] ? C.notes : "(none)");
}

static int64_t count_of(int ndim, const int64_t *shape, int *overflow) {
    int64_t n = 1;
    *overflow = 0;
    for (int i = 0; i < ndim; ++i) {
        if (shape[i] == 0) return 0;
        if (__builtin_mul_overflow(n, shape[i], &n)) *overflow = 1;
    }
    return *overflow ? INT64_MAX : n;
}

/* Element offsets [lo, hi] an honest non-empty layout reaches. */
static void reach(tens_t *T) {
    const gatednorm_tensor *t = &T->t;
    int ovf;
    T->lo = 0;
    T->hi = -1;
    if (count_of(t->ndim, t->shape, &ovf) == 0) return;
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < t->ndim; ++i) {
        int64_t r;
        if (__builtin_mul_overflow(t->shape[i] - 1, t->strides[i], &r) || __builtin_add_overflow(r < 0 ? lo : hi, r, r < 0 ? &lo : &hi))
            die("driver: an honest layout overflows");
    }
    T->lo = lo;
    T->hi = hi;
}

static const int64_t kFreeStrides[] = {0, 1, -1, 2, 7, -123456, INT64_MAX, INT64_MIN + 1, (int64_t)1 << 40, -((int64_t)1 << 62), 3};

/* Strides of x, z or out: the last dim has stride ls; the leading dims form blocks (split
 * where bit i of bmask is set, between dims i and i + 1), row-major inside a block; blocks are
 * laid out inner to outer in natural or random order, each with padding, maybe reversed, and
 * (inputs only) maybe broadcast (stride 0).  Unit dims may get any stride. */
static void make_layout(rng_t *r, tens_t *T, int lead, const int64_t *ext, int64_t L, int64_t ls, unsigned bmask, int input) {
    gatednorm_tensor *t = &T->t;
    int ovf;
    t->ndim = lead + 1;
    for (int i = 0; i < lead; ++i) t->shape[i] = ext[i];
    t->shape[lead] = L;
    t->strides[lead] = ls;
    int huge = 0;
    for (int i = 0; i < lead; ++i) huge |= ext[i] > 4096;
    if (count_of(t->ndim, t->shape, &ovf) == 0 && (huge || pct(r, 50))) {
        /* Empty: the strides address nothing, so any value is honest.  Half the time garbage,
         * half row-major products that wrap. */
        uint64_t s = (uint64_t)L;
        for (int i = lead - 1; i >= 0; --i) {
            t->strides[i] = pct(r, 50) ? (int64_t)s : pct(r, 50) ? PICK(r, kFreeStrides) : (int64_t)rnd(r);
            s *= (uint64_t)ext[i];
        }
        return;
    }
    int nb = 0, bstart[GATEDNORM_MAX_DIMS], bend[GATEDNORM_MAX_DIMS];
    for (int i = 0; i < lead; ++i) {
        if (i == 0 || (bmask >> (i - 1) & 1u)) bstart[nb++] = i;
        bend[nb - 1] = i + 1;
    }
    int order[GATEDNORM_MAX_DIMS];
    for (int b = 0; b < nb; ++b) order[b] = nb - 1 - b; /* inner to outer: the last block first */
    if (pct(r, 30))
        for (int b = nb - 1; b > 0; --b) {
            int j = (int)below(r, (uint64_t)b + 1), tmp = order[b];
            order[b] = order[j];
            order[j] = tmp;
        }
    int64_t span = L >= 1 ? (L - 1) * (ls < 0 ? -ls : ls) + 1 : 1;
    for (int k = 0; k < nb; ++k) {
        const int b = order[k];
        int64_t E = 1;
        for (int i = bstart[b]; i < bend[b]; ++i) E *= ext[i] ? ext[i] : 1;
        int64_t base = span + (pct(r, 60) ? 0 : between(r, 1, 9));
        if (input && pct(r, 8)) base = 0;
        const int64_t sign = pct(r, 15) ? -1 : 1;
        int64_t s = base;
        for (int i = bend[b] - 1; i >= bstart[b]; --i) {
            t->strides[i] = sign * s;
            s *= ext[i] ? ext[i] : 1;
        }
        if (base) span += (E - 1) * base;
    }
    for (int i = 0; i < lead; ++i)
        if (ext[i] == 1 && pct(r, 30)) t->strides[i] = permille(r, 30) ? INT64_MIN : PICK(r, kFreeStrides);
}

/* Offset in elements of the element at logical index idx (t->ndim entries). */
static int64_t offset_of(const gatednorm_tensor *t, const int64_t *idx) {
    int64_t o = 0;
    for (int i = 0; i < t->ndim; ++i) o += idx[i] * t->strides[i];
    return o;
}
/* Steps a row-major multi-index; 0 when done. */
static int next_index(int ndim, const int64_t *shape, int64_t *idx) {
    for (int i = ndim - 1; i >= 0; --i) {
        if (++idx[i] < shape[i]) return 1;
        idx[i] = 0;
    }
    return 0;
}

/* ----------------------------------------------------- what the contract says of a case */
/* Leading dims after dropping unit dims, with L viewed as [L / G, G] when G > 0, reduce to
 * [tokens, heads] when at most two runs remain, where a dim merges with the next when its
 * stride is the next one's extent times its stride, in every tensor (gatednorm.h). */
static int runs_of(const gatednorm_tensor *const *ts, int n, int64_t G) {
    const gatednorm_tensor *x = ts[0];
    const int lead = x->ndim - 1;
    const int64_t L = x->shape[lead];
    int64_t ext[GATEDNORM_MAX_DIMS + 1], st[3][GATEDNORM_MAX_DIMS + 1];
    int ok[3][GATEDNORM_MAX_DIMS + 1];
    int m = 0;
    for (int i = 0; i < lead; ++i) {
        if (x->shape[i] == 1) continue;
        ext[m] = x->shape[i];
        for (int k = 0; k < n; ++k) st[k][m] = ts[k]->strides[i], ok[k][m] = 1;
        ++m;
    }
    if (G > 0 && L != G && L / G != 1) {
        ext[m] = L / G;
        for (int k = 0; k < n; ++k) ok[k][m] = !__builtin_mul_overflow(G, ts[k]->strides[lead], &st[k][m]);
        ++m;
    }
    int runs = m ? 1 : 0;
    for (int i = 0; i + 1 < m; ++i) {
        int merge = 1;
        for (int k = 0; k < n && merge; ++k) {
            int64_t p;
            merge = ok[k][i] && ok[k][i + 1] && !__builtin_mul_overflow(ext[i + 1], st[k][i + 1], &p) && p == st[k][i];
        }
        runs += !merge;
    }
    return runs;
}

/* 0: the layout passes the library's test for distinct addresses (dims sorted by |stride|,
 * each clearing the span of those below); 1: two elements surely share an address (a zero
 * stride, or two equal |strides|, on dims of extent > 1); 2: neither is sure. */
static int self_overlap(const gatednorm_tensor *t) {
    int ovf, order[GATEDNORM_MAX_DIMS], n = 0;
    if (count_of(t->ndim, t->shape, &ovf) == 0) return 0;
    for (int i = 0; i < t->ndim; ++i)
        if (t->shape[i] > 1) order[n++] = i;
    for (int a = 0; a < n; ++a) {
        if (t->strides[order[a]] == 0) return 1;
        for (int b = a + 1; b < n; ++b)
            if (llabs(t->strides[order[a]]) == llabs(t->strides[order[b]])) return 1;
    }
    for (int k = 1; k < n; ++k)
        for (int j = k; j > 0 && llabs(t->strides[order[j]]) < llabs(t->strides[order[j - 1]]); --j) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    int64_t span = 1;
    for (int k = 0; k < n; ++k) {
        const int64_t s = llabs(t->strides[order[k]]);
        if (s < span) return 2;
        span += s * (t->shape[order[k]] - 1);
    }
    return 0;
}

static uintptr_t first_addr(const gatednorm_tensor *t) { return (uintptr_t)t->data + (uintptr_t)t->byte_offset; }

/* Byte range of T's honest descriptor t; 0 if empty. */
static int byte_range(const tens_t *T, const gatednorm_tensor *t, uintptr_t *lo, uintptr_t *hi) {
    if (T->hi < T->lo) return 0;
    *lo = first_addr(t) + (uintptr_t)(T->lo * T->elem);
    *hi = first_addr(t) + (uintptr_t)((T->hi + 1) * T->elem);
    return 1;
}

/* 2: the same view (address, dtype, shape, every stride); 1: the same but for the strides of
 * unit dims; 0: not the same. */
static int same_view(const gatednorm_tensor *a, const gatednorm_tensor *b) {
    if (first_addr(a) != first_addr(b) || a->ndim != b->ndim || a->dtype.code != b->dtype.code || a->dtype.bits != b->dtype.bits)
        return 0;
    int strict = 2;
    for (int i = 0; i < a->ndim; ++i) {
        if (a->shape[i] != b->shape[i]) return 0;
        if (a->strides[i] != b->strides[i]) {
            if (a->shape[i] > 1) return 0;
            strict = 1;
        }
    }
    return strict;
}

/* ------------------------------------------------------------------------ params */
enum { F_NBG, F_ACT, F_EPS, F_WOFF, F_GROUP, F_PDL, F_RES0, F_COUNT };
static const int kFieldName[F_COUNT] = {N_P_NBG, N_P_ACT, N_P_EPS, N_P_WOFF, N_P_GROUP, N_P_PDL, N_P_RES0};

static void put(size_t off, const void *v, size_t n) {
    if (off + n <= C.params_len) memcpy(C.params_buf + off, v, n);
}

static void gen_params(rng_t *r, int size_mut, int field_mut) {
    const size_t full = sizeof(gatednorm_rmsnorm_gated_params);
    static const float eps_pool[] = {1e-6f, 1e-5f, 0.0f, -0.0f, 1e-12f, 1.0f, 0.5f, 100.0f, 1e6f};
    static const float woff_pool[] = {0.0f, 0.0f, 0.0f, 1.0f, -1.0f, 0.5f, 1048576.0f, -3.25f};
    C.nbg = 1, C.act = GATEDNORM_ACTIVATION_SILU, C.eps = 1e-6f, C.woff = 0.0f;
    if (C.G == 0 && !size_mut && !field_mut && pct(r, 12)) {
        C.params_null = 1;
        return;
    }
    size_t size = full;
    int tail = 0;
    if (size_mut) {
        static const size_t bad[] = {0, 1, 4, 8, 16, 24, 28, 31, 33, 36, 39};
        if (pct(r, 70)) size = PICK(r, bad);
        else size = full + (size_t)between(r, 1, 200), tail = 1;
        must_reject(BIT(N_PARAMS), tail ? "params: struct_size past the layout with a non-zero byte there" : "params: struct_size no layout");
    } else {
        const int k = (int)below(r, 100);
        if (k < 15) size = GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE;
        else if (k < 25) size = full + (size_t)between(r, 1, 200);
        else if (k < 28) {
            static const size_t big[] = {4097, 5000, 8192, 65536};
            size = PICK(r, big);
            open_case(BIT(N_PARAMS), "params: struct_size past 4096, zero tail");
        }
    }
    C.struct_size = (uint32_t)size;
    C.params_len = size < 4 ? 4 : size;
    C.params_buf = buf_new(C.params_len);
    for (size_t i = 0; i < C.params_len; ++i) C.params_buf[i] = (unsigned char)rnd(r);
    /* Past our layout: zero (a newer caller's defaults), or one byte set (an option this
     * library lacks); our padding (after weight_offset): zero or garbage. */
    if (C.params_len > full) memset(C.params_buf + full, 0, C.params_len - full);
    if (tail) C.params_buf[full + below(r, C.params_len - full)] = (unsigned char)between(r, 1, 255);
    if (C.params_len >= 24 && pct(r, 70)) memset(C.params_buf + 20, 0, 4);
    int nbg = pct(r, 70) ? 1 : 0, act = pct(r, 70) ? 0 : 1;
    float eps = pct(r, 80) ? PICK(r, eps_pool) : (float)ldexp(1.0 + (double)below(r, 1024) / 1024.0, (int)between(r, -30, 3));
    float woff = PICK(r, woff_pool);
    int64_t group = C.G;
    int32_t pdl = pct(r, 80) ? 0 : 1, res0 = 0;
    if (field_mut && !size_mut) {
        const int f = (int)below(r, size >= full ? F_COUNT : F_PDL);
        switch (f) {
            case F_NBG: { static const int v[] = {2, -1, INT32_MIN, 7}; nbg = PICK(r, v); break; }
            case F_ACT: { static const int v[] = {2, -1, 100, INT32_MAX}; act = PICK(r, v); break; }
            case F_EPS: { const float v[] = {-1e-6f, -1.0f, NAN, INFINITY, -INFINITY}; eps = PICK(r, v); break; }
            case F_WOFF: { const float v[] = {NAN, INFINITY, -INFINITY}; woff = PICK(r, v); break; }
            case F_GROUP: { const int64_t v[] = {-1, INT64_MIN, -C.G - 1}; group = PICK(r, v); break; }
            case F_PDL: { static const int v[] = {2, -1, 99}; pdl = PICK(r, v); break; }
            default: { static const int v[] = {1, -1, 0x100}; res0 = PICK(r, v); break; }
        }
        must_reject(BIT(kFieldName[f]), kNames[kFieldName[f]]);
    }
    const uint32_t ss = C.struct_size;
    put(0, &ss, 4);
    put(offsetof(gatednorm_rmsnorm_gated_params, norm_before_gate), &nbg, 4);
    put(offsetof(gatednorm_rmsnorm_gated_params, activation), &act, 4);
    put(offsetof(gatednorm_rmsnorm_gated_params, eps), &eps, 4);
    put(offsetof(gatednorm_rmsnorm_gated_params, weight_offset), &woff, 4);
    put(offsetof(gatednorm_rmsnorm_gated_params, group_size), &group, 8);
    put(offsetof(gatednorm_rmsnorm_gated_params, pdl), &pdl, 4);
    put(offsetof(gatednorm_rmsnorm_gated_params, reserved0), &res0, 4);
    if (!size_mut) C.nbg = nbg, C.act = act, C.eps = eps, C.woff = woff;
}

/* ------------------------------------------------------------------- the generator */
enum {
    M_STRUCT_SIZE, M_PARAM_FIELD, M_NULL_DESC, M_NDIM, M_DTYPE, M_LANES, M_SHAPE, M_LAST_STRIDE, M_W_STRIDE, M_DEVICE,
    M_ALL_DEVICE, M_NEG_SHAPE, M_MISALIGN, M_NULL_DATA, M_LIE_OFFSET, M_LIE_STRIDE, M_LIE_COUNT, M_D_ZERO, M_G_NODIV,
    M_COUNT
};

static struct {
    uint64_t inplace, empty, open_accepted, values;
    double worst_ulps[DT_COUNT]; /* largest |out - reference| seen, in ulps of out's format at the reference */
} g_rstats;

static int64_t draw_dim(rng_t *r) {
    const int k = (int)below(r, 100);
    if (k < 25) return between(r, 1, 8);
    if (k < 60) return between(r, 9, 64);
    if (k < 90) return between(r, 65, 256);
    if (k < 98) return between(r, 257, 1100);
    return between(r, 2000, 5000);
}

/* A device this build cannot run on. */
static gatednorm_device bad_device(rng_t *r) {
    static const int32_t types[] = {GATEDNORM_DEVICE_TYPE_CUDA, GATEDNORM_DEVICE_TYPE_ROCM, GATEDNORM_DEVICE_TYPE_CUDA_MANAGED, 0, 4, 99, -1, 12, INT32_MIN};
    static const int32_t ids[] = {0, 0, 1, 7, -1, INT32_MAX};
    gatednorm_device d;
    do d.device_type = PICK(r, types);
    while (g_gpu_type && (d.device_type == g_gpu_type ||
                          (g_gpu_type == GATEDNORM_DEVICE_TYPE_CUDA && d.device_type == GATEDNORM_DEVICE_TYPE_CUDA_MANAGED)));
    d.device_id = PICK(r, ids);
    if (g_gpu_type && pct(r, 30)) d.device_type = g_gpu_type, d.device_id = 1000 + (int32_t)below(r, 1000);
    return d;
}

static gatednorm_dtype dtype_desc(int dt) {
    gatednorm_dtype d;
    d.code = dt == DT_BF16 ? GATEDNORM_DTYPE_CODE_BFLOAT : GATEDNORM_DTYPE_CODE_FLOAT;
    d.bits = dt == DT_F32 ? 32 : 16;
    d.lanes = 1;
    return d;
}

/* Blame for breaking tensor k: its own name; for x, whose shape and device the others are
 * compared against, any tensor's. */
static unsigned blame_of(int k, int shapeish) {
    if (k == T_X && shapeish) return BIT(N_X) | BIT(N_Z) | BIT(N_WEIGHT) | BIT(N_OUT);
    return BIT(kTName[k]);
}

static int pick_present(rng_t *r, unsigned allowed_mask) {
    int c[T_COUNT], n = 0;
    for (int k = 0; k < T_COUNT; ++k)
        if (C.T[k].present && (allowed_mask >> k & 1u)) c[n++] = k;
    if (!n) die("driver: no tensor to mutate");
    return c[below(r, (uint64_t)n)];
}

static int is_empty(const tens_t *T) { return T->hi < T->lo; }

static double snap_value(const unsigned char *addr, int dt) {
    const buf_t *b = buf_of(addr);
    if (!b) die("driver: an input element lies outside every buffer");
    return decode(b->snap + (addr - b->p), dt);
}

static double act_ref(double z, int act) {
    const double s = 1.0 / (1.0 + exp(-z));
    return act == GATEDNORM_ACTIVATION_SIGMOID ? s : z / (1.0 + exp(-z));
}

/* Out of an accepted call against the double reference; marks out's bytes as written. */
static void verify_rmsnorm(void) {
    static double u[20480], g[20480];
    const tens_t *X = &C.T[T_X], *Z = &C.T[T_Z], *W = &C.T[T_W], *O = &C.T[T_OUT];
    const gatednorm_tensor *x = &X->t, *z = Z->present ? &Z->t : NULL, *w = &W->t, *o = &O->t;
    const int lead = x->ndim - 1;
    const int64_t L = x->shape[lead], D = C.D, groups = D ? L / D : 0;
    int ovf;
    if (count_of(x->ndim, x->shape, &ovf) == 0 || groups == 0) {
        ++g_rstats.empty;
        return;
    }
    if (D > 20480) die("driver: row too long");
    if (first_addr(o) == first_addr(x) || (z && first_addr(o) == first_addr(z))) ++g_rstats.inplace;
    const double rel = ldexp(1.0, -17);
    int64_t idx[GATEDNORM_MAX_DIMS] = {0};
    do {
        for (int64_t gi = 0; gi < groups; ++gi) {
            double ss = 0.0;
            for (int64_t c = 0; c < D; ++c) {
                idx[lead] = gi * D + c;
                const double xv = snap_value((const unsigned char *)first_addr(x) + offset_of(x, idx) * X->elem, X->dt);
                g[c] = z ? act_ref(snap_value((const unsigned char *)first_addr(z) + offset_of(z, idx) * Z->elem, Z->dt), C.act) : 1.0;
                u[c] = z && !C.nbg ? xv * g[c] : xv;
                ss += u[c] * u[c];
            }
            const double rstd = 1.0 / sqrt(ss / (double)D + (double)C.eps);
            for (int64_t c = 0; c < D; ++c) {
                idx[lead] = gi * D + c;
                const double wv = snap_value((const unsigned char *)first_addr(w) + (D > 1 ? c * w->strides[0] : 0) * W->elem, W->dt);
                double y = u[c] * rstd * (wv + (double)C.woff);
                if (z && C.nbg) y *= g[c];
                unsigned char *oa = (unsigned char *)first_addr(o) + offset_of(o, idx) * O->elem;
                const double got = decode(oa, O->dt);
                buf_allow(oa, (size_t)O->elem);
                int ok;
                double lo = 0, hi = 0;
                if (y != y) ok = got != got;
                else if (isinf(y)) ok = got == y;
                else {
                    lo = round_to(round_to(y - fabs(y) * rel, DT_F32), O->dt);
                    hi = round_to(round_to(y + fabs(y) * rel, DT_F32), O->dt);
                    ok = got >= lo && got <= hi;
                    if (ok && y != 0 && !isinf(got)) {
                        int e;
                        frexp(y, &e);
                        const int p = O->dt == DT_F32 ? 24 : O->dt == DT_F16 ? 11 : 8;
                        const int emin = O->dt == DT_F16 ? -14 : -126;
                        const double ulp = ldexp(1.0, (e - 1 < emin ? emin : e - 1) - (p - 1));
                        if (fabs(got - y) / ulp > g_rstats.worst_ulps[O->dt]) g_rstats.worst_ulps[O->dt] = fabs(got - y) / ulp;
                    }
                }
                ++g_rstats.values;
                if (!ok) {
                    char where[256] = "";
                    for (int i = 0; i <= lead; ++i) snprintf(where + strlen(where), sizeof where - strlen(where), "%s%lld", i ? ", " : "", (long long)idx[i]);
                    die("out[%s] = %.9g (%s), but the reference is %.9g (allowed [%.9g, %.9g]); row: ss %.9g, rstd %.9g, x dtype %s, z %s, "
                        "weight %s, norm_before_gate %d, activation %d",
                        where, got, kDtName[O->dt], y, lo, hi, ss, rstd, kDtName[X->dt], z ? kDtName[Z->dt] : "none", kDtName[W->dt], C.nbg,
                        C.act);
                }
            }
        }
        idx[lead] = 0;
    } while (next_index(lead, x->shape, idx));
}

static int fuzz_rmsnorm_gated(rng_t *r) {
    memset(&C, 0, sizeof C);
    g_describe = describe_rmsnorm;
    tens_t *const X = &C.T[T_X], *const Z = &C.T[T_Z], *const W = &C.T[T_W], *const O = &C.T[T_OUT];
    int mut[2] = {-1, -1};
    const int nmut = pct(r, 68) ? 0 : pct(r, 75) ? 1 : 2;
    for (int i = 0; i < nmut; ++i) mut[i] = (int)below(r, M_COUNT);
#define HAS(m) (mut[0] == (m) || mut[1] == (m))
    const unsigned ALL_T = BIT(N_X) | BIT(N_Z) | BIT(N_WEIGHT) | BIT(N_OUT);

    for (int k = 0; k < T_COUNT; ++k) {
        C.T[k].present = 1;
        C.T[k].dt = (int)below(r, DT_COUNT);
        C.T[k].grp = k;
    }
    Z->present = pct(r, 75);

    /* ---- logical shape: leading dims ext[], last dim L; normalized dim D (= G when G > 0) */
    const int gmode = pct(r, 35);
    C.D = draw_dim(r);
    if (gmode) {
        static const int64_t ks[] = {0, 1, 1, 1, 2, 2, 3, 4};
        C.G = C.D;
        C.L = C.D * PICK(r, ks);
        if (HAS(M_G_NODIV) && C.D >= 2) {
            C.L += between(r, 1, C.D - 1);
            must_reject(BIT(N_X) | BIT(N_Z) | BIT(N_OUT) | BIT(N_P_GROUP), "last dim not a multiple of group_size");
        }
    } else {
        C.L = C.D;
        if (HAS(M_D_ZERO)) {
            C.L = C.D = 0;
            must_reject(BIT(N_X) | BIT(N_Z) | BIT(N_OUT), "normalized dim 0");
        }
    }
    static const int ranks[] = {0, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 7};
    C.lead = PICK(r, ranks);
    for (int i = 0; i < C.lead; ++i) C.ext[i] = pct(r, 30) ? 1 : pct(r, 70) ? between(r, 2, 4) : between(r, 5, 12);
    for (;;) { /* at most ~4096 elements (a row alone may have more) */
        int64_t n = C.L > 1 ? C.L : 1;
        int big[GATEDNORM_MAX_DIMS], nb = 0;
        for (int i = 0; i < C.lead; ++i) {
            n *= C.ext[i];
            if (C.ext[i] > 1) big[nb++] = i;
        }
        if (n <= 4096 || !nb) break;
        C.ext[big[below(r, (uint64_t)nb)]] = 1;
    }
    int empty_lead = 0;
    if (C.lead >= 1 && pct(r, 6)) { /* empty; then the other dims may be anything */
        C.ext[below(r, (uint64_t)C.lead)] = 0;
        empty_lead = 1;
        if (pct(r, 50))
            for (int i = 0; i < C.lead; ++i)
                if (C.ext[i] && pct(r, 40)) C.ext[i] = pct(r, 50) ? (int64_t)1 << between(r, 20, 62) : between(r, 2, INT64_MAX);
    }

    gen_params(r, HAS(M_STRUCT_SIZE), HAS(M_PARAM_FIELD));

    /* ---- mutations that shape the memory */
    int64_t ls[T_COUNT] = {1, 1, 1, 1}, ws = 1, Dw = C.G > 0 ? C.G : C.L;
    int slead[T_COUNT];
    int64_t sext[T_COUNT][GATEDNORM_MAX_DIMS], sL[T_COUNT];
    for (int k = 0; k < T_COUNT; ++k) {
        slead[k] = C.lead;
        memcpy(sext[k], C.ext, sizeof C.ext);
        sL[k] = C.L;
    }
    if (HAS(M_DTYPE)) {
        const int v = pick_present(r, 0xfu);
        static const uint8_t codes[] = {0, 1, 2, 3, 4, 10, 11, 14, 255};
        static const uint8_t bits[] = {0, 1, 7, 8, 16, 24, 32, 64, 128, 255};
        gatednorm_dtype d;
        do {
            d.code = pct(r, 80) ? PICK(r, codes) : (uint8_t)rnd(r);
            d.bits = pct(r, 80) ? PICK(r, bits) : (uint8_t)rnd(r);
        } while ((d.code == GATEDNORM_DTYPE_CODE_FLOAT && (d.bits == 16 || d.bits == 32)) ||
                 (d.code == GATEDNORM_DTYPE_CODE_BFLOAT && d.bits == 16));
        d.lanes = 1;
        C.T[v].bogus_dtype = 1;
        C.T[v].t.dtype = d;
        C.T[v].elem = d.bits ? (d.bits + 7) / 8 : 1;
        must_reject(BIT(kTName[v]), "dtype no float format");
    }
    if (HAS(M_SHAPE)) {
        const int v = pick_present(r, (1u << T_Z) | (1u << T_W) | (1u << T_OUT));
        if (v == T_W) {
            Dw = Dw >= 2 && pct(r, 30) ? Dw - 1 : Dw >= 1 && pct(r, 30) ? (pct(r, 50) ? 0 : 2 * Dw) : Dw + 1;
        } else {
            const int k = (int)below(r, 4);
            if (k == 0 && C.lead >= 1 && !empty_lead) {
                const int i = (int)below(r, (uint64_t)C.lead);
                sext[v][i] += between(r, 1, 3);
            } else if (k == 1 && C.lead >= 1 && !empty_lead) {
                --slead[v];
                memmove(sext[v], sext[v] + 1, sizeof(int64_t) * (size_t)slead[v]);
            } else if (k == 2 && C.lead < GATEDNORM_MAX_DIMS - 1) {
                memmove(sext[v] + 1, sext[v], sizeof(int64_t) * (size_t)slead[v]);
                sext[v][0] = 1;
                ++slead[v];
            } else {
                sL[v] += C.G > 0 ? C.G : 1;
            }
        }
        C.T[v].shape_mutated = 1;
        must_reject(BIT(kTName[v]), "shape differs from x's");
    }
    const int64_t norm_extent = C.G > 0 ? C.G : C.L;
    if (HAS(M_LAST_STRIDE) && norm_extent > 1) {
        const int v = pick_present(r, (1u << T_X) | (1u << T_Z) | (1u << T_OUT));
        static const int64_t bad[] = {0, 2, -1, 3, -2};
        ls[v] = PICK(r, bad);
        C.T[v].shape_mutated = 1;
        /* an empty tensor addresses nothing: its strides are free (docs/c_abi.md) */
        if (empty_lead || C.L == 0) note("empty: a last dim that is not contiguous is accepted");
        else must_reject(BIT(kTName[v]), "last dim not contiguous");
    }
    for (int k = 0; k < T_COUNT; ++k) /* normalized extent 1: the last stride is free */
        if (ls[k] == 1 && k != T_W && norm_extent == 1 && pct(r, 30)) {
            static const int64_t small[] = {1, -1, 2, 5};
            if (C.G == 1) ls[k] = PICK(r, small);
            else if (sL[k] == 1) ls[k] = PICK(r, kFreeStrides);
        }
    if (HAS(M_W_STRIDE) && Dw >= 2) {
        static const int64_t bad[] = {2, -1, 0, 3};
        ws = PICK(r, bad);
        must_reject(BIT(N_WEIGHT), "weight not contiguous");
    } else if (Dw == 1 && pct(r, 30))
        ws = PICK(r, kFreeStrides);
    for (int k = 0; k < T_COUNT; ++k)
        if (!C.T[k].bogus_dtype) C.T[k].elem = kDtSize[C.T[k].dt];

    /* ---- aliasing: in place, inputs sharing memory, out inside an input */
    const int clean_x = !X->bogus_dtype && !X->shape_mutated, clean_z = Z->present && !Z->bogus_dtype && !Z->shape_mutated,
              clean_o = !O->bogus_dtype && !O->shape_mutated, clean_w = !W->bogus_dtype;
    int scheme = 0;
    {
        const int k = (int)below(r, 100);
        if (k >= 50 && k < 62 && clean_x && clean_o) scheme = 1;                 /* out = x */
        else if (k >= 62 && k < 69 && clean_z && clean_o) scheme = 2;            /* out = z */
        else if (k >= 69 && k < 75 && clean_x && clean_z) scheme = 3;            /* z = x */
        else if (k >= 75 && k < 81 && clean_x && clean_z) scheme = 4;            /* z inside x's memory */
        else if (k >= 81 && k < 87 && clean_x && clean_w) scheme = 5;            /* weight inside x's memory */
        else if (k >= 87 && clean_o && clean_x && (clean_w || clean_z)) scheme = 6; /* out inside an input's memory */
    }
    if (scheme == 1) O->dt = X->dt, O->elem = X->elem;
    if (scheme == 2) O->dt = Z->dt, O->elem = Z->elem;
    if (scheme == 3 || scheme == 4) Z->dt = X->dt, Z->elem = X->elem;
    if (scheme == 5) W->dt = X->dt, W->elem = X->elem;

    /* ---- layouts */
    unsigned bmask = 0;
    if (C.lead >= 2) {
        if (pct(r, 40)) bmask = 1u << below(r, (uint64_t)C.lead - 1);
        else if (pct(r, 30)) bmask = (unsigned)below(r, 1u << (C.lead - 1));
    }
    make_layout(r, X, slead[T_X], sext[T_X], sL[T_X], ls[T_X], bmask, 1);
    if (Z->present) {
        if (scheme == 3) Z->t = X->t;
        else make_layout(r, Z, slead[T_Z], sext[T_Z], sL[T_Z], ls[T_Z], bmask >> (C.lead - slead[T_Z] > 0 ? C.lead - slead[T_Z] : 0), 1);
    }
    if (scheme == 1 || scheme == 2) {
        O->t = scheme == 1 ? X->t : Z->t;
        if (pct(r, 10)) /* a unit dim's stride differs: the header's "same strides" is then open */
            for (int i = 0; i < O->t.ndim; ++i)
                if (O->t.shape[i] == 1) {
                    O->t.strides[i] = O->t.strides[i] == 7 ? 8 : 7;
                    break;
                }
    } else {
        make_layout(r, O, slead[T_OUT], sext[T_OUT], sL[T_OUT], ls[T_OUT], bmask, 0);
        if (pct(r, 4)) { /* rows that overlap each other */
            int c[GATEDNORM_MAX_DIMS], n = 0;
            for (int i = 0; i < O->t.ndim - 1; ++i)
                if (O->t.shape[i] >= 2) c[n++] = i;
            if (n) {
                const int i = c[below(r, (uint64_t)n)];
                const int64_t s[] = {0, 1, -1, O->t.strides[c[below(r, (uint64_t)n)]]};
                O->t.strides[i] = PICK(r, s);
            }
        }
    }
    W->t.ndim = 1;
    W->t.shape[0] = Dw;
    W->t.strides[0] = ws;
    for (int k = 0; k < T_COUNT; ++k) reach(&C.T[k]);

    /* ---- placement: tensors of one group share one buffer */
    if (scheme == 1) O->grp = T_X;
    if (scheme == 2) O->grp = T_Z;
    if (scheme == 3) Z->grp = T_X;
    if (scheme >= 4) {
        tens_t *guest = scheme == 4 ? Z : scheme == 5 ? W : O;
        int host = T_X;
        if (scheme == 6) {
            const int c[] = {T_X, clean_z ? T_Z : T_X, clean_w ? T_W : T_X};
            host = PICK(r, c);
        }
        const tens_t *H = &C.T[host];
        const int64_t span = is_empty(H) ? 16 : (H->hi - H->lo + 1) * H->elem;
        guest->grp = H->grp;
        guest->pos = H->pos + (pct(r, 30) ? 0 : between(r, -span, span) / 4 * 4);
    }
    if (HAS(M_MISALIGN)) {
        const int v = pick_present(r, 0xfu);
        int alone = 1;
        for (int k = 0; k < T_COUNT; ++k)
            if (k != v && C.T[k].grp == C.T[v].grp) alone = 0;
        if (v >= 0 && alone && C.T[v].grp == v && !is_empty(&C.T[v]) && C.T[v].elem >= 2) {
            C.T[v].misalign = (int)between(r, 1, C.T[v].elem - 1);
            must_reject(BIT(kTName[v]), "data + byte_offset not aligned");
        }
    }
    unsigned char *gbuf[T_COUNT] = {NULL, NULL, NULL, NULL};
    for (int g = 0; g < T_COUNT; ++g) {
        int members = 0, nonempty = 0;
        int64_t min_b = INT64_MAX, max_b = INT64_MIN;
        for (int k = 0; k < T_COUNT; ++k) {
            const tens_t *T = &C.T[k];
            if (T->grp != g) continue;
            ++members;
            if (is_empty(T)) continue;
            ++nonempty;
            const int64_t lo = T->pos + T->lo * T->elem, hi = T->pos + (T->hi + 1) * T->elem + (T->misalign ? T->elem : 0);
            if (lo < min_b) min_b = lo;
            if (hi > max_b) max_b = hi;
        }
        if (!members) continue;
        if (!nonempty) {
            gbuf[g] = buf_new(16);
            for (int k = 0; k < T_COUNT; ++k)
                if (C.T[k].grp == g) C.T[k].first = gbuf[g] + 4;
            continue;
        }
        if (members > 1) min_b = min_b >= 0 ? min_b / 4 * 4 : -((-min_b + 3) / 4 * 4);
        gbuf[g] = buf_new((size_t)(max_b - min_b));
        for (int k = 0; k < T_COUNT; ++k) {
            tens_t *T = &C.T[k];
            if (T->grp == g) T->first = is_empty(T) ? gbuf[g] : gbuf[g] + (T->pos - min_b) + T->misalign;
        }
    }

    /* ---- descriptors: data / byte_offset split, device, dtype */
    const int mixed = pct(r, 5);
    gatednorm_device dev0 = {GATEDNORM_DEVICE_TYPE_CPU, 0};
    int dev_same = 1, dev_plain = 1;
    for (int k = 0; k < T_COUNT; ++k) {
        tens_t *T = &C.T[k];
        gatednorm_tensor *t = &T->t;
        const uintptr_t F = (uintptr_t)T->first, start = (uintptr_t)gbuf[T->grp];
        const int s = (int)below(r, 100);
        if (is_empty(T) && pct(r, 30)) t->data = NULL, t->byte_offset = 0;
        else if (s < 60) t->data = T->first, t->byte_offset = 0;
        else if (s < 85) t->data = gbuf[T->grp], t->byte_offset = F - start;
        else {
            uint64_t j = below(r, F - start + 1);
            if (s < 95) j = j / (uint64_t)T->elem * (uint64_t)T->elem;
            t->data = (void *)(F - j);
            t->byte_offset = j;
            if (j % (uint64_t)T->elem && T->present) open_case(BIT(kTName[k]), "data itself misaligned, data + byte_offset aligned");
        }
        t->device = dev0;
        if (mixed) {
            static const int32_t types[] = {GATEDNORM_DEVICE_TYPE_CPU, GATEDNORM_DEVICE_TYPE_CUDA_HOST, GATEDNORM_DEVICE_TYPE_ROCM_HOST};
            static const int32_t ids[] = {0, 0, 1, 5};
            t->device.device_type = PICK(r, types);
            t->device.device_id = PICK(r, ids);
        }
        if (T->present && k != T_X && memcmp(&t->device, &X->t.device, sizeof t->device)) dev_same = 0;
        if (T->present && t->device.device_id != 0) dev_plain = 0;
        if (!T->bogus_dtype) t->dtype = dtype_desc(T->dt);
    }
    if (!dev_same || !dev_plain) open_case(ALL_T, "host devices of different types or non-zero ids");
    {
        static void *const streams[] = {NULL, NULL, (void *)1, (void *)2, (void *)0x1234, (void *)-1};
        C.stream = PICK(r, streams);
    }
    gatednorm_tensor honest[T_COUNT];
    for (int k = 0; k < T_COUNT; ++k) honest[k] = C.T[k].t;

    /* ---- mutations of the descriptors: each one makes the call invalid on its own */
    if (HAS(M_NULL_DESC)) {
        const int v = pick_present(r, (1u << T_X) | (1u << T_W) | (1u << T_OUT));
        C.T[v].present = 0;
        must_reject(BIT(kTName[v]), "descriptor NULL");
    }
    if (HAS(M_NDIM)) {
        const int v = pick_present(r, 0xfu);
        gatednorm_tensor *t = &C.T[v].t;
        static const int32_t bad[] = {0, 9, 10, -1, INT32_MIN, INT32_MAX};
        if (v == T_W && pct(r, 40)) { /* [1, D] */
            t->ndim = 2;
            t->shape[1] = t->shape[0], t->strides[1] = t->strides[0];
            t->shape[0] = 1, t->strides[0] = t->shape[1];
        } else
            t->ndim = PICK(r, bad);
        must_reject(blame_of(v, 1), "ndim");
    }
    if (HAS(M_LANES)) {
        const int v = pick_present(r, 0xfu);
        static const uint16_t bad[] = {0, 2, 4, 65535};
        C.T[v].t.dtype.lanes = PICK(r, bad);
        must_reject(BIT(kTName[v]), "lanes");
    }
    if (HAS(M_DEVICE)) {
        const int v = pick_present(r, 0xfu);
        C.T[v].t.device = bad_device(r);
        must_reject(blame_of(v, 1), "one tensor on a device this build cannot run");
    }
    if (HAS(M_ALL_DEVICE)) {
        const gatednorm_device d = bad_device(r);
        for (int k = 0; k < T_COUNT; ++k) C.T[k].t.device = d;
        must_reject(ALL_T, "every tensor on a device this build cannot run");
    }
    if (HAS(M_NEG_SHAPE)) {
        const int v = pick_present(r, 0xfu);
        gatednorm_tensor *t = &C.T[v].t;
        if (t->ndim >= 1 && t->ndim <= GATEDNORM_MAX_DIMS) {
            static const int64_t bad[] = {-1, -((int64_t)1 << 40), INT64_MIN};
            t->shape[below(r, (uint64_t)t->ndim)] = PICK(r, bad);
            must_reject(blame_of(v, 1), "negative extent");
        }
    }
    if (HAS(M_NULL_DATA)) {
        const int v = pick_present(r, 0xfu);
        if (!is_empty(&C.T[v])) {
            C.T[v].t.data = NULL;
            C.T[v].t.byte_offset = 0;
            must_reject(BIT(kTName[v]), "NULL data with elements");
        }
    }
    if (HAS(M_LIE_OFFSET)) {
        const int v = pick_present(r, 0xfu);
        gatednorm_tensor *t = &C.T[v].t;
        const uint64_t d = (uint64_t)(uintptr_t)t->data, top = (uint64_t)1 << 63;
        const uint64_t lies[] = {top, UINT64_MAX, UINT64_MAX - 3, UINT64_MAX - 63, top - d + below(r, 1u << 20),
                                 d ? (uint64_t)0 - d + below(r, 4096) : top, top + below(r, top)};
        t->byte_offset = PICK(r, lies);
        must_reject(BIT(kTName[v]), "data + byte_offset at or past 2^63");
    }
    if (HAS(M_LIE_STRIDE)) {
        const int v = pick_present(r, 0xfu);
        gatednorm_tensor *t = &C.T[v].t;
        int c[GATEDNORM_MAX_DIMS], n = 0;
        for (int i = 0; i < t->ndim && i < GATEDNORM_MAX_DIMS; ++i)
            if (t->shape[i] >= 2) c[n++] = i;
        if (n && !is_empty(&C.T[v])) {
            const int i = c[below(r, (uint64_t)n)];
            const uint64_t per = (uint64_t)(t->shape[i] - 1) * (uint64_t)C.T[v].elem;
            const uint64_t up = ((uint64_t)1 << 63) / per + 1, down = (uint64_t)first_addr(t) / per + 1;
            const int k = (int)below(r, 3);
            if (k == 0) t->strides[i] = (int64_t)(up + below(r, (uint64_t)INT64_MAX - up + 1));
            else if (k == 1) t->strides[i] = -(int64_t)(down + below(r, (uint64_t)INT64_MAX - down + 1));
            else t->strides[i] = INT64_MIN;
            must_reject(BIT(kTName[v]), "strides reach past the address space");
        }
    }
    if (HAS(M_LIE_COUNT)) {
        const int v = pick_present(r, 0xfu);
        gatednorm_tensor *t = &C.T[v].t;
        if (!is_empty(&C.T[v]) && t->ndim >= 1 && t->ndim <= GATEDNORM_MAX_DIMS) {
            if (t->ndim >= 2) {
                const int i = (int)below(r, (uint64_t)t->ndim - 1);
                t->shape[i] = (int64_t)1 << 32;
                t->shape[i + 1] = ((int64_t)1 << 31) + between(r, 0, 1 << 20);
            } else {
                t->shape[0] = ((int64_t)1 << 62) + between(r, 0, (int64_t)1 << 61);
            }
            must_reject(blame_of(v, 1), "element count or extent past 2^63 bytes");
        }
    }

    /* ---- what the contract says of the honest layout */
    {
        const gatednorm_tensor *hx = &honest[T_X], *hz = &honest[T_Z], *ho = &honest[T_OUT];
        int same = !X->shape_mutated && !O->shape_mutated && (!Z->present || !Z->shape_mutated) && C.D > 0;
        if (same) {
            const gatednorm_tensor *ts[3] = {hx, ho, hz};
            if (runs_of(ts, Z->present ? 3 : 2, C.G) > 2) {
                /* an empty tensor addresses nothing: its strides need not reduce (docs/c_abi.md) */
                if (!is_empty(X)) must_reject(BIT(N_X) | BIT(N_Z) | BIT(N_OUT), "leading dims do not reduce to two");
            }
        }
        uintptr_t olo, ohi, ilo, ihi;
        if (byte_range(O, ho, &olo, &ohi)) {
            for (int k = 0; k < 3; ++k) {
                const int in = k == 0 ? T_X : k == 1 ? T_Z : T_W;
                if (in == T_Z && !Z->present) continue;
                if (!byte_range(&C.T[in], &honest[in], &ilo, &ihi) || !(olo < ihi && ilo < ohi)) continue;
                const int sv = in == T_W ? 0 : same_view(ho, &honest[in]);
                if (sv == 1) open_case(BIT(N_OUT), "out is x or z but for a unit dim's stride");
                else if (sv == 0) must_reject(BIT(N_OUT), "out overlaps an input");
            }
        }
        const int so = self_overlap(ho);
        if (so == 1) must_reject(BIT(N_OUT), "out's elements overlap");
        else if (so == 2) open_case(BIT(N_OUT), "out's elements may overlap");
        for (int k = 0; k < T_COUNT; ++k) {
            const gatednorm_tensor *t = &honest[k];
            int64_t n = 1;
            int ovf = 0;
            for (int i = 0; i < t->ndim; ++i) {
                if (!is_empty(&C.T[k]) && t->strides[i] == INT64_MIN)
                    open_case(BIT(kTName[k]), "INT64_MIN stride on a unit dim");
                if (!ovf && __builtin_mul_overflow(n, t->shape[i], &n)) {
                    ovf = 1;
                    open_case(blame_of(k, 1), "empty, but the extents before the zero multiply past 2^63");
                }
            }
        }
    }

    /* ---- memory: poison everything, then the inputs' values */
    {
        static const unsigned char poisons[] = {0xff, 0xa5, 0x7f, 0x00, 0x5a};
        const unsigned char poison = PICK(r, poisons);
        for (int i = 0; i < g_nbufs; ++i)
            if (g_bufs[i].p != C.params_buf) memset(g_bufs[i].p, poison, g_bufs[i].n);
        const int specials = pct(r, 4);
        for (int k = 0; k < 3; ++k) {
            const int in = k == 0 ? T_X : k == 1 ? T_Z : T_W;
            const tens_t *T = &C.T[in];
            const gatednorm_tensor *t = &honest[in];
            if (!T->present || T->bogus_dtype || is_empty(T)) continue;
            int64_t idx[GATEDNORM_MAX_DIMS] = {0};
            do {
                const double v = in == T_X ? input_value(r, T->dt, -10, 10, specials)
                                 : in == T_Z ? input_value(r, T->dt, -10, 4, specials)
                                             : input_value(r, T->dt, -4, 4, specials);
                encode(T->first + offset_of(t, idx) * T->elem, T->dt, v);
            } while (next_index(t->ndim, t->shape, idx));
        }
    }

    /* ---- the call */
    set_sentinel();
    bufs_snapshot();
    /* odd cases through the packed entry (the same call in one struct): chosen by the case's
     * number, not by a count of earlier cases, so `--case K` replays case K as it ran, and
     * named in g_entry for the failure message; no draw from r */
    const int packed = (int)(g_case & 1);
    g_entry = packed ? "rmsnorm_gated (through gatednorm_rmsnorm_gated_packed)" : "rmsnorm_gated";
    const gatednorm_rmsnorm_gated_args args = {X->present ? &X->t : NULL, Z->present ? &Z->t : NULL, W->present ? &W->t : NULL,
                                               O->present ? &O->t : NULL,
                                               C.params_null ? NULL : (const gatednorm_rmsnorm_gated_params *)(void *)C.params_buf,
                                               C.stream};
    const gatednorm_status st = packed ? gatednorm_rmsnorm_gated_packed(&args)
                                       : gatednorm_rmsnorm_gated(args.x, args.z, args.weight, args.out, args.params, args.stream);
    if (st == GATEDNORM_STATUS_SUCCESS) {
        if (C.must_reject) die("accepted a call it must refuse");
        if (C.open) ++g_rstats.open_accepted;
        verify_rmsnorm();
        bufs_check("accepted call");
        return 1;
    }
    if (!C.must_reject && !C.open)
        die("refused a valid call: status %d (%s): %s", (int)st, gatednorm_status_string(st), gatednorm_last_error());
    check_rejection(st, BIT(N_X) | BIT(N_Z) | BIT(N_WEIGHT) | BIT(N_OUT) | PARAM_BITS, C.blame, "gatednorm_rmsnorm_gated");
    bufs_check("refused call");
    return 0;
#undef HAS
}

/* ============================================== gatednorm_rmsnorm_gated_params_init */
static int fuzz_params_init(rng_t *r) {
    const size_t full = sizeof(gatednorm_rmsnorm_gated_params), canary = 32;
    static const size_t sizes[] = {0, 1, 4, 8, 24, 31, 32, 33, 36, 39, 40, 41, 44, 48, 56, 64, 100, 4095, 4096, 4097, 5000, 65536};
    const size_t size = pct(r, 85) ? PICK(r, sizes) : (size_t)between(r, 0, 9000);
    const int null = pct(r, 8);
    /* The caller's contract: the buffer holds at least `size` bytes; canaries either side. */
    unsigned char *b = buf_new(canary + size + canary);
    for (size_t i = 0; i < canary + size + canary; ++i) b[i] = (unsigned char)rnd(r);
    gatednorm_rmsnorm_gated_params *p = null ? NULL : (gatednorm_rmsnorm_gated_params *)(void *)(b + canary);
    /* -1: must refuse; 1: must accept (a known layout, or a newer caller's larger one);
     * 0: past the library's 4096-byte cap, which the header does not state: open */
    int must = 0;
    if (null || (size < full && size != GATEDNORM_RMSNORM_GATED_PARAMS_V1_SIZE)) must = -1;
    else if (size <= 4096) must = 1;
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_rmsnorm_gated_params_init(p, size);
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (must == 1) die("refused size %zu: %s", size, gatednorm_last_error());
        check_rejection(st, BIT(N_PARAMS), BIT(N_PARAMS), "gatednorm_rmsnorm_gated_params_init");
        bufs_check("refused params_init");
        return 0;
    }
    if (must == -1) die("accepted %s with size %zu", null ? "NULL" : "a struct", size);
    buf_allow(b + canary, size);
    bufs_check("params_init (the bytes around the struct)");
    gatednorm_rmsnorm_gated_params d;
    memset(&d, 0, sizeof d);
    memcpy(&d, b + canary, size < full ? size : full);
    const gatednorm_rmsnorm_gated_params want = {(uint32_t)size, 1, GATEDNORM_ACTIVATION_SILU, 1e-6f, 0.0f, 0, 0, 0};
    int ok = d.struct_size == want.struct_size && d.norm_before_gate == 1 && d.activation == 0 && d.eps == want.eps && d.weight_offset == 0.0f &&
             d.group_size == 0;
    if (size >= full) ok = ok && d.pdl == 0 && d.reserved0 == 0;
    for (size_t i = full; i < size && ok; ++i) ok = b[canary + i] == 0;
    if (!ok)
        die("size %zu: the struct holds struct_size %u norm_before_gate %d activation %d eps %g weight_offset %g group_size %lld pdl %d reserved0 %d "
            "(or a non-zero byte past the layout), not the defaults",
            size, d.struct_size, d.norm_before_gate, d.activation, (double)d.eps, (double)d.weight_offset, (long long)d.group_size, d.pdl,
            d.reserved0);
    return 1;
}

/* ================================================================ runtime helpers */
static int fuzz_status_string(rng_t *r) {
    static const int known[] = {0, -1, -2, -3, -4, -5, -6, 1, -7, INT_MIN, INT_MAX};
    const int v = pct(r, 60) ? PICK(r, known) : (int)rnd(r);
    bufs_snapshot();
    const char *s = gatednorm_status_string((gatednorm_status)v);
    if (!s || !s[0] || strlen(s) > 64) die("gatednorm_status_string(%d) gave %s", v, s ? "an empty or over-long string" : "NULL");
    if (v >= -6 && v <= 0 && strcmp(s, "unknown status") == 0) die("gatednorm_status_string(%d) does not know its own status", v);
    return 1;
}

static int fuzz_version(rng_t *r) {
    (void)r;
    const uint32_t want = ((uint32_t)GATEDNORM_VERSION_MAJOR << 16) | ((uint32_t)GATEDNORM_VERSION_MINOR << 8) | GATEDNORM_VERSION_PATCH;
    if (gatednorm_version() != want) die("gatednorm_version() = 0x%x, the header is 0x%x", gatednorm_version(), want);
    const char *a = gatednorm_build_info(), *b = gatednorm_build_info();
    char head[64];
    snprintf(head, sizeof head, "gatednorm %d.%d.%d; ", GATEDNORM_VERSION_MAJOR, GATEDNORM_VERSION_MINOR, GATEDNORM_VERSION_PATCH);
    if (!a || !b || strcmp(a, b) || strncmp(a, head, strlen(head)) || strlen(a) >= 256)
        die("gatednorm_build_info() = \"%s\" then \"%s\"", a ? a : "(NULL)", b ? b : "(NULL)");
    const int32_t t = gatednorm_gpu_device_type();
    if (t != 0 && t != GATEDNORM_DEVICE_TYPE_CUDA && t != GATEDNORM_DEVICE_TYPE_ROCM) die("gatednorm_gpu_device_type() = %d", t);
    return 1;
}

static int fuzz_device_count(rng_t *r) {
    int32_t *count = pct(r, 20) ? NULL : (int32_t *)(void *)buf_new(sizeof(int32_t));
    if (count) *count = (int32_t)rnd(r);
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_device_count(count);
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (count) die("refused a count pointer: %s", gatednorm_last_error());
        check_rejection(st, BIT(N_COUNT), BIT(N_COUNT), "gatednorm_device_count");
        bufs_check("refused device_count");
        return 0;
    }
    if (!count) die("accepted NULL");
    if (*count < 0 || (g_gpu_type == 0 && *count != 0)) die("count %d on a build whose GPU type is %d", *count, g_gpu_type);
    return 1;
}

static int32_t device_count(void) {
    int32_t n = 0;
    if (gatednorm_device_count(&n) != GATEDNORM_STATUS_SUCCESS) die("gatednorm_device_count failed: %s", gatednorm_last_error());
    return n;
}

static int fuzz_device_name(rng_t *r) {
    static const int32_t ids[] = {-1, 0, 1, 7, 1000, INT32_MIN, INT32_MAX};
    const int32_t id = PICK(r, ids);
    const size_t cap = pct(r, 15) ? 0 : (size_t)between(r, 1, 96);
    char *name = pct(r, 15) ? NULL : (char *)buf_new(cap);
    if (name) memset(name, 'Q', cap);
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_device_name(id, name, cap);
    const int valid_id = id >= 0 && id < device_count();
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (name && cap && valid_id) die("refused device %d: %s", id, gatednorm_last_error());
        check_rejection(st, BIT(N_NAME) | BIT(N_CAPACITY) | BIT(N_DEVICE_ID),
                        !name ? BIT(N_NAME) : !cap ? BIT(N_CAPACITY) : !valid_id ? BIT(N_DEVICE_ID) : 0, "gatednorm_device_name");
        bufs_check("refused device_name");
        return 0;
    }
    if (!name || !cap || !valid_id) die("accepted id %d, name %p, capacity %zu", id, (void *)name, cap);
    if (!memchr(name, 0, cap)) die("device name not terminated within its capacity");
    buf_allow(name, cap);
    bufs_check("device_name");
    return 1;
}

static int fuzz_device_attribute(rng_t *r) {
    static const int32_t ids[] = {-1, 0, 1, 7, 1000, INT32_MIN, INT32_MAX};
    static const int32_t attrs[] = {INT32_MIN, -1, 0, GATEDNORM_DEVICE_ATTR_MULTIPROCESSORS, GATEDNORM_DEVICE_ATTR_WARP_SIZE,
                                    GATEDNORM_DEVICE_ATTR_L2_BYTES, 4, INT32_MAX};
    const int32_t id = PICK(r, ids), attr = PICK(r, attrs);
    int64_t *value = pct(r, 15) ? NULL : (int64_t *)(void *)buf_new(sizeof(int64_t));
    if (value) *value = (int64_t)rnd(r);
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_device_attribute(id, attr, value);
    const int valid_id = id >= 0 && id < device_count();
    const int valid_attr = attr >= GATEDNORM_DEVICE_ATTR_MULTIPROCESSORS && attr <= GATEDNORM_DEVICE_ATTR_L2_BYTES;
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (value && valid_id && valid_attr) die("refused device %d attribute %d: %s", id, attr, gatednorm_last_error());
        check_rejection(st, BIT(N_VALUE) | BIT(N_ATTRIBUTE) | BIT(N_DEVICE_ID),
                        !value ? BIT(N_VALUE) : !valid_attr ? BIT(N_ATTRIBUTE) : BIT(N_DEVICE_ID), "gatednorm_device_attribute");
        bufs_check("refused device_attribute");
        return 0;
    }
    if (!value || !valid_id || !valid_attr) die("accepted id %d, attribute %d, value %p", id, attr, (void *)value);
    if (*value < 1) die("device %d attribute %d = %lld", id, attr, (long long)*value);
    buf_allow(value, sizeof *value);
    bufs_check("device_attribute");
    return 1;
}

static int fuzz_pointer_device(rng_t *r) {
    unsigned char *mem = buf_new((size_t)between(r, 1, 256));
    static int in_data;
    int on_stack = 0;
    const void *ptrs[] = {NULL, mem, mem + 1, &in_data, &on_stack, &g_seed};
    const void *ptr = PICK(r, ptrs);
    gatednorm_device *d = pct(r, 15) ? NULL : (gatednorm_device *)(void *)buf_new(sizeof(gatednorm_device));
    if (d) d->device_type = (int32_t)rnd(r), d->device_id = (int32_t)rnd(r);
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_pointer_device(ptr, d);
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (ptr && d) die("refused host pointer %p: %s", ptr, gatednorm_last_error());
        check_rejection(st, BIT(N_PTR) | BIT(N_DEVICE), (ptr ? 0 : BIT(N_PTR)) | (d ? 0 : BIT(N_DEVICE)), "gatednorm_pointer_device");
        bufs_check("refused pointer_device");
        return 0;
    }
    if (!ptr || !d) die("accepted ptr %p, device %p", ptr, (void *)d);
    if (d->device_type != GATEDNORM_DEVICE_TYPE_CPU || (g_gpu_type == 0 && d->device_id != 0))
        die("host memory reported on device %d:%d", d->device_type, d->device_id);
    buf_allow(d, sizeof *d);
    bufs_check("pointer_device");
    return 1;
}

static int fuzz_malloc_free(rng_t *r) {
    static const uint64_t small[] = {0, 1, 63, 64, 65, 4096, 100000};
    static const uint64_t huge[] = {UINT64_MAX, UINT64_MAX - 63, UINT64_MAX - 64, (uint64_t)1 << 63, (uint64_t)1 << 62, (uint64_t)1 << 48, (uint64_t)1 << 44};
    gatednorm_device dev = {GATEDNORM_DEVICE_TYPE_CPU, 0};
    if (pct(r, 25)) /* with a GPU backend, never its own device type: host memory is not for its runtime */
        do dev = bad_device(r);
        while (g_gpu_type && dev.device_type == g_gpu_type);
    else if (pct(r, 10)) dev.device_id = (int32_t)rnd(r);
    const int host = dev.device_type == GATEDNORM_DEVICE_TYPE_CPU;
    if (pct(r, 40)) { /* gatednorm_free */
        void *p = NULL;
        gatednorm_device cpu = {GATEDNORM_DEVICE_TYPE_CPU, 0};
        if (pct(r, 80) && gatednorm_malloc(cpu, (size_t)between(r, 0, 300), &p) != GATEDNORM_STATUS_SUCCESS) die("gatednorm_malloc failed: %s", gatednorm_last_error());
        set_sentinel();
        const gatednorm_status st = gatednorm_free(dev, p);
        if (st != GATEDNORM_STATUS_SUCCESS) {
            if (host || !p) die("refused freeing %p on device %d:%d: %s", p, dev.device_type, dev.device_id, gatednorm_last_error());
            check_rejection(st, BIT(N_DEVICE) | BIT(N_PTR), BIT(N_DEVICE), "gatednorm_free");
            /* it must not have freed it: freeing it now would be a double free */
            if (gatednorm_free(cpu, p) != GATEDNORM_STATUS_SUCCESS) die("gatednorm_free(cpu) failed: %s", gatednorm_last_error());
            return 0;
        }
        if (p && !host) die("freed host memory as device %d:%d memory", dev.device_type, dev.device_id);
        return 1;
    }
    const int big = pct(r, 10);
    /* Under ASan only the sizes refused before any allocation (the allocator prints a warning
     * for each size it cannot serve). */
    const uint64_t bytes = big ? (g_asan ? PICK(r, huge) | ((uint64_t)1 << 63 | ~(uint64_t)63) : PICK(r, huge))
                           : pct(r, 50) ? PICK(r, small) : below(r, 1 << 16);
    void **ptr = pct(r, 8) ? NULL : (void **)(void *)buf_new(sizeof(void *));
    if (ptr) memset(ptr, 0xab, sizeof(void *));
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_malloc(dev, (size_t)bytes, ptr);
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (ptr && host && !big) die("refused %llu bytes of host memory: %s", (unsigned long long)bytes, gatednorm_last_error());
        check_rejection(st, BIT(N_DEVICE) | BIT(N_BYTES) | BIT(N_PTR) | BIT(N_DEVICE_ID),
                        !ptr ? BIT(N_PTR) : !host ? BIT(N_DEVICE) | BIT(N_DEVICE_ID) : BIT(N_BYTES), "gatednorm_malloc");
        bufs_check("refused malloc");
        return 0;
    }
    if (!ptr || !host) die("accepted ptr %p on device %d:%d", (void *)ptr, dev.device_type, dev.device_id);
    void *p = *ptr;
    if (!p || (uintptr_t)p % 64) die("host allocation %p is not 64-byte aligned", p);
    if (!big) memset(p, 0x3c, (size_t)bytes); /* the sanitizer sees an allocation shorter than asked */
    buf_allow(ptr, sizeof(void *));
    bufs_check("malloc");
    if (gatednorm_free(dev, p) != GATEDNORM_STATUS_SUCCESS) die("gatednorm_free failed: %s", gatednorm_last_error());
    return 1;
}

static void *garbage_stream(rng_t *r) {
    static void *const s[] = {(void *)1, (void *)2, (void *)0x1234, (void *)-1, (void *)&g_seed};
    return PICK(r, s);
}

static int fuzz_memcpy(rng_t *r) {
    const size_t nd = (size_t)between(r, 0, 300), ns = (size_t)between(r, 0, 300);
    unsigned char *dst = buf_new(nd), *src = buf_new(ns);
    for (size_t i = 0; i < nd; ++i) dst[i] = (unsigned char)rnd(r);
    for (size_t i = 0; i < ns; ++i) src[i] = (unsigned char)rnd(r);
    size_t bytes = (size_t)below(r, (nd < ns ? nd : ns) + 1);
    void *d = dst, *s = src;
    if (pct(r, 10)) d = NULL;
    if (pct(r, 10)) s = NULL;
    if (pct(r, 10)) bytes = 0;
    void *stream = pct(r, 50) ? NULL : garbage_stream(r);
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_memcpy(d, s, bytes, stream);
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (bytes == 0 || (d && s)) die("refused a host copy of %zu bytes: %s", bytes, gatednorm_last_error());
        check_rejection(st, BIT(N_DST) | BIT(N_SRC) | BIT(N_STREAM), (d ? 0 : BIT(N_DST)) | (s ? 0 : BIT(N_SRC)), "gatednorm_memcpy");
        bufs_check("refused memcpy");
        return 0;
    }
    if (bytes && (!d || !s)) die("accepted a copy of %zu bytes from %p to %p", bytes, s, d);
    if (bytes) {
        if (memcmp(dst, src, bytes)) die("memcpy of %zu bytes: dst differs from src", bytes);
        buf_allow(dst, bytes);
    }
    bufs_check("memcpy");
    return 1;
}

static int fuzz_memset(rng_t *r) {
    const size_t n = (size_t)between(r, 0, 300);
    unsigned char *dst = buf_new(n);
    for (size_t i = 0; i < n; ++i) dst[i] = (unsigned char)rnd(r);
    size_t bytes = (size_t)below(r, n + 1);
    void *d = pct(r, 10) ? NULL : dst;
    if (pct(r, 10)) bytes = 0;
    static const int32_t values[] = {0, 1, 255, 256, -1, 0x12345678, INT32_MIN};
    const int32_t value = pct(r, 50) ? PICK(r, values) : (int32_t)rnd(r);
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_memset(d, value, bytes, pct(r, 50) ? NULL : garbage_stream(r));
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (bytes == 0 || d) die("refused a host memset of %zu bytes: %s", bytes, gatednorm_last_error());
        check_rejection(st, BIT(N_DST) | BIT(N_STREAM), BIT(N_DST), "gatednorm_memset");
        bufs_check("refused memset");
        return 0;
    }
    if (bytes && !d) die("accepted a memset of %zu bytes at NULL", bytes);
    for (size_t i = 0; i < bytes; ++i)
        if (dst[i] != (unsigned char)value) die("memset(value %d): byte %zu is 0x%02x", value, i, dst[i]);
    if (bytes) buf_allow(dst, bytes);
    bufs_check("memset");
    return 1;
}

/* Stream and device calls.  Garbage handles reach the library only on a CPU-only build,
 * where no GPU runtime would be handed them. */
static int fuzz_streams(rng_t *r) {
    static const int32_t ids[] = {-1, 0, 1, 7, 1000, INT32_MIN, INT32_MAX};
    const int32_t id = PICK(r, ids);
    const int valid_id = id >= 0 && id < device_count();
    const int k = (int)below(r, 4);
    gatednorm_status st;
    unsigned allowed, blame;
    const char *what;
    set_sentinel();
    if (k == 0) {
        if (valid_id) return 1; /* would create a real stream: not this driver's business */
        void **s = pct(r, 20) ? NULL : (void **)(void *)buf_new(sizeof(void *));
        if (s) memset(s, 0xcd, sizeof(void *));
        bufs_snapshot();
        st = gatednorm_stream_create(id, s);
        what = "gatednorm_stream_create", allowed = BIT(N_STREAM) | BIT(N_DEVICE_ID), blame = s ? BIT(N_DEVICE_ID) : 0;
    } else if (k == 1 || k == 2) {
        void *s = g_gpu_type || pct(r, 40) ? NULL : garbage_stream(r);
        bufs_snapshot();
        st = k == 1 ? gatednorm_stream_synchronize(s) : gatednorm_stream_destroy(s);
        what = k == 1 ? "gatednorm_stream_synchronize" : "gatednorm_stream_destroy", allowed = BIT(N_STREAM), blame = BIT(N_STREAM);
        if (!s && k == 2 && st != GATEDNORM_STATUS_SUCCESS) die("%s(NULL) failed: %s", what, gatednorm_last_error());
        if (!s && k == 1 && g_gpu_type == 0 && st != GATEDNORM_STATUS_SUCCESS) die("%s(NULL) failed with no GPU: %s", what, gatednorm_last_error());
        if (s && st == GATEDNORM_STATUS_SUCCESS) die("%s accepted the handle %p on a build with no GPU backend", what, s);
    } else {
        if (valid_id) return 1;
        bufs_snapshot();
        st = gatednorm_device_synchronize(id);
        what = "gatednorm_device_synchronize", allowed = BIT(N_DEVICE_ID), blame = BIT(N_DEVICE_ID);
        if (st == GATEDNORM_STATUS_SUCCESS) die("%s accepted device %d", what, id);
    }
    if (st != GATEDNORM_STATUS_SUCCESS) {
        check_rejection(st, allowed, blame, what);
        bufs_check(what);
        return 0;
    }
    return 1;
}

/* ============================== the FP8 ops and W4A16 (ops.md §2-§4): shared case state */
/* One case of the newer entry points: its tensors (for the report on failure), what the
 * contract says of it (must_reject with the names the call may blame, or open), notes. */
enum { NT_MAX = 10 };
static struct {
    const char *tn[NT_MAX];
    tens_t *T[NT_MAX];
    int nt;
    int must_reject, open, blame_any;
    nameset_t blame;
    char notes[1024];
    char params[512];
} NC;

static void nc_begin(void);
static void nc_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void nc_note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    append_note(NC.notes, sizeof NC.notes, fmt, ap);
    va_end(ap);
}
static void nc_must(nameset_t blame, const char *why) {
    NC.must_reject = 1;
    NC.blame |= blame;
    nc_note("must reject: %s", why);
}
static void nc_open(nameset_t blame, const char *why) {
    NC.open = 1;
    NC.blame |= blame;
    if (!blame) NC.blame_any = 1; /* a refusal may then name any argument */
    nc_note("either way: %s", why);
}
static void nc_describe(void) {
    for (int i = 0; i < NC.nt; ++i) describe_tensor(NC.tn[i], NC.T[i]);
    fprintf(stderr, "  params: %s\n  notes: %s\n", NC.params[0] ? NC.params : "(none)", NC.notes[0] ? NC.notes : "(none)");
}
static void nc_begin(void) {
    memset(&NC, 0, sizeof NC);
    g_describe = nc_describe;
}
static void nc_tensor(const char *name, tens_t *T) {
    if (NC.nt == NT_MAX) die("driver: too many tensors");
    memset(T, 0, sizeof *T);
    NC.tn[NC.nt] = name;
    NC.T[NC.nt++] = T;
}

/* The outcome of a call against the expectation: 0 refused (checked), 1 accepted (the caller
 * then verifies the outputs). */
static int nc_outcome(gatednorm_status st, nameset_t allowed, const char *what) {
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (!NC.must_reject && !NC.open) die("%s refused a valid case (status %d): %s", what, (int)st, gatednorm_last_error());
        check_rejection(st, allowed, NC.must_reject && !NC.blame_any ? NC.blame : 0, what);
        bufs_check(what);
        return 0;
    }
    if (NC.must_reject) die("%s accepted a case the contract refuses (%s)", what, NC.notes);
    return 1;
}

/* ------------------------------------------------------------ tensors of any dtype */
enum { K_U8 = 8, K_FN, K_FNUZ, K_E8, K_I32, K_U32, K_I8 }; /* kinds past DT_* */
static gatednorm_dtype kind_dtype(int kind) {
    gatednorm_dtype d;
    d.lanes = 1;
    switch (kind) {
        case K_U8: d.code = GATEDNORM_DTYPE_CODE_UINT, d.bits = 8; break;
        case K_I8: d.code = GATEDNORM_DTYPE_CODE_INT, d.bits = 8; break;
        case K_FN: d.code = GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FN, d.bits = 8; break;
        case K_FNUZ: d.code = GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FNUZ, d.bits = 8; break;
        case K_E8: d.code = GATEDNORM_DTYPE_CODE_FLOAT8_E8M0FNU, d.bits = 8; break;
        case K_I32: d.code = GATEDNORM_DTYPE_CODE_INT, d.bits = 32; break;
        case K_U32: d.code = GATEDNORM_DTYPE_CODE_UINT, d.bits = 32; break;
        default: return dtype_desc(kind);
    }
    return d;
}
static int kind_size(int kind) { return kind <= DT_F32 ? kDtSize[kind] : kind >= K_I32 && kind <= K_U32 ? 4 : 1; }

static void tset(tens_t *T, int kind, int ndim, const int64_t *shape, const int64_t *strides) {
    T->present = 1;
    T->dt = kind;
    T->elem = kind_size(kind);
    memset(&T->t, 0, sizeof T->t);
    T->t.dtype = kind_dtype(kind);
    T->t.device.device_type = GATEDNORM_DEVICE_TYPE_CPU;
    T->t.ndim = ndim;
    for (int i = 0; i < ndim; ++i) T->t.shape[i] = shape[i], T->t.strides[i] = strides[i];
    reach(T);
}
static size_t tspan(const tens_t *T) { return T->hi < T->lo ? 0 : (size_t)(T->hi - T->lo + 1) * (size_t)T->elem; }
/* T's lowest reached byte at buf + pos; data / byte_offset split at random. */
static void tplace(rng_t *r, tens_t *T, unsigned char *buf, size_t pos) {
    unsigned char *first = buf + pos - T->lo * T->elem;
    size_t off = 0;
    if (pct(r, 25)) off = (size_t)T->elem * below(r, (uint64_t)(first - buf) / (uint64_t)T->elem + 1);
    T->t.data = first - off;
    T->t.byte_offset = off;
    T->first = first;
}
static unsigned char *talloc(rng_t *r, tens_t *T) {
    const size_t n = tspan(T);
    unsigned char *b = buf_new(n);
    for (size_t i = 0; i < n; ++i) b[i] = (unsigned char)rnd(r);
    if (!n) {
        T->t.data = pct(r, 30) ? NULL : b;
        T->t.byte_offset = 0;
        T->first = b;
        return b;
    }
    tplace(r, T, b, 0);
    return b;
}
/* A and B in one buffer, their byte ranges intersecting (both non-empty); 0 when that made
 * them the same view (an in-place alias the op may allow), else 1. */
static int talloc_overlap(rng_t *r, tens_t *A, tens_t *B) {
    const size_t na = tspan(A), nb = tspan(B);
    const size_t start = (size_t)below(r, (na - 1) / 4 + 1) * 4;
    const size_t n = start + nb > na ? start + nb : na;
    unsigned char *b = buf_new(n);
    for (size_t i = 0; i < n; ++i) b[i] = (unsigned char)rnd(r);
    tplace(r, A, b, 0);
    tplace(r, B, b, start);
    return same_view(&A->t, &B->t) == 0;
}
/* Moves T (elements wider than a byte, not empty) into a buffer of its own at an address
 * that is not a multiple of its element size; 0 if T does not qualify. */
static uint64_t g_misaligned;
static int misalign(rng_t *r, tens_t *T) {
    const size_t n = tspan(T);
    if (!T->present || T->elem < 2 || !n) return 0;
    ++g_misaligned;
    unsigned char *b = buf_new(n + 4);
    for (size_t i = 0; i < n + 4; ++i) b[i] = (unsigned char)rnd(r);
    tplace(r, T, b, 1 + (size_t)below(r, (uint64_t)T->elem - 1));
    return 1;
}
static unsigned char *eaddr(const tens_t *T, const int64_t *idx) {
    return (unsigned char *)first_addr(&T->t) + offset_of(&T->t, idx) * T->elem;
}
static void fill_float(rng_t *r, const tens_t *T, int elo, int ehi, int specials) {
    int ovf;
    if (count_of(T->t.ndim, T->t.shape, &ovf) == 0) return;
    int64_t idx[GATEDNORM_MAX_DIMS] = {0};
    do encode(eaddr(T, idx), T->dt, input_value(r, T->dt, elo, ehi, specials));
    while (next_index(T->t.ndim, T->t.shape, idx));
}
static double snap_at(const tens_t *T, const int64_t *idx) { return snap_value(eaddr(T, idx), T->dt); }

/* Token dims: nt dims of ext[], row-major from the innermost token stride tbase (which clears
 * the row), the block maybe reversed; unit dims may get any stride. */
static void tok_strides(rng_t *r, int nt, const int64_t *ext, int64_t tbase, int64_t *strides) {
    const int64_t sign = pct(r, 12) ? -1 : 1;
    int64_t s = tbase;
    int zero = 0;
    for (int i = 0; i < nt; ++i) zero |= ext[i] == 0;
    /* Empty: the merge rule taken literally (a dim outside a zero extent gets stride 0), or
     * torch's contiguous strides (extents of 0 counted as 1), which do not merge: accepted
     * either way, an empty tensor's strides being free (docs/c_abi.md). */
    const int torch = zero && pct(r, 30);
    for (int i = nt - 1; i >= 0; --i) {
        strides[i] = sign * s;
        s *= torch && !ext[i] ? 1 : ext[i];
    }
    for (int i = 0; i < nt; ++i)
        if (ext[i] == 1 && pct(r, 25)) strides[i] = PICK(r, kFreeStrides);
}
/* Breaks the merge of two neighbouring non-unit token dims of T (first nt dims); 0 if T has
 * fewer than two. */
static int break_merge(tens_t *T, int nt) {
    int a = -1;
    int ovf;
    if (count_of(T->t.ndim, T->t.shape, &ovf) == 0) return 0;
    for (int i = 0; i < nt; ++i) {
        if (T->t.shape[i] == 1) continue;
        if (a >= 0) {
            T->t.strides[a] *= 2;
            reach(T);
            return 1;
        }
        a = i;
    }
    return 0;
}
static int64_t pad(rng_t *r) { return pct(r, 65) ? 0 : between(r, 1, 9); }

/* Device mutations: every tensor of the call on one device this build cannot run on (the
 * call must refuse it naming x, empty or not: ops.md "every argument is still validated"),
 * or one tensor (T[j], j > 0; T[0] is x) on such a device while the others are on the host
 * (refused naming that tensor).  T[i] NULL: absent. */
static void mutate_devices(rng_t *r, tens_t *const *T, const int *names, int n) {
    const gatednorm_device d = bad_device(r);
    if (pct(r, 50)) {
        for (int i = 0; i < n; ++i)
            if (T[i] && T[i]->present) T[i]->t.device = d;
        nc_must(BIT(names[0]), "every tensor on a device this build cannot run on");
        return;
    }
    int c[NT_MAX], m = 0;
    for (int i = 1; i < n; ++i)
        if (T[i] && T[i]->present) c[m++] = i;
    if (!m) return;
    const int j = c[below(r, (uint64_t)m)];
    T[j]->t.device = d;
    nc_must(BIT(names[j]), "one tensor on another device");
}

/* ------------------------------------------------------------- FP8 numbers (§2) */
static double fp8_fmax(int fmt) { return fmt ? 240.0 : 448.0; }
/* RNE to fp8 with saturation to +-fmax (|v| clamped first), v not NaN. */
static double fp8_round(double v, int fmt, double fmax) {
    const double a = fabs(v) < fmax ? fabs(v) : fmax;
    return copysign(round_fmt(a, 4, fmt ? -7 : -6, 1e9), v);
}
static double fp8_dec(uint8_t c, int fmt) {
    if (fmt ? c == 0x80 : (c & 0x7f) == 0x7f) return NAN;
    const int e = (c >> 3) & 15, m = c & 7;
    const double mag = e == 0 ? ldexp(m, fmt ? -10 : -9) : ldexp(8 + m, e - (fmt ? 8 : 7) - 3);
    return c & 0x80 ? -mag : mag;
}
static int fp8_is_nan_code(uint8_t c, int fmt) { return fmt ? c == 0x80 : (c & 0x7f) == 0x7f; }
/* fp8 code c is no NaN and its value lies in [lo, hi] (fnuz has one zero, 0x00: 0x80 is NaN). */
static int fp8_code_ok(uint8_t c, int fmt, double lo, double hi) {
    if (fp8_is_nan_code(c, fmt)) return 0;
    const double v = fp8_dec(c, fmt);
    if (v < lo || v > hi) return 0;
    return 1;
}
static double pow2ceil(double s) { /* UE8M0's rule: at most 2^127 (ops.md §2) */
    int e;
    const double m = frexp(s, &e);
    const double c = m == 0.5 ? s : ldexp(1.0, e);
    return c < ldexp(1.0, 127) ? c : ldexp(1.0, 127);
}

typedef struct {
    int32_t fmt;        /* 0 E4M3FN, 1 E4M3FNUZ */
    float fmax_field;   /* as in the block (0: the format's) */
    double fmax;        /* what applies */
    float floor_;
    int32_t sfmt;
    int64_t G;
    int32_t qr;
} qopt_t;

enum { QF_FORMAT, QF_FMAX, QF_FLOOR, QF_SFMT, QF_GROUP, QF_QR, QF_RESV, QF_COUNT };
static const int kQfName[QF_COUNT] = {N_PQ_FORMAT, N_PQ_FMAX, N_PQ_FLOOR, N_PQ_SFMT, N_PQ_GROUP, N_PQ_QR, N_PQ_RESV};

/* Options of a valid quant block with group G; defaults: the block's defaults. */
static void quant_options(rng_t *r, qopt_t *o, int64_t G, int defaults) {
    memset(o, 0, sizeof *o);
    o->G = G;
    o->floor_ = 1e-10f;
    if (!defaults) {
        o->fmt = pct(r, 50);
        if (pct(r, 40)) {
            const float fn[] = {448.0f, 224.0f, 1.0f, 100.5f, 300.0f, 16.0f, 447.0f}, fz[] = {240.0f, 224.0f, 1.0f, 100.5f, 16.0f, 239.0f};
            o->fmax_field = o->fmt ? PICK(r, fz) : PICK(r, fn);
        }
        if (pct(r, 35)) {
            const float fl[] = {1e-30f, 1e-4f, 0.25f, 8.0f, 3.0f};
            o->floor_ = PICK(r, fl);
        }
        o->sfmt = (int32_t)below(r, 4);
        o->qr = pct(r, 30);
    }
    o->fmax = o->fmax_field != 0.0f ? (double)o->fmax_field : fp8_fmax(o->fmt);
}
/* Writes the block; field f (QF_*, or -1) gets a value the block must refuse. */
static void quant_block(rng_t *r, const qopt_t *o, int f, gatednorm_quant_fp8 *b) {
    memset(b, 0, sizeof *b);
    b->format = o->fmt;
    b->fp8_max = o->fmax_field;
    b->amax_floor = o->floor_;
    b->scale_format = o->sfmt;
    b->group_size = o->G;
    b->quantize_rounded = o->qr;
    switch (f) {
        case QF_FORMAT: { static const int32_t v[] = {2, -1, 7, INT32_MIN}; b->format = PICK(r, v); break; }
        case QF_FMAX: {
            const float v[] = {0.5f, -1.0f, NAN, INFINITY, 1e-3f, -0.0f}; /* -0: a negative bound, not "the format's" */
            b->fp8_max = pct(r, 30) ? (o->fmt ? 241.0f : 449.0f) : PICK(r, v);
            break;
        }
        case QF_FLOOR: { const float v[] = {0.0f, 1e-31f, NAN, INFINITY, -1e-10f, -INFINITY}; b->amax_floor = PICK(r, v); break; }
        case QF_SFMT: { static const int32_t v[] = {4, -1, 100}; b->scale_format = PICK(r, v); break; }
        case QF_GROUP: { const int64_t v[] = {0, -1, INT64_MIN, -o->G}; b->group_size = PICK(r, v); break; }
        case QF_QR: { static const int32_t v[] = {2, -1}; b->quantize_rounded = PICK(r, v); break; }
        case QF_RESV: b->reserved[below(r, 3)] = pct(r, 50) ? 1 : -7; break;
        default: break;
    }
}
static void quant_text(char *out, size_t cap, const gatednorm_quant_fp8 *b) {
    snprintf(out, cap, "quant {format %d fp8_max %g amax_floor %g scale_format %d group_size %lld quantize_rounded %d reserved %d %d %d}",
             b->format, (double)b->fp8_max, (double)b->amax_floor, b->scale_format, (long long)b->group_size, b->quantize_rounded,
             b->reserved[0], b->reserved[1], b->reserved[2]);
}

/* A params struct of `full` bytes whose fields are in `fields`, handed over in a buffer of
 * its own: struct_size the layout's (or larger with a zero tail), or (size_mut) a size the
 * call must refuse. */
static void *params_buffer_v1(rng_t *r, const void *fields, size_t full, int size_mut, size_t v1);
static void *params_buffer(rng_t *r, const void *fields, size_t full, int size_mut) { return params_buffer_v1(r, fields, full, size_mut, 0); }
/* The same for a struct whose older layout of v1 bytes is still read (0: none): a refused
 * size is never v1. */
static void *params_buffer_v1(rng_t *r, const void *fields, size_t full, int size_mut, size_t v1) {
    size_t size = full, len;
    int tail = 0;
    if (size_mut) {
        const size_t bad[] = {0, 4, 8, full - 8, full - 4, full - 1, 4097, 5000};
        if (pct(r, 60)) {
            size = PICK(r, bad);
            if (v1 && size == v1) size = full - 1;
        } else {
            size = full + (size_t)between(r, 1, 64), tail = 1;
        }
        nc_must(BIT(N_PARAMS), tail ? "params: struct_size past the layout with a non-zero byte there" : "params: struct_size no layout");
    } else if (pct(r, 12)) {
        size = full + (size_t)between(r, 1, 64);
    }
    len = size < 4 ? 4 : size;
    unsigned char *b = buf_new(len);
    memset(b, 0, len);
    memcpy(b, fields, size < full ? size : full);
    if (tail) b[full + below(r, size - full)] = (unsigned char)between(r, 1, 255);
    const uint32_t ss = (uint32_t)size;
    memcpy(b, &ss, 4);
    return b;
}

/* The scales tensor [tok..., cols] of a token layout (tok dims ext[0..nt)): row-major (group
 * fastest), column-major (tokens fastest; groups Tpad apart: T, T rounded up to 4, or more). */
static void scales_layout(rng_t *r, tens_t *S, int kind, int nt, const int64_t *ext, int64_t cols) {
    int64_t shape[GATEDNORM_MAX_DIMS], st[GATEDNORM_MAX_DIMS];
    int64_t T = 1;
    for (int i = 0; i < nt; ++i) shape[i] = ext[i], T *= ext[i];
    shape[nt] = cols;
    if (pct(r, 50)) { /* row-major */
        st[nt] = cols > 1 || pct(r, 50) ? 1 : PICK(r, kFreeStrides);
        tok_strides(r, nt, ext, cols + pad(r), st);
        nc_note("scales row-major");
    } else {
        tok_strides(r, nt, ext, 1, st);
        const int64_t Tp = pct(r, 40) ? T : pct(r, 60) ? (T + 3) / 4 * 4 : T + between(r, 1, 6);
        st[nt] = cols > 1 ? (Tp ? Tp : 1) : PICK(r, kFreeStrides);
        nc_note("scales column-major, groups %lld apart", (long long)st[nt]);
    }
    tset(S, kind, nt + 1, shape, st);
}
static int scale_kind(rng_t *r, int sfmt) {
    switch (sfmt) {
        case 0: case 1: return DT_F32;
        case 2: return pct(r, 50) ? K_U8 : K_E8;
        default: return pct(r, 50) ? K_I32 : K_U32;
    }
}
static int wrong_scale_kind(rng_t *r, int sfmt) {
    static const int k[] = {DT_F32, K_U8, K_E8, K_I32, K_U32, DT_BF16, DT_F16, K_I8, K_FN};
    int v;
    do v = PICK(r, k);
    while ((sfmt <= 1 && v == DT_F32) || (sfmt == 2 && (v == K_U8 || v == K_E8)) || (sfmt == 3 && (v == K_I32 || v == K_U32)));
    return v;
}
static int q_kind(rng_t *r, int fmt) { return pct(r, 30) ? K_U8 : fmt ? K_FNUZ : K_FN; }
static int wrong_q_kind(rng_t *r, int fmt) {
    static const int k[] = {K_FN, K_FNUZ, K_I8, DT_BF16, DT_F16, K_E8, K_I32};
    int v;
    do v = PICK(r, k);
    while (v == (fmt ? K_FNUZ : K_FN));
    return v;
}

/* Reads group k's scale of the token at tidx (nt token dims); marks its bytes as written. */
static double read_scale(const tens_t *S, const int64_t *tidx, int nt, int sfmt, int64_t k, int64_t K) {
    int64_t idx[GATEDNORM_MAX_DIMS];
    for (int i = 0; i < nt; ++i) idx[i] = tidx[i];
    idx[nt] = sfmt == 3 ? k / 4 : k;
    unsigned char *a = eaddr(S, idx);
    buf_allow(a, (size_t)S->elem);
    if (sfmt <= 1) {
        float f;
        memcpy(&f, a, 4);
        return f;
    }
    if (sfmt == 3) {
        if (k / 4 == (K - 1) / 4)
            for (int64_t b = (K - 1) % 4 + 1; b < 4; ++b)
                if (a[b]) die("packed E8M0 scales: byte %lld of the last word is 0x%02x, not 0", (long long)b, a[b]);
        a += k % 4;
    }
    return *a == 0xff ? NAN : ldexp(1.0, (int)*a - 127);
}

/* One token's groups: what the library's y may be, element by element ([ylo, yhi], or bad:
 * NaN / inf, so the group's scale and codes are NaN), against its q row and scales.  exact:
 * y is exactly known (ylo == yhi), so the codes are checked bit for bit. */
static struct {
    uint64_t groups, codes, nan_groups;
} g_qstats;
static void check_quant_token(const qopt_t *o, int64_t row, const double *ylo, const double *yhi, const unsigned char *bad, int exact,
                              const tens_t *Q, const tens_t *S, const int64_t *tidx, int nt) {
    const int64_t G = o->G, K = row / G;
    int64_t qidx[GATEDNORM_MAX_DIMS];
    for (int i = 0; i < nt; ++i) qidx[i] = tidx[i];
    for (int64_t k = 0; k < K; ++k) {
        int gbad = 0;
        double alo = 0, ahi = 0;
        for (int64_t i = k * G; i < (k + 1) * G; ++i) {
            if (bad[i]) { gbad = 1; continue; }
            const double l = ylo[i] <= 0 && yhi[i] >= 0 ? 0 : fmin(fabs(ylo[i]), fabs(yhi[i])), h = fmax(fabs(ylo[i]), fabs(yhi[i]));
            if (l > alo) alo = l;
            if (h > ahi) ahi = h;
        }
        const double s = read_scale(S, tidx, nt, o->sfmt, k, K);
        ++g_qstats.groups;
        if (gbad) {
            ++g_qstats.nan_groups;
            if (s == s) die("group %lld holds a NaN / inf, but its scale is %.9g, not NaN", (long long)k, s);
            for (int64_t i = k * G; i < (k + 1) * G; ++i) {
                qidx[nt] = i;
                unsigned char *qa = eaddr(Q, qidx);
                buf_allow(qa, 1);
                if (!fp8_is_nan_code(*qa, o->fmt)) die("group %lld holds a NaN / inf, but q[%lld] is 0x%02x, not NaN", (long long)k, (long long)i, *qa);
            }
            continue;
        }
        const double fl = (double)o->floor_;
        double slo = round_to((alo > fl ? alo : fl) / o->fmax, DT_F32), shi = round_to((ahi > fl ? ahi : fl) / o->fmax, DT_F32);
        if (o->sfmt != 0) slo = pow2ceil(slo), shi = pow2ceil(shi);
        if (!(s >= slo && s <= shi) || (o->sfmt != 0 && pow2ceil(s) != s))
            die("group %lld: scale %.9g (format %d), but amax in [%.9g, %.9g], floor %g, fp8_max %g give [%.9g, %.9g]", (long long)k, s, o->sfmt,
                alo, ahi, fl, o->fmax, slo, shi);
        const double inv = round_to(1.0 / s, DT_F32);
        for (int64_t i = k * G; i < (k + 1) * G; ++i) {
            qidx[nt] = i;
            unsigned char *qa = eaddr(Q, qidx);
            buf_allow(qa, 1);
            double lo, hi;
            if (exact) {
                lo = hi = fp8_round(round_to(ylo[i] * inv, DT_F32), o->fmt, o->fmax);
            } else {
                const double w = ldexp(1.0, -22);
                const double vl = ylo[i] / s, vh = yhi[i] / s;
                lo = fp8_round(vl - fabs(vl) * w, o->fmt, o->fmax);
                hi = fp8_round(vh + fabs(vh) * w, o->fmt, o->fmax);
            }
            ++g_qstats.codes;
            int ok = fp8_code_ok(*qa, o->fmt, lo, hi);
            if (ok && exact && o->fmt == 0 && lo == 0) ok = !!(*qa & 0x80) == !!signbit(round_to(ylo[i] * inv, DT_F32));
            if (!ok)
                die("q[%lld] = 0x%02x (%.9g, format %d), but y in [%.9g, %.9g] over scale %.9g gives codes in [%.9g, %.9g]", (long long)i, *qa,
                    fp8_dec(*qa, o->fmt), o->fmt, ylo[i], yhi[i], s, lo, hi);
        }
    }
}

/* [lo, hi] of the fp32 value of a y the double reference puts at yr (relative error 2^-17,
 * the fp32 evaluation of §1), then rounded to dt (DT_F32: not rounded again). */
static void y_interval(double yr, int dt, double *lo, double *hi) {
    const double rel = ldexp(1.0, -17);
    *lo = round_to(round_to(yr - fabs(yr) * rel, DT_F32), dt);
    *hi = round_to(round_to(yr + fabs(yr) * rel, DT_F32), dt);
}
static void check_y_value(const unsigned char *addr, int dt, double yr, const char *what, int64_t i) {
    const double got = decode(addr, dt);
    buf_allow(addr, (size_t)kDtSize[dt]);
    double lo = 0, hi = 0;
    int ok;
    if (yr != yr) ok = got != got;
    else if (isinf(yr)) ok = got == yr;
    else {
        y_interval(yr, dt, &lo, &hi);
        ok = got >= lo && got <= hi;
    }
    if (!ok) die("%s[%lld of the token row] = %.9g (%s), but the reference is %.9g (allowed [%.9g, %.9g])", what, (long long)i, got, kDtName[dt], yr, lo, hi);
}

/* The bounds of an element's y for the quantizer: bad when the reference is NaN / inf or
 * rounds to inf (the group's scale is then NaN); *ambiguous when it may or may not round to
 * inf (the token's quant outputs are then not checked). */
static void y_bounds(double y, int dt, double *lo, double *hi, unsigned char *bad, int *ambiguous) {
    *bad = !isfinite(y);
    if (*bad) return;
    y_interval(y, dt, lo, hi);
    if (isinf(*lo) && isinf(*hi)) *bad = 1;
    else if (isinf(*lo) || isinf(*hi)) *ambiguous = 1;
}
/* Marks a token's q and scales bytes as written, unchecked. */
static uint64_t g_quant_unchecked;
static void allow_quant_token(const qopt_t *o, int64_t row, const tens_t *Q, const tens_t *S, const int64_t *tidx, int nt) {
    int64_t idx[GATEDNORM_MAX_DIMS];
    const int64_t K = row / o->G;
    for (int i = 0; i < nt; ++i) idx[i] = tidx[i];
    for (int64_t i = 0; i < row; ++i) idx[nt] = i, buf_allow(eaddr(Q, idx), 1);
    for (int64_t k = 0; k < (o->sfmt == 3 ? (K + 3) / 4 : K); ++k) idx[nt] = k, buf_allow(eaddr(S, idx), (size_t)S->elem);
    ++g_quant_unchecked;
}

/* Token dims of a case: nt dims, at most ~max_tokens tokens, sometimes empty. */
static int draw_tokens(rng_t *r, int64_t *ext, int64_t row, int *empty) {
    static const int nts[] = {0, 1, 1, 1, 1, 2, 2, 2, 3, 3};
    const int nt = PICK(r, nts);
    for (int i = 0; i < nt; ++i) ext[i] = pct(r, 25) ? 1 : between(r, 2, 4);
    for (;;) {
        int64_t n = row;
        int big[GATEDNORM_MAX_DIMS], nb = 0;
        for (int i = 0; i < nt; ++i) {
            n *= ext[i];
            if (ext[i] > 1) big[nb++] = i;
        }
        if (n <= 6144 || !nb) break;
        ext[big[below(r, (uint64_t)nb)]] = 1;
    }
    *empty = 0;
    if (nt && pct(r, 4)) ext[below(r, (uint64_t)nt)] = 0, *empty = 1;
    return nt;
}
static int64_t draw_row(rng_t *r) {
    const int k = (int)below(r, 100);
    if (k < 30) return between(r, 1, 16);
    if (k < 80) return between(r, 17, 128);
    return between(r, 129, 512);
}
/* A divisor of n, at random. */
static int64_t divisor_of(rng_t *r, int64_t n) {
    for (int tries = 0; tries < 8; ++tries) {
        const int64_t d = between(r, 1, n);
        if (n % d == 0) return d;
    }
    static const int64_t p2[] = {1, 2, 4, 8, 16, 32, 64, 128};
    int64_t best = 1;
    for (size_t i = 0; i < sizeof p2 / sizeof p2[0]; ++i)
        if (n % p2[i] == 0 && pct(r, 70)) best = p2[i];
    return best;
}
/* Walks a token multi-index (nt dims of ext); 0 when done. */
static int next_token(int nt, const int64_t *ext, int64_t *tidx) { return nt ? next_index(nt, ext, tidx) : 0; }

static const nameset_t kQuantNames = BIT(N_PQ_FORMAT) | BIT(N_PQ_FMAX) | BIT(N_PQ_FLOOR) | BIT(N_PQ_SFMT) | BIT(N_PQ_GROUP) | BIT(N_PQ_QR) | BIT(N_PQ_RESV);

/* ================================================ gatednorm_rmsnorm_gated_fp8 (ops.md §2) */
enum { A8_SIZE, A8_FIELD, A8_QFIELD, A8_QDT, A8_SDT, A8_GROUP, A8_QSHAPE, A8_SSHAPE, A8_QSTRIDE, A8_OVERLAP, A8_YALIAS, A8_NULL, A8_MERGE,
       A8_WEIGHT, A8_DEVICE, A8_MISALIGN, A8_COUNT };
static struct {
    uint64_t accepted_empty, inplace_free, hd, ycopy;
} g_f8stats;

static int fuzz_rmsnorm_gated_fp8(rng_t *r) {
    static tens_t X, Z, W, Q, S, Y;
    nc_begin();
    nc_tensor("x", &X), nc_tensor("z", &Z), nc_tensor("weight", &W), nc_tensor("q", &Q), nc_tensor("scales", &S), nc_tensor("y_copy", &Y);
    const int mut = pct(r, 60) ? -1 : (int)below(r, A8_COUNT);
    const int defaults = mut < 0 && pct(r, 6);

    /* ---- shape: tokens, H heads of D */
    int64_t D, H;
    int hd;
    if (defaults) { /* every option at its default: G = 128, no head_dim */
        static const int64_t dh[][2] = {{128, 1}, {128, 2}, {256, 1}, {64, 2}, {64, 4}, {32, 4}, {128, 3}};
        const int j = (int)below(r, 7);
        D = dh[j][0], H = dh[j][1], hd = 0;
    } else {
        D = draw_row(r);
        H = pct(r, 40) ? 1 : between(r, 2, 4);
        hd = H > 1 && pct(r, 45); /* (with H = 1 head_dim views nothing: x's dims say where the heads are) */
    }
    int64_t ext[GATEDNORM_MAX_DIMS];
    int empty;
    int nt = draw_tokens(r, ext, H * D, &empty);
    /* without head_dim the heads are a dim of x: [tok..., H, D], or [tok..., D] for one head
     * with at most one token dim ([N, D] is N tokens) */
    int hdim = hd ? 0 : H > 1 || nt >= 2 || (nt == 1 && pct(r, 30));
    if (!hd && H > 1 && nt == 0) nt = 1, ext[0] = between(r, 1, 3);
    const int64_t R = H * D;
    const int xnd = nt + (hdim ? 2 : 1);
    if (hd) g_f8stats.hd++;

    /* ---- options */
    qopt_t o;
    int64_t G;
    if (defaults) G = 128;
    else if (pct(r, 50) || H == 1) G = divisor_of(r, D);
    else G = D * divisor_of(r, H);
    if (mut == A8_GROUP) {
        G = R + between(r, 1, 5);
        nc_must(BIT(N_PQ_GROUP), "group_size does not divide the row");
    }
    quant_options(r, &o, G, defaults);
    gatednorm_rmsnorm_gated_fp8_params P;
    memset(&P, 0, sizeof P);
    P.struct_size = sizeof P;
    P.norm_before_gate = defaults || pct(r, 70) ? 1 : 0;
    P.activation = defaults || pct(r, 70) ? 0 : 1;
    {
        static const float eps_pool[] = {1e-6f, 1e-5f, 0.0f, 1e-12f, 1.0f, 0.5f};
        static const float woff_pool[] = {0.0f, 0.0f, 1.0f, -1.0f, 0.5f, 1048576.0f};
        P.eps = defaults || pct(r, 50) ? 1e-6f : PICK(r, eps_pool);
        P.weight_offset = defaults || pct(r, 60) ? 0.0f : PICK(r, woff_pool);
        P.pdl = !defaults && pct(r, 10);
    }
    P.head_dim = hd ? D : 0;
    const int qf = mut == A8_QFIELD ? (int)below(r, QF_COUNT) : -1;
    quant_block(r, &o, qf, &P.quant);
    if (qf >= 0) nc_must(BIT(kQfName[qf]), "a quant field out of range");
    if (mut == A8_FIELD) {
        switch (below(r, 6)) {
            case 0: P.norm_before_gate = pct(r, 50) ? 2 : -1; nc_must(BIT(N_P_NBG), "norm_before_gate"); break;
            case 1: P.activation = pct(r, 50) ? 2 : -1; nc_must(BIT(N_P_ACT), "activation"); break;
            case 2: { const float v[] = {-1e-6f, NAN, INFINITY}; P.eps = PICK(r, v); nc_must(BIT(N_P_EPS), "eps"); break; }
            case 3: { const float v[] = {NAN, INFINITY, -INFINITY}; P.weight_offset = PICK(r, v); nc_must(BIT(N_P_WOFF), "weight_offset"); break; }
            case 4: P.pdl = 2; nc_must(BIT(N_P_PDL), "pdl"); break;
            default: P.head_dim = pct(r, 50) ? -1 : INT64_MIN; nc_must(BIT(N_P_HEADDIM), "head_dim < 0"); break;
        }
    }
    const void *params = defaults && pct(r, 50) ? NULL : params_buffer(r, &P, sizeof P, mut == A8_SIZE);
    {
        char qt[256];
        quant_text(qt, sizeof qt, &P.quant);
        snprintf(NC.params, sizeof NC.params, "%s: norm_before_gate %d activation %d eps %g weight_offset %g pdl %d head_dim %lld %s",
                 params ? "given" : "NULL", P.norm_before_gate, P.activation, (double)P.eps, (double)P.weight_offset, P.pdl, (long long)P.head_dim, qt);
    }

    /* ---- layouts */
    const int zp = pct(r, 70), yp = pct(r, 35);
    tens_t *const rowt[3] = {&X, &Z, &Y};
    const int present[3] = {1, zp, yp};
    for (int k = 0; k < 3; ++k) {
        if (!present[k]) continue;
        int64_t shape[GATEDNORM_MAX_DIMS], st[GATEDNORM_MAX_DIMS];
        for (int i = 0; i < nt; ++i) shape[i] = ext[i];
        int64_t span;
        if (hd) {
            shape[nt] = R, st[nt] = 1, span = R;
        } else if (hdim) {
            shape[nt] = H, shape[nt + 1] = D, st[nt + 1] = 1;
            st[nt] = H > 1 ? D + pad(r) : pct(r, 30) ? PICK(r, kFreeStrides) : D;
            span = H > 1 ? (H - 1) * st[nt] + D : D;
        } else {
            shape[nt] = D, st[nt] = 1, span = D;
        }
        tok_strides(r, nt, ext, span + pad(r), st);
        tset(rowt[k], (int)below(r, DT_COUNT), xnd, shape, st);
    }
    {
        const int64_t ws[1] = {D + (mut == A8_WEIGHT ? 1 : 0)}, wst[1] = {1};
        tset(&W, (int)below(r, DT_COUNT), 1, ws, wst);
        if (mut == A8_WEIGHT) nc_must(BIT(N_WEIGHT), "weight [D + 1]");
    }
    const int64_t K = R % G == 0 ? R / G : 1, cols = o.sfmt == 3 ? (K + 3) / 4 : K;
    {
        int64_t shape[GATEDNORM_MAX_DIMS], st[GATEDNORM_MAX_DIMS];
        for (int i = 0; i < nt; ++i) shape[i] = ext[i];
        shape[nt] = R + (mut == A8_QSHAPE ? 1 : 0);
        st[nt] = mut == A8_QSTRIDE && R > 1 ? 2 : 1;
        tok_strides(r, nt, ext, (shape[nt] - 1) * st[nt] + 1 + pad(r), st);
        int qk = q_kind(r, o.fmt);
        if (mut == A8_QDT) qk = wrong_q_kind(r, o.fmt), nc_must(BIT(N_Q), "q's dtype does not match the format");
        if (mut == A8_QSHAPE) nc_must(BIT(N_Q), "q's row is one too long");
        if (mut == A8_QSTRIDE && R > 1 && !empty) nc_must(BIT(N_Q), "q's row not contiguous");
        tset(&Q, qk, nt + 1, shape, st);
    }
    scales_layout(r, &S, mut == A8_SDT ? wrong_scale_kind(r, o.sfmt) : scale_kind(r, o.sfmt), nt, ext, cols + (mut == A8_SSHAPE ? 1 : 0));
    if (mut == A8_SDT) nc_must(BIT(N_SCALES), "scales' dtype does not suit the scale format");
    if (mut == A8_SSHAPE) nc_must(BIT(N_SCALES), "scales one column too many");
    if (mut == A8_MERGE) {
        tens_t *c[5] = {&X, &Q, &S, zp ? &Z : &X, yp ? &Y : &Q};
        const char *cn[5] = {"x", "q", "scales", zp ? "z" : "x", yp ? "y_copy" : "q"};
        const int j = (int)below(r, 5);
        static const int cname[5] = {N_X, N_Q, N_SCALES, N_Z, N_YCOPY};
        int bn = cname[j];
        if (j == 3 && !zp) bn = N_X;
        if (j == 4 && !yp) bn = N_Q;
        if (break_merge(c[j], nt)) nc_must(BIT(bn), cn[j]);
    }
    if (mut == A8_YALIAS && yp && !empty) { /* y_copy exactly x (or z): an output on an input */
        const int onz = zp && pct(r, 40);
        Y = onz ? Z : X;
        nc_must(BIT(N_YCOPY), onz ? "y_copy is z" : "y_copy is x");
    }

    /* ---- memory */
    int ov_a = -1, ov_b = -1; /* indices into rowt-like list: 0 x 1 z 2 w 3 q 4 s 5 y */
    tens_t *const all[6] = {&X, &Z, &W, &Q, &S, &Y};
    const int pres[6] = {1, zp, 1, 1, 1, yp};
    if (mut == A8_OVERLAP && !empty) {
        static const int outs[3] = {3, 4, 5};
        ov_a = outs[below(r, yp ? 3 : 2)];
        do ov_b = (int)below(r, 6);
        while (ov_b == ov_a || !pres[ov_b]);
        if (tspan(all[ov_a]) && tspan(all[ov_b])) {
            static const int nm[6] = {N_X, N_Z, N_WEIGHT, N_Q, N_SCALES, N_YCOPY};
            if (talloc_overlap(r, all[ov_a], all[ov_b])) nc_must(BIT(nm[ov_a]) | (ov_b >= 3 ? BIT(nm[ov_b]) : 0), "an output overlaps another tensor");
            else nc_open(0, "the overlap came out the same view");
        } else {
            ov_a = ov_b = -1;
        }
    }
    for (int k = 0; k < 6; ++k) {
        if (!pres[k] || k == ov_a || k == ov_b) continue;
        if (k == 5 && mut == A8_YALIAS && !empty) continue;
        talloc(r, all[k]);
    }
    if (mut == A8_MISALIGN) {
        static const int nm[6] = {N_X, N_Z, N_WEIGHT, N_Q, N_SCALES, N_YCOPY};
        const int j = (int)below(r, 6);
        if (pres[j] && misalign(r, all[j])) nc_must(BIT(nm[j]), "data not aligned to the element size");
    }
    const int specials = pct(r, 15);
    fill_float(r, &X, -6, 6, specials);
    if (zp) fill_float(r, &Z, -6, 4, 0);
    fill_float(r, &W, -3, 3, 0);


    const tens_t *nul = NULL;
    if (mut == A8_NULL) {
        tens_t *const c[4] = {&X, &W, &Q, &S};
        static const int cn[4] = {N_X, N_WEIGHT, N_Q, N_SCALES};
        const int j = (int)below(r, 4);
        nul = c[j];
        nc_must(BIT(cn[j]), "a required descriptor NULL");
    }
#define D8(T) ((T).present && &(T) != nul ? &(T).t : NULL)
    if (!zp) Z.present = 0;
    if (!yp) Y.present = 0;
    if (mut == A8_DEVICE) {
        tens_t *const dt[6] = {&X, &Z, &W, &Q, &S, &Y};
        static const int dn[6] = {N_X, N_Z, N_WEIGHT, N_Q, N_SCALES, N_YCOPY};
        mutate_devices(r, dt, dn, 6);
    }
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_rmsnorm_gated_fp8(D8(X), D8(Z), D8(W), D8(Q), D8(S), D8(Y), (const gatednorm_rmsnorm_gated_fp8_params *)params,
                                                           pct(r, 30) ? garbage_stream(r) : NULL);
#undef D8
    const nameset_t allowed = BIT(N_X) | BIT(N_Z) | BIT(N_WEIGHT) | BIT(N_Q) | BIT(N_SCALES) | BIT(N_YCOPY) | BIT(N_PARAMS) | BIT(N_P_NBG) |
                              BIT(N_P_ACT) | BIT(N_P_EPS) | BIT(N_P_WOFF) | BIT(N_P_PDL) | BIT(N_P_HEADDIM) | kQuantNames;
    if (!nc_outcome(st, allowed, "gatednorm_rmsnorm_gated_fp8")) return 0;

    /* ---- the reference */
    if (empty) {
        g_f8stats.accepted_empty++;
        bufs_check("empty rmsnorm_gated_fp8");
        return 1;
    }
    if (yp) g_f8stats.ycopy++;
    static double u[8192], g[8192], ylo[8192], yhi[8192];
    static unsigned char bad[8192];
    const int rdt = yp ? Y.dt : X.dt;
    int64_t tidx[GATEDNORM_MAX_DIMS] = {0}, idx[GATEDNORM_MAX_DIMS];
    do {
        for (int i = 0; i < nt; ++i) idx[i] = tidx[i];
        int ambiguous = 0;
        for (int64_t h = 0; h < H; ++h) {
            double ss = 0;
            for (int64_t c = 0; c < D; ++c) {
                if (hd) idx[nt] = h * D + c;
                else if (hdim) idx[nt] = h, idx[nt + 1] = c;
                else idx[nt] = c;
                const double xv = snap_at(&X, idx);
                g[c] = zp ? act_ref(snap_at(&Z, idx), P.activation) : 1.0;
                u[c] = zp && !P.norm_before_gate ? xv * g[c] : xv;
                ss += u[c] * u[c];
            }
            const double rstd = 1.0 / sqrt(ss / (double)D + (double)P.eps);
            for (int64_t c = 0; c < D; ++c) {
                if (hd) idx[nt] = h * D + c;
                else if (hdim) idx[nt] = h, idx[nt + 1] = c;
                else idx[nt] = c;
                const int64_t wi[1] = {c};
                double y = u[c] * rstd * (snap_at(&W, wi) + (double)P.weight_offset);
                if (zp && P.norm_before_gate) y *= g[c];
                if (yp) check_y_value(eaddr(&Y, idx), Y.dt, y, "y_copy", h * D + c);
                const int64_t e = h * D + c;
                y_bounds(y, o.qr ? rdt : DT_F32, &ylo[e], &yhi[e], &bad[e], &ambiguous);
            }
        }
        if (!ambiguous) check_quant_token(&o, R, ylo, yhi, bad, 0, &Q, &S, tidx, nt);
        else allow_quant_token(&o, R, &Q, &S, tidx, nt);
    } while (next_token(nt, ext, tidx));
    bufs_check("rmsnorm_gated_fp8");
    return 1;
}

/* ================================= gatednorm_add_rmsnorm / gatednorm_group_quant_fp8 (§3) */
/* Tensors [tok..., hidden] with their own layouts (last dim contiguous). */
static void hidden_layout(rng_t *r, tens_t *T, int kind, int nt, const int64_t *ext, int64_t Hd) {
    int64_t shape[GATEDNORM_MAX_DIMS], st[GATEDNORM_MAX_DIMS];
    for (int i = 0; i < nt; ++i) shape[i] = ext[i];
    shape[nt] = Hd;
    st[nt] = Hd > 1 || pct(r, 60) ? 1 : PICK(r, kFreeStrides);
    tok_strides(r, nt, ext, Hd + pad(r), st);
    tset(T, kind, nt + 1, shape, st);
}

enum { AR_SIZE, AR_FIELD, AR_QFIELD, AR_QDT, AR_SDT, AR_GROUP, AR_NOOUT, AR_QNOS, AR_RO_NORES, AR_RO_DT, AR_Y_ON_RES, AR_RO_ON_X,
       AR_OVERLAP, AR_NULL, AR_MERGE, AR_WEIGHT, AR_SSHAPE, AR_DEVICE, AR_MISALIGN, AR_COUNT };
static struct {
    uint64_t inplace_res, ro_same, ro_sep, y_on_x, with_q, y_only;
} g_arstats;

static int fuzz_add_rmsnorm(rng_t *r) {
    static tens_t X, RS, W, RO, Y, Q, S;
    nc_begin();
    nc_tensor("x", &X), nc_tensor("residual", &RS), nc_tensor("weight", &W), nc_tensor("residual_out", &RO), nc_tensor("y", &Y);
    nc_tensor("q", &Q), nc_tensor("scales", &S);
    const int mut = pct(r, 60) ? -1 : (int)below(r, AR_COUNT);
    const int defaults = mut < 0 && pct(r, 6);
    int64_t Hd = defaults ? 128 * between(r, 1, 3) : draw_row(r);
    int64_t ext[GATEDNORM_MAX_DIMS];
    int empty;
    const int nt = draw_tokens(r, ext, Hd, &empty);

    /* which tensors: residual (updated in place, into itself as residual_out, or into a
     * residual_out of its own), y (its own, or x itself), q + scales */
    int has_res = pct(r, 70), ro_mode = has_res ? (int)below(r, 3) : 0; /* 0 in place, 1 residual_out = residual, 2 separate */
    int y_mode = pct(r, 25) ? 0 : pct(r, 75) ? 1 : 2;                    /* 0 none, 1 own, 2 = x */
    int has_q = y_mode == 0 || pct(r, 50);
    if (defaults) has_q = 1;
    if (mut == AR_NOOUT) y_mode = 0, has_q = 0, nc_must(BIT(N_Y), "no output");
    if (mut == AR_RO_NORES) has_res = 0, ro_mode = 2, nc_must(BIT(N_RES_OUT), "residual_out without a residual");
    if ((mut == AR_RO_DT || mut == AR_RO_ON_X) && has_res) ro_mode = 2;
    if (mut == AR_Y_ON_RES && has_res && y_mode == 0) y_mode = 1;
    if (mut == AR_Y_ON_RES && has_res && ro_mode == 1) ro_mode = 0;

    qopt_t o;
    int64_t G = defaults ? 128 : divisor_of(r, Hd);
    if (mut == AR_GROUP && has_q) {
        G = pct(r, 50) ? Hd + between(r, 1, 4) : Hd > 2 ? between(r, 2, Hd - 1) : Hd + 1;
        if (Hd % G) nc_must(BIT(N_PQ_GROUP), "group_size does not divide hidden");
    }
    quant_options(r, &o, G, defaults);
    gatednorm_add_rmsnorm_params P;
    memset(&P, 0, sizeof P);
    P.struct_size = sizeof P;
    {
        static const float eps_pool[] = {1e-6f, 1e-5f, 0.0f, 1e-12f, 1.0f};
        static const float woff_pool[] = {0.0f, 1.0f, -1.0f, 0.5f, 1048576.0f};
        P.eps = defaults || pct(r, 50) ? 1e-6f : PICK(r, eps_pool);
        P.weight_offset = defaults || pct(r, 60) ? 0.0f : PICK(r, woff_pool);
        P.pdl = !defaults && pct(r, 10);
    }
    const int qf = mut == AR_QFIELD ? (int)below(r, QF_COUNT) : -1;
    quant_block(r, &o, qf, &P.quant);
    if (qf >= 0) {
        if (has_q) nc_must(BIT(kQfName[qf]), "a quant field out of range");
        else nc_open(BIT(kQfName[qf]), "a quant field out of range, no q");
    }
    if (mut == AR_FIELD) {
        switch (below(r, 4)) {
            case 0: { const float v[] = {-1e-6f, NAN, INFINITY}; P.eps = PICK(r, v); nc_must(BIT(N_P_EPS), "eps"); break; }
            case 1: { const float v[] = {NAN, INFINITY, -INFINITY}; P.weight_offset = PICK(r, v); nc_must(BIT(N_P_WOFF), "weight_offset"); break; }
            case 2: P.pdl = pct(r, 50) ? 2 : -1; nc_must(BIT(N_P_PDL), "pdl"); break;
            default: P.reserved[below(r, 4)] = 1; nc_must(BIT(N_P_RESV), "reserved"); break;
        }
    }
    const void *params = defaults && pct(r, 50) ? NULL : params_buffer(r, &P, sizeof P, mut == AR_SIZE);
    /* quantize_rounded with no FP8 output to quantize: refused (ops.md §3; the C entry as Python since 0.6.11) */
    if (params && !has_q && P.quant.quantize_rounded == 1) nc_must(BIT(kQfName[QF_QR]), "quantize_rounded without q");
    {
        char qt[256];
        quant_text(qt, sizeof qt, &P.quant);
        snprintf(NC.params, sizeof NC.params, "%s: eps %g weight_offset %g pdl %d reserved %d %d %d %d %s", params ? "given" : "NULL", (double)P.eps,
                 (double)P.weight_offset, P.pdl, P.reserved[0], P.reserved[1], P.reserved[2], P.reserved[3], qt);
    }

    /* ---- layouts */
    hidden_layout(r, &X, (int)below(r, DT_COUNT), nt, ext, Hd);
    if (has_res) hidden_layout(r, &RS, (int)below(r, DT_COUNT), nt, ext, Hd);
    const int ro_given = (has_res && ro_mode >= 1) || mut == AR_RO_NORES;
    if (ro_given) {
        if (has_res && ro_mode == 1) RO = RS;
        else {
            int kind = has_res ? RS.dt : (int)below(r, DT_COUNT);
            if (mut == AR_RO_DT && has_res) {
                kind = (kind + 1 + (int)below(r, 2)) % DT_COUNT;
                nc_must(BIT(N_RES_OUT), "residual_out's dtype is not residual's");
            }
            hidden_layout(r, &RO, kind, nt, ext, Hd);
        }
    }
    if (mut == AR_RO_ON_X && has_res && !empty) {
        RO = X;
        nc_must(BIT(N_RES_OUT), "residual_out is x");
    }
    if (y_mode == 1) hidden_layout(r, &Y, (int)below(r, DT_COUNT), nt, ext, Hd);
    if (y_mode == 2) Y = X;
    if (mut == AR_Y_ON_RES && has_res && !empty) {
        Y = RS;
        y_mode = 3;
        nc_must(BIT(N_Y) | BIT(N_RES), "y is the residual");
    }
    {
        const int64_t ws[1] = {Hd + (mut == AR_WEIGHT ? 1 : 0)}, wst[1] = {1};
        tset(&W, (int)below(r, DT_COUNT), 1, ws, wst);
        if (mut == AR_WEIGHT) nc_must(BIT(N_WEIGHT), "weight [hidden + 1]");
    }
    const int64_t K = Hd % G == 0 ? Hd / G : 1, cols = o.sfmt == 3 ? (K + 3) / 4 : K;
    int q_given = has_q, s_given = has_q;
    if (mut == AR_QNOS) {
        if (pct(r, 50)) q_given = 1, s_given = 0;
        else q_given = 0, s_given = 1;
        nc_must(BIT(N_Q) | BIT(N_SCALES), "q without scales or scales without q");
    }
    if (q_given) {
        int qk = q_kind(r, o.fmt);
        if (mut == AR_QDT && has_q) qk = wrong_q_kind(r, o.fmt), nc_must(BIT(N_Q), "q's dtype does not match the format");
        hidden_layout(r, &Q, qk, nt, ext, Hd);
    }
    if (s_given) {
        int sk = scale_kind(r, o.sfmt);
        if (mut == AR_SDT && has_q) sk = wrong_scale_kind(r, o.sfmt), nc_must(BIT(N_SCALES), "scales' dtype does not suit the scale format");
        scales_layout(r, &S, sk, nt, ext, cols + (mut == AR_SSHAPE && has_q ? 1 : 0));
        if (mut == AR_SSHAPE && has_q) nc_must(BIT(N_SCALES), "scales one column too many");
    }
    if (mut == AR_MERGE) {
        tens_t *const c[5] = {&X, &RS, &Y, &Q, &S};
        static const int cn[5] = {N_X, N_RES, N_Y, N_Q, N_SCALES};
        const int j = (int)below(r, 5);
        const int ok = j == 0 || (j == 1 && has_res && !(ro_mode == 1) && y_mode != 3) || (j == 2 && y_mode == 1) || (j >= 3 && has_q);
        if (ok && break_merge(c[j], nt)) nc_must(BIT(cn[j]), "token dims do not merge");
    }

    /* ---- memory: x, residual, weight, residual_out, y, q, scales */
    tens_t *const all[7] = {&X, &RS, &W, &RO, &Y, &Q, &S};
    const int ro_on_x = mut == AR_RO_ON_X && has_res && !empty;
    int own[7] = {1, has_res, 1, ro_given && !(has_res && ro_mode == 1) && !ro_on_x, y_mode == 1, q_given, s_given};
    int ov_a = -1, ov_b = -1;
    if (mut == AR_OVERLAP && !empty) {
        int outs[5], no = 0;
        for (int k = 3; k < 7; ++k)
            if (own[k] && (k != 5 || has_q) && (k != 6 || has_q)) outs[no++] = k;
        if (has_res && ro_mode == 0 && own[1]) outs[no++] = 1; /* the residual, updated in place */
        if (no) {
            ov_a = outs[below(r, (uint64_t)no)];
            int cand[7], nc = 0;
            for (int k = 0; k < 7; ++k)
                if (own[k] && k != ov_a) cand[nc++] = k;
            ov_b = cand[below(r, (uint64_t)nc)];
            if (tspan(all[ov_a]) && tspan(all[ov_b])) {
                static const int nm[7] = {N_X, N_RES, N_WEIGHT, N_RES_OUT, N_Y, N_Q, N_SCALES};
                const int b_out = ov_b >= 3 || (ov_b == 1 && ro_mode == 0);
                /* an output that is the same view as ov_b (residual_out = residual, y = x) meets it too */
                const nameset_t alias = (ov_b == 1 && ro_mode == 1 ? BIT(N_RES_OUT) : 0) | (ov_b == 0 && y_mode == 2 ? BIT(N_Y) : 0);
                if (talloc_overlap(r, all[ov_a], all[ov_b])) nc_must(BIT(nm[ov_a]) | (b_out ? BIT(nm[ov_b]) : 0) | alias, "an output overlaps another tensor");
                else nc_open(0, "the overlap came out the same view");
            } else {
                ov_a = ov_b = -1;
            }
        }
    }
    for (int k = 0; k < 7; ++k)
        if (own[k] && k != ov_a && k != ov_b) talloc(r, all[k]);
    if (mut == AR_MISALIGN) { /* one tensor's data not aligned to its element size (with its aliases) */
        static const int nm[7] = {N_X, N_RES, N_WEIGHT, N_RES_OUT, N_Y, N_Q, N_SCALES};
        const int j = (int)below(r, 7);
        if (own[j] && misalign(r, all[j])) {
            nameset_t b = BIT(nm[j]);
            if (j == 0) b |= (y_mode == 2 ? BIT(N_Y) : 0) | (ro_on_x ? BIT(N_RES_OUT) : 0);
            if (j == 1) b |= (ro_mode == 1 ? BIT(N_RES_OUT) : 0) | (y_mode == 3 ? BIT(N_Y) : 0);
            nc_must(b, "data not aligned to the element size");
        }
    }
    if (has_res && ro_mode == 1) RO = RS;
    if (ro_on_x) RO = X;
    if (y_mode == 2) Y = X;
    if (y_mode == 3) Y = RS;
    const int specials = pct(r, 15);
    fill_float(r, &X, -6, 6, specials);
    if (has_res) fill_float(r, &RS, -6, 6, specials && pct(r, 50));
    fill_float(r, &W, -3, 3, 0);

    const tens_t *nul = NULL;
    if (mut == AR_NULL) {
        nul = pct(r, 50) ? &X : &W;
        nc_must(nul == &X ? BIT(N_X) : BIT(N_WEIGHT), "a required descriptor NULL");
    }
    const gatednorm_tensor *dx = nul == &X ? NULL : &X.t, *dw = nul == &W ? NULL : &W.t;
    const gatednorm_tensor *dres = has_res ? &RS.t : NULL, *dro = ro_given ? &RO.t : NULL, *dy = y_mode ? &Y.t : NULL;
    const gatednorm_tensor *dq = q_given ? &Q.t : NULL, *ds = s_given ? &S.t : NULL;
    if (!has_res) RS.present = 0;
    if (!ro_given) RO.present = 0;
    if (!y_mode) Y.present = 0;
    if (!q_given) Q.present = 0;
    if (!s_given) S.present = 0;
    if (mut == AR_DEVICE) {
        tens_t *const dt[7] = {&X, &RS, &W, &RO, &Y, &Q, &S};
        static const int dn[7] = {N_X, N_RES, N_WEIGHT, N_RES_OUT, N_Y, N_Q, N_SCALES};
        mutate_devices(r, dt, dn, 7);
    }
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_add_rmsnorm(dx, dres, dw, dro, dy, dq, ds, (const gatednorm_add_rmsnorm_params *)params, NULL);
    const nameset_t allowed = BIT(N_X) | BIT(N_RES) | BIT(N_WEIGHT) | BIT(N_RES_OUT) | BIT(N_Y) | BIT(N_Q) | BIT(N_SCALES) | BIT(N_PARAMS) |
                              BIT(N_P_EPS) | BIT(N_P_WOFF) | BIT(N_P_PDL) | BIT(N_P_RESV) | kQuantNames;
    if (!nc_outcome(st, allowed, "gatednorm_add_rmsnorm")) return 0;
    if (empty) {
        bufs_check("empty add_rmsnorm");
        return 1;
    }
    if (has_res) ++*(ro_mode == 0 ? &g_arstats.inplace_res : ro_mode == 1 ? &g_arstats.ro_same : &g_arstats.ro_sep);
    if (y_mode == 2) ++g_arstats.y_on_x;
    if (has_q) ++g_arstats.with_q;
    else ++g_arstats.y_only;

    /* ---- the reference */
    static double rv[8192], ylo[8192], yhi[8192];
    static unsigned char bad[8192];
    const tens_t *RW = has_res ? (ro_mode == 0 ? &RS : &RO) : NULL; /* where the sum goes */
    const int rdt = y_mode ? Y.dt : X.dt;
    int64_t tidx[GATEDNORM_MAX_DIMS] = {0}, idx[GATEDNORM_MAX_DIMS];
    do {
        for (int i = 0; i < nt; ++i) idx[i] = tidx[i];
        double ss = 0;
        int ambiguous = 0;
        for (int64_t c = 0; c < Hd; ++c) {
            idx[nt] = c;
            double v = snap_at(&X, idx);
            if (has_res) {
                v = round_to(round_to(v + snap_at(&RS, idx), DT_F32), RS.dt);
                unsigned char *a = eaddr(RW, idx);
                const double got = decode(a, RW->dt);
                buf_allow(a, (size_t)RW->elem);
                if (!(got == v || (got != got && v != v)))
                    die("%s[%lld of the token row] = %.9g, but x + residual rounded to %s is %.9g", ro_mode == 0 ? "residual" : "residual_out",
                        (long long)c, got, kDtName[RS.dt], v);
            }
            rv[c] = v;
            ss += v * v;
        }
        const double rstd = 1.0 / sqrt(ss / (double)Hd + (double)P.eps);
        for (int64_t c = 0; c < Hd; ++c) {
            idx[nt] = c;
            const int64_t wi[1] = {c};
            const double y = rv[c] * rstd * (snap_at(&W, wi) + (double)P.weight_offset);
            if (y_mode) check_y_value(eaddr(&Y, idx), Y.dt, y, "y", c);
            if (has_q) y_bounds(y, o.qr ? rdt : DT_F32, &ylo[c], &yhi[c], &bad[c], &ambiguous);
        }
        if (has_q) {
            if (!ambiguous) check_quant_token(&o, Hd, ylo, yhi, bad, 0, &Q, &S, tidx, nt);
            else allow_quant_token(&o, Hd, &Q, &S, tidx, nt);
        }
    } while (next_token(nt, ext, tidx));
    bufs_check("add_rmsnorm");
    return 1;
}

enum { GQ_SIZE, GQ_FIELD, GQ_QFIELD, GQ_QDT, GQ_SDT, GQ_GROUP, GQ_NULL, GQ_MERGE, GQ_OVERLAP, GQ_QSHAPE, GQ_SSHAPE, GQ_DEVICE, GQ_MISALIGN,
       GQ_COUNT };
static int fuzz_group_quant(rng_t *r) {
    static tens_t X, Q, S;
    nc_begin();
    nc_tensor("x", &X), nc_tensor("q", &Q), nc_tensor("scales", &S);
    const int mut = pct(r, 60) ? -1 : (int)below(r, GQ_COUNT);
    const int defaults = mut < 0 && pct(r, 6);
    const int64_t Hd = defaults ? 128 * between(r, 1, 3) : draw_row(r);
    int64_t ext[GATEDNORM_MAX_DIMS];
    int empty;
    const int nt = draw_tokens(r, ext, Hd, &empty);
    qopt_t o;
    int64_t G = defaults ? 128 : divisor_of(r, Hd);
    if (mut == GQ_GROUP) {
        G = pct(r, 50) ? Hd + between(r, 1, 4) : Hd > 2 ? between(r, 2, Hd - 1) : Hd + 1;
        if (Hd % G) nc_must(BIT(N_PQ_GROUP), "group_size does not divide hidden");
    }
    quant_options(r, &o, G, defaults);
    gatednorm_group_quant_fp8_params P;
    memset(&P, 0, sizeof P);
    P.struct_size = sizeof P;
    P.pdl = !defaults && pct(r, 10);
    const int qf = mut == GQ_QFIELD ? (int)below(r, QF_COUNT) : -1;
    quant_block(r, &o, qf, &P.quant);
    if (qf >= 0) nc_must(BIT(kQfName[qf]), "a quant field out of range");
    if (mut == GQ_FIELD) {
        if (pct(r, 50)) P.pdl = 3, nc_must(BIT(N_P_PDL), "pdl");
        else P.reserved[below(r, 2)] = -1, nc_must(BIT(N_P_RESV), "reserved");
    }
    const void *params = defaults && pct(r, 50) ? NULL : params_buffer(r, &P, sizeof P, mut == GQ_SIZE);
    {
        char qt[256];
        quant_text(qt, sizeof qt, &P.quant);
        snprintf(NC.params, sizeof NC.params, "%s: pdl %d reserved %d %d %s", params ? "given" : "NULL", P.pdl, P.reserved[0], P.reserved[1], qt);
    }
    hidden_layout(r, &X, (int)below(r, DT_COUNT), nt, ext, Hd);
    const int64_t K = Hd % G == 0 ? Hd / G : 1, cols = o.sfmt == 3 ? (K + 3) / 4 : K;
    {
        int qk = q_kind(r, o.fmt);
        if (mut == GQ_QDT) qk = wrong_q_kind(r, o.fmt), nc_must(BIT(N_Q), "q's dtype does not match the format");
        hidden_layout(r, &Q, qk, nt, ext, Hd + (mut == GQ_QSHAPE ? 1 : 0));
        if (mut == GQ_QSHAPE) nc_must(BIT(N_Q), "q's row one too long");
    }
    scales_layout(r, &S, mut == GQ_SDT ? wrong_scale_kind(r, o.sfmt) : scale_kind(r, o.sfmt), nt, ext, cols + (mut == GQ_SSHAPE ? 1 : 0));
    if (mut == GQ_SDT) nc_must(BIT(N_SCALES), "scales' dtype does not suit the scale format");
    if (mut == GQ_SSHAPE) nc_must(BIT(N_SCALES), "scales one column too many");
    if (mut == GQ_MERGE) {
        tens_t *const c[3] = {&X, &Q, &S};
        static const int cn[3] = {N_X, N_Q, N_SCALES};
        const int j = (int)below(r, 3);
        if (break_merge(c[j], nt)) nc_must(BIT(cn[j]), "token dims do not merge");
    }
    tens_t *const all[3] = {&X, &Q, &S};
    int ov_a = -1, ov_b = -1;
    if (mut == GQ_OVERLAP && !empty) {
        ov_a = 1 + (int)below(r, 2);
        ov_b = ov_a == 1 ? (pct(r, 50) ? 0 : 2) : (pct(r, 50) ? 0 : 1);
        if (tspan(all[ov_a]) && tspan(all[ov_b])) {
            if (talloc_overlap(r, all[ov_a], all[ov_b])) nc_must(BIT(ov_a == 1 ? N_Q : N_SCALES) | (ov_b ? BIT(ov_b == 1 ? N_Q : N_SCALES) : 0), "an output overlaps another tensor");
            else nc_open(0, "the overlap came out the same view");
        } else {
            ov_a = ov_b = -1;
        }
    }
    for (int k = 0; k < 3; ++k)
        if (k != ov_a && k != ov_b) talloc(r, all[k]);
    if (mut == GQ_MISALIGN) {
        const int j = pct(r, 50) ? 0 : 2;
        if (misalign(r, all[j])) nc_must(BIT(j ? N_SCALES : N_X), "data not aligned to the element size");
    }
    fill_float(r, &X, -8, 8, pct(r, 15));
    const tens_t *nul = NULL;
    if (mut == GQ_NULL) {
        static const int cn[3] = {N_X, N_Q, N_SCALES};
        const int j = (int)below(r, 3);
        nul = all[j];
        nc_must(BIT(cn[j]), "a descriptor NULL");
    }
    if (mut == GQ_DEVICE) {
        static const int dn[3] = {N_X, N_Q, N_SCALES};
        mutate_devices(r, all, dn, 3);
    }
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_group_quant_fp8(nul == &X ? NULL : &X.t, nul == &Q ? NULL : &Q.t, nul == &S ? NULL : &S.t,
                                                          (const gatednorm_group_quant_fp8_params *)params, NULL);
    if (!nc_outcome(st, BIT(N_X) | BIT(N_Q) | BIT(N_SCALES) | BIT(N_PARAMS) | BIT(N_P_PDL) | BIT(N_P_RESV) | kQuantNames, "gatednorm_group_quant_fp8"))
        return 0;
    if (!empty) {
        static double yv[8192];
        static unsigned char bad[8192];
        int64_t tidx[GATEDNORM_MAX_DIMS] = {0}, idx[GATEDNORM_MAX_DIMS];
        do {
            for (int i = 0; i < nt; ++i) idx[i] = tidx[i];
            for (int64_t c = 0; c < Hd; ++c) {
                idx[nt] = c;
                yv[c] = snap_at(&X, idx);
                bad[c] = !isfinite(yv[c]);
            }
            check_quant_token(&o, Hd, yv, yv, bad, 1, &Q, &S, tidx, nt);
        } while (next_token(nt, ext, tidx));
    }
    bufs_check("group_quant_fp8");
    return 1;
}

/* ============================================================ gatednorm_fp8_encode */
static int fuzz_fp8_encode(rng_t *r) {
    nc_begin();
    const size_t n = pct(r, 5) ? 0 : (size_t)between(r, 1, 300);
    float *v = (float *)(void *)buf_new(n * 4);
    uint8_t *c = buf_new(n);
    for (size_t i = 0; i < n; ++i) {
        float f;
        if (pct(r, 25)) {
            uint32_t u = (uint32_t)rnd(r);
            memcpy(&f, &u, 4);
        } else if (pct(r, 5)) {
            const float sp[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 448.0f, 464.0f, 240.0f, 248.0f, 0x1p-10f, 0x1p-11f, 0x3p-11f, 0x1p-7f};
            f = PICK(r, sp);
        } else {
            f = (float)ldexp(1.0 + (double)below(r, 1u << 23) / (double)(1u << 23), (int)between(r, -14, 10));
            if (pct(r, 50)) f = -f;
        }
        memcpy(&v[i], &f, 4);
        c[i] = (uint8_t)rnd(r);
    }
    int32_t fmt = pct(r, 50);
    float fmax = 0.0f;
    if (pct(r, 40)) {
        const float fn[] = {448.0f, 224.0f, 1.0f, 100.5f, 300.0f, 16.0f}, fz[] = {240.0f, 224.0f, 1.0f, 100.5f, 16.0f};
        fmax = fmt ? PICK(r, fz) : PICK(r, fn);
    }
    const float *vp = v;
    uint8_t *cp = c;
    nameset_t blame = 0;
    if (pct(r, 6)) { static const int32_t bf[] = {2, -1, 99}; fmt = PICK(r, bf); blame |= BIT(N_FORMAT); }
    if (pct(r, 6)) { const float bm[] = {0.5f, 449.0f, NAN, -1.0f, INFINITY, -0.0f}; fmax = PICK(r, bm); if (fmt == 1 && fmax == 449.0f) fmax = 241.0f; blame |= BIT(N_FP8MAX); }
    if (pct(r, 5)) { vp = NULL; if (n) blame |= BIT(N_VALUES); }
    if (pct(r, 5)) { cp = NULL; if (n) blame |= BIT(N_CODES); }
    if (blame) nc_must(blame, "a bad argument");
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_fp8_encode(vp, cp, n, fmt, fmax);
    if (!nc_outcome(st, BIT(N_VALUES) | BIT(N_CODES) | BIT(N_FORMAT) | BIT(N_FP8MAX), "gatednorm_fp8_encode")) return 0;
    const double m = fmax != 0.0f ? (double)fmax : fp8_fmax(fmt);
    for (size_t i = 0; i < n; ++i) {
        buf_allow(&c[i], 1);
        const double x = v[i];
        int ok;
        if (x != x) ok = c[i] == (fmt ? 0x80 : 0x7f);
        else {
            const double want = fp8_round(x, fmt, m);
            ok = fp8_code_ok(c[i], fmt, want, want);
            if (ok && want == 0 && fmt == 0) ok = !!(c[i] & 0x80) == !!signbit(x);
        }
        if (!ok) die("fp8_encode(%.9g, format %d, fp8_max %g) = 0x%02x (%.9g), expected %.9g", x, fmt, (double)fmax, c[i], fp8_dec(c[i], fmt),
                     x != x ? NAN : fp8_round(x, fmt, m));
    }
    bufs_check("fp8_encode");
    return 1;
}

/* ===================================== the newer ops' _params_init (add, fp8, quant, w4a16) */
static int fuzz_new_params_init(rng_t *r) {
    nc_begin();
    const int which = (int)below(r, 4);
    static const size_t fulls[4] = {sizeof(gatednorm_rmsnorm_gated_fp8_params), sizeof(gatednorm_add_rmsnorm_params),
                                    sizeof(gatednorm_group_quant_fp8_params), sizeof(gatednorm_w4a16_params)};
    const size_t full = fulls[which], canary = 32;
    const size_t sizes[] = {0, 1, 4, 8, 16, 24, 32, full - 8, full - 4, full - 1, full, full, full, full + 1, full + 8, 4096, 4097, 65536};
    const size_t size = pct(r, 90) ? PICK(r, sizes) : (size_t)between(r, 0, 5000);
    const int null = pct(r, 8);
    unsigned char *b = buf_new(canary + size + canary);
    for (size_t i = 0; i < canary + size + canary; ++i) b[i] = (unsigned char)rnd(r);
    void *p = null ? NULL : b + canary;
    int must = 0;
    if (null || (size < full && !(which == 3 && size == GATEDNORM_W4A16_PARAMS_V1_SIZE))) must = -1;
    else if (size <= 4096) must = 1;
    union {
        gatednorm_rmsnorm_gated_fp8_params f;
        gatednorm_add_rmsnorm_params a;
        gatednorm_group_quant_fp8_params g;
        gatednorm_w4a16_params w;
        unsigned char bytes[1];
    } want;
    memset(&want, 0, sizeof want);
    gatednorm_quant_fp8 qd;
    memset(&qd, 0, sizeof qd);
    qd.amax_floor = 1e-10f;
    qd.group_size = 128;
    gatednorm_status st;
    static const char *const whats[4] = {"gatednorm_rmsnorm_gated_fp8_params_init", "gatednorm_add_rmsnorm_params_init",
                                         "gatednorm_group_quant_fp8_params_init", "gatednorm_w4a16_params_init"};
    const char *what = whats[which];
    g_entry = what;
    set_sentinel();
    bufs_snapshot();
    switch (which) {
        case 0:
            st = gatednorm_rmsnorm_gated_fp8_params_init((gatednorm_rmsnorm_gated_fp8_params *)p, size);
            want.f.struct_size = (uint32_t)size, want.f.norm_before_gate = 1, want.f.eps = 1e-6f, want.f.quant = qd;
            break;
        case 1:
            st = gatednorm_add_rmsnorm_params_init((gatednorm_add_rmsnorm_params *)p, size);
            want.a.struct_size = (uint32_t)size, want.a.eps = 1e-6f, want.a.quant = qd;
            break;
        case 2:
            st = gatednorm_group_quant_fp8_params_init((gatednorm_group_quant_fp8_params *)p, size);
            want.g.struct_size = (uint32_t)size, want.g.quant = qd;
            break;
        default:
            st = gatednorm_w4a16_params_init((gatednorm_w4a16_params *)p, size);
            want.w.struct_size = (uint32_t)size, want.w.symmetric = -1;
            break;
    }
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (must == 1) die("refused size %zu: %s", size, gatednorm_last_error());
        check_rejection(st, BIT(N_PARAMS), BIT(N_PARAMS), what);
        bufs_check("refused params_init");
        return 0;
    }
    if (must == -1) die("accepted %s with size %zu", null ? "NULL" : "a struct", size);
    buf_allow(b + canary, size);
    bufs_check("params_init (the bytes around the struct)");
    if (memcmp(b + canary, want.bytes, size < full ? size : full)) die("size %zu: the struct does not hold the defaults (padding zero)", size);
    for (size_t i = full; i < size; ++i)
        if (b[canary + i]) die("size %zu: byte %zu past the layout is 0x%02x, not 0", size, i, b[canary + i]);
    return 1;
}

/* ======================================================= W4A16 (ops.md §4, docs/w4a16.md) */
static unsigned char snap_byte(const unsigned char *addr) {
    const buf_t *b = buf_of(addr);
    if (!b) die("driver: an input byte lies outside every buffer");
    return b->snap[addr - b->p];
}
static void bufs_reset_allow(void) {
    for (int i = 0; i < g_nbufs; ++i) memset(g_bufs[i].may_change, 0, g_bufs[i].n ? g_bufs[i].n : 1);
}
static double ulp_of(double v, int dt) {
    const int p = dt == DT_F32 ? 24 : dt == DT_F16 ? 11 : 8, emin = dt == DT_F16 ? -14 : -126;
    int e;
    if (v == 0) return ldexp(1.0, emin - (p - 1));
    frexp(v, &e);
    return ldexp(1.0, (e - 1 < emin ? emin : e - 1) - (p - 1));
}
static struct {
    uint64_t values, tiled_gemms, plain_gemms;
    double worst; /* largest |out - ref| / allowed */
} g_wstats;

/* out [M, N] of an accepted GEMM against the double reference a @ dequant(W) (+ bias), within
 * reference.w4a16_tolerance's bound: E = (K + 64) 2^-23 (|a| @ |w16| + |bias|), plus half an ulp
 * of out at |ref| + E.  The weight is read as PLAIN (qweight [N, K/2], scales, zeros). */
static void check_w4a16(const tens_t *A, const tens_t *QW, const tens_t *SC, const tens_t *ZE, const tens_t *BI, const tens_t *O, int64_t M,
                        int64_t N, int64_t K, int64_t G) {
    static double w16[65536];
    const int adt = A->dt;
    if (N * K > 65536) die("driver: weight too large");
    for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
            const int64_t qi[2] = {n, k / 2}, gi[2] = {n, k / G};
            const unsigned char qb = snap_byte(eaddr(QW, qi));
            const int q = k % 2 ? qb >> 4 : qb & 15;
            const int z = ZE ? snap_byte(eaddr(ZE, gi)) & 15 : 8;
            const double s16 = round_to(snap_at(SC, gi), adt);
            w16[n * K + k] = round_to((double)(q - z) * s16, adt);
        }
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            double sum = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
                const int64_t ai[2] = {m, k};
                const double p = snap_at(A, ai) * w16[n * K + k];
                sum += p;
                mag += fabs(p);
            }
            if (BI) {
                const int64_t bi[1] = {n};
                const double b = snap_at(BI, bi);
                sum += b;
                mag += fabs(b);
            }
            const double E = (double)(K + 64) * ldexp(1.0, -23) * mag, tol = E + 0.5 * ulp_of(fabs(sum) + E, O->dt);
            const int64_t oi[2] = {m, n};
            unsigned char *oa = eaddr(O, oi);
            buf_allow(oa, (size_t)O->elem);
            const double got = decode(oa, O->dt);
            ++g_wstats.values;
            if (!(fabs(got - sum) <= tol))
                die("out[%lld, %lld] = %.9g (%s), but a @ dequant(W) is %.9g (allowed +-%.3g; K %lld, G %lld, a %s)", (long long)m, (long long)n, got,
                    kDtName[O->dt], sum, tol, (long long)K, (long long)G, kDtName[adt]);
            if (tol > 0 && fabs(got - sum) / tol > g_wstats.worst) g_wstats.worst = fabs(got - sum) / tol;
        }
}

/* A plain weight [N, K] with groups of G: qweight [N, K/2], scales [N, K/G] (row-major or
 * transposed), zeros likewise or absent.  Values filled. */
static void w4_matrix(rng_t *r, tens_t *T, int kind, int64_t rows, int64_t cols) {
    const int64_t shape[2] = {rows, cols};
    int64_t st[2];
    if (pct(r, 60)) st[1] = 1, st[0] = cols + pad(r);
    else st[0] = 1, st[1] = rows + pad(r);
    if (rows == 1 && pct(r, 30)) st[0] = PICK(r, kFreeStrides);
    if (cols == 1 && pct(r, 30)) st[1] = PICK(r, kFreeStrides);
    tset(T, kind, 2, shape, st);
}
static void w4_rows(rng_t *r, tens_t *T, int kind, int64_t rows, int64_t cols, int lie_stride) {
    const int64_t shape[2] = {rows, cols};
    int64_t st[2] = {cols + pad(r), 1};
    if (lie_stride && cols > 1) st[1] = 2, st[0] = 2 * cols + pad(r);
    if (rows == 1 && pct(r, 30)) st[0] = PICK(r, kFreeStrides);
    tset(T, kind, 2, shape, st);
}
static void fill_bytes_codes(rng_t *r, const tens_t *T) {
    int64_t idx[2] = {0, 0};
    int ovf;
    if (count_of(T->t.ndim, T->t.shape, &ovf) == 0) return;
    do *eaddr(T, idx) = (unsigned char)rnd(r);
    while (next_index(T->t.ndim, T->t.shape, idx));
}
static void w4_params_text(const gatednorm_w4a16_params *p, int null) {
    if (null) snprintf(NC.params, sizeof NC.params, "NULL");
    else
        snprintf(NC.params, sizeof NC.params, "layout %d n %lld k %lld group_size %lld symmetric %d dtype %d layout_version %d target %d pdl %d reserved0 %d",
                 p->layout, (long long)p->n, (long long)p->k, (long long)p->group_size, p->symmetric, p->dtype, p->layout_version, p->target, p->pdl,
                 p->reserved0);
}
static const nameset_t kW4ParamNames = BIT(N_PARAMS) | BIT(N_P_LAYOUT) | BIT(N_P_N) | BIT(N_P_K) | BIT(N_P_GROUP) | BIT(N_P_SYM) | BIT(N_P_DTYPE) |
                                       BIT(N_P_LVER) | BIT(N_P_TARGET) | BIT(N_P_PDL) | BIT(N_P_RES0);
static void w4_bad_field(rng_t *r, gatednorm_w4a16_params *p) {
    switch (below(r, 9)) {
        case 7: p->pdl = pct(r, 50) ? 2 : -1; nc_must(BIT(N_P_PDL), "pdl"); break;
        case 8: p->reserved0 = (int32_t)between(r, 1, 9); nc_must(BIT(N_P_RES0), "reserved0"); break;
        case 0: p->layout = pct(r, 50) ? 2 : -1; nc_must(BIT(N_P_LAYOUT), "layout"); break;
        case 1: p->n = -1; nc_must(BIT(N_P_N), "n < 0"); break;
        case 2: p->k = INT64_MIN; nc_must(BIT(N_P_K), "k < 0"); break;
        case 3: p->group_size = -4; nc_must(BIT(N_P_GROUP), "group_size < 0"); break;
        case 4: p->symmetric = pct(r, 50) ? 2 : -2; nc_must(BIT(N_P_SYM), "symmetric"); break;
        case 5: p->dtype = pct(r, 50) ? 3 : -1; nc_must(BIT(N_P_DTYPE), "dtype"); break;
        default: p->target = pct(r, 50) ? 4 : -1; nc_must(BIT(N_P_TARGET), "target"); break;
    }
}

enum { W_SIZE, W_FIELD, W_AF32, W_DTMIS, W_SSHAPE, W_ZSHAPE, W_OSHAPE, W_OVERLAP, W_KMIS, W_PN, W_PK, W_PG, W_SYM1, W_SYM0, W_TILEDS, W_WSDT,
       W_BIASLEN, W_ASTRIDE, W_QDT, W_NULL, W_DEVICE, W_COUNT };
static int fuzz_w4a16_gemm(rng_t *r) {
    static tens_t A, QW, SC, ZE, BI, O, WS;
    nc_begin();
    nc_tensor("a", &A), nc_tensor("qweight", &QW), nc_tensor("scales", &SC), nc_tensor("zeros", &ZE), nc_tensor("bias", &BI);
    nc_tensor("out", &O), nc_tensor("work", &WS);
    const int mut = pct(r, 55) ? -1 : (int)below(r, W_COUNT);
    const int64_t M = pct(r, 5) ? 0 : pct(r, 80) ? between(r, 1, 4) : between(r, 5, 12), N = pct(r, 70) ? between(r, 1, 12) : between(r, 13, 32);
    static const int64_t gs[] = {2, 4, 8, 16, 32, 32, 64, 128};
    const int64_t G = PICK(r, gs);
    int64_t ng = between(r, 1, 6);
    while (G * ng > 384) --ng;
    const int64_t K = G * ng;
    const int adt = pct(r, 50) ? DT_BF16 : DT_F16;
    int has_z = pct(r, 60), has_b = pct(r, 40), has_ws = pct(r, 20);
    if (mut == W_ZSHAPE || mut == W_SYM1) has_z = 1;
    if (mut == W_SYM0) has_z = 0;
    if (mut == W_WSDT) has_ws = 1;
    if (mut == W_BIASLEN) has_b = 1;

    gatednorm_w4a16_params P;
    memset(&P, 0, sizeof P);
    P.struct_size = sizeof P;
    P.symmetric = -1;
    int pnull = pct(r, 20) && (mut < 0 || mut == W_AF32 || mut == W_SSHAPE || mut == W_ZSHAPE || mut == W_OSHAPE || mut == W_OVERLAP ||
                               mut == W_KMIS || mut == W_WSDT || mut == W_BIASLEN || mut == W_ASTRIDE || mut == W_QDT || mut == W_NULL ||
                               mut == W_DEVICE);
    if (pct(r, 40)) P.n = N;
    if (pct(r, 40)) P.k = K;
    if (pct(r, 40)) P.group_size = G;
    if (pct(r, 40)) P.symmetric = has_z ? 0 : 1;
    if (pct(r, 40)) P.dtype = adt == DT_BF16 ? GATEDNORM_W4A16_DTYPE_BF16 : GATEDNORM_W4A16_DTYPE_F16;
    if (pct(r, 10)) P.target = (int32_t)between(r, 0, 3); /* ignored by a PLAIN GEMM */
    if (mut == W_DTMIS) P.dtype = adt == DT_BF16 ? GATEDNORM_W4A16_DTYPE_F16 : GATEDNORM_W4A16_DTYPE_BF16, nc_must(BIT(N_A), "params.dtype is not a's");
    if (mut == W_PN) P.n = N + between(r, 1, 3), nc_must(BIT(N_P_N), "params.n does not match qweight");
    if (mut == W_PK) P.k = K + 2 * between(r, 1, 3), nc_must(BIT(N_P_K), "params.k does not match qweight");
    if (mut == W_PG) P.group_size = G + between(r, 1, 3), nc_must(BIT(N_P_GROUP), "params.group_size does not match scales");
    if (mut == W_SYM1) P.symmetric = 1, nc_must(BIT(N_ZEROS), "zeros given, symmetric = 1");
    if (mut == W_SYM0) P.symmetric = 0, nc_must(BIT(N_ZEROS), "no zeros, symmetric = 0");
    if (mut == W_TILEDS) {
        P.layout = GATEDNORM_W4A16_LAYOUT_TILED, P.n = N, P.k = K, P.group_size = G, P.symmetric = has_z ? 0 : 1;
        P.dtype = adt == DT_BF16 ? 1 : 2, P.layout_version = GATEDNORM_W4A16_TILED_VERSION, P.target = (int32_t)between(r, 1, 3);
        nc_must(BIT(N_SCALES) | BIT(N_ZEROS), "a TILED weight with scales");
    }
    if (pct(r, 25)) P.pdl = 1; /* no effect on the host */
    if (mut == W_FIELD) w4_bad_field(r, &P);
    /* The first (48-byte) layout now and then: pdl and reserved0 are then not read. */
    const void *params = NULL;
    if (!pnull && mut != W_FIELD && mut != W_SIZE && pct(r, 10)) {
        unsigned char *b = buf_new(GATEDNORM_W4A16_PARAMS_V1_SIZE);
        const uint32_t ss = GATEDNORM_W4A16_PARAMS_V1_SIZE;
        memcpy(b, &P, GATEDNORM_W4A16_PARAMS_V1_SIZE);
        memcpy(b, &ss, 4);
        params = b;
    } else if (!pnull) {
        params = params_buffer_v1(r, &P, sizeof P, mut == W_SIZE, GATEDNORM_W4A16_PARAMS_V1_SIZE);
    }
    w4_params_text(&P, pnull);

    {
        const int64_t sh[2] = {M, K + (mut == W_KMIS ? 2 : 0)};
        int64_t st[2] = {sh[1] + pad(r), 1};
        if (mut == W_ASTRIDE && sh[1] > 1) { /* an empty a (M = 0) addresses nothing: its strides are free */
            st[1] = 2, st[0] = 2 * sh[1] + pad(r);
            if (M > 0) nc_must(BIT(N_A), "a's last dim not contiguous");
        }
        if (M == 1 && pct(r, 30)) st[0] = PICK(r, kFreeStrides);
        tset(&A, mut == W_AF32 ? DT_F32 : adt, 2, sh, st);
        if (mut == W_AF32) nc_must(BIT(N_A), "a in fp32");
        if (mut == W_KMIS) nc_must(BIT(N_A), "a's K is not the weight's");
    }
    w4_rows(r, &QW, mut == W_QDT ? K_I8 : K_U8, N, K / 2, 0);
    if (mut == W_QDT) nc_must(BIT(N_QWEIGHT), "qweight int8");
    w4_matrix(r, &SC, (int)below(r, DT_COUNT), N + (mut == W_SSHAPE ? 1 : 0), ng);
    if (mut == W_SSHAPE) nc_must(BIT(N_SCALES), "scales [N + 1, K/G]");
    if (has_z) w4_matrix(r, &ZE, K_U8, N, ng + (mut == W_ZSHAPE ? 1 : 0));
    if (mut == W_ZSHAPE) nc_must(BIT(N_ZEROS), "zeros [N, K/G + 1]");
    if (has_b) {
        const int64_t sh[1] = {N + (mut == W_BIASLEN ? 1 : 0)}, st[1] = {1};
        tset(&BI, (int)below(r, DT_COUNT), 1, sh, st);
        if (mut == W_BIASLEN) nc_must(BIT(N_BIAS), "bias [N + 1]");
    }
    w4_rows(r, &O, (int)below(r, DT_COUNT), M, N + (mut == W_OSHAPE ? 1 : 0), 0);
    if (mut == W_OSHAPE) nc_must(BIT(N_OUT), "out [M, N + 1]");
    if (has_ws) {
        const int64_t sh[1] = {between(r, 0, 64)}, st[1] = {1};
        tset(&WS, mut == W_WSDT ? DT_F16 : K_U8, 1, sh, st);
        if (mut == W_WSDT) nc_must(BIT(N_WORKSPACE), "workspace fp16");
    }
    tens_t *const all[7] = {&A, &QW, &SC, &ZE, &BI, &O, &WS};
    int ov_a = -1, ov_b = -1;
    if (mut == W_OVERLAP) {
        ov_a = has_ws && pct(r, 30) ? 6 : 5;
        do ov_b = (int)below(r, 7);
        while (ov_b == ov_a || !all[ov_b]->present);
        if (tspan(all[ov_a]) && tspan(all[ov_b])) {
            nc_must(ov_a == 6 ? BIT(N_WORKSPACE) | (ov_b == 5 ? BIT(N_OUT) : 0) : BIT(N_OUT) | (ov_b == 6 ? BIT(N_WORKSPACE) : 0),
                    "out or workspace overlaps another tensor");
            talloc_overlap(r, all[ov_a], all[ov_b]);
        } else {
            ov_a = ov_b = -1;
        }
    }
    for (int k = 0; k < 7; ++k)
        if (all[k]->present && k != ov_a && k != ov_b) talloc(r, all[k]);
    fill_float(r, &A, -4, 3, 0);
    fill_bytes_codes(r, &QW);
    fill_float(r, &SC, -8, -2, 0);
    if (has_z) fill_bytes_codes(r, &ZE);
    if (has_b) fill_float(r, &BI, -4, 4, 0);

    const tens_t *nul = NULL;
    if (mut == W_NULL) {
        tens_t *const c[4] = {&A, &QW, &SC, &O};
        static const int cn[4] = {N_A, N_QWEIGHT, N_SCALES, N_OUT};
        const int j = (int)below(r, 4);
        nul = c[j];
        nc_must(BIT(cn[j]), "a required descriptor NULL");
    }
#define DW(T) ((T).present && &(T) != nul ? &(T).t : NULL)
    if (mut == W_DEVICE) {
        static const int dn[7] = {N_A, N_QWEIGHT, N_SCALES, N_ZEROS, N_BIAS, N_OUT, N_WORKSPACE};
        mutate_devices(r, all, dn, 7);
    }
    set_sentinel();
    bufs_snapshot();
    const gatednorm_status st = gatednorm_w4a16_gemm(DW(A), DW(QW), DW(SC), DW(ZE), DW(BI), DW(O), DW(WS), (const gatednorm_w4a16_params *)params, NULL);
#undef DW
    const nameset_t allowed = BIT(N_A) | BIT(N_QWEIGHT) | BIT(N_SCALES) | BIT(N_ZEROS) | BIT(N_BIAS) | BIT(N_OUT) | BIT(N_WORKSPACE) | kW4ParamNames;
    if (!nc_outcome(st, allowed, "gatednorm_w4a16_gemm")) return 0;
    if (has_ws && tspan(&WS)) buf_allow(WS.first, tspan(&WS)); /* scratch: the GEMM may write it */
    ++g_wstats.plain_gemms;
    check_w4a16(&A, &QW, &SC, has_z ? &ZE : NULL, has_b ? &BI : NULL, &O, M, N, K, G);
    bufs_check("w4a16_gemm");
    return 1;
}

/* gatednorm_w4a16_prepack on the host, then a GEMM with the TILED weight it made: the same
 * bound against the plain weight's reference. */
enum { P_SIZE, P_FIELD, P_NATIVE, P_UNSET, P_SMALL, P_OVERLAP, P_LAYOUT, P_NULLP, P_BADG, P_PDT, P_COUNT };
static int fuzz_w4a16_prepack(rng_t *r) {
    static tens_t QW, SC, ZE, PK, A, BI, O;
    nc_begin();
    nc_tensor("qweight", &QW), nc_tensor("scales", &SC), nc_tensor("zeros", &ZE), nc_tensor("packed", &PK);
    nc_tensor("a", &A), nc_tensor("bias", &BI), nc_tensor("out", &O);
    const int mut = pct(r, 55) ? -1 : (int)below(r, P_COUNT);
    const int64_t N = pct(r, 70) ? between(r, 1, 20) : between(r, 21, 40);
    int64_t G, ng, K;
    if (mut == P_BADG) {
        static const int64_t bg[] = {2, 4, 6, 8, 12, 24, 48};
        G = PICK(r, bg), ng = between(r, 2, 5), K = G * ng;
        nc_must(BIT(N_P_GROUP), "a group size the tiled layout cannot hold");
    } else if (pct(r, 25)) {
        K = 2 * between(r, 1, 160), G = K, ng = 1; /* per channel */
    } else {
        static const int64_t gs[] = {16, 32, 64, 128};
        G = PICK(r, gs), ng = between(r, 1, 4);
        while (G * ng > 384) --ng;
        K = G * ng;
    }
    const int has_z = pct(r, 60);
    const int32_t dtype = pct(r, 50) ? GATEDNORM_W4A16_DTYPE_BF16 : GATEDNORM_W4A16_DTYPE_F16;
    const int32_t target = (int32_t)between(r, 1, 3);
    size_t need = 4096;
    {
        gatednorm_w4a16_params q;
        if (gatednorm_w4a16_params_init(&q, sizeof q) != GATEDNORM_STATUS_SUCCESS) die("w4a16_params_init: %s", gatednorm_last_error());
        q.n = N, q.k = K, q.group_size = G, q.symmetric = has_z ? 0 : 1;
        const gatednorm_status st = gatednorm_w4a16_prepacked_size(&q, &need);
        if ((st == GATEDNORM_STATUS_SUCCESS) == (mut == P_BADG)) die("prepacked_size of N %lld K %lld G %lld: status %d (%s)", (long long)N, (long long)K, (long long)G, (int)st, gatednorm_last_error());
        if (st != GATEDNORM_STATUS_SUCCESS) need = 4096;
    }
    gatednorm_w4a16_params P;
    memset(&P, 0, sizeof P);
    P.struct_size = sizeof P;
    P.symmetric = pct(r, 50) ? -1 : has_z ? 0 : 1;
    P.dtype = dtype;
    P.target = target;
    if (pct(r, 40)) P.n = N;
    if (pct(r, 40)) P.k = K;
    if (pct(r, 40)) P.group_size = G;
    /* G read from scales' shape (params.group_size left 0): the refusal names scales */
    if (mut == P_BADG && P.group_size == 0) nc_must(BIT(N_SCALES), "scales give a group size the tiled layout cannot hold");
    if (mut == P_NATIVE) P.target = 0, nc_must(BIT(N_P_TARGET), "target NATIVE on the host");
    if (mut == P_UNSET) P.dtype = 0, nc_must(BIT(N_P_DTYPE), "dtype UNSET");
    if (mut == P_LAYOUT) P.layout = GATEDNORM_W4A16_LAYOUT_TILED, nc_must(BIT(N_P_LAYOUT), "prepack of a TILED weight");
    if (pct(r, 25)) P.pdl = 1; /* no effect on prepack; kept as given */
    if (mut == P_FIELD) w4_bad_field(r, &P);
    if (mut == P_NULLP) nc_must(BIT(N_PARAMS), "params NULL");
    gatednorm_w4a16_params *params =
        mut == P_NULLP ? NULL : (gatednorm_w4a16_params *)params_buffer_v1(r, &P, sizeof P, mut == P_SIZE, GATEDNORM_W4A16_PARAMS_V1_SIZE);
    w4_params_text(&P, mut == P_NULLP);

    w4_rows(r, &QW, K_U8, N, K / 2, 0);
    w4_matrix(r, &SC, (int)below(r, DT_COUNT), N, ng);
    if (has_z) w4_matrix(r, &ZE, K_U8, N, ng);
    {
        int64_t bytes = (int64_t)need + (pct(r, 30) ? between(r, 1, 40) : 0);
        if (mut == P_SMALL) bytes = (int64_t)need - between(r, 1, (int64_t)need < 16 ? (int64_t)need : 16), nc_must(BIT(N_PACKED), "packed too small");
        int64_t sh[2] = {bytes, 1}, st[2] = {1, 1};
        int nd = 1, kind = K_U8;
        if (mut == P_PDT) {
            if (pct(r, 50)) kind = pct(r, 50) ? K_I8 : K_FN;
            else nd = 2, st[0] = 1;
            nc_must(BIT(N_PACKED), "packed no 1-D uint8 buffer");
        }
        tset(&PK, kind, nd, sh, st);
    }
    tens_t *const all[4] = {&QW, &SC, &ZE, &PK};
    int ov_b = -1;
    if (mut == P_OVERLAP) {
        do ov_b = (int)below(r, 3);
        while (!all[ov_b]->present);
        if (talloc_overlap(r, &PK, all[ov_b])) nc_must(BIT(N_PACKED), "packed overlaps the plain weight");
        else nc_open(0, "the overlap came out the same view");
    }
    for (int k = 0; k < 4; ++k)
        if (all[k]->present && !(mut == P_OVERLAP && (k == 3 || k == ov_b))) talloc(r, all[k]);
    fill_bytes_codes(r, &QW);
    fill_float(r, &SC, -8, -2, 0);
    if (has_z) fill_bytes_codes(r, &ZE);
    set_sentinel();
    bufs_snapshot();
    gatednorm_status st = gatednorm_w4a16_prepack(&QW.t, &SC.t, has_z ? &ZE.t : NULL, &PK.t, params, NULL);
    const nameset_t allowed = BIT(N_QWEIGHT) | BIT(N_SCALES) | BIT(N_ZEROS) | BIT(N_PACKED) | kW4ParamNames;
    if (!nc_outcome(st, allowed, "gatednorm_w4a16_prepack")) return 0;
    /* params completed, nothing else of it touched; packed written only within its size */
    gatednorm_w4a16_params want = P;
    want.layout = GATEDNORM_W4A16_LAYOUT_TILED, want.n = N, want.k = K, want.group_size = G, want.symmetric = has_z ? 0 : 1;
    want.layout_version = GATEDNORM_W4A16_TILED_VERSION, want.target = target;
    {
        uint32_t ss;
        memcpy(&ss, params, 4);
        want.struct_size = ss;
    }
    buf_allow(params, sizeof P);
    if (memcmp(params, &want, sizeof want)) {
        gatednorm_w4a16_params got;
        memcpy(&got, params, sizeof got);
        die("prepack left params layout %d n %lld k %lld group_size %lld symmetric %d dtype %d layout_version %d target %d", got.layout,
            (long long)got.n, (long long)got.k, (long long)got.group_size, got.symmetric, got.dtype, got.layout_version, got.target);
    }
    buf_allow(PK.first, need);
    bufs_check("w4a16_prepack");

    /* the TILED GEMM */
    const int64_t M = pct(r, 5) ? 0 : between(r, 1, 5);
    const int adt = dtype == GATEDNORM_W4A16_DTYPE_BF16 ? DT_BF16 : DT_F16;
    {
        const int64_t sh[2] = {M, K}, stA[2] = {K + pad(r), 1};
        tset(&A, adt, 2, sh, stA);
    }
    const int has_b = pct(r, 40);
    if (has_b) {
        const int64_t sh[1] = {N}, stb[1] = {1};
        tset(&BI, (int)below(r, DT_COUNT), 1, sh, stb);
        talloc(r, &BI);
        fill_float(r, &BI, -4, 4, 0);
    }
    w4_rows(r, &O, (int)below(r, DT_COUNT), M, N, 0);
    talloc(r, &A);
    talloc(r, &O);
    fill_float(r, &A, -4, 3, 0);
    bufs_reset_allow();
    bufs_snapshot();
    NC.must_reject = NC.open = 0;
    st = gatednorm_w4a16_gemm(&A.t, &PK.t, NULL, NULL, has_b ? &BI.t : NULL, &O.t, NULL, params, NULL);
    if (st != GATEDNORM_STATUS_SUCCESS) die("the GEMM with the weight prepack made refused it: %s", gatednorm_last_error());
    ++g_wstats.tiled_gemms;
    check_w4a16(&A, &QW, &SC, has_z ? &ZE : NULL, has_b ? &BI : NULL, &O, M, N, K, G);
    bufs_check("w4a16_gemm (TILED)");
    return 1;
}

/* gatednorm_w4a16_prepacked_size and gatednorm_w4a16_workspace_size */
static int fuzz_w4a16_sizes(rng_t *r) {
    nc_begin();
    gatednorm_w4a16_params P;
    memset(&P, 0, sizeof P);
    P.struct_size = sizeof P;
    P.symmetric = -1;
    static const int64_t ns[] = {-1, 0, 1, 5, 16, 100, (int64_t)1 << 31, ((int64_t)1 << 31) - 1, INT64_MAX};
    static const int64_t ks[] = {-2, 0, 1, 2, 3, 16, 17, 64, 128, 384, (int64_t)1 << 31, ((int64_t)1 << 31) - 2};
    static const int64_t gs[] = {-1, 0, 1, 8, 16, 24, 32, 64, 128};
    P.n = pct(r, 70) ? between(r, 1, 300) : PICK(r, ns);
    P.k = pct(r, 70) ? 2 * between(r, 1, 256) : PICK(r, ks);
    P.group_size = pct(r, 30) ? P.k : PICK(r, gs);
    P.symmetric = (int32_t)between(r, -1, 1);
    if (pct(r, 5)) P.symmetric = 2;
    P.layout = pct(r, 50);
    P.dtype = (int32_t)between(r, 0, 2);
    P.target = (int32_t)between(r, 0, 3);
    P.layout_version = pct(r, 50) ? 1 : 0;
    const int fieldbad = P.n < 0 || P.k < 0 || P.group_size < 0 || P.symmetric < -1 || P.symmetric > 1;
    const int size_mut = pct(r, 5);
    void *params = pct(r, 5) ? NULL : params_buffer_v1(r, &P, sizeof P, size_mut, GATEDNORM_W4A16_PARAMS_V1_SIZE);
    w4_params_text(&P, params == NULL);
    size_t *bytes = pct(r, 5) ? NULL : (size_t *)(void *)buf_new(sizeof(size_t));
    if (bytes) memset(bytes, 0xee, sizeof *bytes);
    set_sentinel();
    gatednorm_status st;
    const char *what;
    int must_ok;
    if (pct(r, 50)) {
        what = "gatednorm_w4a16_prepacked_size";
        int tiled_ok = P.n >= 1 && P.k >= 2 && P.k % 2 == 0 && P.n < ((int64_t)1 << 31) && P.k < ((int64_t)1 << 31) && P.group_size >= 1 &&
                       P.k % P.group_size == 0 && (P.symmetric == 0 || P.symmetric == 1) &&
                       ((P.group_size >= 16 && (P.group_size & (P.group_size - 1)) == 0) || P.group_size == P.k);
        must_ok = bytes && params && !size_mut && tiled_ok;
        if (!must_ok) nc_must(bytes ? BIT(N_PARAMS) | kW4ParamNames : BIT(N_BYTES), "no tiled geometry");
        bufs_snapshot();
        st = gatednorm_w4a16_prepacked_size((const gatednorm_w4a16_params *)params, bytes);
        if (!nc_outcome(st, BIT(N_BYTES) | kW4ParamNames, what)) return 0;
        const size_t lo = (size_t)(P.n * P.k / 2) + (size_t)(P.n * (P.k / P.group_size)) * 2;
        if (*bytes < lo || *bytes % 16) die("prepacked_size of N %lld K %lld G %lld: %zu bytes, fewer than the %zu the codes and scales take, or no multiple of 16",
                                            (long long)P.n, (long long)P.k, (long long)P.group_size, *bytes, lo);
        buf_allow(bytes, sizeof *bytes);
    } else {
        what = "gatednorm_w4a16_workspace_size";
        static const int64_t ms[] = {-1, 0, 1, 7, 4096, INT64_MAX, INT64_MIN};
        const int64_t m = PICK(r, ms);
        gatednorm_device d = {GATEDNORM_DEVICE_TYPE_CPU, 0};
        if (pct(r, 15)) d = bad_device(r);
        else if (pct(r, 20)) d.device_type = GATEDNORM_DEVICE_TYPE_CUDA_HOST, d.device_id = (int32_t)between(r, -1, 3);
        const int host = d.device_type == GATEDNORM_DEVICE_TYPE_CPU || d.device_type == GATEDNORM_DEVICE_TYPE_CUDA_HOST;
        /* the GEMM's limits (m, N, K below 2^31, G dividing K) hold for the query too */
        must_ok = bytes && params && !size_mut && !fieldbad && m >= 0 && m < ((int64_t)1 << 31) && P.n >= 1 && P.k >= 2 &&
                  P.group_size >= 1 && P.n < ((int64_t)1 << 31) && P.k < ((int64_t)1 << 31) && P.k % P.group_size == 0 && host;
        if (!must_ok) nc_must(!bytes ? BIT(N_BYTES) : BIT(N_M) | BIT(N_DEVICE) | kW4ParamNames, "no workspace size");
        bufs_snapshot();
        st = gatednorm_w4a16_workspace_size((const gatednorm_w4a16_params *)params, m, d, bytes);
        if (!nc_outcome(st, BIT(N_BYTES) | BIT(N_M) | BIT(N_DEVICE) | kW4ParamNames, what)) return 0;
        if (*bytes != 0) die("workspace_size on the host: %zu bytes, not 0", *bytes);
        buf_allow(bytes, sizeof *bytes);
    }
    bufs_check(what);
    return 1;
}

/* ===================================================== fixed cases: what the fuzzer found */
/* Run before the random cases on every run.  Without the library's fixes the first two are
 * signed overflows (undefined behaviour: the sanitizer build aborts), the others fail the
 * checks (the W4A16 one: a UBSan report). */
static gatednorm_tensor f32_desc(void *data, int ndim, const int64_t *shape, const int64_t *strides) {
    gatednorm_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.device.device_type = GATEDNORM_DEVICE_TYPE_CPU;
    t.ndim = ndim;
    t.dtype = dtype_desc(DT_F32);
    for (int i = 0; i < ndim; ++i) t.shape[i] = shape[i], t.strides[i] = strides[i];
    return t;
}

#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
/* The FP control register's flush bits: x86-64 MXCSR FTZ | DAZ, aarch64 FPCR FZ. */
#if defined(__x86_64__)
#include <xmmintrin.h>
static unsigned long long fp_control(void) { return _mm_getcsr(); }
static void fp_control_set(unsigned long long v) { _mm_setcsr((unsigned)v); }
static const unsigned long long kFlushBits = 0x8040;
#else
static unsigned long long fp_control(void) {
    unsigned long long v;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(v));
    return v;
}
static void fp_control_set(unsigned long long v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }
static const unsigned long long kFlushBits = 1ull << 24;
#endif

/* A caller that flushes subnormals and rounds upward gets the bits a default caller gets,
 * and its control state back; the IEEE flags the computation raised are the caller's
 * afterwards, from rows its own thread computed and rows the pool's workers computed (they
 * were lost: session 36).  Each architecture's control register is set directly, so this
 * runs the library's x86-64 (MXCSR) and aarch64 (FPCR / FPSR) code alike. */
static void fixed_case_fp_state(void) {
    enum { kRows = 4096, kCols = 64 };
    g_entry = "fixed case: a flushing, upward-rounding caller; flags from the pool's workers";
    float *x = malloc(sizeof(float) * kRows * kCols), *y0 = malloc(sizeof(float) * kRows * kCols),
          *y1 = malloc(sizeof(float) * kRows * kCols), w[kCols];
    if (!x || !y0 || !y1) die("out of host memory");
    uint64_t st = 12345;
    for (int i = 0; i < kRows * kCols; ++i) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int)(st >> 40) % 2001 - 1000) / 257.0f;
    }
    for (int j = 0; j < kCols; ++j) w[j] = j % 2 ? 3e-39f : 1.0f + j / 64.0f; /* subnormal y in odd columns */
    const int64_t shape[2] = {kRows, kCols}, strides[2] = {kCols, 1}, ws[1] = {kCols}, w1[1] = {1};
    const gatednorm_tensor tx = f32_desc(x, 2, shape, strides), t0 = f32_desc(y0, 2, shape, strides),
                           t1 = f32_desc(y1, 2, shape, strides), tw = f32_desc(w, 1, ws, w1);
    int32_t threads_before = 0;
    if (gatednorm_get_num_threads(&threads_before) || gatednorm_set_num_threads(4)) die("set_num_threads: %s", gatednorm_last_error());
    if (gatednorm_rmsnorm_gated(&tx, NULL, &tw, &t0, NULL, NULL)) die("default caller: %s", gatednorm_last_error());
    int subnormal = 0;
    for (int i = 0; i < kRows * kCols; ++i) subnormal += y0[i] != 0.0f && fabsf(y0[i]) < FLT_MIN;
    if (subnormal < kRows) die("only %d subnormal outputs: the case tests nothing", subnormal);

    /* The flushing caller below starts the workers afresh (set_num_threads stopped them): a
     * thread inherits its creator's FP state, so they must be started under the IEEE scope. */
    if (gatednorm_set_num_threads(3)) die("set_num_threads: %s", gatednorm_last_error());
    const unsigned long long saved = fp_control();
    if (fesetround(FE_UPWARD)) die("fesetround failed");
    fp_control_set(fp_control() | kFlushBits);
    const unsigned long long caller = fp_control();
    const gatednorm_status s_flush = gatednorm_rmsnorm_gated(&tx, NULL, &tw, &t1, NULL, NULL);
    const unsigned long long after = fp_control();
    fp_control_set(saved);
    if (s_flush) die("flushing caller: %s", gatednorm_last_error());
    if (memcmp(y0, y1, sizeof(float) * kRows * kCols)) die("a flushing, upward-rounding caller got other bits");
    if ((after & ~0x3full) != (caller & ~0x3full)) die("control state 0x%llx came back as 0x%llx", caller, after);

    /* One infinite row, the last (a worker's part, unless the caller took it): rstd 0, inf * 0. */
    for (int j = 0; j < kCols; ++j) x[(kRows - 1) * kCols + j] = INFINITY;
    for (int rep = 0; rep < 8; ++rep) {
        feclearexcept(FE_ALL_EXCEPT);
        if (gatednorm_rmsnorm_gated(&tx, NULL, &tw, &t1, NULL, NULL)) die("inf row: %s", gatednorm_last_error());
        const int raised = fetestexcept(FE_INVALID);
        if (!isnan(y1[(kRows - 1) * kCols])) die("inf row: y = %g, not NaN", (double)y1[(kRows - 1) * kCols]);
        if (!raised) die("inf * 0 in a pooled call left FE_INVALID clear (repeat %d)", rep);
    }
    feclearexcept(FE_ALL_EXCEPT);
    if (gatednorm_set_num_threads(threads_before)) die("set_num_threads: %s", gatednorm_last_error());
    free(x), free(y0), free(y1);
}
#endif

static void fixed_cases(void) {
    float w[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    const int64_t w_shape[1] = {8}, w_strides[1] = {1};
    const gatednorm_tensor tw = f32_desc(w, 1, w_shape, w_strides);
    gatednorm_rmsnorm_gated_params p;
    gatednorm_status st;
    if (gatednorm_rmsnorm_gated_params_init(&p, sizeof p) != GATEDNORM_STATUS_SUCCESS) die("params_init: %s", gatednorm_last_error());

    /* The packed entry with no struct: refused naming args (the fuzzer always passes one). */
    g_entry = "fixed case: gatednorm_rmsnorm_gated_packed(NULL)";
    st = gatednorm_rmsnorm_gated_packed(NULL);
    if (st != GATEDNORM_STATUS_INVALID_ARGUMENT || strncmp(gatednorm_last_error(), "args: ", 6) != 0)
        die("status %d, message '%s'", (int)st, gatednorm_last_error());

    /* An empty [0, 2^40, 2^40, 8] whose last two leading dims merge: their extents multiply
     * past int64 (collapse_rows). */
    g_entry = "fixed case: empty tensor, leading dims merging past 2^63";
    {
        const int64_t shape[4] = {0, (int64_t)1 << 40, (int64_t)1 << 40, 8}, strides[4] = {1, (int64_t)1 << 43, 8, 1};
        const gatednorm_tensor tx = f32_desc(NULL, 4, shape, strides), to = f32_desc(NULL, 4, shape, strides);
        st = gatednorm_rmsnorm_gated(&tx, NULL, &tw, &to, &p, NULL);
        if (st != GATEDNORM_STATUS_SUCCESS) die("refused: %s", gatednorm_last_error());
    }
    /* An empty [0, 4] with group_size 2 and a last-dim stride of 2^62: the group view's
     * stride 2 * 2^62 (rows_shape) was computed (signed overflow) before the stride was
     * refused.  Since the fifth session an empty tensor's strides are free (docs/c_abi.md):
     * the call is zero rows and succeeds, with no overflow on the way (UBSan watches). */
    g_entry = "fixed case: empty tensor, group view of a huge last-dim stride";
    {
        const int64_t shape[2] = {0, 4}, strides[2] = {4, (int64_t)1 << 62};
        const gatednorm_tensor tx = f32_desc(NULL, 2, shape, strides), to = f32_desc(NULL, 2, shape, strides);
        const int64_t ws[1] = {2};
        const gatednorm_tensor tw2 = f32_desc(w, 1, ws, w_strides);
        gatednorm_rmsnorm_gated_params pg = p;
        pg.group_size = 2;
        st = gatednorm_rmsnorm_gated(&tx, NULL, &tw2, &to, &pg, NULL);
        if (st != GATEDNORM_STATUS_SUCCESS) die("status %d: %s", (int)st, gatednorm_last_error());
    }
    /* An empty call on a device this build cannot run on used to succeed. */
    g_entry = "fixed case: empty call on a device this build cannot run on";
    for (int k = 0; k < 2; ++k) {
        const int64_t shape[2] = {0, 8}, strides[2] = {8, 1};
        gatednorm_tensor tx = f32_desc(NULL, 2, shape, strides), to = f32_desc(NULL, 2, shape, strides), tw2 = tw;
        const gatednorm_device d = {k ? (g_gpu_type ? g_gpu_type : GATEDNORM_DEVICE_TYPE_CUDA) : 12, k ? 1000 : 0};
        tx.device = to.device = tw2.device = d;
        st = gatednorm_rmsnorm_gated(&tx, NULL, &tw2, &to, &p, NULL);
        if (st != GATEDNORM_STATUS_NO_DEVICE || strncmp(gatednorm_last_error(), "x:", 2))
            die("device %d:%d: status %d: %s", d.device_type, d.device_id, (int)st, gatednorm_last_error());
    }
    /* rmsnorm_gated_fp8 with x [H*D] (no token dims) and head_dim D: the C layer took the H
     * heads for tokens and wanted q [H, D] (so a group spanning heads was refused), where the
     * header and the Python layer's _token_dims say q [H*D]. */
    g_entry = "fixed case: rmsnorm_gated_fp8, 1-D x viewed by head_dim";
    {
        float x8[8] = {1, 1, 1, 1, 1, 1, 1, 1}, sc[1] = {0};
        uint8_t q8[8] = {0};
        const int64_t s8[1] = {8}, st1[1] = {1}, s4[1] = {4}, s1[1] = {1};
        const gatednorm_tensor tx = f32_desc(x8, 1, s8, st1), tw4 = f32_desc(w, 1, s4, st1), ts = f32_desc(sc, 1, s1, st1);
        gatednorm_tensor tq = f32_desc(q8, 1, s8, st1);
        tq.dtype.code = GATEDNORM_DTYPE_CODE_UINT, tq.dtype.bits = 8;
        gatednorm_rmsnorm_gated_fp8_params pf;
        if (gatednorm_rmsnorm_gated_fp8_params_init(&pf, sizeof pf) != GATEDNORM_STATUS_SUCCESS) die("params_init: %s", gatednorm_last_error());
        pf.head_dim = 4, pf.quant.group_size = 8, pf.eps = 0.0f;
        st = gatednorm_rmsnorm_gated_fp8(&tx, NULL, &tw4, &tq, &ts, NULL, &pf, NULL);
        if (st != GATEDNORM_STATUS_SUCCESS) die("refused: %s", gatednorm_last_error());
        /* y = 1 everywhere: scale 1 / 448, every code 448 (0x7e) */
        for (int i = 0; i < 8; ++i)
            if (q8[i] != 0x7e) die("q[%d] = 0x%02x, not 0x7e", i, q8[i]);
        if (sc[0] != 1.0f / 448.0f) die("scale %.9g, not 1/448", (double)sc[0]);
    }
    /* The CPU GEMM of a TILED weight read each code with a shift the compiler loaded before
     * the call that sets it (UBSan: shift exponent too large), for this per-channel weight
     * (K = 208, not a multiple of the 64-wide tile): it must equal the PLAIN GEMM bit for bit. */
    g_entry = "fixed case: w4a16 TILED GEMM on the host equals the PLAIN one";
    {
        enum { N4 = 3, K4 = 208, M4 = 2 };
        static uint8_t qw[N4 * K4 / 2], packed[1 << 16];
        static uint16_t sc16[N4], a16[M4 * K4];
        float o1[M4 * N4], o2[M4 * N4];
        for (int i = 0; i < N4 * K4 / 2; ++i) qw[i] = (uint8_t)(i * 37 + 11);
        for (int i = 0; i < N4; ++i) sc16[i] = (uint16_t)(0x3c00 - 0x400 * (i + 2)); /* fp16 2^-2 .. 2^-4 */
        for (int i = 0; i < M4 * K4; ++i) a16[i] = (uint16_t)(0x3800 + (i * 13 % 512)); /* fp16 in [0.5, 1) */
        gatednorm_tensor ta, tq, ts, tp, to1, to2;
        const int64_t sa[2] = {M4, K4}, sta[2] = {K4, 1}, sq[2] = {N4, K4 / 2}, stq[2] = {K4 / 2, 1}, ss[2] = {N4, 1}, sts[2] = {1, 1};
        const int64_t so[2] = {M4, N4}, sto[2] = {N4, 1};
        ta = f32_desc(a16, 2, sa, sta), ta.dtype.bits = 16;
        tq = f32_desc(qw, 2, sq, stq), tq.dtype.code = GATEDNORM_DTYPE_CODE_UINT, tq.dtype.bits = 8;
        ts = f32_desc(sc16, 2, ss, sts), ts.dtype.bits = 16;
        to1 = f32_desc(o1, 2, so, sto), to2 = f32_desc(o2, 2, so, sto);
        gatednorm_w4a16_params pw;
        if (gatednorm_w4a16_params_init(&pw, sizeof pw) != GATEDNORM_STATUS_SUCCESS) die("params_init: %s", gatednorm_last_error());
        st = gatednorm_w4a16_gemm(&ta, &tq, &ts, NULL, NULL, &to1, NULL, &pw, NULL);
        if (st != GATEDNORM_STATUS_SUCCESS) die("PLAIN GEMM refused: %s", gatednorm_last_error());
        pw.dtype = GATEDNORM_W4A16_DTYPE_F16, pw.target = GATEDNORM_W4A16_TARGET_CUDA_MMA;
        size_t need = 0;
        pw.n = N4, pw.k = K4, pw.group_size = K4, pw.symmetric = 1;
        if (gatednorm_w4a16_prepacked_size(&pw, &need) != GATEDNORM_STATUS_SUCCESS || need > sizeof packed) die("prepacked_size: %s", gatednorm_last_error());
        const int64_t sp[1] = {(int64_t)need}, stp[1] = {1};
        tp = f32_desc(packed, 1, sp, stp), tp.dtype.code = GATEDNORM_DTYPE_CODE_UINT, tp.dtype.bits = 8;
        st = gatednorm_w4a16_prepack(&tq, &ts, NULL, &tp, &pw, NULL);
        if (st != GATEDNORM_STATUS_SUCCESS) die("prepack refused: %s", gatednorm_last_error());
        st = gatednorm_w4a16_gemm(&ta, &tp, NULL, NULL, NULL, &to2, NULL, &pw, NULL);
        if (st != GATEDNORM_STATUS_SUCCESS) die("TILED GEMM refused: %s", gatednorm_last_error());
        for (int i = 0; i < M4 * N4; ++i)
            if (memcmp(&o1[i], &o2[i], 4)) die("out[%d]: TILED %.9g, PLAIN %.9g", i, (double)o2[i], (double)o1[i]);
    }
    /* The same for the FP8 ops: an empty call on a device this build cannot run on succeeded
     * (the empty check came before the device check). */
    g_entry = "fixed case: empty FP8 ops on a device this build cannot run on";
    {
        const int64_t shape[2] = {0, 8}, strides[2] = {8, 1}, sshape[2] = {0, 1}, sstrides[2] = {1, 1};
        gatednorm_tensor tx = f32_desc(NULL, 2, shape, strides), tq = tx, ts = f32_desc(NULL, 2, sshape, sstrides), tw2 = tw;
        tq.dtype.code = GATEDNORM_DTYPE_CODE_UINT, tq.dtype.bits = 8;
        const gatednorm_device d = {12, 0};
        tx.device = tq.device = ts.device = tw2.device = d;
        gatednorm_group_quant_fp8_params pg;
        gatednorm_add_rmsnorm_params pa;
        gatednorm_rmsnorm_gated_fp8_params pf;
        if (gatednorm_group_quant_fp8_params_init(&pg, sizeof pg) || gatednorm_add_rmsnorm_params_init(&pa, sizeof pa) ||
            gatednorm_rmsnorm_gated_fp8_params_init(&pf, sizeof pf))
            die("params_init: %s", gatednorm_last_error());
        pg.quant.group_size = pa.quant.group_size = pf.quant.group_size = 8;
        for (int k = 0; k < 3; ++k) {
            st = k == 0 ? gatednorm_group_quant_fp8(&tx, &tq, &ts, &pg, NULL)
                 : k == 1 ? gatednorm_add_rmsnorm(&tx, NULL, &tw2, NULL, NULL, &tq, &ts, &pa, NULL)
                          : gatednorm_rmsnorm_gated_fp8(&tx, NULL, &tw2, &tq, &ts, NULL, &pf, NULL);
            if (st != GATEDNORM_STATUS_NO_DEVICE || strncmp(gatednorm_last_error(), "x:", 2))
                die("op %d: status %d: %s", k, (int)st, gatednorm_last_error());
        }
    }
#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__i386__))
    /* A caller trapping invalid / divide-by-zero / overflow (feenableexcept): NaN options are
     * refused by name and NaN / inf rows computed as documented, no SIGFPE (the library's
     * compares and inf * 0 trapped; cpu_fenv.h); the caller's traps are back afterwards.
     * Everything the driver itself computes is done before the traps go on. */
    g_entry = "fixed case: NaN / inf under the caller's floating-point traps";
    {
        float x8[8] = {INFINITY, 1, 1, 1, 1, 1, 1, 1}, y8[8], sc[1] = {0}, vals[3] = {NAN, INFINITY, 1e-45f};
        uint8_t q8[8], codes[3];
        const int64_t s8[1] = {8}, st1[1] = {1}, s1[1] = {1};
        const gatednorm_tensor tx = f32_desc(x8, 1, s8, st1), ty = f32_desc(y8, 1, s8, st1), ts = f32_desc(sc, 1, s1, st1);
        gatednorm_tensor tq = f32_desc(q8, 1, s8, st1);
        tq.dtype.code = GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FN, tq.dtype.bits = 8;
        gatednorm_rmsnorm_gated_params pn = p;
        pn.eps = NAN;
        gatednorm_group_quant_fp8_params pq;
        if (gatednorm_group_quant_fp8_params_init(&pq, sizeof pq) != GATEDNORM_STATUS_SUCCESS) die("params_init: %s", gatednorm_last_error());
        pq.quant.group_size = 8;
        gatednorm_group_quant_fp8_params pqn = pq;
        pqn.quant.fp8_max = NAN;
        const int traps = FE_INVALID | FE_DIVBYZERO | FE_OVERFLOW;
        if (feenableexcept(traps) == -1) die("feenableexcept failed");
        const gatednorm_status s_eps = gatednorm_rmsnorm_gated(&tx, NULL, &tw, &ty, &pn, NULL);
        const gatednorm_status s_row = gatednorm_rmsnorm_gated(&tx, NULL, &tw, &ty, &p, NULL);
        const gatednorm_status s_max = gatednorm_group_quant_fp8(&tx, &tq, &ts, &pqn, NULL);
        const gatednorm_status s_q = gatednorm_group_quant_fp8(&tx, &tq, &ts, &pq, NULL);
        const gatednorm_status s_enc = gatednorm_fp8_encode(vals, codes, 3, GATEDNORM_FP8_FORMAT_E4M3FN, 0.0f);
        const int still = fegetexcept();
        fedisableexcept(traps);
        if (s_eps != GATEDNORM_STATUS_INVALID_ARGUMENT || s_max != GATEDNORM_STATUS_INVALID_ARGUMENT)
            die("NaN options under traps: statuses %d, %d", (int)s_eps, (int)s_max);
        if (s_row != GATEDNORM_STATUS_SUCCESS || s_q != GATEDNORM_STATUS_SUCCESS || s_enc != GATEDNORM_STATUS_SUCCESS)
            die("NaN / inf data under traps: statuses %d, %d, %d", (int)s_row, (int)s_q, (int)s_enc);
        for (int i = 0; i < 8; ++i)  /* an inf in the row: rstd 0, inf * 0 = NaN first, 1 * 0 = 0 after */
            if (i ? y8[i] != 0.0f : !isnan(y8[i])) die("y[%d] = %g under traps", i, (double)y8[i]);
        if (!isnan(sc[0]) || codes[0] != 0x7f || codes[1] != 0x7e || codes[2] != 0x00)
            die("group scale %g, codes 0x%02x 0x%02x 0x%02x under traps", (double)sc[0], codes[0], codes[1], codes[2]);
        if ((still & traps) != traps) die("the caller's traps were not restored (0x%x)", still);
    }
#endif
#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
    fixed_case_fp_state();
#endif
    /* Stream calls with a handle on a build with no GPU backend: the message named nothing. */
    g_entry = "fixed case: stream handles on a CPU-only build";
    if (!g_gpu_type) {
        st = gatednorm_stream_synchronize((void *)0x1234);
        if (st != GATEDNORM_STATUS_NO_DEVICE || strncmp(gatednorm_last_error(), "stream:", 7))
            die("stream_synchronize: status %d: %s", (int)st, gatednorm_last_error());
        st = gatednorm_stream_destroy((void *)0x1234);
        if (st != GATEDNORM_STATUS_NO_DEVICE || strncmp(gatednorm_last_error(), "stream:", 7))
            die("stream_destroy: status %d: %s", (int)st, gatednorm_last_error());
    }
}

/* ======================================================== gatednorm_comm_set_algorithm */
static int fuzz_comm_set_algorithm(rng_t *r) {
    static const int32_t vals[] = {GATEDNORM_ALLREDUCE_ALGORITHM_AUTO, GATEDNORM_ALLREDUCE_ALGORITHM_ONE_SHOT,
                                   GATEDNORM_ALLREDUCE_ALGORITHM_TWO_SHOT, -1, 3, 4, 255, 256, INT32_MIN, INT32_MAX};
    const int32_t alg = pct(r, 80) ? PICK(r, vals) : (int32_t)rnd(r);
    const int null = pct(r, 10);
    const int valid = alg == GATEDNORM_ALLREDUCE_ALGORITHM_AUTO || alg == GATEDNORM_ALLREDUCE_ALGORITHM_ONE_SHOT ||
                      alg == GATEDNORM_ALLREDUCE_ALGORITHM_TWO_SHOT;
    enum { TT = 2, HH = 8 };
    const gatednorm_device cpu = {GATEDNORM_DEVICE_TYPE_CPU, 0};
    size_t bytes = 0;
    void *mine = NULL;
    uint8_t handle[GATEDNORM_COMM_HANDLE_BYTES];
    gatednorm_comm *comm = NULL;
    if (gatednorm_comm_buffer_size(1, TT * HH * sizeof(float), &bytes) != GATEDNORM_STATUS_SUCCESS ||
        gatednorm_comm_buffer_alloc(cpu, bytes, &mine, handle) != GATEDNORM_STATUS_SUCCESS)
        die("comm buffer: %s", gatednorm_last_error());
    if (gatednorm_comm_create(0, 1, &mine, bytes, cpu, &comm) != GATEDNORM_STATUS_SUCCESS) die("comm_create: %s", gatednorm_last_error());
    float *x = (float *)(void *)buf_new(TT * HH * sizeof(float)), *w = (float *)(void *)buf_new(HH * sizeof(float));
    float *y = (float *)(void *)buf_new(TT * HH * sizeof(float)), *want = (float *)(void *)buf_new(TT * HH * sizeof(float));
    for (int i = 0; i < TT * HH; ++i) x[i] = (float)input_value(r, DT_F32, -4, 2, 0), y[i] = NAN, want[i] = NAN;
    for (int i = 0; i < HH; ++i) w[i] = (float)(0.5 + 0.125 * (double)below(r, 9));
    set_sentinel();
    bufs_snapshot();
    gatednorm_status st = gatednorm_comm_set_algorithm(null ? NULL : comm, alg);
    int accepted = 1;
    if (st != GATEDNORM_STATUS_SUCCESS) {
        if (!null && valid) die("refused algorithm %d: %s", (int)alg, gatednorm_last_error());
        check_rejection(st, BIT(N_COMM) | BIT(N_ALGORITHM), null ? BIT(N_COMM) : BIT(N_ALGORITHM), "gatednorm_comm_set_algorithm");
        bufs_check("refused comm_set_algorithm");
        accepted = 0;
    } else if (null || !valid) {
        die("accepted comm %s, algorithm %d", null ? "NULL" : "(one rank)", (int)alg);
    }
    /* One rank: the sum is x itself, so the fused call is gatednorm_add_rmsnorm's, whatever the
     * algorithm (world size 1 has no peers). */
    const int64_t sx[2] = {TT, HH}, stx[2] = {HH, 1}, sw[1] = {HH}, stw[1] = {1};
    const gatednorm_tensor tx = f32_desc(x, 2, sx, stx), tw = f32_desc(w, 1, sw, stw), ty = f32_desc(y, 2, sx, stx), tv = f32_desc(want, 2, sx, stx);
    st = gatednorm_allreduce_add_rmsnorm(comm, &tx, NULL, &tw, NULL, &ty, NULL, NULL, NULL, NULL);
    if (st != GATEDNORM_STATUS_SUCCESS) die("allreduce_add_rmsnorm after algorithm %d (%s): %s", (int)alg, accepted ? "set" : "refused",
                                            gatednorm_last_error());
    if (gatednorm_add_rmsnorm(&tx, NULL, &tw, NULL, &tv, NULL, NULL, NULL, NULL) != GATEDNORM_STATUS_SUCCESS) die("add_rmsnorm: %s", gatednorm_last_error());
    if (memcmp(y, want, TT * HH * sizeof(float))) die("one rank's all-reduce differs from add_rmsnorm (algorithm %d)", (int)alg);
    if (gatednorm_comm_check(comm) != GATEDNORM_STATUS_SUCCESS) die("comm_check of a usable comm: %s", gatednorm_last_error());
    if (gatednorm_comm_check(NULL) == GATEDNORM_STATUS_SUCCESS || strncmp(gatednorm_last_error(), "comm:", 5))
        die("comm_check(NULL): %s", gatednorm_last_error());
    if (gatednorm_comm_destroy(comm) != GATEDNORM_STATUS_SUCCESS || gatednorm_comm_buffer_free(cpu, mine) != GATEDNORM_STATUS_SUCCESS)
        die("comm teardown: %s", gatednorm_last_error());
    return accepted;
}

/* ===================== the pool's size, gatednorm_last_kernel, comm buffer open / close / limit */
static int fuzz_runtime_rest(rng_t *r) {
    switch (below(r, 4)) {
    case 0: { /* set_num_threads, then get_num_threads reads it back (0: the default) */
        static const int32_t ns[] = {INT32_MIN, -7, -1, 0, 1, 2, 3, 5};
        const int32_t n = pct(r, 1) ? INT32_MAX : PICK(r, ns);
        set_sentinel();
        gatednorm_status st = gatednorm_set_num_threads(n);
        if (n < 0) {
            check_rejection(st, BIT(N_NUM_THREADS), BIT(N_NUM_THREADS), "gatednorm_set_num_threads");
        } else if (st != GATEDNORM_STATUS_SUCCESS) {
            die("set_num_threads(%d): %s", (int)n, gatednorm_last_error());
        }
        int32_t *got = pct(r, 20) ? NULL : (int32_t *)(void *)buf_new(sizeof(int32_t));
        if (got) *got = -12345;
        set_sentinel();
        bufs_snapshot();
        st = gatednorm_get_num_threads(got);
        if (!got) {
            check_rejection(st, BIT(N_NUM_THREADS), BIT(N_NUM_THREADS), "gatednorm_get_num_threads");
            bufs_check("refused get_num_threads");
        } else if (st != GATEDNORM_STATUS_SUCCESS || *got < 1 || (n >= 1 && n <= 5 && *got != n)) {
            die("get_num_threads after set %d: status %d, %d", (int)n, (int)st, (int)*got);
        }
        if (gatednorm_set_num_threads(0) != GATEDNORM_STATUS_SUCCESS) die("set_num_threads(0): %s", gatednorm_last_error());
        return n >= 0 && got != NULL;
    }
    case 1: { /* last_kernel: a terminated string whatever ran before */
        const char *k = gatednorm_last_kernel();
        if (!k || strlen(k) > 256) die("gatednorm_last_kernel: %s", k ? "a string past 256 bytes" : "NULL");
        return 1;
    }
    default: { /* a one-rank CPU comm: its limit, and its buffer opened again from its handle */
        const gatednorm_device cpu = {GATEDNORM_DEVICE_TYPE_CPU, 0};
        const size_t want = (size_t)between(r, 1, 1 << 16);
        size_t bytes = 0, *limit = pct(r, 15) ? NULL : (size_t *)(void *)buf_new(sizeof(size_t));
        void *mine = NULL, *opened = NULL, **out = pct(r, 15) ? NULL : &opened;
        uint8_t handle[GATEDNORM_COMM_HANDLE_BYTES];
        gatednorm_comm *comm = NULL;
        if (gatednorm_comm_buffer_size(1, want, &bytes) != GATEDNORM_STATUS_SUCCESS ||
            gatednorm_comm_buffer_alloc(cpu, bytes, &mine, handle) != GATEDNORM_STATUS_SUCCESS ||
            gatednorm_comm_create(0, 1, &mine, bytes, cpu, &comm) != GATEDNORM_STATUS_SUCCESS)
            die("one-rank comm: %s", gatednorm_last_error());
        int accepted = 1;
        const int null_comm = pct(r, 10);
        set_sentinel();
        gatednorm_status st = gatednorm_comm_max_input_bytes(null_comm ? NULL : comm, limit);
        if (null_comm || !limit) {
            check_rejection(st, BIT(N_COMM) | BIT(N_BYTES), null_comm ? BIT(N_COMM) : BIT(N_BYTES), "gatednorm_comm_max_input_bytes");
            accepted = 0;
        } else if (st != GATEDNORM_STATUS_SUCCESS || *limit < want) {
            die("comm_max_input_bytes: status %d, %zu bytes for a buffer sized for %zu", (int)st, *limit, want);
        }
        /* open: the handle, a corrupted one, or none */
        const int how = (int)below(r, 4); /* 0, 1: as made; 2: corrupted; 3: NULL */
        uint8_t bad[GATEDNORM_COMM_HANDLE_BYTES];
        memcpy(bad, handle, sizeof bad);
        if (how == 2) bad[below(r, 8)] ^= (uint8_t)(1u + below(r, 255));
        set_sentinel();
        st = gatednorm_comm_buffer_open(cpu, how == 3 ? NULL : how == 2 ? bad : handle, out);
        if (!out || how == 3) {
            check_rejection(st, BIT(N_BUFFER) | BIT(N_HANDLE), !out ? BIT(N_BUFFER) : BIT(N_HANDLE), "gatednorm_comm_buffer_open");
            accepted = 0;
        } else if (how < 2 && st != GATEDNORM_STATUS_SUCCESS) {
            die("comm_buffer_open of its own handle: %s", gatednorm_last_error());
        } else if (st != GATEDNORM_STATUS_SUCCESS) {
            check_rejection(st, BIT(N_HANDLE), BIT(N_HANDLE), "gatednorm_comm_buffer_open (corrupted handle)");
            accepted = 0;
        }
        if (st == GATEDNORM_STATUS_SUCCESS) { /* the same segment: a byte written through one mapping shows in the other */
            const size_t at = (size_t)between(r, 64, (int64_t)bytes - 1);
            ((volatile uint8_t *)mine)[at] = 0xA5;
            if (((volatile uint8_t *)opened)[at] != 0xA5) die("comm_buffer_open mapped another segment");
            ((volatile uint8_t *)mine)[at] = 0;
            if (gatednorm_comm_buffer_close(cpu, opened) != GATEDNORM_STATUS_SUCCESS) die("comm_buffer_close: %s", gatednorm_last_error());
        }
        set_sentinel();
        st = gatednorm_comm_buffer_close(cpu, NULL);
        check_rejection(st, BIT(N_BUFFER), BIT(N_BUFFER), "gatednorm_comm_buffer_close");
        /* unlink: the name goes (idempotent), the mapping stays; a second open finds nothing */
        set_sentinel();
        st = gatednorm_comm_buffer_unlink(cpu, NULL);
        check_rejection(st, BIT(N_BUFFER), BIT(N_BUFFER), "gatednorm_comm_buffer_unlink");
        for (int k = 0; k < 2; ++k)
            if (gatednorm_comm_buffer_unlink(cpu, mine) != GATEDNORM_STATUS_SUCCESS) die("comm_buffer_unlink: %s", gatednorm_last_error());
        ((volatile uint8_t *)mine)[bytes - 1] = 7; /* still mapped */
        set_sentinel();
        st = gatednorm_comm_buffer_open(cpu, handle, &opened);
        check_rejection(st, BIT(N_HANDLE), BIT(N_HANDLE), "gatednorm_comm_buffer_open (unlinked)");
        if (gatednorm_comm_destroy(comm) != GATEDNORM_STATUS_SUCCESS || gatednorm_comm_buffer_free(cpu, mine) != GATEDNORM_STATUS_SUCCESS)
            die("comm teardown: %s", gatednorm_last_error());
        return accepted;
    }
    }
}

/* ====================================================================== the table */
typedef struct {
    const char *name;
    unsigned weight;        /* share of the cases */
    int (*run)(rng_t *r);   /* one case: 1 accepted, 0 rejected; dies on a failed check */
    uint64_t accepted, rejected;
} entry_t;

/* ------------------------------------------------------------- XLA FFI handlers
 * gatednorm_xla_ffi_host / _gpu take a call frame of XLA's FFI C API (major version 0).  The
 * layout is declared here independently of xla_ffi.cpp (from the API's published header):
 * frames are built with honest buffers for rmsnorm_gated and then, in some cases, one lie
 * (an entry, a slot, an attribute, a rank or dtype XLA would never send, a params blob too
 * large, a bad shape) the handler must refuse through the frame's error_create, writing
 * nothing; honest frames must give the direct C call's bits. */
#include "xla_frame.h"
typedef struct { size_t struct_size; xla_version version; uint32_t traits; int64_t state_type_id; } xla_metadata;
typedef struct { xla_ext base; xla_metadata *metadata; } xla_metadata_ext;

static char g_xla_message[1024];
static int g_xla_errc;
static int g_xla_error_token;  /* its address: the "error" the fake API returns */
static void *xla_error_create(xla_error_args *a) {
    if (!a || a->struct_size != sizeof(xla_error_args) || !a->message) die("xla handler: a malformed error_create call");
    snprintf(g_xla_message, sizeof g_xla_message, "%s", a->message);
    g_xla_errc = a->errc;
    return &g_xla_error_token;
}

/* The attributes and API table of one fake call, and the frame over them (its operand and
 * result lists filled by the generator). */
typedef struct {
    xla_scalar entry;
    xla_array slots, params, views;
    xla_span names[4];
    xla_span *name_ptrs[4];
    int types[4];
    void *attrs[4];
    xla_api api;
    xla_frame f;
} xla_call;
static void xla_call_init(xla_call *c, int64_t *entry, int64_t *slots, size_t nslots, void *params, size_t psize) {
    memset(c, 0, sizeof *c);
    c->entry.dtype = 5, c->entry.value = entry;
    c->slots.dtype = 5, c->slots.size = nslots, c->slots.data = slots;
    c->params.dtype = 6, c->params.size = psize, c->params.data = params;
    const char *names[3] = {"entry", "params", "slots"};  /* sorted, as XLA passes them */
    void *attrs[3] = {&c->entry, &c->params, &c->slots};
    for (int i = 0; i < 3; ++i) {
        c->names[i].ptr = names[i], c->names[i].len = strlen(names[i]);
        c->name_ptrs[i] = &c->names[i];
        c->types[i] = i == 0 ? 3 : 1;
        c->attrs[i] = attrs[i];
    }
    c->api.struct_size = sizeof c->api;
    c->api.error_create = xla_error_create;
    c->f.struct_size = sizeof c->f, c->f.api = &c->api, c->f.stage = 3;
    c->f.args.struct_size = c->f.rets.struct_size = sizeof(xla_list);
    c->f.attrs.struct_size = sizeof(xla_attrs), c->f.attrs.size = 3;
    c->f.attrs.types = c->types, c->f.attrs.names = c->name_ptrs, c->f.attrs.attrs = c->attrs;
}
/* The optional fourth attribute, views (int64 records: slot, ndim, shape..., strides...). */
static void xla_call_add_views(xla_call *c, int64_t *views, size_t n) {
    c->views.dtype = 5, c->views.size = n, c->views.data = views;
    c->names[3].ptr = "views", c->names[3].len = 5;
    c->name_ptrs[3] = &c->names[3];
    c->types[3] = 1;
    c->attrs[3] = &c->views;
    c->f.attrs.size = 4;
}

static int fuzz_xla_ffi(rng_t *r) {
    const int64_t T = between(r, 1, 5), H = between(r, 1, 3), D = 8 * between(r, 1, 8);
    const int64_t n = T * H * D;
    const int with_z = pct(r, 70);
    unsigned char *x = buf_new((size_t)n * 2), *z = buf_new((size_t)n * 2), *w = buf_new((size_t)D * 4);
    unsigned char *out = buf_new((size_t)n * 2), *want = buf_new((size_t)n * 2);
    for (int64_t i = 0; i < n; ++i) {  /* finite bf16 values in [-4, 4) */
        const uint16_t bx = (uint16_t)(0x3c00u + below(r, 0x0300u)) | (uint16_t)(below(r, 2) << 15);
        const uint16_t bz = (uint16_t)(0x3c00u + below(r, 0x0300u)) | (uint16_t)(below(r, 2) << 15);
        memcpy(x + 2 * i, &bx, 2);
        memcpy(z + 2 * i, &bz, 2);
    }
    for (int64_t i = 0; i < D; ++i) { const float v = 0.5f + (float)below(r, 1000) / 1000.0f; memcpy(w + 4 * i, &v, 4); }
    memset(out, 0x7f, (size_t)n * 2);

    int64_t xdims[3] = {T, H, D}, wdims[1] = {D};
    xla_buffer bx = {sizeof(xla_buffer), NULL, 16, x, 3, xdims}, bz = {sizeof(xla_buffer), NULL, 16, z, 3, xdims};
    xla_buffer bw = {sizeof(xla_buffer), NULL, 11, w, 1, wdims}, bo = {sizeof(xla_buffer), NULL, 16, out, 3, xdims};
    void *args[3] = {&bx, with_z ? (void *)&bz : (void *)&bw, &bw};
    int arg_types[3] = {1, 1, 1}, ret_types[2] = {1, 1};
    void *rets[2] = {&bo, &bo};  /* the second item lies past rets.size (1): never a buffer of the call */
    int64_t entry = 0;
    int64_t slots[5] = {0, with_z ? 1 : -1, with_z ? 2 : 1, -2, -2};
    gatednorm_rmsnorm_gated_params prm;
    gatednorm_rmsnorm_gated_params_init(&prm, sizeof prm);
    prm.eps = 1e-5f;
    static unsigned char params[5008];
    size_t params_size = pct(r, 20) ? 0 : sizeof prm;
    memcpy(params, &prm, sizeof prm);
    static xla_call c;
    xla_call_init(&c, &entry, slots, 4, params, params_size);
    xla_frame *f = &c.f;
    f->args.size = with_z ? 3 : 2, f->args.types = arg_types, f->args.items = args;
    f->rets.size = 1, f->rets.types = ret_types, f->rets.items = rets;

    /* At most one lie; `refuse`: the handler must answer with an error and write nothing;
     * `expect`: what its message must then say, where one bound decides (a mutation review
     * found the off-by-one forms of these checks passing: entry 5, rank 9, 5 slots, ...). */
    int refuse = 1, quiet = 0;
    const char *expect = NULL;
    xla_metadata md;
    xla_metadata_ext mext;
    int64_t bigdims[10] = {1, 1, 1, 1, 1, 1, 1, 1, T * H, D};
    switch (below(r, 26)) {
        case 0: entry = pct(r, 50) ? 5 : -1; expect = "entry:"; break;        /* 0..4 are entries */
        case 1: c.slots.size = 3; expect = "slots:"; break;
        case 2: slots[(int)below(r, 4)] = pct(r, 50) ? 7 : -9; break;
        case 3: c.params.size = 600; break;
        case 4: c.entry.dtype = 4; break;
        case 5: c.names[(int)below(r, 3)].len = 3; break;
        case 6: bx.rank = 10; bx.dims = bigdims; break;
        case 7: bo.dtype = 12; break;                       /* f64 out: the entry refuses it */
        case 8: bx.dtype = 99; break;                        /* no such element type */
        case 9: wdims[0] = D + 8; break;                     /* weight shape: the entry names it */
        case 10: f->stage = (int)below(r, 3); refuse = 0; quiet = 1; break;   /* not EXECUTE: nothing done */
        case 11:
            memset(&md, 0, sizeof md);
            mext.base.struct_size = sizeof mext; mext.base.type = 1; mext.base.next = NULL; mext.metadata = &md;
            f->ext = &mext.base; refuse = 0; quiet = 1;
            break;
        case 12: c.params.size = 2; break;                   /* no struct_size to read */
        case 13: { const uint32_t lie = (uint32_t)sizeof prm + 8; memcpy(params, &lie, 4); c.params.size = sizeof prm; break; }
        case 14: f->attrs.names = NULL; break;
        case 15: bx.dims = NULL; break;
        case 16: {  /* a params blob past the handler's 4096-byte copy, stating its own size */
            const uint32_t big = 5000;
            memcpy(params, &big, 4);
            c.params.size = 5000;
            expect = "params:";
            break;
        }
        case 17: slots[3] = -3; expect = "names no buffer"; break;          /* result 1 of a 1-item list */
        case 18: arg_types[0] = 2; expect = "slots[0]"; break;              /* a token, not a buffer */
        case 19: bx.rank = 9; bx.dims = bigdims + 1; expect = "9 dims"; break;   /* one past 8 */
        case 20: c.slots.size = 5; expect = "slots:"; break;                /* one slot too many */
        default: refuse = 0; break;
    }
    if (!refuse && !quiet) buf_allow(out, (size_t)n * 2);
    g_xla_message[0] = 0;
    bufs_snapshot();
    void *err = gatednorm_xla_ffi_host(f);
    bufs_check("gatednorm_xla_ffi_host");
    if (refuse) {
        if (err != &g_xla_error_token || !g_xla_message[0]) die("xla handler accepted a lying frame (case of seed)");
        if (expect && !strstr(g_xla_message, expect)) die("xla handler's refusal says \"%s\", not \"%s\"", g_xla_message, expect);
        if (!strstr(g_xla_message, "slots") && !strstr(g_xla_message, "entry") && !strstr(g_xla_message, "attributes") &&
            !strstr(g_xla_message, "params") && !strstr(g_xla_message, "x:") && !strstr(g_xla_message, "out:") &&
            !strstr(g_xla_message, "weight:"))
            die("xla handler's refusal names no argument: %s", g_xla_message);
        return 0;
    }
    if (err) die("xla handler refused an honest frame: %s", g_xla_message);
    if (quiet) {
        if (f->ext && (md.version.major != 0 || md.version.minor < 1)) die("xla handler's metadata: version %d.%d", md.version.major, md.version.minor);
        return 1;
    }
    gatednorm_tensor tx, tz, tw, tw2;
    memset(&tx, 0, sizeof tx);
    tx.data = x; tx.device.device_type = GATEDNORM_DEVICE_TYPE_CPU; tx.ndim = 3;
    tx.dtype.code = GATEDNORM_DTYPE_CODE_BFLOAT; tx.dtype.bits = 16; tx.dtype.lanes = 1;
    tx.shape[0] = T; tx.shape[1] = H; tx.shape[2] = D; tx.strides[0] = H * D; tx.strides[1] = D; tx.strides[2] = 1;
    tz = tx; tz.data = z;
    gatednorm_tensor to = tx; to.data = want;
    memset(&tw, 0, sizeof tw);
    tw.data = w; tw.device = tx.device; tw.ndim = 1; tw.dtype.code = GATEDNORM_DTYPE_CODE_FLOAT; tw.dtype.bits = 32;
    tw.dtype.lanes = 1; tw.shape[0] = D; tw.strides[0] = 1;
    tw2 = tw;
    buf_allow(want, (size_t)n * 2);
    if (gatednorm_rmsnorm_gated(&tx, with_z ? &tz : NULL, &tw2, &to, params_size ? &prm : NULL, NULL) != GATEDNORM_STATUS_SUCCESS)
        die("direct rmsnorm_gated refused what the handler took: %s", gatednorm_last_error());
    if (memcmp(out, want, (size_t)n * 2) != 0) die("xla handler's output differs from the direct call's");
    return 1;
}

/* add_rmsnorm through the handler: residual_out the residual's own buffer (XLA's aliased
 * result: the in-place form) or another one, with y; the direct call's bits either way. */
static int fuzz_xla_ffi_add(rng_t *r) {
    const int64_t T = between(r, 1, 4), H = 8 * between(r, 32, 64);  /* hidden 256..512: the row kernel */
    const int64_t n = T * H;
    const int aliased = pct(r, 50);
    unsigned char *x = buf_new((size_t)n * 2), *res = buf_new((size_t)n * 2), *w = buf_new((size_t)H * 4);
    unsigned char *res_out = buf_new((size_t)n * 2), *y = buf_new((size_t)n * 2);
    unsigned char *res_want = buf_new((size_t)n * 2), *y_want = buf_new((size_t)n * 2);
    for (int64_t i = 0; i < n; ++i) {
        const uint16_t a = (uint16_t)(0x3c00u + below(r, 0x0300u)) | (uint16_t)(below(r, 2) << 15);
        const uint16_t b = (uint16_t)(0x3c00u + below(r, 0x0300u)) | (uint16_t)(below(r, 2) << 15);
        memcpy(x + 2 * i, &a, 2);
        memcpy(res + 2 * i, &b, 2);
    }
    for (int64_t i = 0; i < H; ++i) { const float v = 0.5f + (float)below(r, 1000) / 1000.0f; memcpy(w + 4 * i, &v, 4); }
    memcpy(res_want, res, (size_t)n * 2);
    memset(res_out, 0x7f, (size_t)n * 2);
    memset(y, 0x7f, (size_t)n * 2);
    int64_t dims[2] = {T, H}, wdims[1] = {H};
    xla_buffer bx = {sizeof(xla_buffer), NULL, 16, x, 2, dims}, br = {sizeof(xla_buffer), NULL, 16, res, 2, dims};
    xla_buffer bw = {sizeof(xla_buffer), NULL, 11, w, 1, wdims};
    xla_buffer bro = {sizeof(xla_buffer), NULL, 16, aliased ? res : res_out, 2, dims}, by = {sizeof(xla_buffer), NULL, 16, y, 2, dims};
    void *args[3] = {&bx, &br, &bw}, *rets[2] = {&bro, &by};
    int types[3] = {1, 1, 1};
    int64_t entry = 2, slots[7] = {0, 1, 2, -2, -3, -1, -1};
    gatednorm_add_rmsnorm_params prm;
    gatednorm_add_rmsnorm_params_init(&prm, sizeof prm);
    static xla_call c;
    xla_call_init(&c, &entry, slots, 7, &prm, sizeof prm);
    c.f.args.size = 3, c.f.args.types = types, c.f.args.items = args;
    c.f.rets.size = 2, c.f.rets.types = types, c.f.rets.items = rets;
    buf_allow(aliased ? res : res_out, (size_t)n * 2);
    buf_allow(y, (size_t)n * 2);
    bufs_snapshot();
    if (gatednorm_xla_ffi_host(&c.f)) die("xla handler refused an honest add_rmsnorm frame: %s", g_xla_message);
    bufs_check("gatednorm_xla_ffi_host (add_rmsnorm)");
    gatednorm_tensor tx, tr, tw, ty;
    memset(&tx, 0, sizeof tx);
    tx.data = x; tx.device.device_type = GATEDNORM_DEVICE_TYPE_CPU; tx.ndim = 2;
    tx.dtype.code = GATEDNORM_DTYPE_CODE_BFLOAT; tx.dtype.bits = 16; tx.dtype.lanes = 1;
    tx.shape[0] = T; tx.shape[1] = H; tx.strides[0] = H; tx.strides[1] = 1;
    tr = tx; tr.data = res_want;
    ty = tx; ty.data = y_want;
    memset(&tw, 0, sizeof tw);
    tw.data = w; tw.device = tx.device; tw.ndim = 1; tw.dtype.code = GATEDNORM_DTYPE_CODE_FLOAT; tw.dtype.bits = 32;
    tw.dtype.lanes = 1; tw.shape[0] = H; tw.strides[0] = 1;
    buf_allow(res_want, (size_t)n * 2);
    buf_allow(y_want, (size_t)n * 2);
    if (gatednorm_add_rmsnorm(&tx, &tr, &tw, NULL, &ty, NULL, NULL, &prm, NULL) != GATEDNORM_STATUS_SUCCESS)
        die("direct add_rmsnorm refused what the handler took: %s", gatednorm_last_error());
    if (memcmp(aliased ? res : res_out, res_want, (size_t)n * 2) || memcmp(y, y_want, (size_t)n * 2))
        die("xla handler's add_rmsnorm (%s) differs from the direct call's", aliased ? "in place" : "residual_out");
    return 1;
}

/* group_quant_fp8 through the handler (entry 3) with column-major scales, as jax_ops sends
 * them: the scales result is a [K, T'] buffer (T' = T, or T rounded up to 4) and a `views`
 * record makes the entry's tensor its [T, K] view, strides (1, T').  Honest frames give the
 * direct call's bits on a strided scales tensor (the padding untouched); one lie about the
 * views (cut short, a slot out of range or viewed twice, ndim 9, a negative stride, offsets
 * that overflow or reach past the buffer, a view that overlaps itself, the wrong attribute
 * type, negative buffer dims whose product is the view's need: a review found the view hid
 * them from the entry's checks) is refused naming views or scales, writing nothing. */
static int fuzz_xla_ffi_views(rng_t *r) {
    const int64_t T = between(r, 1, 6), K = between(r, 1, 4), G = 32, row = G * K;
    const int64_t tp = pct(r, 50) ? (T + 3) / 4 * 4 : T;
    unsigned char *x = buf_new((size_t)(T * row) * 2), *q = buf_new((size_t)(T * row)), *s = buf_new((size_t)(K * tp) * 4);
    unsigned char *q_want = buf_new((size_t)(T * row)), *s_want = buf_new((size_t)(K * tp) * 4);
    for (int64_t i = 0; i < T * row; ++i) {
        const uint16_t b = (uint16_t)(0x3c00u + below(r, 0x0300u)) | (uint16_t)(below(r, 2) << 15);
        memcpy(x + 2 * i, &b, 2);
    }
    memset(q, 0x35, (size_t)(T * row));
    memset(s, 0x7f, (size_t)(K * tp) * 4);
    memcpy(q_want, q, (size_t)(T * row));
    memcpy(s_want, s, (size_t)(K * tp) * 4);
    int64_t xdims[2] = {T, row}, sdims[2] = {K, tp};
    xla_buffer bx = {sizeof(xla_buffer), NULL, 16, x, 2, xdims}, bq = {sizeof(xla_buffer), NULL, 20, q, 2, xdims};
    xla_buffer bs = {sizeof(xla_buffer), NULL, 11, s, 2, sdims};
    void *args[1] = {&bx}, *rets[2] = {&bq, &bs};
    int types[2] = {1, 1};
    int64_t entry = 3, slots[3] = {0, -2, -3};
    int64_t views[16] = {2, 2, T, K, 1, tp};
    gatednorm_group_quant_fp8_params prm;
    gatednorm_group_quant_fp8_params_init(&prm, sizeof prm);
    prm.quant.group_size = G;
    static xla_call c;
    xla_call_init(&c, &entry, slots, 3, &prm, sizeof prm);
    c.f.args.size = 1, c.f.args.types = types, c.f.args.items = args;
    c.f.rets.size = 2, c.f.rets.types = types, c.f.rets.items = rets;
    xla_call_add_views(&c, views, 6);
    int refuse = 1;
    const char *expect = "views:";
    switch (below(r, 16)) {
        case 0: c.views.size = 5; break;                                         /* cut short */
        case 1: views[0] = 3; break;                                             /* slot past the entry's 3 */
        case 2: views[0] = -1; break;
        case 3: slots[2] = -1; expect = "views: slot 2"; break;                  /* a NULL slot viewed */
        case 4: memcpy(views + 6, views, 6 * sizeof *views); c.views.size = 12; expect = "viewed twice"; break;
        case 5: views[1] = 9; break;                                             /* ndim past 8 */
        case 6: views[4] = -1; expect = "negative"; break;
        case 7: views[2] = tp + 1; expect = "reaches element"; break;           /* one column past the buffer */
        case 8: views[5] = INT64_MAX / 2 + 1; views[3] = K + 2; expect = "overflow"; break;   /* (K + 1) * that > INT64_MAX */
        case 9: c.views.dtype = 4; break;                                        /* int32 records */
        case 11: sdims[0] = -1; sdims[1] = -K * tp; expect = "scales: dim"; break;  /* dims < 0 whose product is right */
        case 10:                                                                 /* T tokens on one scale row */
            if (T < 2) { refuse = 0; break; }
            views[4] = 0; expect = "scales:"; break;
        default: refuse = 0; break;
    }
    if (!refuse) buf_allow(q, (size_t)(T * row)), buf_allow(s, (size_t)(K * tp) * 4);
    g_xla_message[0] = 0;
    bufs_snapshot();
    void *err = gatednorm_xla_ffi_host(&c.f);
    bufs_check("gatednorm_xla_ffi_host (views)");
    if (refuse) {
        if (err != &g_xla_error_token || !g_xla_message[0]) die("xla handler accepted a lying views frame");
        if (!strstr(g_xla_message, expect)) die("xla handler's views refusal says \"%s\", not \"%s\"", g_xla_message, expect);
        return 0;
    }
    if (err) die("xla handler refused an honest views frame: %s", g_xla_message);
    gatednorm_tensor tx, tq, ts;
    memset(&tx, 0, sizeof tx);
    tx.data = x; tx.device.device_type = GATEDNORM_DEVICE_TYPE_CPU; tx.ndim = 2;
    tx.dtype.code = GATEDNORM_DTYPE_CODE_BFLOAT; tx.dtype.bits = 16; tx.dtype.lanes = 1;
    tx.shape[0] = T; tx.shape[1] = row; tx.strides[0] = row; tx.strides[1] = 1;
    tq = tx; tq.data = q_want; tq.dtype.code = GATEDNORM_DTYPE_CODE_FLOAT8_E4M3FN; tq.dtype.bits = 8;
    ts = tx; ts.data = s_want; ts.dtype.code = GATEDNORM_DTYPE_CODE_FLOAT; ts.dtype.bits = 32;
    ts.shape[1] = K; ts.strides[0] = 1; ts.strides[1] = tp;
    buf_allow(q_want, (size_t)(T * row));
    buf_allow(s_want, (size_t)(K * tp) * 4);
    if (gatednorm_group_quant_fp8(&tx, &tq, &ts, &prm, NULL) != GATEDNORM_STATUS_SUCCESS)
        die("direct group_quant_fp8 refused what the handler took: %s", gatednorm_last_error());
    if (memcmp(q, q_want, (size_t)(T * row)) || memcmp(s, s_want, (size_t)(K * tp) * 4))
        die("xla handler's column-major scales differ from the direct call's");
    return 1;
}

/* w4a16_gemm through the handler (entry 4): a PLAIN weight, zeros, bias and a workspace result
 * now and then; honest frames give the direct call's bits, one lie (a slot count, a scales
 * shape, a dtype) is refused naming it, writing nothing. */
static int fuzz_xla_ffi_w4a16(rng_t *r) {
    const int64_t M = between(r, 1, 4), N = between(r, 1, 24), G = 32, ng = between(r, 1, 4), K = G * ng;
    const int has_z = pct(r, 60), has_b = pct(r, 40), has_ws = pct(r, 30);
    unsigned char *a = buf_new((size_t)(M * K) * 2), *q = buf_new((size_t)(N * K / 2)), *sc = buf_new((size_t)(N * ng) * 4);
    unsigned char *ze = buf_new((size_t)(N * ng)), *bias = buf_new((size_t)N * 4), *ws = buf_new(64);
    unsigned char *out = buf_new((size_t)(M * N) * 2), *want = buf_new((size_t)(M * N) * 2);
    for (int64_t i = 0; i < M * K; ++i) {
        const uint16_t b = (uint16_t)(0x3c00u + below(r, 0x0300u)) | (uint16_t)(below(r, 2) << 15);
        memcpy(a + 2 * i, &b, 2);
    }
    for (int64_t i = 0; i < N * K / 2; ++i) q[i] = (unsigned char)below(r, 256);
    for (int64_t i = 0; i < N * ng; ++i) {
        const float v = 0.01f + (float)below(r, 1000) / 10000.0f;
        memcpy(sc + 4 * i, &v, 4);
        ze[i] = (unsigned char)below(r, 16);
    }
    for (int64_t i = 0; i < N; ++i) { const float v = (float)below(r, 2000) / 1000.0f - 1.0f; memcpy(bias + 4 * i, &v, 4); }
    memset(out, 0x7f, (size_t)(M * N) * 2);
    int64_t adims[2] = {M, K}, qdims[2] = {N, K / 2}, sdims[2] = {N, ng}, bdims[1] = {N}, odims[2] = {M, N}, wdims[1] = {64};
    xla_buffer ba = {sizeof(xla_buffer), NULL, 16, a, 2, adims}, bq = {sizeof(xla_buffer), NULL, 6, q, 2, qdims};
    xla_buffer bs = {sizeof(xla_buffer), NULL, 11, sc, 2, sdims}, bz = {sizeof(xla_buffer), NULL, 6, ze, 2, sdims};
    xla_buffer bb = {sizeof(xla_buffer), NULL, 11, bias, 1, bdims}, bo = {sizeof(xla_buffer), NULL, 16, out, 2, odims};
    xla_buffer bw = {sizeof(xla_buffer), NULL, 6, ws, 1, wdims};
    void *args[5], *rets[2] = {&bo, &bw};
    int types[5] = {1, 1, 1, 1, 1};
    int64_t slots[7] = {0, 1, 2, -1, -1, -2, has_ws ? -3 : -1}, nargs = 3;
    args[0] = &ba, args[1] = &bq, args[2] = &bs;
    if (has_z) slots[3] = nargs, args[nargs++] = &bz;
    if (has_b) slots[4] = nargs, args[nargs++] = &bb;
    gatednorm_w4a16_params prm;
    gatednorm_w4a16_params_init(&prm, sizeof prm);
    int64_t entry = 4;
    static xla_call c;
    xla_call_init(&c, &entry, slots, 7, &prm, sizeof prm);
    c.f.args.size = nargs, c.f.args.types = types, c.f.args.items = args;
    c.f.rets.size = has_ws ? 2 : 1, c.f.rets.types = types, c.f.rets.items = rets;
    int refuse = 1;
    int64_t bad_sdims[2] = {N + 1, ng};
    switch (below(r, 8)) {
        case 0: c.slots.size = 4; break;                      /* the rmsnorm_gated slot count */
        case 1: bs.dims = bad_sdims; break;                   /* scales [N + 1, K/G]: the entry names it */
        case 2: ba.dtype = 11; break;                         /* f32 activations: refused by name */
        case 3: bq.dtype = 16; break;                         /* bf16 qweight */
        default: refuse = 0; break;
    }
    buf_allow(ws, 64);
    if (!refuse) buf_allow(out, (size_t)(M * N) * 2);
    g_xla_message[0] = 0;
    bufs_snapshot();
    void *err = gatednorm_xla_ffi_host(&c.f);
    bufs_check("gatednorm_xla_ffi_host (w4a16_gemm)");
    if (refuse) {
        if (err != &g_xla_error_token || !g_xla_message[0]) die("xla handler accepted a lying w4a16 frame");
        if (!strstr(g_xla_message, "slots") && !strstr(g_xla_message, "scales") && !strstr(g_xla_message, "a:") &&
            !strstr(g_xla_message, "qweight") && !strstr(g_xla_message, "params"))
            die("xla handler's w4a16 refusal names no argument: %s", g_xla_message);
        return 0;
    }
    if (err) die("xla handler refused an honest w4a16 frame: %s", g_xla_message);
    gatednorm_tensor ta, tq, ts, tz, tb, to;
    memset(&ta, 0, sizeof ta);
    ta.device.device_type = GATEDNORM_DEVICE_TYPE_CPU, ta.dtype.lanes = 1, ta.ndim = 2;
    tq = ts = tz = to = ta;
    ta.data = a, ta.dtype.code = GATEDNORM_DTYPE_CODE_BFLOAT, ta.dtype.bits = 16;
    ta.shape[0] = M, ta.shape[1] = K, ta.strides[0] = K, ta.strides[1] = 1;
    tq.data = q, tq.dtype.code = GATEDNORM_DTYPE_CODE_UINT, tq.dtype.bits = 8;
    tq.shape[0] = N, tq.shape[1] = K / 2, tq.strides[0] = K / 2, tq.strides[1] = 1;
    ts.data = sc, ts.dtype.code = GATEDNORM_DTYPE_CODE_FLOAT, ts.dtype.bits = 32;
    ts.shape[0] = N, ts.shape[1] = ng, ts.strides[0] = ng, ts.strides[1] = 1;
    tz = ts, tz.data = ze, tz.dtype.code = GATEDNORM_DTYPE_CODE_UINT, tz.dtype.bits = 8;
    tb = ts, tb.data = bias, tb.ndim = 1, tb.shape[0] = N, tb.strides[0] = 1;
    to = ta, to.data = want, to.shape[1] = N, to.strides[0] = N;
    buf_allow(want, (size_t)(M * N) * 2);
    if (gatednorm_w4a16_gemm(&ta, &tq, &ts, has_z ? &tz : NULL, has_b ? &tb : NULL, &to, NULL, &prm, NULL) != GATEDNORM_STATUS_SUCCESS)
        die("direct w4a16_gemm refused what the handler took: %s", gatednorm_last_error());
    if (memcmp(out, want, (size_t)(M * N) * 2) != 0) die("xla handler's w4a16_gemm differs from the direct call's");
    return 1;
}

/* Every entry point of gatednorm.h has a generator here.  A new op (gatednorm_rmsnorm_gated_fp8,
 * gatednorm_rmsnorm, gatednorm_add_rmsnorm, gatednorm_group_quant_fp8, the W4A16 calls) adds
 * one row: its generator builds honest descriptors (and lies only that validation must refuse)
 * with the helpers above (buf_new, make_layout, reach, the must_reject / open_case
 * expectations, check_rejection, bufs_check) and checks accepted calls against a reference. */
static entry_t kEntries[] = {
    {"gatednorm_rmsnorm_gated", 64, fuzz_rmsnorm_gated, 0, 0},
    {"gatednorm_rmsnorm_gated_params_init", 8, fuzz_params_init, 0, 0},
    {"gatednorm_rmsnorm_gated_fp8", 14, fuzz_rmsnorm_gated_fp8, 0, 0},
    {"gatednorm_add_rmsnorm", 14, fuzz_add_rmsnorm, 0, 0},
    {"gatednorm_group_quant_fp8", 10, fuzz_group_quant, 0, 0},
    {"gatednorm_fp8_encode", 3, fuzz_fp8_encode, 0, 0},
    {"gatednorm_*_params_init (fp8, add, quant, w4a16)", 4, fuzz_new_params_init, 0, 0},
    {"gatednorm_w4a16_gemm (PLAIN)", 6, fuzz_w4a16_gemm, 0, 0},
    {"gatednorm_w4a16_prepack + TILED gemm", 3, fuzz_w4a16_prepack, 0, 0},
    {"gatednorm_w4a16_prepacked/workspace_size", 3, fuzz_w4a16_sizes, 0, 0},
    {"gatednorm_malloc/free", 6, fuzz_malloc_free, 0, 0},
    {"gatednorm_memcpy", 5, fuzz_memcpy, 0, 0},
    {"gatednorm_memset", 4, fuzz_memset, 0, 0},
    {"gatednorm_stream_*/device_synchronize", 4, fuzz_streams, 0, 0},
    {"gatednorm_pointer_device", 3, fuzz_pointer_device, 0, 0},
    {"gatednorm_device_count", 2, fuzz_device_count, 0, 0},
    {"gatednorm_device_name", 2, fuzz_device_name, 0, 0},
    {"gatednorm_device_attribute", 2, fuzz_device_attribute, 0, 0},
    {"gatednorm_status_string", 1, fuzz_status_string, 0, 0},
    {"gatednorm_version/build_info", 1, fuzz_version, 0, 0},
    {"gatednorm_comm_set_algorithm", 2, fuzz_comm_set_algorithm, 0, 0},
    {"gatednorm_xla_ffi_host", 4, fuzz_xla_ffi, 0, 0},
    {"gatednorm_xla_ffi_host (add_rmsnorm, aliased)", 2, fuzz_xla_ffi_add, 0, 0},
    {"gatednorm_xla_ffi_host (w4a16_gemm)", 2, fuzz_xla_ffi_w4a16, 0, 0},
    {"gatednorm_xla_ffi_host (column-major scales view)", 2, fuzz_xla_ffi_views, 0, 0},
    {"gatednorm_*_num_threads, last_kernel, comm_buffer_open/close/unlink, comm_max_input_bytes", 2, fuzz_runtime_rest, 0, 0},
};
enum { N_ENTRIES = sizeof kEntries / sizeof kEntries[0] };

static uint64_t case_state(uint64_t seed, uint64_t k) {
    rng_t r = {seed ^ 0x6a09e667f3bcc909ull};
    r.s += rnd(&r) ^ (k * 0xbb67ae8584caa73bull);
    return rnd(&r);
}

static uint64_t parse_u64(const char *s, const char *opt) {
    char *end;
    const unsigned long long v = strtoull(s ? s : "", &end, 0);
    if (!s || !*s || *end) {
        fprintf(stderr, "fuzz_abi: %s needs a number\n", opt);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    uint64_t cases = 100000, only = UINT64_MAX;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--seed")) g_seed = parse_u64(i + 1 < argc ? argv[++i] : NULL, "--seed");
        else if (!strcmp(argv[i], "--cases")) cases = parse_u64(i + 1 < argc ? argv[++i] : NULL, "--cases");
        else if (!strcmp(argv[i], "--case")) only = parse_u64(i + 1 < argc ? argv[++i] : NULL, "--case");
        else if (!strcmp(argv[i], "--verbose")) g_verbose = 1;
        else {
            fprintf(stderr, "usage: fuzz_abi [--seed S] [--cases N] [--case K] [--verbose]\n");
            return 2;
        }
    }
    signal(SIGABRT, on_signal);
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(on_death);
    else {
        signal(SIGSEGV, on_signal);
        signal(SIGBUS, on_signal);
        signal(SIGFPE, on_signal);
    }
    g_gpu_type = gatednorm_gpu_device_type();
    fixed_cases();
    unsigned total_weight = 0;
    for (int e = 0; e < N_ENTRIES; ++e) total_weight += kEntries[e].weight;
    uint64_t accepted = 0, rejected = 0, n = 0;
    for (uint64_t k = only == UINT64_MAX ? 0 : only; k < (only == UINT64_MAX ? cases : only + 1); ++k) {
        rng_t r = {case_state(g_seed, k)};
        unsigned pickw = (unsigned)below(&r, total_weight);
        int e = 0;
        while (pickw >= kEntries[e].weight) pickw -= kEntries[e++].weight;
        g_case = k;
        g_entry = kEntries[e].name;
        g_describe = NULL;
        const int ok = kEntries[e].run(&r);
        if (g_verbose && only != UINT64_MAX && g_describe) {
            fprintf(stderr, "fuzz_abi: case %llu (%s): %s\n", (unsigned long long)k, g_entry, ok ? "accepted" : "rejected");
            g_describe();
        }
        bufs_free();
        if (ok) ++accepted, ++kEntries[e].accepted;
        else ++rejected, ++kEntries[e].rejected;
        ++n;
    }
    if (g_verbose && only == UINT64_MAX) {
        for (int e = 0; e < N_ENTRIES; ++e)
            printf("  %-40s %8llu accepted %8llu rejected\n", kEntries[e].name, (unsigned long long)kEntries[e].accepted,
                   (unsigned long long)kEntries[e].rejected);
        printf("  rmsnorm_gated: %llu output values checked, worst error bf16 %.3g ulp, fp16 %.3g ulp, fp32 %.3g ulp; %llu accepted in "
               "place, %llu empty, %llu accepted where the contract leaves it open\n",
               (unsigned long long)g_rstats.values, g_rstats.worst_ulps[DT_BF16], g_rstats.worst_ulps[DT_F16], g_rstats.worst_ulps[DT_F32],
               (unsigned long long)g_rstats.inplace, (unsigned long long)g_rstats.empty, (unsigned long long)g_rstats.open_accepted);
        printf("  fp8: %llu groups (%llu NaN) and %llu codes checked, %llu tokens unchecked (y at fp16's overflow); rmsnorm_gated_fp8: %llu with "
               "head_dim, %llu with y_copy, %llu empty accepted; add_rmsnorm: residual in place %llu, into itself %llu, into residual_out %llu, "
               "y on x %llu, with q %llu, y only %llu\n",
               (unsigned long long)g_qstats.groups, (unsigned long long)g_qstats.nan_groups, (unsigned long long)g_qstats.codes,
               (unsigned long long)g_quant_unchecked, (unsigned long long)g_f8stats.hd, (unsigned long long)g_f8stats.ycopy,
               (unsigned long long)g_f8stats.accepted_empty, (unsigned long long)g_arstats.inplace_res, (unsigned long long)g_arstats.ro_same,
               (unsigned long long)g_arstats.ro_sep, (unsigned long long)g_arstats.y_on_x, (unsigned long long)g_arstats.with_q,
               (unsigned long long)g_arstats.y_only);
        printf("  misaligned tensors: %llu\n", (unsigned long long)g_misaligned);
        printf("  w4a16: %llu PLAIN and %llu TILED GEMMs, %llu outputs checked, worst error %.3g of the bound\n", (unsigned long long)g_wstats.plain_gemms,
               (unsigned long long)g_wstats.tiled_gemms, (unsigned long long)g_wstats.values, g_wstats.worst);
    }
    printf("fuzz_abi: %llu cases (%llu accepted, %llu rejected), seed %llu: ok\n", (unsigned long long)n, (unsigned long long)accepted,
           (unsigned long long)rejected, (unsigned long long)g_seed);
    return 0;
}
