/* kp-agg-tool: aggregates user records with OUR encoder (format/agg_encoder.h), for
 * interop tests against npm aws-kinesis-agg and for the demo.
 *
 *   kp-agg-tool [--max-count N] [--max-size BYTES] < spec.jsonl > kinesis.jsonl
 *
 * Input, one JSON object per line (the same spec as tools/interop/agg.js):
 *   {"pk": "<partition key>", "ehk": "<decimal>" | null (optional), "data": "<base64>",
 *    "group": <any> (optional)}
 * Consecutive records with an equal "group" value form one Kinesis record (an error if
 * they do not fit in --max-size); without "group", records are packed in order up to
 * --max-count records (default 500) and --max-size bytes of Kinesis record data
 * (default 1048576 minus the partition key). Output, one line per Kinesis record:
 *   {"partitionKey": "..", "explicitHashKey": "<decimal>", "data": "<base64>",
 *    "count": <user records in it>}
 * A group of one is emitted raw, as the KPL does (own key, decimal hash key as EHK). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "format/agg_encoder.h"
#include "format/hash_key.h"

#define KINESIS_MAX_RECORD (1024 * 1024)

typedef struct tool {
  kp_agg_encoder *enc;
  json_t *group; /* group of the records in enc (grouped mode), owned */
  kp_buf data;   /* decoded user data (scratch) */
  kp_buf b64;    /* encoded output (scratch) */
  size_t max_count, max_size;
  unsigned long long kinesis_records, user_records;
} tool;

static int b64_decode(kp_buf *out, const char *s, size_t n) {
  kp_buf_reset(out);
  if (n == 0)
    return 0;
  if (n % 4 || n > INT_MAX || kp_buf_reserve(out, n / 4 * 3 + 1))
    return -1;
  int m = EVP_DecodeBlock(out->data, (const unsigned char *)s, (int)n);
  if (m < 0)
    return -1;
  size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
  out->len = (size_t)m - pad;
  return 0;
}

static int b64_encode(kp_buf *out, const uint8_t *p, size_t n) {
  kp_buf_reset(out);
  if (n > (size_t)INT_MAX / 4 * 3 - 3 || kp_buf_reserve(out, (n + 2) / 3 * 4 + 1))
    return -1;
  out->len = (size_t)EVP_EncodeBlock(out->data, p, (int)n);
  return 0;
}

