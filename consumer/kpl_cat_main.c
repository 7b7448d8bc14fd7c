/* kpl-cat: reads every shard of a Kinesis stream and prints its user records
 * (de-aggregated), one line each. See docs/kpl-cat.md and --help. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "common/log.h"
#include "consumer/kinesis_reader.h"
#include "format/hash_key.h"
#include "format/utf8.h"
#include "kp_deagg.h"

enum { EXIT_OK = 0, EXIT_ERR = 1, EXIT_USAGE = 2, EXIT_TIMEOUT = 3 };

#define OUT_FLUSH_AT (1u << 20)

typedef struct cat {
  kp_deagg *d;
  bool json, strict, filter;
  uint64_t count; /* 0: no limit */
  uint64_t users, filtered, aggregated, passed_through;
  kp_buf out; /* output, written in large chunks */
  kp_buf tmp;
  int write_errno;
} cat;

static void usage(FILE *f) {
  fputs("usage: kpl-cat --stream NAME [options]\n"
        "Reads every shard of a Kinesis stream (parents before children, following\n"
        "resharding), de-aggregates KPL aggregated records and prints one line per user\n"
        "record: its data followed by '\\n', or with --json a JSON object with\n"
        "partitionKey, explicitHashKey, hashKey, sequenceNumber, subSequenceNumber,\n"
        "data (base64) and shardId.\n"
        "\n"
        "Where:\n"
        "  --stream NAME               the stream (required)\n"
        "  --endpoint URL              host or http(s) URL (default: AWS for --region)\n"
        "  --region REGION             signing region (default: $AWS_REGION, else from an\n"
        "                              AWS endpoint host, else us-east-1)\n"
        "  --ca-file FILE              CA bundle for https (default: $CA_FILE)\n"
        "  --insecure                  do not verify the server certificate\n"
        "  --dummy-credentials         sign with dummy credentials (emulators); otherwise\n"
        "                              AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and\n"
        "                              AWS_SESSION_TOKEN are used\n"
        "What:\n"
        "  --iterator TYPE             TRIM_HORIZON (default), LATEST or AT_TIMESTAMP\n"
        "  --timestamp TIME            for AT_TIMESTAMP (implies it): epoch seconds or\n"
        "                              ISO-8601 (2024-05-01T12:00:00Z)\n"
        "  --json                      JSON lines instead of raw data lines\n"
        "  --strict                    fail (exit 1) on a corrupt aggregate instead of\n"
        "                              printing it as one record\n"
        "  --no-hash-filter            keep aggregated user records whose hash key lies\n"
        "                              outside their shard's range (the KCL drops them)\n"
        "When to stop (default: once every shard is caught up, i.e. read to its end or\n"
        "its last page was empty with MillisBehindLatest 0):\n"
        "  --count N                   after N user records (keeps reading until then)\n"
        "  --follow                    never stop when caught up; keep reading new records\n"
        "  --timeout SECONDS           stop when no record arrived for SECONDS\n"
        "  --max-time SECONDS          stop after SECONDS in all\n"
        "Tuning:\n"
        "  --limit N                   GetRecords Limit, 1..10000 (10000)\n"
        "  --poll-interval SECONDS     between GetRecords calls on one shard (0.2: the\n"
        "                              Kinesis limit of 5 per second per shard)\n"
        "  --idle-interval SECONDS     after an empty page (1.0)\n"
        "  --stats                     print a JSON summary line to stderr at the end\n"
        "  --log-level LEVEL           trace, debug, info, warning (default), error\n"
        "  -h, --help                  show this help\n"
        "Exit status: 0 done (caught up, --count reached, or --timeout/--max-time in\n"
        "--follow mode without --count); 1 error (unknown stream, API error, corrupt\n"
        "aggregate with --strict, output error); 2 usage; 3 --timeout or --max-time\n"
        "expired before --count N records or before catching up.\n",
        f);
}

/* ---- output ---------------------------------------------------------------------- */

static int out_flush(cat *c) {
  size_t off = 0;
  while (off < c->out.len) {
    size_t n = fwrite(c->out.data + off, 1, c->out.len - off, stdout);
    if (n == 0) {
      c->write_errno = errno ? errno : EIO;
      return -1;
    }
    off += n;
  }
  c->out.len = 0;
  if (fflush(stdout)) {
    c->write_errno = errno ? errno : EIO;
    return -1;
  }
  return 0;
}

