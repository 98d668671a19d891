/* Unit tests for proto/twiml: every writer's document byte for byte, escaping of attribute values and text (the
 * five special characters, tab/LF/CR, control bytes, invalid UTF-8, U+FFFE), every writer's output passing the
 * checker; the checker on well-formed documents (declaration, byte order mark, comments, CDATA, entities, character
 * references, both quotes) and on many that are not (DOCTYPE, processing instructions, unknown entities, unbalanced
 * and badly nested tags, the wrong root, two roots, text outside the root, too deep, too big, bad UTF-8), with the
 * message and the byte each was found at. */
#include "proto/twiml.h"

#include "proto/err.h"
#include "tests/tap.h"

#include <stdbool.h>
#include <string.h>

#define DECL "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"

static char err[160];

static int check(const char *doc)
{
    return sb_twiml_check(sb_str_cstr(doc), err, sizeof err);
}

#define GOOD(doc)                                                                                                 \
    do {                                                                                                          \
        is_int(check(doc), 0, "well-formed: %s", doc);                                                            \
        is_str(err, "", "no message for %s", doc);                                                                \
    } while (0)

#define BAD(doc, msg)                                                                                             \
    do {                                                                                                          \
        is_int(check(doc), SB_EPARSE, "refused: %s", doc);                                                        \
        is_str(err, msg, "message for %s", doc);                                                                  \
    } while (0)

TEST(writers)
{
    sb_buf_t out;
    sb_buf_init(&out);

    sb_twiml_hangup(&out);
    is_str(out.p, DECL "<Response><Hangup/></Response>", "hangup");
    is_int(sb_twiml_check(sb_str(out.p, out.len), err, sizeof err), 0, "hangup passes the check");

    out.len = 0;
    sb_twiml_reject(&out, "busy");
    is_str(out.p, DECL "<Response><Reject reason=\"busy\"/></Response>", "reject busy");
    is_int(sb_twiml_check(sb_str(out.p, out.len), err, sizeof err), 0, "reject passes the check");
    out.len = 0;
    sb_twiml_reject(&out, "rejected");
    is_str(out.p, DECL "<Response><Reject reason=\"rejected\"/></Response>", "reject rejected");

    out.len = 0;
    sb_twiml_dial(&out, "+15551234567");
    is_str(out.p, DECL "<Response><Dial>+15551234567</Dial></Response>", "dial");
    is_int(sb_twiml_check(sb_str(out.p, out.len), err, sizeof err), 0, "dial passes the check");

    out.len = 0;
    sb_twiml_say_hangup(&out, "Goodbye <& see \"you\" 'soon'>");
    is_str(out.p, DECL "<Response><Say>Goodbye &lt;&amp; see &quot;you&quot; &apos;soon&apos;&gt;</Say><Hangup/>"
                       "</Response>",
           "say + hangup, text escaped");
    is_int(sb_twiml_check(sb_str(out.p, out.len), err, sizeof err), 0, "say passes the check");

    out.len = 0;
    sb_twiml_stream(&out, "wss://example.com/media?a=1&b=2", NULL, 0);
    is_str(out.p, DECL "<Response><Connect><Stream url=\"wss://example.com/media?a=1&amp;b=2\"/></Connect></Response>",
           "stream without parameters");
    is_int(sb_twiml_check(sb_str(out.p, out.len), err, sizeof err), 0, "stream passes the check");

    sb_twiml_param_t params[] = {{"FirstName", "Jane"}, {"q\"<&'\x01", "tab\tlf\ncr\r\x7f"}, {"", ""}};
    out.len = 0;
    sb_twiml_stream(&out, "wss://x/y", params, 3);
    is_str(out.p,
           DECL "<Response><Connect><Stream url=\"wss://x/y\"><Parameter name=\"FirstName\" value=\"Jane\"/>"
                "<Parameter name=\"q&quot;&lt;&amp;&apos;\" value=\"tab&#9;lf&#10;cr&#13;\x7f\"/>"
                "<Parameter name=\"\" value=\"\"/></Stream></Connect></Response>",
           "stream with parameters, attribute values escaped, the control byte dropped");
    is_int(sb_twiml_check(sb_str(out.p, out.len), err, sizeof err), 0, "stream with parameters passes the check");

    out.len = 0;
    sb_twiml_dial(&out, NULL);
    is_str(out.p, DECL "<Response><Dial></Dial></Response>", "NULL reads as empty");
    sb_buf_cleanup(&out);
}

