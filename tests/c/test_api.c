/* Exercises every function of the library, store and object sections of the
 * C API against the real shared library, with good and bad input. Runs as
 * root in a private mount namespace (make check runs it under unshare). */
#include <osstore.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static char scratch[256];

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[PATH_MAX];
    fmt(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(content, f);
    fclose(f);
}

static bool file_has(const char *dir, const char *name, const char *content)
{
    char path[PATH_MAX], buf[256] = {0};
    fmt(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n == strlen(content) && memcmp(buf, content, n) == 0;
}

static ino_t inode_of(const char *dir, const char *name)
{
    char path[PATH_MAX];
    struct stat st;
    fmt(path, sizeof path, "%s/%s", dir, name);
    return lstat(path, &st) == 0 ? st.st_ino : 0;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static bool mounted_below(const char *prefix)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096];
    bool found = false;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, prefix))
            found = true;
    if (f)
        fclose(f);
    return found;
}

/* True when this process runs in another mount namespace than the one
 * tests/in-private-ns.sh started from (or than PID 1's). */
static bool in_private_mount_namespace(void)
{
    struct stat self, init;
    const char *outer = getenv("OSSTORE_OUTER_MNTNS");
    if (stat("/proc/self/ns/mnt", &self) != 0)
        return false;
    if (outer && *outer)
        return strtoull(outer, NULL, 10) != (unsigned long long)self.st_ino;
    return stat("/proc/1/ns/mnt", &init) == 0 && self.st_ino != init.st_ino;
}

#if !OSSTORE_CHECK_VERSION(0, 1, 0) || OSSTORE_CHECK_VERSION(OSSTORE_VERSION_MAJOR + 1, 0, 0)
#error "OSSTORE_CHECK_VERSION() is wrong at compile time"
#endif

static void test_library(void)
{
    /* The header's version macros are the library's version. */
    char version[64];
    fmt(version, sizeof version, "%d.%d.%d", OSSTORE_VERSION_MAJOR, OSSTORE_VERSION_MINOR, OSSTORE_VERSION_PATCH);
    CHECK(strcmp(os_version(), version) == 0);
    CHECK(OSSTORE_CHECK_VERSION(OSSTORE_VERSION_MAJOR, OSSTORE_VERSION_MINOR, OSSTORE_VERSION_PATCH));
    CHECK(OSSTORE_CHECK_VERSION(0, 0, 0));
    CHECK(OSSTORE_CHECK_VERSION(OSSTORE_VERSION_MAJOR, OSSTORE_VERSION_MINOR - 1, 99));
    CHECK(OSSTORE_CHECK_VERSION(OSSTORE_VERSION_MAJOR - 1, 99, 99));
    CHECK(!OSSTORE_CHECK_VERSION(OSSTORE_VERSION_MAJOR, OSSTORE_VERSION_MINOR, OSSTORE_VERSION_PATCH + 1));
    CHECK(!OSSTORE_CHECK_VERSION(OSSTORE_VERSION_MAJOR, OSSTORE_VERSION_MINOR + 1, 0));
    CHECK(!OSSTORE_CHECK_VERSION(OSSTORE_VERSION_MAJOR + 1, 0, 0));
    CHECK(os_last_error() != NULL && os_last_error()[0] == '\0');
    os_free(NULL);
}

