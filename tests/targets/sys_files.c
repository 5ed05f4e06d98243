/* System calls on files, for `instr syscalls` against `strace -f`.
 *
 * The first system call of main is getppid(): the comparison counts strace's
 * calls from there on (what happens before main, in the dynamic loader, is
 * not the target's doing; instr arms before main and sees none of it).
 * Everything after is deterministic: the same calls, results and errors on
 * every run. argv[1] is a scratch directory.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    char dir[512], a[600], b[600], buf[64];
    struct stat st;
    int fd, i, p[2];
    FILE *f;

    getppid(); /* the window starts here */
    snprintf(dir, sizeof dir, "%s/files", argc > 1 ? argv[1] : "/tmp");
    snprintf(a, sizeof a, "%s/a.txt", dir);
    snprintf(b, sizeof b, "%s/b.txt", dir);
    mkdir(dir, 0700);
    fd = open(a, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    for (i = 0; i < 5; i++)
        write(fd, "hello\n", 6);
    close(fd);
    f = fopen(a, "r");
    while (fgets(buf, sizeof buf, f) != NULL)
        ;
    fclose(f);
    stat(a, &st);
    lstat(a, &st);
    access(a, R_OK);
    access("/nonexistent/instr", F_OK);      /* ENOENT */
    open("/nonexistent/instr", O_RDONLY);    /* ENOENT */
    rename(a, b);
    unlink(b);
    rmdir(dir);
    pipe(p);
    write(p[1], "x", 1);
    read(p[0], buf, 1);
    dup2(p[0], 10);
    close(10);
    close(p[0]);
    close(p[1]);
    close(-1);                                /* EBADF */
    return 0;
}
