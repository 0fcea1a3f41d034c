/* Serves a fresh store on a socket for the client tests: commits "committed"
 * (a tree with etc/hostname and usr/bin/tool) and keeps "floating" (a
 * finalized, never committed object), prints "ready", and serves until its
 * standard input closes.
 *
 *   serve_store STORE_DIR SOCKET_PATH */
#include <osstore.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int put(const char *tree, const char *dir, const char *name, const char *content)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", tree, dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", tree, dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(content, f);
    return fclose(f);
}

int main(int argc, char **argv)
{
    os_store_t *store = NULL;
    os_object_t *committed = NULL, *floating = NULL;
    os_server_t *server = NULL;
    char buf[64];

    if (argc != 3) {
        fprintf(stderr, "usage: serve_store STORE_DIR SOCKET_PATH\n");
        return 2;
    }
    if (os_store_open_ex(argv[1], OS_STORE_NO_SYNC, &store) != 0 || os_store_new(store, "committed", &committed) != 0 ||
        put(os_object_tree(committed), "etc", "hostname", "served\n") != 0 ||
        put(os_object_tree(committed), "usr/", "tool", "#!/bin/sh\n") != 0 ||
        os_store_commit(store, committed, "committed", NULL) != 0 || os_store_new(store, "floating", &floating) != 0 ||
        os_object_finalize(floating) != 0 || os_server_start(store, argv[2], &server) != 0) {
        fprintf(stderr, "serve_store: %s\n", os_last_error());
        os_store_free(store);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (read(0, buf, sizeof buf) > 0)
        ;
    os_server_stop(server);
    os_store_free(store);
    return 0;
}
