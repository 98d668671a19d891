/* Unit tests for proto/line: console framing (across feeds, CRLF, overlong lines), command splitting (-j, tabs,
 * word limits, binary input) and the strict UTF-8 validator. */
#include "proto/line.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <stdio.h>
#include <string.h>

#define MAX_SEEN 64

/* Records what the callback saw, as "line" or "!E2BIG", for comparison with an expectation. */
typedef struct seen {
    int n;
    char lines[MAX_SEEN][SB_LINE_MAX + 8];
    size_t lens[MAX_SEEN];
    int errs[MAX_SEEN];
} seen_t;

static void record(void *arg, sb_str_t line, int err)
{
    seen_t *s = arg;
    if (s->n >= MAX_SEEN)
        return;
    memcpy(s->lines[s->n], line.p, line.len);
    s->lines[s->n][line.len] = '\0';
    s->lens[s->n] = line.len;
    s->errs[s->n] = err;
    s->n++;
}

static seen_t seen;

static void seen_reset(void)
{
    memset(&seen, 0, sizeof seen);
}

/* Feeds s in pieces of `step` bytes (0 = all at once); returns the total number of lines reported. */
static size_t feed_in_steps(sb_line_reader_t *r, const char *s, size_t len, size_t step)
{
    size_t total = 0;
    if (step == 0)
        return sb_line_feed(r, s, len, record, &seen);
    for (size_t i = 0; i < len; i += step) {
        size_t n = len - i < step ? len - i : step;
        total += sb_line_feed(r, s + i, n, record, &seen);
    }
    return total;
}

TEST(framing_single)
{
    sb_line_reader_t r;
    sb_line_reader_init(&r);
    seen_reset();
    is_int(sb_line_feed(&r, "info\n", 5, record, &seen), 1, "one line reported");
    is_int(seen.n, 1, "callback once");
    is_str(seen.lines[0], "info", "line without newline");
    is_int(seen.errs[0], 0, "err 0");

    seen_reset();
    ok(r.buf == NULL, "a reader between lines holds no buffer");
    is_int(sb_line_feed(&r, "partial", 7, record, &seen), 0, "no newline: nothing reported");
    is_int(seen.n, 0, "callback not called");
    ok(r.buf != NULL && r.len == 7, "an unfinished line is held");
    is_int(sb_line_feed(&r, NULL, 0, record, &seen), 0, "empty feed is fine");
    is_int(sb_line_feed(&r, " line\n", 6, record, &seen), 1, "completed by the next feed");
    is_str(seen.lines[0], "partial line", "joined across feeds");
    ok(r.buf == NULL, "and its buffer is gone once it is");
    sb_line_feed(&r, "half", 4, record, &seen);
    sb_line_reader_cleanup(&r); /* (the ASan run would report a leak without it) */
    ok(r.buf == NULL && r.len == 0, "cleanup drops an unfinished line");
}

TEST(framing_byte_by_byte)
{
    const char *in = "help\r\nauth secret\nstats -j\r\n\n";
    for (size_t step = 0; step <= 7; step++) {
        sb_line_reader_t r;
        sb_line_reader_init(&r);
        seen_reset();
        size_t n = feed_in_steps(&r, in, strlen(in), step);
        is_int(n, 4, "step %zu: four lines", step);
        is_int(seen.n, 4, "step %zu: four callbacks", step);
        is_str(seen.lines[0], "help", "step %zu: CRLF stripped", step);
        is_str(seen.lines[1], "auth secret", "step %zu: LF line", step);
        is_str(seen.lines[2], "stats -j", "step %zu: second CRLF", step);
        is_str(seen.lines[3], "", "step %zu: empty line reported", step);
        is_int(seen.errs[3], 0, "step %zu: empty line is not an error", step);
    }
}

TEST(framing_cr_handling)
{
    sb_line_reader_t r;
    sb_line_reader_init(&r);
    seen_reset();
    const char in[] = "a\r\r\nb\rc\n\r\n";
    is_int(sb_line_feed(&r, in, sizeof in - 1, record, &seen), 3, "three lines");
    is_int((long long)seen.lens[0], 2, "only one CR removed");
    ok(memcmp(seen.lines[0], "a\r", 2) == 0, "other CR kept");
    is_int((long long)seen.lens[1], 3, "inner CR kept");
    is_str(seen.lines[2], "", "lone CRLF is an empty line");

    /* the CR of a CRLF arriving in its own feed */
    sb_line_reader_init(&r);
    seen_reset();
    sb_line_feed(&r, "quit\r", 5, record, &seen);
    sb_line_feed(&r, "\n", 1, record, &seen);
    is_int(seen.n, 1, "CR and LF in separate feeds");
    is_str(seen.lines[0], "quit", "CR removed across feeds");
}

