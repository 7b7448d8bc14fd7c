// KP_TEST_LIBS: kp_producer_core
/* kp_http against an HTTP/1.1 keep-alive server that runs in a thread of this test,
 * so each case picks the server's behaviour (status, body, hang, drop, TLS) and can
 * count connections and inspect what arrived. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "producer/http.h"

/* ---- test server ------------------------------------------------------------------ */

enum srv_mode {
  SRV_RESPOND,       /* status + body, keep the connection */
  SRV_HANG,          /* read the request, never answer */
  SRV_DROP_BODY,     /* headers promise 100 bytes, send 5, close */
  SRV_RESPOND_CLOSE, /* status + body, then close silently (idle keep-alive dropped) */
  SRV_DROP_SECOND,   /* answer a connection's first request; read its second, then close */
};

#define SRV_MAX_CONNS 64

typedef struct srv {
  int lfd, port;
  SSL_CTX *ssl; /* NULL: plain HTTP */
  int stop[2];  /* closing stop[1] wakes every server thread */
  pthread_t accept_thr;
  pthread_mutex_t mu;
  /* behaviour, set before the client starts */
  enum srv_mode mode;
  int status;
  const char *body;
  /* observations, under mu */
  int n_conns, n_requests;
  pthread_t conn_thr[SRV_MAX_CONNS];
  char last_head[8192];
  size_t last_body_len;
  uint64_t last_body_hash; /* FNV-1a of the last body */
  /* optional: wakes the test's loop on each request */
  ev_async *notify;
  struct ev_loop *loop;
} srv;

typedef struct conn {
  srv *s;
  int fd;
  SSL *ssl;
} conn;

/* Waits for fd readable; -1 if the server is stopping. */
static int conn_wait(conn *c) {
  if (c->ssl && SSL_pending(c->ssl) > 0)
    return 0;
  struct pollfd p[2] = {{c->fd, POLLIN, 0}, {c->s->stop[0], POLLIN, 0}};
  for (;;) {
    int n = poll(p, 2, 5000);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || p[1].revents)
      return -1;
    return 0;
  }
}

static ssize_t conn_read(conn *c, char *buf, size_t n) {
  if (conn_wait(c))
    return -1;
  if (c->ssl) {
    int r = SSL_read(c->ssl, buf, (int)n);
    return r > 0 ? r : -1;
  }
  ssize_t r = recv(c->fd, buf, n, 0);
  return r > 0 ? r : -1;
}

static int conn_write(conn *c, const char *buf, size_t n) {
  if (c->ssl)
    return SSL_write(c->ssl, buf, (int)n) == (int)n ? 0 : -1;
  while (n) {
    ssize_t w = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (w <= 0)
      return -1;
    buf += w;
    n -= (size_t)w;
  }
  return 0;
}

