/* libcurl multi_socket on libev. curl tells us which sockets to watch (sock_cb) and
 * when to wake it up (timer_cb); we tell it what happened (curl_multi_socket_action)
 * and then collect finished transfers (drain_done). See curl's docs/examples/
 * evhiperfifo.c for the idea. */
#include "producer/http.h"

#include <assert.h>
#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/buf.h"

/* Idle easy handles kept for reuse. Each holds a few KiB; the bound keeps a burst from
 * pinning memory forever. */
#define KP_HTTP_POOL_MIN 16
/* A response buffer bigger than this is released rather than kept in the pool. */
#define KP_HTTP_KEEP_BODY (1u << 20)
/* curl copies a body over 64 KiB through its upload buffer and hands each piece to
 * send(): 256 KiB pieces instead of the default 64 KiB took the daemon from 83-92 to
 * 72-77 us per 50-KiB record and from 2.2-2.6 to 1.8-2.3 us per 1-KiB record (A/B,
 * bench/README.md). A handle allocates it only once it sends such a body. */
#define KP_HTTP_UPLOAD_BUFFER (256L * 1024L)

typedef struct kp_http_req kp_http_req;
struct kp_http_req {
  kp_http *h;
  CURL *easy;
  kp_http_cb cb;
  void *ud;
  struct curl_slist *headers;
  kp_buf body; /* response body */
  /* The request body as pieces (kp_http_post_iov), read out by read_cb; NULL for a
   * contiguous body, which curl reads itself (CURLOPT_POSTFIELDS). */
  const struct iovec *iov;
  size_t n_iov, iov_i, iov_off; /* cursor: piece, offset in it */
  char errbuf[CURL_ERROR_SIZE];
  kp_http_req *prev, *next; /* active list, or free list (next only) */
};

/* One per socket curl asks us to watch; attached to the socket with curl_multi_assign. */
typedef struct kp_http_sock kp_http_sock;
struct kp_http_sock {
  ev_io io;
  kp_http *h;
  kp_http_sock *prev, *next;
};

struct kp_http {
  struct ev_loop *loop;
  CURLM *multi;
  ev_timer timer;
  kp_http_opts o;
  char *ca_file, *ca_dir, *proxy_host, *proxy_user, *proxy_password; /* owned copies */
  kp_http_req *active; /* added to the multi, callback pending */
  kp_http_req *pool;   /* idle, configured easy handles */
  size_t n_active, n_pool, pool_max;
  kp_http_sock *socks;
  int closing;     /* inside kp_http_free: refuse new posts */
  int dispatching; /* inside a user callback: kp_http_free would be misuse */
};

static pthread_once_t kp_http_once = PTHREAD_ONCE_INIT;
static CURLcode kp_http_global_rc = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe in 7.88 and must run once per process; it is
 * never undone (the daemon lives for the process). */
static void kp_http_global_init(void) {
  kp_http_global_rc = curl_global_init(CURL_GLOBAL_ALL);
}

void kp_http_opts_default(kp_http_opts *o) {
  memset(o, 0, sizeof *o);
  o->verify_peer = 1;
  o->connect_timeout_ms = 6000;
  o->request_timeout_ms = 6000;
  o->max_connections = 24;
}

static char *kp_strdup_opt(const char *s, int *oom) {
  if (!s || !*s)
    return NULL;
  char *d = strdup(s);
  if (!d)
    *oom = 1;
  return d;
}

/* ---- curl -> libev glue ------------------------------------------------------------ */

static void drain_done(kp_http *h);

static void io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  kp_http_sock *s = (kp_http_sock *)w;
  kp_http *h = s->h;
  int action = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
               (revents & EV_WRITE ? CURL_CSELECT_OUT : 0) |
               (revents & EV_ERROR ? CURL_CSELECT_ERR : 0);
  int running;
  /* May free `s` through sock_cb(CURL_POLL_REMOVE): do not touch it afterwards. */
  curl_multi_socket_action(h->multi, w->fd, action, &running);
  drain_done(h);
}

static void timer_ev_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  kp_http *h = (kp_http *)w->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain_done(h);
}

