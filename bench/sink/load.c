/* kp-sink-load: replays one pre-built PutRecords request at a Kinesis endpoint (kp-sink)
 * over keep-alive connections, one blocking thread per connection, so that the sink's
 * cost per user record can be measured without a producer in the way.
 *
 * The request holds KPL aggregates of `--record-size` byte user records with random
 * decimal partition keys, aggregated per shard (AWS even ranges for `--shards`) up to
 * `--agg-size` bytes each, `--aggs` aggregates per request (default 100: 5,120,000 bytes
 * of data, under the 5 MiB PutRecords limit). Built with the project's own encoders
 * (format/agg_encoder, producer/kinesis_api, or producer/kinesis_cbor with --cbor), so
 * the body is what the daemon sends.
 *
 * Prints one JSON line: requests, user records, bytes, wall seconds, rates, client CPU. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench/sink/shards.h"
#include "common/buf.h"
#include "format/agg_encoder.h"
#include "format/cbor_walk.h"
#include "format/hash_key.h"
#include "producer/kinesis_api.h"
#include "producer/kinesis_cbor.h"

static struct {
  int port;
  int conns;
  double seconds;
  long long max_requests;
  size_t record_size;
  size_t agg_size;
  int aggs;
  uint32_t shards;
  const char *stream;
  bool tls;
  const char *ca_file;
  bool cbor; /* CBOR 1.1 request bodies (and responses) instead of JSON 1.1 */
} g = {0, 1, 5.0, -1, 100, 51200, 100, 4, "bench", false, NULL, false};

