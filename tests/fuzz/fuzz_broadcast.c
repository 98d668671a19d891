/* libFuzzer target for gateway/broadcasts' two parsers of request text: the {{var}} renderer and send_at.
 *
 * The input's first line is a send_at candidate, the rest a body to render with the variables {"name": "Ada",
 * "n": 7, "ok": true, "x.y": ""}. Properties: a text without "{{" renders to itself; rendering with every name
 * defined never reports a missing one unless the text names one that is not defined, and then the name reported is
 * NUL-terminated and made of name characters; a send_at that parses gives the same instant again, never more than a
 * day (an offset) before 1970. Any violation traps. */
#include "tests/fuzz/fuzz.h"
#include "gateway/broadcasts.h"

#include "proto/str.h"

#include <jansson.h>
#include <stdint.h>
#include <string.h>

static bool name_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '.' || *s == '-'))
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *nl = memchr(p, '\n', size);
    size_t first = nl ? (size_t)(nl - p) : size;
    int64_t ms = 0;
    if (sb_broadcast_send_at(sb_str(p, first), &ms)) { /* deterministic, and never before 1970 */
        int64_t again = -1;
        CHECK(sb_broadcast_send_at(sb_str(p, first), &again) && again == ms);
        CHECK(ms >= -(int64_t)24 * 3600 * 1000); /* (an offset may move 1970-01-01 back by up to a day) */
    }
    sb_str_t text = nl ? sb_str(nl + 1, size - first - 1) : sb_str(NULL, 0);
    json_t *vars = json_pack("{s:s,s:i,s:b,s:s}", "name", "Ada", "n", 7, "ok", 1, "x.y", "");
    sb_buf_t out;
    sb_buf_init(&out);
    char missing[16];
    bool ok = sb_broadcast_render(&out, text, vars, missing, sizeof missing);
    if (!memmem(text.p ? text.p : "", text.len, "{{", 2)) {
        CHECK(ok && out.len == text.len && (!text.len || memcmp(out.p, text.p, text.len) == 0));
    }
    if (!ok) {
        CHECK(strlen(missing) < sizeof missing && missing[0] && name_ok(missing));
        CHECK(!json_object_get(vars, missing) || strlen(missing) == sizeof missing - 1);
    }
    sb_buf_cleanup(&out);
    json_decref(vars);
    return 0;
}
