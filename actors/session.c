/* The session actor; see session.h for what it owns and promises.
 *
 * State: the channel (loaded at activation); its conversations by id and by contact address, each with the seq of
 * its newest message and its lane of outbound messages; the receipts waiting to be applied; the sends being
 * accepted; the outbound messages by id; what this session sent by provider id (for the provider's status
 * callbacks); the work items in flight at the tenant actor, by token.
 *
 * Everything slow goes through a port and comes back as a message (the actor's own turn), tagged with the actor's
 * incarnation so that answers to a previous one (before a restart) are recognised as stale. Payloads that own memory
 * carry a drop hook. Pieces of a turn go to the tenant as few work items as possible: one for the receipts applied,
 * one for the sends accepted, one for the claims, and one per stored outcome. */
#include "actors/session.h"

#include "actors/tenant.h"
#include "gateway/log.h"
#include "gateway/metrics.h"
#include "proto/err.h"
#include "proto/fallback.h"
#include "proto/htable.h"
#include "proto/idset.h"
#include "proto/list.h"
#include "proto/mem.h"
#include "proto/retry.h"
#include "proto/rfc3339.h"
#include "proto/str.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LOAD_RETRY_MS 1000
#define DB_RETRY_MS 2000          /* the store or Redis did not answer: try again after this */
#define ID_WAIT_MS 10             /* the store's next id block is on its way */
#define STATUS_EARLY_MS 60000     /* a status for a message not known yet waits this long for it */
#define SENDING_STUCK_MS 120000   /* a message left sending this long by a crash is unknown */
#define OUTCOME_KEEP_MS 300000    /* an outcome the store did not take is offered again for this long */
#define MEMO_MAX 4096             /* provider ids (what this session sent lately) and idempotency keys remembered */
#define BCAST_BATCH 4096          /* a broadcast's recipients a statement (the store's SB_BROADCAST_BATCH) */
#define CONV_KEEP 1024            /* conversations kept in memory when not in use; the least recently used go beyond
                                   * (the store has them, and a lookup brings one back) */

enum {
    S_LOADED = SB_SESSION_INTERNAL,
    S_CONVS,
    S_PROVIDERS,
    S_KEY,
    S_GRANT,
    S_OUTCOME,
    S_FALLBACK,
    S_FALLBACKS,
    S_BBEGIN,   /* broadcasts: the broadcast's row ... */
    S_BROWS,    /* ... a batch of its recipients written ... */
    S_BCANCEL,  /* ... a cancel done ... */
    S_BCOUNTS,  /* ... its counts, for broadcast.progress ... */
    S_BRESUME,  /* ... those left staged by a stop */
};
#define S_LIMITS (SB_SESSION_INTERNAL + 24) /* lanes: the settings read again (apart from the enum, which others extend) */

/* Timer tags: small numbers for the actor's own, a send's id with the high bit for a send's. */
enum {
    TIMER_LOAD = 1, TIMER_INBOUND, TIMER_PUMP, TIMER_PROGRESS, TIMER_BCAST, TIMER_BRESUME, TIMER_SCHED, TIMER_CANCEL
};
#define TIMER_ASK 64 /* lanes: a token request that waits for the pace (or a cap) asks again */
#define TIMER_SEND (1ull << 62)
#define TIMER_FALLBACK (1ull << 59) /* | a watched message's id; alone: load the watches again */
#define FALLBACK_KEY "sb-fallback:" /* the idempotency key of a message's fallback: this and the message's id */

/* Lanes: how the channel's pace and caps are shared between conversations. */
#define LANE_SHARE 10    /* a lower lane passed over this many starts in a row while it had work takes the next */
#define ASK_MAX 8        /* token requests in flight at once while the pace has tokens to spare */
#define BUSY_POLL_MS 25  /* a cap was full (the tenant's, or the channel's on another node): ask again after this */

typedef struct send send_t;

typedef struct conv {
    sb_hnode_t by_id, by_addr;
    bool addressed;          /* in by_addr (its address is known) */
    bool fresh;              /* its seq is known: false until loaded, and after a write the store refused (loaded
                              * again once none of its messages is in flight: memory is never behind the store) */
    unsigned inflight;       /* work items numbering its messages, not answered yet */
    int64_t id, contact_id, last_seq;
    int64_t last_in_ms;      /* Unix ms of its newest inbound message, 0: none (the 24-hour window runs from it) */
    char *address, *profile_name;
    char created_at[SB_TIME_LEN], last_message_at[SB_TIME_LEN];
    sb_list_t lane;          /* its outbound messages, in order */
    sb_list_t ready_link;    /* on a ready list of the session (ready_prio's) while its lane's head may start */
    unsigned nprio[SB_PRIORITY_N]; /* its lane's messages by priority: the best of them is the lane's */
    sb_priority_t ready_prio;
    sb_list_t lru;           /* on the session's conversations, the least recently used first */
    unsigned holds;          /* checked receipts waiting in the inbox that point at it */
    unsigned scheduled;      /* its messages in the session's schedule (not in its lane yet) */
} conv_t;

/* Q_SCHEDULED: in the schedule (the heap), out of its lane until its time; Q_CANCELING: its cancel is being
 * stored (it stays where it was, and nothing starts it). */
enum send_state { Q_QUEUED, Q_CLAIMING, Q_CLAIMED, Q_SENDING, Q_STORING, Q_WAITING, Q_SCHEDULED, Q_CANCELING };

struct send {
    sb_hnode_t node;         /* by id */
    sb_list_t lane_link;
    int64_t id;
    conv_t *conv;
    unsigned attempts;
    enum send_state state;
    sb_priority_t prio;
    bool in_prio;            /* counted in its lane's and the session's figures (prio_enter): not while scheduled */
    char *to, *body, *media_json, *template_json;
    int64_t bcast;           /* the broadcast it is a recipient's message of, 0 when none */
    bool canceled;           /* its broadcast was canceled after it was claimed: it never reaches the provider */
    char lease[64];
    bool leased;
    /* the outcome being stored */
    const char *out_status;
    char *out_provider_id, *out_code, *out_message;
    int64_t out_retry_ms;
    bool out_finished;
    uint64_t out_since;
    char *fallback_json;     /* its fallback list (proto/fallback), NULL when none */
    /* scheduled */
    int64_t due_ms;          /* its send_at (Unix ms), while scheduled */
    size_t sched_i;          /* its place in the heap, while scheduled */
    enum send_state cancel_from; /* Q_CANCELING: the state it goes back to if the cancel is not stored */
};

/* A message of this channel whose fallback is watched (sql/0018): sent and not delivered yet, or failed for good
 * with its fallback not recorded yet. */
enum watch_state {
    FB_WAITING,              /* until due (its timer), or a status callback */
    FB_ASKING,               /* its fallback was handed to the next channel's session */
    FB_STORING               /* the link (or that no channel took it) is being written */
};

typedef struct watch {
    sb_hnode_t node;         /* by message id */
    int64_t id;
    enum watch_state state;
    bool failed;             /* it failed for good (else: it was not delivered in time) */
    uint64_t due;            /* runtime ms */
    char *to, *body, *media_json, *template_json;
    sb_fallback_t list;
    sb_priority_t priority;
    size_t next;             /* the list's channel being tried */
    int64_t fallback_id;     /* what that channel accepted; 0 while none */
    char *out_code, *out_message; /* FB_STORING with no fallback_id: the last refusal */
} watch_t;

typedef struct inbound {
    sb_list_t link;
    int64_t receipt_id, tenant;
    int64_t received_at;     /* runtime ms (before the runtime's start for an old receipt: may be negative) */
    bool looked_up;          /* a status whose provider id the store was asked about */
    bool checked;            /* ready to apply as far as memory knows: its conversation (conv) known and fresh, or
                              * its provider id known or looked up; unchecked ones are what resolve() looks at */
    conv_t *conv;            /* a checked message's */
    sb_event_t ev;
} inbound_t;

typedef struct accept {
    sb_list_t link;
    sb_session_send_t *req;
    int64_t receipt;         /* a send taken by a node of the cluster (its receipt: intake_t), else 0 */
    int64_t preset;          /* such a send's id, the one it was answered with */
    bool admitted;           /* checked against the channel (admit) */
    bool key_asked;          /* the store was asked about its idempotency key */
    int64_t id;              /* once written */
    conv_t *conv;
    int64_t seq;
    int64_t due_ms;          /* once written: its send_at (Unix ms) when it was scheduled, else 0 */
} accept_t;

/* A cancel waiting for the activation, or for its message's accept to be answered (or, a send another node took, to
 * arrive: until since + INTAKE_WAIT_MS), or being stored. */
typedef struct cancel {
    sb_list_t link;
    sb_session_cancel_t *req;
    bool storing;
    int64_t since;           /* runtime ms it came */
} cancel_t;

#define INTAKE_WAIT_MS 10000 /* a cancel of a send taken by another node waits this long for the send to arrive */
#define TAKEN_MAX 4096       /* sends taken by other nodes remembered (by id) as accepted here: then forgotten */

/* A bounded memory of strings naming messages, the least recently used forgotten first: what this session sent by
 * provider id (with the status it has), and the idempotency keys it accepted. */
typedef struct memo {
    sb_htable_t map;
    sb_list_t lru;
} memo_t;

typedef struct memo_entry {
    sb_hnode_t node;
    sb_list_t lru;
    char *key;
    int64_t message_id;      /* a key's: -1 while the message it names is being accepted */
    char status[16];         /* a provider id's: its message's status */
} memo_entry_t;

enum work_kind { W_INBOUND, W_ACCEPT, W_CLAIM, W_OUTCOME, W_FALLBACK, W_EVENT, W_CANCEL };

typedef struct pending {
    sb_hnode_t node;         /* by token */
    uint64_t token;
    enum work_kind kind;
    int64_t receipt;         /* W_INBOUND: the receipt it applies */
    conv_t *conv;            /* W_INBOUND (a message), W_ACCEPT: the conversation it numbered a message in ... */
    int64_t seq;             /* ... and that message's seq */
    accept_t *accept;        /* W_ACCEPT */
    cancel_t *cancel;        /* W_CANCEL (its send: sends[0]) */
    send_t **sends;          /* W_CLAIM, W_OUTCOME, W_CANCEL */
    size_t nsends;
    int64_t watch;           /* W_FALLBACK: the watched message */
} pending_t;

/* A broadcast being accepted: checked against the channel, staged (its row with every recipient: then it is
 * answered), then expanded (its recipients into messages, a batch a statement, the first staged one of the list at a
 * time; while one is expanded or waits to be, nothing is numbered). */
typedef struct bcast {
    sb_list_t link;
    uint64_t token;          /* what its completions name it by */
    sb_session_broadcast_t *req; /* until it is staged (answered): the request; then NULL */
    int64_t id;              /* once staged */
    bool writing;            /* its begin, or a batch, is under way */
    bool resumed;            /* found staged at activation */
    size_t written;          /* recipients expanded by this session */
    unsigned statements;
    int64_t arrived_us, admitted_us, begun_us; /* for the log lines that say how long it took */
} bcast_t;

/* A broadcast whose progress is reported (broadcast.progress), and what was last said of it. */
typedef struct progress {
    sb_list_t link;
    int64_t id;
    bool asking;
    char *last;              /* the last event's data, NULL before the first */
} progress_t;

typedef struct session {
    const sb_ports_t *ports;
    sb_actor_t *actor;       /* itself: stays the same across restarts */
    sb_rt_t *rt;
    sb_actor_id_t self;
    uint64_t epoch;
    int64_t channel, tenant;
    bool ready, loading;
    sb_channel_info_t info;  /* its strings are the session's */
    sb_send_limits_t limits;
    sb_htable_t convs, by_addr, sends;
    sb_list_t conv_lru;      /* every conversation, the least recently used first */
    memo_t providers, keys;
    sb_list_t lanes[SB_PRIORITY_N]; /* conversations whose lane's head may start, by the lane's priority, oldest
                                    * first */
    unsigned passed[SB_PRIORITY_N]; /* starts in a row that went to a higher lane while this one had work */
    unsigned sending;        /* sends from their claim (made when their token was granted) until their outcome is
                              * stored: each holds a slot of the channel's and the tenant's caps */
    unsigned asking;         /* token requests at the counters, or waiting to ask again */
    int64_t tokens;          /* what the last answer said of the pace: tokens to spare (-1: not paced), 0: none */
    int64_t depth[SB_PRIORITY_N]; /* messages in the lanes by priority (waiting, or under way) */
    send_t *preclaimed;      /* an interactive head claimed ahead of its token (at most one): the next grant is its */
    sb_metrics_t *metrics;   /* the shard's row: the lanes' depths are summed there */
    sb_list_t figures;       /* figure requests waiting for the channel to be loaded */
    bool pump_waiting;
    sb_list_t inbox;
    sb_idset_t known;        /* receipts waiting or in flight */
    unsigned inbound_inflight; /* receipts in work items at the tenant */
    unsigned unchecked;      /* inbox items not checked (inbound_t.checked) */
    unsigned resolving;      /* store lookups in flight (conversations, provider ids, keys) */
    bool inbound_waiting;    /* for an id block */
    bool again;              /* apply_inbound found a conversation to load again */
    sb_list_t accepts;
    sb_htable_t pendings;    /* work items at the tenant, by token */
    uint64_t next_token;
    sb_htable_t watches;     /* messages whose fallback is watched, by id */
    bool watches_loading;    /* at activation: the inbox waits for them (a delivered must find its watch) */
    sb_list_t bcasts;        /* broadcasts being accepted (bcast_t), in arrival order */
    uint64_t bcast_tokens;
    bool bcast_waiting;      /* a batch failed for want of the store: TIMER_BCAST tries again */
    bool bcast_yield;        /* between two batches: what waits to be numbered goes first (once) */
    sb_list_t bcancels;      /* broadcast cancels waiting for the channel (bcancel_t) */
    sb_list_t progress;      /* broadcasts whose progress is reported (progress_t) */
    bool progress_armed;     /* TIMER_PROGRESS runs */
    bool reload;             /* load the outbox again once the load under way is done */
    sb_idset_t canceled;     /* broadcasts canceled in this incarnation: their messages are never loaded again */
    send_t **sched;          /* the scheduled messages: a min-heap by (due_ms, id) */
    size_t nsched, sched_cap;
    uint64_t sched_timer;    /* the timer for the earliest (0: none) ... */
    int64_t sched_timer_due; /* ... and the due time it was armed for */
    sb_list_t cancels;       /* cancel_t, in arrival order */
    bool cancel_timer;       /* TIMER_CANCEL runs: cancels wait for their sends to arrive */
    sb_idset_t taken;        /* ids of the sends taken by other nodes and accepted here (TAKEN_MAX at most) */
} session_t;

static _Atomic uint64_t incarnations;

/* ---- small helpers ------------------------------------------------------------------------------------------------ */

const char *const sb_priority_names[SB_PRIORITY_N] = {"interactive", "normal", "bulk"};

static char *dup_or_null(const char *s)
{
    return s ? sb_strdup(s) : NULL;
}

/* Now, as PostgreSQL writes a timestamptz in JSON under TimeZone UTC (the store's sessions): microseconds without
 * trailing zeros, none at all on a whole second. What an event says of a message's time is then what the API reads
 * of its row. */
static void now_text(session_t *s, char out[SB_TIME_LEN])
{
    int64_t us = s->ports->now_us(s->ports->ctx);
    time_t sec = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char base[32], frac[12] = "";
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    int f = (int)(us % 1000000);
    if (f) {
        snprintf(frac, sizeof frac, ".%06d", f);
        for (size_t n = strlen(frac); frac[n - 1] == '0'; n--)
            frac[n - 1] = '\0';
    }
    snprintf(out, SB_TIME_LEN, "%.19s%s+00:00", base, frac);
}

/* Now in Unix ms (the wall clock: what send_at means). */
static int64_t wall_ms(session_t *s)
{
    return s->ports->now_us(s->ports->ctx) / 1000;
}

static void json_str(sb_buf_t *b, const char *s)
{
    if (!s) {
        sb_buf_puts(b, "null");
        return;
    }
    sb_buf_puts(b, "\"");
    sb_buf_json_escape(b, sb_str_cstr(s));
    sb_buf_puts(b, "\"");
}

/* A packed payload: i64s and strings (length, bytes, NUL; length -1 for NULL) one after the other. */
static void pk_i64(sb_buf_t *b, int64_t v)
{
    sb_buf_append(b, &v, sizeof v);
}

static void pk_str(sb_buf_t *b, const char *s)
{
    int64_t n = s ? (int64_t)strlen(s) : -1;
    pk_i64(b, n);
    if (s)
        sb_buf_append(b, s, (size_t)n + 1);
}

typedef struct rd {
    const char *p, *end;
    bool bad;
} rd_t;

static int64_t rd_i64(rd_t *r)
{
    int64_t v = 0;
    if (r->end - r->p < 8) {
        r->bad = true;
        return 0;
    }
    memcpy(&v, r->p, 8);
    r->p += 8;
    return v;
}

static const char *rd_str(rd_t *r)
{
    int64_t n = rd_i64(r);
    if (r->bad || n < 0)
        return NULL;
    if (r->end - r->p < n + 1) {
        r->bad = true;
        return NULL;
    }
    const char *s = r->p;
    r->p += n + 1;
    return s;
}

/* ---- completions -------------------------------------------------------------------------------------------------- */

typedef struct comp {
    sb_rt_t *rt;
    sb_actor_id_t id;
    uint64_t epoch;
    int64_t ref; /* a send's id, or 0 */
} comp_t;

static comp_t *comp_new(session_t *s, int64_t ref)
{
    comp_t *c = sb_malloc(sizeof *c);
    *c = (comp_t){s->rt, s->self, s->epoch, ref};
    return c;
}

/* Posts b (which starts with epoch and ref, as comp_head writes them) to the actor, and frees c. */
static void comp_post(comp_t *c, uint32_t type, sb_buf_t *b)
{
    sb_rt_send(c->rt, 0, c->id, type, b->p, b->len);
    sb_buf_cleanup(b);
    free(c);
}

static void comp_head(comp_t *c, sb_buf_t *b, int err)
{
    sb_buf_init(b);
    pk_i64(b, (int64_t)c->epoch);
    pk_i64(b, c->ref);
    pk_i64(b, err);
}

/* Opens a completion: false (ignore it) when it belongs to another incarnation. */
static bool comp_open(session_t *s, const sb_msg_t *m, rd_t *r, int64_t *ref, int *err)
{
    r->p = (const char *)m->data;
    r->end = r->p + m->len;
    r->bad = false;
    uint64_t epoch = (uint64_t)rd_i64(r);
    *ref = rd_i64(r);
    *err = (int)rd_i64(r);
    return !r->bad && epoch == s->epoch;
}

/* ---- conversations ------------------------------------------------------------------------------------------------ */

static bool conv_id_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, conv_t, by_id)->id == *(const int64_t *)key;
}

static bool conv_addr_eq(const sb_hnode_t *n, const void *key)
{
    return strcmp(sb_container_of(n, conv_t, by_addr)->address, key) == 0;
}

