/* The front doors' statements; see queries.h.
 *
 * Each is a static string, sent on the store's main connection (sb_store_pg) with its parameters as text, and read
 * back by a small function that turns the rows into the C values of its callback. Only the ones on a hot path (an
 * API key on every REST request, a channel on every Twilio webhook) are prepared: the admin and console statements
 * are rare, and a connection has room for 64 prepared statements, which the actors' hot statements need more.
 *
 * Writes that span two tables are one statement with a CTE: the connection's group commit runs each statement as a
 * unit of work of its own (adapters/pg.h), never two of them as one. */
#include "adapters/store/queries.h"

#include "adapters/pg.h"
#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct query {
    sb_store_t *st;
    void *cb, *arg;
    char p[4][24]; /* numeric parameters as text; the second statement of a chain reads its own from here */
} query_t;

static void i64_text(char out[24], int64_t v)
{
    snprintf(out, 24, "%" PRId64, v);
}

static int64_t col_i64(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? 0 : strtoll(PQgetvalue(res, r, c), NULL, 10);
}

/* The code a front door answers by: the two constraint violations it tells apart become codes of their own, so that
 * no SQLSTATE has to leave the store. Any other refusal is logged with its SQLSTATE (never the message: it may quote
 * the values, and those may be a tenant's data). */
static int refusal(int err, const PGresult *res)
{
    if (err != SB_EINVAL)
        return err;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state && strcmp(state, "23505") == 0)
        return SB_EEXIST;
    if (state && strcmp(state, "23503") == 0)
        return SB_ENOENT;
    sb_log_error("store: a statement was refused: SQLSTATE %s", state ? state : "?");
    return SB_EINVAL;
}

/* err for a statement that must answer exactly one row: SB_ENOENT when it answered none (or, oddly, more). */
static int one_row(int err, const PGresult *res)
{
    err = refusal(err, res);
    return !err && PQntuples(res) != 1 ? SB_ENOENT : err;
}

/* Sends sql with params on st's main connection; read(q, ...) gets the outcome, and frees q. With q given, it is
 * used (a chain's next statement); otherwise one is made for cb and arg. */
static int run(sb_store_t *st, query_t *q, const char *sql, int nparams, const char *const *params, int flags,
               sb_pg_query_cb read, void *cb, void *arg)
{
    if (!st)
        return SB_EUNAVAIL;
    if (!q) {
        q = sb_calloc(1, sizeof *q);
        *q = (query_t){.st = st, .cb = cb, .arg = arg};
    }
    int rc = sb_pg_query(sb_store_pg(st), sql, nparams, params, flags, read, q);
    if (rc < 0)
        free(q);
    return rc;
}

/* run() for a statement whose one parameter is an id. */
static int run_id(sb_store_t *st, const char *sql, int64_t id, int flags, sb_pg_query_cb read, void *cb, void *arg)
{
    char t[24];
    i64_text(t, id);
    const char *p[1] = {t};
    return run(st, NULL, sql, 1, p, flags, read, cb, arg);
}

/* ---- generic readers -------------------------------------------------------------------------------------------- */

static void done_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    ((sb_query_done_cb)q->cb)(q->arg, refusal(err, res));
    free(q);
}

static void one_done_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    ((sb_query_done_cb)q->cb)(q->arg, one_row(err, res));
    free(q);
}

/* The rows as they are: names from the result, integer columns by type (int8, int4). */
static void rows_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    err = refusal(err, res);
    if (err) {
        ((sb_query_rows_cb)q->cb)(q->arg, err, detail, NULL);
        free(q);
        return;
    }
    size_t nr = (size_t)PQntuples(res), nc = (size_t)PQnfields(res);
    const char **names = sb_calloc(nc + 1, sizeof *names), **cells = sb_calloc(nr * nc + 1, sizeof *cells);
    bool *integer = sb_calloc(nc + 1, sizeof *integer);
    for (size_t c = 0; c < nc; c++) {
        names[c] = PQfname(res, (int)c);
        integer[c] = PQftype(res, (int)c) == 20 || PQftype(res, (int)c) == 23;
    }
    for (size_t r = 0; r < nr; r++)
        for (size_t c = 0; c < nc; c++)
            cells[r * nc + c] = PQgetisnull(res, (int)r, (int)c) ? NULL : PQgetvalue(res, (int)r, (int)c);
    sb_rows_t rows = {.nrows = nr, .ncols = nc, .names = names, .integer = integer, .cells = cells};
    ((sb_query_rows_cb)q->cb)(q->arg, 0, detail, &rows);
    free(names);
    free(cells);
    free(integer);
    free(q);
}

/* One column of JSON text a row. */
static void json_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = refusal(err, res);
    size_t n = err ? 0 : (size_t)PQntuples(res);
    sb_str_t *docs = sb_malloc((n ? n : 1) * sizeof *docs);
    for (size_t i = 0; i < n; i++)
        docs[i] = sb_str(PQgetvalue(res, (int)i, 0), (size_t)PQgetlength(res, (int)i, 0));
    ((sb_query_json_cb)q->cb)(q->arg, err, docs, n);
    free(docs);
    free(q);
}

