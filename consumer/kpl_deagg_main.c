/* kpl-deagg: prints the user records inside Kinesis records as JSON lines.
 * Inputs: raw record files, base64 lines, or `aws kinesis get-records` JSON. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "format/hash_key.h"
#include "format/utf8.h"
#include "kp_deagg.h"

enum { EXIT_OK = 0, EXIT_CORRUPT = 1, EXIT_USAGE = 2 };

typedef struct cli {
  kp_deagg *d;
  bool strict;
  const char *pk, *ehk, *seq;
  kp_buf b64; /* scratch for base64 output, reused across records */
  kp_buf utf8;
} cli;

static void usage(FILE *f) {
  fputs("usage: kpl-deagg [options] [FILE...]\n"
        "De-aggregates KPL aggregated Kinesis records; prints one JSON line per user\n"
        "record: partitionKey, explicitHashKey, hashKey, sequenceNumber,\n"
        "subSequenceNumber, data (base64). Reads stdin when no FILE is given.\n"
        "\n"
        "Input (default: each FILE is the raw data of one Kinesis record):\n"
        "  --base64                    each non-empty line is one record's data in base64\n"
        "  --json                      input is `aws kinesis get-records` output\n"
        "  --partition-key KEY         outer partition key for raw/base64 input (\"\")\n"
        "  --explicit-hash-key DEC     outer explicit hash key for raw/base64 input\n"
        "  --sequence-number SEQ       sequence number for raw/base64 input (\"0\")\n"
        "Processing:\n"
        "  --strict                    fail on a corrupt aggregate instead of passing it\n"
        "                              through unchanged (the KCL's behaviour)\n"
        "  --hash-range START:END      keep only user records whose hash key is in\n"
        "                              [START, END] (decimal, inclusive)\n"
        "  -h, --help                  show this help\n"
        "Exit status: 0 ok, 1 corrupt input in --strict mode, 2 usage or input error.\n",
        f);
}

/* Appends the UTF-8 encoding of s with invalid sequences replaced by U+FFFD, so a
 * partition key that is not UTF-8 still yields valid JSON (jansson rejects it). */
static int lossy_utf8(kp_buf *out, const uint8_t *s, size_t n) {
  kp_buf_reset(out);
  return kp_utf8_append_lossy(out, s, n);
}

static json_t *json_text(cli *c, const uint8_t *s, size_t n) {
  json_t *j = json_stringn((const char *)s, n);
  if (j || lossy_utf8(&c->utf8, s, n))
    return j;
  return json_stringn((const char *)c->utf8.data, c->utf8.len);
}

static int b64_encode(kp_buf *out, const uint8_t *p, size_t n) {
  kp_buf_reset(out);
  if (n > (size_t)INT32_MAX / 4 * 3 - 3 || kp_buf_reserve(out, (n + 2) / 3 * 4 + 1))
    return -1;
  out->len = (size_t)EVP_EncodeBlock(out->data, p, (int)n);
  return 0;
}

