/*
 * osstore-bench: the benchmark of `make bench` (see bench/bench.mk).
 *
 * Links libosstore.so through pkg-config as users do, generates its own
 * trees from a fixed seed, and measures every row of the performance issue
 * against its reference in alternating runs (A B A B ...): the real
 * `cp -a --reflink=auto` and `rm -rf`, a bare C SOCK_SEQPACKET ping-pong
 * and a minimal single-threaded C epoll server for the socket floors, and
 * the given numbers of the Python reference for the rows that need it
 * (and, beside commit by move, the kernel's floor for that operation).
 * Prints the medians and ratios and writes the table to --results.
 *
 * It mounts a tmpfs, a fresh journaled ext4 and (when mkfs.xfs exists) an
 * XFS with reflink=1, both on loop files in that tmpfs: run it inside a
 * private mount namespace (tests/in-private-ns.sh) so nothing outlives it.
 *
 *   osstore-bench --compare PATH [--results FILE] [--notes FILE] [--quick]
 *   --only SECTIONS runs these (comma-separated) of copy, btrfs, size, scale,
 *   cold, commit, lookup, server.
 *   --scale adds the 200k-file tree's rows and, with --disk DIR (a directory
 *   on the machine's disk for a loop file), the cold-cache rows (scale.c).
 *   osstore-bench --gen DIR [NFILES]   (only generate the tree, for profiling)
 *
 * --compare names the fidelity checker (bench/compare: compare_trees).
 * --quick (or BENCH_QUICK=1): small tree, one measured run per row.
 */
#include <sched.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <linux/fiemap.h>
#include <linux/fs.h>

#include <osstore.h>
#include "osstore_client.h"

extern char **environ;

/* ------------------------------------------------------------------ */
/* Utilities                                                           */

static int quick;
static const char *only; /* --only SECTIONS (comma-separated) */

