/* Asynchronous HTTP(S) POST client on a libev loop: libcurl multi driven by
 * CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION (one ev_io per socket, one ev_timer),
 * so it costs nothing while idle. Connections are kept alive and reused; at most
 * max_connections are open, further requests queue inside curl.
 *
 * Threading: a kp_http belongs to the thread running its loop. Every function here, and
 * every callback, runs on that thread. Nothing is thread-safe. */
#ifndef KP_PRODUCER_HTTP_H
#define KP_PRODUCER_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct ev_loop;

typedef struct kp_http kp_http;

typedef struct kp_http_opts {
  /* TLS trust: PEM bundle (CURLOPT_CAINFO) and/or hashed dir (CURLOPT_CAPATH); NULL or
   * "" = curl's built-in default. The daemon fills them from CA_FILE / CA_DIR. */
  const char *ca_file, *ca_dir;
  int verify_peer;         /* VerifyCertificate: nonzero verifies peer and host name */
  long connect_timeout_ms; /* ConnectTimeout; 0 = curl's default (300 s) */
  long request_timeout_ms; /* RequestTimeout, whole transfer (CURLOPT_TIMEOUT_MS); 0 = none */
  long max_connections;    /* MaxConnections, total and per host; <= 0 means 1 */
  /* Proxy: used only if proxy_host is non-empty; otherwise no proxy at all (the
   * http_proxy/https_proxy environment variables are ignored on purpose). */
  const char *proxy_host;
  long proxy_port; /* 0 = curl's default for the scheme */
  const char *proxy_user, *proxy_password;
  /* 0: HTTP/1.1 only. Nonzero: HTTP/2 over TLS (ALPN, multiplexed, waiting for an
   * existing connection rather than opening a new one), HTTP/1.1 for plain http://. */
  int http2;
} kp_http_opts;

/* Fills the KPL defaults: verify on, 6000 ms connect and request timeouts, 24
 * connections, no proxy, HTTP/1.1. */
void kp_http_opts_default(kp_http_opts *o);

/* What a request ended with. Success of the transport is curl_code == 0; only then are
 * status and body meaningful (status is 0 and body empty on a transport error, even if
 * some of a response had arrived). Memory is owned by kp_http and valid only during the
 * callback. */
typedef struct kp_http_response {
  long status;         /* HTTP status, e.g. 200, 400, 500 */
  const uint8_t *body; /* not NUL-terminated; may be NULL when body_len is 0 */
  size_t body_len;
  int curl_code;            /* CURLcode; KP_HTTP_ABORTED when kp_http_free cancelled it */
  const char *error;        /* NULL on success, else a human-readable reason */
  double total_time_s;      /* CURLINFO_TOTAL_TIME */
  const char *content_type; /* the response's Content-Type, or NULL */
} kp_http_response;

/* curl_code of requests cancelled by kp_http_free (CURLE_ABORTED_BY_CALLBACK). */
#define KP_HTTP_ABORTED 42

/* Called exactly once per accepted request, on the loop thread, from inside ev_run (or
 * from kp_http_free). It may call kp_http_post (e.g. to retry) but must not call
 * kp_http_free. `ud` is the caller's, untouched. */
typedef void (*kp_http_cb)(const kp_http_response *r, void *ud);

/* Creates a client on `loop` (borrowed; must outlive the client). Options are copied.
 * Returns NULL with a message in errstr (n bytes) on failure. */
kp_http *kp_http_new(struct ev_loop *loop, const kp_http_opts *o, char *errstr, size_t n);

/* Cancels in-flight and queued requests, calling each one's callback with
 * curl_code KP_HTTP_ABORTED (posts made from those callbacks fail with -ECANCELED),
 * then closes all connections and frees everything. NULL is a no-op. Must not be
 * called from a kp_http_cb. */
void kp_http_free(kp_http *h);

/* Starts a POST of `body` (len bytes) to `url`. `headers` is a NULL-terminated array
 * of "Name: value" strings (or NULL), copied. The body is NOT copied (zero-copy): it
 * must stay valid and unchanged until the callback has run. "Expect: 100-continue" is
 * never sent. curl adds "Host: host[:port]" (port only when not the scheme's default;
 * sign exactly that, or pass a Host header), an Accept for any type and, unless the
 * caller gives one, "Content-Type: application/x-www-form-urlencoded"; a header "Name:"
 * removes one. Returns 0 and later calls cb exactly once; or a negative errno (-EINVAL,
 * -ENOMEM, -ECANCELED while freeing, -EIO if curl refuses) and never calls cb. */
int kp_http_post(kp_http *h, const char *url, const char *const *headers, const uint8_t *body,
                 size_t len, kp_http_cb cb, void *ud);

/* The same with the body as a gather list: iov[0..n_iov) is read out piece by piece into
 * curl's upload buffer, so a body assembled from records' own buffers is never copied
 * into one of its own first. Neither iov nor what it points to is copied: both must
 * stay valid and unchanged until the callback has run. */
int kp_http_post_iov(kp_http *h, const char *url, const char *const *headers,
                     const struct iovec *iov, size_t n_iov, kp_http_cb cb, void *ud);

/* Requests accepted whose callback has not run yet (in flight or queued). */
size_t kp_http_in_flight(const kp_http *h);

#endif
