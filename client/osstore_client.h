/*
 * osstore_client: a small, libc-only C99 client for the osstore socket
 * protocol (see docs/protocol.md).  It does not depend on libosstore;
 * compile osstore_client.c into your program.
 *
 * Conventions
 *   - Functions returning int give 0 on success or a negative errno value:
 *       -EINVAL      a bad argument (NULL, or a string that is not UTF-8 and
 *                    so cannot travel in JSON)
 *       -EPROTO      the server's reply is not a valid reply (bad JSON,
 *                    wrong member types, neither "path" nor "error",
 *                    truncated control data)
 *       -EREMOTEIO   the server answered {"error": "..."}; the text is
 *                    available from osc_last_error()
 *       -EMSGSIZE    a request the kernel would not send, or a reply larger
 *                    than OSC_MAX_REPLY (the packet is dropped whole)
 *       -ECONNRESET  the server closed the connection instead of replying
 *       -ENOTCONN    the connection is unusable after an earlier transport
 *                    failure (send or receive error, server closed)
 *       -ENOMEM, and the errno of a failed socket call (e.g. -ENOENT,
 *       -ECONNREFUSED, -ENAMETOOLONG from osc_connect).
 *   - Strings handed out through char ** belong to the caller, who frees
 *     them with free().
 *   - A client handle is used by one thread at a time.
 *   - All names are prefixed osc_ (os_ is reserved for libosstore).
 */
#ifndef OSSTORE_CLIENT_H
#define OSSTORE_CLIENT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest reply accepted, in bytes; larger packets are dropped (-EMSGSIZE). */
#define OSC_MAX_REPLY ((size_t)64 * 1024 * 1024)

/* Deepest nesting of arrays/objects accepted in a reply (top object = 1). */
#define OSC_MAX_DEPTH 128

/* Default socket of the store server inside a build root (where a build
 * sandbox bind-mounts the directory of the server's socket). */
#define OSC_DEFAULT_SOCKET "/run/osbuild/api/store"

/* Environment variable naming the socket; honoured by osc_default_socket()
 * here and by libosstore's os_server_start() when given a NULL path. */
#define OSC_SOCKET_ENV "OSSTORE_SOCKET"

typedef struct osc_client osc_client_t;

/*
 * The socket to use when none is given: $OSSTORE_SOCKET when set and not
 * empty, otherwise OSC_DEFAULT_SOCKET.  The string is not to be freed.
 */
const char *osc_default_socket(void);

/*
 * Connects to the store server listening on socket_path (AF_UNIX,
 * SOCK_SEQPACKET).  Like the reference Python client, the socket is
 * auto-bound to an abstract address before connecting.
 * On success stores a new handle in *out and returns 0; on failure sets
 * *out to NULL and returns a negative errno (no handle, so no
 * osc_last_error(): use strerror(-ret)).
 */
int osc_connect(const char *socket_path, osc_client_t **out);

/* Closes the connection and frees the handle.  NULL is accepted. */
void osc_close(osc_client_t *client);

/*
 * Describes the last failure on this handle: the server's {"error": ...}
 * text after -EREMOTEIO, otherwise a local description.  Owned by the
 * handle, valid until the next call on it.  Never NULL; "" when nothing
 * has failed yet (also for a NULL client).
 */
const char *osc_last_error(const osc_client_t *client);

/*
 * The four requests.  Each sends one request and waits for its one reply.
 * On success returns 0 and stores in *path_out the malloc'd path from the
 * reply, or NULL when the server answered {"path": null} (for read-tree and
 * read-tree-at: no such object).  On failure returns a negative errno (see
 * above) and sets *path_out to NULL.  A reply whose "error" member is a
 * string is -EREMOTEIO, even if it has a path too ("error": null counts as
 * absent, as for the reference client); a reply with neither member is
 * -EPROTO.  After a transport failure the handle only gives -ENOTCONN.
 */

