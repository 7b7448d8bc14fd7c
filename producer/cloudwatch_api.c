/* CloudWatch PutMetricData (Query protocol) encoder and error decoder. */
#include "producer/cloudwatch_api.h"

#include <errno.h>
#include <math.h> /* isfinite (a macro: no libm needed) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small formatting helpers ----------------------------------------------------- */

size_t kp_cw_format_double(double v, char out[32]) {
  if (v == 0) {
    memcpy(out, "0", 2);
    return 1;
  }
  int n = 0;
  double a = v < 0 ? -v : v;
  if (a < 1e17 && (double)(int64_t)v == v) /* integral: plain digits, never "1e+01" */
    return (size_t)snprintf(out, 32, "%lld", (long long)v);
  for (int prec = 1; prec <= 17; prec++) {
    n = snprintf(out, 32, "%.*g", prec, v);
    if (strtod(out, NULL) == v)
      break;
  }
  for (char *p = out; *p; p++)
    if (*p == ',') /* a locale's decimal comma: the wire wants '.' */
      *p = '.';
  return (size_t)n;
}

/* Days since 1970-01-01 -> civil date (proleptic Gregorian), after H. Hinnant. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int kp_cw_format_timestamp(double t, char out[21]) {
  if (!(t >= 0) || t >= 253402300800.0) /* 10000-01-01 */
    return -EINVAL;
  int64_t s = (int64_t)t; /* t >= 0: truncation is floor */
  int64_t days = s / 86400, rem = s % 86400;
  int64_t y;
  unsigned mo, d;
  civil_from_days(days, &y, &mo, &d);
  unsigned v[6] = {(unsigned)y,         mo, d, (unsigned)(rem / 3600), (unsigned)(rem / 60 % 60),
                   (unsigned)(rem % 60)};
  static const char seps[] = "--T::Z";
  char *o = out;
  for (int i = 0; i < 6; i++) {
    if (i == 0) {
      *o++ = (char)('0' + v[0] / 1000);
      *o++ = (char)('0' + v[0] / 100 % 10);
    }
    *o++ = (char)('0' + v[i] / 10 % 10);
    *o++ = (char)('0' + v[i] % 10);
    *o++ = seps[i];
  }
  *o = 0;
  return 0;
}

/* RFC 3986 percent-encoding of s (all but unreserved). */
static int append_enc(kp_buf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(s);
  if (kp_buf_reserve(b, n * 3))
    return -1;
  uint8_t *o = b->data + b->len;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)s[i];
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      *o++ = c;
    } else {
      *o++ = '%';
      *o++ = (uint8_t)hex[c >> 4];
      *o++ = (uint8_t)hex[c & 15];
    }
  }
  b->len = (size_t)(o - b->data);
  return 0;
}

/* Characters (UTF-8 code points) in s. */
static size_t n_chars(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    n += ((uint8_t)*s & 0xC0) != 0x80;
  return n;
}

static bool len_ok(const char *s, size_t max) {
  if (!s || !s[0])
    return false;
  size_t n = n_chars(s);
  return n >= 1 && n <= max;
}

/* CloudWatch's value range; tiny magnitudes become 0 (CloudWatch rejects them). */
#define CW_MAX_VALUE 2.3485425827738332e+108 /* 2^360 */
#define CW_MIN_MAGNITUDE 4.258e-109          /* just above 2^-360 */
static bool value_fix(double *v) {
  double a = *v < 0 ? -*v : *v;
  if (!isfinite(*v) || a > CW_MAX_VALUE)
    return false;
  if (a < CW_MIN_MAGNITUDE)
    *v = 0;
  return true;
}

/* ---- the request set --------------------------------------------------------------- */

