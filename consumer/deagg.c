/* De-aggregation of KPL aggregated records: walks the protobuf wire bytes directly
 * so user records are yielded as pointers into the caller's buffer (protobuf-c
 * would copy every field). The whole aggregate is validated in kp_deagg_begin()
 * and its records indexed into a reusable array, so iteration cannot fail half-way
 * and lenient mode can fall back to pass-through cleanly. */
#include "kp_deagg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/hash_key.h"
#include "format/md5_many.h"
#include "format/pbwire.h"

#define NO_INDEX UINT64_MAX
/* Unknown groups are skipped recursively; bound the depth like protobuf does. */
#define MAX_GROUP_DEPTH 64

static const uint8_t k_magic[4] = {0xF3, 0x89, 0x9A, 0xC2};

typedef struct pk_entry {
  const uint8_t *p;
  size_t len;
  bool have_hk; /* MD5 is computed lazily, once per table entry */
  uint8_t hk[16];
} pk_entry;

typedef struct ehk_entry {
  const uint8_t *p;
  size_t len;
  uint8_t hk[16]; /* parsed while validating, so always present */
} ehk_entry;

typedef struct rec_entry {
  uint64_t pk;
  uint64_t ehk; /* NO_INDEX if absent */
  const uint8_t *data;
  size_t len;
} rec_entry;

enum state { ST_IDLE, ST_AGG, ST_PASS, ST_DONE };

struct kp_deagg {
  bool strict;
  bool hash_keys;
  bool have_range;
  uint8_t range_lo[16], range_hi[16];

  kp_deagg_input in;
  const uint8_t *base; /* start of the Kinesis record, for offsets in messages */
  enum state st;
  size_t next;
  size_t count;
  kp_deagg_err corruption;

  /* Pass-through record's hash key (outer EHK, else MD5 of the outer key). */
  bool pass_have_hk;
  uint8_t pass_hk[16];

  pk_entry *pks;
  size_t npk, cap_pk;
  ehk_entry *ehks;
  size_t nehk, cap_ehk;
  rec_entry *recs;
  size_t nrec, cap_rec;

  char err[256];
};

const char *kp_deagg_err2str(kp_deagg_err err) {
  switch (err) {
  case KP_DEAGG_OK:
    return "success";
  case KP_DEAGG_END:
    return "no more records";
  case KP_DEAGG_ERR_INVALID_ARG:
    return "invalid argument";
  case KP_DEAGG_ERR_NOMEM:
    return "out of memory";
  case KP_DEAGG_ERR_BAD_MD5:
    return "MD5 mismatch";
  case KP_DEAGG_ERR_TRUNCATED:
    return "truncated protobuf";
  case KP_DEAGG_ERR_BAD_VARINT:
    return "malformed varint";
  case KP_DEAGG_ERR_BAD_WIRE_TYPE:
    return "bad wire type";
  case KP_DEAGG_ERR_BAD_TAG:
    return "bad field number";
  case KP_DEAGG_ERR_MISSING_FIELD:
    return "missing required field";
  case KP_DEAGG_ERR_INDEX_RANGE:
    return "key table index out of range";
  case KP_DEAGG_ERR_BAD_EHK:
    return "invalid explicit hash key";
  }
  return "unknown error";
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static kp_deagg_err
fail(kp_deagg *d, kp_deagg_err code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->err, sizeof d->err, fmt, ap);
  va_end(ap);
  return code;
}

kp_deagg *kp_deagg_new(void) {
  kp_deagg *d = calloc(1, sizeof *d);
  if (d)
    d->hash_keys = true;
  return d;
}

void kp_deagg_destroy(kp_deagg *d) {
  if (!d)
    return;
  free(d->pks);
  free(d->ehks);
  free(d->recs);
  free(d);
}

void kp_deagg_set_strict(kp_deagg *d, bool strict) {
  d->strict = strict;
}

void kp_deagg_set_hash_keys(kp_deagg *d, bool on) {
  d->hash_keys = on;
}

