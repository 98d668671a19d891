/* libFuzzer target for gateway/broadcasts' parser of request text: the {{var}} renderer (a broadcast's send_at is
 * read by proto/rfc3339, fuzzed by fuzz_rfc3339).
 *
 * The input's first line is skipped (it was a send_at candidate when this target read send_at too: the corpus keeps
 * its meaning), the rest is a body to render with the variables {"name": "Ada", "n": 7, "ok": true, "x.y": ""}.
 * Properties: a text without "{{" renders to itself; rendering with every name defined never reports a missing one
 * unless the text names one that is not defined, and then the name reported is NUL-terminated and made of name
 * characters. Any violation traps. */
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
