/* Stream reader (see kinesis_reader.h): shard ordering, pacing, retries; and the
 * blocking libcurl transport with SigV4. */
#include "consumer/kinesis_reader.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "common/config.h"
#include "common/log.h"
#include "producer/sigv4.h"

#define KR_ITERATOR_MAX 4096

static void fail(char *errstr, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(char *errstr, size_t errlen, const char *fmt, ...) {
  if (!errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, errlen, fmt, ap);
  va_end(ap);
}

/* ==== transport ===================================================================== */

struct kr_http {
  CURL *curl;
  kp_sigv4_signer *signer;
  kp_endpoint ep;
  char region[KP_CONF_REGION_SIZE];
  char host[KP_CONF_HOST_SIZE + 8]; /* Host header as curl sends it (and we sign) */
  kp_buf *sink;                     /* response body of the call in progress */
  char curl_err[CURL_ERROR_SIZE];
};

static size_t http_write(char *p, size_t size, size_t n, void *ud) {
  kr_http *h = ud;
  size_t len = size * n;
  if (kp_buf_append(h->sink, p, len))
    return 0; /* out of memory: curl reports a write error */
  return len;
}

kr_http *kr_http_new(const kr_http_options *o, char *errstr, size_t errlen) {
  kp_config cfg;
  kp_config_init(&cfg);
  kr_http *h = calloc(1, sizeof *h);
  if (!h) {
    fail(errstr, errlen, "out of memory");
    return NULL;
  }
  char cerr[512];
  if (o->region && o->region[0] &&
      kp_config_set(&cfg, "Region", o->region, cerr, sizeof cerr) != KP_CONF_OK) {
    fail(errstr, errlen, "--region: %s", cerr);
    goto fail;
  }
  if (o->endpoint && o->endpoint[0] &&
      kp_config_set(&cfg, "KinesisEndpoint", o->endpoint, cerr, sizeof cerr) != KP_CONF_OK) {
    fail(errstr, errlen, "--endpoint: %s", cerr);
    goto fail;
  }
  if (kp_config_endpoint(&cfg, KP_SERVICE_KINESIS, &h->ep, cerr, sizeof cerr) != 0) {
    fail(errstr, errlen, "endpoint: %s", cerr);
    goto fail;
  }
  kp_config_region(&cfg, h->region, sizeof h->region);
  bool default_port = (h->ep.tls && h->ep.port == 443) || (!h->ep.tls && h->ep.port == 80);
  if (default_port)
    snprintf(h->host, sizeof h->host, "%s", h->ep.host);
  else
    snprintf(h->host, sizeof h->host, "%s:%u", h->ep.host, (unsigned)h->ep.port);

  h->signer = kp_sigv4_signer_new();
  if (!h->signer) {
    fail(errstr, errlen, "out of memory");
    goto fail;
  }
  if (kp_sigv4_signer_set_credentials(h->signer, o->access_key_id ? o->access_key_id : "",
                                      o->secret_key ? o->secret_key : "", o->session_token) != 0) {
    fail(errstr, errlen,
         "credentials: the access key id and secret key must be non-empty "
         "and free of control characters");
    goto fail;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fail(errstr, errlen, "curl_global_init failed");
    goto fail;
  }
  h->curl = curl_easy_init();
  if (!h->curl) {
    curl_global_cleanup();
    fail(errstr, errlen, "curl_easy_init failed");
    goto fail;
  }
  CURL *c = h->curl;
  curl_easy_setopt(c, CURLOPT_URL, h->ep.url);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(c, CURLOPT_PROXY, ""); /* no proxy from the environment, as the daemon */
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                   o->request_timeout_ms > 0 ? o->request_timeout_ms : 60000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->curl_err);
  if (o->ca_file && o->ca_file[0])
    curl_easy_setopt(c, CURLOPT_CAINFO, o->ca_file);
  if (o->ca_dir && o->ca_dir[0])
    curl_easy_setopt(c, CURLOPT_CAPATH, o->ca_dir);
  if (o->insecure) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  kp_config_free(&cfg);
  return h;
fail:
  kp_config_free(&cfg);
  kr_http_free(h);
  return NULL;
}

