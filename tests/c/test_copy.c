/* Tests of os_object_init_ex/os_object_export_ex (progress, cancellation,
 * OS_COPY_NO_OWNER, versioned options) and of os_log_set/OSSTORE_LOG,
 * against the real shared library. Runs as root (chown) in a private mount
 * namespace (make test-c runs it under unshare and valgrind). */
#include <osstore.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static char scratch[256];

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    if (!f)
        die(path);
    fputs(content, f);
    fclose(f);
}

/* Adds files `from` to `to` - 1 to `root`, in 16 subdirectories. */
static void add_files(const char *root, int from, int to)
{
    char path[PATH_MAX];
    for (int i = from; i < to; i++) {
        fmt(path, sizeof path, "%s/d%02d", root, i % 16);
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            die(path);
        fmt(path, sizeof path, "%s/d%02d/f%d", root, i % 16, i);
        write_file(path, "some content\n");
    }
}

/* A listing of a tree: one line per entry with its path, type and mode,
 * owner, size and mtime, in nftw order (sorted by the caller's compare). */
static char *listing;
static size_t listing_len, listing_cap;
static size_t listing_root_len;

static int list_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    (void)ftw;
    char line[PATH_MAX + 128];
    int n = snprintf(line, sizeof line, "%s %o %u:%u %lld %lld.%09ld\n",
                     path + listing_root_len, (unsigned)st->st_mode, (unsigned)st->st_uid,
                     (unsigned)st->st_gid, (long long)st->st_size,
                     (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    if (listing_len + (size_t)n + 1 > listing_cap) {
        listing_cap = (listing_cap + (size_t)n + 1) * 2;
        listing = realloc(listing, listing_cap);
        if (!listing)
            die("realloc");
    }
    memcpy(listing + listing_len, line, (size_t)n + 1);
    listing_len += (size_t)n;
    return 0;
}

static int line_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted listing of `root` (the caller frees it). */
static char *list_tree(const char *root)
{
    listing = NULL;
    listing_len = listing_cap = 0;
    listing_root_len = strlen(root);
    if (nftw(root, list_one, 16, FTW_PHYS) != 0)
        die(root);
    if (!listing)
        return strdup("");
    /* Sort the lines so that the walk's order does not matter. */
    size_t count = 0;
    for (char *p = listing; *p; p++)
        count += *p == '\n';
    char **lines = calloc(count, sizeof *lines);
    char *sorted = malloc(listing_len + 1);
    if (!lines || !sorted)
        die("malloc");
    size_t i = 0;
    for (char *save = NULL, *l = strtok_r(listing, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        lines[i++] = l;
    qsort(lines, count, sizeof *lines, line_cmp);
    sorted[0] = '\0';
    size_t at = 0;
    for (i = 0; i < count; i++)
        at += (size_t)sprintf(sorted + at, "%s\n", lines[i]);
    free(lines);
    free(listing);
    return sorted;
}

/* Number of entries below `root` (the root not counted). */
static uint64_t entries_below(const char *root)
{
    char *l = list_tree(root);
    uint64_t n = 0;
    for (char *p = l; *p; p++)
        n += *p == '\n';
    free(l);
    return n - 1;
}

/* --- progress callbacks ------------------------------------------------ */

enum cancel_at { NEVER, FIRST, MIDDLE, LAST };

struct watch {
    enum cancel_at cancel_at;
    uint64_t total;          /* entries of the source */
    unsigned sleep_us;       /* a slow callback */
    int calls;
    bool monotonic, other_thread, saw_middle;
    os_progress_t first, last;
    pthread_t caller;
};

static void watch_init(struct watch *w, enum cancel_at at, uint64_t total)
{
    memset(w, 0, sizeof *w);
    w->cancel_at = at;
    w->total = total;
    w->monotonic = true;
    w->caller = pthread_self();
}

static int on_progress(const os_progress_t *p, void *userdata)
{
    struct watch *w = userdata;
    if (!pthread_equal(pthread_self(), w->caller))
        w->other_thread = true;
    if (w->calls == 0)
        w->first = *p;
    else if (p->files_done < w->last.files_done || p->bytes_done < w->last.bytes_done)
        w->monotonic = false;
    w->last = *p;
    w->calls++;
    bool middle = p->files_done > 0 && p->files_done < w->total;
    w->saw_middle |= middle;
    if (w->sleep_us)
        usleep(w->sleep_us);
    switch (w->cancel_at) {
    case FIRST:
        return w->calls == 1;
    case MIDDLE:
        return middle;
    case LAST:
        return p->files_done >= w->total;
    default:
        return 0;
    }
}

static os_copy_options_t options_for(struct watch *w, unsigned flags)
{
    os_copy_options_t o = {.struct_size = sizeof(os_copy_options_t)};
    o.flags = flags;
    o.progress = on_progress;
    o.userdata = w;
    return o;
}

/* --- tests ------------------------------------------------------------- */

static void test_options(os_object_t *obj, os_object_t *base)
{
    os_copy_options_t o = {.struct_size = sizeof o, .flags = 0x80};
    CHECK_RC(os_object_init_ex(obj, base, &o), -EINVAL);
    CHECK(strstr(os_last_error(), "flags") != NULL);
    o.flags = 0;
    o.struct_size = 4;
    CHECK_RC(os_object_init_ex(obj, base, &o), -EINVAL);
    o.struct_size = sizeof o - 4; /* cuts userdata in two */
    CHECK_RC(os_object_init_ex(obj, base, &o), -EINVAL);
    CHECK_RC(os_object_export_ex(obj, NULL, NULL), -EINVAL);
    CHECK_RC(os_object_init_ex(NULL, base, NULL), -EINVAL);
    CHECK_RC(os_object_init_ex(obj, obj, NULL), -EINVAL);

    /* A newer caller's larger struct: zero tail accepted, else -E2BIG. */
    struct {
        os_copy_options_t o;
        uint64_t later;
    } big = {.o = {.struct_size = sizeof big}};
    big.later = 1;
    CHECK_RC(os_object_init_ex(obj, base, &big.o), -E2BIG);

    /* An older caller's smaller struct (no progress member): read up to
     * its size, the rest default. */
    struct {
        size_t struct_size;
        unsigned flags;
    } old = {.struct_size = sizeof old, .flags = 0};
    CHECK_RC(os_object_init_ex(obj, base, (const os_copy_options_t *)&old), 0);
    big.later = 0;
    CHECK_RC(os_object_init_ex(obj, base, &big.o), 0);
}

/* Export with a callback; returns the call's result. */
static int export_watched(os_object_t *obj, const char *to, struct watch *w, unsigned flags)
{
    os_copy_options_t o = options_for(w, flags);
    return os_object_export_ex(obj, to, &o);
}

static void test_progress_and_slow_callback(os_object_t *src, const char *out)
{
    const char *tree = os_object_tree(src);
    uint64_t total = entries_below(tree);
    struct watch w;
    watch_init(&w, NEVER, total);
    w.sleep_us = 150 * 1000;
    CHECK_RC(export_watched(src, out, &w, 0), 0);
    CHECK(w.calls >= 2);
    CHECK(w.monotonic);
    CHECK(!w.other_thread);
    CHECK(w.first.files_done == 0 && w.first.bytes_done == 0);
    CHECK(w.last.files_done == total);
    CHECK(w.last.bytes_done > 0);
    /* not known: the source is not committed */
    CHECK(w.last.files_total == 0 && w.last.bytes_total == 0);
    char *a = list_tree(tree), *b = list_tree(out);
    CHECK(strcmp(a, b) == 0);
    free(a);
    free(b);
}

/* A committed object's sidecar knows its entries: a copy from it reports
 * the file total from the first report on (the byte total stays 0: the
 * sidecar records allocated bytes, not file bytes). */
static void test_known_totals(os_store_t *store, os_object_t *src, const char *out)
{
    uint64_t total = entries_below(os_object_tree(src));
    os_object_t *committed = NULL;
    struct watch w;
    CHECK_RC(os_store_commit(store, src, "source", NULL), 0);
    CHECK_RC(os_store_get(store, "source", &committed), 0);
    watch_init(&w, NEVER, total);
    CHECK_RC(export_watched(committed, out, &w, 0), 0);
    CHECK(w.last.files_done == total);
    CHECK(w.last.files_total == total);
    CHECK(w.first.files_total == total);
    CHECK(w.last.bytes_total == 0);
    os_object_release(committed);
}

/* Cancelling at the first, a middle and the last report leaves `out` as it
 * was (listing equal); a middle report needs a copy that takes a while, so
 * the source grows until one falls in the middle. */
static void test_cancel_export(os_object_t *src, const char *out)
{
    const char *tree = os_object_tree(src);
    char path[PATH_MAX];
    fmt(path, sizeof path, "%s/mine.txt", out);
    write_file(path, "mine");
    fmt(path, sizeof path, "%s/d00", out); /* merged into */
    if (mkdir(path, 0700) != 0)
        die(path);
    fmt(path, sizeof path, "%s/d00/mine-too.txt", out);
    write_file(path, "mine too");
    char *before = list_tree(out);
    int files = 2000;
    for (enum cancel_at at = FIRST; at <= LAST; at++) {
        struct watch w;
        watch_init(&w, at, entries_below(tree));
        int rc = export_watched(src, out, &w, 0);
        if (at == MIDDLE && rc == 0 && !w.saw_middle && files < 256000) {
            /* Over before a report fell in the middle: put `out` back and
             * try a bigger tree. */
            char cmd[PATH_MAX * 2];
            fmt(cmd, sizeof cmd, "find '%s' -mindepth 1 -maxdepth 1 ! -name mine.txt ! -name d00 -exec rm -rf {} + && find '%s/d00' -mindepth 1 ! -name mine-too.txt -delete", out, out);
            if (system(cmd) != 0)
                die("reset");
            add_files(tree, files, files * 2);
            files *= 2;
            at--;
            /* The reset changed the times of `out` and d00: list again. */
            free(before);
            before = list_tree(out);
            continue;
        }
        CHECK_RC(rc, -ECANCELED);
        CHECK(w.monotonic && !w.other_thread);
        char *after = list_tree(out);
        CHECK(strcmp(before, after) == 0);
        if (strcmp(before, after) != 0)
            fprintf(stderr, "cancel at %d: before:\n%.2000s\nafter:\n%.2000s\n", at, before, after);
        free(after);
    }
    free(before);
}

static void test_cancel_init(os_store_t *store, os_object_t *base)
{
    uint64_t total = entries_below(os_object_tree(base));
    for (enum cancel_at at = FIRST; at <= LAST; at += 2) {
        os_object_t *obj = NULL;
        CHECK_RC(os_store_new(store, "cancelled-init", &obj), 0);
        struct watch w;
        watch_init(&w, at, total);
        os_copy_options_t o = options_for(&w, 0);
        CHECK_RC(os_object_init_ex(obj, base, &o), -ECANCELED);
        CHECK(entries_below(os_object_tree(obj)) == 0);
        os_object_release(obj);
    }
}

static void test_no_owner(os_object_t *src, const char *tree)
{
    char path[PATH_MAX], out[PATH_MAX];
    struct stat st;
    fmt(path, sizeof path, "%s/owned", tree);
    write_file(path, "not the caller's");
    if (chown(path, 1234, 5678) != 0 || chmod(path, 04755) != 0)
        die(path);
    for (int no_owner = 0; no_owner <= 1; no_owner++) {
        fmt(out, sizeof out, "%s/export-owner-%d", scratch, no_owner);
        if (mkdir(out, 0755) != 0)
            die(out);
        os_copy_options_t o = {.struct_size = sizeof o, .flags = no_owner ? OS_COPY_NO_OWNER : 0};
        CHECK_RC(os_object_export_ex(src, out, &o), 0);
        fmt(path, sizeof path, "%s/owned", out);
        CHECK(lstat(path, &st) == 0);
        if (no_owner) {
            CHECK(st.st_uid == geteuid() && st.st_gid == getegid());
            CHECK((st.st_mode & 07777) == 0755); /* no set-uid of uid 1234 */
        } else {
            CHECK(st.st_uid == 1234 && st.st_gid == 5678);
            CHECK((st.st_mode & 07777) == 04755);
        }
    }
}

/* --- logging ----------------------------------------------------------- */

struct log_seen {
    int calls;
    bool gc_info;
};

static void on_log(int level, const char *message, void *userdata)
{
    struct log_seen *s = userdata;
    s->calls++;
    if (level == OS_LOG_INFO && strstr(message, "gc removed 1 entries, "))
        s->gc_info = true;
    /* Not allowed from the callback. */
    CHECK_RC(os_log_set(NULL, OS_LOG_NONE, NULL), -EDEADLK);
}

/* Opens a store at `dir`, leaves an object that no ref names in objects/
 * (named as the store names objects, so that the collector recognises it)
 * and collects; returns what os_store_gc() returns (entries removed). */
static int make_and_collect_garbage(const char *dir)
{
    os_store_t *store = NULL;
    char path[PATH_MAX];
    int rc = os_store_open_ex(dir, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &store);
    if (rc < 0)
        return rc;
    fmt(path, sizeof path, "%s/objects/0e1f2a3b-0000-4000-8000-00000000abcd", dir);
    if (mkdir(path, 0700) != 0)
        die(path);
    rc = os_store_gc(store);
    os_store_free(store);
    return rc;
}

static void test_log_callback(void)
{
    char dir[PATH_MAX];
    struct log_seen seen = {0};
    CHECK_RC(os_log_set(on_log, 9, &seen), -EINVAL);
    CHECK_RC(os_log_set(on_log, OS_LOG_INFO, &seen), 0);
    fmt(dir, sizeof dir, "%s/log-store", scratch);
    CHECK_RC(make_and_collect_garbage(dir), 1);
    CHECK(seen.gc_info);
    CHECK_RC(os_log_set(NULL, OS_LOG_NONE, NULL), 0);
    int calls = seen.calls;
    CHECK_RC(make_and_collect_garbage(dir), 1);
    CHECK(seen.calls == calls); /* replaced: never called again */
}

/* Runs this program as `child-gc DIR` with OSSTORE_LOG set to `level` (NULL:
 * unset) and returns what it wrote to stderr. */
static char *run_child(const char *self, const char *level, const char *dir)
{
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        if (level)
            setenv("OSSTORE_LOG", level, 1);
        else
            unsetenv("OSSTORE_LOG");
        execl(self, self, "child-gc", dir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    static char buf[8192];
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return buf;
}

static void test_log_env(void)
{
    char self[PATH_MAX], dir[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        die("readlink");
    self[n] = '\0';
    fmt(dir, sizeof dir, "%s/env-store", scratch);
    const char *out = run_child(self, "debug", dir);
    CHECK(strstr(out, "osstore: info: gc removed 1 entries") != NULL);
    CHECK(strstr(out, "osstore: debug: gc removed ") != NULL);
    out = run_child(self, NULL, dir);
    CHECK(strcmp(out, "") == 0); /* silent by default */
    if (strcmp(out, "") != 0)
        fprintf(stderr, "unexpected stderr: %s\n", out);
    out = run_child(self, "error", dir);
    CHECK(strcmp(out, "") == 0); /* nothing at error level */
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "child-gc") == 0)
        return make_and_collect_garbage(argv[2]) == 1 ? 0 : 1;
    if (geteuid() != 0) {
        printf("SKIP test_copy: needs root (chown)\n");
        return 0;
    }
    fmt(scratch, sizeof scratch, "/tmp/osstore-test-copy-XXXXXX");
    if (!mkdtemp(scratch))
        die("mkdtemp");
    char store_dir[PATH_MAX], out[PATH_MAX];
    fmt(store_dir, sizeof store_dir, "%s/store", scratch);
    os_store_t *store = NULL;
    CHECK_RC(os_store_open_ex(store_dir, OS_STORE_NO_SYNC, &store), 0);
    os_object_t *src = NULL, *obj = NULL;
    CHECK_RC(os_store_new(store, "source", &src), 0);
    add_files(os_object_tree(src), 0, 2000);

    CHECK_RC(os_store_new(store, "target", &obj), 0);
    test_options(obj, src);
    os_object_release(obj);

    fmt(out, sizeof out, "%s/export-slow", scratch);
    if (mkdir(out, 0755) != 0)
        die(out);
    test_progress_and_slow_callback(src, out);
    test_cancel_init(store, src);
    fmt(out, sizeof out, "%s/export-cancel", scratch);
    if (mkdir(out, 0755) != 0)
        die(out);
    test_cancel_export(src, out);
    test_no_owner(src, os_object_tree(src));
    fmt(out, sizeof out, "%s/export-totals", scratch);
    if (mkdir(out, 0755) != 0)
        die(out);
    test_known_totals(store, src, out);
    os_store_free(store);

    test_log_callback();
    test_log_env();

    char cmd[PATH_MAX + 16];
    fmt(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", scratch);
    return check_done("test_copy");
}
