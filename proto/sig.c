/* Twilio and Meta webhook signatures; see sig.h.
 *
 * The Twilio MAC is computed incrementally (URL, then each sorted name and value) so that neither the request nor
 * its parameters are copied; only an index of the parameters is allocated for sorting. The default-port variant of
 * the URL is built from a small parse of its authority: "scheme://[userinfo@]host[:port]" up to the first "/", "?"
 * or "#", with bracketed IPv6 hosts. */
#include "proto/sig.h"

#include "proto/codec.h"
#include "proto/digest.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <mbedtls/platform_util.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Byte-wise comparison of counted strings; a proper prefix sorts first. */
static int str_cmp(sb_str_t a, sb_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.p, b.p, n) : 0;
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int param_cmp(const void *x, const void *y)
{
    const sb_sig_param_t *a = *(const sb_sig_param_t *const *)x, *b = *(const sb_sig_param_t *const *)y;
    int c = str_cmp(a->name, b->name);
    return c ? c : str_cmp(a->value, b->value);
}

/* Returns a newly allocated array of pointers to the n params in signing order; the caller frees it. NULL if n == 0. */
static const sb_sig_param_t **twilio_sorted(const sb_sig_param_t *params, size_t n)
{
    if (n == 0)
        return NULL;
    const sb_sig_param_t **idx = sb_malloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        idx[i] = &params[i];
    /* qsort is not stable, but elements that compare equal are byte-identical, so their order cannot matter */
    qsort(idx, n, sizeof *idx, param_cmp);
    return idx;
}

static void twilio_mac(sb_str_t token, sb_str_t url, const sb_sig_param_t **sorted, size_t n,
                       char out[SB_SIG_TWILIO_LEN])
{
    unsigned char mac[SB_DIGEST_SHA1_LEN];
    sb_digest_hmac_t h;

    sb_digest_hmac_init(&h, SB_DIGEST_SHA1, token);
    sb_digest_hmac_update(&h, url);
    for (size_t i = 0; i < n; i++) {
        sb_digest_hmac_update(&h, sorted[i]->name);
        sb_digest_hmac_update(&h, sorted[i]->value);
    }
    sb_digest_hmac_finish(&h, mac);
    sb_codec_b64_encode(out, mac, sizeof mac, SB_B64_STD);
    mbedtls_platform_zeroize(mac, sizeof mac);
}

void sb_sig_twilio_compute(sb_str_t token, sb_str_t url, const sb_sig_param_t *params, size_t n,
                           char out[SB_SIG_TWILIO_LEN])
{
    const sb_sig_param_t **sorted = twilio_sorted(params, n);
    twilio_mac(token, url, sorted, n, out);
    free(sorted);
}

static bool has_prefix_nocase(sb_str_t s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s.len >= n && strncasecmp(s.p, prefix, n) == 0;
}

/* Builds in alt the url with the scheme's default port added (when it has no port) or removed (when it has exactly
 * the default port). Returns false, leaving alt untouched, when there is no such variant: another scheme, a
 * non-default port, or an authority this parse does not understand. */
static bool twilio_url_alt(sb_str_t url, sb_buf_t *alt)
{
    const char *port;
    size_t start;

    if (has_prefix_nocase(url, "https://")) {
        port = "443";
        start = 8;
    } else if (has_prefix_nocase(url, "http://")) {
        port = "80";
        start = 7;
    } else {
        return false;
    }

    size_t end = start; /* end of the authority */
    while (end < url.len && url.p[end] != '/' && url.p[end] != '?' && url.p[end] != '#')
        end++;
    size_t host = start; /* after the last "@" of any userinfo */
    for (size_t i = start; i < end; i++) {
        if (url.p[i] == '@')
            host = i + 1;
    }
    if (host == end)
        return false;

    size_t colon = end; /* the ":" before the port, or end */
    if (url.p[host] == '[') {
        const char *rb = memchr(url.p + host, ']', end - host);
        if (!rb)
            return false;
        size_t after = (size_t)(rb - url.p) + 1;
        if (after < end) {
            if (url.p[after] != ':')
                return false;
            colon = after;
        }
    } else {
        const char *c = memchr(url.p + host, ':', end - host);
        if (c)
            colon = (size_t)(c - url.p);
    }

    if (colon == end) { /* no port: add the default */
        sb_buf_append(alt, url.p, end);
        sb_buf_puts(alt, ":");
        sb_buf_puts(alt, port);
        sb_buf_append(alt, url.p + end, url.len - end);
        return true;
    }
    if (sb_str_eq_cstr(sb_str(url.p + colon + 1, end - colon - 1), port)) { /* the default port: remove it */
        sb_buf_append(alt, url.p, colon);
        sb_buf_append(alt, url.p + end, url.len - end);
        return true;
    }
    return false;
}

int sb_sig_twilio_verify(sb_str_t token, sb_str_t url, const sb_sig_param_t *params, size_t n, sb_str_t header)
{
    char want[SB_SIG_TWILIO_LEN];
    sb_buf_t alt;
    bool match;

    if (header.len != SB_SIG_TWILIO_LEN)
        return SB_EPARSE;

    const sb_sig_param_t **sorted = twilio_sorted(params, n);
    twilio_mac(token, url, sorted, n, want);
    match = sb_codec_ct_eq(header, sb_str(want, sizeof want));

    sb_buf_init(&alt);
    if (twilio_url_alt(url, &alt)) {
        twilio_mac(token, sb_str(alt.p, alt.len), sorted, n, want);
        match |= sb_codec_ct_eq(header, sb_str(want, sizeof want)); /* both compared whatever the first gave */
    }
    sb_buf_cleanup(&alt);
    free(sorted);
    mbedtls_platform_zeroize(want, sizeof want);
    return match ? 0 : -EACCES;
}

static void meta_mac(sb_str_t secret, sb_str_t body, unsigned char mac[SB_DIGEST_SHA256_LEN])
{
    sb_digest_hmac_sha256(secret, body, mac);
}

void sb_sig_meta_compute(sb_str_t secret, sb_str_t body, char out[SB_SIG_META_LEN])
{
    unsigned char mac[SB_DIGEST_SHA256_LEN];
    const size_t plen = sizeof SB_SIG_META_PREFIX - 1;

    meta_mac(secret, body, mac);
    memcpy(out, SB_SIG_META_PREFIX, plen);
    sb_codec_hex_encode(out + plen, mac, sizeof mac);
    mbedtls_platform_zeroize(mac, sizeof mac);
}

int sb_sig_meta_verify(sb_str_t secret, sb_str_t body, sb_str_t header)
{
    unsigned char got[SB_DIGEST_SHA256_LEN], want[SB_DIGEST_SHA256_LEN];
    const size_t plen = sizeof SB_SIG_META_PREFIX - 1;
    size_t n;

    if (header.len != SB_SIG_META_LEN || !sb_str_has_prefix(header, SB_STR(SB_SIG_META_PREFIX)))
        return SB_EPARSE;
    if (sb_codec_hex_decode(sb_str(header.p + plen, header.len - plen), got, sizeof got, &n) != 0)
        return SB_EPARSE;

    meta_mac(secret, body, want);
    bool match = sb_codec_ct_eq(sb_str((const char *)got, sizeof got), sb_str((const char *)want, sizeof want));
    mbedtls_platform_zeroize(want, sizeof want);
    return match ? 0 : -EACCES;
}
