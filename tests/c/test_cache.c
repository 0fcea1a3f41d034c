/* The store as a cache, through the installed header only (cache.md and
 * c-api.md): LRU order, watermarks, -EFBIG, pins from a second process,
 * metadata through init and commit, source-epoch clamping, read-only mode on
 * a read-only bind mount, foreign directories, a 0.1 store upgraded in
 * place, exact totals after SIGKILLs (also during an eviction).
 * Runs as root in a private mount namespace (tests/in-private-ns.sh). */
#include <osstore.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static char base_dir[PATH_MAX];

static void path_of(char *out, const char *a, const char *b)
{
    fmt(out, PATH_MAX, "%s/%s", a, b);
}

static void write_file(const char *dir, const char *name, size_t bytes)
{
    char p[PATH_MAX];
    path_of(p, dir, name);
    FILE *f = fopen(p, "w");
    if (!f)
        return;
    for (size_t i = 0; i < bytes; i++)
        fputc('x', f);
    fclose(f);
}

/* Commits `id` with a file of `bytes` bytes; 0 or the negative errno. */
static int commit_sized(os_store_t *store, const char *id, size_t bytes)
{
    os_object_t *obj = NULL;
    int rc = os_store_new(store, id, &obj);
    if (rc < 0)
        return rc;
    write_file(os_object_tree(obj), "data", bytes);
    rc = os_store_commit(store, obj, id, NULL);
    os_object_release(obj);
    return rc;
}

/* --- an independent measurement: allocated bytes, hard links once -------- */
#define MAX_INODES 65536
static ino_t seen[MAX_INODES];
static size_t nseen;
static uint64_t du_total;

static int du_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)p;
    (void)flag;
    (void)ftw;
    if (!S_ISDIR(st->st_mode) && st->st_nlink > 1) {
        for (size_t i = 0; i < nseen; i++)
            if (seen[i] == st->st_ino)
                return 0;
        if (nseen < MAX_INODES)
            seen[nseen++] = st->st_ino;
    }
    du_total += (uint64_t)st->st_blocks * 512;
    return 0;
}

