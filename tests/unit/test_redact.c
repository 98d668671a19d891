/* Unit tests for proto/redact: addresses masked the way the logs show them, and the logger's net over a line (numbers,
 * API keys, webhook secrets, JWTs masked; everything else untouched; never longer than it was). */
#include "proto/redact.h"

#include "tests/tap.h"

#include <string.h>

static const char *addr(const char *in)
{
    static char out[SB_REDACT_ADDRESS_MAX];
    sb_redact_address(sb_str_cstr(in), out, sizeof out);
    return out;
}

static const char *line(const char *in)
{
    static char buf[512];
    size_t n = strlen(in);
    memcpy(buf, in, n);
    size_t m = sb_redact_line(buf, n);
    buf[m] = '\0';
    return m <= n ? buf : "(grew)";
}

TEST(address)
{
    is_str(addr("+14155550123"), "+1415*****23", "E.164: country and area code, last two");
    is_str(addr("whatsapp:+14155550123"), "whatsapp:+1415*****23", "a scheme prefix is kept");
    is_str(addr("+447700900123"), "+4477******23", "a longer number keeps its length");
    is_str(addr("15551234567"), "1555*****67", "a bare wa_id");
    is_str(addr("+3312345"), "+33***45", "seven digits: two and two");
    is_str(addr("12345"), "*****", "short: all stars");
    is_str(addr(""), "", "empty");
    is_str(addr("+"), "+", "a lone plus");
    is_str(addr("messenger:6543210987654321"), "messenger:6543**********21", "a page-scoped id");
    char small[6];
    is_int((long long)sb_redact_address(sb_str_cstr("+14155550123"), small, sizeof small), 5, "cut to fit");
    is_str(small, "+1415", "cut output is NUL-terminated");
    char none[1] = {'x'};
    is_int((long long)sb_redact_address(sb_str_cstr("+14155550123"), none, 0), 0, "size 0 writes nothing");
    ok(none[0] == 'x', "not even the NUL");
}

TEST(line_numbers)
{
    is_str(line("The 'To' number +14155550123 is not a valid phone number."),
           "The 'To' number +1415*****23 is not a valid phone number.", "a number in a provider's message");
    is_str(line("to whatsapp:+447700900123, from +15005550006"), "to whatsapp:+4477******23, from +1500*****06",
           "several numbers, one with a scheme");
    is_str(line("(+14155550123)"), "(+1415*****23)", "between brackets");
    is_str(line("+1234567890123456789 digits"), "+******************* digits", "too long for E.164: all stars");
    is_str(line("shard 2: +1 and +123456 stay"), "shard 2: +1 and +123456 stay", "short runs are not numbers");
    is_str(line("1+14155550123"), "1+14155550123", "a plus after a digit is arithmetic, not a number");
    is_str(line("ends with +1415555012"), "ends with +1415****12", "at the end of the line");
}

TEST(line_secrets)
{
    is_str(line("key sb_live_AbCdEf0123456789_-xyz refused"), "key sb_live_*** refused", "an API key");
    is_str(line("secret whsec_0123456789abcdef."), "secret whsec_***.", "a webhook secret");
    is_str(line("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl ok"), "token eyJ*** ok", "a JWT");
    is_str(line("sb_live_ and whsec_x"), "sb_live_ and whsec_x", "a bare prefix is not a key");
    is_str(line("eyJ is a word, eyJabc.def too short"), "eyJ is a word, eyJabc.def too short",
           "something short that starts like a JWT stays");
    is_str(line("plain text: 4 shards, tenant 12, receipt 99"), "plain text: 4 shards, tenant 12, receipt 99",
           "ordinary lines are untouched");
    is_str(line(""), "", "an empty line");
}

static const char *text(const char *in)
{
    static char buf[512];
    size_t n = strlen(in);
    memcpy(buf, in, n);
    size_t m = sb_redact_text(buf, n);
    buf[m] = '\0';
    return m <= n ? buf : "(grew)";
}

TEST(text_bare_digits)
{
    is_str(text("The number 4155550100 is unverified."), "The number 4155****00 is unverified.",
           "a number without its plus");
    is_str(text("Key (address)=(+14155550100) exists; wa 15551234567"),
           "Key (address)=(+1415*****00) exists; wa 1555*****67", "both kinds");
    is_str(text("SQLSTATE 23505 on tenant 123456, 21211"), "SQLSTATE 23505 on tenant 123456, 21211",
           "short numbers (codes, ids) stay");
    is_str(text("v20240101abc and 1234567abc"), "v20240101abc and 1234567abc", "digits inside a word stay");
    is_str(text("a key sb_live_abcdef"), "a key sb_live_***", "and what sb_redact_line masks");
}

TEST(line_any_bytes)
{
    /* every prefix of a line full of near-misses: never longer, never past the end */
    const char *tricky = "+1234567 sb_live_abc whsec_ eyJxxxxxxxxxxxxx. +99999999999999999999 \xff\x80";
    char buf[128];
    size_t n = strlen(tricky);
    int fine = 1;
    for (size_t k = 0; k <= n; k++) {
        memcpy(buf, tricky, k);
        buf[k] = 'Z';
        size_t m = sb_redact_line(buf, k);
        if (m > k || buf[k] != 'Z')
            fine = 0;
        memcpy(buf, tricky, k);
        m = sb_redact_text(buf, k);
        if (m > k || buf[k] != 'Z')
            fine = 0;
    }
    ok(fine, "every prefix: no growth, no byte written past the end");
}

int main(void)
{
    RUN(address);
    RUN(line_numbers);
    RUN(line_secrets);
    RUN(text_bare_digits);
    RUN(line_any_bytes);
    return tap_done();
}
