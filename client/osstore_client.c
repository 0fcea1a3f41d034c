/*
 * osstore_client.c: libc-only client for the osstore socket protocol.
 * See osstore_client.h for the API and docs/protocol.md for the wire
 * contract.  The file has three parts: UTF-8 and JSON encoding of requests,
 * a strict JSON parser for replies, and the SOCK_SEQPACKET transport.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* SOCK_CLOEXEC, MSG_CMSG_CLOEXEC, MSG_NOSIGNAL */
#endif

#include "osstore_client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* UTF-8                                                               */
/* ------------------------------------------------------------------ */

/*
 * Decodes one UTF-8 sequence from s[0..avail).  Returns its length (1-4)
 * and stores the code point, or 0 if the bytes are not a valid, shortest
 * form encoding of a Unicode scalar value (surrogates are not).
 */
static size_t utf8_decode(const unsigned char *s, size_t avail, uint32_t *cp)
{
    size_t n, i;
    uint32_t c, min;

    if (avail == 0)
        return 0;
    c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        min = 0x80;
        c &= 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        min = 0x800;
        c &= 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        min = 0x10000;
        c &= 0x07;
    } else {
        return 0; /* continuation byte, overlong lead 0xc0/0xc1, or > 0xf4 */
    }
    if (avail < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

/* Writes cp (a scalar value) as UTF-8 into out; returns the length. */
static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* ------------------------------------------------------------------ */
/* Request encoder                                                     */
/* ------------------------------------------------------------------ */

/*
 * Output sink used in two passes: with buf NULL it only counts, so the
 * exact size is known before allocating.  The count saturates at
 * SIZE_MAX to detect overflow.
 */
struct sink {
    char *buf;
    size_t len;
};

static void put(struct sink *o, const char *s, size_t n)
{
    if (o->buf)
        memcpy(o->buf + o->len, s, n);
    o->len = (o->len > SIZE_MAX - n) ? SIZE_MAX : o->len + n;
}

static void put_u_escape(struct sink *o, uint32_t unit)
{
    static const char hex[] = "0123456789abcdef"; /* Python uses lowercase */
    char e[6];

    e[0] = '\\';
    e[1] = 'u';
    e[2] = hex[(unit >> 12) & 0xf];
    e[3] = hex[(unit >> 8) & 0xf];
    e[4] = hex[(unit >> 4) & 0xf];
    e[5] = hex[unit & 0xf];
    put(o, e, sizeof e);
}

/* The escape json.dumps (ensure_ascii) writes for one code point. */
static void put_code_point(struct sink *o, uint32_t cp)
{
    char c = (char)cp;

    switch (cp) {
    case '"': put(o, "\\\"", 2); return;
    case '\\': put(o, "\\\\", 2); return;
    case '\b': put(o, "\\b", 2); return;
    case '\f': put(o, "\\f", 2); return;
    case '\n': put(o, "\\n", 2); return;
    case '\r': put(o, "\\r", 2); return;
    case '\t': put(o, "\\t", 2); return;
    default: break;
    }
    if (cp >= 0x20 && cp <= 0x7e) {
        put(o, &c, 1);
    } else if (cp < 0x10000) {
        put_u_escape(o, cp);
    } else {
        cp -= 0x10000;
        put_u_escape(o, 0xd800 | (cp >> 10));
        put_u_escape(o, 0xdc00 | (cp & 0x3ff));
    }
}

/* Writes s as a JSON string literal; -EINVAL if s is not valid UTF-8. */
static int put_string(struct sink *o, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s), n;
    uint32_t cp;

    put(o, "\"", 1);
    while (left > 0) {
        n = utf8_decode(p, left, &cp);
        if (n == 0)
            return -EINVAL;
        put_code_point(o, cp);
        p += n;
        left -= n;
    }
    put(o, "\"", 1);
    return 0;
}

