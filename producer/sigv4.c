#include "producer/sigv4.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/buf.h"

#define KP_SIGV4_MAX_HEADERS 32
/* Kinesis + CloudWatch, plus a day rollover of each, fit without thrashing. */
#define KP_SIGV4_CACHE_SLOTS 4

typedef struct kp_sigv4_cached_key {
  char date[9];
  char region[64];
  char service[32];
  uint8_t key[32];
  bool used;
} kp_sigv4_cached_key;

struct kp_sigv4_signer {
  char *akid;
  char *aws4_secret; /* "AWS4" + secret: the first HMAC key, kept pre-built */
  size_t aws4_secret_len;
  char *token; /* NULL when none */
  kp_sigv4_cached_key cache[KP_SIGV4_CACHE_SLOTS];
  unsigned next_slot;
  kp_buf scratch; /* canonical request; reused so signing does not allocate */
};

static void set_err(char *errstr, size_t errlen, const char *fmt, ...) {
  if (!errstr || !errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, errlen, fmt, ap);
  va_end(ap);
}

static void free_secret(char *p, size_t len) {
  if (p) {
    OPENSSL_cleanse(p, len);
    free(p);
  }
}

kp_sigv4_signer *kp_sigv4_signer_new(void) {
  return calloc(1, sizeof(kp_sigv4_signer));
}

static void drop_credentials(kp_sigv4_signer *s) {
  free(s->akid);
  free_secret(s->aws4_secret, s->aws4_secret_len);
  if (s->token)
    free_secret(s->token, strlen(s->token));
  s->akid = s->aws4_secret = s->token = NULL;
  s->aws4_secret_len = 0;
  /* Derived keys are as sensitive as the secret. */
  OPENSSL_cleanse(s->cache, sizeof s->cache);
  s->next_slot = 0;
}

void kp_sigv4_signer_free(kp_sigv4_signer *s) {
  if (!s)
    return;
  drop_credentials(s);
  if (s->scratch.data)
    OPENSSL_cleanse(s->scratch.data, s->scratch.cap);
  kp_buf_free(&s->scratch);
  free(s);
}

static bool has_ctl(const char *p) {
  for (; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      return true;
  return false;
}

int kp_sigv4_signer_set_credentials(kp_sigv4_signer *s, const char *access_key_id,
                                    const char *secret_key, const char *session_token) {
  if (!access_key_id || !*access_key_id || !secret_key || !*secret_key || has_ctl(access_key_id) ||
      has_ctl(secret_key) || (session_token && has_ctl(session_token)))
    return -EINVAL;
  size_t slen = strlen(secret_key);
  char *akid = strdup(access_key_id);
  char *sec = malloc(4 + slen + 1);
  char *tok = session_token && *session_token ? strdup(session_token) : NULL;
  if (!akid || !sec || (session_token && *session_token && !tok)) {
    free(akid);
    free(sec);
    free(tok);
    return -ENOMEM;
  }
  memcpy(sec, "AWS4", 4);
  memcpy(sec + 4, secret_key, slen + 1);
  drop_credentials(s);
  s->akid = akid;
  s->aws4_secret = sec;
  s->aws4_secret_len = 4 + slen;
  s->token = tok;
  return 0;
}

bool kp_sigv4_signer_has_credentials(const kp_sigv4_signer *s) {
  return s && s->akid;
}

void kp_sigv4_result_free(kp_sigv4_result *r) {
  if (r && r->security_token) {
    free_secret(r->security_token, strlen(r->security_token));
    r->security_token = NULL;
  }
}

static const char kp_hex[] = "0123456789abcdef";

static void to_hex(const uint8_t *in, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = kp_hex[in[i] >> 4];
    out[2 * i + 1] = kp_hex[in[i] & 15];
  }
  out[2 * n] = '\0';
}

int kp_sigv4_sha256_hex_iov(const struct iovec *iov, size_t n, char out[KP_SIGV4_SHA256_HEX_LEN]) {
  uint8_t md[32];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  for (size_t i = 0; ok && i < n; i++)
    ok = EVP_DigestUpdate(ctx, iov[i].iov_base, iov[i].iov_len);
  ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 32;
  EVP_MD_CTX_free(ctx);
  if (!ok)
    return -ENOMEM;
  to_hex(md, 32, out);
  return 0;
}

