/* kp-bench-direct: the baseline without our daemon. One thread puts user records straight
 * to a Kinesis endpoint with PutRecords, no aggregation: `--records` records per request
 * (default 500, the Kinesis maximum), `--conns` requests in flight on a libcurl multi
 * handle, bodies written by our own encoders (CBOR, producer/kinesis_cbor.c, as the
 * daemon's bench runs use; JSON with --json) and signed with our SigV4 (producer/sigv4.c),
 * responses decoded record by record as the daemon does. What a careful application would do
 * without a KPL.
 *
 * Starts kp-sink like kpl-bench (--shards, --sink-latency-ms) unless --endpoint is given.
 * Prints a human summary and one JSON line (user records/s, MB/s, CPU us per record,
 * request latency percentiles, peak RSS, sink CPU). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <curl/curl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/kpl_bench/common.h"
#include "common/buf.h"
#include "producer/kinesis_api.h"
#include "producer/kinesis_cbor.h"
#include "producer/sigv4.h"

#define MAX_CONNS 256

static struct {
  int conns;
  int records;
  size_t record_size;
  uint64_t keys;
  double duration;
  int shards;
  double sink_latency_ms;
  const char *sink_path;
  const char *endpoint;
  const char *stream;
  const char *label;
  bool quiet;
  bool json; /* PutRecords in JSON 1.1 instead of CBOR 1.1 (the daemon's bench default) */
} opt = {8, 500, 100, 0, 5.0, 4, 0, NULL, NULL, "bench", "", false, false};

typedef struct slot {
  CURL *easy;
  struct curl_slist *headers;
  kp_buf body;
  kp_buf resp;
  kp_put_entry *entries;
  char (*pks)[24];
  uint64_t sent_ns;
  bool busy;
} slot;

static char g_url[256], g_host[256];
static kp_sigv4_signer *g_signer;
static uint8_t *g_data;
static uint64_t g_key_counter, g_key_seed = 0x9E3779B97F4A7C15ull;
static hist g_lat;
static unsigned long long g_ok, g_failed, g_bad_requests, g_requests;
static char g_first_error[256];

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  kp_buf *b = ud;
  return kp_buf_append(b, p, size * n) ? 0 : size * n;
}

static void next_key(char out[24]) {
  static const char hex[] = "0123456789abcdef";
  uint64_t v =
      opt.keys ? xorshift(&g_key_seed) % opt.keys : (g_key_counter++ * 0x9E3779B97F4A7C15ull);
  out[0] = 'k';
  for (int i = 15; i >= 0; i--)
    out[16 - i] = hex[(v >> (4 * i)) & 15];
  out[17] = 0;
}

/* Builds, signs and starts one PutRecords request on slot s. */
static int start_request(CURLM *multi, slot *s) {
  for (int i = 0; i < opt.records; i++) {
    next_key(s->pks[i]);
    s->entries[i] = (kp_put_entry){g_data, opt.record_size, s->pks[i], 17, NULL, 0, 0, NULL, 0};
  }
  kp_buf_reset(&s->body);
  kp_buf_reset(&s->resp);
  const kp_put_records_codec *codec = opt.json ? &kp_put_records_json : &kp_put_records_cbor;
  if (codec->encode(&s->body, opt.stream, strlen(opt.stream), s->entries, (size_t)opt.records))
    return -1;
  const char *ctype = codec->content_type;
  char ct[80];
  snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
  kp_sigv4_header hs[] = {{"Content-Type", ctype},
                          {"X-Amz-Target", KP_KINESIS_TARGET_PREFIX "PutRecords"}};
  kp_sigv4_request req = {"POST", g_host, "/", NULL, hs, 2, s->body.data, s->body.len, NULL, false};
  kp_sigv4_result sig;
  char err[256];
  if (kp_sigv4_sign(g_signer, &req, "us-east-1", "kinesis", time(NULL), &sig, err, sizeof err)) {
    kp_sigv4_result_free(&sig);
    fprintf(stderr, "kp-bench-direct: sign: %s\n", err);
    return -1;
  }
  char auth[KP_SIGV4_AUTH_MAX + 32], date[64];
  snprintf(auth, sizeof auth, "Authorization: %s", sig.authorization);
  snprintf(date, sizeof date, "X-Amz-Date: %s", sig.amz_date);
  kp_sigv4_result_free(&sig);
  curl_slist_free_all(s->headers);
  s->headers = NULL;
  const char *h[] = {ct, "X-Amz-Target: " KP_KINESIS_TARGET_PREFIX "PutRecords", "Expect:", auth,
                     date};
  for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
    struct curl_slist *n = curl_slist_append(s->headers, h[i]);
    if (!n)
      return -1;
    s->headers = n;
  }
  curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
  curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, (const char *)s->body.data);
  curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body.len);
  s->sent_ns = now_ns();
  s->busy = true;
  g_requests++;
  return curl_multi_add_handle(multi, s->easy) == CURLM_OK ? 0 : -1;
}

