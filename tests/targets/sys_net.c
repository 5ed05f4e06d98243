/* Sockets on loopback (TCP over IPv4, and a UNIX socketpair), for
 * `instr syscalls` against `strace -f`. The window starts at getppid(),
 * the first system call of main (see sys_files.c). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    char buf[64];
    int one = 1, srv, cli, conn, sp[2];

    getppid(); /* the window starts here */
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bind(srv, (struct sockaddr *) &addr, sizeof addr);
    listen(srv, 1);
    getsockname(srv, (struct sockaddr *) &addr, &len);
    cli = socket(AF_INET, SOCK_STREAM, 0);
    connect(cli, (struct sockaddr *) &addr, sizeof addr);
    conn = accept(srv, NULL, NULL);
    send(cli, "ping", 4, 0);
    recv(conn, buf, sizeof buf, 0);
    sendto(conn, "pong", 4, 0, NULL, 0);
    recvfrom(cli, buf, sizeof buf, 0, NULL, NULL);
    shutdown(cli, SHUT_WR);
    recv(conn, buf, sizeof buf, 0); /* 0: the peer shut down */
    close(conn);
    close(cli);
    close(srv);
    connect(srv, (struct sockaddr *) &addr, sizeof addr); /* EBADF */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    write(sp[0], "unix", 4);
    read(sp[1], buf, sizeof buf);
    close(sp[0]);
    close(sp[1]);
    return 0;
}
