/* sys_fdhold: fds and an attached `instr syscalls` (the program's own fd table,
 * docs/syscalls.md).
 *
 * argv[1]: an fd the test passed in (a pipe's write end). FDHOLD_THREAD=1 in
 * the environment: start an idle second thread before main (a constructor).
 * Prints "ready", then serves one command per stdin line, answering each with
 * one line (one write(2)):
 *   write N   N write(fd, "x", 1) calls to /dev/null; answers "wrote N"
 *   close     closes argv[1]'s fd; answers "closed"
 *   thread    starts an idle second thread; answers "started"
 *   fork      forks a child that makes one write(fd, "x", 1) to /dev/null and
 *             _exits 3; waits for it; answers "forked S" (S: its exit status,
 *             or -N when signal N killed it)
 * EOF or "quit" exits 0.
 */
#include <fcntl.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "target.h"

static void *idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

__attribute__((constructor)) static void early_thread(void)
{
    pthread_t t;
    const char *e = getenv("FDHOLD_THREAD");
    if (e != NULL && strcmp(e, "1") == 0 && pthread_create(&t, NULL, idle, NULL) != 0)
        exit(1);
}

static void answer(const char *text)
{
    fputs(text, stdout);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char line[64], reply[64];
    long n;
    int held = argc > 1 ? (int)parse_count(argv[1]) : -1;
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    pthread_t t;

    if (null < 0)
        return 1;
    answer("ready\n");
    while (fgets(line, sizeof line, stdin) != NULL && strncmp(line, "quit", 4) != 0) {
        if (sscanf(line, "write %ld", &n) == 1) {
            for (long i = 0; i < n; i++)
                if (write(null, "x", 1) != 1)
                    return 1;
            snprintf(reply, sizeof reply, "wrote %ld\n", n);
            answer(reply);
        } else if (strncmp(line, "close", 5) == 0) {
            answer(close(held) == 0 ? "closed\n" : "close failed\n");
        } else if (strncmp(line, "fork", 4) == 0) {
            int st;
            pid_t p = fork();
            if (p == 0)
                _exit(write(null, "x", 1) == 1 ? 3 : 1);
            if (p < 0 || waitpid(p, &st, 0) != p)
                return 1;
            snprintf(reply, sizeof reply, "forked %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
            answer(reply);
        } else if (strncmp(line, "thread", 6) == 0) {
            answer(pthread_create(&t, NULL, idle, NULL) == 0 ? "started\n" : "failed\n");
        } else {
            answer("error\n");
        }
    }
    return 0;
}
