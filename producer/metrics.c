/* In-memory KPL metrics: a tree of handles (global -> stream -> shard), each holding
 * one series per metric it accounts. See metrics.h for the semantics. */
#include "producer/metrics.h"

#include <errno.h>
#include <math.h> /* isfinite (a macro: no libm needed) */
#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- the metric table ---------------------------------------------------------- */

#define SUMMARY KP_METRICS_LEVEL_SUMMARY
#define DETAILED KP_METRICS_LEVEL_DETAILED
#define STREAM KP_METRICS_GRANULARITY_STREAM
#define SHARD KP_METRICS_GRANULARITY_SHARD

static const kp_metric_info infos[KP_M__COUNT] = {
    [KP_M_USER_RECORDS_RECEIVED] = {"UserRecordsReceived", "Count", DETAILED, STREAM},
    [KP_M_USER_RECORDS_PENDING] = {"UserRecordsPending", "Count", DETAILED, STREAM},
    [KP_M_USER_RECORDS_PUT] = {"UserRecordsPut", "Count", SUMMARY, SHARD},
    [KP_M_USER_RECORDS_DATA_PUT] = {"UserRecordsDataPut", "Bytes", DETAILED, SHARD},
    [KP_M_USER_RECORD_EXPIRED] = {"UserRecordExpired", "Count", SUMMARY, SHARD},
    [KP_M_KINESIS_RECORDS_PUT] = {"KinesisRecordsPut", "Count", SUMMARY, SHARD},
    [KP_M_KINESIS_RECORDS_DATA_PUT] = {"KinesisRecordsDataPut", "Bytes", DETAILED, SHARD},
    [KP_M_ERRORS_BY_CODE] = {"ErrorsByCode", "Count", SUMMARY, SHARD},
    [KP_M_ALL_ERRORS] = {"AllErrors", "Count", SUMMARY, SHARD},
    [KP_M_RETRIES_PER_RECORD] = {"RetriesPerRecord", "Count", DETAILED, SHARD},
    [KP_M_BUFFERING_TIME] = {"BufferingTime", "Milliseconds", SUMMARY, SHARD},
    [KP_M_REQUEST_TIME] = {"RequestTime", "Milliseconds", DETAILED, STREAM},
    [KP_M_USER_RECORDS_PER_KINESIS_RECORD] = {"UserRecordsPerKinesisRecord", "Count", DETAILED,
                                              SHARD},
    [KP_M_KINESIS_RECORDS_PER_PUT_RECORDS_REQUEST] = {"KinesisRecordsPerPutRecordsRequest", "Count",
                                                      DETAILED, STREAM},
    [KP_M_USER_RECORDS_PER_PUT_RECORDS_REQUEST] = {"UserRecordsPerPutRecordsRequest", "Count",
                                                   DETAILED, STREAM},
};

const kp_metric_info *kp_metric_info_get(kp_metric_id id) {
  return (unsigned)id < KP_M__COUNT ? &infos[id] : NULL;
}

int kp_metric_id_from_name(const char *name) {
  if (!name)
    return -1;
  for (int i = 0; i < KP_M__COUNT; i++)
    if (!strcmp(infos[i].name, name))
      return i;
  return -1;
}

/* ---- series ---------------------------------------------------------------------- */

typedef struct bucket {
  int64_t sec; /* the second this bucket holds; INT64_MIN = never used */
  uint64_t count;
  double sum, min, max;
} bucket;

typedef struct series {
  bucket total; /* cumulative (sec unused) */
  bucket ring[KP_METRICS_RING];
} series;

static series *series_new(void) {
  series *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  for (size_t i = 0; i < KP_METRICS_RING; i++)
    s->ring[i].sec = INT64_MIN;
  return s;
}

static inline void bucket_merge(bucket *b, uint64_t count, double sum, double mn, double mx) {
  if (!b->count) {
    b->count = count;
    b->sum = sum;
    b->min = mn;
    b->max = mx;
    return;
  }
  b->count += count;
  b->sum += sum;
  if (mn < b->min)
    b->min = mn;
  if (mx > b->max)
    b->max = mx;
}

