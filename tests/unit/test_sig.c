/* Unit tests for proto/sig: every vector of ../shared/vectors/twilio-signature.json and meta-signature.json (read at
 * run time; a missing or empty file fails), the default-port variants, the parameter sort (byte-wise by name, then
 * by value, as twilio-python does), and the refusals: wrong token or secret, altered URL, parameter or body, header
 * of the wrong shape. */
#include "proto/sig.h"

#include "proto/codec.h"
#include "proto/digest.h"
#include "proto/err.h"
#include "tests/tap.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define VECTORS "../shared/vectors/"
#define MAX_PARAMS 16

/* Loads a vectors file and returns its "vectors" array (owned by the returned root), or NULL after failing a test. */
static json_t *load_vectors(const char *file, json_t **root)
{
    json_error_t err;
    *root = json_load_file(file, 0, &err);
    ok(*root != NULL, "load %s (run from the repo root with shared/ beside it): %s", file,
       *root ? "ok" : err.text);
    if (!*root)
        return NULL;
    json_t *v = json_object_get(*root, "vectors");
    ok(json_is_array(v) && json_array_size(v) > 0, "%s has vectors", file);
    return json_is_array(v) && json_array_size(v) > 0 ? v : NULL;
}

static sb_str_t jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? sb_str(json_string_value(v), json_string_length(v)) : sb_str(NULL, 0);
}

/* The params object of a vector as an array, in the file's order. Returns the count. */
static size_t vec_params(const json_t *vec, sb_sig_param_t *out)
{
    const char *name;
    json_t *val;
    size_t n = 0;
    json_object_foreach((json_t *)json_object_get(vec, "params"), name, val) {
        if (n == MAX_PARAMS || !json_is_string(val))
            break;
        out[n].name = sb_str_cstr(name);
        out[n].value = sb_str(json_string_value(val), json_string_length(val));
        n++;
    }
    return n;
}

/* Returns url with the first occurrence of `from` replaced by `to` in a static buffer (empty if absent). */
static sb_str_t url_subst(sb_str_t url, const char *from, const char *to)
{
    static char out[1024];
    size_t fl = strlen(from), tl = strlen(to);
    for (size_t i = 0; i + fl <= url.len; i++) {
        if (memcmp(url.p + i, from, fl) != 0)
            continue;
        if (url.len - fl + tl > sizeof out)
            break;
        memcpy(out, url.p, i);
        memcpy(out + i, to, tl);
        memcpy(out + i + tl, url.p + i + fl, url.len - i - fl);
        return sb_str(out, url.len - fl + tl);
    }
    return sb_str(NULL, 0);
}

