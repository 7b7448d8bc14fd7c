// KP_TEST_LIBS: kp_producer_core
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#include <errno.h>

#include "producer/deadline_heap.h"

typedef struct owner {
  int id;
  kp_heap_item item;
  int in_oracle;
} owner;

/* Heap shape: every slot knows its index and no child is smaller than its parent. */
static void check_invariant(const kp_deadline_heap *h) {
  for (size_t i = 0; i < h->len; i++) {
    assert_int_equal(h->items[i]->idx, i);
    if (i > 0)
      assert_false(h->items[i]->key < h->items[(i - 1) / 2]->key);
  }
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Oracle: the smallest key among items marked in it (a linear scan). */
static double oracle_min(owner *o, size_t n, size_t *count) {
  double m = 0;
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    if (o[i].in_oracle) {
      if (c == 0 || o[i].item.key < m)
        m = o[i].item.key;
      c++;
    }
  *count = c;
  return m;
}

static void random_ops_match_linear_scan_oracle(void **state) {
  enum { N = 300 };
  owner *o = calloc(N, sizeof *o);
  kp_deadline_heap h;
  kp_deadline_heap_init(&h);
  for (int i = 0; i < N; i++) {
    o[i].id = i;
    kp_heap_item_init(&o[i].item);
  }
  for (int step = 0; step < 20000; step++) {
    owner *x = &o[rnd() % N];
    /* Few distinct keys so that ties are exercised too. */
    double key = (double)(rnd() % 200) / 4.0;
    switch (rnd() % 5) {
    case 0:
    case 1:
      if (x->in_oracle) {
        assert_int_equal(kp_deadline_heap_insert(&h, &x->item, key), -EINVAL);
      } else {
        assert_int_equal(kp_deadline_heap_insert(&h, &x->item, key), 0);
        x->in_oracle = 1;
      }
      break;
    case 2:
      if (x->in_oracle)
        kp_deadline_heap_update(&h, &x->item, key);
      else {
        assert_int_equal(kp_deadline_heap_set(&h, &x->item, key), 0);
        x->in_oracle = 1;
      }
      break;
    case 3:
      kp_deadline_heap_remove(&h, &x->item); /* no-op when not queued */
      x->in_oracle = 0;
      assert_false(kp_heap_item_queued(&x->item));
      break;
    case 4: {
      size_t count;
      double m = oracle_min(o, N, &count);
      kp_heap_item *top = kp_deadline_heap_pop(&h);
      if (count == 0) {
        assert_null(top);
      } else {
        assert_non_null(top);
        owner *p = kp_container_of(top, owner, item);
        assert_true(p->in_oracle);
        assert_true(top->key == m);
        assert_false(kp_heap_item_queued(top));
        p->in_oracle = 0;
      }
      break;
    }
    }
    size_t count;
    double m = oracle_min(o, N, &count);
    assert_int_equal(kp_deadline_heap_size(&h), count);
    kp_heap_item *top = kp_deadline_heap_peek(&h);
    if (count) {
      assert_non_null(top);
      assert_true(top->key == m);
    } else {
      assert_null(top);
    }
    if (step % 97 == 0)
      check_invariant(&h);
  }
  check_invariant(&h);
  kp_deadline_heap_destroy(&h);
  for (int i = 0; i < N; i++)
    assert_false(kp_heap_item_queued(&o[i].item));
  free(o);
}

static void pops_come_out_sorted(void **state) {
  enum { N = 1000 };
  owner o[N];
  kp_deadline_heap h = KP_DEADLINE_HEAP_INIT;
  for (int i = 0; i < N; i++) {
    kp_heap_item_init(&o[i].item);
    assert_int_equal(kp_deadline_heap_insert(&h, &o[i].item, (double)(rnd() % 100000)), 0);
  }
  double prev = -1;
  for (int i = 0; i < N; i++) {
    kp_heap_item *it = kp_deadline_heap_pop(&h);
    assert_non_null(it);
    assert_true(it->key >= prev);
    prev = it->key;
  }
  assert_null(kp_deadline_heap_pop(&h));
  kp_deadline_heap_destroy(&h);
}

static void update_moves_both_ways_and_remove_of_foreign_item_is_ignored(void **state) {
  owner a, b, c, stranger;
  kp_deadline_heap h, other;
  kp_deadline_heap_init(&h);
  kp_deadline_heap_init(&other);
  kp_heap_item_init(&a.item);
  kp_heap_item_init(&b.item);
  kp_heap_item_init(&c.item);
  kp_heap_item_init(&stranger.item);
  kp_deadline_heap_insert(&h, &a.item, 1.0);
  kp_deadline_heap_insert(&h, &b.item, 2.0);
  kp_deadline_heap_insert(&h, &c.item, 3.0);
  kp_deadline_heap_insert(&other, &stranger.item, 0.5);
  assert_ptr_equal(kp_deadline_heap_peek(&h), &a.item);
  kp_deadline_heap_update(&h, &c.item, 0.0);
  assert_ptr_equal(kp_deadline_heap_peek(&h), &c.item);
  kp_deadline_heap_update(&h, &c.item, 10.0);
  assert_ptr_equal(kp_deadline_heap_peek(&h), &a.item);
  kp_deadline_heap_remove(&h, &stranger.item); /* idx 0 is a's slot here, not stranger's */
  assert_int_equal(kp_deadline_heap_size(&h), 3);
  assert_true(kp_heap_item_queued(&stranger.item));
  kp_deadline_heap_remove(&h, &a.item);
  assert_ptr_equal(kp_deadline_heap_peek(&h), &b.item);
  kp_deadline_heap_destroy(&h);
  kp_deadline_heap_destroy(&other);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_ops_match_linear_scan_oracle),
      cmocka_unit_test(pops_come_out_sorted),
      cmocka_unit_test(update_moves_both_ways_and_remove_of_foreign_item_is_ignored),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
