/* threads: concurrent calls from several threads, exact per-thread counts.
 *
 *   threads K [T]      T threads (default 4, at most 64), all released
 *                      together by a barrier; thread t calls
 *                      target_work(t, k) for k in [0, K).
 *                      target_work returns t * 1000000 + k.
 *   After joining, prints one line per thread, in index order:
 *     "thread=<t> tid=<tid> calls=<K> sum=<S>"  (S = sum of the returns)
 *   then "total=<T*K>".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "target.h"

#define MAX_THREADS 64

struct worker {
    pthread_t thread;
    int index;
    long k;
    long calls;
    long sum;
    long tid;
};

static pthread_barrier_t g_start;

TARGET_FN long target_work(int t, long k)
{
    KEEP(k);
    return (long)t * 1000000L + k;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->tid = (long)syscall(SYS_gettid);
    pthread_barrier_wait(&g_start);
    for (long k = 0; k < w->k; k++) {
        w->sum += target_work(w->index, k);
        w->calls++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long k = argc > 1 ? parse_count(argv[1]) : 1000;
    long t = argc > 2 ? parse_count(argv[2]) : 4;
    static struct worker workers[MAX_THREADS];

    if (t < 1 || t > MAX_THREADS) {
        fprintf(stderr, "thread count must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    wait_go();
    pthread_barrier_init(&g_start, NULL, (unsigned)t);
    for (int i = 0; i < t; i++) {
        workers[i].index = i;
        workers[i].k = k;
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    long total = 0;
    for (int i = 0; i < t; i++) {
        pthread_join(workers[i].thread, NULL);
        printf("thread=%d tid=%ld calls=%ld sum=%ld\n", i, workers[i].tid, workers[i].calls,
               workers[i].sum);
        total += workers[i].calls;
    }
    printf("total=%ld\n", total);
    pthread_barrier_destroy(&g_start);
    return 0;
}
