/* Unit tests for adapters/twilio: Twilio webhook forms (inbound SMS, MMS, WhatsApp; message status callbacks;
 * incoming calls and call status callbacks) into events and call records. The payloads are shaped after ones
 * Twilio really sends (parameter names, order, encoding, the "whatsapp:" prefix, the extra fields we ignore), with
 * made-up sids and numbers. Failures are checked for their code, for the field their message names, and for leaving
 * the output zeroed. */
#include "adapters/twilio.h"

#include "proto/err.h"
#include "proto/form.h"
#include "tests/tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACCOUNT "AC0123456789abcdef0123456789abcdef"
#define SMS_SID "SM1f0e2d3c4b5a69788796a5b4c3d2e1f0"
#define MMS_SID "MM0fe83458b74a1f626eb0da4685ab28b5"
#define MEDIA_URL(n) "https%3A%2F%2Fapi.twilio.com%2F2010-04-01%2FAccounts%2F" ACCOUNT "%2FMessages%2F" MMS_SID \
                     "%2FMedia%2FME29644fd97901859108bc35e210b588f" n
#define MEDIA_URL_DECODED(n) "https://api.twilio.com/2010-04-01/Accounts/" ACCOUNT "/Messages/" MMS_SID \
                             "/Media/ME29644fd97901859108bc35e210b588f" n

/* An inbound SMS to a US long code. */
static const char sms_body[] =
    "ToCountry=US&ToState=CA&SmsMessageSid=" SMS_SID "&NumMedia=0&ToCity=SAN+FRANCISCO&FromZip=94105&SmsSid=" SMS_SID
    "&FromState=CA&SmsStatus=received&FromCity=SAN+FRANCISCO&Body=Hello+there%21+Is+my+order+%2342+ready%3F&"
    "FromCountry=US&To=%2B14155552671&ToZip=94105&NumSegments=1&MessageSid=" SMS_SID "&AccountSid=" ACCOUNT
    "&From=%2B14155550100&ApiVersion=2010-04-01";

/* An MMS with three attachments and no text. */
static const char mms_body[] =
    "ToCountry=US&MediaContentType0=image%2Fjpeg&ToState=MI&SmsMessageSid=" MMS_SID "&NumMedia=3&ToCity=UTICA&"
    "FromZip=28394&SmsSid=" MMS_SID "&FromState=NC&SmsStatus=received&FromCity=VASS&Body=&FromCountry=US&"
    "To=%2B15869913930&ToZip=48316&NumSegments=1&MessageSid=" MMS_SID "&AccountSid=" ACCOUNT "&From=%2B19105563874&"
    "MediaUrl0=" MEDIA_URL("0") "&MediaContentType1=image%2Fpng&MediaUrl1=" MEDIA_URL("1") "&"
    "MediaContentType2=video%2Fmp4&MediaUrl2=" MEDIA_URL("2") "&ApiVersion=2010-04-01";

/* A WhatsApp text from the sandbox number's point of view, with the sender's profile name. */
static const char wa_body[] =
    "SmsMessageSid=SM01cd3925943ee3504f8a5c42d88efdf6&NumMedia=0&ProfileName=Jo%C3%A3o+Silva&"
    "SmsSid=SM01cd3925943ee3504f8a5c42d88efdf6&WaId=5582981234567&SmsStatus=received&Body=Ol%C3%A1%2C+tudo+bem%3F+"
    "%F0%9F%98%80&To=whatsapp%3A%2B14155238886&NumSegments=1&ReferralNumMedia=0&"
    "MessageSid=SM01cd3925943ee3504f8a5c42d88efdf6&AccountSid=" ACCOUNT "&From=whatsapp%3A%2B5582981234567&"
    "ApiVersion=2010-04-01";

/* A WhatsApp status callback for a message we sent. */
static const char wa_status_body[] =
    "SmsSid=SMc4c96554c26604013c6b7f1b4b6dd4e2&SmsStatus=sent&MessageStatus=sent&ChannelToAddress=%2B5582981234567&"
    "To=whatsapp%3A%2B5582981234567&ChannelPrefix=whatsapp&MessageSid=SMc4c96554c26604013c6b7f1b4b6dd4e2&"
    "AccountSid=" ACCOUNT "&StructuredMessage=false&From=whatsapp%3A%2B14155238886&ApiVersion=2010-04-01&"
    "ChannelInstallSid=XEcc20d939f803ee381f2442185e0e1f2a";

