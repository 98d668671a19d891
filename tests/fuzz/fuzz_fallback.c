/* libFuzzer target for proto/fallback: the request's "fallback" / "fallback_after" (a client's JSON, through
 * jansson) and the stored form. Whatever a list the request check takes must be written by sb_fallback_format and
 * read back by sb_fallback_parse as the same list; whatever the stored-form reader takes must hold 1..5 positive ids
 * (or none) and an after_s in bounds. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "proto/fallback.h"

#include "proto/str.h"

#include <jansson.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sb_fallback_t f, g;
    if (sb_fallback_parse((const char *)data, size, &g) == 0) {
        CHECK(g.n <= SB_FALLBACK_MAX && g.after_s >= SB_FALLBACK_AFTER_MIN && g.after_s <= SB_FALLBACK_AFTER_MAX);
        for (size_t i = 0; i < g.n; i++)
            CHECK(g.channels[i] >= 1);
    }
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    const char *why = NULL;
    if (j && sb_fallback_from_request(json_object_get(j, "fallback"), json_object_get(j, "fallback_after"), 7, &f,
                                      &why) == 0) {
        CHECK(!why && f.n <= SB_FALLBACK_MAX);
        sb_buf_t b;
        sb_buf_init(&b);
        size_t n = sb_fallback_format(&f, 0, &b);
        CHECK(n == f.n);
        if (n) {
            CHECK(sb_fallback_parse(b.p, b.len, &g) == 0);
            CHECK(g.n == f.n && g.after_s == f.after_s);
            CHECK(memcmp(g.channels, f.channels, f.n * sizeof f.channels[0]) == 0);
            for (size_t i = 0; i < f.n; i++)
                CHECK(f.channels[i] != 7);
        }
        sb_buf_cleanup(&b);
    } else if (j) {
        CHECK(why != NULL);
    }
    json_decref(j);
    return 0;
}
