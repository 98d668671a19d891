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
#include "proto/err.h"
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
#define CONV_KEEP 1024            /* conversations kept in memory when not in use; the least recently used go beyond
                                   * (the store has them, and a lookup brings one back) */

enum {
    S_LOADED = SB_SESSION_INTERNAL,
    S_CONVS,
    S_PROVIDERS,
    S_KEY,
    S_GRANT,
    S_OUTCOME,
};

/* Timer tags: small numbers for the actor's own, a send's id with the high bit for a send's. */
enum { TIMER_LOAD = 1, TIMER_INBOUND, TIMER_PUMP, TIMER_SCHED };
#define TIMER_SEND (1ull << 62)

typedef struct send send_t;

typedef struct conv {
    sb_hnode_t by_id, by_addr;
    bool addressed;          /* in by_addr (its address is known) */
    bool fresh;              /* its seq is known: false until loaded, and after a write the store refused (loaded
                              * again once none of its messages is in flight: memory is never behind the store) */
    unsigned inflight;       /* work items numbering its messages, not answered yet */
    int64_t id, contact_id, last_seq;
    char *address, *profile_name;
    char created_at[SB_TIME_LEN], last_message_at[SB_TIME_LEN];
    sb_list_t lane;          /* its outbound messages, in order */
    sb_list_t ready_link;    /* on the session's ready list while its lane's head may start */
    sb_list_t lru;           /* on the session's conversations, the least recently used first */
    unsigned holds;          /* checked receipts waiting in the inbox that point at it */
    unsigned scheduled;      /* its messages in the session's schedule (not in its lane yet) */
} conv_t;

/* Q_SCHEDULED: in the schedule (the heap), out of its lane until its time; Q_CANCELING: its cancel is being
 * stored (it stays where it was, and nothing starts it). */
enum send_state { Q_QUEUED, Q_CLAIMING, Q_COUNTING, Q_SENDING, Q_STORING, Q_WAITING, Q_SCHEDULED, Q_CANCELING };

struct send {
    sb_hnode_t node;         /* by id */
    sb_list_t lane_link;
    int64_t id;
    conv_t *conv;
    unsigned attempts;
    enum send_state state;
    char *to, *body, *media_json, *template_json;
    char lease[64];
    bool leased;
    /* the outcome being stored */
    const char *out_status;
    char *out_provider_id, *out_code, *out_message;
    int64_t out_retry_ms;
    bool out_finished;
    uint64_t out_since;
    /* scheduled */
    int64_t due_ms;          /* its send_at (Unix ms), while scheduled */
    size_t sched_i;          /* its place in the heap, while scheduled */
    enum send_state cancel_from; /* Q_CANCELING: the state it goes back to if the cancel is not stored */
};

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
    bool admitted;           /* checked against the channel (admit) */
    bool key_asked;          /* the store was asked about its idempotency key */
    int64_t id;              /* once written */
    conv_t *conv;
    int64_t seq;
    int64_t due_ms;          /* once written: its send_at (Unix ms) when it was scheduled, else 0 */
} accept_t;

/* A cancel waiting for the activation, or for its message's accept to be answered, or being stored. */
typedef struct cancel {
    sb_list_t link;
    sb_session_cancel_t *req;
    bool storing;
} cancel_t;

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

enum work_kind { W_INBOUND, W_ACCEPT, W_CLAIM, W_OUTCOME, W_CANCEL };

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
} pending_t;

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
    sb_list_t ready_lanes;
    unsigned sending;        /* sends from their claim until their outcome is stored */
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
    send_t **sched;          /* the scheduled messages: a min-heap by (due_ms, id) */
    size_t nsched, sched_cap;
    uint64_t sched_timer;    /* the timer for the earliest (0: none) ... */
    int64_t sched_timer_due; /* ... and the due time it was armed for */
    sb_list_t cancels;       /* cancel_t, in arrival order */
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
    size_t excess = s->convs.n > CONV_KEEP ? s->convs.n - CONV_KEEP : 0, steps = excess + 64;
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