kp_deagg_err kp_deagg_set_hash_range(kp_deagg *d, const uint8_t start[16], const uint8_t end[16]) {
  if (!start && !end) {
    d->have_range = false;
    return KP_DEAGG_OK;
  }
  if (!start || !end || memcmp(start, end, 16) > 0)
    return KP_DEAGG_ERR_INVALID_ARG;
  memcpy(d->range_lo, start, 16);
  memcpy(d->range_hi, end, 16);
  d->have_range = true;
  return KP_DEAGG_OK;
}

size_t kp_deagg_count(const kp_deagg *d) {
  return d->count;
}

kp_deagg_err kp_deagg_corruption(const kp_deagg *d) {
  return d->corruption;
}

const char *kp_deagg_errstr(const kp_deagg *d) {
  return d->err;
}

/* Makes room for one more element; geometric growth keeps steady state
 * allocation-free because the arrays are kept across records. */
static int grow(void **arr, size_t *cap, size_t n, size_t elem) {
  if (n < *cap)
    return 0;
  size_t nc = *cap ? *cap * 2 : 64;
  if (nc > SIZE_MAX / elem)
    return -1;
  void *p = realloc(*arr, nc * elem);
  if (!p)
    return -1;
  *arr = p;
  *cap = nc;
  return 0;
}

/* ---- wire walking ------------------------------------------------------------ */

/* Like pb_get_varint, but tells a truncated varint from an overlong one. */
static inline kp_deagg_err rd_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
  const uint8_t *p = *pp;
  if (p < end && *p < 0x80) {
    *out = *p;
    *pp = p + 1;
    return KP_DEAGG_OK;
  }
  if (pb_get_varint(pp, end, out) == 0)
    return KP_DEAGG_OK;
  /* Failed: truncated if it ran off the end before a terminating byte. */
  for (int i = 0; i < 10; i++) {
    if (p + i >= end)
      return KP_DEAGG_ERR_TRUNCATED;
    if (!(p[i] & 0x80))
      break;
  }
  return KP_DEAGG_ERR_BAD_VARINT;
}

/* Context for messages: "record 3: " inside a Record, "" at the top level. */
typedef struct walk {
  kp_deagg *d;
  long rec;
} walk;

/* fail() prefixed with the record index when inside a Record. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static kp_deagg_err
wfail(const walk *w, kp_deagg_err code, const char *fmt, ...) {
  char *e = w->d->err;
  int n = w->rec >= 0 ? snprintf(e, sizeof w->d->err, "record %ld: ", w->rec) : 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e + n, sizeof w->d->err - (size_t)n, fmt, ap);
  va_end(ap);
  return code;
}

static size_t off(const walk *w, const uint8_t *p) {
  return (size_t)(p - w->d->base);
}

static kp_deagg_err varint_at(const walk *w, const uint8_t **p, const uint8_t *end, uint64_t *v,
                              const char *what) {
  const uint8_t *at = *p;
  kp_deagg_err rc = rd_varint(p, end, v);
  if (rc == KP_DEAGG_ERR_TRUNCATED)
    return wfail(w, rc, "%s varint at offset %zu runs past the end", what, off(w, at));
  if (rc)
    return wfail(w, rc, "%s varint at offset %zu is longer than 64 bits", what, off(w, at));
  return KP_DEAGG_OK;
}

static kp_deagg_err rd_tag(const walk *w, const uint8_t **p, const uint8_t *end, uint32_t *field,
                           unsigned *wt) {
  const uint8_t *at = *p;
  uint64_t tag;
  kp_deagg_err rc = varint_at(w, p, end, &tag, "tag");
  if (rc)
    return rc;
  if ((tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF)
    return wfail(w, KP_DEAGG_ERR_BAD_TAG, "invalid field number %llu at offset %zu",
                 (unsigned long long)(tag >> 3), off(w, at));
  *field = (uint32_t)(tag >> 3);
  *wt = (unsigned)(tag & 7);
  if (*wt == 6 || *wt == 7)
    return wfail(w, KP_DEAGG_ERR_BAD_WIRE_TYPE, "field %u at offset %zu has invalid wire type %u",
                 *field, off(w, at), *wt);
  return KP_DEAGG_OK;
}

/* Reads a length prefix and checks the payload fits. */
static kp_deagg_err rd_len(const walk *w, const uint8_t **p, const uint8_t *end, uint32_t field,
                           const uint8_t **val, size_t *len) {
  uint64_t n;
  kp_deagg_err rc = varint_at(w, p, end, &n, "length");
  if (rc)
    return rc;
  if (n > (uint64_t)(end - *p))
    return wfail(w, KP_DEAGG_ERR_TRUNCATED,
                 "field %u at offset %zu: length %llu runs past the end (%zu bytes left)", field,
                 off(w, *p), (unsigned long long)n, (size_t)(end - *p));
  *val = *p;
  *len = (size_t)n;
  *p += n;
  return KP_DEAGG_OK;
}