/* CURLMOPT_TIMERFUNCTION: curl wants one timer, re-armed or cancelled. We only arm the
 * ev_timer here; curl must not be re-entered from its own callback, so even a 0 ms
 * timeout fires from the loop. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
  kp_http *h = (kp_http *)userp;
  ev_timer_stop(h->loop, &h->timer);
  if (timeout_ms >= 0) {
    ev_timer_set(&h->timer, (ev_tstamp)timeout_ms / 1000.0, 0.);
    ev_timer_start(h->loop, &h->timer);
  }
  return 0;
}

static void sock_unlink_free(kp_http *h, kp_http_sock *s) {
  ev_io_stop(h->loop, &s->io);
  if (s->prev)
    s->prev->next = s->next;
  else
    h->socks = s->next;
  if (s->next)
    s->next->prev = s->prev;
  free(s);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching one socket. */
static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  kp_http *h = (kp_http *)userp;
  kp_http_sock *s = (kp_http_sock *)socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      curl_multi_assign(h->multi, fd, NULL);
      sock_unlink_free(h, s);
    }
    return 0;
  }
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s)
      return -1; /* curl fails the transfer(s) on this socket */
    s->h = h;
    s->next = h->socks;
    if (h->socks)
      h->socks->prev = s;
    h->socks = s;
    ev_init(&s->io, io_cb);
    curl_multi_assign(h->multi, fd, s);
  } else {
    ev_io_stop(h->loop, &s->io);
  }
  int ev = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
  ev_io_set(&s->io, fd, ev);
  ev_io_start(h->loop, &s->io);
  return 0;
}

/* ---- requests ------------------------------------------------------------------- */

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud) {
  kp_http_req *r = (kp_http_req *)ud;
  size_t n = size * nmemb;
  return kp_buf_append(&r->body, p, n) ? 0 : n; /* 0 makes curl fail with WRITE_ERROR */
}

/* CURLOPT_READFUNCTION: the next bytes of a gathered body, into curl's upload buffer. */
static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud) {
  kp_http_req *r = (kp_http_req *)ud;
  size_t room = size * nitems, n = 0;
  while (n < room && r->iov_i < r->n_iov) {
    const struct iovec *v = &r->iov[r->iov_i];
    size_t k = v->iov_len - r->iov_off;
    if (k > room - n)
      k = room - n;
    memcpy(buf + n, (const char *)v->iov_base + r->iov_off, k);
    n += k;
    r->iov_off += k;
    if (r->iov_off == v->iov_len) {
      r->iov_i++;
      r->iov_off = 0;
    }
  }
  return n;
}

/* CURLOPT_SEEKFUNCTION: curl rewinds a body to send it again (a reused connection that
 * turned out closed, a redirect). */
static int seek_cb(void *ud, curl_off_t offset, int origin) {
  kp_http_req *r = (kp_http_req *)ud;
  if (origin != SEEK_SET || offset < 0)
    return CURL_SEEKFUNC_CANTSEEK;
  size_t left = (size_t)offset;
  r->iov_i = 0;
  while (r->iov_i < r->n_iov && left >= r->iov[r->iov_i].iov_len)
    left -= r->iov[r->iov_i++].iov_len;
  if (r->iov_i == r->n_iov && left)
    return CURL_SEEKFUNC_FAIL;
  r->iov_off = left;
  return CURL_SEEKFUNC_OK;
}