static void free_accept(accept_t *a)
{
    sb_list_remove(&a->link);
    free(a);
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
                free_accept(a);
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
        int64_t id = s->ports->store.message_id(s->ports->store.ctx);
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
        m->broadcast_id = req->broadcast_id;
        m->fallback_of = req->fallback_of;
        m->created_at = sb_tenant_work_str(w, c->last_message_at);
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

static void lane_ready(session_t *s, conv_t *c)
{
    if (!sb_list_empty(&c->lane) && !sb_list_linked(&c->ready_link) &&
        sb_container_of(sb_list_first(&c->lane), send_t, lane_link)->state == Q_QUEUED)
        sb_list_push_back(&s->ready_lanes, &c->ready_link);
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
    return x;
}

static void send_free(session_t *s, send_t *x)
{
    if (x->leased)
        s->ports->counters.release(s->ports->counters.ctx, s->tenant, s->channel, x->lease);
    sb_htable_remove(&s->sends, &x->node);
    sb_list_remove(&x->lane_link);
    free(x->to);
    free(x->body);
    free(x->media_json);
    free(x->template_json);
    free(x->out_provider_id);
    free(x->out_code);
    free(x->out_message);
    free(x);
}

static void pump(session_t *s);

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
    comp_post(c, S_GRANT, &b);
}

/* Takes a token of the channel's pace and an in-flight slot (Redis), right before the request. */
static void acquire(session_t *s, send_t *x)
{
    x->state = Q_COUNTING;
    comp_t *c = comp_new(s, x->id);
    if (s->ports->counters.acquire(s->ports->counters.ctx, s->tenant, s->channel, &s->limits, grant_cb, c) < 0) {
        free(c);
        sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_SEND | (uint64_t)x->id); /* without Redis nothing goes */
    }
}

/* Starts the heads of ready lanes while there is room: claims them (status sending, committed before the provider
 * is asked), one work item for the turn's claims. */
static void pump(session_t *s)
{
    if (!s->ready || s->pump_waiting)
        return;
    pending_t *p = NULL;
    sb_tenant_work_t *w = NULL;
    while (s->sending < SB_SESSION_MAX_SENDING && !sb_list_empty(&s->ready_lanes)) {
        uint64_t held = s->ports->provider.held_ms(s->ports->provider.ctx, s->info.type);
        if (held) { /* the provider's endpoint is failing: nothing is claimed, no attempt spent */
            s->pump_waiting = true;
            sb_actor_timer_start(s->actor, held, 0, TIMER_PUMP);
            break;
        }
        conv_t *c = sb_container_of(sb_list_pop_front(&s->ready_lanes), conv_t, ready_link);
        send_t *x = sb_container_of(sb_list_first(&c->lane), send_t, lane_link);
        if (!p) {
            p = pending_new(s, W_CLAIM);
            w = work_new(s, p);
        }
        sb_status_change_t *ch = sb_tenant_work_change(w);
        ch->message_id = x->id;
        ch->channel_id = s->channel;
        ch->status = "sending";
        ch->counts_attempt = true;
        p->sends = sb_realloc(p->sends, (p->nsends + 1) * sizeof *p->sends);
        p->sends[p->nsends++] = x;
        x->state = Q_CLAIMING;
        s->sending++;
    }
    if (w)
        sb_tenant_write(s->rt, s->tenant, w);
}