/* Appends s as a JSON string. Plain printable ASCII goes straight through; anything
 * else is escaped by jansson (invalid UTF-8 is replaced by U+FFFD). */
static int json_str(cat *c, const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n && s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
    i++;
  if (i == n) {
    if (kp_buf_reserve(&c->out, n + 2))
      return -1;
    c->out.data[c->out.len++] = '"';
    memcpy(c->out.data + c->out.len, s, n);
    c->out.len += n;
    c->out.data[c->out.len++] = '"';
    return 0;
  }
  json_t *j = json_stringn((const char *)s, n);
  if (!j) { /* not UTF-8: lossy copy */
    kp_buf_reset(&c->tmp);
    if (kp_utf8_append_lossy(&c->tmp, s, n))
      return -1;
    j = json_stringn((const char *)c->tmp.data, c->tmp.len);
    if (!j)
      return -1;
  }
  size_t need = json_dumpb(j, NULL, 0, JSON_ENCODE_ANY);
  int rc = -1;
  if (need && !kp_buf_reserve(&c->out, need)) {
    json_dumpb(j, (char *)c->out.data + c->out.len, need, JSON_ENCODE_ANY);
    c->out.len += need;
    rc = 0;
  }
  json_decref(j);
  return rc;
}

static int print_json(cat *c, const kp_deagg_record *r, const char *shard_id) {
  char hk[KP_HASH_KEY_DEC_MAX], num[32];
  kp_hash_key k;
  memcpy(k.be, r->hash_key, 16);
  size_t hk_len = kp_hash_key_format(&k, hk);
  int num_len = snprintf(num, sizeof num, "%llu", (unsigned long long)r->sub_sequence_number);
  if (r->data_len > (size_t)INT32_MAX / 4 * 3 - 3)
    return -1;
  int rc = kp_buf_append_str(&c->out, "{\"partitionKey\":");
  rc |= json_str(c, r->partition_key, r->partition_key_len);
  rc |= kp_buf_append_str(&c->out, ",\"explicitHashKey\":");
  if (r->explicit_hash_key)
    rc |= json_str(c, r->explicit_hash_key, r->explicit_hash_key_len);
  else
    rc |= kp_buf_append_str(&c->out, "null");
  rc |= kp_buf_append_str(&c->out, ",\"hashKey\":\"");
  rc |= kp_buf_append(&c->out, hk, hk_len);
  rc |= kp_buf_append_str(&c->out, "\",\"sequenceNumber\":");
  rc |= json_str(c, (const uint8_t *)r->sequence_number, r->sequence_number_len);
  rc |= kp_buf_append_str(&c->out, ",\"subSequenceNumber\":");
  rc |= kp_buf_append(&c->out, num, (size_t)num_len);
  rc |= kp_buf_append_str(&c->out, ",\"data\":\"");
  if (rc || kp_buf_reserve(&c->out, (r->data_len + 2) / 3 * 4 + 1))
    return -1;
  c->out.len += (size_t)EVP_EncodeBlock(c->out.data + c->out.len, r->data, (int)r->data_len);
  rc |= kp_buf_append_str(&c->out, "\",\"shardId\":");
  rc |= json_str(c, (const uint8_t *)shard_id, strlen(shard_id));
  rc |= kp_buf_append(&c->out, "}\n", 2);
  return rc ? -1 : 0;
}