static conv_t *conv_by_id(session_t *s, int64_t id)
{
    sb_hnode_t *n = sb_htable_find(&s->convs, sb_hash_u64((uint64_t)id), conv_id_eq, &id);
    return n ? sb_container_of(n, conv_t, by_id) : NULL;
}

static conv_t *conv_by_addr(session_t *s, const char *address)
{
    sb_hnode_t *n = sb_htable_find(&s->by_addr, sb_hash_bytes(address, strlen(address)), conv_addr_eq, address);
    return n ? sb_container_of(n, conv_t, by_addr) : NULL;
}

static conv_t *conv_get(session_t *s, int64_t id)
{
    conv_t *c = conv_by_id(s, id);
    if (c)
        return c;
    c = sb_calloc(1, sizeof *c);
    c->id = id;
    sb_list_init(&c->lane);
    sb_list_init(&c->ready_link);
    sb_list_push_back(&s->conv_lru, &c->lru);
    c->by_id.hash = sb_hash_u64((uint64_t)id);
    sb_htable_insert(&s->convs, &c->by_id);
    return c;
}

static void conv_touch(session_t *s, conv_t *c)
{
    sb_list_remove(&c->lru);
    sb_list_push_back(&s->conv_lru, &c->lru);
}

static void conv_free(session_t *s, conv_t *c)
{
    sb_htable_remove(&s->convs, &c->by_id);
    if (c->addressed)
        sb_htable_remove(&s->by_addr, &c->by_addr);
    sb_list_remove(&c->lru);
    free(c->address);
    free(c->profile_name);
    free(c);
}

/* Memory holds the conversations in use (messages being written, sends in its lane, receipts waiting for it) and
 * at most CONV_KEEP others: a channel with a million contacts does not keep a million conversations. Those forgotten
 * are whole in the store (none of their writes is in flight), so a lookup brings them back as they were. */
static void convs_trim(session_t *s)
{
    size_t excess = s->convs.n > CONV_KEEP ? s->convs.n - CONV_KEEP : 0;
    size_t steps = excess < 256 ? excess + 64 : 320; /* bounded: a broadcast's 100,000 conversations in use are not
                                                      * walked on every turn */
    for (sb_list_t *l = sb_list_first(&s->conv_lru); l && excess && steps--;) {
        conv_t *c = sb_container_of(l, conv_t, lru);
        l = l->next != &s->conv_lru ? l->next : NULL;
        if (c->inflight || c->holds || !sb_list_empty(&c->lane) || sb_list_linked(&c->ready_link) || c->scheduled)
            continue;
        conv_free(s, c);
        excess--;
    }
}

/* What the store said of a conversation: it is known, with its address and seq. */
static void conv_learn(session_t *s, const sb_conv_info_t *ci)
{
    conv_t *c = conv_get(s, ci->id);
    conv_touch(s, c);
    c->contact_id = ci->contact_id;
    if (!c->fresh || ci->last_seq > c->last_seq) { /* a fresh conversation's memory is ahead of the store */
        c->last_seq = ci->last_seq;
        snprintf(c->last_message_at, sizeof c->last_message_at, "%s", ci->last_message_at);
    }
    if (ci->last_inbound_ms > c->last_in_ms) /* (memory may know a newer one the store has not written yet) */
        c->last_in_ms = ci->last_inbound_ms;
    free(c->profile_name);
    c->profile_name = dup_or_null(ci->profile_name);
    snprintf(c->created_at, sizeof c->created_at, "%s", ci->created_at);
    if (!c->addressed) {
        c->address = sb_strdup(ci->address);
        c->by_addr.hash = sb_hash_bytes(c->address, strlen(c->address));
        sb_htable_insert(&s->by_addr, &c->by_addr);
        c->addressed = true;
    }
    c->fresh = true;
}

/* The conversation.updated event of c (its data object). */
static void conv_event(session_t *s, const conv_t *c, sb_buf_t *b)
{
    b->len = 0;
    sb_buf_puts(b, "{\"id\":\"");
    sb_buf_append_i64(b, c->id);
    sb_buf_puts(b, "\",\"channel_id\":\"");
    sb_buf_append_i64(b, s->channel);
    sb_buf_puts(b, "\",\"channel_type\":");
    json_str(b, sb_channel_type_name(s->info.type));
    sb_buf_puts(b, ",\"contact\":{\"id\":\"");
    sb_buf_append_i64(b, c->contact_id);
    sb_buf_puts(b, "\",\"address\":");
    json_str(b, c->address);
    sb_buf_puts(b, ",\"profile_name\":");
    json_str(b, c->profile_name);
    sb_buf_puts(b, "},\"last_seq\":");
    sb_buf_append_i64(b, c->last_seq);
    sb_buf_puts(b, ",\"last_message_at\":");
    json_str(b, c->last_message_at[0] ? c->last_message_at : NULL);
    sb_buf_puts(b, ",\"created_at\":");
    json_str(b, c->created_at);
    sb_buf_puts(b, "}");
}

/* ---- providers and keys: what this session sent, by provider id; idempotency keys --------------------------------- */

static void memo_init(memo_t *m)
{
    sb_htable_init(&m->map);
    sb_list_init(&m->lru);
}

static bool memo_eq(const sb_hnode_t *n, const void *key)
{
    return strcmp(sb_container_of(n, memo_entry_t, node)->key, key) == 0;
}

static memo_entry_t *memo_get(memo_t *m, const char *key)
{
    sb_hnode_t *n = sb_htable_find(&m->map, sb_hash_bytes(key, strlen(key)), memo_eq, key);
    return n ? sb_container_of(n, memo_entry_t, node) : NULL;
}

static void memo_del(memo_t *m, memo_entry_t *e)
{
    sb_htable_remove(&m->map, &e->node);
    sb_list_remove(&e->lru);
    free(e->key);
    free(e);
}

/* The entry of key, made (the oldest forgotten when the memory is full) if need be, now the most recent. */
static memo_entry_t *memo_put(memo_t *m, const char *key)
{
    memo_entry_t *e = memo_get(m, key);
    if (!e) {
        if (m->map.n >= MEMO_MAX)
            memo_del(m, sb_container_of(sb_list_first(&m->lru), memo_entry_t, lru));
        e = sb_calloc(1, sizeof *e);
        e->key = sb_strdup(key);
        e->node.hash = sb_hash_bytes(key, strlen(key));
        sb_htable_insert(&m->map, &e->node);
        sb_list_init(&e->lru);
    }
    sb_list_remove(&e->lru);
    sb_list_push_back(&m->lru, &e->lru);
    return e;
}

static void memo_cleanup(memo_t *m)
{
    for (sb_list_t *l; (l = sb_list_first(&m->lru));)
        memo_del(m, sb_container_of(l, memo_entry_t, lru));
    sb_htable_cleanup(&m->map);
}

static memo_entry_t *provider_get(session_t *s, const char *pid)
{
    return memo_get(&s->providers, pid);
}

static void provider_learn(session_t *s, const char *pid, int64_t message_id, const char *status)
{
    memo_entry_t *e = memo_put(&s->providers, pid);
    e->message_id = message_id;
    snprintf(e->status, sizeof e->status, "%s", status);
}

static memo_entry_t *key_get(session_t *s, const char *key)
{
    return memo_get(&s->keys, key);
}

static void key_learn(session_t *s, const char *key, int64_t message_id)
{
    memo_put(&s->keys, key)->message_id = message_id;
}

/* ---- work items ----------------------------------------------------------------------------------------------- */

static bool pending_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, pending_t, node)->token == *(const uint64_t *)key;
}

static pending_t *pending_new(session_t *s, enum work_kind kind)
{
    pending_t *p = sb_calloc(1, sizeof *p);
    p->token = (s->epoch << 32) | (++s->next_token & 0xffffffffu); /* never one of an earlier incarnation's */
    p->kind = kind;
    p->node.hash = sb_hash_u64(p->token);
    sb_htable_insert(&s->pendings, &p->node);
    return p;
}

static void pending_free(session_t *s, pending_t *p)
{
    sb_htable_remove(&s->pendings, &p->node);
    free(p->sends);
    free(p);
}

static pending_t *pending_of(session_t *s, uint64_t token)
{
    sb_hnode_t *n = sb_htable_find(&s->pendings, sb_hash_u64(token), pending_eq, &token);
    return n ? sb_container_of(n, pending_t, node) : NULL;
}

static sb_tenant_work_t *work_new(session_t *s, const pending_t *p)
{
    return sb_tenant_work_new(s->self, SB_SESSION_WRITTEN, p->token);
}

/* ---- answering a send ---------------------------------------------------------------------------------------------- */

static void answer(sb_session_send_t *req, int status, int64_t id, bool created)
{
    req->status = status;
    req->id = id;
    req->created = created;
    if (status == 503 && !req->code) {
        req->code = "unavailable";
        snprintf(req->message, sizeof req->message, "the message could not be stored now; retry with the same "
                                                    "idempotency_key");
    }
    req->answer(req);
}

static void refuse(sb_session_send_t *req, int status, const char *code, const char *message)
{
    req->code = code;
    snprintf(req->message, sizeof req->message, "%s", message);
    answer(req, status, 0, false);
}

static void drop_send_req(sb_msg_t *m)
{
    sb_session_send_t *req;
    memcpy(&req, m->data, sizeof req);
    answer(req, 503, 0, false);
}

void sb_session_send(sb_rt_t *rt, unsigned owner, sb_session_send_t *req)
{
    sb_msg_t *m = sb_msg_new(SB_SESSION_SEND, sizeof req);
    memcpy(m->data, &req, sizeof req);
    m->drop = drop_send_req;
    sb_rt_post_key(rt, owner, &sb_session_kind, (uint64_t)req->channel, m); /* a refused one is dropped: answered */
}

sb_send_request_t sb_session_send_request(const sb_session_send_t *req)
{
    return (sb_send_request_t){
        .to = req->to, .body = req->body, .media_json = req->media_json, .template_json = req->template_json};
}

void sb_session_send_cleanup(sb_session_send_t *req)
{
    free(req->to);
    free(req->body);
    free(req->media_json);
    free(req->template_json);
    free(req->idempotency_key);
    free(req->fallback_json);
}

int sb_session_receipt_packed(sb_rt_t *rt, unsigned owner, int64_t channel, const sb_session_receipt_t *r,
                              const void *packed, size_t len)
{
    sb_msg_t *m = sb_msg_new(SB_SESSION_RECEIPT, sizeof *r + len);
    memcpy(m->data, r, sizeof *r);
    memcpy(m->data + sizeof *r, packed, len);
    return sb_rt_post_key(rt, owner, &sb_session_kind, (uint64_t)channel, m);
}

int sb_session_receipt(sb_rt_t *rt, unsigned owner, int64_t channel, const sb_session_receipt_t *r,
                       const sb_event_t *ev)
{
    sb_buf_t b;
    sb_buf_init(&b);
    sb_event_pack(ev, &b);
    int rc = sb_session_receipt_packed(rt, owner, channel, r, b.p, b.len);
    sb_buf_cleanup(&b);
    return rc;
}

/* ---- resolving what memory does not know: conversations, provider ids, idempotency keys --------------------------- */

static void process(session_t *s);

static void convs_cb(void *arg, int err, const sb_conv_info_t *convs, size_t n)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, err ? 0 : (int64_t)n);
    for (size_t i = 0; !err && i < n; i++) {
        pk_i64(&b, convs[i].id);
        pk_i64(&b, convs[i].contact_id);
        pk_i64(&b, convs[i].last_seq);
        pk_str(&b, convs[i].address);
        pk_str(&b, convs[i].profile_name);
        pk_str(&b, convs[i].created_at);
        pk_str(&b, convs[i].last_message_at);
        pk_i64(&b, convs[i].last_inbound_ms);
    }
    comp_post(c, S_CONVS, &b);
}

static void providers_cb(void *arg, int err, const char *const *pids, const int64_t *ids,
                         const char *const *statuses, size_t n)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, err ? 0 : (int64_t)n);
    for (size_t i = 0; !err && i < n; i++) {
        pk_str(&b, pids[i]);
        pk_i64(&b, ids[i]);
        pk_str(&b, statuses[i]);
    }
    comp_post(c, S_PROVIDERS, &b);
}

typedef struct key_comp {
    comp_t c;
    char key[];
} key_comp_t;

static void key_cb(void *arg, int err, int64_t id, int64_t channel)
{
    key_comp_t *k = arg;
    comp_t *c = sb_malloc(sizeof *c);
    *c = k->c;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_str(&b, k->key);
    pk_i64(&b, err ? 0 : id);
    pk_i64(&b, channel);
    free(k);
    comp_post(c, S_KEY, &b);
}

static void free_inbound(inbound_t *in)
{
    sb_event_cleanup(&in->ev);
    free(in);
}

/* Whether memory has what applying `in` needs; marks it checked if so. A message whose conversation's name changes
 * goes through the store once (ensure_conversations stores the new name). */
static bool check_inbound(session_t *s, inbound_t *in)
{
    if (in->ev.kind == SB_EV_MESSAGE) {
        conv_t *c = conv_by_addr(s, in->ev.from);
        if (!c || !c->fresh ||
            (in->ev.profile_name && (!c->profile_name || strcmp(c->profile_name, in->ev.profile_name) != 0)))
            return false;
        in->conv = c;
        c->holds++;
    } else if (!in->looked_up && !provider_get(s, in->ev.provider_id)) {
        return false;
    }
    in->checked = true;
    return true;
}

/* Lets go of the conversation a checked receipt points at. */
static void unhold(inbound_t *in)
{
    if (in->checked && in->conv) {
        in->conv->holds--;
        in->conv = NULL;
    }
}

static void uncheck(session_t *s, inbound_t *in)
{
    if (in->checked) {
        unhold(in);
        in->checked = false;
        s->unchecked++;
    }
}

static void inbound_drop(session_t *s, inbound_t *in)
{
    unhold(in);
    if (!in->checked)
        s->unchecked--;
    sb_idset_del(&s->known, in->receipt_id);
    sb_list_remove(&in->link);
    free_inbound(in);
}

/* The first SB_SESSION_LOOKAHEAD receipts and every send being accepted: asks the store about the conversations,
 * provider ids and keys memory does not know, all at once. True when something was asked (process waits). */
static bool resolve(session_t *s)
{
    const char **addrs = NULL, **names = NULL, **pids = NULL;
    size_t naddr = 0, npid = 0, cap = 0;
    size_t seen = 0, left = s->unchecked;
    sb_list_foreach(it, &s->inbox)
    {
        if (!left || seen++ >= SB_SESSION_LOOKAHEAD)
            break;
        inbound_t *in = sb_container_of(it, inbound_t, link);
        if (in->checked)
            continue;
        left--;
        if (check_inbound(s, in)) {
            s->unchecked--;
            continue;
        }
        if (naddr + 1 >= cap || npid + 1 >= cap) {
            cap = cap ? cap * 2 : 64;
            addrs = sb_realloc(addrs, cap * sizeof *addrs);
            names = sb_realloc(names, cap * sizeof *names);
            pids = sb_realloc(pids, cap * sizeof *pids);
        }
        if (in->ev.kind == SB_EV_MESSAGE) {
            conv_t *c = conv_by_addr(s, in->ev.from);
            if (c && !c->fresh && c->inflight) /* loaded again once its writes are answered */
                continue;
            addrs[naddr] = in->ev.from;
            names[naddr++] = in->ev.profile_name;
        } else {
            pids[npid++] = in->ev.provider_id;
            in->looked_up = true;
        }
    }
    sb_list_foreach(it, &s->accepts)
    {
        accept_t *a = sb_container_of(it, accept_t, link);
        if (naddr + 1 >= cap) {
            cap = cap ? cap * 2 : 64;
            addrs = sb_realloc(addrs, cap * sizeof *addrs);
            names = sb_realloc(names, cap * sizeof *names);
            pids = sb_realloc(pids, cap * sizeof *pids);
        }
        conv_t *c = conv_by_addr(s, a->req->to);
        if (!c || (!c->fresh && !c->inflight)) {
            addrs[naddr] = a->req->to;
            names[naddr++] = NULL;
        }
        if (a->req->idempotency_key && !a->key_asked && !key_get(s, a->req->idempotency_key)) {
            a->key_asked = true;
            size_t kl = strlen(a->req->idempotency_key);
            key_comp_t *k = sb_malloc(sizeof *k + kl + 1);
            k->c = (comp_t){s->rt, s->self, s->epoch, 0};
            memcpy(k->key, a->req->idempotency_key, kl + 1);
            if (s->ports->store.find_idempotent(s->ports->store.ctx, s->tenant, k->key, key_cb, k) == 0)
                s->resolving++;
            else
                free(k);
        }
    }
    if (naddr) {
        comp_t *c = comp_new(s, 0);
        if (s->ports->store.ensure_conversations(s->ports->store.ctx, s->tenant, s->channel, addrs, names, naddr,
                                                 convs_cb, c) == 0)
            s->resolving++;
        else
            free(c);
    }
    if (npid) {
        comp_t *c = comp_new(s, 0);
        if (s->ports->store.find_by_provider(s->ports->store.ctx, s->tenant, s->channel, pids, npid, providers_cb,
                                             c) == 0)
            s->resolving++;
        else
            free(c);
    }
    free(addrs);
    free(names);
    free(pids);
    return s->resolving > 0;
}

static int on_convs(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    s->resolving--;
    int64_t n = rd_i64(&r);
    for (int64_t i = 0; !err && !r.bad && i < n; i++) {
        sb_conv_info_t ci;
        ci.id = rd_i64(&r);
        ci.contact_id = rd_i64(&r);
        ci.last_seq = rd_i64(&r);
        ci.address = rd_str(&r);
        ci.profile_name = rd_str(&r);
        const char *created = rd_str(&r), *last = rd_str(&r);
        ci.last_inbound_ms = rd_i64(&r);
        if (r.bad || !ci.address)
            break;
        snprintf(ci.created_at, sizeof ci.created_at, "%s", created ? created : "");
        snprintf(ci.last_message_at, sizeof ci.last_message_at, "%s", last ? last : "");
        conv_learn(s, &ci);
    }
    if (err && !s->resolving)
        sb_actor_timer_start(a, DB_RETRY_MS, 0, TIMER_INBOUND); /* the store is away: try again later */
    else
        process(s);
    return 0;
}

static int on_providers(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    s->resolving--;
    int64_t n = rd_i64(&r);
    for (int64_t i = 0; !err && !r.bad && i < n; i++) {
        const char *pid = rd_str(&r);
        int64_t id = rd_i64(&r);
        const char *status = rd_str(&r);
        if (!r.bad && pid && status)
            provider_learn(s, pid, id, status);
    }
    if (err) { /* ask again later */
        sb_list_foreach(it, &s->inbox)
        {
            inbound_t *in = sb_container_of(it, inbound_t, link);
            if (in->ev.kind == SB_EV_STATUS && in->looked_up && !provider_get(s, in->ev.provider_id)) {
                in->looked_up = false;
                uncheck(s, in);
            }
        }
        if (!s->resolving)
            sb_actor_timer_start(a, DB_RETRY_MS, 0, TIMER_INBOUND);
        return 0;
    }
    process(s);
    return 0;
}