TEST(framing_many_lines_one_feed)
{
    char in[40 * 8];
    size_t len = 0;
    for (int i = 0; i < 40; i++)
        len += (size_t)snprintf(in + len, sizeof in - len, "cmd %02d\n", i);
    sb_line_reader_t r;
    sb_line_reader_init(&r);
    seen_reset();
    is_int(sb_line_feed(&r, in, len, record, &seen), 40, "forty lines in one feed");
    is_str(seen.lines[0], "cmd 00", "first in order");
    is_str(seen.lines[39], "cmd 39", "last in order");
}

TEST(framing_limits)
{
    static char in[3 * SB_LINE_MAX + 64];
    sb_line_reader_t r;

    /* exactly SB_LINE_MAX bytes, with LF and with CRLF, whole and byte by byte */
    for (int crlf = 0; crlf <= 1; crlf++) {
        for (size_t step = 0; step <= 1; step++) {
            size_t len = SB_LINE_MAX;
            memset(in, 'x', len);
            if (crlf)
                in[len++] = '\r';
            in[len++] = '\n';
            sb_line_reader_init(&r);
            seen_reset();
            feed_in_steps(&r, in, len, step);
            is_int(seen.n, 1, "max line crlf=%d step=%zu: reported", crlf, step);
            is_int(seen.errs[0], 0, "max line crlf=%d step=%zu: accepted", crlf, step);
            is_int((long long)seen.lens[0], SB_LINE_MAX, "max line crlf=%d step=%zu: full length", crlf, step);
        }
    }

    /* one byte more: too long, with LF and with CRLF, then a good line goes through */
    for (int crlf = 0; crlf <= 1; crlf++) {
        for (size_t step = 0; step <= 3; step++) {
            size_t len = SB_LINE_MAX + 1;
            memset(in, 'y', len);
            if (crlf)
                in[len++] = '\r';
            in[len++] = '\n';
            memcpy(in + len, "info\n", 5);
            len += 5;
            sb_line_reader_init(&r);
            seen_reset();
            size_t n = feed_in_steps(&r, in, len, step == 3 ? 100 : step);
            is_int(n, 2, "overlong crlf=%d step=%zu: two lines reported", crlf, step);
            is_int(seen.errs[0], SB_E2BIG, "overlong crlf=%d step=%zu: SB_E2BIG", crlf, step);
            is_int((long long)seen.lens[0], 0, "overlong crlf=%d step=%zu: empty line", crlf, step);
            is_int(seen.errs[1], 0, "overlong crlf=%d step=%zu: next line fine", crlf, step);
            is_str(seen.lines[1], "info", "overlong crlf=%d step=%zu: next line intact", crlf, step);
        }
    }

    /* a very long line spanning many feeds is reported once */
    sb_line_reader_init(&r);
    seen_reset();
    memset(in, 'z', sizeof in);
    for (int i = 0; i < 10; i++)
        sb_line_feed(&r, in, sizeof in, record, &seen);
    is_int(seen.n, 0, "nothing reported before the newline");
    ok(r.discarding, "reader is discarding");
    sb_line_feed(&r, "tail\nnext\n", 10, record, &seen);
    is_int(seen.n, 2, "one error, one line");
    is_int(seen.errs[0], SB_E2BIG, "reported once as too long");
    is_str(seen.lines[1], "next", "following line intact");
    ok(!r.discarding && r.len == 0, "reader back to normal");
}

/* Parses a C string; returns the code. */
static int parse(const char *s, sb_line_cmd_t *cmd)
{
    return sb_line_parse(sb_str_cstr(s), cmd);
}

TEST(parse_words)
{
    sb_line_cmd_t c;
    is_int(parse("info", &c), 0, "one word");
    is_int(c.argc, 1, "argc 1");
    ok(sb_str_eq_cstr(c.argv[0], "info"), "argv[0]");
    ok(!c.json, "no json");

    is_int(parse("  actors \t 42\t\t", &c), 0, "runs of blanks");
    is_int(c.argc, 2, "two words");
    ok(sb_str_eq_cstr(c.argv[0], "actors") && sb_str_eq_cstr(c.argv[1], "42"), "words without blanks");

    const char *line = "auth tok";
    is_int(parse(line, &c), 0, "auth");
    ok(c.argv[1].p == line + 5, "argv borrows the line");

    is_int(parse("\tchannels\tt1", &c), 0, "tabs separate");
    is_int(c.argc, 2, "tab-separated argc");
}