int kp_cw_request_set_init(kp_cw_request_set *rs, const char *ns, const kp_cw_limits *lim,
                           char *errstr, size_t errlen) {
  memset(rs, 0, sizeof *rs);
  const char *why = NULL;
  if (!ns || !ns[0] || strlen(ns) > 255)
    why = "must be 1..255 characters";
  else if (ns[0] == ':')
    why = "must not start with ':'";
  else if (!strncmp(ns, "AWS/", 4))
    why = "must not start with \"AWS/\" (reserved for AWS services)";
  else
    for (const char *p = ns; *p && !why; p++)
      if ((uint8_t)*p < 0x20 || (uint8_t)*p >= 0x7F)
        why = "must be printable ASCII";
  if (why) {
    if (errlen)
      snprintf(errstr, errlen, "MetricsNamespace: %s", why);
    return -EINVAL;
  }
  kp_buf b = KP_BUF_INIT;
  if (append_enc(&b, ns) || kp_buf_append(&b, "", 1)) {
    kp_buf_free(&b);
    return -ENOMEM;
  }
  rs->ns_enc_ = (char *)b.data;
  if (lim)
    rs->lim_ = *lim;
  if (!rs->lim_.max_data_per_request)
    rs->lim_.max_data_per_request = KP_CW_MAX_DATA_PER_REQUEST;
  if (!rs->lim_.max_body_bytes)
    rs->lim_.max_body_bytes = KP_CW_MAX_BODY_BYTES;
  return 0;
}

void kp_cw_request_set_free(kp_cw_request_set *rs) {
  for (size_t i = 0; i < rs->n_bodies; i++)
    kp_buf_free(&rs->bodies[i]);
  free(rs->bodies);
  free(rs->data_per_body);
  free(rs->ns_enc_);
  kp_buf_free(&rs->scratch_);
  memset(rs, 0, sizeof *rs);
}

static int new_body(kp_cw_request_set *rs) {
  if (rs->n_bodies == rs->cap_bodies) {
    size_t cap = rs->cap_bodies ? rs->cap_bodies * 2 : 4;
    kp_buf *nb = realloc(rs->bodies, cap * sizeof *nb);
    if (!nb)
      return -1;
    rs->bodies = nb;
    size_t *nd = realloc(rs->data_per_body, cap * sizeof *nd);
    if (!nd)
      return -1;
    rs->data_per_body = nd;
    rs->cap_bodies = cap;
  }
  kp_buf b = KP_BUF_INIT;
  if (kp_buf_append_str(&b, "Action=PutMetricData&Version=" KP_CW_API_VERSION "&Namespace=") ||
      kp_buf_append_str(&b, rs->ns_enc_)) {
    kp_buf_free(&b);
    return -1;
  }
  rs->bodies[rs->n_bodies] = b;
  rs->data_per_body[rs->n_bodies] = 0;
  rs->n_bodies++;
  return 0;
}

/* key=value pair "&MetricData.member.<i>.<key>=<enc value>" */
static int put_kv(kp_buf *b, size_t i, const char *key, const char *value) {
  char k[96];
  snprintf(k, sizeof k, "&MetricData.member.%zu.%s=", i, key);
  return kp_buf_append_str(b, k) || append_enc(b, value) ? -1 : 0;
}

static int put_num(kp_buf *b, size_t i, const char *key, double v) {
  char num[32];
  kp_cw_format_double(v, num);
  return put_kv(b, i, key, num);
}

static int encode_datum(kp_buf *b, size_t i, const kp_cw_datum *d, const char *ts,
                        const double vals[4]) {
  b->len = 0;
  if (put_kv(b, i, "MetricName", d->metric_name))
    return -1;
  for (size_t j = 0; j < d->n_dims; j++) {
    char k[64];
    snprintf(k, sizeof k, "Dimensions.member.%zu.Name", j + 1);
    if (put_kv(b, i, k, d->dims[j].key))
      return -1;
    snprintf(k, sizeof k, "Dimensions.member.%zu.Value", j + 1);
    if (put_kv(b, i, k, d->dims[j].value))
      return -1;
  }
  if (put_kv(b, i, "Timestamp", ts) || put_num(b, i, "StatisticValues.SampleCount", vals[0]) ||
      put_num(b, i, "StatisticValues.Sum", vals[1]) ||
      put_num(b, i, "StatisticValues.Minimum", vals[2]) ||
      put_num(b, i, "StatisticValues.Maximum", vals[3]))
    return -1;
  if (d->unit && put_kv(b, i, "Unit", d->unit))
    return -1;
  return 0;
}

