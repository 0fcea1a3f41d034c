/*
 * Unit tests of the osstore_client reply parser and request encoder.
 * Every input is parsed from a heap copy of exactly its length, so a read
 * past the end shows up under valgrind and AddressSanitizer.
 * Prints "N passed, M failed" and exits non-zero if anything failed.
 */
#include "osstore_client.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void report(int ok, int line, const char *what, const char *detail)
{
    if (ok) {
        passed++;
        return;
    }
    failed++;
    printf("FAIL (line %d) %s%s%s\n", line, what, detail ? ": " : "", detail ? detail : "");
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        fputs("out of memory\n", stderr);
        exit(2);
    }
    return p;
}

/* Parses a heap copy of exactly len bytes of buf. */
static int parse_exact(const char *buf, size_t len, osc_reply_t *reply)
{
    char *copy = xmalloc(len);
    int r;

    memcpy(copy, buf, len);
    r = osc_parse_reply(copy, len, reply);
    free(copy);
    return r;
}

static int same_value(osc_kind_t kind, const char *got, const char *want)
{
    if (kind != OSC_STRING)
        return got == NULL;
    return got != NULL && want != NULL && strcmp(got, want) == 0;
}

/*
 * Parses buf[0..len) and checks the exact outcome: the return code, and
 * on success both members' kinds and values; on failure that no string is
 * held and a reason is given.
 */
static void expect_reply_n(int line, const char *buf, size_t len, int rc,
                           osc_kind_t path_kind, const char *path,
                           osc_kind_t error_kind, const char *error)
{
    osc_reply_t reply;
    int r = parse_exact(buf, len, &reply);
    int ok;
    char detail[200];

    if (rc == 0)
        ok = r == 0 && reply.path_kind == path_kind && reply.error_kind == error_kind &&
             same_value(path_kind, reply.path, path) &&
             same_value(error_kind, reply.error, error);
    else
        ok = r == rc && reply.path_kind == OSC_ABSENT && reply.path == NULL &&
             reply.error_kind == OSC_ABSENT && reply.error == NULL &&
             reply.fail_reason != NULL && reply.fail_offset <= len;
    snprintf(detail, sizeof detail, "rc %d, path kind %d, error kind %d, reason %s", r,
             (int)reply.path_kind, (int)reply.error_kind,
             reply.fail_reason ? reply.fail_reason : "-");
    report(ok, line, len < 80 ? buf : "(long input)", ok ? NULL : detail);
    osc_reply_free(&reply);
}

#define REPLY(json, pk, p, ek, e) \
    expect_reply_n(__LINE__, json, sizeof(json) - 1, 0, pk, p, ek, e)
#define PATH(json, p) REPLY(json, OSC_STRING, p, OSC_ABSENT, NULL)
#define BAD(json) expect_reply_n(__LINE__, json, sizeof(json) - 1, -EPROTO, \
                                 OSC_ABSENT, NULL, OSC_ABSENT, NULL)

/* Expects a failure with exactly this reason. */
static void expect_reason(int line, const char *buf, size_t len, const char *reason)
{
    osc_reply_t reply;
    int r = parse_exact(buf, len, &reply);

    report(r == -EPROTO && reply.fail_reason && strcmp(reply.fail_reason, reason) == 0,
           line, reason, reply.fail_reason);
    osc_reply_free(&reply);
}

