/* The cluster; see cluster.h. */
#include "shards/cluster.h"

#include "adapters/redis.h"
#include "adapters/store/store.h"
#include "gateway/log.h"
#include "proto/err.h"
#include "proto/mem.h"
#include "shards/placement.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 256          /* names the routing table can hold (a name once seen keeps its index) */
#define MOVES_PER_ROUND 32     /* slots a node over its target starts giving up per round */
#define DRAIN_MOVES 256        /* the same while draining */
#define LEAVE_GRACE_MS 3000    /* a leaving slot's actors get this long to finish, then are stopped */
#define LEAVE_GRACE_DRAIN_MS 1000
#define RENEW_MARGIN_MS 300    /* a lease not renewed this long before its end is dropped locally */
#define READ_COUNT "512"
#define READ_BLOCK_MS "1000"
#define READ_GATHER_MS 5       /* after a read that brought fewer than READ_GATHER_BELOW entries, the next waits this */
#define READ_GATHER_BELOW 64
#define STREAM_MAXLEN "100000" /* entries kept in a node's stream, acknowledged ones too (XADD MAXLEN ~): about 33 MB;
                                * a receipt trimmed before it was read is the sweepers' */

enum slot_state { S_FREE, S_BUMPING, S_CATCHUP, S_OWNED, S_LEAVING, S_RELEASE };
enum phase { P_NONE, P_CATCHUP, P_SERVED, P_LEAVING }; /* what other threads see of a slot (g_phase) */

typedef struct slot {
    uint8_t st;
    bool evicting;      /* an eviction request is out on the slot's shard */
    int64_t epoch;
    uint64_t deadline;  /* loop ms: the lease's end minus the margin, as far as this node knows */
    uint64_t leave_at;  /* loop ms it started leaving */
    uint64_t gen;       /* catching up since this generation */
    uint32_t nheld;     /* stream entries of the slot held by the reader */
} slot_t;

/* A stream entry held while its slot catches up (its receipts committed before are applied first). */
typedef struct held {
    struct held *next;
    char id[32];
    int64_t receipt, tenant, channel;
    uint64_t at;        /* loop ms it was read */
    bool transit;       /* one of this node's own receipts on its way (g_transit) */
    size_t len;
    char packed[];
} held_t;

typedef struct cluster {
    sb_shard_t *s;
    const sb_cluster_opts_t *o;
    sb_store_t *store;        /* shard 0's connection, for the fence's epochs */
    sb_redis_t *reader;       /* the stream reader's own connection: XREADGROUP BLOCK holds it */
    uv_timer_t *timer, *read_retry;
    slot_t *slot;
    uint64_t lease_ms, round_ms;
    int64_t floor;
    bool have_floor, asking_floor, in_round, bumping, reading, group_made, pending_done, draining, stopping;
    uint64_t drained_shards;  /* bit per shard index (< 64) drained by the console */
    char stream[96];
    char pending_from[32];    /* at start: this node's unacknowledged entries are read again after this id */
    sb_cluster_node_t nodes[64];
    size_t nnodes;
    held_t *held, **held_tail;
    size_t nheld;
    uint64_t learned_at;      /* loop ms of the last routing table learned */
    struct remote *remote;    /* sends handed to other nodes, waiting for their answer */
    uint64_t next_remote;
    struct unacked *unacked;  /* entries whose receipts were handed to sessions, oldest first: acknowledged once ... */
    size_t nunacked, capunacked; /* ... applied (acks_check) */
    size_t checking;          /* the oldest entries whose receipts are being looked up (0: none) */
} cluster_t;

/* A stream entry whose receipt was handed to its session: acknowledged once the receipt is processed. */
typedef struct unacked {
    char id[32];
    int64_t tenant, receipt;
    uint64_t at;        /* loop ms it was handed over */
} unacked_t;

#define UNACKED_MAX 100000  /* entries waiting for their receipts to be applied; beyond, acknowledged when handed */
#define ACK_CHECK_MAX 4096  /* receipts looked up per check (one a round) */
#define ACK_GIVE_UP_MS 60000 /* an entry whose receipt is still unprocessed this long is acknowledged: the sweeper's */

/* A cancel this node handed to the tenant's owner, waiting for its answer (on shard 0). */
typedef struct remote {
    struct remote *next;
    uint64_t id, deadline;
    sb_session_cancel_t *cancel;
} remote_t;

#define REMOTE_TIMEOUT_MS 10000

#define MAX_HELD 100000 /* entries held for slots in transit; beyond, they wait in the stream (not acknowledged) */
#define HOLD_MS 10000   /* an entry held this long is left to the sweepers */

static void read_next(cluster_t *c);
static void read_again(uv_timer_t *t);
static void held_review(cluster_t *c);
static void acks_check(cluster_t *c);

static const sb_cluster_opts_t *g_o;
static _Atomic int64_t *g_epoch;       /* per slot: this node's epoch while it owns it (any phase); 0 not */
static _Atomic uint8_t *g_phase;       /* per slot: enum phase */
static _Atomic uint32_t *g_transit;    /* per slot: receipts of this node's front doors in its own stream, unread */
static _Atomic uint16_t *g_owner;      /* per slot: index + 1 into g_names of its owner; 0 unknown */
static _Atomic int64_t *g_owner_epoch; /* per slot: its owner's epoch */
static char g_names[MAX_NODES][72];
static char g_addrs[MAX_NODES][272];   /* a name's address, written once when first learned (before g_addr_set) */
static _Atomic uint8_t g_addr_set[MAX_NODES];
static _Atomic unsigned g_nnames;
static _Atomic uint64_t g_generation;
static cluster_t *g_c;                 /* shard 0's, for the console (shard 0's thread only) */
static void (*g_served_hook)(sb_shard_t *s);

void sb_cluster_set_served_hook(void (*fn)(sb_shard_t *s))
{
    g_served_hook = fn;
}


void sb_cluster_init(const sb_cluster_opts_t *opts)
{
    g_o = opts;
    if (!opts->enabled)
        return;
    g_epoch = sb_calloc(opts->slots, sizeof *g_epoch);
    g_phase = sb_calloc(opts->slots, sizeof *g_phase);
    g_transit = sb_calloc(opts->slots, sizeof *g_transit);
    g_owner = sb_calloc(opts->slots, sizeof *g_owner);
    g_owner_epoch = sb_calloc(opts->slots, sizeof *g_owner_epoch);
}

bool sb_cluster_enabled(void)
{
    return g_o && g_o->enabled;
}

uint32_t sb_cluster_slot(int64_t tenant)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRId64, tenant);
    return sb_place_slot(sb_str(t, (size_t)n), g_o && g_o->slots ? g_o->slots : 1);
}

bool sb_cluster_owns(int64_t tenant)
{
    if (!sb_cluster_enabled())
        return true;
    uint8_t p = atomic_load_explicit(&g_phase[sb_cluster_slot(tenant)], memory_order_acquire);
    return p == P_SERVED || p == P_CATCHUP;
}

int sb_cluster_fence(void *ctx, int64_t tenant, sb_pg_fence_t *out)
{
    (void)ctx;
    if (!sb_cluster_enabled())
        return 0;
    uint32_t slot = sb_cluster_slot(tenant);
    int64_t e = atomic_load_explicit(&g_epoch[slot], memory_order_acquire);
    if (!e)
        return SB_EFENCED;
    *out = (sb_pg_fence_t){.slot = (int32_t)slot, .epoch = e};
    return 1;
}

uint64_t sb_cluster_generation(void)
{
    return atomic_load_explicit(&g_generation, memory_order_acquire);
}

/* The index + 1 of node name id in the names table, adding it (shard 0 only). 0 when the table is full. */
static uint16_t name_index(const char *id, size_t len)
{
    unsigned n = atomic_load_explicit(&g_nnames, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++)
        if (strlen(g_names[i]) == len && !memcmp(g_names[i], id, len))
            return (uint16_t)(i + 1);
    if (n == MAX_NODES || len >= sizeof g_names[0])
        return 0;
    memcpy(g_names[n], id, len);
    g_names[n][len] = '\0';
    atomic_store_explicit(&g_nnames, n + 1, memory_order_release);
    return (uint16_t)(n + 1);
}

/* ---- evictions: a slot's actors stopped on its shard ------------------------------------------------------------ */

typedef struct evict {
    uint32_t nslots;
    bool force;
    size_t left;
    uint8_t *set;        /* a byte per slot: 1 = evict */
} evict_t;

static bool evict_match(void *arg, int64_t tenant)
{
    const evict_t *e = arg;
    return e->set[sb_cluster_slot(tenant)] != 0;
}

static void evicted_home(sb_shard_t *s, void *arg);

static void evict_on_shard(sb_shard_t *s, void *arg)
{
    evict_t *e = arg;
    e->left = sb_rt_evict(sb_shard_rt(s), evict_match, e, e->force);
    if (sb_shard_exec(0, evicted_home, e) < 0) {
        free(e->set);
        free(e);
    }
}

/* Back on shard 0: the slots whose actors are all gone may be released. */
static void evicted_home(sb_shard_t *s, void *arg)
{
    evict_t *e = arg;
    cluster_t *c = g_c; /* NULL once the module stopped */
    (void)s;
    for (uint32_t i = 0; c && i < e->nslots; i++) {
        if (!e->set[i] || c->slot[i].st != S_LEAVING)
            continue;
        c->slot[i].evicting = false;
        if (!e->left)
            c->slot[i].st = S_RELEASE;
    }
    free(e->set);
    free(e);
}