static void *conn_main(void *arg) {
  conn *c = arg;
  srv *s = c->s;
  size_t cap = 4 << 20, len = 0;
  int on_conn = 0; /* requests read on this connection */
  char *buf = malloc(cap);
  if (c->ssl) {
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_accept(c->ssl) != 1)
      goto out;
  }
  for (;;) {
    /* Head. */
    char *end;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
      if (len == cap)
        goto out;
      ssize_t r = conn_read(c, buf + len, cap - len);
      if (r < 0)
        goto out;
      len += (size_t)r;
    }
    size_t head_len = (size_t)(end - buf) + 4, body_len = 0;
    for (char *p = buf; p < end; p++)
      if ((p == buf || p[-1] == '\n') && !strncasecmp(p, "Content-Length:", 15))
        body_len = strtoul(p + 15, NULL, 10);
    /* Body. */
    if (head_len + body_len > cap)
      goto out;
    while (len < head_len + body_len) {
      ssize_t r = conn_read(c, buf + len, cap - len);
      if (r < 0)
        goto out;
      len += (size_t)r;
    }
    pthread_mutex_lock(&s->mu);
    s->n_requests++;
    size_t hn = head_len < sizeof s->last_head ? head_len : sizeof s->last_head - 1;
    memcpy(s->last_head, buf, hn);
    s->last_head[hn] = '\0';
    s->last_body_len = body_len;
    uint64_t hash = 1469598103934665603ull;
    for (size_t i = 0; i < body_len; i++)
      hash = (hash ^ (uint8_t)buf[head_len + i]) * 1099511628211ull;
    s->last_body_hash = hash;
    enum srv_mode mode = s->mode;
    int status = s->status;
    const char *body = s->body ? s->body : "";
    pthread_mutex_unlock(&s->mu);
    if (s->notify) /* set before start, cleared never: no lock needed */
      ev_async_send(s->loop, s->notify);
    memmove(buf, buf + head_len + body_len, len - head_len - body_len);
    len -= head_len + body_len;

    char resp[512];
    if (mode == SRV_DROP_SECOND && ++on_conn == 2)
      goto out;
    if (mode == SRV_HANG) {
      while (conn_read(c, buf, cap) > 0) /* until the client gives up */
        ;
      goto out;
    }
    if (mode == SRV_DROP_BODY) {
      int n = snprintf(resp, sizeof resp,
                       "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n"
                       "12345");
      conn_write(c, resp, (size_t)n);
      goto out;
    }
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nContent-Type: "
                     "application/x-amz-json-1.1\r\n\r\n",
                     status, strlen(body));
    if (conn_write(c, resp, (size_t)n) || conn_write(c, body, strlen(body)))
      goto out;
    if (mode == SRV_RESPOND_CLOSE)
      goto out;
  }
out:
  if (c->ssl) {
    SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
  }
  close(c->fd);
  free(buf);
  free(c);
  return NULL;
}