static void test_open_errors(void)
{
    os_store_t *store = (os_store_t *)1;
    char path[PATH_MAX + 16];

    CHECK_RC(os_store_open(NULL, &store), -EINVAL);
    CHECK(store == NULL);
    CHECK(strstr(os_last_error(), "NULL") != NULL);
    CHECK_RC(os_store_open(scratch, NULL), -EINVAL);
    CHECK_RC(os_store_open("", &store), -EINVAL);

    memset(path, 'a', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = '\0';
    CHECK_RC(os_store_open(path, &store), -ENAMETOOLONG);

    write_file(scratch, "plainfile", "x");
    fmt(path, sizeof path, "%s/plainfile", scratch);
    CHECK_RC(os_store_open(path, &store), -ENOTDIR);
    CHECK(strstr(os_last_error(), "not a directory") != NULL);
    /* Messages speak C: strerror text, not Rust's "(os error N)". */
    fmt(path, sizeof path, "%s/plainfile/below", scratch);
    CHECK_RC(os_store_open(path, &store), -ENOTDIR);
    CHECK(strstr(os_last_error(), "Not a directory") != NULL);
    CHECK(strstr(os_last_error(), "os error") == NULL);
    CHECK_RC(os_store_open_ex(scratch, 0x80, &store), -EINVAL);

    CHECK(os_store_path(NULL) == NULL);
    CHECK(os_last_error()[0] != '\0');
}

static void test_invalid_ids(os_store_t *store)
{
    const char *bad[] = {"..", ".", "a/b", "/etc", "", "../x", "x/..", "\xff\xfe"};
    char long_id[300];
    memset(long_id, 'i', 256);
    long_id[256] = '\0';
    os_object_t *obj = NULL;
    char *path = NULL;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(os_store_new(store, bad[i], &obj), -EINVAL);
        CHECK(obj == NULL);
        CHECK_RC(os_store_get(store, bad[i], &obj), -EINVAL);
        CHECK_RC(os_store_resolve_ref(store, bad[i], &path), -EINVAL);
        CHECK(path == NULL);
        if (bad[i][0] != '\0')
            CHECK_RC(os_store_contains(store, bad[i]), -EINVAL);
    }
    CHECK_RC(os_store_contains(store, ""), 0);
    CHECK_RC(os_store_new(store, long_id, &obj), -EINVAL);
    CHECK_RC(os_store_new(store, NULL, &obj), -EINVAL);
    CHECK_RC(os_store_new(NULL, "ok", &obj), -EINVAL);
    CHECK_RC(os_store_new(store, "ok", NULL), -EINVAL);
    CHECK_RC(os_store_contains(NULL, "ok"), -EINVAL);
    CHECK_RC(os_store_get(store, "ok", NULL), -EINVAL);
    CHECK_RC(os_store_resolve_ref(store, "ok", NULL), -EINVAL);
}