/* Asks each shard to stop the actors of the slots marked in set (taken over). */
static void evict_slots(cluster_t *c, const uint8_t *set, bool force)
{
    unsigned shards = sb_shards_count();
    for (unsigned sh = 0; sh < shards; sh++) {
        evict_t *e = sb_calloc(1, sizeof *e);
        e->nslots = c->o->slots;
        e->force = force;
        e->set = sb_calloc(c->o->slots, 1);
        bool any = false;
        for (uint32_t i = 0; i < c->o->slots; i++)
            if (set[i] && sb_place_shard(i, shards) == sh)
                e->set[i] = 1, any = true;
        if (!any) {
            free(e->set);
            free(e);
        } else if (sb_shard_exec(sh, evict_on_shard, e) < 0) { /* that shard is gone, and its actors with it */
            e->left = 0;
            evicted_home(c->s, e);
        }
    }
}

/* Slots this node no longer holds (lost in Redis, its lease ran out here, refused by the database): not served any
 * more, their actors stopped at once. */
static void drop_slots(cluster_t *c, const uint32_t *slots, size_t n, const char *why)
{
    if (!n)
        return;
    uint8_t *set = sb_calloc(c->o->slots, 1);
    for (size_t i = 0; i < n; i++) {
        slot_t *sl = &c->slot[slots[i]];
        atomic_store_explicit(&g_phase[slots[i]], P_NONE, memory_order_release);
        atomic_store_explicit(&g_epoch[slots[i]], 0, memory_order_release);
        sl->st = S_FREE;
        sl->evicting = false;
        set[slots[i]] = 1;
    }
    sb_log_warn("cluster: %zu slot(s) dropped (%s), their actors stopped", n, why);
    evict_slots(c, set, true);
    free(set);
}

/* ---- taking slots: their epochs raised in the database first ---------------------------------------------------- */

typedef struct bump {
    cluster_t *c;
    size_t n;
    uint32_t *slots;
    int64_t *epochs;
} bump_t;

static void bumped(void *arg, int err, const int32_t *stale, size_t nstale)
{
    bump_t *b = arg;
    cluster_t *c = b->c;
    c->bumping = false;
    if (c->stopping) {
        goto out;
    }
    if (err) { /* not served: the slots go back to Redis with the next round, and are taken again later */
        sb_log_warn("cluster: %zu slot(s) taken but their epochs not stored (%s): given back", b->n, sb_strerror(err));
        for (size_t i = 0; i < b->n; i++)
            if (c->slot[b->slots[i]].st == S_BUMPING && c->slot[b->slots[i]].epoch == b->epochs[i])
                c->slot[b->slots[i]].st = S_RELEASE;
        goto out;
    }
    size_t served = 0;
    uint8_t *gained = sb_calloc(c->o->slots, 1);
    for (size_t i = 0; i < b->n; i++) {
        slot_t *sl = &c->slot[b->slots[i]];
        bool is_stale = false;
        for (size_t k = 0; k < nstale; k++)
            is_stale |= (uint32_t)stale[k] == b->slots[i];
        if (sl->st != S_BUMPING || sl->epoch != b->epochs[i])
            continue; /* lost meanwhile */
        if (is_stale) { /* the database knows a newer epoch: Redis went back in time; start above it */
            sl->st = S_RELEASE;
            c->have_floor = false;
            continue;
        }
        sl->st = S_CATCHUP;
        gained[b->slots[i]] = 1;
        served++;
    }
    /* Actors of these slots activated here while another node owned them hold stale state: stopped first. The
     * shards' queues are FIFO, so whatever is sent once the slots are served arrives after the eviction. */
    if (served)
        evict_slots(c, gained, true);
    uint64_t gen = atomic_load_explicit(&g_generation, memory_order_acquire) + 1;
    for (size_t i = 0; i < b->n; i++)
        if (gained[b->slots[i]]) {
            c->slot[b->slots[i]].gen = gen;
            atomic_store_explicit(&g_epoch[b->slots[i]], c->slot[b->slots[i]].epoch, memory_order_release);
            atomic_store_explicit(&g_phase[b->slots[i]], P_CATCHUP, memory_order_release);
        }
    free(gained);
    if (nstale)
        sb_log_warn("cluster: %zu slot(s) had a newer epoch in the database: given back, taken again later", nstale);
    if (served) {
        atomic_fetch_add_explicit(&g_generation, 1, memory_order_acq_rel);
        sb_log_info("cluster: node %s takes %zu more slot(s); served once their receipts are caught up", c->o->node_id,
                    served);
        if (g_served_hook)
            g_served_hook(c->s);
    }
out:
    free(b->slots);
    free(b->epochs);
    free(b);
}

static void bump_taken(cluster_t *c)
{
    if (c->bumping)
        return;
    bump_t *b = sb_calloc(1, sizeof *b);
    b->c = c;
    b->slots = sb_malloc(c->o->slots * sizeof *b->slots);
    b->epochs = sb_malloc(c->o->slots * sizeof *b->epochs);
    for (uint32_t i = 0; i < c->o->slots; i++)
        if (c->slot[i].st == S_BUMPING) {
            b->slots[b->n] = i;
            b->epochs[b->n++] = c->slot[i].epoch;
        }
    if (!b->n || sb_store_fence_bump(c->store, b->slots, b->epochs, b->n, bumped, b) < 0) {
        free(b->slots);
        free(b->epochs);
        free(b);
        return;
    }
    c->bumping = true;
}

static void floor_read(void *arg, int err, int64_t floor)
{
    cluster_t *c = arg;
    c->asking_floor = false;
    if (err)
        return;
    c->floor = floor;
    c->have_floor = true;
}

/* ---- the round: membership, leases, moves, in one script ------------------------------------------------------- */

/* KEYS: slots, nodes, drain requests. ARGV: me, address, shards, lease ms, node ttl ms, floor, draining, held
 * ("slot:epoch,..."), releases (same), slots, shard count, drained shards ("n,..."). Answers {taken "slot:epoch,...",
 * lost "slot,...", count, target, owners "node:epoch," per slot, members "id|address|shards|age|draining;..."}. */
static const char round_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local me, lease, nttl, floor = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local nslots, mod = tonumber(ARGV[10]), tonumber(ARGV[11])\n"
    "local draining = ARGV[7] == '1' or redis.call('HEXISTS', KEYS[3], me) == 1\n"
    "redis.call('HSET', KEYS[2], me, ARGV[2] .. '|' .. ARGV[3] .. '|' .. now .. '|' .. (draining and '1' or '0'))\n"
    "local raw = redis.call('HGETALL', KEYS[2])\n"
    "local active, info, hb = {}, {}, {}\n"
    "for i = 1, #raw, 2 do\n"
    "  local id, v = raw[i], raw[i + 1]\n"
    "  local addr, sh, beat, dr = string.match(v, '^(.*)|(%d+)|(%d+)|(%d)$')\n"
    "  if not beat or now - tonumber(beat) > nttl then\n"
    "    redis.call('HDEL', KEYS[2], id)\n"
    "    redis.call('HDEL', KEYS[3], id)\n"
    "  else\n"
    "    hb[id] = tonumber(beat)\n"
    "    info[#info + 1] = id .. '|' .. addr .. '|' .. sh .. '|' .. (now - hb[id]) .. '|' .. dr\n"
    "    if dr == '0' then active[#active + 1] = id end\n"
    "  end\n"
    "end\n"
    "local function live(o) return o ~= '' and hb[o] ~= nil and now - hb[o] <= lease end\n"
    "table.sort(active)\n"
    "local target, tgt = 0, {}\n"
    "for i, id in ipairs(active) do\n"
    "  tgt[id] = math.floor(nslots / #active) + ((i - 1 < nslots % #active) and 1 or 0)\n"
    "end\n"
    "if not draining then target = tgt[me] or 0 end\n"
    "local rec = {}\n"
    "local sraw = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #sraw, 2 do\n"
    "  local o, e = string.match(sraw[i + 1], '^([^|]*)|(%d+)')\n"
    "  if e then rec[tonumber(sraw[i])] = {o, tonumber(e)} end\n"
    "end\n"
    "local held, lost, count = {}, {}, 0\n"
    "for s, e in string.gmatch(ARGV[8], '(%d+):(%d+)') do held[tonumber(s)] = tonumber(e) end\n"
    "for s, e in pairs(held) do\n"
    "  local r = rec[s]\n"
    "  if r and r[1] == me and r[2] == e then count = count + 1 else lost[#lost + 1] = s end\n"
    "end\n"
    "local cnt = {}\n"
    "for s = 0, nslots - 1 do\n"
    "  local r = rec[s]\n"
    "  if r and live(r[1]) then cnt[r[1]] = (cnt[r[1]] or 0) + 1 end\n"
    "end\n"
    "for s, e in string.gmatch(ARGV[9], '(%d+):(%d+)') do\n"
    "  s, e = tonumber(s), tonumber(e)\n"
    "  local r = rec[s]\n"
    "  if r and r[1] == me and r[2] == e and held[s] == nil then\n"
    "    local best, room = nil, 0\n"
    "    for _, id in ipairs(active) do\n"
    "      if id ~= me and tgt[id] - (cnt[id] or 0) > room then best, room = id, tgt[id] - (cnt[id] or 0) end\n"
    "    end\n"
    "    if best then\n"
    "      local ne = math.max(e, floor) + 1\n"
    "      r[1], r[2] = best, ne\n"
    "      cnt[best] = (cnt[best] or 0) + 1\n"
    "      redis.call('HSET', KEYS[1], s, best .. '|' .. ne)\n"
    "    else\n"
    "      r[1] = ''\n"
    "      redis.call('HSET', KEYS[1], s, '|' .. e)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local skip = {}\n"
    "for k in string.gmatch(ARGV[12], '(%d+)') do skip[tonumber(k)] = true end\n"
    "local taken, want = {}, target - count\n"
    "for s = 0, nslots - 1 do\n"
    "  local r = rec[s]\n"
    "  local free = (not r) or r[1] == ''\n"
    "  local orphan = r and r[1] ~= '' and r[1] ~= me and not live(r[1])\n"
    "  local mine = r and r[1] == me and held[s] == nil\n"
    "  if not draining and not skip[s % mod] and (orphan or mine or (free and want > 0)) then\n"
    "    local e = math.max(r and r[2] or 0, floor) + 1\n"
    "    rec[s] = {me, e}\n"
    "    redis.call('HSET', KEYS[1], s, me .. '|' .. e)\n"
    "    taken[#taken + 1] = s .. ':' .. e\n"
    "    count = count + 1\n"
    "    if free then want = want - 1 end\n"
    "  end\n"
    "end\n"
    "local owners = {}\n"
    "for s = 0, nslots - 1 do\n"
    "  local r = rec[s]\n"
    "  if r and live(r[1]) then owners[s + 1] = r[1] .. ':' .. r[2] else owners[s + 1] = '' end\n"
    "end\n"
    "return {table.concat(taken, ','), table.concat(lost, ','), count, target, table.concat(owners, ','),\n"
    "        table.concat(info, ';')}\n";