/* ---- the admin API ---------------------------------------------------------------------------------------------- */

typedef void (*tenant_cb_t)(void *, int, int64_t, const char *);

static void tenant_created(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    ((tenant_cb_t)q->cb)(q->arg, err, err ? 0 : col_i64(res, 0, 0), err ? NULL : PQgetvalue(res, 0, 1));
    free(q);
}

static const char tenant_create_sql[] = "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name";

int sb_query_tenant_create(sb_store_t *st, const char *name, tenant_cb_t cb, void *arg)
{
    const char *p[1] = {name};
    return run(st, NULL, tenant_create_sql, 1, p, 0, tenant_created, (void *)cb, arg);
}

static const char tenant_list_sql[] =
    "SELECT id::text AS id, name, created_at::text AS created_at FROM tenants ORDER BY id DESC LIMIT 1000";

int sb_query_tenant_list(sb_store_t *st, sb_query_rows_cb cb, void *arg)
{
    return run(st, NULL, tenant_list_sql, 0, NULL, 0, rows_read, (void *)cb, arg);
}

/* Delivery starts after the tenant's newest event: the ones before were never meant for this URL. */
static const char webhook_set_sql[] =
    "UPDATE tenants t SET webhook_url = $2, webhook_secret_sealed = $3, webhook_cursor = coalesce((SELECT"
    " last_cursor FROM event_pages p WHERE p.tenant_id = t.id ORDER BY last_cursor DESC LIMIT 1), 0)"
    " WHERE id = $1 RETURNING id";

int sb_query_tenant_webhook_set(sb_store_t *st, int64_t tenant, const char *url, const char *secret_sealed,
                                sb_query_done_cb cb, void *arg)
{
    char t[24];
    i64_text(t, tenant);
    const char *p[3] = {t, url, secret_sealed};
    return run(st, NULL, webhook_set_sql, 3, p, 0, one_done_read, (void *)cb, arg);
}

typedef void (*key_cb_t)(void *, int, int64_t);

static void id_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    ((key_cb_t)q->cb)(q->arg, err, err ? 0 : col_i64(res, 0, 0));
    free(q);
}

static const char key_create_sql[] =
    "WITH k AS (INSERT INTO api_keys (tenant_id, prefix, key_hash, role) VALUES ($1, $2, $3, $4) "
    "RETURNING tenant_id, id, key_hash) "
    "INSERT INTO api_key_routes (key_hash, tenant_id, key_id) "
    "SELECT key_hash, tenant_id, id FROM k RETURNING key_id::text";

int sb_query_api_key_create(sb_store_t *st, int64_t tenant, const char *prefix, const char *key_hash, const char *role,
                            key_cb_t cb, void *arg)
{
    char t[24];
    i64_text(t, tenant);
    const char *p[4] = {t, prefix, key_hash, role};
    return run(st, NULL, key_create_sql, 4, p, 0, id_read, (void *)cb, arg);
}

/* "Live": neither revoked nor past the end a rotation gave it. */
#define KEY_LIVE "k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())"

static const char key_list_sql[] =
    "SELECT k.id::text AS id, k.prefix, k.role, k.created_at::text AS created_at, k.last_used_at::text AS "
    "last_used_at, k.expires_at::text AS expires_at, k.replaced_by::text AS replaced_by FROM api_keys k "
    "WHERE k.tenant_id = $1 AND " KEY_LIVE " ORDER BY k.id LIMIT 1000";

int sb_query_api_key_list(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg)
{
    return run_id(st, key_list_sql, tenant, 0, rows_read, (void *)cb, arg);
}

static const char key_revoke_sql[] =
    "UPDATE api_keys k SET revoked_at = now() WHERE k.tenant_id = $1 AND k.id = $2 AND " KEY_LIVE " RETURNING k.id";

int sb_query_api_key_revoke(sb_store_t *st, int64_t tenant, int64_t key_id, sb_query_done_cb cb, void *arg)
{
    char t[24], k[24];
    i64_text(t, tenant);
    i64_text(k, key_id);
    const char *p[2] = {t, k};
    return run(st, NULL, key_revoke_sql, 2, p, 0, one_done_read, (void *)cb, arg);
}

typedef void (*rotate_cb_t)(void *, int, int64_t, const char *, int64_t);

static void key_rotated(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    ((rotate_cb_t)q->cb)(q->arg, err, err ? 0 : col_i64(res, 0, 0), err ? NULL : PQgetvalue(res, 0, 1),
                         err ? 0 : col_i64(res, 0, 2));
    free(q);
}