static inline void series_add(series *s, int64_t sec, uint64_t count, double sum, double mn,
                              double mx) {
  bucket_merge(&s->total, count, sum, mn, mx);
  bucket *b = &s->ring[(uint64_t)sec & (KP_METRICS_RING - 1)];
  if (b->sec != sec) {
    b->sec = sec;
    b->count = 0;
  }
  bucket_merge(b, count, sum, mn, mx);
}

/* Stats over the buckets of seconds lo..hi, or cumulative if lo > hi is not asked:
 * `cumulative` selects. */
static bucket series_stats(const series *s, bool cumulative, int64_t lo, int64_t hi) {
  if (cumulative)
    return s->total;
  bucket r = {0};
  for (size_t i = 0; i < KP_METRICS_RING; i++) {
    const bucket *b = &s->ring[i];
    if (b->count && b->sec >= lo && b->sec <= hi)
      bucket_merge(&r, b->count, b->sum, b->min, b->max);
  }
  return r;
}

/* ---- handles --------------------------------------------------------------------- */

typedef struct err_entry {
  char *code;
  uint32_t hash;
  series *s;                  /* NULL until its first value */
  kp_metrics_dimension *dims; /* [ErrorCode=code, handle dims...] */
  size_t n_dims;
} err_entry;

struct kp_metrics_handle {
  kp_metrics *m;
  kp_metrics_handle *parent;
  int depth; /* 0 global, 1 stream, 2 shard */
  unsigned refs;
  char *name;
  uint32_t hash;
  kp_metrics_dimension *dims;
  size_t n_dims;
  uint32_t enabled;    /* bit per metric id this handle keeps a series for */
  uint32_t chain;      /* enabled of this handle and its ancestors: one test per add */
  bool errors_enabled; /* keeps ErrorsByCode series */
  series *own[KP_M__COUNT];
  err_entry *errs; /* capacity m->max_error_codes + 1 ("Other") */
  size_t n_errs;
  err_entry *last_err;
  /* children, in creation order and in a hash table by name */
  kp_metrics_handle *first_child, *last_child, *prev, *next;
  kp_metrics_handle **tab;
  size_t tab_cap, n_children;
  kp_metrics_handle *hnext;
};

struct kp_metrics {
  kp_metrics_level level;
  kp_metrics_granularity granularity;
  size_t max_error_codes;
  kp_metrics_dim *adds; /* copies */
  size_t n_adds;
  double start;
  int64_t latest;        /* latest second seen by a recording */
  int64_t uploaded_thru; /* last second handed to kp_metrics_collect_upload */
  kp_metrics_handle global;
};

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

/* floor(now) as an integer, without libm; INT64_MIN for NaN. */
static int64_t floor_sec(double now) {
  if (!(now == now))
    return INT64_MIN;
  if (now > 9.0e15)
    now = 9.0e15;
  if (now < -9.0e15)
    now = -9.0e15;
  int64_t s = (int64_t)now;
  return (double)s > now ? s - 1 : s;
}

/* The second a recording at `now` counts into: never earlier than one already seen. */
static inline int64_t record_sec(kp_metrics *m, double now) {
  int64_t s = floor_sec(now);
  if (s < m->latest)
    return m->latest;
  m->latest = s;
  return s;
}

/* Parents are set before their children (a handle's level never changes). */
static void set_enabled(kp_metrics *m, kp_metrics_handle *h) {
  h->enabled = 0;
  h->errors_enabled = false;
  h->chain = h->parent ? h->parent->chain : 0;
  if (m->level == KP_METRICS_LEVEL_NONE)
    return;
  for (int i = 0; i < KP_M__COUNT; i++) {
    kp_metrics_granularity g = infos[i].finest < m->granularity ? infos[i].finest : m->granularity;
    if (infos[i].level > m->level || h->depth > (int)g)
      continue;
    if (i == KP_M_ERRORS_BY_CODE)
      h->errors_enabled = true;
    else
      h->enabled |= 1u << i;
  }
  h->chain |= h->enabled;
}