static void *accept_main(void *arg) {
  srv *s = arg;
  for (;;) {
    struct pollfd p[2] = {{s->lfd, POLLIN, 0}, {s->stop[0], POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (p[1].revents)
      break;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
      continue;
    struct timeval tv = {5, 0}; /* no blocked server thread outlives a broken test */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    conn *c = calloc(1, sizeof *c);
    c->s = s;
    c->fd = fd;
    c->ssl = s->ssl ? SSL_new(s->ssl) : NULL;
    pthread_mutex_lock(&s->mu);
    if (s->n_conns == SRV_MAX_CONNS ||
        pthread_create(&s->conn_thr[s->n_conns], NULL, conn_main, c)) {
      pthread_mutex_unlock(&s->mu);
      SSL_free(c->ssl);
      close(fd);
      free(c);
      continue;
    }
    s->n_conns++;
    pthread_mutex_unlock(&s->mu);
  }
  return NULL;
}

static void srv_start(srv *s, SSL_CTX *ssl) {
  memset(s, 0, sizeof *s);
  s->status = 200;
  s->ssl = ssl;
  pthread_mutex_init(&s->mu, NULL);
  assert_int_equal(pipe(s->stop), 0);
  s->lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(s->lfd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(s->lfd, 64), 0);
  socklen_t al = sizeof a;
  assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
  s->port = ntohs(a.sin_port);
  assert_int_equal(pthread_create(&s->accept_thr, NULL, accept_main, s), 0);
}

static void srv_stop(srv *s) {
  close(s->stop[1]);
  pthread_join(s->accept_thr, NULL);
  for (int i = 0; i < s->n_conns; i++)
    pthread_join(s->conn_thr[i], NULL);
  close(s->stop[0]);
  close(s->lfd);
  pthread_mutex_destroy(&s->mu);
}

static int srv_get(srv *s, const int *field) {
  pthread_mutex_lock(&s->mu);
  int v = *field;
  pthread_mutex_unlock(&s->mu);
  return v;
}

/* ---- client side harness ------------------------------------------------------------ */

typedef struct result {
  int done;
  long status;
  int curl_code;
  char body[256];
  size_t body_len;
  char error[CURL_ERROR_SIZE];
  double t_end;
  struct ev_loop *loop;
  /* optional: post again from the callback (sequential chains) */
  kp_http *h;
  const char *url;
  int chain_left;    /* post again while > 0 */
  int post_on_abort; /* post again when aborted (must be refused) */
  int post_rc_in_cb;
} result;

static int g_done; /* callbacks seen in the current test */

static void record_cb(const kp_http_response *r, void *ud) {
  result *res = ud;
  res->done++;
  g_done++;
  res->status = r->status;
  res->curl_code = r->curl_code;
  res->body_len = r->body_len;
  size_t n = r->body_len < sizeof res->body - 1 ? r->body_len : sizeof res->body - 1;
  if (n)
    memcpy(res->body, r->body, n);
  res->body[n] = '\0';
  snprintf(res->error, sizeof res->error, "%s", r->error ? r->error : "");
  if (r->curl_code == 0)
    assert_null(r->error);
  else
    assert_non_null(r->error);
  res->t_end = ev_time();
  if (res->chain_left > 0) {
    res->chain_left--;
    res->post_rc_in_cb =
        kp_http_post(res->h, res->url, NULL, (const uint8_t *)"x", 1, record_cb, res);
  } else if (res->post_on_abort && r->curl_code == KP_HTTP_ABORTED) {
    res->post_rc_in_cb = kp_http_post(res->h, res->url, NULL, NULL, 0, record_cb, res);
  }
}

static int g_failsafe;
static void failsafe_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  g_failsafe = 1;
  ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until *counter >= want, failing the test after `secs`. */
static void run_until(struct ev_loop *loop, const int *counter, int want, double secs) {
  ev_timer fs;
  g_failsafe = 0;
  ev_timer_init(&fs, failsafe_cb, secs, 0.);
  ev_timer_start(loop, &fs);
  while (*counter < want && !g_failsafe)
    ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &fs);
  assert_false(g_failsafe);
}

static kp_http *client(struct ev_loop *loop, kp_http_opts *o) {
  char err[256] = "";
  kp_http *h = kp_http_new(loop, o, err, sizeof err);
  if (!h)
    fail_msg("kp_http_new: %s", err);
  return h;
}

static void url_of(char *u, size_t n, const char *scheme, int port, const char *path) {
  snprintf(u, n, "%s://127.0.0.1:%d%s", scheme, port, path);
}

/* ---- plain HTTP cases ------------------------------------------------------------ */

static void ok_response_body_and_status_are_delivered(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  s.body = "{\"ok\":true}";
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  result r = {0};
  g_done = 0;
  const char *hdrs[] = {"X-Amz-Target: Kinesis_20131202.PutRecords", NULL};
  assert_int_equal(kp_http_post(h, url, hdrs, (const uint8_t *)"{}", 2, record_cb, &r), 0);
  assert_int_equal(kp_http_in_flight(h), 1);
  run_until(loop, &g_done, 1, 5);
  assert_int_equal(r.done, 1);
  assert_int_equal(r.curl_code, 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "{\"ok\":true}");
  assert_int_equal(kp_http_in_flight(h), 0);
  assert_non_null(strstr(s.last_head, "POST / HTTP/1.1\r\n"));
  assert_non_null(strstr(s.last_head, "\r\nX-Amz-Target: Kinesis_20131202.PutRecords\r\n"));
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void error_statuses_are_delivered_with_body(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  const int statuses[] = {400, 500, 503};
  for (int i = 0; i < 3; i++) {
    pthread_mutex_lock(&s.mu);
    s.status = statuses[i];
    s.body = statuses[i] == 400 ? "{\"__type\":\"ValidationException\"}" : "oops";
    pthread_mutex_unlock(&s.mu);
    result r = {0};
    g_done = 0;
    assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"{}", 2, record_cb, &r), 0);
    run_until(loop, &g_done, 1, 5);
    assert_int_equal(r.curl_code, 0);
    assert_int_equal(r.status, statuses[i]);
    assert_string_equal(r.body,
                        statuses[i] == 400 ? "{\"__type\":\"ValidationException\"}" : "oops");
  }
  assert_int_equal(srv_get(&s, &s.n_conns), 1); /* error statuses keep the connection */
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void large_body_is_sent_whole_without_expect_100(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  /* libcurl 7.88 adds "Expect: 100-continue" above 1 MiB (older ones above 1 KiB). */
  size_t n = 2 * 1024 * 1024;
  uint8_t *body = malloc(n);
  for (size_t i = 0; i < n; i++)
    body[i] = (uint8_t)i;
  result r = {0};
  g_done = 0;
  assert_int_equal(kp_http_post(h, url, NULL, body, n, record_cb, &r), 0);
  run_until(loop, &g_done, 1, 5);
  assert_int_equal(r.curl_code, 0);
  assert_int_equal(s.last_body_len, n);
  assert_null(strcasestr(s.last_head, "Expect:"));
  kp_http_free(h);
  free(body);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void sequential_requests_reuse_one_connection(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  /* Each callback posts the next one: 20 requests strictly one after another. */
  result r = {.h = h, .url = url, .chain_left = 19};
  g_done = 0;
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r), 0);
  run_until(loop, &g_done, 20, 5);
  assert_int_equal(r.done, 20);
  assert_int_equal(r.post_rc_in_cb, 0);
  assert_int_equal(r.curl_code, 0);
  assert_int_equal(srv_get(&s, &s.n_requests), 20);
  assert_int_equal(srv_get(&s, &s.n_conns), 1);
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void concurrent_requests_use_at_most_max_connections(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  s.body = "ok";
  kp_http_opts o;
  kp_http_opts_default(&o);
  o.max_connections = 3;
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  enum { N = 40 };
  static result r[N];
  memset(r, 0, sizeof r);
  g_done = 0;
  for (int round = 0; round < 2; round++) { /* 2nd round must reuse, not reconnect */
    int base = g_done;
    for (int i = 0; i < N / 2; i++)
      assert_int_equal(
          kp_http_post(h, url, NULL, (const uint8_t *)"y", 1, record_cb, &r[round * N / 2 + i]), 0);
    assert_int_equal(kp_http_in_flight(h), N / 2);
    run_until(loop, &g_done, base + N / 2, 5);
  }
  for (int i = 0; i < N; i++) {
    assert_int_equal(r[i].done, 1);
    assert_int_equal(r[i].curl_code, 0);
    assert_int_equal(r[i].status, 200);
    assert_string_equal(r[i].body, "ok");
  }
  assert_int_equal(srv_get(&s, &s.n_requests), N);
  int conns = srv_get(&s, &s.n_conns);
  assert_true(conns >= 1 && conns <= 3);
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void server_closing_an_idle_connection_is_survived(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  s.mode = SRV_RESPOND_CLOSE;
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  result r = {.h = h, .url = url, .chain_left = 2};
  g_done = 0;
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r), 0);
  run_until(loop, &g_done, 3, 5);
  assert_int_equal(r.curl_code, 0);
  assert_int_equal(r.status, 200);
  assert_int_equal(srv_get(&s, &s.n_requests), 3);
  assert_int_equal(srv_get(&s, &s.n_conns), 3);
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

/* A body given as pieces arrives whole, and when the reused connection it went out on
 * dies unanswered, curl rewinds it (CURLOPT_SEEKFUNCTION) and sends it again, whole. */
static void gathered_body_arrives_whole_and_is_rewound_for_a_resend(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  s.mode = SRV_DROP_SECOND;
  kp_http_opts o;
  kp_http_opts_default(&o);
  o.max_connections = 1;
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  /* 3 MiB in pieces of assorted sizes, some empty; more than curl's upload buffer. */
  size_t total = 3u << 20, n_iov = 0;
  uint8_t *data = malloc(total);
  struct iovec iov[64];
  for (size_t i = 0; i < total; i++)
    data[i] = (uint8_t)(i * 13 + (i >> 12));
  for (size_t off = 0, k = 0; off < total; k++) {
    size_t len = k % 5 == 0 ? 0 : k % 3 == 0 ? 7 : 100000 + 4099 * k;
    if (len > total - off || n_iov == 62)
      len = total - off;
    iov[n_iov++] = (struct iovec){data + off, len};
    off += len;
  }
  uint64_t want = 1469598103934665603ull;
  for (size_t i = 0; i < total; i++)
    want = (want ^ data[i]) * 1099511628211ull;
  result r1 = {0}, r2 = {0};
  g_done = 0;
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r1), 0);
  run_until(loop, &g_done, 1, 5);
  assert_int_equal(r1.curl_code, 0);
  assert_int_equal(kp_http_post_iov(h, url, NULL, iov, n_iov, record_cb, &r2), 0);
  run_until(loop, &g_done, 2, 10);
  assert_int_equal(r2.curl_code, 0);
  assert_int_equal(r2.status, 200);
  assert_int_equal(srv_get(&s, &s.n_requests), 3); /* the dropped one and its resend */
  assert_int_equal(srv_get(&s, &s.n_conns), 2);
  pthread_mutex_lock(&s.mu);
  assert_int_equal(s.last_body_len, total);
  assert_true(s.last_body_hash == want);
  pthread_mutex_unlock(&s.mu);
  kp_http_free(h);
  free(data);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

