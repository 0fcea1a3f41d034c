/* Load test of the store server: N concurrent connections and R requests in
 * all, every reply checked byte for byte, with the server's descriptors and
 * memory read from /proc before, during and after.
 *
 * The server runs in a child process (libosstore's os_server_start on a
 * fresh store) so that its descriptors and memory can be measured apart from
 * the clients'. The parent keeps every connection busy with one request in
 * flight each (the protocol is strictly request, reply) through one epoll
 * loop.
 *
 *   loadtest [CONNECTIONS [REQUESTS]]     defaults 1000 and 1000000
 *
 * Prints the figures and a last line "loadtest: N passed, M failed". */
#include <osstore.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../c/check.h"

static char scratch[] = "/tmp/osstore-load-XXXXXX";
/* Descriptors the first look-ups add for good, as in a library get: the
 * pin board meta/pins, mapped and locked at the store's first pin
 * (src/cache/pinboard.rs: one whatever the number of connections and
 * objects), and the ref cache's inotify instance, made at the store's
 * first look-up (src/refcache.rs). */
#define LOOKUP_FDS_KEPT 2
static char sock_path[100];
static char tree_path[PATH_MAX];

/* The requests the clients cycle through, with the exact replies. */
struct exchange {
    const char *request;
    char reply[PATH_MAX + 64];
};
static struct exchange exchanges[3];

static void fail_setup(const char *what)
{
    fprintf(stderr, "loadtest: %s: %s (%s)\n", what, strerror(errno), os_last_error());
    exit(2);
}

static void raise_fd_limit(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        fail_setup("getrlimit");
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        if (rl.rlim_cur < want) {
            rl.rlim_max = want;
            rl.rlim_cur = want;
        }
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fail_setup("setrlimit RLIMIT_NOFILE");
    }
}

/* The server process: opens a store, commits one object, serves until the
 * parent closes the control pipe, then stops and reports through the exit
 * status whether the stop was clean. */
static void run_server(int ready_fd, int quit_fd, rlim_t fds)
{
    os_store_t *store = NULL;
    os_object_t *obj = NULL;
    os_server_t *server = NULL;
    char root[PATH_MAX];

    raise_fd_limit(fds);
    snprintf(root, sizeof root, "%s/store", scratch);
    if (os_store_open_ex(root, OS_STORE_NO_SYNC, &store) != 0 || os_store_new(store, "load", &obj) != 0 ||
        os_store_commit(store, obj, "load", NULL) != 0 || os_server_start(store, sock_path, &server) != 0) {
        fprintf(stderr, "loadtest server: %s\n", os_last_error());
        _exit(3);
    }
    if (write(ready_fd, "r", 1) != 1)
        _exit(3);
    char c;
    while (read(quit_fd, &c, 1) < 0 && errno == EINTR)
        ;
    os_server_stop(server);
    os_store_free(store);
    _exit(0);
}

/* The number after "<key>" in a /proc file of "Key:   value kB" lines. */
static long proc_field(const char *path, const char *key)
{
    char line[256];
    long value = -1;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0)
            value = strtol(line + strlen(key), NULL, 10);
    if (f)
        fclose(f);
    return value;
}

static long proc_value(pid_t pid, const char *key)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    return proc_field(path, key);
}

