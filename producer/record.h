/* The daemon's user record: one PutRecord from the client, validated, with its
 * effective hash key, deadline, expiry and the attempts made so far.
 *
 * One allocation holds the struct, the partition key, the explicit hash key and the
 * data, so a record costs one malloc (plus the attempts array once it is retried). */
#ifndef KP_PRODUCER_RECORD_H
#define KP_PRODUCER_RECORD_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format/hash_key.h"
#include "format/utf8.h"

/* Partition keys are 1..256 Unicode code points (Kinesis limit). */
#define KP_RECORD_PK_MAX_CHARS 256

typedef struct kp_attempt {
  uint32_t delay_ms;
  uint32_t duration_ms : 31; /* clamped: 24 days is beyond any attempt */
  uint32_t success : 1;
  char *error_code, *error_message; /* owned; NULL when absent */
} kp_attempt;

/* Headers of records shed together (kp_record_shed_list): one allocation, freed with
 * its last record. */
typedef struct kp_record_arena kp_record_arena;

/* Outstanding records are most of the daemon's memory under load, so the header is
 * packed (120 bytes) and the partition key, explicit hash key and data follow it in the
 * same allocation, found by the accessors below rather than by stored pointers.
 *
 * Once its aggregate is encoded a record is "shed": only its header is kept (in an
 * arena), since the aggregate, then the request body, holds its key and data. Whoever
 * needs them again (a retry, a re-route) gets them back from that blob with
 * kp_record_unshed. */
typedef struct kp_record {
  struct kp_record *next;           /* intrusive link: whichever list holds it */
  uint64_t source_id;               /* id of the PutRecord message; its result carries it */
  double arrival, deadline, expiry; /* seconds on the loop clock */
  double last_attempt_end;          /* for the next attempt's delay */
  kp_attempt *attempts;             /* first_attempt until a second one is added */
  kp_attempt first_attempt;         /* most records need one attempt: no second allocation */
  union {
    kp_hash_key hash_key;   /* effective: EHK or MD5(pk); see kp_record_hash_key */
    kp_record_arena *arena; /* when shed (hash_known is then false) */
  };
  uint32_t stream; /* index in the daemon's stream table */
  uint32_t pk_len, ehk_len, data_len;
  uint16_t n_attempts, cap_attempts;
  bool hash_known; /* hash_key is set (MD5 is computed when first needed) */
  bool has_ehk;    /* the user gave an explicit hash key */
  bool shed;       /* header only: no key or data after it, no hash key */
  bool shared;     /* the data is in the shared data file: a pointer to it follows */
  /* Then, unless shed, in the same allocation: pk NUL [ehk NUL] data, or instead of the
   * data (shared) a pointer to it, unaligned. */
} kp_record;

/* The partition key, NUL-terminated. Not for a shed record. */
static inline const char *kp_record_pk(const kp_record *r) {
  assert(!r->shed);
  return (const char *)(r + 1);
}

/* The explicit hash key as the user gave it, NUL-terminated; NULL when none. */
static inline const char *kp_record_ehk(const kp_record *r) {
  return r->has_ehk ? kp_record_pk(r) + r->pk_len + 1 : NULL;
}

/* The record's data (data_len bytes). */
static inline const uint8_t *kp_record_data(const kp_record *r) {
  const uint8_t *after =
      (const uint8_t *)kp_record_pk(r) + r->pk_len + 1 + (r->has_ehk ? r->ehk_len + 1 : 0);
  if (!r->shared)
    return after;
  const uint8_t *d;
  memcpy(&d, after, sizeof d);
  return d;
}

/* Validates and creates a record arriving at `now`: partition key 1..256 code points
 * of valid UTF-8, explicit hash key (ehk NULL = none; given, it must be a decimal in
 * 0..2^128-1) and data_len <= max_data. deadline = now + max_buffered_s and expiry =
 * now + ttl_s (the deadline never later than the expiry). On invalid input returns
 * NULL with a precise message in errstr and nothing allocated; on allocation failure
 * NULL with "out of memory". */
kp_record *kp_record_new(uint64_t source_id, uint32_t stream, const char *pk, size_t pk_len,
                         const char *ehk, size_t ehk_len, const void *data, size_t data_len,
                         size_t max_data, double now, double max_buffered_s, double ttl_s,
                         char *errstr, size_t errstr_size);

/* The same for a record whose data stays where it is, in the shared data file (a
 * PutRecordRef): the record keeps a pointer to it instead of a copy. The caller
 * guarantees the bytes stay valid until the record is freed or shed. */
kp_record *kp_record_new_shared(uint64_t source_id, uint32_t stream, const char *pk, size_t pk_len,
                                const char *ehk, size_t ehk_len, const void *data, size_t data_len,
                                size_t max_data, double now, double max_buffered_s, double ttl_s,
                                char *errstr, size_t errstr_size);

/* Sheds the n records of the list at head (linked by next; n >= 1): their headers move
 * into one arena and their blocks (key and data) are freed. Returns the new head and
 * sets *tail; on allocation failure returns head unchanged (nothing is shed: that only
 * costs memory). The old pointers are invalid after a successful call. */
kp_record *kp_record_shed_list(kp_record *head, size_t n, kp_record **tail);

/* Gives the shed record s its partition key, explicit hash key (NULL = none) and data
 * back, as found in the blob that holds them: returns a new whole record with s's
 * header (next is NULL) and releases s. On allocation failure returns NULL and s is
 * unchanged. The key and hash key were validated at arrival and are not again. */
kp_record *kp_record_unshed(kp_record *s, const char *pk, size_t pk_len, const char *ehk,
                            size_t ehk_len, const void *data, size_t data_len);

/* Appends r alone (its next is cleared) to the list *head..*tail (both NULL: empty). */
static inline void kp_record_list_append(kp_record **head, kp_record **tail, kp_record *r) {
  r->next = NULL;
  if (*tail)
    (*tail)->next = r;
  else
    *head = r;
  *tail = r;
}

/* Frees the record and its attempts. NULL is a no-op. Does not follow `next`. */
void kp_record_free(kp_record *r);

/* Frees a whole list linked by `next`. */
void kp_record_free_list(kp_record *head);

/* Appends an attempt, copying code and message (either may be NULL). Returns 0,
 * -ENOMEM, or -EOVERFLOW past 65535 attempts. */
int kp_record_add_attempt(kp_record *r, uint32_t delay_ms, uint32_t duration_ms, bool success,
                          const char *code, const char *message);

/* The record's effective hash key. MD5(pk) costs ~110 ns, as much as all the rest of a
 * small record's handling, and a stream whose one shard spans every key never needs it;
 * so it is computed here, once, by whoever needs it first. */
static inline const kp_hash_key *kp_record_hash_key(kp_record *r) {
  assert(!r->shed);
  if (!r->hash_known) {
    kp_hash_key_of_partition_key(kp_record_pk(r), r->pk_len, &r->hash_key);
    r->hash_known = true;
  }
  return &r->hash_key;
}

#endif