/* After the last response, with its keep-alive connection cached, the client leaves no
 * watcher on the loop, so an idle producer costs no CPU. */
static void idle_client_keeps_no_watchers(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  result r = {0};
  g_done = 0;
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r), 0);
  run_until(loop, &g_done, 1, 5);
  assert_int_equal(r.curl_code, 0);
  /* ev_run without EVRUN_ONCE returns only when no referenced watcher is left. */
  ev_timer fs;
  g_failsafe = 0;
  ev_timer_init(&fs, failsafe_cb, 3, 0.);
  ev_timer_start(loop, &fs);
  ev_unref(loop);
  double t0 = ev_time();
  ev_run(loop, 0);
  ev_ref(loop);
  ev_timer_stop(loop, &fs);
  assert_false(g_failsafe);
  assert_true(ev_time() - t0 < 1.0);
  /* The cached connection is still used. */
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r), 0);
  run_until(loop, &g_done, 2, 5);
  assert_int_equal(r.curl_code, 0);
  assert_int_equal(srv_get(&s, &s.n_conns), 1);
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void connection_refused_is_an_error_callback(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  /* A port that was just free and has no listener. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd);
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", ntohs(a.sin_port), "/");
  result r = {0};
  g_done = 0;
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r), 0);
  run_until(loop, &g_done, 1, 5);
  assert_int_equal(r.curl_code, CURLE_COULDNT_CONNECT);
  assert_int_equal(r.status, 0);
  assert_true(strlen(r.error) > 0);
  kp_http_free(h);
  ev_loop_destroy(loop);
}

static void request_timeout_is_an_error_callback_within_the_bound(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  s.mode = SRV_HANG;
  kp_http_opts o;
  kp_http_opts_default(&o);
  o.request_timeout_ms = 300;
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  result r = {0};
  g_done = 0;
  double t0 = ev_time();
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r), 0);
  run_until(loop, &g_done, 1, 5);
  double took = r.t_end - t0;
  assert_int_equal(r.curl_code, CURLE_OPERATION_TIMEDOUT);
  assert_true(took >= 0.25);
  assert_true(took < 1.5);
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void dropped_connection_mid_response_is_an_error_callback(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  s.mode = SRV_DROP_BODY;
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  result r = {0};
  g_done = 0;
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r), 0);
  run_until(loop, &g_done, 1, 5);
  assert_int_equal(r.curl_code, CURLE_PARTIAL_FILE);
  assert_int_equal(r.status, 0); /* a partial 200 must not look like success */
  assert_int_equal(r.body_len, 0);
  /* The client recovers: the next request gets a fresh connection. */
  pthread_mutex_lock(&s.mu);
  s.mode = SRV_RESPOND;
  pthread_mutex_unlock(&s.mu);
  result r2 = {0};
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r2), 0);
  run_until(loop, &g_done, 2, 5);
  assert_int_equal(r2.curl_code, 0);
  assert_int_equal(r2.status, 200);
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void async_wake_cb(struct ev_loop *loop, ev_async *w, int revents) {
  ev_break(loop, EVBREAK_ONE);
}