static int put_member(struct sink *o, const char *name, const char *value)
{
    int r = put_string(o, name);

    if (r < 0)
        return r;
    put(o, ": ", 2);
    if (!value) {
        put(o, "null", 4);
        return 0;
    }
    return put_string(o, value);
}

static int encode_into(struct sink *o, const char *method,
                       const osc_member_t *members, size_t n_members)
{
    size_t i;
    int r;

    put(o, "{", 1);
    r = put_member(o, "method", method);
    for (i = 0; r == 0 && i < n_members; i++) {
        put(o, ", ", 2);
        r = put_member(o, members[i].name, members[i].value);
    }
    put(o, "}", 1);
    return r;
}

int osc_encode_request(const char *method, const osc_member_t *members,
                       size_t n_members, char **out, size_t *len_out)
{
    struct sink count = { NULL, 0 }, write;
    size_t i;
    int r;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!method || (n_members > 0 && !members))
        return -EINVAL;
    for (i = 0; i < n_members; i++)
        if (!members[i].name)
            return -EINVAL;

    r = encode_into(&count, method, members, n_members);
    if (r < 0)
        return r;
    if (count.len >= SIZE_MAX - 1)
        return -EMSGSIZE;
    write.buf = malloc(count.len + 1);
    write.len = 0;
    if (!write.buf)
        return -ENOMEM;
    encode_into(&write, method, members, n_members);
    write.buf[write.len] = '\0';
    *out = write.buf;
    if (len_out)
        *len_out = write.len;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Reply parser                                                        */
/* ------------------------------------------------------------------ */

struct parser {
    const unsigned char *s;
    size_t len;
    size_t pos;
    const char *reason; /* first failure, static text */
};

/* Decoded string: malloc'd, NUL-terminated; has_nul if it holds U+0000. */
struct jstr {
    char *buf;
    size_t len;
    int has_nul;
};

static int fail(struct parser *p, const char *reason)
{
    if (!p->reason)
        p->reason = reason;
    return -EPROTO;
}

static int at_end(const struct parser *p)
{
    return p->pos >= p->len;
}

/* The next byte, or 0 at the end (so only compare it with non-zero bytes). */
static unsigned char peek(const struct parser *p)
{
    return at_end(p) ? 0 : p->s[p->pos];
}

/* Consumes the next byte if it is c (c != 0). */
static int accept_byte(struct parser *p, unsigned char c)
{
    if (peek(p) != c)
        return 0;
    p->pos++;
    return 1;
}