TEST(parse_json_flag)
{
    sb_line_cmd_t c;
    is_int(parse("info -j", &c), 0, "info -j");
    is_int(c.argc, 1, "-j removed");
    ok(c.json, "json set");
    is_int(parse("info\t-j  ", &c), 0, "-j with trailing blanks");
    ok(c.json && c.argc == 1, "json, argc 1");
    is_int(parse("-j info", &c), 0, "-j not last");
    ok(!c.json && c.argc == 2 && sb_str_eq_cstr(c.argv[0], "-j"), "-j first is an ordinary word");
    is_int(parse("info -json", &c), 0, "-json");
    ok(!c.json && c.argc == 2, "-json is not -j");
    is_int(parse("-j", &c), SB_EINVAL, "-j alone: no command");
    is_int(c.argc, 0, "argc 0 on failure");
    ok(!c.json, "json cleared on failure");
    is_int(parse("  -j ", &c), SB_EINVAL, "blank -j alone: no command");
    is_int(parse("-j -j", &c), 0, "-j -j");
    ok(c.json && c.argc == 1 && sb_str_eq_cstr(c.argv[0], "-j"), "command named -j, json");
}

TEST(parse_empty)
{
    sb_line_cmd_t c;
    is_int(sb_line_parse(sb_str(NULL, 0), &c), SB_EINVAL, "empty line");
    is_int(parse("   \t ", &c), SB_EINVAL, "blank line");
    is_int(c.argc, 0, "argc 0");
}

TEST(parse_word_limit)
{
    char buf[256];
    sb_line_cmd_t c;
    size_t n = 0;
    for (int i = 0; i < 16; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "w%d ", i);
    is_int(parse(buf, &c), 0, "16 words");
    is_int(c.argc, 16, "argc 16");
    ok(sb_str_eq_cstr(c.argv[15], "w15"), "last word");

    char b2[300];
    snprintf(b2, sizeof b2, "%s-j", buf);
    is_int(parse(b2, &c), 0, "16 words + -j");
    ok(c.argc == 16 && c.json, "-j does not count");

    snprintf(b2, sizeof b2, "%s-j  \t", buf);
    is_int(parse(b2, &c), 0, "16 words + -j + blanks");

    snprintf(b2, sizeof b2, "%sw16", buf);
    is_int(parse(b2, &c), SB_E2BIG, "17 words");
    is_int(c.argc, 0, "argc 0 after E2BIG");

    snprintf(b2, sizeof b2, "%s-j w16", buf);
    is_int(parse(b2, &c), SB_E2BIG, "17 words with -j not last");

    snprintf(b2, sizeof b2, "%sw16 -j", buf);
    is_int(parse(b2, &c), SB_E2BIG, "17 words + -j");
}

TEST(parse_binary)
{
    sb_line_cmd_t c;
    const char nul[] = "info\0x";
    is_int(sb_line_parse(sb_str(nul, sizeof nul - 1), &c), SB_EPARSE, "NUL byte");
    is_int(parse("info\x01", &c), SB_EPARSE, "control byte");
    is_int(parse("info\r", &c), SB_EPARSE, "stray CR");
    is_int(parse("info\x1b[2J", &c), SB_EPARSE, "escape sequence");
    is_int(parse("info\x7f", &c), SB_EPARSE, "DEL");
    is_int(parse(" \x01 ", &c), SB_EPARSE, "control byte in a blank line");
    is_int(parse("info \xff", &c), SB_EPARSE, "0xff");
    is_int(parse("info \xc3", &c), SB_EPARSE, "truncated UTF-8");
    is_int(parse("actors caf\xc3\xa9", &c), 0, "valid UTF-8 accepted");
    is_int(c.argc, 2, "UTF-8 word");
}

/* Wraps sb_utf8_valid for byte-array literals. */
#define U8(lit) sb_utf8_valid((lit), sizeof(lit) - 1)