/* An SMS status callback: undelivered, with the error code Twilio gives. */
static const char sms_status_body[] =
    "ErrorCode=30003&SmsSid=" SMS_SID "&SmsStatus=undelivered&MessageStatus=undelivered&To=%2B15558675310&"
    "MessagingServiceSid=MGdb23ec0f89ee2632e46e91d8128f5e2b&MessageSid=" SMS_SID "&AccountSid=" ACCOUNT
    "&From=%2B15017122661&ApiVersion=2010-04-01&ErrorMessage=Unreachable+destination+handset";

/* An incoming call (the parameter set of twilio-python's signature tests). */
static const char call_body[] =
    "FromZip=89449&From=%2B15306666666&FromCity=SOUTH+LAKE+TAHOE&ApiVersion=2010-04-01&To=%2B15306384866&"
    "CallStatus=ringing&CalledState=CA&FromState=CA&Direction=inbound&ToCity=OAKLAND&ToZip=94612&"
    "CallerCity=SOUTH+LAKE+TAHOE&FromCountry=US&CallerName=CA+Wireless+Call&CalledCity=OAKLAND&CalledCountry=US&"
    "Caller=%2B15306666666&CallerZip=89449&AccountSid=" ACCOUNT "&Called=%2B15306384866&CallerCountry=US&"
    "CalledZip=94612&CallSid=CAd800bb12c0426a7ea4230e492fef2a4f&CallerState=CA&ToCountry=US&ToState=CA";

/* The final status callback of an outbound call. */
static const char call_done_body[] =
    "Called=%2B551135892112&ToState=SP&CallerCountry=US&Direction=outbound-api&"
    "Timestamp=Sun%2C+25+Mar+2018+09%3A53%3A19+%2B0000&CallbackSource=call-progress-events&CallerState=NY&ToZip=&"
    "SequenceNumber=3&To=%2B551135892112&CallSid=CAbe982f58915a2def4cf7aaa1f1766236&ToCountry=BR&CallerZip=10004&"
    "CalledZip=&ApiVersion=2010-04-01&CallStatus=completed&CalledCity=S%C3%A3o+Paulo&Duration=1&From=%2B16466063895&"
    "CallDuration=49&AccountSid=" ACCOUNT "&CalledCountry=BR&CallerCity=NEW+YORK&ToCity=S%C3%A3o+Paulo&"
    "FromCountry=US&Caller=%2B16466063895&FromCity=NEW+YORK&CalledState=SP&FromZip=10004&AnsweredBy=human&"
    "FromState=NY";

static char err[256];

typedef int (*event_parser)(const sb_form_t *, sb_event_t *, char *, size_t);
typedef int (*call_parser)(const sb_form_t *, sb_twilio_call_t *, char *, size_t);

