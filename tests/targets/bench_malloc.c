/* bench_malloc: a malloc/free loop that scripts/bench_aggs.py drives.
 *
 * Prints "ready", then serves one command per stdin line, answering each
 * with exactly one flushed line:
 *   malloc N   N iterations of p = malloc((i & 127) + 1); free(p), timed
 *              with CLOCK_MONOTONIC around the loop only
 * Answer: "ns_per_call=<f> calls=<N> elapsed_ns=<E> sum=<S> cpu_ns=<C>", S = bytes
 * asked, C = the loop's CPU time on this thread (CLOCK_THREAD_CPUTIME_ID).
 * "quit" or EOF exits 0; anything else answers "error".
 */
#include <stdint.h>
#include <time.h>

#include "target.h"

static uint64_t clock_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(void)
{
    char line[128];
    char cmd[16];
    long n = 0;
    fputs("ready\n", stdout);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (sscanf(line, "%15s %ld", cmd, &n) == 2 && strcmp(cmd, "malloc") == 0 && n > 0) {
            long sum = 0;
            uint64_t c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
            uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
            for (long i = 0; i < n; i++) {
                size_t size = (size_t)(i & 127) + 1;
                void *p = malloc(size);
                KEEP(p);
                free(p);
                sum += (long)size;
            }
            uint64_t dt = clock_ns(CLOCK_MONOTONIC) - t0;
            uint64_t dc = clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
            printf("ns_per_call=%.3f calls=%ld elapsed_ns=%llu sum=%ld cpu_ns=%llu\n",
                   (double)dt / (double)n, n, (unsigned long long)dt, sum, (unsigned long long)dc);
        } else if (strncmp(line, "quit", 4) == 0) {
            break;
        } else {
            puts("error");
        }
        fflush(stdout);
    }
    return 0;
}