TEST(utf8)
{
    ok(sb_utf8_valid(NULL, 0), "empty");
    ok(U8("plain ascii"), "ASCII");
    ok(U8("\x00"), "NUL is valid UTF-8");
    ok(U8("\xc2\x80"), "U+0080 (smallest 2-byte)");
    ok(U8("\xdf\xbf"), "U+07FF (largest 2-byte)");
    ok(U8("\xe0\xa0\x80"), "U+0800 (smallest 3-byte)");
    ok(U8("\xe2\x82\xac"), "euro sign");
    ok(U8("\xed\x9f\xbf"), "U+D7FF (before surrogates)");
    ok(U8("\xee\x80\x80"), "U+E000 (after surrogates)");
    ok(U8("\xef\xbf\xbf"), "U+FFFF");
    ok(U8("\xf0\x90\x80\x80"), "U+10000 (smallest 4-byte)");
    ok(U8("\xf0\x9f\x98\x80"), "emoji");
    ok(U8("\xf4\x8f\xbf\xbf"), "U+10FFFF");

    ok(!U8("\xc0\x80"), "overlong NUL");
    ok(!U8("\xc1\xbf"), "overlong 2-byte");
    ok(!U8("\xe0\x80\x80"), "overlong 3-byte");
    ok(!U8("\xe0\x9f\xbf"), "overlong U+07FF in 3 bytes");
    ok(!U8("\xf0\x80\x80\x80"), "overlong 4-byte");
    ok(!U8("\xf0\x8f\xbf\xbf"), "overlong U+FFFF in 4 bytes");
    ok(!U8("\xed\xa0\x80"), "surrogate U+D800");
    ok(!U8("\xed\xbf\xbf"), "surrogate U+DFFF");
    ok(!U8("\xf4\x90\x80\x80"), "U+110000");
    ok(!U8("\xf5\x80\x80\x80"), "0xf5 lead");
    ok(!U8("\xff"), "0xff");
    ok(!U8("\x80"), "stray continuation");
    ok(!U8("a\xbf"), "stray continuation after ASCII");
    ok(!U8("\xc3"), "truncated 2-byte");
    ok(!U8("\xe2\x82"), "truncated 3-byte");
    ok(!U8("\xf0\x9f\x98"), "truncated 4-byte");
    ok(!U8("\xe2\x82x"), "bad continuation");
    ok(!U8("\xf0\x9f\x98\xc0"), "bad last continuation");
    ok(!U8("\xc3\xa9\xc3"), "valid then truncated");
    /* the validator must not read past len */
    const char s[] = "\xe2\x82\xac";
    ok(!sb_utf8_valid(s, 2), "counted: truncated by len");
}

static void check_escape(const char *in, size_t len, const char *want, const char *what)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_line_escape(&b, sb_str(in, len));
    is_str(sb_buf_cstr(&b), want, "%s", what);
    sb_buf_cleanup(&b);
}

TEST(escape)
{
    check_escape("plain text", 10, "plain text", "printable ASCII as it is");
    check_escape("Zo\xc3\xab \xf0\x9f\x8c\x8d", 9, "Zo\xc3\xab \xf0\x9f\x8c\x8d", "UTF-8 as it is");
    check_escape("evil\n\nOK\n\x1b[2J", 13, "evil\\n\\nOK\\n\\x1b[2J", "newlines and ESC are visible");
    check_escape("a\\b\tc\rd\x7f", 8, "a\\\\b\\tc\\rd\\x7f", "backslash, tab, CR, DEL");
    check_escape("x\0y", 3, "x\\x00y", "NUL");
    check_escape("\xc2\x9b" "2J", 4, "\\u009b2J", "a C1 control (CSI) as \\u009b");
    check_escape("\xc2\xa0", 2, "\xc2\xa0", "U+00A0 is not a control");
    check_escape("\xff\xc3(", 3, "\\xff\\xc3(", "invalid UTF-8 byte by byte");
    check_escape("\xe2\x82", 2, "\\xe2\\x82", "a truncated sequence");

    /* every single byte and every pair: no control byte out, valid UTF-8 out */
    int bad = 0;
    for (int i = 0; i < 256; i++) {
        for (int k = 0; k < 256; k++) {
            char in[2] = {(char)i, (char)k};
            sb_buf_t b;
            sb_buf_init(&b);
            sb_line_escape(&b, sb_str(in, 2));
            for (size_t j = 0; j < b.len; j++)
                bad += (unsigned char)b.p[j] < 0x20 || (unsigned char)b.p[j] == 0x7f;
            bad += !sb_utf8_valid(b.p, b.len);
            bad += b.len > 1 && (unsigned char)b.p[0] == 0xc2 && (unsigned char)b.p[1] < 0xa0;
            sb_buf_cleanup(&b);
        }
    }
    is_int(bad, 0, "escape: all 65,536 two-byte inputs give valid UTF-8 without control bytes");
}

int main(void)
{
    RUN(framing_single);
    RUN(framing_byte_by_byte);
    RUN(framing_cr_handling);
    RUN(framing_many_lines_one_feed);
    RUN(framing_limits);
    RUN(parse_words);
    RUN(parse_json_flag);
    RUN(parse_empty);
    RUN(parse_word_limit);
    RUN(parse_binary);
    RUN(utf8);
    RUN(escape);
    return tap_done();
}
