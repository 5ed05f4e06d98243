/* vfork + exec, as sh does for external commands: the child runs on the
 * parent's stack until it execs. The parent then writes and exits 0. */
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    int st = 0;
    pid_t p;

    getppid(); /* the window starts here */
    p = vfork();
    if (p == 0) {
        execl("/bin/true", "true", (char *) NULL);
        _exit(127);
    }
    waitpid(p, &st, 0);
    write(1, "parent\n", 7);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}