static void finish_request(CURLM *multi, slot *s, CURLcode cc) {
  curl_multi_remove_handle(multi, s->easy);
  s->busy = false;
  uint64_t lat = now_ns() - s->sent_ns;
  long status = 0;
  curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
  if (cc != CURLE_OK || status != 200) {
    if (!g_bad_requests++)
      snprintf(g_first_error, sizeof g_first_error, "request: curl %d, HTTP %ld: %.120s", (int)cc,
               status, s->resp.len ? (const char *)s->resp.data : "");
    g_failed += (unsigned long long)opt.records;
    return;
  }
  kp_put_records_result res;
  char err[256];
  const kp_put_records_codec *codec = opt.json ? &kp_put_records_json : &kp_put_records_cbor;
  if (codec->decode(s->resp.data, s->resp.len, (size_t)opt.records, &res, err, sizeof err)) {
    if (!g_bad_requests++)
      snprintf(g_first_error, sizeof g_first_error, "response: %.200s", err);
    g_failed += (unsigned long long)opt.records;
    return;
  }
  for (size_t i = 0; i < res.n; i++) {
    if (res.records[i].success)
      g_ok++;
    else
      g_failed++;
    hist_add(&g_lat, lat);
  }
  kp_put_records_result_free(&res);
}

static void usage(FILE *f) {
  fprintf(f, "usage: kp-bench-direct [--conns N] [--records N] [--record-size B] [--keys N]\n"
             "       [--duration S] [--shards N] [--sink-latency-ms X] [--sink PATH]\n"
             "       [--endpoint URL] [--stream NAME] [--label TEXT] [--quiet] [--json]\n"
             "PutRecords in CBOR 1.1 unless --json.\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"conns", required_argument, 0, 'c'},
                                       {"records", required_argument, 0, 'n'},
                                       {"record-size", required_argument, 0, 'R'},
                                       {"keys", required_argument, 0, 'K'},
                                       {"duration", required_argument, 0, 'd'},
                                       {"shards", required_argument, 0, 'S'},
                                       {"sink-latency-ms", required_argument, 0, 'L'},
                                       {"sink", required_argument, 0, 's'},
                                       {"endpoint", required_argument, 0, 'e'},
                                       {"stream", required_argument, 0, 'N'},
                                       {"label", required_argument, 0, 'l'},
                                       {"quiet", no_argument, 0, 'q'},
                                       {"json", no_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      opt.conns = atoi(optarg);
      break;
    case 'n':
      opt.records = atoi(optarg);
      break;
    case 'R':
      opt.record_size = (size_t)strtoull(optarg, NULL, 10);
      break;
    case 'K':
      opt.keys = strtoull(optarg, NULL, 10);
      break;
    case 'd':
      opt.duration = atof(optarg);
      break;
    case 'S':
      opt.shards = atoi(optarg);
      break;
    case 'L':
      opt.sink_latency_ms = atof(optarg);
      break;
    case 's':
      opt.sink_path = optarg;
      break;
    case 'e':
      opt.endpoint = optarg;
      break;
    case 'N':
      opt.stream = optarg;
      break;
    case 'l':
      opt.label = optarg;
      break;
    case 'q':
      opt.quiet = true;
      break;
    case 'j':
      opt.json = true;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc || opt.conns < 1 || opt.conns > MAX_CONNS || opt.records < 1 ||
      opt.records > 500 || opt.record_size < 1 || opt.record_size > 1048576 ||
      !(opt.duration > 0) || opt.duration > 3600 || opt.shards < 1 || opt.sink_latency_ms < 0) {
    usage(stderr);
    return 2;
  }
  /* PutRecords carries at most 5 MiB of data (CollectionMaxSize): fewer big records. */
  if ((size_t)opt.records * opt.record_size > 5242880)
    opt.records = (int)(5242880 / opt.record_size);
  if (opt.records < 1)
    opt.records = 1;
  if (!opt.sink_path && !opt.endpoint)
    opt.sink_path = sibling(argv[0], "kp-sink");
  char err[512];
  if (opt.endpoint) {
    snprintf(g_url, sizeof g_url, "%s", opt.endpoint);
  } else if (sink_start(opt.sink_path, opt.shards, opt.sink_latency_ms, 1, g_url, sizeof g_url, err,
                        sizeof err)) {
    fprintf(stderr, "kp-bench-direct: %s\n", err);
    sink_stop();
    return 1;
  }
  const char *h = strstr(g_url, "://");
  snprintf(g_host, sizeof g_host, "%s", h ? h + 3 : g_url);
  char *slash = strchr(g_host, '/');
  if (slash)
    *slash = 0;

  curl_global_init(CURL_GLOBAL_DEFAULT);
  g_signer = kp_sigv4_signer_new();
  g_data = malloc(opt.record_size);
  if (!g_signer || !g_data ||
      kp_sigv4_signer_set_credentials(g_signer, "AKIDBENCH", "bench-secret", NULL)) {
    fprintf(stderr, "kp-bench-direct: setup failed\n");
    sink_stop();
    return 1;
  }
  uint64_t seed = 0x2545F4914F6CDD1Dull;
  for (size_t i = 0; i < opt.record_size; i++)
    g_data[i] = (uint8_t)xorshift(&seed);
  CURLM *multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)opt.conns);
  slot *slots = calloc((size_t)opt.conns, sizeof *slots);
  for (int i = 0; slots && i < opt.conns; i++) {
    slot *s = &slots[i];
    s->easy = curl_easy_init();
    s->entries = calloc((size_t)opt.records, sizeof *s->entries);
    s->pks = calloc((size_t)opt.records, sizeof *s->pks);
    if (!s->easy || !s->entries || !s->pks)
      return 1;
    curl_easy_setopt(s->easy, CURLOPT_URL, g_url);
    curl_easy_setopt(s->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, &s->resp);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    curl_easy_setopt(s->easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
  }

  double load_start = loadavg1();
  unsigned long long sb0, st0, sb1, st1;
  sys_cpu(&sb0, &st0);
  sink_stats sink0 = sink_read_stats(SIGUSR1);
  double cpu0 = rusage_cpu(RUSAGE_SELF);
  uint64_t t0 = now_ns(), t_end = t0 + (uint64_t)(opt.duration * 1e9);
  uint64_t hard_end = t_end + 60000000000ull;
  int running = 0;
  for (uint64_t guard = 0; guard < 1000000000ull; guard++) {
    uint64_t now = now_ns();
    if (now < t_end)
      for (int i = 0; i < opt.conns; i++)
        if (!slots[i].busy && start_request(multi, &slots[i])) {
          fprintf(stderr, "kp-bench-direct: cannot start a request\n");
          t_end = now;
          break;
        }
    curl_multi_perform(multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(multi, &left)))
      if (m->msg == CURLMSG_DONE) {
        slot *s;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
        finish_request(multi, s, m->data.result);
      }
    int busy = 0;
    for (int i = 0; i < opt.conns; i++)
      busy += slots[i].busy;
    if ((now >= t_end && !busy) || now >= hard_end)
      break;
    /* A slot just freed gets its next request at once: with every transfer done,
     * curl_multi_poll would sleep its whole timeout (this cut some runs to ~5 %). */
    if (busy < opt.conns && now < t_end)
      continue;
    curl_multi_poll(multi, NULL, 0, 100, NULL);
  }
  uint64_t t_done = now_ns();
  double cpu = rusage_cpu(RUSAGE_SELF) - cpu0;
  sys_cpu(&sb1, &st1);
  sink_stats sink1 = sink_read_stats(SIGUSR1);
  double rss = vm_hwm_mib(0);
  sink_stop();

  double wall = (double)(t_done - t0) * 1e-9;
  double rps = (double)g_ok / wall, mbps = (double)g_ok * (double)opt.record_size / wall / 1e6;
  double per = g_ok ? 1e6 / (double)g_ok : 0;
  double sink_cpu = sink1.valid && sink0.valid ? sink1.cpu_s - sink0.cpu_s : -1;
  double sys_busy = st1 > st0 ? 100.0 * (double)(sb1 - sb0) / (double)(st1 - st0) : -1;
  double p50 = hist_quantile(&g_lat, 0.5) / 1e6, p99 = hist_quantile(&g_lat, 0.99) / 1e6;
  if (!opt.quiet) {
    printf("kp-bench-direct: %d requests in flight x %d records of %zu B, %d shard(s), sink "
           "latency %g ms\n",
           opt.conns, opt.records, opt.record_size, opt.shards, opt.sink_latency_ms);
    printf("  records   %llu ok, %llu failed in %llu requests, %.2f s\n", g_ok, g_failed,
           g_requests, wall);
    printf("  rate      %.0f user records/s, %.1f MB/s of user data\n", rps, mbps);
    printf("  CPU       %.3f s, %.3f us/rec; sink %.3f us/rec\n", cpu, cpu * per,
           sink_cpu > 0 ? sink_cpu * per : 0);
    printf("  latency   request p50 %.2f ms, p99 %.2f ms; peak RSS %.1f MiB; machine %.0f %% "
           "busy, load %.2f\n",
           p50, p99, rss, sys_busy, load_start);
    if (g_first_error[0])
      printf("  first error: %s\n", g_first_error);
  }
  printf("{\"tool\":\"kp-bench-direct\",\"label\":\"%s\",\"request_encoding\":\"%s\",\"conns\":%d,"
         "\"records_per_request\":%d,"
         "\"record_size\":%zu,\"shards\":%d,\"sink_latency_ms\":%g,\"wall_s\":%.3f,"
         "\"requests\":%llu,\"results_ok\":%llu,\"results_failed\":%llu,"
         "\"user_records_per_s\":%.0f,\"mb_per_s\":%.2f,\"client_cpu_s\":%.3f,"
         "\"client_us_per_rec\":%.4f,\"total_us_per_rec\":%.4f,\"sink_us_per_rec\":%.4f,"
         "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"client_rss_mib\":%.1f,"
         "\"system_busy_pct\":%.1f,\"loadavg_start\":%.2f,\"sink_user_records\":%llu,"
         "\"ok\":%s}\n",
         opt.label, opt.json ? "json" : "cbor", opt.conns, opt.records, opt.record_size, opt.shards,
         opt.sink_latency_ms, wall, g_requests, g_ok, g_failed, rps, mbps, cpu, cpu * per,
         cpu * per, sink_cpu > 0 ? sink_cpu * per : 0, p50, p99, rss, sys_busy, load_start,
         sink1.valid ? sink1.user_records - sink0.user_records : 0,
         g_failed || g_bad_requests ? "false" : "true");
  for (int i = 0; slots && i < opt.conns; i++) {
    curl_easy_cleanup(slots[i].easy);
    curl_slist_free_all(slots[i].headers);
    kp_buf_free(&slots[i].body);
    kp_buf_free(&slots[i].resp);
    free(slots[i].entries);
    free(slots[i].pks);
  }
  free(slots);
  curl_multi_cleanup(multi);
  kp_sigv4_signer_free(g_signer);
  free(g_data);
  curl_global_cleanup();
  return g_failed || g_bad_requests ? 1 : 0;
}
