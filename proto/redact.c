/* Masking of addresses and secrets for log lines; see redact.h. */
#include "proto/redact.h"

#include <stdbool.h>
#include <string.h>

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A character of an API key, a webhook secret or a JWT segment (base64url). */
static bool is_key_char(char c)
{
    return is_digit(c) || is_alpha(c) || c == '_' || c == '-';
}

size_t sb_redact_address(sb_str_t a, char *out, size_t size)
{
    if (!size)
        return 0;
    size_t o = 0, i = 0;
    /* a scheme prefix: letters then ':' ("whatsapp:", "messenger:") */
    size_t k = 0;
    while (k < a.len && k < 16 && is_alpha(a.p[k]))
        k++;
    if (k && k < a.len && a.p[k] == ':')
        i = k + 1;
    if (i < a.len && a.p[i] == '+')
        i++;
    size_t n = a.len - i;
    size_t head = n >= 10 ? 4 : n >= 7 ? 2 : 0, tail = n >= 7 ? 2 : 0;
    for (size_t j = 0; j < a.len && o + 1 < size; j++) {
        if (j < i || j < i + head || j >= a.len - tail)
            out[o++] = a.p[j];
        else
            out[o++] = '*';
    }
    out[o] = '\0';
    return o;
}

/* Returns how many bytes of p[i..len) starting with the literal prefix are a key: the prefix and at least three key
 * characters after it, or 0. */
static size_t key_at(const char *p, size_t i, size_t len, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (len - i < pl + 3 || memcmp(p + i, prefix, pl) != 0)
        return 0;
    size_t j = i + pl;
    while (j < len && is_key_char(p[j]))
        j++;
    return j - i - pl >= 3 ? j - i : 0;
}

/* A JWT: "eyJ", at least 10 base64url characters, a '.', then whatever of base64url and dots follows. Returns its
 * length at p[i..), or 0. */
static size_t jwt_at(const char *p, size_t i, size_t len)
{
    if (len - i < 14 || memcmp(p + i, "eyJ", 3) != 0)
        return 0;
    size_t j = i + 3;
    while (j < len && is_key_char(p[j]))
        j++;
    if (j - i < 13 || j >= len || p[j] != '.')
        return 0;
    while (j < len && (is_key_char(p[j]) || p[j] == '.'))
        j++;
    return j - i;
}

/* sb_redact_line, and with bare set sb_redact_text. */
static size_t redact(char *p, size_t len, bool bare)
{
    static const char *const prefixes[] = {"sb_live_", "whsec_"};
    size_t w = 0, i = 0;
    while (i < len) {
        char c = p[i];
        bool plus = c == '+';
        if ((plus || (bare && is_digit(c))) && (i == 0 || (!is_digit(p[i - 1]) && !is_alpha(p[i - 1])))) {
            size_t s = plus ? 1 : 0, d = 0;
            while (i + s + d < len && is_digit(p[i + s + d]))
                d++;
            if (d >= 7 && (plus || i + d == len || !is_alpha(p[i + d]))) {
                char m[SB_REDACT_ADDRESS_MAX];
                size_t ml = d <= 15 ? sb_redact_address(sb_str(p + i, s + d), m, sizeof m) : 0;
                if (ml != s + d) { /* too long to be a number: every digit goes */
                    m[0] = '+';
                    memset(m + s, '*', d < sizeof m - 1 ? d : sizeof m - 1);
                    ml = s + d;
                }
                for (size_t j = 0; j < ml; j++)
                    p[w + j] = j < sizeof m ? m[j] : '*';
                w += ml;
                i += s + d;
                continue;
            }
        }
        size_t k = 0;
        const char *keep = NULL;
        for (size_t x = 0; !k && x < sizeof prefixes / sizeof prefixes[0]; x++)
            if ((k = key_at(p, i, len, prefixes[x])))
                keep = prefixes[x];
        if (!k && c == 'e' && (k = jwt_at(p, i, len)))
            keep = "eyJ";
        if (k) {
            size_t kl = strlen(keep);
            memmove(p + w, keep, kl);
            memcpy(p + w + kl, "***", 3);
            w += kl + 3;
            i += k;
            continue;
        }
        p[w++] = p[i++];
    }
    return w;
}

size_t sb_redact_line(char *p, size_t len)
{
    return redact(p, len, false);
}

size_t sb_redact_text(char *p, size_t len)
{
    return redact(p, len, true);
}