static void skip_ws(struct parser *p)
{
    while (!at_end(p) && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                          p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int expect(struct parser *p, unsigned char c, const char *reason)
{
    return accept_byte(p, c) ? 0 : fail(p, reason);
}

static int parse_value(struct parser *p, int depth);

static int parse_literal(struct parser *p, const char *word)
{
    size_t n = strlen(word);

    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "invalid literal");
    p->pos += n;
    return 0;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static size_t skip_digits(struct parser *p)
{
    size_t start = p->pos;

    while (!at_end(p) && is_digit(p->s[p->pos]))
        p->pos++;
    return p->pos - start;
}

/* Validates a number by the RFC 8259 grammar; its value is never needed. */
static int parse_number(struct parser *p)
{
    accept_byte(p, '-');
    if (!accept_byte(p, '0') && skip_digits(p) == 0)
        return fail(p, "invalid number");
    if (accept_byte(p, '.') && skip_digits(p) == 0)
        return fail(p, "invalid number fraction");
    if (accept_byte(p, 'e') || accept_byte(p, 'E')) {
        if (!accept_byte(p, '+'))
            accept_byte(p, '-');
        if (skip_digits(p) == 0)
            return fail(p, "invalid number exponent");
    }
    return 0;
}

/* Reads 4 hex digits of a \u escape. */
static int parse_hex4(struct parser *p, uint32_t *unit)
{
    uint32_t v = 0;
    int i;

    if (p->len - p->pos < 4)
        return fail(p, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        unsigned char c = p->s[p->pos++];
        uint32_t d;

        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return fail(p, "invalid hex digit in \\u escape");
        v = (v << 4) | d;
    }
    *unit = v;
    return 0;
}

/* After "\u": one escaped code point, joining a surrogate pair. */
static int parse_u_escape(struct parser *p, uint32_t *cp)
{
    uint32_t hi, lo;
    int r = parse_hex4(p, &hi);

    if (r < 0)
        return r;
    if (hi >= 0xdc00 && hi <= 0xdfff)
        return fail(p, "unpaired low surrogate");
    if (hi < 0xd800 || hi > 0xdbff) {
        *cp = hi;
        return 0;
    }
    if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
        return fail(p, "unpaired high surrogate");
    p->pos += 2;
    r = parse_hex4(p, &lo);
    if (r < 0)
        return r;
    if (lo < 0xdc00 || lo > 0xdfff)
        return fail(p, "unpaired high surrogate");
    *cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
    return 0;
}

/*
 * After a backslash: one escape sequence, as a code point.  A byte follows
 * the backslash: raw_string_span() found the closing quote after it.
 */
static int parse_escape(struct parser *p, uint32_t *cp)
{
    unsigned char c = p->s[p->pos++];

    switch (c) {
    case '"': case '\\': case '/': *cp = c; return 0;
    case 'b': *cp = '\b'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'n': *cp = '\n'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'u': return parse_u_escape(p, cp);
    default: p->pos--; return fail(p, "invalid escape");
    }
}

/*
 * Length of the raw string body starting at p->pos (after the opening
 * quote), up to the closing quote.  The decoded text is never longer, so
 * this sizes the output buffer.  Validity is checked while decoding.
 */
static int raw_string_span(const struct parser *p, size_t *span)
{
    size_t i = p->pos;

    while (i < p->len && p->s[i] != '"')
        i += (p->s[i] == '\\') ? 2 : 1;
    if (i >= p->len)
        return -1;
    *span = i - p->pos;
    return 0;
}

/* One code point of a string body (escape, ASCII or UTF-8 sequence). */
static int parse_string_char(struct parser *p, uint32_t *cp)
{
    unsigned char c = p->s[p->pos];
    size_t n;

    if (c == '\\') {
        p->pos++;
        return parse_escape(p, cp);
    }
    if (c < 0x20)
        return fail(p, "control character in string");
    n = utf8_decode(p->s + p->pos, p->len - p->pos, cp);
    if (n == 0)
        return fail(p, "invalid UTF-8 in string");
    p->pos += n;
    return 0;
}

/*
 * Parses a string at p->pos (the opening quote).  With out NULL the string
 * is only validated; otherwise out receives the decoded text (malloc'd).
 * No escape or UTF-8 sequence can swallow the closing quote (it is neither
 * a hex digit nor a continuation byte), so decoding stops exactly there.
 */
static int parse_string(struct parser *p, struct jstr *out)
{
    size_t span, end;
    uint32_t cp;
    int r = 0;

    if (!accept_byte(p, '"'))
        return fail(p, "expected string");
    if (raw_string_span(p, &span) < 0) {
        p->pos = p->len;
        return fail(p, "unterminated string");
    }
    end = p->pos + span;
    if (out) {
        out->len = 0;
        out->has_nul = 0;
        out->buf = malloc(span + 1);
        if (!out->buf)
            return -ENOMEM;
    }
    while (p->pos < end) {
        r = parse_string_char(p, &cp);
        if (r < 0)
            break;
        if (out) {
            out->has_nul |= (cp == 0);
            out->len += utf8_encode(cp, out->buf + out->len);
        }
    }
    if (r < 0) {
        if (out) {
            free(out->buf);
            out->buf = NULL;
        }
        return r;
    }
    if (out)
        out->buf[out->len] = '\0';
    p->pos++; /* closing quote */
    return 0;
}

/* What the top-level object's "path" or "error" member was, last one wins. */
struct slot {
    osc_kind_t kind;
    int wrong_type; /* the last occurrence was neither a string nor null */
    char *value;
};

/* Parses the value of a "path"/"error" member into its slot. */
static int parse_slot_value(struct parser *p, struct slot *slot, int depth)
{
    struct jstr str;
    int r;

    free(slot->value);
    slot->value = NULL;
    slot->kind = OSC_NULL;
    slot->wrong_type = 0;
    if (peek(p) == 'n')
        return parse_literal(p, "null");
    if (peek(p) != '"') {
        slot->wrong_type = 1;
        return parse_value(p, depth);
    }
    r = parse_string(p, &str);
    if (r < 0)
        return r;
    if (str.has_nul) {
        free(str.buf);
        return fail(p, "string member holds U+0000");
    }
    slot->kind = OSC_STRING;
    slot->value = str.buf;
    return 0;
}

/*
 * Parses one "name": value member.  slots is NULL inside nested objects;
 * at the top level it holds the "path" and "error" slots.
 */
static int parse_member(struct parser *p, struct slot *slots, int depth)
{
    struct jstr name = { NULL, 0, 0 };
    struct slot *target = NULL;
    int r;

    r = parse_string(p, slots ? &name : NULL);
    if (r < 0)
        return r;
    if (slots && name.len == 4 && memcmp(name.buf, "path", 4) == 0)
        target = &slots[0];
    else if (slots && name.len == 5 && memcmp(name.buf, "error", 5) == 0)
        target = &slots[1];
    free(name.buf);
    skip_ws(p);
    r = expect(p, ':', "expected ':' after member name");
    if (r < 0)
        return r;
    skip_ws(p);
    return target ? parse_slot_value(p, target, depth) : parse_value(p, depth);
}

/*
 * Parses an object; p->pos is at its '{' and depth is its nesting level
 * (the top-level object is 1).  slots: see parse_member().
 */
static int parse_object(struct parser *p, struct slot *slots, int depth)
{
    int r;

    if (depth > OSC_MAX_DEPTH)
        return fail(p, "nesting too deep");
    p->pos++;
    skip_ws(p);
    if (accept_byte(p, '}'))
        return 0;
    do {
        skip_ws(p);
        r = parse_member(p, slots, depth + 1);
        if (r < 0)
            return r;
        skip_ws(p);
        if (accept_byte(p, '}'))
            return 0;
    } while (accept_byte(p, ','));
    return fail(p, "expected ',' or '}' in object");
}

/* Parses an array; p->pos is at its '[' and depth is its nesting level. */
static int parse_array(struct parser *p, int depth)
{
    int r;

    if (depth > OSC_MAX_DEPTH)
        return fail(p, "nesting too deep");
    p->pos++;
    skip_ws(p);
    if (accept_byte(p, ']'))
        return 0;
    do {
        skip_ws(p);
        r = parse_value(p, depth + 1);
        if (r < 0)
            return r;
        skip_ws(p);
        if (accept_byte(p, ']'))
            return 0;
    } while (accept_byte(p, ','));
    return fail(p, "expected ',' or ']' in array");
}

/*
 * Validates and skips any value.  depth counts the containers around it;
 * the recursion is bounded by OSC_MAX_DEPTH.
 */
static int parse_value(struct parser *p, int depth)
{
    if (at_end(p))
        return fail(p, "unexpected end of input");
    switch (p->s[p->pos]) {
    case '{': return parse_object(p, NULL, depth);
    case '[': return parse_array(p, depth);
    case '"': return parse_string(p, NULL);
    case 't': return parse_literal(p, "true");
    case 'f': return parse_literal(p, "false");
    case 'n': return parse_literal(p, "null");
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return parse_number(p);
    default:
        return fail(p, "unexpected character");
    }
}

static void reply_init(osc_reply_t *out)
{
    out->path_kind = OSC_ABSENT;
    out->path = NULL;
    out->error_kind = OSC_ABSENT;
    out->error = NULL;
    out->fail_reason = NULL;
    out->fail_offset = 0;
}

static int check_slot(struct parser *p, const struct slot *slot, const char *reason)
{
    return slot->wrong_type ? fail(p, reason) : 0;
}

int osc_parse_reply(const char *buf, size_t len, osc_reply_t *out)
{
    struct parser p;
    struct slot slots[2] = { { OSC_ABSENT, 0, NULL }, { OSC_ABSENT, 0, NULL } };
    int r;

    if (!out)
        return -EINVAL;
    reply_init(out);
    if (!buf && len > 0)
        return -EINVAL;
    p.s = (const unsigned char *)buf;
    p.len = len;
    p.pos = 0;
    p.reason = NULL;

    skip_ws(&p);
    r = (peek(&p) == '{') ? parse_object(&p, slots, 1)
                          : fail(&p, "reply is not a JSON object");
    if (r == 0) {
        skip_ws(&p);
        if (!at_end(&p))
            r = fail(&p, "trailing data after the JSON text");
    }
    if (r == 0)
        r = check_slot(&p, &slots[0], "\"path\" is neither a string nor null");
    if (r == 0)
        r = check_slot(&p, &slots[1], "\"error\" is neither a string nor null");
    if (r < 0) {
        free(slots[0].value);
        free(slots[1].value);
        out->fail_reason = (r == -ENOMEM) ? "out of memory" : p.reason;
        out->fail_offset = p.pos;
        return r;
    }
    out->path_kind = slots[0].kind;
    out->path = slots[0].value;
    out->error_kind = slots[1].kind;
    out->error = slots[1].value;
    return 0;
}

void osc_reply_free(osc_reply_t *reply)
{
    if (!reply)
        return;
    free(reply->path);
    free(reply->error);
    reply_init(reply);
}

/* ------------------------------------------------------------------ */
/* Transport                                                           */
/* ------------------------------------------------------------------ */

/* Linux accepts at most this many descriptors in one SCM_RIGHTS packet. */
#define MAX_PASSED_FDS 253

struct osc_client {
    int fd;        /* -1 once the connection is unusable */
    char *err;     /* last failure, malloc'd; NULL if none */
    int err_oom;   /* the last failure's text could not be allocated */
};

#ifdef __GNUC__
__attribute__((format(printf, 2, 3)))
#endif
static void set_error(osc_client_t *c, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0)
        msg = malloc((size_t)n + 1);
    if (msg) {
        va_start(ap, fmt);
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    free(c->err);
    c->err = msg;
    c->err_oom = (msg == NULL);
}

/* Marks the connection unusable: request and reply are out of step. */
static void break_connection(osc_client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Auto-binds fd and connects it to path (shorter than sun_path). */
static int connect_fd(int fd, const char *path)
{
    struct sockaddr_un addr;
    int r;

    /* Bind to the empty address: the kernel picks an abstract name, as for
     * the reference client, so the server sees the same kind of peer. */
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(sa_family_t)) < 0)
        return -errno;

    memcpy(addr.sun_path, path, strlen(path) + 1);
    /* For AF_UNIX an interrupted connect() leaves the socket unconnected
     * (it only waits for room in the backlog), so retrying is correct. */
    do
        r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

const char *osc_default_socket(void)
{
    const char *env = getenv(OSC_SOCKET_ENV);

    return env && env[0] ? env : OSC_DEFAULT_SOCKET;
}

int osc_connect(const char *socket_path, osc_client_t **out)
{
    osc_client_t *c;
    int r;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!socket_path || socket_path[0] == '\0')
        return -EINVAL;
    if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -ENAMETOOLONG;
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    r = c->fd < 0 ? -errno : connect_fd(c->fd, socket_path);
    if (r < 0) {
        osc_close(c);
        return r;
    }
    *out = c;
    return 0;
}

void osc_close(osc_client_t *client)
{
    if (!client)
        return;
    break_connection(client);
    free(client->err);
    free(client);
}

const char *osc_last_error(const osc_client_t *client)
{
    if (!client)
        return "";
    if (client->err)
        return client->err;
    return client->err_oom ? "out of memory (while describing an error)" : "";
}

static int send_packet(int fd, const char *buf, size_t len)
{
    ssize_t n;

    do
        n = send(fd, buf, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    /* SOCK_SEQPACKET sends are atomic; a short count would be a kernel bug. */
    return (size_t)n == len ? 0 : -EIO;
}

/* Size of the next packet, without consuming it; 0 means the peer closed. */
static ssize_t peek_packet_size(int fd)
{
    char dummy;
    ssize_t n;

    do
        n = recv(fd, &dummy, 0, MSG_PEEK | MSG_TRUNC);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

/* Closes every descriptor passed with SCM_RIGHTS: we keep none. */
static void close_passed_fds(struct msghdr *msg)
{
    struct cmsghdr *cm;

    for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        size_t i, n;

        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < n; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
            close(fd);
        }
    }
}

/*
 * Consumes the next packet into buf[0..cap).  Returns the packet's full
 * length (MSG_TRUNC) or a negative errno; *flags gets msg_flags.
 */
static ssize_t read_packet(int fd, char *buf, size_t cap, int *flags)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(MAX_PASSED_FDS * sizeof(int))];
    } ctrl;
    struct iovec iov;
    struct msghdr msg;
    ssize_t n;

    memset(&msg, 0, sizeof msg);
    iov.iov_base = buf;
    iov.iov_len = cap;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.buf;
    msg.msg_controllen = sizeof ctrl.buf;
    do
        n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_TRUNC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    close_passed_fds(&msg);
    *flags = msg.msg_flags;
    return n;
}

