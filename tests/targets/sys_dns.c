/* getaddrinfo lookups that need no network nor files: numeric hosts only.
 * One succeeds (127.0.0.1, service 8080), one fails (EAI_NONAME). */
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>

int main(void)
{
    struct addrinfo hints, *res = NULL;
    int rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    rc = getaddrinfo("127.0.0.1", "8080", &hints, &res);
    if (rc == 0)
        freeaddrinfo(res);
    rc = getaddrinfo("not-an-address", "80", &hints, &res);
    return rc == EAI_NONAME ? 0 : 1;
}