static int on_grant(sb_actor_t *a, void *state, sb_msg_t *m)
{
    session_t *s = state;
    rd_t r;
    int64_t ref;
    int err;
    (void)a;
    if (!comp_open(s, m, &r, &ref, &err))
        return 0;
    send_t *x = send_get(s, ref);
    if (!x || x->state != Q_COUNTING)
        return 0;
    int64_t granted = rd_i64(&r), wait_us = rd_i64(&r);
    const char *lease = rd_str(&r);
    if (err || r.bad) { /* limits must hold: without Redis nothing is sent; the claim holds meanwhile */
        sb_actor_timer_start(s->actor, DB_RETRY_MS, 0, TIMER_SEND | (uint64_t)x->id);
        return 0;
    }
    if (!granted) {
        sb_actor_timer_start(s->actor, (uint64_t)(wait_us + 999) / 1000, 0, TIMER_SEND | (uint64_t)x->id);
        return 0;
    }
    snprintf(x->lease, sizeof x->lease, "%s", lease ? lease : "");
    x->leased = true;
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
                accepting |= a->conv && a->id == req->id;
            }
            if (!accepting) /* not in the outbox: finished (sent, failed, canceled ...) */
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
    if (err) {
        answer(req, 503, 0, false);
    } else {
        send_t *x = send_add(s, a->conv, a->id, 0, req->to, req->body, req->media_json, req->template_json);
        if (a->due_ms)
            sched_add(s, x, a->due_ms);
        else
            lane_ready(s, a->conv);
        req->accepted = a->due_ms ? "scheduled" : "queued";
        answer(req, 202, a->id, true);
    }
    free_accept(a);
    cancels_run(s); /* one may have waited for this accept */
}