static int easy_setup(kp_http *h, kp_http_req *r, char *errstr, size_t n) {
  CURL *e = r->easy;
  const kp_http_opts *o = &h->o;
  CURLcode rc = CURLE_OK;
#define KP_SET(opt, val)                                                                           \
  do {                                                                                             \
    if (rc == CURLE_OK)                                                                            \
      rc = curl_easy_setopt(e, opt, val);                                                          \
  } while (0)
  KP_SET(CURLOPT_PRIVATE, r);
  KP_SET(CURLOPT_ERRORBUFFER, r->errbuf);
  KP_SET(CURLOPT_WRITEFUNCTION, write_cb);
  KP_SET(CURLOPT_WRITEDATA, r);
  KP_SET(CURLOPT_READFUNCTION, read_cb);
  KP_SET(CURLOPT_READDATA, r);
  KP_SET(CURLOPT_SEEKFUNCTION, seek_cb);
  KP_SET(CURLOPT_SEEKDATA, r);
  KP_SET(CURLOPT_NOSIGNAL, 1L);
  KP_SET(CURLOPT_TCP_NODELAY, 1L);
  KP_SET(CURLOPT_UPLOAD_BUFFERSIZE, KP_HTTP_UPLOAD_BUFFER);
  KP_SET(CURLOPT_TCP_KEEPALIVE, 1L);
  KP_SET(CURLOPT_PROTOCOLS_STR, "http,https");
  KP_SET(CURLOPT_HTTP_VERSION,
         o->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
  /* With h2, wait for a connection that can multiplex instead of opening another. */
  KP_SET(CURLOPT_PIPEWAIT, o->http2 ? 1L : 0L);
  KP_SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
  KP_SET(CURLOPT_TIMEOUT_MS, o->request_timeout_ms);
  KP_SET(CURLOPT_SSL_VERIFYPEER, o->verify_peer ? 1L : 0L);
  KP_SET(CURLOPT_SSL_VERIFYHOST, o->verify_peer ? 2L : 0L);
  if (h->ca_file)
    KP_SET(CURLOPT_CAINFO, h->ca_file);
  if (h->ca_dir)
    KP_SET(CURLOPT_CAPATH, h->ca_dir);
  /* "" disables proxies, including the environment's: only configured ones are used. */
  KP_SET(CURLOPT_PROXY, h->proxy_host ? h->proxy_host : "");
  if (h->proxy_host && o->proxy_port > 0)
    KP_SET(CURLOPT_PROXYPORT, o->proxy_port);
  if (h->proxy_user)
    KP_SET(CURLOPT_PROXYUSERNAME, h->proxy_user);
  if (h->proxy_password)
    KP_SET(CURLOPT_PROXYPASSWORD, h->proxy_password);
#undef KP_SET
  if (rc != CURLE_OK) {
    snprintf(errstr, n, "curl option: %s", curl_easy_strerror(rc));
    return -1;
  }
  return 0;
}

static kp_http_req *req_new(kp_http *h, char *errstr, size_t n) {
  kp_http_req *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(errstr, n, "out of memory");
    return NULL;
  }
  r->h = h;
  r->easy = curl_easy_init();
  if (!r->easy) {
    snprintf(errstr, n, "curl_easy_init failed");
    free(r);
    return NULL;
  }
  if (easy_setup(h, r, errstr, n)) {
    curl_easy_cleanup(r->easy);
    free(r);
    return NULL;
  }
  return r;
}

static void req_destroy(kp_http_req *r) {
  curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  kp_buf_free(&r->body);
  free(r);
}

static void active_unlink(kp_http *h, kp_http_req *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    h->active = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
  h->n_active--;
}

/* Back to the pool (or freed). The easy handle keeps its options, so the next request
 * only sets URL, headers and body. */
static void req_release(kp_http *h, kp_http_req *r) {
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  r->cb = NULL;
  r->ud = NULL;
  if (h->closing || h->n_pool >= h->pool_max) {
    req_destroy(r);
    return;
  }
  if (r->body.cap > KP_HTTP_KEEP_BODY)
    kp_buf_free(&r->body);
  kp_buf_reset(&r->body);
  r->next = h->pool;
  h->pool = r;
  h->n_pool++;
}

/* Hands a finished request to its callback. The caller has already taken it off the
 * active list and out of the multi, so a post from the callback cannot see it. */
static void finish(kp_http *h, kp_http_req *r, CURLcode code, const char *abort_msg) {
  kp_http_response resp;
  memset(&resp, 0, sizeof resp);
  resp.curl_code = (int)code;
  if (code == CURLE_OK) {
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
    resp.body = r->body.data;
    resp.body_len = r->body.len;
    curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &resp.content_type);
  } else {
    resp.error = abort_msg ? abort_msg : r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
  }
  curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &resp.total_time_s);
  kp_http_cb cb = r->cb;
  void *ud = r->ud;
  h->dispatching++;
  cb(&resp, ud);
  h->dispatching--;
  req_release(h, r);
}