static bool datum_ok(const kp_cw_datum *d, char ts[21], double vals[4]) {
  if (!len_ok(d->metric_name, 255) || d->n_dims > KP_CW_MAX_DIMENSIONS || (d->n_dims && !d->dims) ||
      (d->unit && !d->unit[0]))
    return false;
  for (size_t j = 0; j < d->n_dims; j++)
    if (!len_ok(d->dims[j].key, 255) || !len_ok(d->dims[j].value, 1024))
      return false;
  if (kp_cw_format_timestamp(d->timestamp, ts) != 0)
    return false;
  vals[0] = d->sample_count;
  vals[1] = d->sum;
  vals[2] = d->minimum;
  vals[3] = d->maximum;
  for (int k = 0; k < 4; k++)
    if (!value_fix(&vals[k]))
      return false;
  return vals[0] > 0 && vals[2] <= vals[3];
}

int kp_cw_request_set_add(kp_cw_request_set *rs, const kp_cw_datum *d) {
  char ts[21];
  double vals[4];
  if (!datum_ok(d, ts, vals)) {
    rs->skipped++;
    return 0;
  }
  if ((!rs->n_bodies || rs->data_per_body[rs->n_bodies - 1] >= rs->lim_.max_data_per_request) &&
      new_body(rs))
    return -ENOMEM;
  size_t last = rs->n_bodies - 1;
  if (encode_datum(&rs->scratch_, rs->data_per_body[last] + 1, d, ts, vals))
    return -ENOMEM;
  if (rs->bodies[last].len + rs->scratch_.len > rs->lim_.max_body_bytes &&
      rs->data_per_body[last] > 0) {
    if (new_body(rs))
      return -ENOMEM;
    last = rs->n_bodies - 1;
    if (encode_datum(&rs->scratch_, 1, d, ts, vals))
      return -ENOMEM;
  }
  if (rs->bodies[last].len + rs->scratch_.len > rs->lim_.max_body_bytes) {
    rs->skipped++; /* too big even alone (only with tiny test limits) */
    return 0;
  }
  if (kp_buf_append(&rs->bodies[last], rs->scratch_.data, rs->scratch_.len))
    return -ENOMEM;
  rs->data_per_body[last]++;
  rs->n_data++;
  return 0;
}

/* ---- from the metrics ---------------------------------------------------------------- */

typedef struct upload_ctx {
  kp_cw_request_set *rs;
  double ts;
} upload_ctx;

static int upload_cb(const kp_metrics_record *r, void *ud) {
  upload_ctx *u = ud;
  kp_cw_datum d = {
      .metric_name = r->name,
      .dims = r->dims,
      .n_dims = r->n_dims,
      .timestamp = u->ts,
      .sample_count = r->stats.count,
      .sum = r->stats.sum,
      .minimum = r->stats.min,
      .maximum = r->stats.max,
      .unit = r->unit,
  };
  return kp_cw_request_set_add(u->rs, &d) ? -ENOMEM : 0;
}

int kp_cw_encode_metrics(kp_cw_request_set *rs, kp_metrics *m, double now) {
  /* whole seconds, without libm (kp_cw_format_timestamp truncates anyway) */
  upload_ctx u = {rs, now};
  return kp_metrics_collect_upload(m, now, upload_cb, &u) ? -ENOMEM : 0;
}

/* ---- errors ------------------------------------------------------------------------ */