void kr_http_free(kr_http *h) {
  if (!h)
    return;
  if (h->curl) {
    curl_easy_cleanup(h->curl);
    curl_global_cleanup();
  }
  kp_sigv4_signer_free(h->signer);
  free(h);
}

const char *kr_http_url(const kr_http *h) {
  return h->ep.url;
}

const char *kr_http_region(const kr_http *h) {
  return h->region;
}

int kr_http_call(void *ud, const char *operation, const uint8_t *body, size_t len, long *status,
                 kp_buf *resp, char *errstr, size_t errlen) {
  kr_http *h = ud;
  char target[128];
  snprintf(target, sizeof target, "%s%s", KP_KINESIS_TARGET_PREFIX, operation);
  kp_sigv4_header sh[2] = {{"content-type", KP_KINESIS_CONTENT_TYPE}, {"x-amz-target", target}};
  kp_sigv4_request req = {.method = "POST",
                          .host = h->host,
                          .path = "/",
                          .headers = sh,
                          .n_headers = 2,
                          .payload = body,
                          .payload_len = len};
  kp_sigv4_result sig;
  char serr[256];
  if (kp_sigv4_sign(h->signer, &req, h->region, "kinesis", time(NULL), &sig, serr, sizeof serr)) {
    kp_sigv4_result_free(&sig);
    fail(errstr, errlen, "%s: cannot sign the request: %s", operation, serr);
    return -EINVAL;
  }
  char line[KP_SIGV4_AUTH_MAX + 64];
  struct curl_slist *hdrs = NULL, *t;
  int rc = 0;
#define ADD_HEADER(...)                                                                            \
  do {                                                                                             \
    snprintf(line, sizeof line, __VA_ARGS__);                                                      \
    if (!(t = curl_slist_append(hdrs, line)))                                                      \
      rc = -ENOMEM;                                                                                \
    else                                                                                           \
      hdrs = t;                                                                                    \
  } while (0)
  ADD_HEADER("Content-Type: %s", KP_KINESIS_CONTENT_TYPE);
  ADD_HEADER("X-Amz-Target: %s", target);
  ADD_HEADER("X-Amz-Date: %s", sig.amz_date);
  ADD_HEADER("Authorization: %s", sig.authorization);
  ADD_HEADER("Expect:");
  if (sig.security_token) {
    size_t n = strlen(sig.security_token) + 32;
    char *tok = malloc(n);
    if (!tok) {
      rc = -ENOMEM;
    } else {
      snprintf(tok, n, "X-Amz-Security-Token: %s", sig.security_token);
      if (!(t = curl_slist_append(hdrs, tok)))
        rc = -ENOMEM;
      else
        hdrs = t;
      free(tok);
    }
  }
#undef ADD_HEADER
  kp_sigv4_result_free(&sig);
  if (rc) {
    curl_slist_free_all(hdrs);
    fail(errstr, errlen, "%s: out of memory", operation);
    return rc;
  }
  kp_buf_reset(resp);
  h->sink = resp;
  h->curl_err[0] = 0;
  curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, (const char *)body);
  curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  CURLcode cc = curl_easy_perform(h->curl);
  curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
  curl_slist_free_all(hdrs);
  h->sink = NULL;
  if (cc != CURLE_OK) {
    fail(errstr, errlen, "%s %s: %s", operation, h->ep.url,
         h->curl_err[0] ? h->curl_err : curl_easy_strerror(cc));
    kp_buf_reset(resp);
    switch (cc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return KR_CALL_PERMANENT;
    default:
      return -EIO;
    }
  }
  curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
  return 0;
}

/* ==== reader ======================================================================== */

typedef enum sh_state { SH_WAITING, SH_NEED_ITER, SH_READING, SH_DONE } sh_state;

typedef struct shard {
  char *id, *parent, *adj;
  long parent_ix, adj_ix; /* indexes into reader.sh; -1 when not listed */
  kp_hash_key lo, hi;
  bool open;
  bool started;   /* an iterator was obtained: the shard was actually read */
  bool from_trim; /* start at TRIM_HORIZON: a child of a shard we read under LATEST */
  sh_state state;
  char *iterator;
  char *last_seq; /* last sequence number delivered */
  double due;     /* next call not before */
  bool caught_up; /* last page empty and MillisBehindLatest 0 */
  int failures, throttles;
} shard;