/* --only takes one section or a comma-separated list. */
static int section(const char *name)
{
    size_t n = strlen(name);
    const char *p = only;
    if (!only)
        return 1;
    for (; (p = strstr(p, name)); p += n)
        if ((p == only || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
            return 1;
    return 0;
}
static const char *compare_bin;
static const char *notes_file; /* appended to the results (--notes) */
static char work[512]; /* the tmpfs everything happens in */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "osstore-bench: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void check(int rc, const char *what)
{
    if (rc < 0)
        die("%s: %s (%s)", what, strerror(-rc), os_last_error());
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *fmt(const char *f, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    if (vasprintf(&s, f, ap) < 0)
        die("out of memory");
    va_end(ap);
    return s;
}

/* Runs argv (no shell) and waits; returns the exit status (-1: killed). */
static int spawn_wait(char *const argv[], int quiet)
{
    pid_t pid;
    int status;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (quiet)
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0)
        die("cannot run %s: %s", argv[0], strerror(errno));
    posix_spawn_file_actions_destroy(&fa);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            die("waitpid: %s", strerror(errno));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void sh(const char *cmd)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    if (spawn_wait(argv, 0) != 0)
        die("command failed: %s", cmd);
}

static double time_argv(char *const argv[])
{
    double t = now();
    if (spawn_wait(argv, 0) != 0)
        die("%s failed", argv[0]);
    return now() - t;
}

static void rm_rf(const char *path)
{
    char *argv[] = {"rm", "-rf", (char *)path, NULL};
    if (spawn_wait(argv, 0) != 0)
        die("rm -rf %s failed", path);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (n <= 64); v is left as it is, so that paired
 * arrays keep their pairing. */
static double median(const double *v, int n)
{
    double s[64];
    if (n > 64)
        n = 64;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* The value in KiB of the line "key: ... kB" of a /proc file such as
 * /proc/self/status ("VmRSS", "VmHWM") or /proc/meminfo ("Slab"); -1 if
 * absent. */
static long proc_kib(const char *file, const char *key)
{
    char line[256];
    long v = -1;
    size_t klen = strlen(key);
    FILE *f = fopen(file, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            v = strtol(line + klen + 1, NULL, 10);
    fclose(f);
    return v;
}

static long proc_status_kib(const char *key)
{
    return proc_kib("/proc/self/status", key);
}

static long meminfo_kib(const char *key)
{
    return proc_kib("/proc/meminfo", key);
}

/* Runs the fidelity check; returns 1 when the trees are identical. */
static int faithful(const char *a, const char *b)
{
    char *argv[] = {(char *)compare_bin, (char *)a, (char *)b, NULL};
    int rc = spawn_wait(argv, 0);
    if (rc == 2 || rc < 0)
        die("compare-trees %s %s failed", a, b);
    return rc == 0;
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

struct row {
    char name[128];
    char op[512];
    char ref[96];
    char ours[96];
    char ratio[48];
    char target[64];
    const char *met; /* "yes", "**no**", "n/a", "skipped" */
};

static struct row rows[64];
static int nrows;

static struct row *add_row(const char *name, const char *op)
{
    struct row *r = &rows[nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->op, sizeof r->op, "%s", op);
    r->met = "n/a";
    return r;
}

static void print_row(const struct row *r)
{
    printf("  %-46s ref %-22s ours %-22s ratio %-8s target %-10s %s\n", r->name, r->ref, r->ours,
           r->ratio, r->target, r->met);
    fflush(stdout);
}

/* A row whose times (seconds, lower is better) are compared. */
/* The median of the per-round ratios ours[i] / ref[i]: each round's two
 * runs are adjacent, so a load that drifts over the row cancels out. */
static double paired_ratio(const double *ref, const double *ours, int n)
{
    double v[64];
    int i;
    for (i = 0; i < n && i < 64; i++)
        v[i] = ours[i] / ref[i];
    return median(v, i);
}

/* A row comparing paired runs (rates, higher is better): medians of each
 * side, the median per-round ratio ours / ref, and its minimum. */
static void paired_rate_row(struct row *r, const double *ref_v, const char *ref_note,
                            const double *ours_v, int n, const char *unit, double min_ratio)
{
    double ratio = paired_ratio(ref_v, ours_v, n);
    snprintf(r->ref, sizeof r->ref, "%.0f %s%s", median(ref_v, n), unit, ref_note);
    snprintf(r->ours, sizeof r->ours, "%.0f %s", median(ours_v, n), unit);
    snprintf(r->ratio, sizeof r->ratio, "%.3f", ratio);
    snprintf(r->target, sizeof r->target, ">= %.1f", min_ratio);
    r->met = ratio >= min_ratio ? "yes" : "**no**";
    print_row(r);
}

/* A row whose times (seconds, lower is better) are compared; `ratio` is the
 * paired ratio. */
static void time_row(struct row *r, double ref, double ours, double ratio, double max_ratio)
{
    /* milliseconds below 10 ms (the btrfs rows) */
    snprintf(r->ref, sizeof r->ref, ref < 0.01 ? "%.2f ms" : "%.3f s", ref < 0.01 ? ref * 1e3 : ref);
    snprintf(r->ours, sizeof r->ours, ours < 0.01 ? "%.2f ms" : "%.3f s",
             ours < 0.01 ? ours * 1e3 : ours);
    snprintf(r->ratio, sizeof r->ratio, "%.2f", ratio);
    snprintf(r->target, sizeof r->target, "<= %.2f", max_ratio);
    r->met = ratio <= max_ratio ? "yes" : "**no**";
    print_row(r);
}

/* A row whose rates (higher is better) are compared. */
static void rate_row(struct row *r, double ref, const char *ref_note, double ours, double min_ratio,
                     const char *unit)
{
    double ratio = ours / ref;
    snprintf(r->ref, sizeof r->ref, "%.0f %s%s", ref, unit, ref_note);
    snprintf(r->ours, sizeof r->ours, "%.0f %s", ours, unit);
    snprintf(r->ratio, sizeof r->ratio, "%.2f", ratio);
    snprintf(r->target, sizeof r->target, ">= %.1f", min_ratio);
    r->met = ratio >= min_ratio ? "yes" : "**no**";
    print_row(r);
}

/* ------------------------------------------------------------------ */
/* The generated tree                                                  */

struct rng {
    uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}

static double urand(struct rng *r)
{
    return ((double)(rnd(r) >> 11) + 0.5) / 9007199254740992.0;
}

static double nrand(struct rng *r)
{
    return sqrt(-2 * log(urand(r))) * cos(2 * M_PI * urand(r));
}

struct tree_stats {
    long files, dirs, symlinks, hardlinks, special, xattrs, setid;
    long long bytes;
};

static unsigned char *noise; /* random bytes the file contents are cut from */
#define NOISE_SIZE (1 << 20)

static void write_file(int dirfd, const char *name, long long size, struct rng *r, mode_t mode)
{
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    long long done = 0;
    if (fd < 0)
        die("create %s: %s", name, strerror(errno));
    while (done < size) {
        size_t off = (size_t)(rnd(r) % (NOISE_SIZE / 2));
        size_t n = (size_t)(size - done < NOISE_SIZE / 2 ? size - done : NOISE_SIZE / 2);
        ssize_t w = write(fd, noise + off, n);
        if (w <= 0)
            die("write %s: %s", name, strerror(errno));
        done += w;
    }
    if (fchmod(fd, mode) < 0)
        die("chmod %s: %s", name, strerror(errno));
    close(fd);
}

static void set_time(int dirfd, const char *name, struct rng *r)
{
    struct timespec ts[2];
    ts[0].tv_sec = 1600000000 + (time_t)(rnd(r) % 100000000);
    ts[0].tv_nsec = (long)(rnd(r) % 1000000000);
    ts[1].tv_sec = 1600000000 + (time_t)(rnd(r) % 100000000);
    ts[1].tv_nsec = (long)(rnd(r) % 1000000000);
    if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        die("utimensat %s: %s", name, strerror(errno));
}

/*
 * Generates a tree of `nfiles` regular files below `root` (an existing
 * directory): a random directory tree (one directory per 20 files, each
 * hung below a random earlier one), log-normal file sizes (median 3 KiB,
 * sigma 1.5, capped at 4 MiB) plus a few large files, 2% empty files,
 * symlinks (relative, absolute, dangling), hard links, set-uid and set-gid
 * files, files owned by another user, user xattrs, a sparse file, a fifo
 * and a character device; random atime/mtime with nanoseconds everywhere.
 */
/* Set for the 200k tree (bench/scale.c): files crowd into some directories,
 * as in a root filesystem (/usr/lib, /usr/bin hold thousands). */
static int rootfs_shape;

static long pick_dir(struct rng *r, long ndirs)
{
    double u;
    if (!rootfs_shape || ndirs < 2)
        return (long)(rnd(r) % (uint64_t)ndirs);
    u = urand(r);
    return 1 + (long)((double)(ndirs - 1) * u * u);
}

static void gen_tree(const char *root, long nfiles, uint64_t seed, struct tree_stats *st)
{
    struct rng r = {seed * 0x9E3779B97F4A7C15ULL + 1};
    long ndirs = nfiles / 20 + 1, nlarge = nfiles / 4000 + 1, i;
    char **dirs = calloc((size_t)ndirs, sizeof *dirs);
    char **files = calloc((size_t)nfiles, sizeof *files);
    char path[1024];
    int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int can_chown = geteuid() == 0;

    memset(st, 0, sizeof *st);
    if (rootfd < 0 || !dirs || !files)
        die("gen_tree %s: %s", root, strerror(errno));
    dirs[0] = strdup(".");
    for (i = 1; i < ndirs; i++) {
        const char *parent = dirs[rnd(&r) % (uint64_t)i];
        dirs[i] = fmt("%s/d%04ld", parent, i);
        if (mkdirat(rootfd, dirs[i], 0755) < 0)
            die("mkdir %s: %s", dirs[i], strerror(errno));
    }
    st->dirs = ndirs;
    for (i = 0; i < nfiles; i++) {
        const char *dir = dirs[pick_dir(&r, ndirs)];
        long long size;
        mode_t mode = 0644;
        uint64_t k = rnd(&r) % 100;
        if (i < nlarge)
            size = (8 + (long long)(rnd(&r) % 16)) << 20; /* 8-23 MiB */
        else if (k < 2)
            size = 0;
        else {
            double s = exp(log(3072.0) + 1.5 * nrand(&r));
            size = s > 4 << 20 ? 4 << 20 : (long long)s;
        }
        if (k >= 90)
            mode = 0755;
        else if (k >= 85)
            mode = 0600;
        if (i % 997 == 5) {
            mode = 04755;
            st->setid++;
        } else if (i % 1499 == 7) {
            mode = 02755;
            st->setid++;
        }
        files[i] = fmt("%s/f%05ld%s", dir, i, k % 3 ? ".so" : ".txt");
        write_file(rootfd, files[i], size, &r, mode);
        if (can_chown && i % 7 == 3) {
            /* chown clears set-id bits: restore them */
            if (fchownat(rootfd, files[i], 1000, 1000, AT_SYMLINK_NOFOLLOW) < 0 ||
                fchmodat(rootfd, files[i], mode, 0) < 0)
                die("chown %s: %s", files[i], strerror(errno));
        }
        if (i % 50 == 1) {
            char val[32];
            int n = snprintf(val, sizeof val, "value-%ld", i);
            snprintf(path, sizeof path, "%s/%s", root, files[i]);
            if (lsetxattr(path, "user.bench", val, (size_t)n, 0) == 0)
                st->xattrs++;
        }
        st->files++;
        st->bytes += size;
    }
    /* symlinks: one per 40 files */
    for (i = 0; i < nfiles / 40; i++) {
        const char *dir = dirs[rnd(&r) % (uint64_t)ndirs];
        char *name = fmt("%s/l%05ld", dir, i), *target;
        switch (i % 4) {
        case 0:
            target = strdup(strrchr(files[rnd(&r) % (uint64_t)nfiles], '/') + 1);
            break;
        case 1:
            target = fmt("../%s", files[rnd(&r) % (uint64_t)nfiles]);
            break;
        case 2:
            target = strdup("/usr/lib/os-release");
            break;
        default:
            target = fmt("dangling-%ld", i);
        }
        if (symlinkat(target, rootfd, name) < 0)
            die("symlink %s: %s", name, strerror(errno));
        set_time(rootfd, name, &r);
        st->symlinks++;
        free(name);
        free(target);
    }
    /* hard links: one per 100 files, some files with several */
    for (i = 0; i < nfiles / 100; i++) {
        const char *dir = dirs[rnd(&r) % (uint64_t)ndirs];
        const char *file = files[(rnd(&r) % (uint64_t)(nfiles / 10 + 1)) * 3 % (uint64_t)nfiles];
        char *name = fmt("%s/h%05ld", dir, i);
        if (linkat(rootfd, file, rootfd, name, 0) < 0)
            die("link %s: %s", name, strerror(errno));
        st->hardlinks++;
        free(name);
    }
    /* special files */
    if (mkfifoat(rootfd, "fifo", 0640) < 0)
        die("mkfifo: %s", strerror(errno));
    set_time(rootfd, "fifo", &r);
    st->special++;
    if (can_chown) {
        if (mknodat(rootfd, "null", S_IFCHR | 0666, makedev(1, 3)) < 0)
            die("mknod: %s", strerror(errno));
        set_time(rootfd, "null", &r);
        st->special++;
    }
    {
        /* a sparse file: 2 data extents in 32 MiB */
        int fd = openat(rootfd, "sparse.img", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || pwrite(fd, noise, 65536, 1 << 20) != 65536 ||
            pwrite(fd, noise + 4096, 65536, 20 << 20) != 65536 || ftruncate(fd, 32 << 20) < 0)
            die("sparse file: %s", strerror(errno));
        close(fd);
        set_time(rootfd, "sparse.img", &r);
        st->files++;
        st->bytes += 131072;
    }
    /* times of files, then of directories (their mtime changed above) */
    for (i = 0; i < nfiles; i++) {
        set_time(rootfd, files[i], &r);
        free(files[i]);
    }
    for (i = ndirs - 1; i >= 0; i--) {
        if (i % 10 == 9 && fchmodat(rootfd, dirs[i], 0750, 0) < 0)
            die("chmod %s: %s", dirs[i], strerror(errno));
        set_time(rootfd, dirs[i], &r);
        free(dirs[i]);
    }
    free(dirs);
    free(files);
    close(rootfd);
}

static char *describe_tree(const struct tree_stats *st)
{
    return fmt("%ld regular files (%.0f MiB), %ld directories, %ld symlinks, %ld hard links, "
               "%ld set-id files, %ld files with a user xattr, %ld special files (fifo, char device), "
               "1 sparse file",
               st->files, (double)st->bytes / 1048576.0, st->dirs, st->symlinks, st->hardlinks,
               st->setid, st->xattrs, st->special);
}

/* ------------------------------------------------------------------ */
/* Reflink check (XFS): every regular file with data shares its extents */

static long not_shared;
static long checked_files;

static void check_shared_dir(int dirfd)
{
    DIR *d = fdopendir(dirfd);
    struct dirent *e;
    char buf[sizeof(struct fiemap) + 64 * sizeof(struct fiemap_extent)];
    if (!d)
        die("fdopendir: %s", strerror(errno));
    while ((e = readdir(d))) {
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            die("stat %s: %s", e->d_name, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            int fd = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd < 0)
                die("open %s: %s", e->d_name, strerror(errno));
            check_shared_dir(fd);
        } else if (S_ISREG(st.st_mode) && st.st_blocks > 0) {
            int fd = openat(dirfd, e->d_name, O_RDONLY | O_CLOEXEC);
            struct fiemap *fm = (struct fiemap *)buf;
            unsigned i;
            if (fd < 0)
                die("open %s: %s", e->d_name, strerror(errno));
            memset(buf, 0, sizeof buf);
            fm->fm_length = ~0ULL;
            fm->fm_flags = FIEMAP_FLAG_SYNC;
            fm->fm_extent_count = 64;
            if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
                die("fiemap %s: %s", e->d_name, strerror(errno));
            checked_files++;
            for (i = 0; i < fm->fm_mapped_extents; i++)
                if (!(fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_SHARED)) {
                    not_shared++;
                    break;
                }
            close(fd);
        }
    }
    closedir(d);
}

static int all_reflinked(const char *tree)
{
    int fd = open(tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        die("open %s: %s", tree, strerror(errno));
    not_shared = checked_files = 0;
    check_shared_dir(fd);
    return not_shared == 0 && checked_files > 0;
}

/* ------------------------------------------------------------------ */
/* Filesystems and the tree copy rows                                  */

struct fs {
    const char *name;  /* "tmpfs", "ext4", "xfs" */
    const char *label; /* for the table */
    char *mnt;
    os_store_t *store;
    os_object_t *base;
    const char *base_tree;
};

/* Set for the rows of the 200k tree and the cold cache (bench/scale.c),
 * whose runs take tens of seconds each. */
static int few_runs;

static int runs(void)
{
    return quick ? 1 : few_runs ? 3 : 5;
}

static void setup_fs(struct fs *fs, long nfiles, struct tree_stats *st)
{
    os_object_t *base;
    char *store_path = fmt("%s/store", fs->mnt);
    check(os_store_open_ex(store_path, OS_STORE_NO_SYNC, &fs->store), "open store");
    check(os_store_new(fs->store, "base", &base), "new base");
    gen_tree(os_object_tree(base), nfiles, 42, st);
    check(os_object_finalize(base), "finalize base");
    fs->base = base;
    fs->base_tree = os_object_tree(base);
    free(store_path);
    sync();
}

/* Lets the filesystem finish what a deletion left it to do in the
 * background (XFS inode inactivation, the ext4 journal), untimed, so that
 * it does not land in the next measurement, and trims it (below). */
static void settle(const struct fs *fs)
{
    struct fstrim_range all = {.start = 0, .len = UINT64_MAX, .minlen = 0};
    int fd = open(fs->mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) < 0)
        die("syncfs %s: %s", fs->mnt, strerror(errno));
    /* The blocks the last removal freed go back to the file the loop
     * device lives in (as a disk with discard would take them back):
     * without it a loop file in the tmpfs keeps every block ever written,
     * each run has less free memory than the last, and the kernel's dirty
     * writeback threshold, which follows free memory, falls run after run.
     * tmpfs has no FITRIM (ENOTTY/EOPNOTSUPP): nothing to give back. */
    if (ioctl(fd, FITRIM, &all) < 0 && errno != ENOTTY && errno != EOPNOTSUPP)
        die("FITRIM %s: %s", fs->mnt, strerror(errno));
    close(fd);
}

/*
 * The copy rows of one filesystem. Each round, in this order:
 *   cp -a --reflink=auto BASE/. DIR   (A of the init and export rows)
 *   rm -rf DIR                        (A of the removal row)
 *   os_store_new + os_object_init     (B of the init row)
 *   os_object_release                 (B of the removal row: removes the work dir)
 *   os_object_export BASE DIR         (B of the export row; DIR then removed, untimed)
 * Each deletion is followed by a syncfs (untimed, see settle()).
 * The first round is a discarded warm-up, whose copies are checked for
 * fidelity (compare_trees against the base; on XFS, FIEMAP shows every
 * regular file with data as shared).
 */
static void copy_rows(struct fs *fs, int removal_rows)
{
    int n = runs(), i;
    double *cp_t = calloc((size_t)n, sizeof(double)), *init_t = calloc((size_t)n, sizeof(double));
    double *exp_t = calloc((size_t)n, sizeof(double)), *rm_t = calloc((size_t)n, sizeof(double));
    double *rel_t = calloc((size_t)n, sizeof(double));
    int cp_ok = 1, init_ok = 1, exp_ok = 1, reflinked = -1, cp_reflinked = -1;
    long init_not_shared = 0, init_checked = 0;
    char *src = fmt("%s/.", fs->base_tree);
    char *dst = fmt("%s/copy", fs->mnt);
    char *what;
    struct row *r;
    int xfs = !strcmp(fs->name, "xfs");

    printf("%s: copy rows (%d runs + warm-up)\n", fs->label, n);
    fflush(stdout);
    for (i = -1; i < n; i++) {
        char *cp_argv[] = {"cp", "-a", "--reflink=auto", src, dst, NULL};
        char *rm_argv[] = {"rm", "-rf", dst, NULL};
        os_object_t *obj;
        double t, t_cp, t_rm, t_init, t_rel, t_exp;

        if (mkdir(dst, 0755) < 0)
            die("mkdir %s: %s", dst, strerror(errno));
        t_cp = time_argv(cp_argv);
        if (i < 0) {
            cp_ok = faithful(fs->base_tree, dst);
            if (xfs)
                cp_reflinked = all_reflinked(dst);
        }
        t_rm = time_argv(rm_argv);
        settle(fs);

        check(os_store_new(fs->store, "copy", &obj), "new");
        t = now();
        check(os_object_init(obj, fs->base), "os_object_init");
        t_init = now() - t;
        if (i < 0) {
            init_ok = faithful(fs->base_tree, os_object_tree(obj));
            if (xfs) {
                reflinked = all_reflinked(os_object_tree(obj));
                init_not_shared = not_shared;
                init_checked = checked_files;
            }
        }
        t = now();
        os_object_release(obj);
        t_rel = now() - t;
        settle(fs);

        if (mkdir(dst, 0755) < 0)
            die("mkdir %s: %s", dst, strerror(errno));
        t = now();
        check(os_object_export(fs->base, dst), "os_object_export");
        t_exp = now() - t;
        if (i < 0)
            exp_ok = faithful(fs->base_tree, dst);
        rm_rf(dst);
        settle(fs);
        if (i >= 0) {
            cp_t[i] = t_cp;
            rm_t[i] = t_rm;
            init_t[i] = t_init;
            rel_t[i] = t_rel;
            exp_t[i] = t_exp;
        }
        printf("  run %d: cp %.3f  init %.3f  export %.3f  |  rm -rf %.3f  release %.3f%s\n", i,
               t_cp, t_init, t_exp, t_rm, t_rel, i < 0 ? "  (warm-up, discarded)" : "");
        fflush(stdout);
    }
    {
        double init_ratio = paired_ratio(cp_t, init_t, n), exp_ratio = paired_ratio(cp_t, exp_t, n);
        double rel_ratio = paired_ratio(rm_t, rel_t, n);
        double cp = median(cp_t, n), init = median(init_t, n), ex = median(exp_t, n);
        double rm = median(rm_t, n), rel = median(rel_t, n);
        const char *fid = cp_ok ? "cp's copy faithful too" : "cp's copy differs (see log)";
        const char *reflink_note = "";
        if (xfs)
            reflink_note = fmt("; reflinks: %ld of %ld files with data shared in os_object_init's "
                               "copy, cp's: %s",
                               init_checked - init_not_shared, init_checked,
                               cp_reflinked ? "all" : "not all");
        what = fmt("`os_store_new` + `os_object_init(new, base)` of the whole tree vs `cp -a "
                   "--reflink=auto base/. dir`; fidelity (compare_trees): %s, %s%s",
                   init_ok ? "faithful" : "**DIFFERS**", fid, reflink_note);
        r = add_row(fmt("tree copy, `init`, %s", fs->label), what);
        time_row(r, cp, init, init_ratio, 0.5);
        if (!init_ok || (xfs && !reflinked))
            r->met = "**no** (fidelity)";
        what = fmt("`os_object_export(base, empty dir)` vs `cp -a --reflink=auto base/. dir`; "
                   "fidelity: %s",
                   exp_ok ? "faithful" : "**DIFFERS**");
        r = add_row(fmt("tree copy, `export`, %s", fs->label), what);
        time_row(r, cp, ex, exp_ratio, 0.5);
        if (!exp_ok)
            r->met = "**no** (fidelity)";
        if (removal_rows) {
            r = add_row(fmt("tree removal, %s", fs->label),
                        "`os_object_release` of an object holding an `init` copy (removes its "
                        "work dir) vs `rm -rf` of a `cp -a` copy");
            time_row(r, rm, rel, rel_ratio, 0.7);
        }
    }
    free(cp_t);
    free(init_t);
    free(exp_t);
    free(rm_t);
    free(rel_t);
    free(src);
    free(dst);
}

/* `osstore-bench --peak-export STORE ID DST` (this program run again, so
 * that nothing the bench did before is resident): prints the peak RSS growth
 * in KiB of `os_object_export` of the committed object ID of STORE into the
 * new directory DST (VmHWM after the export - VmRSS just before it). */
static int peak_export(const char *store_path, const char *id, const char *dst)
{
    os_store_t *s;
    os_object_t *obj;
    long before, after;
    check(os_store_open_ex(store_path, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &s), "open for export");
    check(os_store_get(s, id, &obj), "get");
    if (mkdir(dst, 0755) < 0)
        die("mkdir %s: %s", dst, strerror(errno));
    before = proc_status_kib("VmRSS");
    check(os_object_export(obj, dst), "export");
    after = proc_status_kib("VmHWM");
    os_object_release(obj);
    os_store_free(s);
    printf("%ld\n", after - before);
    return 0;
}

/* Peak RSS growth of an export of `obj` in a fresh process: `obj` is
 * committed (copied) as `id` in the store at `store_path`, then
 * `--peak-export` runs; the copy it makes in `dst` is removed. */
static long copy_peak_kib(os_store_t *store, const char *store_path, os_object_t *obj,
                          const char *id, const char *dst)
{
    char *self = realpath("/proc/self/exe", NULL);
    char *argv[] = {"osstore-bench", "--peak-export", (char *)store_path, (char *)id,
                    (char *)dst, NULL};
    posix_spawn_file_actions_t fa;
    char out[64] = {0};
    int pipefd[2], status;
    ssize_t n;
    pid_t pid;

    check(os_store_commit(store, obj, id, NULL), "commit a copy to export");
    if (!self || pipe2(pipefd, O_CLOEXEC) < 0)
        die("peak RSS: %s", strerror(errno));
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    if (posix_spawn(&pid, self, &fa, NULL, argv, environ) != 0)
        die("spawn the export process");
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    n = read(pipefd[0], out, sizeof out - 1);
    close(pipefd[0]);
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || n <= 0)
        die("the export process failed");
    rm_rf(dst);
    free(self);
    return atol(out);
}

/* ------------------------------------------------------------------ */
/* Commit and look-up rows                                             */

/* The one-file tree of the commit rows, written into `dir`. */
static void write_tiny_tree(const char *dir)
{
    char *path = fmt("%s/hostname", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, "bench-host.example.org\n", 23) != 23)
        die("write %s: %s", path, strerror(errno));
    close(fd);
    free(path);
}

static void tiny_tree(os_object_t *obj)
{
    write_tiny_tree(os_object_tree(obj));
}

static long id_counter;

/* One commit by move: new, a one-file tree, commit under its own id, release. */
static void op_commit_move(os_store_t *store)
{
    os_object_t *obj;
    char id[64];
    snprintf(id, sizeof id, "move-%ld", id_counter++);
    check(os_store_new(store, id, &obj), "new");
    tiny_tree(obj);
    check(os_store_commit(store, obj, id, NULL), "commit (move)");
    os_object_release(obj);
}

/* A store-shaped directory for the floor below: its path and its tmp/,
 * objects/ and refs/ held open. */
static char floor_root[600];
static int floor_tmp = -1, floor_objects = -1, floor_refs = -1, floor_meta = -1;

static int open_floor_dir(const char *name)
{
    char *path = fmt("%s/%s", floor_root, name);
    int fd;
    if (mkdir(path, 0755) < 0 || (fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        die("floor %s: %s", path, strerror(errno));
    free(path);
    return fd;
}

/*
 * The kernel's floor for one commit by move in the store's on-disk layout,
 * without the library: the same file, and only the directory operations
 * the layout requires (mkdir of tmp/object-<id>-<random>-workdir and of its
 * object/, rename of the tree to objects/<uuid>, the symlink refs/<id>,
 * rmdir of the work dir), as *at calls on held descriptors. No locks, no
 * handles, no checks: what no implementation of this layout can beat.
 */
static void op_commit_move_floor(os_store_t *unused)
{
    unsigned char r[20];
    char id[64], workdir[128], tree[160], name[40], target[64], *tree_path;
    (void)unused;
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        die("getrandom: %s", strerror(errno));
    snprintf(id, sizeof id, "move-%ld", id_counter++);
    snprintf(workdir, sizeof workdir, "object-%.7s-%02x%02x%02x%02x-workdir", id, r[0], r[1], r[2],
             r[3]);
    snprintf(tree, sizeof tree, "%s/object", workdir);
    snprintf(name, sizeof name,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[4], r[5],
             r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15], r[16], r[17], r[18],
             r[19]);
    snprintf(target, sizeof target, "../objects/%s", name);
    if (mkdirat(floor_tmp, workdir, 0700) < 0 || mkdirat(floor_tmp, tree, 0777) < 0)
        die("floor mkdir: %s", strerror(errno));
    tree_path = fmt("%s/tmp/%s", floor_root, tree);
    write_tiny_tree(tree_path);
    free(tree_path);
    {
        /* The least a sidecar needs: one directory, one small file written,
         * renamed into meta/. */
        char meta[192], info[200];
        int fd;
        snprintf(meta, sizeof meta, "%s/meta", workdir);
        snprintf(info, sizeof info, "%s/info", meta);
        if (mkdirat(floor_tmp, meta, 0755) < 0 ||
            (fd = openat(floor_tmp, info, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0)
            die("floor sidecar: %s", strerror(errno));
        if (write(fd, "{\"size\":4096}", 14) != 14)
            die("floor sidecar write: %s", strerror(errno));
        close(fd);
        if (renameat(floor_tmp, tree, floor_objects, name) < 0 ||
            renameat(floor_tmp, meta, floor_meta, name) < 0)
            die("floor rename: %s", strerror(errno));
    }
    if (symlinkat(target, floor_refs, id) < 0 || unlinkat(floor_tmp, workdir, AT_REMOVEDIR) < 0)
        die("floor commit: %s", strerror(errno));
}

static os_object_t *snap_src;

/* One commit by copy: a snapshot of a one-file WRITE object under a new id. */
static void op_commit_copy(os_store_t *store)
{
    char id[64];
    snprintf(id, sizeof id, "snap-%ld", id_counter++);
    check(os_store_commit(store, snap_src, id, NULL), "commit (copy)");
}

static char lookup_ids[100][32];
static const char *floating_id = "floating-stage";

/* One look-up pair of a floating object (finalized, never committed). */
static void op_lookup_floating(os_store_t *store)
{
    os_object_t *obj;
    if (os_store_contains(store, floating_id) != 1)
        die("contains %s: %s", floating_id, os_last_error());
    check(os_store_get(store, floating_id, &obj), "get");
    os_object_release(obj);
}

/* One look-up pair: contains + get (+ release of the handle get gave). */
static void op_lookup(os_store_t *store)
{
    os_object_t *obj;
    const char *id = lookup_ids[id_counter++ % 100];
    if (os_store_contains(store, id) != 1)
        die("contains %s: %s", id, os_last_error());
    check(os_store_get(store, id, &obj), "get");
    os_object_release(obj);
}

/* The rate (ops/s) of one run of `ops` calls of `op`. */
static double run_rate(void (*op)(os_store_t *), os_store_t *store, long ops)
{
    long k;
    double t = now();
    for (k = 0; k < ops; k++)
        op(store);
    return (double)ops / (now() - t);
}

/* Median rate (ops/s) of `ops` calls of `op`, over runs() runs after a warm-up. */
static double rate(void (*op)(os_store_t *), os_store_t *store, long ops)
{
    int n = runs(), i;
    double v[16];
    for (i = -1; i < n; i++) {
        double r = run_rate(op, store, ops);
        if (i >= 0)
            v[i] = r;
    }
    return median(v, n);
}

static void commit_rows(const char *tmpfs_mnt, const char *ext4_mnt)
{
    os_store_t *nosync, *durable, *durable_ext4 = NULL;
    char *p1 = fmt("%s/commit-nosync", tmpfs_mnt), *p2 = fmt("%s/commit-durable", tmpfs_mnt);
    long ops = quick ? 300 : 3000;
    double v;
    struct row *r;

    printf("commit rows (%ld ops per run)\n", ops);
    check(os_store_open_ex(p1, OS_STORE_NO_SYNC, &nosync), "open");
    check(os_store_open_ex(p2, 0, &durable), "open");
    if (ext4_mnt) {
        char *p3 = fmt("%s/commit-durable", ext4_mnt);
        check(os_store_open_ex(p3, 0, &durable_ext4), "open");
        free(p3);
    }

    /* Ours and the floor alternate (A B A B ...) after a warm-up of each. */
    snprintf(floor_root, sizeof floor_root, "%s/commit-floor", tmpfs_mnt);
    if (mkdir(floor_root, 0755) < 0)
        die("mkdir %s: %s", floor_root, strerror(errno));
    floor_tmp = open_floor_dir("tmp");
    floor_objects = open_floor_dir("objects");
    floor_refs = open_floor_dir("refs");
    floor_meta = open_floor_dir("meta");
    {
        int n = runs(), i;
        double floor_v[16], ours_v[16], floor_rate;
        for (i = -1; i < n; i++) {
            double f = run_rate(op_commit_move_floor, NULL, ops);
            double o = run_rate(op_commit_move, nosync, ops);
            if (i >= 0) {
                floor_v[i] = f;
                ours_v[i] = o;
            }
        }
        v = median(ours_v, n);
        floor_rate = median(floor_v, n);
        r = add_row("commit by move, tiny tree, `OS_STORE_NO_SYNC`, tmpfs",
                    "`os_store_new` + write one 23-byte file + `os_store_commit` under its own id "
                    "(rename into objects/, ref swap) + `os_object_release`");
        rate_row(r, 7000, " (Python, given)", v, 5, "ops/s");
        r = add_row("commit by move, the kernel's floor (plain C, no library), tmpfs",
                    "the same file and only the directory operations the layout requires "
                    "(mkdir of the work dir and of its tree, rename into objects/, the least a "
                    "sidecar needs: one directory and one small file written and renamed into "
                    "meta/, symlink of the ref, rmdir of the work dir) with *at calls, no locks; "
                    "alternating with the row above. Ratio: osstore / floor, paired per round");
        snprintf(r->ref, sizeof r->ref, "%.0f ops/s (= %.2f x Python)", floor_rate,
                 floor_rate / 7000);
        snprintf(r->ours, sizeof r->ours, "%.0f ops/s", v);
        {
            double ratio = paired_ratio(floor_v, ours_v, n);
            snprintf(r->ratio, sizeof r->ratio, "%.2f", ratio);
            snprintf(r->target, sizeof r->target, ">= 0.8");
            r->met = ratio >= 0.8 ? "yes" : "**no**";
        }
        print_row(r);
    }
    close(floor_meta);
    close(floor_tmp);
    close(floor_objects);
    close(floor_refs);

    v = rate(op_commit_move, durable, ops);
    r = add_row("commit by move, durable default, tmpfs",
                "the same op with the default durability (`syncfs` + `fsync` of refs/); no target");
    snprintf(r->ours, sizeof r->ours, "%.0f ops/s", v);
    snprintf(r->ref, sizeof r->ref, "-");
    print_row(r);
    if (durable_ext4) {
        long ops2 = quick ? 30 : 300;
        v = rate(op_commit_move, durable_ext4, ops2);
        r = add_row("commit by move, durable default, journaled ext4 (loop)",
                    "the same op with the default durability, on the ext4 of the copy rows; "
                    "no target");
        snprintf(r->ours, sizeof r->ours, "%.0f ops/s", v);
        snprintf(r->ref, sizeof r->ref, "-");
        print_row(r);
    }

    check(os_store_new(nosync, "snapshot-source", &snap_src), "new");
    tiny_tree(snap_src);
    v = rate(op_commit_copy, nosync, ops);
    r = add_row("commit by copy, tiny tree, `OS_STORE_NO_SYNC`, tmpfs",
                "`os_store_commit(obj, other id)` of a WRITE object holding one 23-byte file: "
                "new object, tree copy, rename into objects/, ref swap");
    rate_row(r, 480, " (Python, given)", v, 20, "ops/s");
    os_object_release(snap_src);

    os_store_free(durable_ext4);
    os_store_free(durable);
    os_store_free(nosync);
    free(p1);
    free(p2);
}

/* A flatness row: rates after loading vs fresh, paired per round. */
static void flat_row(struct row *r, const double *fresh_v, const double *after_v, int n,
                     const char *fresh_label)
{
    double ratio = paired_ratio(fresh_v, after_v, n);
    snprintf(r->ref, sizeof r->ref, "%.0f pairs/s (%s)", median(fresh_v, n), fresh_label);
    snprintf(r->ours, sizeof r->ours, "%.0f pairs/s", median(after_v, n));
    snprintf(r->ratio, sizeof r->ratio, "%.2f", ratio);
    snprintf(r->target, sizeof r->target, ">= 0.90 (flat)");
    r->met = ratio >= 0.9 ? "yes" : "**no**";
    print_row(r);
}

/* Commits the 100 objects `lookup_ids` names (tiny trees) in `store`. */
static void commit_lookup_ids(os_store_t *store)
{
    long i;
    for (i = 0; i < 100; i++) {
        os_object_t *obj;
        snprintf(lookup_ids[i], sizeof lookup_ids[i], "stage-%03ld", i);
        check(os_store_new(store, lookup_ids[i], &obj), "new");
        tiny_tree(obj);
        check(os_store_commit(store, obj, lookup_ids[i], NULL), "commit");
        os_object_release(obj);
    }
}

static void lookup_rows(const char *mnt)
{
    os_store_t *store;
    char *path = fmt("%s/lookup", mnt);
    long ops = quick ? 20000 : 200000, many = quick ? 2000 : 10000, i;
    os_object_t **objs = calloc((size_t)many, sizeof *objs);
    double fresh, t, ffresh, fresh_v[16], after_v[16], ffresh_v[16], fafter_v[16], create_ms[16];
    int n = runs(), round;
    os_object_t *floating;
    struct row *r;

    printf("look-up rows (%ld pairs per run)\n", ops);
    /* 100 committed objects, made by another handle */
    check(os_store_open_ex(path, OS_STORE_NO_SYNC, &store), "open");
    commit_lookup_ids(store);
    os_store_free(store);

    check(os_store_open_ex(path, OS_STORE_NO_SYNC, &store), "open");
    check(os_store_new(store, floating_id, &floating), "new");
    check(os_object_finalize(floating), "finalize");
    /* Each round measures the handle fresh, then creates `many` objects on
     * it, measures again and releases them: fresh and loaded runs are
     * adjacent, so the flatness ratios are paired per round. */
    for (round = -1; round < n; round++) {
        double f = run_rate(op_lookup, store, ops), ff = run_rate(op_lookup_floating, store, ops);
        double a, fa;
        t = now();
        for (i = 0; i < many; i++) {
            char id[32];
            snprintf(id, sizeof id, "many-%05ld", i);
            check(os_store_new(store, id, &objs[i]), "new");
            if (i % 2)
                check(os_object_finalize(objs[i]), "finalize");
        }
        t = now() - t;
        a = run_rate(op_lookup, store, ops);
        fa = run_rate(op_lookup_floating, store, ops);
        for (i = 0; i < many; i++)
            os_object_release(objs[i]);
        if (round < 0)
            continue;
        fresh_v[round] = f;
        ffresh_v[round] = ff;
        after_v[round] = a;
        fafter_v[round] = fa;
        create_ms[round] = t * 1e3;
    }
    fresh = median(fresh_v, n);
    ffresh = median(ffresh_v, n);
    r = add_row("`contains` + `get`, fresh handle, tmpfs",
                "`os_store_contains` + `os_store_get` + `os_object_release` of one of 100 "
                "committed ids (whether the ref resolves: from the ref cache, kept exact "
                "with inotify)");
    rate_row(r, 207000, " (Python, measured)", fresh, 3, "pairs/s");
    r = add_row(fmt("`contains` + `get`, after %ld objects created on the handle", many),
                fmt("the same op while the handle holds %ld live objects it created (half "
                    "floating; creating them took %.0f ms); ratio = after / fresh, paired per "
                    "round (each round: fresh, create, after, release)",
                    many, median(create_ms, n)));
    flat_row(r, fresh_v, after_v, n, "fresh");
    r = add_row("`contains` + `get` of a floating object, fresh handle",
                "the same op for a finalized, never committed object (found in the handle's "
                "memory: no syscall)");
    rate_row(r, 207000, " (Python, measured)", ffresh, 3, "pairs/s");
    r = add_row(fmt("`contains` + `get` of a floating object, after %ld objects", many),
                "the floating look-up while the handle holds the objects above; ratio = after / "
                "fresh, paired per round");
    flat_row(r, ffresh_v, fafter_v, n, "fresh");
    os_object_release(floating);
    os_store_free(store);
    free(objs);
    free(path);
}

/* ------------------------------------------------------------------ */
/* Server rows                                                         */

#define MAX_CLIENTS 8
#define MAX_LAT (1 << 21)

struct shared_lat {
    long count[MAX_CLIENTS];
    double start[MAX_CLIENTS], end[MAX_CLIENTS];
    uint32_t lat[MAX_CLIENTS][MAX_LAT]; /* ns */
};

static struct shared_lat *lat;
static char req_buf[512], reply_buf[4096];
static size_t req_len, reply_len;
static const char *server_id = "bench-object";

static int connect_to(const char *path)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect %s: %s", path, strerror(errno));
    return fd;
}

static int listen_at(const char *path, int nonblock)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0)
        die("listen %s: %s", path, strerror(errno));
    return fd;
}

/* The bare ping-pong server: one connection at a time, recv then send. */
static void pingpong_server(int lfd)
{
    char buf[4096];
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        for (;;) {
            ssize_t n = recv(c, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            if (send(c, reply_buf, reply_len, MSG_NOSIGNAL) < 0)
                break;
        }
        close(c);
    }
}

/* The minimal single-threaded epoll server: answers every packet with the reply. */
static void epoll_server(int lfd)
{
    char buf[65536];
    struct epoll_event ev, evs[64];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        die("epoll: %s", strerror(errno));
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1), i;
        for (i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    ev.events = EPOLLIN;
                    ev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
            } else {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r > 0) {
                    if (send(fd, reply_buf, reply_len, MSG_NOSIGNAL) < 0)
                        close(fd);
                } else if (r == 0 || errno != EAGAIN) {
                    close(fd);
                }
            }
        }
    }
}