static void free_with_requests_in_flight_aborts_each_once(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s;
  srv_start(&s, NULL);
  s.mode = SRV_HANG;
  ev_async wake;
  ev_async_init(&wake, async_wake_cb);
  ev_async_start(loop, &wake);
  s.loop = loop;
  s.notify = &wake;
  kp_http_opts o;
  kp_http_opts_default(&o);
  o.max_connections = 2;
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "http", s.port, "/");
  enum { N = 5 }; /* 2 on the wire, 3 queued inside curl */
  result r[N];
  memset(r, 0, sizeof r);
  g_done = 0;
  for (int i = 0; i < N; i++) {
    r[i].h = h;
    r[i].url = url;
    r[i].post_on_abort = 1;
    assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"x", 1, record_cb, &r[i]), 0);
  }
  /* Until the server holds 2 requests (the async watcher breaks the loop each time). */
  ev_timer fs;
  g_failsafe = 0;
  ev_timer_init(&fs, failsafe_cb, 5, 0.);
  ev_timer_start(loop, &fs);
  while (srv_get(&s, &s.n_requests) < 2 && !g_failsafe)
    ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &fs);
  assert_false(g_failsafe);
  assert_int_equal(g_done, 0);
  assert_int_equal(kp_http_in_flight(h), N);
  kp_http_free(h);
  assert_int_equal(g_done, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(r[i].done, 1);
    assert_int_equal(r[i].curl_code, KP_HTTP_ABORTED);
    assert_int_equal(r[i].post_rc_in_cb, -ECANCELED);
  }
  srv_stop(&s);
  ev_async_stop(loop, &wake);
  /* No watcher of the client is left: ev_run returns at once, without waiting for the
   * (unreferenced) failsafe. */
  g_failsafe = 0;
  ev_timer_init(&fs, failsafe_cb, 5, 0.);
  ev_timer_start(loop, &fs);
  ev_unref(loop);
  ev_run(loop, 0);
  ev_ref(loop);
  ev_timer_stop(loop, &fs);
  assert_false(g_failsafe);
  assert_int_equal(g_done, N);
  ev_loop_destroy(loop);
}