static kp_deagg_err skip_field(const walk *w, const uint8_t **p, const uint8_t *end, uint32_t field,
                               unsigned wt, int depth) {
  uint64_t v;
  const uint8_t *val = NULL;
  size_t len = 0;
  switch (wt) {
  case PB_WT_VARINT:
    return varint_at(w, p, end, &v, "value");
  case PB_WT_I64:
  case PB_WT_I32: {
    size_t n = wt == PB_WT_I64 ? 8 : 4;
    if ((size_t)(end - *p) < n)
      return wfail(w, KP_DEAGG_ERR_TRUNCATED,
                   "field %u at offset %zu: %zu-byte value runs past the end", field, off(w, *p),
                   n);
    *p += n;
    return KP_DEAGG_OK;
  }
  case PB_WT_LEN:
    return rd_len(w, p, end, field, &val, &len);
  case 3: /* start group: skip until the matching end group */
    if (depth >= MAX_GROUP_DEPTH)
      return wfail(w, KP_DEAGG_ERR_BAD_WIRE_TYPE, "groups nested deeper than %d at offset %zu",
                   MAX_GROUP_DEPTH, off(w, *p));
    for (;;) {
      uint32_t f = 0;
      unsigned t = 0;
      const uint8_t *at = *p;
      if (*p >= end)
        return wfail(w, KP_DEAGG_ERR_TRUNCATED, "group %u runs past the end (no end-group tag)",
                     field);
      kp_deagg_err rc = rd_tag(w, p, end, &f, &t);
      if (rc)
        return rc;
      if (t == 4) {
        if (f != field)
          return wfail(w, KP_DEAGG_ERR_BAD_WIRE_TYPE,
                       "end-group %u at offset %zu does not close group %u", f, off(w, at), field);
        return KP_DEAGG_OK;
      }
      rc = skip_field(w, p, end, f, t, depth + 1);
      if (rc)
        return rc;
    }
  default: /* 4: end group with no open group */
    return wfail(w, KP_DEAGG_ERR_BAD_WIRE_TYPE,
                 "unmatched end-group for field %u before offset %zu", field, off(w, *p));
  }
}

static kp_deagg_err want_wt(const walk *w, const char *name, uint32_t field, unsigned wt,
                            unsigned want, const uint8_t *at) {
  if (wt == want)
    return KP_DEAGG_OK;
  return wfail(w, KP_DEAGG_ERR_BAD_WIRE_TYPE,
               "field %u (%s) at offset %zu has wire type %u, expected %u", field, name, off(w, at),
               wt, want);
}

/* Tag { required string key = 1; optional string value = 2; } — validated only,
 * because a KCL consumer rejects the aggregate if a tag does not parse. */
static kp_deagg_err parse_tag(const walk *w, const uint8_t *p, const uint8_t *end) {
  bool have_key = false;
  while (p < end) {
    const uint8_t *at = p;
    uint32_t f = 0;
    unsigned wt = 0;
    const uint8_t *val = NULL;
    size_t len = 0;
    kp_deagg_err rc = rd_tag(w, &p, end, &f, &wt);
    if (!rc && (f == 1 || f == 2)) {
      rc = want_wt(w, f == 1 ? "tag key" : "tag value", f, wt, PB_WT_LEN, at);
      if (!rc)
        rc = rd_len(w, &p, end, f, &val, &len);
      have_key |= f == 1;
    } else if (!rc) {
      rc = skip_field(w, &p, end, f, wt, 0);
    }
    if (rc)
      return rc;
  }
  if (!have_key)
    return wfail(w, KP_DEAGG_ERR_MISSING_FIELD, "tag without required field key");
  return KP_DEAGG_OK;
}

