/* The hooks port of actors/ports.h: one event POSTed to a tenant's own application, signed.
 *
 * The body is the JSON {"tenant_id","cursor","type","data"} — the event the live inbox streams — with
 *   X-Switchboard-Event:     <tenant_id>:<cursor>, unique: the receiver's key for discarding a repeat;
 *   X-Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.
 * A receiver checks the HMAC in constant time and refuses a t more than five minutes from its clock; it answers 2xx
 * once it has the event. The request goes out on the shard's HTTP client, with a 10 s timeout.
 *
 * The port also fetches a call's TwiML from a tenant's twiml_url: the call's form POSTed as Twilio would post it,
 * signed the same way over the form's bytes. */
#ifndef SB_APPHOOK_H
#define SB_APPHOOK_H

#include "actors/ports.h"

struct sb_http_client;

/* Appends "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>": the X-Switchboard-Signature of an
 * event (payload: the body), of a TwiML fetch (the form) and of a voice app's WebSocket upgrade (the URL dialled). */
void sb_apphook_signature(sb_buf_t *out, const char *secret, sb_str_t payload);

/* The port over client (borrowed: it outlives the port's use). */
void sb_apphook_port(struct sb_http_client *client, sb_hooks_port_t *out);

#endif