static void proxy_settings_are_used(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  srv s; /* plays the proxy: it just answers whatever arrives */
  srv_start(&s, NULL);
  s.body = "via proxy";
  kp_http_opts o;
  kp_http_opts_default(&o);
  o.proxy_host = "127.0.0.1";
  o.proxy_port = s.port;
  o.proxy_user = "u";
  o.proxy_password = "p";
  kp_http *h = client(loop, &o);
  result r = {0};
  g_done = 0;
  /* Port 9 has no listener: only the proxy can answer. */
  assert_int_equal(
      kp_http_post(h, "http://127.0.0.1:9/target", NULL, (const uint8_t *)"x", 1, record_cb, &r),
      0);
  run_until(loop, &g_done, 1, 5);
  assert_int_equal(r.curl_code, 0);
  assert_string_equal(r.body, "via proxy");
  assert_non_null(strstr(s.last_head, "POST http://127.0.0.1:9/target HTTP/1.1\r\n"));
  assert_non_null(strstr(s.last_head, "\r\nProxy-Authorization: Basic dTpw\r\n")); /* u:p */
  kp_http_free(h);
  srv_stop(&s);
  ev_loop_destroy(loop);
}

static void bad_arguments_are_rejected_without_callback(void **state) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  kp_http_opts o;
  kp_http_opts_default(&o);
  kp_http *h = client(loop, &o);
  result r = {0};
  assert_int_equal(kp_http_post(h, NULL, NULL, NULL, 0, record_cb, &r), -EINVAL);
  assert_int_equal(kp_http_post(h, "http://127.0.0.1:9/", NULL, NULL, 5, record_cb, &r), -EINVAL);
  assert_int_equal(kp_http_post(h, "http://127.0.0.1:9/", NULL, NULL, 0, NULL, &r), -EINVAL);
  assert_int_equal(kp_http_in_flight(h), 0);
  kp_http_free(h);
  assert_int_equal(r.done, 0);
  kp_http_free(NULL);
  ev_loop_destroy(loop);
}

