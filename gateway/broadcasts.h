/* Broadcasts, the front door (issue 16, API.md `/v1/broadcasts`): one content to many recipients of a channel.
 *
 *   POST   /v1/broadcasts {"channel_id", "body" or "template", "recipients":[{"to","vars"}], "send_at"?,
 *                          "idempotency_key"?}            → 202 {"id","recipients"} (200 {"id"}: the key named an
 *                                                           earlier broadcast)
 *   GET    /v1/broadcasts/{id}                            → 200 the broadcast with its counts by status
 *   DELETE /v1/broadcasts/{id}                            → 200 {"id","status":"canceled","canceled":N}
 *
 * The request is read whole (up to max_broadcast_bytes: that route's own body limit), checked and rendered here:
 * every recipient's `{{name}}` placeholders in the body, or in every string of the template, take the recipient's
 * vars (a string, number or boolean; a placeholder with no such variable is a 400 naming the recipient); each
 * recipient's message is checked as a single send's is (sends.h). Then it goes to the channel's session actor on the
 * tenant's shard (actors/session.h, sb_session_broadcast), which writes the recipients into the outbox set-based and
 * answers; the answer comes back to the shard the request came from. A cancel is looked up (the broadcast's channel)
 * and goes to that channel's session, which drops the broadcast's messages from its lanes and has the store cancel
 * the rest of what has not gone. Posting and canceling take an agent's key; reading any role. */
#ifndef SB_BROADCASTS_H
#define SB_BROADCASTS_H

#include "adapters/net/http_server.h"
#include "proto/str.h"
#include "shards/shard.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define SB_BROADCAST_MAX_RECIPIENTS 250000 /* recipients of one broadcast, at most */
#define SB_BROADCAST_MAX_AHEAD_S (30 * 86400) /* send_at at most this far ahead */

/* The parser of the request's text (tests/fuzz/fuzz_broadcast.c; send_at is read by proto/rfc3339, as for a
 * single send). render: appends text with every {{ name }} (name: letters, digits, '_', '.', '-';
 * spaces around it allowed) replaced by vars' value of name (a string as it is, a number or boolean as JSON writes
 * it; vars borrowed, NULL: none); anything else between braces stays as it is. Returns true, or false with the
 * first missing name in missing (cut to cap - 1 bytes, NUL-terminated; cap >= 1); out then holds a prefix. */
bool sb_broadcast_render(sb_buf_t *out, sb_str_t text, json_t *vars, char *missing, size_t cap);

/* Handles a request whose path is /v1/broadcasts or under it: answers it and returns true; false for other paths. */
bool sb_broadcasts_handle(sb_shard_t *s, sb_http_req_t *req);

#endif