static int on_record(void *ud, const kr_shard_view *shard, const kp_fetched_record *rec,
                     char *errstr, size_t errlen) {
  cat *c = ud;
  kp_deagg_input in = {rec->data,
                       rec->data_len,
                       rec->partition_key,
                       rec->pk_len,
                       NULL,
                       0,
                       rec->sequence_number,
                       rec->sequence_number ? strlen(rec->sequence_number) : 0};
  kp_deagg_err e = kp_deagg_begin(c->d, &in);
  if (e != KP_DEAGG_OK) {
    snprintf(errstr, errlen, "%s, sequence number %s: %s: %s", shard->shard_id,
             rec->sequence_number ? rec->sequence_number : "?", kp_deagg_err2str(e),
             kp_deagg_errstr(c->d));
    return -1;
  }
  if (kp_deagg_corruption(c->d) != KP_DEAGG_OK) {
    c->passed_through++;
    KP_LOG_WARNING("%s, sequence number %s: corrupt aggregate printed as one record: %s: %s",
                   shard->shard_id, rec->sequence_number ? rec->sequence_number : "?",
                   kp_deagg_err2str(kp_deagg_corruption(c->d)), kp_deagg_errstr(c->d));
  }
  kp_deagg_record r;
  while (kp_deagg_next(c->d, &r) == KP_DEAGG_OK) {
    if (r.aggregated) {
      c->aggregated++;
      /* As the KCL: a sub-record outside its shard's range belongs to another shard
       * (a producer with a stale shard map re-sends it there). */
      if (c->filter && (memcmp(r.hash_key, shard->starting_hash_key.be, 16) < 0 ||
                        memcmp(r.hash_key, shard->ending_hash_key.be, 16) > 0)) {
        c->filtered++;
        continue;
      }
    }
    int rc;
    if (c->json) {
      rc = print_json(c, &r, shard->shard_id);
    } else {
      rc = kp_buf_append(&c->out, r.data, r.data_len);
      rc |= kp_buf_append(&c->out, "\n", 1);
    }
    if (rc) {
      snprintf(errstr, errlen, "out of memory");
      return -1;
    }
    if (c->out.len >= OUT_FLUSH_AT && out_flush(c)) {
      snprintf(errstr, errlen, "writing output: %s", strerror(c->write_errno));
      return -1;
    }
    c->users++;
    if (c->count && c->users >= c->count)
      return 1;
  }
  return 0;
}

/* ---- clock ----------------------------------------------------------------------- */

static double mono_now(void *ud) {
  (void)ud;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The reader sleeps only when no shard is due: a good moment to hand the output on
 * (with --follow, records show up without waiting for a full buffer). */
static cat *g_cat;
static void mono_sleep(void *ud, double secs) {
  (void)ud;
  if (g_cat && g_cat->out.len)
    out_flush(g_cat);
  struct timespec ts = {(time_t)secs, (long)((secs - floor(secs)) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* ---- arguments ------------------------------------------------------------------- */

static int parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s || *s == '-' || *s == '+')
    return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end)
    return -1;
  *out = v;
  return 0;
}

static int parse_secs(const char *s, double *out) {
  if (!s || !*s)
    return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v) || v < 0 || v > 1e9)
    return -1;
  *out = v;
  return 0;
}