/* dims = parent's dims + (key=name) + the additional dims of this depth. */
static int build_dims(kp_metrics *m, kp_metrics_handle *h, const char *key) {
  size_t n = h->parent ? h->parent->n_dims : 0;
  size_t cap = n + 1 + m->n_adds;
  h->dims = calloc(cap, sizeof *h->dims);
  if (!h->dims)
    return -1;
  if (n)
    memcpy(h->dims, h->parent->dims, n * sizeof *h->dims);
  if (key)
    h->dims[n++] = (kp_metrics_dimension){key, h->name};
  for (size_t i = 0; i < m->n_adds; i++)
    if ((int)m->adds[i].granularity == h->depth)
      h->dims[n++] = (kp_metrics_dimension){m->adds[i].key, m->adds[i].value};
  h->n_dims = n;
  return 0;
}

static void free_errs(kp_metrics_handle *h) {
  for (size_t i = 0; i < h->n_errs; i++) {
    free(h->errs[i].code);
    free(h->errs[i].s);
    free(h->errs[i].dims);
  }
  free(h->errs);
  h->errs = NULL;
  h->n_errs = 0;
  h->last_err = NULL;
}

static void free_handle_contents(kp_metrics_handle *h) {
  for (int i = 0; i < KP_M__COUNT; i++)
    free(h->own[i]);
  free_errs(h);
  free(h->dims);
  free(h->tab);
  free(h->name);
}

static void free_subtree(kp_metrics_handle *h) {
  kp_metrics_handle *c = h->first_child;
  while (c) {
    kp_metrics_handle *next = c->next;
    free_subtree(c);
    free_handle_contents(c);
    free(c);
    c = next;
  }
  h->first_child = h->last_child = NULL;
}

kp_metrics *kp_metrics_new_opts(const kp_metrics_opts *o, double now) {
  kp_metrics *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  m->level = o->level;
  m->granularity = o->granularity;
  m->max_error_codes = o->max_error_codes ? o->max_error_codes : KP_METRICS_DEFAULT_MAX_ERROR_CODES;
  m->start = now;
  m->latest = floor_sec(now);
  m->uploaded_thru = m->latest == INT64_MIN ? INT64_MIN : m->latest - 1;
  if (o->n_additional_dims) {
    m->adds = calloc(o->n_additional_dims, sizeof *m->adds);
    if (!m->adds)
      goto fail;
    for (size_t i = 0; i < o->n_additional_dims; i++) {
      const kp_metrics_dim *d = &o->additional_dims[i];
      m->adds[i].granularity = d->granularity;
      m->adds[i].key = strdup(d->key ? d->key : "");
      m->adds[i].value = strdup(d->value ? d->value : "");
      m->n_adds = i + 1;
      if (!m->adds[i].key || !m->adds[i].value)
        goto fail;
    }
  }
  m->global.m = m;
  m->global.refs = 1;
  set_enabled(m, &m->global);
  if (build_dims(m, &m->global, NULL) != 0)
    goto fail;
  return m;
fail:
  kp_metrics_free(m);
  return NULL;
}

kp_metrics *kp_metrics_new(const kp_config *cfg, double now) {
  kp_metrics_opts o = {
      .level = cfg->metrics_level,
      .granularity = cfg->metrics_granularity,
      .additional_dims = cfg->additional_metrics_dims,
      .n_additional_dims = cfg->n_additional_metrics_dims,
  };
  return kp_metrics_new_opts(&o, now);
}

void kp_metrics_free(kp_metrics *m) {
  if (!m)
    return;
  free_subtree(&m->global);
  free_handle_contents(&m->global);
  for (size_t i = 0; i < m->n_adds; i++) {
    free(m->adds[i].key);
    free(m->adds[i].value);
  }
  free(m->adds);
  free(m);
}

