/* fork, for `instr syscalls -F` against `strace -f`: the parent forks three
 * children that each make a few system calls and _exit, and a fourth that
 * execs this program again ("again": it writes and exits 4). The parent waits
 * for each child before the next fork, and exits 0 only if every child ended
 * as it should (a child killed by a signal makes it exit 1).
 *
 * Each process image starts its window with getppid() (see sys_files.c);
 * forked children start inside their parent's.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void child(int i)
{
    int fd = open("/dev/null", O_WRONLY);

    write(fd, "child\n", 6);
    close(fd);
    close(-1); /* EBADF */
    if (i == 2)
        getpid();
    _exit(10 + i);
}

int main(int argc, char **argv)
{
    int i, st, bad = 0;
    pid_t p;

    getppid(); /* the window starts here */
    if (argc > 1 && strcmp(argv[1], "again") == 0) {
        int fd = open("/dev/null", O_WRONLY);
        write(fd, "again\n", 6);
        close(fd);
        return 4;
    }
    for (i = 0; i < 3; i++) {
        p = fork();
        if (p == 0)
            child(i);
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 10 + i)
            bad = 1;
    }
    p = fork();
    if (p == 0) {
        execl(argv[0], argv[0], "again", (char *) NULL);
        _exit(127);
    }
    if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 4)
        bad = 1;
    write(1, bad ? "bad\n" : "ok\n", bad ? 4 : 3);
    return bad;
}
