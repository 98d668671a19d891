/* bench_idle — what idle live inbox connections cost the gateway, and one event fanned out to all of them.
 *
 *   bench_idle PORT SETUP_FILE GATEWAY_PID CLIENTS [PER_PROCESS]
 *
 * SETUP_FILE's first line is a tenant: "<api key> <channel id> <channel number> <auth token>" (tests/bench/run.sh
 * makes it through the admin API). CLIENTS inbox WebSockets of that one tenant are opened, spread over child
 * processes of PER_PROCESS (5000) clients each, since one process may hold only so many descriptors. Then:
 *
 *   1. the gateway's RSS (VmRSS of /proc/GATEWAY_PID/status) before the first connection, and once every client is
 *      welcomed and the connections sat idle for a while: the difference per connection;
 *   2. one signed Twilio webhook for the tenant (after a first one, not counted, that warms the path up): the time
 *      from writing it until the first and the last client has its message.created, and how many got it;
 *   3. the RSS again once the event is delivered and the connections are idle again: back to the idle level?
 *
 * The parent only measures and sends the webhook (blocking sockets); each child runs one libuv loop over its
 * clients and reports on a pipe: "R" when all its clients are welcomed, "D <first ns> <last ns> <count>" when all
 * got the event (uv_hrtime: CLOCK_MONOTONIC, one clock for every process). Our own client code (tests/bench/loadkit.h),
 * nothing of the gateway's I/O. */
#include "tests/bench/loadkit.h"

#include "proto/mem.h"
#include "proto/str.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <time.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#define CONNECTING_MAX 256 /* connects in flight per process, so the listen queue never overflows */
#define SETTLE_MS 6000 /* idle time before each RSS reading (the gateway returns free memory every 5 s) */

static int port;
static char key[128], channel[32], number[32], token[128];

static void die(const char *what)
{
    fprintf(stderr, "bench_idle: %s\n", what);
    exit(1);
}

/* ---- a child: its share of the clients ------------------------------------------------------------------------ */

typedef struct wsc {
    uv_tcp_t tcp;
    sb_buf_t in;
    int state;  /* 0 handshake, 1 waiting welcome, 2 welcomed */
    int events; /* message.created events received */
} wsc_t;

static uv_loop_t *loop;
static wsc_t *clients;
static int nclients, next_connect, connecting, welcomed, got, round_;
static uint64_t first_ns, last_ns;
static int report_fd;