kp_metrics_level kp_metrics_get_level(const kp_metrics *m) {
  return m ? m->level : KP_METRICS_LEVEL_NONE;
}

kp_metrics_handle *kp_metrics_global(kp_metrics *m) {
  return m ? &m->global : NULL;
}

static kp_metrics_handle *child_find(kp_metrics_handle *p, const char *name, uint32_t h) {
  if (!p->tab_cap)
    return NULL;
  for (kp_metrics_handle *c = p->tab[h & (p->tab_cap - 1)]; c; c = c->hnext)
    if (c->hash == h && !strcmp(c->name, name))
      return c;
  return NULL;
}

static void tab_insert(kp_metrics_handle *p, kp_metrics_handle *c) {
  size_t i = c->hash & (p->tab_cap - 1);
  c->hnext = p->tab[i];
  p->tab[i] = c;
}

static int child_add(kp_metrics_handle *p, kp_metrics_handle *c) {
  if (p->n_children + 1 > p->tab_cap) {
    size_t cap = p->tab_cap ? p->tab_cap * 2 : 16;
    kp_metrics_handle **t = calloc(cap, sizeof *t);
    if (!t) {
      if (!p->tab_cap)
        return -1;
    } else {
      kp_metrics_handle **old = p->tab;
      size_t old_cap = p->tab_cap;
      p->tab = t;
      p->tab_cap = cap;
      for (size_t i = 0; i < old_cap; i++) {
        kp_metrics_handle *x = old[i];
        while (x) {
          kp_metrics_handle *nx = x->hnext;
          tab_insert(p, x);
          x = nx;
        }
      }
      free(old);
    }
  }
  tab_insert(p, c);
  p->n_children++;
  c->prev = p->last_child;
  c->next = NULL;
  if (p->last_child)
    p->last_child->next = c;
  else
    p->first_child = c;
  p->last_child = c;
  return 0;
}

static void child_remove(kp_metrics_handle *p, kp_metrics_handle *c) {
  kp_metrics_handle **pp = &p->tab[c->hash & (p->tab_cap - 1)];
  while (*pp != c)
    pp = &(*pp)->hnext;
  *pp = c->hnext;
  p->n_children--;
  if (c->prev)
    c->prev->next = c->next;
  else
    p->first_child = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    p->last_child = c->prev;
}

static kp_metrics_handle *get_child(kp_metrics_handle *p, const char *name, const char *key) {
  if (!name || !name[0])
    return NULL;
  uint32_t hv = hash_str(name);
  kp_metrics_handle *c = child_find(p, name, hv);
  if (c) {
    c->refs++;
    return c;
  }
  c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->m = p->m;
  c->parent = p;
  c->depth = p->depth + 1;
  c->refs = 1;
  c->hash = hv;
  c->name = strdup(name);
  set_enabled(p->m, c);
  if (!c->name || build_dims(p->m, c, key) != 0 || child_add(p, c) != 0) {
    free_handle_contents(c);
    free(c);
    return NULL;
  }
  return c;
}

kp_metrics_handle *kp_metrics_stream_get(kp_metrics *m, const char *stream) {
  return m ? get_child(&m->global, stream, "StreamName") : NULL;
}

kp_metrics_handle *kp_metrics_shard_get(kp_metrics_handle *stream, const char *shard_id) {
  if (!stream || stream->depth != 1)
    return NULL;
  bool existed = child_find(stream, shard_id ? shard_id : "", hash_str(shard_id ? shard_id : ""));
  kp_metrics_handle *c = get_child(stream, shard_id, "ShardId");
  if (c && !existed)
    stream->refs++; /* a shard keeps its stream alive */
  return c;
}

void kp_metrics_release(kp_metrics_handle *h) {
  while (h && h->depth > 0) {
    if (--h->refs)
      return;
    kp_metrics_handle *p = h->parent;
    /* refs reached 0: no shard holds a stream any more, so h has no children */
    child_remove(p, h);
    free_subtree(h);
    free_handle_contents(h);
    free(h);
    h = p->depth > 0 ? p : NULL; /* the shard's reference on its stream */
  }
}