static void test_valid_shapes(void)
{
    PATH("{\"path\": \"/a/b\"}", "/a/b");
    PATH("{\"path\":\"/a\"}", "/a");
    PATH(" \t\r\n{ \n\"path\" :\t\"/x\" \r\n} \n", "/x");
    PATH("{\"path\": \"\"}", "");
    REPLY("{\"path\": null}", OSC_NULL, NULL, OSC_ABSENT, NULL);
    REPLY("{\"path\":null}", OSC_NULL, NULL, OSC_ABSENT, NULL);
    REPLY("{}", OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    REPLY(" { } ", OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    REPLY("{\"error\": \"mount failed\"}", OSC_ABSENT, NULL, OSC_STRING, "mount failed");
    REPLY("{\"error\": \"\"}", OSC_ABSENT, NULL, OSC_STRING, "");
    REPLY("{\"path\": \"/p\", \"error\": \"e\"}", OSC_STRING, "/p", OSC_STRING, "e");
    REPLY("{\"error\": null, \"path\": \"/p\"}", OSC_STRING, "/p", OSC_NULL, NULL);
    /* Raw DEL and raw UTF-8 are allowed inside strings. */
    PATH("{\"path\": \"\x7f\"}", "\x7f");
    PATH("{\"path\": \"/\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80/\xf4\x8f\xbf\xbf\"}",
         "/\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80/\xf4\x8f\xbf\xbf");
    /* Names are compared after unescaping, exactly. */
    PATH("{\"p\\u0061th\": \"/x\"}", "/x");
    PATH("{\"\\u0070\\u0061\\u0074\\u0068\": \"/x\"}", "/x");
    REPLY("{\"Path\": \"/x\", \"path \": \"/y\", \"pat\": \"/z\", \"paths\": 1}",
          OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    REPLY("{\"path\\u0000\": \"/x\"}", OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    REPLY("{\"\": \"/x\"}", OSC_ABSENT, NULL, OSC_ABSENT, NULL);
}

static void test_escapes(void)
{
    PATH("{\"path\": \"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"}", "a\"b\\c/d\b\f\n\r\t");
    PATH("{\"path\": \"\\u0041\\u007f\\u0001\\u001f\"}", "A\x7f\x01\x1f");
    PATH("{\"path\": \"\\u00e9\\u00E9\"}", "\xc3\xa9\xc3\xa9");
    PATH("{\"path\": \"\\u0080\\u07ff\\u0800\\uffff\"}",
         "\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf");
    PATH("{\"path\": \"\\u20ac\"}", "\xe2\x82\xac");
    PATH("{\"path\": \"\\ud83d\\ude00\"}", "\xf0\x9f\x98\x80");
    PATH("{\"path\": \"\\uD83D\\uDE00\"}", "\xf0\x9f\x98\x80");
    PATH("{\"path\": \"\\ud800\\udc00\\udbff\\udfff\"}", "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf");
    PATH("{\"path\": \"x\\ud83d\\ude00y\\u00e9z\"}", "x\xf0\x9f\x98\x80y\xc3\xa9z");
    REPLY("{\"error\": \"\\u00e9chec: \\\"/t\\\"\"}", OSC_ABSENT, NULL, OSC_STRING,
          "\xc3\xa9" "chec: \"/t\"");
}

static void test_unknown_members(void)
{
    PATH("{\"s\": \"str\", \"path\": \"/p\"}", "/p");
    PATH("{\"n\": 0, \"m\": -1, \"f\": 3.25, \"e\": -1.5e+10, \"E\": 2E-3, \"z\": -0, "
         "\"path\": \"/p\"}", "/p");
    PATH("{\"t\": true, \"f\": false, \"n\": null, \"path\": \"/p\"}", "/p");
    PATH("{\"a\": [], \"b\": [1, \"x\", null, true, [[]], {}], \"path\": \"/p\"}", "/p");
    PATH("{\"o\": {}, \"p\": {\"q\": {\"r\": [1, {\"s\": null}]}}, \"path\": \"/p\"}", "/p");
    PATH("{\"path\": \"/p\", \"trailing\": {\"x\": [1,2,3]}}", "/p");
    /* A "path" inside a nested object is not the reply's path. */
    PATH("{\"x\": {\"path\": \"/inner\"}, \"path\": \"/outer\"}", "/outer");
    REPLY("{\"x\": {\"path\": \"/inner\", \"error\": \"e\"}}", OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    REPLY("{\"x\": [{\"path\": 1}]}", OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    /* Unknown strings may hold U+0000 and any escape. */
    PATH("{\"u\": \"\\u0000\\ud83d\\ude00\", \"path\": \"/p\"}", "/p");
    /* Huge numbers are only validated, never converted. */
    PATH("{\"big\": 1e999999999999, \"neg\": -123456789012345678901234567890.5e-99999, "
         "\"path\": \"/p\"}", "/p");
}

static void test_duplicates(void)
{
    /* The last occurrence wins, as with Python's json module. */
    PATH("{\"path\": \"/a\", \"path\": \"/b\"}", "/b");
    REPLY("{\"path\": \"/a\", \"path\": null}", OSC_NULL, NULL, OSC_ABSENT, NULL);
    PATH("{\"path\": null, \"path\": \"/b\"}", "/b");
    PATH("{\"path\": 1, \"path\": \"/b\"}", "/b");
    PATH("{\"path\": {\"a\": 1}, \"path\": \"/b\"}", "/b");
    BAD("{\"path\": \"/a\", \"path\": 1}");
    REPLY("{\"error\": \"x\", \"error\": \"y\", \"path\": null}", OSC_NULL, NULL, OSC_STRING, "y");
    REPLY("{\"error\": \"x\", \"error\": null}", OSC_ABSENT, NULL, OSC_NULL, NULL);
    BAD("{\"error\": null, \"error\": []}");
}

static void test_not_an_object(void)
{
    expect_reply_n(__LINE__, "", 0, -EPROTO, OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    BAD("   ");
    BAD("null");
    BAD("true");
    BAD("1");
    BAD("\"path\"");
    BAD("[]");
    BAD("[{\"path\": \"/a\"}]");
    BAD("\xef\xbb\xbf{\"path\": \"/a\"}"); /* a byte order mark is not whitespace */
    BAD("\f{\"path\": \"/a\"}");
    BAD("\v{\"path\": \"/a\"}");
    BAD("\xc2\xa0{\"path\": \"/a\"}");
}

static void test_trailing_garbage(void)
{
    BAD("{\"path\": \"/a\"} x");
    BAD("{\"path\": \"/a\"}{}");
    BAD("{\"path\": \"/a\"},");
    BAD("{\"path\": \"/a\"}}");
    BAD("{\"path\": \"/a\"}\xc3\xa9");
    expect_reply_n(__LINE__, "{\"path\": \"/a\"}\0", 15, -EPROTO, OSC_ABSENT, NULL,
                   OSC_ABSENT, NULL);
    expect_reason(__LINE__, "{} 1", 4, "trailing data after the JSON text");
}

static void test_nul_bytes(void)
{
    static const char in_string[] = "{\"path\": \"/a\0b\"}";
    static const char in_ws[] = "{\0\"path\": \"/a\"}";
    static const char in_number[] = "{\"n\": 1\0, \"path\": \"/a\"}";

    expect_reply_n(__LINE__, in_string, sizeof in_string - 1, -EPROTO, OSC_ABSENT, NULL,
                   OSC_ABSENT, NULL);
    expect_reply_n(__LINE__, in_ws, sizeof in_ws - 1, -EPROTO, OSC_ABSENT, NULL,
                   OSC_ABSENT, NULL);
    expect_reply_n(__LINE__, in_number, sizeof in_number - 1, -EPROTO, OSC_ABSENT, NULL,
                   OSC_ABSENT, NULL);
    expect_reply_n(__LINE__, "\0", 1, -EPROTO, OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    /* An escaped U+0000 cannot be carried by a C string: refused for path/error. */
    expect_reason(__LINE__, "{\"path\": \"/a\\u0000b\"}", 21, "string member holds U+0000");
    expect_reason(__LINE__, "{\"error\": \"\\u0000\"}", 19, "string member holds U+0000");
}

static void test_bad_escapes(void)
{
    BAD("{\"path\": \"\\x41\"}");
    BAD("{\"path\": \"\\'\"}");
    BAD("{\"path\": \"\\U0041\"}");
    BAD("{\"path\": \"\\u12\"}");
    BAD("{\"path\": \"\\u12g4\"}");
    BAD("{\"path\": \"\\u-123\"}");
    BAD("{\"path\": \"\\u 123\"}");
    BAD("{\"path\": \"\\\"}");
    BAD("{\"path\": \"\\");
    BAD("{\"x\": \"\\a\"}");
    BAD("{\"\\q\": 1}");
    expect_reason(__LINE__, "{\"path\": \"\\x\"}", 14, "invalid escape");
}

static void test_lone_surrogates(void)
{
    BAD("{\"path\": \"\\ud83d\"}");
    BAD("{\"path\": \"\\ud83dx\"}");
    BAD("{\"path\": \"\\ud83d\\u0041\"}");
    BAD("{\"path\": \"\\ud83d\\ud83d\"}");
    BAD("{\"path\": \"\\ud83d\\n\"}");
    BAD("{\"path\": \"\\ud83d\\ude0\"}");
    BAD("{\"path\": \"\\ud83d\\ue000\"}");
    BAD("{\"path\": \"\\udbff\\uffff\"}");
    BAD("{\"path\": \"\\ude00\"}");
    BAD("{\"path\": \"\\ude00\\ud83d\"}");
    BAD("{\"path\": \"\\udfff\"}");
    BAD("{\"x\": \"\\ud800\", \"path\": \"/p\"}"); /* also in ignored members */
    BAD("{\"\\udc00\": 1}");
    expect_reason(__LINE__, "{\"x\": \"\\ud800\"}", 15, "unpaired high surrogate");
    expect_reason(__LINE__, "{\"x\": \"\\udc00\"}", 15, "unpaired low surrogate");
}

static void test_invalid_utf8(void)
{
    BAD("{\"path\": \"\xff\"}");
    BAD("{\"path\": \"\xfe\"}");
    BAD("{\"path\": \"\x80\"}");            /* lone continuation byte */
    BAD("{\"path\": \"\xc3\"}");            /* truncated sequence */
    BAD("{\"path\": \"\xe2\x82\"}");
    BAD("{\"path\": \"\xf0\x9f\x98\"}");
    BAD("{\"path\": \"\xc0\xaf\"}");        /* overlong '/' */
    BAD("{\"path\": \"\xc1\xbf\"}");
    BAD("{\"path\": \"\xe0\x80\xaf\"}");
    BAD("{\"path\": \"\xe0\x9f\xbf\"}");
    BAD("{\"path\": \"\xf0\x80\x80\xaf\"}");
    BAD("{\"path\": \"\xf0\x8f\xbf\xbf\"}");
    BAD("{\"path\": \"\xed\xa0\x80\"}");    /* encoded surrogates */
    BAD("{\"path\": \"\xed\xbf\xbf\"}");
    BAD("{\"path\": \"\xf4\x90\x80\x80\"}"); /* above U+10FFFF */
    BAD("{\"path\": \"\xf5\x80\x80\x80\"}");
    BAD("{\"path\": \"\xf8\x88\x80\x80\x80\"}");
    BAD("{\"path\": \"\xc3\xc3\xa9\"}");
    BAD("{\"x\": \"\xff\", \"path\": \"/p\"}");
    BAD("{\"\xff\": 1}");
    BAD("{\"path\"\xc2\xa0: \"/p\"}");
    expect_reason(__LINE__, "{\"x\": \"\xed\xa0\x80\"}", 12, "invalid UTF-8 in string");
}

static void test_control_characters(void)
{
    char buf[32];
    int c;

    /* U+0000 is covered by test_nul_bytes(). */
    for (c = 1; c < 0x20; c++) {
        int n = snprintf(buf, sizeof buf, "{\"path\": \"a%cb\"}", c);

        expect_reply_n(__LINE__, buf, (size_t)n, -EPROTO, OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    }
}

static void test_bad_numbers_and_literals(void)
{
    BAD("{\"n\": 01}");
    BAD("{\"n\": 00}");
    BAD("{\"n\": -01}");
    BAD("{\"n\": 1.}");
    BAD("{\"n\": .5}");
    BAD("{\"n\": -}");
    BAD("{\"n\": +1}");
    BAD("{\"n\": 1e}");
    BAD("{\"n\": 1e+}");
    BAD("{\"n\": 1.5E-}");
    BAD("{\"n\": 0x10}");
    BAD("{\"n\": 1_000}");
    BAD("{\"n\": NaN}");
    BAD("{\"n\": Infinity}");
    BAD("{\"n\": -Infinity}");
    BAD("{\"n\": tru}");
    BAD("{\"n\": True}");
    BAD("{\"n\": nul}");
    BAD("{\"n\": nulll}");
    BAD("{\"n\": falsey}");
    BAD("{\"path\": nul}");
    BAD("{\"path\": None}");
}

static void test_bad_structure(void)
{
    BAD("{\"path\" \"/a\"}");
    BAD("{\"path\": \"/a\",}");
    BAD("{,}");
    BAD("{,\"path\": \"/a\"}");
    BAD("{\"path\": }");
    BAD("{\"path\":: \"/a\"}");
    BAD("{path: \"/a\"}");
    BAD("{'path': '/a'}");
    BAD("{\"path\": \"/a\" \"error\": \"e\"}");
    BAD("{\"a\": [1,]}");
    BAD("{\"a\": [,1]}");
    BAD("{\"a\": [1 2]}");
    BAD("{\"a\": [1}");
    BAD("{\"a\": {\"b\"}}");
    BAD("{\"a\": {\"b\": 1]}");
    BAD("{\"a\": [}]}");
    BAD("{1: 2}");
    BAD("{null: 2}");
    BAD("{\"path\": \"/a}");
    BAD("{\"path\": \"/a\"");
    BAD("{\"path\": \"/a\" /* c */}");
}

static void test_wrong_types(void)
{
    static const char *const bad[] = {
        "{\"path\": 1}", "{\"path\": -0.5}", "{\"path\": true}", "{\"path\": false}",
        "{\"path\": []}", "{\"path\": [\"/a\"]}", "{\"path\": {}}",
        "{\"path\": {\"path\": \"/a\"}}", "{\"error\": 1}", "{\"error\": true}",
        "{\"error\": [\"x\"]}", "{\"error\": {}}", "{\"path\": \"/a\", \"error\": false}",
    };
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_reply_n(__LINE__, bad[i], strlen(bad[i]), -EPROTO, OSC_ABSENT, NULL,
                       OSC_ABSENT, NULL);
    expect_reason(__LINE__, "{\"path\": 7}", 11, "\"path\" is neither a string nor null");
    expect_reason(__LINE__, "{\"error\": 7}", 12, "\"error\" is neither a string nor null");
}

/* Every proper prefix of a valid reply that ends with '}' is malformed. */
static void test_truncation(void)
{
    static const struct {
        const char *json;
        osc_kind_t path_kind;
        const char *path;
        osc_kind_t error_kind;
        const char *error;
    } cases[] = {
        { "{\"path\": \"/run/osbuild/store/refs/abc\"}",
          OSC_STRING, "/run/osbuild/store/refs/abc", OSC_ABSENT, NULL },
        { "{\"path\": null}", OSC_NULL, NULL, OSC_ABSENT, NULL },
        { "{\"error\": \"mount failed: \\u00e9\\ud83d\\ude00 \\\"x\\\"\"}",
          OSC_ABSENT, NULL, OSC_STRING, "mount failed: \xc3\xa9\xf0\x9f\x98\x80 \"x\"" },
        { "{\"x\": [1, -2.5e+3, true, false, null, {\"y\": []}], \"path\": \"/\xc3\xa9\"}",
          OSC_STRING, "/\xc3\xa9", OSC_ABSENT, NULL },
    };
    size_t i, n;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = strlen(cases[i].json);

        expect_reply_n(__LINE__, cases[i].json, len, 0, cases[i].path_kind, cases[i].path,
                       cases[i].error_kind, cases[i].error);
        for (n = 0; n < len; n++)
            expect_reply_n(__LINE__, cases[i].json, n, -EPROTO, OSC_ABSENT, NULL,
                           OSC_ABSENT, NULL);
    }
}

/* Builds {"x": OPEN*depth CLOSE*depth, "path": "/p"}. */
static char *nested(size_t depth, char open, char close, size_t *len)
{
    static const char head[] = "{\"x\": ", tail[] = ", \"path\": \"/p\"}";
    size_t i, n = sizeof head - 1 + 2 * depth + sizeof tail - 1;
    char *s = xmalloc(n), *p = s;

    memcpy(p, head, sizeof head - 1);
    p += sizeof head - 1;
    for (i = 0; i < depth; i++)
        *p++ = open;
    for (i = 0; i < depth; i++)
        *p++ = close;
    memcpy(p, tail, sizeof tail - 1);
    *len = n;
    return s;
}

/* Builds depth levels of {"a": ... } around "/p" as the innermost value. */
static char *nested_objects(size_t depth, size_t *len)
{
    static const char open[] = "{\"a\": ";
    size_t i, n = depth * (sizeof open - 1) + 4 + depth;
    char *s = xmalloc(n), *p = s;

    for (i = 0; i < depth; i++, p += sizeof open - 1)
        memcpy(p, open, sizeof open - 1);
    memcpy(p, "\"/p\"", 4);
    p += 4;
    for (i = 0; i < depth; i++)
        *p++ = '}';
    *len = n;
    return s;
}

static void test_depth(void)
{
    size_t len;
    char *s;

    /* The top object is level 1: OSC_MAX_DEPTH - 1 more levels fit. */
    s = nested(OSC_MAX_DEPTH - 1, '[', ']', &len);
    expect_reply_n(__LINE__, s, len, 0, OSC_STRING, "/p", OSC_ABSENT, NULL);
    free(s);
    s = nested(OSC_MAX_DEPTH, '[', ']', &len);
    expect_reason(__LINE__, s, len, "nesting too deep");
    free(s);
    s = nested(10000, '[', ']', &len);
    expect_reason(__LINE__, s, len, "nesting too deep");
    free(s);
    s = nested(10000, '[', '}', &len);
    expect_reason(__LINE__, s, len, "nesting too deep");
    free(s);
    s = nested_objects(OSC_MAX_DEPTH, &len);
    expect_reply_n(__LINE__, s, len, 0, OSC_ABSENT, NULL, OSC_ABSENT, NULL);
    free(s);
    s = nested_objects(OSC_MAX_DEPTH + 1, &len);
    expect_reason(__LINE__, s, len, "nesting too deep");
    free(s);
    s = nested_objects(10000, &len);
    expect_reason(__LINE__, s, len, "nesting too deep");
    free(s);
    /* 10000 unclosed brackets: rejected by depth, never by stack overflow. */
    s = nested(10000, '[', '[', &len);
    expect_reason(__LINE__, s, len, "nesting too deep");
    free(s);
}

static void test_large(void)
{
    size_t n = 1000000, i;
    char *json = xmalloc(n + 32), *want = xmalloc(n + 1);
    size_t len;

    for (i = 0; i < n; i++)
        want[i] = (char)('a' + i % 26);
    want[n] = '\0';
    len = (size_t)sprintf(json, "{\"path\": \"%s\"}", want);
    expect_reply_n(__LINE__, json, len, 0, OSC_STRING, want, OSC_ABSENT, NULL);
    /* A million-digit number in an ignored member. */
    memcpy(json, "{\"n\": ", 6);
    memset(json + 6, '9', n);
    memcpy(json + 6 + n, ", \"path\": null}", 15);
    expect_reply_n(__LINE__, json, n + 21, 0, OSC_NULL, NULL, OSC_ABSENT, NULL);
    free(json);
    free(want);
}

static void test_bad_arguments(void)
{
    osc_reply_t reply;

    report(osc_parse_reply("{}", 2, NULL) == -EINVAL, __LINE__, "NULL out", NULL);
    report(osc_parse_reply(NULL, 3, &reply) == -EINVAL && reply.path == NULL, __LINE__,
           "NULL buffer with a length", NULL);
    report(osc_parse_reply(NULL, 0, &reply) == -EPROTO, __LINE__, "NULL empty buffer", NULL);
    osc_reply_free(&reply);
    osc_reply_free(NULL);
    report(1, __LINE__, "osc_reply_free(NULL)", NULL);
}

/* The request functions check their arguments before touching a socket. */
static void test_api_arguments(void)
{
    char long_path[200];
    osc_client_t *c = (osc_client_t *)&long_path; /* never dereferenced */
    char *path = (char *)"sentinel";

    memset(long_path, 'x', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = '\0';
    report(osc_connect(NULL, &c) == -EINVAL && c == NULL, __LINE__, "connect NULL path", NULL);
    report(osc_connect("", &c) == -EINVAL && c == NULL, __LINE__, "connect empty path", NULL);
    report(osc_connect(long_path, &c) == -ENAMETOOLONG && c == NULL, __LINE__,
           "connect long path", NULL);
    report(osc_connect("/nonexistent/osstore.sock", &c) == -ENOENT && c == NULL, __LINE__,
           "connect missing socket", NULL);
    report(osc_connect("/x", NULL) == -EINVAL, __LINE__, "connect NULL out", NULL);
    report(osc_read_tree(NULL, "id", &path) == -EINVAL && path == NULL, __LINE__,
           "read-tree NULL client", NULL);
    path = (char *)"sentinel";
    report(osc_read_tree_at(NULL, "id", "/t", NULL, &path) == -EINVAL && path == NULL,
           __LINE__, "read-tree-at NULL client", NULL);
    path = (char *)"sentinel";
    report(osc_mkdtemp(NULL, NULL, NULL, &path) == -EINVAL && path == NULL, __LINE__,
           "mkdtemp NULL client", NULL);
    path = (char *)"sentinel";
    report(osc_source(NULL, "n", &path) == -EINVAL && path == NULL, __LINE__,
           "source NULL client", NULL);
    report(osc_source(NULL, "n", NULL) == -EINVAL, __LINE__, "source NULL path_out", NULL);
    report(strcmp(osc_last_error(NULL), "") == 0, __LINE__, "last error of NULL", NULL);
    osc_close(NULL);
    report(1, __LINE__, "osc_close(NULL)", NULL);
}

/* ---- Encoder ---- */

static void expect_encoding(int line, const char *method, const osc_member_t *m, size_t n,
                            const char *want)
{
    char *out = NULL;
    size_t len = 0;
    int r = osc_encode_request(method, m, n, &out, &len);

    report(r == 0 && out && strcmp(out, want) == 0 && len == strlen(want), line, want, out);
    free(out);
}

static void expect_encode_error(int line, const char *value, int rc)
{
    osc_member_t m = { "object-id", value };
    char *out = (char *)"sentinel";
    int r = osc_encode_request("read-tree", &m, 1, &out, NULL);

    report(r == rc && out == NULL, line, "encoding must fail", NULL);
}

static void test_encode_methods(void)
{
    osc_member_t rt[] = { { "object-id", "abc" } };
    osc_member_t rta[] = { { "object-id", "abc" }, { "target", "/mnt/t" }, { "subtree", "/" } };
    osc_member_t mk_null[] = { { "suffix", NULL }, { "prefix", NULL } };
    osc_member_t mk[] = { { "suffix", ".d" }, { "prefix", "pre-" } };
    osc_member_t src[] = { { "name", "org.osbuild.files" } };

    expect_encoding(__LINE__, "read-tree", rt, 1,
                    "{\"method\": \"read-tree\", \"object-id\": \"abc\"}");
    expect_encoding(__LINE__, "read-tree-at", rta, 3,
                    "{\"method\": \"read-tree-at\", \"object-id\": \"abc\", "
                    "\"target\": \"/mnt/t\", \"subtree\": \"/\"}");
    expect_encoding(__LINE__, "mkdtemp", mk_null, 2,
                    "{\"method\": \"mkdtemp\", \"suffix\": null, \"prefix\": null}");
    expect_encoding(__LINE__, "mkdtemp", mk, 2,
                    "{\"method\": \"mkdtemp\", \"suffix\": \".d\", \"prefix\": \"pre-\"}");
    expect_encoding(__LINE__, "source", src, 1,
                    "{\"method\": \"source\", \"name\": \"org.osbuild.files\"}");
    expect_encoding(__LINE__, "x", NULL, 0, "{\"method\": \"x\"}");
}

static void test_encode_escapes(void)
{
    /* Expected bytes are Python's json.dumps output for the same values. */
    osc_member_t a[] = { { "object-id", "a\"\\\x01\x7f\t\n\b\f\r/\xc3\xa9\xf0\x9f\x98\x80"
                                        "\xe2\x80\xa8" } };
    osc_member_t b[] = { { "object-id", "\x1b\x1f \x7e\xef\xbf\xbf\xf4\x8f\xbf\xbf\xc2\x80" } };
    osc_member_t c[] = { { "object-id", "" } };
    osc_member_t d[] = { { "na\"me\xc3\xa9", "v" } };

    expect_encoding(__LINE__, "read-tree", a, 1,
                    "{\"method\": \"read-tree\", \"object-id\": \"a\\\"\\\\\\u0001\\u007f"
                    "\\t\\n\\b\\f\\r/\\u00e9\\ud83d\\ude00\\u2028\"}");
    expect_encoding(__LINE__, "read-tree", b, 1,
                    "{\"method\": \"read-tree\", \"object-id\": \"\\u001b\\u001f ~"
                    "\\uffff\\udbff\\udfff\\u0080\"}");
    expect_encoding(__LINE__, "read-tree", c, 1,
                    "{\"method\": \"read-tree\", \"object-id\": \"\"}");
    expect_encoding(__LINE__, "m", d, 1, "{\"method\": \"m\", \"na\\\"me\\u00e9\": \"v\"}");
}

static void test_encode_invalid(void)
{
    static const char *const bad[] = {
        "\xff", "\xfe", "\x80", "a\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xc0\xaf",
        "\xc1\xbf", "\xe0\x80\xaf", "\xf0\x8f\xbf\xbf", "\xed\xa0\x80", "\xed\xbf\xbf",
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "ok\xc3\xc3\xa9",
    };
    osc_member_t null_name = { NULL, "v" };
    osc_member_t bad_name = { "\xff", "v" };
    char *out = NULL;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_encode_error(__LINE__, bad[i], -EINVAL);
    report(osc_encode_request(NULL, NULL, 0, &out, NULL) == -EINVAL && !out, __LINE__,
           "NULL method", NULL);
    report(osc_encode_request("m", NULL, 1, &out, NULL) == -EINVAL && !out, __LINE__,
           "NULL members", NULL);
    report(osc_encode_request("m", &null_name, 1, &out, NULL) == -EINVAL && !out, __LINE__,
           "NULL member name", NULL);
    report(osc_encode_request("m", &bad_name, 1, &out, NULL) == -EINVAL && !out, __LINE__,
           "invalid member name", NULL);
    report(osc_encode_request("\xc3", NULL, 0, &out, NULL) == -EINVAL && !out, __LINE__,
           "invalid method", NULL);
    report(osc_encode_request("m", NULL, 0, NULL, NULL) == -EINVAL, __LINE__, "NULL out", NULL);
}

/* Unicode Table 3-7: the well-formed UTF-8 byte sequences, written out
 * independently of the implementation. */
static int well_formed(const unsigned char *s, size_t n)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t need, i;

    if (n == 0)
        return 0;
    if (s[0] <= 0x7f)
        need = 1;
    else if (s[0] >= 0xc2 && s[0] <= 0xdf)
        need = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        need = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        need = 4;
    else
        return 0;
    if (s[0] == 0xe0)
        lo = 0xa0;
    else if (s[0] == 0xed)
        hi = 0x9f;
    else if (s[0] == 0xf0)
        lo = 0x90;
    else if (s[0] == 0xf4)
        hi = 0x8f;
    if (n != need)
        return 0;
    for (i = 1; i < n; i++) {
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xbf))
            return 0;
    }
    return 1;
}

/* Encoder and parser both accept exactly the well-formed sequences s[0..n). */
static int utf8_agrees(const unsigned char *s, size_t n)
{
    static const char head[] = "{\"x\": \"", tail[] = "\"}";
    char value[8], json[16], *out = NULL;
    osc_member_t m = { "v", value };
    osc_reply_t reply;
    int want = well_formed(s, n), enc_ok, parse_ok;

    memcpy(value, s, n);
    value[n] = '\0';
    enc_ok = osc_encode_request("m", &m, 1, &out, NULL) == 0;
    free(out);
    memcpy(json, head, sizeof head - 1);
    memcpy(json + sizeof head - 1, s, n);
    memcpy(json + sizeof head - 1 + n, tail, sizeof tail - 1);
    parse_ok = parse_exact(json, sizeof head - 1 + n + sizeof tail - 1, &reply) == 0;
    osc_reply_free(&reply);
    return enc_ok == want && parse_ok == want;
}

static void test_utf8_exhaustive(void)
{
    unsigned char s[4];
    unsigned a, b;
    int ok = 1;

    for (a = 0x80; a <= 0xff; a++) { /* every non-ASCII lead or stray byte */
        s[0] = (unsigned char)a;
        ok &= utf8_agrees(s, 1);
    }
    report(ok, __LINE__, "UTF-8: single bytes", NULL);
    for (a = 0x80; a <= 0xff; a++)
        for (b = 0; b <= 0xff; b++) {
            s[0] = (unsigned char)a;
            s[1] = (unsigned char)b;
            ok &= utf8_agrees(s, 2);
        }
    report(ok, __LINE__, "UTF-8: all two-byte sequences", NULL);
    for (a = 0xe0; a <= 0xf4; a++)
        for (b = 0x7f; b <= 0xc0; b++) {
            static const unsigned char tails[] = { 0x7f, 0x80, 0xbf, 0xc0 };
            size_t t;

            for (t = 0; t < sizeof tails; t++) {
                s[0] = (unsigned char)a;
                s[1] = (unsigned char)b;
                s[2] = tails[t];
                s[3] = 0x80;
                ok &= utf8_agrees(s, a < 0xf0 ? 3 : 4);
            }
        }
    report(ok, __LINE__, "UTF-8: three and four byte sequence boundaries", NULL);
}

/* Encodes every scalar value in [from, to) as a request member and parses
 * the result back as a reply "path": the text must survive unchanged. */
static int round_trip_range(uint32_t from, uint32_t to)
{
    size_t cap = 4 * (size_t)(to - from) + 1, n = 0;
    char *value = xmalloc(cap), *json = NULL;
    osc_member_t m = { "path", value };
    osc_reply_t reply;
    uint32_t cp;
    size_t len;
    int ok;

    for (cp = from; cp < to; cp++) {
        unsigned char *o = (unsigned char *)value + n;

        if (cp >= 0xd800 && cp <= 0xdfff)
            continue;
        if (cp < 0x80) {
            o[0] = (unsigned char)cp;
            n += 1;
        } else if (cp < 0x800) {
            o[0] = (unsigned char)(0xc0 | (cp >> 6));
            o[1] = (unsigned char)(0x80 | (cp & 0x3f));
            n += 2;
        } else if (cp < 0x10000) {
            o[0] = (unsigned char)(0xe0 | (cp >> 12));
            o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
            o[2] = (unsigned char)(0x80 | (cp & 0x3f));
            n += 3;
        } else {
            o[0] = (unsigned char)(0xf0 | (cp >> 18));
            o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
            o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
            o[3] = (unsigned char)(0x80 | (cp & 0x3f));
            n += 4;
        }
    }
    value[n] = '\0';
    ok = osc_encode_request("m", &m, 1, &json, &len) == 0;
    /* ensure_ascii: the encoding is pure printable ASCII. */
    for (n = 0; ok && n < len; n++)
        ok = json[n] >= 0x20 && json[n] <= 0x7e;
    ok = ok && parse_exact(json, len, &reply) == 0 && reply.path_kind == OSC_STRING &&
         strcmp(reply.path, value) == 0;
    if (ok)
        osc_reply_free(&reply);
    free(json);
    free(value);
    return ok;
}

static void test_round_trip(void)
{
    report(round_trip_range(1, 0x800), __LINE__, "round trip U+0001..U+07FF", NULL);
    report(round_trip_range(0x800, 0x10000), __LINE__, "round trip U+0800..U+FFFF", NULL);
    report(round_trip_range(0x10000, 0x110000), __LINE__, "round trip U+10000..U+10FFFF", NULL);
}

int main(void)
{
    test_valid_shapes();
    test_escapes();
    test_unknown_members();
    test_duplicates();
    test_not_an_object();
    test_trailing_garbage();
    test_nul_bytes();
    test_bad_escapes();
    test_lone_surrogates();
    test_invalid_utf8();
    test_control_characters();
    test_bad_numbers_and_literals();
    test_bad_structure();
    test_wrong_types();
    test_truncation();
    test_depth();
    test_large();
    test_bad_arguments();
    test_api_arguments();
    test_encode_methods();
    test_encode_escapes();
    test_encode_invalid();
    test_utf8_exhaustive();
    test_round_trip();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