/* Pins a thread or process to one CPU (cpu < 0: lets it run anywhere). */
static void pin(pid_t tid, int cpu)
{
    cpu_set_t set;
    long i, n = sysconf(_SC_NPROCESSORS_ONLN);
    CPU_ZERO(&set);
    for (i = 0; i < n; i++)
        if (cpu < 0 || i == cpu % n)
            CPU_SET(i, &set);
    if (sched_setaffinity(tid, sizeof set, &set) < 0)
        die("sched_setaffinity: %s", strerror(errno));
}

/* The thread id of the osstore server thread (named "osstore-server"), or 0. */
static pid_t server_tid(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    pid_t tid = 0;
    while (d && (e = readdir(d))) {
        char path[300], comm[64] = "";
        FILE *f;
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f) && !strncmp(comm, "osstore-server", 14))
                tid = (pid_t)atoi(e->d_name);
            fclose(f);
        }
    }
    if (d)
        closedir(d);
    return tid;
}

static pid_t fork_server(void (*fn)(int), int lfd)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        fn(lfd);
        _exit(0);
    }
    return pid;
}

/* One client process: `use_osc` uses osc_read_tree, else raw send/recv of
 * the same request bytes. Connects, says ready, waits for go, then runs
 * requests for `duration` seconds recording each latency. */