static void test_commit_by_move(os_store_t *store, const char *root)
{
    os_object_t *obj = NULL;
    char expect[PATH_MAX], link[PATH_MAX];
    char *name = NULL;

    CHECK_RC(os_store_new(store, "abcdefghij", &obj), 0);
    CHECK(os_object_mode(obj) == OS_MODE_WRITE);
    CHECK(strcmp(os_object_id(obj), "abcdefghij") == 0);
    const char *tree = os_object_tree(obj);
    fmt(expect, sizeof expect, "%s/tmp/object-abcdefg-", root);
    CHECK(strncmp(tree, expect, strlen(expect)) == 0);
    CHECK(strlen(tree) > 16 && strcmp(tree + strlen(tree) - 15, "-workdir/object") == 0);
    CHECK(count_entries(tree) == 0);

    write_file(tree, "hello", "world");
    ino_t before = inode_of(tree, "hello");
    char workdir[PATH_MAX];
    fmt(workdir, sizeof workdir, "%s", tree);
    *strrchr(workdir, '/') = '\0';

    CHECK_RC(os_store_commit(store, obj, "abcdefghij", &name), 0);
    CHECK(name != NULL && strlen(name) == 36);
    CHECK(os_object_mode(obj) == OS_MODE_READ);
    fmt(expect, sizeof expect, "%s/objects/%s", root, name ? name : "");
    CHECK(strcmp(os_object_tree(obj), expect) == 0);
    CHECK(inode_of(os_object_tree(obj), "hello") == before);
    CHECK(!exists(workdir));

    fmt(expect, sizeof expect, "%s/refs/abcdefghij", root);
    ssize_t n = readlink(expect, link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    fmt(expect, sizeof expect, "../objects/%s", name ? name : "");
    CHECK(strcmp(link, expect) == 0);
    os_free(name);

    /* Committing again under its own id: it is no work tree any more. */
    CHECK_RC(os_store_commit(store, obj, "abcdefghij", NULL), -EINVAL);
    os_object_release(obj);
}

static void test_lookups(os_store_t *store, const char *root)
{
    os_object_t *obj = (os_object_t *)1;
    char *path = NULL;
    char expect[PATH_MAX];

    CHECK_RC(os_store_contains(store, "abcdefghij"), 1);
    CHECK_RC(os_store_contains(store, "missing"), 0);
    CHECK_RC(os_store_get(store, "missing", &obj), -ENOENT);
    CHECK(obj == NULL);
    CHECK(strstr(os_last_error(), "missing") != NULL);

    CHECK_RC(os_store_get(store, "abcdefghij", &obj), 0);
    CHECK(os_object_mode(obj) == OS_MODE_READ);
    /* cache.md: a get names the object the ref named, not the ref. */
    char resolved[PATH_MAX];
    fmt(expect, sizeof expect, "%s/refs/abcdefghij", root);
    CHECK(realpath(expect, resolved) != NULL);
    CHECK(strcmp(os_object_tree(obj), resolved) == 0);
    CHECK(file_has(os_object_tree(obj), "hello", "world"));
    os_object_release(obj);

    CHECK_RC(os_store_resolve_ref(store, "not-there", &path), 0);
    fmt(expect, sizeof expect, "%s/refs/not-there", root);
    CHECK(path && strcmp(path, expect) == 0);
    os_free(path);
}

static void test_snapshots(os_store_t *store)
{
    os_object_t *obj = NULL, *snap1 = NULL, *snap2 = NULL;

    CHECK_RC(os_store_new(store, "work", &obj), 0);
    write_file(os_object_tree(obj), "one", "1");
    ino_t work_inode = inode_of(os_object_tree(obj), "one");
    CHECK_RC(os_store_commit(store, obj, "snap1", NULL), 0);
    CHECK(os_object_mode(obj) == OS_MODE_WRITE);
    CHECK(inode_of(os_object_tree(obj), "one") == work_inode);

    write_file(os_object_tree(obj), "two", "2");
    CHECK_RC(os_store_commit(store, obj, "snap2", NULL), 0);

    CHECK_RC(os_store_get(store, "snap1", &snap1), 0);
    CHECK_RC(os_store_get(store, "snap2", &snap2), 0);
    CHECK(file_has(os_object_tree(snap1), "one", "1"));
    CHECK(!file_has(os_object_tree(snap1), "two", "2"));
    CHECK(file_has(os_object_tree(snap2), "two", "2"));
    CHECK(inode_of(os_object_tree(snap1), "one") != work_inode);
    CHECK_RC(os_store_contains(store, "work"), 0);
    os_object_release(snap1);
    os_object_release(snap2);
    os_object_release(obj);
}

static void test_init_and_export(os_store_t *store)
{
    os_object_t *base = NULL, *derived = NULL;
    char link_path[PATH_MAX], dest[PATH_MAX], target[64] = {0};

    CHECK_RC(os_store_get(store, "abcdefghij", &base), 0);
    CHECK_RC(os_store_new(store, "derived", &derived), 0);
    CHECK_RC(os_object_init(derived, derived), -EINVAL);
    CHECK_RC(os_object_init(derived, NULL), -EINVAL);
    CHECK_RC(os_object_init(NULL, base), -EINVAL);
    CHECK_RC(os_object_init(base, derived), -EINVAL); /* READ mode */

    write_file(os_object_tree(derived), "own", "mine");
    CHECK_RC(os_object_init(derived, base), 0);
    CHECK(file_has(os_object_tree(derived), "hello", "world"));
    CHECK(file_has(os_object_tree(derived), "own", "mine"));

    fmt(link_path, sizeof link_path, "%s/link", os_object_tree(derived));
    CHECK(symlink("hello", link_path) == 0);
    fmt(link_path, sizeof link_path, "%s/hello", os_object_tree(derived));
    CHECK(chmod(link_path, 04755) == 0);

    fmt(dest, sizeof dest, "%s/export", scratch);
    CHECK(mkdir(dest, 0755) == 0);
    CHECK_RC(os_object_export(derived, dest), 0);
    CHECK(file_has(dest, "hello", "world"));
    fmt(link_path, sizeof link_path, "%s/link", dest);
    CHECK(readlink(link_path, target, sizeof target - 1) == 5 && strcmp(target, "hello") == 0);
    struct stat st;
    fmt(link_path, sizeof link_path, "%s/hello", dest);
    CHECK(stat(link_path, &st) == 0 && (st.st_mode & 07777) == 04755);

    fmt(dest, sizeof dest, "%s/no-such-dir", scratch);
    CHECK_RC(os_object_export(derived, dest), -ENOENT);
    CHECK_RC(os_object_export(derived, NULL), -EINVAL);
    CHECK_RC(os_object_export(NULL, scratch), -EINVAL);

    CHECK_RC(os_object_finalize(derived), 0);
    CHECK(os_object_mode(derived) == OS_MODE_READ);
    CHECK_RC(os_object_finalize(derived), 0);
    CHECK_RC(os_object_finalize(NULL), -EINVAL);
    os_object_release(derived);
    os_object_release(base);
}

static void test_floating(os_store_t *store)
{
    os_object_t *obj = NULL, *found = NULL;

    CHECK_RC(os_store_new(store, "floater", &obj), 0);
    write_file(os_object_tree(obj), "f", "float");
    CHECK_RC(os_store_contains(store, "floater"), 0); /* WRITE: not yet */
    CHECK_RC(os_object_finalize(obj), 0);
    CHECK_RC(os_store_contains(store, "floater"), 1);
    CHECK_RC(os_store_get(store, "floater", &found), 0);
    CHECK(found && strcmp(os_object_tree(found), os_object_tree(obj)) == 0);
    CHECK(os_object_mode(found) == OS_MODE_READ);
    os_object_release(found);

    /* A floating object wins over a committed one of the same id. */
    CHECK_RC(os_store_new(store, "abcdefghij", &found), 0);
    CHECK_RC(os_object_finalize(found), 0);
    os_object_t *view = NULL;
    CHECK_RC(os_store_get(store, "abcdefghij", &view), 0);
    CHECK(view && strcmp(os_object_tree(view), os_object_tree(found)) == 0);
    os_object_release(view);
    os_object_release(found);

    os_object_release(obj);
    CHECK_RC(os_store_contains(store, "floater"), 0);
}

static void test_tempdir(os_store_t *store, const char *root)
{
    char *path = NULL;
    char expect[PATH_MAX];

    CHECK_RC(os_store_tempdir(store, "pre-", "-suf", &path), 0);
    fmt(expect, sizeof expect, "%s/tmp/pre-", root);
    CHECK(path && strncmp(path, expect, strlen(expect)) == 0);
    CHECK(path && strcmp(path + strlen(path) - 4, "-suf") == 0);
    CHECK(path && exists(path));
    os_free(path);
    path = NULL;
    CHECK_RC(os_store_tempdir(store, NULL, NULL, &path), 0);
    CHECK(path && exists(path));
    os_free(path);
    path = NULL;
    CHECK_RC(os_store_tempdir(store, "a/b", NULL, &path), -EINVAL);
    CHECK_RC(os_store_tempdir(store, NULL, "../x", &path), -EINVAL);
    CHECK_RC(os_store_tempdir(store, NULL, NULL, NULL), -EINVAL);
    CHECK(path == NULL);
}

static void test_host_tree(os_store_t *store)
{
    const char *tree = NULL;
    char path[PATH_MAX];

    CHECK_RC(os_store_host_tree(store, NULL), -EINVAL);
    CHECK_RC(os_store_host_tree(store, &tree), 0);
    CHECK(tree != NULL);
    if (!tree)
        return;
    fmt(path, sizeof path, "%s/usr/bin", tree);
    CHECK(exists(path));
    fmt(path, sizeof path, "%s/newfile", tree);
    CHECK(open(path, O_CREAT | O_WRONLY, 0644) < 0 && errno == EROFS);
    fmt(path, sizeof path, "%s/usr/osstore-test", tree);
    CHECK(open(path, O_CREAT | O_WRONLY, 0644) < 0 && errno == EROFS);
    fmt(path, sizeof path, "%s/usr", tree);
    CHECK(mkdir(path, 0755) < 0);
    const char *again = NULL;
    CHECK_RC(os_store_host_tree(store, &again), 0);
    CHECK(again == tree);
}

static void set_immutable(const char *path)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    int flags = 0;
    if (fd < 0)
        return;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
        flags |= FS_IMMUTABLE_FL;
        ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    close(fd);
}