/* One statement: the new key's id is drawn first, so the old row can name it in the same UPDATE that ends it. */
static const char key_rotate_sql[] =
    "WITH n AS (SELECT nextval(pg_get_serial_sequence('api_keys', 'id')) AS id), "
    "old AS (UPDATE api_keys k SET replaced_by = n.id, expires_at = least(coalesce(k.expires_at, 'infinity'), "
    "now() + make_interval(secs => $3::int)) FROM n WHERE k.tenant_id = $1 AND k.id = $2 AND " KEY_LIVE
    " RETURNING k.tenant_id, k.role, k.expires_at), "
    "k AS (INSERT INTO api_keys (tenant_id, id, prefix, key_hash, role) OVERRIDING SYSTEM VALUE "
    "SELECT old.tenant_id, n.id, $4, $5, old.role FROM old, n RETURNING tenant_id, id, key_hash, role), "
    "r AS (INSERT INTO api_key_routes (key_hash, tenant_id, key_id) SELECT key_hash, tenant_id, id FROM k) "
    "SELECT k.id::text, k.role, ceil(extract(epoch FROM old.expires_at))::bigint FROM k, old";

int sb_query_api_key_rotate(sb_store_t *st, int64_t tenant, int64_t key_id, int64_t overlap_s, const char *prefix,
                            const char *key_hash, rotate_cb_t cb, void *arg)
{
    char t[24], k[24], o[24];
    i64_text(t, tenant);
    i64_text(k, key_id);
    i64_text(o, overlap_s);
    const char *p[5] = {t, k, o, prefix, key_hash};
    return run(st, NULL, key_rotate_sql, 5, p, 0, key_rotated, (void *)cb, arg);
}

static const char keys_used_sql[] =
    "UPDATE api_keys k SET last_used_at = to_timestamp(v.t) FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) "
    "AS v(tenant_id, id, t) WHERE k.tenant_id = v.tenant_id AND k.id = v.id "
    "AND (k.last_used_at IS NULL OR k.last_used_at < to_timestamp(v.t))";

/* Appends "{a,b,c}", a PostgreSQL array literal of integers. */
static void int_array(sb_buf_t *b, size_t n, const int64_t *v)
{
    sb_buf_puts(b, "{");
    for (size_t i = 0; i < n; i++)
        sb_buf_printf(b, "%s%" PRId64, i ? "," : "", v[i]);
    sb_buf_puts(b, "}");
}

int sb_query_api_keys_used(sb_store_t *st, size_t n, const int64_t *tenants, const int64_t *keys, const int64_t *at,
                           sb_query_done_cb cb, void *arg)
{
    sb_buf_t a[3];
    const int64_t *cols[3] = {tenants, keys, at};
    for (int i = 0; i < 3; i++) {
        sb_buf_init(&a[i]);
        int_array(&a[i], n, cols[i]);
    }
    const char *p[3] = {sb_buf_cstr(&a[0]), sb_buf_cstr(&a[1]), sb_buf_cstr(&a[2])};
    int rc = run(st, NULL, keys_used_sql, 3, p, 0, done_read, (void *)cb, arg);
    for (int i = 0; i < 3; i++)
        sb_buf_cleanup(&a[i]);
    return rc;
}

typedef void (*channel_created_cb_t)(void *, int, int64_t, int64_t, const char *);

static void channel_created(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    ((channel_created_cb_t)q->cb)(q->arg, err, err ? 0 : col_i64(res, 0, 0), err ? 0 : col_i64(res, 0, 1),
                                  err ? NULL : PQgetvalue(res, 0, 2));
    free(q);
}

static const char channel_create_sql[] =
    "WITH c AS (INSERT INTO channels (tenant_id, type, address, credentials_sealed, settings, "
    "meta_app_id) VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING tenant_id, id, type, address) "
    "INSERT INTO channel_routes (channel_id, tenant_id, type, address) "
    "SELECT id, tenant_id, type, address FROM c "
    "RETURNING channel_id::text, tenant_id::text, address";

int sb_query_channel_create(sb_store_t *st, const sb_query_channel_new_t *c, channel_created_cb_t cb, void *arg)
{
    char t[24];
    i64_text(t, c->tenant);
    const char *p[6] = {t, sb_channel_type_name(c->type), c->address, c->credentials_sealed, c->settings_json,
                        c->meta_app_id};
    return run(st, NULL, channel_create_sql, 6, p, 0, channel_created, (void *)cb, arg);
}

static const char channel_list_sql[] =
    "SELECT id::text AS id, type, address, settings::text AS settings, meta_app_id, "
    "created_at::text AS created_at FROM channels WHERE tenant_id = $1 ORDER BY id LIMIT 1000";

int sb_query_channel_list(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg)
{
    return run_id(st, channel_list_sql, tenant, 0, rows_read, (void *)cb, arg);
}

static const char meta_app_create_sql[] =
    "INSERT INTO meta_apps (app_id, app_secret_sealed, verify_token_hash) VALUES ($1, $2, $3)";

int sb_query_meta_app_create(sb_store_t *st, const char *app_id, const char *secret_sealed,
                             const char *verify_token_hash, sb_query_done_cb cb, void *arg)
{
    const char *p[3] = {app_id, secret_sealed, verify_token_hash};
    return run(st, NULL, meta_app_create_sql, 3, p, 0, done_read, (void *)cb, arg);
}

