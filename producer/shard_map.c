#include "producer/shard_map.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kp_shard {
  kp_hash_key start, end;
  char *id;
} kp_shard;

typedef struct kp_shard_ref {
  const char *id;
  size_t idx;
} kp_shard_ref;

struct kp_shard_map {
  kp_shard *shards; /* by start key after finalize */
  size_t n, cap;
  kp_shard_ref *by_id; /* sorted by id */
  bool final;
};

kp_shard_map *kp_shard_map_new(void) {
  return calloc(1, sizeof(kp_shard_map));
}

void kp_shard_map_free(kp_shard_map *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->n; i++)
    free(m->shards[i].id);
  free(m->shards);
  free(m->by_id);
  free(m);
}

int kp_shard_map_add(kp_shard_map *m, const char *shard_id, const kp_hash_key *start,
                     const kp_hash_key *end) {
  if (!m || !shard_id || !start || !end || m->final)
    return -EINVAL;
  /* Indices are returned as int. */
  if (m->n >= INT_MAX)
    return -ENOMEM;
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 8;
    kp_shard *s = realloc(m->shards, cap * sizeof *s);
    if (!s)
      return -ENOMEM;
    m->shards = s;
    m->cap = cap;
  }
  char *id = strdup(shard_id);
  if (!id)
    return -ENOMEM;
  kp_shard *s = &m->shards[m->n++];
  s->start = *start;
  s->end = *end;
  s->id = id;
  return 0;
}

static int cmp_start(const void *a, const void *b) {
  const kp_shard *x = a, *y = b;
  int c = kp_hash_key_cmp(&x->start, &y->start);
  return c ? c : kp_hash_key_cmp(&x->end, &y->end);
}

static int cmp_id(const void *a, const void *b) {
  return strcmp(((const kp_shard_ref *)a)->id, ((const kp_shard_ref *)b)->id);
}

/* k + 1 in place; returns true on wrap-around (k was 2^128-1). */
static bool hk_inc(kp_hash_key *k) {
  for (int i = 15; i >= 0; i--)
    if (++k->be[i] != 0)
      return false;
  return true;
}

static bool hk_is(const kp_hash_key *k, uint8_t byte) {
  for (int i = 0; i < 16; i++)
    if (k->be[i] != byte)
      return false;
  return true;
}

int kp_shard_map_finalize(kp_shard_map *m, char *errstr, size_t errstr_size) {
  char a[KP_HASH_KEY_DEC_MAX], b[KP_HASH_KEY_DEC_MAX];
  if (!m || m->final)
    return -EINVAL;
#define FAIL(...)                                                                                  \
  do {                                                                                             \
    if (errstr && errstr_size)                                                                     \
      snprintf(errstr, errstr_size, __VA_ARGS__);                                                  \
    return -EINVAL;                                                                                \
  } while (0)
  if (m->n == 0)
    FAIL("no open shards");
  for (size_t i = 0; i < m->n; i++)
    if (kp_hash_key_cmp(&m->shards[i].start, &m->shards[i].end) > 0) {
      kp_hash_key_format(&m->shards[i].start, a);
      kp_hash_key_format(&m->shards[i].end, b);
      FAIL("shard %s starts at %s after its end %s", m->shards[i].id, a, b);
    }
  qsort(m->shards, m->n, sizeof *m->shards, cmp_start);

  kp_shard_ref *by_id = malloc(m->n * sizeof *by_id);
  if (!by_id)
    return -ENOMEM;
  for (size_t i = 0; i < m->n; i++)
    by_id[i] = (kp_shard_ref){m->shards[i].id, i};
  qsort(by_id, m->n, sizeof *by_id, cmp_id);
  for (size_t i = 1; i < m->n; i++)
    if (strcmp(by_id[i - 1].id, by_id[i].id) == 0) {
      const char *dup = by_id[i].id;
      free(by_id);
      FAIL("shard %s is listed twice", dup);
    }

  int rc = 0;
  char msg[256] = "";
  if (!hk_is(&m->shards[0].start, 0x00)) {
    kp_hash_key_format(&m->shards[0].start, a);
    snprintf(msg, sizeof msg, "gap: no shard holds hash keys below %s (first shard %s)", a,
             m->shards[0].id);
    rc = -EINVAL;
  }
  for (size_t i = 1; i < m->n && !rc; i++) {
    const kp_shard *p = &m->shards[i - 1], *s = &m->shards[i];
    kp_hash_key next = p->end;
    /* p->end + 1 must be s->start; a wrap means p already reaches 2^128-1. */
    bool wrapped = hk_inc(&next);
    int c = wrapped ? -1 : kp_hash_key_cmp(&s->start, &next);
    if (c < 0) {
      kp_hash_key_format(&s->start, a);
      kp_hash_key_format(&p->end, b);
      snprintf(msg, sizeof msg, "overlap: shard %s starts at %s but shard %s ends at %s", s->id, a,
               p->id, b);
      rc = -EINVAL;
    } else if (c > 0) {
      kp_hash_key_format(&p->end, a);
      kp_hash_key_format(&s->start, b);
      snprintf(msg, sizeof msg, "gap: shard %s ends at %s but shard %s starts at %s", p->id, a,
               s->id, b);
      rc = -EINVAL;
    }
  }
  if (!rc && !hk_is(&m->shards[m->n - 1].end, 0xFF)) {
    kp_hash_key_format(&m->shards[m->n - 1].end, a);
    snprintf(msg, sizeof msg, "gap: no shard holds hash keys above %s (last shard %s)", a,
             m->shards[m->n - 1].id);
    rc = -EINVAL;
  }
  if (rc) {
    free(by_id);
    FAIL("%s", msg);
  }
#undef FAIL
  m->by_id = by_id;
  m->final = true;
  return 0;
}

int kp_shard_map_lookup(const kp_shard_map *m, const kp_hash_key *hk) {
  if (!m || !m->final)
    return -1;
  /* Last shard whose start <= hk; the ranges tile the space, so it holds hk. */
  size_t lo = 0, hi = m->n; /* invariant: answer in [lo, hi) */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (kp_hash_key_cmp(&m->shards[mid].start, hk) <= 0)
      lo = mid;
    else
      hi = mid;
  }
  if (kp_hash_key_cmp(&m->shards[lo].start, hk) > 0 || kp_hash_key_cmp(hk, &m->shards[lo].end) > 0)
    return -1;
  return (int)lo;
}

size_t kp_shard_map_count(const kp_shard_map *m) {
  return m ? m->n : 0;
}

const char *kp_shard_map_shard_id(const kp_shard_map *m, size_t idx) {
  return m && idx < m->n ? m->shards[idx].id : NULL;
}

int kp_shard_map_range(const kp_shard_map *m, size_t idx, kp_hash_key *start, kp_hash_key *end) {
  if (!m || idx >= m->n)
    return -EINVAL;
  if (start)
    *start = m->shards[idx].start;
  if (end)
    *end = m->shards[idx].end;
  return 0;
}

int kp_shard_map_index_of(const kp_shard_map *m, const char *shard_id) {
  if (!m || !m->final || !shard_id)
    return -1;
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(m->by_id[mid].id, shard_id);
    if (c == 0)
      return (int)m->by_id[mid].idx;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

bool kp_shard_map_owns(const kp_shard_map *m, const char *shard_id, const kp_hash_key *hk) {
  int i = kp_shard_map_index_of(m, shard_id);
  if (i < 0)
    return false;
  const kp_shard *s = &m->shards[i];
  return kp_hash_key_cmp(&s->start, hk) <= 0 && kp_hash_key_cmp(hk, &s->end) <= 0;
}
