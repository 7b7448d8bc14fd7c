// KP_TEST_LIBS: kp_format kp_proto PkgConfig::JANSSON OpenSSL::Crypto
/* Runs the built kpl-deagg ($KP_BIN_DIR/kpl-deagg) on aggregates made with the
 * protobuf-c oracle and checks its JSON lines, messages and exit codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "format/hash_key.h"
#include "proto/aggregated_record.pb-c.h"

extern char **environ;

static char g_dir[256];
static char g_bin[512];

typedef struct urec {
  const char *pk;
  const char *ehk;
  const char *data;
} urec;

/* An aggregate of u[0..n): keys interned in order of first appearance. */
static void build_agg(kp_buf *out, const urec *u, size_t n, uint64_t bad_pk_index_for_last) {
  Kpl__Agg__AggregatedRecord ar = KPL__AGG__AGGREGATED_RECORD__INIT;
  char *pks[16], *ehks[16];
  Kpl__Agg__Record recs[16], *rp[16];
  assert_true(n <= 16);
  ar.partition_key_table = pks;
  ar.explicit_hash_key_table = ehks;
  for (size_t i = 0; i < n; i++) {
    Kpl__Agg__Record r = KPL__AGG__RECORD__INIT;
    size_t j;
    for (j = 0; j < ar.n_partition_key_table && strcmp(pks[j], u[i].pk); j++)
      ;
    if (j == ar.n_partition_key_table)
      pks[ar.n_partition_key_table++] = (char *)u[i].pk;
    r.partition_key_index = j;
    if (u[i].ehk) {
      for (j = 0; j < ar.n_explicit_hash_key_table && strcmp(ehks[j], u[i].ehk); j++)
        ;
      if (j == ar.n_explicit_hash_key_table)
        ehks[ar.n_explicit_hash_key_table++] = (char *)u[i].ehk;
      r.has_explicit_hash_key_index = 1;
      r.explicit_hash_key_index = j;
    }
    r.data.data = (uint8_t *)u[i].data;
    r.data.len = strlen(u[i].data);
    recs[i] = r;
    rp[i] = &recs[i];
  }
  if (bad_pk_index_for_last)
    recs[n - 1].partition_key_index = bad_pk_index_for_last;
  ar.n_records = n;
  ar.records = rp;
  size_t sz = kpl__agg__aggregated_record__get_packed_size(&ar);
  kp_buf_reset(out);
  kp_buf_reserve(out, 4 + sz + 16);
  memcpy(out->data, "\xF3\x89\x9A\xC2", 4);
  kpl__agg__aggregated_record__pack(&ar, out->data + 4);
  kp_md5(out->data + 4, sz, out->data + 4 + sz);
  out->len = 4 + sz + 16;
}

static const char *write_file(const char *name, const void *p, size_t n) {
  static char path[8][512];
  static int slot;
  char *dst = path[slot++ % 8];
  snprintf(dst, 512, "%s/%s", g_dir, name);
  FILE *f = fopen(dst, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(p, 1, n, f), n);
  fclose(f);
  return dst;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  kp_buf b = KP_BUF_INIT;
  char tmp[4096];
  size_t n;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
    kp_buf_append(&b, tmp, n);
  kp_buf_append(&b, "", 1);
  fclose(f);
  return (char *)b.data;
}

typedef struct run_result {
  int status;
  char *out, *err;
} run_result;

static void run_free(run_result *r) {
  free(r->out);
  free(r->err);
}

/* Runs kpl-deagg with argv (NULL-terminated, without argv[0]) and stdin from
 * `in` (n bytes). Output goes through files so no pipe can deadlock. */