static int usage_error(const char *fmt, const char *arg) {
  fputs("kpl-cat: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs(" (--help for usage)\n", stderr);
  return EXIT_USAGE;
}

int main(int argc, char **argv) {
  enum {
    O_STREAM = 256,
    O_ENDPOINT,
    O_REGION,
    O_ITER,
    O_TS,
    O_JSON,
    O_STRICT,
    O_COUNT,
    O_TIMEOUT,
    O_MAXTIME,
    O_FOLLOW,
    O_DUMMY,
    O_CAFILE,
    O_INSECURE,
    O_LIMIT,
    O_POLL,
    O_IDLE,
    O_NOFILTER,
    O_STATS,
    O_LOGLEVEL
  };
  static const struct option longopts[] = {
      {"stream", required_argument, NULL, O_STREAM},
      {"endpoint", required_argument, NULL, O_ENDPOINT},
      {"region", required_argument, NULL, O_REGION},
      {"iterator", required_argument, NULL, O_ITER},
      {"timestamp", required_argument, NULL, O_TS},
      {"json", no_argument, NULL, O_JSON},
      {"strict", no_argument, NULL, O_STRICT},
      {"count", required_argument, NULL, O_COUNT},
      {"timeout", required_argument, NULL, O_TIMEOUT},
      {"max-time", required_argument, NULL, O_MAXTIME},
      {"follow", no_argument, NULL, O_FOLLOW},
      {"dummy-credentials", no_argument, NULL, O_DUMMY},
      {"ca-file", required_argument, NULL, O_CAFILE},
      {"insecure", no_argument, NULL, O_INSECURE},
      {"limit", required_argument, NULL, O_LIMIT},
      {"poll-interval", required_argument, NULL, O_POLL},
      {"idle-interval", required_argument, NULL, O_IDLE},
      {"no-hash-filter", no_argument, NULL, O_NOFILTER},
      {"stats", no_argument, NULL, O_STATS},
      {"log-level", required_argument, NULL, O_LOGLEVEL},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  kr_options o;
  kr_options_default(&o);
  kr_http_options ho = {0};
  ho.region = getenv("AWS_REGION");
  if (!ho.region || !*ho.region)
    ho.region = getenv("AWS_DEFAULT_REGION");
  ho.ca_file = getenv("CA_FILE");
  ho.ca_dir = getenv("CA_DIR");
  cat c = {.filter = true, .out = KP_BUF_INIT, .tmp = KP_BUF_INIT};
  bool dummy = false, have_iter = false, have_ts = false, stats = false;
  kp_log_level level = KP_LOG_LEVEL_WARNING;
  uint64_t u;
  int opt;
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (opt) {
    case O_STREAM:
      o.stream = optarg;
      break;
    case O_ENDPOINT:
      ho.endpoint = optarg;
      break;
    case O_REGION:
      ho.region = optarg;
      break;
    case O_ITER:
      have_iter = true;
      if (!strcmp(optarg, "TRIM_HORIZON"))
        o.start = KR_TRIM_HORIZON;
      else if (!strcmp(optarg, "LATEST"))
        o.start = KR_LATEST;
      else if (!strcmp(optarg, "AT_TIMESTAMP"))
        o.start = KR_AT_TIMESTAMP;
      else
        return usage_error("--iterator: '%s' is not TRIM_HORIZON, LATEST or AT_TIMESTAMP", optarg);
      break;
    case O_TS:
      if (kr_parse_timestamp(optarg, &o.timestamp))
        return usage_error("--timestamp: '%s' is neither epoch seconds nor ISO-8601 "
                           "(2024-05-01T12:00:00Z)",
                           optarg);
      have_ts = true;
      break;
    case O_JSON:
      c.json = true;
      break;
    case O_STRICT:
      c.strict = true;
      break;
    case O_COUNT:
      if (parse_u64(optarg, &c.count) || c.count == 0)
        return usage_error("--count: '%s' is not a positive integer", optarg);
      break;
    case O_TIMEOUT:
      if (parse_secs(optarg, &o.idle_timeout) || o.idle_timeout <= 0)
        return usage_error("--timeout: '%s' is not a positive number of seconds", optarg);
      break;
    case O_MAXTIME:
      if (parse_secs(optarg, &o.max_time) || o.max_time <= 0)
        return usage_error("--max-time: '%s' is not a positive number of seconds", optarg);
      break;
    case O_FOLLOW:
      o.follow = true;
      break;
    case O_DUMMY:
      dummy = true;
      break;
    case O_CAFILE:
      ho.ca_file = optarg;
      break;
    case O_INSECURE:
      ho.insecure = true;
      break;
    case O_LIMIT:
      if (parse_u64(optarg, &u) || u < 1 || u > 10000)
        return usage_error("--limit: '%s' is not in 1..10000", optarg);
      o.limit = (int)u;
      break;
    case O_POLL:
      if (parse_secs(optarg, &o.poll_interval))
        return usage_error("--poll-interval: '%s' is not a number of seconds", optarg);
      break;
    case O_IDLE:
      if (parse_secs(optarg, &o.idle_interval))
        return usage_error("--idle-interval: '%s' is not a number of seconds", optarg);
      break;
    case O_NOFILTER:
      c.filter = false;
      break;
    case O_STATS:
      stats = true;
      break;
    case O_LOGLEVEL:
      if (kp_log_level_from_string(optarg, &level))
        return usage_error("--log-level: '%s' is not trace, debug, info, warning or error", optarg);
      break;
    case 'h':
      usage(stdout);
      return EXIT_OK;
    default:
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (!o.stream || !*o.stream)
    return usage_error("%s", "--stream NAME is required");
  if (have_ts && !have_iter)
    o.start = KR_AT_TIMESTAMP;
  if (o.start == KR_AT_TIMESTAMP && !have_ts)
    return usage_error("%s", "--iterator AT_TIMESTAMP needs --timestamp");
  if (have_ts && o.start != KR_AT_TIMESTAMP)
    return usage_error("--timestamp goes with --iterator AT_TIMESTAMP, not %s",
                       kr_start_name(o.start));
  if (dummy) {
    ho.access_key_id = "AKIDKPLCATDUMMY";
    ho.secret_key = "kpl-cat-dummy-secret";
  } else {
    ho.access_key_id = getenv("AWS_ACCESS_KEY_ID");
    ho.secret_key = getenv("AWS_SECRET_ACCESS_KEY");
    ho.session_token = getenv("AWS_SESSION_TOKEN");
    if (!ho.access_key_id || !*ho.access_key_id || !ho.secret_key || !*ho.secret_key) {
      fputs("kpl-cat: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(and AWS_SESSION_TOKEN if needed), or pass --dummy-credentials for an "
            "emulator\n",
            stderr);
      return EXIT_USAGE;
    }
  }
  kp_log_set_ident("kpl-cat");
  kp_log_set_level(level);

  char err[1024];
  kr_http *h = kr_http_new(&ho, err, sizeof err);
  if (!h) {
    fprintf(stderr, "kpl-cat: %s\n", err);
    return strstr(err, "out of memory") ? EXIT_ERR : EXIT_USAGE;
  }
  c.d = kp_deagg_new();
  if (!c.d) {
    kr_http_free(h);
    fputs("kpl-cat: out of memory\n", stderr);
    return EXIT_ERR;
  }
  kp_deagg_set_strict(c.d, c.strict);
  kp_deagg_set_hash_keys(c.d, c.json || c.filter);
  KP_LOG_INFO("reading stream '%s' from %s (region %s)", o.stream, kr_http_url(h),
              kr_http_region(h));

  /* With --count, reading goes on (following) until N records or a timeout. */
  bool follow_requested = o.follow;
  if (c.count)
    o.follow = true;
  g_cat = &c;
  kr_env env = {.call = kr_http_call,
                .call_ud = h,
                .now = mono_now,
                .sleep = mono_sleep,
                .on_record = on_record,
                .ud = &c};
  kr_stats st;
  double t0 = mono_now(NULL);
  kr_status s = kr_read(&o, &env, &st, err, sizeof err);
  double elapsed = mono_now(NULL) - t0;
  g_cat = NULL;
  int rc = EXIT_OK;
  if (out_flush(&c)) {
    fprintf(stderr, "kpl-cat: writing output: %s\n", strerror(c.write_errno));
    rc = EXIT_ERR;
  }
  switch (s) {
  case KR_ERROR:
    fprintf(stderr, "kpl-cat: %s\n", err);
    rc = EXIT_ERR;
    break;
  case KR_CAUGHT_UP:
  case KR_STOPPED:
    break;
  case KR_IDLE_TIMEOUT:
  case KR_TIME_LIMIT:
    if (c.count || !follow_requested) {
      char what[64] = "catching up";
      if (c.count)
        snprintf(what, sizeof what, "%llu records", (unsigned long long)c.count);
      fprintf(stderr, "kpl-cat: %s expired after %llu records, before %s\n",
              s == KR_IDLE_TIMEOUT ? "--timeout" : "--max-time", (unsigned long long)c.users, what);
      if (rc == EXIT_OK)
        rc = EXIT_TIMEOUT;
    }
    break;
  }
  if (c.filtered)
    KP_LOG_WARNING("%llu aggregated user records outside their shard's hash key range were "
                   "skipped (--no-hash-filter keeps them)",
                   (unsigned long long)c.filtered);
  if (stats)
    fprintf(stderr,
            "{\"userRecords\":%llu,\"kinesisRecords\":%llu,\"aggregatedUserRecords\":%llu,"
            "\"filtered\":%llu,\"passedThrough\":%llu,\"getRecordsCalls\":%llu,"
            "\"throttled\":%llu,\"retried\":%llu,\"shards\":%zu,\"shardsFinished\":%zu,"
            "\"seconds\":%.3f}\n",
            (unsigned long long)c.users, (unsigned long long)st.records,
            (unsigned long long)c.aggregated, (unsigned long long)c.filtered,
            (unsigned long long)c.passed_through, (unsigned long long)st.get_records_calls,
            (unsigned long long)st.throttled, (unsigned long long)st.retried, st.shards,
            st.shards_finished, elapsed);
  kp_buf_free(&c.out);
  kp_buf_free(&c.tmp);
  kp_deagg_destroy(c.d);
  kr_http_free(h);
  return rc;
}
