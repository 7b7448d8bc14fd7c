/* A binary min-heap of items keyed by a deadline (double seconds on the loop clock).
 *
 * Items are intrusive: a kp_heap_item is embedded in its owner (an aggregator, a
 * collector) and remembers its own slot, so update and remove are O(log n) without a
 * search, and the heap never allocates per item. One ev_timer watches the minimum.
 * Keys must not be NaN. Not thread-safe. */
#ifndef KP_PRODUCER_DEADLINE_HEAP_H
#define KP_PRODUCER_DEADLINE_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* idx of an item that is in no heap. */
#define KP_HEAP_NONE SIZE_MAX

typedef struct kp_heap_item {
  double key;
  size_t idx; /* slot in the heap, KP_HEAP_NONE when not in one */
} kp_heap_item;

/* From a pointer to a member back to its owner. */
#define kp_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct kp_deadline_heap {
  kp_heap_item **items;
  size_t len, cap;
} kp_deadline_heap;

#define KP_DEADLINE_HEAP_INIT                                                                      \
  { NULL, 0, 0 }

/* Marks an item as in no heap; call once when its owner is created. */
static inline void kp_heap_item_init(kp_heap_item *it) {
  it->key = 0;
  it->idx = KP_HEAP_NONE;
}

static inline bool kp_heap_item_queued(const kp_heap_item *it) {
  return it->idx != KP_HEAP_NONE;
}

void kp_deadline_heap_init(kp_deadline_heap *h);
/* Frees the heap's array; items are the owners' and are only marked as out of it. */
void kp_deadline_heap_destroy(kp_deadline_heap *h);

static inline size_t kp_deadline_heap_size(const kp_deadline_heap *h) {
  return h->len;
}

/* Inserts an item that is in no heap. Returns 0, -EINVAL if it is already queued, or
 * -ENOMEM. */
int kp_deadline_heap_insert(kp_deadline_heap *h, kp_heap_item *it, double key);
/* Changes the key of a queued item. */
void kp_deadline_heap_update(kp_deadline_heap *h, kp_heap_item *it, double key);
/* Inserts or updates; returns 0 or -ENOMEM (only an insert can fail). */
int kp_deadline_heap_set(kp_deadline_heap *h, kp_heap_item *it, double key);
/* Removes a queued item; does nothing if it is in no heap. */
void kp_deadline_heap_remove(kp_deadline_heap *h, kp_heap_item *it);
/* The item with the smallest key, or NULL when empty. */
kp_heap_item *kp_deadline_heap_peek(const kp_deadline_heap *h);
/* Removes and returns the item with the smallest key, or NULL when empty. */
kp_heap_item *kp_deadline_heap_pop(kp_deadline_heap *h);

#endif