/* ---- TLS ------------------------------------------------------------------------ */

static char g_dir[64];
static char g_ca[128], g_crt[128], g_key[128];

static int run_cmd(char *const argv[]) {
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    int dn = open("/dev/null", O_WRONLY);
    if (dn >= 0) {
      dup2(dn, 1);
      dup2(dn, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  int st;
  if (waitpid(pid, &st, 0) != pid)
    return -1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* A throwaway CA and a server certificate for IP 127.0.0.1 signed by it. */
static int tls_setup(void **state) {
  snprintf(g_dir, sizeof g_dir, "/tmp/kp_http_test.XXXXXX");
  if (!mkdtemp(g_dir))
    return -1;
  char cakey[128], csr[128], ext[128];
  snprintf(g_ca, sizeof g_ca, "%s/ca.crt", g_dir);
  snprintf(cakey, sizeof cakey, "%s/ca.key", g_dir);
  snprintf(g_crt, sizeof g_crt, "%s/srv.crt", g_dir);
  snprintf(g_key, sizeof g_key, "%s/srv.key", g_dir);
  snprintf(csr, sizeof csr, "%s/srv.csr", g_dir);
  snprintf(ext, sizeof ext, "%s/ext.cnf", g_dir);
  FILE *f = fopen(ext, "w");
  if (!f)
    return -1;
  fputs("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n",
        f);
  fclose(f);
  char *ca[] = {"openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                cakey,
                "-out",
                g_ca,
                "-days",
                "2",
                "-subj",
                "/CN=kp test CA",
                NULL};
  char *req[] = {
      "openssl",       "req",     "-newkey", "ec",   "-pkeyopt", "ec_paramgen_curve:prime256v1",
      "-nodes",        "-keyout", g_key,     "-out", csr,        "-subj",
      "/CN=127.0.0.1", NULL};
  char *sign[] = {
      "openssl",         "x509", "-req", "-in",   csr, "-CA",      g_ca, "-CAkey", cakey,
      "-CAcreateserial", "-out", g_crt,  "-days", "2", "-extfile", ext,  NULL};
  if (run_cmd(ca) || run_cmd(req) || run_cmd(sign))
    return -1;
  return 0;
}

static int tls_teardown(void **state) {
  const char *names[] = {"ca.crt", "ca.key", "ca.srl", "srv.crt", "srv.key", "srv.csr", "ext.cnf"};
  char p[192];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf(p, sizeof p, "%s/%s", g_dir, names[i]);
    unlink(p);
  }
  rmdir(g_dir);
  return 0;
}

static SSL_CTX *server_ctx(void) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  assert_non_null(ctx);
  assert_int_equal(SSL_CTX_use_certificate_file(ctx, g_crt, SSL_FILETYPE_PEM), 1);
  assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, g_key, SSL_FILETYPE_PEM), 1);
  return ctx;
}

/* One TLS request with the given trust settings; returns its result. */
static result tls_request(const char *ca_file, const char *ca_dir, int verify, int http2) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  SSL_CTX *ctx = server_ctx();
  srv s;
  srv_start(&s, ctx);
  s.body = "secure";
  kp_http_opts o;
  kp_http_opts_default(&o);
  o.ca_file = ca_file;
  o.ca_dir = ca_dir;
  o.verify_peer = verify;
  o.http2 = http2;
  kp_http *h = client(loop, &o);
  char url[128];
  url_of(url, sizeof url, "https", s.port, "/");
  result r = {0};
  g_done = 0;
  assert_int_equal(kp_http_post(h, url, NULL, (const uint8_t *)"{}", 2, record_cb, &r), 0);
  run_until(loop, &g_done, 1, 5);
  kp_http_free(h);
  srv_stop(&s);
  SSL_CTX_free(ctx);
  ev_loop_destroy(loop);
  return r;
}