TEST(twilio_vectors)
{
    json_t *root;
    json_t *vecs = load_vectors(VECTORS "twilio-signature.json", &root);
    size_t i;
    json_t *vec;

    if (!vecs) {
        json_decref(root);
        return;
    }
    json_array_foreach(vecs, i, vec) {
        const char *name = json_string_value(json_object_get(vec, "name"));
        sb_str_t token = jstr(vec, "auth_token"), url = jstr(vec, "url"), want = jstr(vec, "signature");
        sb_sig_param_t params[MAX_PARAMS], rev[MAX_PARAMS];
        size_t n = vec_params(vec, params);
        char got[SB_SIG_TWILIO_LEN];

        ok(name && token.len && url.len && want.len == SB_SIG_TWILIO_LEN, "%s: vector complete", name);
        is_int((long long)n, (long long)json_object_size(json_object_get(vec, "params")), "%s: all params read", name);

        sb_sig_twilio_compute(token, url, params, n, got);
        ok(sb_str_eq(sb_str(got, sizeof got), want), "%s: computed signature matches (%.28s)", name, got);
        is_int(sb_sig_twilio_verify(token, url, params, n, want), 0, "%s: verifies", name);

        for (size_t k = 0; k < n; k++)
            rev[k] = params[n - 1 - k];
        sb_sig_twilio_compute(token, url, rev, n, got);
        ok(sb_str_eq(sb_str(got, sizeof got), want), "%s: parameter order does not matter", name);

        /* the default-port variants named in the vectors' notes */
        if (strstr(name, "explicit_default_port")) {
            sb_str_t bare = url_subst(url, ":443/", "/");
            is_int(sb_sig_twilio_verify(token, bare, params, n, want), 0, "%s: URL without :443 verifies", name);
        } else if (strstr(name, "http_port_80")) {
            sb_str_t bare = url_subst(url, ":80/", "/");
            is_int(sb_sig_twilio_verify(token, bare, params, n, want), 0, "%s: URL without :80 verifies", name);
        } else if (strstr(name, "custom_port")) {
            sb_str_t bare = url_subst(url, ":1234/", "/");
            ok(bare.len > 0, "%s: URL has :1234", name);
            is_int(sb_sig_twilio_verify(token, bare, params, n, want), -EACCES,
                   "%s: a non-default port is never dropped", name);
            sb_str_t p80 = url_subst(url, ":1234/", ":80/");
            is_int(sb_sig_twilio_verify(token, p80, params, n, want), -EACCES, "%s: nor replaced", name);
        } else if (url.len > 8 && memcmp(url.p, "https://", 8) == 0 && !memchr(url.p + 8, ':', url.len - 8)) {
            sb_str_t with = url_subst(url, ".com/", ".com:443/");
            is_int(sb_sig_twilio_verify(token, with, params, n, want), 0, "%s: URL given with :443 verifies", name);
        }

        /* refusals */
        is_int(sb_sig_twilio_verify(SB_STR("54321"), url, params, n, want), -EACCES, "%s: wrong token", name);
        sb_str_t other = url_subst(url, "foo=1", "foo=2");
        ok(other.len == url.len, "%s: URL has foo=1 to alter", name);
        is_int(sb_sig_twilio_verify(token, other, params, n, want), -EACCES, "%s: altered URL", name);
        char bad[SB_SIG_TWILIO_LEN];
        memcpy(bad, want.p, sizeof bad);
        bad[3] = bad[3] == 'A' ? 'B' : 'A';
        is_int(sb_sig_twilio_verify(token, url, params, n, sb_str(bad, sizeof bad)), -EACCES, "%s: altered header",
               name);
        if (n) {
            sb_sig_param_t alt[MAX_PARAMS];
            memcpy(alt, params, n * sizeof *alt);
            alt[0].value = SB_STR("+15550000000");
            is_int(sb_sig_twilio_verify(token, url, alt, n, want), -EACCES, "%s: altered parameter", name);
            is_int(sb_sig_twilio_verify(token, url, params, n - 1, want), -EACCES, "%s: parameter dropped", name);
        }
        memcpy(params + n, &(sb_sig_param_t){SB_STR("Extra"), SB_STR("1")}, sizeof *params);
        is_int(sb_sig_twilio_verify(token, url, params, n + 1, want), -EACCES, "%s: parameter added", name);
        is_int(sb_sig_twilio_verify(token, url, params, n, sb_str(NULL, 0)), SB_EPARSE, "%s: no header", name);
        is_int(sb_sig_twilio_verify(token, url, params, n, sb_str(want.p, want.len - 1)), SB_EPARSE,
               "%s: short header", name);
    }
    json_decref(root);
}

/* The signature over an explicitly spelled-out string, for checking the sort independently. */
static void twilio_ref(sb_str_t token, const char *data, char out[SB_SIG_TWILIO_LEN])
{
    unsigned char mac[SB_DIGEST_SHA1_LEN];
    sb_digest_hmac_sha1(token, sb_str_cstr(data), mac);
    sb_codec_b64_encode(out, mac, sizeof mac, SB_B64_STD);
}

