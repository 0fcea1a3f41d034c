/*
 * bench/scale.c: the rows of issue 13, included by bench.c (it uses its
 * helpers): trees as btrfs subvolumes, store size (100,000 refs), and with
 * --scale the 200,000-file tree and the cold-cache rows.
 *
 *   btrfs:      a btrfs on a loop file in the bench's tmpfs; `init` of the
 *               20k tree (a snapshot) vs `cp -a --reflink=auto`, removal of
 *               a snapshot vs `rm -rf` of a `cp -a` copy, and (--scale)
 *               `init` of the 200k tree vs that of the 20k tree.
 *   store size: open, gc and look-ups with 10,000 and 100,000 refs.
 *   --scale:    copy and removal rows of the 200k tree on tmpfs and a
 *               journaled ext4 (loop file in the tmpfs), and the copy from
 *               a cold cache: a journaled ext4 on a loop file on the disk
 *               (--disk DIR), page cache dropped before every run; these
 *               rows take 3 runs each, not 5.
 */

static int scale;             /* --scale: the 200k and cold-cache rows */
static const char *disk_dir;  /* --disk DIR: where the on-disk loop file goes */
static long big_files = 200000;

/* Makes a fresh filesystem with `mkfs` (a shell command taking the image
 * path as $1) on a sparse loop file `image` of `gib` GiB, mounted at `mnt`. */
static void mount_image(const char *mkfs, const char *image, const char *mnt, int gib)
{
    mkdir(mnt, 0755);
    sh(fmt("truncate -s %dG '%s' && sh -c '%s \"$1\"' mkfs '%s' >/dev/null && mount -o loop '%s' '%s'",
           gib, image, mkfs, image, image, mnt));
}

static void unmount_image(const char *image, const char *mnt)
{
    sh(fmt("umount '%s' && rm -f '%s'", mnt, image));
}

/* A committed object `id` holding the generated tree of `nfiles` files. */
static os_object_t *committed_tree(os_store_t *store, const char *id, long nfiles,
                                   struct tree_stats *st)
{
    os_object_t *obj;
    check(os_store_new(store, id, &obj), "new");
    gen_tree(os_object_tree(obj), nfiles, 42, st);
    check(os_store_commit(store, obj, id, NULL), "commit");
    return obj;
}

static void drop_caches(void)
{
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    sync();
    if (fd < 0 || write(fd, "3\n", 2) != 2)
        die("drop_caches: %s", strerror(errno));
    close(fd);
}

/* Waits, untimed, until btrfs has cleaned up the deleted subvolumes (its
 * cleaner thread does that after a deletion has returned). */
static void btrfs_settle(const struct fs *fs)
{
    settle(fs);
    sh(fmt("btrfs subvolume sync '%s' >/dev/null", fs->mnt));
}

/*
 * btrfs rows. Each round: `cp -a --reflink=auto` of the committed 20k base
 * (A), `init` of a new object from it (B: a snapshot); `rm -rf` of cp's copy
 * (A), release of the object (B: deletes its subvolume); with --scale,
 * `init` of the committed 200k base (C). Untimed between runs: syncfs and
 * `btrfs subvolume sync`.
 */