static void report(const char *line)
{
    size_t n = strlen(line);
    if (write(report_fd, line, n) != (ssize_t)n)
        die("cannot report to the parent");
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    wsc_t *c = h->data;
    (void)suggested;
    sb_buf_reserve(&c->in, 4096);
    *b = uv_buf_init(c->in.p + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

static void on_frame(void *arg, int opcode, const char *p, size_t n)
{
    wsc_t *c = arg;
    if (opcode != 1)
        return;
    if (c->state == 1) {
        if (n < 14 || memcmp(p, "{\"op\":\"welcome", 14) != 0)
            die("no welcome (is the API key right?)");
        c->state = 2;
        if (++welcomed == nclients)
            report("R\n");
        return;
    }
    static const char created[] = "\"type\":\"message.created\"";
    if (c->state != 2 || !memmem(p, n, created, sizeof created - 1))
        return;
    uint64_t now = uv_hrtime();
    if (++c->events != round_ + 1) /* every event reaches every client once, in order */
        die("a client got an event twice, or missed one");
    if (!got++)
        first_ns = now;
    last_ns = now;
    if (got == nclients) {
        got = 0;
        round_++;
        char line[128];
        struct timespec cpu;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
        snprintf(line, sizeof line, "D %llu %llu %d %llu\n", (unsigned long long)first_ns,
                 (unsigned long long)last_ns, nclients,
                 (unsigned long long)cpu.tv_sec * 1000000000ull + (unsigned long long)cpu.tv_nsec);
        report(line);
    }
}

static void connect_more(void);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wsc_t *c = s->data;
    (void)buf;
    if (nread < 0)
        die("an inbox client was disconnected");
    c->in.len += (size_t)nread;
    size_t off = 0;
    if (c->state == 0) {
        long head = lk_ws_handshake(c->in.p, c->in.len);
        if (head == 0)
            return;
        if (head < 0)
            die("handshake refused");
        off = (size_t)head;
        c->state = 1;
        connecting--;
        connect_more();
    }
    off += lk_ws_frames(c->in.p + off, c->in.len - off, on_frame, c);
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
    if (!c->in.len) /* an idle client holds no buffer either */
        sb_buf_cleanup(&c->in);
}

static void on_connected(uv_connect_t *req, int status)
{
    wsc_t *c = req->data;
    free(req);
    if (status < 0)
        die("cannot connect an inbox client");
    /* the upgrade and the hello in one write: the hello waits in the socket until the handshake is answered */
    char head[256], hello[256];
    int n = lk_inbox_upgrade(head, sizeof head, port);
    snprintf(hello, sizeof hello, "{\"op\":\"hello\",\"token\":\"%s\"}", key);
    unsigned char out[600];
    memcpy(out, head, (size_t)n);
    size_t len = (size_t)n + lk_ws_text(out + n, hello);
    if (lk_write_copy((uv_stream_t *)&c->tcp, (char *)out, len) < 0)
        die("write failed");
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void connect_more(void)
{
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    while (connecting < CONNECTING_MAX && next_connect < nclients) {
        wsc_t *c = &clients[next_connect++];
        uv_tcp_init(loop, &c->tcp);
        c->tcp.data = c;
        uv_connect_t *req = sb_malloc(sizeof *req);
        req->data = c;
        if (uv_tcp_connect(req, &c->tcp, (struct sockaddr *)&addr, on_connected) < 0)
            die("connect");
        connecting++;
    }
}

/* The parent closed its end: stop. */
static void on_parent(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    uv_poll_stop(p);
    uv_stop(p->loop);
}

static void child(int n, int rfd, int wfd)
{
    report_fd = wfd;
    nclients = n;
    loop = uv_default_loop();
    clients = sb_calloc((size_t)n, sizeof *clients);
    connect_more();
    uv_poll_t parent;
    uv_poll_init(loop, &parent, rfd);
    uv_poll_start(&parent, UV_READABLE | UV_DISCONNECT, on_parent);
    uv_run(loop, UV_RUN_DEFAULT);
    _exit(0);
}

/* ---- the parent ---------------------------------------------------------------------------------------------- */

static long rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot read the gateway's /proc status");
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* CPU time the process has used so far, all its threads (/proc/PID/task/TID/schedstat: ns on the CPU), in ns. */
static uint64_t cpu_ns(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        die("cannot list the gateway's threads");
    uint64_t total = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char p[320];
        snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", pid, e->d_name);
        FILE *f = fopen(p, "r");
        unsigned long long ns = 0;
        if (f && fscanf(f, "%llu", &ns) == 1)
            total += ns;
        if (f)
            fclose(f);
    }
    closedir(d);
    return total;
}

/* Sends the one webhook (blocking); returns when it was written. */
static uint64_t send_webhook(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("cannot reach the gateway");
    char sid[40];
    snprintf(sid, sizeof sid, "SM%032llx", (unsigned long long)uv_hrtime());
    sb_buf_t req;
    sb_buf_init(&req);
    lk_twilio_sms(&req, port, channel, number, token, sid, "+14155550100", "bench idle fan out");
    uint64_t at = uv_hrtime();
    if (write(fd, req.p, req.len) != (ssize_t)req.len)
        die("cannot send the webhook");
    char answer[64] = {0};
    if (read(fd, answer, sizeof answer - 1) < 12 || memcmp(answer, "HTTP/1.1 200", 12) != 0)
        die("the webhook was not acknowledged with 200");
    close(fd);
    sb_buf_cleanup(&req);
    return at;
}

/* The children's "D" reports together: the first and last delivery, how many, their CPU time so far. */
typedef struct report {
    uint64_t first, last, cpu;
    long count;
} report_t;

static report_t sum_reports(char (*lines)[128], int nprocs)
{
    report_t r = {.first = UINT64_MAX};
    for (int i = 0; i < nprocs; i++) {
        unsigned long long a, b, cpu;
        int n;
        if (sscanf(lines[i], "D %llu %llu %d %llu", &a, &b, &n, &cpu) != 4)
            die("a child's report is garbled");
        r.first = a < r.first ? a : r.first;
        r.last = b > r.last ? b : r.last;
        r.count += n;
        r.cpu += cpu;
    }
    return r;
}

/* Reads one line from each child (fds[i]), into lines[i]; false on timeout. */
static bool read_lines(int *fds, char (*lines)[128], int nprocs, int timeout_ms)
{
    for (int i = 0; i < nprocs; i++) {
        size_t len = 0;
        while (len < 127) {
            struct pollfd p = {.fd = fds[i], .events = POLLIN};
            if (poll(&p, 1, timeout_ms) <= 0)
                return false;
            if (read(fds[i], lines[i] + len, 1) != 1)
                die("a child process died");
            if (lines[i][len++] == '\n')
                break;
        }
        lines[i][len] = '\0';
    }
    return true;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6)
        die("usage: bench_idle PORT SETUP_FILE GATEWAY_PID CLIENTS [PER_PROCESS]");
    port = atoi(argv[1]);
    int gw = atoi(argv[3]), total = atoi(argv[4]), per = argc == 6 ? atoi(argv[5]) : 5000;
    FILE *f = fopen(argv[2], "r");
    if (!f || fscanf(f, "%127s %31s %31s %127s", key, channel, number, token) != 4)
        die("cannot read a tenant from the setup file");
    fclose(f);
    if (total < 1 || per < 1)
        die("nothing to do");
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl; /* each child holds PER_PROCESS sockets: take what the hard limit allows */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)per + 64)
            die("a process may not hold PER_PROCESS descriptors here: give a smaller PER_PROCESS");
    }

    long rss0 = rss_kb(gw);
    int nprocs = (total + per - 1) / per;
    int *from = sb_calloc((size_t)nprocs, sizeof *from), *to = sb_calloc((size_t)nprocs, sizeof *to);
    pid_t *pids = sb_calloc((size_t)nprocs, sizeof *pids);
    char(*lines)[128] = sb_calloc((size_t)nprocs, sizeof *lines);
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < nprocs; i++) {
        int up[2], down[2];
        if (pipe(up) < 0 || pipe(down) < 0)
            die("pipe");
        int n = i < nprocs - 1 ? per : total - per * (nprocs - 1);
        if ((pids[i] = fork()) == 0) {
            close(up[0]);
            close(down[1]);
            for (int j = 0; j < i; j++) { /* the others' pipes are not ours */
                close(from[j]);
                close(to[j]);
            }
            child(n, down[0], up[1]);
        }
        close(up[1]);
        close(down[0]);
        from[i] = up[0];
        to[i] = down[1];
    }
    if (!read_lines(from, lines, nprocs, 120000))
        die("the clients were not all welcomed within 120 s");
    double connect_s = (double)(uv_hrtime() - t0) / 1e9;
    usleep(SETTLE_MS * 1000);
    long rss_idle = rss_kb(gw);
    printf("  %d inbox clients of one tenant connected and welcomed in %.1f s over %d processes\n", total, connect_s,
           nprocs);
    printf("  gateway RSS: %.1f MB before, %.1f MB with them idle: %.0f bytes per idle connection\n", rss0 / 1024.0,
           rss_idle / 1024.0, (double)(rss_idle - rss0) * 1024.0 / total);

    /* a first event warms the path up (the tenant's actors are activated, its channel cached): not counted */
    send_webhook();
    if (!read_lines(from, lines, nprocs, 30000))
        die("the first event did not reach every client within 30 s");
    report_t warm = sum_reports(lines, nprocs);
    usleep(SETTLE_MS * 1000);
    printf("  gateway RSS after a first event to all of them (not timed: it warms the path up): %.1f MB\n",
           rss_kb(gw) / 1024.0);
    uint64_t gw_cpu0 = cpu_ns(gw);
    uint64_t fired = send_webhook();
    fprintf(stderr, "bench_idle: the event's webhook was written at %.6f s (CLOCK_MONOTONIC, for perf --time)\n",
            (double)fired / 1e9);
    if (!read_lines(from, lines, nprocs, 30000))
        die("the event did not reach every client within 30 s");
    uint64_t gw_cpu = cpu_ns(gw) - gw_cpu0; /* (read once every client has it: a little after the last) */
    report_t r = sum_reports(lines, nprocs);
    uint64_t first = r.first, last = r.last, clients_cpu = r.cpu - warm.cpu;
    long count = r.count;
    printf("  one event to all %ld: from the webhook written to the first client %.2f ms, to the last %.2f ms "
           "(fan-out, first to last delivery: %.2f ms)\n",
           count, (double)(first - fired) / 1e6, (double)(last - fired) / 1e6, (double)(last - first) / 1e6);
    printf("        CPU meanwhile: gateway %.1f ms (%.2f us a client), the clients' processes %.1f ms (%.2f us a client)\n",
           (double)gw_cpu / 1e6, (double)gw_cpu / 1e3 / (double)count, (double)clients_cpu / 1e6,
           (double)clients_cpu / 1e3 / (double)count);
    usleep(SETTLE_MS * 1000);
    long rss_after = rss_kb(gw);
    printf("  gateway RSS once it was delivered and they are idle again: %.1f MB, %+.1f%% of the idle figure (%.0f "
           "bytes per connection over the start)\n",
           rss_after / 1024.0, 100.0 * (double)(rss_after - rss_idle) / (double)rss_idle,
           (double)(rss_after - rss0) * 1024.0 / total);
    for (int i = 0; i < nprocs; i++)
        close(to[i]);
    for (int i = 0; i < nprocs; i++)
        waitpid(pids[i], NULL, 0);
    return 0;
}