/*
 * Receives one whole reply packet into a malloc'd buffer.  The size is
 * peeked first so that any packet up to OSC_MAX_REPLY arrives whole; a
 * larger one is consumed and dropped, never read in part.
 */
static int recv_reply(osc_client_t *c, const char *method, char **buf_out, size_t *len_out)
{
    ssize_t size, n;
    size_t cap;
    char *buf;
    int flags = 0;

    size = peek_packet_size(c->fd);
    if (size == 0) {
        set_error(c, "%s: the server closed the connection without replying", method);
        size = -ECONNRESET;
    } else if (size < 0) {
        set_error(c, "%s: receiving the reply failed: %s", method, strerror((int)-size));
    }
    if (size <= 0) {
        break_connection(c);
        return (int)size;
    }
    cap = (size_t)size > OSC_MAX_REPLY ? 0 : (size_t)size;
    buf = malloc(cap + 1);
    if (!buf) {
        set_error(c, "%s: out of memory for a %zu byte reply", method, cap);
        break_connection(c); /* the unread reply would answer the next request */
        return -ENOMEM;
    }
    n = read_packet(c->fd, buf, cap, &flags);
    if (n < 0) {
        set_error(c, "%s: receiving the reply failed: %s", method, strerror((int)-n));
        break_connection(c);
    } else if ((size_t)n > cap) {
        set_error(c, "%s: reply of %zd bytes is larger than the %zu byte limit", method, n,
                  OSC_MAX_REPLY);
        n = -EMSGSIZE;
    } else if (flags & MSG_CTRUNC) {
        set_error(c, "%s: the reply carried truncated control data", method);
        n = -EPROTO;
    }
    if (n < 0) {
        free(buf);
        return (int)n;
    }
    *buf_out = buf;
    *len_out = (size_t)n;
    return 0;
}