static int on_key(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    s->resolving--;
    const char *key = rd_str(&r);
    int64_t id = rd_i64(&r);
    if (err || r.bad || !key) { /* ask again */
        sb_list_foreach(it, &s->accepts)
        {
            accept_t *x = sb_container_of(it, accept_t, link);
            if (x->req->idempotency_key && key && strcmp(x->req->idempotency_key, key) == 0)
                x->key_asked = false;
        }
        if (!s->resolving)
            sb_actor_timer_start(a, DB_RETRY_MS, 0, TIMER_INBOUND);
        return 0;
    }
    if (id)
        key_learn(s, key, id);
    process(s);
    return 0;
}

/* ---- inbound: receipts into messages and status changes ------------------------------------------------------- */

/* The message.created event of a message (its data object). */
static void message_event(session_t *s, const sb_new_message_t *m, const char *media_json, sb_buf_t *b)
{
    b->len = 0;
    sb_buf_puts(b, "{\"id\":\"");
    sb_buf_append_i64(b, m->id);
    sb_buf_puts(b, "\",\"conversation_id\":\"");
    sb_buf_append_i64(b, m->conversation_id);
    sb_buf_puts(b, "\",\"seq\":");
    sb_buf_append_i64(b, m->seq);
    sb_buf_puts(b, ",\"channel_id\":\"");
    sb_buf_append_i64(b, s->channel);
    sb_buf_puts(b, m->out ? "\",\"direction\":\"out\",\"from\":" : "\",\"direction\":\"in\",\"from\":");
    json_str(b, m->sender);
    sb_buf_puts(b, ",\"to\":");
    json_str(b, m->recipient);
    sb_buf_puts(b, ",\"body\":");
    json_str(b, m->body);
    sb_buf_puts(b, ",\"media\":");
    sb_buf_puts(b, media_json);
    sb_buf_puts(b, ",\"provider_id\":");
    json_str(b, m->provider_id);
    if (m->out) {
        sb_buf_puts(b, ",\"status\":");
        json_str(b, m->status);
        if (m->send_at) {
            sb_buf_puts(b, ",\"send_at\":");
            json_str(b, m->send_at);
        }
    }
    if (m->fallback_of) { /* the fallback of that message (it failed, or was not delivered in time) */
        sb_buf_puts(b, ",\"fallback_of\":\"");
        sb_buf_append_i64(b, m->fallback_of);
        sb_buf_puts(b, "\"");
    }
    sb_buf_puts(b, ",\"created_at\":");
    json_str(b, m->created_at);
    sb_buf_puts(b, "}");
}

/* The message.status event of a change. */
static void status_event(const sb_status_change_t *c, sb_buf_t *b)
{
    b->len = 0;
    sb_buf_puts(b, "{\"id\":\"");
    sb_buf_append_i64(b, c->message_id);
    sb_buf_puts(b, "\",\"status\":");
    json_str(b, c->status);
    if (c->error_code) {
        sb_buf_puts(b, ",\"error\":{\"code\":");
        json_str(b, c->error_code);
        sb_buf_puts(b, ",\"message\":");
        json_str(b, c->error_message);
        sb_buf_puts(b, "}");
    }
    sb_buf_puts(b, "}");
}

/* A new message of conversation c, numbered: its id (from the store's block), its seq, its time. */
static void number(session_t *s, conv_t *c, sb_new_message_t *m, int64_t id)
{
    m->id = id;
    m->conversation_id = c->id;
    m->channel_id = s->channel;
    m->seq = ++c->last_seq;
    now_text(s, c->last_message_at);
    conv_touch(s, c);
}

static void fallback_news(session_t *s, int64_t id, const char *status, sb_status_change_t *c);

/* Hands a work item to the tenant; it answers with SB_SESSION_WRITTEN. */
static void submit(session_t *s, pending_t *p, sb_tenant_work_t *w)
{
    if (p->conv)
        p->conv->inflight++;
    if (p->kind == W_INBOUND)
        s->inbound_inflight++;
    sb_tenant_write(s->rt, s->tenant, w); /* a refused one is answered (SB_SESSION_WRITTEN with its error) */
}

/* Applies the waiting receipts, in order, as far as they are resolved: each its own work item (the tenant writes
 * the items of a turn as one statement; an item the store refuses fails alone). */
static void apply_inbound(session_t *s)
{
    sb_buf_t ev, media;
    sb_buf_init(&ev);
    sb_buf_init(&media);
    int64_t now = (int64_t)sb_rt_time(s->rt);
    for (sb_list_t *l; s->inbound_inflight < SB_SESSION_INFLIGHT && !s->inbound_waiting &&
                       (l = sb_list_first(&s->inbox));) {
        inbound_t *in = sb_container_of(l, inbound_t, link);
        pending_t *p = NULL;
        sb_tenant_work_t *w = NULL;
        if (!in->checked)
            break; /* not resolved yet (arrived after the lookup): the next round */
        if (in->ev.kind == SB_EV_MESSAGE) {
            conv_t *c = in->conv;
            if (!c->fresh) { /* to be loaded again (the store refused a write of it) */
                uncheck(s, in);
                s->again = true;
                break;
            }
            int64_t id = s->ports->store.message_id(s->ports->store.ctx);
            if (!id) {
                s->inbound_waiting = true;
                sb_actor_timer_start(s->actor, ID_WAIT_MS, 0, TIMER_INBOUND);
                break;
            }
            p = pending_new(s, W_INBOUND);
            w = work_new(s, p);
            sb_new_message_t *m = sb_tenant_work_message(w);
            number(s, c, m, id);
            c->last_in_ms = s->ports->now_us(s->ports->ctx) / 1000; /* the customer wrote: the window opens */
            p->conv = c;
            p->seq = m->seq;
            m->out = false;
            m->sender = sb_tenant_work_str(w, in->ev.from);
            m->recipient = sb_tenant_work_str(w, in->ev.to ? in->ev.to : "");
            m->body = sb_tenant_work_str(w, in->ev.body ? in->ev.body : "");
            media.len = 0;
            sb_event_media_json(&in->ev, &media);
            m->media_json = sb_tenant_work_str(w, sb_buf_cstr(&media));
            m->provider_id = sb_tenant_work_str(w, in->ev.provider_id);
            m->status = "received";
            m->created_at = sb_tenant_work_str(w, c->last_message_at);
            m->receipt_id = in->receipt_id;
            message_event(s, m, m->media_json, &ev);
            sb_tenant_work_event(w, "message.created", sb_str(ev.p, ev.len));
            if (in->ev.profile_name && (!c->profile_name || strcmp(c->profile_name, in->ev.profile_name) != 0)) {
                free(c->profile_name); /* (the store has it: ensure_conversations stored the new name) */
                c->profile_name = sb_strdup(in->ev.profile_name);
            }
            conv_event(s, c, &ev);
            sb_tenant_work_event(w, "conversation.updated", sb_str(ev.p, ev.len));
        } else {
            memo_entry_t *pr = provider_get(s, in->ev.provider_id);
            if (!pr && now - in->received_at < STATUS_EARLY_MS) {
                /* the message may not have its provider id yet: left unprocessed, the sweeper brings it back */
                inbound_drop(s, in);
                continue;
            }
            p = pending_new(s, W_INBOUND);
            w = work_new(s, p);
            if (!pr || sb_status_rank(in->ev.status) <= sb_status_rank(pr->status)) {
                sb_tenant_work_receipt(w, in->receipt_id); /* no news: processed, nothing changes */
            } else {
                sb_status_change_t *c = sb_tenant_work_change(w);
                c->message_id = pr->message_id;
                c->channel_id = s->channel;
                c->status = sb_tenant_work_str(w, in->ev.status);
                c->error_code = sb_tenant_work_str(w, in->ev.error_code);
                c->error_message = sb_tenant_work_str(w, in->ev.error_message);
                c->receipt_id = in->receipt_id;
                snprintf(pr->status, sizeof pr->status, "%s", in->ev.status);
                fallback_news(s, pr->message_id, in->ev.status, c);
                status_event(c, &ev);
                sb_tenant_work_event(w, "message.status", sb_str(ev.p, ev.len));
            }
        }
        p->receipt = in->receipt_id;
        inbound_drop(s, in);
        sb_idset_add(&s->known, p->receipt); /* held until its write is answered */
        submit(s, p, w);
    }
    sb_buf_cleanup(&ev);
    sb_buf_cleanup(&media);
}

/* ---- outbound: accepting sends -------------------------------------------------------------------------------------- */

static void accept_drop(session_t *s, accept_t *a)
{
    sb_list_remove(&a->link);
    if (a->receipt)
        sb_idset_del(&s->known, a->receipt); /* stored, or left for the sweeper: either way not held here */
    free(a);
}

/* Meta's 24-hour customer-service window (and Twilio's for WhatsApp): outside it, from the conversation's last
 * inbound message, only what the provider port lets through (a template, a message tag) may be accepted. True when
 * req may not go (its code and message set for a 422); a conversation that never had an inbound message has no
 * window open. */
static bool outside_window(session_t *s, const conv_t *c, sb_session_send_t *req)
{
    if (!s->ports->provider.window)
        return false;
    int64_t now_ms = s->ports->now_us(s->ports->ctx) / 1000;
    int64_t since = c->last_in_ms ? (now_ms > c->last_in_ms ? now_ms - c->last_in_ms : 0) : -1;
    sb_send_request_t m = sb_session_send_request(req);
    const char *code = "outside_window";
    if (s->ports->provider.window(s->ports->provider.ctx, s->info.type, &m, since, &code, req->message,
                                  sizeof req->message) == 0)
        return false;
    req->code = code;
    return true;
}

/* Accepts the sends whose conversation and key are known, in order, each its own work item. */
static void apply_accepts(session_t *s)
{
    if (s->inbound_waiting)
        return;
    sb_buf_t ev;
    sb_buf_init(&ev);
    sb_list_foreach_safe(l, nx, &s->accepts)
    {
        accept_t *a = sb_container_of(l, accept_t, link);
        sb_session_send_t *req = a->req;
        if (a->conv)
            continue; /* being written */
        if (req->idempotency_key) {
            memo_entry_t *k = key_get(s, req->idempotency_key);
            if (k) { /* the key names an earlier message (or one being accepted: it waits for that one) */
                if (k->message_id < 0)
                    break;
                accept_drop(s, a);
                req->accepted = strcmp(k->status, "scheduled") == 0 ? "scheduled" : "queued";
                answer(req, 200, k->message_id, false);
                continue;
            }
            if (!a->key_asked)
                break; /* not asked yet */
        }
        conv_t *c = conv_by_addr(s, req->to);
        if (!c || !c->fresh)
            break;
        if (!a->receipt && outside_window(s, c, req)) { /* refused before anything is stored or sent (a send taken by
                                                          * another node was checked there: gateway/sends) */
            accept_drop(s, a);
            answer(req, 422, 0, false);
            continue;
        }
        int64_t id = a->preset ? a->preset : s->ports->store.message_id(s->ports->store.ctx);
        if (!id) {
            s->inbound_waiting = true;
            sb_actor_timer_start(s->actor, ID_WAIT_MS, 0, TIMER_INBOUND);
            break;
        }
        pending_t *p = pending_new(s, W_ACCEPT);
        sb_tenant_work_t *w = work_new(s, p);
        sb_new_message_t *m = sb_tenant_work_message(w);
        number(s, c, m, id);
        m->out = true;
        m->sender = sb_tenant_work_str(w, s->info.address);
        m->recipient = sb_tenant_work_str(w, req->to);
        m->body = sb_tenant_work_str(w, req->body);
        m->media_json = sb_tenant_work_str(w, req->media_json);
        m->status = "queued";
        a->due_ms = req->send_at_ms > wall_ms(s) ? req->send_at_ms : 0; /* scheduled: not before its time */
        if (a->due_ms) {
            char at[SB_RFC3339_TEXT_LEN];
            sb_rfc3339_format(a->due_ms, at);
            m->status = "scheduled";
            m->send_at = sb_tenant_work_str(w, at);
        }
        m->idempotency_key = sb_tenant_work_str(w, req->idempotency_key);
        m->template_json = sb_tenant_work_str(w, req->template_json);
        m->priority = sb_priority_names[req->priority];
        m->fallback_json = sb_tenant_work_str(w, req->fallback_json);
        m->fallback_of = req->fallback_of;
        m->created_at = sb_tenant_work_str(w, c->last_message_at);
        if (a->receipt)
            sb_tenant_work_receipt(w, a->receipt); /* processed with the message it became */
        message_event(s, m, m->media_json, &ev);
        sb_tenant_work_event(w, "message.created", sb_str(ev.p, ev.len));
        if (a->due_ms) {
            sb_status_change_t sc = {.message_id = m->id, .status = "scheduled"};
            status_event(&sc, &ev);
            sb_tenant_work_event(w, "message.status", sb_str(ev.p, ev.len));
        }
        conv_event(s, c, &ev);
        sb_tenant_work_event(w, "conversation.updated", sb_str(ev.p, ev.len));
        if (req->idempotency_key)
            key_learn(s, req->idempotency_key, -1); /* being accepted: a twin waits for this one */
        a->id = m->id;
        a->conv = c;
        a->seq = m->seq;
        p->conv = c;
        p->seq = m->seq;
        p->accept = a;
        submit(s, p, w);
    }
    sb_buf_cleanup(&ev);
}

/* ---- outbound: sending ------------------------------------------------------------------------------------------- */

static bool send_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, send_t, node)->id == *(const int64_t *)key;
}

static send_t *send_get(session_t *s, int64_t id)
{
    sb_hnode_t *n = sb_htable_find(&s->sends, sb_hash_u64((uint64_t)id), send_eq, &id);
    return n ? sb_container_of(n, send_t, node) : NULL;
}

/* ---- lanes: which conversation's head takes the next token ------------------------------------------------------ */

/* The priority of c's lane: the best of its messages' (its head goes first whatever its own priority, so a reply
 * queued behind a bulk message of the same conversation lifts that conversation, never overtakes inside it). */
static sb_priority_t lane_prio(const conv_t *c)
{
    for (int p = 0; p < SB_PRIORITY_N; p++)
        if (c->nprio[p])
            return (sb_priority_t)p;
    return SB_PRIORITY_BULK;
}

/* Puts c on the ready list of its lane's priority when its head may start (moved up if its priority rose). */
static void lane_ready(session_t *s, conv_t *c)
{
    if (sb_list_empty(&c->lane) || sb_container_of(sb_list_first(&c->lane), send_t, lane_link)->state != Q_QUEUED)
        return;
    sb_priority_t p = lane_prio(c);
    if (sb_list_linked(&c->ready_link)) {
        if (p >= c->ready_prio)
            return;
        sb_list_remove(&c->ready_link);
    }
    c->ready_prio = p;
    sb_list_push_back(&s->lanes[p], &c->ready_link);
}

/* Counts x in its lane's and the session's figures at priority p (x leaves them with prio_leave). */
static void prio_enter(session_t *s, send_t *x, sb_priority_t p)
{
    x->prio = p;
    x->in_prio = true;
    x->conv->nprio[p]++;
    s->depth[p]++;
    sb_gauge_add(&s->metrics->lane_depth[p], 1);
}

static void prio_leave(session_t *s, send_t *x)
{
    if (!x->in_prio)
        return;
    x->in_prio = false;
    x->conv->nprio[x->prio]--;
    s->depth[x->prio]--;
    sb_gauge_add(&s->metrics->lane_depth[x->prio], -1);
}

/* Sets a send's priority (a send is added as normal). */
static void send_set_priority(session_t *s, send_t *x, sb_priority_t p)
{
    if ((unsigned)p >= SB_PRIORITY_N || p == x->prio)
        return;
    prio_leave(s, x);
    prio_enter(s, x, p);
}

static sb_priority_t priority_parse(const char *name)
{
    for (int p = 0; name && p < SB_PRIORITY_N; p++)
        if (strcmp(name, sb_priority_names[p]) == 0)
            return (sb_priority_t)p;
    return SB_PRIORITY_NORMAL;
}

/* Conversations on the ready lists, counted up to max. */
static unsigned ready_count(const session_t *s, unsigned max)
{
    unsigned n = 0;
    for (int p = 0; p < SB_PRIORITY_N && n < max; p++)
        for (const sb_list_t *l = s->lanes[p].next; l != &s->lanes[p] && n < max; l = l->next)
            n++;
    return n;
}

/* The conversation whose head takes the token just granted, off its ready list, or NULL when none is ready. The
 * best lane goes first (interactive, normal, bulk; each lane's oldest conversation first), except that a lower lane
 * passed over LANE_SHARE starts in a row while it had work takes this one (the lowest such lane first): bulk gets at
 * least one start in LANE_SHARE + 1 however busy the others are, and a lone interactive reply is never held back by
 * the share (a lower lane is only owed a start once higher ones took LANE_SHARE in a row). */
static conv_t *lane_pick(session_t *s)
{
    int top = -1, p;
    for (p = 0; p < SB_PRIORITY_N && top < 0; p++)
        if (!sb_list_empty(&s->lanes[p]))
            top = p;
    if (top < 0)
        return NULL;
    int take = top;
    for (p = SB_PRIORITY_N - 1; p > top; p--)
        if (!sb_list_empty(&s->lanes[p]) && s->passed[p] >= LANE_SHARE) {
            take = p;
            break;
        }
    for (p = 0; p < SB_PRIORITY_N; p++) {
        if (sb_list_empty(&s->lanes[p]) || p == take)
            s->passed[p] = 0;
        else if (p > take)
            s->passed[p]++;
    }
    return sb_container_of(sb_list_pop_front(&s->lanes[take]), conv_t, ready_link);
}

/* A send of conversation c, at the end of its lane. */
static send_t *send_add(session_t *s, conv_t *c, int64_t id, unsigned attempts, const char *to, const char *body,
                        const char *media_json, const char *template_json)
{
    send_t *x = sb_calloc(1, sizeof *x);
    x->id = id;
    x->conv = c;
    x->attempts = attempts;
    x->state = Q_QUEUED;
    x->to = sb_strdup(to);
    x->body = sb_strdup(body ? body : "");
    x->media_json = sb_strdup(media_json ? media_json : "[]");
    x->template_json = dup_or_null(template_json);
    x->node.hash = sb_hash_u64((uint64_t)id);
    sb_htable_insert(&s->sends, &x->node);
    sb_list_push_back(&c->lane, &x->lane_link);
    prio_enter(s, x, SB_PRIORITY_NORMAL);
    return x;
}

static void send_free(session_t *s, send_t *x)
{
    if (x->leased)
        s->ports->counters.release(s->ports->counters.ctx, s->tenant, s->channel, x->lease);
    prio_leave(s, x);
    sb_htable_remove(&s->sends, &x->node);
    sb_list_remove(&x->lane_link);
    free(x->to);
    free(x->body);
    free(x->media_json);
    free(x->template_json);
    free(x->out_provider_id);
    free(x->out_code);
    free(x->out_message);
    free(x->fallback_json);
    free(x);
}

static void pump(session_t *s);

static void fallback_outcome(session_t *s, send_t *x, sb_status_change_t *c);
static void fallback_sent(session_t *s, send_t *x);

