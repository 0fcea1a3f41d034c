/*
 * libFuzzer harness for osc_parse_reply().  Besides memory safety (under
 * ASan/UBSan) it checks two properties on every input the parser accepts:
 *   - the result is consistent: a string member has a value, others none;
 *   - round trip: each string (path and error) re-encoded with
 *     osc_encode_request() and parsed back is unchanged.  This also shows
 *     the decoded text is valid UTF-8, which the encoder insists on.
 * Any violation aborts, which libFuzzer reports as a crash.
 */
#include "osstore_client.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check(int cond)
{
    if (!cond)
        abort();
}

static void check_member(osc_kind_t kind, const char *value)
{
    check(kind == OSC_ABSENT || kind == OSC_NULL || kind == OSC_STRING);
    check((kind == OSC_STRING) == (value != NULL));
}

/* text, encoded as a request member and parsed back, is unchanged. */
static void check_round_trip(const char *text)
{
    osc_member_t m = { "path", text };
    osc_reply_t again;
    char *json = NULL;
    size_t len = 0;

    /* Decoded text must be valid UTF-8, so encoding cannot fail. */
    check(osc_encode_request("x", &m, 1, &json, &len) == 0);
    check(osc_parse_reply(json, len, &again) == 0);
    check(again.path_kind == OSC_STRING && strcmp(again.path, text) == 0);
    osc_reply_free(&again);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    osc_reply_t reply;
    int r = osc_parse_reply((const char *)data, size, &reply);

    if (r != 0) {
        check(r == -EPROTO || r == -ENOMEM);
        check(reply.path == NULL && reply.error == NULL);
        check(reply.fail_reason != NULL && reply.fail_offset <= size);
        return 0;
    }
    check_member(reply.path_kind, reply.path);
    check_member(reply.error_kind, reply.error);
    if (reply.path)
        check_round_trip(reply.path);
    if (reply.error)
        check_round_trip(reply.error);
    osc_reply_free(&reply);
    return 0;
}
