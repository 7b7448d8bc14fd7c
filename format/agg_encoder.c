#include "format/agg_encoder.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "format/pbwire.h"

const uint8_t kp_agg_magic[4] = {0xF3, 0x89, 0x9A, 0xC2};

/* Field tags, each one byte on the wire. */
#define TAG_PK_TABLE 0x0A  /* AggregatedRecord.partition_key_table = 1, LEN */
#define TAG_EHK_TABLE 0x12 /* AggregatedRecord.explicit_hash_key_table = 2, LEN */
#define TAG_RECORD 0x1A    /* AggregatedRecord.records = 3, LEN */
#define TAG_R_PK_IDX 0x08  /* Record.partition_key_index = 1, VARINT */
#define TAG_R_EHK_IDX 0x10 /* Record.explicit_hash_key_index = 2, VARINT */
#define TAG_R_DATA 0x1A    /* Record.data = 3, LEN */

#define NO_IDX UINT32_MAX

/* A key already in a table: its payload lives in the table's wire bytes, so the hash set
 * stores offsets (the buffer may move) and nothing is copied twice. */
typedef struct kp_key {
  size_t off;
  size_t len;
  uint32_t hash;
} kp_key;

/* Open-addressing slot. A slot is live only if gen matches the set's generation, so reset
 * is O(1) instead of clearing a table that one huge aggregate may have grown. */
typedef struct kp_slot {
  uint32_t gen;
  uint32_t hash;
  uint32_t idx;
} kp_slot;

/* De-duplicating key table: the wire bytes of one repeated-string field plus a hash set
 * over them, giving each distinct key its index in order of first appearance. */
typedef struct kp_keyset {
  kp_buf wire; /* concatenated (tag, length, bytes) entries, ready to emit */
  kp_key *keys;
  size_t nkeys;
  size_t keys_cap;
  kp_slot *slots;
  size_t mask; /* slot count - 1; slot count is a power of two */
  uint32_t gen;
  uint8_t tag;
} kp_keyset;

/* A record's data left where it is (kp_agg_encoder_add_ref): it belongs at offset `at`
 * of the records' wire bytes, which hold everything else. */
typedef struct kp_agg_ref {
  size_t at;
  const uint8_t *data;
  size_t len;
} kp_agg_ref;

struct kp_agg_encoder {
  kp_keyset pks;
  kp_keyset ehks;
  kp_buf records; /* concatenated Record fields (tag 3), but for referenced data */
  kp_agg_ref *refs;
  size_t nrefs, refs_cap;
  size_t ref_bytes; /* sum of refs[].len */
  kp_buf out;       /* the finished aggregate */
  size_t count;
  size_t first_data_off; /* first record's data within records, for raw emission */
  size_t first_data_len;
  kp_hash_key first_hash_key;
};

#define KS_INITIAL_SLOTS 64

/* Byte-string hash: 8 bytes per multiply round, keys are short and hashed on every add.
 * Quality only needs to spread partition keys over a small power-of-two table. */
static inline uint64_t kp_rd64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static inline uint64_t kp_fmix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

static uint32_t kp_key_hash(const void *key, size_t len) {
  const unsigned char *p = (const unsigned char *)key;
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)len * 0xC2B2AE3D27D4EB4FULL);
  while (len >= 8) {
    h = (h ^ (kp_rd64(p) * 0x87C37B91114253D5ULL)) * 0x4CF5AD432745937FULL;
    h = (h << 31) | (h >> 33);
    p += 8;
    len -= 8;
  }
  uint64_t t = 0;
  for (size_t i = 0; i < len; i++)
    t |= (uint64_t)p[i] << (8 * i);
  h ^= t * 0x87C37B91114253D5ULL;
  return (uint32_t)kp_fmix64(h);
}

static int ks_init(kp_keyset *s, uint8_t tag) {
  memset(s, 0, sizeof *s);
  s->tag = tag;
  s->gen = 1;
  s->slots = (kp_slot *)calloc(KS_INITIAL_SLOTS, sizeof *s->slots);
  if (!s->slots)
    return -1;
  s->mask = KS_INITIAL_SLOTS - 1;
  return 0;
}

static void ks_free(kp_keyset *s) {
  kp_buf_free(&s->wire);
  free(s->keys);
  free(s->slots);
}