static sb_redis_script_t round_script;

static void held_list(cluster_t *c, sb_buf_t *held, sb_buf_t *rel)
{
    for (uint32_t i = 0; i < c->o->slots; i++) {
        const slot_t *sl = &c->slot[i];
        if (sl->st == S_BUMPING || sl->st == S_CATCHUP || sl->st == S_OWNED || sl->st == S_LEAVING)
            sb_buf_printf(held, "%s%u:%" PRId64, held->len ? "," : "", i, sl->epoch);
        else if (sl->st == S_RELEASE)
            sb_buf_printf(rel, "%s%u:%" PRId64, rel->len ? "," : "", i, sl->epoch);
    }
}

typedef struct round {
    cluster_t *c;
    uint64_t sent_at;
    uint8_t *released; /* a byte per slot: in this round's release list */
} round_t;

static const char *element_str(const redisReply *r, size_t i, size_t *len)
{
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING)
        return NULL;
    *len = r->element[i]->len;
    return r->element[i]->str;
}

static int64_t element_int(const redisReply *r, size_t i)
{
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements || r->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    return r->element[i]->integer;
}

/* The routing table and the members from the round's answer. */
static void learn(cluster_t *c, const char *owners, size_t olen, const char *members, size_t mlen)
{
    const char *p = owners, *end = owners + olen;
    for (uint32_t s = 0; s < c->o->slots && p <= end; s++) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *colon = memchr(p, ':', (size_t)(e - p));
        uint16_t idx = 0;
        int64_t epoch = 0;
        if (colon) {
            idx = name_index(p, (size_t)(colon - p));
            epoch = strtoll(colon + 1, NULL, 10);
        }
        atomic_store_explicit(&g_owner[s], idx, memory_order_release);
        atomic_store_explicit(&g_owner_epoch[s], epoch, memory_order_release);
        p = e + 1;
    }
    c->nnodes = 0;
    p = members;
    end = members + mlen;
    while (p < end && c->nnodes < sizeof c->nodes / sizeof c->nodes[0]) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *e = semi ? semi : end;
        char one[512];
        size_t n = (size_t)(e - p) < sizeof one - 1 ? (size_t)(e - p) : sizeof one - 1;
        memcpy(one, p, n);
        one[n] = '\0';
        /* id|address|shards|age|draining: the address may hold '|' only if the operator put one there */
        char *f[5] = {0};
        char *q = one;
        for (int k = 0; k < 5 && q; k++) {
            f[k] = q;
            char *bar = strchr(q, '|');
            if (bar)
                *bar = '\0';
            q = bar ? bar + 1 : NULL;
        }
        if (f[4]) {
            sb_cluster_node_t *nd = &c->nodes[c->nnodes++];
            memset(nd, 0, sizeof *nd);
            snprintf(nd->id, sizeof nd->id, "%s", f[0]);
            snprintf(nd->address, sizeof nd->address, "%s", f[1]);
            nd->shards = (unsigned)strtoul(f[2], NULL, 10);
            nd->heartbeat_age_ms = strtoll(f[3], NULL, 10);
            nd->draining = f[4][0] == '1';
            nd->self = !strcmp(nd->id, c->o->node_id);
        }
        p = e + 1;
    }
    for (size_t i = 0; i < c->nnodes; i++) {
        uint16_t idx = name_index(c->nodes[i].id, strlen(c->nodes[i].id));
        if (idx && !atomic_load_explicit(&g_addr_set[idx - 1], memory_order_acquire)) {
            snprintf(g_addrs[idx - 1], sizeof g_addrs[0], "%s", c->nodes[i].address);
            atomic_store_explicit(&g_addr_set[idx - 1], 1, memory_order_release);
        }
        for (uint32_t s = 0; idx && s < c->o->slots; s++)
            c->nodes[i].slots += atomic_load_explicit(&g_owner[s], memory_order_relaxed) == idx;
    }
}

/* Starts giving up to k owned slots (the highest numbered first, so the slots a node keeps stay put). */
static void start_leaving(cluster_t *c, int64_t k, uint64_t now)
{
    for (uint32_t i = c->o->slots; i-- > 0 && k > 0;) {
        slot_t *sl = &c->slot[i];
        /* (a draining node gives up the slots it is still taking, too: they may never be caught up here) */
        if (sl->st != S_OWNED && !(c->draining && (sl->st == S_CATCHUP || sl->st == S_BUMPING)))
            continue;
        sl->st = S_LEAVING;
        sl->leave_at = now;
        atomic_store_explicit(&g_phase[i], P_LEAVING, memory_order_release);
        k--;
    }
}

/* Each round: the leaving slots' actors asked to go (stopped after the grace). */
static void evict_leaving(cluster_t *c, uint64_t now)
{
    uint8_t *soft = sb_calloc(c->o->slots, 1), *hard = sb_calloc(c->o->slots, 1);
    bool any_soft = false, any_hard = false;
    uint64_t grace = c->draining ? LEAVE_GRACE_DRAIN_MS : LEAVE_GRACE_MS;
    for (uint32_t i = 0; i < c->o->slots; i++) {
        slot_t *sl = &c->slot[i];
        if (sl->st != S_LEAVING || sl->evicting)
            continue;
        sl->evicting = true;
        if (now - sl->leave_at >= grace)
            hard[i] = 1, any_hard = true;
        else
            soft[i] = 1, any_soft = true;
    }
    if (any_soft)
        evict_slots(c, soft, false);
    if (any_hard)
        evict_slots(c, hard, true);
    free(soft);
    free(hard);
}

static void round_done(void *arg, int err, const redisReply *rep)
{
    round_t *r = arg;
    cluster_t *c = r->c;
    c->in_round = false;
    if (c->stopping) {
        free(r->released);
        free(r);
        return;
    }
    size_t tlen = 0, llen = 0, olen = 0, mlen = 0;
    const char *taken = NULL, *lost = NULL, *owners = NULL, *members = NULL;
    if (!err && rep) {
        taken = element_str(rep, 0, &tlen);
        lost = element_str(rep, 1, &llen);
        owners = element_str(rep, 4, &olen);
        members = element_str(rep, 5, &mlen);
    }
    if (!taken || !lost || !owners || !members) {
        sb_log_warn("cluster: the round failed (%s)",
                    err ? sb_strerror(err) : rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "bad answer");
        free(r->released);
        free(r);
        return;
    }
    uint64_t deadline = r->sent_at + c->lease_ms - RENEW_MARGIN_MS;
    /* what this round released is gone for good; what it renewed lives on */
    for (uint32_t i = 0; i < c->o->slots; i++) {
        slot_t *sl = &c->slot[i];
        if (r->released[i] && sl->st == S_RELEASE)
            sl->st = S_FREE;
        else if (sl->st == S_BUMPING || sl->st == S_CATCHUP || sl->st == S_OWNED || sl->st == S_LEAVING)
            sl->deadline = deadline;
    }
    uint32_t *dropped = sb_malloc(c->o->slots * sizeof *dropped);
    size_t nd = 0;
    for (const char *p = lost, *end = lost + llen; p < end;) {
        char *e;
        unsigned long s = strtoul(p, &e, 10);
        if (e == p)
            break;
        if (s < c->o->slots && c->slot[s].st != S_FREE && c->slot[s].st != S_RELEASE)
            dropped[nd++] = (uint32_t)s;
        p = *e == ',' ? e + 1 : end;
    }
    drop_slots(c, dropped, nd, "taken over by another node");
    free(dropped);
    size_t ntaken = 0;
    for (const char *p = taken, *end = taken + tlen; p < end;) {
        char *e;
        unsigned long s = strtoul(p, &e, 10);
        if (e == p || *e != ':')
            break;
        long long epoch = strtoll(e + 1, &e, 10);
        if (s < c->o->slots) {
            uint32_t nheld = c->slot[s].nheld; /* (entries held for it stay held, and counted) */
            c->slot[s] = (slot_t){.st = S_BUMPING, .epoch = epoch, .deadline = deadline, .nheld = nheld};
            ntaken++;
        }
        p = *e == ',' ? e + 1 : end;
    }
    learn(c, owners, olen, members, mlen);
    c->learned_at = uv_now(sb_shard_loop(c->s));
    held_review(c); /* slots that moved: their held receipts on to their new owners */
    int64_t count = element_int(rep, 2), target = element_int(rep, 3);
    int64_t leaving = 0;
    for (uint32_t i = 0; i < c->o->slots; i++)
        leaving += c->slot[i].st == S_LEAVING;
    int64_t surplus = count - leaving - target;
    uint64_t now = uv_now(sb_shard_loop(c->s));
    if (surplus > 0)
        start_leaving(c, surplus < (c->draining ? DRAIN_MOVES : MOVES_PER_ROUND)
                             ? surplus : (c->draining ? DRAIN_MOVES : MOVES_PER_ROUND), now);
    if (c->drained_shards) { /* a drained shard's slots go, whatever the target */
        for (uint32_t i = 0; i < c->o->slots; i++) {
            unsigned sh = sb_place_shard(i, sb_shards_count());
            if (sh < 64 && (c->drained_shards >> sh & 1) && c->slot[i].st == S_OWNED) {
                c->slot[i].st = S_LEAVING;
                c->slot[i].leave_at = now;
                atomic_store_explicit(&g_phase[i], P_LEAVING, memory_order_release);
            }
        }
    }
    if (ntaken)
        bump_taken(c);
    evict_leaving(c, now);
    free(r->released);
    free(r);
}