static void drain_done(kp_http *h) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(h->multi, &left))) {
    if (m->msg != CURLMSG_DONE)
      continue;
    CURL *e = m->easy_handle;
    CURLcode code = m->data.result; /* m is invalid after remove_handle */
    char *priv = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
    kp_http_req *r = (kp_http_req *)priv;
    curl_multi_remove_handle(h->multi, e);
    active_unlink(h, r);
    finish(h, r, code, NULL);
  }
}

/* ---- public API ---------------------------------------------------------------------- */

kp_http *kp_http_new(struct ev_loop *loop, const kp_http_opts *o, char *errstr, size_t n) {
  pthread_once(&kp_http_once, kp_http_global_init);
  if (kp_http_global_rc != CURLE_OK) {
    snprintf(errstr, n, "curl_global_init: %s", curl_easy_strerror(kp_http_global_rc));
    return NULL;
  }
  kp_http *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(errstr, n, "out of memory");
    return NULL;
  }
  h->loop = loop;
  h->o = *o;
  if (h->o.max_connections <= 0)
    h->o.max_connections = 1;
  int oom = 0;
  h->ca_file = kp_strdup_opt(o->ca_file, &oom);
  h->ca_dir = kp_strdup_opt(o->ca_dir, &oom);
  h->proxy_host = kp_strdup_opt(o->proxy_host, &oom);
  h->proxy_user = kp_strdup_opt(o->proxy_user, &oom);
  h->proxy_password = kp_strdup_opt(o->proxy_password, &oom);
  /* The copies are the only strings used: drop the borrowed pointers. */
  h->o.ca_file = h->o.ca_dir = h->o.proxy_host = h->o.proxy_user = h->o.proxy_password = NULL;
  h->pool_max = (size_t)h->o.max_connections * 4;
  if (h->pool_max < KP_HTTP_POOL_MIN)
    h->pool_max = KP_HTTP_POOL_MIN;
  ev_init(&h->timer, timer_ev_cb);
  h->timer.data = h;
  h->multi = oom ? NULL : curl_multi_init();
  if (!h->multi) {
    snprintf(errstr, n, oom ? "out of memory" : "curl_multi_init failed");
    kp_http_free(h);
    return NULL;
  }
  long maxc = h->o.max_connections;
  CURLMcode mc = CURLM_OK;
#define KP_MSET(opt, val)                                                                          \
  do {                                                                                             \
    if (mc == CURLM_OK)                                                                            \
      mc = curl_multi_setopt(h->multi, opt, val);                                                  \
  } while (0)
  KP_MSET(CURLMOPT_SOCKETFUNCTION, sock_cb);
  KP_MSET(CURLMOPT_SOCKETDATA, h);
  KP_MSET(CURLMOPT_TIMERFUNCTION, timer_cb);
  KP_MSET(CURLMOPT_TIMERDATA, h);
  /* Beyond these, transfers wait inside curl for a free connection. */
  KP_MSET(CURLMOPT_MAX_TOTAL_CONNECTIONS, maxc);
  KP_MSET(CURLMOPT_MAX_HOST_CONNECTIONS, maxc);
  /* Keep every allowed connection alive when idle (default is 4x added handles). */
  KP_MSET(CURLMOPT_MAXCONNECTS, maxc);
  KP_MSET(CURLMOPT_PIPELINING, h->o.http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING);
#undef KP_MSET
  if (mc != CURLM_OK) {
    snprintf(errstr, n, "curl multi option: %s", curl_multi_strerror(mc));
    kp_http_free(h);
    return NULL;
  }
  /* Build one handle now so a bad option (e.g. unsupported by this libcurl) is reported
   * here rather than on the first post. */
  kp_http_req *r = req_new(h, errstr, n);
  if (!r) {
    kp_http_free(h);
    return NULL;
  }
  req_release(h, r);
  return h;
}