/* ---- the tenant REST API --------------------------------------------------------------------------------------- */

static void key_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    sb_query_key_t k = {0};
    if (!err)
        k = (sb_query_key_t){.tenant = col_i64(res, 0, 0),
                             .id = col_i64(res, 0, 1),
                             .role = PQgetvalue(res, 0, 2),
                             .expires = col_i64(res, 0, 3),
                             .rate_limits = PQgetvalue(res, 0, 4)};
    ((sb_query_key_cb)q->cb)(q->arg, err, err ? NULL : &k);
    free(q);
}

#define KEY_COLUMNS                                                                                                   \
    "k.tenant_id::text, k.id::text, k.role, coalesce(floor(extract(epoch FROM k.expires_at))::bigint, 0), "          \
    "t.rate_limits::text"

/* Every REST request and inbox hello runs one of these two: prepared. */
static const char api_key_auth_sql[] =
    "SELECT " KEY_COLUMNS " FROM api_key_routes r JOIN api_keys k ON k.tenant_id = r.tenant_id AND k.id = r.key_id "
    "JOIN tenants t ON t.id = k.tenant_id WHERE r.key_hash = $1 AND " KEY_LIVE;

int sb_query_api_key_auth(sb_store_t *st, const char *key_hash, sb_query_key_cb cb, void *arg)
{
    const char *p[1] = {key_hash};
    return run(st, NULL, api_key_auth_sql, 1, p, SB_PG_PREPARED, key_read, (void *)cb, arg);
}

static const char api_key_by_id_sql[] =
    "SELECT " KEY_COLUMNS " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
    "WHERE k.tenant_id = $1 AND k.id = $2 AND " KEY_LIVE;

int sb_query_api_key_by_id(sb_store_t *st, int64_t tenant, int64_t key_id, sb_query_key_cb cb, void *arg)
{
    char t[24], k[24];
    i64_text(t, tenant);
    i64_text(k, key_id);
    const char *p[2] = {t, k};
    return run(st, NULL, api_key_by_id_sql, 2, p, SB_PG_PREPARED, key_read, (void *)cb, arg);
}

/* The JSON the API answers is built by PostgreSQL: its timestamps' and jsonb's text forms are what clients have
 * always been given. */
static const char conversations_sql[] =
    "SELECT json_build_object('id', v.id::text, 'channel_id', v.channel_id::text, 'channel_type', h.type, 'contact',"
    " json_build_object('id', c.id::text, 'address', c.address, 'profile_name', c.profile_name),"
    " 'last_seq', coalesce(l.seq, 0), 'last_message_at', l.created_at, 'last_message', CASE WHEN l.seq IS NOT NULL"
    " THEN json_build_object('id', l.id::text, 'direction', l.direction, 'body', l.body) END,"
    " 'created_at', v.created_at)::text"
    " FROM conversations v JOIN contacts c ON c.tenant_id = v.tenant_id AND c.id = v.contact_id"
    " JOIN channels h ON h.tenant_id = v.tenant_id AND h.id = v.channel_id"
    " LEFT JOIN LATERAL (SELECT m.id, m.seq, m.direction, m.body, m.created_at FROM messages m"
    "                    WHERE m.tenant_id = v.tenant_id"
    "                    AND m.conversation_id = v.id ORDER BY m.seq DESC LIMIT 1) l ON true"
    " WHERE v.tenant_id = $1 AND v.id < $2 ORDER BY v.id DESC LIMIT $3";

int sb_query_conversations(sb_store_t *st, int64_t tenant, int64_t before, int64_t limit, sb_query_json_cb cb,
                           void *arg)
{
    char t[24], b[24], l[24];
    i64_text(t, tenant);
    i64_text(b, before);
    i64_text(l, limit);
    const char *p[3] = {t, b, l};
    return run(st, NULL, conversations_sql, 3, p, 0, json_read, (void *)cb, arg);
}

#define MESSAGE_JSON                                                                                               \
    "json_build_object('id', m.id::text, 'conversation_id', m.conversation_id::text, 'channel_id',"             \
    " m.channel_id::text, 'seq', m.seq, 'direction', m.direction, 'from', m.sender, 'to', m.recipient, 'body',"   \
    " m.body, 'media', m.media, 'provider_id', m.provider_id, 'status', m.status, 'error_code', m.error_code,"     \
    " 'error_message', m.error_message, 'created_at', m.created_at, 'updated_at', m.updated_at,"                 \
    " 'fallback', m.fallback, 'fallback_of', m.fallback_of::text, 'fallback_to', m.fallback_to::text,"         \
    " 'priority', m.priority, 'send_at', m.send_at"

static const char conversation_exists_sql[] = "SELECT 1 FROM conversations WHERE tenant_id = $1 AND id = $2";