static bool zeroed(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* Parses body as a form and runs parse on it; ev must be zeroed. */
static int run_event(event_parser parse, const char *body, size_t len, sb_event_t *ev)
{
    sb_form_t f;
    err[0] = '\0';
    int rc = sb_form_parse(&f, sb_str(body, len));
    if (rc < 0)
        return 1000 + rc; /* not a form: a test bug, reported as an impossible code */
    rc = parse(&f, ev, err, sizeof err);
    sb_form_cleanup(&f);
    return rc;
}

#define EVENT(parse, body, ev) run_event((parse), (body), strlen(body), (ev))

static int run_call(call_parser parse, const char *body, sb_twilio_call_t *call)
{
    sb_form_t f;
    err[0] = '\0';
    int rc = sb_form_parse(&f, sb_str_cstr(body));
    if (rc < 0)
        return 1000 + rc;
    rc = parse(&f, call, err, sizeof err);
    sb_form_cleanup(&f);
    return rc;
}

/* Expects parse to fail on body with code want and a message containing needle, leaving ev zeroed. */
static void event_fails(event_parser parse, const char *body, int want, const char *needle, const char *what)
{
    sb_event_t ev = {0};
    int rc = EVENT(parse, body, &ev);
    is_int(rc, want, "%s: refused", what);
    ok(strstr(err, needle) != NULL, "%s: message names it (\"%s\")", what, err);
    ok(zeroed(&ev, sizeof ev), "%s: event left zeroed", what);
    sb_event_cleanup(&ev);
}

static void call_fails(call_parser parse, const char *body, const char *needle, const char *what)
{
    sb_twilio_call_t c = {0};
    is_int(run_call(parse, body, &c), SB_EPARSE, "%s: refused", what);
    ok(strstr(err, needle) != NULL, "%s: message names it (\"%s\")", what, err);
    ok(zeroed(&c, sizeof c), "%s: call left zeroed", what);
    sb_twilio_call_cleanup(&c);
}

TEST(sms)
{
    sb_event_t ev = {0};
    is_int(EVENT(sb_twilio_parse_message, sms_body, &ev), 0, "inbound SMS parses (%s)", err);
    is_int(ev.kind, SB_EV_MESSAGE, "a message");
    is_int(ev.channel, SB_CH_TWILIO_SMS, "SMS channel");
    is_str(ev.provider_id, SMS_SID, "MessageSid");
    is_str(ev.from, "+14155550100", "From decoded");
    is_str(ev.to, "+14155552671", "To decoded");
    is_str(ev.account, "+14155552671", "account is our number (To)");
    is_str(ev.body, "Hello there! Is my order #42 ready?", "Body decoded");
    ok(ev.profile_name == NULL, "no profile name for SMS");
    is_int((long long)ev.nmedia, 0, "no media");
    is_int(ev.timestamp, 0, "Twilio gives no time");
    ok(ev.status == NULL && ev.error_code == NULL && ev.error_message == NULL, "status fields unset");
    sb_event_cleanup(&ev);
    ok(zeroed(&ev, sizeof ev), "cleanup zeroes");
}

TEST(mms)
{
    sb_event_t ev = {0};
    is_int(EVENT(sb_twilio_parse_message, mms_body, &ev), 0, "MMS with three media parses (%s)", err);
    is_str(ev.provider_id, MMS_SID, "MM sid");
    is_str(ev.body, "", "empty Body is \"\"");
    is_int((long long)ev.nmedia, 3, "three media");
    is_str(ev.media[0].url, MEDIA_URL_DECODED("0"), "MediaUrl0 decoded");
    is_str(ev.media[0].content_type, "image/jpeg", "MediaContentType0");
    is_str(ev.media[1].url, MEDIA_URL_DECODED("1"), "MediaUrl1");
    is_str(ev.media[1].content_type, "image/png", "MediaContentType1");
    is_str(ev.media[2].url, MEDIA_URL_DECODED("2"), "MediaUrl2");
    is_str(ev.media[2].content_type, "video/mp4", "MediaContentType2");
    ok(ev.media[0].id == NULL && ev.media[3].url == NULL, "no ids, nothing past nmedia");
    is_int(ev.channel, SB_CH_TWILIO_SMS, "MMS is the SMS channel");
    sb_event_cleanup(&ev);

    /* media without a content type, and without Body at all */
    static const char no_type[] = "MessageSid=MM1&From=%2B1555&To=%2B1666&NumMedia=1&MediaUrl0=https%3A%2F%2Fx%2Fm";
    is_int(EVENT(sb_twilio_parse_message, no_type, &ev), 0, "MediaContentType optional");
    ok(ev.media[0].content_type == NULL, "absent content type is NULL");
    is_str(ev.body, "", "absent Body is \"\"");
    sb_event_cleanup(&ev);

    /* extra MediaUrlN beyond NumMedia are ignored */
    static const char extra[] = "MessageSid=MM1&From=%2B1555&To=%2B1666&NumMedia=1&MediaUrl0=a&MediaUrl1=b";
    is_int(EVENT(sb_twilio_parse_message, extra, &ev), 0, "extra MediaUrl1");
    is_int((long long)ev.nmedia, 1, "NumMedia counts");
    sb_event_cleanup(&ev);
}

TEST(media_limits)
{
    char body[2048];
    sb_event_t ev = {0};
    int len = snprintf(body, sizeof body, "MessageSid=MM1&From=%%2B1555&To=%%2B1666&NumMedia=%d", SB_EVENT_MAX_MEDIA);
    for (int i = 0; i < SB_EVENT_MAX_MEDIA; i++)
        len += snprintf(body + len, sizeof body - (size_t)len, "&MediaUrl%d=https%%3A%%2F%%2Fm%%2F%d&MediaContentType%d=image%%2Fgif",
                        i, i, i);
    is_int(EVENT(sb_twilio_parse_message, body, &ev), 0, "%d media accepted (%s)", SB_EVENT_MAX_MEDIA, err);
    is_int((long long)ev.nmedia, SB_EVENT_MAX_MEDIA, "all of them");
    is_str(ev.media[SB_EVENT_MAX_MEDIA - 1].url, "https://m/9", "the last one");
    sb_event_cleanup(&ev);

    event_fails(sb_twilio_parse_message, "MessageSid=MM1&From=a&To=b&NumMedia=11", SB_EPARSE, "NumMedia",
                "NumMedia 11");
    event_fails(sb_twilio_parse_message, "MessageSid=MM1&From=a&To=b&NumMedia=99999999999999999999999", SB_EPARSE,
                "NumMedia", "NumMedia overflowing");
    static const char *const not_numbers[] = {"abc", "-1", "%2B1", "+1", "1.0", "0x1", "", "1+", "%EF%BC%91"};
    for (size_t i = 0; i < sizeof not_numbers / sizeof not_numbers[0]; i++) {
        snprintf(body, sizeof body, "MessageSid=MM1&From=a&To=b&NumMedia=%s", not_numbers[i]);
        event_fails(sb_twilio_parse_message, body, SB_EPARSE, "NumMedia: not a number", not_numbers[i]);
    }
    is_int(EVENT(sb_twilio_parse_message, "MessageSid=MM1&From=a&To=b&NumMedia=00", &ev), 0, "leading zeros");
    sb_event_cleanup(&ev);

    /* a MediaUrl missing after good ones: what was copied is freed (ASan checks), the message names the field */
    static const char missing[] = "MessageSid=MM1&From=a&To=b&NumMedia=3&MediaUrl0=u0&MediaContentType0=t0&"
                                  "MediaUrl1=u1&MediaUrl2=";
    event_fails(sb_twilio_parse_message, missing, SB_EPARSE, "MediaUrl2", "empty MediaUrl2");
    event_fails(sb_twilio_parse_message, "MessageSid=MM1&From=a&To=b&NumMedia=1&MediaUrl=x", SB_EPARSE,
                "MediaUrl0", "missing MediaUrl0");
    event_fails(sb_twilio_parse_message, "MessageSid=MM1&From=a&To=b&NumMedia=2&MediaUrl0=x&MediaUrl1=a%00b",
                SB_EPARSE, "MediaUrl1: contains a NUL", "NUL in MediaUrl1");
}

TEST(whatsapp)
{
    sb_event_t ev = {0};
    is_int(EVENT(sb_twilio_parse_message, wa_body, &ev), 0, "WhatsApp message parses (%s)", err);
    is_int(ev.channel, SB_CH_TWILIO_WHATSAPP, "WhatsApp channel");
    is_str(ev.from, "+5582981234567", "prefix stripped from From");
    is_str(ev.to, "+14155238886", "prefix stripped from To");
    is_str(ev.account, "+14155238886", "account stripped too");
    is_str(ev.profile_name, "Jo\xc3\xa3o Silva", "ProfileName, UTF-8");
    is_str(ev.body, "Ol\xc3\xa1, tudo bem? \xf0\x9f\x98\x80", "Body with an emoji");
    is_str(ev.provider_id, "SM01cd3925943ee3504f8a5c42d88efdf6", "MessageSid");
    sb_event_cleanup(&ev);

    /* a WhatsApp image with a caption */
    static const char image[] =
        "SmsMessageSid=MM2e0b3c1d2e3f40516273849a0b1c2d3e&NumMedia=1&ProfileName=Ana&SmsSid=MM2e0b3c1d2e3f40516273849a"
        "0b1c2d3e&WaId=447700900123&SmsStatus=received&Body=my+receipt&To=whatsapp%3A%2B14155238886&NumSegments=1&"
        "MessageType=image&MediaContentType0=image%2Fjpeg&MediaUrl0=https%3A%2F%2Fapi.twilio.com%2Fm%2FME1&"
        "MessageSid=MM2e0b3c1d2e3f40516273849a0b1c2d3e&AccountSid=" ACCOUNT "&From=whatsapp%3A%2B447700900123&"
        "ApiVersion=2010-04-01";
    is_int(EVENT(sb_twilio_parse_message, image, &ev), 0, "WhatsApp image");
    is_int((long long)ev.nmedia, 1, "one medium");
    is_str(ev.media[0].content_type, "image/jpeg", "its type");
    is_str(ev.from, "+447700900123", "sender");
    sb_event_cleanup(&ev);

    is_int(EVENT(sb_twilio_parse_message, "MessageSid=SM1&From=WhatsApp%3A%2B1&To=WHATSAPP%3A%2B2", &ev), 0,
           "prefix case-insensitive");
    is_int(ev.channel, SB_CH_TWILIO_WHATSAPP, "still WhatsApp");
    is_str(ev.from, "+1", "stripped");
    sb_event_cleanup(&ev);

    is_int(EVENT(sb_twilio_parse_message, "MessageSid=SM1&From=whatsapp%3A%2B1&To=whatsapp%3A%2B2&ProfileName=", &ev),
           0, "empty ProfileName");
    ok(ev.profile_name == NULL, "is NULL");
    sb_event_cleanup(&ev);

    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=whatsapp%3A%2B1&To=%2B2", SB_EPARSE,
                "different channels", "WhatsApp From, SMS To");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=%2B1&To=whatsapp%3A%2B2", SB_EPARSE,
                "different channels", "SMS From, WhatsApp To");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=whatsapp%3A&To=whatsapp%3A%2B2", SB_EPARSE,
                "From: empty address", "bare prefix");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=messenger%3A123&To=messenger%3A456", SB_EPARSE,
                "From: unsupported channel prefix", "messenger:");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=%2B1&To=rcs%3Abrand", SB_EPARSE,
                "To: unsupported channel prefix", "rcs:");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=whatsapp%3Awhatsapp%3A%2B1&To=whatsapp%3A%2B2", SB_EPARSE,
                "From: unsupported channel prefix", "prefix twice");
}

