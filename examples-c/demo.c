/* osstore demo: what an image builder does with the store.
 *
 * A build is a chain of stages; each stage's tree starts as a copy of the
 * previous stage's tree and is then changed. Each stage is cached in the
 * store under an id computed from its configuration and its parent's id, so
 * a second build with the same configuration starts from the cache.
 *
 * Build:  make demo  (or: cc demo.c osstore_client.c $(pkg-config --cflags --libs osstore))
 * Store:  a fresh directory under /tmp, or $OSSTORE_DEMO_STORE.
 */
#define _GNU_SOURCE
#include <osstore.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "osstore_client.h"

/* ---- small helpers ------------------------------------------------------ */

static void die(const char *what)
{
    fprintf(stderr, "demo: %s: %s\n", what, os_last_error());
    exit(1);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void path_join(char *out, const char *dir, const char *name)
{
    if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) {
        fprintf(stderr, "demo: path too long\n");
        exit(1);
    }
}

/* Writes `content` to <tree>/<name>, creating parent directories. */
static void put_file(const char *tree, const char *name, mode_t mode, const char *content)
{
    char path[PATH_MAX];
    path_join(path, tree, name);
    for (char *slash = strchr(path + strlen(tree) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(path, 0755);
        *slash = '/';
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t)strlen(content) || fchmod(fd, mode) != 0) {
        perror(path);
        exit(1);
    }
    close(fd);
}

/* A stage id: a hash of the parent's id and the stage's configuration, the
 * way image builders key their caches. (FNV-1a; any stable hash will do.) */
static void stage_id(char out[17], const char *parent_id, const char *config)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *s = parent_id ? parent_id : ""; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    h = (h ^ '|') * 0x100000001b3ULL;
    for (const char *s = config; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    snprintf(out, 17, "%016" PRIx64, h);
}

/* ---- the stages --------------------------------------------------------- */

typedef void (*stage_fn)(const char *tree);

static void stage_base(const char *tree)
{
    char path[PATH_MAX], target[PATH_MAX];
    put_file(tree, "etc/os-release", 0644, "NAME=\"Demo OS\"\nVERSION_ID=1\n");
    put_file(tree, "usr/bin/hello", 0755, "#!/bin/sh\necho hello\n");
    put_file(tree, "usr/bin/su", 04755, "#!/bin/sh\n# a set-uid tool\n");
    path_join(path, tree, "bin");
    if (symlink("usr/bin", path) != 0)
        perror("symlink");
    path_join(path, tree, "usr/bin/hello");
    path_join(target, tree, "usr/bin/hi");
    if (link(path, target) != 0) /* a hard link: the copy keeps it one */
        perror("link");
}

static void stage_packages(const char *tree)
{
    char name[64];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "usr/share/pkg%03d/README", i);
        put_file(tree, name, 0644, "documentation of a package\n");
    }
    put_file(tree, "var/lib/pkgs/installed", 0644, "pkg000 ... pkg199\n");
}

static void stage_config(const char *tree)
{
    put_file(tree, "etc/hostname", 0644, "demo\n");
    put_file(tree, "etc/motd", 0644, "Built with osstore.\n");
}

struct stage {
    const char *name;
    const char *config;
    stage_fn build;
};

static const struct stage pipeline[] = {
    {"base", "org.osbuild.base: demo-os 1", stage_base},
    {"packages", "org.osbuild.rpm: pkg000..pkg199", stage_packages},
    {"config", "org.osbuild.hostname: demo", stage_config},
};
#define N_STAGES (sizeof pipeline / sizeof pipeline[0])

/* Runs the pipeline: every stage found in the store is skipped; the others
 * start from a copy of their parent's tree and are committed under their id.
 * Leaves the last stage's id in `last_id`. Returns how many stages ran. */
static int build(os_store_t *store, char last_id[17])
{
    char parent[17] = "", id[17];
    int built = 0;

    for (size_t i = 0; i < N_STAGES; i++) {
        const struct stage *st = &pipeline[i];
        stage_id(id, i ? parent : NULL, st->config);
        double t0 = now_ms();
        int cached = os_store_contains(store, id);
        if (cached < 0)
            die("contains");
        if (cached) {
            printf("  %-9s %s  cached      %7.1f us\n", st->name, id, (now_ms() - t0) * 1e3);
        } else {
            os_object_t *obj = NULL;
            if (os_store_new(store, id, &obj) != 0)
                die("new");
            if (i > 0) {
                os_object_t *base = NULL;
                if (os_store_get(store, parent, &base) != 0 || os_object_init(obj, base) != 0)
                    die("init from the parent stage");
                os_object_release(base);
            }
            st->build(os_object_tree(obj));
            char *name = NULL;
            if (os_store_commit(store, obj, id, &name) != 0)
                die("commit");
            printf("  %-9s %s  built       %7.2f ms  -> objects/%s\n", st->name, id, now_ms() - t0, name);
            os_free(name);
            os_object_release(obj);
            built++;
        }
        memcpy(parent, id, sizeof parent);
    }
    memcpy(last_id, parent, 17);
    return built;
}