static const char conversation_messages_sql[] =
    "SELECT " MESSAGE_JSON ")::text FROM messages m WHERE m.tenant_id = $1"
    " AND m.conversation_id = $2 AND m.seq < $3 ORDER BY m.seq DESC LIMIT $4";

/* The conversation is there (or the answer is SB_ENOENT, not an empty page): its messages next. */
static void conversation_checked(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    sb_query_json_cb cb = (sb_query_json_cb)q->cb;
    void *cb_arg = q->arg;
    err = one_row(err, res);
    if (!err) {
        const char *p[4] = {q->p[0], q->p[1], q->p[2], q->p[3]};
        if (run(q->st, q, conversation_messages_sql, 4, p, 0, json_read, NULL, NULL) == 0)
            return;
        err = SB_EUNAVAIL; /* q is freed */
    } else {
        free(q);
    }
    cb(cb_arg, err, NULL, 0);
}

int sb_query_conversation_messages(sb_store_t *st, int64_t tenant, int64_t conversation, int64_t before,
                                   int64_t limit, sb_query_json_cb cb, void *arg)
{
    if (!st)
        return SB_EUNAVAIL;
    query_t *q = sb_calloc(1, sizeof *q);
    *q = (query_t){.st = st, .cb = (void *)cb, .arg = arg};
    i64_text(q->p[0], tenant);
    i64_text(q->p[1], conversation);
    i64_text(q->p[2], before);
    i64_text(q->p[3], limit);
    const char *p[2] = {q->p[0], q->p[1]};
    return run(st, q, conversation_exists_sql, 2, p, 0, conversation_checked, NULL, NULL);
}

typedef void (*message_cb_t)(void *, int, sb_str_t);

static void message_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    ((message_cb_t)q->cb)(q->arg, err,
                          err ? sb_str(NULL, 0) : sb_str(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0)));
    free(q);
}

/* A send still on its way to its session (a receipt of kind "send": sql/0023) reads as the message it will be, queued
 * or scheduled, with no conversation or seq yet and its acceptance as its history. */
#define INTAKE_STATUS "CASE WHEN (r.event->>'send_at_ms')::bigint > extract(epoch FROM now()) * 1000" \
                      " THEN 'scheduled' ELSE 'queued' END"

static const char message_sql[] =
    "SELECT (" MESSAGE_JSON ", 'history', coalesce((SELECT json_agg(json_build_object('status',"
    " h.status, 'error_code', h.error_code, 'error_message', h.error_message, 'at', h.at)"
    " ORDER BY h.at) FROM message_status_history h WHERE h.tenant_id = m.tenant_id"
    " AND h.message_id = m.id), '[]'::json)))::text"
    " FROM messages m WHERE m.tenant_id = $1 AND m.id = $2"
    " UNION ALL"
    " SELECT json_build_object('id', r.message_id::text, 'conversation_id', NULL, 'channel_id', r.channel_id::text,"
    " 'seq', NULL, 'direction', 'out', 'from', (SELECT c.address FROM channels c WHERE c.tenant_id = r.tenant_id"
    " AND c.id = r.channel_id), 'to', r.event->>'to', 'body', r.event->>'body', 'media',"
    " (r.event->>'media_json')::json, 'provider_id', NULL, 'status', " INTAKE_STATUS ", 'error_code', NULL,"
    " 'error_message', NULL, 'created_at', r.received_at, 'updated_at', r.received_at, 'fallback',"
    " (r.event->>'fallback_json')::json, 'fallback_of', NULL, 'fallback_to', NULL, 'priority',"
    " coalesce(r.event->>'priority', 'normal'), 'send_at', CASE WHEN r.event ? 'send_at_ms' THEN"
    " to_timestamp((r.event->>'send_at_ms')::bigint / 1000.0) END, 'history', json_build_array(json_build_object("
    " 'status', " INTAKE_STATUS ", 'error_code', NULL, 'error_message', NULL, 'at', r.received_at)))::text"
    " FROM webhook_receipts r WHERE r.tenant_id = $1 AND r.message_id = $2 AND r.processed_at IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.tenant_id = $1 AND m.id = $2)";

int sb_query_message(sb_store_t *st, int64_t tenant, int64_t id, message_cb_t cb, void *arg)
{
    char t[24], m[24];
    i64_text(t, tenant);
    i64_text(m, id);
    const char *p[2] = {t, m};
    return run(st, NULL, message_sql, 2, p, 0, message_read, (void *)cb, arg);
}

typedef void (*message_ref_cb_t)(void *, int, const sb_query_message_ref_t *);

static void message_ref_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    sb_query_message_ref_t r = {0};
    if (!err)
        r = (sb_query_message_ref_t){.channel = col_i64(res, 0, 0),
                                     .out = strcmp(PQgetvalue(res, 0, 1), "out") == 0,
                                     .status = PQgetvalue(res, 0, 2),
                                     .intake = PQgetvalue(res, 0, 3)[0] == 't'};
    ((message_ref_cb_t)q->cb)(q->arg, err, err ? NULL : &r);
    free(q);
}