static void btrfs_rows(void)
{
    struct fs fs = {"btrfs", "btrfs (loop)", NULL, NULL, NULL, NULL};
    char *image = fmt("%s/btrfs.img", work), *src, *dst;
    int n = runs(), i, have = spawn_wait((char *[]){"sh", "-c", "command -v mkfs.btrfs", NULL}, 1) == 0;
    double cp_t[16], init_t[16], rm_t[16], rel_t[16], big_t[16];
    int init_ok = 1, big_ok = 1, cp_ok = 1;
    long small = quick ? 2000 : 20000, big = quick ? 20000 : big_files;
    os_object_t *base, *big_base = NULL;
    struct tree_stats st;
    struct row *r;

    if (!have) {
        r = add_row("btrfs rows", "mkfs.btrfs not found (install btrfs-progs)");
        r->met = "skipped";
        return;
    }
    fs.mnt = fmt("%s/btrfs", work);
    mount_image("mkfs.btrfs -q -f", image, fs.mnt, scale ? 12 : 4);
    check(os_store_open_ex(fmt("%s/store", fs.mnt), OS_STORE_NO_SYNC, &fs.store), "open store");
    printf("btrfs: generating the %ld-file tree%s\n", small, scale ? " and the big one" : "");
    base = committed_tree(fs.store, "base", small, &st);
    if (scale)
        big_base = committed_tree(fs.store, "big-base", big, &st);
    fs.base_tree = os_object_tree(base);
    src = fmt("%s/.", fs.base_tree);
    dst = fmt("%s/copy", fs.mnt);
    btrfs_settle(&fs);
    printf("btrfs rows (%d runs + warm-up)\n", n);
    for (i = -1; i < n; i++) {
        char *cp_argv[] = {"cp", "-a", "--reflink=auto", src, dst, NULL};
        char *rm_argv[] = {"rm", "-rf", dst, NULL};
        os_object_t *obj;
        double t, t_cp, t_init, t_rm, t_rel, t_big = 0;

        if (mkdir(dst, 0755) < 0)
            die("mkdir %s: %s", dst, strerror(errno));
        t_cp = time_argv(cp_argv);
        if (i < 0)
            cp_ok = faithful(fs.base_tree, dst);
        btrfs_settle(&fs);
        check(os_store_new(fs.store, "copy", &obj), "new");
        t = now();
        check(os_object_init(obj, base), "os_object_init");
        t_init = now() - t;
        if (i < 0)
            init_ok = faithful(fs.base_tree, os_object_tree(obj));
        btrfs_settle(&fs);
        t_rm = time_argv(rm_argv);
        btrfs_settle(&fs);
        t = now();
        os_object_release(obj);
        t_rel = now() - t;
        btrfs_settle(&fs);
        if (big_base) {
            check(os_store_new(fs.store, "big-copy", &obj), "new");
            t = now();
            check(os_object_init(obj, big_base), "os_object_init");
            t_big = now() - t;
            if (i < 0)
                big_ok = faithful(os_object_tree(big_base), os_object_tree(obj));
            os_object_release(obj);
            btrfs_settle(&fs);
        }
        printf("  run %d: cp --reflink %.3f  init %.4f  big init %.4f  |  rm -rf %.3f  release "
               "%.4f%s\n",
               i, t_cp, t_init, t_big, t_rm, t_rel, i < 0 ? "  (warm-up, discarded)" : "");
        if (i >= 0) {
            cp_t[i] = t_cp;
            init_t[i] = t_init;
            rm_t[i] = t_rm;
            rel_t[i] = t_rel;
            big_t[i] = t_big;
        }
    }
    r = add_row(fmt("btrfs: `init` of the %ldk tree (a snapshot)", small / 1000),
                fmt("`os_object_init(new, base)` of a committed, synced base (its tree a "
                    "subvolume: the new tree becomes a snapshot of it) vs `cp -a --reflink=auto "
                    "base/. dir` on the same btrfs; fidelity (compare_trees): %s, cp's copy %s",
                    init_ok ? "faithful" : "**DIFFERS**", cp_ok ? "faithful" : "differs"));
    time_row(r, median(cp_t, n), median(init_t, n), paired_ratio(cp_t, init_t, n), 0.05);
    if (!init_ok)
        r->met = "**no** (fidelity)";
    r = add_row("btrfs: removal of a snapshot tree",
                "`os_object_release` of the object `init` made (deletes its subvolume; btrfs's "
                "cleaner finishes in the background, waited for untimed between runs) vs `rm -rf` "
                "of cp's copy");
    time_row(r, median(rm_t, n), median(rel_t, n), paired_ratio(rm_t, rel_t, n), 0.1);
    if (big_base) {
        r = add_row(fmt("btrfs: `init` of the %ldk tree (a snapshot)", big / 1000),
                    fmt("`os_object_init` of the %ld-file base vs that of the %ld-file base "
                        "above (same rounds); fidelity: %s",
                        big, small, big_ok ? "faithful" : "**DIFFERS**"));
        time_row(r, median(init_t, n), median(big_t, n), paired_ratio(init_t, big_t, n), 2);
        if (!big_ok)
            r->met = "**no** (fidelity)";
        os_object_release(big_base);
    }
    os_object_release(base);
    os_store_free(fs.store);
    unmount_image(image, fs.mnt);
    free(src);
    free(dst);
}

/* ------------------------------------------------------------------ */
/* Store size                                                          */

/* A store at `path` with `count` committed objects, among them the 100
 * ids of the look-up rows (lookup_ids). */