static void ks_reset(kp_keyset *s) {
  kp_buf_reset(&s->wire);
  s->nkeys = 0;
  if (++s->gen == 0) { /* wrapped: stale slots could look live, so clear them once */
    memset(s->slots, 0, (s->mask + 1) * sizeof *s->slots);
    s->gen = 1;
  }
}

/* Finds key in the set. Returns its index or NO_IDX; *slot_out is where it is or where
 * it would go (linear probing; the load factor stays <= 1/2 so an empty slot exists). */
static uint32_t ks_find(const kp_keyset *s, const char *key, size_t len, uint32_t h,
                        size_t *slot_out) {
  size_t i = h & s->mask;
  for (;;) {
    const kp_slot *sl = &s->slots[i];
    if (sl->gen != s->gen)
      break;
    if (sl->hash == h) {
      const kp_key *k = &s->keys[sl->idx];
      if (k->len == len && (len == 0 || memcmp(s->wire.data + k->off, key, len) == 0)) {
        *slot_out = i;
        return sl->idx;
      }
    }
    i = (i + 1) & s->mask;
  }
  *slot_out = i;
  return NO_IDX;
}

/* Makes room for one more key in the slots and the key array, so the insert that
 * follows cannot fail. Content-preserving, so an abandoned add leaves no trace. */
static int ks_reserve_one(kp_keyset *s) {
  if (s->nkeys >= NO_IDX - 1)
    return -1;
  if (s->nkeys == s->keys_cap) {
    size_t cap = s->keys_cap ? s->keys_cap * 2 : 32;
    kp_key *k = (kp_key *)realloc(s->keys, cap * sizeof *k);
    if (!k)
      return -1;
    s->keys = k;
    s->keys_cap = cap;
  }
  size_t nslots = s->mask + 1;
  if ((s->nkeys + 1) * 2 > nslots) {
    size_t ncap = nslots * 2;
    kp_slot *ns = (kp_slot *)calloc(ncap, sizeof *ns);
    if (!ns)
      return -1;
    /* Rehash from the key array: the slots carry nothing else. A fresh calloc'ed table
     * has gen 0 everywhere, which is never a live generation. */
    for (size_t j = 0; j < s->nkeys; j++) {
      size_t i = s->keys[j].hash & (ncap - 1);
      while (ns[i].gen == s->gen)
        i = (i + 1) & (ncap - 1);
      ns[i].gen = s->gen;
      ns[i].hash = s->keys[j].hash;
      ns[i].idx = (uint32_t)j;
    }
    free(s->slots);
    s->slots = ns;
    s->mask = ncap - 1;
  }
  return 0;
}

/* Appends a new key's wire entry and indexes it. Room must have been reserved. */
static uint32_t ks_insert(kp_keyset *s, size_t slot, const char *key, size_t len, uint32_t h) {
  uint8_t *p = s->wire.data + s->wire.len;
  *p++ = s->tag;
  p += pb_put_varint(p, len);
  if (len)
    memcpy(p, key, len);
  size_t off = (size_t)(p - s->wire.data);
  s->wire.len = off + len;
  uint32_t idx = (uint32_t)s->nkeys++;
  s->keys[idx] = (kp_key){off, len, h};
  s->slots[slot] = (kp_slot){s->gen, h, idx};
  return idx;
}

static size_t proto_len(const kp_agg_encoder *e) {
  return e->pks.wire.len + e->ehks.wire.len + e->records.len + e->ref_bytes;
}

/* Size of the Record message body (without its own tag and length). */
static inline size_t record_body_size(uint32_t pk_idx, uint32_t ehk_idx, size_t data_len) {
  size_t n = 1 + pb_varint_size(pk_idx) + 1 + pb_varint_size(data_len) + data_len;
  if (ehk_idx != NO_IDX)
    n += 1 + pb_varint_size(ehk_idx);
  return n;
}

kp_agg_encoder *kp_agg_encoder_new(void) {
  kp_agg_encoder *e = (kp_agg_encoder *)calloc(1, sizeof *e);
  if (!e)
    return NULL;
  if (ks_init(&e->pks, TAG_PK_TABLE) || ks_init(&e->ehks, TAG_EHK_TABLE)) {
    kp_agg_encoder_free(e);
    return NULL;
  }
  return e;
}

