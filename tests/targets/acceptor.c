/* acceptor: a line-driven target that blocks in accept(2) on a loopback
 * socket, for leave tests.
 *
 * Listens on 127.0.0.1 at a port the kernel picks; prints "ready", then
 * "port P". For every input line:
 *   "accept"  prints "accepting" and waits in accept() (a hooked wrapper
 *             under instr syscalls); reads one line "N" from the connection,
 *             answers "sum=<N*(N+1)/2>\n" on it, closes it and prints
 *             "accepted N sum=<N*(N+1)/2>";
 *   "M sum"   prints "sum=<M*(M+1)/2>" from target_add calls;
 *   else      prints "error".
 * On EOF prints "bye lines=L" (L: lines read) and exits with status L % 100.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "target.h"

TARGET_FN long target_add(long a, long b)
{
    KEEP(a);
    return a + b;
}

static long sum_to(long n)
{
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += target_add(i, 1);
    return sum;
}

/* Serves one connection: a line "N" in, "sum=S\n" out. Returns N, or -1. */
static long serve(int fd)
{
    char req[64];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t n = read(fd, req + got, sizeof req - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (memchr(req, '\n', got) != NULL)
            break;
    }
    req[got] = '\0';
    char *end = NULL;
    long n = strtol(req, &end, 10);
    if (end == req || n < 0)
        return -1;
    char answer[64];
    int len = snprintf(answer, sizeof answer, "sum=%ld\n", sum_to(n));
    if (write(fd, answer, (size_t)len) != len)
        return -1;
    return n;
}

int main(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 8) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
        perror("listen");
        return 3;
    }
    char line[128];
    long lines = 0;
    fputs("ready\n", stdout);
    printf("port %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL) {
        lines++;
        char *end = NULL;
        long n = strtol(line, &end, 10);
        if (strcmp(line, "accept\n") == 0) {
            puts("accepting");
            fflush(stdout);
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0) {
                perror("accept");
                return 3;
            }
            long got = serve(fd);
            close(fd);
            printf("accepted %ld sum=%ld\n", got, got < 0 ? -1 : sum_to(got));
        } else if (end != line && n >= 0 && strcmp(end, " sum\n") == 0) {
            printf("sum=%ld\n", sum_to(n));
        } else {
            puts("error");
        }
        fflush(stdout);
    }
    printf("bye lines=%ld\n", lines);
    fflush(stdout);
    return (int)(lines % 100);
}
