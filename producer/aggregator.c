#include "producer/aggregator.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format/agg_encoder.h"
#include "kp_deagg.h"

struct kp_aggregator {
  kp_heap_item heap;
  kp_aggregator_limits lim;
  size_t limit; /* min(max_size, max_record_size) */
  int shard;
  kp_agg_encoder *enc;
  kp_record *head, *tail;
  size_t count;
  size_t size; /* data + outer partition key of the aggregate as it stands */
  double deadline, expiry;
};

/* An aggregate without its data yet: the struct and its partition key "a" in one
 * allocation. */
static kp_kinesis_record *kr_aggregate(size_t data_len) {
  kp_kinesis_record *kr = calloc(1, sizeof *kr + 2);
  if (!kr)
    return NULL;
  kr->data_len = data_len;
  kr->partition_key = (char *)(kr + 1);
  memcpy(kr->partition_key, "a", 2);
  kr->partition_key_len = 1;
  return kr;
}

/* The same with its data (data_len bytes, written by the caller) in its own allocation,
 * given back as soon as the request body holds a copy. */
static kp_kinesis_record *kr_alloc(size_t data_len) {
  kp_kinesis_record *kr = kr_aggregate(data_len);
  if (!kr)
    return NULL;
  if (!(kr->data = malloc(data_len ? data_len : 1))) {
    free(kr);
    return NULL;
  }
  kr->owns_data = true;
  return kr;
}

void kp_kinesis_record_free(kp_kinesis_record *kr, bool free_records) {
  if (!kr)
    return;
  if (free_records)
    kp_record_free_list(kr->records);
  if (kr->owns_data)
    free(kr->data);
  free(kr->iov);
  free(kr->own);
  free(kr);
}

void kp_kinesis_record_drop_data(kp_kinesis_record *kr) {
  if (kr->owns_data) {
    free(kr->data);
    kr->owns_data = false;
  }
  kr->data = NULL;
  free(kr->iov);
  free(kr->own);
  kr->iov = NULL;
  kr->own = NULL;
  kr->n_iov = 0;
}

static kp_md5_job seal_job(kp_kinesis_record *kr) {
  return kr->iov ? kp_agg_seal_job_gathered(kr->iov, kr->n_iov, kr->data_len)
                 : kp_agg_seal_job(kr->data, kr->data_len);
}

int kp_kinesis_record_flatten(kp_kinesis_record *kr) {
  if (!kr->iov)
    return 0;
  uint8_t *d = malloc(kr->data_len ? kr->data_len : 1);
  if (!d)
    return -ENOMEM;
  if (kr->unsealed) {
    kp_md5_job j = seal_job(kr);
    kp_md5_many(&j, 1);
    kr->unsealed = false;
  }
  size_t off = 0;
  for (size_t i = 0; i < kr->n_iov; i++) {
    memcpy(d + off, kr->iov[i].iov_base, kr->iov[i].iov_len);
    off += kr->iov[i].iov_len;
  }
  free(kr->iov);
  free(kr->own);
  kr->iov = NULL;
  kr->own = NULL;
  kr->n_iov = 0;
  kr->data = d;
  kr->owns_data = true;
  return 0;
}

bool kp_kinesis_record_has_shed(const kp_kinesis_record *kr) {
  for (const kp_record *r = kr->records; r; r = r->next)
    if (r->shed)
      return true;
  return false;
}

void kp_kinesis_records_seal(kp_kinesis_record *head) {
  kp_md5_job jobs[64];
  size_t n = 0;
  for (kp_kinesis_record *kr = head; kr; kr = kr->next) {
    if (!kr->unsealed)
      continue;
    jobs[n++] = seal_job(kr);
    kr->unsealed = false;
    if (n == sizeof jobs / sizeof jobs[0]) {
      kp_md5_many(jobs, n);
      n = 0;
    }
  }
  kp_md5_many(jobs, n);
}

int kp_kinesis_record_restore(kp_kinesis_record *kr, const uint8_t *blob, size_t len) {
  if (!kp_kinesis_record_has_shed(kr))
    return 0;
  if (kr->unsealed && blob == kr->data) { /* re-routed before its request was built */
    kp_agg_seal(kr->data, kr->data_len);
    kr->unsealed = false;
  }
  kp_deagg *d = kp_deagg_new();
  if (!d)
    return -ENOMEM;
  kp_deagg_set_strict(d, true);
  kp_deagg_set_hash_keys(d, false);
  kp_deagg_input in = {.data = blob,
                       .data_len = len,
                       .partition_key = kr->partition_key,
                       .partition_key_len = kr->partition_key_len};
  kp_deagg_err e = kp_deagg_begin(d, &in);
  int rc = 0;
  if (e == KP_DEAGG_ERR_NOMEM)
    rc = -ENOMEM;
  else if (e != KP_DEAGG_OK || kp_deagg_count(d) != kr->count)
    rc = -EILSEQ; /* not this aggregate: leave every record shed */
  kp_record *head = NULL, *tail = NULL;
  for (kp_record *r = kr->records; rc != -EILSEQ && r;) {
    kp_record *next = r->next, *w = r;
    kp_deagg_record u; /* one per record, in order, whole or not */
    if (kp_deagg_next(d, &u) == KP_DEAGG_OK && rc == 0 && r->shed) {
      w = kp_record_unshed(r, (const char *)u.partition_key, u.partition_key_len,
                           (const char *)u.explicit_hash_key, u.explicit_hash_key_len, u.data,
                           u.data_len);
      if (!w) {
        rc = -ENOMEM; /* the rest stay shed */
        w = r;
      }
    }
    kp_record_list_append(&head, &tail, w);
    r = next;
  }
  if (rc != -EILSEQ) {
    kr->records = head;
    kr->records_tail = tail;
  }
  kp_deagg_destroy(d);
  return rc;
}