/* Strict base64 (padded, no whitespace inside) into out; -1 if invalid. */
static int b64_decode(kp_buf *out, const char *s, size_t n) {
  kp_buf_reset(out);
  if (n == 0)
    return 0;
  if (n % 4 || n > INT32_MAX || kp_buf_reserve(out, n / 4 * 3 + 1))
    return -1;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    bool pad_ok = ch == '=' && (i == n - 1 || (i == n - 2 && s[n - 1] == '='));
    if (!pad_ok && !(ch == '+' || ch == '/' || (ch >= '0' && ch <= '9') ||
                     (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z')))
      return -1;
  }
  int m = EVP_DecodeBlock(out->data, (const unsigned char *)s, (int)n);
  if (m < 0)
    return -1;
  /* EVP_DecodeBlock counts the padding as zero bytes. */
  size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
  out->len = (size_t)m - pad;
  return 0;
}

static int print_record(cli *c, const kp_deagg_record *r) {
  char hk[KP_HASH_KEY_DEC_MAX];
  kp_hash_key k;
  memcpy(k.be, r->hash_key, 16);
  size_t hk_len = kp_hash_key_format(&k, hk);
  if (b64_encode(&c->b64, r->data, r->data_len))
    return -1;
  json_t *o = json_object();
  json_object_set_new(o, "partitionKey", json_text(c, r->partition_key, r->partition_key_len));
  json_object_set_new(o, "explicitHashKey",
                      r->explicit_hash_key
                          ? json_text(c, r->explicit_hash_key, r->explicit_hash_key_len)
                          : json_null());
  json_object_set_new(o, "hashKey", json_stringn_nocheck(hk, hk_len));
  json_object_set_new(o, "sequenceNumber",
                      json_text(c, (const uint8_t *)r->sequence_number, r->sequence_number_len));
  json_object_set_new(o, "subSequenceNumber", json_integer((json_int_t)r->sub_sequence_number));
  json_object_set_new(o, "data", json_stringn_nocheck((const char *)c->b64.data, c->b64.len));
  int rc = json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(o);
  if (rc || putchar('\n') == EOF)
    return -1;
  return 0;
}

/* De-aggregates one Kinesis record; `where` names it in messages. Returns an exit
 * status (0, 1 strict corruption, 2 bad input). */
static int process(cli *c, const char *where, const void *data, size_t len, const char *pk,
                   size_t pk_len, const char *ehk, size_t ehk_len, const char *seq,
                   size_t seq_len) {
  kp_deagg_input in = {data, len, pk, pk_len, ehk, ehk_len, seq, seq_len};
  kp_deagg_err rc = kp_deagg_begin(c->d, &in);
  if (rc != KP_DEAGG_OK) {
    fprintf(stderr, "kpl-deagg: %s: %s: %s\n", where, kp_deagg_err2str(rc), kp_deagg_errstr(c->d));
    return kp_deagg_err_is_corrupt(rc) ? EXIT_CORRUPT : EXIT_USAGE;
  }
  if (kp_deagg_corruption(c->d) != KP_DEAGG_OK)
    fprintf(stderr, "kpl-deagg: %s: warning: passed through as one record: %s: %s\n", where,
            kp_deagg_err2str(kp_deagg_corruption(c->d)), kp_deagg_errstr(c->d));
  kp_deagg_record r;
  while (kp_deagg_next(c->d, &r) == KP_DEAGG_OK) {
    if (print_record(c, &r)) {
      fprintf(stderr, "kpl-deagg: writing output: %s\n", strerror(errno));
      return EXIT_USAGE;
    }
  }
  return EXIT_OK;
}

static int read_all(const char *path, kp_buf *out) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "kpl-deagg: %s: %s\n", path, strerror(errno));
    return -1;
  }
  kp_buf_reset(out);
  for (;;) {
    if (kp_buf_reserve(out, 65536)) {
      fprintf(stderr, "kpl-deagg: %s: out of memory\n", path);
      break;
    }
    size_t n = fread(out->data + out->len, 1, out->cap - out->len, f);
    out->len += n;
    if (n == 0)
      break;
  }
  int err = ferror(f);
  if (err)
    fprintf(stderr, "kpl-deagg: %s: read error\n", path);
  if (f != stdin)
    fclose(f);
  return err ? -1 : 0;
}

static int do_base64(cli *c, const char *name, const kp_buf *in) {
  kp_buf rec = KP_BUF_INIT;
  int rc = EXIT_OK;
  const char *p = (const char *)in->data, *end = p + in->len;
  for (size_t line = 1; p < end && rc == EXIT_OK; line++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end;
    size_t n = (size_t)(e - p);
    if (n && p[n - 1] == '\r')
      n--;
    char where[512];
    snprintf(where, sizeof where, "%s:%zu", name, line);
    if (n) {
      if (b64_decode(&rec, p, n)) {
        fprintf(stderr, "kpl-deagg: %s: invalid base64\n", where);
        rc = EXIT_USAGE;
      } else {
        rc = process(c, where, rec.data, rec.len, c->pk, strlen(c->pk), c->ehk,
                     c->ehk ? strlen(c->ehk) : 0, c->seq, strlen(c->seq));
      }
    }
    p = e + (nl != NULL);
  }
  kp_buf_free(&rec);
  return rc;
}

/* An optional string member: dflt when absent or null, *bad when not a string. */
static const char *opt_str(json_t *rec, const char *key, const char *dflt, size_t *len, bool *bad) {
  json_t *v = json_object_get(rec, key);
  if (!v || json_is_null(v)) {
    *len = dflt ? strlen(dflt) : 0;
    return dflt;
  }
  if (!json_is_string(v))
    *bad = true;
  *len = json_string_length(v);
  return json_string_value(v);
}

static int do_json(cli *c, const char *name, const kp_buf *in) {
  json_error_t jerr;
  json_t *root = json_loadb((const char *)in->data, in->len, 0, &jerr);
  if (!root) {
    fprintf(stderr, "kpl-deagg: %s:%d:%d: invalid JSON: %s\n", name, jerr.line, jerr.column,
            jerr.text);
    return EXIT_USAGE;
  }
  json_t *recs = json_object_get(root, "Records");
  if (!json_is_array(recs)) {
    fprintf(stderr, "kpl-deagg: %s: no \"Records\" array\n", name);
    json_decref(root);
    return EXIT_USAGE;
  }
  kp_buf data = KP_BUF_INIT;
  int rc = EXIT_OK;
  size_t i;
  json_t *rec;
  json_array_foreach(recs, i, rec) {
    char where[512];
    snprintf(where, sizeof where, "%s: Records[%zu]", name, i);
    bool bad = !json_is_object(rec);
    json_t *jd = json_object_get(rec, "Data");
    size_t pk_len, seq_len, ehk_len;
    const char *pk = opt_str(rec, "PartitionKey", c->pk, &pk_len, &bad);
    const char *seq = opt_str(rec, "SequenceNumber", c->seq, &seq_len, &bad);
    const char *ehk = opt_str(rec, "ExplicitHashKey", NULL, &ehk_len, &bad);
    if (bad || !json_is_string(jd)) {
      fprintf(stderr, "kpl-deagg: %s: needs a string \"Data\"; keys must be strings\n", where);
      rc = EXIT_USAGE;
    } else if (b64_decode(&data, json_string_value(jd), json_string_length(jd))) {
      fprintf(stderr, "kpl-deagg: %s: \"Data\" is not valid base64\n", where);
      rc = EXIT_USAGE;
    } else {
      rc = process(c, where, data.data, data.len, pk, pk_len, ehk, ehk_len, seq, seq_len);
    }
    if (rc != EXIT_OK)
      break;
  }
  kp_buf_free(&data);
  json_decref(root);
  return rc;
}