void kp_agg_encoder_free(kp_agg_encoder *e) {
  if (!e)
    return;
  ks_free(&e->pks);
  ks_free(&e->ehks);
  kp_buf_free(&e->records);
  free(e->refs);
  kp_buf_free(&e->out);
  free(e);
}

void kp_agg_encoder_reset(kp_agg_encoder *e) {
  ks_reset(&e->pks);
  ks_reset(&e->ehks);
  kp_buf_reset(&e->records);
  e->nrefs = 0;
  e->ref_bytes = 0;
  kp_buf_reset(&e->out);
  e->count = 0;
}

size_t kp_agg_encoder_count(const kp_agg_encoder *e) {
  return e->count;
}

size_t kp_agg_encoder_size(const kp_agg_encoder *e) {
  if (e->count == 0)
    return 0;
  if (e->count == 1)
    return e->first_data_len;
  return KP_AGG_OVERHEAD + proto_len(e);
}

size_t kp_agg_encoder_size_with(const kp_agg_encoder *e, const char *pk, size_t pk_len,
                                const char *ehk, size_t ehk_len, size_t data_len) {
  if (e->count == 0)
    return data_len;
  size_t slot, grow = 0;
  uint32_t pk_idx = ks_find(&e->pks, pk, pk_len, kp_key_hash(pk, pk_len), &slot);
  if (pk_idx == NO_IDX) {
    pk_idx = (uint32_t)e->pks.nkeys;
    grow += pb_len_field_size(1, pk_len);
  }
  uint32_t ehk_idx = NO_IDX;
  if (ehk) {
    ehk_idx = ks_find(&e->ehks, ehk, ehk_len, kp_key_hash(ehk, ehk_len), &slot);
    if (ehk_idx == NO_IDX) {
      ehk_idx = (uint32_t)e->ehks.nkeys;
      grow += pb_len_field_size(2, ehk_len);
    }
  }
  grow += pb_len_field_size(3, record_body_size(pk_idx, ehk_idx, data_len));
  return KP_AGG_OVERHEAD + proto_len(e) + grow;
}

size_t kp_agg_encoder_outer_pk_len_with(const kp_agg_encoder *e, size_t pk_len) {
  return e->count == 0 ? pk_len : 1;
}