/* Emits the Kinesis record in the encoder (if any) and resets it. */
static int flush(tool *t) {
  size_t count = kp_agg_encoder_count(t->enc);
  if (count == 0)
    return 0;
  kp_agg_output out;
  if (kp_agg_encoder_finish(t->enc, &out) || b64_encode(&t->b64, out.data, out.data_len)) {
    fprintf(stderr, "kp-agg-tool: out of memory\n");
    return -1;
  }
  json_t *o = json_object();
  json_object_set_new(o, "partitionKey", json_stringn(out.partition_key, out.partition_key_len));
  json_object_set_new(o, "explicitHashKey", json_string(out.explicit_hash_key));
  json_object_set_new(o, "data", json_stringn_nocheck((const char *)t->b64.data, t->b64.len));
  json_object_set_new(o, "count", json_integer((json_int_t)count));
  int rc = json_dumpf(o, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(o);
  if (rc || putchar('\n') == EOF) {
    fprintf(stderr, "kp-agg-tool: writing output: %s\n", strerror(errno));
    return -1;
  }
  t->kinesis_records++;
  t->user_records += count;
  kp_agg_encoder_reset(t->enc);
  return 0;
}

/* Handles one spec line; returns 0 or -1 (message printed). */
static int add_line(tool *t, const char *line, size_t len, size_t lineno, int *grouped) {
  json_error_t jerr;
  json_t *o = json_loadb(line, len, 0, &jerr);
  if (!json_is_object(o)) {
    fprintf(stderr, "kp-agg-tool: line %zu: %s\n", lineno, o ? "not an object" : jerr.text);
    json_decref(o);
    return -1;
  }
  int rc = -1;
  json_t *jpk = json_object_get(o, "pk"), *jehk = json_object_get(o, "ehk");
  json_t *jdata = json_object_get(o, "data"), *jgroup = json_object_get(o, "group");
  if (!json_is_string(jpk) || !json_is_string(jdata) ||
      (jehk && !json_is_null(jehk) && !json_is_string(jehk))) {
    fprintf(stderr, "kp-agg-tool: line %zu: needs string pk and data, ehk string or null\n",
            lineno);
    goto out;
  }
  const char *pk = json_string_value(jpk);
  size_t pk_len = json_string_length(jpk);
  const char *ehk = json_is_string(jehk) ? json_string_value(jehk) : NULL;
  size_t ehk_len = ehk ? json_string_length(jehk) : 0;
  kp_hash_key hk;
  if (ehk ? kp_hash_key_parse(ehk, ehk_len, &hk)
          : (kp_hash_key_of_partition_key(pk, pk_len, &hk), 0)) {
    fprintf(stderr, "kp-agg-tool: line %zu: bad explicit hash key\n", lineno);
    goto out;
  }
  if (b64_decode(&t->data, json_string_value(jdata), json_string_length(jdata))) {
    fprintf(stderr, "kp-agg-tool: line %zu: data is not valid base64\n", lineno);
    goto out;
  }
  int has_group = jgroup != NULL;
  if (*grouped < 0)
    *grouped = has_group;
  if (*grouped != has_group) {
    fprintf(stderr, "kp-agg-tool: line %zu: either every record has \"group\" or none\n", lineno);
    goto out;
  }
  size_t count = kp_agg_encoder_count(t->enc);
  size_t size_with = kp_agg_encoder_size_with(t->enc, pk, pk_len, ehk, ehk_len, t->data.len) +
                     kp_agg_encoder_outer_pk_len_with(t->enc, pk_len);
  if (has_group) {
    if (count > 0 && !json_equal(t->group, jgroup)) {
      if (flush(t))
        goto out;
      size_with = kp_agg_encoder_size_with(t->enc, pk, pk_len, ehk, ehk_len, t->data.len) +
                  kp_agg_encoder_outer_pk_len_with(t->enc, pk_len);
    } else if (count > 0 && size_with > t->max_size) {
      fprintf(stderr, "kp-agg-tool: line %zu: group exceeds %zu bytes\n", lineno, t->max_size);
      goto out;
    }
    json_decref(t->group);
    t->group = json_incref(jgroup);
  } else if (count > 0 && (count >= t->max_count || size_with > t->max_size)) {
    if (flush(t))
      goto out;
  }
  if (kp_agg_encoder_add(t->enc, pk, pk_len, ehk, ehk_len, t->data.data, t->data.len, &hk)) {
    fprintf(stderr, "kp-agg-tool: line %zu: out of memory\n", lineno);
    goto out;
  }
  rc = 0;
out:
  json_decref(o);
  return rc;
}

static void usage(FILE *f) {
  fputs("usage: kp-agg-tool [--max-count N] [--max-size BYTES] < spec.jsonl\n"
        "Aggregates JSON-lines user records {pk, ehk?, data (base64), group?} into\n"
        "KPL aggregated Kinesis records {partitionKey, explicitHashKey, data, count}.\n",
        f);
}

static int parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v == 0 || v > SIZE_MAX || s[0] == '-')
    return -1;
  *out = (size_t)v;
  return 0;
}

int main(int argc, char **argv) {
  enum { O_COUNT = 256, O_SIZE };
  static const struct option longopts[] = {
      {"max-count", required_argument, NULL, O_COUNT},
      {"max-size", required_argument, NULL, O_SIZE},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  tool t = {
      .data = KP_BUF_INIT, .b64 = KP_BUF_INIT, .max_count = 500, .max_size = KINESIS_MAX_RECORD};
  int opt;
  while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (opt) {
    case O_COUNT:
    case O_SIZE:
      if (parse_size(optarg, opt == O_COUNT ? &t.max_count : &t.max_size)) {
        fprintf(stderr, "kp-agg-tool: bad value '%s'\n", optarg);
        return 2;
      }
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  t.enc = kp_agg_encoder_new();
  if (!t.enc) {
    fprintf(stderr, "kp-agg-tool: out of memory\n");
    return 1;
  }
  char *line = NULL;
  size_t cap = 0, lineno = 0;
  ssize_t n;
  int grouped = -1, rc = 0;
  while ((n = getline(&line, &cap, stdin)) > 0) {
    lineno++;
    size_t len = (size_t)n;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      len--;
    if (len == 0)
      continue;
    if (add_line(&t, line, len, lineno, &grouped)) {
      rc = 1;
      break;
    }
  }
  if (rc == 0 && ferror(stdin)) {
    fprintf(stderr, "kp-agg-tool: reading stdin: %s\n", strerror(errno));
    rc = 1;
  }
  if (rc == 0 && (flush(&t) || fflush(stdout))) {
    rc = 1;
  }
  if (rc == 0)
    fprintf(stderr, "kp-agg-tool: %llu user records -> %llu Kinesis records\n", t.user_records,
            t.kinesis_records);
  free(line);
  json_decref(t.group);
  kp_buf_free(&t.data);
  kp_buf_free(&t.b64);
  kp_agg_encoder_free(t.enc);
  return rc;
}
