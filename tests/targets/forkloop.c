/* A program that forks a child which calls a traced function many times.
 *
 *   forkloop N    after "go": the child calls tick() N times and exits 0;
 *                 the parent waits for it, calls tick() once, and prints
 *                 "child status S ticks T" (T: the parent's own sum).
 *
 * Traced without following children, the child keeps the hooks it inherited
 * and writes into its copy of the agent's ring, which nobody drains.
 */
#include <sys/wait.h>
#include <unistd.h>

#include "target.h"

TARGET_FN long tick(long i)
{
    KEEP(i);
    return i + 1;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? parse_count(argv[1]) : 100000;
    wait_go();
    pid_t child = fork();
    if (child < 0)
        return 3;
    if (child == 0) {
        long sum = 0;
        for (long i = 0; i < n; i++)
            sum += tick(i);
        KEEP(sum);
        _exit(0);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child)
        return 4;
    long mine = tick(41);
    printf("child status %d ticks %ld\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), mine);
    fflush(stdout);
    return 0;
}