static int parse_range(const char *s, kp_hash_key *lo, kp_hash_key *hi) {
  const char *colon = strchr(s, ':');
  if (!colon || kp_hash_key_parse(s, (size_t)(colon - s), lo) ||
      kp_hash_key_parse(colon + 1, strlen(colon + 1), hi) || kp_hash_key_cmp(lo, hi) > 0)
    return -1;
  return 0;
}

int main(int argc, char **argv) {
  enum { O_B64 = 256, O_JSON, O_PK, O_EHK, O_SEQ, O_STRICT, O_RANGE };
  static const struct option longopts[] = {
      {"base64", no_argument, NULL, O_B64},
      {"json", no_argument, NULL, O_JSON},
      {"partition-key", required_argument, NULL, O_PK},
      {"explicit-hash-key", required_argument, NULL, O_EHK},
      {"sequence-number", required_argument, NULL, O_SEQ},
      {"strict", no_argument, NULL, O_STRICT},
      {"hash-range", required_argument, NULL, O_RANGE},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  cli c = {.pk = "", .seq = "0", .b64 = KP_BUF_INIT, .utf8 = KP_BUF_INIT};
  bool b64 = false, json = false, have_range = false;
  kp_hash_key lo, hi;
  int opt;
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (opt) {
    case O_B64:
      b64 = true;
      break;
    case O_JSON:
      json = true;
      break;
    case O_PK:
      c.pk = optarg;
      break;
    case O_EHK:
      c.ehk = optarg;
      break;
    case O_SEQ:
      c.seq = optarg;
      break;
    case O_STRICT:
      c.strict = true;
      break;
    case O_RANGE:
      if (parse_range(optarg, &lo, &hi)) {
        fprintf(stderr, "kpl-deagg: --hash-range wants START:END, decimal, START <= END < "
                        "2^128\n");
        return EXIT_USAGE;
      }
      have_range = true;
      break;
    case 'h':
      usage(stdout);
      return EXIT_OK;
    default:
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (b64 && json) {
    fprintf(stderr, "kpl-deagg: --base64 and --json are exclusive\n");
    return EXIT_USAGE;
  }
  kp_hash_key tmp;
  if (c.ehk && kp_hash_key_parse(c.ehk, strlen(c.ehk), &tmp)) {
    fprintf(stderr, "kpl-deagg: --explicit-hash-key must be a decimal in 0..2^128-1\n");
    return EXIT_USAGE;
  }
  c.d = kp_deagg_new();
  if (!c.d)
    return EXIT_USAGE;
  kp_deagg_set_strict(c.d, c.strict);
  if (have_range)
    kp_deagg_set_hash_range(c.d, lo.be, hi.be);

  static char *const stdin_only[] = {"-"};
  char *const *files = optind < argc ? argv + optind : stdin_only;
  int nfiles = optind < argc ? argc - optind : 1;
  kp_buf in = KP_BUF_INIT;
  int rc = EXIT_OK;
  for (int i = 0; i < nfiles && rc == EXIT_OK; i++) {
    const char *name = strcmp(files[i], "-") == 0 ? "<stdin>" : files[i];
    if (read_all(files[i], &in)) {
      rc = EXIT_USAGE;
      break;
    }
    if (json)
      rc = do_json(&c, name, &in);
    else if (b64)
      rc = do_base64(&c, name, &in);
    else
      rc = process(&c, name, in.data, in.len, c.pk, strlen(c.pk), c.ehk, c.ehk ? strlen(c.ehk) : 0,
                   c.seq, strlen(c.seq));
  }
  if (fflush(stdout) != 0 && rc == EXIT_OK) {
    fprintf(stderr, "kpl-deagg: writing output: %s\n", strerror(errno));
    rc = EXIT_USAGE;
  }
  kp_buf_free(&in);
  kp_buf_free(&c.b64);
  kp_buf_free(&c.utf8);
  kp_deagg_destroy(c.d);
  return rc;
}