TEST(twilio_sort)
{
    const sb_str_t token = SB_STR("12345");
    const sb_str_t url = SB_STR("https://example.com/hook");
    char got[SB_SIG_TWILIO_LEN], want[SB_SIG_TWILIO_LEN];

    /* repeated names are ordered by value, not by arrival (twilio-python: sorted(values) per sorted name) */
    sb_sig_param_t media[] = {
        {SB_STR("MediaUrl"), SB_STR("https://m/2")},
        {SB_STR("Body"), SB_STR("hi")},
        {SB_STR("MediaUrl"), SB_STR("https://m/1")},
    };
    sb_sig_twilio_compute(token, url, media, 3, got);
    twilio_ref(token, "https://example.com/hookBodyhiMediaUrlhttps://m/1MediaUrlhttps://m/2", want);
    ok(memcmp(got, want, sizeof got) == 0, "repeated names sorted by value");
    is_int(sb_sig_twilio_verify(token, url, media, 3, sb_str(want, sizeof want)), 0, "and verified");

    /* byte-wise: upper case before lower case, a name before its extensions, empty values kept */
    sb_sig_param_t mixed[] = {
        {SB_STR("body"), SB_STR("x")},
        {SB_STR("FromCity"), SB_STR("")},
        {SB_STR("To"), SB_STR("+1")},
        {SB_STR("From"), SB_STR("+2")},
        {SB_STR("_x"), SB_STR("y")},
    };
    sb_sig_twilio_compute(token, url, mixed, 5, got);
    twilio_ref(token, "https://example.com/hookFrom+2FromCityTo+1_xybodyx", want);
    ok(memcmp(got, want, sizeof got) == 0, "case-sensitive byte order, prefixes first");

    /* UTF-8 names and values sort by bytes (= code points) */
    sb_sig_param_t utf[] = {
        {SB_STR("\xc3\xa9t\xc3\xa9"), SB_STR("1")},
        {SB_STR("zeta"), SB_STR("\xe2\x82\xac")},
    };
    sb_sig_twilio_compute(token, url, utf, 2, got);
    twilio_ref(token, "https://example.com/hookzeta\xe2\x82\xac\xc3\xa9t\xc3\xa9" "1", want);
    ok(memcmp(got, want, sizeof got) == 0, "UTF-8 sorted by bytes");

    /* exact duplicates are kept (twilio-python), both signed */
    sb_sig_param_t dup[] = {{SB_STR("A"), SB_STR("1")}, {SB_STR("A"), SB_STR("1")}};
    sb_sig_twilio_compute(token, url, dup, 2, got);
    twilio_ref(token, "https://example.com/hookA1A1", want);
    ok(memcmp(got, want, sizeof got) == 0, "duplicate pairs both signed");

    /* the caller's array is not reordered */
    ok(sb_str_eq(media[0].value, SB_STR("https://m/2")) && sb_str_eq(media[1].name, SB_STR("Body")),
       "params left in place");

    /* name+value concatenation is ambiguous by design; the sort is on the name alone first */
    sb_sig_param_t amb[] = {{SB_STR("ab"), SB_STR("c")}, {SB_STR("a"), SB_STR("bd")}};
    sb_sig_twilio_compute(token, url, amb, 2, got);
    twilio_ref(token, "https://example.com/hookabdabc", want);
    ok(memcmp(got, want, sizeof got) == 0, "sorted by name, not by name+value");
}

