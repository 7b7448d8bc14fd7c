/* Aggregator: one per (stream, shard). Packs user records into one Kinesis record
 * (a KPL aggregated record, or the record raw when alone) via format/agg_encoder,
 * within AggregationMaxCount, AggregationMaxSize and the Kinesis record size limit.
 *
 * Pure logic: no I/O, no clock. The caller keeps aggregators with a deadline in a
 * kp_deadline_heap through kp_aggregator_heap_item(). */
#ifndef KP_PRODUCER_AGGREGATOR_H
#define KP_PRODUCER_AGGREGATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "format/hash_key.h"
#include "producer/deadline_heap.h"
#include "producer/record.h"

/* One Kinesis record ready for a PutRecords request. An aggregate owns its data; a raw
 * record's data and partition key are its one user record's, valid while it holds its
 * records. Free it only with kp_kinesis_record_free. */
typedef struct kp_kinesis_record {
  struct kp_kinesis_record *next;
  kp_record *records; /* user records inside, in order, linked by next */
  kp_record *records_tail;
  uint32_t count;
  uint8_t *data; /* the Kinesis record's Data; NULL once dropped (data_len stays) */
  size_t data_len;
  /* Or, gathered (data NULL): the Data as pieces, the aggregate's own bytes (one block,
   * `own`) between its records' data in the shared data file, which stays there until
   * their results are out. */
  struct iovec *iov;
  size_t n_iov;
  uint8_t *own;
  size_t body_off; /* once dropped: where the request body holds it (kp_put_entry) */
  bool owns_data;
  bool unsealed;       /* an aggregate whose MD5 is not written yet: kp_kinesis_records_seal */
  char *partition_key; /* NUL-terminated */
  size_t partition_key_len;
  char explicit_hash_key[KP_HASH_KEY_DEC_MAX]; /* "" for a raw record without one: none sent */
  double deadline;                             /* earliest deadline of its user records */
  double expiry;                               /* earliest expiry */
  int shard;                                   /* predicted shard index */
} kp_kinesis_record;

/* Frees the Kinesis record, and its user records if free_records (otherwise the caller
 * has taken kr->records). NULL is a no-op. Does not follow kr->next. */
void kp_kinesis_record_free(kp_kinesis_record *kr, bool free_records);

/* Gives an aggregate's data back once a request body holds a copy: a retry re-aggregates
 * from the user records, so nothing reads it again (at 100 B records this is a third of
 * the daemon's memory at load). A raw record keeps its user record's. */
void kp_kinesis_record_drop_data(kp_kinesis_record *kr);

/* Whether any of its user records is shed (an aggregate's are, from its completion until
 * restored). */
bool kp_kinesis_record_has_shed(const kp_kinesis_record *kr);

/* Gives the user records of an aggregate, shed when it was completed, their keys and
 * data back from blob: the aggregate's data as it was sent (kr->data, or its copy in a
 * request body). A no-op for a raw record or records already whole. Returns 0;
 * -EILSEQ if blob is not an aggregate of kr->count records (all stay shed); -ENOMEM
 * (those not restored stay shed; each record says so by its `shed` flag). */
int kp_kinesis_record_restore(kp_kinesis_record *kr, const uint8_t *blob, size_t len);

/* Makes a gathered Kinesis record's Data one contiguous block (sealed first), for
 * whatever needs it whole (a JSON body, a restore). Returns 0 (also when already whole),
 * or -ENOMEM (unchanged). */
int kp_kinesis_record_flatten(kp_kinesis_record *kr);

/* Writes the MD5 of every aggregate in the list (linked by next) still without it, many
 * side by side (kp_md5_many): aggregates are completed one at a time, but a request
 * carries up to 500 of them. Call before anything reads their data. */
void kp_kinesis_records_seal(kp_kinesis_record *head);

/* data_len + partition_key_len: what counts toward PutRecords' 5 MiB and the record
 * limit. */
size_t kp_kinesis_record_size(const kp_kinesis_record *kr);

/* Builds a raw (unaggregated) Kinesis record holding rec alone, over rec's data and
 * partition key; its explicit hash key is rec's own, canonical, or none. rec is taken
 * only on success. NULL on allocation failure. */
kp_kinesis_record *kp_kinesis_record_single(kp_record *rec, int shard);

typedef struct kp_aggregator_limits {
  bool enabled;           /* AggregationEnabled */
  uint64_t max_count;     /* AggregationMaxCount */
  size_t max_size;        /* AggregationMaxSize */
  size_t max_record_size; /* Kinesis limit on data + partition key: 1 MiB */
  /* Records whose data is in the shared data file are referenced, not copied, and their
   * aggregates come out gathered (kp_kinesis_record.iov): for request encodings sent
   * as a gather list (CBOR). */
  bool gather;
} kp_aggregator_limits;

typedef struct kp_aggregator kp_aggregator;

/* Returns a new empty aggregator for shard index `shard`, or NULL on allocation
 * failure. */
kp_aggregator *kp_aggregator_new(const kp_aggregator_limits *lim, int shard);

/* Frees the aggregator and the user records it buffers. It must not be in a heap. */
void kp_aggregator_free(kp_aggregator *a);

/* Adds rec (ownership passes). An aggregate's size (data + outer partition key) never
 * exceeds min(max_size, max_record_size), nor its count max_count. If rec does not fit
 * in the current aggregate, that aggregate is completed and returned in *out (caller
 * owns it) and rec starts a new one. With aggregation disabled (or max_count 1) rec is
 * returned at once, raw. A record that nothing could ever join (too big for any
 * aggregate of two) is returned at once, raw, when the aggregator was empty; otherwise
 * it waits alone until the next add, flush or its deadline.
 * Returns 0, or -1 on allocation failure: rec is not taken, and *out is still valid (a
 * completed aggregate may have been returned before the failure). */
int kp_aggregator_add(kp_aggregator *a, kp_record *rec, kp_kinesis_record **out);

/* Completes the current aggregate and returns it; NULL if empty or on allocation
 * failure (then the records stay buffered). */
kp_kinesis_record *kp_aggregator_flush(kp_aggregator *a);

/* Earliest deadline of the buffered records; INFINITY when empty. O(1). */
double kp_aggregator_deadline(const kp_aggregator *a);

/* Earliest expiry of the buffered records; INFINITY when empty. O(1). */
double kp_aggregator_expiry(const kp_aggregator *a);

/* Number of buffered user records. */
size_t kp_aggregator_count(const kp_aggregator *a);

/* Size (data + outer partition key) of the aggregate as it stands; 0 when empty. */
size_t kp_aggregator_size(const kp_aggregator *a);

int kp_aggregator_shard(const kp_aggregator *a);

/* Removes and returns all buffered user records, in order (for a shard-map refresh:
 * they are re-routed). The aggregator is left empty. */
kp_record *kp_aggregator_drain(kp_aggregator *a);

/* The aggregator's slot for a kp_deadline_heap, and back. */
kp_heap_item *kp_aggregator_heap_item(kp_aggregator *a);
kp_aggregator *kp_aggregator_from_heap_item(kp_heap_item *it);

#endif