static int client_cpu = -1; /* where client processes run (-1: anywhere) */

static void client_proc(int idx, const char *sock, int use_osc, double duration, int ready_fd,
                        int go_fd)
{
    osc_client_t *cl = NULL;
    int fd = -1;
    char c = 'r', buf[4096];
    long k = 0;
    double t0, t, end;

    pin(0, client_cpu);
    if (use_osc) {
        int rc = osc_connect(sock, &cl);
        if (rc < 0)
            die("osc_connect: %s", strerror(-rc));
    } else {
        fd = connect_to(sock);
    }
    if (write(ready_fd, &c, 1) != 1 || read(go_fd, &c, 1) < 0)
        _exit(1);
    t0 = now();
    end = t0 + duration;
    lat->start[idx] = t0;
    t = t0;
    while (t < end) {
        double t1;
        if (use_osc) {
            char *path = NULL;
            int rc = osc_read_tree(cl, server_id, &path);
            if (rc < 0 || !path)
                die("osc_read_tree: %s", strerror(-rc));
            free(path);
        } else {
            ssize_t n;
            if (send(fd, req_buf, req_len, 0) != (ssize_t)req_len)
                die("send: %s", strerror(errno));
            n = recv(fd, buf, sizeof buf, 0);
            if (n != (ssize_t)reply_len)
                die("short reply (%zd bytes)", n);
        }
        t1 = now();
        if (k < MAX_LAT)
            lat->lat[idx][k] = (uint32_t)((t1 - t) * 1e9);
        k++;
        t = t1;
    }
    lat->end[idx] = t;
    lat->count[idx] = k;
    osc_close(cl);
    if (fd >= 0)
        close(fd);
    _exit(0);
}

