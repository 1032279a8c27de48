/* A child made by glibc's _Fork() (no atfork handlers run) while the parent's pool is busy:
 * the child's host calls must finish with the right bits.  It used to inherit condition
 * variables whose waiters were the parent's workers, and its first parallel region hung in
 * pthread_cond_broadcast (session 35's review; about 1 child in 10-30 here).  Such a child
 * now runs its host calls on the calling thread (cpu_pool.cpp, ProcessMark).  The child makes
 * the calls from the forking thread with preallocated outputs; gatednorm_set_num_threads in
 * the child must return too.  Exit 77 (CTest: skipped) where the C library has no _Fork.
 * argv[1]: the number of children (default 200; scripts/arm64_check.sh runs fewer under qemu). */
#define _GNU_SOURCE
#include <gatednorm.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "f32_tensor.h"

enum { kRows = 4096, kCols = 64 };
static float x[kRows * kCols], z[kRows * kCols], w[kCols], want[kRows * kCols];
static float busy_out[2][kRows * kCols], child_out[kRows * kCols];
static volatile int stop;

static int norm(float *out) {  /* 4096 x 64 fp32: large enough for the pool to split it */
    const int64_t s2[2] = {kRows, kCols}, s1[1] = {kCols};
    const gatednorm_tensor tx = f32_tensor(x, 2, s2), tz = f32_tensor(z, 2, s2), tw = f32_tensor(w, 1, s1), to = f32_tensor(out, 2, s2);
    return gatednorm_rmsnorm_gated(&tx, &tz, &tw, &to, NULL, NULL);
}

static void *busy(void *slot) {  /* parallel regions back to back: workers waking at the fork */
    while (!stop) norm(busy_out[(long)slot]);
    return NULL;
}

int main(int argc, char **argv) {
    const int forks = argc > 1 ? atoi(argv[1]) : 200;
    if (forks < 1) return 2;
    pid_t (*raw_fork)(void) = (pid_t(*)(void))dlsym(RTLD_DEFAULT, "_Fork");
    if (!raw_fork) {
        printf("skipped: no _Fork in this C library\n");
        return 77;
    }
    for (int i = 0; i < kRows * kCols; ++i) x[i] = sinf(i * 0.37f), z[i] = cosf(i * 0.11f);
    for (int i = 0; i < kCols; ++i) w[i] = 1.0f + i / 64.0f;
    int32_t before = 0;
    gatednorm_get_num_threads(&before);
    if (gatednorm_set_num_threads(3) || norm(want)) return 2;
    pthread_t t[2];
    for (long i = 0; i < 2; ++i)
        if (pthread_create(&t[i], NULL, busy, (void *)i)) return 2;
    int hung = 0, wrong = 0;
    for (int it = 0; it < forks; ++it) {
        const pid_t pid = raw_fork();
        if (pid < 0) return 2;
        if (pid == 0) {
            alarm(20);
            int bad = 0;
            for (int k = 0; k < 3; ++k) {
                if (k == 1 && gatednorm_set_num_threads(4)) bad = 1;
                if (norm(child_out) || memcmp(child_out, want, sizeof want)) bad = 1;
            }
            _exit(bad ? 3 : 0);
        }
        int status = 0, k;
        const struct timespec ms = {0, 1000000};
        for (k = 0; k < 10000; ++k) {  /* 10 s */
            if (waitpid(pid, &status, WNOHANG) == pid) break;
            nanosleep(&ms, NULL);
        }
        if (k == 10000) {
            ++hung;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++wrong;
        }
    }
    stop = 1;
    for (int i = 0; i < 2; ++i) pthread_join(t[i], NULL);
    gatednorm_set_num_threads(before);
    printf("_Fork children while the pool was busy: %d, hung %d, failed %d\n", forks, hung, wrong);
    return hung || wrong;
}