static void test_release_hard_trees(os_store_t *store)
{
    os_object_t *obj = NULL;
    char path[PATH_MAX], workdir[PATH_MAX];

    CHECK_RC(os_store_new(store, "hard", &obj), 0);
    fmt(workdir, sizeof workdir, "%s", os_object_tree(obj));
    *strrchr(workdir, '/') = '\0';
    fmt(path, sizeof path, "%s/locked", os_object_tree(obj));
    CHECK(mkdir(path, 0755) == 0);
    write_file(path, "frozen", "ice");
    fmt(path, sizeof path, "%s/locked/frozen", os_object_tree(obj));
    set_immutable(path);
    fmt(path, sizeof path, "%s/locked", os_object_tree(obj));
    CHECK(chmod(path, 0) == 0);
    os_object_release(obj);
    CHECK(!exists(workdir));
}

static void test_gc(os_store_t *store, const char *root)
{
    os_object_t *obj = NULL, *old = NULL, *live = NULL;
    char *old_name = NULL, old_path[PATH_MAX];

    CHECK_RC(os_store_new(store, "gc-me", &obj), 0);
    CHECK_RC(os_store_commit(store, obj, "gc-me", &old_name), 0);
    os_object_release(obj);
    fmt(old_path, sizeof old_path, "%s/objects/%s", root, old_name ? old_name : "");
    os_free(old_name);

    /* Replace the ref; the old object is now unnamed. */
    CHECK_RC(os_store_new(store, "gc-me", &obj), 0);
    CHECK_RC(os_store_commit(store, obj, "gc-me", NULL), 0);
    os_object_release(obj);
    CHECK(exists(old_path));

    CHECK_RC(os_store_new(store, "live", &live), 0);
    CHECK_RC(os_store_get(store, "gc-me", &old), 0);
    int removed = os_store_gc(store);
    CHECK(removed >= 1);
    CHECK(!exists(old_path));
    CHECK(exists(os_object_tree(live)));
    CHECK(exists(os_object_tree(old)));
    CHECK_RC(os_store_contains(store, "gc-me"), 1);
    CHECK_RC(os_store_gc(NULL), -EINVAL);
    os_object_release(old);
    os_object_release(live);
}