static void round_start(cluster_t *c)
{
    sb_redis_t *rd = sb_shard_redis(c->s);
    if (c->in_round || !rd)
        return;
    if (!c->have_floor) { /* the database's highest epoch first: ours start above it */
        if (!c->asking_floor && sb_store_fence_floor(c->store, floor_read, c) == 0)
            c->asking_floor = true;
        return;
    }
    sb_buf_t held, rel, drained;
    sb_buf_init(&held);
    sb_buf_init(&rel);
    sb_buf_init(&drained);
    held_list(c, &held, &rel);
    for (unsigned sh = 0; sh < 64; sh++)
        if (c->drained_shards >> sh & 1)
            sb_buf_printf(&drained, "%s%u", drained.len ? "," : "", sh);
    char shards[16], lease[24], ttl[24], floor[24], nslots[16], mod[16];
    snprintf(shards, sizeof shards, "%u", sb_shards_count());
    snprintf(lease, sizeof lease, "%" PRIu64, c->lease_ms);
    snprintf(ttl, sizeof ttl, "%d", c->o->node_lease_ttl_s * 1000);
    snprintf(floor, sizeof floor, "%" PRId64, c->floor);
    snprintf(nslots, sizeof nslots, "%u", c->o->slots);
    snprintf(mod, sizeof mod, "%u", sb_shards_count());
    const char *kv[15] = {"sb:{cluster}:slots", "sb:{cluster}:nodes", "sb:{cluster}:drain",
                          c->o->node_id, c->o->advertise, shards, lease, ttl, floor, c->draining ? "1" : "0",
                          sb_buf_cstr(&held), sb_buf_cstr(&rel), nslots, mod, sb_buf_cstr(&drained)};
    size_t lens[15];
    for (int i = 0; i < 15; i++)
        lens[i] = strlen(kv[i]);
    round_t *r = sb_calloc(1, sizeof *r);
    r->c = c;
    r->sent_at = uv_now(sb_shard_loop(c->s));
    r->released = sb_calloc(c->o->slots, 1);
    for (uint32_t i = 0; i < c->o->slots; i++)
        r->released[i] = c->slot[i].st == S_RELEASE;
    if (sb_redis_evalsha(rd, &round_script, 3, 12, kv, lens, round_done, r) == 0) {
        c->in_round = true;
    } else {
        free(r->released);
        free(r);
    }
    sb_buf_cleanup(&held);
    sb_buf_cleanup(&rel);
    sb_buf_cleanup(&drained);
}

/* Leases this node could not renew in time: dropped before Redis can give them to someone else. */
static void check_deadlines(cluster_t *c, uint64_t now)
{
    uint32_t *late = sb_malloc(c->o->slots * sizeof *late);
    size_t n = 0;
    for (uint32_t i = 0; i < c->o->slots; i++) {
        slot_t *sl = &c->slot[i];
        if ((sl->st == S_BUMPING || sl->st == S_CATCHUP || sl->st == S_OWNED || sl->st == S_LEAVING) &&
            now >= sl->deadline)
            late[n++] = i;
    }
    drop_slots(c, late, n, "lease not renewed in time");
    free(late);
}

static void remote_expire(cluster_t *c, uint64_t now);

static void on_round(uv_timer_t *t)
{
    cluster_t *c = t->data;
    check_deadlines(c, uv_now(t->loop));
    remote_expire(c, uv_now(t->loop));
    acks_check(c);
    round_start(c);
}

/* ---- the stream: receipts handed over by other nodes ------------------------------------------------------------- */

typedef struct xadd_op {
    uint32_t slot;
    bool transit;
    void (*done)(void *arg, int err); /* or NULL */
    void *arg;
} xadd_op_t;

/* An entry of this node's own stream that went in as transit is gone (or never went in): one less in transit. */
static void transit_done(uint32_t slot)
{
    atomic_fetch_sub_explicit(&g_transit[slot], 1, memory_order_acq_rel);
}

static void xadd_answered(void *arg, int err, const redisReply *rep)
{
    xadd_op_t *x = arg;
    if (!err && (!rep || rep->type == REDIS_REPLY_ERROR))
        err = SB_EUNAVAIL;
    if (err && x->transit)
        transit_done(x->slot);
    if (x->done)
        x->done(x->arg, err);
    free(x);
}

/* XADDs the receipt to node's stream through shard s's Redis; transit marks an entry of this node's own stream that
 * its reader passes on in order (counted in g_transit until then). done (or NULL) learns, on shard s, when Redis has
 * the entry (err 0) or will not; it is called in every case when this returns 0, never when it fails. */
static int xadd_receipt(sb_shard_t *s, const char *node, const sb_session_receipt_t *r, int64_t channel,
                        const void *packed, size_t len, bool transit, void (*done)(void *arg, int err), void *arg)
{
    sb_redis_t *rd = sb_shard_redis(s);
    if (!rd)
        return SB_EUNAVAIL;
    char key[96], rid[24], tid[24], cid[24];
    snprintf(key, sizeof key, "sb:{n:%s}:in", node);
    snprintf(rid, sizeof rid, "%" PRId64, r->receipt_id);
    snprintf(tid, sizeof tid, "%" PRId64, r->tenant);
    snprintf(cid, sizeof cid, "%" PRId64, channel);
    const char *argv[16] = {"XADD", key, "MAXLEN", "~", STREAM_MAXLEN, "*", "r", rid, "t", tid, "c", cid,
                            "x", transit ? "1" : "0", "e", packed};
    size_t lens[16];
    for (int i = 0; i < 15; i++)
        lens[i] = strlen(argv[i]);
    lens[15] = len;
    if (!transit && !done)
        return sb_redis_command_argv(rd, 16, argv, lens, NULL, NULL);
    xadd_op_t *x = sb_malloc(sizeof *x);
    *x = (xadd_op_t){.slot = sb_cluster_slot(r->tenant), .transit = transit, .done = done, .arg = arg};
    if (transit)
        atomic_fetch_add_explicit(&g_transit[x->slot], 1, memory_order_acq_rel);
    int rc = sb_redis_command_argv(rd, 16, argv, lens, xadd_answered, x);
    if (rc < 0) {
        if (transit)
            transit_done(x->slot);
        free(x);
    }
    return rc;
}

static void hand_over(cluster_t *c, int64_t receipt, int64_t tenant, int64_t channel, const void *packed,
                      size_t len);

typedef struct fwd {
    sb_session_receipt_t r;
    int64_t channel;
    void (*done)(void *arg, int err); /* an intake's: told once Redis has it (on shard 0) */
    void *arg;
    size_t len;
    char packed[];
} fwd_t;

/* On shard 0: straight to the owner, unless the slot is in transit (being taken or given up here, nobody's as far
 * as this node knows, or with receipts of its still on their way through this node's own stream); then through that
 * stream too, whose reader passes them on in the order they came once the slot has an owner that serves it. A send's
 * receipt (done set) always goes through a stream, this node's own when it serves the slot: the owner's stream is
 * where every node's sends for the slot meet, in the order Redis took them. */