static run_result run(const char *const *args, const void *in, size_t n) {
  char inp[512], outp[512], errp[512];
  snprintf(inp, sizeof inp, "%s/stdin", g_dir);
  snprintf(outp, sizeof outp, "%s/stdout", g_dir);
  snprintf(errp, sizeof errp, "%s/stderr", g_dir);
  FILE *f = fopen(inp, "wb");
  assert_non_null(f);
  if (n)
    fwrite(in, 1, n, f);
  fclose(f);
  char *argv[32];
  int argc = 0;
  argv[argc++] = g_bin;
  for (; args[argc - 1]; argc++)
    argv[argc] = (char *)args[argc - 1];
  argv[argc] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, inp, O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid;
  assert_int_equal(posix_spawn(&pid, g_bin, &fa, NULL, argv, environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  run_result r = {WEXITSTATUS(st), slurp(outp), slurp(errp)};
  return r;
}

static char *b64(const void *p, size_t n) {
  char *s = malloc(n / 3 * 4 + 8);
  EVP_EncodeBlock((unsigned char *)s, p, (int)n);
  return s;
}

static void hash_key_dec(const char *pk, const char *ehk, char out[KP_HASH_KEY_DEC_MAX]) {
  kp_hash_key k;
  if (ehk)
    kp_hash_key_parse(ehk, strlen(ehk), &k);
  else
    kp_hash_key_of_partition_key(pk, strlen(pk), &k);
  kp_hash_key_format(&k, out);
}

/* Checks one output line against the expected user record. */
static void check_line(const char *line, const char *pk, const char *ehk, const char *seq,
                       long long sub, const void *data, size_t len) {
  json_error_t e;
  json_t *o = json_loads(line, 0, &e);
  if (!o)
    fail_msg("bad JSON line: %s (%s)", line, e.text);
  static const char *order[] = {"partitionKey",   "explicitHashKey",   "hashKey",
                                "sequenceNumber", "subSequenceNumber", "data"};
  void *it = json_object_iter(o);
  for (size_t i = 0; i < 6; i++, it = json_object_iter_next(o, it)) {
    assert_non_null(it);
    assert_string_equal(json_object_iter_key(it), order[i]);
  }
  assert_null(it);
  assert_string_equal(json_string_value(json_object_get(o, "partitionKey")), pk);
  if (ehk)
    assert_string_equal(json_string_value(json_object_get(o, "explicitHashKey")), ehk);
  else
    assert_true(json_is_null(json_object_get(o, "explicitHashKey")));
  char hk[KP_HASH_KEY_DEC_MAX];
  hash_key_dec(pk, ehk, hk);
  assert_string_equal(json_string_value(json_object_get(o, "hashKey")), hk);
  assert_string_equal(json_string_value(json_object_get(o, "sequenceNumber")), seq);
  assert_int_equal(json_integer_value(json_object_get(o, "subSequenceNumber")), sub);
  char *d = b64(data, len);
  assert_string_equal(json_string_value(json_object_get(o, "data")), d);
  free(d);
  json_decref(o);
}

/* Splits output into lines (modifies s); returns the count. */
static size_t lines(char *s, char **out, size_t max) {
  size_t n = 0;
  for (char *save = NULL, *t = strtok_r(s, "\n", &save); t && n < max;
       t = strtok_r(NULL, "\n", &save))
    out[n++] = t;
  return n;
}

static const urec three[] = {
    {"ключ", NULL, "first"}, {"b", "12345", "second"}, {"ключ", NULL, "third"}};

static void raw_file_aggregate_prints_one_line_per_user_record(void **state) {
  kp_buf b = KP_BUF_INIT;
  build_agg(&b, three, 3, 0);
  const char *f = write_file("agg.bin", b.data, b.len);
  const char *args[] = {"--sequence-number", "4955", "--partition-key", "a", f, NULL};
  run_result r = run(args, NULL, 0);
  assert_int_equal(r.status, 0);
  char *l[8];
  assert_int_equal(lines(r.out, l, 8), 3);
  for (int i = 0; i < 3; i++)
    check_line(l[i], three[i].pk, three[i].ehk, "4955", i, three[i].data, strlen(three[i].data));
  run_free(&r);
  kp_buf_free(&b);
}

static void raw_stdin_plain_record_passes_through_with_flags(void **state) {
  const char data[] = "plain\0data";
  const char *args[] = {"--partition-key", "pk1", "--explicit-hash-key", "99", NULL};
  run_result r = run(args, data, sizeof data);
  assert_int_equal(r.status, 0);
  char *l[4];
  assert_int_equal(lines(r.out, l, 4), 1);
  check_line(l[0], "pk1", "99", "0", 0, data, sizeof data);
  run_free(&r);
}

static void base64_lines_from_stdin_and_files(void **state) {
  kp_buf b = KP_BUF_INIT, in = KP_BUF_INIT;
  build_agg(&b, three, 3, 0);
  char *a = b64(b.data, b.len), *p = b64("xy", 2);
  kp_buf_append_str(&in, a);
  kp_buf_append_str(&in, "\r\n\n");
  kp_buf_append_str(&in, p);
  kp_buf_append_str(&in, "\n");
  for (int from_file = 0; from_file < 2; from_file++) {
    const char *f = write_file("in.b64", in.data, in.len);
    const char *args[] = {"--base64", "--partition-key", "outer", from_file ? f : NULL, NULL};
    run_result r = from_file ? run(args, NULL, 0) : run(args, in.data, in.len);
    assert_int_equal(r.status, 0);
    char *l[8];
    assert_int_equal(lines(r.out, l, 8), 4);
    for (int i = 0; i < 3; i++)
      check_line(l[i], three[i].pk, three[i].ehk, "0", i, three[i].data, strlen(three[i].data));
    check_line(l[3], "outer", NULL, "0", 0, "xy", 2);
    run_free(&r);
  }
  free(a);
  free(p);
  kp_buf_free(&b);
  kp_buf_free(&in);
}

static char *get_records_json(const kp_buf *agg, const char *plain) {
  json_t *recs = json_array();
  char *a = b64(agg->data, agg->len), *p = b64(plain, strlen(plain));
  json_array_append_new(recs, json_pack("{s:s,s:s,s:s,s:s,s:s}", "SequenceNumber", "111",
                                        "ApproximateArrivalTimestamp", "2026-11-22T00:00:00Z",
                                        "Data", a, "PartitionKey", "a", "EncryptionType", "NONE"));
  json_array_append_new(recs, json_pack("{s:s,s:s,s:s,s:s}", "SequenceNumber", "222", "Data", p,
                                        "PartitionKey", "plainpk", "ExplicitHashKey", "7"));
  json_t *root = json_pack("{s:o,s:s,s:i}", "Records", recs, "NextShardIterator", "AAA",
                           "MillisBehindLatest", 0);
  char *s = json_dumps(root, JSON_INDENT(2));
  json_decref(root);
  free(a);
  free(p);
  return s;
}

static void json_get_records_output_is_deaggregated(void **state) {
  kp_buf b = KP_BUF_INIT;
  build_agg(&b, three, 3, 0);
  char *js = get_records_json(&b, "raw!");
  const char *args[] = {"--json", NULL};
  run_result r = run(args, js, strlen(js));
  assert_int_equal(r.status, 0);
  char *l[8];
  assert_int_equal(lines(r.out, l, 8), 4);
  for (int i = 0; i < 3; i++)
    check_line(l[i], three[i].pk, three[i].ehk, "111", i, three[i].data, strlen(three[i].data));
  check_line(l[3], "plainpk", "7", "222", 0, "raw!", 4);
  run_free(&r);
  free(js);
  kp_buf_free(&b);
}

static void corrupt_aggregate_lenient_passes_through_strict_exits_1(void **state) {
  kp_buf b = KP_BUF_INIT;
  static const urec u[] = {{"a", NULL, "0"}, {"b", NULL, "1"}, {"a", NULL, "2"}, {"b", NULL, "3"}};
  build_agg(&b, u, 4, 7);
  const char *f = write_file("bad.bin", b.data, b.len);
  const char *lenient[] = {"--partition-key", "outer", f, NULL};
  run_result r = run(lenient, NULL, 0);
  assert_int_equal(r.status, 0);
  char *l[4];
  assert_int_equal(lines(r.out, l, 4), 1);
  check_line(l[0], "outer", NULL, "0", 0, b.data, b.len);
  assert_non_null(strstr(r.err, "warning"));
  run_free(&r);

  const char *strict[] = {"--strict", f, NULL};
  r = run(strict, NULL, 0);
  assert_int_equal(r.status, 1);
  assert_string_equal(r.out, "");
  assert_non_null(strstr(r.err, "bad.bin"));
  assert_non_null(strstr(r.err, "record 3: partition_key_index 7 out of range (table has 2)"));
  run_free(&r);

  /* base64: names the line; json: names the record index. */
  kp_buf in = KP_BUF_INIT;
  char *p = b64("ok", 2), *a = b64(b.data, b.len);
  kp_buf_append_str(&in, p);
  kp_buf_append_str(&in, "\n");
  kp_buf_append_str(&in, a);
  kp_buf_append_str(&in, "\n");
  const char *sb[] = {"--strict", "--base64", NULL};
  r = run(sb, in.data, in.len);
  assert_int_equal(r.status, 1);
  assert_non_null(strstr(r.err, "<stdin>:2"));
  assert_non_null(strstr(r.err, "out of range"));
  run_free(&r);

  char *js = get_records_json(&b, "plain");
  const char *sj[] = {"--strict", "--json", NULL};
  r = run(sj, js, strlen(js));
  assert_int_equal(r.status, 1);
  assert_non_null(strstr(r.err, "Records[0]"));
  run_free(&r);
  const char *lj[] = {"--json", NULL};
  r = run(lj, js, strlen(js));
  assert_int_equal(r.status, 0);
  assert_int_equal(lines(r.out, l, 4), 2);
  check_line(l[0], "a", NULL, "111", 0, b.data, b.len);
  run_free(&r);
  free(js);
  free(p);
  free(a);
  kp_buf_free(&in);
  kp_buf_free(&b);
}

static void hash_range_keeps_only_records_inside_inclusive(void **state) {
  static const urec u[] = {
      {"a", "9", "0"}, {"a", "10", "1"}, {"a", "15", "2"}, {"a", "20", "3"}, {"a", "21", "4"}};
  kp_buf b = KP_BUF_INIT;
  build_agg(&b, u, 5, 0);
  const char *args[] = {"--hash-range", "10:20", NULL};
  run_result r = run(args, b.data, b.len);
  assert_int_equal(r.status, 0);
  char *l[8];
  assert_int_equal(lines(r.out, l, 8), 3);
  for (int i = 0; i < 3; i++)
    check_line(l[i], "a", u[i + 1].ehk, "0", i + 1, u[i + 1].data, 1);
  run_free(&r);
  kp_buf_free(&b);
}

static void usage_and_input_errors_exit_2(void **state) {
  const char *bad_json = "{\"Records\": [";
  const char *no_data = "{\"Records\": [{\"PartitionKey\": \"a\"}]}";
  const char *bad_b64_in_json = "{\"Records\": [{\"Data\": \"@@@@\", \"PartitionKey\": \"a\"}]}";
  struct {
    const char *args[6];
    const char *in;
  } cases[] = {
      {{"--bogus", NULL}, ""},
      {{"/nonexistent/file", NULL}, ""},
      {{"--base64", NULL}, "not base64!\n"},
      {{"--base64", NULL}, "QUJD=\n"},
      {{"--json", NULL}, bad_json},
      {{"--json", NULL}, no_data},
      {{"--json", NULL}, bad_b64_in_json},
      {{"--json", NULL}, "[1,2]"},
      {{"--hash-range", "20:10", NULL}, "x"},
      {{"--hash-range", "10", NULL}, "x"},
      {{"--hash-range", "1:340282366920938463463374607431768211456", NULL}, "x"},
      {{"--hash-range", "a:b", NULL}, "x"},
      {{"--explicit-hash-key", "-5", NULL}, "x"},
      {{"--base64", "--json", NULL}, ""},
      {{"--partition-key", NULL}, ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    run_result r = run(cases[i].args, cases[i].in, strlen(cases[i].in));
    if (r.status != 2)
      fail_msg("case %zu (%s): exit %d, stderr: %s", i, cases[i].args[0], r.status, r.err);
    assert_string_not_equal(r.err, "");
    run_free(&r);
  }
  const char *help[] = {"--help", NULL};
  run_result r = run(help, NULL, 0);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "usage: kpl-deagg"));
  run_free(&r);
}

static int setup(void **state) {
  const char *bin = getenv("KP_BIN_DIR");
  if (!bin) {
    fprintf(stderr, "KP_BIN_DIR is not set (run through ctest)\n");
    return -1;
  }
  snprintf(g_bin, sizeof g_bin, "%s/kpl-deagg", bin);
  if (access(g_bin, X_OK)) {
    fprintf(stderr, "%s is not built\n", g_bin);
    return -1;
  }
  snprintf(g_dir, sizeof g_dir, "/tmp/test_kpl_deagg_cli.XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
  const char *names[] = {"agg.bin", "bad.bin", "in.b64", "stdin", "stdout", "stderr"};
  char p[512];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf(p, sizeof p, "%s/%s", g_dir, names[i]);
    unlink(p);
  }
  rmdir(g_dir);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(raw_file_aggregate_prints_one_line_per_user_record),
      cmocka_unit_test(raw_stdin_plain_record_passes_through_with_flags),
      cmocka_unit_test(base64_lines_from_stdin_and_files),
      cmocka_unit_test(json_get_records_output_is_deaggregated),
      cmocka_unit_test(corrupt_aggregate_lenient_passes_through_strict_exits_1),
      cmocka_unit_test(hash_range_keeps_only_records_inside_inclusive),
      cmocka_unit_test(usage_and_input_errors_exit_2),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
