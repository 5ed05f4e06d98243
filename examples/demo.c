/* demo: the bundled demo target used by the README and probes.yaml.
 *
 * Build (symbols kept; do not strip with -s):
 *     gcc -O1 -g -o demo examples/demo.c
 * Run:
 *     ./demo [--wait] [N]
 *         N        number of work iterations (default 5)
 *         --wait   print "ready" and block reading one line from stdin
 *                  before doing anything, so a tracer can attach first
 *                  (`instr run -p PID ...`); without it the demo just runs,
 *                  which suits spawning (`instr run ... -- ./demo`).
 *
 * Functions worth probing (static: in .symtab, not exported; never inlined
 * or cloned, so "demo!compute" etc. always resolve to one address):
 *     int  compute(int a, int b)     returns a * b + 7
 *     void greet(const char *name)   prints "hello, <name>"
 *     int  work(int n)               calls compute() n times, malloc()s and
 *                                    free()s n buffers of 16, 100, 1000,
 *                                    4096, 65536, 16, ... bytes, and
 *                                    open()s and read()s /etc/hostname
 *                                    (falling back to /proc/self/exe)
 *
 * Output is deterministic; for N = 5:
 *     hello, world
 *     work(5) = 75
 *     read file: ok
 *     done
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEMO_FN static __attribute__((noinline, noclone, used))

static const size_t sizes[] = {16, 100, 1000, 4096, 65536};

DEMO_FN int compute(int a, int b)
{
    return a * b + 7;
}

DEMO_FN void greet(const char *name)
{
    printf("hello, %s\n", name);
}

DEMO_FN int read_some(const char *path)
{
    char buf[256];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, sizeof buf);
    close(fd);
    return got > 0 ? 0 : -1;
}

DEMO_FN int work(int n)
{
    int total = 0;
    for (int i = 0; i < n; i++) {
        size_t size = sizes[i % (int)(sizeof sizes / sizeof sizes[0])];
        unsigned char *buf = malloc(size);
        if (buf == NULL)
            return -1;
        memset(buf, i + 1, size);
        total += compute(i, buf[size - 1]);
        free(buf);
    }
    int ok = read_some("/etc/hostname") == 0 || read_some("/proc/self/exe") == 0;
    printf("work(%d) = %d\n", n, total);
    printf("read file: %s\n", ok ? "ok" : "failed");
    return total;
}

int main(int argc, char **argv)
{
    int wait = 0;
    int n = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0) {
            wait = 1;
        } else {
            char *end = NULL;
            long v = strtol(argv[i], &end, 10);
            if (end == argv[i] || *end != '\0' || v < 0 || v > 1000000) {
                fprintf(stderr, "usage: %s [--wait] [N]\n", argv[0]);
                return 2;
            }
            n = (int)v;
        }
    }
    if (wait) {
        char line[64];
        puts("ready");
        fflush(stdout);
        if (fgets(line, sizeof line, stdin) == NULL)
            clearerr(stdin);
    }
    greet("world");
    work(n);
    puts("done");
    return 0;
}