typedef struct reader {
  const kr_options *o;
  const kr_env *env;
  kr_stats *st;
  shard *sh;
  size_t n, cap;
  kp_buf req, resp;
  char *err;
  size_t errlen;
  double t0, last_activity;
} reader;

void kr_options_default(kr_options *o) {
  memset(o, 0, sizeof *o);
  o->start = KR_TRIM_HORIZON;
  o->limit = 10000;
  o->poll_interval = 0.2;
  o->idle_interval = 1.0;
  o->max_retries = 10;
  o->max_throttles = 1000;
  o->backoff_base = 0.1;
  o->backoff_max = 5.0;
}

const char *kr_start_name(kr_start s) {
  switch (s) {
  case KR_TRIM_HORIZON:
    return "TRIM_HORIZON";
  case KR_LATEST:
    return "LATEST";
  case KR_AT_TIMESTAMP:
    return "AT_TIMESTAMP";
  }
  return "?";
}

static double now_s(reader *r) {
  return r->env->now(r->env->clock_ud);
}

static kr_shard_view view_of(const shard *s) {
  kr_shard_view v = {s->id, s->parent, s->adj, s->lo, s->hi};
  return v;
}

static double backoff(const reader *r, int attempt) {
  double d = r->o->backoff_base;
  for (int i = 1; i < attempt && d < r->o->backoff_max; i++)
    d *= 2;
  return d < r->o->backoff_max ? d : r->o->backoff_max;
}

typedef enum call_class { C_OK, C_THROTTLED, C_RETRY, C_EXPIRED, C_NOT_FOUND, C_FATAL } call_class;

static bool is_throttle(const char *code) {
  return !strcmp(code, "ProvisionedThroughputExceededException") ||
         !strcmp(code, "LimitExceededException") || !strcmp(code, "ThrottlingException") ||
         !strcmp(code, "KMSThrottlingException") || !strcmp(code, "Throttling");
}

/* One call; the response body is in r->resp. On anything but C_OK, msg says what. */
static call_class do_call(reader *r, const char *op, char *msg, size_t msglen) {
  long status = 0;
  char terr[512] = "";
  int rc = r->env->call(r->env->call_ud, op, r->req.data, r->req.len, &status, &r->resp, terr,
                        sizeof terr);
  if (rc < 0) {
    fail(msg, msglen, "%s", terr[0] ? terr : "transport error");
    return rc == KR_CALL_PERMANENT ? C_FATAL : C_RETRY;
  }
  if (status >= 200 && status < 300)
    return C_OK;
  kp_api_error ae;
  char derr[128];
  if (kp_api_error_decode((const char *)r->resp.data, r->resp.len, &ae, derr, sizeof derr)) {
    fail(msg, msglen, "%s: HTTP %ld%s%.*s", op, status, r->resp.len ? ": " : "",
         (int)(r->resp.len > 200 ? 200 : r->resp.len), (const char *)r->resp.data);
    return status >= 500 || status == 429 ? C_RETRY : C_FATAL;
  }
  fail(msg, msglen, "%s: HTTP %ld %s%s%s", op, status, ae.code, ae.message[0] ? ": " : "",
       ae.message);
  if (is_throttle(ae.code) || status == 429)
    return C_THROTTLED;
  if (!strcmp(ae.code, "ExpiredIteratorException"))
    return C_EXPIRED;
  if (!strcmp(ae.code, "ResourceNotFoundException"))
    return C_NOT_FOUND;
  if (status >= 500 || !strcmp(ae.code, "InternalFailure") ||
      !strcmp(ae.code, "ServiceUnavailable") || !strcmp(ae.code, "InternalServerError"))
    return C_RETRY;
  return C_FATAL;
}

static long find_shard(const reader *r, const char *id) {
  if (!id)
    return -1;
  for (size_t i = 0; i < r->n; i++)
    if (!strcmp(r->sh[i].id, id))
      return (long)i;
  return -1;
}

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

