/*
 * osstore-client: asks the osstore server for a path and prints it.
 *
 *   osstore-client [--socket PATH] read-tree ID
 *                                  read-tree-at ID TARGET [SUBTREE]
 *                                  mkdtemp [--prefix P] [--suffix S]
 *                                  source NAME
 *
 * The socket is --socket PATH, else $OSSTORE_SOCKET, else
 * /run/osbuild/api/store.
 *
 * Exit status: 0 and the path on stdout on success; 2 when the server
 * answers with a null path (unknown object) or the command line is wrong;
 * 1 on any other error, with a message on stderr.
 */
#include "osstore_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROG "osstore-client"

enum { EXIT_UNKNOWN = 2, EXIT_USAGE = 2 };

#ifndef OSC_VERSION
#error "build with -DOSC_VERSION=\"x.y.z\""
#endif

enum command { READ_TREE, READ_TREE_AT, MKDTEMP, SOURCE };

struct request {
    enum command command;
    const char *name;     /* the command word, for messages */
    const char *args[3];  /* positional arguments, NULL when absent */
    const char *prefix;   /* mkdtemp only */
    const char *suffix;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROG " [--socket PATH] COMMAND [ARGS...]\n"
            "Ask the osstore server for a path and print it.\n"
            "\n"
            "Commands:\n"
            "  read-tree ID                       the tree of object ID\n"
            "  read-tree-at ID TARGET [SUBTREE]   mount SUBTREE (default /) of object ID\n"
            "                                     read-only at the existing path TARGET\n"
            "  mkdtemp [--prefix P] [--suffix S]  create a fresh temporary directory\n"
            "  source NAME                        the directory of source NAME\n"
            "\n"
            "Options:\n"
            "  --socket PATH  the server's socket (default: $" OSC_SOCKET_ENV " if set,\n"
            "                 else " OSC_DEFAULT_SOCKET ")\n"
            "  -h, --help     show this help and exit\n"
            "  --version      show the version and exit\n"
            "\n"
            "Exit status: 0 on success, 2 if the object is unknown (null path)\n"
            "or the command line is wrong, 1 on any other error.\n");
}

/* Reports a command line error; returns -1. */
#ifdef __GNUC__
__attribute__((format(printf, 1, 2)))
#endif
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry '" PROG " --help'.\n", stderr);
    return -1;
}

/* mkdtemp's options: --prefix P and --suffix S, each at most once. */
static int parse_mkdtemp(int argc, char **argv, struct request *req)
{
    int i;

    for (i = 0; i < argc; i++) {
        const char **slot;

        if (strcmp(argv[i], "--prefix") == 0)
            slot = &req->prefix;
        else if (strcmp(argv[i], "--suffix") == 0)
            slot = &req->suffix;
        else
            return usage_error("mkdtemp: unexpected argument '%s'", argv[i]);
        if (*slot)
            return usage_error("mkdtemp: %s given twice", argv[i]);
        if (i + 1 == argc)
            return usage_error("mkdtemp: %s needs a value", argv[i]);
        *slot = argv[++i];
    }
    return 0;
}

/* Parses COMMAND [ARGS...] (argv[0] is the command word). */
static int parse_command(int argc, char **argv, struct request *req)
{
    static const struct {
        const char *name;
        enum command command;
        int min_args, max_args;
    } table[] = {
        { "read-tree", READ_TREE, 1, 1 },
        { "read-tree-at", READ_TREE_AT, 2, 3 },
        { "mkdtemp", MKDTEMP, 0, 0 },
        { "source", SOURCE, 1, 1 },
    };
    size_t t;
    int i;

    memset(req, 0, sizeof *req);
    if (argc < 1)
        return usage_error("missing command");
    for (t = 0; t < sizeof table / sizeof table[0]; t++)
        if (strcmp(argv[0], table[t].name) == 0)
            break;
    if (t == sizeof table / sizeof table[0])
        return usage_error("unknown command '%s'", argv[0]);
    req->command = table[t].command;
    req->name = table[t].name;
    if (req->command == MKDTEMP)
        return parse_mkdtemp(argc - 1, argv + 1, req);
    if (argc - 1 < table[t].min_args || argc - 1 > table[t].max_args)
        return usage_error("%s: wrong number of arguments", req->name);
    for (i = 1; i < argc; i++)
        req->args[i - 1] = argv[i];
    return 0;
}

static int perform(osc_client_t *c, const struct request *req, char **path)
{
    switch (req->command) {
    case READ_TREE:
        return osc_read_tree(c, req->args[0], path);
    case READ_TREE_AT:
        return osc_read_tree_at(c, req->args[0], req->args[1], req->args[2], path);
    case MKDTEMP:
        return osc_mkdtemp(c, req->prefix, req->suffix, path);
    case SOURCE:
        return osc_source(c, req->args[0], path);
    }
    return -EINVAL;
}

/* Connects, sends the request and reports the outcome; returns the exit status. */
static int run(const char *socket_path, const struct request *req)
{
    osc_client_t *c;
    char *path = NULL;
    int r, status = EXIT_SUCCESS;

    r = osc_connect(socket_path, &c);
    if (r < 0) {
        fprintf(stderr, PROG ": cannot connect to %s: %s\n", socket_path, strerror(-r));
        return EXIT_FAILURE;
    }
    r = perform(c, req, &path);
    if (r == -EREMOTEIO) {
        fprintf(stderr, PROG ": %s: server error: %s\n", req->name, osc_last_error(c));
        status = EXIT_FAILURE;
    } else if (r < 0) {
        fprintf(stderr, PROG ": %s\n",
                osc_last_error(c)[0] ? osc_last_error(c) : strerror(-r));
        status = EXIT_FAILURE;
    } else if (!path) {
        fprintf(stderr, PROG ": %s: the server knows no such object\n", req->name);
        status = EXIT_UNKNOWN;
    } else if (printf("%s\n", path) < 0 || fflush(stdout) != 0) {
        fprintf(stderr, PROG ": cannot write to standard output\n");
        status = EXIT_FAILURE;
    }
    free(path);
    osc_close(c);
    return status;
}

int main(int argc, char **argv)
{
    const char *socket_path = osc_default_socket();
    struct request req;
    int i = 1;

    /* Global options come before the command; its arguments are literal. */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf(PROG " " OSC_VERSION "\n");
            return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        } else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc) {
            socket_path = argv[++i];
        } else if (strcmp(argv[i], "--socket") == 0) {
            usage_error("--socket needs a value");
            return EXIT_USAGE;
        } else {
            usage_error("unknown option '%s'", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (parse_command(argc - i, argv + i, &req) < 0)
        return EXIT_USAGE;
    return run(socket_path, &req);
}