/* Stores x's outcome (its message.status event with it), as a work item of its own. */
static void store_outcome(session_t *s, send_t *x)
{
    pending_t *p = pending_new(s, W_OUTCOME);
    p->sends = sb_malloc(sizeof *p->sends);
    p->sends[0] = x;
    p->nsends = 1;
    sb_tenant_work_t *w = work_new(s, p);
    sb_status_change_t *c = sb_tenant_work_change(w);
    c->message_id = x->id;
    c->channel_id = s->channel;
    c->status = x->out_status;
    c->provider_id = sb_tenant_work_str(w, x->out_provider_id);
    c->error_code = sb_tenant_work_str(w, x->out_code);
    c->error_message = sb_tenant_work_str(w, x->out_message);
    c->retry_in_ms = x->out_retry_ms;
    c->finished = x->out_finished;
    fallback_outcome(s, x, c);
    sb_buf_t ev;
    sb_buf_init(&ev);
    status_event(c, &ev);
    sb_tenant_work_event(w, "message.status", sb_str(ev.p, ev.len));
    sb_buf_cleanup(&ev);
    x->state = Q_STORING;
    sb_tenant_write(s->rt, s->tenant, w);
}

/* x ended (provider's answer or our own verdict): what to store. */
static void finish(session_t *s, send_t *x, const char *status, const char *provider_id, const char *code,
                   const char *message, int64_t retry_ms, bool finished)
{
    x->out_status = status;
    free(x->out_provider_id);
    free(x->out_code);
    free(x->out_message);
    x->out_provider_id = provider_id && *provider_id ? sb_strdup(provider_id) : NULL;
    x->out_code = code && *code ? sb_strdup(code) : NULL;
    x->out_message = message && *message ? sb_strdup(message) : NULL;
    x->out_retry_ms = retry_ms;
    x->out_finished = finished;
    x->out_since = sb_rt_time(s->rt);
    if (x->leased) {
        s->ports->counters.release(s->ports->counters.ctx, s->tenant, s->channel, x->lease);
        x->leased = false;
    }
    store_outcome(s, x);
}

static void outcome_cb(void *arg, const sb_send_outcome_t *o)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, 0);
    pk_i64(&b, o->result);
    pk_i64(&b, o->retry_after_s);
    pk_str(&b, o->provider_id);
    pk_str(&b, o->error_code);
    pk_str(&b, o->error_message);
    comp_post(c, S_OUTCOME, &b);
}

static void grant_cb(void *arg, int err, const sb_grant_t *g)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, err ? 0 : g->granted);
    pk_i64(&b, err ? 0 : (int64_t)g->wait_us);
    pk_str(&b, err ? "" : g->lease);
    pk_i64(&b, err ? 0 : g->busy);
    pk_i64(&b, err ? 0 : g->tokens);
    comp_post(c, S_GRANT, &b);
}

/* Asks the counters (Redis) for a token of the channel's pace and a slot of its and its tenant's caps. Not for a
 * given message: the head to send is picked when the token is granted (on_grant), so a reply that arrives while
 * bulk waits for the pace takes the next token, and no message holds a claim while it waits. Counted in asking
 * until it is answered, and while it waits to ask again. */
static void ask(session_t *s)
{
    s->asking++;
    comp_t *c = comp_new(s, s->ports->now_us(s->ports->ctx)); /* ref: when it was asked (µs) */
    if (s->ports->counters.acquire(s->ports->counters.ctx, s->tenant, s->channel, &s->limits, grant_cb, c) < 0) {
        free(c);
        sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_ASK); /* without Redis nothing goes */
    }
}

static void claim(session_t *s, send_t *x);

/* An interactive reply that finds a token request under way (the pace's next token on its way) is claimed at once,
 * so that its commit is not between the token and the provider: the next grant goes to it. One at a time, and only
 * the interactive lane's: a claimed message no longer yields to a better one. */
static void preclaim(session_t *s)
{
    if (s->preclaimed || !s->asking || sb_list_empty(&s->lanes[SB_PRIORITY_INTERACTIVE]))
        return;
    conv_t *c = sb_container_of(sb_list_pop_front(&s->lanes[SB_PRIORITY_INTERACTIVE]), conv_t, ready_link);
    s->passed[SB_PRIORITY_NORMAL] += !sb_list_empty(&s->lanes[SB_PRIORITY_NORMAL]);
    s->passed[SB_PRIORITY_BULK] += !sb_list_empty(&s->lanes[SB_PRIORITY_BULK]);
    s->preclaimed = sb_container_of(sb_list_first(&c->lane), send_t, lane_link);
    claim(s, s->preclaimed);
}

/* Asks for tokens while conversations are ready and the channel's cap has room: one request at a time while the
 * pace is the limit (the usual case: its tokens come one per interval), up to ASK_MAX while it has tokens to spare. */
static void pump(session_t *s)
{
    if (!s->ready || s->pump_waiting)
        return;
    unsigned cap = s->limits.channel_max ? s->limits.channel_max : UINT32_MAX;
    unsigned at_once = s->tokens < 0 ? ASK_MAX : s->tokens < ASK_MAX ? (unsigned)s->tokens + 1 : ASK_MAX;
    unsigned ahead = s->preclaimed != NULL; /* claimed, and waiting for a request's token */
    while (s->asking < at_once && s->sending - ahead + s->asking < cap &&
           ready_count(s, s->asking + 1) + ahead > s->asking) {
        uint64_t held = s->ports->provider.held_ms(s->ports->provider.ctx, s->info.type);
        if (held) { /* the provider's endpoint is failing: nothing is claimed, no attempt spent */
            s->pump_waiting = true;
            sb_actor_timer_start(s->actor, held, 0, TIMER_PUMP);
            break;
        }
        ask(s);
    }
    preclaim(s);
}

/* Claims x (status sending, committed before the provider is asked, so a crash never makes a blind second send):
 * a work item of its own (the tenant writes a turn's items as one statement). x holds its slot from here. */
static void claim(session_t *s, send_t *x)
{
    pending_t *p = pending_new(s, W_CLAIM);
    sb_tenant_work_t *w = work_new(s, p);
    sb_status_change_t *ch = sb_tenant_work_change(w);
    ch->message_id = x->id;
    ch->channel_id = s->channel;
    ch->status = "sending";
    ch->counts_attempt = true;
    p->sends = sb_malloc(sizeof *p->sends);
    p->sends[0] = x;
    p->nsends = 1;
    x->state = Q_CLAIMING;
    s->sending++;
    sb_tenant_write(s->rt, s->tenant, w);
}

/* The claim of x is committed: the provider is asked. */
static void provider_send(session_t *s, send_t *x)
{
    if (x->canceled) { /* its broadcast was canceled while it waited for its token */
        if (s->preclaimed == x)
            s->preclaimed = NULL;
        finish(s, x, "canceled", NULL, "canceled", "its broadcast was canceled", 0, true);
        return;
    }
    x->state = Q_SENDING;
    sb_send_request_t req = {.channel = &s->info,
                             .message_id = x->id,
                             .to = x->to,
                             .body = x->body,
                             .media_json = x->media_json,
                             .template_json = x->template_json};
    comp_t *c = comp_new(s, x->id);
    if (s->ports->provider.send(s->ports->provider.ctx, &req, outcome_cb, c) < 0) {
        free(c);
        finish(s, x, "failed", NULL, "invalid_request", "the provider request could not be made", 0, true);
    }
}

/* The counters' answer to ask(). Granted: the best ready head (lane_pick) takes the token and its slot and is
 * claimed; with none ready any more the slot goes back (the token is spent: the pace is never exceeded). Not
 * granted: asks again when the pace has a token (or, a cap being full, a little later). */
static int on_grant(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    int64_t granted = rd_i64(&r), wait_us = rd_i64(&r);
    const char *lease = rd_str(&r);
    bool busy = rd_i64(&r) != 0;
    int64_t tokens = rd_i64(&r);
    if (err || r.bad) { /* limits must hold: without Redis nothing is sent */
        sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_ASK);
        return 0;
    }
    if (!granted) {
        /* the pace: asked again at the whole ms below its token (under a ms: on the loop's next turn), so that timer
         * granularity does not slow a fast pace down; a full cap: polled, the slot that frees first may be freed well
         * before its lease expires */
        uint64_t ms = busy ? (uint64_t)(wait_us + 999) / 1000 : (uint64_t)wait_us / 1000;
        if (busy && ms > BUSY_POLL_MS)
            ms = BUSY_POLL_MS;
        if (!busy)
            s->tokens = 0;
        sb_actor_timer_start(s->actor, ms, 0, TIMER_ASK);
        return 0;
    }
    s->asking--;
    s->tokens = tokens;
    conv_t *c = s->preclaimed ? NULL : lane_pick(s);
    if (s->preclaimed) { /* claimed ahead: sent now, or once its claim is committed */
        send_t *x = s->preclaimed;
        s->preclaimed = NULL;
        snprintf(x->lease, sizeof x->lease, "%s", lease ? lease : "");
        x->leased = true;
        if (x->state == Q_CLAIMED)
            provider_send(s, x);
    } else if (!c) {
        if (lease && *lease)
            s->ports->counters.release(s->ports->counters.ctx, s->tenant, s->channel, lease);
    } else {
        send_t *x = sb_container_of(sb_list_first(&c->lane), send_t, lane_link);
        snprintf(x->lease, sizeof x->lease, "%s", lease ? lease : "");
        x->leased = true;
        claim(s, x);
    }
    /* the next token is one interval after this one, which was taken about when it was asked for (ref): ask then
     * (the whole ms below it), not now to hear "wait" */
    int64_t next_us = ref + (int64_t)s->limits.interval_us - s->ports->now_us(s->ports->ctx);
    if (tokens == 0 && next_us >= 1000) {
        s->asking++;
        sb_actor_timer_start(s->actor, (uint64_t)next_us / 1000, 0, TIMER_ASK);
    }
    pump(s); /* (asks more only if the pace has tokens to spare; an interactive head may be claimed ahead) */
    return 0;
}

static int on_outcome(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    send_t *x = send_get(s, ref);
    if (!x || x->state != Q_SENDING)
        return 0;
    int result = (int)rd_i64(&r), retry_after = (int)rd_i64(&r);
    const char *pid = rd_str(&r), *code = rd_str(&r), *msg = rd_str(&r);
    switch (result) {
    case SB_SEND_SENT:
        finish(s, x, "sent", pid, NULL, NULL, 0, true);
        if (pid && *pid)
            provider_learn(s, pid, x->id, "sent");
        break;
    case SB_SEND_FAILED:
        finish(s, x, "failed", pid, code, msg, 0, true);
        break;
    case SB_SEND_RETRY:
        if (sb_retry_may(x->attempts))
            finish(s, x, "retrying", NULL, code, msg,
                   (int64_t)sb_retry_backoff_ms(x->attempts, retry_after, s->ports->random(s->ports->ctx)), false);
        else
            finish(s, x, "dead", NULL, code, msg, 0, true);
        break;
    default:
        finish(s, x, "unknown", NULL, code, msg, 0, true);
        break;
    }
    return 0;
}

/* ---- fallback: the same content on the next channel of the message's list ------------------------------------------
 *
 * A message accepted with a fallback list (proto/fallback) is watched once its send is over: failed or dead, its
 * fallback is due at once; sent or unknown, it is due fallback_after seconds later unless a delivered or read
 * status callback comes first (failed or undelivered make it due at once). The deadline is stored with the outcome
 * (messages.fallback_due_at, sql/0018) and loaded again at activation, so a restart keeps it. When due, the content
 * goes to the next channel's session as a new message with the idempotency key FALLBACK_KEY + the message's id,
 * fallback_of set and the rest of the list: asked twice (a restart before the link was stored), that session
 * answers the message it made the first time. Its id is then stored on this message (fallback_to, with a history
 * entry "fallback" that leaves the message's own status alone) with a message.status event {"id", "status":
 * "fallback", "fallback_to", "fallback_channel_id", "reason": "failed" | "not_delivered"}. A channel that refuses
 * it (400, 404: gone, another type's rules) is skipped; when none takes it, "fallback_failed" is stored and sent
 * instead, with the last refusal as its error.
 *
 * The recipient is the message's as stored: E.164 without a prefix, which every phone-number channel takes (Twilio
 * WhatsApp adds its "whatsapp:" when it sends); a channel whose addresses are of another kind refuses it (skipped).
 *
 * Both sessions live on the tenant's shard (placement is per tenant), so the other session's answer, called on
 * that shard's thread, posts to this actor from its own runtime. */

static bool watch_eq(const sb_hnode_t *n, const void *key)
{
    return sb_container_of(n, watch_t, node)->id == *(const int64_t *)key;
}

static watch_t *watch_get(session_t *s, int64_t id)
{
    sb_hnode_t *n = sb_htable_find(&s->watches, sb_hash_u64((uint64_t)id), watch_eq, &id);
    return n ? sb_container_of(n, watch_t, node) : NULL;
}

static void watch_release(watch_t *w)
{
    free(w->to);
    free(w->body);
    free(w->media_json);
    free(w->template_json);
    free(w->out_code);
    free(w->out_message);
    free(w);
}

static void watch_free(session_t *s, watch_t *w)
{
    sb_htable_remove(&s->watches, &w->node);
    watch_release(w);
}

static bool failed_for_good(const char *status)
{
    return status && (strcmp(status, "failed") == 0 || strcmp(status, "undelivered") == 0 ||
                      strcmp(status, "dead") == 0);
}

static bool delivered(const char *status)
{
    return status && (strcmp(status, "delivered") == 0 || strcmp(status, "read") == 0);
}

/* Starts watching message id (its content copied); NULL when it is watched already, or its list cannot be read or
 * is empty (nothing to watch). */
static watch_t *watch_add(session_t *s, int64_t id, const char *fallback_json, const char *to, const char *body,
                          const char *media_json, const char *template_json, sb_priority_t priority)
{
    sb_fallback_t list;
    if (!fallback_json || !to || sb_fallback_parse(fallback_json, strlen(fallback_json), &list) < 0 || !list.n ||
        watch_get(s, id))
        return NULL;
    watch_t *w = sb_calloc(1, sizeof *w);
    w->id = id;
    w->list = list;
    w->priority = priority;
    w->to = sb_strdup(to);
    w->body = sb_strdup(body ? body : "");
    w->media_json = sb_strdup(media_json ? media_json : "[]");
    w->template_json = dup_or_null(template_json);
    w->node.hash = sb_hash_u64((uint64_t)id);
    sb_htable_insert(&s->watches, &w->node);
    return w;
}

/* w's fallback is due in ms. */
static void watch_arm(session_t *s, watch_t *w, uint64_t ms)
{
    w->state = FB_WAITING;
    w->due = sb_rt_time(s->rt) + ms;
    sb_actor_timer_start(s->actor, ms, 0, TIMER_FALLBACK | (uint64_t)w->id);
}

/* x's final outcome is about to be stored (c): with a fallback list, the watch's deadline goes with it. */
static void fallback_outcome(session_t *s, send_t *x, sb_status_change_t *c)
{
    sb_fallback_t list;
    (void)s;
    if (!x->fallback_json || !x->out_finished ||
        sb_fallback_parse(x->fallback_json, strlen(x->fallback_json), &list) < 0 || !list.n)
        return;
    if (failed_for_good(x->out_status)) {
        c->fallback = SB_FALLBACK_WATCH;
        c->fallback_in_ms = 0;
    } else if (strcmp(x->out_status, "sent") == 0 || strcmp(x->out_status, "unknown") == 0) {
        c->fallback = SB_FALLBACK_WATCH;
        c->fallback_in_ms = list.after_s * 1000;
    }
}

/* x's final outcome is stored: the watch starts. A status callback applied meanwhile (the provider may call back
 * before its answer is stored) is in the provider ids' memory: delivered ends the watch before it starts (the store
 * cleared it), failed makes it due at once. */
static void fallback_sent(session_t *s, send_t *x)
{
    bool failed = failed_for_good(x->out_status);
    if (!x->fallback_json || (!failed && strcmp(x->out_status, "sent") != 0 && strcmp(x->out_status, "unknown") != 0))
        return;
    memo_entry_t *pr = x->out_provider_id ? provider_get(s, x->out_provider_id) : NULL;
    if (pr && pr->message_id == x->id) {
        if (delivered(pr->status))
            return;
        failed |= failed_for_good(pr->status);
    }
    watch_t *w = watch_add(s, x->id, x->fallback_json, x->to, x->body, x->media_json, x->template_json, x->prio);
    if (!w)
        return;
    w->failed = failed;
    watch_arm(s, w, failed ? 0 : (uint64_t)w->list.after_s * 1000);
}

/* A status callback moves message id to status (c, being written): delivered or read end its watch (the store
 * clears it with the change); failed or undelivered make its fallback due now, in the store too. */
static void fallback_news(session_t *s, int64_t id, const char *status, sb_status_change_t *c)
{
    watch_t *w = watch_get(s, id);
    send_t *x = w ? NULL : send_get(s, id);
    if (!w && !(x && x->fallback_json))
        return; /* no fallback, or it fired already (the store keeps it so: fallback_to is set) */
    if (w && w->state != FB_WAITING)
        return; /* on its way: too late to call it off */
    if (delivered(status)) {
        if (w)
            watch_free(s, w);
        return;
    }
    if (!failed_for_good(status))
        return;
    c->fallback = SB_FALLBACK_WATCH;
    c->fallback_in_ms = 0;
    if (w) {
        w->failed = true;
        watch_arm(s, w, 0);
    } /* else its outcome is being stored: fallback_sent finds the status in the provider ids' memory */
}

/* The fallback's request, handed to the next channel's session. */
typedef struct fb_req {
    sb_session_send_t req;   /* first: the session answers this pointer */
    comp_t c;                /* this session, the watched message's id as ref */
} fb_req_t;

/* The other session's answer (on the tenant's shard: see above): back to this actor as S_FALLBACK. */
static void fallback_answered(sb_session_send_t *req)
{
    fb_req_t *f = (fb_req_t *)req;
    comp_t *c = sb_malloc(sizeof *c);
    *c = f->c;
    sb_buf_t b;
    comp_head(c, &b, 0);
    pk_i64(&b, req->status);
    pk_i64(&b, req->id);
    pk_str(&b, req->code);
    pk_str(&b, req->code ? req->message : NULL);
    sb_session_send_cleanup(req);
    free(f);
    comp_post(c, S_FALLBACK, &b);
}

static void fallback_store(session_t *s, watch_t *w);
static void fallbacks_load(session_t *s);

/* w is due: its content goes to the next channel of its list that takes it (or, none left, that is stored). */
static void fallback_fire(session_t *s, watch_t *w)
{
    if (w->next >= w->list.n) {
        fallback_store(s, w);
        return;
    }
    fb_req_t *f = sb_calloc(1, sizeof *f);
    sb_session_send_t *r = &f->req;
    r->tenant = s->tenant;
    r->channel = w->list.channels[w->next];
    r->to = sb_strdup(w->to);
    r->body = sb_strdup(w->body);
    r->media_json = sb_strdup(w->media_json);
    r->template_json = sb_fallback_keeps_template(w->template_json) ? sb_strdup(w->template_json) : NULL;
    char key[48];
    snprintf(key, sizeof key, FALLBACK_KEY "%" PRId64, w->id);
    r->idempotency_key = sb_strdup(key);
    r->priority = w->priority;
    sb_buf_t rest;
    sb_buf_init(&rest);
    if (sb_fallback_format(&w->list, w->next + 1, &rest))
        r->fallback_json = sb_strdup(sb_buf_cstr(&rest));
    sb_buf_cleanup(&rest);
    r->fallback_of = w->id;
    r->answer = fallback_answered;
    f->c = (comp_t){s->rt, s->self, s->epoch, w->id};
    w->state = FB_ASKING;
    sb_session_send(s->rt, s->ports->owner(s->ports->ctx, s->tenant), r); /* answered in every case */
}