static void test_bad_handles(os_store_t *store)
{
    os_object_t *obj = NULL;
    CHECK(os_object_id(NULL) == NULL);
    CHECK(os_object_tree(NULL) == NULL);
    CHECK(os_object_mode(NULL) == OS_MODE_READ);
    CHECK(strstr(os_last_error(), "NULL") != NULL);
    os_object_release(NULL);
    os_store_free(NULL);

    /* A released handle is refused, not dereferenced. */
    CHECK_RC(os_store_new(store, "released", &obj), 0);
    os_object_release(obj);
    CHECK(os_object_tree(obj) == NULL);
    CHECK(strstr(os_last_error(), "not a live object handle") != NULL);
    CHECK_RC(os_object_finalize(obj), -EINVAL);
    /* A store pointer is not an object pointer. */
    CHECK(os_object_tree((const os_object_t *)store) == NULL);
    CHECK_RC(os_store_contains((os_store_t *)obj, "x"), -EINVAL);
}

/* Handles are tokens: a released handle stays invalid whatever is allocated
 * after it, even when the allocator would hand the same address back. */
static void test_stale_handles(os_store_t *store)
{
    os_object_t *a = NULL, *b = NULL;
    os_store_new(store, "a", &a);
    os_object_release(a);
    os_store_new(store, "b", &b);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(os_object_id(a) == NULL);
    CHECK(strstr(os_last_error(), "not a live object handle") != NULL);
    CHECK(os_object_tree(a) == NULL);
    CHECK(os_object_mode(a) == OS_MODE_READ);
    CHECK_RC(os_object_finalize(a), -EINVAL);
    CHECK_RC(os_object_export(a, scratch), -EINVAL);
    CHECK_RC(os_object_init(a, b), -EINVAL);
    CHECK_RC(os_object_init(b, a), -EINVAL);
    CHECK_RC(os_store_commit(store, a, "a", NULL), -EINVAL);
    os_object_release(a); /* refused: b is not released through it */
    CHECK(strstr(os_last_error(), "not a live object handle") != NULL);
    CHECK(os_object_id(b) && strcmp(os_object_id(b), "b") == 0);
    CHECK(os_object_mode(b) == OS_MODE_WRITE);
    os_object_release(b);

    /* A store handle the same way: free, open another, use the old one. */
    char root[PATH_MAX];
    os_store_t *s1 = NULL, *s2 = NULL;
    os_object_t *obj = (os_object_t *)1;
    fmt(root, sizeof root, "%s/stale-store", scratch);
    CHECK_RC(os_store_open(root, &s1), 0);
    os_store_free(s1);
    CHECK_RC(os_store_open(root, &s2), 0);
    CHECK(s1 != NULL && s2 != NULL && s1 != s2);
    CHECK(os_store_path(s1) == NULL);
    CHECK(strstr(os_last_error(), "not a live store handle") != NULL);
    CHECK_RC(os_store_contains(s1, "x"), -EINVAL);
    CHECK_RC(os_store_new(s1, "x", &obj), -EINVAL);
    CHECK(obj == NULL);
    CHECK_RC(os_store_gc(s1), -EINVAL);
    os_store_free(s1); /* refused: s2 is not freed through it */
    CHECK(os_store_path(s2) && strcmp(os_store_path(s2), root) == 0);
    CHECK_RC(os_store_new(s2, "x", &obj), 0);
    CHECK_RC(os_store_commit(s2, obj, "x", NULL), 0);
    os_store_free(s2);
}

/* Sends one read-tree request to the server at `sock`; the reply (NUL
 * terminated) goes to `reply`. Returns 0, or -1 on a transport failure. */
