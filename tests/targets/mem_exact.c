/* mem_exact: allocations whose every count is known, for instr mem's tests
 * that the report is the program's (no call of instr's or Frida's threads)
 * and that its figures agree with each other.
 *
 * Prints "ready" and reads commands, one per line (stdin and stdout have
 * static buffers: stdio never allocates, so a command allocates only as said):
 *   "blocks"  make_blocks(): 7 mallocs of 24, 100, 1000, 4000, 32, 64 and
 *             128 bytes (5,348 bytes), then free_some() frees the 24, 1000
 *             and 32 byte blocks; no free(NULL), no mmap. The other 4 blocks
 *             (4,292 bytes) stay reachable through `kept`. Prints
 *             "blocks done".
 *   "churn"   starts a thread that calls churn_one() for malloc/free pairs
 *             (sizes 16 + i % 240, one block in 16 kept until the next; the
 *             first of those frees the NULL held before it: exactly one
 *             free(NULL)), until "stop"; prints "churning" after its first
 *             4096 pairs.
 *   "stop"    stops and joins that thread; prints "stopped pairs=K".
 * On EOF returns from main with status 0.
 */
#include <pthread.h>

#include "target.h"

#define NBLOCKS 7
static const size_t SIZES[NBLOCKS] = {24, 100, 1000, 4000, 32, 64, 128};
static void *kept[NBLOCKS];

TARGET_FN void make_blocks(void)
{
    for (int i = 0; i < NBLOCKS; i++) {
        kept[i] = malloc(SIZES[i]);
        if (kept[i] == NULL)
            abort();
        memset(kept[i], i, SIZES[i]);
    }
}

TARGET_FN void free_some(void)
{
    static const int which[] = {0, 2, 4};
    for (int k = 0; k < 3; k++) {
        free(kept[which[k]]);
        kept[which[k]] = NULL;
    }
}

static volatile int stop;
static volatile long pairs;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int started;

TARGET_FN unsigned char *churn_one(long i)
{
    size_t size = 16 + (size_t)(i % 240);
    unsigned char *p = malloc(size);
    if (p == NULL)
        abort();
    p[size - 1] = (unsigned char)i;
    return p;
}

static void *churn(void *arg)
{
    unsigned char *held = NULL;
    long i = 0;
    (void)arg;
    while (!stop) {
        unsigned char *p = churn_one(i);
        if ((i & 15) == 0) {
            free(held);
            held = p;
        } else {
            KEEP(p);
            free(p);
        }
        if (++i == 4096) {
            pthread_mutex_lock(&mu);
            started = 1;
            pthread_cond_signal(&cv);
            pthread_mutex_unlock(&mu);
        }
    }
    free(held);
    pairs = i;
    return NULL;
}

int main(void)
{
    char line[64];
    pthread_t tid;
    static char inbuf[4096], outbuf[4096];
    int running = 0;
    setvbuf(stdin, inbuf, _IOLBF, sizeof inbuf);
    setvbuf(stdout, outbuf, _IOLBF, sizeof outbuf);
    fputs("ready\n", stdout);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (strcmp(line, "blocks\n") == 0) {
            make_blocks();
            free_some();
            puts("blocks done");
        } else if (strcmp(line, "churn\n") == 0 && !running) {
            stop = 0;
            if (pthread_create(&tid, NULL, churn, NULL) != 0)
                return 3;
            running = 1;
            pthread_mutex_lock(&mu);
            while (!started)
                pthread_cond_wait(&cv, &mu);
            pthread_mutex_unlock(&mu);
            puts("churning");
        } else if (strcmp(line, "stop\n") == 0 && running) {
            stop = 1;
            pthread_join(tid, NULL);
            running = 0;
            printf("stopped pairs=%ld\n", pairs);
        } else {
            puts("error");
        }
        fflush(stdout);
    }
    return 0;
}