/* Stores what came of w's fallback: the link to the message a channel accepted, or that none did. */
static void fallback_store(session_t *s, watch_t *w)
{
    pending_t *p = pending_new(s, W_FALLBACK);
    p->watch = w->id;
    sb_tenant_work_t *wk = work_new(s, p);
    sb_status_change_t *c = sb_tenant_work_change(wk);
    c->message_id = w->id;
    c->channel_id = s->channel;
    c->history_only = true;
    sb_buf_t ev;
    sb_buf_init(&ev);
    sb_buf_puts(&ev, "{\"id\":\"");
    sb_buf_append_i64(&ev, w->id);
    if (w->fallback_id) {
        c->status = "fallback";
        c->fallback = SB_FALLBACK_LINK;
        c->fallback_to = w->fallback_id;
        sb_buf_puts(&ev, "\",\"status\":\"fallback\",\"fallback_to\":\"");
        sb_buf_append_i64(&ev, w->fallback_id);
        sb_buf_puts(&ev, "\",\"fallback_channel_id\":\"");
        sb_buf_append_i64(&ev, w->list.channels[w->next < w->list.n ? w->next : w->list.n - 1]);
        sb_buf_puts(&ev, "\"");
    } else {
        c->status = "fallback_failed";
        c->fallback = SB_FALLBACK_DROP;
        c->error_code = sb_tenant_work_str(wk, w->out_code ? w->out_code : "no_fallback");
        c->error_message =
            sb_tenant_work_str(wk, w->out_message ? w->out_message : "no fallback channel took the message");
        sb_buf_puts(&ev, "\",\"status\":\"fallback_failed\",\"error\":{\"code\":");
        json_str(&ev, c->error_code);
        sb_buf_puts(&ev, ",\"message\":");
        json_str(&ev, c->error_message);
        sb_buf_puts(&ev, "}");
    }
    sb_buf_puts(&ev, ",\"reason\":");
    json_str(&ev, w->failed ? "failed" : "not_delivered");
    sb_buf_puts(&ev, "}");
    sb_tenant_work_event(wk, "message.status", sb_str(ev.p, ev.len));
    sb_buf_cleanup(&ev);
    w->state = FB_STORING;
    sb_tenant_write(s->rt, s->tenant, wk); /* a refused one is answered (SB_SESSION_WRITTEN with its error) */
}

static void written_fallback(session_t *s, pending_t *p, int err)
{
    watch_t *w = watch_get(s, p->watch);
    if (!w || w->state != FB_STORING)
        return;
    if (err) { /* stored again after a while (the link must not be lost; asking again would answer the same id) */
        w->state = FB_WAITING;
        w->due = sb_rt_time(s->rt) + DB_RETRY_MS;
        sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_FALLBACK | (uint64_t)w->id);
        return;
    }
    watch_free(s, w);
}

static int on_fallback(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    int64_t status = rd_i64(&r), id = rd_i64(&r);
    const char *code = rd_str(&r), *message = rd_str(&r);
    watch_t *w = watch_get(s, ref);
    if (r.bad || !w || w->state != FB_ASKING)
        return 0;
    if ((status == 202 || status == 200) && id) {
        w->fallback_id = id;
        fallback_store(s, w);
    } else if (status == 400 || status == 404 || status == 409 || status == 422) { /* that channel will not take it */
        sb_log_info("session %" PRId64 ": message %" PRId64 ": fallback channel %" PRId64 " refused it (%s)",
                    s->channel, w->id, w->list.channels[w->next], code ? code : "?");
        free(w->out_code);
        free(w->out_message);
        w->out_code = dup_or_null(code);
        w->out_message = dup_or_null(message);
        w->next++;
        fallback_fire(s, w);
    } else { /* that session could not store it now: again after a while */
        watch_arm(s, w, DB_RETRY_MS);
    }
    return 0;
}

/* A watch's timer (id), or (id 0) the watches' load to try again. */
static void fallback_timer(session_t *s, int64_t id)
{
    if (!id) {
        fallbacks_load(s);
        return;
    }
    watch_t *w = watch_get(s, id);
    if (!w || w->state != FB_WAITING || sb_rt_time(s->rt) < w->due)
        return; /* gone, on its way, or an earlier arming's timer */
    if (w->fallback_id) /* its link is to be stored again */
        fallback_store(s, w);
    else
        fallback_fire(s, w);
}

static void fallbacks_cb(void *arg, int err, const sb_fallback_watch_t *w, size_t n)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, err ? 0 : (int64_t)n);
    for (size_t i = 0; !err && i < n; i++) {
        pk_i64(&b, w[i].id);
        pk_str(&b, w[i].to);
        pk_str(&b, w[i].body);
        pk_str(&b, w[i].media_json);
        pk_str(&b, w[i].template_json);
        pk_str(&b, w[i].fallback_json);
        pk_str(&b, w[i].priority);
        pk_str(&b, w[i].status);
        pk_i64(&b, w[i].due_in_ms);
    }
    comp_post(c, S_FALLBACKS, &b);
}

/* At activation: the channel's watched messages (the inbox waits for them). */
static void fallbacks_load(session_t *s)
{
    s->watches_loading = false;
    if (!s->ports->store.load_fallbacks || !s->info.address)
        return;
    comp_t *c = comp_new(s, 0);
    if (s->ports->store.load_fallbacks(s->ports->store.ctx, s->tenant, s->channel, fallbacks_cb, c) < 0) {
        free(c);
        sb_actor_timer_start(s->actor, LOAD_RETRY_MS, 0, TIMER_FALLBACK);
    }
    s->watches_loading = true;
}

static int on_fallbacks(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    if (err) {
        sb_actor_timer_start(a, LOAD_RETRY_MS, 0, TIMER_FALLBACK);
        return 0;
    }
    int64_t n = rd_i64(&r);
    for (int64_t i = 0; !r.bad && i < n; i++) {
        int64_t id = rd_i64(&r);
        const char *to = rd_str(&r), *body = rd_str(&r), *media = rd_str(&r), *tpl = rd_str(&r);
        const char *list = rd_str(&r), *priority = rd_str(&r), *status = rd_str(&r);
        int64_t due_in = rd_i64(&r);
        if (r.bad || delivered(status))
            continue;
        watch_t *w = watch_add(s, id, list, to, body, media, tpl, priority_parse(priority));
        if (!w) {
            if (!watch_get(s, id))
                sb_log_warn("session %" PRId64 ": message %" PRId64 ": its fallback list cannot be read", s->channel,
                            id);
            continue;
        }
        w->failed = failed_for_good(status);
        watch_arm(s, w, due_in > 0 ? (uint64_t)due_in : 0);
    }
    s->watches_loading = false;
    process(s);
    return 0;
}

/* ---- outbound: scheduled sends ----------------------------------------------------------------------------------- */

/* Why a heap and one timer: a channel may hold many scheduled messages (a broadcast's recipients, appointment
 * reminders for the month); what costs per message is its place in the heap (a pointer) and the send it is anyway,
 * never a timer of its own or a walk of the rest. Times are wall-clock Unix ms (send_at is a wall-clock promise);
 * the timer is armed for the earliest only and moved when an earlier one comes or the earliest goes. */

static bool sched_before(const send_t *a, const send_t *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->id < b->id);
}

static void sched_set(session_t *s, size_t i, send_t *x)
{
    s->sched[i] = x;
    x->sched_i = i;
}

static void sched_up(session_t *s, size_t i)
{
    send_t *x = s->sched[i];
    while (i > 0 && sched_before(x, s->sched[(i - 1) / 2])) {
        sched_set(s, i, s->sched[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    sched_set(s, i, x);
}

static void sched_down(session_t *s, size_t i)
{
    send_t *x = s->sched[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nsched)
            break;
        if (c + 1 < s->nsched && sched_before(s->sched[c + 1], s->sched[c]))
            c++;
        if (!sched_before(s->sched[c], x))
            break;
        sched_set(s, i, s->sched[c]);
        i = c;
    }
    sched_set(s, i, x);
}

/* Takes x out of the heap (it is in it) and lets go of its conversation's hold; the caller arms the timer again. */
static void sched_remove(session_t *s, send_t *x)
{
    size_t i = x->sched_i;
    SB_BUG_ON(i >= s->nsched || s->sched[i] != x);
    send_t *last = s->sched[--s->nsched];
    x->conv->scheduled--;
    if (last == x)
        return;
    sched_set(s, i, last);
    sched_up(s, i);
    sched_down(s, last->sched_i);
}

/* Arms the one timer for the earliest scheduled message, unless it already is. */
static void sched_arm(session_t *s)
{
    if (s->nsched && s->sched_timer && s->sched_timer_due == s->sched[0]->due_ms)
        return;
    if (s->sched_timer) {
        sb_actor_timer_stop(s->actor, s->sched_timer);
        s->sched_timer = 0;
    }
    if (!s->nsched)
        return;
    int64_t wait = s->sched[0]->due_ms - wall_ms(s);
    s->sched_timer = sb_actor_timer_start(s->actor, wait > 0 ? (uint64_t)wait : 0, 0, TIMER_SCHED);
    s->sched_timer_due = s->sched[0]->due_ms;
}

/* x (just made by send_add, at the end of its lane) waits in the schedule until due_ms instead. */
static void sched_add(session_t *s, send_t *x, int64_t due_ms)
{
    sb_list_remove(&x->lane_link);
    prio_leave(s, x); /* not in its lane until its time */
    x->state = Q_SCHEDULED;
    x->due_ms = due_ms;
    x->conv->scheduled++;
    if (s->nsched == s->sched_cap) {
        s->sched_cap = s->sched_cap ? s->sched_cap * 2 : 16;
        s->sched = sb_realloc(s->sched, s->sched_cap * sizeof *s->sched);
    }
    sched_set(s, s->nsched++, x);
    sched_up(s, s->nsched - 1);
    sched_arm(s);
}

/* The scheduled messages whose time has come join the ends of their lanes, earliest (then lowest id) first; the
 * timer is armed for the next. The caller pumps. */
static void sched_run(session_t *s)
{
    int64_t now = wall_ms(s);
    while (s->nsched && s->sched[0]->due_ms <= now) {
        send_t *x = s->sched[0];
        sched_remove(s, x);
        x->state = Q_QUEUED;
        sb_list_push_back(&x->conv->lane, &x->lane_link);
        prio_enter(s, x, x->prio);
        lane_ready(s, x->conv);
    }
    sched_arm(s);
}

/* Whether nothing scheduled is due within the horizon (the session may then be passivated: the store's scan wakes
 * it in time). */
static bool sched_far(session_t *s)
{
    return !s->nsched || s->sched[0]->due_ms - wall_ms(s) > SB_SESSION_SCHEDULE_HORIZON_MS;
}

/* ---- outbound: cancels ----------------------------------------------------------------------------------------- */

static void cancel_answer(sb_session_cancel_t *req, int status, const char *code, const char *message)
{
    req->status = status;
    req->code = code;
    snprintf(req->message, sizeof req->message, "%s", message ? message : "");
    req->answer(req);
}

static void drop_cancel_req(sb_msg_t *m)
{
    sb_session_cancel_t *req;
    memcpy(&req, m->data, sizeof req);
    cancel_answer(req, 503, "unavailable", "the message's channel could not be reached now; retry");
}

void sb_session_cancel(sb_rt_t *rt, unsigned owner, sb_session_cancel_t *req)
{
    sb_msg_t *m = sb_msg_new(SB_SESSION_CANCEL, sizeof req);
    memcpy(m->data, &req, sizeof req);
    m->drop = drop_cancel_req;
    sb_rt_post_key(rt, owner, &sb_session_kind, (uint64_t)req->channel, m); /* a refused one is dropped: answered */
}

static void cancel_done(cancel_t *c, int status, const char *code, const char *message)
{
    sb_list_remove(&c->link);
    cancel_answer(c->req, status, code, message);
    free(c);
}

/* Stores the cancel of x (its message.status event with it), as a work item of its own; x stays where it is,
 * started by nothing, until the answer. */
static void cancel_store(session_t *s, cancel_t *c, send_t *x)
{
    conv_t *conv = x->conv;
    x->cancel_from = x->state;
    if (x->state == Q_SCHEDULED) {
        sched_remove(s, x);
        conv->scheduled++; /* (still holds its conversation in memory until the answer) */
        sched_arm(s);
    } else if (sb_list_first(&conv->lane) == &x->lane_link && sb_list_linked(&conv->ready_link)) {
        sb_list_remove(&conv->ready_link); /* its lane's head: the lane waits for the answer */
    }
    x->state = Q_CANCELING;
    c->storing = true;
    pending_t *p = pending_new(s, W_CANCEL);
    p->cancel = c;
    p->sends = sb_malloc(sizeof *p->sends);
    p->sends[0] = x;
    p->nsends = 1;
    sb_tenant_work_t *w = work_new(s, p);
    sb_status_change_t *ch = sb_tenant_work_change(w);
    ch->message_id = x->id;
    ch->channel_id = s->channel;
    ch->status = "canceled";
    ch->finished = true;
    sb_buf_t ev;
    sb_buf_init(&ev);
    status_event(ch, &ev);
    sb_tenant_work_event(w, "message.status", sb_str(ev.p, ev.len));
    sb_buf_cleanup(&ev);
    sb_tenant_write(s->rt, s->tenant, w); /* a refused one is answered (SB_SESSION_WRITTEN with its error) */
}

/* Decides the cancels that can be decided, in order: the session is ready (its outbox loaded). A message being
 * accepted right now (written, not answered yet) is waited for. */
static void cancels_run(session_t *s)
{
    if (!s->ready)
        return;
    sb_list_foreach_safe(l, nx, &s->cancels)
    {
        cancel_t *c = sb_container_of(l, cancel_t, link);
        if (c->storing)
            continue;
        sb_session_cancel_t *req = c->req;
        if (!s->info.address || req->tenant != s->tenant) {
            cancel_done(c, 404, "not_found", "no such message");
            continue;
        }
        send_t *x = send_get(s, req->id);
        if (!x) {
            bool accepting = false;
            sb_list_foreach(it, &s->accepts)
            {
                accept_t *a = sb_container_of(it, accept_t, link);
                accepting |= (a->conv && a->id == req->id) || (a->preset && a->preset == req->id);
            }
            if (accepting)
                continue;
            if (req->intake && !sb_idset_has(&s->taken, req->id)) { /* taken by a node, still on its way here */
                if ((int64_t)sb_rt_time(s->rt) - c->since >= INTAKE_WAIT_MS)
                    cancel_done(c, 503, "unavailable", "the message has not reached its channel's session yet; retry");
                else if (!s->cancel_timer && (s->cancel_timer = true))
                    sb_actor_timer_start(s->actor, 1000, 0, TIMER_CANCEL);
                continue;
            }
            /* not in the outbox: finished (sent, failed, canceled ...) */
            cancel_done(c, 409, "conflict", "the message has gone out already: it can no longer be canceled");
            continue;
        }
        /* waiting its retry's backoff (out_retry_ms its length, or 0 after an activation); -1 and -2 mark an
         * outcome being stored again and a send left by a crash: both went out */
        bool waiting_retry = x->state == Q_WAITING && x->out_retry_ms >= 0;
        if (x->state == Q_SCHEDULED || x->state == Q_QUEUED || waiting_retry)
            cancel_store(s, c, x);
        else if (x->state != Q_CANCELING) /* (a twin cancel waits for the first's answer) */
            cancel_done(c, 409, "conflict", "the message is being sent: it can no longer be canceled");
    }
}

/* The tenant's answer to a cancel: canceled (x freed, its lane goes on, a twin DELETE answered alike) and 200; or
 * not stored (x back where it was) and 503. */
static void written_cancel(session_t *s, pending_t *p, int err)
{
    cancel_t *c = p->cancel;
    send_t *x = p->sends[0];
    conv_t *conv = x->conv;
    if (x->cancel_from == Q_SCHEDULED)
        conv->scheduled--;
    if (err) { /* not canceled: back where it was */
        if (x->cancel_from == Q_SCHEDULED) {
            sched_add(s, x, x->due_ms); /* (due already: the timer comes at once) */
        } else if (x->cancel_from == Q_WAITING) {
            x->state = Q_WAITING; /* its backoff's timer is still to come */
        } else {
            x->state = Q_QUEUED;
            lane_ready(s, conv);
        }
        cancel_done(c, 503, "unavailable", "the cancel could not be stored now; retry");
        return;
    }
    int64_t id = x->id;
    send_free(s, x);
    lane_ready(s, conv);
    cancel_done(c, 200, NULL, NULL);
    sb_list_foreach_safe(l, nx, &s->cancels) /* a twin DELETE that came meanwhile: the same answer */
    {
        cancel_t *t = sb_container_of(l, cancel_t, link);
        if (!t->storing && t->req->id == id && t->req->tenant == s->tenant)
            cancel_done(t, 200, NULL, NULL);
    }
}

/* SB_SESSION_CANCEL: taken in arrival order, decided once the outbox is loaded. */
static int on_cancel(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_cancel_t *req;
    (void)a;
    if (m->len != sizeof req)
        return 0;
    memcpy(&req, m->data, sizeof req);
    m->drop = NULL;
    cancel_t *c = sb_calloc(1, sizeof *c);
    c->req = req;
    c->since = (int64_t)sb_rt_time(s->rt);
    sb_list_push_back(&s->cancels, &c->link);
    cancels_run(s);
    pump(s);
    return 0;
}

/* SB_SESSION_WAKE: nothing to do once here. */
static int on_wake(sb_actor_t *a, void *state, sb_msg_t *m)
{
    (void)a, (void)state, (void)m; /* being active is the point: activation loaded the schedule and armed it */
    return 0;
}

/* ---- the tenant's answers ---------------------------------------------------------------------------------------- */

/* The message a work item numbered is answered: committed, or not. Memory never falls behind the store (only this
 * session writes the conversation's messages), so a failure leaves at most a gap: its seq is taken back when nothing
 * was numbered after it. A refusal (the store's SB_EINVAL) may mean memory and store disagree: the conversation is
 * loaded again once none of its messages is in flight. */
static void written_message(pending_t *p, int err)
{
    conv_t *c = p->conv;
    if (!c)
        return;
    c->inflight--;
    if (!err)
        return;
    if (p->seq == c->last_seq)
        c->last_seq--;
    if (err == SB_EINVAL)
        c->fresh = false;
}

static void written_inbound(session_t *s, pending_t *p, int err)
{
    sb_idset_del(&s->known, p->receipt); /* applied, or left for the sweeper: either way not held here */
    written_message(p, err);
    s->inbound_inflight--;
}

static void written_accept(session_t *s, pending_t *p, int err)
{
    accept_t *a = p->accept;
    sb_session_send_t *req = a->req;
    written_message(p, err);
    if (req->idempotency_key) {
        memo_entry_t *k = key_get(s, req->idempotency_key);
        if (err && k)
            memo_del(&s->keys, k);
        else if (!err)
            key_learn(s, req->idempotency_key, a->id);
        if (!err && (k = key_get(s, req->idempotency_key)))
            snprintf(k->status, sizeof k->status, "%s", a->due_ms ? "scheduled" : "queued");
    }
    if (!err && a->receipt) { /* a cancel that comes for it from now on finds it here, or knows it went */
        if (s->taken.n >= TAKEN_MAX) {
            sb_idset_cleanup(&s->taken);
            sb_idset_init(&s->taken);
        }
        sb_idset_add(&s->taken, a->id);
    }
    if (err) {
        answer(req, 503, 0, false);
    } else {
        send_t *x = send_add(s, a->conv, a->id, 0, req->to, req->body, req->media_json, req->template_json);
        x->fallback_json = dup_or_null(req->fallback_json);
        send_set_priority(s, x, req->priority);
        if (a->due_ms)
            sched_add(s, x, a->due_ms);
        else
            lane_ready(s, a->conv);
        req->accepted = a->due_ms ? "scheduled" : "queued";
        answer(req, 202, a->id, true);
    }
    accept_drop(s, a);
    cancels_run(s); /* one may have waited for this accept */
}

static void written_claims(session_t *s, pending_t *p, int err)
{
    for (size_t i = 0; i < p->nsends; i++) {
        send_t *x = p->sends[i];
        if (!send_get(s, x->id) || x->state != Q_CLAIMING)
            continue;
        if (x->canceled) { /* its broadcast's cancel came while the claim was on its way: stored canceled */
            if (s->preclaimed == x)
                s->preclaimed = NULL;
            finish(s, x, "canceled", NULL, "canceled", "its broadcast was canceled", 0, true);
            continue;
        }
        if (err) { /* still queued: again after a while */
            if (s->preclaimed == x)
                s->preclaimed = NULL;
            if (x->leased) {
                s->ports->counters.release(s->ports->counters.ctx, s->tenant, s->channel, x->lease);
                x->leased = false;
            }
            x->state = Q_QUEUED;
            s->sending--;
            lane_ready(s, x->conv);
            if (!s->pump_waiting) {
                s->pump_waiting = true;
                sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_PUMP);
            }
            continue;
        }
        x->attempts++;
        if (x->leased)
            provider_send(s, x);
        else
            x->state = Q_CLAIMED; /* claimed ahead of its token (preclaim): sent when it is granted */
    }
}

static void written_outcome(session_t *s, pending_t *p, int err)
{
    send_t *x = p->sends[0];
    if (!send_get(s, x->id) || x->state != Q_STORING)
        return;
    if (err) { /* the provider's answer must not be lost: offered again for a while */
        if (sb_rt_time(s->rt) - x->out_since < OUTCOME_KEEP_MS) {
            x->state = Q_WAITING;
            x->out_retry_ms = -1; /* marks "store the outcome again" for the timer */
            sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_SEND | (uint64_t)x->id);
            return;
        }
        /* given up: the message stays sending in the store, and is called unknown at the next activation */
    }
    s->sending--;
    conv_t *c = x->conv;
    if (!err && !x->out_finished) { /* retrying: waits its backoff at the head of its lane */
        x->state = Q_WAITING;
        sb_actor_timer_start(s->actor, (uint64_t)x->out_retry_ms, 0, TIMER_SEND | (uint64_t)x->id);
    } else {
        if (!err)
            fallback_sent(s, x);
        send_free(s, x);
        lane_ready(s, c);
    }
    pump(s);
}