static int read_tree_request(const char *sock, const char *id, char *reply, size_t size)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    char request[512];
    fmt(addr.sun_path, sizeof addr.sun_path, "%s", sock);
    fmt(request, sizeof request, "{\"method\": \"read-tree\", \"object-id\": \"%s\"}", id);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    ssize_t n = -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        send(fd, request, strlen(request), 0) == (ssize_t)strlen(request))
        n = recv(fd, reply, size - 1, 0);
    close(fd);
    if (n <= 0)
        return -1;
    reply[n] = '\0';
    return 0;
}

/* What a forked child does with the handles it inherited: every use fails
 * with -ECHILD, freeing forgets them. Returns a bit mask of what went
 * wrong (0: all as documented). */
static int child_uses_inherited(os_store_t *store, os_object_t *work, os_server_t *server)
{
    int bad = 0;
    os_object_t *obj = NULL;
    char *path = NULL;
    if (os_object_id(work) != NULL || strstr(os_last_error(), "fork()") == NULL)
        bad |= 1;
    if (os_store_contains(store, "forked") != -ECHILD || os_store_new(store, "child", &obj) != -ECHILD)
        bad |= 2;
    if (os_object_finalize(work) != -ECHILD || os_object_tree(work) != NULL)
        bad |= 4;
    if (os_server_socket_path(server) != NULL || os_store_tempdir(store, NULL, NULL, &path) != -ECHILD)
        bad |= 8;
    if (os_store_gc(store) != -ECHILD || os_store_path(store) != NULL)
        bad |= 16;
    os_server_stop(server);
    os_object_release(work);
    os_store_free(store);
    /* Freed: the handles are gone in the child. */
    if (os_store_contains(store, "forked") != -EINVAL)
        bad |= 32;
    return bad;
}

/* fork(): a child that frees, releases and stops inherited handles changes
 * nothing of the parent's: work dirs, temp dirs and the server stay. */
