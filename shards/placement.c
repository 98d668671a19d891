/* Tenant → slot → shard placement; see placement.h. */
#include "shards/placement.h"

uint64_t sb_place_hash(sb_str_t key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < key.len; i++) {
        h ^= (unsigned char)key.p[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

uint32_t sb_place_slot(sb_str_t tenant, uint32_t slots)
{
    return (uint32_t)(sb_place_hash(tenant) % slots);
}

unsigned sb_place_shard(uint32_t slot, unsigned shards)
{
    return slot % shards;
}