static int on_written(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_tenant_written_t r;
    (void)a;
    if (m->len != sizeof r)
        return SB_EPARSE; /* not what the tenant sends: our state cannot be trusted, start again from the store */
    memcpy(&r, m->data, sizeof r);
    pending_t *p = pending_of(s, r.token);
    if (!p)
        return 0; /* a previous incarnation's */
    switch (p->kind) {
    case W_INBOUND:
        written_inbound(s, p, r.err);
        break;
    case W_ACCEPT:
        written_accept(s, p, r.err);
        break;
    case W_CLAIM:
        written_claims(s, p, r.err);
        break;
    case W_OUTCOME:
        written_outcome(s, p, r.err);
        break;
    case W_FALLBACK:
        written_fallback(s, p, r.err);
        break;
    case W_EVENT: /* a broadcast.progress: a lost one is said again (its watch compares with what was said) */
        break;
    case W_CANCEL:
        written_cancel(s, p, r.err);
        cancels_run(s); /* (one may have waited for this one) */
        break;
    }
    pending_free(s, p);
    process(s);
    pump(s);
    return 0;
}

/* ---- the flow ------------------------------------------------------------------------------------------------------ */

static bool bcast_hold(session_t *s);

static void process(session_t *s)
{
    if (bcast_hold(s)) /* a broadcast is written, or waits to be: nothing is numbered meanwhile */
        return;
    for (int round = 0; round < 2; round++) {
        if (!s->ready || s->resolving || s->inbound_waiting || s->watches_loading)
            return;
        if (resolve(s))
            return;
        s->again = false;
        apply_inbound(s);
        apply_accepts(s);
        s->bcast_yield = false; /* (what waited for a broadcast's batch has been numbered: the next batch may go) */
        convs_trim(s);
        if (!s->again) /* a conversation turned out to need loading again: look it up now */
            return;
    }
}

/* Once the channel is known: a send is for this tenant's channel, and suits what its type can send (its recipient
 * then in the form stored). False when it was refused (answered). */
static bool admit(session_t *s, sb_session_send_t *req)
{
    if (!s->info.address || req->tenant != s->tenant) {
        refuse(req, 404, "not_found", "no such channel");
        return false;
    }
    sb_send_request_t m = sb_session_send_request(req);
    char to[64], message[160];
    const char *code = "invalid_request";
    if (s->ports->provider.check(s->ports->provider.ctx, s->info.type, &m, to, sizeof to, &code, message,
                                 sizeof message) < 0) {
        refuse(req, 400, code, message);
        return false;
    }
    free(req->to);
    req->to = sb_strdup(to);
    return true;
}

/* Receipts of another tenant (or of a channel that does not exist) are not this session's: dropped. */
static bool inbound_ours(const session_t *s, const inbound_t *in)
{
    return s->info.address && in->tenant == s->tenant;
}

/* A receipt that is not ours is set aside (marked processed): handed back by the sweeper, it would not be ours
 * then either. */
static void set_aside(session_t *s, int64_t tenant, int64_t receipt_id, const char *why)
{
    sb_log_warn("session %" PRId64 ": receipt %" PRId64 " set aside unapplied: %s", s->channel, receipt_id, why);
    s->ports->store.receipt_done(s->ports->store.ctx, tenant, receipt_id);
}

static void inbox_admit(session_t *s)
{
    sb_list_foreach_safe(it, nx, &s->inbox)
    {
        inbound_t *in = sb_container_of(it, inbound_t, link);
        if (inbound_ours(s, in))
            continue;
        set_aside(s, in->tenant, in->receipt_id, s->info.address ? "another tenant's" : "no such channel");
        inbound_drop(s, in);
    }
}

/* req joins the sends to accept, in order (receipt and preset: a send another node took, below; else 0): admitted
 * against the channel now when it is loaded (a refusal is answered), else once it is. */
static void accept_take(session_t *s, sb_session_send_t *req, int64_t receipt, int64_t preset)
{
    accept_t *x = sb_calloc(1, sizeof *x);
    *x = (accept_t){.req = req, .receipt = receipt, .preset = preset, .admitted = s->ready};
    sb_list_push_back(&s->accepts, &x->link);
    if (s->ready && !admit(s, req))
        accept_drop(s, x);
}

/* A send that a node of the cluster took (gateway/sends) comes as a receipt of kind send: it is accepted as any send
 * is, under the id it was answered with (its receipt marked processed with the message), and nobody waits for the
 * answer: what its session refuses is set aside, and what it could not store now the sweeper brings back. */
typedef struct intake {
    sb_session_send_t req;   /* first: answer() hands back this pointer */
    const sb_ports_t *ports;
    int64_t channel, receipt, preset;
} intake_t;

static void intake_answered(sb_session_send_t *req)
{
    intake_t *in = (intake_t *)req;
    bool refused = req->status != 202 && req->status != 200 && req->status != 503;
    if (refused || (req->status == 200 && req->id != in->preset)) {
        /* refused by its channel (changed since the send was taken), or its key named another message meanwhile
         * (the same key taken by two nodes at once, one of them before this node's answer was committed) */
        sb_log_warn("session %" PRId64 ": send %" PRId64 " (receipt %" PRId64 ") set aside unapplied: %s", in->channel,
                    in->preset, in->receipt, refused ? req->message : "its idempotency key names another message");
        in->ports->store.receipt_done(in->ports->store.ctx, req->tenant, in->receipt);
    }
    sb_session_send_cleanup(req);
    free(in);
}

/* Takes ev's strings into a send of the tenant's on this channel, accepted like one from a front door of this node. */
static void intake_accept(session_t *s, int64_t tenant, int64_t receipt, sb_event_t *ev)
{
    if (sb_idset_has(&s->taken, ev->message_id)) { /* accepted already (its stream entry delivered again) */
        sb_idset_del(&s->known, receipt);
        return;
    }
    intake_t *in = sb_calloc(1, sizeof *in);
    in->ports = s->ports;
    in->channel = s->channel;
    in->receipt = receipt;
    in->preset = ev->message_id;
    sb_session_send_t *req = &in->req;
    *req = (sb_session_send_t){.tenant = tenant, .channel = s->channel, .to = ev->to, .body = ev->body,
                               .media_json = ev->media_json, .template_json = ev->template_json,
                               .idempotency_key = ev->idempotency_key, .fallback_json = ev->fallback_json,
                               .priority = priority_parse(ev->priority), .send_at_ms = ev->send_at_ms,
                               .answer = intake_answered};
    ev->to = ev->body = ev->media_json = ev->template_json = ev->idempotency_key = ev->fallback_json = NULL;
    accept_take(s, req, receipt, in->preset);
}

static int on_receipt(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_receipt_t r;
    (void)a;
    if (m->len < sizeof r)
        return 0;
    memcpy(&r, m->data, sizeof r);
    if (!sb_idset_add(&s->known, r.receipt_id))
        return 0; /* held already (the sweeper found it while it waited here) */
    inbound_t *in = sb_calloc(1, sizeof *in);
    if (sb_event_unpack(m->data + sizeof r, m->len - sizeof r, &in->ev) < 0 || !in->ev.provider_id ||
        (in->ev.kind == SB_EV_MESSAGE && !in->ev.from) || (in->ev.kind == SB_EV_STATUS && !in->ev.status) ||
        (in->ev.kind == SB_EV_SEND && (in->ev.message_id <= 0 || !in->ev.to || !in->ev.body || !in->ev.media_json))) {
        set_aside(s, r.tenant, r.receipt_id, "its event is incomplete");
        sb_idset_del(&s->known, r.receipt_id);
        free_inbound(in);
        return 0;
    }
    if (in->ev.kind == SB_EV_SEND) {
        intake_accept(s, r.tenant, r.receipt_id, &in->ev);
        free_inbound(in);
        process(s);
        return 0;
    }
    in->receipt_id = r.receipt_id;
    in->tenant = r.tenant;
    in->received_at = (int64_t)sb_rt_time(s->rt) - r.age_ms;
    if (s->ready && !inbound_ours(s, in)) {
        set_aside(s, in->tenant, in->receipt_id, s->info.address ? "another tenant's" : "no such channel");
        sb_idset_del(&s->known, in->receipt_id);
        free_inbound(in);
        return 0;
    }
    sb_list_push_back(&s->inbox, &in->link);
    if (!s->ready || !check_inbound(s, in))
        s->unchecked++;
    process(s);
    return 0;
}

static int on_send(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_send_t *req;
    (void)a;
    if (m->len != sizeof req)
        return 0;
    memcpy(&req, m->data, sizeof req);
    m->drop = NULL;
    accept_take(s, req, 0, 0);
    process(s);
    return 0;
}

/* ---- broadcasts ------------------------------------------------------------------------------------------------- */

typedef struct bcancel {
    sb_list_t link;
    sb_session_bcancel_t *req;
    bool run;                /* asked of the store (else it waits for the channel) */
} bcancel_t;

static bool load(session_t *s);

static void bcast_answer(sb_session_broadcast_t *req, int status, int64_t id)
{
    req->status = status;
    req->id = id;
    if (status == 503 && !req->code) {
        req->code = "unavailable";
        snprintf(req->message, sizeof req->message,
                 "the broadcast could not be stored now; retry with the same idempotency_key");
    }
    req->answer(req);
}

static void bcast_refuse(sb_session_broadcast_t *req, int status, const char *code, const char *message)
{
    req->code = code;
    snprintf(req->message, sizeof req->message, "%s", message);
    bcast_answer(req, status, 0);
}

static void bcast_drop(bcast_t *b)
{
    sb_list_remove(&b->link);
    free(b);
}

static bcast_t *bcast_of(session_t *s, uint64_t token)
{
    sb_list_foreach(it, &s->bcasts)
    {
        if (sb_container_of(it, bcast_t, link)->token == token)
            return sb_container_of(it, bcast_t, link);
    }
    return NULL;
}

static void drop_bcast_req(sb_msg_t *m)
{
    sb_session_broadcast_t *req;
    memcpy(&req, m->data, sizeof req);
    bcast_answer(req, 503, 0);
}

void sb_session_broadcast(sb_rt_t *rt, unsigned owner, sb_session_broadcast_t *req)
{
    sb_msg_t *m = sb_msg_new(SB_SESSION_BROADCAST, sizeof req);
    memcpy(m->data, &req, sizeof req);
    m->drop = drop_bcast_req;
    sb_rt_post_key(rt, owner, &sb_session_kind, (uint64_t)req->channel, m); /* a refused one is dropped: answered */
}

static void bcancel_answer(sb_session_bcancel_t *req, int status, const char *code, const char *message)
{
    req->status = status;
    req->code = code;
    if (message)
        snprintf(req->message, sizeof req->message, "%s", message);
    req->answer(req);
}

static void drop_bcancel_req(sb_msg_t *m)
{
    sb_session_bcancel_t *req;
    memcpy(&req, m->data, sizeof req);
    bcancel_answer(req, 503, "unavailable", "the broadcast could not be canceled now; retry");
}

void sb_session_broadcast_cancel(sb_rt_t *rt, unsigned owner, sb_session_bcancel_t *req)
{
    sb_msg_t *m = sb_msg_new(SB_SESSION_BROADCAST_CANCEL, sizeof req);
    memcpy(m->data, &req, sizeof req);
    m->drop = drop_bcancel_req;
    sb_rt_post_key(rt, owner, &sb_session_kind, (uint64_t)req->channel, m);
}

/* Once the channel is known: the broadcast is for this tenant's channel and every recipient's message suits what its
 * type can send (each recipient then in the form stored). False when it was refused (answered). */
static bool bcast_admit(session_t *s, sb_session_broadcast_t *req)
{
    if (!s->info.address || req->tenant != s->tenant) {
        bcast_refuse(req, 404, "not_found", "no such channel");
        return false;
    }
    char to[64], message[120], full[160];
    for (size_t i = 0; i < req->n; i++) {
        sb_send_request_t m = {.to = req->to[i],
                               .body = req->bodies[i],
                               .media_json = "[]",
                               .template_json = req->templates ? req->templates[i] : NULL};
        const char *code = "invalid_request";
        if (s->ports->provider.check(s->ports->provider.ctx, s->info.type, &m, to, sizeof to, &code, message,
                                     sizeof message) < 0) {
            snprintf(full, sizeof full, "recipients[%zu]: %s", i, message);
            bcast_refuse(req, 400, code, full);
            return false;
        }
        size_t len = strlen(to);
        if (len > strlen(req->to[i])) { /* (the stored form is never longer: "whatsapp:" goes) */
            snprintf(full, sizeof full, "recipients[%zu]: this recipient cannot be stored", i);
            bcast_refuse(req, 400, "invalid_recipient", full);
            return false;
        }
        memcpy(req->to[i], to, len + 1);
        /* The 24-hour window, as if the customer had never written (the session does not look up 100,000
         * conversations to find who did): on WhatsApp a broadcast takes a template, on Messenger a tag. */
        if (s->ports->provider.window &&
            s->ports->provider.window(s->ports->provider.ctx, s->info.type, &m, -1, &code, message, sizeof message)) {
            snprintf(full, sizeof full, "recipients[%zu]: %s", i, message);
            bcast_refuse(req, 422, code, full);
            return false;
        }
    }
    return true;
}

/* Numbering under way: work items numbering messages (receipts applied, sends accepted) or conversation lookups
 * whose answers would set seqs. A broadcast is expanded only when there is none. */
static bool numbering(const session_t *s)
{
    if (s->inbound_inflight || s->resolving)
        return true;
    sb_list_foreach(it, &s->accepts)
    {
        if (sb_container_of(it, accept_t, link)->conv)
            return true;
    }
    return false;
}

static void bcast_begin_cb(void *arg, int err, int64_t id, bool created)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, id);
    pk_i64(&b, created);
    comp_post(c, S_BBEGIN, &b);
}

static void bcast_rows_cb(void *arg, int err, size_t written, bool whole)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, (int64_t)written);
    pk_i64(&b, whole);
    comp_post(c, S_BROWS, &b);
}

/* A broadcast request, once the channel is known: checked, then its row with every recipient staged (one
 * statement); the 202 goes once that committed. */
static void bcast_start(session_t *s, bcast_t *b)
{
    sb_session_broadcast_t *req = b->req;
    if (!bcast_admit(s, req)) {
        bcast_drop(b);
        return;
    }
    b->admitted_us = s->ports->now_us(s->ports->ctx);
    sb_broadcast_head_t h = {.tenant = s->tenant,
                             .channel = s->channel,
                             .body = req->body,
                             .template_json = req->template_json,
                             .send_at = req->send_at,
                             .idempotency_key = req->idempotency_key,
                             .to = (const char *const *)req->to,
                             .bodies = (const char *const *)req->bodies,
                             .templates = (const char *const *)req->templates,
                             .recipients = req->n};
    comp_t *c = comp_new(s, (int64_t)b->token);
    if (s->ports->store.broadcast_begin(s->ports->store.ctx, &h, bcast_begin_cb, c) < 0) {
        free(c);
        bcast_answer(req, 503, 0);
        bcast_drop(b);
        return;
    }
    b->writing = true;
}

/* Whether broadcasts hold the numbering (process() then does nothing else): the first staged broadcast is being
 * expanded, or waits for the numbering under way to end. Issues its next batch when nothing is numbered. */