/* Finds "<tag>" or "<tag attr...>" in [p, end); returns the start of its content and
 * sets *cend to its "</tag>" (NULL if none). */
static const char *find_elem(const char *p, const char *end, const char *tag, const char **cend) {
  size_t tl = strlen(tag);
  while (p < end) {
    const char *lt = memchr(p, '<', (size_t)(end - p));
    if (!lt)
      return NULL;
    p = lt + 1;
    if ((size_t)(end - p) < tl + 1 || memcmp(p, tag, tl))
      continue;
    char c = p[tl];
    if (c != '>' && c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '/')
      continue;
    const char *gt = memchr(p, '>', (size_t)(end - p));
    if (!gt)
      return NULL;
    if (gt[-1] == '/') { /* <tag/>: empty */
      *cend = gt + 1;
      return gt + 1;
    }
    const char *content = gt + 1;
    for (const char *q = content; q < end; q++) {
      if (q[0] == '<' && q + 2 + tl < end && q[1] == '/' && !memcmp(q + 2, tag, tl) &&
          q[2 + tl] == '>') {
        *cend = q;
        return content;
      }
      if (q[0] == '<' && q + 9 <= end && !memcmp(q, "<![CDATA[", 9)) {
        const char *ce = NULL;
        for (const char *r = q + 9; r + 3 <= end; r++)
          if (!memcmp(r, "]]>", 3)) {
            ce = r;
            break;
          }
        if (!ce)
          return NULL;
        q = ce + 2;
      }
    }
    return NULL;
  }
  return NULL;
}