int kp_sigv4_sha256_hex(const void *data, size_t len, char out[KP_SIGV4_SHA256_HEX_LEN]) {
  struct iovec one = {(void *)data, len};
  return kp_sigv4_sha256_hex_iov(&one, 1, out);
}

static int hmac(const void *key, size_t klen, const void *msg, size_t mlen, uint8_t out[32]) {
  unsigned int olen = 0;
  if (!HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &olen) || olen != 32)
    return -ENOMEM;
  return 0;
}

static int derive_key(const kp_sigv4_signer *s, const char *date, const char *region,
                      const char *service, uint8_t out[32]) {
  uint8_t k[32];
  int rc = hmac(s->aws4_secret, s->aws4_secret_len, date, strlen(date), k);
  if (!rc)
    rc = hmac(k, 32, region, strlen(region), k);
  if (!rc)
    rc = hmac(k, 32, service, strlen(service), k);
  if (!rc)
    rc = hmac(k, 32, "aws4_request", 12, out);
  OPENSSL_cleanse(k, sizeof k);
  return rc;
}

static int signing_key(kp_sigv4_signer *s, const char *date, const char *region,
                       const char *service, uint8_t out[32]) {
  for (unsigned i = 0; i < KP_SIGV4_CACHE_SLOTS; i++) {
    kp_sigv4_cached_key *c = &s->cache[i];
    if (c->used && !strcmp(c->date, date) && !strcmp(c->region, region) &&
        !strcmp(c->service, service)) {
      memcpy(out, c->key, 32);
      return 0;
    }
  }
  int rc = derive_key(s, date, region, service, out);
  if (rc || strlen(region) >= sizeof s->cache[0].region ||
      strlen(service) >= sizeof s->cache[0].service)
    return rc; /* too long to cache: still correct, just slower */
  kp_sigv4_cached_key *c = &s->cache[s->next_slot];
  s->next_slot = (s->next_slot + 1) % KP_SIGV4_CACHE_SLOTS;
  strcpy(c->date, date);
  strcpy(c->region, region);
  strcpy(c->service, service);
  memcpy(c->key, out, 32);
  c->used = true;
  return 0;
}

/* Header names are RFC 7230 tokens; anything else cannot be signed meaningfully. */
static bool valid_header_name(const char *n) {
  if (!*n)
    return false;
  for (; *n; n++) {
    unsigned char c = (unsigned char)*n;
    if (c <= 0x20 || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c))
      return false;
  }
  return true;
}

static int lower_cmp(const char *a, const char *b) {
  for (;; a++, b++) {
    unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
    if (x >= 'A' && x <= 'Z')
      x = (unsigned char)(x + 32);
    if (y >= 'A' && y <= 'Z')
      y = (unsigned char)(y + 32);
    if (x != y || !x)
      return (int)x - (int)y;
  }
}

static int append_lower(kp_buf *b, const char *s) {
  size_t n = strlen(s);
  if (kp_buf_reserve(b, n))
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    b->data[b->len++] = (uint8_t)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  return 0;
}

/* SigV4 canonical value: trimmed, inner runs of blanks collapsed to one space. */
static int append_trimmed(kp_buf *b, const char *v) {
  size_t n = strlen(v);
  if (kp_buf_reserve(b, n))
    return -ENOMEM;
  bool pending_space = false, started = false;
  for (size_t i = 0; i < n; i++) {
    if (v[i] == ' ' || v[i] == '\t') {
      pending_space = started;
      continue;
    }
    if (pending_space)
      b->data[b->len++] = ' ';
    pending_space = false;
    started = true;
    b->data[b->len++] = (uint8_t)v[i];
  }
  return 0;
}

static bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

static int append_uri_path(kp_buf *b, const char *path) {
  if (!path || !*path)
    return kp_buf_append(b, "/", 1) ? -ENOMEM : 0;
  size_t n = strlen(path);
  if (kp_buf_reserve(b, 3 * n))
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)path[i];
    if (unreserved(c) || c == '/') {
      b->data[b->len++] = c;
    } else {
      b->data[b->len++] = '%';
      b->data[b->len++] = (uint8_t) "0123456789ABCDEF"[c >> 4];
      b->data[b->len++] = (uint8_t) "0123456789ABCDEF"[c & 15];
    }
  }
  return 0;
}

typedef struct kp_qpair {
  const char *k, *v;
  size_t klen, vlen;
} kp_qpair;

