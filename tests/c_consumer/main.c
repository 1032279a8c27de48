/* Calls gatednorm_rmsnorm_gated on the CPU backend through the installed C ABI and checks
 * the result against a double-precision evaluation of docs/ops.md section 1 written out here, plus the
 * error path: a bad call must fail, name the argument and leave the output untouched. */
#include <gatednorm.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "f32_tensor.h"

enum { T = 3, H = 2, D = 16 };

static double silu(double v) { return v / (1.0 + exp(-v)); }

int main(void) {
    static float x[T * H * D], z[T * H * D], w[D], out[T * H * D];
    unsigned seed = 12345u;
    for (int i = 0; i < T * H * D; ++i) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) % 2001) / 500.0f - 2.0f;
        seed = seed * 1664525u + 1013904223u;
        z[i] = (float)((seed >> 8) % 2001) / 500.0f - 2.0f;
    }
    for (int i = 0; i < D; ++i) w[i] = 0.5f + 0.05f * (float)i;
    for (int i = 0; i < T * H * D; ++i) out[i] = NAN; /* poison: every element must be written */

    const int64_t shape3[3] = {T, H, D}, shape1[1] = {D};
    gatednorm_tensor tx = f32_tensor(x, 3, shape3), tz = f32_tensor(z, 3, shape3);
    gatednorm_tensor tw = f32_tensor(w, 1, shape1), to = f32_tensor(out, 3, shape3);
    gatednorm_rmsnorm_gated_params params;
    if (gatednorm_rmsnorm_gated_params_init(&params, sizeof params) != GATEDNORM_STATUS_SUCCESS) {
        printf("FAIL: params_init: %s\n", gatednorm_last_error());
        return 1;
    }

    printf("%s\n", gatednorm_build_info());
    gatednorm_status st = gatednorm_rmsnorm_gated(&tx, &tz, &tw, &to, &params, NULL);
    if (st != GATEDNORM_STATUS_SUCCESS) {
        printf("FAIL: %s: %s\n", gatednorm_status_string(st), gatednorm_last_error());
        return 1;
    }
    if (strcmp(gatednorm_last_kernel(), "cpu") != 0) {  /* host tensors run on the CPU backend */
        printf("FAIL: last_kernel '%s' after a host call\n", gatednorm_last_kernel());
        return 1;
    }
    double worst = 0.0;
    for (int r = 0; r < T * H; ++r) {
        double ss = 0.0;
        for (int c = 0; c < D; ++c) ss += (double)x[r * D + c] * x[r * D + c];
        const double rstd = 1.0 / sqrt(ss / D + params.eps);
        for (int c = 0; c < D; ++c) {
            const double ref = x[r * D + c] * rstd * w[c] * silu(z[r * D + c]);
            const double err = fabs(out[r * D + c] - ref) / (fabs(ref) + 1e-6);
            if (!(err <= worst)) worst = err; /* NaN lands here too */
        }
    }
    printf("max relative error vs double reference: %.3g\n", worst);
    if (!(worst < 1e-5)) {
        printf("FAIL: result differs from the reference\n");
        return 1;
    }

    /* A wrong weight shape must be refused, named, and must not touch out. */
    float snapshot[T * H * D];
    memcpy(snapshot, out, sizeof out);
    tw.shape[0] = D - 1;
    st = gatednorm_rmsnorm_gated(&tx, &tz, &tw, &to, &params, NULL);
    if (st != GATEDNORM_STATUS_INVALID_ARGUMENT || strncmp(gatednorm_last_error(), "weight:", 7) != 0 ||
        memcmp(snapshot, out, sizeof out) != 0) {
        printf("FAIL: bad weight shape gave status %d, message '%s'\n", (int)st, gatednorm_last_error());
        return 1;
    }
    printf("bad input refused: %s\n", gatednorm_last_error());

    /* The fused all-reduce's communicator (docs/allreduce.md) with one rank on the CPU, its
     * algorithm forced to two-shot: with no peers the sum is x itself, so the call must equal
     * gatednorm_add_rmsnorm bit for bit; an unknown algorithm is refused, naming it. */
    {
        const gatednorm_device cpu = {GATEDNORM_DEVICE_TYPE_CPU, 0};
        const int64_t rows[2] = {T * H, D};
        static float y1[T * H * D], y2[T * H * D];
        gatednorm_tensor tx2 = f32_tensor(x, 2, rows), ty1 = f32_tensor(y1, 2, rows), ty2 = f32_tensor(y2, 2, rows);
        size_t bytes = 0;
        void *buffer = NULL;
        uint8_t handle[GATEDNORM_COMM_HANDLE_BYTES];
        gatednorm_comm *comm = NULL;
        tw.shape[0] = D;
        for (int i = 0; i < T * H * D; ++i) { /* poisoned unlike each other: equal only where both were written */
            y1[i] = 7.0f;
            y2[i] = -7.0f;
        }
        st = gatednorm_comm_buffer_size(1, sizeof x, &bytes);
        if (st == GATEDNORM_STATUS_SUCCESS) st = gatednorm_comm_buffer_alloc(cpu, bytes, &buffer, handle);
        if (st == GATEDNORM_STATUS_SUCCESS) st = gatednorm_comm_create(0, 1, &buffer, bytes, cpu, &comm);
        if (st == GATEDNORM_STATUS_SUCCESS) st = gatednorm_comm_set_algorithm(comm, GATEDNORM_ALLREDUCE_ALGORITHM_TWO_SHOT);
        if (st == GATEDNORM_STATUS_SUCCESS) st = gatednorm_allreduce_add_rmsnorm(comm, &tx2, NULL, &tw, NULL, &ty1, NULL, NULL, NULL, NULL);
        if (st == GATEDNORM_STATUS_SUCCESS) st = gatednorm_add_rmsnorm(&tx2, NULL, &tw, NULL, &ty2, NULL, NULL, NULL, NULL);
        if (st != GATEDNORM_STATUS_SUCCESS) {
            printf("FAIL: all-reduce with one rank: %s: %s\n", gatednorm_status_string(st), gatednorm_last_error());
            return 1;
        }
        if (memcmp(y1, y2, sizeof y1) != 0) {
            printf("FAIL: the one-rank all-reduce differs from add_rmsnorm\n");
            return 1;
        }
        st = gatednorm_comm_set_algorithm(comm, 7);
        if (st != GATEDNORM_STATUS_INVALID_ARGUMENT || strncmp(gatednorm_last_error(), "algorithm:", 10) != 0) {
            printf("FAIL: algorithm 7 gave status %d, message '%s'\n", (int)st, gatednorm_last_error());
            return 1;
        }
        if (gatednorm_comm_destroy(comm) != GATEDNORM_STATUS_SUCCESS || gatednorm_comm_buffer_free(cpu, buffer) != GATEDNORM_STATUS_SUCCESS) {
            printf("FAIL: comm teardown: %s\n", gatednorm_last_error());
            return 1;
        }
        printf("one-rank all-reduce (two-shot) equals add_rmsnorm\n");
    }
    printf("PASS\n");
    return 0;
}