TEST(twilio_url_variants)
{
    const sb_str_t token = SB_STR("secret-token");
    sb_sig_param_t p[] = {{SB_STR("A"), SB_STR("1")}};
    static const struct {
        const char *signed_url, *given_url;
        int want;
    } cases[] = {
        {"https://h.example:443/x?y=1", "https://h.example/x?y=1", 0},
        {"https://h.example/x?y=1", "https://h.example:443/x?y=1", 0},
        {"http://h.example:80/x", "http://h.example/x", 0},
        {"http://h.example/x", "http://h.example:80/x", 0},
        {"https://h.example:443", "https://h.example", 0},               /* no path */
        {"https://h.example:443?q=1", "https://h.example?q=1", 0},       /* query right after the host */
        {"https://u:pw@h.example:443/x", "https://u:pw@h.example/x", 0}, /* userinfo with a colon */
        {"https://[2001:db8::1]:443/x", "https://[2001:db8::1]/x", 0},   /* IPv6 literal */
        {"https://[2001:db8::1]/x", "https://[2001:db8::1]:443/x", 0},
        {"HTTPS://h.example:443/x", "HTTPS://h.example/x", 0},           /* scheme case */
        {"https://h.example:80/x", "https://h.example/x", -EACCES},      /* the other scheme's port */
        {"http://h.example:443/x", "http://h.example/x", -EACCES},
        {"https://h.example:8443/x", "https://h.example/x", -EACCES},    /* non-default port */
        {"https://h.example/x", "https://h.example:8443/x", -EACCES},
        {"https://h.example/x:443", "https://h.example/x", -EACCES},     /* ":443" in the path is not a port */
        {"https://h.example/x", "https://h.example:/x", -EACCES},        /* empty port */
        {"wss://h.example:443/x", "wss://h.example/x", -EACCES},         /* other schemes: as given only */
        {"https://h.example/x", "https://h.example/x", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char sig[SB_SIG_TWILIO_LEN];
        sb_sig_twilio_compute(token, sb_str_cstr(cases[i].signed_url), p, 1, sig);
        is_int(sb_sig_twilio_verify(token, sb_str_cstr(cases[i].given_url), p, 1, sb_str(sig, sizeof sig)),
               cases[i].want, "signed %s, given %s", cases[i].signed_url, cases[i].given_url);
    }
}

TEST(meta_vectors)
{
    json_t *root;
    json_t *vecs = load_vectors(VECTORS "meta-signature.json", &root);
    size_t i;
    json_t *vec;

    if (!vecs) {
        json_decref(root);
        return;
    }
    json_array_foreach(vecs, i, vec) {
        sb_str_t secret = jstr(vec, "secret"), body = jstr(vec, "body"), want = jstr(vec, "header");
        char got[SB_SIG_META_LEN], buf[SB_SIG_META_LEN + 2];

        ok(secret.len && want.len == SB_SIG_META_LEN, "vector %zu complete", i);
        sb_sig_meta_compute(secret, body, got);
        ok(sb_str_eq(sb_str(got, sizeof got), want), "vector %zu: computed header matches", i);
        is_int(sb_sig_meta_verify(secret, body, want), 0, "vector %zu: verifies", i);

        memcpy(buf, want.p, want.len);
        for (size_t k = 7; k < want.len; k++)
            buf[k] = (char)(buf[k] >= 'a' && buf[k] <= 'f' ? buf[k] - 32 : buf[k]);
        is_int(sb_sig_meta_verify(secret, body, sb_str(buf, want.len)), 0, "vector %zu: upper-case hex accepted", i);

        is_int(sb_sig_meta_verify(SB_STR("another secret"), body, want), -EACCES, "vector %zu: wrong secret", i);
        is_int(sb_sig_meta_verify(secret, sb_str(body.p, body.len ? body.len - 1 : 0), want), -EACCES,
               "vector %zu: body altered", i);
        memcpy(buf, want.p, want.len);
        buf[want.len - 1] = buf[want.len - 1] == '0' ? '1' : '0';
        is_int(sb_sig_meta_verify(secret, body, sb_str(buf, want.len)), -EACCES, "vector %zu: digit altered", i);

        is_int(sb_sig_meta_verify(secret, body, sb_str(want.p + 7, want.len - 7)), SB_EPARSE,
               "vector %zu: bare hex (no prefix) refused", i);
        memcpy(buf, "SHA256=", 7);
        memcpy(buf + 7, want.p + 7, want.len - 7);
        is_int(sb_sig_meta_verify(secret, body, sb_str(buf, want.len)), SB_EPARSE, "vector %zu: prefix case", i);
        memcpy(buf, "sha1=", 5);
        memcpy(buf + 5, want.p + 7, want.len - 7);
        is_int(sb_sig_meta_verify(secret, body, sb_str(buf, want.len - 2)), SB_EPARSE, "vector %zu: sha1=", i);
        is_int(sb_sig_meta_verify(secret, body, sb_str(want.p, want.len - 1)), SB_EPARSE, "vector %zu: short", i);
        memcpy(buf, want.p, want.len);
        buf[want.len] = '0';
        is_int(sb_sig_meta_verify(secret, body, sb_str(buf, want.len + 1)), SB_EPARSE, "vector %zu: long", i);
        memcpy(buf, want.p, want.len);
        buf[10] = 'g';
        is_int(sb_sig_meta_verify(secret, body, sb_str(buf, want.len)), SB_EPARSE, "vector %zu: non-hex", i);
        is_int(sb_sig_meta_verify(secret, body, sb_str(NULL, 0)), SB_EPARSE, "vector %zu: missing header", i);
    }
    json_decref(root);
}

int main(void)
{
    RUN(twilio_vectors);
    RUN(twilio_sort);
    RUN(twilio_url_variants);
    RUN(meta_vectors);
    return tap_done();
}