/* Turns a parsed reply into the request's result; takes reply->path. */
static int take_path(osc_client_t *c, const char *method, osc_reply_t *reply,
                     char **path_out)
{
    if (reply->error_kind == OSC_STRING) {
        if (reply->error[0] == '\0')
            set_error(c, "%s: the server reported an error without a message", method);
        else
            set_error(c, "%s", reply->error);
        return -EREMOTEIO;
    }
    if (reply->path_kind == OSC_ABSENT) {
        set_error(c, "%s: the reply has neither \"path\" nor \"error\"", method);
        return -EPROTO;
    }
    *path_out = reply->path;
    reply->path = NULL;
    return 0;
}

static int exchange(osc_client_t *c, const char *method, const osc_member_t *members,
                    size_t n_members, char **path_out)
{
    osc_reply_t reply;
    char *req = NULL, *buf = NULL;
    size_t len = 0;
    int r;

    if (c->fd < 0) {
        set_error(c, "%s: the connection is unusable after an earlier failure", method);
        return -ENOTCONN;
    }
    r = osc_encode_request(method, members, n_members, &req, &len);
    if (r < 0) {
        if (r == -EINVAL)
            set_error(c, "%s: arguments must be valid UTF-8 (JSON cannot carry other bytes)",
                      method);
        else
            set_error(c, "%s: cannot encode the request: %s", method, strerror(-r));
        return r;
    }
    r = send_packet(c->fd, req, len);
    free(req);
    if (r < 0) {
        set_error(c, "%s: sending the request failed: %s", method, strerror(-r));
        if (r != -EMSGSIZE) /* a refused oversized packet left nothing half-sent */
            break_connection(c);
        return r;
    }
    r = recv_reply(c, method, &buf, &len);
    if (r < 0)
        return r;
    r = osc_parse_reply(buf, len, &reply);
    free(buf);
    if (r == -EPROTO)
        set_error(c, "%s: malformed reply: %s at byte %zu", method, reply.fail_reason,
                  reply.fail_offset);
    else if (r < 0)
        set_error(c, "%s: cannot parse the reply: %s", method, strerror(-r));
    else
        r = take_path(c, method, &reply, path_out);
    osc_reply_free(&reply);
    return r;
}