struct load_result {
    double rate, p50, p99, max; /* req/s, us, us, us */
};

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static struct load_result run_load(const char *sock, int nclients, int use_osc, double duration)
{
    int ready[2], go[2], i;
    pid_t pids[MAX_CLIENTS];
    struct load_result res;
    double start = 1e300, end = 0;
    long total = 0, kept = 0;
    uint32_t *all;
    char c;

    if (pipe(ready) < 0 || pipe(go) < 0)
        die("pipe: %s", strerror(errno));
    memset(lat->count, 0, sizeof lat->count);
    for (i = 0; i < nclients; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            close(ready[0]);
            close(go[1]);
            client_proc(i, sock, use_osc, duration, ready[1], go[0]);
        }
    }
    close(ready[1]);
    close(go[0]);
    for (i = 0; i < nclients; i++)
        if (read(ready[0], &c, 1) != 1)
            die("a client failed to connect");
    close(go[1]); /* go */
    for (i = 0; i < nclients; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            die("a client failed");
    }
    close(ready[0]);
    for (i = 0; i < nclients; i++) {
        total += lat->count[i];
        if (lat->start[i] < start)
            start = lat->start[i];
        if (lat->end[i] > end)
            end = lat->end[i];
    }
    all = malloc(sizeof(uint32_t) * (size_t)total);
    for (i = 0; i < nclients; i++) {
        long n = lat->count[i] < MAX_LAT ? lat->count[i] : MAX_LAT;
        memcpy(all + kept, lat->lat[i], sizeof(uint32_t) * (size_t)n);
        kept += n;
    }
    qsort(all, (size_t)kept, sizeof *all, cmp_u32);
    res.rate = (double)total / (end - start);
    res.p50 = all[kept / 2] / 1e3;
    res.p99 = all[kept * 99 / 100] / 1e3;
    res.max = all[kept - 1] / 1e3;
    free(all);
    return res;
}

static int cmp_res(const void *a, const void *b)
{
    double x = ((const struct load_result *)a)->rate, y = ((const struct load_result *)b)->rate;
    return (x > y) - (x < y);
}

/* Alternating runs of a floor and of the osstore server; medians by rate. */
static void alternate(const char *floor_sock, const char *our_sock, int nclients, int use_osc,
                      struct load_result *floor_med, struct load_result *ours_med, double *ratio)
{
    double fr[8], orr[8];
    int n = quick ? 1 : 5, i;
    double d = quick ? 0.3 : 0.6;
    struct load_result f[8], o[8];
    run_load(floor_sock, nclients, use_osc, 0.2); /* warm-up */
    run_load(our_sock, nclients, use_osc, 0.2);
    for (i = 0; i < n; i++) {
        f[i] = run_load(floor_sock, nclients, use_osc, d);
        o[i] = run_load(our_sock, nclients, use_osc, d);
        printf("  run %d: floor %.0f req/s (p50 %.1f us, p99 %.1f us)  osstore %.0f req/s (p50 %.1f "
               "us, p99 %.1f us)\n",
               i, f[i].rate, f[i].p50, f[i].p99, o[i].rate, o[i].p50, o[i].p99);
        fflush(stdout);
    }
    for (i = 0; i < n; i++) {
        fr[i] = f[i].rate;
        orr[i] = o[i].rate;
    }
    *ratio = paired_ratio(fr, orr, n);
    qsort(f, (size_t)n, sizeof *f, cmp_res);
    qsort(o, (size_t)n, sizeof *o, cmp_res);
    *floor_med = f[n / 2];
    *ours_med = o[n / 2];
}

/* Idle connections: a child opens `n` connections, each makes one request,
 * then they sit idle; the server process's RSS growth per connection. */
