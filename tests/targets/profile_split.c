/* profile_split: CPU spent in known shares, for instr profile.
 *
 *   profile_split ROUNDS [UNIT [THREADS]]
 *
 * After "go", runs ROUNDS rounds; each round spends, by construction
 * (fixed iteration counts of the same loop body):
 *   3 units in hot_a, 1 unit in hot_b, and 1 unit in leaf_work called at
 *   the bottom of recurse(), which calls itself RECURSE_DEPTH times
 *   (so RECURSE_DEPTH + 1 frames of recurse sit above leaf_work).
 * Shares of the work: hot_a 60 %, hot_b 20 %, leaf_work 20 %.
 * UNIT (default 2000000) is the loop count of one unit. With THREADS
 * (default 0: main does the rounds), that many threads each run ROUNDS
 * rounds from worker(), and the sums add up. Prints
 * "sum=<S>" (deterministic), then "done", then waits for a line and exits
 * (so an attached profiler can leave while it still runs). On stderr:
 * "cpu_ns=<C> wall_ns=<W>", the rounds' thread CPU time and wall time
 * (scripts/bench_profile.py).
 */
#include <pthread.h>
#include <time.h>

#include "target.h"

#define RECURSE_DEPTH 24

static volatile unsigned long sink;

/* One unit of work: N steps of a dependent multiply-add chain. */
#define SPIN(n, acc)                                  \
    do {                                              \
        long i_;                                      \
        for (i_ = 0; i_ < (n); i_++) {                \
            (acc) = (acc) * 6364136223846793005UL + 1; \
            KEEP(acc);                                \
        }                                             \
    } while (0)

TARGET_FN unsigned long hot_a(long unit)
{
    unsigned long acc = 1;
    SPIN(3 * unit, acc);
    return acc;
}

TARGET_FN unsigned long hot_b(long unit)
{
    unsigned long acc = 2;
    SPIN(unit, acc);
    return acc;
}

TARGET_FN unsigned long leaf_work(long unit)
{
    unsigned long acc = 3;
    SPIN(unit, acc);
    return acc;
}

TARGET_FN unsigned long recurse(int depth, long unit)
{
    unsigned long r;
    if (depth == 0)
        return leaf_work(unit);
    r = recurse(depth - 1, unit);
    sink = r; /* not a tail call: every level keeps its frame */
    return r + 1;
}

struct job {
    pthread_t thread;
    long rounds, unit;
    unsigned long sum;
};

/* Inlined: the hot functions' caller is main, or worker. */
static inline __attribute__((always_inline)) unsigned long run_rounds(long rounds, long unit)
{
    unsigned long sum = 0;
    long k;
    for (k = 0; k < rounds; k++) {
        sum += hot_a(unit);
        sum += hot_b(unit);
        sum += recurse(RECURSE_DEPTH, unit);
    }
    return sum;
}

TARGET_FN void *worker(void *arg)
{
    struct job *j = arg;
    j->sum = run_rounds(j->rounds, j->unit);
    return NULL;
}

static long long now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long rounds, unit = 2000000, threads = 0, t;
    unsigned long sum = 0;
    struct job jobs[16];
    char line[64];

    if (argc < 2) {
        fprintf(stderr, "usage: profile_split ROUNDS [UNIT [THREADS]]\n");
        return 2;
    }
    rounds = parse_count(argv[1]);
    if (argc > 2)
        unit = parse_count(argv[2]);
    if (argc > 3)
        threads = parse_count(argv[3]);
    if (threads > 16) {
        fprintf(stderr, "at most 16 threads\n");
        return 2;
    }
    wait_go();
    long long cpu0 = now_ns(CLOCK_THREAD_CPUTIME_ID), wall0 = now_ns(CLOCK_MONOTONIC);
    if (threads == 0)
        sum = run_rounds(rounds, unit);
    for (t = 0; t < threads; t++) {
        jobs[t].rounds = rounds;
        jobs[t].unit = unit;
        pthread_create(&jobs[t].thread, NULL, worker, &jobs[t]);
    }
    for (t = 0; t < threads; t++) {
        pthread_join(jobs[t].thread, NULL);
        sum += jobs[t].sum;
    }
    fprintf(stderr, "cpu_ns=%lld wall_ns=%lld\n", now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0,
            now_ns(CLOCK_MONOTONIC) - wall0);
    printf("sum=%lu\ndone\n", sum);
    fflush(stdout);
    if (fgets(line, sizeof line, stdin) == NULL)
        clearerr(stdin);
    return 0;
}