static const char message_ref_sql[] =
    "SELECT channel_id, direction, status, false FROM messages WHERE tenant_id = $1 AND id = $2"
    " UNION ALL"
    " SELECT r.channel_id, 'out', " INTAKE_STATUS ", true FROM webhook_receipts r"
    " WHERE r.tenant_id = $1 AND r.message_id = $2 AND r.processed_at IS NULL"
    " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.tenant_id = $1 AND m.id = $2)";

int sb_query_message_ref(sb_store_t *st, int64_t tenant, int64_t id, message_ref_cb_t cb, void *arg)
{
    char t[24], m[24];
    i64_text(t, tenant);
    i64_text(m, id);
    const char *p[2] = {t, m};
    return run(st, NULL, message_ref_sql, 2, p, 0, message_ref_read, (void *)cb, arg);
}

/* ---- sends a node of a cluster takes for its channel's session --------------------------------------------------- */

typedef void (*last_inbound_cb_t)(void *, int, int64_t);

static void last_inbound_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = refusal(err, res);
    ((last_inbound_cb_t)q->cb)(q->arg, err, !err && PQntuples(res) == 1 ? col_i64(res, 0, 0) : 0);
    free(q);
}

/* As the session learns it with its conversation (convs_sql, adapters/store/store.c): messages_last_inbound. */
static const char last_inbound_sql[] =
    "SELECT (extract(epoch FROM m.created_at) * 1000)::bigint FROM contacts k"
    " JOIN conversations v ON v.tenant_id = k.tenant_id AND v.channel_id = k.channel_id AND v.contact_id = k.id"
    " JOIN LATERAL (SELECT m.created_at FROM messages m WHERE m.tenant_id = v.tenant_id AND m.conversation_id = v.id"
    "               AND m.direction = 'in' ORDER BY m.seq DESC LIMIT 1) m ON true"
    " WHERE k.tenant_id = $1 AND k.channel_id = $2 AND k.address = $3";

int sb_query_last_inbound(sb_store_t *st, int64_t tenant, int64_t channel, const char *to, last_inbound_cb_t cb,
                          void *arg)
{
    char t[24], c[24];
    i64_text(t, tenant);
    i64_text(c, channel);
    const char *p[3] = {t, c, to};
    return run(st, NULL, last_inbound_sql, 3, p, 0, last_inbound_read, (void *)cb, arg);
}

/* ---- calls ------------------------------------------------------------------------------------------------------ */

#define CALL_JSON                                                                                                    \
    "json_build_object('id', k.id::text, 'channel_id', k.channel_id::text, 'call_sid', k.call_sid, 'direction',"    \
    " k.direction, 'from', k.from_addr, 'to', k.to_addr, 'status', k.status, 'voice_mode', k.voice_mode,"           \
    " 'rejected_cap', k.rejected_cap, 'duration_s', k.duration_s, 'ended_by', k.ended_by, 'end_reason',"           \
    " k.end_reason, 'created_at', k.created_at, 'answered_at', k.answered_at, 'ended_at', k.ended_at)::text"

static const char calls_sql[] =
    "SELECT " CALL_JSON " FROM calls k WHERE k.tenant_id = $1 AND k.id < $2 ORDER BY k.id DESC LIMIT $3";

int sb_query_calls(sb_store_t *st, int64_t tenant, int64_t before, int64_t limit, sb_query_json_cb cb, void *arg)
{
    char t[24], b[24], l[24];
    i64_text(t, tenant);
    i64_text(b, before);
    i64_text(l, limit);
    const char *p[3] = {t, b, l};
    return run(st, NULL, calls_sql, 3, p, 0, json_read, (void *)cb, arg);
}

static const char call_sql[] = "SELECT " CALL_JSON " FROM calls k WHERE k.tenant_id = $1 AND k.id = $2";

int sb_query_call(sb_store_t *st, int64_t tenant, int64_t id, message_cb_t cb, void *arg)
{
    char t[24], m[24];
    i64_text(t, tenant);
    i64_text(m, id);
    const char *p[2] = {t, m};
    return run(st, NULL, call_sql, 2, p, 0, message_read, (void *)cb, arg);
}

static const char calls_live_sql[] =
    "SELECT id::text AS id, tenant_id::text AS tenant, channel_id::text AS channel, direction, status,"
    " coalesce(from_addr, '') AS \"from\", coalesce(to_addr, '') AS \"to\","
    " (extract(epoch FROM now() - created_at))::bigint::text AS age_s"
    " FROM calls WHERE ended_at IS NULL AND ($1::bigint = 0 OR tenant_id = $1::bigint) ORDER BY id LIMIT 1000";

int sb_query_calls_live(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg)
{
    return run_id(st, calls_live_sql, tenant, 0, rows_read, (void *)cb, arg);
}

typedef void (*call_ref_cb_t)(void *, int, const sb_query_call_ref_t *);