static void forward_on_zero(sb_shard_t *s, void *arg)
{
    fwd_t *f = arg;
    uint32_t slot = sb_cluster_slot(f->r.tenant);
    uint16_t idx = atomic_load_explicit(&g_owner[slot], memory_order_acquire);
    const char *owner = idx ? g_names[idx - 1] : NULL;
    bool transit = atomic_load_explicit(&g_transit[slot], memory_order_acquire) != 0;
    bool served = g_c && g_c->slot[slot].st == S_OWNED && !transit && !g_c->slot[slot].nheld;
    int rc;
    if (served && !f->done) { /* served here: to its session */
        hand_over(g_c, f->r.receipt_id, f->r.tenant, f->channel, f->packed, f->len);
        free(f);
        return;
    }
    if (served || (owner && strcmp(owner, g_o->node_id) && !transit))
        rc = xadd_receipt(s, served ? g_o->node_id : owner, &f->r, f->channel, f->packed, f->len, false, f->done,
                          f->arg);
    else
        rc = xadd_receipt(s, g_o->node_id, &f->r, f->channel, f->packed, f->len, true, f->done, f->arg);
    if (rc < 0) {
        sb_log_debug("cluster: receipt %" PRId64 " not handed on (%s): the sweeper will", f->r.receipt_id,
                     sb_strerror(rc));
        if (f->done)
            f->done(f->arg, rc);
    }
    free(f);
}

static int route(const sb_session_receipt_t *r, int64_t channel, const void *packed, size_t len,
                 void (*done)(void *arg, int err), void *arg)
{
    if (!sb_cluster_enabled())
        return SB_EINVAL;
    /* Every receipt goes through shard 0, in the order the shards committed them: there the slot's state is
     * decided (served, moving, another node's) on the thread that changes it, so a receipt handed to a session is
     * in that session's mailbox before the slot can begin to leave (its actors then finish it first); and receipts
     * for other nodes leave through shard 0's one Redis connection (two connections' commands may reach Redis in
     * either order, after a script held it, which would apply a customer's two messages the wrong way round). */
    fwd_t *f = sb_malloc(sizeof *f + len);
    f->r = *r;
    f->channel = channel;
    f->done = done;
    f->arg = arg;
    f->len = len;
    memcpy(f->packed, packed, len);
    /* (from shard 0 itself too through its queue: behind what the other shards queued before) */
    int rc = sb_shard_exec(0, forward_on_zero, f);
    if (rc < 0)
        free(f);
    return rc;
}

int sb_cluster_route_receipt(sb_shard_t *s, const sb_session_receipt_t *r, int64_t channel, const void *packed,
                             size_t len)
{
    (void)s;
    return route(r, channel, packed, len, NULL, NULL);
}

int sb_cluster_route_intake(const sb_session_receipt_t *r, int64_t channel, const void *packed, size_t len,
                            void (*done)(void *arg, int err), void *arg)
{
    return route(r, channel, packed, len, done, arg);
}

size_t sb_cluster_live_channel(int64_t tenant, char *out)
{
    int n = snprintf(out, 64, "sb:live:{t%" PRId64 "}", tenant);
    return n > 0 && n < 64 ? (size_t)n : 0;
}

void sb_cluster_publish_live(sb_shard_t *s, int64_t tenant, int64_t prev, size_t n, const char *const *types,
                             const sb_str_t *data)
{
    sb_redis_t *rd = sb_shard_redis(s);
    char chan[64];
    size_t clen = sb_cluster_live_channel(tenant, chan);
    if (!rd || !clen)
        return;
    sb_buf_t payload;
    sb_buf_init(&payload);
    sb_inbox_pack_parts(tenant, prev, n, types, data, &payload);
    const char *argv[3] = {"PUBLISH", chan, payload.p};
    size_t lens[3] = {7, clen, payload.len};
    sb_redis_command_argv(rd, 3, argv, lens, NULL, NULL);
    sb_buf_cleanup(&payload);
}



static const redisReply *field(const redisReply *fields, const char *name)
{
    for (size_t i = 0; i + 1 < fields->elements; i += 2)
        if (fields->element[i]->type == REDIS_REPLY_STRING && !strcmp(fields->element[i]->str, name))
            return fields->element[i + 1];
    return NULL;
}

static void hand_over(cluster_t *c, int64_t receipt, int64_t tenant, int64_t channel, const void *packed, size_t len)
{
    sb_session_receipt_t r = {.receipt_id = receipt, .tenant = tenant};
    unsigned shard = sb_place_shard(sb_cluster_slot(tenant), sb_shards_count());
    if (sb_session_receipt_packed(sb_shard_rt(c->s), shard, channel, &r, packed, len) < 0)
        sb_log_warn("cluster: receipt %" PRId64 " not handed to its session (the sweeper will)", receipt);
}

/* The node another node's receipts for slot go to as this node knows it: NULL for this node itself or nobody. */
static const char *other_owner(cluster_t *c, uint32_t slot)
{
    uint16_t idx = atomic_load_explicit(&g_owner[slot], memory_order_acquire);
    return idx && strcmp(g_names[idx - 1], c->o->node_id) ? g_names[idx - 1] : NULL;
}

/* One entry (stream id `id`): its receipt to its session when this node serves the slot; passed on when the slot is
 * another node's; else held (the slot is in transit: being taken or caught up here, given up by this node or not
 * yet known to be this node's), in arrival order, until one of those is true (held_review, sb_cluster_caught_up):
 * so the receipts of a slot that moves are applied in the order they came. Says when the entry is acknowledged:
 * held, not yet; passed on or not a receipt, now; handed to its session, once its receipt is applied. */
static void remote_answer_in(cluster_t *c, const redisReply *fields);
static void remote_cancel_in(cluster_t *c, const redisReply *fields);
static void settings_in(cluster_t *c, const redisReply *fields);
static void media_in(cluster_t *c, const redisReply *fields);

enum entry_fate { ENTRY_WAIT, ENTRY_DONE, ENTRY_APPLYING }; /* held: not acknowledged; acknowledge now; once applied */

static enum entry_fate apply_entry(cluster_t *c, const char *id, const redisReply *fields)
{
    const redisReply *kind = field(fields, "k");
    if (kind && kind->type == REDIS_REPLY_STRING && !strcmp(kind->str, "a")) {
        remote_answer_in(c, fields);
        return ENTRY_DONE;
    }
    if (kind && kind->type == REDIS_REPLY_STRING && !strcmp(kind->str, "x")) {
        remote_cancel_in(c, fields);
        return ENTRY_DONE;
    }
    if (kind && kind->type == REDIS_REPLY_STRING && !strcmp(kind->str, "n")) {
        settings_in(c, fields);
        return ENTRY_DONE;
    }
    if (kind && kind->type == REDIS_REPLY_STRING && !strcmp(kind->str, "m")) {
        media_in(c, fields);
        return ENTRY_DONE;
    }
    const redisReply *rid = field(fields, "r"), *tid = field(fields, "t"), *cid = field(fields, "c"),
                     *ev = field(fields, "e"), *tr = field(fields, "x");
    if (!rid || !tid || !cid || !ev || rid->type != REDIS_REPLY_STRING || tid->type != REDIS_REPLY_STRING ||
        cid->type != REDIS_REPLY_STRING || ev->type != REDIS_REPLY_STRING)
        return ENTRY_DONE;
    int64_t receipt = strtoll(rid->str, NULL, 10), tenant = strtoll(tid->str, NULL, 10);
    int64_t channel = strtoll(cid->str, NULL, 10);
    uint32_t slot = sb_cluster_slot(tenant);
    /* (an entry of this node's own from before a restart counts for nothing: the counter started at 0) */
    bool transit = tr && tr->type == REDIS_REPLY_STRING && tr->str[0] == '1' && c->pending_done;
    uint8_t st = c->slot[slot].st;
    const char *other = other_owner(c, slot);
    /* (an entry another node sent here believing this node the owner waits for this node's next round before it is
     * passed on: this node's map may be the stale one, and entries bounced between two maps lose their order) */
    if (!c->slot[slot].nheld && (st == S_OWNED || (st == S_FREE && other && transit))) {
        if (st == S_OWNED) {
            hand_over(c, receipt, tenant, channel, ev->str, ev->len);
        } else { /* another node's: on to it */
            sb_session_receipt_t r = {.receipt_id = receipt, .tenant = tenant};
            xadd_receipt(c->s, other, &r, channel, ev->str, ev->len, false, NULL, NULL);
        }
        if (transit)
            transit_done(slot);
        return st == S_OWNED ? ENTRY_APPLYING : ENTRY_DONE;
    }
    {
        if (c->nheld >= MAX_HELD) /* read again from the stream's pending entries at the next start; the sweeper
                                   * meanwhile */
            return ENTRY_WAIT;
        held_t *x = sb_malloc(sizeof *x + ev->len);
        x->next = NULL;
        snprintf(x->id, sizeof x->id, "%s", id);
        x->receipt = receipt;
        x->tenant = tenant;
        x->channel = channel;
        x->at = uv_now(sb_shard_loop(c->s));
        x->transit = transit;
        x->len = ev->len;
        memcpy(x->packed, ev->str, ev->len);
        *c->held_tail = x;
        c->held_tail = &x->next;
        c->nheld++;
        c->slot[slot].nheld++;
        return ENTRY_WAIT;
    }
}

static void ack(cluster_t *c, const char **ids, size_t n)
{
    sb_redis_t *rd = sb_shard_redis(c->s);
    if (!n || !rd)
        return;
    const char **argv = sb_malloc((n + 3) * sizeof *argv);
    size_t *lens = sb_malloc((n + 3) * sizeof *lens);
    argv[0] = "XACK";
    argv[1] = c->stream;
    argv[2] = "sb";
    memcpy(argv + 3, ids, n * sizeof *ids);
    for (size_t i = 0; i < n + 3; i++)
        lens[i] = strlen(argv[i]);
    sb_redis_command_argv(rd, (int)(n + 3), argv, lens, NULL, NULL);
    free(argv);
    free(lens);
}

