/* bench: the hot-function target that scripts/bench.py drives.
 *
 * Prints "ready", then serves one command per stdin line, answering each
 * with exactly one flushed line:
 *   run N     calls target_add(i, i) for i in [0, N) in a tight loop, timed
 *             with CLOCK_MONOTONIC around the loop only
 *   wloop N   N write(fd, "x", 1) calls to /dev/null, timed the same way
 *   sloop N   calls target_name(NAMES[i & 3], i) for i in [0, N), timed the
 *             same way (a C string and an integer argument)
 *   ping      answers "pong" (lets a harness check the target is responsive)
 * Answer to run/wloop/sloop:
 *   "ns_per_call=<f> calls=<N> elapsed_ns=<E> sum=<S> cpu_ns=<C>"
 * (C: the loop's CPU time on this thread, CLOCK_THREAD_CPUTIME_ID: on a busy
 * machine the time the thread was preempted is in E but not in C)
 * (for run, S = N*(N-1); for wloop, S = bytes written = N; for sloop,
 * S = N*(N-1)/2).
 * "quit" or EOF exits 0; anything else answers "error".
 */
#include <fcntl.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "target.h"

TARGET_FN long target_add(long a, long b)
{
    KEEP(a);
    return a + b;
}

/* Starts with straight-line code longer than a hook's jump, as most
 * functions do (a bare `return i` is 4 bytes; a branch in the first bytes
 * keeps instr's native tier on a listener, see native.ts straightPrologue). */
TARGET_FN long target_name(const char *name, long i)
{
    long a = i * 7 + 3;
    long b = (long)(uintptr_t)name >> 4;
    long c = (a ^ b) + (name == NULL);
    KEEP(c);
    return i + (name == NULL); /* i: the names are not NULL */
}

static const char *const NAMES[4] = {"alpha", "beta", "a-name-longer-than-sixteen", "gamma"};

static uint64_t clock_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

static long run_calls(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++) {
        sum += target_add(i, i);
        __asm__ volatile("" : "+r"(sum));
    }
    return sum;
}

static long run_names(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++) {
        sum += target_name(NAMES[i & 3], i);
        __asm__ volatile("" : "+r"(sum));
    }
    return sum;
}

static long run_writes(int fd, long n)
{
    long total = 0;
    for (long i = 0; i < n; i++) {
        ssize_t w = write(fd, "x", 1);
        if (w > 0)
            total += w;
    }
    return total;
}

int main(void)
{
    char line[128];
    char cmd[16];
    long n = 0;
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) {
        perror("open /dev/null");
        return 1;
    }
    fputs("ready\n", stdout);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (strncmp(line, "quit", 4) == 0)
            break;
        if (strncmp(line, "ping", 4) == 0) {
            puts("pong");
        } else if (sscanf(line, "%15s %ld", cmd, &n) == 2 && n > 0 &&
                   (strcmp(cmd, "run") == 0 || strcmp(cmd, "wloop") == 0 ||
                    strcmp(cmd, "sloop") == 0)) {
            uint64_t c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
            uint64_t t0 = now_ns();
            long sum = strcmp(cmd, "wloop") == 0   ? run_writes(fd, n)
                       : strcmp(cmd, "sloop") == 0 ? run_names(n)
                                                   : run_calls(n);
            uint64_t t1 = now_ns();
            uint64_t c1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
            printf("ns_per_call=%.3f calls=%ld elapsed_ns=%llu sum=%ld cpu_ns=%llu\n",
                   (double)(t1 - t0) / (double)n, n, (unsigned long long)(t1 - t0), sum,
                   (unsigned long long)(c1 - c0));
        } else {
            puts("error");
        }
        fflush(stdout);
    }
    close(fd);
    return 0;
}
