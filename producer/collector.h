/* Collector: one per stream. Batches Kinesis records into PutRecords requests within
 * CollectionMaxCount (<= 500) and CollectionMaxSize (<= 5 MiB, data + partition keys).
 *
 * Pure logic: no I/O, no clock. The caller keeps collectors with a deadline in a
 * kp_deadline_heap through kp_collector_heap_item(). */
#ifndef KP_PRODUCER_COLLECTOR_H
#define KP_PRODUCER_COLLECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "producer/aggregator.h"
#include "producer/deadline_heap.h"

/* Kinesis PutRecords limits; larger settings are clamped to them. */
#define KP_PUT_RECORDS_MAX_COUNT 500u
#define KP_PUT_RECORDS_MAX_BYTES (5u * 1024 * 1024)

/* One PutRecords request's worth of Kinesis records, in order, linked by next. */
typedef struct kp_batch {
  kp_kinesis_record *head, *tail;
  uint32_t count;
  size_t bytes;    /* sum of kp_kinesis_record_size */
  double deadline; /* earliest deadline of its Kinesis records */
} kp_batch;

/* Frees the batch; with free_records also its Kinesis records and their user records,
 * otherwise the caller has taken the list at b->head. NULL is a no-op. */
void kp_batch_free(kp_batch *b, bool free_records);

typedef struct kp_collector kp_collector;

/* max_count is clamped to 1..500, max_bytes to at most 5 MiB (0 means 5 MiB). NULL on
 * allocation failure. */
kp_collector *kp_collector_new(uint32_t max_count, size_t max_bytes);

/* Frees the collector and the batch in progress with all its records. It must not be
 * in a heap. */
void kp_collector_free(kp_collector *c);

/* Adds kr (ownership passes). If kr does not fit in the current batch, that batch is
 * returned in *full_out first (caller owns it) and kr starts a new one; otherwise, if
 * the batch becomes full (count or bytes at the limit) it is returned. Only one batch
 * is returned per call, so a kr that fills a new batch on its own waits for the next
 * add, flush or its deadline. A kr larger than max_bytes still travels, alone.
 * Returns 0, or -ENOMEM (kr not taken; *full_out is still valid). */
int kp_collector_add(kp_collector *c, kp_kinesis_record *kr, kp_batch **full_out);

/* Returns the batch in progress; NULL if empty. */
kp_batch *kp_collector_flush(kp_collector *c);

/* Earliest deadline in the batch in progress; INFINITY when empty. O(1). */
double kp_collector_deadline(const kp_collector *c);

/* Kinesis records and bytes in the batch in progress. */
size_t kp_collector_count(const kp_collector *c);
size_t kp_collector_bytes(const kp_collector *c);

/* The collector's slot for a kp_deadline_heap, and back. */
kp_heap_item *kp_collector_heap_item(kp_collector *c);
kp_collector *kp_collector_from_heap_item(kp_heap_item *it);

#endif