/* ---- recording --------------------------------------------------------------------- */

void kp_metrics_add_n(kp_metrics_handle *h, kp_metric_id id, uint64_t count, double sum, double min,
                      double max, double now) {
  if (!h || (unsigned)id >= KP_M__COUNT || !count || !(h->chain & (1u << id)))
    return;
  if (!isfinite(sum) || !isfinite(min) || !isfinite(max))
    return;
  uint32_t bit = 1u << id;
  int64_t sec = record_sec(h->m, now);
  for (kp_metrics_handle *n = h; n; n = n->parent) {
    if (!(n->enabled & bit))
      continue;
    series *s = n->own[id];
    if (!s && !(s = n->own[id] = series_new()))
      continue;
    series_add(s, sec, count, sum, min, max);
  }
}

void kp_metrics_add(kp_metrics_handle *h, kp_metric_id id, double value, double now) {
  kp_metrics_add_n(h, id, 1, value, value, value, now);
}

static err_entry *err_new(kp_metrics_handle *h, const char *code, uint32_t hv) {
  if (!h->errs) {
    h->errs = calloc(h->m->max_error_codes + 1, sizeof *h->errs);
    if (!h->errs)
      return NULL;
  }
  err_entry *e = &h->errs[h->n_errs];
  e->code = strdup(code);
  e->hash = hv;
  e->n_dims = h->n_dims + 1;
  e->dims = calloc(e->n_dims, sizeof *e->dims);
  if (!e->code || !e->dims) {
    free(e->code);
    free(e->dims);
    memset(e, 0, sizeof *e);
    return NULL;
  }
  e->dims[0] = (kp_metrics_dimension){"ErrorCode", e->code};
  if (h->n_dims)
    memcpy(e->dims + 1, h->dims, h->n_dims * sizeof *h->dims);
  h->n_errs++;
  return e;
}

/* This handle's entry for `code`: exact, else a new one, else "Other" when full. */
static err_entry *err_resolve(kp_metrics_handle *h, const char *code, uint32_t hv) {
  err_entry *e = h->last_err;
  if (e && e->hash == hv && !strcmp(e->code, code))
    return e;
  for (size_t i = 0; i < h->n_errs; i++)
    if (h->errs[i].hash == hv && !strcmp(h->errs[i].code, code))
      return h->last_err = &h->errs[i];
  if (h->n_errs < h->m->max_error_codes)
    return (e = err_new(h, code, hv)) ? h->last_err = e : NULL;
  /* full: everything else goes to "Other" (not cached, so known codes stay fast) */
  static const char other[] = KP_METRICS_OTHER_ERROR_CODE;
  uint32_t ho = hash_str(other);
  for (size_t i = 0; i < h->n_errs; i++)
    if (h->errs[i].hash == ho && !strcmp(h->errs[i].code, other))
      return &h->errs[i];
  return h->n_errs <= h->m->max_error_codes ? err_new(h, other, ho) : NULL;
}

void kp_metrics_add_error(kp_metrics_handle *h, const char *code, uint64_t count, double now) {
  if (!h || !count)
    return;
  if (!code || !code[0])
    code = "Unknown";
  kp_metrics_add_n(h, KP_M_ALL_ERRORS, count, (double)count, 1, 1, now);
  int64_t sec = record_sec(h->m, now);
  uint32_t hv = 0;
  bool hashed = false;
  for (kp_metrics_handle *n = h; n; n = n->parent) {
    if (!n->errors_enabled)
      continue;
    if (!hashed) {
      hv = hash_str(code);
      hashed = true;
    }
    err_entry *e = err_resolve(n, code, hv);
    if (!e || (!e->s && !(e->s = series_new())))
      continue;
    series_add(e->s, sec, count, (double)count, 1, 1);
  }
}

/* ---- queries ----------------------------------------------------------------------- */

