/* patchme: a long-running target for live patching (issue 6).
 *
 *   patchme loop       after "go", prints "value=<target_value(7)> const=<target_const()>"
 *                      every 2 ms until stdin reaches EOF or a line arrives, then
 *                      prints "done" and exits 0.
 *                      Unpatched: target_value(7) = 42, target_const() = 42.
 *   patchme threads    after "go", 4 threads call target_value(7) in a loop
 *                      until a line (or EOF) arrives on stdin; then prints
 *                      "calls=<N> old=<#42> new=<#1234> other=<#rest>" and
 *                      "other_values=<first few unexpected values>".
 *
 * Right after "go" it prints
 *   "value_addr=<&target_value> const_addr=<&target_const> data_addr=<&g_data>"
 * so that tests can read the code bytes from /proc/PID/mem (g_data is data, not code).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "target.h"

#define THREADS 4

TARGET_FN long target_value(long x)
{
    KEEP(x);
    return x * 6;
}

TARGET_FN int target_const(void)
{
    return 42;
}

static atomic_int g_stop;
long g_data = 42;

static void *stdin_watch(void *arg)
{
    char line[64];
    (void)arg;
    if (fgets(line, sizeof line, stdin) == NULL)
        clearerr(stdin);
    atomic_store(&g_stop, 1);
    return NULL;
}

static int run_loop(void)
{
    struct timespec ts = {0, 2 * 1000 * 1000};
    while (!atomic_load(&g_stop)) {
        printf("value=%ld const=%d\n", target_value(7), target_const());
        fflush(stdout);
        nanosleep(&ts, NULL);
    }
    puts("done");
    return 0;
}

struct counts {
    long calls, old, new_, other;
    long seen[4];
};

static void *worker(void *arg)
{
    struct counts *c = arg;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        long v = target_value(7);
        c->calls++;
        if (v == 42)
            c->old++;
        else if (v == 1234)
            c->new_++;
        else if (c->other++ < 4)
            c->seen[c->other - 1] = v;
        /* 4 busy threads on a 2-core machine would leave the patching
         * thread waiting milliseconds for a time slice at every step. */
        if ((c->calls & 1023) == 0)
            sched_yield();
    }
    return NULL;
}

static int run_threads(void)
{
    pthread_t th[THREADS];
    static struct counts c[THREADS];
    struct counts total = {0};
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, worker, &c[i]);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total.calls += c[i].calls;
        total.old += c[i].old;
        total.new_ += c[i].new_;
        total.other += c[i].other;
    }
    printf("calls=%ld old=%ld new=%ld other=%ld\n", total.calls, total.old, total.new_, total.other);
    printf("other_values=");
    for (int i = 0; i < THREADS; i++)
        for (long k = 0; k < c[i].other && k < 4; k++)
            printf("%ld,", c[i].seen[k]);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "loop";
    pthread_t watcher;
    wait_go();
    printf("value_addr=%p const_addr=%p data_addr=%p\n", (void *)target_value,
           (void *)target_const, (void *)&g_data);
    fflush(stdout);
    pthread_create(&watcher, NULL, stdin_watch, NULL);
    int rc = strcmp(mode, "threads") == 0 ? run_threads() : run_loop();
    pthread_join(watcher, NULL);
    return rc;
}
