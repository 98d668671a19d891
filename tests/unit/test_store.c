/* Tests of the store (adapters/store/store.c) against the real local PostgreSQL (ops/stack.sh up; the database is
 * $SB_TEST_DATABASE_URL or switchboard_test, migrated): message ids in blocks; conversations found or made, a contact
 * renamed; a tenant's write all or nothing (messages, receipts marked processed, one event page) and read back as
 * events with their cursors; the outbox through claim and outcome, statuses, provider ids and keys found again;
 * activation loads (tenant, channel with its outbox); receipts committed once per dedup key, a Meta account no
 * channel claims dropped; the sweeper's low-water mark; outgoing webhooks' bookkeeping; the backlog at start; a
 * scheduled message (its send_at written and loaded back as the time left, the scan of those due soon, canceled). */
#include "adapters/pg.h"
#include "adapters/store/store.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "proto/rfc3339.h"
#include "tests/tap.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uv_loop_t loop;
static sb_pg_t *pg, *ingest;
static sb_store_t *st;
static sb_store_port_t port;
static int64_t tenant, channel;
static char tag[24]; /* makes this run's rows its own */

/* ---- running the loop until an answer came -------------------------------------------------------------------- */

static bool wait_for(const bool *flag)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (!*flag && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    return *flag;
}

typedef struct sql_result {
    bool done;
    int err;
    char value[256];
} sql_result_t;

static void sql_done(void *arg, int err, const char *detail, const PGresult *res)
{
    sql_result_t *r = arg;
    r->err = err;
    if (err)
        snprintf(r->value, sizeof r->value, "%s", detail);
    else if (res && PQntuples(res) > 0 && PQnfields(res) > 0)
        snprintf(r->value, sizeof r->value, "%s", PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
    r->done = true;
}

/* Runs sql (no parameters) and returns its first value ("" when none; the error's text on failure). */
static const char *sql(const char *q)
{
    static sql_result_t r;
    memset(&r, 0, sizeof r);
    if (sb_pg_query(pg, q, 0, NULL, 0, sql_done, &r) < 0 || !wait_for(&r.done))
        return "(not run)";
    return r.value;
}

static int64_t sql_i64(const char *q)
{
    return strtoll(sql(q), NULL, 10);
}

/* ---- callbacks into records ------------------------------------------------------------------------------------- */

typedef struct done {
    bool done;
    int err;
} done_t;

static void on_done(void *arg, int err)
{
    done_t *d = arg;
    d->err = err;
    d->done = true;
}

typedef struct convs {
    bool done;
    int err;
    size_t n;
    sb_conv_info_t c[4];
    char addr[4][32], name[4][32];
} convs_t;

static void on_convs(void *arg, int err, const sb_conv_info_t *c, size_t n)
{
    convs_t *r = arg;
    r->err = err;
    r->n = n;
    for (size_t i = 0; i < n && i < 4; i++) {
        r->c[i] = c[i];
        snprintf(r->addr[i], sizeof r->addr[i], "%s", c[i].address ? c[i].address : "");
        snprintf(r->name[i], sizeof r->name[i], "%s", c[i].profile_name ? c[i].profile_name : "");
        r->c[i].address = r->addr[i];
        r->c[i].profile_name = r->name[i];
    }
    r->done = true;
}

static convs_t ensure(const char *const *addrs, const char *const *names, size_t n)
{
    convs_t r;
    memset(&r, 0, sizeof r);
    if (port.ensure_conversations(port.ctx, tenant, channel, addrs, names, n, on_convs, &r) == 0)
        wait_for(&r.done);
    return r;
}

typedef struct events {
    bool done;
    int err;
    size_t n;
    int64_t cursor[16];
    char type[16][32];
    char data[16][256];
} events_t;

static void on_events(void *arg, int err, const sb_event_rec_t *ev, size_t n)
{
    events_t *r = arg;
    r->err = err;
    r->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        r->cursor[i] = ev[i].cursor;
        snprintf(r->type[i], sizeof r->type[i], "%s", ev[i].type);
        snprintf(r->data[i], sizeof r->data[i], "%.*s", (int)ev[i].data.len, ev[i].data.p);
    }
    r->done = true;
}