typedef struct walk {
  int only; /* metric id, or -1 for all */
  bool cumulative;
  bool skip_empty;
  int64_t lo, hi;
  uint64_t seconds;
  kp_metrics_visit_fn fn;
  void *ud;
} walk;

static int emit(const walk *w, kp_metric_id id, const series *s, const kp_metrics_dimension *dims,
                size_t n_dims) {
  bucket b = series_stats(s, w->cumulative, w->lo, w->hi);
  if (w->skip_empty && !b.count)
    return 0;
  kp_metrics_record r = {
      .id = id,
      .name = infos[id].name,
      .unit = infos[id].unit,
      .dims = dims,
      .n_dims = n_dims,
      .seconds = w->seconds,
  };
  if (b.count) {
    r.stats.count = (double)b.count;
    r.stats.sum = b.sum;
    r.stats.min = b.min;
    r.stats.max = b.max;
    r.stats.mean = b.sum / (double)b.count;
  }
  return w->fn(&r, w->ud);
}

static int walk_handle(const walk *w, kp_metrics_handle *h) {
  for (int id = 0; id < KP_M__COUNT; id++) {
    if (w->only >= 0 && id != w->only)
      continue;
    int rc = 0;
    if (id == KP_M_ERRORS_BY_CODE) {
      for (size_t i = 0; i < h->n_errs && !rc; i++)
        if (h->errs[i].s)
          rc = emit(w, id, h->errs[i].s, h->errs[i].dims, h->errs[i].n_dims);
    } else if (h->own[id]) {
      rc = emit(w, (kp_metric_id)id, h->own[id], h->dims, h->n_dims);
    }
    if (rc)
      return rc;
  }
  for (kp_metrics_handle *c = h->first_child; c; c = c->next) {
    int rc = walk_handle(w, c);
    if (rc)
      return rc;
  }
  return 0;
}

int kp_metrics_query(kp_metrics *m, const char *name, uint64_t seconds, double now,
                     kp_metrics_visit_fn fn, void *ud) {
  walk w = {.only = -1, .fn = fn, .ud = ud};
  if (!m)
    return 0;
  if (name && name[0] && (w.only = kp_metric_id_from_name(name)) < 0)
    return 0;
  if (seconds == 0) {
    w.cumulative = true;
    double el = now - m->start;
    w.seconds = el >= 1 && el < 1.8e19 ? (uint64_t)el : 0;
  } else {
    if (seconds > KP_METRICS_MAX_WINDOW)
      seconds = KP_METRICS_MAX_WINDOW;
    int64_t s = floor_sec(now);
    w.hi = s > m->latest ? s : m->latest;
    w.lo = w.hi - (int64_t)seconds + 1;
    w.seconds = seconds;
  }
  return walk_handle(&w, &m->global);
}

int kp_metrics_collect_upload(kp_metrics *m, double now, kp_metrics_visit_fn fn, void *ud) {
  int64_t s = floor_sec(now);
  if (!m || s == INT64_MIN)
    return 0;
  walk w = {.only = -1, .skip_empty = true, .fn = fn, .ud = ud};
  w.hi = s - 1;
  w.lo = m->uploaded_thru == INT64_MIN ? w.hi : m->uploaded_thru + 1;
  if (w.lo < w.hi - (KP_METRICS_RING - 2))
    w.lo = w.hi - (KP_METRICS_RING - 2); /* older seconds are gone from the ring */
  if (w.lo > w.hi)
    return 0;
  w.seconds = (uint64_t)(w.hi - w.lo + 1);
  int rc = walk_handle(&w, &m->global);
  if (!rc)
    m->uploaded_thru = w.hi;
  return rc;
}

/* ---- MetricsResponse ----------------------------------------------------------------- */

typedef struct fill {
  /* pass 1: sizes */
  size_t n_metrics, n_dims, n_chars;
  /* pass 2: where things go */
  Kpl__Metric **ptrs;
  Kpl__Metric *metrics;
  Kpl__Stats *stats;
  Kpl__Dimension **dptrs;
  Kpl__Dimension *dims;
  char *chars;
  size_t i_metric, i_dim;
} fill;