static int cmp_span(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  return c ? c : (al < bl ? -1 : al > bl);
}

static int qpair_cmp(const void *pa, const void *pb) {
  const kp_qpair *a = pa, *b = pb;
  int c = cmp_span(a->k, a->klen, b->k, b->klen);
  return c ? c : cmp_span(a->v, a->vlen, b->v, b->vlen);
}

/* Pairs sorted by key then value; a pair without '=' gets an empty value. */
static int append_query(kp_buf *b, const char *q) {
  if (!q || !*q)
    return 0;
  size_t cap = 1;
  for (const char *p = q; *p; p++)
    cap += *p == '&';
  kp_qpair *pairs = malloc(cap * sizeof *pairs);
  if (!pairs)
    return -ENOMEM;
  size_t n = 0;
  for (const char *p = q; *p;) {
    const char *end = strchr(p, '&');
    if (!end)
      end = p + strlen(p);
    if (end > p) {
      const char *eq = memchr(p, '=', (size_t)(end - p));
      kp_qpair *x = &pairs[n++];
      x->k = p;
      x->klen = (size_t)((eq ? eq : end) - p);
      x->v = eq ? eq + 1 : end;
      x->vlen = (size_t)(end - x->v);
    }
    p = *end ? end + 1 : end;
  }
  qsort(pairs, n, sizeof *pairs, qpair_cmp);
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    if ((i && kp_buf_append(b, "&", 1)) || kp_buf_append(b, pairs[i].k, pairs[i].klen) ||
        kp_buf_append(b, "=", 1) || kp_buf_append(b, pairs[i].v, pairs[i].vlen))
      rc = -ENOMEM;
  }
  free(pairs);
  return rc;
}

static const char *const kp_reserved_names[] = {"host", "x-amz-date", "x-amz-security-token",
                                                "x-amz-content-sha256", "authorization"};

