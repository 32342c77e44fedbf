/*
 * epoll_echo: the smallest honest baseline for the lab's echo benchmarks.
 * One thread, one level-triggered epoll set, non-blocking sockets, a read
 * and a write per readiness event: what chapter 03 does, in C, with no
 * runtime underneath. Echo mode only, no grace period: compare starts it,
 * measures it, and ends it with SIGTERM.
 *
 *   cc -O2 -o epoll_echo epoll_echo.c
 *   ./epoll_echo -addr 127.0.0.1:0 -mode echo   # prints "listening on 127.0.0.1:PORT"
 *
 * A reply the socket does not take at once is waited for with poll(2) on
 * that one socket, as chapters 03 and 04 do: fine for ping-pong and
 * pipelined echo, whose replies are small; a client that never reads would
 * stall it, as it stalls them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 128
#define BUF_SIZE (64 << 10)

static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static void die(const char *what) {
	fprintf(stderr, "epoll_echo: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(const char *why) {
	fprintf(stderr, "epoll_echo: %s\nusage: epoll_echo [-addr HOST:PORT] [-mode echo]\n", why);
	exit(2);
}

/* write_all writes n bytes to a non-blocking fd, waiting in poll(2) when
 * the socket is full. Returns -1 when the client is gone. */
static int write_all(int fd, const char *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w >= 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -1;
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return -1;
	}
	return 0;
}

int main(int argc, char **argv) {
	const char *addr = "127.0.0.1:12345";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-addr") == 0 && i + 1 < argc)
			addr = argv[++i];
		else if (strcmp(argv[i], "-mode") == 0 && i + 1 < argc) {
			if (strcmp(argv[++i], "echo") != 0)
				usage("only -mode echo is served");
		} else
			usage("unknown argument");
	}
	char host[64];
	const char *colon = strrchr(addr, ':');
	if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
		usage("-addr wants HOST:PORT");
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		usage("-addr wants an IPv4 address");

	/* SIGTERM ends epoll_wait with EINTR: no SA_RESTART. */
	struct sigaction act = {.sa_handler = on_signal};
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);
	signal(SIGPIPE, SIG_IGN);

	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("bind");
	if (listen(lfd, SOMAXCONN) < 0)
		die("listen");
	socklen_t len = sizeof sa;
	getsockname(lfd, (struct sockaddr *)&sa, &len);
	printf("listening on %s:%d\n", host, ntohs(sa.sin_port));
	fflush(stdout); /* a pipe, not a terminal: stdout is fully buffered */

	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		die("epoll_ctl");

	static char buf[BUF_SIZE];
	struct epoll_event events[MAX_EVENTS];
	while (!stopping) {
		int n = epoll_wait(ep, events, MAX_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;
			if (fd == lfd) {
				/* One accept per event: level-triggered, epoll asks again. */
				int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (c < 0)
					continue; /* EAGAIN, or EMFILE: a benchmark never gets there */
				struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
				if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0)
					close(c);
				continue;
			}
			ssize_t r = read(fd, buf, sizeof buf);
			if (r > 0 && write_all(fd, buf, (size_t)r) == 0)
				continue;
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			close(fd); /* EOF, reset, or a failed write: closing removes it from the set */
		}
	}
	return 0;
}