static void tls_verifies_with_the_ca_file(void **state) {
  result r = tls_request(g_ca, NULL, 1, 0);
  assert_int_equal(r.curl_code, 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "secure");
}

static void tls_verifies_with_a_ca_dir(void **state) {
  /* CAPATH wants <subject-hash>.0 names: `openssl rehash` makes them. */
  char dir[128];
  snprintf(dir, sizeof dir, "%s/cadir", g_dir);
  assert_int_equal(mkdir(dir, 0700), 0);
  char dst[192];
  snprintf(dst, sizeof dst, "%s/ca.pem", dir);
  assert_int_equal(symlink(g_ca, dst), 0);
  char *rehash[] = {"openssl", "rehash", dir, NULL};
  assert_int_equal(run_cmd(rehash), 0);
  result r = tls_request(NULL, dir, 1, 0);
  char *rm[] = {"rm", "-rf", dir, NULL};
  run_cmd(rm);
  assert_int_equal(r.curl_code, 0);
  assert_int_equal(r.status, 200);
}

static void tls_without_the_ca_fails_verification(void **state) {
  result r = tls_request(NULL, NULL, 1, 0);
  assert_int_equal(r.curl_code, CURLE_PEER_FAILED_VERIFICATION);
  assert_true(strlen(r.error) > 0);
}

static void tls_without_verification_succeeds(void **state) {
  result r = tls_request(NULL, NULL, 0, 0);
  assert_int_equal(r.curl_code, 0);
  assert_string_equal(r.body, "secure");
}

/* The test server offers no ALPN: http2 must fall back to HTTP/1.1 over TLS. */
static void tls_http2_option_falls_back_to_http11(void **state) {
  result r = tls_request(g_ca, NULL, 1, 1);
  assert_int_equal(r.curl_code, 0);
  assert_string_equal(r.body, "secure");
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* the TLS server writes to sockets the client closed */
  const struct CMUnitTest plain[] = {
      cmocka_unit_test(ok_response_body_and_status_are_delivered),
      cmocka_unit_test(error_statuses_are_delivered_with_body),
      cmocka_unit_test(large_body_is_sent_whole_without_expect_100),
      cmocka_unit_test(sequential_requests_reuse_one_connection),
      cmocka_unit_test(concurrent_requests_use_at_most_max_connections),
      cmocka_unit_test(server_closing_an_idle_connection_is_survived),
      cmocka_unit_test(gathered_body_arrives_whole_and_is_rewound_for_a_resend),
      cmocka_unit_test(idle_client_keeps_no_watchers),
      cmocka_unit_test(connection_refused_is_an_error_callback),
      cmocka_unit_test(request_timeout_is_an_error_callback_within_the_bound),
      cmocka_unit_test(dropped_connection_mid_response_is_an_error_callback),
      cmocka_unit_test(free_with_requests_in_flight_aborts_each_once),
      cmocka_unit_test(proxy_settings_are_used),
      cmocka_unit_test(bad_arguments_are_rejected_without_callback),
  };
  const struct CMUnitTest tls[] = {
      cmocka_unit_test(tls_verifies_with_the_ca_file),
      cmocka_unit_test(tls_verifies_with_a_ca_dir),
      cmocka_unit_test(tls_without_the_ca_fails_verification),
      cmocka_unit_test(tls_without_verification_succeeds),
      cmocka_unit_test(tls_http2_option_falls_back_to_http11),
  };
  int fails = cmocka_run_group_tests_name("http", plain, NULL, NULL);
  fails += cmocka_run_group_tests_name("http_tls", tls, tls_setup, tls_teardown);
  return fails;
}
