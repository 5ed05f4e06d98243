/* poller: a line-driven target that waits in poll(2), for leave tests.
 *
 * Prints "ready"; then waits for every input line in poll() on stdin with no
 * timeout (an idle poller is blocked in poll, a hooked wrapper under instr
 * syscalls) and reads it with read(2). For every line:
 *   "N"      prints "polling N", polls a pipe nobody writes to for N times
 *            100 ms (poll times out: it returns 0) and prints "polled N rc=0";
 *   "M sum"  prints "sum=<M*(M+1)/2>" from target_add calls;
 *   else     prints "error".
 * On EOF prints "bye lines=L" (L: lines read) and exits with status L % 100.
 * A thread blocked in poll when instr leaves must wake into valid code: the
 * answers after the leave say whether it did.
 */
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "target.h"

TARGET_FN long target_add(long a, long b)
{
    KEEP(a);
    return a + b;
}

static char buf[4096];
static size_t have;

/* The next line (without its newline) into out; 0 at EOF. */
static int next_line(char *out, size_t size)
{
    for (;;) {
        char *nl = memchr(buf, '\n', have);
        if (nl != NULL) {
            size_t len = (size_t)(nl - buf);
            size_t keep = len < size - 1 ? len : size - 1;
            memcpy(out, buf, keep);
            out[keep] = '\0';
            have -= len + 1;
            memmove(buf, nl + 1, have);
            return 1;
        }
        if (have == sizeof buf)
            have = 0; /* an over-long line: dropped */
        struct pollfd in = {.fd = 0, .events = POLLIN};
        int rc = poll(&in, 1, -1);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0) {
            perror("poll");
            exit(3);
        }
        ssize_t n = read(0, buf + have, sizeof buf - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        have += (size_t)n;
    }
}

int main(void)
{
    char line[128];
    long lines = 0;
    int idle[2];
    if (pipe(idle) != 0) {
        perror("pipe");
        return 3;
    }
    fputs("ready\n", stdout);
    fflush(stdout);
    while (next_line(line, sizeof line)) {
        lines++;
        char *end = NULL;
        long n = strtol(line, &end, 10);
        if (end == line || n < 0) {
            puts("error");
        } else if (strcmp(end, " sum") == 0) {
            long sum = 0;
            for (long i = 0; i < n; i++)
                sum += target_add(i, 1);
            printf("sum=%ld\n", sum);
        } else if (*end == '\0') {
            printf("polling %ld\n", n);
            fflush(stdout);
            struct pollfd p = {.fd = idle[0], .events = POLLIN};
            int rc = poll(&p, 1, (int)(n * 100));
            printf("polled %ld rc=%d\n", n, rc);
        } else {
            puts("error");
        }
        fflush(stdout);
    }
    printf("bye lines=%ld\n", lines);
    fflush(stdout);
    return (int)(lines % 100);
}