/* An entry whose receipt went to its session: acknowledged once the receipt is applied (acks_check), so an owner
 * that dies between the two has it delivered again when it comes back (idempotent), besides the sweeper of
 * whichever node takes the slot. */
static void ack_later(cluster_t *c, const char *id, int64_t tenant, int64_t receipt)
{
    if (c->nunacked >= UNACKED_MAX) {
        ack(c, &id, 1);
        return;
    }
    if (c->nunacked == c->capunacked) {
        c->capunacked = c->capunacked ? c->capunacked * 2 : 256;
        c->unacked = sb_realloc(c->unacked, c->capunacked * sizeof *c->unacked);
    }
    unacked_t *u = &c->unacked[c->nunacked++];
    snprintf(u->id, sizeof u->id, "%s", id);
    u->tenant = tenant;
    u->receipt = receipt;
    u->at = uv_now(sb_shard_loop(c->s));
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The oldest entries checked (acks_check; left: their receipts still unprocessed, ascending): those whose receipts
 * are processed, or that waited too long, are acknowledged and dropped; the others wait for the next round. */
static void acks_checked(void *arg, int err, const int64_t *left, size_t nleft)
{
    cluster_t *c = arg;
    size_t n = c->checking;
    c->checking = 0;
    if (err || c->stopping)
        return;
    size_t kept = 0, k = 0;
    uint64_t now = uv_now(sb_shard_loop(c->s));
    const char **ids = sb_malloc((n ? n : 1) * sizeof *ids);
    bool *keep = sb_malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        unacked_t *u = &c->unacked[i];
        keep[i] = bsearch(&u->receipt, left, nleft, sizeof *left, cmp_i64) && now - u->at < ACK_GIVE_UP_MS;
        if (!keep[i])
            ids[k++] = u->id;
    }
    ack(c, ids, k); /* (before the kept ones move down over the ids) */
    for (size_t i = 0; i < n; i++)
        if (keep[i])
            c->unacked[kept++] = c->unacked[i];
    free(keep);
    free(ids);
    memmove(c->unacked + kept, c->unacked + n, (c->nunacked - n) * sizeof *c->unacked);
    c->nunacked -= n - kept;
}

/* Once a round: are the oldest handed-over entries' receipts applied yet? */
static void acks_check(cluster_t *c)
{
    if (c->checking || !c->nunacked || c->stopping)
        return;
    size_t n = c->nunacked < ACK_CHECK_MAX ? c->nunacked : ACK_CHECK_MAX;
    int64_t *tenants = sb_malloc(n * sizeof *tenants), *receipts = sb_malloc(n * sizeof *receipts);
    for (size_t i = 0; i < n; i++) {
        tenants[i] = c->unacked[i].tenant;
        receipts[i] = c->unacked[i].receipt;
    }
    if (sb_store_receipts_unprocessed(c->store, tenants, receipts, n, acks_checked, c) == 0)
        c->checking = n;
    free(tenants);
    free(receipts);
}

/* The held entries again, in order: applied where the slot is served now (one the catch-up handed over already is
 * a repeat its session drops: a receipt's own sender's earlier ones all committed before it, so the catch-up had a
 * prefix of each sender's and the held entries the rest), passed on where another node owns it (entries read
 * before the routing table was last learned: this node's own map is fresh), left to the sweepers once held too
 * long. */
static void held_review(cluster_t *c)
{
    if (!c->nheld)
        return;
    uint64_t now = uv_now(sb_shard_loop(c->s));
    const char **ids = sb_malloc(c->nheld * sizeof *ids);
    held_t **pp = &c->held, *done = NULL;
    size_t n = 0;
    while (*pp) {
        held_t *x = *pp;
        uint32_t slot = sb_cluster_slot(x->tenant);
        uint8_t st = c->slot[slot].st;
        const char *other = st == S_OWNED ? NULL : other_owner(c, slot);
        bool here = st == S_OWNED, there = st == S_FREE && other && x->at < c->learned_at,
             old = now - x->at >= HOLD_MS;
        if (!here && !there && !old) {
            pp = &x->next;
            continue;
        }
        *pp = x->next;
        c->nheld--;
        c->slot[slot].nheld--;
        if (here) {
            hand_over(c, x->receipt, x->tenant, x->channel, x->packed, x->len);
            ack_later(c, x->id, x->tenant, x->receipt);
        } else if (there) {
            sb_session_receipt_t r = {.receipt_id = x->receipt, .tenant = x->tenant};
            xadd_receipt(c->s, other, &r, x->channel, x->packed, x->len, false, NULL, NULL);
        }
        if (x->transit)
            transit_done(slot);
        if (!here)
            ids[n++] = x->id;
        x->next = done;
        done = x;
    }
    c->held_tail = pp;
    while (*c->held_tail)
        c->held_tail = &(*c->held_tail)->next;
    ack(c, ids, n);
    free(ids);
    while (done) {
        held_t *x = done;
        done = x->next;
        free(x);
    }
}

void sb_cluster_caught_up(uint64_t gen)
{
    cluster_t *c = g_c;
    if (!c)
        return;
    size_t promoted = 0;
    for (uint32_t i = 0; i < c->o->slots; i++) {
        slot_t *sl = &c->slot[i];
        if (sl->st != S_CATCHUP || sl->gen > gen)
            continue;
        sl->st = S_OWNED;
        atomic_store_explicit(&g_phase[i], P_SERVED, memory_order_release);
        promoted++;
    }
    if (!promoted)
        return;
    held_review(c); /* what arrived meanwhile, in the order it came, after what the catch-up handed */
    sb_log_info("cluster: node %s serves %zu more slot(s)", c->o->node_id, promoted);
}

/* ---- sends across nodes: to the owner's session through its stream, the answer back through this node's ------ */

static const char *fstr(const redisReply *fields, const char *name, size_t *len)
{
    const redisReply *v = field(fields, name);
    if (!v || v->type != REDIS_REPLY_STRING)
        return NULL;
    if (len)
        *len = v->len;
    return v->str;
}

static int64_t fint(const redisReply *fields, const char *name)
{
    const char *v = fstr(fields, name, NULL);
    return v ? strtoll(v, NULL, 10) : 0;
}

static void xadd_fields(sb_redis_t *rd, const char *node, int n, const char **kv, const size_t *lens)
{
    char key[96];
    snprintf(key, sizeof key, "sb:{n:%s}:in", node);
    const char *argv[40] = {"XADD", key, "MAXLEN", "~", STREAM_MAXLEN, "*"};
    size_t alen[40] = {4, strlen(key), 6, 1, strlen(STREAM_MAXLEN), 1};
    for (int i = 0; i < n && i < 34; i++) {
        argv[6 + i] = kv[i];
        alen[6 + i] = lens ? lens[i] : strlen(kv[i]);
    }
    sb_redis_command_argv(rd, 6 + n, argv, alen, NULL, NULL);
}

static void cancel_locally(sb_session_cancel_t *req, int status, const char *code, const char *message)
{
    req->status = status;
    req->code = code;
    snprintf(req->message, sizeof req->message, "%s", message);
    req->answer(req);
}

static const char moving[] = "the tenant's slot is moving between nodes; retry in a moment";

/* On shard 0: the owner of tenant's slot when it is another node (else NULL), and the cancel remembered until the
 * answer comes back. */
static const char *remote_start(cluster_t *c, sb_shard_t *s, int64_t tenant, sb_session_cancel_t *cancel,
                                uint64_t *id)
{
    uint32_t slot = sb_cluster_slot(tenant);
    uint16_t idx = atomic_load_explicit(&g_owner[slot], memory_order_acquire);
    const char *owner = idx ? g_names[idx - 1] : NULL;
    if (!c || !owner || !strcmp(owner, c->o->node_id) || !sb_shard_redis(s))
        return NULL;
    remote_t *r = sb_calloc(1, sizeof *r);
    r->id = ++c->next_remote;
    r->deadline = uv_now(sb_shard_loop(s)) + REMOTE_TIMEOUT_MS;
    r->cancel = cancel;
    r->next = c->remote;
    c->remote = r;
    *id = r->id;
    return owner;
}

static void cancel_on_zero(sb_shard_t *s, void *arg)
{
    sb_session_cancel_t *req = arg;
    uint64_t id;
    const char *owner = remote_start(g_c, s, req->tenant, req, &id);
    if (!owner) {
        cancel_locally(req, 503, "unavailable", moving);
        return;
    }
    char q[24], t[24], ch[24], mid[24];
    snprintf(q, sizeof q, "%" PRIu64, id);
    snprintf(t, sizeof t, "%" PRId64, req->tenant);
    snprintf(ch, sizeof ch, "%" PRId64, req->channel);
    snprintf(mid, sizeof mid, "%" PRId64, req->id);
    const char *kv[14] = {"k", "x", "q", q, "f", g_o->node_id, "t", t, "c", ch, "i", mid, "w", req->intake ? "1" : "0"};
    xadd_fields(sb_shard_redis(s), owner, 14, kv, NULL);
}

