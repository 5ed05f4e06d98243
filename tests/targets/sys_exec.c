/* exec without fork, for `instr syscalls -F` against `strace -f`.
 *
 * Each process image starts its window with getppid(), the first system call
 * of main (see sys_files.c): this program, then the image it execs (itself,
 * with "again"), which exits with status 4.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int fd;

    getppid(); /* the window starts here */
    if (argc > 1 && strcmp(argv[1], "again") == 0) {
        fd = open("/dev/null", O_WRONLY);
        write(fd, "again\n", 6);
        close(fd);
        return 4;
    }
    close(-1); /* EBADF */
    execl(argv[0], argv[0], "again", (char *) NULL);
    return 127;
}
