/* kp-sink: a fast Kinesis endpoint for benchmarks and fault injection, on 127.0.0.1.
 *
 * Answers ListShards, DescribeStreamSummary, CreateStream (no-op) and PutRecords over
 * HTTP/1.1 keep-alive, plain and TLS. Every stream has the same N shards with AWS's even
 * hash ranges. PutRecords bodies come in JSON 1.1 (scanned in place, or parsed with
 * jansson to compare; Data base64-decoded) or CBOR 1.1 (walked in place, Data raw) and
 * are answered in the same encoding; each Data is de-aggregated with kp_deagg (MD5 checked; in CBOR
 * requests all of a request's aggregates side by side, kp_deagg_check_md5_many), and user records
 * are counted per stream and per shard; a user record whose hash key lies outside the shard its
 * Kinesis record went to is counted as mis-routed. SigV4 is not verified, but an Authorization
 * header is required.
 *
 * Output (stdout): "PORT n", then "TLS_PORT n" and "CA_FILE path" with --tls, then
 * "READY"; a JSON stats line on SIGUSR1 and at exit (SIGTERM/SIGINT).
 * Threads: one libev loop by default; --threads N runs N loops, each with its own
 * SO_REUSEPORT listening sockets, counters and de-aggregator. See bench/README.md. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, accept4 */
#endif
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cbor.h>

#include "bench/sink/shards.h"
#include "common/buf.h"
#include "format/cbor_walk.h"
#include "format/hash_key.h"
#include "kp_deagg.h"

enum {
  MAX_STREAMS = 256,      /* distinct stream names tracked; more count under "(other)" */
  MAX_CONNS = 4096,       /* per worker */
  MAX_HEADER = 64 * 1024, /* request line + headers */
  READ_ROUNDS = 64,       /* reads per readiness event */
  ACCEPT_ROUNDS = 64,     /* accepts per readiness event */
  MAX_JSON_DEPTH = 64,    /* nesting skipped in unknown members */
  MAX_THREADS = 64,
  MAX_PUT = 500, /* records per PutRecords request (Kinesis's limit) */
};

/* ---- options ------------------------------------------------------------------------ */

static struct {
  int port, tls_port;
  bool tls;
  const char *tls_dir;
  uint32_t shards;
  int threads;
  double latency_ms;
  double fail_rate;
  const char *fail_code;
  uint64_t seed;
  bool jansson; /* parse bodies with jansson instead of the in-place scanner */
  bool route_check;
  size_t max_request;
} g_opt = {0, 0,     false, NULL,     4, 1, 0, 0, "ProvisionedThroughputExceededException",
           1, false, true,  16u << 20};

static sink_shard *g_shards;
static atomic_uint_fast64_t g_seq; /* sequence-number counter, shared by all workers */
static uint64_t g_seq_prefix;      /* start time, so numbers also grow across restarts */
static SSL_CTX *g_ssl_ctx;
static double g_start_wall;

/* ---- counters ----------------------------------------------------------------------- */

typedef struct shard_counts {
  uint64_t krec, urec, ubytes;
} shard_counts;

typedef struct stream_counts {
  char *name;
  size_t name_len;
  uint64_t requests, krec, krec_failed, urec, ubytes, misrouted;
  shard_counts *shards; /* g_opt.shards entries */
} stream_counts;

typedef struct counters {
  uint64_t connections, requests, put_requests, other_requests, errors_4xx;
  uint64_t bytes_in, bytes_out, body_bytes;
  uint64_t krec, krec_failed, urec, ubytes, aggregates, md5_verified, corrupt, misrouted;
} counters;

typedef struct conn conn;

typedef struct worker {
  int id;
  struct ev_loop *loop;
  pthread_t thread;
  int lfd, tls_lfd;
  ev_io lw, tls_lw;
  ev_async stop;
  pthread_mutex_t mu; /* guards c and streams (held while a request is counted) */
  counters c;
  stream_counts streams[MAX_STREAMS + 1]; /* last: "(other)" */
  size_t nstreams;
  kp_deagg *deagg;
  struct cbor_rec *recs; /* MAX_PUT: a CBOR request's records */
  kp_deagg_input *ins;   /* MAX_PUT: their data, for kp_deagg_check_md5_many */
  bool *md5_ok;          /* MAX_PUT: its verdicts */
  kp_buf data;           /* one decoded Data */
  kp_buf scratch;        /* unescaped JSON strings of the current request */
  kp_buf body;           /* response body being built */
  uint64_t rng;
  conn *conns; /* intrusive list, for cleanup */
  size_t nconns;
  uint64_t req_id;
} worker;

/* ---- connection --------------------------------------------------------------------- */

struct conn {
  worker *w;
  int fd;
  SSL *ssl;
  ev_io rio, wio;
  ev_timer delay;
  kp_buf in;
  size_t in_off;
  kp_buf out;
  size_t out_off;
  size_t hdr_len;  /* of the request at in_off, 0 until its headers are complete */
  size_t body_len; /* its Content-Length */
  bool sent_continue, paused, closing;
  bool cbor; /* the current request is CBOR 1.1: answer (errors too) in CBOR */
  conn *prev, *next;
};

static void conn_close(conn *c);
static bool conn_flush(conn *c);
static void conn_process(conn *c);
static void conn_read(conn *c);

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define APPEND_LIT(b, s) kp_buf_append((b), (s), sizeof(s) - 1)

