/* Loads the library at run time the way plugins and language bindings do:
 * dlopen by SONAME, dlsym, use, dlclose; nothing may keep running after. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

typedef struct os_store os_store_t;

static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int main(void)
{
    char dir[] = "/tmp/osstore-dlopen-XXXXXX";
    char root[PATH_MAX];
    int threads_before = thread_count();

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(root, sizeof root, "%s/store", dir);

    void *lib = dlopen("libosstore.so.0", RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != NULL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return check_done("test_dlopen");
    }
    const char *(*version)(void);
    int (*open_store)(const char *, os_store_t **);
    void (*free_store)(os_store_t *);
    int (*contains)(os_store_t *, const char *);
    /* POSIX's way of turning dlsym's object pointer into a function pointer. */
    *(void **)(&version) = dlsym(lib, "os_version");
    *(void **)(&open_store) = dlsym(lib, "os_store_open");
    *(void **)(&free_store) = dlsym(lib, "os_store_free");
    *(void **)(&contains) = dlsym(lib, "os_store_contains");
    CHECK(version && open_store && free_store && contains);
    /* Internal symbols are not visible. */
    CHECK(dlsym(lib, "rust_begin_unwind") == NULL);

    if (version && open_store && free_store && contains) {
        os_store_t *store = NULL;
        CHECK(strcmp(version(), "0.1.0") == 0);
        CHECK(open_store(root, &store) == 0);
        CHECK(contains(store, "nothing") == 0);
        CHECK(contains(store, "../x") == -EINVAL);
        free_store(store);
    }
    CHECK(dlclose(lib) == 0);
    CHECK(thread_count() == threads_before);

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return check_done("test_dlopen");
}
