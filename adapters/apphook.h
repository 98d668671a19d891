/* The hooks port of actors/ports.h: one event POSTed to a tenant's own application, signed.
 *
 * The body is the JSON {"tenant_id","cursor","type","data"} — the event the live inbox streams — with
 *   X-Switchboard-Event:     <tenant_id>:<cursor>, unique: the receiver's key for discarding a repeat;
 *   X-Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.
 * A receiver checks the HMAC in constant time and refuses a t more than five minutes from its clock; it answers 2xx
 * once it has the event. The request goes out on the shard's HTTP client, with a 10 s timeout. */
#ifndef SB_APPHOOK_H
#define SB_APPHOOK_H

#include "actors/ports.h"

struct sb_http_client;

/* The port over client (borrowed: it outlives the port's use). */
void sb_apphook_port(struct sb_http_client *client, sb_hooks_port_t *out);

#endif