static int append_fmt(kp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int append_fmt(kp_buf *b, const char *fmt, ...) {
  va_list ap;
  if (kp_buf_reserve(b, 256))
    return -1;
  va_start(ap, fmt);
  int n = vsnprintf((char *)b->data + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  if (n < 0)
    return -1;
  if ((size_t)n >= b->cap - b->len) {
    if (kp_buf_reserve(b, (size_t)n + 1))
      return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
  }
  b->len += (size_t)n;
  return 0;
}

/* ---- streams ------------------------------------------------------------------------ */

static stream_counts *stream_get(worker *w, const char *name, size_t len) {
  for (size_t i = 0; i < w->nstreams; i++)
    if (w->streams[i].name_len == len && memcmp(w->streams[i].name, name, len) == 0)
      return &w->streams[i];
  stream_counts *s = w->nstreams < MAX_STREAMS ? &w->streams[w->nstreams] : NULL;
  if (s) {
    s->name = malloc(len + 1);
    s->shards = calloc(g_opt.shards, sizeof *s->shards);
    if (s->name && s->shards) {
      memcpy(s->name, name, len);
      s->name[len] = 0;
      s->name_len = len;
      w->nstreams++;
      return s;
    }
    free(s->name);
    free(s->shards);
    memset(s, 0, sizeof *s);
  }
  s = &w->streams[MAX_STREAMS];
  if (!s->shards) {
    s->shards = calloc(g_opt.shards, sizeof *s->shards);
    s->name = strdup("(other)");
    s->name_len = s->name ? strlen(s->name) : 0;
  }
  return s->shards ? s : NULL;
}

/* ---- JSON string views ------------------------------------------------------------- */

typedef struct sv {
  const char *p;
  size_t n;
  bool set;
} sv;

/* Appends the UTF-8 form of code point cp. */
static uint8_t *put_utf8(uint8_t *o, uint32_t cp) {
  if (cp < 0x80) {
    *o++ = (uint8_t)cp;
  } else if (cp < 0x800) {
    *o++ = (uint8_t)(0xC0 | (cp >> 6));
    *o++ = (uint8_t)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *o++ = (uint8_t)(0xE0 | (cp >> 12));
    *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (uint8_t)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (uint8_t)(0xF0 | (cp >> 18));
    *o++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (uint8_t)(0x80 | (cp & 0x3F));
  }
  return o;
}

static int hex4(const char *p, uint32_t *out) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    char ch = p[i];
    v <<= 4;
    if (ch >= '0' && ch <= '9')
      v |= (uint32_t)(ch - '0');
    else if (ch >= 'a' && ch <= 'f')
      v |= (uint32_t)(ch - 'a' + 10);
    else if (ch >= 'A' && ch <= 'F')
      v |= (uint32_t)(ch - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

/* In-place scanner over one request body. `scratch` has room for the whole body once
 * the first escape is seen, so unescaped strings never move during a request. */
typedef struct jscan {
  const char *p, *end;
  kp_buf *scratch;
  size_t body_len;
} jscan;

static void ws(jscan *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
    j->p++;
}

static bool lit(jscan *j, char ch) {
  ws(j);
  if (j->p < j->end && *j->p == ch) {
    j->p++;
    return true;
  }
  return false;
}

/* Reads a string at j->p (after whitespace). Zero-copy unless it holds escapes. */
static int jstring(jscan *j, sv *out) {
  ws(j);
  if (j->p >= j->end || *j->p != '"')
    return -1;
  const char *s = ++j->p;
  const char *q = memchr(s, '"', (size_t)(j->end - s));
  if (!q)
    return -1;
  const char *bs = memchr(s, '\\', (size_t)(q - s));
  if (!bs) { /* fast path: no escapes (all base64 and the usual keys) */
    out->p = s;
    out->n = (size_t)(q - s);
    out->set = true;
    j->p = q + 1;
    return 0;
  }
  if (!j->scratch->data || j->scratch->cap < j->body_len) {
    if (j->scratch->len) /* earlier strings point into it: never reallocate mid-request */
      return -1;
    if (kp_buf_reserve(j->scratch, j->body_len))
      return -1;
  }
  /* Output is never longer than the input it comes from, and each body byte is decoded
   * at most once per pass: this check never fails on a well-formed pass. */
  if (j->scratch->cap - j->scratch->len < (size_t)(j->end - s))
    return -1;
  uint8_t *o0 = j->scratch->data + j->scratch->len, *o = o0;
  const char *p = s;
  for (;;) {
    if (p >= j->end)
      return -1;
    char ch = *p;
    if (ch == '"')
      break;
    if ((unsigned char)ch < 0x20)
      return -1;
    if (ch != '\\') {
      *o++ = (uint8_t)ch;
      p++;
      continue;
    }
    if (j->end - p < 2)
      return -1;
    ch = p[1];
    p += 2;
    switch (ch) {
    case '"':
      *o++ = '"';
      break;
    case '\\':
      *o++ = '\\';
      break;
    case '/':
      *o++ = '/';
      break;
    case 'b':
      *o++ = '\b';
      break;
    case 'f':
      *o++ = '\f';
      break;
    case 'n':
      *o++ = '\n';
      break;
    case 'r':
      *o++ = '\r';
      break;
    case 't':
      *o++ = '\t';
      break;
    case 'u': {
      uint32_t cp, lo;
      if (j->end - p < 4 || hex4(p, &cp))
        return -1;
      p += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) { /* surrogate pair */
        if (j->end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) || lo < 0xDC00 ||
            lo > 0xDFFF)
          return -1;
        p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return -1;
      }
      o = put_utf8(o, cp); /* never longer than the escape it replaces */
      break;
    }
    default:
      return -1;
    }
  }
  out->p = (const char *)o0;
  out->n = (size_t)(o - o0);
  out->set = true;
  j->scratch->len += out->n;
  j->p = p + 1;
  return 0;
}

static bool key_is(const sv *k, const char *name) {
  size_t n = strlen(name);
  return k->n == n && memcmp(k->p, name, n) == 0;
}

/* Skips any JSON value (bounded nesting). */
static int jskip(jscan *j, int depth) {
  if (depth > MAX_JSON_DEPTH)
    return -1;
  ws(j);
  if (j->p >= j->end)
    return -1;
  char ch = *j->p;
  if (ch == '"') {
    sv tmp;
    return jstring(j, &tmp);
  }
  if (ch == '{' || ch == '[') {
    char close = ch == '{' ? '}' : ']';
    j->p++;
    if (lit(j, close))
      return 0;
    for (;;) {
      if (ch == '{') {
        sv k;
        if (jstring(j, &k) || !lit(j, ':'))
          return -1;
      }
      if (jskip(j, depth + 1))
        return -1;
      if (lit(j, ','))
        continue;
      return lit(j, close) ? 0 : -1;
    }
  }
  const char *s = j->p; /* number, true, false, null */
  while (j->p < j->end &&
         (*j->p == '-' || *j->p == '+' || *j->p == '.' || (*j->p >= '0' && *j->p <= '9') ||
          (*j->p >= 'a' && *j->p <= 'z') || (*j->p >= 'A' && *j->p <= 'Z')))
    j->p++;
  return j->p > s ? 0 : -1;
}

/* ---- PutRecords --------------------------------------------------------------------- */

typedef struct put_ctx {
  worker *w;
  stream_counts *st;
  uint64_t failed;
  size_t n;
  bool bad; /* a record was invalid: answer 400 */
  char why[160];
} put_ctx;

static int b64_decode(kp_buf *out, const char *s, size_t n) {
  kp_buf_reset(out);
  if (n % 4)
    return -1;
  if (kp_buf_reserve(out, n / 4 * 3 + 4))
    return -1;
  if (n == 0)
    return 0;
  int got = EVP_DecodeBlock(out->data, (const unsigned char *)s, (int)n);
  if (got < 0)
    return -1;
  size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
  out->len = (size_t)got - pad;
  return 0;
}

/* CBOR writers for responses: libcbor writes the heads, string contents are copied.
 * Allocation failures are ignored like the JSON path's (the buffer is only cut short). */
enum { CBOR_HEAD_MAX = 9 };

static void cb_map(kp_buf *b, size_t pairs) {
  if (!kp_buf_reserve(b, CBOR_HEAD_MAX))
    b->len += cbor_encode_map_start(pairs, b->data + b->len, CBOR_HEAD_MAX);
}

static void cb_text(kp_buf *b, const char *s, size_t n) {
  if (kp_buf_reserve(b, CBOR_HEAD_MAX + n))
    return;
  b->len += cbor_encode_string_start(n, b->data + b->len, CBOR_HEAD_MAX);
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

#define CB_LIT(b, s) cb_text((b), (s), sizeof(s) - 1)

/* Validates, routes, fails (--fail-rate) or de-aggregates and counts one Kinesis record
 * whose Data is already raw bytes. Returns -1 (x->bad set: answer 400), 0 accepted
 * (*seq set) or 1 failed by injection; *shard is set unless -1. */
static int put_record(put_ctx *x, const uint8_t *data, size_t data_len, bool md5_checked,
                      const sv *pk, const sv *ehk, uint32_t *shard_out, uint64_t *seq) {
  worker *w = x->w;
  stream_counts *st = x->st;
  kp_hash_key hk;
  if (ehk->set) {
    if (kp_hash_key_parse(ehk->p, ehk->n, &hk)) {
      x->bad = true;
      snprintf(x->why, sizeof x->why, "record %zu: invalid ExplicitHashKey", x->n - 1);
      return -1;
    }
  } else {
    kp_hash_key_of_partition_key(pk->p, pk->n, &hk);
  }
  uint32_t shard = sink_shard_find(g_shards, g_opt.shards, &hk);
  *shard_out = shard;
  w->c.krec++;
  st->krec++;
  if (g_opt.fail_rate > 0 && (double)(splitmix64(&w->rng) >> 11) * 0x1.0p-53 < g_opt.fail_rate) {
    x->failed++;
    w->c.krec_failed++;
    st->krec_failed++;
    return 1;
  }
  kp_deagg_input in = {data, data_len, pk->p, pk->n, ehk->set ? ehk->p : NULL, ehk->n, NULL, 0};
  uint64_t urec = 0, ubytes = 0, mis = 0;
  if ((md5_checked ? kp_deagg_begin_checked : kp_deagg_begin)(w->deagg, &in) == KP_DEAGG_OK) {
    const sink_shard *sh = &g_shards[shard];
    kp_deagg_record r;
    for (size_t guard = kp_deagg_count(w->deagg); guard && kp_deagg_next(w->deagg, &r) == 0;
         guard--) {
      urec++;
      ubytes += r.data_len;
      if (r.hash_key &&
          (memcmp(r.hash_key, sh->start.be, 16) < 0 || memcmp(r.hash_key, sh->end.be, 16) > 0))
        mis++;
      if (r.aggregated && r.sub_sequence_number == 0)
        w->c.md5_verified++; /* a valid aggregate: its MD5 trailer was checked */
    }
    if (data_len >= 4 && memcmp(data, "\xF3\x89\x9A\xC2", 4) == 0)
      w->c.aggregates++; /* has the magic: valid (md5_verified) or corrupt */
    if (kp_deagg_corruption(w->deagg) != KP_DEAGG_OK)
      w->c.corrupt++;
  }
  w->c.urec += urec;
  w->c.ubytes += ubytes;
  w->c.misrouted += mis;
  st->urec += urec;
  st->ubytes += ubytes;
  st->misrouted += mis;
  st->shards[shard].krec++;
  st->shards[shard].urec += urec;
  st->shards[shard].ubytes += ubytes;
  *seq = atomic_fetch_add_explicit(&g_seq, 1, memory_order_relaxed);
  return 0;
}

static bool pk_ok(const sv *pk) {
  return pk->set && pk->n > 0 && pk->n <= 1024;
}

static void bad_record(put_ctx *x) {
  x->bad = true;
  snprintf(x->why, sizeof x->why, "record %zu: missing/invalid Data or PartitionKey", x->n - 1);
}

/* The 56-digit sequence number of accepted record `seq` on `shard`; returns its length. */
static int seq_format(char out[64], uint32_t shard, uint64_t seq) {
  return snprintf(out, 64, "49%06u%028llu%020llu", shard, (unsigned long long)g_seq_prefix,
                  (unsigned long long)seq);
}

/* One JSON record: Data is base64 text. Appends its JSON outcome to w->body. */
static void put_one(put_ctx *x, const sv *data, const sv *pk, const sv *ehk) {
  worker *w = x->w;
  kp_buf *b = &w->body;
  if (x->n++)
    APPEND_LIT(b, ",");
  if (!data->set || !pk_ok(pk) || b64_decode(&w->data, data->p, data->n)) {
    bad_record(x);
    return;
  }
  uint32_t shard;
  uint64_t seq;
  int rc = put_record(x, w->data.data, w->data.len, false, pk, ehk, &shard, &seq);
  if (rc < 0)
    return;
  if (rc > 0) {
    append_fmt(b,
               "{\"ErrorCode\":\"%s\",\"ErrorMessage\":\"Rate exceeded for shard %s in stream "
               "under account 123456789012.\"}",
               g_opt.fail_code, g_shards[shard].id);
    return;
  }
  char sn[64];
  seq_format(sn, shard, seq);
  append_fmt(b, "{\"SequenceNumber\":\"%s\",\"ShardId\":\"%s\"}", sn, g_shards[shard].id);
}

/* A CBOR record's members, as found: Data points into the body. */
typedef struct cbor_rec {
  const uint8_t *data;
  size_t data_len;
  bool has_data;
  sv pk, ehk;
} cbor_rec;

/* One CBOR record: Data is the raw byte string, straight from the body (no copy).
 * Appends its outcome map to w->body (the Records array's head is written last). */
static void put_one_cbor(put_ctx *x, const cbor_rec *r, bool md5_checked) {
  const uint8_t *data = r->data;
  size_t data_len = r->data_len;
  bool has_data = r->has_data;
  const sv *pk = &r->pk, *ehk = &r->ehk;
  kp_buf *b = &x->w->body;
  x->n++;
  if (!has_data || !pk_ok(pk)) {
    bad_record(x);
    return;
  }
  uint32_t shard;
  uint64_t seq;
  int rc = put_record(x, data, data_len, md5_checked, pk, ehk, &shard, &seq);
  if (rc < 0)
    return;
  const char *id = g_shards[shard].id;
  cb_map(b, 2);
  if (rc > 0) {
    char msg[256];
    int ml = snprintf(msg, sizeof msg,
                      "Rate exceeded for shard %s in stream under account 123456789012.", id);
    CB_LIT(b, "ErrorCode");
    cb_text(b, g_opt.fail_code, strlen(g_opt.fail_code));
    CB_LIT(b, "ErrorMessage");
    cb_text(b, msg, ml < 0 ? 0 : (size_t)ml < sizeof msg ? (size_t)ml : sizeof msg - 1);
    return;
  }
  char sn[64];
  int sl = seq_format(sn, shard, seq);
  CB_LIT(b, "SequenceNumber");
  cb_text(b, sn, (size_t)sl);
  CB_LIT(b, "ShardId");
  cb_text(b, id, strlen(id));
}

/* In-place scan of {"StreamName":..., "Records":[{"Data","PartitionKey","ExplicitHashKey"}]}
 * in any member order, with unknown members skipped. */
static int put_scan(worker *w, const char *body, size_t len, put_ctx *x) {
  jscan j = {body, body + len, &w->scratch, len};
  sv stream = {0};
  /* StreamName first (our daemon writes it first; otherwise one extra skipping pass). */
  if (!lit(&j, '{'))
    return -1;
  for (int guard = 0; guard < 64; guard++) {
    sv k;
    if (jstring(&j, &k) || !lit(&j, ':'))
      return -1;
    if (key_is(&k, "StreamName")) {
      if (jstring(&j, &stream))
        return -1;
      break;
    }
    if (jskip(&j, 1))
      return -1;
    if (!lit(&j, ','))
      return -1;
  }
  if (!stream.set)
    return -1;
  x->st = stream_get(w, stream.p, stream.n); /* copies the name */
  if (!x->st)
    return -1;
  x->st->requests++;
  kp_buf_reset(&w->scratch); /* second pass: the whole body again, from the start */
  j.p = body;
  lit(&j, '{');
  bool records = false;
  if (lit(&j, '}'))
    return -1;
  for (;;) {
    sv k;
    if (jstring(&j, &k) || !lit(&j, ':'))
      return -1;
    if (key_is(&k, "Records")) {
      if (!lit(&j, '['))
        return -1;
      records = true;
      if (!lit(&j, ']')) {
        for (;;) {
          sv data = {0}, pk = {0}, ehk = {0};
          if (!lit(&j, '{'))
            return -1;
          if (!lit(&j, '}')) {
            for (;;) {
              sv f;
              if (jstring(&j, &f) || !lit(&j, ':'))
                return -1;
              if (key_is(&f, "Data")) {
                if (jstring(&j, &data))
                  return -1;
              } else if (key_is(&f, "PartitionKey")) {
                if (jstring(&j, &pk))
                  return -1;
              } else if (key_is(&f, "ExplicitHashKey")) {
                ws(&j);
                if (j.p < j.end && *j.p == 'n') { /* null */
                  if (jskip(&j, 1))
                    return -1;
                } else if (jstring(&j, &ehk)) {
                  return -1;
                }
              } else if (jskip(&j, 1)) {
                return -1;
              }
              if (lit(&j, ','))
                continue;
              if (!lit(&j, '}'))
                return -1;
              break;
            }
          }
          put_one(x, &data, &pk, &ehk);
          if (x->bad)
            return 0;
          if (lit(&j, ','))
            continue;
          if (!lit(&j, ']'))
            return -1;
          break;
        }
      }
    } else if (jskip(&j, 1)) {
      return -1;
    }
    if (lit(&j, ','))
      continue;
    if (!lit(&j, '}'))
      return -1;
    break;
  }
  ws(&j);
  return records && j.p == j.end ? 0 : -1;
}

static int put_jansson(worker *w, const char *body, size_t len, put_ctx *x) {
  json_error_t err;
  json_t *root = json_loadb(body, len, JSON_ALLOW_NUL, &err);
  json_t *sn = root ? json_object_get(root, "StreamName") : NULL;
  json_t *recs = root ? json_object_get(root, "Records") : NULL;
  if (!json_is_string(sn) || !json_is_array(recs)) {
    json_decref(root);
    return -1;
  }
  x->st = stream_get(w, json_string_value(sn), json_string_length(sn));
  if (!x->st) {
    json_decref(root);
    return -1;
  }
  x->st->requests++;
  size_t i;
  json_t *r;
  json_array_foreach(recs, i, r) {
    json_t *d = json_object_get(r, "Data"), *p = json_object_get(r, "PartitionKey"),
           *e = json_object_get(r, "ExplicitHashKey");
    sv data = {0}, pk = {0}, ehk = {0};
    if (json_is_string(d))
      data = (sv){json_string_value(d), json_string_length(d), true};
    if (json_is_string(p))
      pk = (sv){json_string_value(p), json_string_length(p), true};
    if (json_is_string(e))
      ehk = (sv){json_string_value(e), json_string_length(e), true};
    put_one(x, &data, &pk, &ehk);
    if (x->bad)
      break;
  }
  json_decref(root);
  return 0;
}

/* CBOR bodies: two walks with kp_cbor_walk, like the JSON scanner's two passes. The
 * first only finds StreamName (counts go to its stream, so it must be known before any
 * record), stopping there; the second handles Records. Paths: the top map at depth 0,
 * Records at depth 1, each record map at depth 2, its members at depth 3. */
enum { CBOR_STOP = 1, CBOR_SHAPE = 2 };

typedef struct cbor_put {
  put_ctx *x;
  sv stream;
  bool records;
  cbor_rec cur;   /* the record being read */
  cbor_rec *recs; /* the first MAX_PUT records, handled once the walk is done */
  size_t n;       /* records seen */
} cbor_put;

static int cbor_find_stream(void *ud, const kp_cbor_item *it, const kp_cbor_level *lv) {
  cbor_put *cp = ud;
  if (it->depth == 0)
    return it->type == KP_CBOR_MAP || it->type == KP_CBOR_END ? 0 : CBOR_SHAPE;
  if (it->depth != 1 || !kp_cbor_key_is(lv, 0, "StreamName"))
    return 0;
  if (it->type != KP_CBOR_TEXT)
    return CBOR_SHAPE;
  cp->stream = (sv){(const char *)it->p, it->len, true};
  return CBOR_STOP;
}

static int cbor_records(void *ud, const kp_cbor_item *it, const kp_cbor_level *lv) {
  cbor_put *cp = ud;
  int d = it->depth;
  if (d == 0 || !kp_cbor_key_is(lv, 0, "Records"))
    return 0; /* the top map, StreamName (found already), unknown members */
  if (d == 1) {
    if (it->type == KP_CBOR_END)
      return 0;
    if (it->type != KP_CBOR_ARRAY)
      return CBOR_SHAPE;
    cp->records = true;
    return 0;
  }
  if (d == 2) {
    if (it->type == KP_CBOR_MAP) {
      cp->cur.has_data = cp->cur.pk.set = cp->cur.ehk.set = false;
      return 0;
    }
    if (it->type != KP_CBOR_END)
      return CBOR_SHAPE;
    if (cp->n < MAX_PUT)
      cp->recs[cp->n] = cp->cur;
    cp->n++;
    return 0;
  }
  if (d != 3)
    return 0; /* inside an unknown member of a record */
  if (kp_cbor_key_is(lv, 2, "Data")) {
    if (it->type != KP_CBOR_BYTES)
      return CBOR_SHAPE;
    cp->cur.data = it->p;
    cp->cur.data_len = it->len;
    cp->cur.has_data = true;
  } else if (kp_cbor_key_is(lv, 2, "PartitionKey")) {
    if (it->type != KP_CBOR_TEXT)
      return CBOR_SHAPE;
    cp->cur.pk = (sv){(const char *)it->p, it->len, true};
  } else if (kp_cbor_key_is(lv, 2, "ExplicitHashKey")) {
    if (it->type == KP_CBOR_TEXT)
      cp->cur.ehk = (sv){(const char *)it->p, it->len, true};
    else if (it->type != KP_CBOR_OTHER) /* null: no explicit hash key */
      return CBOR_SHAPE;
  }
  return 0;
}

static int put_cbor(worker *w, const char *body, size_t len, put_ctx *x) {
  cbor_put cp = {.x = x, .recs = w->recs};
  const uint8_t *b = (const uint8_t *)body;
  int rc = kp_cbor_walk(b, len, cbor_find_stream, &cp, NULL, 0);
  if (rc != CBOR_STOP || !cp.stream.set)
    return -1;
  x->st = stream_get(w, cp.stream.p, cp.stream.n); /* copies the name */
  if (!x->st)
    return -1;
  x->st->requests++;
  rc = kp_cbor_walk(b, len, cbor_records, &cp, NULL, 0);
  if (rc != 0 || !cp.records)
    return -1;
  if (cp.n > MAX_PUT) {
    x->n = cp.n; /* answered by the caller's count check; nothing counted */
    return 0;
  }
  /* The aggregates' MD5s side by side, as a consumer would check a GetRecords batch. */
  for (size_t i = 0; i < cp.n; i++)
    w->ins[i] = (kp_deagg_input){.data = cp.recs[i].has_data ? cp.recs[i].data : NULL,
                                 .data_len = cp.recs[i].has_data ? cp.recs[i].data_len : 0};
  kp_deagg_check_md5_many(w->ins, cp.n, w->md5_ok);
  for (size_t i = 0; i < cp.n && !x->bad; i++)
    put_one_cbor(x, &cp.recs[i], w->md5_ok[i]);
  return 0;
}

/* ---- responses ---------------------------------------------------------------------- */

static const char k_json_type[] = "application/x-amz-json-1.1";
static const char k_cbor_type[] = "application/x-amz-cbor-1.1";

static void respond_as(conn *c, int status, const char *ctype, const void *body, size_t len) {
  worker *w = c->w;
  const char *reason = status == 200   ? "OK"
                       : status == 400 ? "Bad Request"
                       : status == 403 ? "Forbidden"
                       : status == 413 ? "Payload Too Large"
                       : status == 431 ? "Request Header Fields Too Large"
                       : status == 501 ? "Not Implemented"
                                       : "Error";
  if (status >= 400)
    w->c.errors_4xx++;
  uint64_t id = ++w->req_id;
  append_fmt(&c->out,
             "HTTP/1.1 %d %s\r\nx-amzn-RequestId: %08x-%04x-4000-8000-%012llx\r\n"
             "Content-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
             status, reason, (unsigned)w->id, (unsigned)(id >> 48) & 0xFFFF,
             (unsigned long long)(id & 0xFFFFFFFFFFFFull), ctype, len,
             c->closing ? "Connection: close\r\n" : "");
  kp_buf_append(&c->out, body, len);
}

static void respond(conn *c, int status, const char *body, size_t len) {
  respond_as(c, status, k_json_type, body, len);
}

/* {"__type", "message"}, in CBOR if the request was CBOR. */
static void respond_error(conn *c, int status, const char *type, const char *msg) {
  if (c->cbor) {
    kp_buf *b = &c->w->body;
    kp_buf_reset(b);
    cb_map(b, 2);
    CB_LIT(b, "__type");
    cb_text(b, type, strlen(type));
    CB_LIT(b, "message");
    cb_text(b, msg, strlen(msg));
    respond_as(c, status, k_cbor_type, b->data, b->len);
    return;
  }
  json_t *o = json_pack("{s:s,s:s}", "__type", type, "message", msg);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  respond(c, status, s ? s : "{}", s ? strlen(s) : 2);
  free(s);
  json_decref(o);
}

static void respond_json(conn *c, json_t *o) {
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  if (s)
    respond(c, 200, s, strlen(s));
  else
    respond_error(c, 500, "InternalFailure", "out of memory");
  free(s);
  json_decref(o);
}

/* StreamName from a small (non-PutRecords) request body; NULL if absent. */
static json_t *small_body(const char *body, size_t len, const char **stream) {
  json_error_t err;
  json_t *root = json_loadb(body, len, 0, &err);
  json_t *sn = root ? json_object_get(root, "StreamName") : NULL;
  *stream = json_is_string(sn) ? json_string_value(sn) : NULL;
  return root;
}

static void op_list_shards(conn *c, const char *body, size_t len) {
  const char *stream;
  json_t *req = small_body(body, len, &stream);
  json_t *next = req ? json_object_get(req, "NextToken") : NULL;
  if (!req || (!stream && !json_is_string(next))) {
    respond_error(c, 400, "ValidationException", "StreamName or NextToken is required");
    json_decref(req);
    return;
  }
  json_t *shards = json_array();
  for (uint32_t i = 0; i < g_opt.shards; i++)
    json_array_append_new(
        shards, json_pack("{s:s,s:{s:s,s:s},s:{s:s}}", "ShardId", g_shards[i].id, "HashKeyRange",
                          "StartingHashKey", g_shards[i].start_dec, "EndingHashKey",
                          g_shards[i].end_dec, "SequenceNumberRange", "StartingSequenceNumber",
                          "49000000000000000000000000000000000000000000000000000000"));
  json_decref(req);
  respond_json(c, json_pack("{s:o}", "Shards", shards));
}

static void op_describe(conn *c, const char *body, size_t len) {
  const char *stream;
  json_t *req = small_body(body, len, &stream);
  if (!stream) {
    respond_error(c, 400, "ValidationException", "StreamName is required");
    json_decref(req);
    return;
  }
  char arn[512];
  snprintf(arn, sizeof arn, "arn:aws:kinesis:us-east-1:123456789012:stream/%s", stream);
  json_t *o = json_pack("{s:{s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:s,s:[{s:[]}],s:i}}",
                        "StreamDescriptionSummary", "StreamName", stream, "StreamARN", arn,
                        "StreamStatus", "ACTIVE", "StreamModeDetails", "PROVISIONED",
                        "RetentionPeriodHours", 24, "StreamCreationTimestamp", 1700000000,
                        "OpenShardCount", (int)g_opt.shards, "EncryptionType", "NONE",
                        "EnhancedMonitoring", "ShardLevelMetrics", "ConsumerCount", 0);
  /* StreamModeDetails is an object in Kinesis. */
  json_object_set_new(json_object_get(o, "StreamDescriptionSummary"), "StreamModeDetails",
                      json_pack("{s:s}", "StreamMode", "PROVISIONED"));
  json_decref(req);
  respond_json(c, o);
}

enum { CBOR_PREFIX = 16 }; /* map(3) 1 + "Records" 8 + array(n <= 500) 3 bytes */

/* Completes w->body (CBOR_PREFIX spare bytes, then the record outcomes) into
 * {"Records": [...], "FailedRecordCount": n, "EncryptionType": "NONE"} and sends it. */
static void respond_put_cbor(conn *c, const put_ctx *x) {
  kp_buf *b = &c->w->body;
  CB_LIT(b, "FailedRecordCount");
  if (!kp_buf_reserve(b, CBOR_HEAD_MAX))
    b->len += cbor_encode_uint(x->failed, b->data + b->len, CBOR_HEAD_MAX);
  CB_LIT(b, "EncryptionType");
  CB_LIT(b, "NONE");
  kp_buf head = KP_BUF_INIT; /* on the stack, never grown: room covers the worst case */
  uint8_t room[CBOR_PREFIX + CBOR_HEAD_MAX];
  head.data = room;
  head.cap = sizeof room;
  cb_map(&head, 3);
  CB_LIT(&head, "Records");
  head.len += cbor_encode_array_start(x->n, room + head.len, sizeof room - head.len);
  if (!b->data || b->len < CBOR_PREFIX || head.len > CBOR_PREFIX) {
    respond_error(c, 500, "InternalFailure", "out of memory");
    return;
  }
  /* Right-aligned in the spare bytes, so the body goes out as one contiguous piece. */
  uint8_t *start = b->data + CBOR_PREFIX - head.len;
  memcpy(start, room, head.len);
  respond_as(c, 200, k_cbor_type, start, b->len - (CBOR_PREFIX - head.len));
}

static void op_put_records(conn *c, const char *body, size_t len) {
  worker *w = c->w;
  put_ctx x = {w, NULL, 0, 0, false, ""};
  pthread_mutex_lock(&w->mu);
  w->c.put_requests++;
  w->c.body_bytes += len;
  kp_buf_reset(&w->body);
  kp_buf_reset(&w->scratch);
  int rc;
  if (c->cbor) {
    /* Room for the map, "Records" and array heads, written once the count is known. */
    rc = kp_buf_reserve(&w->body, CBOR_PREFIX); /* out of memory: answered as a 400 */
    if (!rc) {
      w->body.len = CBOR_PREFIX;
      rc = put_cbor(w, body, len, &x);
    }
  } else {
    APPEND_LIT(&w->body, "{\"Records\":[");
    rc = g_opt.jansson ? put_jansson(w, body, len, &x) : put_scan(w, body, len, &x);
  }
  pthread_mutex_unlock(&w->mu);
  if (rc) {
    respond_error(c, 400, "SerializationException", "malformed PutRecords body");
    return;
  }
  if (x.bad) {
    respond_error(c, 400, "ValidationException", x.why);
    return;
  }
  if (x.n == 0 || x.n > 500) {
    respond_error(c, 400, "ValidationException",
                  "1 validation error detected: Value at 'records' failed to satisfy "
                  "constraint: Member must have length between 1 and 500");
    return;
  }
  if (c->cbor) {
    respond_put_cbor(c, &x);
    return;
  }
  append_fmt(&w->body, "],\"FailedRecordCount\":%llu,\"EncryptionType\":\"NONE\"}",
             (unsigned long long)x.failed);
  respond(c, 200, (const char *)w->body.data, w->body.len);
}

/* ---- HTTP --------------------------------------------------------------------------- */

typedef struct req_hdrs {
  sv target, auth, ctype;
  bool has_clen, chunked, expect_continue, close, keep_alive, http10, post;
  size_t clen;
} req_hdrs;

static bool hname(const char *p, size_t n, const char *name) {
  return strlen(name) == n && strncasecmp(p, name, n) == 0;
}

/* Parses the request line and headers in p[0..n) (n ends with CRLFCRLF). */
static int parse_headers(const char *p, size_t n, req_hdrs *h) {
  memset(h, 0, sizeof *h);
  const char *end = p + n, *eol = memchr(p, '\n', n);
  if (!eol || eol - p < 14)
    return -1;
  h->post = strncmp(p, "POST ", 5) == 0;
  if (memcmp(eol - 9, "HTTP/1.1", 8) == 0)
    h->http10 = false;
  else if (memcmp(eol - 9, "HTTP/1.0", 8) == 0)
    h->http10 = true;
  else
    return -1;
  const char *line = eol + 1;
  for (int guard = 0; guard < 1000 && line < end; guard++) {
    eol = memchr(line, '\n', (size_t)(end - line));
    if (!eol)
      return -1;
    const char *le = eol > line && eol[-1] == '\r' ? eol - 1 : eol;
    if (le == line)
      return 0; /* blank line: end of headers */
    const char *colon = memchr(line, ':', (size_t)(le - line));
    if (!colon || line[0] == ' ' || line[0] == '\t')
      return -1; /* no obs-fold */
    const char *v = colon + 1;
    while (v < le && (*v == ' ' || *v == '\t'))
      v++;
    const char *ve = le;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
      ve--;
    size_t nl = (size_t)(colon - line), vl = (size_t)(ve - v);
    if (hname(line, nl, "content-length")) {
      size_t cl = 0;
      if (vl == 0 || vl > 12)
        return -1;
      for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9')
          return -1;
        cl = cl * 10 + (size_t)(v[i] - '0');
      }
      if (h->has_clen && cl != h->clen)
        return -1;
      h->has_clen = true;
      h->clen = cl;
    } else if (hname(line, nl, "x-amz-target")) {
      h->target = (sv){v, vl, true};
    } else if (hname(line, nl, "authorization")) {
      h->auth = (sv){v, vl, true};
    } else if (hname(line, nl, "content-type")) {
      h->ctype = (sv){v, vl, true};
    } else if (hname(line, nl, "transfer-encoding")) {
      h->chunked = true;
    } else if (hname(line, nl, "expect")) {
      h->expect_continue = vl == 12 && strncasecmp(v, "100-continue", 12) == 0;
    } else if (hname(line, nl, "connection")) {
      if (vl == 5 && strncasecmp(v, "close", 5) == 0)
        h->close = true;
      if (vl == 10 && strncasecmp(v, "keep-alive", 10) == 0)
        h->keep_alive = true;
    }
    line = eol + 1;
  }
  return -1;
}

/* Content-Type application/x-amz-cbor-1.1 (parameters allowed): a CBOR request. */
static bool is_cbor(const req_hdrs *h) {
  const size_t n = sizeof k_cbor_type - 1;
  return h->ctype.set && h->ctype.n >= n && strncasecmp(h->ctype.p, k_cbor_type, n) == 0 &&
         (h->ctype.n == n || h->ctype.p[n] == ';' || h->ctype.p[n] == ' ');
}

static void dispatch(conn *c, const req_hdrs *h, const char *body, size_t len) {
  worker *w = c->w;
  static const char prefix[] = "Kinesis_20131202.";
  const size_t pl = sizeof prefix - 1;
  w->c.requests++;
  if (!h->auth.set || h->auth.n == 0) {
    respond_error(c, 403, "MissingAuthenticationTokenException", "Missing Authentication Token");
    return;
  }
  if (!h->post || !h->target.set || h->target.n <= pl || memcmp(h->target.p, prefix, pl) != 0) {
    respond_error(c, 400, "UnknownOperationException", "");
    return;
  }
  sv op = {h->target.p + pl, h->target.n - pl, true};
  if (key_is(&op, "PutRecords")) {
    op_put_records(c, body, len);
    return;
  }
  w->c.other_requests++;
  if (key_is(&op, "ListShards"))
    op_list_shards(c, body, len);
  else if (key_is(&op, "DescribeStreamSummary"))
    op_describe(c, body, len);
  else if (key_is(&op, "CreateStream"))
    respond(c, 200, "", 0);
  else
    respond_error(c, 400, "UnknownOperationException", "");
}

/* Handles every complete request in the input buffer, one at a time: stops while a
 * response is delayed or still being written (so responses stay in order and a client
 * that never reads cannot make us buffer without bound). */
static void conn_process(conn *c) {
  for (int guard = 0; guard < 1024 && !c->paused && !c->closing && c->out_off == c->out.len;
       guard++) {
    size_t need;
    const char *p = (const char *)c->in.data + c->in_off;
    size_t avail = c->in.len - c->in_off;
    req_hdrs h;
    if (!c->hdr_len) {
      const char *e = avail >= 4 ? memmem(p, avail, "\r\n\r\n", 4) : NULL;
      if (!e) {
        if (avail > MAX_HEADER) {
          c->closing = true;
          c->cbor = false;
          respond_error(c, 431, "ValidationException", "request headers too large");
        }
        break;
      }
      c->hdr_len = (size_t)(e - p) + 4;
      int bad = parse_headers(p, c->hdr_len, &h);
      c->cbor = is_cbor(&h);
      if (bad || h.chunked || (!h.has_clen && h.post) || h.clen > g_opt.max_request) {
        c->closing = true;
        if (h.clen > g_opt.max_request)
          respond_error(c, 413, "ValidationException", "request too large");
        else if (h.chunked)
          respond_error(c, 501, "ValidationException", "chunked bodies are not supported");
        else
          respond_error(c, 400, "ValidationException", "malformed HTTP request");
        break;
      }
      c->body_len = h.clen;
      c->sent_continue = false;
      need = c->hdr_len + c->body_len;
      if (need > avail && kp_buf_reserve(&c->in, need - avail)) {
        conn_close(c);
        return;
      }
      p = (const char *)c->in.data + c->in_off;
    }
    if (avail < c->hdr_len + c->body_len) {
      if (parse_headers(p, c->hdr_len, &h) == 0 && h.expect_continue && !c->sent_continue) {
        c->sent_continue = true;
        APPEND_LIT(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
      }
      break;
    }
    if (parse_headers(p, c->hdr_len, &h)) { /* already validated above */
      conn_close(c);
      return;
    }
    c->closing = h.close || (h.http10 && !h.keep_alive);
    c->cbor = is_cbor(&h);
    dispatch(c, &h, p + c->hdr_len, c->body_len);
    c->in_off += c->hdr_len + c->body_len;
    c->hdr_len = c->body_len = 0;
    if (g_opt.latency_ms > 0) {
      c->paused = true;
      ev_io_stop(c->w->loop, &c->rio);
      ev_timer_set(&c->delay, g_opt.latency_ms / 1000.0, 0.);
      ev_timer_start(c->w->loop, &c->delay);
      return;
    }
    if (!conn_flush(c))
      return;
  }
  if (c->in_off == c->in.len) {
    c->in_off = 0;
    kp_buf_reset(&c->in);
  } else if (c->in_off > c->in.len / 2) {
    memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
    c->in.len -= c->in_off;
    c->in_off = 0;
  }
  conn_flush(c);
}

/* ---- I/O ---------------------------------------------------------------------------- */

static void conn_close(conn *c) {
  worker *w = c->w;
  ev_io_stop(w->loop, &c->rio);
  ev_io_stop(w->loop, &c->wio);
  ev_timer_stop(w->loop, &c->delay);
  if (c->ssl) {
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
  }
  close(c->fd);
  if (c->prev)
    c->prev->next = c->next;
  else
    w->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  w->nconns--;
  kp_buf_free(&c->in);
  kp_buf_free(&c->out);
  free(c);
}

/* Writes pending output, arming the write watcher if the socket is full. Returns false if
 * the connection was closed (error, or Connection: close once all is written). */
static bool conn_flush(conn *c) {
  worker *w = c->w;
  for (int guard = 0; guard < 1024 && c->out_off < c->out.len; guard++) {
    size_t left = c->out.len - c->out_off;
    ssize_t n;
    if (c->ssl) {
      ERR_clear_error();
      int r = SSL_write(c->ssl, c->out.data + c->out_off, left > INT32_MAX ? INT32_MAX : (int)left);
      if (r <= 0) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
          ev_io_start(w->loop, &c->wio);
          if (e == SSL_ERROR_WANT_READ)
            ev_io_start(w->loop, &c->rio);
          return true;
        }
        conn_close(c);
        return false;
      }
      n = r;
    } else {
      n = send(c->fd, c->out.data + c->out_off, left, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          ev_io_start(w->loop, &c->wio);
          return true;
        }
        if (errno == EINTR)
          continue;
        conn_close(c);
        return false;
      }
    }
    c->out_off += (size_t)n;
    w->c.bytes_out += (uint64_t)n;
  }
  if (c->out_off < c->out.len) { /* guard hit: come back when writable */
    ev_io_start(w->loop, &c->wio);
    return true;
  }
  ev_io_stop(w->loop, &c->wio);
  c->out_off = 0;
  kp_buf_reset(&c->out);
  if (c->closing) {
    conn_close(c);
    return false;
  }
  if (!c->paused && !ev_is_active(&c->rio))
    ev_io_start(w->loop, &c->rio);
  return true;
}

