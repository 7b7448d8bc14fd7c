// KP_TEST_LIBS: kp_client
/* The client's shared data pool (client/shared_pool.c): placement, chunk recycling,
 * exhaustion, the file's seals, what another mapping of the file (the daemon's) sees,
 * and allocations and frees from several threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client/shared_pool.h"

#define CHUNK (64u * 1024u)

static kpc_pool *new_pool(size_t size) {
  char err[256] = "";
  kpc_pool *p = kpc_pool_new(size, CHUNK, err, sizeof err);
  if (!p)
    fail_msg("kpc_pool_new: %s", err);
  return p;
}

static void places_records_on_cache_lines_inside_one_chunk(void **state) {
  kpc_pool *p = new_pool(4 * CHUNK);
  assert_int_equal(kpc_pool_size(p), 4 * CHUNK);
  uint64_t a = kpc_pool_alloc(p, 100), b = kpc_pool_alloc(p, 1), c = kpc_pool_alloc(p, 0);
  assert_true(a != KPC_POOL_NONE && b != KPC_POOL_NONE && c != KPC_POOL_NONE);
  assert_int_equal(a % 64, 0);
  assert_int_equal(b, a + 128); /* 100 bytes take two lines */
  assert_int_equal(c, b + 64);
  assert_int_equal(kpc_pool_chunks_used(p), 1);
  /* What this side writes, a read-only mapping of the file (the daemon's) reads. */
  memcpy(kpc_pool_at(p, a), "hello", 5);
  const uint8_t *ro = mmap(NULL, kpc_pool_size(p), PROT_READ, MAP_SHARED, kpc_pool_fd(p), 0);
  assert_true(ro != MAP_FAILED);
  assert_memory_equal(ro + a, "hello", 5);
  munmap((void *)ro, kpc_pool_size(p));
  kpc_pool_free(p, a);
  kpc_pool_free(p, b);
  kpc_pool_free(p, c);
  assert_int_equal(kpc_pool_chunks_used(p), 1); /* still the current chunk */
  kpc_pool_destroy(p);
}

static void the_file_cannot_change_size(void **state) {
  kpc_pool *p = new_pool(2 * CHUNK);
  int seals = fcntl(kpc_pool_fd(p), F_GET_SEALS);
  assert_true(seals & F_SEAL_SHRINK);
  assert_true(seals & F_SEAL_GROW);
  assert_true(seals & F_SEAL_SEAL);
  assert_int_not_equal(ftruncate(kpc_pool_fd(p), 0), 0);
  assert_int_not_equal(fcntl(kpc_pool_fd(p), F_GETFD) & FD_CLOEXEC, 0);
  kpc_pool_destroy(p);
}

static void a_chunk_is_reused_once_its_last_record_is_freed(void **state) {
  kpc_pool *p = new_pool(4 * CHUNK);
  /* Two records of half a chunk fill chunk 0; the third opens chunk 1. */
  uint64_t a = kpc_pool_alloc(p, CHUNK / 2), b = kpc_pool_alloc(p, CHUNK / 2);
  uint64_t c = kpc_pool_alloc(p, CHUNK / 2);
  assert_int_equal(a, 0);
  assert_int_equal(b, CHUNK / 2);
  assert_int_equal(c, CHUNK);
  assert_int_equal(kpc_pool_chunks_used(p), 2);
  kpc_pool_free(p, a);
  assert_int_equal(kpc_pool_chunks_used(p), 2); /* b still holds chunk 0 */
  kpc_pool_free(p, b);
  assert_int_equal(kpc_pool_chunks_used(p), 1);
  /* Chunk 1 fills up; the next chunk taken is the one freed last (0), not 2. */
  assert_int_equal(kpc_pool_alloc(p, CHUNK / 2), CHUNK + CHUNK / 2);
  assert_int_equal(kpc_pool_alloc(p, 10), 0);
  kpc_pool_destroy(p);
}

static void runs_out_and_recovers(void **state) {
  kpc_pool *p = new_pool(2 * CHUNK);
  assert_int_equal(kpc_pool_alloc(p, CHUNK + 1), KPC_POOL_NONE); /* never fits */
  uint64_t a = kpc_pool_alloc(p, CHUNK), b = kpc_pool_alloc(p, CHUNK);
  assert_true(a != KPC_POOL_NONE && b != KPC_POOL_NONE && a != b);
  assert_int_equal(kpc_pool_alloc(p, 1), KPC_POOL_NONE);
  assert_int_equal(kpc_pool_alloc(p, 1), KPC_POOL_NONE); /* and stays so, consistently */
  kpc_pool_free(p, a);
  uint64_t c = kpc_pool_alloc(p, 1);
  assert_int_equal(c, a);
  kpc_pool_free(p, b);
  kpc_pool_free(p, c);
  kpc_pool_destroy(p);
}

static void rejects_bad_chunk_sizes(void **state) {
  char err[256] = "";
  assert_null(kpc_pool_new(CHUNK, 3 * 4096, err, sizeof err));
  assert_non_null(strstr(err, "power of two"));
  assert_null(kpc_pool_new(CHUNK, 1024, err, sizeof err));
}

/* Threads allocate records of assorted sizes, fill them with a pattern of their own,
 * and free them later in a scrambled order; any overlap between live records shows
 * as a pattern overwritten by another thread. */
#define THREADS 4
#define ROUNDS 20000
#define LIVE 64

static kpc_pool *shared;

static void *worker(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  uint64_t live[LIVE];
  size_t len[LIVE];
  uint8_t tag = (uint8_t)(0x40 + (uintptr_t)arg);
  for (size_t i = 0; i < LIVE; i++)
    live[i] = KPC_POOL_NONE;
  for (int r = 0; r < ROUNDS; r++) {
    size_t i = (size_t)rand_r(&seed) % LIVE;
    if (live[i] != KPC_POOL_NONE) {
      const uint8_t *d = kpc_pool_at(shared, live[i]);
      for (size_t k = 0; k < len[i]; k++)
        if (d[k] != tag)
          return (void *)1;
      kpc_pool_free(shared, live[i]);
      live[i] = KPC_POOL_NONE;
    }
    len[i] = (size_t)rand_r(&seed) % 3000;
    live[i] = kpc_pool_alloc(shared, len[i]);
    if (live[i] != KPC_POOL_NONE)
      memset(kpc_pool_at(shared, live[i]), tag, len[i]);
  }
  for (size_t i = 0; i < LIVE; i++)
    if (live[i] != KPC_POOL_NONE)
      kpc_pool_free(shared, live[i]);
  return NULL;
}

static void threads_never_share_space(void **state) {
  shared = new_pool(16 * CHUNK);
  pthread_t t[THREADS];
  for (uintptr_t i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)i), 0);
  for (int i = 0; i < THREADS; i++) {
    void *rc;
    pthread_join(t[i], &rc);
    assert_null(rc);
  }
  assert_int_equal(kpc_pool_chunks_used(shared), 1); /* everything back but the current */
  kpc_pool_destroy(shared);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(places_records_on_cache_lines_inside_one_chunk),
      cmocka_unit_test(the_file_cannot_change_size),
      cmocka_unit_test(a_chunk_is_reused_once_its_last_record_is_freed),
      cmocka_unit_test(runs_out_and_recovers),
      cmocka_unit_test(rejects_bad_chunk_sizes),
      cmocka_unit_test(threads_never_share_space),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