static void fill_store(const char *path, long count)
{
    os_store_t *store;
    long i;
    check(os_store_open_ex(path, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &store), "open");
    for (i = 0; i < count; i++) {
        os_object_t *obj;
        char id[32];
        if (i < 100)
            snprintf(lookup_ids[i], sizeof lookup_ids[i], "stage-%03ld", i);
        if (i < 100)
            snprintf(id, sizeof id, "%s", lookup_ids[i]);
        else
            snprintf(id, sizeof id, "object-%07ld", i);
        check(os_store_new(store, id, &obj), "new");
        check(os_store_commit(store, obj, id, NULL), "commit");
        os_object_release(obj);
    }
    os_store_free(store);
}

static double time_open(const char *path, unsigned flags)
{
    os_store_t *store;
    double t = now();
    check(os_store_open_ex(path, flags, &store), "open");
    t = now() - t;
    os_store_free(store);
    return t;
}

static double time_gc(const char *path)
{
    os_store_t *store;
    double t;
    check(os_store_open_ex(path, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &store), "open");
    t = now();
    check(os_store_gc(store), "gc");
    t = now() - t;
    os_store_free(store);
    return t;
}

/* A row of times per 10,000 objects: the small store's as reference. */
static void per_10k_row(const char *name, const char *op, const double *small_v,
                        const double *big_v, int n, long small, long big, const char *target,
                        const char *met)
{
    struct row *r = add_row(name, op);
    double s = median(small_v, n) * 1e3 * 10000 / (double)small;
    double b = median(big_v, n) * 1e3 * 10000 / (double)big;
    snprintf(r->ref, sizeof r->ref, "%.2f ms (%ld objects)", s, small);
    snprintf(r->ours, sizeof r->ours, "%.2f ms (%ld objects)", b, big);
    snprintf(r->ratio, sizeof r->ratio, "%.2f", b / s);
    snprintf(r->target, sizeof r->target, "%s", target);
    r->met = met;
    print_row(r);
}

/*
 * Store-size rows: stores with 100, 10,000 and 100,000 committed objects
 * on tmpfs. Each round: open (no sweep) of each, open with the default
 * sweep of each, gc of each, look-ups (100 ids) on the 100 and the 100,000
 * store, adjacent.
 */