static int write_now(const sb_tenant_write_t *w)
{
    done_t d = {0};
    if (port.write(port.ctx, w, on_done, &d) < 0)
        return SB_EUNAVAIL;
    wait_for(&d.done);
    return d.err;
}

/* ---- receipts ------------------------------------------------------------------------------------------------- */

typedef struct rc_rec {
    sb_store_receipt_t r;
    bool done;
    int err;
} rc_rec_t;

static void on_receipt(sb_store_receipt_t *r, int err)
{
    rc_rec_t *x = (rc_rec_t *)r;
    x->err = err;
    x->done = true;
}

/* ---- tests ------------------------------------------------------------------------------------------------------ */

TEST(setup)
{
    bool up = false;
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (!(up = sb_pg_connected(pg) && sb_pg_connected(ingest)) && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    ok(up, "connected to PostgreSQL (both connections)");
    snprintf(tag, sizeof tag, "%llx", (unsigned long long)uv_hrtime());
    char q[512];
    snprintf(q, sizeof q, "INSERT INTO tenants (name) VALUES ('test_store %s') RETURNING id", tag);
    tenant = sql_i64(q);
    snprintf(q, sizeof q,
             "WITH c AS (INSERT INTO channels (tenant_id, type, address, credentials_sealed, settings)"
             " VALUES (%" PRId64 ", 'twilio_sms', '+1555%s', 'sealed', '{\"rate_per_second\": 2.5}') RETURNING id),"
             " r AS (INSERT INTO channel_routes (channel_id, tenant_id, type, address)"
             "       SELECT id, %" PRId64 ", 'twilio_sms', '+1555%s' FROM c)"
             " SELECT id FROM c",
             tenant, tag + strlen(tag) - 7, tenant, tag + strlen(tag) - 7);
    channel = sql_i64(q);
    ok(tenant > 0 && channel > 0, "a tenant and a channel of its own (%" PRId64 ", %" PRId64 ")", tenant, channel);
}

TEST(message_ids)
{
    int64_t first = port.message_id(port.ctx);
    ok(first == 0, "the first id waits for the first block");
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (!(first = port.message_id(port.ctx)) && uv_hrtime() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    ok(first > 0, "then ids come (%" PRId64 ")", first);
    /* 100 ids a loop turn, the turns 2 ms apart: 2,000 in all, nearly two blocks' worth */
    int64_t prev = first, zeros = 0, ok_order = 1;
    for (int turn = 0; turn < 20; turn++) {
        for (int i = 0; i < 100; i++) {
            int64_t id = port.message_id(port.ctx);
            if (!id) {
                zeros++;
                continue;
            }
            ok_order &= id > prev;
            prev = id;
        }
        uint64_t until = uv_hrtime() + 2000000;
        while (uv_hrtime() < until)
            uv_run(&loop, UV_RUN_NOWAIT);
    }
    ok(ok_order, "every id larger than the one before, across blocks");
    is_int(zeros, 0, "the next block is reserved ahead: an id is always at hand");
}

TEST(conversations)
{
    const char *addrs[3] = {"+14155550101", "+14155550102", "+14155550101"};
    const char *names[3] = {"Ada", NULL, NULL};
    convs_t r = ensure(addrs, names, 3);
    ok(r.done && r.err == 0 && r.n == 3, "three addresses asked, three answers");
    ok(r.c[0].id > 0 && r.c[0].id == r.c[2].id && r.c[0].id != r.c[1].id && r.c[0].contact_id == r.c[2].contact_id,
       "an address asked twice is one conversation");
    ok(r.c[0].last_seq == 0 && !r.c[0].last_message_at[0] && r.c[0].created_at[0], "new: no message yet");
    ok(!strcmp(r.name[0], "Ada") && !r.name[1][0], "the name given is stored with the new contact");
    const char *again[1] = {"+14155550101"}, *renamed[1] = {"Ada L."};
    convs_t r2 = ensure(again, renamed, 1);
    ok(r2.err == 0 && r2.c[0].id == r.c[0].id && !strcmp(r2.name[0], "Ada L."), "found again, renamed");
    char q[256];
    snprintf(q, sizeof q, "SELECT profile_name FROM contacts WHERE id = %" PRId64, r.c[0].contact_id);
    is_str(sql(q), "Ada L.", "the new name is stored");
}

TEST(inbound_write)
{
    const char *addrs[1] = {"+14155550111"};
    convs_t c = ensure(addrs, NULL, 1);
    /* two receipts, committed through the store */
    rc_rec_t r1 = {.r = {.tenant = tenant, .channel = channel, .dedup_key = "msg:SMa", .raw = "raw a",
                         .event_json = "{\"kind\":\"message\",\"provider_id\":\"SMa\"}", .done = on_receipt}};
    rc_rec_t r2 = r1;
    r2.r.dedup_key = "msg:SMb";
    r2.r.raw = "raw b";
    rc_rec_t r3 = r1; /* the first again: stored once */
    ok(sb_store_receipt_add(st, &r1.r) == 0 && sb_store_receipt_add(st, &r2.r) == 0 &&
           sb_store_receipt_add(st, &r3.r) == 0,
       "three receipts queued in one turn");
    wait_for(&r1.done);
    wait_for(&r2.done);
    wait_for(&r3.done);
    ok(r1.err == 0 && r2.err == 0 && r3.err == 0 && r1.r.id > 0 && r2.r.id > r1.r.id && r3.r.id == 0,
       "committed in arrival order; the repeat makes no row (id 0)");
    ok(r1.r.tenant == tenant && r1.r.channel == channel, "each learns where it went");

    int64_t id1 = port.message_id(port.ctx), id2 = port.message_id(port.ctx);
    sb_new_message_t m[2] = {
        {.id = id1, .conversation_id = c.c[0].id, .channel_id = channel, .seq = 1, .sender = "+14155550111",
         .recipient = "+15550000000", .body = "hello \"world\" \\ {a,b}", .media_json = "[]", .provider_id = "SMa",
         .status = "received", .created_at = "2026-12-05T10:00:00.5+00:00", .receipt_id = r1.r.id},
        {.id = id2, .conversation_id = c.c[0].id, .channel_id = channel, .seq = 2, .sender = "+14155550111",
         .recipient = "+15550000000", .body = "again", .media_json = "[{\"url\":\"https://x/y.png\"}]",
         .provider_id = "SMb", .status = "received", .created_at = "2026-12-05T10:00:01+00:00",
         .receipt_id = r2.r.id}};
    const char *page = "[{\"type\":\"message.created\",\"data\":{\"id\":\"1\",\"b\":\"q\\\"uote\"}},"
                       "{\"type\":\"conversation.updated\",\"data\":{\"last_seq\":1}},"
                       "{\"type\":\"message.created\",\"data\":{\"id\":\"2\"}},"
                       "{\"type\":\"conversation.updated\",\"data\":{\"last_seq\":2}}]";
    sb_tenant_write_t w = {.tenant = tenant, .messages = m, .nmessages = 2, .first_cursor = 1, .nevents = 4,
                           .events_json = sb_str_cstr(page)};
    is_int(write_now(&w), 0, "a tenant's write: two messages, their receipts, one page of four events");
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM webhook_receipts WHERE tenant_id = %" PRId64
                          " AND processed_at IS NOT NULL", tenant);
    is_str(sql(q), "2", "both receipts marked processed");
    snprintf(q, sizeof q, "SELECT body FROM messages WHERE tenant_id = %" PRId64 " AND id = %" PRId64, tenant, id1);
    is_str(sql(q), "hello \"world\" \\ {a,b}", "the body intact");
    snprintf(q, sizeof q, "SELECT to_json(created_at) #>> '{}' FROM messages WHERE tenant_id = %" PRId64
                          " AND id = %" PRId64, tenant, id1);
    is_str(sql(q), "2026-12-05T10:00:00.5+00:00", "created_at as the actor wrote it (TimeZone UTC)");

    events_t e = {0};
    ok(port.events_after(port.ctx, tenant, 0, 10, on_events, &e) == 0 && wait_for(&e.done), "events read back");
    ok(e.err == 0 && e.n == 4 && e.cursor[0] == 1 && e.cursor[3] == 4 && !strcmp(e.type[1], "conversation.updated"),
       "four events, cursors 1..4, types in order");
    is_str(e.data[0], "{\"id\":\"1\",\"b\":\"q\\\"uote\"}", "data exactly as written (json, not jsonb)");
    events_t e2 = {0};
    port.events_after(port.ctx, tenant, 2, 1, on_events, &e2);
    wait_for(&e2.done);
    ok(e2.n == 1 && e2.cursor[0] == 3, "after 2, limit 1: cursor 3 (from the middle of a page)");

    convs_t again = ensure(addrs, NULL, 1);
    ok(again.c[0].last_seq == 2 && !strcmp(again.c[0].last_message_at, "2026-12-05T10:00:01+00:00"),
       "the conversation's seq and time are its newest message's");

    /* all or nothing: a second message with seq 2 (taken) fails the whole write */
    int64_t id3 = port.message_id(port.ctx);
    sb_new_message_t bad = m[1];
    bad.id = id3;
    bad.provider_id = "SMc";
    bad.receipt_id = 0;
    const char *page2 = "[{\"type\":\"message.created\",\"data\":{}}]";
    sb_tenant_write_t w2 = {.tenant = tenant, .messages = &bad, .nmessages = 1, .first_cursor = 5, .nevents = 1,
                            .events_json = sb_str_cstr(page2)};
    is_int(write_now(&w2), SB_EINVAL, "a write that breaks a constraint is refused");
    snprintf(q, sizeof q, "SELECT count(*) FROM event_pages WHERE tenant_id = %" PRId64, tenant);
    is_str(sql(q), "1", "and leaves nothing behind (no page)");
}

typedef struct tenant_rec {
    bool done;
    int err;
    bool found;
    int64_t last, hook;
    char url[128], secret[128];
} tenant_rec_t;

static void on_tenant(void *arg, int err, const sb_tenant_info_t *t)
{
    tenant_rec_t *r = arg;
    r->err = err;
    r->found = t->found;
    r->last = t->last_cursor;
    r->hook = t->webhook_cursor;
    snprintf(r->url, sizeof r->url, "%s", t->webhook_url ? t->webhook_url : "");
    snprintf(r->secret, sizeof r->secret, "%s", t->webhook_secret ? t->webhook_secret : "");
    r->done = true;
}

typedef struct channel_rec {
    bool done;
    int err;
    bool found;
    sb_channel_type_t type;
    double rate;
    size_t n;
    int64_t id[8];
    char status[8][16];
    unsigned attempts[8];
    int64_t send_in[8];
} channel_rec_t;

static void on_channel(void *arg, int err, const sb_channel_info_t *c, const sb_pending_send_t *p, size_t n)
{
    channel_rec_t *r = arg;
    r->err = err;
    r->found = c != NULL;
    if (c) {
        r->type = c->type;
        r->rate = c->rate_per_second;
    }
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++) {
        r->id[i] = p[i].id;
        snprintf(r->status[i], sizeof r->status[i], "%s", p[i].status);
        r->attempts[i] = p[i].attempts;
        r->send_in[i] = p[i].send_in_ms;
    }
    r->done = true;
}