/* Reads what is available (bounded), then handles complete requests. */
static void conn_read(conn *c) {
  worker *w = c->w;
  if (c->paused)
    return;
  if (c->out_off < c->out.len) { /* an SSL_write wanted a read, or output is still queued */
    ev_io_stop(w->loop, &c->rio);
    conn_flush(c);
    return;
  }
  for (int round = 0; round < READ_ROUNDS; round++) {
    size_t want = c->hdr_len ? c->hdr_len + c->body_len - (c->in.len - c->in_off) : 0;
    if (want < 65536)
      want = 65536;
    if (kp_buf_reserve(&c->in, want)) {
      conn_close(c);
      return;
    }
    size_t room = c->in.cap - c->in.len;
    ssize_t n;
    if (c->ssl) {
      ERR_clear_error();
      int r = SSL_read(c->ssl, c->in.data + c->in.len, room > INT32_MAX ? INT32_MAX : (int)room);
      if (r <= 0) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
          break;
        if (e == SSL_ERROR_WANT_WRITE) {
          ev_io_start(w->loop, &c->wio);
          break;
        }
        conn_close(c);
        return;
      }
      n = r;
    } else {
      n = recv(c->fd, c->in.data + c->in.len, room, 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        break;
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        conn_close(c);
        return;
      }
    }
    c->in.len += (size_t)n;
    w->c.bytes_in += (uint64_t)n;
    if ((size_t)n < room && !c->ssl)
      break; /* drained the socket */
  }
  conn_process(c);
}