static bool bcast_hold(session_t *s)
{
    if (!s->ready || s->bcast_waiting)
        return s->bcast_waiting;
    if (s->bcast_yield) /* receipts or sends waited for this batch: they are numbered before the next one */
        return false;
    sb_list_foreach(it, &s->bcasts)
    {
        bcast_t *b = sb_container_of(it, bcast_t, link);
        if (!b->id || b->req)
            continue; /* not staged yet: its begin is under way */
        if (b->writing || numbering(s))
            return true;
        if (!b->begun_us)
            b->begun_us = s->ports->now_us(s->ports->ctx);
        char now[SB_TIME_LEN];
        now_text(s, now);
        sb_broadcast_rows_t r = {.tenant = s->tenant,
                                 .channel = s->channel,
                                 .broadcast_id = b->id,
                                 .sender = s->info.address,
                                 .created_at = now,
                                 .max = BCAST_BATCH};
        comp_t *c = comp_new(s, (int64_t)b->token);
        if (s->ports->store.broadcast_rows(s->ports->store.ctx, &r, bcast_rows_cb, c) < 0) {
            free(c); /* the store is away: again after a while (the numbering waits meanwhile) */
            s->bcast_waiting = true;
            sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_BCAST);
            return true;
        }
        b->writing = true;
        b->statements++;
        return true;
    }
    return false;
}

/* Reports the broadcast's progress from now on (TIMER_PROGRESS, once a second). */
static void progress_watch(session_t *s, int64_t id)
{
    sb_list_foreach(it, &s->progress)
    {
        if (sb_container_of(it, progress_t, link)->id == id)
            return;
    }
    progress_t *w = sb_calloc(1, sizeof *w);
    w->id = id;
    sb_list_push_back(&s->progress, &w->link);
    if (!s->progress_armed) {
        s->progress_armed = true;
        sb_actor_timer_start(s->actor, 1000, 0, TIMER_PROGRESS);
    }
}

static void progress_free(progress_t *w)
{
    sb_list_remove(&w->link);
    free(w->last);
    free(w);
}

/* Loads the outbox again (the messages of a broadcast just expanded), or once the load under way is done. */
static void reload(session_t *s)
{
    if (s->loading || !load(s))
        s->reload = true;
}

static void bcast_abandoned(void *arg, int err, bool found, int64_t canceled)
{
    int64_t *what = arg;
    (void)found;
    if (err)
        sb_log_warn("broadcast %" PRId64 " could not be abandoned: %s", *what, sb_strerror(err));
    else
        sb_log_warn("broadcast %" PRId64 " abandoned: %" PRId64 " message(s) canceled", *what, canceled);
    free(what);
}

/* Abandons broadcast id (its recipients cannot be written: the store refused them), fire and forget. */
static void bcast_abandon(session_t *s, int64_t id)
{
    int64_t *what = sb_malloc(sizeof *what);
    *what = id;
    if (s->ports->store.broadcast_cancel(s->ports->store.ctx, s->tenant, s->channel, id, true, NULL, 0,
                                         bcast_abandoned, what) < 0)
        free(what);
}

/* The broadcast is whole: the seqs the store took are newer than memory's, so every conversation is looked up again
 * before its next message; its messages come into the lanes from the outbox. */
static void bcast_finish(session_t *s, bcast_t *b)
{
    size_t pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&s->convs, &pos));)
        sb_container_of(n, conv_t, by_id)->fresh = false;
    int64_t now = s->ports->now_us(s->ports->ctx);
    sb_log_info("session %" PRId64 ": broadcast %" PRId64 ": %zu recipients written in %" PRId64 " ms (%u statements;"
                " %" PRId64 " ms since it was %s)",
                s->channel, b->id, b->written, (now - b->begun_us) / 1000, b->statements,
                (now - b->arrived_us) / 1000, b->resumed ? "resumed" : "received");
    bcast_drop(b);
    reload(s);
}

static int on_bbegin(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    int64_t id = rd_i64(&r);
    bool created = rd_i64(&r) != 0;
    bcast_t *b = bcast_of(s, (uint64_t)ref);
    if (!b || !b->req)
        return 0;
    sb_session_broadcast_t *req = b->req;
    b->writing = false;
    if (err || r.bad) {
        bcast_answer(req, 503, 0);
        bcast_drop(b);
    } else if (!created) { /* the key named an earlier broadcast */
        bcast_answer(req, 200, id);
        bcast_drop(b);
    } else { /* accepted (committed, staged): its recipients become messages from here on, in batches */
        int64_t now = s->ports->now_us(s->ports->ctx);
        sb_log_info("session %" PRId64 ": broadcast %" PRId64 ": %zu recipients checked in %" PRId64
                    " ms, staged in %" PRId64 " ms",
                    s->channel, id, req->n, (b->admitted_us - b->arrived_us) / 1000, (now - b->admitted_us) / 1000);
        b->id = id;
        b->req = NULL; /* (the front door frees it: the recipients are the store's now) */
        bcast_answer(req, 202, id);
        progress_watch(s, id);
    }
    process(s);
    pump(s);
    return 0;
}

static int on_brows(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    size_t written = (size_t)rd_i64(&r);
    bool whole = rd_i64(&r) != 0;
    bcast_t *b = bcast_of(s, (uint64_t)ref);
    if (!b)
        return 0;
    b->writing = false;
    if (err == SB_EINVAL) { /* refused for good: what was written is canceled, the client may try again */
        sb_log_warn("session %" PRId64 ": broadcast %" PRId64 " cannot be written whole (%zu written)", s->channel,
                    b->id, b->written);
        bcast_abandon(s, b->id);
        bcast_drop(b);
        reload(s);
    } else if (err) { /* the store was away: the batch again after a while (it is resumable: `expanded`) */
        s->bcast_waiting = true;
        sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_BCAST);
    } else {
        b->written += written;
        if (whole) {
            bcast_finish(s, b);
        } else { /* the next batch, after what waited meanwhile (the seqs of memory are behind the store's now) */
            size_t pos = 0;
            for (sb_hnode_t *n; (n = sb_htable_next(&s->convs, &pos));)
                sb_container_of(n, conv_t, by_id)->fresh = false;
            s->bcast_yield = !sb_list_empty(&s->inbox) || !sb_list_empty(&s->accepts);
        }
    }
    process(s);
    pump(s);
    return 0;
}

static void accepting_cb(void *arg, int err, const int64_t *ids, size_t n)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, err ? 0 : (int64_t)n);
    for (size_t i = 0; !err && i < n; i++)
        pk_i64(&b, ids[i]);
    comp_post(c, S_BRESUME, &b);
}

/* At activation: the channel's broadcasts staged but not expanded whole (a stop came in between) are resumed. */
static void bcast_resume(session_t *s)
{
    if (!s->ports->store.broadcast_accepting) /* (a store without broadcasts: the unit tests' fakes) */
        return;
    comp_t *c = comp_new(s, 0);
    if (s->ports->store.broadcast_accepting(s->ports->store.ctx, s->tenant, s->channel, accepting_cb, c) < 0) {
        free(c);
        sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_BRESUME);
    }
}

static int on_bresume(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    if (err) {
        sb_actor_timer_start(a, DB_RETRY_MS, 0, TIMER_BRESUME);
        return 0;
    }
    int64_t n = rd_i64(&r);
    for (int64_t i = 0; i < n && !r.bad; i++) {
        int64_t id = rd_i64(&r);
        bool known = false;
        sb_list_foreach(it, &s->bcasts)
        {
            known |= sb_container_of(it, bcast_t, link)->id == id;
        }
        if (known || r.bad)
            continue;
        bcast_t *b = sb_calloc(1, sizeof *b);
        b->token = ++s->bcast_tokens;
        b->id = id;
        b->resumed = true;
        b->arrived_us = s->ports->now_us(s->ports->ctx);
        sb_list_push_back(&s->bcasts, &b->link);
        sb_log_info("session %" PRId64 ": broadcast %" PRId64 " resumed", s->channel, id);
        progress_watch(s, id);
    }
    process(s);
    return 0;
}

static int on_broadcast(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_broadcast_t *req;
    (void)a;
    if (m->len != sizeof req)
        return 0;
    memcpy(&req, m->data, sizeof req);
    m->drop = NULL;
    bcast_t *b = sb_calloc(1, sizeof *b);
    b->req = req;
    b->token = ++s->bcast_tokens;
    b->arrived_us = s->ports->now_us(s->ports->ctx);
    sb_list_push_back(&s->bcasts, &b->link);
    if (s->ready) /* (else started once the channel is known) */
        bcast_start(s, b);
    return 0;
}

/* ---- broadcasts: cancel ----------------------------------------------------------------------------------------- */

static void bcancel_cb(void *arg, int err, bool found, int64_t canceled)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, found);
    pk_i64(&b, canceled);
    comp_post(c, S_BCANCEL, &b);
}

/* Takes the broadcast's messages that are not under way out of memory (queued in a lane, or waiting for a retry's
 * backoff), stops those claimed but not at the provider yet (they are stored canceled at their grant), and has the
 * store cancel the rest of its messages not under way. req is answered when that is done. */
static void bcancel_run(session_t *s, bcancel_t *q)
{
    sb_session_bcancel_t *req = q->req;
    if (!s->info.address || req->tenant != s->tenant) {
        sb_list_remove(&q->link);
        free(q);
        bcancel_answer(req, 404, "not_found", "no such broadcast");
        return;
    }
    int64_t id = req->broadcast_id;
    sb_idset_add(&s->canceled, id);
    size_t nsends = 0, nkeep = 0, pos = 0;
    bool rearm = false;
    send_t **sends = sb_malloc((s->sends.n ? s->sends.n : 1) * sizeof *sends);
    for (sb_hnode_t *n; (n = sb_htable_next(&s->sends, &pos));) {
        send_t *x = sb_container_of(n, send_t, node);
        if (x->bcast == id)
            sends[nsends++] = x;
    }
    int64_t *keep = sb_malloc((nsends ? nsends : 1) * sizeof *keep);
    for (size_t i = 0; i < nsends; i++) {
        send_t *x = sends[i];
        if (x->state == Q_SCHEDULED) { /* out of the schedule, canceled by the statement */
            sched_remove(s, x);
            send_free(s, x);
            rearm = true;
        } else if (x->state == Q_QUEUED || (x->state == Q_WAITING && x->out_retry_ms >= 0)) {
            conv_t *c = x->conv;
            send_free(s, x);
            sb_list_remove(&c->ready_link); /* its lane's head changed, or it is empty now */
            lane_ready(s, c);
        } else {
            if (x->state == Q_CLAIMING || x->state == Q_CLAIMED) /* claimed, not at the provider: stopped when
                                                                  * the claim is written or the token granted, and
                                                                  * stored canceled (not counted in the answer) */
                x->canceled = true;
            keep[nkeep++] = x->id;
        }
    }
    free(sends);
    if (rearm)
        sched_arm(s);
    comp_t *c = comp_new(s, 0);
    int rc = s->ports->store.broadcast_cancel(s->ports->store.ctx, s->tenant, s->channel, id, false, keep, nkeep,
                                              bcancel_cb, c);
    free(keep);
    if (rc < 0) {
        free(c);
        sb_list_remove(&q->link);
        free(q);
        bcancel_answer(req, 503, "unavailable", "the broadcast could not be canceled now; retry");
    } else {
        q->run = true;
    }
    progress_watch(s, id);
}

static int on_bcancel_req(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_bcancel_t *req;
    (void)a;
    if (m->len != sizeof req)
        return 0;
    memcpy(&req, m->data, sizeof req);
    m->drop = NULL;
    bcancel_t *q = sb_calloc(1, sizeof *q);
    q->req = req;
    sb_list_push_back(&s->bcancels, &q->link);
    if (s->ready) /* (else run once the channel is known) */
        bcancel_run(s, q);
    return 0;
}

static int on_bcancel(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    bool found = rd_i64(&r) != 0;
    int64_t canceled = rd_i64(&r);
    /* the cancels run in order, on one connection: the first one run is the one answered */
    sb_list_foreach(it, &s->bcancels)
    {
        bcancel_t *q = sb_container_of(it, bcancel_t, link);
        if (!q->run) /* (waiting for the channel) */
            continue;
        sb_list_remove(it);
        if (err)
            bcancel_answer(q->req, 503, "unavailable", "the broadcast could not be canceled now; retry");
        else if (!found)
            bcancel_answer(q->req, 404, "not_found", "no such broadcast");
        else {
            q->req->canceled = canceled;
            bcancel_answer(q->req, 200, NULL, NULL);
        }
        free(q);
        break;
    }
    return 0;
}

/* ---- broadcasts: progress ----------------------------------------------------------------------------------------- */

static void counts_cb(void *arg, int err, sb_str_t json, bool open)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, open);
    char *text = err ? NULL : sb_strndup(json.p, json.len);
    pk_str(&b, text);
    free(text);
    comp_post(c, S_BCOUNTS, &b);
}

static void progress_tick(session_t *s)
{
    s->progress_armed = false;
    sb_list_foreach(it, &s->progress)
    {
        progress_t *w = sb_container_of(it, progress_t, link);
        if (w->asking)
            continue;
        comp_t *c = comp_new(s, w->id);
        if (s->ports->store.broadcast_counts(s->ports->store.ctx, s->tenant, w->id, counts_cb, c) < 0)
            free(c);
        else
            w->asking = true;
    }
    if (!sb_list_empty(&s->progress)) {
        s->progress_armed = true;
        sb_actor_timer_start(s->actor, 1000, 0, TIMER_PROGRESS);
    }
}

/* A broadcast's counts: a broadcast.progress event when they changed; it is no longer watched once nothing of it
 * is left to go and that was said. */
static int on_bcounts(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    bool open = rd_i64(&r) != 0;
    const char *json = rd_str(&r);
    progress_t *w = NULL;
    sb_list_foreach(it, &s->progress)
    {
        if (sb_container_of(it, progress_t, link)->id == ref) {
            w = sb_container_of(it, progress_t, link);
            break;
        }
    }
    if (!w)
        return 0;
    w->asking = false;
    if (err == SB_ENOENT || (!err && (r.bad || !json))) {
        progress_free(w);
        return 0;
    }
    if (err)
        return 0; /* asked again at the next tick */
    if (!w->last || strcmp(w->last, json) != 0) {
        pending_t *p = pending_new(s, W_EVENT);
        sb_tenant_work_t *wk = work_new(s, p);
        sb_tenant_work_event(wk, "broadcast.progress", sb_str_cstr(json));
        sb_tenant_write(s->rt, s->tenant, wk);
        free(w->last);
        w->last = sb_strdup(json);
    } else if (!open) {
        progress_free(w); /* said, and nothing will change it now but delivery reports */
    }
    return 0;
}

/* ---- activation ------------------------------------------------------------------------------------------------- */

static void loaded_cb(void *arg, int err, const sb_channel_info_t *ci, const sb_pending_send_t *pending, size_t n)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, !err && ci);
    if (!err && ci) {
        pk_i64(&b, ci->tenant);
        pk_i64(&b, ci->type);
        pk_str(&b, ci->address);
        pk_i64(&b, (int64_t)(ci->rate_per_second * 1000));
        pk_i64(&b, ci->max_sending);
        pk_i64(&b, ci->tenant_max_sending);
        pk_str(&b, ci->credentials_sealed);
        pk_i64(&b, (int64_t)n);
        for (size_t i = 0; i < n; i++) {
            pk_i64(&b, pending[i].id);
            pk_i64(&b, pending[i].conversation_id);
            pk_str(&b, pending[i].to);
            pk_str(&b, pending[i].body);
            pk_str(&b, pending[i].media_json);
            pk_str(&b, pending[i].template_json);
            pk_str(&b, pending[i].status);
            pk_i64(&b, pending[i].attempts);
            pk_i64(&b, pending[i].retry_in_ms);
            pk_i64(&b, pending[i].sending_for_ms);
            pk_str(&b, pending[i].fallback_json);
            pk_str(&b, pending[i].priority);
            pk_i64(&b, pending[i].broadcast_id);
            pk_i64(&b, pending[i].send_in_ms);
        }
    }
    comp_post(c, S_LOADED, &b);
}

static bool load(session_t *s)
{
    comp_t *c = comp_new(s, 0);
    if (s->ports->store.load_channel(s->ports->store.ctx, s->channel, loaded_cb, c) < 0) {
        free(c);
        return false;
    }
    s->loading = true;
    return true;
}

/* The pace and caps of the channel: its type's rate (Twilio long code 1/s, Twilio WhatsApp 10/s, Meta WhatsApp 80/s,
 * Messenger and Instagram 300/s) or settings.rate_per_second, 5% under; settings.max_concurrent_sends (else SB_SESSION_MAX_SENDING) and the
 * tenant's max_concurrent_sends (else SB_SESSION_TENANT_MAX_SENDING). */
static void limits_of(session_t *s)
{
    double rate = sb_session_default_rate(s->info.type);
    if (s->info.rate_per_second > 0)
        rate = s->info.rate_per_second;
    /* 5% slower than the rate: grants exactly 1/rate apart put rate + 1 sends into a closed one-second window, and
     * the provider's clock sees them with the jitter of the way there; rate grants then span 1.05 s, so 50 ms of it
     * cannot bring rate + 1 into one second */
    double per = 1e6 / (rate / 1.05);
    s->limits = (sb_send_limits_t){.interval_us = per < 1 ? 1 : (uint64_t)per,
                                   .burst = 1,
                                   .channel_max = s->info.max_sending > 0 ? (uint32_t)s->info.max_sending
                                                                          : SB_SESSION_MAX_SENDING,
                                   .tenant_max = s->info.tenant_max_sending > 0 ? (uint32_t)s->info.tenant_max_sending
                                                                                : SB_SESSION_TENANT_MAX_SENDING,
                                   .lease_ms = 60000};
}

double sb_session_default_rate(sb_channel_type_t type)
{
    if (type == SB_CH_META_MESSENGER || type == SB_CH_META_INSTAGRAM)
        return 300; /* the Send API's per-page figure for text */
    return type == SB_CH_TWILIO_WHATSAPP ? 10 : type == SB_CH_META_WHATSAPP ? 80 : 1;
}

/* ---- settings changed, figures asked for ------------------------------------------------------------------------ */

static void limits_cb(void *arg, int err, bool found, const sb_channel_info_t *ci)
{
    comp_t *c = arg;
    sb_buf_t b;
    comp_head(c, &b, err);
    pk_i64(&b, !err && found);
    pk_i64(&b, !err && found ? (int64_t)(ci->rate_per_second * 1000) : 0);
    pk_i64(&b, !err && found ? ci->max_sending : 0);
    pk_i64(&b, !err && found ? ci->tenant_max_sending : 0);
    comp_post(c, S_LIMITS, &b);
}

/* The channel's or its tenant's settings changed (admin API): its pace and caps are read again. A payload names the
 * tenant (int64) whose sessions are meant: another tenant's session ignores it. */
static int on_settings(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    int64_t tenant = 0;
    (void)a;
    if (m->len == sizeof tenant)
        memcpy(&tenant, m->data, sizeof tenant);
    if (!s->ready || (tenant && tenant != s->tenant) || !s->ports->store.load_limits)
        return 0; /* not loaded yet: activation reads them */
    comp_t *c = comp_new(s, 0);
    if (s->ports->store.load_limits(s->ports->store.ctx, s->channel, limits_cb, c) < 0) {
        free(c);
        sb_log_warn("session %" PRId64 ": settings changed but could not be read; the old ones stay in force",
                    s->channel);
    }
    return 0;
}