static channel_rec_t load_channel(void)
{
    channel_rec_t r;
    memset(&r, 0, sizeof r);
    if (port.load_channel(port.ctx, channel, on_channel, &r) == 0)
        wait_for(&r.done);
    return r;
}

typedef struct found_rec {
    bool done;
    int err;
    size_t n;
    int64_t id, channel;
    char status[16];
} found_rec_t;

static void on_providers(void *arg, int err, const char *const *pids, const int64_t *ids, const char *const *st_,
                         size_t n)
{
    found_rec_t *r = arg;
    (void)pids;
    r->err = err;
    r->n = n;
    if (n) {
        r->id = ids[0];
        snprintf(r->status, sizeof r->status, "%s", st_[0]);
    }
    r->done = true;
}

static void on_key(void *arg, int err, int64_t id, int64_t ch)
{
    found_rec_t *r = arg;
    r->err = err;
    r->id = id;
    r->channel = ch;
    r->done = true;
}

TEST(outbox)
{
    tenant_rec_t t = {0};
    port.load_tenant(port.ctx, tenant, on_tenant, &t);
    wait_for(&t.done);
    ok(t.err == 0 && t.found && t.last == 4 && !t.url[0], "the tenant loads: newest cursor 4, no webhook");

    const char *addrs[1] = {"+14155550122"};
    convs_t c = ensure(addrs, NULL, 1);
    int64_t id = port.message_id(port.ctx);
    sb_new_message_t m = {.id = id, .conversation_id = c.c[0].id, .channel_id = channel, .seq = 1, .out = true,
                          .sender = "+15550000000", .recipient = "+14155550122", .body = "out", .media_json = "[]",
                          .status = "queued", .idempotency_key = "key-1", .template_json = NULL,
                          .created_at = "2026-12-05T11:00:00+00:00"};
    sb_tenant_write_t w = {.tenant = tenant, .messages = &m, .nmessages = 1};
    is_int(write_now(&w), 0, "an outbound message accepted (no events in this write)");
    channel_rec_t r = load_channel();
    ok(r.err == 0 && r.found && r.type == SB_CH_TWILIO_SMS && r.rate == 2.5, "the channel loads, with its rate");
    ok(r.n == 1 && r.id[0] == id && !strcmp(r.status[0], "queued") && r.attempts[0] == 0, "its outbox: the message");

    sb_status_change_t claim = {.message_id = id, .channel_id = channel, .status = "sending", .counts_attempt = true};
    sb_tenant_write_t wc = {.tenant = tenant, .changes = &claim, .nchanges = 1};
    is_int(write_now(&wc), 0, "claimed");
    r = load_channel();
    ok(r.n == 1 && !strcmp(r.status[0], "sending") && r.attempts[0] == 1, "sending, one attempt");

    sb_status_change_t sent = {.message_id = id, .channel_id = channel, .status = "sent", .provider_id = "SMout",
                               .finished = true};
    sb_tenant_write_t ws = {.tenant = tenant, .changes = &sent, .nchanges = 1};
    is_int(write_now(&ws), 0, "sent, finished");
    r = load_channel();
    ok(r.n == 0, "out of the outbox");
    char q[256];
    snprintf(q, sizeof q, "SELECT string_agg(status, ',' ORDER BY at) FROM message_status_history WHERE tenant_id = "
                          "%" PRId64 " AND message_id = %" PRId64, tenant, id);
    is_str(sql(q), "queued,sent", "history: queued, sent (a claim leaves none)");

    found_rec_t f = {0};
    const char *pids[2] = {"SMout", "SMnothing"};
    port.find_by_provider(port.ctx, tenant, channel, pids, 2, on_providers, &f);
    wait_for(&f.done);
    ok(f.err == 0 && f.n == 1 && f.id == id && !strcmp(f.status, "sent"), "found by provider id, with its status");
    found_rec_t k = {0};
    port.find_idempotent(port.ctx, tenant, "key-1", on_key, &k);
    wait_for(&k.done);
    ok(k.err == 0 && k.id == id && k.channel == channel, "found by idempotency key");
    found_rec_t k2 = {0};
    port.find_idempotent(port.ctx, tenant, "key-none", on_key, &k2);
    wait_for(&k2.done);
    ok(k2.err == 0 && k2.id == 0, "an unknown key: 0");
}

