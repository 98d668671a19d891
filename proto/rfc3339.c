/* RFC 3339 timestamps; see rfc3339.h. */
#include "proto/rfc3339.h"

#include "proto/err.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define MIN_DAYS (-719162LL) /* 0001-01-01 in days from 1970-01-01 */
#define MAX_DAYS 2932896LL   /* 9999-12-31 */

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian), Howard Hinnant's days_from_civil. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* The civil date of day z from 1970-01-01 (the inverse of days_from_civil). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool leap(unsigned y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned month_days(unsigned y, unsigned m)
{
    static const unsigned char days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

/* n digits at s[*i] as a number; false when any of them is not a digit (or s ends first). */
static bool digits(sb_str_t s, size_t *i, unsigned n, unsigned *out)
{
    unsigned v = 0;
    if (s.len - *i < n)
        return false;
    for (unsigned k = 0; k < n; k++) {
        char c = s.p[*i + k];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (unsigned)(c - '0');
    }
    *i += n;
    *out = v;
    return true;
}

static bool expect(sb_str_t s, size_t *i, char c)
{
    if (*i >= s.len || s.p[*i] != c)
        return false;
    (*i)++;
    return true;
}

int sb_rfc3339_parse(sb_str_t s, int64_t *unix_ms)
{
    size_t i = 0;
    unsigned y, mo, d, h, mi, se, ms = 0, oh = 0, om = 0;
    int sign = 0;
    if (!s.p || s.len > SB_RFC3339_MAX_LEN)
        return SB_EPARSE;
    if (!digits(s, &i, 4, &y) || !expect(s, &i, '-') || !digits(s, &i, 2, &mo) || !expect(s, &i, '-') ||
        !digits(s, &i, 2, &d))
        return SB_EPARSE;
    if (i >= s.len || (s.p[i] != 'T' && s.p[i] != 't'))
        return SB_EPARSE;
    i++;
    if (!digits(s, &i, 2, &h) || !expect(s, &i, ':') || !digits(s, &i, 2, &mi) || !expect(s, &i, ':') ||
        !digits(s, &i, 2, &se))
        return SB_EPARSE;
    if (i < s.len && s.p[i] == '.') {
        unsigned n = 0;
        for (i++; i < s.len && s.p[i] >= '0' && s.p[i] <= '9'; i++, n++)
            if (n < 3)
                ms = ms * 10 + (unsigned)(s.p[i] - '0');
        if (n == 0 || n > 9)
            return SB_EPARSE;
        for (; n < 3; n++)
            ms *= 10;
    }
    if (i >= s.len)
        return SB_EPARSE; /* the offset is required */
    if (s.p[i] == 'Z' || s.p[i] == 'z') {
        i++;
    } else if (s.p[i] == '+' || s.p[i] == '-') {
        sign = s.p[i++] == '-' ? -1 : 1;
        if (!digits(s, &i, 2, &oh) || !expect(s, &i, ':') || !digits(s, &i, 2, &om))
            return SB_EPARSE;
    } else {
        return SB_EPARSE;
    }
    if (i != s.len)
        return SB_EPARSE;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) || h > 23 || mi > 59 || se > 60 || oh > 23 ||
        om > 59)
        return SB_EPARSE;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + se;
    secs -= (int64_t)sign * ((int64_t)oh * 3600 + (int64_t)om * 60);
    *unix_ms = secs * 1000 + ms;
    return 0;
}

int sb_rfc3339_format(int64_t unix_ms, char out[SB_RFC3339_TEXT_LEN])
{
    int64_t days = (unix_ms >= 0 ? unix_ms : unix_ms - 86399999) / 86400000;
    int64_t rest = unix_ms - days * 86400000; /* 0 .. 86399999 */
    out[0] = '\0';
    if (days < MIN_DAYS || days > MAX_DAYS)
        return SB_ERANGE;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    unsigned ms = (unsigned)(rest % 1000), sec = (unsigned)(rest / 1000);
    char frac[16] = "";
    if (ms) {
        snprintf(frac, sizeof frac, ".%03u", ms);
        for (size_t n = strlen(frac); frac[n - 1] == '0'; n--)
            frac[n - 1] = '\0';
    }
    return snprintf(out, SB_RFC3339_TEXT_LEN, "%04u-%02u-%02uT%02u:%02u:%02u%s+00:00", (unsigned)y, m, d, sec / 3600,
                    sec / 60 % 60, sec % 60, frac);
}