static int merge(reader *r, const kp_list_shards_result *ls, bool initial) {
  for (size_t i = 0; i < ls->n; i++) {
    const kp_shard_info *si = &ls->shards[i];
    long ix = find_shard(r, si->shard_id);
    if (ix >= 0) {
      r->sh[ix].open = si->open;
      continue;
    }
    if (r->n == r->cap) {
      size_t cap = r->cap ? r->cap * 2 : 16;
      shard *p = realloc(r->sh, cap * sizeof *p);
      if (!p)
        return -ENOMEM;
      r->sh = p;
      r->cap = cap;
    }
    shard *s = &r->sh[r->n];
    memset(s, 0, sizeof *s);
    s->id = strdup(si->shard_id);
    s->parent = dup_or_null(si->parent_shard_id);
    s->adj = dup_or_null(si->adjacent_parent_shard_id);
    if (!s->id || (si->parent_shard_id && !s->parent) ||
        (si->adjacent_parent_shard_id && !s->adj)) {
      free(s->id);
      free(s->parent);
      free(s->adj);
      return -ENOMEM;
    }
    s->lo = si->starting_hash_key;
    s->hi = si->ending_hash_key;
    s->open = si->open;
    s->state = SH_WAITING;
    r->n++;
    r->st->shards = r->n;
    if (initial && r->o->start == KR_LATEST && !s->open) {
      /* Closed before we started: nothing can arrive after LATEST. */
      s->state = SH_DONE;
      r->st->shards_finished++;
      KP_LOG_DEBUG("%s: closed, skipped (LATEST)", s->id);
    }
  }
  for (size_t i = 0; i < r->n; i++) {
    r->sh[i].parent_ix = find_shard(r, r->sh[i].parent);
    r->sh[i].adj_ix = find_shard(r, r->sh[i].adj);
  }
  return 0;
}

/* ListShards, every page, merged into r->sh. Retries throttling/transient failures
 * (sleeping: nothing else can go on without the shard list). */
static int list_all(reader *r, bool initial) {
  char *token = NULL;
  int rc = 0;
  char msg[768];
  for (int page = 0; page < 100000; page++) {
    int failures = 0, throttles = 0;
    call_class cc;
    for (;;) {
      kp_buf_reset(&r->req);
      if (kp_list_shards_encode(&r->req, token ? NULL : r->o->stream, token, 0)) {
        fail(r->err, r->errlen, "ListShards: cannot encode the request for stream '%s'",
             r->o->stream);
        rc = -EINVAL;
        goto out;
      }
      cc = do_call(r, "ListShards", msg, sizeof msg);
      if (cc == C_THROTTLED && ++throttles <= r->o->max_throttles) {
        r->st->throttled++;
        r->env->sleep(r->env->clock_ud, backoff(r, throttles));
      } else if (cc == C_RETRY && ++failures <= r->o->max_retries) {
        r->st->retried++;
        KP_LOG_WARNING("%s (retrying)", msg);
        r->env->sleep(r->env->clock_ud, backoff(r, failures));
      } else {
        break;
      }
    }
    if (cc == C_NOT_FOUND) {
      fail(r->err, r->errlen, "stream '%s' not found (%s)", r->o->stream, msg);
      rc = -ENOENT;
      goto out;
    }
    if (cc != C_OK) {
      fail(r->err, r->errlen, "%s", msg);
      rc = -EIO;
      goto out;
    }
    kp_list_shards_result ls;
    char derr[256];
    if (kp_list_shards_decode((const char *)r->resp.data, r->resp.len, &ls, derr, sizeof derr)) {
      fail(r->err, r->errlen, "ListShards: bad response: %s", derr);
      rc = -EBADMSG;
      goto out;
    }
    r->st->list_shards_calls++;
    rc = merge(r, &ls, initial);
    free(token);
    token = dup_or_null(ls.next_token);
    bool more = ls.next_token != NULL;
    kp_list_shards_result_free(&ls);
    if (rc || (more && !token)) {
      fail(r->err, r->errlen, "out of memory");
      rc = -ENOMEM;
      goto out;
    }
    if (!more)
      goto out;
  }
  fail(r->err, r->errlen, "ListShards: more than 100000 pages");
  rc = -E2BIG;
out:
  free(token);
  return rc;
}