TEST(escape)
{
    sb_buf_t out;
    sb_buf_init(&out);
    sb_twiml_escape(&out, SB_STR("a\"b<c&d'e>f"));
    is_str(out.p, "a&quot;b&lt;c&amp;d&apos;e&gt;f", "the five special characters");
    out.len = 0;
    static const char ctl[] = "\x00\x01\x1f x\x0b\x0c";
    sb_twiml_escape(&out, sb_str(ctl, sizeof ctl - 1));
    is_str(out.p, " x", "C0 controls dropped, NUL included");
    out.len = 0;
    sb_twiml_escape(&out, SB_STR("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
    is_str(out.p, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "valid UTF-8 kept");
    out.len = 0;
    sb_twiml_escape(&out, SB_STR("a\xff" "b\xc3" "c\xed\xa0\x80"));
    is_str(out.p, "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd",
           "each byte of invalid UTF-8 becomes U+FFFD");
    out.len = 0;
    sb_twiml_escape(&out, SB_STR("x\xef\xbf\xbey\xef\xbf\xbfz\xef\xbf\xbd"));
    is_str(out.p, "xyz\xef\xbf\xbd", "U+FFFE and U+FFFF dropped, U+FFFD kept");
    out.len = 0;
    sb_twiml_escape(&out, sb_str(NULL, 0));
    is_int(out.len, 0, "nothing from nothing");
    sb_buf_cleanup(&out);
}

TEST(well_formed)
{
    GOOD("<Response/>");
    GOOD("<Response></Response>");
    GOOD(DECL "<Response/>");
    GOOD("<?xml version='1.0'?><Response/>");
    GOOD("<?xml version=\"1.1\" encoding=\"utf-8\" standalone=\"yes\" ?>\n<Response/>\n");
    GOOD("\xef\xbb\xbf" DECL "<Response/>");
    GOOD(DECL "\n<!-- a comment -->\n<Response>\n  <!-- inside - with dashes -->\n  <Say voice=\"alice\" "
              "language='en-US'>Hello &amp; &lt;welcome&gt; &quot;friend&quot; &apos;x&apos; &#233; &#x1F600; "
              "&#xe9;</Say>\n  <Play loop=\"0\">https://x/y.mp3?a=1&amp;b=2</Play>\n</Response>\n<!-- after -->\n");
    GOOD("<Response><Say><![CDATA[<not> & a tag ]] ]>]]></Say></Response>");
    GOOD("<Response><Say>a > b ]] c</Say></Response>");
    GOOD("<Response  ><Say\n\tvoice = \"x\" ></Say ></Response\r\n>");
    GOOD("<Response><Gather input=\"dtmf speech\" action=\"/g?x=&#34;\"><Say>\xc3\xa9\xe2\x82\xac</Say></Gather>"
         "<Pause length=\"2\"/><Redirect>/next</Redirect></Response>");
    GOOD("<Response><ns:x xmlns:ns=\"u\" a.b-c_d=\"'\" e='\"'/></Response>");
    GOOD("<Response><!----></Response>");
    GOOD("<Response>\t\r\n</Response>");
}

TEST(not_well_formed)
{
    BAD("", "no root element");
    BAD("   \n", "no root element");
    BAD(DECL, "no root element");
    BAD("hello", "text before the root element at byte 0");
    BAD("<foo/>", "root is <foo>, not <Response>");
    BAD("<response/>", "root is <response>, not <Response>");
    BAD("<ResponseX/>", "root is <ResponseX>, not <Response>");
    BAD("<Response/><Response/>", "a second root element at byte 11");
    BAD("<Response></Response>x", "text after the root element at byte 21");
    BAD("<Response></Response>&amp;", "text after the root element at byte 21");
    BAD("<!DOCTYPE Response><Response/>", "DOCTYPE not allowed at byte 0");
    BAD(DECL "<!DOCTYPE Response [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><Response>&x;</Response>",
        "DOCTYPE not allowed at byte 38");
    BAD("<Response><!DOCTYPE x></Response>", "markup declaration not allowed at byte 10");
    BAD("<Response><!ENTITY x \"y\"></Response>", "markup declaration not allowed at byte 10");
    BAD("<?php echo 1; ?><Response/>", "processing instruction not allowed at byte 0");
    BAD(DECL "<?xml-stylesheet href=\"x\"?><Response/>", "processing instruction not allowed at byte 38");
    BAD("<Response><?pi x?></Response>", "processing instruction not allowed at byte 10");
    BAD(" " DECL "<Response/>", "processing instruction not allowed at byte 1");
    BAD(DECL DECL "<Response/>", "processing instruction not allowed at byte 38");
    BAD("<?xml?><Response/>", "XML declaration without a version at byte 0");
    BAD("<?xml encoding=\"UTF-8\"?><Response/>", "bad XML declaration at byte 6");
    BAD("<?xml version=\"2.0\"?><Response/>", "bad XML declaration at byte 15");
    BAD("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Response/>", "encoding other than UTF-8 at byte 30");
    BAD("<?xml version=\"1.0\" standalone=\"maybe\"?><Response/>", "bad XML declaration at byte 32");
    BAD("<?xml version=\"1.0\"standalone=\"yes\"?><Response/>", "bad XML declaration at byte 19");
    BAD("<?xml version=\"1.0\" standalone=\"yes\" encoding=\"UTF-8\"?><Response/>", "bad XML declaration at byte 37");
    BAD("<?xml version=\"1.0\"", "bad XML declaration at byte 19");

    BAD("<Response>&nbsp;</Response>", "unknown entity at byte 10");
    BAD("<Response>&amp</Response>", "unknown entity at byte 10");
    BAD("<Response>& </Response>", "unknown entity at byte 10");
    BAD("<Response a=\"&x;\"/>", "unknown entity at byte 13");
    BAD("<Response>&#;</Response>", "bad character reference at byte 10");
    BAD("<Response>&#x;</Response>", "bad character reference at byte 10");
    BAD("<Response>&#12a;</Response>", "bad character reference at byte 10");
    BAD("<Response>&#0;</Response>", "character reference to a character XML cannot carry at byte 10");
    BAD("<Response>&#x1;</Response>", "character reference to a character XML cannot carry at byte 10");
    BAD("<Response>&#xD800;</Response>", "character reference to a character XML cannot carry at byte 10");
    BAD("<Response>&#xFFFE;</Response>", "character reference to a character XML cannot carry at byte 10");
    BAD("<Response>&#x110000;</Response>", "character reference to a character XML cannot carry at byte 10");
    BAD("<Response>&#99999999999999999999999;</Response>",
        "character reference to a character XML cannot carry at byte 10");

    BAD("<Response>", "unclosed <Response> at the end");
    BAD("<Response><Say>", "unclosed <Say> at the end");
    BAD("<Response><Say></Response>", "unbalanced </Response> at byte 15");
    BAD("<Response><Say></say></Response>", "unbalanced </say> at byte 15");
    BAD("<Response><a><b></a></b></Response>", "unbalanced </a> at byte 16");
    BAD("<Response></Say></Response>", "unbalanced </Say> at byte 10");
    BAD("</Response>", "expected a name at byte 1");
    BAD("<Response></ Response>", "expected a name at byte 12");
    BAD("<Response></Response x>", "expected '>' at byte 21");
    BAD("< Response/>", "expected a name at byte 1");
    BAD("<1Response/>", "expected a name at byte 1");
    BAD("<Response\xc3\xa9/>", "expected a blank before an attribute at byte 9");
    BAD("<Response a=\"1\"b=\"2\"/>", "expected a blank before an attribute at byte 15");
    BAD("<Response a=\"1\" a=\"2\"/>", "duplicate attribute at byte 16");
    BAD("<Response a/>", "expected '=' at byte 11");
    BAD("<Response a=1/>", "expected a quoted value at byte 12");
    BAD("<Response a=\"<\"/>", "'<' in an attribute value at byte 13");
    BAD("<Response a=\"x/>", "unterminated attribute value at byte 10");
    BAD("<Response a=\"x\"", "unterminated tag at byte 15");
    BAD("<Response><Say>]]></Say></Response>", "\"]]>\" in text at byte 15");
    BAD("<Response><![CDATA[x</Response>", "unterminated CDATA section at byte 10");
    BAD("<Response><!-- a -- b --></Response>", "\"--\" inside a comment at byte 17");
    BAD("<Response><!-- a ---></Response>", "\"--\" inside a comment at byte 17");
    BAD("<Response><!-- a </Response>", "unterminated comment at byte 10");
    BAD("<!-- x -- y --><Response/>", "\"--\" inside a comment at byte 7");
}

TEST(characters)
{
    is_int(sb_twiml_check(SB_STR("<Response>\xc3</Response>"), err, sizeof err), SB_EPARSE, "truncated UTF-8");
    is_str(err, "not valid UTF-8", "truncated UTF-8: message");
    is_int(check("<Response>\xc0\xbc</Response>"), SB_EPARSE, "overlong '<'");
    is_str(err, "not valid UTF-8", "overlong: message");
    is_int(check("<Response>\xed\xa0\x80</Response>"), SB_EPARSE, "a surrogate");
    is_int(check("<Response>\xff</Response>"), SB_EPARSE, "0xff");
    BAD("<Response>\x01</Response>", "character XML cannot carry at byte 10");
    BAD("<Response a=\"\x1b\"/>", "character XML cannot carry at byte 13");
    BAD("<Response>\xef\xbf\xbf</Response>", "character XML cannot carry at byte 10");
    static const char nul[] = "<Response>\0</Response>";
    is_int(sb_twiml_check(sb_str(nul, sizeof nul - 1), err, sizeof err), SB_EPARSE, "a NUL");
    is_str(err, "character XML cannot carry at byte 10", "a NUL: message");
}

TEST(limits)
{
    sb_buf_t b;
    sb_buf_init(&b);

    /* depth: the root and 31 more open at once is the most */
    for (int k = 0; k < SB_TWIML_MAX_DEPTH; k++)
        sb_buf_puts(&b, k ? "<a>" : "<Response>");
    for (int k = SB_TWIML_MAX_DEPTH; k-- > 0;)
        sb_buf_puts(&b, k ? "</a>" : "</Response>");
    is_int(sb_twiml_check(sb_str(b.p, b.len), err, sizeof err), 0, "depth 32: %s", err);
    b.len = 0;
    for (int k = 0; k < SB_TWIML_MAX_DEPTH; k++)
        sb_buf_puts(&b, k ? "<a>" : "<Response>");
    size_t at = b.len;
    sb_buf_puts(&b, "<b/>");
    for (int k = SB_TWIML_MAX_DEPTH; k-- > 0;)
        sb_buf_puts(&b, k ? "</a>" : "</Response>");
    is_int(sb_twiml_check(sb_str(b.p, b.len), err, sizeof err), SB_EPARSE, "depth 33, even an empty element");
    char want[64];
    snprintf(want, sizeof want, "nested deeper than 32 at byte %zu", at);
    is_str(err, want, "too deep: message");
    b.len = 0;
    sb_buf_puts(&b, "<Response>");
    for (int k = 0; k < 20000; k++)
        sb_buf_puts(&b, "<a>");
    is_int(sb_twiml_check(sb_str(b.p, b.len), err, sizeof err), SB_EPARSE, "20,000 open tags, no stack overflow");

    /* size */
    b.len = 0;
    sb_buf_puts(&b, "<Response><Say>");
    while (b.len < SB_TWIML_MAX_BYTES - strlen("</Say></Response>"))
        sb_buf_puts(&b, "x");
    sb_buf_puts(&b, "</Say></Response>");
    is_int(b.len, SB_TWIML_MAX_BYTES, "a document of exactly the limit");
    is_int(sb_twiml_check(sb_str(b.p, b.len), err, sizeof err), 0, "the limit is allowed");
    sb_buf_puts(&b, "\n");
    is_int(sb_twiml_check(sb_str(b.p, b.len), err, sizeof err), SB_E2BIG, "one byte more is too big");
    is_str(err, "document is 65537 bytes, more than 65536", "too big: message");

    /* attributes */
    b.len = 0;
    sb_buf_puts(&b, "<Response");
    for (int k = 0; k < 32; k++)
        sb_buf_printf(&b, " a%d=\"%d\"", k, k);
    sb_buf_puts(&b, "/>");
    is_int(sb_twiml_check(sb_str(b.p, b.len), err, sizeof err), 0, "32 attributes");
    b.len -= 2;
    sb_buf_puts(&b, " z=\"\"/>");
    is_int(sb_twiml_check(sb_str(b.p, b.len), err, sizeof err), SB_EPARSE, "33 attributes");
    ok(strncmp(err, "more than 32 attributes", 23) == 0, "too many attributes: %s", err);

    /* the root's name in the message is cut to 32 characters */
    b.len = 0;
    sb_buf_puts(&b, "<");
    for (int k = 0; k < 40; k++)
        sb_buf_puts(&b, "N");
    sb_buf_puts(&b, "/>");
    is_int(sb_twiml_check(sb_str(b.p, b.len), err, sizeof err), SB_EPARSE, "a long wrong root");
    is_str(err, "root is <NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN>, not <Response>", "a long root name is cut");
    sb_buf_cleanup(&b);

    is_int(sb_twiml_check(SB_STR("<x/>"), NULL, 0), SB_EPARSE, "no error buffer");
    is_int(sb_twiml_check(sb_str(NULL, 0), err, sizeof err), SB_EPARSE, "no document at all");
}

int main(void)
{
    RUN(writers);
    RUN(escape);
    RUN(well_formed);
    RUN(not_well_formed);
    RUN(characters);
    RUN(limits);
    return tap_done();
}