static void call_ref_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    sb_query_call_ref_t r = {0};
    if (!err)
        r = (sb_query_call_ref_t){.tenant = col_i64(res, 0, 0),
                                  .channel = col_i64(res, 0, 1),
                                  .call_key = PQgetvalue(res, 0, 2),
                                  .status = PQgetvalue(res, 0, 3)};
    ((call_ref_cb_t)q->cb)(q->arg, err, err ? NULL : &r);
    free(q);
}

static const char call_ref_sql[] = "SELECT tenant_id, channel_id, call_key, status FROM calls WHERE id = $1";

int sb_query_call_ref(sb_store_t *st, int64_t id, call_ref_cb_t cb, void *arg)
{
    return run_id(st, call_ref_sql, id, 0, call_ref_read, (void *)cb, arg);
}

typedef void (*patched_cb_t)(void *, int, const char *, int64_t);

static void tenant_patched(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    ((patched_cb_t)q->cb)(q->arg, err, err ? NULL : PQgetvalue(res, 0, 0), err ? 0 : col_i64(res, 0, 1));
    free(q);
}

/* A NULL parameter keeps the column as it is. */
static const char tenant_patch_sql[] =
    "UPDATE tenants SET max_concurrent_calls = CASE WHEN $2::int IS NULL THEN max_concurrent_calls "
    "ELSE nullif($2::int, -1) END, rate_limits = CASE WHEN $3::jsonb IS NULL THEN rate_limits "
    "WHEN $3::jsonb = 'null'::jsonb THEN '{}'::jsonb ELSE jsonb_strip_nulls(rate_limits || $3::jsonb) END, "
    "max_concurrent_sends = CASE WHEN $4::int IS NULL THEN max_concurrent_sends ELSE nullif($4::int, -1) END "
    "WHERE id = $1 RETURNING rate_limits::text, coalesce(max_concurrent_sends, 0)";

int sb_query_tenant_patch(sb_store_t *st, int64_t tenant, bool set_max, int64_t max, const char *limits,
                          bool set_sends, int64_t sends, patched_cb_t cb, void *arg)
{
    char t[24], m[24], n[24];
    i64_text(t, tenant);
    i64_text(m, max);
    i64_text(n, sends);
    const char *p[4] = {t, set_max ? m : NULL, limits, set_sends ? n : NULL};
    return run(st, NULL, tenant_patch_sql, 4, p, 0, tenant_patched, (void *)cb, arg);
}

typedef void (*settings_cb_t)(void *, int, const sb_query_channel_settings_t *);

static void channel_settings_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    sb_query_channel_settings_t cs = {0};
    if (!err)
        cs = (sb_query_channel_settings_t){.channel = col_i64(res, 0, 0),
                                           .type = sb_channel_type_parse(PQgetvalue(res, 0, 1)),
                                           .settings_json = PQgetvalue(res, 0, 2),
                                           .tenant_max_sends = col_i64(res, 0, 3)};
    ((settings_cb_t)q->cb)(q->arg, err, err ? NULL : &cs);
    free(q);
}

/* $3: the members to merge (each null one removed). */
static const char channel_settings_patch_sql[] =
    "UPDATE channels c SET settings = (c.settings || $3::jsonb) - coalesce((SELECT array_agg(e.k) FROM "
    "jsonb_each($3::jsonb) e(k, v) WHERE e.v = 'null'::jsonb), '{}'::text[]) "
    "WHERE c.tenant_id = $1 AND c.id = $2 RETURNING c.id, c.type, c.settings::text, "
    "coalesce((SELECT t.max_concurrent_sends FROM tenants t WHERE t.id = c.tenant_id), 0)";
static const char channel_settings_sql[] =
    "SELECT c.id, c.type, c.settings::text, coalesce(t.max_concurrent_sends, 0) FROM channels c "
    "JOIN tenants t ON t.id = c.tenant_id WHERE c.tenant_id = $1 AND c.id = $2";

int sb_query_channel_settings(sb_store_t *st, int64_t tenant, int64_t channel, const char *patch, settings_cb_t cb,
                              void *arg)
{
    char t[24], c[24];
    i64_text(t, tenant);
    i64_text(c, channel);
    const char *p[3] = {t, c, patch};
    return run(st, NULL, patch ? channel_settings_patch_sql : channel_settings_sql, patch ? 3 : 2, p, 0,
               channel_settings_read, (void *)cb, arg);
}

/* ---- provider webhooks ----------------------------------------------------------------------------------------- */

typedef void (*route_cb_t)(void *, int, const sb_query_channel_t *);

static void route_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    sb_query_channel_t ch = {0};
    if (!err)
        ch = (sb_query_channel_t){.tenant = col_i64(res, 0, 0),
                                  .type = sb_channel_type_parse(PQgetvalue(res, 0, 1)),
                                  .credentials_sealed = PQgetvalue(res, 0, 2),
                                  .address = PQgetvalue(res, 0, 3),
                                  .settings_json = PQgetvalue(res, 0, 4),
                                  .tenant_max_calls = col_i64(res, 0, 5),
                                  .webhook_secret_sealed = PQgetisnull(res, 0, 6) ? NULL : PQgetvalue(res, 0, 6)};
    ((route_cb_t)q->cb)(q->arg, err, err ? NULL : &ch);
    free(q);
}