static void promote(reader *r, double now) {
  for (size_t i = 0; i < r->n; i++) {
    shard *s = &r->sh[i];
    if (s->state != SH_WAITING)
      continue;
    const shard *p = s->parent_ix >= 0 ? &r->sh[s->parent_ix] : NULL;
    const shard *a = s->adj_ix >= 0 ? &r->sh[s->adj_ix] : NULL;
    if ((p && p->state != SH_DONE) || (a && a->state != SH_DONE))
      continue;
    s->state = SH_NEED_ITER;
    s->due = now;
    /* Under LATEST a child of a shard we read starts at its beginning, or the records
     * written between the split and our ListShards would be skipped. */
    s->from_trim = r->o->start == KR_LATEST && ((p && p->started) || (a && a->started));
    KP_LOG_DEBUG("%s: ready (parents %s, %s)", s->id, s->parent ? s->parent : "-",
                 s->adj ? s->adj : "-");
  }
}

/* A failed call on shard s: back off, or give up. Returns 0 or -1 (error set). */
static int shard_retry(reader *r, shard *s, call_class cc, const char *msg, double now) {
  if (cc == C_THROTTLED) {
    r->st->throttled++;
    if (++s->throttles > r->o->max_throttles) {
      fail(r->err, r->errlen, "%s: still throttled after %d attempts: %s", s->id,
           r->o->max_throttles, msg);
      return -1;
    }
    s->due = now + backoff(r, s->throttles);
    KP_LOG_DEBUG("%s: throttled, next attempt in %.2f s", s->id, s->due - now);
    return 0;
  }
  if (cc == C_RETRY) {
    r->st->retried++;
    if (++s->failures > r->o->max_retries) {
      fail(r->err, r->errlen, "%s: giving up after %d attempts: %s", s->id, s->failures, msg);
      return -1;
    }
    s->due = now + backoff(r, s->failures);
    KP_LOG_WARNING("%s (retrying %s in %.2f s)", msg, s->id, s->due - now);
    return 0;
  }
  if (cc == C_NOT_FOUND)
    fail(r->err, r->errlen, "shard %s of stream '%s' not found (%s)", s->id, r->o->stream, msg);
  else
    fail(r->err, r->errlen, "%s (shard %s)", msg, s->id);
  return -1;
}

static int step_iterator(reader *r, shard *s) {
  const char *type;
  const char *seq = NULL;
  if (s->last_seq) {
    type = "AFTER_SEQUENCE_NUMBER";
    seq = s->last_seq;
  } else if (s->from_trim) {
    type = "TRIM_HORIZON";
  } else {
    type = kr_start_name(r->o->start);
  }
  kp_buf_reset(&r->req);
  if (kp_get_shard_iterator_encode(&r->req, r->o->stream, s->id, type, seq, r->o->timestamp)) {
    fail(r->err, r->errlen, "GetShardIterator: cannot encode the request for %s", s->id);
    return -1;
  }
  char msg[768];
  call_class cc = do_call(r, "GetShardIterator", msg, sizeof msg);
  double now = now_s(r);
  if (cc != C_OK)
    return shard_retry(r, s, cc, msg, now);
  char it[KR_ITERATOR_MAX], derr[256];
  if (kp_get_shard_iterator_decode((const char *)r->resp.data, r->resp.len, it, sizeof it, derr,
                                   sizeof derr)) {
    fail(r->err, r->errlen, "GetShardIterator: bad response for %s: %s", s->id, derr);
    return -1;
  }
  char *copy = strdup(it);
  if (!copy) {
    fail(r->err, r->errlen, "out of memory");
    return -1;
  }
  free(s->iterator);
  s->iterator = copy;
  s->state = SH_READING;
  s->started = true;
  s->failures = s->throttles = 0;
  s->due = now;
  r->st->iterator_calls++;
  KP_LOG_DEBUG("%s: iterator %s%s%s", s->id, type, seq ? " " : "", seq ? seq : "");
  return 0;
}

