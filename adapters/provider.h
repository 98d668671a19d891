/* The provider port of actors/ports.h: one outbound message to Twilio's or Meta's API, and what came of it.
 *
 * Per shard, over the shard's HTTP client (adapters/net/http_client). A send opens the channel's sealed credentials,
 * builds the provider request (adapters/outbound), sends it and classifies the answer: sent (with the provider's
 * id), retry (not taken: our backoff, or the provider's Retry-After), failed (refused for good), or unknown (the
 * request went out and no readable answer came back: it may have it, so it is never sent again).
 *
 * A circuit breaker per provider endpoint (Twilio's API, Meta's Graph API) opens after five endpoint faults in a
 * row; while it is open held_ms() tells the sessions to wait without claiming anything, and one probe goes after the
 * cool-down. A draining provider holds every send the same way (messages stay queued for the next start) while the
 * requests already out finish. */
#ifndef SB_PROVIDER_H
#define SB_PROVIDER_H

#include "actors/ports.h"
#include "adapters/crypto.h"

#include <stdbool.h>
#include <uv.h>

typedef struct sb_provider sb_provider_t;

typedef struct sb_provider_opts {
    const unsigned char *master_key; /* opens the channels' credentials; NULL: none configured (every send fails) */
    const char *public_url;          /* Twilio's StatusCallback is public_url + /webhooks/twilio/{channel}/status;
                                      * NULL: none is asked for */
    const char *twilio_api_base, *meta_graph_base; /* NULL: the real ones */
    unsigned shard;                  /* whose metrics row counts its answers, errors and breaker states */
} sb_provider_opts_t;

/* Strings in opts are copied. NULL when the HTTP client cannot be made. */
sb_provider_t *sb_provider_create(uv_loop_t *loop, const sb_provider_opts_t *opts);
/* Ends the requests in flight (their outcome: unknown) and frees the provider once its handles have closed. */
void sb_provider_destroy(sb_provider_t *p);
/* No new send starts from now on. */
void sb_provider_drain(sb_provider_t *p);
/* Requests in flight. */
unsigned sb_provider_inflight(const sb_provider_t *p);
/* The port over p. */
void sb_provider_port(sb_provider_t *p, sb_provider_port_t *out);
/* The shard's HTTP client, for the tenants' outgoing webhooks. */
struct sb_http_client *sb_provider_client(sb_provider_t *p);

/* The port's check and window (actors/ports.h), which need no provider: for a front door that checks a send before
 * its session sees it (gateway/sends, on a node of a cluster). */
int sb_provider_check(sb_channel_type_t type, const sb_send_request_t *req, char *to, size_t to_cap, const char **code,
                      char *message, size_t message_cap);
int sb_provider_window(sb_channel_type_t type, const sb_send_request_t *req, int64_t since_inbound_ms,
                       const char **code, char *message, size_t message_cap);

#endif
