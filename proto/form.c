/* Form-urlencoded parsing; see form.h.
 *
 * Two passes over the body: the first counts the non-empty segments, so that an oversized form is refused before
 * anything is allocated and the one allocation can be sized exactly (decoding never lengthens a string, so the text
 * needs at most body.len bytes plus a NUL after each name and value); the second decodes each segment into that
 * allocation. The pair table sits at the start of the allocation, so freeing f->pairs frees the whole form. */
#include "proto/form.h"

#include "proto/codec.h"
#include "proto/err.h"
#include "proto/line.h"
#include "proto/mem.h"

#include <string.h>

void sb_form_init(sb_form_t *f)
{
    f->pairs = NULL;
    f->n = 0;
}

void sb_form_cleanup(sb_form_t *f)
{
    sb_free(f->pairs);
    f->n = 0;
}

/* Decodes the n raw bytes at s into out ('+' -> ' ', %XX -> byte), appends a NUL, and returns the decoded length
 * (without the NUL) or SB_EPARSE on a bad escape. out has room for n + 1 bytes. */
static long decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi, lo;
            if (n - i < 3 || (hi = sb_codec_hex_digit((unsigned char)s[i + 1])) < 0 ||
                (lo = sb_codec_hex_digit((unsigned char)s[i + 2])) < 0)
                return SB_EPARSE;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}

int sb_form_parse(sb_form_t *f, sb_str_t body)
{
    size_t count = 0;
    int rc;

    sb_form_init(f);

    for (size_t i = 0; i < body.len;) {
        const char *amp = memchr(body.p + i, '&', body.len - i);
        size_t seg = amp ? (size_t)(amp - body.p) - i : body.len - i;
        if (seg && ++count > SB_FORM_MAX_PAIRS)
            return SB_E2BIG;
        i += seg + 1;
    }
    if (count == 0)
        return 0;

    size_t table = count * sizeof(sb_form_pair_t);
    char *mem = sb_malloc(table + body.len + 2 * count);
    sb_form_pair_t *pairs = (sb_form_pair_t *)(void *)mem;
    char *text = mem + table;
    size_t n = 0;

    for (size_t i = 0; i < body.len;) {
        const char *seg_p = body.p + i;
        const char *amp = memchr(seg_p, '&', body.len - i);
        size_t seg = amp ? (size_t)(amp - seg_p) : body.len - i;
        i += seg + 1;
        if (seg == 0)
            continue;

        const char *eq = memchr(seg_p, '=', seg);
        size_t name_raw = eq ? (size_t)(eq - seg_p) : seg;
        const char *val_p = eq ? eq + 1 : seg_p + seg;
        size_t val_raw = eq ? seg - name_raw - 1 : 0;

        long len = decode(seg_p, name_raw, text);
        if (len < 0) {
            rc = (int)len;
            goto fail;
        }
        if ((size_t)len > SB_FORM_MAX_NAME) {
            rc = SB_E2BIG;
            goto fail;
        }
        if (!sb_utf8_valid(text, (size_t)len)) {
            rc = SB_EPARSE;
            goto fail;
        }
        pairs[n].name = sb_str(text, (size_t)len);
        text += len + 1;

        len = decode(val_p, val_raw, text);
        if (len < 0) {
            rc = (int)len;
            goto fail;
        }
        if (!sb_utf8_valid(text, (size_t)len)) {
            rc = SB_EPARSE;
            goto fail;
        }
        pairs[n].value = sb_str(text, (size_t)len);
        text += len + 1;
        n++;
    }
    SB_BUG_ON(n != count);

    f->pairs = pairs;
    f->n = n;
    return 0;

fail:
    free(mem);
    return rc;
}

const sb_form_pair_t *sb_form_find(const sb_form_t *f, sb_str_t name)
{
    for (size_t i = 0; i < f->n; i++)
        if (sb_str_eq(f->pairs[i].name, name))
            return &f->pairs[i];
    return NULL;
}

const sb_form_pair_t *sb_form_find_cstr(const sb_form_t *f, const char *name)
{
    return sb_form_find(f, sb_str_cstr(name));
}