static void idle_memory_row(const char *sock)
{
    int n = quick ? 200 : 2000, p[2], q[2], i;
    long rss0, rss1, slab0, slab1;
    pid_t pid;
    char c;
    struct row *r;

    if (pipe(p) < 0 || pipe(q) < 0)
        die("pipe: %s", strerror(errno));
    sleep(1);
    rss0 = proc_status_kib("VmRSS");
    slab0 = meminfo_kib("Slab");
    pid = fork();
    if (pid == 0) {
        osc_client_t **cl = calloc((size_t)n, sizeof *cl);
        close(p[0]);
        close(q[1]);
        for (i = 0; i < n; i++) {
            char *path = NULL;
            if (osc_connect(sock, &cl[i]) < 0 || osc_read_tree(cl[i], server_id, &path) < 0)
                _exit(1);
            free(path);
        }
        if (write(p[1], "r", 1) != 1 || read(q[0], &c, 1) < 0)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    close(q[0]);
    if (read(p[0], &c, 1) != 1)
        die("idle clients failed");
    usleep(200000);
    rss1 = proc_status_kib("VmRSS");
    slab1 = meminfo_kib("Slab");
    close(q[1]);
    waitpid(pid, NULL, 0);
    close(p[0]);
    r = add_row("memory per idle server connection",
                fmt("growth of the server process's RSS with %d connected clients that made one "
                    "request each and stay idle (kernel slab growth for both socket ends, not "
                    "counted: %.1f KiB per connection pair)",
                    n, (double)(slab1 - slab0) / n));
    snprintf(r->ref, sizeof r->ref, "-");
    snprintf(r->ours, sizeof r->ours, "%.2f KiB", (double)(rss1 - rss0) / n);
    snprintf(r->ratio, sizeof r->ratio, "-");
    snprintf(r->target, sizeof r->target, "<= 16 KiB");
    r->met = (double)(rss1 - rss0) / n <= 16 ? "yes" : "**no**";
    print_row(r);
}

/* gc alongside the server: `osstore-bench --gc-store PATH` (this program run
 * again, so the collection is another process, as in the issue) sweeps the
 * store at PATH once. */
static int gc_store(const char *path)
{
    os_store_t *s;
    double t;
    int rc;
    check(os_store_open_ex(path, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &s), "open for gc");
    t = now();
    rc = os_store_gc(s);
    if (rc < 0)
        die("gc: %s", os_last_error());
    printf("  gc process: removed %d entries in %.3f s\n", rc, now() - t);
    os_store_free(s);
    return 0;
}

/* A client that mounts the object with `read-tree-at` (then unmounts it)
 * every 20 ms until killed: what pins a tree, the path a sweep held up. */
static pid_t mounting_client(const char *sock, const char *target)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        osc_client_t *cl = NULL;
        if (osc_connect(sock, &cl) < 0)
            _exit(1);
        for (;;) {
            char *path = NULL;
            if (osc_read_tree_at(cl, server_id, target, NULL, &path) < 0)
                _exit(2);
            free(path);
            umount2(target, MNT_DETACH);
            usleep(20000);
        }
    }
    return pid;
}

/* Worst `read-tree` round trip of one client while another process collects
 * an unnamed copy of the bench tree, next to the worst without collection;
 * a mounting client runs alongside in both. */
static void gc_stall_row(os_store_t *store, const char *store_path, const char *sock,
                         const char *mnt)
{
    long files = quick ? 2000 : 20000;
    int rounds = quick ? 1 : 3, k;
    double d = quick ? 0.5 : 1.0, with = 0, without = 0, with_p50 = 0, without_p50 = 0;
    char *target = fmt("%s/gc-stall-target", mnt);
    char *self = realpath("/proc/self/exe", NULL);
    struct row *r;

    printf("  read-tree during gc of a %ld-file tree in another process\n", files);
    mkdir(target, 0755);
    for (k = 0; k < rounds; k++) {
        os_object_t *big, *small;
        struct tree_stats gs;
        struct load_result quiet, busy;
        pid_t mounter, gc;
        char *argv[] = {"osstore-bench", "--gc-store", (char *)store_path, NULL};

        check(os_store_new(store, "gc-victim", &big), "new");
        gen_tree(os_object_tree(big), files, 7 + k, &gs);
        check(os_store_commit(store, big, "gc-victim", NULL), "commit");
        os_object_release(big);
        check(os_store_new(store, "gc-victim", &small), "new");
        check(os_store_commit(store, small, "gc-victim", NULL), "commit"); /* unnames the tree */
        os_object_release(small);

        mounter = mounting_client(sock, target);
        quiet = run_load(sock, 1, 1, d);
        if (posix_spawn(&gc, self, NULL, NULL, argv, environ) != 0)
            die("spawn the gc process");
        busy = run_load(sock, 1, 1, d);
        waitpid(gc, NULL, 0);
        kill(mounter, SIGKILL);
        waitpid(mounter, NULL, 0);
        umount2(target, MNT_DETACH);
        printf("  round %d: worst read-tree %.0f us without gc (p50 %.1f us), %.0f us with gc "
               "(p50 %.1f us)\n",
               k, quiet.max, quiet.p50, busy.max, busy.p50);
        if (quiet.max > without) {
            without = quiet.max;
            without_p50 = quiet.p50;
        }
        if (busy.max > with) {
            with = busy.max;
            with_p50 = busy.p50;
        }
    }
    r = add_row("server, worst `read-tree` while another process runs gc",
                fmt("worst round trip of one client's `read-tree` loop (osc) over %.1f s while "
                    "another process collects an unnamed %ld-file tree of the store, a client "
                    "mounting the object (`read-tree-at`) every 20 ms alongside; reference: the "
                    "same without the collection; worst of %d rounds each (p50 %.1f us with gc, "
                    "%.1f us without)",
                    d, files, rounds, with_p50, without_p50));
    snprintf(r->ref, sizeof r->ref, "%.2f ms (no gc)", without / 1e3);
    snprintf(r->ours, sizeof r->ours, "%.2f ms", with / 1e3);
    snprintf(r->ratio, sizeof r->ratio, "%.2f", with / (without > 0 ? without : 1));
    snprintf(r->target, sizeof r->target, "<= ref + 5 ms");
    r->met = with - without <= 5000 ? "yes" : "**no**";
    print_row(r);
    free(self);
    free(target);
}

static void server_rows(const char *mnt)
{
    os_store_t *store;
    os_server_t *srv;
    os_object_t *obj;
    char *path = fmt("%s/server-store", mnt), *our_sock = fmt("%s/osstore.sock", mnt);
    char *pp_sock = fmt("%s/pingpong.sock", mnt), *ep_sock = fmt("%s/epoll.sock", mnt);
    osc_member_t m = {"object-id", server_id};
    char *req;
    int fd, lfd, rc, cross;
    double ratio;
    pid_t floor_pid, our_tid;
    ssize_t n;
    struct load_result f, o;
    struct row *r;

    printf("server rows\n");
    fflush(stdout);
    check(os_store_open_ex(path, OS_STORE_NO_SYNC, &store), "open");
    check(os_store_new(store, server_id, &obj), "new");
    tiny_tree(obj);
    check(os_store_commit(store, obj, server_id, NULL), "commit");
    os_object_release(obj);
    rc = os_server_start(store, our_sock, &srv);
    if (rc < 0) {
        r = add_row("server", fmt("`os_server_start` failed: %s", os_last_error()));
        r->met = "skipped";
        os_store_free(store);
        return;
    }
    /* The exact request osc sends, and the exact reply the server gives. */
    if (osc_encode_request("read-tree", &m, 1, &req, &req_len) < 0 || req_len > sizeof req_buf)
        die("encode");
    memcpy(req_buf, req, req_len);
    free(req);
    fd = connect_to(our_sock);
    if (send(fd, req_buf, req_len, 0) < 0 || (n = recv(fd, reply_buf, sizeof reply_buf, 0)) <= 0)
        die("first request: %s", strerror(errno));
    reply_len = (size_t)n;
    close(fd);
    printf("  request %zu bytes: %.*s\n  reply %zu bytes: %.*s\n", req_len, (int)req_len, req_buf,
           reply_len, (int)reply_len, reply_buf);

    lat = mmap(NULL, sizeof *lat, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (lat == MAP_FAILED)
        die("mmap: %s", strerror(errno));

    /* 1 client: bare ping-pong vs osstore, same raw client, same bytes.
     * One round trip on an otherwise idle 2-CPU VM is bimodal (same CPU:
     * a context switch; other CPU: a wake-up IPI), so both servers are
     * pinned to CPU 0 and the client to CPU 0 (the row with the target),
     * then to CPU 1 (for information). */
    our_tid = server_tid();
    if (our_tid)
        pin(our_tid, 0);
    lfd = listen_at(pp_sock, 0);
    floor_pid = fork_server(pingpong_server, lfd);
    close(lfd);
    pin(floor_pid, 0);
    for (cross = 0; cross < 2; cross++) {
        client_cpu = cross;
        printf("  1 client, client on CPU %d, servers on CPU 0\n", cross);
        alternate(pp_sock, our_sock, 1, 0, &f, &o, &ratio);
        r = add_row(cross ? "server, 1 client on the other CPU, `read-tree` (information)"
                          : "server, 1 client, `read-tree`",
                    fmt("one request/reply round trip of a client process sending the exact "
                        "`read-tree` request osc encodes (%zu bytes; reply %zu bytes); reference: a "
                        "bare C SOCK_SEQPACKET ping-pong server (recv, send) with the same bytes; "
                        "servers pinned to CPU 0, the client to CPU %d%s; osstore p50 %.1f us, p99 "
                        "%.1f us (ping-pong p50 %.1f us, p99 %.1f us)",
                        req_len, reply_len, cross, cross ? " (every round trip wakes the other CPU)" : "",
                        o.p50, o.p99, f.p50, f.p99));
        rate_row(r, f.rate, " (C ping-pong)", o.rate, 0.8, "req/s");
        snprintf(r->ratio, sizeof r->ratio, "%.2f", ratio);
        r->met = ratio >= 0.8 ? "yes" : "**no**";
        if (cross) {
            snprintf(r->target, sizeof r->target, "-");
            r->met = "n/a";
        }
    }
    client_cpu = -1;
    if (our_tid)
        pin(our_tid, -1);
    kill(floor_pid, SIGKILL);
    waitpid(floor_pid, NULL, 0);

    /* 8 clients: minimal C epoll server vs osstore, both with osc clients */
    lfd = listen_at(ep_sock, 1);
    floor_pid = fork_server(epoll_server, lfd);
    close(lfd);
    alternate(ep_sock, our_sock, 8, 1, &f, &o, &ratio);
    kill(floor_pid, SIGKILL);
    waitpid(floor_pid, NULL, 0);
    r = add_row("server, 8 concurrent C clients, `read-tree`",
                fmt("8 client processes, each `osc_read_tree` in a loop (the C client library); "
                    "reference: a minimal single-threaded C epoll server sending the same reply "
                    "bytes, same clients, same run (given: Python reference 48,000 req/s)"));
    rate_row(r, f.rate, " (C epoll)", o.rate, 0.8, "req/s");
    snprintf(r->ratio, sizeof r->ratio, "%.2f", ratio);
    r->met = ratio >= 0.8 ? "yes" : "**no**";
    r = add_row("server, 8 clients, p99 latency",
                fmt("p99 of every request's round trip in the row above (osstore p50 %.1f us; C "
                    "epoll floor p50 %.1f us, p99 %.1f us); reference p99: Python, given",
                    o.p50, f.p50, f.p99));
    snprintf(r->ref, sizeof r->ref, "930 us (Python, given)");
    snprintf(r->ours, sizeof r->ours, "%.0f us", o.p99);
    snprintf(r->ratio, sizeof r->ratio, "%.2f", o.p99 / 930.0);
    snprintf(r->target, sizeof r->target, "<= 0.33");
    r->met = o.p99 / 930.0 <= 1.0 / 3 ? "yes" : "**no**";
    print_row(r);

    gc_stall_row(store, path, our_sock, mnt);
    munmap(lat, sizeof *lat);
    idle_memory_row(our_sock);
    os_server_stop(srv);
    os_store_free(store);
    free(path);
    free(our_sock);
    free(pp_sock);
    free(ep_sock);
}

#include "scale.c"

/* ------------------------------------------------------------------ */
/* main                                                                */

static char *machine(void)
{
    struct utsname u;
    char line[256], cpu[300] = "?";
    FILE *f = fopen("/proc/cpuinfo", "r");
    double load[3] = {0, 0, 0};
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            snprintf(cpu, sizeof cpu, "%s", p ? p + 2 : line);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (f)
        fclose(f);
    uname(&u);
    getloadavg(load, 3);
    return fmt("%s %s, %ld x %s, %.1f GiB RAM; load average at start %.2f %.2f %.2f", u.sysname,
               u.release, sysconf(_SC_NPROCESSORS_ONLN), cpu,
               (double)meminfo_kib("MemTotal") / 1048576.0, load[0], load[1], load[2]);
}

static void write_results(const char *file, const char *mach, const char *tree, const char *fsnote,
                          long small_peak, long big_peak, double minutes)
{
    FILE *f = fopen(file, "w");
    int i;
    time_t t = time(NULL);
    char date[64];
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    if (!f)
        die("cannot write %s: %s", file, strerror(errno));
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&t));
    fprintf(f, "# osstore benchmark results\n\n");
    fprintf(f, "Written by `make bench` (bench/bench.c)%s on %s, in %.1f minutes.\n\n",
            quick ? " in BENCH_QUICK mode (small tree, single runs: not for comparison)" : "",
            date, minutes);
    fprintf(f, "- Machine: %s.\n", mach);
    fprintf(f, "- osstore %s, linked as `libosstore.so` through pkg-config.\n", os_version());
    fprintf(f, "- Tree (seed 42): %s.\n", tree);
    fprintf(f, "- Filesystems: %s\n", fsnote);
    fprintf(f, "- Method: each row alternates its reference and osstore (A B A B ...) after one "
               "discarded warm-up round; the table gives medians of %d runs (copy, commit, "
               "look-up rows) or %d runs (server rows). Copies are deleted right after they are "
               "measured. Ratios are the median of the per-round ratios (each round's reference "
               "and osstore runs are adjacent, so load drifting over a row cancels out): time "
               "rows osstore/reference (lower is better), rate rows osstore/reference (higher "
               "is better). The fidelity check is "
               "`osstore::tree::compare_trees` (bench/compare), run on the warm-up copies of "
               "every copy row. Commit and look-up rows time a fixed number of ops per run "
               "(the Python reference's numbers are the issue's, not re-run). Server rows run "
               "each client set for %.1f s per run. Load average at the end: %.2f %.2f %.2f.\n\n",
            runs(), quick ? 1 : 5, quick ? 0.3 : 0.6, load[0], load[1], load[2]);
    fprintf(f, "| Row | One op | Reference | osstore | Ratio | Target | Met |\n");
    fprintf(f, "| --- | --- | --- | --- | --- | --- | --- |\n");
    for (i = 0; i < nrows; i++)
        fprintf(f, "| %s | %s | %s | %s | %s | %s | %s |\n", rows[i].name, rows[i].op, rows[i].ref,
                rows[i].ours, rows[i].ratio, rows[i].target, rows[i].met);
    (void)small_peak;
    (void)big_peak;
    if (notes_file) {
        /* hand-written analysis of the rows (bench/notes.md), kept with the table */
        FILE *n = fopen(notes_file, "r");
        char buf[4096];
        size_t k;
        if (n) {
            fputc('\n', f);
            while ((k = fread(buf, 1, sizeof buf, n)) > 0)
                fwrite(buf, 1, k, f);
            fclose(n);
        }
    }
    fclose(f);
}

