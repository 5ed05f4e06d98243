/* memloop: a malloc-heavy loop for scripts/bench_mem.py.
 *
 * usage: memloop PAIRS
 * Prints "ready", waits for a line (or EOF), then makes PAIRS malloc/free
 * pairs (sizes 16 + i % 240, each freed at once, one block in 16 kept one
 * round longer) from a call chain four functions deep, timed with
 * CLOCK_MONOTONIC around the loop only, and prints
 *   ns_per_pair=<f> pairs=<N> checksum=<C>
 * Exits 0 with everything freed.
 */
#include <stdint.h>
#include <time.h>

#include "target.h"

static void *volatile sink;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

TARGET_FN char *alloc_leaf(long i)
{
    char *p = malloc(16 + (size_t)(i % 240));
    p[0] = (char)i;
    return p;
}

TARGET_FN char *alloc_mid(long i)
{
    return alloc_leaf(i);
}

TARGET_FN long churn(long pairs)
{
    long sum = 0;
    char *kept = NULL;
    for (long i = 0; i < pairs; i++) {
        char *p = alloc_mid(i);
        sum += p[0];
        sink = p;
        if ((i & 15) == 0) {
            free(kept);
            kept = p;
        } else {
            free(p);
        }
    }
    free(kept);
    return sum;
}

int main(int argc, char **argv)
{
    long pairs = argc > 1 ? parse_count(argv[1]) : 1000000;
    wait_go();
    uint64_t t0 = now_ns();
    long sum = churn(pairs);
    uint64_t t1 = now_ns();
    printf("ns_per_pair=%.1f pairs=%ld checksum=%ld\n", pairs ? (double)(t1 - t0) / (double)pairs : 0.0, pairs, sum);
    return 0;
}