size_t kp_kinesis_record_size(const kp_kinesis_record *kr) {
  return kr->data_len + kr->partition_key_len;
}

kp_kinesis_record *kp_kinesis_record_single(kp_record *rec, int shard) {
  /* The data and key stay where they are, in the user record this Kinesis record owns:
   * no second copy of up to 1 MiB per record. */
  kp_kinesis_record *kr = calloc(1, sizeof *kr);
  if (!kr)
    return NULL;
  kr->data = (uint8_t *)kp_record_data(rec); /* not owned: owns_data stays false */
  kr->data_len = rec->data_len;
  kr->partition_key = (char *)kp_record_pk(rec);
  kr->partition_key_len = rec->pk_len;
  /* Without the user's own key Kinesis hashes the partition key to the same value we
   * would send: leave it out (saves the MD5, the 128-bit decimal and ~40 bytes). */
  if (rec->has_ehk)
    kp_hash_key_format(kp_record_hash_key(rec), kr->explicit_hash_key);
  rec->next = NULL;
  kr->records = kr->records_tail = rec;
  kr->count = 1;
  kr->deadline = rec->deadline;
  kr->expiry = rec->expiry;
  kr->shard = shard;
  return kr;
}

static void clear(kp_aggregator *a) {
  if (a->enc)
    kp_agg_encoder_reset(a->enc);
  a->head = a->tail = NULL;
  a->count = 0;
  a->size = 0;
  a->deadline = a->expiry = INFINITY;
}

kp_aggregator *kp_aggregator_new(const kp_aggregator_limits *lim, int shard) {
  kp_aggregator *a = calloc(1, sizeof *a);
  if (!a)
    return NULL;
  kp_heap_item_init(&a->heap);
  a->lim = *lim;
  a->limit = lim->max_size < lim->max_record_size ? lim->max_size : lim->max_record_size;
  a->shard = shard;
  /* Without aggregation every record leaves at once: no encoder needed. */
  if (lim->enabled && lim->max_count > 1) {
    a->enc = kp_agg_encoder_new();
    if (!a->enc) {
      free(a);
      return NULL;
    }
  }
  clear(a);
  return a;
}

void kp_aggregator_free(kp_aggregator *a) {
  if (!a)
    return;
  kp_record_free_list(a->head);
  kp_agg_encoder_free(a->enc);
  free(a);
}

static int enc_add(kp_aggregator *a, kp_record *rec) {
  /* Only the first record's hash key is used (as the outer ExplicitHashKey). Data in the
   * shared file stays there until the record's result is out, so the aggregate can point
   * at it: one copy (into curl's buffer) instead of three. */
  return (a->lim.gather && rec->shared && rec->data_len ? kp_agg_encoder_add_ref
                                                        : kp_agg_encoder_add)(
      a->enc, kp_record_pk(rec), rec->pk_len, kp_record_ehk(rec), rec->ehk_len, kp_record_data(rec),
      rec->data_len, a->count ? NULL : kp_record_hash_key(rec));
}

/* An aggregate with referenced data: its pieces and its own bytes, in one Kinesis
 * record. */
static kp_kinesis_record *kr_gathered(kp_aggregator *a) {
  kp_kinesis_record *kr = kr_aggregate(kp_agg_encoder_size(a->enc));
  if (!kr)
    return NULL;
  kr->iov = malloc(kp_agg_encoder_gather_pieces(a->enc) * sizeof *kr->iov);
  if (!kr->iov ||
      kp_agg_encoder_finish_gather(a->enc, kr->iov, &kr->n_iov, &kr->own, kr->explicit_hash_key)) {
    free(kr->iov);
    free(kr);
    return NULL;
  }
  return kr;
}

static void append(kp_aggregator *a, kp_record *rec, size_t size) {
  rec->next = NULL;
  if (a->tail)
    a->tail->next = rec;
  else
    a->head = rec;
  a->tail = rec;
  a->count++;
  a->size = size;
  if (rec->deadline < a->deadline)
    a->deadline = rec->deadline;
  if (rec->expiry < a->expiry)
    a->expiry = rec->expiry;
}