/* ------------------------------------------------------------------ */
/* The cache (docs/cache.md)                                    */

static int count_listed(const os_object_info_t *info, void *userdata)
{
    (void)info;
    (*(long *)userdata)++;
    return 0;
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Adds up what the library's eviction log messages say removing the
 * evicted objects took ("... took N us"), in microseconds. */
static void sum_removal_us(int level, const char *message, void *userdata)
{
    const char *took = strstr(message, "removing the objects took ");
    (void)level;
    if (took)
        *(double *)userdata += strtod(took + strlen("removing the objects took "), NULL);
}

static void cache_rows(const char *mnt)
{
    long ops = quick ? 20000 : 200000, nobj = quick ? 2000 : 10000, i, listed = 0;
    int n = runs(), round;
    double on_v[16], off_v[16], t, plain_v[16], evict_v[16];
    os_store_t *on, *off, *big;
    char *path = fmt("%s/cache-lookup", mnt);
    struct row *r;

    printf("cache rows\n");
    /* Look-ups with pinning and last use, and the same loop with both off
     * (a second handle opened with OSSTORE_BENCH_NO_TRACKING=1). */
    check(os_store_open_ex(path, OS_STORE_NO_SYNC, &on), "open");
    commit_lookup_ids(on);
    setenv("OSSTORE_BENCH_NO_TRACKING", "1", 1);
    check(os_store_open_ex(path, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &off), "open");
    unsetenv("OSSTORE_BENCH_NO_TRACKING");
    for (round = -1; round < n; round++) {
        double a = run_rate(op_lookup, on, ops), b = run_rate(op_lookup, off, ops);
        if (round >= 0) {
            on_v[round] = a;
            off_v[round] = b;
        }
    }
    r = add_row("`contains` + `get` with pinning and last use, fresh handle, tmpfs",
                "the look-up pair of the rows above (the get pins the object on the pin board "
                "and records its use, at most once a second per object); ref = the same loop on "
                "a handle with both off, alternating, paired per round");
    paired_rate_row(r, off_v, " (off)", on_v, n, "pairs/s", 0.5);
    os_store_free(off);
    os_store_free(on);
    free(path);

    /* A store of nobj objects: stat, list, commits with and without
     * eviction. */
    path = fmt("%s/cache-big", mnt);
    check(os_store_open_ex(path, OS_STORE_NO_SYNC, &big), "open");
    check(os_store_config_set(big, "min-free", "0"), "config");
    for (i = 0; i < nobj; i++) {
        os_object_t *obj;
        char id[32];
        snprintf(id, sizeof id, "obj-%05ld", i);
        check(os_store_new(big, id, &obj), "new");
        tiny_tree(obj);
        check(os_store_commit(big, obj, id, NULL), "commit");
        os_object_release(obj);
    }
    {
        os_store_stat_t st = {.struct_size = sizeof st};
        long rss0 = peak_rss_kib(), rss1;
        double stat_ms, list_ms;
        t = now();
        check(os_store_stat(big, &st), "stat");
        stat_ms = (now() - t) * 1e3;
        t = now();
        check(os_store_list(big, count_listed, &listed), "list");
        list_ms = (now() - t) * 1e3;
        rss1 = peak_rss_kib();
        r = add_row(fmt("`os_store_stat` / `os_store_list`, %ld objects", nobj),
                    "one call each on a store of tiny committed objects (sidecars written); "
                    "ref = peak RSS growth over both calls");
        snprintf(r->ours, sizeof r->ours, "%.1f ms / %.1f ms", stat_ms, list_ms);
        snprintf(r->ref, sizeof r->ref, "+%ld KiB peak RSS", rss1 - rss0);
        snprintf(r->target, sizeof r->target, "reported");
        print_row(r);

        /* Commits without a bound, then commits that each go over it
         * (low-water 100%: every commit evicts one tiny object). Setting
         * the bound makes the store measure itself afresh (a full scan, at
         * the first commit after it): that commit is timed on its own. The
         * removal of what the evicting commits evict (object and sidecar),
         * as the library times it and logs it at OS_LOG_INFO, is
         * subtracted. */
        double scan_v[16], removal_v[16], raw_v[16];
        long commits = quick ? 20 : 100;
        for (round = -1; round < n; round++) {
            double a, b, scan, removal_us = 0;
            long before, evicted;
            char limit[32];
            check(os_store_config_set(big, "max-size", "unlimited"), "config");
            a = run_rate(op_commit_move, big, commits);
            check(os_store_stat(big, &st), "stat");
            snprintf(limit, sizeof limit, "%llu", (unsigned long long)st.bytes);
            check(os_store_config_set(big, "max-size", limit), "config");
            check(os_store_config_set(big, "low-water", "100"), "config");
            t = now();
            op_commit_move(big);
            scan = now() - t;
            check(os_store_stat(big, &st), "stat");
            before = (long)st.objects;
            check(os_log_set(sum_removal_us, OS_LOG_INFO, &removal_us), "log");
            t = now();
            for (i = 0; i < commits; i++)
                op_commit_move(big);
            b = now() - t;
            check(os_log_set(NULL, OS_LOG_NONE, NULL), "log");
            check(os_store_stat(big, &st), "stat");
            evicted = before + commits - (long)st.objects;
            if (round >= 0) {
                plain_v[round] = a;
                evict_v[round] = commits / (b - removal_us / 1e6);
                raw_v[round] = commits / b;
                scan_v[round] = scan * 1e3;
                removal_v[round] = evicted > 0 ? removal_us / evicted : 0;
            }
        }
        r = add_row(fmt("commit that triggers eviction, %ld objects, `max-size` set", nobj),
                    "commit by move of a tiny tree that takes the total over max-size (low-water "
                    "100%: it evicts one tiny object; the time the library logs for removing "
                    "the evicted objects and sidecars is subtracted: see the next row); ref = "
                    "the same commit with no bound (as before the bound was set); paired per "
                    "round");
        paired_rate_row(r, plain_v, "", evict_v, n, "ops/s", 0.5);
        r = add_row(fmt("eviction, %ld objects: removal, full rate, first commit after the "
                        "bound is set",
                        nobj),
                    "removal per evicted object (its tree and sidecar, as the library's log "
                    "says); the row above with that removal included; the first "
                    "commit after max-size is set (it measures the store afresh: one full scan "
                    "of refs and sidecars, then evicts)");
        snprintf(r->ours, sizeof r->ours, "%.1f us removal; %.0f ops/s with it",
                 median(removal_v, n), median(raw_v, n));
        snprintf(r->ref, sizeof r->ref, "%.1f ms first commit", median(scan_v, n));
        snprintf(r->target, sizeof r->target, "reported");
        print_row(r);
    }
    os_store_free(big);
    free(path);

    /* Size measurement at commit of a generated tree, against du. */
    {
        os_store_t *m;
        os_object_t *obj;
        struct tree_stats gs;
        double du_s, commit_s;
        long files = quick ? 2000 : 20000;
        path = fmt("%s/cache-measure", mnt);
        check(os_store_open_ex(path, OS_STORE_NO_SYNC, &m), "open");
        check(os_store_new(m, "measured", &obj), "new");
        memset(&gs, 0, sizeof gs);
        gen_tree(os_object_tree(obj), files, 7, &gs);
        sh(fmt("du -s --block-size=1 '%s' > /dev/null", os_object_tree(obj))); /* warm */
        t = now();
        sh(fmt("du -s --block-size=1 '%s' > /dev/null", os_object_tree(obj)));
        du_s = now() - t;
        t = now();
        check(os_store_commit(m, obj, "measured", NULL), "commit");
        commit_s = now() - t;
        r = add_row(fmt("size measurement at commit, %ld-file tree", files),
                    "`os_store_commit` by move of the generated tree (a parallel walk measures "
                    "it, then rename, sidecar, ref) against `du -s --block-size=1` on the same "
                    "warm tree; ratio = commit / du");
        snprintf(r->ours, sizeof r->ours, "%.1f ms", commit_s * 1e3);
        snprintf(r->ref, sizeof r->ref, "%.1f ms (du)", du_s * 1e3);
        snprintf(r->ratio, sizeof r->ratio, "%.2f", commit_s / du_s);
        snprintf(r->target, sizeof r->target, "<= 0.7");
        r->met = commit_s / du_s <= 0.7 ? "yes" : "**no**";
        print_row(r);
        os_object_release(obj);
        os_store_free(m);
        free(path);
    }
}

int main(int argc, char **argv)
{
    const char *results = NULL;
    struct fs tmpfs = {"tmpfs", "tmpfs", NULL, NULL, NULL, NULL};
    struct fs ext4 = {"ext4", "journaled ext4 (loop)", NULL, NULL, NULL, NULL};
    struct fs xfs = {"xfs", "XFS reflink=1 (loop)", NULL, NULL, NULL, NULL};
    struct tree_stats st, st2;
    struct rlimit rl;
    char *mach, *tree, *fsnote, *small_dir;
    long nfiles, small_peak, big_peak;
    int i, have_xfs;
    double t0 = now();
    struct row *r;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--compare") && i + 1 < argc)
            compare_bin = argv[++i];
        else if (!strcmp(argv[i], "--results") && i + 1 < argc)
            results = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--notes") && i + 1 < argc)
            notes_file = argv[++i];
        else if (!strcmp(argv[i], "--gc-store") && i + 1 < argc)
            return gc_store(argv[i + 1]);
        else if (!strcmp(argv[i], "--peak-export") && i + 3 < argc)
            return peak_export(argv[i + 1], argv[i + 2], argv[i + 3]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--scale"))
            scale = 1;
        else if (!strcmp(argv[i], "--disk") && i + 1 < argc)
            disk_dir = argv[++i];
        else if (!strcmp(argv[i], "--gen") && i + 1 < argc) {
            /* for profiling: only generate the tree into an existing dir */
            struct tree_stats gs;
            noise = malloc(NOISE_SIZE);
            {
                struct rng r0 = {12345};
                int k;
                for (k = 0; k < NOISE_SIZE / 8; k++)
                    ((uint64_t *)noise)[k] = rnd(&r0);
            }
            /* the shape of the bench's trees of that size */
            rootfs_shape = i + 2 < argc && atol(argv[i + 2]) > 20000;
            gen_tree(argv[i + 1], i + 2 < argc ? atol(argv[i + 2]) : 20000, 42, &gs);
            printf("%s\n", describe_tree(&gs));
            return 0;
        }
        else
            die("usage: osstore-bench --compare PATH [--results FILE] [--quick] [--scale] "
                "[--disk DIR]");
    }
    if (getenv("BENCH_QUICK") && *getenv("BENCH_QUICK") && strcmp(getenv("BENCH_QUICK"), "0"))
        quick = 1;
    if (!compare_bin)
        die("--compare PATH is required");
    if (geteuid() != 0)
        die("must run as root (it mounts a tmpfs and loop filesystems), in a private mount "
            "namespace (tests/in-private-ns.sh)");
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    mach = machine();
    printf("osstore-bench%s: %s\n", quick ? " (quick)" : "", mach);

    noise = malloc(NOISE_SIZE);
    {
        struct rng r0 = {12345};
        for (i = 0; i < NOISE_SIZE / 8; i++)
            ((uint64_t *)noise)[i] = rnd(&r0);
    }

    snprintf(work, sizeof work, "/tmp/osstore-bench.XXXXXX");
    if (!mkdtemp(work))
        die("mkdtemp: %s", strerror(errno));
    sh(fmt("mount -t tmpfs -o size=20g,mode=0755 osstore-bench '%s'", work));
    tmpfs.mnt = fmt("%s/tmpfs", work);
    ext4.mnt = fmt("%s/ext4", work);
    xfs.mnt = fmt("%s/xfs", work);
    mkdir(tmpfs.mnt, 0755);
    mkdir(ext4.mnt, 0755);
    sh(fmt("truncate -s 6G '%s/ext4.img' && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "
           "'%s/ext4.img' && mount -o loop '%s/ext4.img' '%s'",
           work, work, work, ext4.mnt));
    have_xfs = spawn_wait((char *[]){"sh", "-c", "command -v mkfs.xfs", NULL}, 1) == 0;
    if (have_xfs) {
        mkdir(xfs.mnt, 0755);
        sh(fmt("truncate -s 6G '%s/xfs.img' && mkfs.xfs -q -f -m reflink=1 '%s/xfs.img' && "
               "mount -o loop '%s/xfs.img' '%s'",
               work, work, work, xfs.mnt));
    }
    fsnote = fmt("tmpfs; a fresh ext4 (mkfs.ext4 defaults: journaled, lazy init off) on a 6 GiB "
                 "loop file; %s. The loop files live in the tmpfs, so the ext4 and XFS rows "
                 "measure the filesystems' CPU cost, not a disk. Between runs, untimed: syncfs and "
                 "FITRIM (the loop file gives freed blocks back to the tmpfs).",
                 have_xfs ? "a fresh XFS (`mkfs.xfs -m reflink=1`) on a 6 GiB loop file"
                          : "XFS rows **skipped**: mkfs.xfs not found");

    fsnote = fmt("%s Trees as subvolumes: a fresh btrfs (mkfs.btrfs defaults) on a loop file in "
                 "the tmpfs.%s",
                 fsnote, scale && disk_dir ? " Cold-cache rows: a fresh ext4 on a loop file on the "
                                             "machine's disk (--disk). The rows of the 200k tree and "
                                             "the cold-cache rows: medians of 3 runs." : "");
    nfiles = quick ? 2000 : 20000;
    tree = "(not generated)";
    small_peak = big_peak = 0;
    if (section("copy")) {
    printf("generating %ld-file trees\n", nfiles);
    setup_fs(&tmpfs, nfiles, &st);
    tree = describe_tree(&st);
    printf("tree: %s\n", tree);
    setup_fs(&ext4, nfiles, &st2);
    if (have_xfs)
        setup_fs(&xfs, nfiles, &st2);

    copy_rows(&tmpfs, 1);
    copy_rows(&ext4, 1);
    if (have_xfs) {
        copy_rows(&xfs, 0);
    } else {
        r = add_row("tree copy, XFS reflink=1 (loop)", "mkfs.xfs not found (install xfsprogs)");
        r->met = "skipped";
    }

    /* peak RSS of a copy: a tree 10x smaller vs the tree */
    small_dir = fmt("%s/small", tmpfs.mnt);
    {
        os_object_t *small;
        struct tree_stats s3;
        check(os_store_new(tmpfs.store, "small", &small), "new");
        gen_tree(os_object_tree(small), nfiles / 10, 42, &s3);
        check(os_object_finalize(small), "finalize");
        char *store_path = fmt("%s/store", tmpfs.mnt);
        small_peak = copy_peak_kib(tmpfs.store, store_path, small, "peak-small", small_dir);
        big_peak = copy_peak_kib(tmpfs.store, store_path, tmpfs.base, "peak-big", small_dir);
        free(store_path);
        os_object_release(small);
    }
    r = add_row("memory: peak RSS of a tree copy",
                fmt("peak RSS growth (VmHWM after - VmRSS before) of a fresh process (the bench run again) running "
                    "`os_object_export` of a %ld-file tree (reference column) and of the "
                    "%ld-file tree; ratio = big / small",
                    nfiles / 10, nfiles));
    snprintf(r->ref, sizeof r->ref, "%ld KiB (%ld files)", small_peak, nfiles / 10);
    snprintf(r->ours, sizeof r->ours, "%ld KiB (%ld files)", big_peak, nfiles);
    snprintf(r->ratio, sizeof r->ratio, "%.2f", (double)big_peak / (double)(small_peak ? small_peak : 1));
    snprintf(r->target, sizeof r->target, "independent of size");
    r->met = big_peak <= small_peak * 1.25 + 512 ? "yes" : "**no**";
    print_row(r);
    }

    if (section("btrfs"))
        btrfs_rows();
    if (section("size"))
        store_size_rows(tmpfs.mnt);
    if (scale && section("scale")) {
        char *big_tree;
        big_tree_rows(small_peak, &big_tree);
        tree = fmt("%s; the 200k tree (--scale): %s", tree, big_tree);
    }
    if (scale && disk_dir && section("cold"))
        cold_rows();
    if (section("commit"))
        commit_rows(tmpfs.mnt, ext4.mnt);
    if (section("lookup"))
        lookup_rows(tmpfs.mnt);
    if (section("server"))
        server_rows(tmpfs.mnt);
    if (section("cache"))
        cache_rows(tmpfs.mnt);

    os_store_free(tmpfs.store);
    os_store_free(ext4.store);
    os_store_free(xfs.store);
    if (have_xfs)
        sh(fmt("umount '%s'", xfs.mnt));
    sh(fmt("umount '%s'", ext4.mnt));
    sh(fmt("umount '%s' && rmdir '%s'", work, work));

    printf("\n| Row | osstore | Reference | Ratio | Target | Met |\n");
    for (i = 0; i < nrows; i++)
        printf("| %s | %s | %s | %s | %s | %s |\n", rows[i].name, rows[i].ours, rows[i].ref,
               rows[i].ratio, rows[i].target, rows[i].met);
    if (results) {
        write_results(results, mach, tree, fsnote, small_peak, big_peak, (now() - t0) / 60);
        printf("results written to %s\n", results);
    }
    return 0;
}