TEST(message_fields)
{
    sb_event_t ev = {0};

    /* sid fallbacks, in order */
    is_int(EVENT(sb_twilio_parse_message, "SmsMessageSid=SM2&SmsSid=SM3&From=a&To=b", &ev), 0, "SmsMessageSid");
    is_str(ev.provider_id, "SM2", "used when MessageSid is absent");
    sb_event_cleanup(&ev);
    is_int(EVENT(sb_twilio_parse_message, "SmsSid=SM3&From=a&To=b&MessageSid=", &ev), 0, "SmsSid");
    is_str(ev.provider_id, "SM3", "used last; an empty MessageSid counts as absent");
    sb_event_cleanup(&ev);

    /* short codes and alphanumeric senders are SMS addresses */
    is_int(EVENT(sb_twilio_parse_message, "MessageSid=SM1&From=%2B14133881111&To=384387&Body=John+Cruz", &ev), 0,
           "short code");
    is_str(ev.account, "384387", "account is the short code");
    sb_event_cleanup(&ev);

    /* duplicated fields: the first counts */
    is_int(EVENT(sb_twilio_parse_message, "MessageSid=SM1&From=%2B1&From=%2B9&To=%2B2&Body=a&Body=b", &ev), 0, "dups");
    is_str(ev.from, "+1", "first From");
    is_str(ev.body, "a", "first Body");
    sb_event_cleanup(&ev);

    /* into a list, as the HTTP layer will do */
    sb_event_list_t list = {0};
    sb_event_t *slot = sb_event_list_push(&list);
    is_int(EVENT(sb_twilio_parse_message, sms_body, slot), 0, "into an event list");
    sb_event_list_cleanup(&list);

    event_fails(sb_twilio_parse_message, "", SB_EPARSE, "missing MessageSid", "empty form");
    event_fails(sb_twilio_parse_message, "From=a&To=b&Body=x", SB_EPARSE, "missing MessageSid", "no sid");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&To=b", SB_EPARSE, "missing From", "no From");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=&To=b", SB_EPARSE, "missing From", "empty From");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=a", SB_EPARSE, "missing To", "no To");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=a&To=b&Body=x%00y", SB_EPARSE, "Body: contains a NUL",
                "NUL in Body");
    event_fails(sb_twilio_parse_message, "MessageSid=SM%001&From=a&To=b", SB_EPARSE, "MessageSid: contains a NUL",
                "NUL in the sid");
    event_fails(sb_twilio_parse_message, "MessageSid=SM1&From=a&To=b&ProfileName=%00", SB_EPARSE, "ProfileName",
                "NUL in ProfileName");
}