static size_t put_utf8(char *o, uint32_t cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Decodes XML text in [p, end) into out (NUL-terminated, truncated at a character
 * boundary); surrounding whitespace is trimmed. */
static void xml_text(const char *p, const char *end, char *out, size_t size) {
  size_t n = 0;
  char tmp[4];
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
    p++;
  while (p < end) {
    size_t k = 0;
    const char *src = tmp;
    bool chunk = false; /* CDATA: many characters at once */
    if (*p == '&') {
      const char *semi = memchr(p, ';', (size_t)(end - p) < 12 ? (size_t)(end - p) : 12);
      size_t el = semi ? (size_t)(semi - p - 1) : 0;
      uint32_t cp = 0;
      bool ok = true;
      if (semi && el == 2 && !memcmp(p + 1, "lt", 2))
        cp = '<';
      else if (semi && el == 2 && !memcmp(p + 1, "gt", 2))
        cp = '>';
      else if (semi && el == 3 && !memcmp(p + 1, "amp", 3))
        cp = '&';
      else if (semi && el == 4 && !memcmp(p + 1, "quot", 4))
        cp = '"';
      else if (semi && el == 4 && !memcmp(p + 1, "apos", 4))
        cp = '\'';
      else if (semi && el >= 2 && p[1] == '#') {
        char *e;
        bool hexa = p[2] == 'x' || p[2] == 'X';
        unsigned long v = strtoul(p + (hexa ? 3 : 2), &e, hexa ? 16 : 10);
        ok = e == semi && e > p + (hexa ? 3 : 2) && v > 0 && v <= 0x10FFFF &&
             !(v >= 0xD800 && v <= 0xDFFF);
        cp = (uint32_t)v;
      } else {
        ok = false;
      }
      if (ok) {
        k = put_utf8(tmp, cp);
        p = semi + 1;
      } else {
        tmp[0] = '&';
        k = 1;
        p++;
      }
    } else if (*p == '<' && end - p >= 9 && !memcmp(p, "<![CDATA[", 9)) {
      const char *s = p + 9, *e = s;
      while (e + 3 <= end && memcmp(e, "]]>", 3))
        e++;
      if (e + 3 > end)
        e = end;
      src = s;
      k = (size_t)(e - s);
      chunk = true;
      p = e + 3 <= end ? e + 3 : end;
    } else {
      /* one UTF-8 character */
      k = 1;
      uint8_t c = (uint8_t)*p;
      size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      while (k < want && p + k < end && ((uint8_t)p[k] & 0xC0) == 0x80)
        k++;
      src = p;
      p += k;
    }
    if (chunk) {
      /* copy what fits, at character boundaries */
      size_t i = 0;
      while (i < k) {
        size_t cl = 1;
        while (i + cl < k && ((uint8_t)src[i + cl] & 0xC0) == 0x80)
          cl++;
        if (n + cl + 1 > size)
          goto done;
        memcpy(out + n, src + i, cl);
        n += cl;
        i += cl;
      }
      continue;
    }
    if (n + k + 1 > size)
      break;
    memcpy(out + n, src, k);
    n += k;
  }
done:
  while (n && (out[n - 1] == ' ' || out[n - 1] == '\t' || out[n - 1] == '\r' || out[n - 1] == '\n'))
    n--;
  out[n] = 0;
}

int kp_cw_error_decode(const char *body, size_t len, kp_cw_error *err, char *errstr,
                       size_t errlen) {
  memset(err, 0, sizeof *err);
  const char *end = body ? body + len : NULL, *eend = NULL;
  const char *e = body ? find_elem(body, end, "Error", &eend) : NULL;
  const char *c, *cend = NULL;
  if (e && (c = find_elem(e, eend, "Code", &cend)))
    xml_text(c, cend, err->code, sizeof err->code);
  if (!err->code[0]) {
    if (errlen)
      snprintf(errstr, errlen, "not a CloudWatch error response (no <Error><Code>)");
    memset(err, 0, sizeof *err);
    return -EBADMSG;
  }
  if ((c = find_elem(e, eend, "Message", &cend)))
    xml_text(c, cend, err->message, sizeof err->message);
  if ((c = find_elem(e, eend, "Type", &cend)))
    xml_text(c, cend, err->type, sizeof err->type);
  return 0;
}

static bool in_list(const char *code, const char *const *list) {
  for (; *list; list++)
    if (!strcmp(code, *list))
      return true;
  return false;
}

kp_cw_error_class kp_cw_error_classify(const char *code, long http_status) {
  static const char *const throttled[] = {"Throttling",
                                          "ThrottlingException",
                                          "ThrottledException",
                                          "RequestThrottled",
                                          "RequestThrottledException",
                                          "TooManyRequestsException",
                                          "RequestLimitExceeded",
                                          "SlowDown",
                                          NULL};
  static const char *const creds[] = {"ExpiredToken",
                                      "ExpiredTokenException",
                                      "InvalidClientTokenId",
                                      "UnrecognizedClientException",
                                      "SignatureDoesNotMatch",
                                      "IncompleteSignature",
                                      "MissingAuthenticationToken",
                                      "AuthFailure",
                                      "InvalidAccessKeyId",
                                      "AccessDenied",
                                      "AccessDeniedException",
                                      "NotAuthorized",
                                      "OptInRequired",
                                      NULL};
  static const char *const transient[] = {"InternalFailure",
                                          "InternalServiceError",
                                          "InternalServiceFault",
                                          "InternalError",
                                          "ServiceUnavailable",
                                          "ServiceUnavailableException",
                                          "RequestTimeout",
                                          "RequestTimeoutException",
                                          "RequestExpired",
                                          "PriorRequestNotComplete",
                                          NULL};
  if (code && code[0]) {
    if (in_list(code, throttled))
      return KP_CW_THROTTLED;
    if (in_list(code, creds))
      return KP_CW_CREDENTIALS;
    if (in_list(code, transient))
      return KP_CW_RETRY;
  }
  if (http_status == 429)
    return KP_CW_THROTTLED;
  if (http_status == 401 || http_status == 403)
    return KP_CW_CREDENTIALS;
  if (http_status >= 400 && http_status < 500)
    return KP_CW_PERMANENT;
  return KP_CW_RETRY; /* transport failure, 5xx, or something unexpected */
}
