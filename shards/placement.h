/* Placement: which slot a tenant belongs to, and which shard serves a slot.
 *
 * slot = hash(tenant) mod slots, with a hash that is fixed forever (it decides where data and actors live across
 * nodes and restarts): 64-bit FNV-1a followed by a murmur3 finalizer so short, similar ids spread evenly.
 * On a single node every slot is served by shard (slot mod shards). */
#ifndef SB_PLACEMENT_H
#define SB_PLACEMENT_H

#include "proto/str.h"

#include <stdint.h>

uint64_t sb_place_hash(sb_str_t key);
/* slots must be > 0. */
uint32_t sb_place_slot(sb_str_t tenant, uint32_t slots);
/* shards must be > 0. */
unsigned sb_place_shard(uint32_t slot, unsigned shards);

#endif
