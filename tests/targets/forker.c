/* forker: a process tree for `instr run/trace -F` (docs/follow.md).
 *
 *   forker fork N      forks 4 children; each child calls target_work(i) N
 *                      times and exits 10+k (child k); then the parent calls
 *                      it N times itself, waits for the 4 and prints
 *                      "forker ok" (exit 0), or "forker bad" (exit 1) if a
 *                      child did not exit as it should (killed, lost)
 *   forker exec N      forks one child that execs "forker again N"; prints
 *                      "forker ok" when it exited 4
 *   forker spawn N     posix_spawn()s "forker again N" (glibc: clone with
 *                      CLONE_VM|CLONE_VFORK, then exec); "forker ok" when it
 *                      exited 4
 *   forker spin N      forks 4 children that print "up K" and call
 *                      target_work for ever; the parent calls it N times,
 *                      prints "up parent" and waits for them (for ever)
 *   forker again N     calls target_work(i) N times at once, first thing in
 *                      main (no wait for a "go": the probes must be armed
 *                      before main runs), prints "again N" and exits 4
 *
 * The children run at the same time as each other and as their parent.
 */
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "target.h"

static volatile long g_sum;

TARGET_FN long target_work(long i)
{
    g_sum += i;
    return i + 1;
}

static void work(long n)
{
    for (long i = 0; i < n; i++)
        KEEP(target_work(i));
}

extern char **environ;

static int waited(pid_t p, int code)
{
    int st;
    return waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == code;
}

int main(int argc, char **argv)
{
    long n = argc > 2 ? atol(argv[2]) : 1000;
    int ok = 1;

    if (argc > 1 && strcmp(argv[1], "again") == 0) {
        work(n);
        printf("again %ld\n", n);
        fflush(stdout);
        return 4;
    }
    wait_go();
    if (argc > 1 && strcmp(argv[1], "exec") == 0) {
        char count[32];
        pid_t p;
        snprintf(count, sizeof count, "%ld", n);
        fflush(stdout);
        p = fork();
        if (p == 0) {
            execl(argv[0], argv[0], "again", count, (char *) NULL);
            _exit(127);
        }
        ok = p > 0 && waited(p, 4);
    } else if (argc > 1 && strcmp(argv[1], "spawn") == 0) {
        char count[32];
        char *args[] = {argv[0], "again", count, NULL};
        pid_t p;
        snprintf(count, sizeof count, "%ld", n);
        fflush(stdout);
        ok = posix_spawn(&p, argv[0], NULL, NULL, args, environ) == 0 && waited(p, 4);
    } else if (argc > 1 && strcmp(argv[1], "spin") == 0) {
        fflush(stdout);
        for (int k = 0; k < 4; k++) {
            if (fork() == 0) {
                printf("up %d\n", k);
                fflush(stdout);
                for (;;)
                    work(1000);
            }
        }
        work(n);
        puts("up parent");
        fflush(stdout);
        while (wait(NULL) > 0)
            ;
    } else {
        pid_t kids[4];
        fflush(stdout);
        for (int k = 0; k < 4; k++) {
            kids[k] = fork();
            if (kids[k] == 0) {
                work(n);
                exit(10 + k);
            }
        }
        work(n);
        for (int k = 0; k < 4; k++)
            ok &= kids[k] > 0 && waited(kids[k], 10 + k);
    }
    puts(ok ? "forker ok" : "forker bad");
    return ok ? 0 : 1;
}