static int fd_count(pid_t pid)
{
    char path[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static int connect_one(void)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    memcpy(addr.sun_path, sock_path, sizeof sock_path);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail_setup("socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        fail_setup("connect");
    return fd;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long conns = argc > 1 ? atol(argv[1]) : 1000;
    long total = argc > 2 ? atol(argv[2]) : 1000000;
    int ready[2], quit[2];

    if (conns < 1 || total < conns) {
        fprintf(stderr, "usage: loadtest [CONNECTIONS [REQUESTS >= CONNECTIONS]]\n");
        return 2;
    }
    if (!mkdtemp(scratch))
        fail_setup("mkdtemp");
    snprintf(sock_path, sizeof sock_path, "%s/store.sock", scratch);
    exchanges[0].request = "{\"method\": \"read-tree\", \"object-id\": \"load\"}";
    exchanges[1].request = "{\"method\": \"read-tree\", \"object-id\": \"absent\"}";
    snprintf(exchanges[1].reply, sizeof exchanges[1].reply, "{\"path\": null}");
    exchanges[2].request = "{\"method\": \"source\", \"name\": \"org.osbuild.files\"}";
    snprintf(exchanges[2].reply, sizeof exchanges[2].reply, "{\"path\": \"%s/store/sources/org.osbuild.files\"}", scratch);

    rlim_t fds = (rlim_t)conns + 64;
    raise_fd_limit(fds);
    if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(quit, O_CLOEXEC) != 0)
        fail_setup("pipe");
    pid_t server = fork();
    if (server < 0)
        fail_setup("fork");
    if (server == 0) {
        close(ready[0]);
        close(quit[1]);
        run_server(ready[1], quit[0], fds);
    }
    close(ready[1]);
    close(quit[0]);
    char c;
    if (read(ready[0], &c, 1) != 1) {
        fprintf(stderr, "loadtest: the server did not start\n");
        return 2;
    }
    /* The reply names the object itself, objects/<name> (cache.md). */
    char link[PATH_MAX], target[128];
    snprintf(link, sizeof link, "%s/store/refs/load", scratch);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0 || strncmp(target, "../", 3) != 0)
        fail_setup("readlink refs/load");
    target[n] = '\0';
    snprintf(tree_path, sizeof tree_path, "%s/store/%s", scratch, target + 3);
    snprintf(exchanges[0].reply, sizeof exchanges[0].reply, "{\"path\": \"%s\"}", tree_path);

    int fds_idle = fd_count(server);
    long rss_idle = proc_value(server, "VmRSS:");
    long slab_idle = proc_field("/proc/meminfo", "Slab:");

    int *sock = calloc((size_t)conns, sizeof *sock);
    int *which = calloc((size_t)conns, sizeof *which);
    if (!sock || !which)
        fail_setup("calloc");
    for (long i = 0; i < conns; i++)
        sock[i] = connect_one();
    /* One round trip on the last connection: every accept has happened. */
    {
        char buf[PATH_MAX + 64];
        send(sock[conns - 1], exchanges[2].request, strlen(exchanges[2].request), 0);
        ssize_t n = recv(sock[conns - 1], buf, sizeof buf, 0);
        CHECK(n == (ssize_t)strlen(exchanges[2].reply) && memcmp(buf, exchanges[2].reply, (size_t)n) == 0);
    }
    int fds_connected = fd_count(server);
    long rss_connected = proc_value(server, "VmRSS:");
    long slab_connected = proc_field("/proc/meminfo", "Slab:");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    long sent = 0, answered = 0, wrong = 0, errors = 0;
    for (long i = 0; i < conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, sock[i], &ev);
        which[i] = (int)(i % 3);
        if (send(sock[i], exchanges[which[i]].request, strlen(exchanges[which[i]].request), 0) < 0)
            errors++;
        sent++;
    }

    double t0 = now_s();
    long rss_mid = -1;
    struct epoll_event events[256];
    char buf[PATH_MAX + 64];
    while (answered < sent) {
        int n = epoll_wait(ep, events, 256, 10000);
        if (n <= 0) {
            fprintf(stderr, "loadtest: no reply for 10 s (%ld of %ld answered)\n", answered, sent);
            errors += sent - answered;
            break;
        }
        for (int e = 0; e < n; e++) {
            long i = (long)events[e].data.u64;
            ssize_t got = recv(sock[i], buf, sizeof buf, MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            answered++;
            const char *want = exchanges[which[i]].reply;
            if (got != (ssize_t)strlen(want) || memcmp(buf, want, (size_t)got) != 0) {
                if (wrong++ < 5)
                    fprintf(stderr, "unexpected reply on connection %ld: %.*s\n", i, got > 0 ? (int)got : 0, buf);
            }
            if (answered == total / 2)
                rss_mid = proc_value(server, "VmRSS:");
            if (sent < total) {
                which[i] = (which[i] + 1) % 3;
                if (send(sock[i], exchanges[which[i]].request, strlen(exchanges[which[i]].request), 0) < 0)
                    errors++;
                sent++;
            }
        }
    }
    double elapsed = now_s() - t0;
    int fds_after = fd_count(server);
    long rss_after = proc_value(server, "VmRSS:");

    for (long i = 0; i < conns; i++)
        close(sock[i]);
    close(ep);
    /* The server notices the closed connections; give it a moment. */
    int fds_closed = -1;
    for (int tries = 0; tries < 100; tries++) {
        fds_closed = fd_count(server);
        if (fds_closed == fds_idle + LOOKUP_FDS_KEPT)
            break;
        usleep(20000);
    }

    printf("connections:            %ld concurrent\n", conns);
    printf("requests:               %ld sent, %ld answered, %ld wrong, %ld transport errors\n", sent, answered,
           wrong, errors);
    printf("throughput:             %.0f requests/s (%.2f s)\n", answered / elapsed, elapsed);
    printf("server descriptors:     %d idle, %d with connections, %d after the requests, %d after closing\n",
           fds_idle, fds_connected, fds_after, fds_closed);
    printf("server memory (RSS):    %ld KiB idle, %ld KiB connected (%.1f KiB per connection), %ld KiB halfway, "
           "%ld KiB at the end\n",
           rss_idle, rss_connected, (double)(rss_connected - rss_idle) / (double)conns, rss_mid, rss_after);
    printf("kernel memory (slab):   %.1f KiB per connection, both socket ends, whole machine\n",
           (double)(slab_connected - slab_idle) / (double)conns);

    CHECK(answered == total);
    CHECK(wrong == 0);
    CHECK(errors == 0);
    CHECK(fds_connected == fds_idle + conns);
    CHECK(fds_after == fds_connected + LOOKUP_FDS_KEPT);
    CHECK(fds_closed == fds_idle + LOOKUP_FDS_KEPT);
#ifdef __SANITIZE_ADDRESS__
    /* AddressSanitizer keeps freed memory in quarantine, so the server's RSS
     * grows with every request by design: memory is checked in the plain
     * build, descriptors and replies in both. */
    printf("SKIP memory checks: built with AddressSanitizer\n");
#else
    /* Flat memory: serving requests grows nothing per request (allow 1 MiB
     * of allocator noise). */
    CHECK(rss_mid > 0 && rss_after - rss_mid < 1024);
    CHECK((rss_connected - rss_idle) * 1024 / conns <= 16 * 1024);
#endif

    close(quit[1]);
    int status = 0;
    waitpid(server, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    char cmd[PATH_MAX];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    CHECK(system(cmd) == 0);
    free(sock);
    free(which);
    return check_done("loadtest");
}