static int count_cb(const kp_metrics_record *r, void *ud) {
  fill *f = ud;
  f->n_metrics++;
  f->n_chars += strlen(r->name) + 1;
  f->n_dims += r->n_dims;
  for (size_t i = 0; i < r->n_dims; i++)
    f->n_chars += strlen(r->dims[i].key) + strlen(r->dims[i].value) + 2;
  return 0;
}

static char *put_str(fill *f, const char *s) {
  size_t n = strlen(s) + 1;
  char *d = f->chars;
  memcpy(d, s, n);
  f->chars += n;
  return d;
}

static int fill_cb(const kp_metrics_record *r, void *ud) {
  fill *f = ud;
  if (f->i_metric >= f->n_metrics || f->i_dim + r->n_dims > f->n_dims)
    return -EFAULT; /* cannot happen: both passes see the same records */
  Kpl__Metric *pm = &f->metrics[f->i_metric];
  Kpl__Stats *ps = &f->stats[f->i_metric];
  kpl__metric__init(pm);
  kpl__stats__init(ps);
  ps->count = r->stats.count;
  ps->sum = r->stats.sum;
  ps->mean = r->stats.mean;
  ps->min = r->stats.min;
  ps->max = r->stats.max;
  pm->name = put_str(f, r->name);
  pm->stats = ps;
  pm->seconds = r->seconds;
  pm->n_dimensions = r->n_dims;
  pm->dimensions = r->n_dims ? &f->dptrs[f->i_dim] : NULL;
  for (size_t i = 0; i < r->n_dims; i++) {
    Kpl__Dimension *d = &f->dims[f->i_dim];
    kpl__dimension__init(d);
    d->key = put_str(f, r->dims[i].key);
    d->value = put_str(f, r->dims[i].value);
    f->dptrs[f->i_dim++] = d;
  }
  f->ptrs[f->i_metric++] = pm;
  return 0;
}

static size_t align_up(size_t n) {
  size_t a = alignof(max_align_t);
  return (n + a - 1) / a * a;
}

int kp_metrics_fill_response(kp_metrics *m, const char *name, uint64_t seconds, double now,
                             Kpl__MetricsResponse *out) {
  kpl__metrics_response__init(out);
  fill f = {0};
  kp_metrics_query(m, name, seconds, now, count_cb, &f);
  if (!f.n_metrics)
    return 0;
  size_t o_metrics = align_up(f.n_metrics * sizeof(Kpl__Metric *));
  size_t o_stats = o_metrics + align_up(f.n_metrics * sizeof(Kpl__Metric));
  size_t o_dptrs = o_stats + align_up(f.n_metrics * sizeof(Kpl__Stats));
  size_t o_dims = o_dptrs + align_up(f.n_dims * sizeof(Kpl__Dimension *));
  size_t o_chars = o_dims + align_up(f.n_dims * sizeof(Kpl__Dimension));
  char *arena = malloc(o_chars + f.n_chars);
  if (!arena)
    return -ENOMEM;
  f.ptrs = (Kpl__Metric **)(void *)arena;
  f.metrics = (Kpl__Metric *)(void *)(arena + o_metrics);
  f.stats = (Kpl__Stats *)(void *)(arena + o_stats);
  f.dptrs = (Kpl__Dimension **)(void *)(arena + o_dptrs);
  f.dims = (Kpl__Dimension *)(void *)(arena + o_dims);
  f.chars = arena + o_chars;
  if (kp_metrics_query(m, name, seconds, now, fill_cb, &f) != 0 || f.i_metric != f.n_metrics) {
    free(arena);
    return -EFAULT;
  }
  out->metrics = f.ptrs;
  out->n_metrics = f.n_metrics;
  return 0;
}

void kp_metrics_response_free(Kpl__MetricsResponse *r) {
  if (!r)
    return;
  free(r->metrics); /* the arena starts with the pointer array */
  r->metrics = NULL;
  r->n_metrics = 0;
}