TEST(errors_buffer)
{
    sb_form_t f;
    sb_event_t ev = {0};
    sb_form_parse(&f, SB_STR("From=a"));
    is_int(sb_twilio_parse_message(&f, &ev, NULL, 0), SB_EPARSE, "err may be NULL with errlen 0");
    char tiny[5] = "xxxx";
    is_int(sb_twilio_parse_message(&f, &ev, tiny, sizeof tiny), SB_EPARSE, "tiny buffer");
    is_str(tiny, "miss", "message truncated and terminated");
    sb_form_cleanup(&f);
}

TEST(status)
{
    sb_event_t ev = {0};
    is_int(EVENT(sb_twilio_parse_status, wa_status_body, &ev), 0, "WhatsApp status callback (%s)", err);
    is_int(ev.kind, SB_EV_STATUS, "a status");
    is_int(ev.channel, SB_CH_TWILIO_WHATSAPP, "WhatsApp channel");
    is_str(ev.provider_id, "SMc4c96554c26604013c6b7f1b4b6dd4e2", "MessageSid");
    is_str(ev.status, "sent", "sent");
    is_str(ev.account, "+14155238886", "account is our number (From), stripped");
    ok(ev.error_code == NULL && ev.error_message == NULL, "no error");
    ok(ev.from == NULL && ev.to == NULL && ev.body == NULL && ev.nmedia == 0, "message fields unset");
    sb_event_cleanup(&ev);

    is_int(EVENT(sb_twilio_parse_status, sms_status_body, &ev), 0, "SMS status callback (%s)", err);
    is_int(ev.channel, SB_CH_TWILIO_SMS, "SMS channel");
    is_str(ev.status, "undelivered", "undelivered");
    is_str(ev.error_code, "30003", "ErrorCode");
    is_str(ev.error_message, "Unreachable destination handset", "ErrorMessage");
    is_str(ev.account, "+15017122661", "account = From");
    sb_event_cleanup(&ev);

    /* older callbacks: SmsSid and SmsStatus only; To absent is fine */
    is_int(EVENT(sb_twilio_parse_status, "SmsSid=SM9&SmsStatus=delivered&From=%2B1", &ev), 0, "Sms* fallbacks");
    is_str(ev.provider_id, "SM9", "SmsSid");
    is_str(ev.status, "delivered", "SmsStatus");
    sb_event_cleanup(&ev);
    is_int(EVENT(sb_twilio_parse_status, "MessageSid=SM9&MessageStatus=read&SmsStatus=sent&From=%2B1&ErrorCode=", &ev),
           0, "MessageStatus wins over SmsStatus");
    is_str(ev.status, "read", "read");
    ok(ev.error_code == NULL, "empty ErrorCode is NULL");
    sb_event_cleanup(&ev);

    event_fails(sb_twilio_parse_status, "MessageStatus=sent&From=a", SB_EPARSE, "missing MessageSid", "no sid");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&From=a", SB_EPARSE, "missing MessageStatus", "no status");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&MessageStatus=sent", SB_EPARSE, "missing From", "no From");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&MessageStatus=huh&From=a", SB_EPARSE,
                "MessageStatus: unknown status 'huh'", "unknown status");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&MessageStatus=Delivered&From=a", SB_EPARSE, "'Delivered'",
                "status case matters");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&MessageStatus=%1B%5B2J%C3%A9&From=a", SB_EPARSE, "'?[2J?\?'",
                "control bytes not echoed");
    event_fails(sb_twilio_parse_status,
                "MessageSid=SM1&MessageStatus=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa&From=a", SB_EPARSE,
                "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'", "long status cut");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&MessageStatus=received&From=a", SB_ENOENT, "inbound",
                "received: not ours");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&SmsStatus=receiving&From=a", SB_ENOENT,
                "SmsStatus 'receiving'", "receiving: not ours");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&MessageStatus=sent&From=whatsapp%3A%2B1&To=%2B2", SB_EPARSE,
                "different channels", "channel mismatch");
    event_fails(sb_twilio_parse_status, "MessageSid=SM1&MessageStatus=sent&From=a&ErrorMessage=x%00", SB_EPARSE,
                "ErrorMessage: contains a NUL", "NUL in ErrorMessage");
}