/*
 * {"method": "read-tree", "object-id": object_id}
 * An osstore server answers with the object itself (<store>/objects/<name>,
 * what the ref named at the look-up) and keeps it pinned, safe from
 * eviction and garbage collection, until this connection is closed
 * (osc_close) or the server stops: keep the client open while the path is
 * used.
 */
int osc_read_tree(osc_client_t *client, const char *object_id, char **path_out);

/*
 * {"method": "read-tree-at", "object-id": ..., "target": ..., "subtree": ...}
 * Asks the server to mount the object's subtree read-only at target (an
 * existing path).  subtree NULL means "/", the whole tree.  A failed mount
 * is -EREMOTEIO with the server's message.
 */
int osc_read_tree_at(osc_client_t *client, const char *object_id,
                     const char *target, const char *subtree, char **path_out);

/*
 * {"method": "mkdtemp", "suffix": ..., "prefix": ...}
 * prefix or suffix NULL is sent as JSON null (server defaults: "tmp", "").
 */
int osc_mkdtemp(osc_client_t *client, const char *prefix, const char *suffix,
                char **path_out);

/* {"method": "source", "name": name} */
int osc_source(osc_client_t *client, const char *name, char **path_out);

/* ---- Pure building blocks, usable and testable without a socket ---- */

/* What a reply member held. */
typedef enum {
    OSC_ABSENT = 0, /* member not present */
    OSC_NULL,       /* member was JSON null */
    OSC_STRING      /* member was a string; the value pointer is set */
} osc_kind_t;

typedef struct {
    osc_kind_t path_kind;
    char *path;              /* malloc'd, NUL-terminated when OSC_STRING */
    osc_kind_t error_kind;
    char *error;             /* malloc'd, NUL-terminated when OSC_STRING */
    /* When osc_parse_reply() fails: a static description and the byte
     * offset in the input where parsing stopped. */
    const char *fail_reason;
    size_t fail_offset;
} osc_reply_t;

/*
 * Parses one reply: buf[0..len) must be exactly one JSON text (RFC 8259,
 * UTF-8, surrounding whitespace allowed) whose value is an object.
 *   - "path" must be a string or null, "error" a string or null; strings
 *     holding U+0000 are refused (C strings cannot carry them).
 *   - Every other member is validated and ignored, whatever its type.
 *   - A repeated member: the last occurrence wins, as with Python's json.
 *   - Nesting deeper than OSC_MAX_DEPTH, invalid UTF-8, unpaired surrogate
 *     escapes, NaN/Infinity, a byte order mark and trailing garbage are
 *     errors.  NUL bytes in buf are just invalid input.
 * Returns 0 and fills *out (release with osc_reply_free()); or -EPROTO
 * (fail_reason/fail_offset set, no strings held) or -ENOMEM.  *out is
 * always initialised, so osc_reply_free() is safe after any result.
 */
int osc_parse_reply(const char *buf, size_t len, osc_reply_t *out);

/* Frees the strings of a reply and resets it to all-absent.  NULL is accepted. */
void osc_reply_free(osc_reply_t *reply);

/* One request member: value NULL is encoded as JSON null. */
typedef struct {
    const char *name;
    const char *value;
} osc_member_t;

/*
 * Encodes {"method": method, name0: value0, ...} exactly as Python's
 * json.dumps() does by default: ", " and ": " separators, members in the
 * given order, '"' and '\' escaped, \b \f \n \r \t in short form, other
 * control characters, DEL and every non-ASCII character as \u00XX /
 * \uXXXX (lowercase hex, surrogate pairs above U+FFFF).
 * On success stores a malloc'd, NUL-terminated text in *out, its length in
 * *len_out (may be NULL) and returns 0.  Returns -EINVAL if any string is
 * not valid UTF-8 (no surrogates, no overlong forms), -ENOMEM, or
 * -EMSGSIZE if the result would not fit in a size_t.
 */
int osc_encode_request(const char *method, const osc_member_t *members,
                       size_t n_members, char **out, size_t *len_out);

#ifdef __cplusplus
}
#endif

#endif /* OSSTORE_CLIENT_H */