static void written_claims(session_t *s, pending_t *p, int err)
{
    for (size_t i = 0; i < p->nsends; i++) {
        send_t *x = p->sends[i];
        if (!send_get(s, x->id) || x->state != Q_CLAIMING)
            continue;
        if (err) { /* still queued: again after a while */
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
        acquire(s, x);
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

static void process(session_t *s)
{
    for (int round = 0; round < 2; round++) {
        if (!s->ready || s->resolving || s->inbound_waiting)
            return;
        if (resolve(s))
            return;
        s->again = false;
        apply_inbound(s);
        apply_accepts(s);
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
    sb_send_request_t m = {.to = req->to,
                           .body = req->body,
                           .media_json = req->media_json,
                           .template_json = req->template_json};
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
        (in->ev.kind == SB_EV_MESSAGE && !in->ev.from) || (in->ev.kind == SB_EV_STATUS && !in->ev.status)) {
        set_aside(s, r.tenant, r.receipt_id, "its event is incomplete");
        sb_idset_del(&s->known, r.receipt_id);
        free_inbound(in);
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
    if (s->ready && !admit(s, req))
        return 0;
    accept_t *x = sb_calloc(1, sizeof *x);
    x->req = req;
    x->admitted = s->ready;
    sb_list_push_back(&s->accepts, &x->link);
    process(s);
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

/* The pace and caps of the channel: its type's rate (Twilio long code 1/s, Twilio WhatsApp 10/s, Meta WhatsApp 80/s)
 * or settings.rate_per_second, 5% under. */
static void limits_of(session_t *s)
{
    double rate = s->info.type == SB_CH_TWILIO_WHATSAPP ? 10 : s->info.type == SB_CH_META_WHATSAPP ? 80 : 1;
    if (s->info.rate_per_second > 0)
        rate = s->info.rate_per_second;
    /* 5% slower than the rate: grants exactly 1/rate apart put rate + 1 sends into a closed one-second window, and
     * the provider's clock sees them with the jitter of the way there; rate grants then span 1.05 s, so 50 ms of it
     * cannot bring rate + 1 into one second */
    double per = 1e6 / (rate / 1.05);
    s->limits = (sb_send_limits_t){.interval_us = per < 1 ? 1 : (uint64_t)per,
                                   .burst = 1,
                                   .channel_max = SB_SESSION_MAX_SENDING,
                                   .tenant_max = 256,
                                   .lease_ms = 60000};
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
    if (err) {
        if (!s->ready)
            sb_actor_timer_start(a, LOAD_RETRY_MS, 0, TIMER_LOAD);
        return 0;
    }
    bool found = rd_i64(&r) != 0;
    if (found) {
        int64_t tenant = rd_i64(&r), type = rd_i64(&r);
        const char *address = rd_str(&r);
        int64_t rate_milli = rd_i64(&r);
        const char *creds = rd_str(&r);
        if (!s->ready) { /* (a reload, for RESUME, keeps what it has: only its pending messages may be new) */
            s->info.tenant = s->tenant = tenant;
            s->info.channel = s->channel;
            s->info.type = (sb_channel_type_t)type;
            s->info.address = dup_or_null(address);
            s->info.rate_per_second = (double)rate_milli / 1000;
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
        int64_t send_in = rd_i64(&r);
        if (r.bad || !to || !status || send_get(s, id))
            continue;
        if (strcmp(status, "queued") != 0 && strcmp(status, "retrying") != 0 && strcmp(status, "sending") != 0 &&
            strcmp(status, "scheduled") != 0)
            continue; /* finished already: nothing to send */
        conv_t *c = conv_get(s, conv);
        send_t *x = send_add(s, c, id, attempts, to, body, media, tpl);
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
        s->ready = true;
        inbox_admit(s);
        sb_list_foreach_safe(it, nx, &s->accepts)
        {
            accept_t *x = sb_container_of(it, accept_t, link);
            if (x->admitted)
                continue;
            if (admit(s, x->req)) {
                x->admitted = true;
            } else {
                sb_list_remove(it);
                free(x);
            }
        }
    }
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
    if (x->state == Q_COUNTING) { /* the counters said wait, or were away */
        acquire(s, x);
    } else if (x->state == Q_WAITING && x->out_retry_ms == -1) { /* store the outcome again */
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
    sb_htable_init(&s->convs);
    sb_list_init(&s->conv_lru);
    sb_htable_init(&s->by_addr);
    sb_htable_init(&s->sends);
    memo_init(&s->providers);
    memo_init(&s->keys);
    sb_list_init(&s->ready_lanes);
    sb_list_init(&s->inbox);
    sb_list_init(&s->accepts);
    sb_htable_init(&s->pendings);
    sb_idset_init(&s->known);
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
    memo_cleanup(&s->providers);
    memo_cleanup(&s->keys);
    sb_htable_cleanup(&s->convs);
    sb_htable_cleanup(&s->by_addr);
    sb_htable_cleanup(&s->sends);
    sb_idset_cleanup(&s->known);
    free((char *)s->info.address);
    free((char *)s->info.credentials_sealed);
}

static bool session_can_passivate(sb_actor_t *a, void *state)
{
    session_t *s = state;
    (void)a;
    return s->ready && !s->loading && sb_list_empty(&s->inbox) && sb_list_empty(&s->accepts) &&
           s->pendings.n == 0 && s->sends.n == s->nsched && !s->resolving && sb_list_empty(&s->cancels) &&
           sched_far(s); /* (the scheduled ones only, none due soon: the store's scan wakes it in time) */
}

static const sb_actor_handler_fn handlers[] = {
    [SB_MSG_TIMER] = on_timer,  [SB_SESSION_RECEIPT] = on_receipt, [SB_SESSION_SEND] = on_send,
    [SB_SESSION_RESUME] = on_resume, [SB_SESSION_WRITTEN] = on_written, [S_LOADED] = on_loaded,
    [S_CONVS] = on_convs,       [S_PROVIDERS] = on_providers,      [S_KEY] = on_key,
    [S_GRANT] = on_grant,       [S_OUTCOME] = on_outcome,      [SB_SESSION_CANCEL] = on_cancel,
    [SB_SESSION_WAKE] = on_wake,
};

const sb_actor_kind_t sb_session_kind = {
    .name = "session",
    .state_size = sizeof(session_t),
    .init = session_init,
    .handlers = handlers,
    .nhandlers = sizeof handlers / sizeof handlers[0],
    .stop = session_stop,
    .can_passivate = session_can_passivate,
};