typedef struct due_rec {
    bool done;
    int err;
    bool mine;
} due_rec_t;

static void on_due(void *arg, int err, const int64_t *tenants, const int64_t *channels, size_t n)
{
    due_rec_t *r = arg;
    r->err = err;
    for (size_t i = 0; i < n; i++)
        r->mine |= tenants[i] == tenant && channels[i] == channel;
    r->done = true;
}

static due_rec_t due_within(int64_t horizon_ms)
{
    due_rec_t r = {0};
    if (sb_store_scheduled_due(st, horizon_ms, 100000, on_due, &r) == 0)
        wait_for(&r.done);
    return r;
}

TEST(scheduled)
{
    const char *addrs[1] = {"+14155550133"};
    convs_t c = ensure(addrs, NULL, 1);
    int64_t id = port.message_id(port.ctx);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char at[SB_RFC3339_TEXT_LEN];
    sb_rfc3339_format((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 30000, at);
    sb_new_message_t m = {.id = id, .conversation_id = c.c[0].id, .channel_id = channel, .seq = 1, .out = true,
                          .sender = "+15550000000", .recipient = "+14155550133", .body = "later",
                          .media_json = "[]", .status = "scheduled", .send_at = at,
                          .created_at = "2026-12-05T11:00:00+00:00"};
    sb_tenant_write_t w = {.tenant = tenant, .messages = &m, .nmessages = 1};
    is_int(write_now(&w), 0, "a scheduled message accepted");
    channel_rec_t r = load_channel();
    ok(r.n == 1 && r.id[0] == id && !strcmp(r.status[0], "scheduled"), "its outbox holds it, scheduled");
    ok(r.send_in[0] > 25000 && r.send_in[0] <= 30000, "loaded with the time left to its send_at (%lld ms)",
       (long long)r.send_in[0]);
    char q[256];
    snprintf(q, sizeof q, "SELECT status || ' ' || (send_at = '%s'::timestamptz)::text FROM messages WHERE"
                          " tenant_id = %" PRId64 " AND id = %" PRId64, at, tenant, id);
    is_str(sql(q), "scheduled true", "stored with its send_at, as written");
    snprintf(q, sizeof q, "SELECT string_agg(status, ',' ORDER BY at) FROM message_status_history WHERE tenant_id = "
                          "%" PRId64 " AND message_id = %" PRId64, tenant, id);
    is_str(sql(q), "scheduled", "its history starts scheduled");
    due_rec_t d = due_within(60000);
    ok(d.err == 0 && d.mine, "the scan finds its channel: due within 60 s");
    d = due_within(10000);
    ok(d.err == 0 && !d.mine, "but not within 10 s");

    sb_status_change_t cancel = {.message_id = id, .channel_id = channel, .status = "canceled", .finished = true};
    sb_tenant_write_t wc = {.tenant = tenant, .changes = &cancel, .nchanges = 1};
    is_int(write_now(&wc), 0, "canceled");
    r = load_channel();
    ok(r.n == 0, "out of the outbox");
    d = due_within(60000);
    ok(d.err == 0 && !d.mine, "and out of the scan");
    is_str(sql(q), "scheduled,canceled", "history: scheduled, canceled");
}

typedef struct sweep_rec {
    bool done;
    int err;
    size_t n;
    int64_t ids[64];
    bool mine_ok;
} sweep_rec_t;

static void on_sweep(void *arg, int err, const sb_store_unprocessed_t *u, size_t n)
{
    sweep_rec_t *r = arg;
    r->err = err;
    r->n = 0;
    for (size_t i = 0; i < n; i++)
        if (u[i].tenant == tenant && r->n < 64) {
            r->ids[r->n++] = u[i].id;
            r->mine_ok = u[i].ev.kind == SB_EV_MESSAGE && u[i].ev.provider_id && u[i].channel == channel;
        }
    r->done = true;
}

typedef struct unprocessed_rec {
    bool done;
    int err;
    size_t n;
    int64_t ids[8];
} unprocessed_rec_t;

static void on_unprocessed(void *arg, int err, const int64_t *ids, size_t n)
{
    unprocessed_rec_t *r = arg;
    r->err = err;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        r->ids[i] = ids[i];
    r->done = true;
}

/* Of (tenant, ids), the unprocessed ones (the cluster's stream reader acknowledges the others). */
static unprocessed_rec_t unprocessed(const int64_t *ids, size_t n)
{
    int64_t tenants[8];
    for (size_t i = 0; i < n; i++)
        tenants[i] = tenant;
    unprocessed_rec_t r = {0};
    if (sb_store_receipts_unprocessed(st, tenants, ids, n, on_unprocessed, &r) == 0)
        wait_for(&r.done);
    return r;
}

TEST(receipts_and_sweep)
{
    rc_rec_t meta = {.r = {.type = "meta_whatsapp", .account = "no-such-account", .dedup_key = "msg:w1",
                           .event_json = "{}", .raw = "{}", .done = on_receipt}};
    sb_store_receipt_add(st, &meta.r);
    wait_for(&meta.done);
    ok(meta.err == 0 && meta.r.id == 0, "a Meta receipt for an account no channel claims: committed as nothing");

    rc_rec_t r = {.r = {.tenant = tenant, .channel = channel, .dedup_key = "msg:SMsweep", .raw = "raw",
                        .event_json = "{\"kind\":\"message\",\"provider_id\":\"SMsweep\",\"from\":\"+14155550199\"}",
                        .done = on_receipt}};
    sb_store_receipt_add(st, &r.r);
    wait_for(&r.done);
    sweep_rec_t s = {0};
    sb_store_sweep(st, 0, 0, 1000, on_sweep, &s);
    wait_for(&s.done);
    ok(s.err == 0 && s.n == 1 && s.ids[0] == r.r.id && s.mine_ok,
       "the sweeper finds the unprocessed receipt, its event read back");
    int64_t asked[3] = {r.r.id, r.r.id + 1000000000, r.r.id};
    unprocessed_rec_t u = unprocessed(asked, 3);
    ok(u.done && u.err == 0 && u.n == 2 && u.ids[0] == r.r.id && u.ids[1] == r.r.id,
       "receipts unprocessed: the new one (asked twice), not one that does not exist");
    sb_tenant_write_t w = {.tenant = tenant, .receipts = &r.r.id, .nreceipts = 1};
    is_int(write_now(&w), 0, "marked processed (a receipt that made nothing)");
    u = unprocessed(asked, 1);
    ok(u.done && u.err == 0 && u.n == 0, "no longer unprocessed once applied");
    sweep_rec_t s2 = {0};
    sb_store_sweep(st, 0, 0, 1000, on_sweep, &s2);
    wait_for(&s2.done);
    ok(s2.err == 0 && s2.n == 0, "swept: nothing left of ours");
    int64_t low = sql_i64("SELECT low FROM sweep_marks WHERE name = 'receipts'");
    ok(low > 0 && low <= r.r.id, "the low-water mark never passes a receipt newer than 5 s (%" PRId64 ")", low);

    /* a receipt processed and old enough: the mark moves past it, so the next sweep does not read it again */
    char q[512];
    snprintf(q, sizeof q,
             "INSERT INTO webhook_receipts (tenant_id, channel_id, dedup_key, event, raw, received_at, processed_at)"
             " VALUES (%" PRId64 ", %" PRId64 ", 'msg:old-%s', '{}', '', now() - interval '1 minute', now())"
             " RETURNING id", tenant, channel, tag);
    int64_t old = sql_i64(q);
    snprintf(q, sizeof q, "SELECT count(*) FROM webhook_receipts WHERE processed_at IS NULL AND id <= %" PRId64, old);
    bool nothing_older_pending = sql_i64(q) == 0; /* (other tests' receipts share this database) */
    sweep_rec_t s3 = {0};
    sb_store_sweep(st, 0, 0, 1000, on_sweep, &s3);
    wait_for(&s3.done);
    low = sql_i64("SELECT low FROM sweep_marks WHERE name = 'receipts'");
    if (nothing_older_pending)
        ok(low > old, "the mark moves past what is processed and old enough (%" PRId64 " > %" PRId64 ")", low, old);
    else
        ok(1, "# SKIP another test left an older receipt unprocessed; the mark rightly waits for it");
}

typedef struct backlog_rec {
    bool done;
    int err;
    bool has_channel, has_tenant;
} backlog_rec_t;

static void on_backlog(void *arg, int err, const int64_t *ct, const int64_t *ch, size_t nch, const int64_t *t,
                       size_t nt)
{
    backlog_rec_t *r = arg;
    r->err = err;
    for (size_t i = 0; i < nch; i++)
        r->has_channel |= ct[i] == tenant && ch[i] == channel;
    for (size_t i = 0; i < nt; i++)
        r->has_tenant |= t[i] == tenant;
    r->done = true;
}

TEST(hooks_and_backlog)
{
    char q[256];
    snprintf(q, sizeof q, "UPDATE tenants SET webhook_url = 'http://app/hooks', webhook_secret_sealed = NULL"
                          " WHERE id = %" PRId64, tenant);
    sql(q);
    backlog_rec_t b = {0};
    sb_store_backlog(st, on_backlog, &b);
    wait_for(&b.done);
    ok(b.err == 0 && b.has_tenant, "a tenant with events its webhook has not taken is in the backlog");
    done_t d = {0};
    port.hook_acked(port.ctx, tenant, 3, on_done, &d);
    wait_for(&d.done);
    snprintf(q, sizeof q, "SELECT webhook_cursor FROM tenants WHERE id = %" PRId64, tenant);
    is_str(sql(q), "3", "acknowledged up to 3");
    sb_event_rec_t ev = {.cursor = 4, .type = "message.created", .data = sb_str_cstr("{\"x\":1}")};
    done_t d2 = {0};
    port.hook_dead(port.ctx, tenant, &ev, "too old", on_done, &d2);
    wait_for(&d2.done);
    snprintf(q, sizeof q, "SELECT webhook_cursor || ' ' || (SELECT error FROM webhook_dead_letters WHERE tenant_id ="
                          " %" PRId64 " AND cursor = 4) FROM tenants WHERE id = %" PRId64, tenant, tenant);
    is_str(sql(q), "4 too old", "a dead letter, and the cursor past it");
    backlog_rec_t b2 = {0};
    sb_store_backlog(st, on_backlog, &b2);
    wait_for(&b2.done);
    ok(b2.err == 0 && !b2.has_tenant, "caught up: out of the backlog");

    /* a message queued again (the console's replay) puts the channel in the backlog */
    snprintf(q, sizeof q, "INSERT INTO outbox (tenant_id, channel_id, message_id) SELECT tenant_id, channel_id, id"
                          " FROM messages WHERE tenant_id = %" PRId64 " AND direction = 'out'", tenant);
    sql(q);
    backlog_rec_t b3 = {0};
    sb_store_backlog(st, on_backlog, &b3);
    wait_for(&b3.done);
    ok(b3.has_channel, "a channel with an outbox is in the backlog");
    snprintf(q, sizeof q, "DELETE FROM outbox WHERE tenant_id = %" PRId64, tenant);
    sql(q);
}

int main(void)
{
    const char *url = getenv("SB_TEST_DATABASE_URL");
    if (!url)
        url = "host=127.0.0.1 port=5440 dbname=switchboard_test user=switchboard";
    uv_loop_init(&loop);
    pg = sb_pg_create(&loop, url, "test_store");
    ingest = sb_pg_create(&loop, url, "test_store ingest");
    static const unsigned char key[SB_CRYPTO_KEY_LEN] = {1};
    st = sb_store_create(pg, ingest, key, 0);
    sb_store_port(st, &port);
    RUN(setup);
    RUN(message_ids);
    RUN(conversations);
    RUN(inbound_write);
    RUN(outbox);
    RUN(scheduled);
    RUN(receipts_and_sweep);
    RUN(hooks_and_backlog);
    sb_pg_close(pg);
    sb_pg_close(ingest);
    uv_run(&loop, UV_RUN_DEFAULT);
    sb_store_destroy(st);
    uv_loop_close(&loop);
    return tap_done();
}
