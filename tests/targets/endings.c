/* endings: every way a process can end, after a known number of calls.
 *
 *   endings MODE N     target_tick(i) for i in [0, N), prints and flushes
 *                      "ticks=N sum=S" (S = sum of i), then ends by MODE:
 *     return           return 0 from main
 *     exit             exit(3)
 *     _exit            _exit(4)
 *     abort            abort()                        (SIGABRT)
 *     segv             crash_here() stores to NULL    (SIGSEGV, in crash_here)
 *     exec             execv("/bin/echo", "replaced")   (the image is replaced)
 */
#include <unistd.h>

#include "target.h"

static int *volatile g_null;
static volatile long g_ticks;

/* Long enough for an inline hook: a bare `mov; ret` is too short to patch. */
TARGET_FN long target_tick(long i)
{
    KEEP(i);
    g_ticks = g_ticks + 1;
    return i;
}

TARGET_FN void crash_here(int value)
{
    *g_null = value;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: endings return|exit|_exit|abort|segv|exec [N]\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = argc > 2 ? parse_count(argv[2]) : 1000;
    if (strcmp(mode, "return") != 0 && strcmp(mode, "exit") != 0 && strcmp(mode, "_exit") != 0 &&
        strcmp(mode, "abort") != 0 && strcmp(mode, "segv") != 0 && strcmp(mode, "exec") != 0) {
        fprintf(stderr, "unknown mode: %s\n", mode);
        return 2;
    }

    wait_go();
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += target_tick(i);
    printf("ticks=%ld sum=%ld\n", n, sum);
    fflush(stdout);

    if (strcmp(mode, "exit") == 0)
        exit(3);
    if (strcmp(mode, "_exit") == 0)
        _exit(4);
    if (strcmp(mode, "abort") == 0)
        abort();
    if (strcmp(mode, "segv") == 0)
        crash_here(42);
    if (strcmp(mode, "exec") == 0) {
        execl("/bin/echo", "echo", "replaced", (char *)NULL);
        perror("execl");
        return 1;
    }
    return 0;
}