static void on_read(struct ev_loop *loop, ev_io *io, int revents) {
  conn_read((conn *)io->data);
}

static void on_write(struct ev_loop *loop, ev_io *io, int revents) {
  conn *c = io->data;
  if (c->out_off < c->out.len) {
    if (!conn_flush(c) || c->out_off < c->out.len)
      return;
  } else {
    ev_io_stop(loop, &c->wio); /* an SSL_read (handshake) wanted to write */
  }
  conn_read(c); /* requests that arrived (or sit in SSL's buffer) while we were writing */
}

static void on_delay(struct ev_loop *loop, ev_timer *t, int revents) {
  conn *c = t->data;
  c->paused = false;
  if (conn_flush(c) && c->out_off == c->out.len)
    conn_read(c); /* pipelined or SSL-buffered requests */
}

static void accept_on(worker *w, int lfd, bool tls) {
  for (int round = 0; round < ACCEPT_ROUNDS; round++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    if (w->nconns >= MAX_CONNS) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->w = w;
    c->fd = fd;
    if (tls) {
      c->ssl = SSL_new(g_ssl_ctx);
      if (!c->ssl || !SSL_set_fd(c->ssl, fd)) {
        SSL_free(c->ssl);
        close(fd);
        free(c);
        continue;
      }
      SSL_set_accept_state(c->ssl);
    }
    ev_io_init(&c->rio, on_read, fd, EV_READ);
    ev_io_init(&c->wio, on_write, fd, EV_WRITE);
    ev_init(&c->delay, on_delay);
    c->rio.data = c->wio.data = c->delay.data = c;
    c->next = w->conns;
    if (w->conns)
      w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    pthread_mutex_lock(&w->mu);
    w->c.connections++;
    pthread_mutex_unlock(&w->mu);
    ev_io_start(w->loop, &c->rio);
  }
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents) {
  worker *w = io->data;
  accept_on(w, io->fd, io == &w->tls_lw);
}