/* Turns the current aggregate into a Kinesis record; NULL (state kept) on failure. */
static kp_kinesis_record *complete(kp_aggregator *a) {
  if (a->count == 1) {
    /* Raw anyway: straight over the record, skipping the encoder. */
    kp_kinesis_record *kr = kp_kinesis_record_single(a->head, a->shard);
    if (kr)
      clear(a);
    return kr;
  }
  kp_kinesis_record *kr;
  if (kp_agg_encoder_refs(a->enc)) {
    if (!(kr = kr_gathered(a)))
      return NULL;
  } else {
    /* Written straight into the Kinesis record's own buffer: no staging copy. */
    if (!(kr = kr_alloc(kp_agg_encoder_size(a->enc))))
      return NULL;
    if (kp_agg_encoder_finish_unsealed_into(a->enc, kr->data, kr->explicit_hash_key) != 0) {
      kp_kinesis_record_free(kr, false);
      return NULL;
    }
  }
  kr->unsealed = true; /* hashed with the others of its request */
  /* The aggregate now holds every key and byte of its records: keep their headers only
   * (at 100 B records, a record's own copy was a third of the daemon's memory). */
  kr->records = kp_record_shed_list(a->head, a->count, &kr->records_tail);
  if (kr->records == a->head)
    kr->records_tail = a->tail;
  kr->count = (uint32_t)a->count;
  kr->deadline = a->deadline;
  kr->expiry = a->expiry;
  kr->shard = a->shard;
  clear(a);
  return kr;
}

/* Whether any record could still join the single one buffered: the cheapest possible
 * second record (same partition key, no explicit hash key, empty data) must fit. */
static bool joinable(const kp_aggregator *a) {
  if (a->count >= a->lim.max_count)
    return false;
  const kp_record *r = a->head;
  size_t sz = kp_agg_encoder_size_with(a->enc, kp_record_pk(r), r->pk_len, NULL, 0, 0) +
              kp_agg_encoder_outer_pk_len_with(a->enc, r->pk_len);
  return sz <= a->limit;
}

int kp_aggregator_add(kp_aggregator *a, kp_record *rec, kp_kinesis_record **out) {
  *out = NULL;
  if (!rec)
    return -1;
  /* Raw at once without aggregation, and for a record bigger than an aggregate of it
   * and one more could ever be (that costs at least the magic, the MD5, its key, its
   * data and the outer key "a"): not copied into the encoder first (50 KiB records at
   * the default AggregationMaxSize). */
  if (!a->enc || (a->count == 0 && KP_AGG_OVERHEAD + rec->pk_len + rec->data_len + 1 > a->limit)) {
    kp_kinesis_record *kr = kp_kinesis_record_single(rec, a->shard);
    if (!kr)
      return -1;
    *out = kr;
    return 0;
  }
  if (a->count > 0) {
    size_t sz = kp_agg_encoder_size_with(a->enc, kp_record_pk(rec), rec->pk_len, kp_record_ehk(rec),
                                         rec->ehk_len, rec->data_len) +
                kp_agg_encoder_outer_pk_len_with(a->enc, rec->pk_len);
    if (a->count < a->lim.max_count && sz <= a->limit) {
      if (enc_add(a, rec) != 0)
        return -1;
      append(a, rec, sz);
      return 0;
    }
    kp_kinesis_record *kr = complete(a);
    if (!kr)
      return -1;
    *out = kr;
  }
  if (enc_add(a, rec) != 0)
    return -1;
  append(a, rec, kp_agg_encoder_size(a->enc) + rec->pk_len);
  /* Holding a record nothing can join only delays it; *out has room for one, so if it
   * is taken the record waits for the next add or its deadline. */
  if (!*out && !joinable(a))
    *out = complete(a); /* on failure it just stays buffered */
  return 0;
}

kp_kinesis_record *kp_aggregator_flush(kp_aggregator *a) {
  if (a->count == 0)
    return NULL;
  return complete(a);
}

double kp_aggregator_deadline(const kp_aggregator *a) {
  return a->deadline;
}
double kp_aggregator_expiry(const kp_aggregator *a) {
  return a->expiry;
}
size_t kp_aggregator_count(const kp_aggregator *a) {
  return a->count;
}
size_t kp_aggregator_size(const kp_aggregator *a) {
  return a->size;
}
int kp_aggregator_shard(const kp_aggregator *a) {
  return a->shard;
}

kp_record *kp_aggregator_drain(kp_aggregator *a) {
  kp_record *head = a->head;
  clear(a);
  return head;
}

kp_heap_item *kp_aggregator_heap_item(kp_aggregator *a) {
  return &a->heap;
}

kp_aggregator *kp_aggregator_from_heap_item(kp_heap_item *it) {
  return kp_container_of(it, kp_aggregator, heap);
}