void sb_cluster_session_cancel(sb_shard_t *s, sb_session_cancel_t *req)
{
    if (sb_shard_index(s) == 0)
        cancel_on_zero(s, req);
    else if (sb_shard_exec(0, cancel_on_zero, req) < 0)
        cancel_locally(req, 503, "unavailable", "the gateway is stopping; retry");
}

typedef struct incoming_cancel {
    sb_session_cancel_t req; /* first: the session hands back this pointer */
    char from[72];
    char q[24];
} incoming_cancel_t;

static void incoming_cancel_answered(sb_session_cancel_t *req)
{
    incoming_cancel_t *in = (incoming_cancel_t *)req;
    sb_shard_t *self = sb_shard_self();
    sb_redis_t *rd = self ? sb_shard_redis(self) : NULL;
    if (rd) {
        char st[8];
        snprintf(st, sizeof st, "%d", req->status);
        const char *kv[10] = {"k", "a", "q", in->q, "st", st, "co", req->code ? req->code : "", "ms", req->message};
        xadd_fields(rd, in->from, 10, kv, NULL);
    }
    free(in);
}

static void remote_cancel_in(cluster_t *c, const redisReply *fields)
{
    const char *from = fstr(fields, "f", NULL), *q = fstr(fields, "q", NULL);
    if (!from || !q || strlen(from) >= 72 || strlen(q) >= 24)
        return;
    incoming_cancel_t *in = sb_calloc(1, sizeof *in);
    snprintf(in->from, sizeof in->from, "%s", from);
    snprintf(in->q, sizeof in->q, "%s", q);
    in->req = (sb_session_cancel_t){.tenant = fint(fields, "t"), .channel = fint(fields, "c"),
                                    .id = fint(fields, "i"), .intake = fint(fields, "w") == 1,
                                    .answer = incoming_cancel_answered};
    if (in->req.tenant <= 0 || !sb_cluster_owns(in->req.tenant)) {
        cancel_locally(&in->req, 503, "unavailable", moving);
        return;
    }
    sb_session_cancel(sb_shard_rt(c->s), sb_place_shard(sb_cluster_slot(in->req.tenant), sb_shards_count()),
                      &in->req);
}

/* ---- settings changed on another node: the owner's sessions read theirs again ------------------------------------ */

typedef struct note {
    int64_t tenant, channel;
} note_t;

static void note_on_shard(sb_shard_t *s, void *arg)
{
    note_t *n = arg;
    sb_session_settings_changed(sb_shard_rt(s), n->tenant, n->channel);
    free(n);
}

static void settings_in(cluster_t *c, const redisReply *fields)
{
    (void)c;
    note_t *n = sb_malloc(sizeof *n);
    *n = (note_t){fint(fields, "t"), fint(fields, "c")};
    if (n->tenant <= 0 || !sb_cluster_owns(n->tenant) ||
        sb_shard_exec(sb_place_shard(sb_cluster_slot(n->tenant), sb_shards_count()), note_on_shard, n) < 0)
        free(n);
}

/* A fire-and-forget entry (fields kv, n of them) to the stream of tenant's owner as this node knows it (none known:
 * dropped). Shard 0. */
static void xadd_to_owner(sb_shard_t *s, int64_t tenant, int n, const char **kv)
{
    uint16_t idx = atomic_load_explicit(&g_owner[sb_cluster_slot(tenant)], memory_order_acquire);
    if (idx && sb_shard_redis(s))
        xadd_fields(sb_shard_redis(s), g_names[idx - 1], n, kv, NULL);
}

static void note_on_zero(sb_shard_t *s, void *arg)
{
    note_t *n = arg;
    char t[24], ch[24];
    snprintf(t, sizeof t, "%" PRId64, n->tenant);
    snprintf(ch, sizeof ch, "%" PRId64, n->channel);
    const char *kv[6] = {"k", "n", "t", t, "c", ch};
    xadd_to_owner(s, n->tenant, 6, kv);
    free(n);
}

void sb_cluster_settings_changed(int64_t tenant, int64_t channel)
{
    note_t *n = sb_malloc(sizeof *n);
    *n = (note_t){tenant, channel};
    if (sb_shard_exec(0, note_on_zero, n) < 0)
        free(n);
}

/* ---- a Media Stream's news for a call another node owns ------------------------------------------------------- */

/* Twilio opens a call's Media Stream on whichever node its <Stream> URL names, often not the owner of the call's
 * tenant (the TwiML came from the owner, through a forwarded webhook, with the front node's Host). The relay runs
 * there; its news (the app answered, could not be reached, the stream ended) go to the owner's call actor through
 * the owner's stream, kind "m", fire and forget like a settings note: one lost to a move costs that call its
 * fallback, never a wrong one. */
typedef struct media_note {
    int64_t tenant;
    sb_call_stream_t news;
    char call_key[];
} media_note_t;

static void media_in(cluster_t *c, const redisReply *fields)
{
    int64_t tenant = fint(fields, "t");
    const char *key = fstr(fields, "ck", NULL);
    int64_t news = fint(fields, "w");
    if (tenant <= 0 || !key || !key[0] || news < SB_CALL_STREAM_STARTED || news > SB_CALL_STREAM_ENDED ||
        !sb_cluster_owns(tenant))
        return;
    sb_call_stream_t n = {.news = (sb_call_stream_news_t)news,
                          .channel = fint(fields, "c"),
                          .frames_in = (uint64_t)fint(fields, "i"),
                          .frames_out = (uint64_t)fint(fields, "o"),
                          .dropped = (uint64_t)fint(fields, "d")};
    sb_call_stream(sb_shard_rt(c->s), sb_place_shard(sb_cluster_slot(tenant), sb_shards_count()), key, &n);
}

static void media_on_zero(sb_shard_t *s, void *arg)
{
    media_note_t *m = arg;
    char t[24], w[8], ch[24], in[24], out[24], d[24];
    snprintf(t, sizeof t, "%" PRId64, m->tenant);
    snprintf(w, sizeof w, "%d", (int)m->news.news);
    snprintf(ch, sizeof ch, "%" PRId64, m->news.channel);
    snprintf(in, sizeof in, "%" PRIu64, m->news.frames_in);
    snprintf(out, sizeof out, "%" PRIu64, m->news.frames_out);
    snprintf(d, sizeof d, "%" PRIu64, m->news.dropped);
    const char *kv[16] = {"k", "m", "t", t, "ck", m->call_key, "w", w, "c", ch, "i", in, "o", out, "d", d};
    xadd_to_owner(s, m->tenant, 16, kv);
    free(m);
}

void sb_cluster_call_stream(int64_t tenant, const char *call_key, const sb_call_stream_t *news)
{
    size_t len = strlen(call_key);
    media_note_t *m = sb_malloc(sizeof *m + len + 1);
    m->tenant = tenant;
    m->news = *news;
    memcpy(m->call_key, call_key, len + 1);
    if (sb_shard_exec(0, media_on_zero, m) < 0)
        free(m);
}

static void remote_answer_in(cluster_t *c, const redisReply *fields)
{
    uint64_t q = (uint64_t)fint(fields, "q");
    remote_t **pp = &c->remote;
    while (*pp && (*pp)->id != q)
        pp = &(*pp)->next;
    if (!*pp)
        return; /* answered already (timed out) */
    remote_t *r = *pp;
    *pp = r->next;
    sb_session_cancel_t *cancel = r->cancel;
    free(r);
    const char *co = fstr(fields, "co", NULL), *ms = fstr(fields, "ms", NULL);
    static const char *const codes[] = {"invalid_request",   "invalid_recipient", "invalid_template", "invalid_tag",
                                        "invalid_media_url", "invalid_fallback",  "body_too_long",    "not_found",
                                        "outside_window",    "conflict",          "unavailable",      NULL};
    const char *code = "unavailable"; /* (codes must be static: the known ones are kept, anything else a 503's) */
    for (int i = 0; co && codes[i]; i++)
        if (!strcmp(co, codes[i]))
            code = codes[i];
    cancel_locally(cancel, (int)fint(fields, "st"), code, ms ? ms : "");
}

/* Cancels whose owner did not answer in time: 503 (the client retries). */
static void remote_expire(cluster_t *c, uint64_t now)
{
    remote_t **pp = &c->remote;
    while (*pp) {
        remote_t *r = *pp;
        if (now < r->deadline) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        cancel_locally(r->cancel, 503, "unavailable", "the tenant's node did not answer in time; retry");
        free(r);
    }
}

static void read_done(void *arg, int err, const redisReply *rep)
{
    cluster_t *c = arg;
    c->reading = false;
    if (c->stopping)
        return;
    if (err || !rep || rep->type == REDIS_REPLY_ERROR) {
        if (rep && rep->type == REDIS_REPLY_ERROR && strstr(rep->str, "NOGROUP"))
            c->group_made = false;
        uv_timer_start(c->read_retry, read_again, 500, 0);
        return;
    }
    size_t n = 0;
    /* [[key, [[id, [f, v, ...]], ...]]] or nil (timed out) */
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 && rep->element[0]->type == REDIS_REPLY_ARRAY &&
        rep->element[0]->elements == 2 && rep->element[0]->element[1]->type == REDIS_REPLY_ARRAY) {
        const redisReply *entries = rep->element[0]->element[1];
        n = entries->elements;
        const char **ids = sb_malloc((n ? n : 1) * sizeof *ids);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = entries->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            enum entry_fate f = e->element[1]->type != REDIS_REPLY_ARRAY
                                    ? ENTRY_DONE
                                    : apply_entry(c, e->element[0]->str, e->element[1]);
            if (f == ENTRY_DONE)
                ids[k++] = e->element[0]->str;
            else if (f == ENTRY_APPLYING)
                ack_later(c, e->element[0]->str, fint(e->element[1], "t"), fint(e->element[1], "r"));
            /* (the pending entries are read in pages: those left unacknowledged would come back from "0") */
            if (!c->pending_done)
                snprintf(c->pending_from, sizeof c->pending_from, "%s", e->element[0]->str);
        }
        ack(c, ids, k);
        free(ids);
    }
    if (!c->pending_done && n == 0)
        c->pending_done = true; /* what the last incarnation left unacknowledged is done: new entries from now */
    if (n && n < READ_GATHER_BELOW && c->pending_done)
        uv_timer_start(c->read_retry, read_again, READ_GATHER_MS, 0);
    else
        read_next(c);
}

