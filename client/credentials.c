/* Credentials for the daemon: static ones from the configuration, then the standard
 * environment variables, then the AWS shared credentials file (INI, one section per
 * profile) — the order of the AWS SDKs' default chain, with explicit settings first. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"

static void copy(char *dst, size_t size, const char *src, size_t n) {
  if (n >= size)
    n = size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

static void setf(char *errstr, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void setf(char *errstr, size_t size, const char *fmt, ...) {
  if (!errstr || !size)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, size, fmt, ap);
  va_end(ap);
}

void kpc_creds_sources_init(kpc_creds_sources *s, const kpc_settings *cl) {
  memset(s, 0, sizeof *s);
  if (cl->aws_access_key_id[0]) {
    snprintf(s->statics.akid, sizeof s->statics.akid, "%s", cl->aws_access_key_id);
    snprintf(s->statics.secret, sizeof s->statics.secret, "%s", cl->aws_secret_access_key);
    snprintf(s->statics.token, sizeof s->statics.token, "%s", cl->aws_session_token);
    snprintf(s->statics.source, sizeof s->statics.source, "configuration");
  }
  const char *a = getenv("AWS_ACCESS_KEY_ID"), *k = getenv("AWS_SECRET_ACCESS_KEY"),
             *t = getenv("AWS_SESSION_TOKEN");
  if (a && *a && k && *k) {
    snprintf(s->env.akid, sizeof s->env.akid, "%s", a);
    snprintf(s->env.secret, sizeof s->env.secret, "%s", k);
    snprintf(s->env.token, sizeof s->env.token, "%s", t ? t : "");
    snprintf(s->env.source, sizeof s->env.source, "environment");
  }
  const char *f = cl->aws_shared_credentials_file[0] ? cl->aws_shared_credentials_file
                                                     : getenv("AWS_SHARED_CREDENTIALS_FILE");
  const char *home = getenv("HOME");
  if (f && *f)
    snprintf(s->file, sizeof s->file, "%s", f);
  else if (home && *home)
    snprintf(s->file, sizeof s->file, "%s/.aws/credentials", home);
  const char *prof = cl->aws_profile[0] ? cl->aws_profile : getenv("AWS_PROFILE");
  snprintf(s->profile, sizeof s->profile, "%s", prof && *prof ? prof : "default");
}

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  return p;
}

static const char *rtrim(const char *start, const char *end) {
  while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
    end--;
  return end;
}

/* The AWS CLI's format: "[name]" sections ("[profile name]" is the config file's form,
 * accepted too); "key = value" lines; '#' and ';' start comment lines. Keys are
 * case-insensitive in practice; values are taken verbatim after trimming. */
int kpc_creds_parse_ini(const char *text, size_t len, const char *profile, kpc_creds *out,
                        char *errstr, size_t errstr_size) {
  kpc_creds c;
  memset(&c, 0, sizeof c);
  int in_profile = 0, seen_profile = 0;
  unsigned lineno = 0;
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    lineno++;
    const char *s = skip_ws(p, le);
    const char *e = rtrim(s, le);
    p = nl ? nl + 1 : end;
    if (s == e || *s == '#' || *s == ';')
      continue;
    if (*s == '[') {
      if (e[-1] != ']') {
        setf(errstr, errstr_size, "line %u: section header without ']'", lineno);
        kpc_wipe(&c, sizeof c);
        return -1;
      }
      const char *ns = skip_ws(s + 1, e - 1), *ne = rtrim(ns, e - 1);
      if ((size_t)(ne - ns) > 8 && !strncmp(ns, "profile ", 8))
        ns = skip_ws(ns + 8, ne);
      in_profile = (size_t)(ne - ns) == strlen(profile) && !strncmp(ns, profile, (size_t)(ne - ns));
      seen_profile |= in_profile;
      continue;
    }
    const char *eq = memchr(s, '=', (size_t)(e - s));
    if (!eq) {
      setf(errstr, errstr_size, "line %u: expected key = value", lineno);
      kpc_wipe(&c, sizeof c);
      return -1;
    }
    if (!in_profile)
      continue;
    const char *ke = rtrim(s, eq), *vs = skip_ws(eq + 1, e);
    size_t kl = (size_t)(ke - s), vl = (size_t)(e - vs);
    if (kl == 17 && !strncasecmp(s, "aws_access_key_id", kl))
      copy(c.akid, sizeof c.akid, vs, vl);
    else if (kl == 21 && !strncasecmp(s, "aws_secret_access_key", kl))
      copy(c.secret, sizeof c.secret, vs, vl);
    else if (kl == 17 && !strncasecmp(s, "aws_session_token", kl))
      copy(c.token, sizeof c.token, vs, vl);
  }
  if (!seen_profile) {
    setf(errstr, errstr_size, "no profile [%s]", profile);
    return 1;
  }
  if (!c.akid[0] || !c.secret[0]) {
    setf(errstr, errstr_size, "profile [%s] lacks %s", profile,
         !c.akid[0] ? "aws_access_key_id" : "aws_secret_access_key");
    kpc_wipe(&c, sizeof c);
    return 1;
  }
  snprintf(c.source, sizeof c.source, "file, profile %.40s", profile);
  *out = c;
  kpc_wipe(&c, sizeof c);
  return 0;
}

kp_err_t kpc_creds_resolve(const kpc_creds_sources *s, kpc_creds *out, char *errstr,
                           size_t errstr_size) {
  if (s->statics.akid[0]) {
    *out = s->statics;
    return KP_ERR_NO_ERROR;
  }
  if (s->env.akid[0]) {
    *out = s->env;
    return KP_ERR_NO_ERROR;
  }
  char why[KPC_PATH_SIZE + 512] = "no file";
  if (s->file[0]) {
    FILE *f = fopen(s->file, "re");
    if (!f) {
      snprintf(why, sizeof why, "%s: %s", s->file, strerror(errno));
    } else {
      char buf[65536];
      size_t n = fread(buf, 1, sizeof buf, f);
      fclose(f);
      char perr[200];
      int rc = kpc_creds_parse_ini(buf, n, s->profile, out, perr, sizeof perr);
      kpc_wipe(buf, n);
      if (rc == 0)
        return KP_ERR_NO_ERROR;
      snprintf(why, sizeof why, "%s: %s", s->file, perr);
    }
  }
  setf(errstr, errstr_size,
       "no AWS credentials: AwsAccessKeyId/AwsSecretAccessKey not set, AWS_ACCESS_KEY_ID/"
       "AWS_SECRET_ACCESS_KEY not in the environment, and %s",
       why);
  return KP_ERR__NO_CREDENTIALS;
}

int kpc_creds_equal(const kpc_creds *a, const kpc_creds *b) {
  return !strcmp(a->akid, b->akid) && !strcmp(a->secret, b->secret) && !strcmp(a->token, b->token);
}