static kp_deagg_err parse_record(const walk *w, rec_entry *r, const uint8_t *p,
                                 const uint8_t *end) {
  bool have_pk = false, have_data = false;
  r->ehk = NO_INDEX;
  while (p < end) {
    const uint8_t *at = p;
    uint32_t f = 0;
    unsigned wt = 0;
    const uint8_t *val = NULL;
    size_t len = 0;
    kp_deagg_err rc = rd_tag(w, &p, end, &f, &wt);
    if (rc)
      return rc;
    switch (f) {
    case 1:
    case 2:
      rc = want_wt(w, f == 1 ? "partition_key_index" : "explicit_hash_key_index", f, wt,
                   PB_WT_VARINT, at);
      if (!rc)
        rc = varint_at(w, &p, end, f == 1 ? &r->pk : &r->ehk, "index");
      have_pk |= f == 1;
      break;
    case 3:
      rc = want_wt(w, "data", f, wt, PB_WT_LEN, at);
      if (!rc)
        rc = rd_len(w, &p, end, f, &r->data, &r->len);
      have_data = true;
      break;
    case 4:
      rc = want_wt(w, "tags", f, wt, PB_WT_LEN, at);
      if (!rc)
        rc = rd_len(w, &p, end, f, &val, &len);
      if (!rc)
        rc = parse_tag(w, val, val + len);
      break;
    default:
      rc = skip_field(w, &p, end, f, wt, 0);
    }
    if (rc)
      return rc;
  }
  if (!have_pk)
    return wfail(w, KP_DEAGG_ERR_MISSING_FIELD, "missing required field partition_key_index");
  if (!have_data)
    return wfail(w, KP_DEAGG_ERR_MISSING_FIELD, "missing required field data");
  return KP_DEAGG_OK;
}

static kp_deagg_err nomem(kp_deagg *d) {
  return fail(d, KP_DEAGG_ERR_NOMEM, "out of memory indexing the aggregate");
}

/* Walks AggregatedRecord (fields may come in any order and repeat) and indexes it. */
static kp_deagg_err parse_aggregate(kp_deagg *d, const uint8_t *p, const uint8_t *end) {
  walk top = {d, -1};
  d->npk = d->nehk = d->nrec = 0;
  while (p < end) {
    const uint8_t *at = p;
    uint32_t f = 0;
    unsigned wt = 0;
    const uint8_t *val = NULL;
    size_t len = 0;
    kp_deagg_err rc = rd_tag(&top, &p, end, &f, &wt);
    if (rc)
      return rc;
    if (f < 1 || f > 3) {
      rc = skip_field(&top, &p, end, f, wt, 0);
      if (rc)
        return rc;
      continue;
    }
    static const char *const names[] = {"", "partition_key_table", "explicit_hash_key_table",
                                        "records"};
    rc = want_wt(&top, names[f], f, wt, PB_WT_LEN, at);
    if (!rc)
      rc = rd_len(&top, &p, end, f, &val, &len);
    if (rc)
      return rc;
    if (f == 1) {
      if (grow((void **)&d->pks, &d->cap_pk, d->npk, sizeof *d->pks))
        return nomem(d);
      d->pks[d->npk++] = (pk_entry){.p = val, .len = len, .have_hk = false};
    } else if (f == 2) {
      if (grow((void **)&d->ehks, &d->cap_ehk, d->nehk, sizeof *d->ehks))
        return nomem(d);
      ehk_entry *e = &d->ehks[d->nehk];
      kp_hash_key k;
      if (kp_hash_key_parse((const char *)val, len, &k))
        return fail(d, KP_DEAGG_ERR_BAD_EHK,
                    "explicit_hash_key_table[%zu] \"%.*s%s\" is not a decimal in 0..2^128-1",
                    d->nehk, (int)(len > 48 ? 48 : len), (const char *)val, len > 48 ? "..." : "");
      e->p = val;
      e->len = len;
      memcpy(e->hk, k.be, 16);
      d->nehk++;
    } else {
      if (grow((void **)&d->recs, &d->cap_rec, d->nrec, sizeof *d->recs))
        return nomem(d);
      walk w = {d, (long)d->nrec};
      rc = parse_record(&w, &d->recs[d->nrec], val, val + len);
      if (rc)
        return rc;
      d->nrec++;
    }
  }
  /* Indices are checked last: the tables may legally follow the records. */
  for (size_t i = 0; i < d->nrec; i++) {
    const rec_entry *r = &d->recs[i];
    if (r->pk >= d->npk)
      return fail(d, KP_DEAGG_ERR_INDEX_RANGE,
                  "record %zu: partition_key_index %llu out of range (table has %zu)", i,
                  (unsigned long long)r->pk, d->npk);
    if (r->ehk != NO_INDEX && r->ehk >= d->nehk)
      return fail(d, KP_DEAGG_ERR_INDEX_RANGE,
                  "record %zu: explicit_hash_key_index %llu out of range (table has %zu)", i,
                  (unsigned long long)r->ehk, d->nehk);
  }
  return KP_DEAGG_OK;
}

