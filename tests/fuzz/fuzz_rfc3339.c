/* libFuzzer target for proto/rfc3339: the parser of a client's `send_at` on hostile bytes.
 *
 * Each input is parsed as given (a copy without a NUL after it, so ASan sees any read past the end). The result
 * must be 0 or SB_EPARSE; on success the instant must lie within what the grammar can name (years 0001..9999 with
 * an offset of at most 23:59), and formatting it (when it is within 0001..9999 in UTC) must give text that parses
 * back to the same instant. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/rfc3339.h"

#include "proto/err.h"

#include <stdlib.h>
#include <string.h>

#define LOWEST (-62135596800000LL - 86400000LL)  /* 0001-01-01 less a day of offset */
#define HIGHEST (253402300800000LL + 86400000LL) /* 10000-01-01 and a day */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    int64_t ms = 0;
    int rc = sb_rfc3339_parse(sb_str(copy, size), &ms);
    CHECK(rc == 0 || rc == SB_EPARSE);
    if (rc == 0) {
        CHECK(size <= SB_RFC3339_MAX_LEN);
        CHECK(ms > LOWEST && ms < HIGHEST);
        char out[SB_RFC3339_TEXT_LEN];
        if (sb_rfc3339_format(ms, out) > 0) {
            int64_t back = 0;
            CHECK(sb_rfc3339_parse(sb_str_cstr(out), &back) == 0 && back == ms);
        }
    }
    free(copy);
    return 0;
}
