/* A helper the unit tests that run servers share. */
#ifndef SB_TEST_PORT_H
#define SB_TEST_PORT_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* A TCP port on 127.0.0.1 that was free a moment ago; with keep_fd, a socket stays bound to it without listening
 * (connecting to it is refused) and its descriptor is stored there. */
static inline int pick_port(int *keep_fd)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &l) < 0)
        return -1;
    if (keep_fd)
        *keep_fd = fd;
    else
        close(fd);
    return ntohs(a.sin_port);
}

#endif
