#include "producer/collector.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

struct kp_collector {
  kp_heap_item heap;
  uint32_t max_count;
  size_t max_bytes;
  kp_batch *cur; /* NULL when empty */
};

void kp_batch_free(kp_batch *b, bool free_records) {
  if (!b)
    return;
  if (free_records) {
    kp_kinesis_record *kr = b->head;
    while (kr) {
      kp_kinesis_record *next = kr->next;
      kp_kinesis_record_free(kr, true);
      kr = next;
    }
  }
  free(b);
}

kp_collector *kp_collector_new(uint32_t max_count, size_t max_bytes) {
  kp_collector *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  kp_heap_item_init(&c->heap);
  c->max_count = max_count == 0                         ? 1
                 : max_count > KP_PUT_RECORDS_MAX_COUNT ? KP_PUT_RECORDS_MAX_COUNT
                                                        : max_count;
  c->max_bytes =
      max_bytes == 0 || max_bytes > KP_PUT_RECORDS_MAX_BYTES ? KP_PUT_RECORDS_MAX_BYTES : max_bytes;
  return c;
}

void kp_collector_free(kp_collector *c) {
  if (!c)
    return;
  kp_batch_free(c->cur, true);
  free(c);
}

static bool is_full(const kp_collector *c, const kp_batch *b) {
  return b->count >= c->max_count || b->bytes >= c->max_bytes;
}

int kp_collector_add(kp_collector *c, kp_kinesis_record *kr, kp_batch **full_out) {
  *full_out = NULL;
  size_t size = kp_kinesis_record_size(kr);
  kp_batch *b = c->cur;
  /* A batch may already be at or over max_bytes (an oversized record alone). */
  if (b &&
      (b->count >= c->max_count || b->bytes >= c->max_bytes || size > c->max_bytes - b->bytes)) {
    /* Allocate the next batch before handing this one out, so failure changes nothing. */
    kp_batch *nb = calloc(1, sizeof *nb);
    if (!nb)
      return -ENOMEM;
    *full_out = b;
    c->cur = b = nb;
    b->deadline = INFINITY;
  } else if (!b) {
    b = calloc(1, sizeof *b);
    if (!b)
      return -ENOMEM;
    b->deadline = INFINITY;
    c->cur = b;
  }
  kr->next = NULL;
  if (b->tail)
    b->tail->next = kr;
  else
    b->head = kr;
  b->tail = kr;
  b->count++;
  b->bytes += size;
  if (kr->deadline < b->deadline)
    b->deadline = kr->deadline;
  if (!*full_out && is_full(c, b)) {
    *full_out = b;
    c->cur = NULL;
  }
  return 0;
}

kp_batch *kp_collector_flush(kp_collector *c) {
  kp_batch *b = c->cur;
  c->cur = NULL;
  return b;
}

double kp_collector_deadline(const kp_collector *c) {
  return c->cur ? c->cur->deadline : INFINITY;
}

size_t kp_collector_count(const kp_collector *c) {
  return c->cur ? c->cur->count : 0;
}
size_t kp_collector_bytes(const kp_collector *c) {
  return c->cur ? c->cur->bytes : 0;
}

kp_heap_item *kp_collector_heap_item(kp_collector *c) {
  return &c->heap;
}

kp_collector *kp_collector_from_heap_item(kp_heap_item *it) {
  return kp_container_of(it, kp_collector, heap);
}
