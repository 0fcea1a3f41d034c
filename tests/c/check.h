/* A minimal test harness for the C tests: CHECK counts and reports, and
 * check_done() prints the totals line "N passed, M failed". */
#ifndef OSSTORE_CHECK_H
#define OSSTORE_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int check_passed;
static int check_failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) {                                                              \
            check_passed++;                                                      \
        } else {                                                                 \
            check_failed++;                                                      \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                        \
    } while (0)

/* An int-returning call expected to give `want`; shows the error otherwise. */
#define CHECK_RC(call, want)                                                     \
    do {                                                                         \
        int rc_ = (call);                                                        \
        if (rc_ == (want)) {                                                     \
            check_passed++;                                                      \
        } else {                                                                 \
            check_failed++;                                                      \
            fprintf(stderr, "FAIL %s:%d: %s = %d, want %d (%s)\n", __FILE__,    \
                    __LINE__, #call, rc_, (want), os_last_error());              \
        }                                                                        \
    } while (0)

/* snprintf that treats truncation as a broken test set-up. */
static inline void fmt(char *out, size_t size, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(out, size, format, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "path too long: %s\n", format);
        exit(2);
    }
}

static int check_done(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, check_passed, check_failed);
    return check_failed == 0 ? 0 : 1;
}

#endif
