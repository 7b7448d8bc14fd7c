/* AWS Signature Version 4 (header-based, HMAC-SHA256).
 *
 * A kp_sigv4_signer holds one set of credentials and caches the derived signing key
 * per (date, region, service): the key only changes daily, so a request costs two
 * HMACs plus the payload hash instead of six. Credentials can be replaced at runtime
 * (the wrapper refreshes them every few seconds); replacing them drops the cache.
 *
 * Signing is pure: the time is a parameter and nothing is logged. A signer is not
 * thread-safe (the daemon is single-threaded). */
#ifndef KP_PRODUCER_SIGV4_H
#define KP_PRODUCER_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>
#include <time.h>

/* Longest Authorization value we produce; longer (absurd header lists) is -E2BIG. */
#define KP_SIGV4_AUTH_MAX 1024
/* "YYYYMMDDTHHMMSSZ" + NUL */
#define KP_SIGV4_AMZ_DATE_LEN 17
/* Lower-case hex SHA-256 + NUL */
#define KP_SIGV4_SHA256_HEX_LEN 65

typedef struct kp_sigv4_signer kp_sigv4_signer;

typedef struct kp_sigv4_header {
  const char *name; /* any case; signed lower-cased */
  const char *value;
} kp_sigv4_header;

typedef struct kp_sigv4_request {
  const char *method; /* "POST" */
  const char *host;   /* Host header value, with ":port" when not the scheme's default */
  /* Path as sent on the wire ("/" for Kinesis and CloudWatch; NULL or "" means "/").
   * Bytes other than unreserved characters and '/' are percent-encoded once more, as
   * SigV4 requires for every service but S3. No dot-segment normalisation. */
  const char *path;
  /* Raw query string without '?', already percent-encoded (NULL or "" for none);
   * its pairs are sorted for the canonical request. */
  const char *query;
  /* Extra headers to sign (content-type, x-amz-target, ...). Host, X-Amz-Date and
   * X-Amz-Security-Token are added by the signer and must not be listed. */
  const kp_sigv4_header *headers;
  size_t n_headers;
  const void *payload;
  size_t payload_len;
  /* Precomputed lower-case hex SHA-256 of the payload, or NULL to hash `payload`. */
  const char *payload_sha256_hex;
  /* Also sign (and return for sending) x-amz-content-sha256; Kinesis does not need it. */
  bool sign_content_sha256;
} kp_sigv4_request;

typedef struct kp_sigv4_result {
  char authorization[KP_SIGV4_AUTH_MAX];        /* Authorization header value */
  char amz_date[KP_SIGV4_AMZ_DATE_LEN];         /* X-Amz-Date header value */
  char content_sha256[KP_SIGV4_SHA256_HEX_LEN]; /* X-Amz-Content-SHA256 (if signed) */
  /* X-Amz-Security-Token value to send, or NULL when the credentials have none. A copy
   * owned by the result, so a credential refresh cannot pull it from under an
   * in-flight request; release it with kp_sigv4_result_free. */
  char *security_token;
} kp_sigv4_result;

/* Creates a signer with no credentials. Returns NULL on allocation failure. */
kp_sigv4_signer *kp_sigv4_signer_new(void);

/* Wipes the secrets and frees the signer. NULL is accepted. */
void kp_sigv4_signer_free(kp_sigv4_signer *s);

/* Replaces the credentials (token may be NULL or "" for none) and drops cached keys.
 * Returns 0, -EINVAL (empty key id or secret, or a control character in them) or
 * -ENOMEM; on failure the previous credentials stay in place. */
int kp_sigv4_signer_set_credentials(kp_sigv4_signer *s, const char *access_key_id,
                                    const char *secret_key, const char *session_token);

/* True once credentials have been set. */
bool kp_sigv4_signer_has_credentials(const kp_sigv4_signer *s);

/* Signs `req` for `region`/`service` ("kinesis", "monitoring") at time `now` and fills
 * `out` (call kp_sigv4_result_free afterwards, also after a failure). Returns 0, or
 * -EINVAL (missing credentials, bad input: errstr says which), -E2BIG (Authorization
 * would exceed KP_SIGV4_AUTH_MAX) or -ENOMEM. */
int kp_sigv4_sign(kp_sigv4_signer *s, const kp_sigv4_request *req, const char *region,
                  const char *service, time_t now, kp_sigv4_result *out, char *errstr,
                  size_t errlen);

void kp_sigv4_result_free(kp_sigv4_result *r);

/* Lower-case hex SHA-256 of data into out (65 bytes incl. NUL). Returns 0 or -ENOMEM. */
int kp_sigv4_sha256_hex(const void *data, size_t len, char out[KP_SIGV4_SHA256_HEX_LEN]);

/* The same over the concatenation of iov[0..n) (a gathered request body). */
int kp_sigv4_sha256_hex_iov(const struct iovec *iov, size_t n, char out[KP_SIGV4_SHA256_HEX_LEN]);

#endif
