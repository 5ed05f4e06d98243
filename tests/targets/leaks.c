/* leaks: known allocations and known leaks, for instr mem and valgrind.
 *
 * usage: leaks [THREADS]   (default 4)
 *
 * After "ready" and a line on stdin, main calls, in order:
 *   no_leaks()        allocates and frees: malloc/free x100, calloc, realloc
 *                     chain NULL->16->4096->32, posix_memalign, free(NULL) x5;
 *                     nothing left
 *   keep_global()     malloc(500) kept in a global: reachable, not a leak
 *   leak_small()      3 x malloc(24), pointers dropped              72 bytes
 *   leak_list()       4 nodes of 32 bytes from make_node(), head dropped:
 *                     32 definitely + 96 indirectly lost           128 bytes
 *   leak_calloc()     calloc(10, 100) dropped                     1000 bytes
 *   leak_realloc()    malloc(10) -> realloc 100 -> 1000 -> 50, dropped  50 bytes
 *   leak_aligned()    aligned_alloc(64, 128) dropped               128 bytes
 *   map_regions()     mmap 3 pages and munmap them; mmap 2 pages, kept (8192 bytes)
 *   THREADS threads, each thread_main(): 1000 malloc(8 + i % 64)/free pairs, then
 *                     thread_leak(): malloc(40) dropped       40 bytes each
 * then prints "done" and returns 0 from main.
 *
 * Heap blocks leaked in total (THREADS=4): 14 blocks, 1538 bytes (1442 direct + 96 indirect).
 * Leak functions write through their pointers and clear them, so that no
 * stale copy stays in a live register or stack slot.
 */
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include "target.h"

struct node {
    struct node *next;
    char pad[24];
};

static void *volatile global_keep;
static void *volatile sink;
static void *volatile nothing = NULL;

TARGET_FN void no_leaks(void)
{
    for (int i = 0; i < 100; i++) {
        char *p = malloc(16 + i);
        p[0] = (char)i;
        sink = p;
        free(p);
    }
    char *c = calloc(4, 8);
    sink = c;
    free(c);
    char *r = realloc(nothing, 16); /* realloc(NULL, 16): gcc would make a literal one malloc */
    r = realloc(r, 4096);
    r = realloc(r, 32);
    sink = r;
    free(r);
    void *a = NULL;
    if (posix_memalign(&a, 64, 256) == 0) {
        sink = a;
        free(a);
    }
    for (int i = 0; i < 5; i++)
        free(nothing); /* a literal free(NULL) is optimised away */
    sink = NULL;
}

TARGET_FN void keep_global(void)
{
    global_keep = malloc(500);
    memset(global_keep, 1, 500);
}

TARGET_FN void leak_small(void)
{
    for (int i = 0; i < 3; i++) {
        char *p = malloc(24);
        memset(p, 2, 24);
        sink = p;
    }
    sink = NULL;
}

TARGET_FN struct node *make_node(struct node *next)
{
    struct node *n = malloc(sizeof *n);
    memset(n, 0, sizeof *n);
    n->next = next;
    return n;
}

TARGET_FN void leak_list(void)
{
    struct node *head = NULL;
    for (int i = 0; i < 4; i++)
        head = make_node(head);
    sink = head;
    sink = NULL;
}

TARGET_FN void leak_calloc(void)
{
    sink = calloc(10, 100);
    sink = NULL;
}

TARGET_FN void leak_realloc(void)
{
    char *p = malloc(10);
    p = realloc(p, 100);
    p = realloc(p, 1000);
    p = realloc(p, 50);
    memset(p, 3, 50);
    sink = p;
    sink = NULL;
}

TARGET_FN void leak_aligned(void)
{
    sink = aligned_alloc(64, 128);
    sink = NULL;
}

static void *mapped;

TARGET_FN void map_regions(void)
{
    void *a = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a != MAP_FAILED)
        munmap(a, 3 * 4096);
    mapped = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

TARGET_FN void thread_leak(void)
{
    char *p = malloc(40);
    memset(p, 4, 40);
    sink = p;
    sink = NULL;
}

TARGET_FN void *thread_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(8 + (size_t)(i % 64));
        p[0] = 1;
        sink = p; /* or gcc drops the malloc/free pair */
        free(p);
    }
    thread_leak();
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? parse_count(argv[1]) : 4;
    wait_go();
    no_leaks();
    keep_global();
    leak_small();
    leak_list();
    leak_calloc();
    leak_realloc();
    leak_aligned();
    map_regions();
    pthread_t tids[64];
    if (threads > 64)
        threads = 64;
    for (long t = 0; t < threads; t++)
        pthread_create(&tids[t], NULL, thread_main, NULL);
    for (long t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    puts("done");
    fflush(stdout);
    return 0;
}
