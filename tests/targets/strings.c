/* strings: C string arguments, good and bad, for the string captures and
 * predicates of both tiers.
 *
 *   strings cases      calls target_sp(s, i, u, k) once per case of a fixed
 *                      table, i = the case's index: ordinary strings, "",
 *                      NULL, exactly 16 bytes, 17 and 40 bytes, pointers to
 *                      unmapped (low and non-canonical addresses) and
 *                      PROT_NONE memory, strings that run into
 *                      a PROT_NONE page (with and without their NUL before
 *                      it), invalid and overlong UTF-8, and integers u (u64)
 *                      and k (i32) at the edges of their ranges.
 *                      Prints "cases=<N> sum=<S>" (S = sum of the returns).
 *   strings threads K [T]
 *                      T threads (default 4, at most 64) released together
 *                      by a barrier; thread t calls
 *                      target_sp(NAMES[(t + j) & 3], j, t, 0) for j in [0, K).
 *                      After joining, one line per thread in index order:
 *                      "thread=<t> tid=<tid> calls=<K>", then "total=<T*K>".
 *
 * target_sp returns i (the calls are real, the strings are never read here).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "target.h"

#define MAX_THREADS 64

/* Starts with straight-line code longer than a hook's jump (a bare
 * `return i` is too short), so a probe alone on it gets instr's replaceFast
 * entry stub (agents/src/ctier/fast_c.ts); several probes get listeners. */
TARGET_FN long target_sp(const char *s, long i, uint64_t u, int32_t k)
{
    long a = i * 7 + 3;
    long b = (long)(uintptr_t)s >> 4;
    long c = (a ^ b) + (long)(u >> 3) + k;
    KEEP(c);
    return i + (s == (const char *)8); /* i: never 8 */
}

static const char *const NAMES[4] = {"alpha", "beta", "a-name-longer-than-sixteen", "gamma"};

struct spcase {
    const char *s;
    uint64_t u;
    int32_t k;
};

/* Two pages: the first readable, the second PROT_NONE. */
static char *guarded(void)
{
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    memset(p, 'g', (size_t)page);
    if (mprotect(p + page, (size_t)page, PROT_NONE) != 0) {
        perror("mprotect");
        exit(1);
    }
    return p + page; /* the first byte that cannot be read */
}

/* Never mapped: below vm.mmap_min_addr (65536 by default). A page this
 * program unmapped would not do: Frida may map its own memory there later. */
static char *unmapped(void)
{
    return (char *)0xf000;
}

static void run_cases(void)
{
    char *edge = guarded();
    /* "xyz" with no NUL before the PROT_NONE page */
    memcpy(edge - 3, "xyz", 3);
    /* 16 bytes, no NUL, then the PROT_NONE page: a cstr(16) reads the 17th and faults */
    char *sixteen = guarded() - 16;
    memcpy(sixteen, "0123456789abcdef", 16);
    /* "ok" whose NUL is the readable page's last byte, in a second guarded pair */
    char *edge2 = guarded();
    memcpy(edge2 - 3, "ok", 3);
    struct spcase cases[] = {
        {"alpha", 0, 0},
        {"", 1, -1},
        {NULL, 2, -2},
        {"abcdefghijklmnop", 3, 3},
        {"abcdefghijklmnopq", UINT64_MAX, INT32_MIN},
        {"the quick brown fox jumps over the lazy dog", 1ull << 63, INT32_MAX},
        {(const char *)16, (1ull << 63) - 1, -6},
        {edge, 0xff03, -101},
        {unmapped(), 5, 100},
        {edge - 3, 6, 6},
        {sixteen, 7, 7},
        {edge2 - 3, 8, 8},
        {"\xe0\x81\x81" "lpha", 9, 9}, /* an overlong 'A' */
        {"\xe2" "a", 10, 10},          /* a truncated sequence, then 'a' */
        {"/etc/passwd", 11, 11},
        {"beta", 12, 12},
        {(const char *)0xdead000000000000ull, 13, 13}, /* not canonical */
        {"gamma", 14, 14},
        {"ph", 15, -15},
    };
    long n = (long)(sizeof cases / sizeof cases[0]);
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += target_sp(cases[i].s, i, cases[i].u, cases[i].k);
    printf("cases=%ld sum=%ld\n", n, sum);
}

struct worker {
    pthread_t thread;
    int index;
    long k;
    long tid;
};

static pthread_barrier_t g_start;

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->tid = (long)syscall(SYS_gettid);
    pthread_barrier_wait(&g_start);
    for (long j = 0; j < w->k; j++)
        target_sp(NAMES[(w->index + j) & 3], j, (uint64_t)w->index, 0);
    return NULL;
}

static void run_threads(long k, long t)
{
    struct worker w[MAX_THREADS];
    pthread_barrier_init(&g_start, NULL, (unsigned)t);
    for (long i = 0; i < t; i++) {
        w[i].index = (int)i;
        w[i].k = k;
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
            perror("pthread_create");
            exit(1);
        }
    }
    for (long i = 0; i < t; i++)
        pthread_join(w[i].thread, NULL);
    for (long i = 0; i < t; i++)
        printf("thread=%ld tid=%ld calls=%ld\n", i, w[i].tid, k);
    printf("total=%ld\n", k * t);
}

int main(int argc, char **argv)
{
    wait_go();
    if (argc >= 2 && strcmp(argv[1], "cases") == 0) {
        run_cases();
    } else if (argc >= 3 && strcmp(argv[1], "threads") == 0) {
        long t = argc >= 4 ? parse_count(argv[3]) : 4;
        if (t < 1 || t > MAX_THREADS) {
            fprintf(stderr, "threads: 1..%d\n", MAX_THREADS);
            return 2;
        }
        run_threads(parse_count(argv[2]), t);
    } else {
        fprintf(stderr, "usage: strings cases | strings threads K [T]\n");
        return 2;
    }
    return 0;
}