/* ---- listening sockets -------------------------------------------------------------- */

static int listen_on(int port, bool reuseport) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport)
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 1024)) {
    close(fd);
    return -1;
  }
  return fd;
}

static int bound_port(int fd) {
  struct sockaddr_in a;
  socklen_t l = sizeof a;
  if (getsockname(fd, (struct sockaddr *)&a, &l))
    return -1;
  return ntohs(a.sin_port);
}

/* ---- TLS: a CA and a server certificate, made at start -------------------------------- */

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ext)
    return -1;
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? 0 : -1;
}

static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       long serial) {
  X509 *x = X509_new();
  if (!x)
    return NULL;
  bool ca = issuer == NULL;
  X509_NAME *name = X509_get_subject_name(x);
  int ok =
      X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), serial) &&
      X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
      X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400) && X509_set_pubkey(x, key) &&
      X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"kp-sink", -1, -1,
                                 0) &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) &&
      X509_set_issuer_name(x, ca ? name : X509_get_subject_name(issuer));
  X509 *iss = ca ? x : issuer;
  if (ok && ca)
    ok = !add_ext(x, iss, NID_basic_constraints, "critical,CA:TRUE") &&
         !add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign") &&
         !add_ext(x, iss, NID_subject_key_identifier, "hash");
  else if (ok)
    ok = !add_ext(x, iss, NID_basic_constraints, "critical,CA:FALSE") &&
         !add_ext(x, iss, NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
         !add_ext(x, iss, NID_ext_key_usage, "serverAuth") &&
         !add_ext(x, iss, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost") &&
         !add_ext(x, iss, NID_subject_key_identifier, "hash") &&
         !add_ext(x, iss, NID_authority_key_identifier, "keyid:always");
  if (!ok || !X509_sign(x, ca ? key : issuer_key, EVP_sha256())) {
    X509_free(x);
    return NULL;
  }
  return x;
}

static int write_pem(const char *dir, const char *file, X509 *cert, EVP_PKEY *key, char *path,
                     size_t pathlen) {
  snprintf(path, pathlen, "%s/%s", dir, file);
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  int ok = cert ? PEM_write_X509(f, cert) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
  return fclose(f) == 0 && ok ? 0 : -1;
}

static char g_tls_dir[512], g_ca_path[600], g_cert_path[600], g_key_path[600];
static bool g_tls_dir_made;

static int tls_setup(void) {
  if (g_opt.tls_dir) {
    snprintf(g_tls_dir, sizeof g_tls_dir, "%s", g_opt.tls_dir);
  } else {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_tls_dir, sizeof g_tls_dir, "%s/kp-sink-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_tls_dir))
      return -1;
    g_tls_dir_made = true;
  }
  EVP_PKEY *cakey = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
  X509 *ca = cakey ? make_cert(cakey, "kp-sink test CA", NULL, NULL, 1) : NULL;
  X509 *cert = ca && key ? make_cert(key, "127.0.0.1", ca, cakey, 2) : NULL;
  int rc = -1;
  if (cert && !write_pem(g_tls_dir, "ca.pem", ca, NULL, g_ca_path, sizeof g_ca_path) &&
      !write_pem(g_tls_dir, "server.pem", cert, NULL, g_cert_path, sizeof g_cert_path) &&
      !write_pem(g_tls_dir, "server.key", NULL, key, g_key_path, sizeof g_key_path)) {
    g_ssl_ctx = SSL_CTX_new(TLS_server_method());
    if (g_ssl_ctx && SSL_CTX_set_min_proto_version(g_ssl_ctx, TLS1_2_VERSION) &&
        SSL_CTX_use_certificate(g_ssl_ctx, cert) == 1 &&
        SSL_CTX_use_PrivateKey(g_ssl_ctx, key) == 1) {
      SSL_CTX_set_mode(g_ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                      SSL_MODE_RELEASE_BUFFERS);
      rc = 0;
    }
  }
  X509_free(ca);
  X509_free(cert);
  EVP_PKEY_free(cakey);
  EVP_PKEY_free(key);
  return rc;
}

static void tls_cleanup(void) {
  if (g_tls_dir_made) {
    unlink(g_ca_path);
    unlink(g_cert_path);
    unlink(g_key_path);
    rmdir(g_tls_dir);
  }
  SSL_CTX_free(g_ssl_ctx);
}

/* ---- stats -------------------------------------------------------------------------- */

static worker g_workers[MAX_THREADS];

static void print_stats(const char *event) {
  counters t = {0};
  json_t *streams = json_object();
  for (int i = 0; i < g_opt.threads; i++) {
    worker *w = &g_workers[i];
    pthread_mutex_lock(&w->mu);
    const uint64_t *src = (const uint64_t *)&w->c;
    uint64_t *dst = (uint64_t *)&t;
    for (size_t k = 0; k < sizeof t / sizeof(uint64_t); k++)
      dst[k] += src[k];
    for (size_t s = 0; s <= MAX_STREAMS; s++) {
      stream_counts *sc = &w->streams[s];
      if (!sc->name || (s == MAX_STREAMS && !sc->requests))
        continue;
      json_t *o = json_object_get(streams, sc->name);
      if (!o) {
        json_t *sh = json_array();
        for (uint32_t k = 0; k < g_opt.shards; k++)
          json_array_append_new(sh, json_pack("{s:s,s:I,s:I,s:I}", "shard_id", g_shards[k].id,
                                              "kinesis_records", (json_int_t)0, "user_records",
                                              (json_int_t)0, "user_bytes", (json_int_t)0));
        o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "requests", (json_int_t)0, "kinesis_records",
                      (json_int_t)0, "kinesis_records_failed", (json_int_t)0, "user_records",
                      (json_int_t)0, "user_bytes", (json_int_t)0, "misrouted", (json_int_t)0,
                      "shards", sh);
        json_object_set_new(streams, sc->name, o);
      }
#define ADD(obj, key, v)                                                                           \
  json_object_set_new(                                                                             \
      obj, key, json_integer(json_integer_value(json_object_get(obj, key)) + (json_int_t)(v)))
      ADD(o, "requests", sc->requests);
      ADD(o, "kinesis_records", sc->krec);
      ADD(o, "kinesis_records_failed", sc->krec_failed);
      ADD(o, "user_records", sc->urec);
      ADD(o, "user_bytes", sc->ubytes);
      ADD(o, "misrouted", sc->misrouted);
      json_t *sh = json_object_get(o, "shards");
      for (uint32_t k = 0; k < g_opt.shards; k++) {
        json_t *e = json_array_get(sh, k);
        ADD(e, "kinesis_records", sc->shards[k].krec);
        ADD(e, "user_records", sc->shards[k].urec);
        ADD(e, "user_bytes", sc->shards[k].ubytes);
      }
#undef ADD
    }
    pthread_mutex_unlock(&w->mu);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6;
  double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
  double cpu = user + sys;
  json_t *o = json_pack(
      "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "event",
      event, "connections", (json_int_t)t.connections, "requests", (json_int_t)t.requests,
      "put_records_requests", (json_int_t)t.put_requests, "other_requests",
      (json_int_t)t.other_requests, "error_responses", (json_int_t)t.errors_4xx, "kinesis_records",
      (json_int_t)t.krec, "kinesis_records_failed", (json_int_t)t.krec_failed, "user_records",
      (json_int_t)t.urec, "user_bytes", (json_int_t)t.ubytes, "aggregates",
      (json_int_t)t.aggregates, "md5_verified", (json_int_t)t.md5_verified, "corrupt_aggregates",
      (json_int_t)t.corrupt, "misrouted", (json_int_t)t.misrouted, "bytes_in",
      (json_int_t)t.bytes_in, "body_bytes", (json_int_t)t.body_bytes, "bytes_out",
      (json_int_t)t.bytes_out, "shards", (json_int_t)g_opt.shards, "threads",
      (json_int_t)g_opt.threads);
  json_object_set_new(o, "parser", json_string(g_opt.jansson ? "jansson" : "scan"));
  json_object_set_new(o, "wall_s", json_real(wall_now() - g_start_wall));
  json_object_set_new(o, "cpu_s", json_real(cpu));
  json_object_set_new(o, "cpu_user_s", json_real(user));
  json_object_set_new(o, "cpu_sys_s", json_real(sys));
  json_object_set_new(o, "cpu_us_per_request",
                      json_real(t.requests ? cpu * 1e6 / (double)t.requests : 0));
  json_object_set_new(o, "cpu_us_per_user_record",
                      json_real(t.urec ? cpu * 1e6 / (double)t.urec : 0));
  json_object_set_new(o, "cpu_ns_per_body_byte",
                      json_real(t.body_bytes ? cpu * 1e9 / (double)t.body_bytes : 0));
  json_object_set_new(o, "streams", streams);
  char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
  if (s)
    printf("%s\n", s);
  fflush(stdout);
  free(s);
  json_decref(o);
}

/* ---- workers and main ---------------------------------------------------------------- */

static void on_stop(struct ev_loop *loop, ev_async *a, int revents) {
  ev_break(loop, EVBREAK_ALL);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  ev_run(w->loop, 0);
  return NULL;
}

static void worker_cleanup(worker *w) {
  for (size_t guard = 0; w->conns && guard < MAX_CONNS + 1; guard++)
    conn_close(w->conns);
  if (w->lfd >= 0)
    close(w->lfd);
  if (w->tls_lfd >= 0)
    close(w->tls_lfd);
  kp_deagg_destroy(w->deagg);
  free(w->recs);
  free(w->ins);
  free(w->md5_ok);
  kp_buf_free(&w->data);
  kp_buf_free(&w->scratch);
  kp_buf_free(&w->body);
  for (size_t s = 0; s <= MAX_STREAMS; s++) {
    free(w->streams[s].name);
    free(w->streams[s].shards);
  }
  if (w->loop && !ev_is_default_loop(w->loop))
    ev_loop_destroy(w->loop);
  pthread_mutex_destroy(&w->mu);
}

static void on_usr1(struct ev_loop *loop, ev_signal *s, int revents) {
  print_stats("stats");
}

static void on_term(struct ev_loop *loop, ev_signal *s, int revents) {
  ev_break(loop, EVBREAK_ALL);
}

static void usage(FILE *f) {
  fprintf(f, "usage: kp-sink [options]\n"
             "  --port N          plain HTTP port on 127.0.0.1 (0 = ephemeral, default)\n"
             "  --tls             also serve HTTPS (cert made at start; CA_FILE printed)\n"
             "  --tls-port N      HTTPS port (0 = ephemeral, default)\n"
             "  --tls-dir DIR     write ca.pem/server.pem/server.key here (default: temp dir,\n"
             "                    removed at exit)\n"
             "  --shards N        shards per stream (default 4)\n"
             "  --threads N       worker loops with SO_REUSEPORT (default 1)\n"
             "  --latency-ms X    delay each response by X ms (timer, loop never blocks)\n"
             "  --fail-rate P     fail each Kinesis record with probability P (default 0)\n"
             "  --fail-code CODE  error code of failed records\n"
             "                    (default ProvisionedThroughputExceededException)\n"
             "  --seed N          PRNG seed for failures (default 1)\n"
             "  --parser scan|jansson   PutRecords JSON body parser (default scan); CBOR 1.1\n"
             "                    bodies (Content-Type application/x-amz-cbor-1.1) are always\n"
             "                    walked in place and answered in CBOR\n"
             "  --no-route-check  skip per-user-record hash keys (no MD5 per partition key)\n"
             "  --max-request N   largest request body in bytes (default 16777216)\n"
             "SIGUSR1 prints a JSON stats line; SIGTERM/SIGINT print it and exit.\n");
}

static int parse_args(int argc, char **argv) {
  static const struct option opts[] = {{"port", required_argument, 0, 'p'},
                                       {"tls", no_argument, 0, 't'},
                                       {"tls-port", required_argument, 0, 'P'},
                                       {"tls-dir", required_argument, 0, 'D'},
                                       {"shards", required_argument, 0, 's'},
                                       {"threads", required_argument, 0, 'T'},
                                       {"latency-ms", required_argument, 0, 'l'},
                                       {"fail-rate", required_argument, 0, 'f'},
                                       {"fail-code", required_argument, 0, 'c'},
                                       {"seed", required_argument, 0, 'S'},
                                       {"parser", required_argument, 0, 'j'},
                                       {"no-route-check", no_argument, 0, 'n'},
                                       {"max-request", required_argument, 0, 'm'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    char *end = NULL;
    errno = 0;
    switch (ch) {
    case 'p':
      g_opt.port = (int)strtol(optarg, &end, 10);
      break;
    case 't':
      g_opt.tls = true;
      break;
    case 'P':
      g_opt.tls = true, g_opt.tls_port = (int)strtol(optarg, &end, 10);
      break;
    case 'D':
      g_opt.tls_dir = optarg;
      break;
    case 's':
      g_opt.shards = (uint32_t)strtoul(optarg, &end, 10);
      break;
    case 'T':
      g_opt.threads = (int)strtol(optarg, &end, 10);
      break;
    case 'l':
      g_opt.latency_ms = strtod(optarg, &end);
      break;
    case 'f':
      g_opt.fail_rate = strtod(optarg, &end);
      break;
    case 'c':
      g_opt.fail_code = optarg;
      break;
    case 'S':
      g_opt.seed = strtoull(optarg, &end, 10);
      break;
    case 'j':
      if (strcmp(optarg, "scan") && strcmp(optarg, "jansson"))
        return -1;
      g_opt.jansson = strcmp(optarg, "jansson") == 0;
      break;
    case 'n':
      g_opt.route_check = false;
      break;
    case 'm':
      g_opt.max_request = (size_t)strtoull(optarg, &end, 10);
      break;
    case 'h':
      usage(stdout);
      exit(0);
    default:
      return -1;
    }
    if (end && (*end || errno))
      return -1;
  }
  if (optind != argc || g_opt.port < 0 || g_opt.port > 65535 || g_opt.tls_port < 0 ||
      g_opt.tls_port > 65535 || g_opt.shards < 1 || g_opt.shards > 100000 || g_opt.threads < 1 ||
      g_opt.threads > MAX_THREADS || !(g_opt.latency_ms >= 0) || g_opt.latency_ms > 600000 ||
      !(g_opt.fail_rate >= 0 && g_opt.fail_rate <= 1) || strlen(g_opt.fail_code) > 100 ||
      g_opt.max_request < 1024)
    return -1;
  return 0;
}

int main(int argc, char **argv) {
  if (parse_args(argc, argv)) {
    usage(stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  g_start_wall = wall_now();
  g_seq_prefix = (uint64_t)time(NULL);
  g_shards = sink_shards_new(g_opt.shards);
  if (!g_shards || (g_opt.tls && tls_setup())) {
    fprintf(stderr, "kp-sink: setup failed\n");
    ERR_print_errors_fp(stderr);
    return 1;
  }
  bool reuse = g_opt.threads > 1;
  int port = g_opt.port, tls_port = g_opt.tls_port;
  for (int i = 0; i < g_opt.threads; i++) {
    worker *w = &g_workers[i];
    w->id = i;
    w->lfd = w->tls_lfd = -1;
    pthread_mutex_init(&w->mu, NULL);
    w->rng = g_opt.seed ^ (0xA24BAED4963EE407ull * (uint64_t)(i + 1));
    w->deagg = kp_deagg_new();
    w->recs = calloc(MAX_PUT, sizeof *w->recs);
    w->ins = calloc(MAX_PUT, sizeof *w->ins);
    w->md5_ok = calloc(MAX_PUT, sizeof *w->md5_ok);
    w->loop = i == 0 && g_opt.threads == 1 ? EV_DEFAULT : ev_loop_new(EVFLAG_AUTO);
    w->lfd = listen_on(port, reuse);
    if (w->lfd >= 0 && i == 0)
      port = bound_port(w->lfd);
    if (g_opt.tls) {
      w->tls_lfd = listen_on(tls_port, reuse);
      if (w->tls_lfd >= 0 && i == 0)
        tls_port = bound_port(w->tls_lfd);
    }
    if (!w->deagg || !w->recs || !w->ins || !w->md5_ok || !w->loop || w->lfd < 0 || port <= 0 ||
        (g_opt.tls && w->tls_lfd < 0)) {
      fprintf(stderr, "kp-sink: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
      g_opt.threads = i + 1;
      for (int k = 0; k <= i; k++)
        worker_cleanup(&g_workers[k]);
      tls_cleanup();
      return 1;
    }
    kp_deagg_set_hash_keys(w->deagg, g_opt.route_check);
    ev_io_init(&w->lw, on_accept, w->lfd, EV_READ);
    w->lw.data = w;
    ev_io_start(w->loop, &w->lw);
    if (g_opt.tls) {
      ev_io_init(&w->tls_lw, on_accept, w->tls_lfd, EV_READ);
      w->tls_lw.data = w;
      ev_io_start(w->loop, &w->tls_lw);
    }
    ev_async_init(&w->stop, on_stop);
    ev_async_start(w->loop, &w->stop);
  }
  struct ev_loop *main_loop = EV_DEFAULT;
  ev_signal s_usr1, s_term, s_int;
  ev_signal_init(&s_usr1, on_usr1, SIGUSR1);
  ev_signal_init(&s_term, on_term, SIGTERM);
  ev_signal_init(&s_int, on_term, SIGINT);
  ev_signal_start(main_loop, &s_usr1);
  ev_signal_start(main_loop, &s_term);
  ev_signal_start(main_loop, &s_int);

  printf("PORT %d\n", port);
  if (g_opt.tls)
    printf("TLS_PORT %d\nCA_FILE %s\n", tls_port, g_ca_path);
  printf("READY\n");
  fflush(stdout);

  if (g_opt.threads > 1) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* signals go to the main loop only */
    for (int i = 0; i < g_opt.threads; i++)
      if (pthread_create(&g_workers[i].thread, NULL, worker_main, &g_workers[i])) {
        fprintf(stderr, "kp-sink: pthread_create failed\n");
        return 1;
      }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  ev_run(main_loop, 0);
  if (g_opt.threads > 1)
    for (int i = 0; i < g_opt.threads; i++) {
      ev_async_send(g_workers[i].loop, &g_workers[i].stop);
      pthread_join(g_workers[i].thread, NULL);
    }
  print_stats("exit");
  for (int i = 0; i < g_opt.threads; i++)
    worker_cleanup(&g_workers[i]);
  tls_cleanup();
  free(g_shards);
  return 0;
}
