/* A target for `instr syscalls --complete` on a statically linked program
 * (the tests build it with `gcc -static`), against `strace -f -c`.
 *
 * Frida cannot inject into a static glibc program, so instr runs it under a
 * seccomp filter (instr/syscalls/static.py) and sees every call from its
 * execve on, as strace does: the whole run is compared, libc's start-up
 * included. Everything is deterministic: file calls (two of them fail), then
 * a fork whose child makes calls of its own and exits with 3. argv[1] is a
 * scratch directory; with argv[2] ("hold"), it first prints "ready" and
 * waits for a line on stdin.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    char path[512], buf[64];
    struct stat st;
    int fd, i, status = 0;
    pid_t pid;

    if (argc > 2 && strcmp(argv[2], "hold") == 0) {
        write(1, "ready\n", 6);
        read(0, buf, sizeof buf);
    }
    getppid();
    snprintf(path, sizeof path, "%s/static.txt", argc > 1 ? argv[1] : "/tmp");
    fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    for (i = 0; i < 3; i++)
        write(fd, "static\n", 7);
    close(fd);
    fd = open(path, O_RDONLY);
    while (read(fd, buf, sizeof buf) > 0)
        ;
    close(fd);
    stat(path, &st);
    access("/nonexistent/instr", F_OK); /* ENOENT */
    close(-1);                          /* EBADF */
    pid = fork();
    if (pid == 0) {
        getpid();
        fd = open(path, O_RDONLY);
        read(fd, buf, 4);
        close(fd);
        _exit(3);
    }
    waitpid(pid, &status, 0);
    unlink(path);
    return WIFEXITED(status) && WEXITSTATUS(status) == 3 ? 0 : 1;
}
