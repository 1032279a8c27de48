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
 *     matches a double-precision reference of the op's formula (design/ops.md §1: rstd =
 *     1/sqrt(mean(u^2) + eps), both gate orders, silu/sigmoid, weight_offset, group_size)
 *     to within fp32 evaluation (relative 2^-17) followed by rounding to out's dtype (so
 *     within an ulp of bf16/fp16 outputs, some 2^-17 of fp32 ones); in place too;
 *   - the runtime helpers do what the header says on host memory.
 * Input values stay where every fp32 intermediate is normal and finite (the contract computes
 * in fp32), plus NaN / inf / zeros.  Fixed cases (the defects the driver found) run first.
 * At the end: "fuzz_abi: N cases (A accepted, R rejected), seed S: ok".
 *
 * It is meant for a CPU-only build: with a GPU backend it keeps garbage handles and host
 * memory away from the GPU runtime, but has not been run there. */
#include <gatednorm.h>

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
    N_COUNT, N_NAME, N_PTR, N_DEVICE, N_BYTES, N_DST, N_SRC, N_STREAM, N_DEVICE_ID, N_NAMES
};
static const char *const kNames[N_NAMES] = {
    "x", "z", "weight", "out", "params", "params.norm_before_gate", "params.activation", "params.eps",
    "params.weight_offset", "params.group_size", "params.pdl", "params.reserved0",
    "count", "name", "ptr", "device", "bytes", "dst", "src", "stream", "device_id"};
#define BIT(n) (1u << (n))
#define PARAM_BITS (BIT(N_PARAMS) | BIT(N_P_NBG) | BIT(N_P_ACT) | BIT(N_P_EPS) | BIT(N_P_WOFF) | BIT(N_P_GROUP) | BIT(N_P_PDL) | BIT(N_P_RES0))

static void names_text(unsigned set, char *out, size_t cap) {
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
        if (strncmp(msg, kNames[i], n) == 0 && msg[n] == ':' && n > best_len) best = i, best_len = n;
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
static void check_rejection(gatednorm_status st, unsigned allowed, unsigned blame, const char *what) {
    char set[512], buf[64];
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

static void note(const char *fmt, ...) {
    va_list ap;
    const size_t n = strlen(C.notes);
    if (n + 2 >= sizeof C.notes) return;
    if (n) strcat(C.notes, "; ");
    va_start(ap, fmt);
    vsnprintf(C.notes + strlen(C.notes), sizeof C.notes - strlen(C.notes), fmt, ap);
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
        must_reject(BIT(kTName[v]), "last dim not contiguous");
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
                /* an empty tensor addresses nothing: whether its strides must still reduce is open */
                if (is_empty(X)) open_case(BIT(N_X) | BIT(N_Z) | BIT(N_OUT), "empty; leading dims do not reduce to two");
                else must_reject(BIT(N_X) | BIT(N_Z) | BIT(N_OUT), "leading dims do not reduce to two");
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
    const gatednorm_status st = gatednorm_rmsnorm_gated(X->present ? &X->t : NULL, Z->present ? &Z->t : NULL, W->present ? &W->t : NULL,
                                                        O->present ? &O->t : NULL,
                                                        C.params_null ? NULL : (const gatednorm_rmsnorm_gated_params *)(void *)C.params_buf,
                                                        C.stream);
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
        check_rejection(st, BIT(N_NAME) | BIT(N_DEVICE_ID), (!name || !cap) && valid_id ? BIT(N_NAME) : !valid_id && name && cap ? BIT(N_DEVICE_ID) : 0,
                        "gatednorm_device_name");
        bufs_check("refused device_name");
        return 0;
    }
    if (!name || !cap || !valid_id) die("accepted id %d, name %p, capacity %zu", id, (void *)name, cap);
    if (!memchr(name, 0, cap)) die("device name not terminated within its capacity");
    buf_allow(name, cap);
    bufs_check("device_name");
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

/* ===================================================== fixed cases: what the fuzzer found */
/* Run before the random cases on every run.  Without the library's fixes the first two are
 * signed overflows (undefined behaviour: the sanitizer build aborts), the last two fail the
 * checks. */
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

static void fixed_cases(void) {
    float w[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    const int64_t w_shape[1] = {8}, w_strides[1] = {1};
    const gatednorm_tensor tw = f32_desc(w, 1, w_shape, w_strides);
    gatednorm_rmsnorm_gated_params p;
    gatednorm_status st;
    if (gatednorm_rmsnorm_gated_params_init(&p, sizeof p) != GATEDNORM_STATUS_SUCCESS) die("params_init: %s", gatednorm_last_error());

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
     * stride 2 * 2^62 (rows_shape) was computed before the stride was refused. */
    g_entry = "fixed case: empty tensor, group view of a huge last-dim stride";
    {
        const int64_t shape[2] = {0, 4}, strides[2] = {4, (int64_t)1 << 62};
        const gatednorm_tensor tx = f32_desc(NULL, 2, shape, strides), to = f32_desc(NULL, 2, shape, strides);
        const int64_t ws[1] = {2};
        const gatednorm_tensor tw2 = f32_desc(w, 1, ws, w_strides);
        gatednorm_rmsnorm_gated_params pg = p;
        pg.group_size = 2;
        st = gatednorm_rmsnorm_gated(&tx, NULL, &tw2, &to, &pg, NULL);
        if (st != GATEDNORM_STATUS_INVALID_ARGUMENT || strncmp(gatednorm_last_error(), "x:", 2) || !strstr(gatednorm_last_error(), "contiguous"))
            die("status %d: %s", (int)st, gatednorm_last_error());
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

/* ====================================================================== the table */
typedef struct {
    const char *name;
    unsigned weight;        /* share of the cases */
    int (*run)(rng_t *r);   /* one case: 1 accepted, 0 rejected; dies on a failed check */
    uint64_t accepted, rejected;
} entry_t;

/* Every entry point of gatednorm.h has a generator here.  A new op (gatednorm_rmsnorm_gated_fp8,
 * gatednorm_rmsnorm, gatednorm_add_rmsnorm, gatednorm_group_quant_fp8, the W4A16 calls) adds
 * one row: its generator builds honest descriptors (and lies only that validation must refuse)
 * with the helpers above (buf_new, make_layout, reach, the must_reject / open_case
 * expectations, check_rejection, bufs_check) and checks accepted calls against a reference. */
static entry_t kEntries[] = {
    {"gatednorm_rmsnorm_gated", 64, fuzz_rmsnorm_gated, 0, 0},
    {"gatednorm_rmsnorm_gated_params_init", 8, fuzz_params_init, 0, 0},
    {"gatednorm_malloc/free", 6, fuzz_malloc_free, 0, 0},
    {"gatednorm_memcpy", 5, fuzz_memcpy, 0, 0},
    {"gatednorm_memset", 4, fuzz_memset, 0, 0},
    {"gatednorm_stream_*/device_synchronize", 4, fuzz_streams, 0, 0},
    {"gatednorm_pointer_device", 3, fuzz_pointer_device, 0, 0},
    {"gatednorm_device_count", 2, fuzz_device_count, 0, 0},
    {"gatednorm_device_name", 2, fuzz_device_name, 0, 0},
    {"gatednorm_status_string", 1, fuzz_status_string, 0, 0},
    {"gatednorm_version/build_info", 1, fuzz_version, 0, 0},
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
    }
    printf("fuzz_abi: %llu cases (%llu accepted, %llu rejected), seed %llu: ok\n", (unsigned long long)n, (unsigned long long)accepted,
           (unsigned long long)rejected, (unsigned long long)g_seed);
    return 0;
}
