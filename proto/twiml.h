/* TwiML: the XML a voice webhook answers with, written and (when a tenant's app hands it to us) checked.
 *
 * Writers append a whole document, <?xml version="1.0" encoding="UTF-8"?><Response>...</Response>, with every
 * attribute and text escaped (& < > " ' as entities; tab, LF, CR as character references, so that an attribute keeps
 * them; another C0 control, U+FFFE and U+FFFF are dropped, since XML 1.0 cannot carry them; a byte that is not valid
 * UTF-8 becomes U+FFFD). Their output always passes sb_twiml_check. Arguments are borrowed C strings (NULL reads as
 * ""). 
 *
 * sb_twiml_check is for TwiML fetched from a tenant's twiml_url before we hand it to Twilio: at most
 * SB_TWIML_MAX_BYTES, valid UTF-8, one XML document (an optional <?xml ...?> declaration, comments, elements with
 * attributes in ' or " quotes, text, CDATA; the five predefined entities and numeric character references only; no
 * DOCTYPE, no processing instruction past the declaration), tags balanced and well nested, depth at most 32, the
 * root element <Response>. It does not know TwiML's verbs: Twilio judges those. Stricter than XML where TwiML never
 * goes: names are ASCII, an element has at most 32 attributes, the declaration names UTF-8 if any encoding, and
 * the only characters are XML 1.0's (no C0 control but tab, LF, CR; no U+FFFE, U+FFFF). A UTF-8 byte order mark
 * may come first. One pass, no recursion, no allocation. Fuzzed: tests/fuzz/fuzz_twiml.c. */
#ifndef SB_TWIML_H
#define SB_TWIML_H

#include "proto/str.h"

#include <stddef.h>

#define SB_TWIML_MAX_BYTES 65536
#define SB_TWIML_MAX_DEPTH 32 /* elements open at once, the root included */

typedef struct sb_twiml_param {
    const char *name, *value;
} sb_twiml_param_t;

/* <Connect><Stream url="..."><Parameter name=".." value=".."/>...</Stream></Connect> */
void sb_twiml_stream(sb_buf_t *out, const char *url, const sb_twiml_param_t *params, size_t nparams);
/* <Dial>number</Dial> */
void sb_twiml_dial(sb_buf_t *out, const char *number);
/* <Say>text</Say><Hangup/> */
void sb_twiml_say_hangup(sb_buf_t *out, const char *text);
/* <Reject reason="busy"/> (reason "busy" or "rejected"; anything else is a bug of the caller's) */
void sb_twiml_reject(sb_buf_t *out, const char *reason);
/* <Hangup/> */
void sb_twiml_hangup(sb_buf_t *out);
/* Appends s escaped for an XML attribute value or text. */
void sb_twiml_escape(sb_buf_t *out, sb_str_t s);

/* 0, or SB_EPARSE / SB_E2BIG (more than SB_TWIML_MAX_BYTES) with a one-line reason ("unbalanced </Say> at byte
 * 120", byte offsets counted from 0; "root is <foo>, not <Response>"). doc is borrowed; err may be NULL when errlen
 * is 0. */
int sb_twiml_check(sb_str_t doc, char *err, size_t errlen);

#endif
