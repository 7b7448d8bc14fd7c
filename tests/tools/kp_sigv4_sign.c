/* Test tool: prints the SigV4 headers our signer produces for one request, so that
 * tests/integration/test_sigv4_botocore.py can compare them with botocore's.
 *
 *   AWS_ACCESS_KEY_ID=.. AWS_SECRET_ACCESS_KEY=.. [AWS_SESSION_TOKEN=..] \
 *   kp-sigv4-sign --host H --region R --service S --time EPOCH [--method POST]
 *                 [--path /] [--query Q] [--header 'Name: value']... [--body-file F]
 *                 [--sign-content-sha256]
 *
 * Credentials come from the environment, not argv, so they never show in `ps`.
 * Output: one "Name: value" line per header to add to the request. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "producer/sigv4.h"

#define MAX_HEADERS 32

static int read_file(const char *path, kp_buf *out) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return -errno;
  char tmp[65536];
  size_t n;
  int rc = 0;
  while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
    if (kp_buf_append(out, tmp, n)) {
      rc = -ENOMEM;
      break;
    }
  if (ferror(f))
    rc = -EIO;
  fclose(f);
  return rc;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"method", required_argument, NULL, 'm'},
                                       {"host", required_argument, NULL, 'H'},
                                       {"path", required_argument, NULL, 'p'},
                                       {"query", required_argument, NULL, 'q'},
                                       {"region", required_argument, NULL, 'r'},
                                       {"service", required_argument, NULL, 's'},
                                       {"time", required_argument, NULL, 't'},
                                       {"header", required_argument, NULL, 'h'},
                                       {"body-file", required_argument, NULL, 'b'},
                                       {"sign-content-sha256", no_argument, NULL, 'c'},
                                       {NULL, 0, NULL, 0}};
  kp_sigv4_request req = {.method = "POST", .path = "/"};
  kp_sigv4_header headers[MAX_HEADERS];
  char *header_store[MAX_HEADERS];
  size_t nh = 0;
  const char *region = NULL, *service = NULL, *body_file = NULL;
  long long when = -1;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'm':
      req.method = optarg;
      break;
    case 'H':
      req.host = optarg;
      break;
    case 'p':
      req.path = optarg;
      break;
    case 'q':
      req.query = optarg;
      break;
    case 'r':
      region = optarg;
      break;
    case 's':
      service = optarg;
      break;
    case 't':
      when = strtoll(optarg, NULL, 10);
      break;
    case 'b':
      body_file = optarg;
      break;
    case 'c':
      req.sign_content_sha256 = true;
      break;
    case 'h': {
      char *colon = strchr(optarg, ':');
      if (!colon || nh == MAX_HEADERS) {
        fprintf(stderr, "bad or too many --header: %s\n", optarg);
        return 2;
      }
      char *copy = strdup(optarg);
      if (!copy)
        return 1;
      copy[colon - optarg] = '\0';
      header_store[nh] = copy;
      headers[nh].name = copy;
      headers[nh].value = copy + (colon - optarg) + 1;
      while (*headers[nh].value == ' ')
        headers[nh].value++;
      nh++;
      break;
    }
    default:
      return 2;
    }
  }
  if (!req.host || !region || !service || when < 0) {
    fprintf(stderr, "usage: see the comment at the top of kp_sigv4_sign.c\n");
    return 2;
  }
  kp_buf body = KP_BUF_INIT;
  if (body_file) {
    int rc = read_file(body_file, &body);
    if (rc) {
      fprintf(stderr, "%s: %s\n", body_file, strerror(-rc));
      return 1;
    }
  }
  req.headers = headers;
  req.n_headers = nh;
  req.payload = body.data;
  req.payload_len = body.len;

  kp_sigv4_signer *s = kp_sigv4_signer_new();
  if (!s)
    return 1;
  int rc = kp_sigv4_signer_set_credentials(
      s, getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"), getenv("AWS_SESSION_TOKEN"));
  if (rc) {
    fprintf(stderr, "credentials: %s\n", strerror(-rc));
    return 1;
  }
  kp_sigv4_result res;
  char err[256] = "";
  rc = kp_sigv4_sign(s, &req, region, service, (time_t)when, &res, err, sizeof err);
  if (rc) {
    fprintf(stderr, "sign: %s (%s)\n", err, strerror(-rc));
  } else {
    printf("Authorization: %s\n", res.authorization);
    printf("X-Amz-Date: %s\n", res.amz_date);
    if (res.content_sha256[0])
      printf("X-Amz-Content-SHA256: %s\n", res.content_sha256);
    if (res.security_token)
      printf("X-Amz-Security-Token: %s\n", res.security_token);
  }
  kp_sigv4_result_free(&res);
  kp_sigv4_signer_free(s);
  kp_buf_free(&body);
  for (size_t i = 0; i < nh; i++)
    free(header_store[i]);
  return rc ? 1 : 0;
}
