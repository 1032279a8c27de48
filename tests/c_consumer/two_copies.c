/* Two copies of the library in one process: this program links one (A, in the global scope, as
 * an engine links a system libgatednorm) and dlopens a second (B, RTLD_LOCAL, as the Python
 * package loads its wheel's library); B's XLA host handler (what gatednorm.jax_ops registers)
 * runs rmsnorm_gated.  Its calls to the library's own entry points must stay in B: they went
 * through the PLT to the first gatednorm_rmsnorm_gated of the global scope, A's (a packaging
 * review; with copies of different versions or backends the handler ran the other library's op,
 * e.g. a CPU-only one's "no device").  B is a byte copy of A's file in a temporary folder (the
 * same path would give the same handle).  argv[1]: the library file this program linked.
 * The frame is built from the layout of XLA's FFI C API (major version 0), as tests/fuzz does. */
#define _GNU_SOURCE
#include <gatednorm.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../fuzz/xla_frame.h"

static char g_message[1024];
static int g_error_token;
static void *error_create(xla_error_args *a) {
    snprintf(g_message, sizeof g_message, "%s", a && a->message ? a->message : "(no message)");
    return &g_error_token;
}

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    char chunk[1 << 16];
    size_t n;
    int ok = in && out;
    while (ok && (n = fread(chunk, 1, sizeof chunk, in)) > 0) ok = fwrite(chunk, 1, n, out) == n;
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = 0;
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        printf("usage: two_copies <the libgatednorm file this program links>\n");
        return 2;
    }
    char dir[] = "/tmp/gatednorm_two_copies.XXXXXX", path[sizeof dir + 32];
    if (!mkdtemp(dir)) return 2;
    snprintf(path, sizeof path, "%s/libgatednorm_b.so", dir);
    if (!copy_file(argv[1], path)) {
        printf("FAIL: cannot copy %s to %s\n", argv[1], path);
        return 2;
    }
    void *b = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    unlink(path);
    rmdir(dir);
    if (!b) {
        printf("FAIL: dlopen of the copy: %s\n", dlerror());
        return 2;
    }
    void *(*b_xla_host)(void *) = (void *(*)(void *))dlsym(b, "gatednorm_xla_ffi_host");
    const char *(*b_last_kernel)(void) = (const char *(*)(void))dlsym(b, "gatednorm_last_kernel");
    if (!b_xla_host || !b_last_kernel) return 2;

    /* rmsnorm_gated of f32 x [2, 8] and weight [8], no z, default params: slots x, z = NULL,
     * weight, out = result 0. */
    float x[16], w[8], out[16];
    for (int i = 0; i < 16; ++i) x[i] = (float)(i - 7), out[i] = 0.0f;
    for (int i = 0; i < 8; ++i) w[i] = 1.0f;
    int64_t xdims[2] = {2, 8}, wdims[1] = {8};
    xla_buffer bx = {sizeof(xla_buffer), NULL, 11, x, 2, xdims}, bw = {sizeof(xla_buffer), NULL, 11, w, 1, wdims};
    xla_buffer bo = {sizeof(xla_buffer), NULL, 11, out, 2, xdims};
    void *args[2] = {&bx, &bw}, *rets[1] = {&bo};
    int arg_types[2] = {1, 1}, ret_types[1] = {1};
    int64_t entry = 0, slots[4] = {0, -1, 1, -2};
    xla_scalar a_entry = {5, &entry};
    xla_array a_slots = {5, 4, slots}, a_params = {6, 0, NULL};
    xla_span n_entry = {"entry", 5}, n_params = {"params", 6}, n_slots = {"slots", 5};
    xla_span *names[3] = {&n_entry, &n_params, &n_slots};  /* sorted, as XLA passes them */
    int attr_types[3] = {3, 1, 1};
    void *attrs[3] = {&a_entry, &a_params, &a_slots};
    xla_api api;
    memset(&api, 0, sizeof api);
    api.struct_size = sizeof api;
    api.error_create = error_create;
    xla_frame f;
    memset(&f, 0, sizeof f);
    f.struct_size = sizeof f, f.api = &api, f.stage = 3;
    f.args.struct_size = f.rets.struct_size = sizeof(xla_list);
    f.args.size = 2, f.args.types = arg_types, f.args.items = args;
    f.rets.size = 1, f.rets.types = ret_types, f.rets.items = rets;
    f.attrs.struct_size = sizeof(xla_attrs), f.attrs.size = 3;
    f.attrs.types = attr_types, f.attrs.names = names, f.attrs.attrs = attrs;

    if (b_xla_host(&f) != NULL) {
        printf("FAIL: the copy's XLA handler refused the call: %s\n", g_message);
        return 1;
    }
    printf("after the copy's XLA call: last_kernel of the linked library '%s', of the copy '%s'\n",
           gatednorm_last_kernel(), b_last_kernel());
    if (strcmp(b_last_kernel(), "cpu") != 0 || strcmp(gatednorm_last_kernel(), "") != 0) {
        printf("FAIL: the copy's XLA handler ran the linked library's rmsnorm_gated\n");
        return 1;
    }
    printf("PASS\n");
    return 0;
}
