/* The CPU pool's thread count under concurrent callers (the concurrency review of
 * 2026-12-04): one thread sets the count back to the default and then to 5 and reads it,
 * while another keeps reading it (as every host W4A16 GEMM does).  The reader's lazy
 * "default" store used to overwrite a set landing between its load and its store, so the
 * set was lost (270 times in 200000 here). */
#include <gatednorm.h>
#include <pthread.h>
#include <stdio.h>

static volatile int stop;

static void *reader(void *arg) {
    (void)arg;
    int32_t n;
    while (!stop) gatednorm_get_num_threads(&n);
    return NULL;
}

int main(void) {
    int32_t before = 0, n = 0;
    gatednorm_get_num_threads(&before);
    pthread_t t;
    if (pthread_create(&t, NULL, reader, NULL) != 0) return 2;
    int lost = 0;
    const int rounds = 200000;
    for (int i = 0; i < rounds; ++i) {
        gatednorm_set_num_threads(0);
        gatednorm_set_num_threads(5);
        gatednorm_get_num_threads(&n);
        if (n != 5) ++lost;
    }
    stop = 1;
    pthread_join(t, NULL);
    gatednorm_set_num_threads(before);
    printf("set_num_threads(5) then get: lost %d of %d times\n", lost, rounds);
    return lost != 0;
}