void kp_http_free(kp_http *h) {
  if (!h)
    return;
  assert(!h->dispatching && "kp_http_free called from a kp_http_cb");
  h->closing = 1;
  /* Every accepted request gets its one callback. Removing the handle stops the
   * transfer (closing its connection if mid-request) without calling anything else. */
  while (h->active) {
    kp_http_req *r = h->active;
    curl_multi_remove_handle(h->multi, r->easy);
    active_unlink(h, r);
    finish(h, r, CURLE_ABORTED_BY_CALLBACK, "aborted: HTTP client shut down");
  }
  while (h->pool) {
    kp_http_req *r = h->pool;
    h->pool = r->next;
    req_destroy(r);
  }
  if (h->multi)
    curl_multi_cleanup(h->multi); /* closes cached connections */
  /* Whatever curl did not report removed by now is ours to drop. */
  while (h->socks)
    sock_unlink_free(h, h->socks);
  ev_timer_stop(h->loop, &h->timer);
  free(h->ca_file);
  free(h->ca_dir);
  free(h->proxy_host);
  free(h->proxy_user);
  free(h->proxy_password);
  free(h);
}

static int post(kp_http *h, const char *url, const char *const *headers, const uint8_t *body,
                size_t len, const struct iovec *iov, size_t n_iov, kp_http_cb cb, void *ud) {
  if (h->closing)
    return -ECANCELED;
  kp_http_req *r = h->pool;
  if (r) {
    h->pool = r->next;
    h->n_pool--;
    r->next = NULL;
  } else {
    char err[128];
    if (!(r = req_new(h, err, sizeof err)))
      return -ENOMEM;
  }
  /* Headers: the caller's, then an empty Expect to suppress 100-continue (a round trip,
   * or a 1 s stall if the server ignores it, on bodies over libcurl's threshold: 1 MiB
   * in 7.88, 1 KiB in older versions). */
  struct curl_slist *sl = NULL;
  for (const char *const *p = headers; p && *p; p++) {
    struct curl_slist *t = curl_slist_append(sl, *p);
    if (!t)
      goto oom;
    sl = t;
  }
  struct curl_slist *t = curl_slist_append(sl, "Expect:");
  if (!t)
    goto oom;
  sl = t;
  r->headers = sl;
  r->errbuf[0] = '\0';
  CURLcode rc = curl_easy_setopt(r->easy, CURLOPT_URL, url);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, sl);
  /* POSTFIELDS (not COPYPOSTFIELDS) sends straight from the caller's buffer; "" makes an
   * empty body still a POST. NULL with POST has curl call read_cb for the pieces. */
  r->iov = iov;
  r->n_iov = n_iov;
  r->iov_i = r->iov_off = 0;
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, iov ? NULL : body ? (const void *)body : "");
  if (rc == CURLE_OK && iov)
    rc = curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
  if (rc == CURLE_OK)
    rc = curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  if (rc != CURLE_OK) {
    req_release(h, r);
    return rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
  }
  r->cb = cb;
  r->ud = ud;
  if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
    req_release(h, r);
    return -EIO;
  }
  r->prev = NULL;
  r->next = h->active;
  if (h->active)
    h->active->prev = r;
  h->active = r;
  h->n_active++;
  return 0;
oom:
  curl_slist_free_all(sl);
  req_release(h, r);
  return -ENOMEM;
}

int kp_http_post(kp_http *h, const char *url, const char *const *headers, const uint8_t *body,
                 size_t len, kp_http_cb cb, void *ud) {
  if (!h || !url || !cb || (!body && len))
    return -EINVAL;
  return post(h, url, headers, body, len, NULL, 0, cb, ud);
}

int kp_http_post_iov(kp_http *h, const char *url, const char *const *headers,
                     const struct iovec *iov, size_t n_iov, kp_http_cb cb, void *ud) {
  if (!h || !url || !cb || !iov)
    return -EINVAL;
  size_t len = 0;
  for (size_t i = 0; i < n_iov; i++)
    len += iov[i].iov_len;
  return post(h, url, headers, NULL, len, iov, n_iov, cb, ud);
}

size_t kp_http_in_flight(const kp_http *h) {
  return h ? h->n_active : 0;
}