static void store_size_rows(const char *mnt)
{
    long small = quick ? 1000 : 10000, big = quick ? 10000 : 100000, ops = quick ? 20000 : 200000;
    char *p100 = fmt("%s/size-100", mnt), *ps = fmt("%s/size-small", mnt);
    char *pb = fmt("%s/size-big", mnt);
    int n = runs(), i;
    double open_s[16], open_b[16], sweep_s[16], sweep_b[16], gc_s[16], gc_b[16];
    double look_100[16], look_b[16], fill_t = now();
    os_store_t *s100, *sbig;
    const char *met;

    printf("store-size rows: filling stores of 100, %ld and %ld objects\n", small, big);
    fill_store(p100, 100);
    fill_store(ps, small);
    fill_store(pb, big);
    fill_t = now() - fill_t;
    for (i = -1; i < n; i++) {
        double os = time_open(ps, OS_STORE_NO_SYNC | OS_STORE_NO_GC);
        double ob = time_open(pb, OS_STORE_NO_SYNC | OS_STORE_NO_GC);
        double ws = time_open(ps, OS_STORE_NO_SYNC), wb = time_open(pb, OS_STORE_NO_SYNC);
        double gs = time_gc(ps), gb = time_gc(pb), l100, lb;
        check(os_store_open_ex(p100, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &s100), "open");
        check(os_store_open_ex(pb, OS_STORE_NO_SYNC | OS_STORE_NO_GC, &sbig), "open");
        l100 = run_rate(op_lookup, s100, ops);
        lb = run_rate(op_lookup, sbig, ops);
        os_store_free(s100);
        os_store_free(sbig);
        printf("  run %d: open %.2f/%.2f ms  open+sweep %.1f/%.1f ms  gc %.1f/%.1f ms  look-ups "
               "%.0f/%.0f pairs/s%s\n",
               i, os * 1e3, ob * 1e3, ws * 1e3, wb * 1e3, gs * 1e3, gb * 1e3, l100, lb,
               i < 0 ? "  (warm-up)" : "");
        if (i < 0)
            continue;
        open_s[i] = os;
        open_b[i] = ob;
        sweep_s[i] = ws;
        sweep_b[i] = wb;
        gc_s[i] = gs;
        gc_b[i] = gb;
        look_100[i] = l100;
        look_b[i] = lb;
    }
    /* Open reads no ref: its time must not grow with the store. */
    /* (a string constant: the row keeps the pointer until the table is written) */
    met = median(open_b, n) <= 2 * median(open_s, n) + 1e-4 ? "yes" : "**no**";
    per_10k_row(fmt("store size: `os_store_open`, %ld objects", big),
                fmt("`os_store_open_ex(OS_STORE_NO_GC)` (the free after it untimed: closing the "
                    "inotify instance waits for the kernel's SRCU grace period, some ms whatever "
                    "the size), per 10,000 objects "
                    "(filling the three stores took %.0f s); whole open: %.2f ms with %ld "
                    "objects, %.2f ms with %ld (met: not more than 2x: no ref is read)",
                    fill_t, median(open_s, n) * 1e3, small, median(open_b, n) * 1e3, big),
                open_s, open_b, n, small, big, "does not grow", met);
    per_10k_row(fmt("store size: `os_store_open` with its sweep, %ld objects", big),
                "`os_store_open_ex` without `OS_STORE_NO_GC`: the open runs a collection (reads "
                "every ref, as gc); per 10,000 objects",
                sweep_s, sweep_b, n, small, big, "reported (linear)", "n/a");
    per_10k_row(fmt("store size: `os_store_gc`, %ld objects", big),
                "`os_store_gc` on a store with nothing to collect (lists tmp/ and objects/, reads "
                "every ref); per 10,000 objects",
                gc_s, gc_b, n, small, big, "reported (linear)", "n/a");
    flat_row(add_row(fmt("store size: `contains` + `get`, %ld refs", big),
                     fmt("the look-up pair of the look-up rows (one of 100 ids) on a store "
                         "holding %ld refs vs one holding 100, adjacent in each round; ratio "
                         "paired",
                         big)),
             look_100, look_b, n, "100 refs");
    rm_rf(p100);
    rm_rf(ps);
    rm_rf(pb);
    free(p100);
    free(ps);
    free(pb);
}

/* ------------------------------------------------------------------ */
/* The 200k tree, and the cold cache                                   */

/* Copy and removal rows of the big tree on tmpfs and on a journaled ext4
 * (loop file in the tmpfs), one filesystem at a time (the tree is 2-3 GiB);
 * and the peak RSS of its copy vs the 20k tree's (`small_peak`). */
static void big_tree_rows(long small_peak, char **tree_note)
{
    struct fs t = {"tmpfs", "tmpfs, 200k-file tree", NULL, NULL, NULL, NULL};
    struct fs e = {"ext4", "journaled ext4 (loop), 200k-file tree", NULL, NULL, NULL, NULL};
    char *image = fmt("%s/ext4-big.img", work);
    struct tree_stats st;
    long peak;
    struct row *r;
    long nfiles = quick ? 20000 : big_files;

    few_runs = 1;
    t.mnt = fmt("%s/tmpfs-big", work);
    mkdir(t.mnt, 0755);
    printf("generating the %ld-file tree (tmpfs)\n", nfiles);
    rootfs_shape = 1;
    setup_fs(&t, nfiles, &st);
    *tree_note = describe_tree(&st);
    printf("big tree: %s\n", *tree_note);
    copy_rows(&t, 1);
    peak = copy_peak_kib(t.store, fmt("%s/store", t.mnt), t.base, "peak", fmt("%s/peak", t.mnt));
    r = add_row("memory: peak RSS of a copy of the 200k tree",
                "peak RSS growth of a fresh process running `os_object_export` of the 200k-file tree "
                "(ours) and of the 20k-file tree (reference column, from the row above)");
    snprintf(r->ref, sizeof r->ref, "%ld KiB (20k files)", small_peak);
    snprintf(r->ours, sizeof r->ours, "%ld KiB (200k files)", peak);
    if (small_peak > 0)
        snprintf(r->ratio, sizeof r->ratio, "%.2f", (double)peak / (double)small_peak);
    else
        snprintf(r->ratio, sizeof r->ratio, "-");
    /* 512 KiB of slack: a high-water mark moves by pages, not bytes */
    snprintf(r->target, sizeof r->target, "<= 2 x + 512 KiB");
    r->met = peak <= 2 * small_peak + 512 ? "yes" : "**no**";
    print_row(r);
    os_object_release(t.base);
    os_store_free(t.store);
    rm_rf(t.mnt);

    e.mnt = fmt("%s/ext4-big", work);
    mount_image("mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0", image, e.mnt, 16);
    printf("generating the %ld-file tree (ext4)\n", nfiles);
    setup_fs(&e, nfiles, &st);
    rootfs_shape = 0;
    copy_rows(&e, 1);
    os_object_release(e.base);
    os_store_free(e.store);
    unmount_image(image, e.mnt);
    few_runs = 0;
}