static int add(kp_agg_encoder *e, const char *pk, size_t pk_len, const char *ehk, size_t ehk_len,
               const void *data, size_t data_len, const kp_hash_key *hash_key, bool by_ref) {
  if (!hash_key && e->count == 0)
    return -1;
  /* Lengths this large cannot be real and would overflow the size arithmetic below. */
  if (pk_len > SIZE_MAX / 4 || ehk_len > SIZE_MAX / 4 || data_len > SIZE_MAX / 4)
    return -1;
  /* Phase 1: reserve everything this add could need, so a failure changes nothing. */
  uint32_t pk_h = kp_key_hash(pk, pk_len), ehk_h = 0;
  size_t pk_slot, ehk_slot = 0;
  uint32_t pk_idx = ks_find(&e->pks, pk, pk_len, pk_h, &pk_slot);
  if (pk_idx == NO_IDX) {
    if (ks_reserve_one(&e->pks) || kp_buf_reserve(&e->pks.wire, 1 + 10 + pk_len))
      return -1;
    /* Growth may have rehashed: find the insertion slot again. */
    ks_find(&e->pks, pk, pk_len, pk_h, &pk_slot);
  }
  uint32_t ehk_idx = NO_IDX;
  if (ehk) {
    ehk_h = kp_key_hash(ehk, ehk_len);
    ehk_idx = ks_find(&e->ehks, ehk, ehk_len, ehk_h, &ehk_slot);
    if (ehk_idx == NO_IDX) {
      if (ks_reserve_one(&e->ehks) || kp_buf_reserve(&e->ehks.wire, 1 + 10 + ehk_len))
        return -1;
      ks_find(&e->ehks, ehk, ehk_len, ehk_h, &ehk_slot);
    }
  }
  uint32_t new_pk_idx = pk_idx == NO_IDX ? (uint32_t)e->pks.nkeys : pk_idx;
  uint32_t new_ehk_idx = ehk && ehk_idx == NO_IDX ? (uint32_t)e->ehks.nkeys : ehk_idx;
  size_t body = record_body_size(new_pk_idx, new_ehk_idx, data_len);
  if (kp_buf_reserve(&e->records, 1 + 10 + body - (by_ref ? data_len : 0)))
    return -1;
  if (by_ref && e->nrefs == e->refs_cap) {
    size_t cap = e->refs_cap ? 2 * e->refs_cap : 64;
    kp_agg_ref *r = (kp_agg_ref *)realloc(e->refs, cap * sizeof *r);
    if (!r)
      return -1;
    e->refs = r;
    e->refs_cap = cap;
  }

  /* Phase 2: commit. */
  if (pk_idx == NO_IDX)
    ks_insert(&e->pks, pk_slot, pk, pk_len, pk_h);
  if (ehk && ehk_idx == NO_IDX)
    ks_insert(&e->ehks, ehk_slot, ehk, ehk_len, ehk_h);
  uint8_t *base = e->records.data, *p = base + e->records.len;
  *p++ = TAG_RECORD;
  p += pb_put_varint(p, body);
  *p++ = TAG_R_PK_IDX;
  p += pb_put_varint(p, new_pk_idx);
  if (new_ehk_idx != NO_IDX) {
    *p++ = TAG_R_EHK_IDX;
    p += pb_put_varint(p, new_ehk_idx);
  }
  *p++ = TAG_R_DATA;
  p += pb_put_varint(p, data_len);
  size_t at = (size_t)(p - base);
  if (by_ref) {
    e->refs[e->nrefs++] = (kp_agg_ref){at, (const uint8_t *)data, data_len};
    e->ref_bytes += data_len;
  } else if (data_len) {
    memcpy(p, data, data_len);
  }
  if (e->count == 0) {
    e->first_data_off = at;
    e->first_data_len = data_len;
    e->first_hash_key = *hash_key;
  }
  e->records.len = at + (by_ref ? 0 : data_len);
  e->count++;
  return 0;
}

int kp_agg_encoder_add(kp_agg_encoder *e, const char *pk, size_t pk_len, const char *ehk,
                       size_t ehk_len, const void *data, size_t data_len,
                       const kp_hash_key *hash_key) {
  return add(e, pk, pk_len, ehk, ehk_len, data, data_len, hash_key, false);
}

int kp_agg_encoder_add_ref(kp_agg_encoder *e, const char *pk, size_t pk_len, const char *ehk,
                           size_t ehk_len, const void *data, size_t data_len,
                           const kp_hash_key *hash_key) {
  return add(e, pk, pk_len, ehk, ehk_len, data, data_len, hash_key, true);
}

size_t kp_agg_encoder_refs(const kp_agg_encoder *e) {
  return e->nrefs;
}

/* magic | tables and records into dst (KP_AGG_OVERHEAD + plen bytes), the MD5's 16
 * bytes left. Tables and records were built apart so each stays append-only; canonical
 * field order (1, 2, 3) is restored here in one pass. */
static uint8_t *put(uint8_t *p, const void *src, size_t n) {
  if (n)
    memcpy(p, src, n);
  return p + n;
}

/* magic | tables into dst; returns the end. */
static uint8_t *write_head(const kp_agg_encoder *e, uint8_t *p) {
  p = put(p, kp_agg_magic, KP_AGG_MAGIC_LEN);
  p = put(p, e->pks.wire.data, e->pks.wire.len);
  return put(p, e->ehks.wire.data, e->ehks.wire.len);
}

static void write_unsealed(const kp_agg_encoder *e, uint8_t *dst) {
  uint8_t *p = write_head(e, dst);
  size_t from = 0;
  for (size_t i = 0; i < e->nrefs; i++) {
    p = put(p, e->records.data + from, e->refs[i].at - from);
    p = put(p, e->refs[i].data, e->refs[i].len);
    from = e->refs[i].at;
  }
  put(p, e->records.data + from, e->records.len - from);
}

kp_md5_job kp_agg_seal_job(uint8_t *blob, size_t len) {
  return (kp_md5_job){
      .data = blob + KP_AGG_MAGIC_LEN, .len = len - KP_AGG_OVERHEAD, .out = blob + len - 16};
}