static int on_limits(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    bool found = rd_i64(&r) != 0;
    int64_t rate_milli = rd_i64(&r), max_sending = rd_i64(&r), tenant_max_sending = rd_i64(&r);
    if (err || r.bad || !found) {
        if (err)
            sb_log_warn("session %" PRId64 ": settings could not be read again: %s; the old ones stay in force",
                        s->channel, sb_strerror(err));
        return 0;
    }
    s->info.rate_per_second = (double)rate_milli / 1000;
    s->info.max_sending = max_sending;
    s->info.tenant_max_sending = tenant_max_sending;
    limits_of(s);
    s->tokens = 0; /* the pace may have changed: one request at a time until it says otherwise */
    pump(s);
    return 0;
}

static void figures_fill(session_t *s, sb_session_figures_t *f)
{
    f->found = s->ready && s->info.address && f->tenant == s->tenant;
    if (!f->found)
        return;
    for (int p = 0; p < SB_PRIORITY_N; p++)
        f->lanes[p] = s->depth[p];
    f->sending = s->sending;
    f->rate_per_second = s->info.rate_per_second > 0 ? s->info.rate_per_second
                                                      : sb_session_default_rate(s->info.type);
    f->rate_set = s->info.rate_per_second > 0;
    f->interval_us = s->limits.interval_us;
    f->channel_max = s->limits.channel_max;
    f->tenant_max = s->limits.tenant_max;
    f->channel_max_set = s->info.max_sending > 0;
    f->tenant_max_set = s->info.tenant_max_sending > 0;
}

typedef struct figures_wait {
    sb_list_t link;
    sb_session_figures_t *f;
} figures_wait_t;

static void drop_figures(sb_msg_t *m)
{
    sb_session_figures_t *f;
    memcpy(&f, m->data, sizeof f);
    f->found = false;
    f->answer(f);
}

typedef struct ids {
    const char *kind;
    sb_actor_id_t *v;
    size_t n, cap;
} ids_t;

static bool collect_session(void *arg, const sb_actor_info_t *info)
{
    ids_t *ids = arg;
    if (strcmp(info->kind, ids->kind) != 0)
        return true;
    if (ids->n == ids->cap) {
        ids->cap = ids->cap ? ids->cap * 2 : 64;
        ids->v = sb_realloc(ids->v, ids->cap * sizeof *ids->v);
    }
    ids->v[ids->n++] = info->id;
    return true;
}

void sb_session_settings_changed(sb_rt_t *rt, int64_t tenant, int64_t channel)
{
    if (channel) {
        sb_rt_send_key(rt, sb_rt_shard(rt), &sb_session_kind, (uint64_t)channel, SB_SESSION_SETTINGS, &tenant,
                       sizeof tenant);
        return;
    }
    ids_t ids = {.kind = sb_session_kind.name};
    sb_rt_foreach(rt, collect_session, &ids); /* (collected first: sending does not walk the table) */
    for (size_t i = 0; i < ids.n; i++)
        sb_rt_send(rt, 0, ids.v[i], SB_SESSION_SETTINGS, &tenant, sizeof tenant);
    free(ids.v);
}

void sb_session_figures(sb_rt_t *rt, unsigned owner, sb_session_figures_t *f)
{
    sb_msg_t *m = sb_msg_new(SB_SESSION_FIGURES, sizeof f);
    memcpy(m->data, &f, sizeof f);
    m->drop = drop_figures;
    sb_rt_post_key(rt, owner, &sb_session_kind, (uint64_t)f->channel, m); /* a refused one is dropped: answered */
}

static int on_figures(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    sb_session_figures_t *f;
    (void)a;
    if (m->len != sizeof f)
        return 0;
    memcpy(&f, m->data, sizeof f);
    m->drop = NULL;
    if (!s->ready) { /* answered once the channel is loaded */
        figures_wait_t *w = sb_calloc(1, sizeof *w);
        w->f = f;
        sb_list_push_back(&s->figures, &w->link);
        return 0;
    }
    figures_fill(s, f);
    f->answer(f);
    return 0;
}

/* Answers the figure requests that waited for the channel (all found false when the session stops). */
static void figures_answer(session_t *s, bool stopping)
{
    for (sb_list_t *l; (l = sb_list_pop_front(&s->figures));) {
        figures_wait_t *w = sb_container_of(l, figures_wait_t, link);
        if (stopping)
            w->f->found = false;
        else
            figures_fill(s, w->f);
        w->f->answer(w->f);
        free(w);
    }
}

static int on_loaded(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    s->loading = false;
    if (s->reload && s->ready) { /* a broadcast was written while this load ran: its messages may not be in it */
        s->reload = false;
        if (!load(s))
            s->reload = true;
    }
    if (err) {
        if (!s->ready)
            sb_actor_timer_start(a, LOAD_RETRY_MS, 0, TIMER_LOAD);
        return 0;
    }
    bool found = rd_i64(&r) != 0;
    if (found) {
        int64_t tenant = rd_i64(&r), type = rd_i64(&r);
        const char *address = rd_str(&r);
        int64_t rate_milli = rd_i64(&r), max_sending = rd_i64(&r), tenant_max_sending = rd_i64(&r);
        const char *creds = rd_str(&r);
        if (!s->ready) { /* (a reload, for RESUME, keeps what it has: only its pending messages may be new) */
            s->info.tenant = s->tenant = tenant;
            s->info.channel = s->channel;
            s->info.type = (sb_channel_type_t)type;
            s->info.address = dup_or_null(address);
            s->info.rate_per_second = (double)rate_milli / 1000;
            s->info.max_sending = max_sending;
            s->info.tenant_max_sending = tenant_max_sending;
            s->info.credentials_sealed = dup_or_null(creds);
            limits_of(s);
        }
    }
    int64_t n = found ? rd_i64(&r) : 0;
    for (int64_t i = 0; !r.bad && i < n; i++) {
        int64_t id = rd_i64(&r), conv = rd_i64(&r);
        const char *to = rd_str(&r), *body = rd_str(&r), *media = rd_str(&r), *tpl = rd_str(&r);
        const char *status = rd_str(&r);
        unsigned attempts = (unsigned)rd_i64(&r);
        int64_t retry_in = rd_i64(&r), sending_for = rd_i64(&r);
        const char *fallback_json = rd_str(&r), *priority = rd_str(&r);
        int64_t bcast = rd_i64(&r), send_in = rd_i64(&r);
        if (r.bad || !to || !status || send_get(s, id))
            continue;
        if (bcast && sb_idset_has(&s->canceled, bcast))
            continue; /* canceled here while this load was under way */
        if (strcmp(status, "queued") != 0 && strcmp(status, "retrying") != 0 && strcmp(status, "sending") != 0 &&
            strcmp(status, "scheduled") != 0)
            continue; /* finished already: nothing to send */
        conv_t *c = conv_get(s, conv);
        send_t *x = send_add(s, c, id, attempts, to, body, media, tpl);
        x->fallback_json = dup_or_null(fallback_json);
        send_set_priority(s, x, priority_parse(priority));
        x->bcast = bcast;
        if (bcast && (sb_list_empty(&s->progress) ||
                      sb_container_of(sb_list_last(&s->progress), progress_t, link)->id != bcast))
            progress_watch(s, bcast);
        if (strcmp(status, "sending") == 0) { /* left sending by a crash: unknown once it has been for long */
            x->state = Q_WAITING;
            x->out_retry_ms = -2; /* marks "call it unknown" for the timer */
            int64_t left = SENDING_STUCK_MS - sending_for;
            sb_actor_timer_start(a, left > 0 ? (uint64_t)left : 0, 0, TIMER_SEND | (uint64_t)id);
        } else if (strcmp(status, "retrying") == 0 && retry_in > 0) {
            x->state = Q_WAITING;
            x->out_retry_ms = 0;
            sb_actor_timer_start(a, (uint64_t)retry_in, 0, TIMER_SEND | (uint64_t)id);
        } else if (strcmp(status, "scheduled") == 0) { /* (those due already join their lanes below) */
            sched_add(s, x, wall_ms(s) + send_in);
        } else {
            lane_ready(s, c);
        }
    }
    sched_run(s); /* what fell due while no session held it: after the queued ones, by send_at then id */
    if (!s->ready) {
        fallbacks_load(s); /* the inbox waits for them (process) */
        s->ready = true;
        if (s->info.address)
            bcast_resume(s); /* broadcasts left staged by a stop */
        sb_list_foreach_safe(it, nx, &s->bcasts)
        {
            bcast_t *b = sb_container_of(it, bcast_t, link);
            if (b->req && !b->writing)
                bcast_start(s, b);
        }
        sb_list_foreach_safe(it, nx, &s->bcancels)
        {
            bcancel_t *q = sb_container_of(it, bcancel_t, link);
            if (!q->run)
                bcancel_run(s, q);
        }
        inbox_admit(s);
        sb_list_foreach_safe(it, nx, &s->accepts)
        {
            accept_t *x = sb_container_of(it, accept_t, link);
            if (x->admitted)
                continue;
            if (admit(s, x->req))
                x->admitted = true;
            else
                accept_drop(s, x);
        }
    }
    figures_answer(s, false);
    process(s);
    cancels_run(s);
    pump(s);
    return 0;
}

static int on_resume(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    (void)a, (void)m;
    if (s->ready && !s->loading)
        load(s);
    return 0;
}

static int on_timer(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    uint64_t tag;
    memcpy(&tag, m->data, sizeof tag);
    if (tag == TIMER_LOAD) {
        if (!s->ready && !s->loading && !load(s))
            sb_actor_timer_start(a, LOAD_RETRY_MS, 0, TIMER_LOAD);
        return 0;
    }
    if (tag == TIMER_INBOUND) {
        s->inbound_waiting = false;
        process(s);
        return 0;
    }
    if (tag == TIMER_PUMP) {
        s->pump_waiting = false;
        pump(s);
        return 0;
    }
    if (tag == TIMER_CANCEL) {
        s->cancel_timer = false;
        cancels_run(s);
        return 0;
    }
    if (!(tag & TIMER_SEND) && (tag & TIMER_FALLBACK)) {
        fallback_timer(s, (int64_t)(tag & ~TIMER_FALLBACK));
        return 0;
    }
    if (tag == TIMER_ASK) { /* a token request's wait is over: asked again (or not, if nothing is ready now) */
        if (s->asking)
            s->asking--;
        pump(s);
        return 0;
    }
    if (tag == TIMER_PROGRESS) {
        progress_tick(s);
        return 0;
    }
    if (tag == TIMER_BCAST) {
        s->bcast_waiting = false;
        process(s);
        return 0;
    }
    if (tag == TIMER_BRESUME) {
        bcast_resume(s);
        return 0;
    }
    if (tag == TIMER_SCHED) {
        s->sched_timer = 0;
        sched_run(s);
        pump(s);
        return 0;
    }
    if (!(tag & TIMER_SEND))
        return 0;
    send_t *x = send_get(s, (int64_t)(tag & ~TIMER_SEND));
    if (!x)
        return 0;
    if (x->state == Q_WAITING && x->out_retry_ms == -1) { /* store the outcome again */
        store_outcome(s, x);
    } else if (x->state == Q_WAITING && x->out_retry_ms == -2) { /* sending since a crash: unknown */
        s->sending++;
        finish(s, x, "unknown", NULL, "interrupted", "the gateway stopped while the provider was being asked", 0,
               true);
    } else if (x->state == Q_WAITING) { /* its backoff is over */
        x->state = Q_QUEUED;
        lane_ready(s, x->conv);
        pump(s);
    } else if (x->state == Q_CANCELING && x->cancel_from == Q_WAITING) { /* over while its cancel is stored */
        x->cancel_from = Q_QUEUED;
    }
    return 0;
}

static int session_init(sb_actor_t *a, void *state, const void *arg)
{
    session_t *s = state;
    (void)arg;
    s->ports = sb_rt_env(sb_actor_rt(a));
    if (!s->ports)
        return SB_EINVAL;
    s->actor = a;
    s->rt = sb_actor_rt(a);
    s->self = sb_actor_self(a);
    s->channel = (int64_t)sb_actor_key(a);
    s->epoch = atomic_fetch_add(&incarnations, 1) + 1;
    s->metrics = sb_metrics_shard(sb_rt_shard(s->rt));
    sb_htable_init(&s->convs);
    sb_list_init(&s->conv_lru);
    sb_htable_init(&s->by_addr);
    sb_htable_init(&s->sends);
    memo_init(&s->providers);
    memo_init(&s->keys);
    for (int p = 0; p < SB_PRIORITY_N; p++)
        sb_list_init(&s->lanes[p]);
    sb_list_init(&s->figures);
    sb_list_init(&s->inbox);
    sb_list_init(&s->accepts);
    sb_htable_init(&s->pendings);
    sb_htable_init(&s->watches);
    sb_idset_init(&s->known);
    sb_idset_init(&s->taken);
    sb_list_init(&s->bcasts);
    sb_list_init(&s->bcancels);
    sb_list_init(&s->progress);
    sb_idset_init(&s->canceled);
    sb_list_init(&s->cancels);
    if (!load(s))
        sb_actor_timer_start(a, LOAD_RETRY_MS, 0, TIMER_LOAD);
    return 0;
}

static void session_stop(sb_actor_t *a, void *state)
{
    session_t *s = state;
    (void)a;
    if (s->nsched)
        sb_log_debug("session %" PRId64 ": stopped holding %zu scheduled message(s), the earliest due in %" PRId64
                     " ms (the store keeps them; the schedule scan wakes the session in time)",
                     s->channel, s->nsched, s->sched[0]->due_ms - wall_ms(s));
    size_t at = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&s->pendings, &at));) {
        sb_htable_remove_at(&s->pendings, &at);
        pending_t *p = sb_container_of(n, pending_t, node);
        free(p->sends);
        free(p);
    }
    sb_htable_cleanup(&s->pendings);
    for (sb_list_t *l; (l = sb_list_pop_front(&s->accepts));) {
        accept_t *x = sb_container_of(l, accept_t, link);
        answer(x->req, 503, 0, false);
        free(x);
    }
    for (sb_list_t *l; (l = sb_list_first(&s->cancels));) /* (those being stored too: their answer is lost) */
        cancel_done(sb_container_of(l, cancel_t, link), 503, "unavailable", "the channel's session stopped; retry");
    for (sb_list_t *l; (l = sb_list_pop_front(&s->inbox));)
        free_inbound(sb_container_of(l, inbound_t, link));
    figures_answer(s, true);
    for (sb_list_t *l; (l = sb_list_first(&s->bcasts));) {
        bcast_t *b = sb_container_of(l, bcast_t, link);
        if (b->req) /* (a staged one is resumed at the next activation) */
            bcast_answer(b->req, 503, 0);
        bcast_drop(b);
    }
    for (sb_list_t *l; (l = sb_list_pop_front(&s->bcancels));) {
        bcancel_t *q = sb_container_of(l, bcancel_t, link);
        bcancel_answer(q->req, 503, "unavailable", "the broadcast could not be canceled now; retry");
        free(q);
    }
    for (sb_list_t *l; (l = sb_list_first(&s->progress));)
        progress_free(sb_container_of(l, progress_t, link));
    sb_idset_cleanup(&s->canceled);
    size_t nsends = 0, pos = 0;
    send_t **sends = sb_malloc((s->sends.n ? s->sends.n : 1) * sizeof *sends);
    for (sb_hnode_t *n; (n = sb_htable_next(&s->sends, &pos));)
        sends[nsends++] = sb_container_of(n, send_t, node);
    for (size_t i = 0; i < nsends; i++)
        send_free(s, sends[i]);
    free(sends);
    free(s->sched);
    pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&s->convs, &pos));) {
        conv_t *c = sb_container_of(n, conv_t, by_id);
        free(c->address);
        free(c->profile_name);
        free(c);
    }
    pos = 0;
    for (sb_hnode_t *n; (n = sb_htable_next(&s->watches, &pos));) {
        sb_htable_remove_at(&s->watches, &pos);
        watch_release(sb_container_of(n, watch_t, node));
    }
    sb_htable_cleanup(&s->watches);
    memo_cleanup(&s->providers);
    memo_cleanup(&s->keys);
    sb_htable_cleanup(&s->convs);
    sb_htable_cleanup(&s->by_addr);
    sb_htable_cleanup(&s->sends);
    sb_idset_cleanup(&s->known);
    sb_idset_cleanup(&s->taken);
    free((char *)s->info.address);
    free((char *)s->info.credentials_sealed);
}

static bool session_can_passivate(sb_actor_t *a, void *state)
{
    session_t *s = state;
    (void)a;
    return s->ready && !s->loading && sb_list_empty(&s->inbox) && sb_list_empty(&s->accepts) &&
           s->pendings.n == 0 && s->sends.n == s->nsched && !s->resolving && s->watches.n == 0 &&
           !s->watches_loading && sb_list_empty(&s->figures) && sb_list_empty(&s->bcasts) &&
           sb_list_empty(&s->bcancels) && sb_list_empty(&s->progress) && !s->reload && sb_list_empty(&s->cancels) &&
           sched_far(s); /* (the scheduled ones only, none due soon: the store's scan wakes it in time) */
}

static const sb_actor_handler_fn handlers[] = {
    [SB_MSG_TIMER] = on_timer,  [SB_SESSION_RECEIPT] = on_receipt, [SB_SESSION_SEND] = on_send,
    [SB_SESSION_RESUME] = on_resume, [SB_SESSION_WRITTEN] = on_written, [S_LOADED] = on_loaded,
    [S_CONVS] = on_convs,       [S_PROVIDERS] = on_providers,      [S_KEY] = on_key,
    [S_GRANT] = on_grant,       [S_OUTCOME] = on_outcome,         [S_FALLBACK] = on_fallback,
    [S_FALLBACKS] = on_fallbacks,
    [SB_SESSION_SETTINGS] = on_settings, [SB_SESSION_FIGURES] = on_figures, [S_LIMITS] = on_limits,
    [SB_SESSION_BROADCAST] = on_broadcast, [SB_SESSION_BROADCAST_CANCEL] = on_bcancel_req,
    [S_BBEGIN] = on_bbegin,     [S_BROWS] = on_brows,              [S_BCANCEL] = on_bcancel,
    [S_BCOUNTS] = on_bcounts,   [S_BRESUME] = on_bresume,
    [SB_SESSION_CANCEL] = on_cancel, [SB_SESSION_WAKE] = on_wake,
};

/* Whose work this actor does (sb_rt_evict). */
static int64_t session_tenant(sb_actor_t *a, void *state)
{
    (void)a;
    return ((session_t *)state)->tenant;
}

const sb_actor_kind_t sb_session_kind = {
    .name = "session",
    .state_size = sizeof(session_t),
    .init = session_init,
    .handlers = handlers,
    .nhandlers = sizeof handlers / sizeof handlers[0],
    .stop = session_stop,
    .can_passivate = session_can_passivate,
    .tenant = session_tenant,
};