static void test_fork(void)
{
    char root[PATH_MAX], sock[PATH_MAX], work[PATH_MAX], reply[PATH_MAX + 64];
    os_store_t *store = NULL;
    os_object_t *work_obj = NULL, *committed = NULL;
    os_server_t *server = NULL;
    char *tempdir = NULL;

    fmt(root, sizeof root, "%s/fork-store", scratch);
    fmt(sock, sizeof sock, "%s/fork.sock", scratch);
    CHECK_RC(os_store_open(root, &store), 0);
    CHECK_RC(os_store_new(store, "forked", &committed), 0);
    write_file(os_object_tree(committed), "f", "parent's");
    CHECK_RC(os_store_commit(store, committed, "forked", NULL), 0);
    CHECK_RC(os_store_new(store, "work", &work_obj), 0);
    fmt(work, sizeof work, "%s", os_object_tree(work_obj));
    write_file(work, "f", "being built");
    CHECK_RC(os_store_tempdir(store, "fork-", NULL, &tempdir), 0);
    CHECK_RC(os_server_start(store, sock, &server), 0);

    int out[2];
    CHECK(pipe(out) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child's stderr goes to the parent, which looks for a panic. */
        close(out[0]);
        dup2(out[1], STDERR_FILENO);
        unsigned char bad = (unsigned char)child_uses_inherited(store, work_obj, server);
        if (write(out[1], &bad, 1) != 1)
            _exit(3);
        /* No exit handlers (the parent's leak checkers would judge the
         * parent's memory seen from here). */
        raise(SIGKILL);
    }
    close(out[1]);
    char child_says[4096] = {0};
    size_t got = 0;
    ssize_t n;
    while (got < sizeof child_says - 1 && (n = read(out[0], child_says + got, sizeof child_says - 1 - got)) > 0)
        got += (size_t)n;
    close(out[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK(got >= 1 && child_says[got - 1] == 0); /* the child's bit mask */
    if (got >= 1 && child_says[got - 1] != 0)
        fprintf(stderr, "child: failures 0x%x\n", (unsigned)(unsigned char)child_says[got - 1]);
    child_says[got > 0 ? got - 1 : 0] = '\0';
    CHECK(strstr(child_says, "panicked") == NULL);

    /* The parent's state is untouched, its server still answers. */
    CHECK(file_has(work, "f", "being built"));
    CHECK(tempdir && exists(tempdir));
    CHECK(exists(sock));
    CHECK(read_tree_request(sock, "forked", reply, sizeof reply) == 0);
    CHECK(strstr(reply, "\"path\"") != NULL && strstr(reply, "null") == NULL);
    CHECK(os_object_id(work_obj) && strcmp(os_object_id(work_obj), "work") == 0);
    CHECK(strcmp(os_server_socket_path(server), sock) == 0);
    os_server_stop(server);
    CHECK(!exists(sock));
    os_object_release(work_obj);
    CHECK(!exists(work));
    os_free(tempdir);
    os_store_free(store);
}

static void test_foreign_object(os_store_t *store)
{
    char other_root[PATH_MAX];
    os_store_t *other = NULL;
    os_object_t *obj = NULL;

    fmt(other_root, sizeof other_root, "%s/other-store", scratch);
    CHECK_RC(os_store_open(other_root, &other), 0);
    CHECK_RC(os_store_new(other, "foreign", &obj), 0);
    CHECK_RC(os_store_commit(store, obj, "foreign", NULL), -EINVAL);
    os_store_free(other); /* frees obj too */
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 ? st.st_mode & 07777 : (mode_t)-1;
}

static void test_server(os_store_t *store)
{
    os_server_t *server = (os_server_t *)1;
    char sock[PATH_MAX], longpath[200];

    fmt(sock, sizeof sock, "%s/srv.sock", scratch);
    CHECK_RC(os_server_start(NULL, sock, &server), -EINVAL);
    CHECK(server == NULL);
    CHECK_RC(os_server_start(store, sock, NULL), -EINVAL);
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    CHECK_RC(os_server_start(store, longpath, &server), -ENAMETOOLONG);
    CHECK(os_server_socket_path(NULL) == NULL);
    os_server_stop(NULL);

    CHECK_RC(os_server_start(store, sock, &server), 0);
    CHECK(server && strcmp(os_server_socket_path(server), sock) == 0);
    CHECK(mode_of(sock) == 0600);
    os_server_t *second = NULL;
    CHECK_RC(os_server_start(store, sock, &second), -EADDRINUSE);
    os_server_stop(server);
    CHECK(!exists(sock));
    CHECK(os_server_socket_path(server) == NULL); /* stopped: not live */

    /* The extended form: mode and uid list; bad sizes are refused. */
    unsigned int uids[] = {0};
    os_server_options_t options = {.struct_size = sizeof options, .socket_mode = 0640, .allowed_uids = uids,
                                   .allowed_uids_len = 1};
    CHECK_RC(os_server_start_ex(store, sock, &options, &server), 0);
    CHECK(mode_of(sock) == 0640);
    os_server_stop(server);
    /* Octal as C writes it. */
    options.socket_mode = 01777;
    CHECK_RC(os_server_start_ex(store, sock, &options, &server), -EINVAL);
    CHECK(strstr(os_last_error(), "01777") != NULL && strstr(os_last_error(), "0o") == NULL);
    options.socket_mode = 0640;
    options.struct_size = 1;
    CHECK_RC(os_server_start_ex(store, sock, &options, &server), -EINVAL);
    options.struct_size = sizeof options;
    options.allowed_uids = NULL;
    CHECK_RC(os_server_start_ex(store, sock, &options, &server), -EINVAL);

    /* With a NULL path: $OSSTORE_SOCKET, the client's default too. */
    char env_sock[PATH_MAX];
    fmt(env_sock, sizeof env_sock, "%s/env.sock", scratch);
    CHECK(setenv("OSSTORE_SOCKET", env_sock, 1) == 0);
    CHECK_RC(os_server_start(store, NULL, &server), 0);
    CHECK(os_server_socket_path(server) && strcmp(os_server_socket_path(server), env_sock) == 0);
    CHECK(exists(env_sock));
    os_server_stop(server);
    CHECK(!exists(env_sock));
    CHECK(unsetenv("OSSTORE_SOCKET") == 0);

    /* The default socket: "store" in a private directory under /run/osbuild. */
    if (geteuid() == 0) {
        CHECK_RC(os_server_start(store, NULL, &server), 0);
        const char *path = os_server_socket_path(server);
        char dir[PATH_MAX];
        fmt(dir, sizeof dir, "%s", path ? path : "");
        CHECK(strncmp(dir, "/run/osbuild/", 13) == 0 && strcmp(dir + strlen(dir) - 6, "/store") == 0);
        *strrchr(dir, '/') = '\0';
        CHECK(mode_of(dir) == 0700);
        os_server_stop(server);
        CHECK(!exists(dir));
    } else {
        printf("SKIP default server socket: creating /run/osbuild needs root\n");
    }

    /* Left running: os_store_free stops it (checked in main). */
    CHECK_RC(os_server_start(store, sock, &server), 0);
}

/* os_last_error() follows errno's rule: failures set it, successes leave it
 * alone, so the message read beside a later successful call is still the
 * earlier failure's, in valid memory (valgrind checks the reads). */
static void test_last_error_rule(os_store_t *store)
{
    char before[256], line[300];
    CHECK_RC(os_store_contains(store, "bad/id"), -EINVAL);
    const char *message = os_last_error();
    fmt(before, sizeof before, "%s", message);
    CHECK(before[0] != '\0');
    fprintf(stderr, "last-error rule: %d: %s\n", os_store_contains(store, "x"), os_last_error());
    snprintf(line, sizeof line, "%d: %s", os_store_contains(store, "x"), os_last_error());
    CHECK(strncmp(line, "0: ", 3) == 0 && strcmp(line + 3, before) == 0);
    CHECK(strcmp(message, before) == 0); /* the old pointer is still valid */

    /* A pointer-returning function that fails sets the message. */
    CHECK(os_object_id(NULL) == NULL);
    CHECK(strcmp(os_last_error(), before) != 0 && strstr(os_last_error(), "NULL") != NULL);
    CHECK(os_store_path((const os_store_t *)(uintptr_t)0x10) == NULL);
    CHECK(strstr(os_last_error(), "not a live store handle") != NULL);
    /* A void function that fails sets it too; a success does not clear it. */
    os_object_release((os_object_t *)(uintptr_t)0x20);
    CHECK(strstr(os_last_error(), "not a live object handle") != NULL);
    CHECK(os_store_path(store) != NULL);
    CHECK(strstr(os_last_error(), "not a live object handle") != NULL);
    /* Fetched before a failing call (as right-to-left argument evaluation
     * does), the pointer stays readable. */
    message = os_last_error();
    CHECK_RC(os_store_contains(store, NULL), -EINVAL);
    CHECK(strstr(message, "not a live object handle") != NULL);
}

static void *thread_error(void *arg)
{
    (void)arg;
    return (void *)(os_last_error()[0] == '\0' ? "clean" : "dirty");
}

static void test_thread_local_error(void)
{
    os_store_t *s = NULL;
    pthread_t t;
    void *res = NULL;
    CHECK(os_store_open(NULL, &s) == -EINVAL);
    CHECK(pthread_create(&t, NULL, thread_error, NULL) == 0);
    pthread_join(t, &res);
    CHECK(res && strcmp((const char *)res, "clean") == 0);
    CHECK(os_last_error()[0] != '\0');
}

int main(void)
{
    char root[512], tmp[PATH_MAX];
    os_store_t *store = NULL;

    fmt(scratch, sizeof scratch, "/tmp/osstore-capi-XXXXXX");
    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        return 2;
    }
    fmt(root, sizeof root, "%s/store", scratch);

    test_library();
    test_open_errors();
    test_thread_local_error();

    CHECK_RC(os_store_open(root, &store), 0);
    CHECK(store && strcmp(os_store_path(store), root) == 0);
    fmt(tmp, sizeof tmp, "%s/objects", root);
    CHECK(exists(tmp));
    fmt(tmp, sizeof tmp, "%s/refs", root);
    CHECK(exists(tmp));
    fmt(tmp, sizeof tmp, "%s/tmp", root);
    CHECK(exists(tmp));

    test_invalid_ids(store);
    test_commit_by_move(store, root);
    test_lookups(store, root);
    test_snapshots(store);
    test_init_and_export(store);
    test_floating(store);
    test_tempdir(store, root);
    test_release_hard_trees(store);
    test_gc(store, root);
    test_bad_handles(store);
    test_last_error_rule(store);
    test_stale_handles(store);
    test_foreign_object(store);
    test_fork();
    if (geteuid() == 0 && in_private_mount_namespace())
        test_host_tree(store);
    else
        printf("SKIP host tree: needs root in a private mount namespace (run via make check)\n");

    test_server(store);
    char sock[PATH_MAX];
    fmt(sock, sizeof sock, "%s/srv.sock", scratch);

    /* Leave work for os_store_free to clean up. */
    os_object_t *left = NULL;
    CHECK_RC(os_store_new(store, "left-behind", &left), 0);
    os_store_free(store);
    CHECK(count_entries(tmp) == 0);
    CHECK(!mounted_below(root));
    CHECK(!exists(sock)); /* the server left running was stopped */

    /* Reopening keeps the committed trees. */
    CHECK_RC(os_store_open(root, &store), 0);
    CHECK_RC(os_store_contains(store, "abcdefghij"), 1);
    CHECK_RC(os_store_contains(store, "snap2"), 1);
    os_store_free(store);

    char cmd[PATH_MAX + 32];
    fmt(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", scratch);
    return check_done("test_api");
}
