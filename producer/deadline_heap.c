#include "producer/deadline_heap.h"

#include <errno.h>
#include <stdlib.h>

void kp_deadline_heap_init(kp_deadline_heap *h) {
  h->items = NULL;
  h->len = h->cap = 0;
}

void kp_deadline_heap_destroy(kp_deadline_heap *h) {
  for (size_t i = 0; i < h->len; i++)
    h->items[i]->idx = KP_HEAP_NONE;
  free(h->items);
  kp_deadline_heap_init(h);
}

static void place(kp_deadline_heap *h, size_t i, kp_heap_item *it) {
  h->items[i] = it;
  it->idx = i;
}

static void sift_up(kp_deadline_heap *h, size_t i) {
  kp_heap_item *it = h->items[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!(it->key < h->items[parent]->key))
      break;
    place(h, i, h->items[parent]);
    i = parent;
  }
  place(h, i, it);
}

static void sift_down(kp_deadline_heap *h, size_t i) {
  kp_heap_item *it = h->items[i];
  for (;;) {
    size_t l = 2 * i + 1;
    if (l >= h->len)
      break;
    size_t c = l;
    if (l + 1 < h->len && h->items[l + 1]->key < h->items[l]->key)
      c = l + 1;
    if (!(h->items[c]->key < it->key))
      break;
    place(h, i, h->items[c]);
    i = c;
  }
  place(h, i, it);
}

int kp_deadline_heap_insert(kp_deadline_heap *h, kp_heap_item *it, double key) {
  if (it->idx != KP_HEAP_NONE)
    return -EINVAL;
  if (h->len == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 16;
    kp_heap_item **p = realloc(h->items, cap * sizeof *p);
    if (!p)
      return -ENOMEM;
    h->items = p;
    h->cap = cap;
  }
  it->key = key;
  h->items[h->len] = it;
  it->idx = h->len++;
  sift_up(h, it->idx);
  return 0;
}

void kp_deadline_heap_update(kp_deadline_heap *h, kp_heap_item *it, double key) {
  if (it->idx == KP_HEAP_NONE || it->idx >= h->len || h->items[it->idx] != it)
    return;
  double old = it->key;
  it->key = key;
  if (key < old)
    sift_up(h, it->idx);
  else if (old < key)
    sift_down(h, it->idx);
}

int kp_deadline_heap_set(kp_deadline_heap *h, kp_heap_item *it, double key) {
  if (it->idx == KP_HEAP_NONE)
    return kp_deadline_heap_insert(h, it, key);
  kp_deadline_heap_update(h, it, key);
  return 0;
}

void kp_deadline_heap_remove(kp_deadline_heap *h, kp_heap_item *it) {
  size_t i = it->idx;
  /* Tolerate items of another heap or stale indices rather than corrupt this one. */
  if (i == KP_HEAP_NONE || i >= h->len || h->items[i] != it)
    return;
  it->idx = KP_HEAP_NONE;
  kp_heap_item *last = h->items[--h->len];
  if (last == it)
    return;
  place(h, i, last);
  /* The moved item may belong above or below the hole. */
  if (i > 0 && last->key < h->items[(i - 1) / 2]->key)
    sift_up(h, i);
  else
    sift_down(h, i);
}

kp_heap_item *kp_deadline_heap_peek(const kp_deadline_heap *h) {
  return h->len ? h->items[0] : NULL;
}

kp_heap_item *kp_deadline_heap_pop(kp_deadline_heap *h) {
  kp_heap_item *it = kp_deadline_heap_peek(h);
  if (it)
    kp_deadline_heap_remove(h, it);
  return it;
}
