/* The mock provider's voice half (ops/mock_voice.c): Twilio's Calls API, simulated incoming calls with their Media
 * Streams, and an echo voice app, on the mock's one loop. ops/mock_provider.c owns the process, the HTTP server and
 * client, the senders' behaviours and records; it hands voice the requests that are voice's, and voice borrows a few
 * of its helpers (declared below, defined in mock_provider.c). The endpoints are documented in mock_provider.c's
 * header comment. */
#ifndef SB_MOCK_VOICE_H
#define SB_MOCK_VOICE_H

#include "adapters/net/http_client.h"
#include "adapters/net/http_server.h"
#include "proto/str.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* ---- given by mock_provider.c ---------------------------------------------------------------------------------- */

/* n random lower-case hex digits into dst (no NUL). */
void mock_random_hex(char *dst, size_t n);
/* CLOCK_MONOTONIC in microseconds. */
uint64_t mock_now_us(void);
/* Percent-encodes s into b as application/x-www-form-urlencoded does. */
void mock_form_escape(sb_buf_t *b, sb_str_t s);
/* "Mon, 01 Jan 2024 12:00:00 +0000" */
void mock_rfc2822_now(char *dst, size_t cap);
/* Checks Twilio's basic auth for AccountSid sid: true with the token copied into token (NUL-terminated, wipe it);
 * false after answering 401 as Twilio does. */
bool mock_twilio_auth(sb_http_req_t *req, sb_str_t sid, char *token, size_t cap);
/* Answers {"code","message","more_info","status"} with status. */
void mock_twilio_error(sb_http_req_t *req, int status, int code, const char *message);
/* Runs the behaviour of sender for one Twilio request and records it in /_mock/received and /_mock/stats as type
 * `type` (to, body cut at 4096 bytes, id). Returns 0 when the request is to succeed (*delay_ms: how late to answer),
 * or a failure status, in which case the failure was answered already (Twilio's error shape). */
int mock_twilio_verdict(sb_http_req_t *req, sb_str_t sender, const char *type, sb_str_t to, sb_str_t body,
                        const char *id, long *delay_ms);
/* Reads key of o, when present, as an integer in [min, max] into *dst. False, with a message, for a bad value. */
bool mock_json_int(json_t *o, const char *key, long min, long max, long *dst, char *err, size_t errlen);
/* Answers req with status and body (copied) as JSON, delay_ms later when positive. */
void mock_answer_json(sb_http_req_t *req, int status, long delay_ms, const char *body, size_t len);

/* ---- given by mock_voice.c ------------------------------------------------------------------------------------- */

/* Starts voice on loop with the mock's client (borrowed; both outlive voice until mock_voice_stop). */
void mock_voice_init(uv_loop_t *loop, sb_http_client_t *client);
/* Handles req when path is voice's: /2010-04-01/Accounts/{sid}/Calls.json, .../Calls/{CallSid}.json,
 * /_mock/calls[/...], /_mock/voice-app. Returns false (nothing answered) otherwise. */
bool mock_voice_handle(sb_http_req_t *req, sb_str_t path);
/* POST /_mock/reset: ends every call (their streams are closed, no callback is posted) and forgets them all, and
 * the echo app's records. */
void mock_voice_reset(void);
/* Shutdown: as reset, and closes voice's handles (the loop must run once more). Before the client is destroyed. */
void mock_voice_stop(void);

#endif