/*
 * Copy from a cold cache: a journaled ext4 on a loop file in --disk (on the
 * machine's disk), holding the 20k tree. Each round: drop the page cache,
 * `cp -a base/. dir` (A), `rm -rf dir`; drop the page cache, `init` (B),
 * release. Copies land on the same ext4.
 */
static void cold_rows(void)
{
    struct fs fs = {"ext4", "journaled ext4 on disk (loop), cold cache", NULL, NULL, NULL, NULL};
    char *image = fmt("%s/ext4-cold.img", disk_dir), *src, *dst;
    long nfiles = quick ? 2000 : 20000;
    int n, i, init_ok = 1;
    double cp_t[16], init_t[16], exp_t[16];
    struct tree_stats st;
    struct row *r;

    few_runs = 1;
    n = runs();
    few_runs = 0;
    fs.mnt = fmt("%s/ext4-cold", work);
    mount_image("mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0", image, fs.mnt, 4);
    setup_fs(&fs, nfiles, &st);
    src = fmt("%s/.", fs.base_tree);
    dst = fmt("%s/copy", fs.mnt);
    printf("%s: cold copy rows (%d runs + warm-up)\n", fs.label, n);
    for (i = -1; i < n; i++) {
        char *cp_argv[] = {"cp", "-a", src, dst, NULL};
        os_object_t *obj;
        double t, t_cp, t_init, t_exp;
        if (mkdir(dst, 0755) < 0)
            die("mkdir %s: %s", dst, strerror(errno));
        drop_caches();
        t_cp = time_argv(cp_argv);
        rm_rf(dst);
        check(os_store_new(fs.store, "copy", &obj), "new");
        drop_caches();
        t = now();
        check(os_object_init(obj, fs.base), "os_object_init");
        t_init = now() - t;
        if (i < 0)
            init_ok = faithful(fs.base_tree, os_object_tree(obj));
        os_object_release(obj);
        if (mkdir(dst, 0755) < 0)
            die("mkdir %s: %s", dst, strerror(errno));
        drop_caches();
        t = now();
        check(os_object_export(fs.base, dst), "os_object_export");
        t_exp = now() - t;
        rm_rf(dst);
        printf("  run %d: cp -a %.3f  init %.3f  export %.3f%s\n", i, t_cp, t_init, t_exp,
               i < 0 ? "  (warm-up, discarded)" : "");
        if (i >= 0) {
            cp_t[i] = t_cp;
            init_t[i] = t_init;
            exp_t[i] = t_exp;
        }
    }
    r = add_row("cold cache: `init`, journaled ext4 on disk",
                fmt("`os_object_init` of the %ld-file tree vs `cp -a base/. dir`, each after "
                    "`sync; echo 3 > /proc/sys/vm/drop_caches`, on an ext4 on a loop file on the "
                    "machine's disk; fidelity: %s",
                    nfiles, init_ok ? "faithful" : "**DIFFERS**"));
    time_row(r, median(cp_t, n), median(init_t, n), paired_ratio(cp_t, init_t, n), 0.6);
    if (!init_ok)
        r->met = "**no** (fidelity)";
    r = add_row("cold cache: `export`, journaled ext4 on disk",
                "`os_object_export` of the same tree into an empty directory on the same ext4, "
                "after dropping the page cache, vs the same `cp -a` runs");
    time_row(r, median(cp_t, n), median(exp_t, n), paired_ratio(cp_t, exp_t, n), 0.6);
    os_object_release(fs.base);
    os_store_free(fs.store);
    unmount_image(image, fs.mnt);
    free(src);
    free(dst);
}
