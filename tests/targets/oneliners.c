/* oneliners: deterministic work for the `instr dtrace` one-liner table
 * (tests/integration/test_dtrace_oneliners.py).
 *
 *   oneliners N   after "ready" and a line on stdin (or EOF), for i in [0, N):
 *       ol_add(i, 2 * i)                returns 3 * i
 *       ol_neg(i), when i % 3 == 0      returns -i
 *       ol_name(NAMES[i % 3])           NAMES: "alpha", "beta", "gamma"; returns strlen
 *       ol_alloc(16 << (i % 4))         mallocs 16, 32, 64 or 128 bytes; freed at once
 *       read(/dev/zero, 1 + i % 8)      one read per i
 *       write(/dev/null, 10)            one write per i
 *       open("/nonexistent/oneliners"), when i % 5 == 0: fails with ENOENT
 *   then prints "done N".
 *   oneliners N hold   the same, then waits for one more line on stdin before exiting
 *                      (a run that must end by instr's hand, not the program's).
 *
 * The files are opened before "ready" and moved to fds 10 (/dev/zero) and 11
 * (/dev/null), the same whoever else has fds in the process (Frida does);
 * nothing else calls these functions.
 */
#include <fcntl.h>
#include <unistd.h>

#include "target.h"

static const char *const NAMES[3] = {"alpha", "beta", "gamma"};

TARGET_FN long ol_add(long a, long b)
{
    KEEP(a);
    return a + b;
}

TARGET_FN long ol_neg(long a)
{
    KEEP(a);
    return -a;
}

TARGET_FN long ol_name(const char *s)
{
    return (long)strlen(s);
}

TARGET_FN void *ol_alloc(long size)
{
    return malloc((size_t)size);
}

int main(int argc, char **argv)
{
    char buf[16];
    long n = parse_count(argc > 1 ? argv[1] : "10");
    int zero = open("/dev/zero", O_RDONLY);
    int null = open("/dev/null", O_WRONLY);
    if (zero < 0 || null < 0 || dup2(zero, 10) != 10 || dup2(null, 11) != 11)
        return 1;
    close(zero);
    close(null);
    zero = 10;
    null = 11;
    wait_go();
    for (long i = 0; i < n; i++) {
        ol_add(i, 2 * i);
        if (i % 3 == 0)
            ol_neg(i);
        ol_name(NAMES[i % 3]);
        void *p = ol_alloc(16L << (i % 4));
        KEEP(p);
        free(p);
        if (read(zero, buf, (size_t)(1 + i % 8)) < 0)
            return 1;
        if (write(null, buf, 10) != 10)
            return 1;
        if (i % 5 == 0 && open("/nonexistent/oneliners", O_RDONLY) >= 0)
            return 1;
    }
    printf("done %ld\n", n);
    if (argc > 2 && strcmp(argv[2], "hold") == 0)
        wait_go();
    return 0;
}
