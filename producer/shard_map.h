/* Shard map of one stream: the open shards' hash key ranges from ListShards, sorted
 * by starting key, so that a record's shard is predicted by binary search.
 *
 * Built in two phases: add every open shard, then finalize (sorts, checks that the
 * ranges tile 0..2^128-1 exactly). Indices are dense 0..n-1 in hash key order after
 * finalize; a refresh builds a new map. */
#ifndef KP_PRODUCER_SHARD_MAP_H
#define KP_PRODUCER_SHARD_MAP_H

#include <stdbool.h>
#include <stddef.h>

#include "format/hash_key.h"

typedef struct kp_shard_map kp_shard_map;

/* Returns an empty map in its building phase, or NULL on allocation failure. */
kp_shard_map *kp_shard_map_new(void);
void kp_shard_map_free(kp_shard_map *m);

/* Adds an open shard (building phase only); the id is copied. Returns 0, -EINVAL after
 * finalize or on a NULL argument, or -ENOMEM. */
int kp_shard_map_add(kp_shard_map *m, const char *shard_id, const kp_hash_key *start,
                     const kp_hash_key *end);

/* Sorts and checks the ranges: none empty or reversed, no duplicate id, no gap and no
 * overlap, 0 and 2^128-1 covered. Returns 0, or -EINVAL with errstr naming the shards
 * at fault (the map stays unusable), or -ENOMEM. */
int kp_shard_map_finalize(kp_shard_map *m, char *errstr, size_t errstr_size);

/* Index of the shard whose range holds hk, or -1 (not finalized). O(log n). */
int kp_shard_map_lookup(const kp_shard_map *m, const kp_hash_key *hk);

/* Number of shards. */
size_t kp_shard_map_count(const kp_shard_map *m);

/* Shard id at index idx, or NULL if out of range. */
const char *kp_shard_map_shard_id(const kp_shard_map *m, size_t idx);

/* Range of the shard at idx; returns 0 or -EINVAL if out of range. */
int kp_shard_map_range(const kp_shard_map *m, size_t idx, kp_hash_key *start, kp_hash_key *end);

/* Index of the shard with this id, or -1. O(log n). */
int kp_shard_map_index_of(const kp_shard_map *m, const char *shard_id);

/* Whether the shard named shard_id is in the map and its range holds hk: false means
 * Kinesis put the record on a shard the map does not expect (the map is stale). */
bool kp_shard_map_owns(const kp_shard_map *m, const char *shard_id, const kp_hash_key *hk);

#endif