/* Returns 0 (go on), 1 (stopped by the callback), 2 (shard ended), -1 (error). */
static int step_records(reader *r, shard *s) {
  double t = now_s(r);
  kp_buf_reset(&r->req);
  if (kp_get_records_encode(&r->req, s->iterator, r->o->limit)) {
    fail(r->err, r->errlen, "GetRecords: cannot encode the request for %s", s->id);
    return -1;
  }
  char msg[768];
  call_class cc = do_call(r, "GetRecords", msg, sizeof msg);
  if (cc == C_EXPIRED) {
    r->st->expired_iterators++;
    KP_LOG_INFO("%s: iterator expired; renewing it", s->id);
    s->state = SH_NEED_ITER;
    s->due = now_s(r);
    return 0;
  }
  if (cc != C_OK)
    return shard_retry(r, s, cc, msg, now_s(r)) ? -1 : 0;
  kp_get_records_result gr;
  char derr[256];
  if (kp_get_records_decode((const char *)r->resp.data, r->resp.len, &gr, derr, sizeof derr)) {
    fail(r->err, r->errlen, "GetRecords: bad response for %s: %s", s->id, derr);
    return -1;
  }
  r->st->get_records_calls++;
  s->failures = s->throttles = 0;
  int rc = 0;
  const char *last = NULL;
  kr_shard_view v = view_of(s);
  for (size_t i = 0; i < gr.n && rc == 0; i++) {
    last = gr.records[i].sequence_number;
    r->st->records++;
    int cb = r->env->on_record(r->env->ud, &v, &gr.records[i], r->err, r->errlen);
    if (cb < 0)
      rc = -1;
    else if (cb > 0)
      rc = 1;
  }
  if (last) {
    char *copy = strdup(last);
    if (!copy) {
      kp_get_records_result_free(&gr);
      fail(r->err, r->errlen, "out of memory");
      return -1;
    }
    free(s->last_seq);
    s->last_seq = copy;
    r->last_activity = now_s(r);
  }
  if (rc == 0) {
    s->caught_up = gr.n == 0 && gr.millis_behind_latest <= 0;
    s->due = t + (s->caught_up ? r->o->idle_interval : r->o->poll_interval);
    if (!gr.next_shard_iterator) {
      free(s->iterator);
      s->iterator = NULL;
      s->state = SH_DONE;
      r->st->shards_finished++;
      KP_LOG_DEBUG("%s: read to its end", s->id);
      if (r->env->on_shard_end)
        r->env->on_shard_end(r->env->ud, &v);
      rc = 2;
    } else {
      char *copy = strdup(gr.next_shard_iterator);
      if (!copy) {
        fail(r->err, r->errlen, "out of memory");
        rc = -1;
      } else {
        free(s->iterator);
        s->iterator = copy;
      }
    }
  }
  kp_get_records_result_free(&gr);
  return rc;
}

static void reader_free(reader *r) {
  for (size_t i = 0; i < r->n; i++) {
    free(r->sh[i].id);
    free(r->sh[i].parent);
    free(r->sh[i].adj);
    free(r->sh[i].iterator);
    free(r->sh[i].last_seq);
  }
  free(r->sh);
  kp_buf_free(&r->req);
  kp_buf_free(&r->resp);
}

