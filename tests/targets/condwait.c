/* condwait: a second thread that waits in pthread_cond_wait (a futex), for
 * leave tests.
 *
 * A worker thread (named "worker") waits for jobs in pthread_cond_wait; the
 * main thread reads lines with fgets, hands each to the worker and waits
 * (pthread_cond_wait too) until it is done. Prints "ready" once the worker
 * waits. For every line:
 *   "N"        the worker prints "job N sum=<N*(N+1)/2>" (target_add calls);
 *   "T alloc"  the worker prints "allocating T", makes malloc/free pairs for
 *              T times 100 ms (T = 0: until the process gets SIGUSR1), and
 *              prints "allocated pairs=K check=C": K
 *              pairs (sizes 16 + i % 240, one block in 16 kept a round
 *              longer), C the sum of i % 251 over i < K, each value read back
 *              from the block it was written to;
 *   else       prints "error".
 * The worker's malloc arena is made before "ready", so the lines above make
 * no system call but their writes. On EOF the worker is stopped and joined;
 * prints "bye lines=L" (L: lines read) and exits with status L % 100.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "target.h"

TARGET_FN long target_add(long a, long b)
{
    KEEP(a);
    return a + b;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static int waiting, has_job, done, stop;
static char job[128];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TARGET_FN unsigned char *alloc_one(long i)
{
    size_t size = 16 + (size_t)(i % 240);
    unsigned char *p = malloc(size);
    if (p == NULL)
        abort();
    p[size - 1] = (unsigned char)(i % 251);
    return p;
}

static volatile sig_atomic_t churn_stop;

static void on_usr1(int sig)
{
    (void)sig;
    churn_stop = 1;
}

static void churn(long tenths)
{
    double until = now_s() + (double)tenths / 10.0;
    churn_stop = 0;
    long pairs = 0, check = 0;
    unsigned char *kept = NULL;
    size_t kept_size = 0;
    printf("allocating %ld\n", tenths);
    fflush(stdout);
    do {
        for (int j = 0; j < 1024; j++, pairs++) {
            size_t size = 16 + (size_t)(pairs % 240);
            unsigned char *p = alloc_one(pairs);
            if ((pairs & 15) == 0) {
                if (kept != NULL) {
                    check += kept[kept_size - 1];
                    free(kept);
                }
                kept = p;
                kept_size = size;
            } else {
                check += p[size - 1];
                free(p);
            }
        }
    } while (tenths == 0 ? !churn_stop : now_s() < until);
    if (kept != NULL) {
        check += kept[kept_size - 1];
        free(kept);
    }
    printf("allocated pairs=%ld check=%ld\n", pairs, check);
}

static void run(const char *line)
{
    char *end = NULL;
    long n = strtol(line, &end, 10);
    if (end == line || n < 0) {
        puts("error");
    } else if (strcmp(end, "\n") == 0) {
        long sum = 0;
        for (long i = 0; i < n; i++)
            sum += target_add(i, 1);
        printf("job %ld sum=%ld\n", n, sum);
    } else if (strcmp(end, " alloc\n") == 0) {
        churn(n);
    } else {
        puts("error");
    }
    fflush(stdout);
}

static void *worker(void *arg)
{
    (void)arg;
    free(alloc_one(0)); /* the thread's arena, now rather than in the first "alloc" */
    pthread_mutex_lock(&mu);
    for (;;) {
        waiting = 1;
        pthread_cond_broadcast(&done_cv);
        while (!has_job && !stop)
            pthread_cond_wait(&job_cv, &mu);
        if (stop)
            break;
        has_job = 0;
        waiting = 0;
        pthread_mutex_unlock(&mu);
        run(job);
        pthread_mutex_lock(&mu);
        done = 1;
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(void)
{
    pthread_t tid;
    char line[128];
    long lines = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    if (pthread_create(&tid, NULL, worker, NULL) != 0)
        return 3;
    pthread_setname_np(tid, "worker");
    pthread_mutex_lock(&mu);
    while (!waiting)
        pthread_cond_wait(&done_cv, &mu);
    pthread_mutex_unlock(&mu);
    fputs("ready\n", stdout);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        lines++;
        pthread_mutex_lock(&mu);
        snprintf(job, sizeof job, "%s", line);
        has_job = 1;
        done = 0;
        pthread_cond_signal(&job_cv);
        while (!done || !waiting)
            pthread_cond_wait(&done_cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    pthread_mutex_lock(&mu);
    stop = 1;
    pthread_cond_signal(&job_cv);
    pthread_mutex_unlock(&mu);
    pthread_join(tid, NULL);
    printf("bye lines=%ld\n", lines);
    fflush(stdout);
    return (int)(lines % 100);
}