size_t kp_agg_encoder_gather_pieces(const kp_agg_encoder *e) {
  return 2 * e->nrefs + 1;
}

int kp_agg_encoder_finish_gather(const kp_agg_encoder *e, struct iovec *iov, size_t *n_iov,
                                 uint8_t **own, char explicit_hash_key[KP_HASH_KEY_DEC_MAX]) {
  if (e->count < 2)
    return -1;
  /* Everything but the referenced data, in order, with room for the MD5 at the end. */
  size_t own_len = KP_AGG_MAGIC_LEN + e->pks.wire.len + e->ehks.wire.len + e->records.len + 16;
  uint8_t *o = (uint8_t *)malloc(own_len);
  if (!o)
    return -1;
  uint8_t *p = write_head(e, o), *piece = o;
  size_t k = 0, from = 0;
  for (size_t i = 0; i < e->nrefs; i++) {
    p = put(p, e->records.data + from, e->refs[i].at - from);
    from = e->refs[i].at;
    if (!e->refs[i].len)
      continue;
    iov[k++] = (struct iovec){piece, (size_t)(p - piece)};
    iov[k++] = (struct iovec){(void *)e->refs[i].data, e->refs[i].len};
    piece = p;
  }
  p = put(p, e->records.data + from, e->records.len - from);
  iov[k++] = (struct iovec){piece, (size_t)(p - piece) + 16}; /* the MD5's place last */
  *n_iov = k;
  *own = o;
  kp_hash_key_format(&e->first_hash_key, explicit_hash_key);
  return 0;
}

kp_md5_job kp_agg_seal_job_gathered(const struct iovec *iov, size_t n_iov, size_t len) {
  const struct iovec *last = &iov[n_iov - 1];
  return (kp_md5_job){.len = len - KP_AGG_OVERHEAD,
                      .out = (uint8_t *)last->iov_base + last->iov_len - 16,
                      .iov = iov,
                      .skip = KP_AGG_MAGIC_LEN};
}

void kp_agg_seal(uint8_t *blob, size_t len) {
  kp_md5_job j = kp_agg_seal_job(blob, len);
  kp_md5(j.data, j.len, j.out);
}

static void write_aggregate(const kp_agg_encoder *e, size_t plen, uint8_t *dst) {
  write_unsealed(e, dst);
  kp_agg_seal(dst, KP_AGG_OVERHEAD + plen);
}

int kp_agg_encoder_finish_into(const kp_agg_encoder *e, uint8_t *dst,
                               char explicit_hash_key[KP_HASH_KEY_DEC_MAX]) {
  if (kp_agg_encoder_finish_unsealed_into(e, dst, explicit_hash_key) != 0)
    return -1;
  kp_agg_seal(dst, kp_agg_encoder_size(e));
  return 0;
}

int kp_agg_encoder_finish_unsealed_into(const kp_agg_encoder *e, uint8_t *dst,
                                        char explicit_hash_key[KP_HASH_KEY_DEC_MAX]) {
  if (e->count < 2)
    return -1;
  write_unsealed(e, dst);
  kp_hash_key_format(&e->first_hash_key, explicit_hash_key);
  return 0;
}

int kp_agg_encoder_finish(kp_agg_encoder *e, kp_agg_output *out) {
  if (e->count == 0)
    return -1;
  kp_hash_key_format(&e->first_hash_key, out->explicit_hash_key);
  if (e->count == 1) {
    /* Alone, a record goes out as itself: aggregating it would only add bytes. */
    out->data = e->nrefs ? e->refs[0].data : e->records.data + e->first_data_off;
    out->data_len = e->first_data_len;
    out->partition_key = (const char *)e->pks.wire.data + e->pks.keys[0].off;
    out->partition_key_len = e->pks.keys[0].len;
    return 0;
  }
  size_t plen = proto_len(e);
  kp_buf_reset(&e->out);
  if (kp_buf_reserve(&e->out, KP_AGG_OVERHEAD + plen))
    return -1;
  write_aggregate(e, plen, e->out.data);
  e->out.len = KP_AGG_OVERHEAD + plen;
  out->data = e->out.data;
  out->data_len = e->out.len;
  out->partition_key = "a";
  out->partition_key_len = 1;
  return 0;
}