int kp_sigv4_sign(kp_sigv4_signer *s, const kp_sigv4_request *req, const char *region,
                  const char *service, time_t now, kp_sigv4_result *out, char *errstr,
                  size_t errlen) {
  out->authorization[0] = out->amz_date[0] = out->content_sha256[0] = '\0';
  out->security_token = NULL;
  if (!s || !s->akid) {
    set_err(errstr, errlen, "no credentials");
    return -EINVAL;
  }
  if (!req->method || !*req->method || has_ctl(req->method) || !req->host || !*req->host ||
      has_ctl(req->host)) {
    set_err(errstr, errlen, "missing or invalid method or host");
    return -EINVAL;
  }
  if (!region || !*region || !service || !*service || strchr(region, '/') || strchr(service, '/') ||
      has_ctl(region) || has_ctl(service)) {
    set_err(errstr, errlen, "invalid region or service");
    return -EINVAL;
  }
  if ((req->path && has_ctl(req->path)) || (req->query && has_ctl(req->query))) {
    set_err(errstr, errlen, "control character in path or query");
    return -EINVAL;
  }
  if (req->n_headers > KP_SIGV4_MAX_HEADERS) {
    set_err(errstr, errlen, "too many headers to sign (max %d)", KP_SIGV4_MAX_HEADERS);
    return -EINVAL;
  }

  struct tm tm;
  if (!gmtime_r(&now, &tm) || tm.tm_year < 1000 - 1900 || tm.tm_year > 9999 - 1900) {
    set_err(errstr, errlen, "time out of range");
    return -EINVAL;
  }
  if (strftime(out->amz_date, sizeof out->amz_date, "%Y%m%dT%H%M%SZ", &tm) != 16) {
    set_err(errstr, errlen, "time out of range");
    return -EINVAL;
  }
  char date[9];
  memcpy(date, out->amz_date, 8);
  date[8] = '\0';

  if (req->payload_sha256_hex) {
    const char *h = req->payload_sha256_hex;
    size_t hl = strlen(h);
    if (hl != 64 || strspn(h, kp_hex) != 64) {
      set_err(errstr, errlen, "payload hash is not 64 lower-case hex digits");
      return -EINVAL;
    }
    memcpy(out->content_sha256, h, 65);
  } else if (kp_sigv4_sha256_hex(req->payload ? req->payload : "", req->payload_len,
                                 out->content_sha256)) {
    return -ENOMEM;
  }

  /* All headers to sign, sorted by lower-cased name (insertion sort: a handful). */
  kp_sigv4_header hs[KP_SIGV4_MAX_HEADERS + 4];
  size_t nh = 0;
  hs[nh++] = (kp_sigv4_header){"host", req->host};
  hs[nh++] = (kp_sigv4_header){"x-amz-date", out->amz_date};
  if (s->token)
    hs[nh++] = (kp_sigv4_header){"x-amz-security-token", s->token};
  if (req->sign_content_sha256)
    hs[nh++] = (kp_sigv4_header){"x-amz-content-sha256", out->content_sha256};
  for (size_t i = 0; i < req->n_headers; i++) {
    const kp_sigv4_header *h = &req->headers[i];
    if (!h->name || !valid_header_name(h->name) || !h->value || has_ctl(h->value)) {
      set_err(errstr, errlen, "invalid header #%zu", i);
      return -EINVAL;
    }
    for (size_t j = 0; j < sizeof kp_reserved_names / sizeof *kp_reserved_names; j++)
      if (!lower_cmp(h->name, kp_reserved_names[j])) {
        set_err(errstr, errlen, "header %s is set by the signer", kp_reserved_names[j]);
        return -EINVAL;
      }
    hs[nh++] = *h;
  }
  for (size_t i = 1; i < nh; i++) {
    kp_sigv4_header x = hs[i];
    size_t j = i;
    for (; j > 0 && lower_cmp(hs[j - 1].name, x.name) > 0; j--)
      hs[j] = hs[j - 1];
    hs[j] = x;
  }
  for (size_t i = 1; i < nh; i++)
    if (!lower_cmp(hs[i - 1].name, hs[i].name)) {
      set_err(errstr, errlen, "header %s listed twice", hs[i].name);
      return -EINVAL;
    }

  kp_buf *b = &s->scratch;
  kp_buf_reset(b);
  int rc = 0;
  if (kp_buf_append_str(b, req->method) || kp_buf_append(b, "\n", 1) ||
      append_uri_path(b, req->path) || kp_buf_append(b, "\n", 1) || append_query(b, req->query) ||
      kp_buf_append(b, "\n", 1))
    return -ENOMEM;
  for (size_t i = 0; i < nh; i++)
    if (append_lower(b, hs[i].name) || kp_buf_append(b, ":", 1) || append_trimmed(b, hs[i].value) ||
        kp_buf_append(b, "\n", 1))
      return -ENOMEM;
  if (kp_buf_append(b, "\n", 1))
    return -ENOMEM;
  size_t signed_at = b->len; /* the signed-header list is reused in Authorization */
  for (size_t i = 0; i < nh; i++)
    if ((i && kp_buf_append(b, ";", 1)) || append_lower(b, hs[i].name))
      return -ENOMEM;
  size_t signed_len = b->len - signed_at;
  if (kp_buf_append(b, "\n", 1) || kp_buf_append(b, out->content_sha256, 64))
    return -ENOMEM;

  char creq_hash[KP_SIGV4_SHA256_HEX_LEN];
  if (kp_sigv4_sha256_hex(b->data, b->len, creq_hash))
    return -ENOMEM;

  char sts[256];
  int stslen = snprintf(sts, sizeof sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
                        out->amz_date, date, region, service, creq_hash);
  if (stslen < 0 || (size_t)stslen >= sizeof sts) {
    set_err(errstr, errlen, "region or service name too long");
    return -EINVAL;
  }

  uint8_t key[32], sig[32];
  rc = signing_key(s, date, region, service, key);
  if (!rc)
    rc = hmac(key, 32, sts, (size_t)stslen, sig);
  OPENSSL_cleanse(key, sizeof key);
  if (rc)
    return rc;
  char sighex[65];
  to_hex(sig, 32, sighex);

  int n = snprintf(out->authorization, sizeof out->authorization,
                   "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%.*s, "
                   "Signature=%s",
                   s->akid, date, region, service, (int)signed_len,
                   (const char *)b->data + signed_at, sighex);
  if (n < 0 || (size_t)n >= sizeof out->authorization) {
    out->authorization[0] = '\0';
    set_err(errstr, errlen, "Authorization header would be too long");
    return -E2BIG;
  }
  if (!req->sign_content_sha256)
    out->content_sha256[0] = '\0';
  if (s->token && !(out->security_token = strdup(s->token)))
    return -ENOMEM;
  return 0;
}