static void group_made(void *arg, int err, const redisReply *rep)
{
    cluster_t *c = arg;
    c->reading = false;
    if (c->stopping)
        return;
    if (!err && rep && (rep->type != REDIS_REPLY_ERROR || strstr(rep->str, "BUSYGROUP")))
        c->group_made = true;
    read_next(c);
}

static void read_again(uv_timer_t *t)
{
    read_next(t->data);
}

static void read_next(cluster_t *c)
{
    if (c->reading || c->stopping)
        return;
    int rc;
    if (!c->group_made) {
        const char *argv[6] = {"XGROUP", "CREATE", c->stream, "sb", "0", "MKSTREAM"};
        size_t lens[6];
        for (int i = 0; i < 6; i++)
            lens[i] = strlen(argv[i]);
        rc = sb_redis_command_argv(c->reader, 6, argv, lens, group_made, c);
    } else {
        const char *argv[11] = {"XREADGROUP", "GROUP", "sb", c->o->node_id, "COUNT", READ_COUNT, "BLOCK",
                                READ_BLOCK_MS, "STREAMS", c->stream, c->pending_done ? ">" : c->pending_from};
        size_t lens[11];
        for (int i = 0; i < 11; i++)
            lens[i] = strlen(argv[i]);
        rc = sb_redis_command_argv(c->reader, 11, argv, lens, read_done, c);
    }
    if (rc == 0)
        c->reading = true;
    else
        uv_timer_start(c->read_retry, read_again, 500, 0);
}

/* ---- the console ------------------------------------------------------------------------------------------------- */

bool sb_cluster_owner_address(int64_t tenant, char *out, size_t size)
{
    if (!sb_cluster_enabled())
        return false;
    uint16_t idx = atomic_load_explicit(&g_owner[sb_cluster_slot(tenant)], memory_order_acquire);
    if (!idx || !strcmp(g_names[idx - 1], g_o->node_id) ||
        !atomic_load_explicit(&g_addr_set[idx - 1], memory_order_acquire))
        return false;
    snprintf(out, size, "%s", g_addrs[idx - 1]);
    return true;
}

const char *sb_cluster_node_id(void)
{
    return g_o ? g_o->node_id : "";
}

size_t sb_cluster_nodes(sb_cluster_node_t *out, size_t max)
{
    cluster_t *c = g_c;
    if (!c) {
        if (!max)
            return 0;
        memset(out, 0, sizeof *out);
        snprintf(out->id, sizeof out->id, "%s", g_o ? g_o->node_id : "");
        snprintf(out->address, sizeof out->address, "%s", g_o && g_o->advertise ? g_o->advertise : "");
        out->shards = sb_shards_count();
        out->slots = g_o ? g_o->slots : 0;
        out->self = true;
        return 1;
    }
    size_t n = c->nnodes < max ? c->nnodes : max;
    memcpy(out, c->nodes, n * sizeof *out);
    return n;
}

void sb_cluster_slot_owner(uint32_t slot, char *owner, int64_t *epoch)
{
    *epoch = 0;
    if (!sb_cluster_enabled()) {
        snprintf(owner, 72, "%s", g_o ? g_o->node_id : "");
        return;
    }
    uint16_t idx = slot < g_o->slots ? atomic_load_explicit(&g_owner[slot], memory_order_acquire) : 0;
    snprintf(owner, 72, "%s", idx ? g_names[idx - 1] : "");
    if (idx)
        *epoch = atomic_load_explicit(&g_owner_epoch[slot], memory_order_acquire);
}

int sb_cluster_drain_node(const char *id)
{
    cluster_t *c = g_c;
    if (!c)
        return SB_EINVAL;
    if (!strcmp(id, c->o->node_id)) {
        c->draining = true;
        round_start(c);
        return 0;
    }
    bool live = false;
    for (size_t i = 0; i < c->nnodes; i++)
        live |= !strcmp(c->nodes[i].id, id);
    sb_redis_t *rd = sb_shard_redis(c->s);
    if (!live)
        return SB_ENOENT;
    if (!rd)
        return SB_EUNAVAIL;
    const char *argv[4] = {"HSET", "sb:{cluster}:drain", id, "1"};
    size_t lens[4] = {4, strlen(argv[1]), strlen(id), 1};
    return sb_redis_command_argv(rd, 4, argv, lens, NULL, NULL);
}

int sb_cluster_drain_shard(unsigned shard)
{
    cluster_t *c = g_c;
    if (!c)
        return SB_EINVAL;
    if (shard >= sb_shards_count() || shard >= 64)
        return SB_ENOENT;
    c->drained_shards |= 1ull << shard;
    round_start(c);
    return 0;
}

/* ---- the module -------------------------------------------------------------------------------------------------- */

static int cluster_start(sb_shard_t *s, void **state)
{
    if (!sb_cluster_enabled() || sb_shard_index(s) != 0)
        return 0;
    const sb_cluster_opts_t *o = g_o;
    cluster_t *c = sb_calloc(1, sizeof *c);
    *state = c;
    g_c = c;
    c->s = s;
    c->o = o;
    c->slot = sb_calloc(o->slots, sizeof *c->slot);
    c->held_tail = &c->held;
    uint64_t ttl = (uint64_t)o->node_lease_ttl_s * 1000;
    c->lease_ms = o->slot_lease_ms > 0 ? (uint64_t)o->slot_lease_ms : ttl < 2000 ? ttl : 2000;
    if (c->lease_ms < 4 * RENEW_MARGIN_MS)
        c->lease_ms = 4 * RENEW_MARGIN_MS;
    c->round_ms = c->lease_ms / 8;
    snprintf(c->stream, sizeof c->stream, "sb:{n:%s}:in", o->node_id);
    snprintf(c->pending_from, sizeof c->pending_from, "0");
    c->store = sb_store_create(sb_shard_pg(s), NULL, NULL, 0);
    sb_redis_script_init(&round_script, round_lua);
    c->reader = sb_redis_create(sb_shard_loop(s), o->redis_host, o->redis_port, o->redis_db);
    c->timer = sb_malloc(sizeof *c->timer);
    uv_timer_init(sb_shard_loop(s), c->timer);
    c->timer->data = c;
    uv_timer_start(c->timer, on_round, 0, c->round_ms);
    c->read_retry = sb_malloc(sizeof *c->read_retry);
    uv_timer_init(sb_shard_loop(s), c->read_retry);
    c->read_retry->data = c;
    uv_timer_start(c->read_retry, read_again, 100, 0);
    sb_log_info("cluster: node %s (%s), %u slots, leases of %" PRIu64 " ms", o->node_id, o->advertise, o->slots,
                c->lease_ms);
    return 0;
}

/* Draining (SIGTERM): every slot handed over, its actors given a short grace, the leases released. */
static void cluster_drain(sb_shard_t *s, void *state)
{
    cluster_t *c = state;
    (void)s;
    if (!c)
        return;
    c->draining = true;
    round_start(c);
}

static unsigned cluster_busy(sb_shard_t *s, void *state)
{
    cluster_t *c = state;
    (void)s;
    if (!c || !sb_shard_redis(c->s) || !sb_redis_connected(sb_shard_redis(c->s)))
        return 0;
    unsigned held = 0;
    for (uint32_t i = 0; i < c->o->slots; i++)
        held += c->slot[i].st != S_FREE;
    return held;
}

static void handle_closed(uv_handle_t *h)
{
    free(h);
}

static void cluster_stop(sb_shard_t *s, void *state)
{
    cluster_t *c = state;
    (void)s;
    if (!c)
        return;
    c->stopping = true; /* the leases stay as they are: they run out, and the next owner fences what is left */
    remote_expire(c, UINT64_MAX);
    g_c = NULL;
    uv_close((uv_handle_t *)c->timer, handle_closed);
    uv_close((uv_handle_t *)c->read_retry, handle_closed);
    sb_redis_close(c->reader);
}

static void cluster_finish(sb_shard_t *s, void *state)
{
    cluster_t *c = state;
    (void)s;
    if (!c)
        return;
    sb_store_destroy(c->store);
    while (c->held) {
        held_t *x = c->held;
        c->held = x->next;
        free(x);
    }
    free(c->unacked);
    free(c->slot);
    free(c);
}

const sb_shard_module_t sb_cluster_module = {
    .name = "cluster",
    .start = cluster_start,
    .drain = cluster_drain,
    .busy = cluster_busy,
    .stop = cluster_stop,
    .finish = cluster_finish,
};