static bool looks_aggregated(const uint8_t *data, size_t len) {
  return len > 4 + 16 && memcmp(data, k_magic, 4) == 0;
}

void kp_deagg_check_md5_many(const kp_deagg_input *in, size_t n, bool *ok) {
  enum { CHUNK = 64 };
  kp_md5_job jobs[CHUNK];
  uint8_t md5[CHUNK][16];
  size_t at[CHUNK];
  for (size_t i = 0; i < n;) {
    size_t k = 0;
    for (; i < n && k < CHUNK; i++) {
      ok[i] = false;
      const uint8_t *data = in[i].data;
      if (!data || !looks_aggregated(data, in[i].data_len))
        continue;
      jobs[k] = (kp_md5_job){.data = data + 4, .len = in[i].data_len - 20, .out = md5[k]};
      at[k++] = i;
    }
    kp_md5_many(jobs, k);
    for (size_t j = 0; j < k; j++) {
      const kp_deagg_input *x = &in[at[j]];
      ok[at[j]] = memcmp(md5[j], (const uint8_t *)x->data + x->data_len - 16, 16) == 0;
    }
  }
}

static kp_deagg_err check_aggregate(kp_deagg *d, const uint8_t *data, size_t len,
                                    bool md5_checked) {
  const uint8_t *pb = data + 4, *end = data + len - 16;
  if (!md5_checked) {
    uint8_t md5[16];
    kp_md5(pb, (size_t)(end - pb), md5);
    if (memcmp(md5, end, 16) != 0)
      return fail(d, KP_DEAGG_ERR_BAD_MD5,
                  "MD5 of the %zu protobuf bytes does not match the trailer (truncated or "
                  "corrupted aggregate)",
                  (size_t)(end - pb));
  }
  return parse_aggregate(d, pb, end);
}