static const char channel_route_sql[] =
    "SELECT c.tenant_id::text, c.type, coalesce(c.credentials_sealed, ''), c.address, c.settings::text, "
    "coalesce(t.max_concurrent_calls, 0), t.webhook_secret_sealed FROM channel_routes r "
    "JOIN channels c ON c.tenant_id = r.tenant_id AND c.id = r.channel_id "
    "JOIN tenants t ON t.id = c.tenant_id WHERE r.channel_id = $1";

int sb_query_channel_route(sb_store_t *st, int64_t channel, route_cb_t cb, void *arg)
{
    return run_id(st, channel_route_sql, channel, SB_PG_PREPARED, route_read, (void *)cb, arg);
}

typedef void (*app_cb_t)(void *, int, const sb_query_meta_app_t *);

static void app_read(void *arg, int err, const char *detail, const PGresult *res)
{
    query_t *q = arg;
    (void)detail;
    err = one_row(err, res);
    sb_query_meta_app_t app = {0};
    if (!err)
        app = (sb_query_meta_app_t){.secret_sealed = PQgetvalue(res, 0, 0), .verify_token_hash = PQgetvalue(res, 0, 1)};
    ((app_cb_t)q->cb)(q->arg, err, err ? NULL : &app);
    free(q);
}

static const char meta_app_sql[] = "SELECT app_secret_sealed, verify_token_hash FROM meta_apps WHERE app_id = $1";

int sb_query_meta_app(sb_store_t *st, const char *app_id, app_cb_t cb, void *arg)
{
    const char *p[1] = {app_id};
    return run(st, NULL, meta_app_sql, 1, p, 0, app_read, (void *)cb, arg);
}

/* ---- the admin console ---------------------------------------------------------------------------------------- */

/* Column names are the table's headings; integer columns are shown as JSON numbers. */
static const char tenant_overview_sql[] =
    "SELECT t.id, t.name, count(c.id) AS channels, coalesce((SELECT last_cursor FROM event_pages p "
    "WHERE p.tenant_id = t.id ORDER BY last_cursor DESC LIMIT 1), 0) AS cursor, "
    "to_char(t.created_at, 'YYYY-MM-DD HH24:MI:SS') AS created_at "
    "FROM tenants t LEFT JOIN channels c ON c.tenant_id = t.id "
    "GROUP BY t.id ORDER BY t.id DESC LIMIT 1000";

int sb_query_tenant_overview(sb_store_t *st, sb_query_rows_cb cb, void *arg)
{
    return run(st, NULL, tenant_overview_sql, 0, NULL, 0, rows_read, (void *)cb, arg);
}

static const char channel_overview_sql[] =
    "SELECT id, type, address, coalesce(meta_app_id, '') AS meta_app_id, "
    "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') AS created_at "
    "FROM channels WHERE tenant_id = $1 ORDER BY id LIMIT 1000";

int sb_query_channel_overview(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg)
{
    return run_id(st, channel_overview_sql, tenant, 0, rows_read, (void *)cb, arg);
}

static const char dead_messages_sql[] =
    "SELECT id, tenant_id AS tenant, channel_id AS channel, recipient AS \"to\", attempts,"
    " coalesce(error_code, '') AS error, to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS') AS since"
    " FROM messages WHERE direction = 'out' AND status = 'dead' AND ($1 = 0 OR tenant_id = $1)"
    " ORDER BY id DESC LIMIT 1000";

int sb_query_dead_messages(sb_store_t *st, int64_t tenant, sb_query_rows_cb cb, void *arg)
{
    return run_id(st, dead_messages_sql, tenant, 0, rows_read, (void *)cb, arg);
}

/* An unknown one too: the operator decides the provider did not have it. */
static const char message_replay_sql[] =
    "WITH m AS (UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = NULL,"
    "  error_code = NULL, error_message = NULL, updated_at = now()"
    "  WHERE id = $1 AND direction = 'out' AND status IN ('dead', 'failed', 'unknown')"
    "  RETURNING id, tenant_id, channel_id),"
    " h AS (INSERT INTO message_status_history (tenant_id, message_id, status)"
    "  SELECT tenant_id, id, 'queued' FROM m),"
    " o AS (INSERT INTO outbox (tenant_id, channel_id, message_id) SELECT tenant_id, channel_id, id FROM m"
    "  ON CONFLICT DO NOTHING)"
    " SELECT id, tenant_id AS tenant, channel_id AS channel, 'queued' AS status FROM m";

int sb_query_message_replay(sb_store_t *st, int64_t id, sb_query_rows_cb cb, void *arg)
{
    return run_id(st, message_replay_sql, id, 0, rows_read, (void *)cb, arg);
}