/* The sum of fresh measurements of the objects the refs name. */
static uint64_t measured_total(const char *root)
{
    char refs[PATH_MAX], link[PATH_MAX], obj[PATH_MAX * 2];
    uint64_t total = 0;
    path_of(refs, root, "refs");
    char cmd[PATH_MAX + 32];
    fmt(cmd, sizeof cmd, "ls -1 '%s'", refs);
    FILE *ls = popen(cmd, "r");
    char id[512];
    while (ls && fgets(id, sizeof id, ls)) {
        id[strcspn(id, "\n")] = '\0';
        char ref[PATH_MAX * 2];
        fmt(ref, sizeof ref, "%s/%s", refs, id);
        ssize_t n = readlink(ref, link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        fmt(obj, sizeof obj, "%s/refs/%s", root, link);
        struct stat st;
        if (stat(obj, &st) != 0)
            continue;
        nseen = 0;
        du_total = 0;
        nftw(obj, du_one, 16, FTW_PHYS);
        total += du_total;
    }
    if (ls)
        pclose(ls);
    return total;
}

static os_store_t *open_fresh(const char *name, char *root)
{
    os_store_t *store = NULL;
    path_of(root, base_dir, name);
    if (os_store_open_ex(root, OS_STORE_NO_SYNC, &store) < 0) {
        fprintf(stderr, "open %s: %s\n", root, os_last_error());
        return NULL;
    }
    return store;
}

/* --- LRU order --------------------------------------------------------- */
struct ids {
    char id[8][32];
    int pinned[8];
    int n;
};

static int collect(const os_object_info_t *info, void *userdata)
{
    struct ids *ids = userdata;
    if (ids->n < 8) {
        fmt(ids->id[ids->n], sizeof ids->id[0], "%s", info->id);
        ids->pinned[ids->n] = info->pinned;
        ids->n++;
    }
    return 0;
}

static int stop_at_first(const os_object_info_t *info, void *userdata)
{
    (void)info;
    (void)userdata;
    return 42;
}

static void test_lru(void)
{
    char root[PATH_MAX];
    os_store_t *store = open_fresh("lru", root);
    CHECK(store != NULL);
    if (!store)
        return;
    CHECK_RC(commit_sized(store, "a", 10), 0);
    CHECK_RC(commit_sized(store, "b", 10), 0);
    CHECK_RC(commit_sized(store, "c", 10), 0);
    sleep(1);
    CHECK_RC(os_store_contains(store, "a"), 1);
    sleep(1);
    os_object_t *obj = NULL;
    CHECK_RC(os_store_get(store, "b", &obj), 0);
    os_object_release(obj);
    struct ids ids = {0};
    CHECK_RC(os_store_list(store, collect, &ids), 0);
    CHECK(ids.n == 3);
    CHECK(strcmp(ids.id[0], "c") == 0 && strcmp(ids.id[1], "a") == 0 &&
          strcmp(ids.id[2], "b") == 0);
    CHECK_RC(os_store_list(store, stop_at_first, NULL), 42);
    CHECK_RC(os_store_list(store, NULL, NULL), -EINVAL);
    os_store_free(store);
}

/* --- watermarks and -EFBIG ---------------------------------------------- */
static void test_watermarks(void)
{
    char root[PATH_MAX];
    char *value = NULL;
    os_store_t *store = open_fresh("water", root);
    if (!store)
        return;
    CHECK_RC(os_store_config_get(store, "max-size", &value), 0);
    CHECK(value && strcmp(value, "unlimited") == 0);
    os_free(value);
    CHECK_RC(os_store_config_set(store, "max-size", "forty"), -EINVAL);
    CHECK_RC(os_store_config_set(store, "min-free", "0%"), 0);
    CHECK_RC(commit_sized(store, "o0", 40000), 0);
    os_store_stat_t st = {.struct_size = sizeof st};
    CHECK_RC(os_store_stat(store, &st), 0);
    uint64_t one = st.bytes;
    CHECK(st.max_size == UINT64_MAX);
    char limit[64];
    fmt(limit, sizeof limit, "%llu", (unsigned long long)(4 * one));
    CHECK_RC(os_store_config_set(store, "max-size", limit), 0);
    CHECK_RC(os_store_config_set(store, "low-water", "50"), 0);
    for (int i = 1; i < 4; i++) {
        char id[16];
        fmt(id, sizeof id, "o%d", i);
        CHECK_RC(commit_sized(store, id, 40000), 0);
    }
    CHECK_RC(os_store_stat(store, &st), 0);
    CHECK(st.objects == 4 && st.bytes == 4 * one);
    CHECK_RC(commit_sized(store, "o4", 40000), 0); /* over: down to 50% */
    CHECK_RC(os_store_stat(store, &st), 0);
    CHECK(st.objects == 2 && st.bytes <= 2 * one);
    CHECK_RC(os_store_contains_ex(store, "o4", OS_LOOKUP_CACHED_ONLY), 1);
    /* o0..o3 were used within one second or two: which of them go first is
     * up to the store (test_lru checks the order a second apart); one stays. */
    int kept = 0;
    for (int i = 0; i < 4; i++) {
        char id[16];
        fmt(id, sizeof id, "o%d", i);
        kept += os_store_contains_ex(store, id, OS_LOOKUP_CACHED_ONLY) == 1;
    }
    CHECK(kept == 1);
    /* Larger than max-size on its own: refused, nothing changed. */
    os_object_t *big = NULL;
    CHECK_RC(os_store_new(store, "big", &big), 0);
    write_file(os_object_tree(big), "data", 5 * 40000);
    CHECK_RC(os_store_commit(store, big, "big", NULL), -EFBIG);
    CHECK(os_object_mode(big) == OS_MODE_WRITE);
    os_object_release(big);
    os_store_stat_t after = {.struct_size = sizeof after};
    CHECK_RC(os_store_stat(store, &after), 0);
    CHECK(after.objects == st.objects && after.bytes == st.bytes);
    CHECK(after.bytes == measured_total(root));
    uint64_t freed = 0;
    CHECK_RC(os_store_evict(store, 0, &freed), 0);
    CHECK(freed == st.bytes);
    os_store_free(store);
}

/* --- pins from a second process ------------------------------------------ */
static void test_pins(void)
{
    char root[PATH_MAX];
    os_store_t *store = open_fresh("pins", root);
    if (!store)
        return;
    CHECK_RC(commit_sized(store, "held", 5000), 0);
    CHECK_RC(commit_sized(store, "free", 5000), 0);
    int ready[2], done[2];
    if (pipe(ready) != 0 || pipe(done) != 0)
        return;
    pid_t child = fork();
    if (child == 0) {
        os_store_t *s = NULL;
        os_object_t *o = NULL;
        char c = 'r';
        if (os_store_open_ex(root, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &s) < 0 ||
            os_store_get(s, "held", &o) < 0)
            _exit(1);
        if (write(ready[1], &c, 1) != 1 || read(done[0], &c, 1) != 1)
            _exit(1);
        _exit(0);
    }
    char c;
    CHECK(read(ready[0], &c, 1) == 1);
    os_store_stat_t st = {.struct_size = sizeof st};
    CHECK_RC(os_store_stat(store, &st), 0);
    CHECK(st.pinned_bytes > 0 && st.pinned_bytes < st.bytes);
    struct ids ids = {0};
    CHECK_RC(os_store_list(store, collect, &ids), 0);
    for (int i = 0; i < ids.n; i++)
        CHECK(ids.pinned[i] == (strcmp(ids.id[i], "held") == 0));
    CHECK_RC(os_store_evict(store, 0, NULL), 0);
    CHECK_RC(os_store_contains(store, "held"), 1);
    CHECK_RC(os_store_contains(store, "free"), 0);
    /* The pin ends with the process. */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    CHECK_RC(os_store_evict(store, 0, NULL), 0);
    CHECK_RC(os_store_contains(store, "held"), 0);
    close(ready[0]);
    close(ready[1]);
    close(done[0]);
    close(done[1]);
    os_store_free(store);
}

/* --- metadata through init and commit ----------------------------------- */
static void test_metadata(void)
{
    char root[PATH_MAX];
    char *json = NULL;
    int64_t created = 0, created2 = 0;
    os_store_t *store = open_fresh("meta", root);
    if (!store)
        return;
    os_object_t *a = NULL, *b = NULL, *got = NULL;
    CHECK_RC(os_store_new(store, "a", &a), 0);
    CHECK_RC(os_object_meta_set(a, "size", "{\"n\": 1}"), 0);
    CHECK_RC(os_object_meta_set(a, "bad", "{nope"), -EINVAL);
    CHECK_RC(os_object_meta_get(a, "absent", &json), -ENOENT);
    CHECK(json == NULL);
    CHECK_RC(os_object_created(a, &created), 0);
    CHECK(created > 0);
    CHECK_RC(os_store_commit(store, a, "a", NULL), 0);
    CHECK_RC(os_object_meta_set(a, "late", "1"), -EPERM);
    CHECK_RC(os_store_get(store, "a", &got), 0);
    CHECK_RC(os_object_meta_set(got, "x", "1"), -EPERM);
    CHECK_RC(os_store_new(store, "b", &b), 0);
    CHECK_RC(os_object_init(b, got), 0);
    CHECK_RC(os_object_created(b, &created2), 0);
    CHECK(created2 == created);
    CHECK_RC(os_object_meta_get(b, "size", &json), 0);
    CHECK(json && strcmp(json, "{\"n\":1}") == 0);
    os_free(json);
    CHECK_RC(os_store_commit(store, b, "copy", NULL), 0); /* a copy commit */
    os_object_release(got);
    got = NULL;
    CHECK_RC(os_store_get(store, "copy", &got), 0);
    json = NULL;
    CHECK_RC(os_object_meta_get(got, "size", &json), 0);
    CHECK(json && strcmp(json, "{\"n\":1}") == 0);
    os_free(json);
    os_object_release(got);
    os_object_release(b);
    os_object_release(a);
    os_store_free(store);
}

/* --- source epoch -------------------------------------------------------- */
static void test_source_epoch(void)
{
    char root[PATH_MAX], p[PATH_MAX];
    os_store_t *store = open_fresh("epoch", root);
    if (!store)
        return;
    os_object_t *o = NULL;
    CHECK_RC(os_store_new(store, "e", &o), 0);
    write_file(os_object_tree(o), "new", 1);
    write_file(os_object_tree(o), "old", 1);
    path_of(p, os_object_tree(o), "old");
    struct timespec old[2] = {{.tv_sec = 86400}, {.tv_sec = 86400}};
    CHECK(utimensat(AT_FDCWD, p, old, 0) == 0);
    path_of(p, os_object_tree(o), "link");
    CHECK(symlink("/nonexistent", p) == 0);
    CHECK_RC(os_object_set_source_epoch(o, 1000000), 0);
    CHECK_RC(os_object_finalize(o), 0);
    struct stat st;
    CHECK(stat(os_object_tree(o), &st) == 0 && st.st_mtime == 1000000);
    path_of(p, os_object_tree(o), "new");
    CHECK(stat(p, &st) == 0 && st.st_mtime == 1000000 && st.st_atime == 1000000);
    path_of(p, os_object_tree(o), "old");
    CHECK(stat(p, &st) == 0 && st.st_mtime == 86400);
    path_of(p, os_object_tree(o), "link");
    CHECK(lstat(p, &st) == 0 && st.st_mtime == 1000000);
    CHECK_RC(os_store_commit(store, o, "e", NULL), 0);
    CHECK_RC(os_object_set_source_epoch(o, 5), -EPERM);
    os_object_release(o);
    os_store_free(store);
}

/* --- read-only on a read-only bind mount --------------------------------- */
static void test_read_only(void)
{
    char root[PATH_MAX], ro[PATH_MAX];
    os_store_t *store = open_fresh("ro-src", root);
    if (!store)
        return;
    CHECK_RC(commit_sized(store, "r", 100), 0);
    os_store_free(store);
    path_of(ro, base_dir, "ro-mnt");
    mkdir(ro, 0755);
    if (mount(root, ro, NULL, MS_BIND, NULL) != 0 ||
        mount(NULL, ro, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) != 0) {
        printf("SKIP read-only mount: %s\n", strerror(errno));
        return;
    }
    os_store_t *r = NULL;
    CHECK_RC(os_store_open_ex(ro, OS_STORE_READ_ONLY, &r), 0);
    os_object_t *o = NULL;
    CHECK_RC(os_store_get(r, "r", &o), 0);
    CHECK_RC(os_store_contains_ex(r, "r", OS_LOOKUP_CACHED_ONLY), 1);
    char out[PATH_MAX];
    path_of(out, base_dir, "ro-export");
    mkdir(out, 0755);
    CHECK_RC(os_object_export(o, out), 0);
    os_store_stat_t st = {.struct_size = sizeof st};
    CHECK_RC(os_store_stat(r, &st), 0);
    CHECK(st.objects == 1);
    char *tmp = NULL;
    CHECK_RC(os_store_tempdir(r, "ro-", NULL, &tmp), 0);
    CHECK(tmp && strncmp(tmp, ro, strlen(ro)) != 0);
    os_free(tmp);
    os_object_t *n = NULL;
    CHECK_RC(os_store_new(r, "n", &n), -EROFS);
    CHECK_RC(os_store_gc(r), -EROFS);
    CHECK_RC(os_store_evict(r, 0, NULL), -EROFS);
    CHECK_RC(os_store_config_set(r, "max-size", "1"), -EROFS);
    os_object_release(o);
    os_store_free(r);
    umount2(ro, MNT_DETACH);
}

/* --- foreign directories ------------------------------------------------- */
static void test_foreign(void)
{
    char root[PATH_MAX], p[PATH_MAX];
    path_of(root, base_dir, "osbuild-cache");
    mkdir(root, 0755);
    write_file(root, "cache.info", 2);
    path_of(p, root, "stage");
    mkdir(p, 0755);
    os_store_t *s = NULL;
    CHECK_RC(os_store_open(root, &s), -ENOTSUP);
    CHECK(strstr(os_last_error(), "cache.info") != NULL);
    path_of(p, root, "objects");
    struct stat st;
    CHECK(stat(p, &st) != 0); /* nothing created */
}

/* --- a store of osstore 0.1, upgraded in place --------------------------- */
static void test_upgrade(void)
{
    char root[PATH_MAX], p[PATH_MAX];
    path_of(root, base_dir, "v01");
    mkdir(root, 0755);
    const char *name = "0e1f2a3b-0000-4000-8000-00000000abcd";
    path_of(p, root, "objects");
    mkdir(p, 0755);
    char obj[PATH_MAX * 2];
    fmt(obj, sizeof obj, "%s/%s", p, name);
    mkdir(obj, 0755);
    write_file(obj, "f", 3000);
    path_of(p, root, "refs");
    mkdir(p, 0755);
    char link[PATH_MAX], ref[PATH_MAX];
    fmt(link, sizeof link, "../objects/%s", name);
    path_of(ref, p, "old");
    CHECK(symlink(link, ref) == 0);
    os_store_t *s = NULL;
    CHECK_RC(os_store_open(root, &s), 0);
    CHECK_RC(os_store_contains(s, "old"), 1);
    os_store_stat_t st = {.struct_size = sizeof st};
    CHECK_RC(os_store_stat(s, &st), 0);
    CHECK(st.objects == 1 && st.bytes == measured_total(root));
    fmt(p, sizeof p, "%s/meta/%s/info", root, name);
    CHECK(access(p, F_OK) == 0);
    path_of(p, root, "CACHEDIR.TAG");
    CHECK(access(p, F_OK) == 0);
    os_object_t *o = NULL;
    int64_t created = 0;
    CHECK_RC(os_store_get(s, "old", &o), 0);
    CHECK_RC(os_object_created(o, &created), 0);
    CHECK(created > 0);
    os_object_release(o);
    os_store_free(s);
}

/* --- exact totals after kills ------------------------------------------- */
static void churn(const char *root, int evict)
{
    os_store_t *s = NULL;
    if (os_store_open_ex(root, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &s) < 0)
        _exit(1);
    for (unsigned i = 0;; i++) {
        char id[32];
        fmt(id, sizeof id, "k%u", i % 50);
        if (evict)
            os_store_evict(s, 0, NULL);
        else
            commit_sized(s, id, 1000 + (i % 7) * 5000);
    }
}

static void test_kills(void)
{
    char root[PATH_MAX];
    os_store_t *store = open_fresh("kills", root);
    if (!store)
        return;
    CHECK_RC(os_store_config_set(store, "max-size", "300 KiB"), 0);
    os_store_free(store);
    for (int round = 0; round < 6; round++) {
        int evict = round % 3 == 2;
        pid_t kids[2];
        for (int k = 0; k < 2; k++) {
            kids[k] = fork();
            if (kids[k] == 0)
                churn(root, evict && k == 0);
        }
        struct timespec pause = {.tv_nsec = 50000000L + round * 20000000L};
        nanosleep(&pause, NULL);
        for (int k = 0; k < 2; k++) {
            kill(kids[k], SIGKILL);
            waitpid(kids[k], NULL, 0);
        }
        os_store_t *s = NULL;
        CHECK_RC(os_store_open_ex(root, OS_STORE_NO_SYNC, &s), 0);
        os_store_stat_t st = {.struct_size = sizeof st};
        CHECK_RC(os_store_stat(s, &st), 0);
        uint64_t fresh = measured_total(root);
        if (st.bytes != fresh)
            fprintf(stderr, "round %d: stat %llu, measured %llu\n", round,
                    (unsigned long long)st.bytes, (unsigned long long)fresh);
        CHECK(st.bytes == fresh);
        CHECK(st.refs == st.objects);
        os_store_free(s);
    }
}

int main(void)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    fmt(base_dir, sizeof base_dir, "%s/osstore-cache-XXXXXX", tmp);
    if (!mkdtemp(base_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_lru();
    test_watermarks();
    test_pins();
    test_metadata();
    test_source_epoch();
    test_read_only();
    test_foreign();
    test_upgrade();
    test_kills();
    char cmd[PATH_MAX + 16];
    fmt(cmd, sizeof cmd, "rm -rf '%s'", base_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", base_dir);
    return check_done("test_cache");
}