TEST(status_mapping)
{
    static const struct {
        const char *twilio, *ours;
        int rc;
    } cases[] = {
        {"accepted", "queued", 0},
        {"scheduled", "queued", 0},
        {"queued", "queued", 0},
        {"sending", "sent", 0},
        {"sent", "sent", 0},
        {"delivered", "delivered", 0},
        {"partially_delivered", "delivered", 0},
        {"read", "read", 0},
        {"undelivered", "undelivered", 0},
        {"failed", "failed", 0},
        {"canceled", "failed", 0},
        {"receiving", NULL, SB_ENOENT},
        {"received", NULL, SB_ENOENT},
        {"", NULL, SB_EPARSE},
        {"cancelled", NULL, SB_EPARSE},
        {"SENT", NULL, SB_EPARSE},
        {"sent ", NULL, SB_EPARSE},
        {"partially", NULL, SB_EPARSE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *out = "untouched";
        is_int(sb_twilio_status_normalize(sb_str_cstr(cases[i].twilio), &out), cases[i].rc, "'%s': code",
               cases[i].twilio);
        is_str(out, cases[i].ours ? cases[i].ours : "untouched", "'%s': normalized", cases[i].twilio);
        if (cases[i].rc == 0) {
            char body[128];
            sb_event_t ev = {0};
            snprintf(body, sizeof body, "MessageSid=SM1&MessageStatus=%s&From=%%2B1", cases[i].twilio);
            is_int(EVENT(sb_twilio_parse_status, body, &ev), 0, "'%s' through the parser", cases[i].twilio);
            is_str(ev.status, cases[i].ours, "'%s' in the event", cases[i].twilio);
            sb_event_cleanup(&ev);
        }
    }
    /* counted input: the status need not be NUL-terminated */
    const char *out = NULL;
    is_int(sb_twilio_status_normalize(sb_str("readx", 4), &out), 0, "counted");
    is_str(out, "read", "counted status");
}

TEST(incoming_call)
{
    sb_twilio_call_t c = {0};
    is_int(run_call(sb_twilio_parse_call, call_body, &c), 0, "incoming call parses (%s)", err);
    is_str(c.call_sid, "CAd800bb12c0426a7ea4230e492fef2a4f", "CallSid");
    is_str(c.account_sid, ACCOUNT, "AccountSid");
    is_str(c.from, "+15306666666", "From");
    is_str(c.to, "+15306384866", "To");
    is_str(c.account, "+15306384866", "account = To for inbound");
    is_str(c.caller_name, "CA Wireless Call", "CallerName");
    is_int(c.status, SB_TWILIO_CALL_RINGING, "ringing");
    is_int(c.direction, SB_TWILIO_DIR_INBOUND, "inbound");
    is_str(c.direction_name, "inbound", "direction as given");
    ok(c.parent_call_sid == NULL && c.forwarded_from == NULL, "optional fields NULL");
    is_int(c.duration, -1, "no duration");
    is_int(c.sequence, -1, "no sequence");
    is_int(c.timestamp, 0, "no timestamp");
    ok(!sb_twilio_call_status_is_final(c.status), "ringing is not final");
    sb_twilio_call_cleanup(&c);
    ok(zeroed(&c, sizeof c), "cleanup zeroes");

    /* a browser client calling through a TwiML app, forwarded */
    static const char client[] = "AccountSid=" ACCOUNT "&ApiVersion=2010-04-01&CallSid=CA557a&CallStatus=ringing&"
                                 "Caller=client%3AAnonymous&Direction=inbound&From=client%3AAnonymous&To=%2B12031234567&"
                                 "ForwardedFrom=%2B12035550000&phoneNumber=%2B12031234567";
    is_int(run_call(sb_twilio_parse_call, client, &c), 0, "client call");
    is_str(c.from, "client:Anonymous", "voice addresses kept as given");
    is_str(c.forwarded_from, "+12035550000", "ForwardedFrom");
    sb_twilio_call_cleanup(&c);

    call_fails(sb_twilio_parse_call, "CallStatus=ringing&From=a&To=b&Direction=inbound", "missing CallSid", "no sid");
    call_fails(sb_twilio_parse_call, "CallSid=CA1&From=a&To=b&Direction=inbound", "missing CallStatus", "no status");
    call_fails(sb_twilio_parse_call, "CallSid=CA1&CallStatus=ringing&To=b&Direction=inbound", "missing From", "no From");
    call_fails(sb_twilio_parse_call, "CallSid=CA1&CallStatus=ringing&From=a&Direction=inbound", "missing To", "no To");
    call_fails(sb_twilio_parse_call, "CallSid=CA1&CallStatus=ringing&From=a&To=b", "missing Direction", "no Direction");
    call_fails(sb_twilio_parse_call, "CallSid=CA1&CallStatus=answered&From=a&To=b&Direction=inbound",
               "CallStatus: unknown status 'answered'", "unknown status");
    call_fails(sb_twilio_parse_call, "CallSid=CA1&CallStatus=ringing&From=a%00&To=b&Direction=inbound",
               "From: contains a NUL", "NUL in From");
}

TEST(call_status)
{
    sb_twilio_call_t c = {0};
    is_int(run_call(sb_twilio_parse_call_status, call_done_body, &c), 0, "final call status parses (%s)", err);
    is_int(c.status, SB_TWILIO_CALL_COMPLETED, "completed");
    ok(sb_twilio_call_status_is_final(c.status), "final");
    is_int(c.direction, SB_TWILIO_DIR_OUTBOUND_API, "outbound-api");
    is_str(c.account, "+16466063895", "account = From for outbound");
    is_int(c.duration, 49, "CallDuration");
    is_int(c.sequence, 3, "SequenceNumber");
    is_int(c.timestamp, 1521971599, "Timestamp as unix seconds");
    sb_twilio_call_cleanup(&c);

    /* the same is fine for the incoming-call parser: it has everything */
    is_int(run_call(sb_twilio_parse_call, call_done_body, &c), 0, "also acceptable as a call webhook");
    sb_twilio_call_cleanup(&c);

    /* status callbacks may be minimal */
    is_int(run_call(sb_twilio_parse_call_status, "CallSid=CA1&CallStatus=no-answer&SequenceNumber=0", &c), 0,
           "minimal status callback");
    ok(c.from == NULL && c.to == NULL && c.account == NULL && c.direction_name == NULL, "absent fields NULL");
    is_int(c.direction, SB_TWILIO_DIR_OTHER, "no direction");
    is_int(c.sequence, 0, "sequence 0");
    sb_twilio_call_cleanup(&c);

    is_int(run_call(sb_twilio_parse_call_status, "CallSid=CA2&ParentCallSid=CA1&CallStatus=busy&Direction=outbound-dial"
                                                 "&From=%2B1&To=%2B2",
                    &c),
           0, "child leg");
    is_str(c.parent_call_sid, "CA1", "ParentCallSid");
    is_str(c.account, "+1", "outbound-dial: From");
    sb_twilio_call_cleanup(&c);

    is_int(run_call(sb_twilio_parse_call_status, "CallSid=CA2&CallStatus=in-progress&Direction=trunking-originating"
                                                 "&From=%2B1&To=%2B2",
                    &c),
           0, "unknown direction");
    is_int(c.direction, SB_TWILIO_DIR_OTHER, "other");
    is_str(c.direction_name, "trunking-originating", "kept as given");
    ok(c.account == NULL, "no account for an unknown direction");
    sb_twilio_call_cleanup(&c);

    call_fails(sb_twilio_parse_call_status, "CallStatus=completed", "missing CallSid", "no sid");
    call_fails(sb_twilio_parse_call_status, "CallSid=CA1&CallStatus=Completed", "'Completed'", "status case");
    call_fails(sb_twilio_parse_call_status, "CallSid=CA1&CallStatus=completed&CallDuration=4x", "CallDuration",
               "bad CallDuration");
    call_fails(sb_twilio_parse_call_status, "CallSid=CA1&CallStatus=completed&CallDuration=-1", "CallDuration",
               "negative CallDuration");
    call_fails(sb_twilio_parse_call_status, "CallSid=CA1&CallStatus=completed&SequenceNumber=99999999999999999999",
               "SequenceNumber", "overflowing SequenceNumber");
}

TEST(call_statuses)
{
    static const char *const names[] = {"queued",    "initiated", "ringing", "in-progress", "completed",
                                        "busy",      "no-answer", "failed",  "canceled"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char body[96];
        sb_twilio_call_t c = {0};
        snprintf(body, sizeof body, "CallSid=CA1&CallStatus=%s", names[i]);
        is_int(run_call(sb_twilio_parse_call_status, body, &c), 0, "%s parses", names[i]);
        is_str(sb_twilio_call_status_name(c.status), names[i], "%s round-trips", names[i]);
        ok(sb_twilio_call_status_is_final(c.status) == (i >= 4), "%s: final or not", names[i]);
        sb_twilio_call_cleanup(&c);
    }
    ok(sb_twilio_call_status_name((sb_twilio_call_status_t)0) == NULL, "0 has no name");
    ok(sb_twilio_call_status_name((sb_twilio_call_status_t)99) == NULL, "out of range has no name");
}

TEST(call_timestamp)
{
    static const struct {
        const char *encoded;
        long long want;
    } cases[] = {
        {"Sun%2C+25+Mar+2018+09%3A53%3A19+%2B0000", 1521971599},
        {"Mon%2C%2004%20Nov%202024%2012%3A00%3A00%20%2B0000", 1730721600},
        {"Sun,+24+Aug+2025+13:49:54+%2B0000", 1756043394},
        {"Tue%2C+29+Feb+2000+23%3A59%3A60+-0130", 951874200},
        {"1+Jan+1970+00%3A00+GMT", 0},
        {"7+May+2022+14%3A30%3A14+UTC", 1651933814},
        {"Sat%2C+07+May+2022+16%3A30%3A14+%2B0200", 1651933814},
        {"2021-04-28+21%3A51%3A18.731479Z", 0}, /* not RFC 2822: informational, so 0, not an error */
        {"Sun%2C+25+Mar+2018+09%3A53%3A19", 0}, /* no zone */
        {"Sun%2C+31+Feb+2018+09%3A53%3A19+%2B0000", 0},
        {"Thu%2C+29+Feb+2001+00%3A00%3A00+%2B0000", 0},
        {"Sun%2C+25+Mar+2018+24%3A00%3A00+%2B0000", 0},
        {"Sun%2C+25+Mar+2018+09%3A53%3A19+%2B0000+", 0},
        {"Sun%2C+25+Foo+2018+09%3A53%3A19+%2B0000", 0},
        {"Sun%2C+25+Mar+1969+09%3A53%3A19+%2B0000", 0},
        {"x", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[160];
        sb_twilio_call_t c = {0};
        snprintf(body, sizeof body, "CallSid=CA1&CallStatus=completed&Timestamp=%s", cases[i].encoded);
        is_int(run_call(sb_twilio_parse_call_status, body, &c), 0, "timestamp #%zu accepted", i);
        is_int(c.timestamp, cases[i].want, "timestamp #%zu", i);
        sb_twilio_call_cleanup(&c);
    }
}

int main(void)
{
    RUN(sms);
    RUN(mms);
    RUN(media_limits);
    RUN(whatsapp);
    RUN(message_fields);
    RUN(errors_buffer);
    RUN(status);
    RUN(status_mapping);
    RUN(incoming_call);
    RUN(call_status);
    RUN(call_statuses);
    RUN(call_timestamp);
    return tap_done();
}