static int files_seen;

static int count_regular(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (type == FTW_F && S_ISREG(st->st_mode))
        files_seen++;
    return 0;
}

/* The number of regular files below `dir`, or -1. */
static int count_files(const char *dir)
{
    files_seen = 0;
    return nftw(dir, count_regular, 16, FTW_PHYS) == 0 ? files_seen : -1;
}

/* ---- serving trees to a build stage ------------------------------------- */

/* A sandboxed stage does not see the store; it asks the store's server for
 * trees over a Unix socket. Here the demo plays both sides. */
static void serve(os_store_t *store, const char *final_id, const char *scratch)
{
    os_server_t *server = NULL;
    char sock[PATH_MAX], mnt[PATH_MAX], file[PATH_MAX];
    path_join(sock, scratch, "store.sock");
    if (os_server_start(store, sock, &server) != 0)
        die("server start");
    printf("\nserving the store on %s\n", os_server_socket_path(server));

    osc_client_t *client = NULL;
    char *path = NULL;
    if (osc_connect(sock, &client) != 0) {
        fprintf(stderr, "demo: connect: %s\n", strerror(errno));
        exit(1);
    }
    if (osc_read_tree(client, final_id, &path) != 0 || !path) {
        fprintf(stderr, "demo: read-tree: %s\n", osc_last_error(client));
        exit(1);
    }
    printf("  read-tree %s -> %s\n", final_id, path);
    free(path);

    path_join(mnt, scratch, "mnt");
    mkdir(mnt, 0755);
    if (geteuid() != 0) {
        /* The server mounts with the caller's privileges. */
        printf("  read-tree-at skipped: mounting needs root (CAP_SYS_ADMIN)\n");
        osc_close(client);
        os_server_stop(server);
        printf("  server stopped: socket removed\n");
        return;
    }
    if (osc_read_tree_at(client, final_id, mnt, "/etc", &path) != 0) {
        fprintf(stderr, "demo: read-tree-at: %s\n", osc_last_error(client));
        exit(1);
    }
    path_join(file, mnt, "hostname");
    int fd = open(file, O_RDONLY);
    char buf[64] = {0};
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    path_join(file, mnt, "new-file");
    int wfd = open(file, O_WRONLY | O_CREAT, 0644);
    printf("  read-tree-at %s /etc -> %s: hostname is \"%.*s\", writing fails: %s\n", final_id, path,
           n > 0 ? (int)n - 1 : 0, buf, wfd < 0 ? strerror(errno) : "NO (unexpected)");
    if (wfd >= 0)
        close(wfd);
    free(path);
    osc_close(client);
    os_server_stop(server);
    printf("  server stopped: mount and socket removed\n");
}

int main(void)
{
    char scratch[] = "/tmp/osstore-demo-XXXXXX";
    char store_path[PATH_MAX], export_dir[PATH_MAX], final_id[17];
    const char *env = getenv("OSSTORE_DEMO_STORE");

    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        return 1;
    }
    if (env && *env)
        snprintf(store_path, sizeof store_path, "%s", env);
    else
        path_join(store_path, scratch, "store");

    printf("osstore %s demo, store at %s\n\n", os_version(), store_path);

    /* First build: every stage runs and is committed. */
    os_store_t *store = NULL;
    if (os_store_open(store_path, &store) != 0)
        die("open");
    printf("build 1 (empty cache):\n");
    double t0 = now_ms();
    int built = build(store, final_id);
    printf("  %d stages built in %.1f ms\n", built, now_ms() - t0);
    os_store_free(store);

    /* Second build, a new process would do the same: all stages cached. */
    if (os_store_open(store_path, &store) != 0)
        die("reopen");
    printf("\nbuild 2 (same configuration, new store handle):\n");
    t0 = now_ms();
    built = build(store, final_id);
    printf("  %d stages built in %.1f ms: the whole image came from the cache\n", built, now_ms() - t0);

    /* Export the final tree, the way the image is assembled. */
    os_object_t *image = NULL;
    path_join(export_dir, scratch, "image");
    mkdir(export_dir, 0755);
    if (os_store_get(store, final_id, &image) != 0)
        die("get");
    t0 = now_ms();
    if (os_object_export(image, export_dir) != 0)
        die("export");
    printf("\nexported %s to %s: %d files in %.1f ms (hard links, set-id bits, symlinks kept)\n", final_id,
           export_dir, count_files(export_dir), now_ms() - t0);
    os_object_release(image);

    serve(store, final_id, scratch);

    os_store_free(store);
    printf("\nstore closed: work and temp dirs removed, committed trees kept in %s\n", store_path);

    /* The scratch directory holds the export (and the store unless
     * $OSSTORE_DEMO_STORE named one elsewhere). */
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0)
        fprintf(stderr, "demo: could not remove %s\n", scratch);
    return 0;
}