/*
 * Common start of a request: clears *path_out, then checks the handle and
 * that the required string arguments are present (args_ok).
 */
static int begin(osc_client_t *c, char **path_out, int args_ok)
{
    if (!path_out)
        return -EINVAL;
    *path_out = NULL;
    if (!c)
        return -EINVAL;
    if (!args_ok) {
        set_error(c, "a required argument is NULL");
        return -EINVAL;
    }
    return 0;
}

int osc_read_tree(osc_client_t *client, const char *object_id, char **path_out)
{
    osc_member_t m[1];
    int r = begin(client, path_out, object_id != NULL);

    if (r < 0)
        return r;
    m[0].name = "object-id";
    m[0].value = object_id;
    return exchange(client, "read-tree", m, 1, path_out);
}

int osc_read_tree_at(osc_client_t *client, const char *object_id,
                     const char *target, const char *subtree, char **path_out)
{
    osc_member_t m[3];
    int r = begin(client, path_out, object_id && target);

    if (r < 0)
        return r;
    m[0].name = "object-id";
    m[0].value = object_id;
    m[1].name = "target";
    m[1].value = target;
    m[2].name = "subtree";
    m[2].value = subtree ? subtree : "/";
    return exchange(client, "read-tree-at", m, 3, path_out);
}

int osc_mkdtemp(osc_client_t *client, const char *prefix, const char *suffix,
                char **path_out)
{
    osc_member_t m[2];
    int r = begin(client, path_out, 1);

    if (r < 0)
        return r;
    /* The reference client sends suffix before prefix. */
    m[0].name = "suffix";
    m[0].value = suffix;
    m[1].name = "prefix";
    m[1].value = prefix;
    return exchange(client, "mkdtemp", m, 2, path_out);
}

int osc_source(osc_client_t *client, const char *name, char **path_out)
{
    osc_member_t m[1];
    int r = begin(client, path_out, name != NULL);

    if (r < 0)
        return r;
    m[0].name = "name";
    m[0].value = name;
    return exchange(client, "source", m, 1, path_out);
}