static kp_buf g_req;      /* the whole HTTP request */
static uint64_t g_urec;   /* user records per request */
static uint64_t g_krec;   /* Kinesis records per request */
static size_t g_body_len; /* PutRecords body bytes per request */
static SSL_CTX *g_ctx;
static atomic_llong g_budget; /* requests left (when --requests is given) */
static atomic_llong g_ok, g_partial, g_bad, g_failed_records;
static double g_deadline;

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Builds the PutRecords body: per-shard encoders, random keys, `aggs` full aggregates. */
static int build_request(void) {
  sink_shard *shards = sink_shards_new(g.shards);
  kp_agg_encoder **enc = calloc(g.shards, sizeof *enc);
  kp_put_entry *entries = calloc((size_t)g.aggs, sizeof *entries);
  uint8_t **blobs = calloc((size_t)g.aggs, sizeof *blobs);
  char(*pks)[8] = calloc((size_t)g.aggs, sizeof *pks);
  char(*ehks)[KP_HASH_KEY_DEC_MAX] = calloc((size_t)g.aggs, sizeof *ehks);
  uint8_t *data = malloc(g.record_size + 1);
  if (!shards || !enc || !entries || !blobs || !pks || !ehks || !data)
    return -1;
  for (uint32_t i = 0; i < g.shards; i++)
    if (!(enc[i] = kp_agg_encoder_new()))
      return -1;
  uint64_t seed = 0x2545F4914F6CDD1Dull;
  int n = 0;
  for (uint64_t guard = 0; n < g.aggs && guard < 100000000ull; guard++) {
    char pk[32];
    int pl =
        snprintf(pk, sizeof pk, "%llu", (unsigned long long)(rnd(&seed) % 10000000000000000ull));
    for (size_t b = 0; b < g.record_size; b++)
      data[b] = (uint8_t)rnd(&seed);
    kp_hash_key hk;
    kp_hash_key_of_partition_key(pk, (size_t)pl, &hk);
    uint32_t s = sink_shard_find(shards, g.shards, &hk);
    if (kp_agg_encoder_count(enc[s]) > 0 &&
        kp_agg_encoder_size_with(enc[s], pk, (size_t)pl, NULL, 0, g.record_size) > g.agg_size) {
      kp_agg_output out;
      if (kp_agg_encoder_finish(enc[s], &out))
        return -1;
      blobs[n] = malloc(out.data_len);
      if (!blobs[n] || out.partition_key_len >= sizeof pks[n])
        return -1;
      memcpy(blobs[n], out.data, out.data_len);
      memcpy(pks[n], out.partition_key, out.partition_key_len);
      memcpy(ehks[n], out.explicit_hash_key, sizeof ehks[n]);
      entries[n] = (kp_put_entry){blobs[n], out.data_len,    pks[n], out.partition_key_len,
                                  ehks[n],  strlen(ehks[n]), 0,      NULL,
                                  0};
      g_urec += kp_agg_encoder_count(enc[s]);
      n++;
      kp_agg_encoder_reset(enc[s]);
    }
    if (kp_agg_encoder_add(enc[s], pk, (size_t)pl, NULL, 0, data, g.record_size, &hk))
      return -1;
  }
  if (n < g.aggs)
    return -1;
  g_krec = (uint64_t)n;
  kp_buf body = KP_BUF_INIT;
  const kp_put_records_codec *codec = g.cbor ? &kp_put_records_cbor : &kp_put_records_json;
  if (codec->encode(&body, g.stream, strlen(g.stream), entries, (size_t)n))
    return -1;
  g_body_len = body.len;
  char head[512];
  int hl = snprintf(head, sizeof head,
                    "POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                    "Content-Type: %s\r\n"
                    "X-Amz-Target: Kinesis_20131202.PutRecords\r\n"
                    "Authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/"
                    "kinesis/aws4_request, SignedHeaders=host, Signature=00\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    g.port, codec->content_type, body.len);
  if (kp_buf_append(&g_req, head, (size_t)hl) || kp_buf_append(&g_req, body.data, body.len))
    return -1;
  kp_buf_free(&body);
  for (int i = 0; i < n; i++)
    free(blobs[i]);
  for (uint32_t i = 0; i < g.shards; i++)
    kp_agg_encoder_free(enc[i]);
  free(enc), free(entries), free(blobs), free(pks), free(ehks), free(data), free(shards);
  return 0;
}

typedef struct io {
  int fd;
  SSL *ssl;
} io;

static ssize_t io_write(io *x, const void *p, size_t n) {
  if (x->ssl) {
    int r = SSL_write(x->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    return r > 0 ? r : -1;
  }
  return send(x->fd, p, n, MSG_NOSIGNAL);
}

static ssize_t io_read(io *x, void *p, size_t n) {
  if (x->ssl) {
    int r = SSL_read(x->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    return r > 0 ? r : -1;
  }
  return recv(x->fd, p, n, 0);
}

/* FailedRecordCount of a CBOR PutRecords response (top-level member). */
static int cbor_failed_count(void *ud, const kp_cbor_item *it, const kp_cbor_level *lv) {
  if (it->depth == 1 && it->type == KP_CBOR_UINT && kp_cbor_key_is(lv, 0, "FailedRecordCount"))
    *(long long *)ud = it->u > LLONG_MAX ? LLONG_MAX : (long long)it->u;
  return 0;
}

/* FailedRecordCount of a 200 response body in the request's encoding; -1 if absent or
 * the body is not of that encoding (a sink answering CBOR in JSON counts as bad). */
static long long failed_count(const uint8_t *body, size_t len, const uint8_t *head,
                              size_t head_len) {
  long long failed = -1;
  if (g.cbor) {
    static const char ct[] = "Content-Type: " KP_KINESIS_CBOR_CONTENT_TYPE;
    if (!memmem(head, head_len, ct, sizeof ct - 1) ||
        kp_cbor_walk(body, len, cbor_failed_count, &failed, NULL, 0))
      return -1;
    return failed;
  }
  const char *f = memmem(body, len, "\"FailedRecordCount\":", 20);
  return f ? strtoll(f + 20, NULL, 10) : -1;
}

/* One request/response exchange. Returns 1 ok, 2 a 200 with failed records, 0 another
 * status, -1 I/O error. */
static int exchange(io *x, kp_buf *in) {
  for (size_t off = 0; off < g_req.len;) {
    ssize_t n = io_write(x, g_req.data + off, g_req.len - off);
    if (n <= 0)
      return -1;
    off += (size_t)n;
  }
  kp_buf_reset(in);
  size_t hdr = 0, clen = 0;
  for (int guard = 0; guard < 100000; guard++) {
    if (kp_buf_reserve(in, 65536))
      return -1;
    ssize_t n = io_read(x, in->data + in->len, in->cap - in->len);
    if (n <= 0)
      return -1;
    in->len += (size_t)n;
    if (!hdr) {
      const uint8_t *e = memmem(in->data, in->len, "\r\n\r\n", 4);
      if (!e)
        continue;
      hdr = (size_t)(e - in->data) + 4;
      const char *cl = memmem(in->data, hdr, "Content-Length: ", 16);
      if (!cl)
        return -1;
      clen = strtoull(cl + 16, NULL, 10);
    }
    if (in->len >= hdr + clen) {
      if (memcmp(in->data, "HTTP/1.1 200", 12) != 0)
        return 0;
      long long failed = failed_count(in->data + hdr, clen, in->data, hdr);
      if (failed)
        atomic_fetch_add(&g_failed_records, failed < 0 ? 0 : failed);
      return failed == 0 ? 1 : failed > 0 ? 2 : 0;
    }
  }
  return -1;
}

static void *client(void *arg) {
  io x = {-1, NULL};
  kp_buf in = KP_BUF_INIT;
  x.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)g.port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  if (x.fd < 0 || connect(x.fd, (struct sockaddr *)&a, sizeof a)) {
    perror("kp-sink-load: connect");
    atomic_fetch_add(&g_bad, 1);
    goto out;
  }
  setsockopt(x.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (g.tls) {
    x.ssl = SSL_new(g_ctx);
    if (!x.ssl || !SSL_set_fd(x.ssl, x.fd) || !SSL_set1_host(x.ssl, "127.0.0.1") ||
        SSL_connect(x.ssl) != 1) {
      fprintf(stderr, "kp-sink-load: TLS handshake failed\n");
      ERR_print_errors_fp(stderr);
      atomic_fetch_add(&g_bad, 1);
      goto out;
    }
  }
  for (;;) {
    if (wall_now() >= g_deadline)
      break;
    if (g.max_requests >= 0 && atomic_fetch_sub(&g_budget, 1) <= 0)
      break;
    int r = exchange(&x, &in);
    if (r < 0) {
      atomic_fetch_add(&g_bad, 1);
      break;
    }
    atomic_fetch_add(r == 1 ? &g_ok : r == 2 ? &g_partial : &g_bad, 1);
  }
out:
  if (x.ssl) {
    SSL_shutdown(x.ssl);
    SSL_free(x.ssl);
  }
  if (x.fd >= 0)
    close(x.fd);
  kp_buf_free(&in);
  return NULL;
}

static void usage(FILE *f) {
  fprintf(f, "usage: kp-sink-load --port N [--conns N] [--seconds S] [--requests N]\n"
             "       [--record-size B] [--agg-size B] [--aggs N] [--shards N] [--stream NAME]\n"
             "       [--tls --ca-file PATH] [--cbor]\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"port", required_argument, 0, 'p'},
                                       {"conns", required_argument, 0, 'c'},
                                       {"seconds", required_argument, 0, 's'},
                                       {"requests", required_argument, 0, 'r'},
                                       {"record-size", required_argument, 0, 'R'},
                                       {"agg-size", required_argument, 0, 'A'},
                                       {"aggs", required_argument, 0, 'a'},
                                       {"shards", required_argument, 0, 'S'},
                                       {"stream", required_argument, 0, 'n'},
                                       {"tls", no_argument, 0, 't'},
                                       {"ca-file", required_argument, 0, 'C'},
                                       {"cbor", no_argument, 0, 'b'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'p':
      g.port = atoi(optarg);
      break;
    case 'c':
      g.conns = atoi(optarg);
      break;
    case 's':
      g.seconds = atof(optarg);
      break;
    case 'r':
      g.max_requests = atoll(optarg);
      break;
    case 'R':
      g.record_size = (size_t)atoll(optarg);
      break;
    case 'A':
      g.agg_size = (size_t)atoll(optarg);
      break;
    case 'a':
      g.aggs = atoi(optarg);
      break;
    case 'S':
      g.shards = (uint32_t)atoi(optarg);
      break;
    case 'n':
      g.stream = optarg;
      break;
    case 't':
      g.tls = true;
      break;
    case 'C':
      g.ca_file = optarg;
      break;
    case 'b':
      g.cbor = true;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (g.port <= 0 || g.port > 65535 || g.conns < 1 || g.conns > 256 || !(g.seconds > 0) ||
      g.seconds > 3600 || g.record_size < 1 || g.record_size > 1048576 || g.agg_size < 64 ||
      g.aggs < 1 || g.aggs > 500 || g.shards < 1 || g.shards > 100000 || (g.tls && !g.ca_file)) {
    usage(stderr);
    return 2;
  }
  if (g.tls) {
    g_ctx = SSL_CTX_new(TLS_client_method());
    if (!g_ctx || SSL_CTX_load_verify_locations(g_ctx, g.ca_file, NULL) != 1) {
      fprintf(stderr, "kp-sink-load: cannot load CA %s\n", g.ca_file);
      return 1;
    }
    SSL_CTX_set_verify(g_ctx, SSL_VERIFY_PEER, NULL);
  }
  if (build_request()) {
    fprintf(stderr, "kp-sink-load: cannot build the request\n");
    return 1;
  }
  atomic_store(&g_budget, g.max_requests);
  pthread_t th[256];
  double t0 = wall_now();
  g_deadline = t0 + g.seconds;
  int started = 0;
  for (; started < g.conns; started++)
    if (pthread_create(&th[started], NULL, client, NULL))
      break;
  for (int i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  double wall = wall_now() - t0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
  long long ok = atomic_load(&g_ok), partial = atomic_load(&g_partial), bad = atomic_load(&g_bad);
  uint64_t answered = (uint64_t)(ok + partial); /* user records sent in 200 answers */
  printf("{\"event\":\"load\",\"tls\":%s,\"cbor\":%s,\"conns\":%d,\"requests_ok\":%lld,\"requests_"
         "partial\":%"
         "lld,\"requests_bad\":%lld,"
         "\"failed_records\":%lld,\"kinesis_records_per_request\":%llu,"
         "\"user_records_per_request\":%llu,\"body_bytes_per_request\":%zu,"
         "\"user_records\":%llu,\"body_bytes\":%llu,\"wall_s\":%.3f,"
         "\"user_records_per_s\":%.0f,\"body_mb_per_s\":%.1f,\"client_cpu_s\":%.3f}\n",
         g.tls ? "true" : "false", g.cbor ? "true" : "false", g.conns, ok, partial, bad,
         (long long)atomic_load(&g_failed_records), (unsigned long long)g_krec,
         (unsigned long long)g_urec, g_body_len, (unsigned long long)(g_urec * answered),
         (unsigned long long)(g_body_len * answered), wall, (double)(g_urec * answered) / wall,
         (double)(g_body_len * answered) / wall / 1e6, cpu);
  kp_buf_free(&g_req);
  SSL_CTX_free(g_ctx);
  return bad ? 1 : 0;
}
