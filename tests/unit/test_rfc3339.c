/* Unit tests for proto/rfc3339: the forms RFC 3339 allows (offsets, Z, fractions, case), the calendar (leap years,
 * month lengths, the epoch and before it), what must be refused, and format -> parse round trips. */
#include "proto/rfc3339.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <time.h>

static int64_t parse(const char *s, int *rc)
{
    int64_t v = -424242;
    *rc = sb_rfc3339_parse(sb_str_cstr(s), &v);
    return v;
}

static void accepts(const char *s, int64_t want)
{
    int rc;
    int64_t v = parse(s, &rc);
    if (!ok(rc == 0 && v == want, "%s = %lld", s, (long long)want))
        printf("#   rc %d, got %lld\n", rc, (long long)v);
}

static void refuses(const char *s)
{
    int rc;
    int64_t v = parse(s, &rc);
    ok(rc == SB_EPARSE && v == -424242, "refused, untouched: \"%s\"", s);
}

TEST(forms)
{
    accepts("1970-01-01T00:00:00Z", 0);
    accepts("1970-01-01t00:00:00z", 0);
    accepts("2026-12-05T14:30:00Z", 1796481000000LL);
    accepts("2026-12-05T15:30:00+01:00", 1796481000000LL);
    accepts("2026-12-05T09:00:00-05:30", 1796481000000LL);
    accepts("2026-12-05T14:30:00+00:00", 1796481000000LL);
    accepts("2026-12-05T14:30:00-00:00", 1796481000000LL);
    accepts("2026-12-05T14:30:00.1Z", 1796481000100LL);
    accepts("2026-12-05T14:30:00.12Z", 1796481000120LL);
    accepts("2026-12-05T14:30:00.123Z", 1796481000123LL);
    accepts("2026-12-05T14:30:00.123999999Z", 1796481000123LL); /* truncated, not rounded */
    accepts("1969-12-31T23:59:59.999Z", -1);
    accepts("0001-01-01T00:00:00Z", -62135596800000LL);
    accepts("9999-12-31T23:59:59.999Z", 253402300799999LL);
    accepts("2024-02-29T00:00:00Z", 1709164800000LL);
    accepts("2000-02-29T00:00:00Z", 951782400000LL);
    accepts("2016-12-31T23:59:60Z", 1483228800000LL); /* a leap second: the next minute's first */
    accepts("2026-12-05T14:30:00+23:59", 1796481000000LL - (23 * 3600 + 59 * 60) * 1000LL);
}

TEST(refused)
{
    refuses("");
    refuses("2026-12-05");
    refuses("2026-12-05T14:30:00");  /* no offset: a local time names no instant */
    refuses("2026-12-05 14:30:00Z"); /* the space of RFC 3339's note is not taken */
    refuses("2026-12-05T14:30Z");
    refuses("2026-12-05T14:30:00.Z");
    refuses("2026-12-05T14:30:00.1234567890Z"); /* ten digits */
    refuses("2026-12-05T14:30:00+0100");
    refuses("2026-12-05T14:30:00+01");
    refuses("2026-12-05T14:30:00+24:00");
    refuses("2026-12-05T14:30:00+01:60");
    refuses("2026-12-05T24:00:00Z");
    refuses("2026-12-05T23:60:00Z");
    refuses("2026-12-05T23:59:61Z");
    refuses("2026-13-05T14:30:00Z");
    refuses("2026-00-05T14:30:00Z");
    refuses("2026-12-00T14:30:00Z");
    refuses("2026-12-32T14:30:00Z");
    refuses("2026-04-31T14:30:00Z");
    refuses("2025-02-29T14:30:00Z");
    refuses("1900-02-29T14:30:00Z");
    refuses("0000-01-01T00:00:00Z");
    refuses("+2026-12-05T14:30:00Z");
    refuses("2026-12-05T14:30:00Z ");
    refuses(" 2026-12-05T14:30:00Z");
    refuses("2026-12-05T14:30:00ZZ");
    refuses("2026-1-05T14:30:00Z");
    refuses("２026-12-05T14:30:00Z");
    refuses("2026-12-05T14:30:00.000000000000000000000000000000000000Z"); /* longer than the bound */
    int64_t v = 7;
    ok(sb_rfc3339_parse(sb_str("2026-12-05T14:30:00Z", 10), &v) == SB_EPARSE && v == 7,
       "a view cut short is read only to its length");
    ok(sb_rfc3339_parse(sb_str(NULL, 0), &v) == SB_EPARSE, "no bytes");
}

TEST(format)
{
    char out[SB_RFC3339_TEXT_LEN];
    is_int(sb_rfc3339_format(0, out), 25, "the epoch's length");
    is_str(out, "1970-01-01T00:00:00+00:00", "the epoch, as PostgreSQL writes it");
    sb_rfc3339_format(1796481000123LL, out);
    is_str(out, "2026-12-05T14:30:00.123+00:00", "a time with milliseconds");
    sb_rfc3339_format(1796481000120LL, out);
    is_str(out, "2026-12-05T14:30:00.12+00:00", "trailing zeros dropped");
    sb_rfc3339_format(1796481000100LL, out);
    is_str(out, "2026-12-05T14:30:00.1+00:00", "down to one digit");
    sb_rfc3339_format(-1, out);
    is_str(out, "1969-12-31T23:59:59.999+00:00", "one ms before the epoch");
    is_int(sb_rfc3339_format(253402300799999LL, out), 29, "the longest");
    is_int(sb_rfc3339_format(-62135596800001LL, out), SB_ERANGE, "before year 1");
    is_str(out, "", "and nothing written");
    is_int(sb_rfc3339_format(253402300800000LL, out), SB_ERANGE, "after 9999");

    /* round trips over the whole range, and agreement with the C library's gmtime */
    bool round = true, libc = true;
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t ms = (int64_t)(x % 315537897600000ULL) - 62135596800000LL; /* 0001 .. 9999 */
        int64_t back = 0;
        int n = sb_rfc3339_format(ms, out);
        round &= n >= 25 && n <= 29 && sb_rfc3339_parse(sb_str_cstr(out), &back) == 0 && back == ms;
        if (ms >= 0) {
            time_t t = (time_t)(ms / 1000);
            struct tm tm;
            char want[32];
            gmtime_r(&t, &tm);
            strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%S", &tm);
            libc &= strncmp(out, want, 19) == 0;
        }
    }
    ok(round, "format then parse gives the instant back (200,000 random instants in 0001..9999)");
    ok(libc, "and the calendar agrees with gmtime (those after 1970)");
}

int main(void)
{
    RUN(forms);
    RUN(refused);
    RUN(format);
    return tap_done();
}