kr_status kr_read(const kr_options *o, const kr_env *env, kr_stats *stats, char *errstr,
                  size_t errlen) {
  kr_stats local;
  kr_stats *st = stats ? stats : &local;
  memset(st, 0, sizeof *st);
  if (errlen)
    errstr[0] = 0;
  if (!o->stream || !o->stream[0] || o->limit < 1 || o->limit > 10000 || !env->call || !env->now ||
      !env->sleep || !env->on_record) {
    fail(errstr, errlen, "kr_read: invalid options");
    return KR_ERROR;
  }
  reader r = {.o = o,
              .env = env,
              .st = st,
              .req = KP_BUF_INIT,
              .resp = KP_BUF_INIT,
              .err = errstr,
              .errlen = errlen};
  r.t0 = r.last_activity = now_s(&r);
  kr_status result = KR_ERROR;
  bool relist = false;
  if (list_all(&r, true))
    goto out;
  KP_LOG_INFO("stream '%s': %zu shards, reading from %s", o->stream, r.n, kr_start_name(o->start));
  for (;;) {
    double now = now_s(&r);
    if (o->max_time > 0 && now - r.t0 >= o->max_time) {
      result = KR_TIME_LIMIT;
      break;
    }
    if (o->idle_timeout > 0 && now - r.last_activity >= o->idle_timeout) {
      result = KR_IDLE_TIMEOUT;
      break;
    }
    if (relist) {
      size_t before = r.n;
      if (list_all(&r, false))
        break;
      relist = false;
      if (r.n > before)
        KP_LOG_INFO("stream '%s': %zu new shards", o->stream, r.n - before);
      now = now_s(&r);
    }
    promote(&r, now);
    bool all_caught_up = true;
    shard *next = NULL;
    for (size_t i = 0; i < r.n; i++) {
      shard *s = &r.sh[i];
      if (s->state == SH_DONE)
        continue;
      if (s->state != SH_READING || !s->caught_up)
        all_caught_up = false;
      if ((s->state == SH_NEED_ITER || s->state == SH_READING) && (!next || s->due < next->due))
        next = s;
    }
    if (!o->follow && all_caught_up) {
      result = KR_CAUGHT_UP;
      break;
    }
    double wake;
    if (!next) {
      if (!o->follow) {
        fail(errstr, errlen, "stream '%s': no shard can be read (parent shards form a cycle)",
             o->stream);
        break;
      }
      /* Everything read to its end: look for new shards now and then. */
      wake = now + o->idle_interval;
      relist = true;
    } else {
      wake = next->due;
    }
    if (wake > now) {
      if (o->max_time > 0 && wake > r.t0 + o->max_time)
        wake = r.t0 + o->max_time;
      if (o->idle_timeout > 0 && wake > r.last_activity + o->idle_timeout)
        wake = r.last_activity + o->idle_timeout;
      if (wake > now)
        env->sleep(env->clock_ud, wake - now);
      continue;
    }
    if (next->state == SH_NEED_ITER) {
      if (step_iterator(&r, next))
        break;
      continue;
    }
    int rc = step_records(&r, next);
    if (rc < 0)
      break;
    if (rc == 1) {
      result = KR_STOPPED;
      break;
    }
    if (rc == 2)
      relist = true; /* find its children */
  }
out:
  reader_free(&r);
  return result;
}

/* ==== timestamps ==================================================================== */

static int digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)(*p)[i]))
      return -1;
    v = v * 10 + ((*p)[i] - '0');
  }
  *p += n;
  *out = v;
  return 0;
}

int kr_parse_timestamp(const char *s, double *out) {
  if (!s || !*s)
    return -1;
  /* Epoch seconds. */
  const char *p = s;
  while (isdigit((unsigned char)*p))
    p++;
  if (p > s && (*p == 0 || *p == '.')) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || (*p == '.' && !isdigit((unsigned char)p[1])))
      return -1;
    *out = v;
    return 0;
  }
  /* ISO-8601. */
  int Y, M, D, h, m, sec;
  p = s;
  if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' || digits(&p, 2, &D) ||
      (*p != 'T' && *p != 't' && *p != ' '))
    return -1;
  p++;
  if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &m) || *p++ != ':' || digits(&p, 2, &sec))
    return -1;
  double frac = 0;
  if (*p == '.') {
    p++;
    if (!isdigit((unsigned char)*p))
      return -1;
    double scale = 0.1;
    while (isdigit((unsigned char)*p)) {
      frac += (*p - '0') * scale;
      scale /= 10;
      p++;
    }
  }
  long offset = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1, oh, om;
    p++;
    if (digits(&p, 2, &oh))
      return -1;
    if (*p == ':')
      p++;
    if (digits(&p, 2, &om) || oh > 23 || om > 59)
      return -1;
    offset = sign * (oh * 3600L + om * 60L);
  }
  if (*p)
    return -1;
  static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 60)
    return -1;
  bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
  if (M == 2 && D == 29 && !leap)
    return -1;
  struct tm tm = {
      .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = sec};
  time_t t = timegm(&tm);
  if (t == (time_t)-1)
    return -1;
  *out = (double)(t - offset) + frac;
  return 0;
}