static kp_deagg_err begin(kp_deagg *d, const kp_deagg_input *in, bool md5_checked) {
  d->st = ST_DONE;
  d->next = 0;
  d->count = 0;
  d->corruption = KP_DEAGG_OK;
  d->err[0] = '\0';
  d->pass_have_hk = false;
  if (!in || (!in->data && in->data_len) || (!in->partition_key && in->partition_key_len) ||
      (!in->sequence_number && in->sequence_number_len))
    return fail(d, KP_DEAGG_ERR_INVALID_ARG, "NULL buffer with a non-zero length");
  d->in = *in;
  if (!d->in.partition_key)
    d->in.partition_key = "";
  if (!d->in.sequence_number)
    d->in.sequence_number = "";
  if (in->explicit_hash_key) {
    kp_hash_key k;
    if (kp_hash_key_parse(in->explicit_hash_key, in->explicit_hash_key_len, &k))
      return fail(d, KP_DEAGG_ERR_INVALID_ARG,
                  "the record's explicit hash key is not a decimal in 0..2^128-1");
    memcpy(d->pass_hk, k.be, 16);
    d->pass_have_hk = true;
  }
  const uint8_t *data = in->data;
  d->base = data;
  if (looks_aggregated(data, in->data_len)) {
    kp_deagg_err rc = check_aggregate(d, data, in->data_len, md5_checked);
    if (rc == KP_DEAGG_OK) {
      d->st = ST_AGG;
      d->count = d->nrec;
      return KP_DEAGG_OK;
    }
    if (rc == KP_DEAGG_ERR_NOMEM || d->strict)
      return rc;
    d->corruption = rc; /* lenient: keep the message, pass the record through */
  }
  d->st = ST_PASS;
  d->count = 1;
  return KP_DEAGG_OK;
}

kp_deagg_err kp_deagg_begin(kp_deagg *d, const kp_deagg_input *in) {
  return begin(d, in, false);
}

kp_deagg_err kp_deagg_begin_checked(kp_deagg *d, const kp_deagg_input *in) {
  return begin(d, in, true);
}

static bool in_range(const kp_deagg *d, const uint8_t *hk) {
  return memcmp(hk, d->range_lo, 16) >= 0 && memcmp(hk, d->range_hi, 16) <= 0;
}

kp_deagg_err kp_deagg_next(kp_deagg *d, kp_deagg_record *out) {
  bool need_hk = d->hash_keys || d->have_range;
  if (d->st == ST_PASS) {
    d->st = ST_DONE;
    const uint8_t *hk = NULL;
    if (need_hk) {
      if (!d->pass_have_hk) {
        kp_md5(d->in.partition_key, d->in.partition_key_len, d->pass_hk);
        d->pass_have_hk = true;
      }
      hk = d->pass_hk;
      if (d->have_range && !in_range(d, hk))
        return KP_DEAGG_END;
    }
    *out = (kp_deagg_record){
        .partition_key = (const uint8_t *)d->in.partition_key,
        .partition_key_len = d->in.partition_key_len,
        .explicit_hash_key = (const uint8_t *)d->in.explicit_hash_key,
        .explicit_hash_key_len = d->in.explicit_hash_key ? d->in.explicit_hash_key_len : 0,
        .hash_key = hk,
        .data = d->in.data,
        .data_len = d->in.data_len,
        .sequence_number = d->in.sequence_number,
        .sequence_number_len = d->in.sequence_number_len,
        .sub_sequence_number = 0,
        .aggregated = false,
    };
    return KP_DEAGG_OK;
  }
  if (d->st != ST_AGG)
    return KP_DEAGG_END;
  while (d->next < d->nrec) {
    size_t i = d->next++;
    const rec_entry *r = &d->recs[i];
    const ehk_entry *e = r->ehk != NO_INDEX ? &d->ehks[r->ehk] : NULL;
    pk_entry *pk = &d->pks[r->pk];
    const uint8_t *hk = NULL;
    if (need_hk) {
      if (e) {
        hk = e->hk;
      } else {
        if (!pk->have_hk) {
          kp_md5(pk->p, pk->len, pk->hk);
          pk->have_hk = true;
        }
        hk = pk->hk;
      }
      if (d->have_range && !in_range(d, hk))
        continue;
    }
    *out = (kp_deagg_record){
        .partition_key = pk->p,
        .partition_key_len = pk->len,
        .explicit_hash_key = e ? e->p : NULL,
        .explicit_hash_key_len = e ? e->len : 0,
        .hash_key = hk,
        .data = r->data,
        .data_len = r->len,
        .sequence_number = d->in.sequence_number,
        .sequence_number_len = d->in.sequence_number_len,
        .sub_sequence_number = i,
        .aggregated = true,
    };
    return KP_DEAGG_OK;
  }
  d->st = ST_DONE;
  return KP_DEAGG_END;
}
