/* kp_conf_t: the KPL settings live in common/config's property table (kp_config); the
 * keys only the client uses live in a second, smaller table here with the same shape
 * (name, alias, type, default, range, description). kp_conf_set tries the client table
 * first, so wrapper-side KPL keys that common/config accepts and ignores
 * (CredentialsRefreshDelay, NativeExecutable, MaxUserRecordSize) take effect here. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client/client_int.h"

#ifndef KP_CLIENT_DEFAULT_DAEMON
#define KP_CLIENT_DEFAULT_DAEMON "kinesis_producer"
#endif

typedef enum { CT_UINT, CT_STRING, CT_ENUM } ctype;

typedef struct cprop {
  const char *name, *alias;
  ctype type;
  const char *def;
  uint64_t min, max; /* UINT: range; STRING: max length in bytes */
  const char *const *enums;
  size_t offset, size;
  int secret;
  const char *desc;
} cprop;

static const char *const death_names[] = {"replay", "fail", NULL};
static const char *const delivery_names[] = {"poll", "background", NULL};
static const char *const bool_names[] = {"false", "true", NULL};

#define CF(f) offsetof(kpc_settings, f), sizeof(((kpc_settings *)0)->f)
#define U63 INT64_MAX
#define MS_MAX 86400000u

/* Documented in docs/client.md; keep the two in step. */
static const cprop cprops[] = {
    {"NativeExecutable", "native_executable", CT_STRING, "", 0, KPC_PATH_SIZE - 1, NULL,
     CF(native_executable), 0,
     "Path of the kinesis_producer daemon; empty: $KP_DAEMON_PATH, else the build's."},
    {"MaxOutstandingRecords", "max_outstanding_records", CT_UINT, "100000", 1, U63, NULL,
     CF(max_outstanding_records), 0, "Most records accepted and not yet given their result."},
    {"MaxOutstandingBytes", "max_outstanding_bytes", CT_UINT, "67108864", 1024, U63, NULL,
     CF(max_outstanding_bytes), 0, "Most data bytes held for records without a result."},
    {"PutBlockTimeout", "put_block_timeout", CT_UINT, "60000", 0, MS_MAX, NULL,
     CF(put_block_timeout), 0, "How long a KP_PUT_F_BLOCK put waits for room, in ms."},
    {"MaxUserRecordSize", "max_user_record_size", CT_UINT, "1048576", 1, 1048576, NULL,
     CF(max_user_record_size), 0, "Largest record data accepted by put, in bytes."},
    {"DaemonDeathPolicy", "daemon_death_policy", CT_ENUM, "replay", 0, 0, death_names,
     CF(daemon_death_policy), 0,
     "When the daemon dies: replay unacknowledged records to its successor, or fail them."},
    {"DaemonRestartBackoffMin", "daemon_restart_backoff_min", CT_UINT, "100", 1, MS_MAX, NULL,
     CF(daemon_restart_backoff_min), 0, "First restart delay, in ms; doubles per quick death."},
    {"DaemonRestartBackoffMax", "daemon_restart_backoff_max", CT_UINT, "30000", 1, MS_MAX, NULL,
     CF(daemon_restart_backoff_max), 0, "Longest restart delay, in ms."},
    {"DaemonShutdownTimeout", "daemon_shutdown_timeout", CT_UINT, "10000", 1, MS_MAX, NULL,
     CF(daemon_shutdown_timeout), 0, "How long close waits for the daemon to exit before SIGKILL."},
    {"ResultDelivery", "result_delivery", CT_ENUM, "poll", 0, 0, delivery_names,
     CF(result_delivery), 0,
     "poll: callbacks run in kp_producer_poll(); background: on a library thread."},
    {"SharedMemory", "shared_memory", CT_ENUM, "true", 0, 0, bool_names, CF(shared_memory), 0,
     "Record data reaches the daemon through a shared memory file instead of its socket."},
    {"CredentialsRefreshDelay", "credentials_refresh_delay", CT_UINT, "5000", 10, MS_MAX, NULL,
     CF(credentials_refresh_delay), 0, "How often credentials are re-read, in ms."},
    {"AwsAccessKeyId", "aws_access_key_id", CT_STRING, "", 0, KPC_NAME_SIZE - 1, NULL,
     CF(aws_access_key_id), 0, "Static credentials (with AwsSecretAccessKey)."},
    {"AwsSecretAccessKey", "aws_secret_access_key", CT_STRING, "", 0, KPC_NAME_SIZE - 1, NULL,
     CF(aws_secret_access_key), 1, "Static credentials: the secret."},
    {"AwsSessionToken", "aws_session_token", CT_STRING, "", 0, KPC_CRED_SIZE - 1, NULL,
     CF(aws_session_token), 1, "Static credentials: the optional session token."},
    {"AwsProfile", "aws_profile", CT_STRING, "", 0, KPC_NAME_SIZE - 1, NULL, CF(aws_profile), 0,
     "Shared-file profile; empty: $AWS_PROFILE, else \"default\"."},
    {"AwsSharedCredentialsFile", "aws_shared_credentials_file", CT_STRING, "", 0, KPC_PATH_SIZE - 1,
     NULL, CF(aws_shared_credentials_file), 0,
     "Shared credentials file; empty: $AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials."},
};
#define NCPROPS (sizeof cprops / sizeof cprops[0])

static kp_err_t fail(char *errstr, size_t size, kp_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kp_err_t fail(char *errstr, size_t size, kp_err_t err, const char *fmt, ...) {
  if (errstr && size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
  }
  return err;
}

static const cprop *cfind(const char *name) {
  for (size_t i = 0; i < NCPROPS; i++)
    if (!strcmp(cprops[i].name, name) || !strcmp(cprops[i].alias, name))
      return &cprops[i];
  return NULL;
}

static kp_err_t cset(kpc_settings *s, const cprop *p, const char *v, char *errstr, size_t size) {
  char *field = (char *)s + p->offset;
  switch (p->type) {
  case CT_UINT: {
    uint64_t n = 0;
    int ok = *v != '\0';
    for (const char *q = v; *q && ok; q++) {
      if (*q < '0' || *q > '9' || n > (UINT64_MAX - 9) / 10)
        ok = 0;
      else
        n = n * 10 + (uint64_t)(*q - '0');
    }
    if (!ok)
      return fail(errstr, size, KP_ERR__INVALID_CONF,
                  "%s: \"%.40s\" is not a decimal number (allowed %" PRIu64 "..%" PRIu64 ")",
                  p->name, v, p->min, p->max);
    if (n < p->min || n > p->max)
      return fail(errstr, size, KP_ERR__INVALID_CONF,
                  "%s: %" PRIu64 " is out of range %" PRIu64 "..%" PRIu64, p->name, n, p->min,
                  p->max);
    memcpy(field, &n, sizeof n);
    return KP_ERR_NO_ERROR;
  }
  case CT_ENUM:
    for (int i = 0; p->enums[i]; i++)
      if (!strcasecmp(p->enums[i], v)) {
        memcpy(field, &i, sizeof i);
        return KP_ERR_NO_ERROR;
      }
    return fail(errstr, size, KP_ERR__INVALID_CONF, "%s: \"%.40s\" is not one of %s, %s", p->name,
                v, p->enums[0], p->enums[1]);
  case CT_STRING: {
    size_t n = strlen(v);
    if (n > p->max)
      return fail(errstr, size, KP_ERR__INVALID_CONF, "%s: value is %zu bytes, limit is %" PRIu64,
                  p->name, n, p->max);
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
        return fail(errstr, size, KP_ERR__INVALID_CONF, "%s: control character at byte %zu",
                    p->name, i);
    memcpy(field, v, n + 1);
    return KP_ERR_NO_ERROR;
  }
  }
  return KP_ERR__INVALID_CONF;
}

kp_conf_t *kp_conf_new(void) {
  kp_conf_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  kp_config_init(&c->cfg);
  /* This library understands PutRecordResultBatch; the daemon's default (false) is for
   * the KPL's wrapper, which does not. */
  c->cfg.result_batches = true;
  for (size_t i = 0; i < NCPROPS; i++)
    cset(&c->cl, &cprops[i], cprops[i].def, NULL, 0); /* defaults are valid by construction */
  return c;
}

kp_conf_t *kp_conf_dup(const kp_conf_t *conf) {
  if (!conf)
    return NULL;
  kp_conf_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  kp_config_init(&c->cfg);
  if (kp_config_copy(&c->cfg, &conf->cfg) != KP_CONF_OK) {
    kp_config_free(&c->cfg);
    free(c);
    return NULL;
  }
  c->cl = conf->cl;
  c->result_cb = conf->result_cb;
  c->log_cb = conf->log_cb;
  c->opaque = conf->opaque;
  return c;
}

void kp_conf_destroy(kp_conf_t *conf) {
  if (!conf)
    return;
  kp_config_free(&conf->cfg);
  kpc_wipe(conf, sizeof *conf);
  free(conf);
}

kp_err_t kp_conf_set(kp_conf_t *conf, const char *name, const char *value, char *errstr,
                     size_t errstr_size) {
  if (!conf || !name || !value)
    return fail(errstr, errstr_size, KP_ERR__INVALID_ARG, "kp_conf_set: NULL %s",
                !conf   ? "conf"
                : !name ? "name"
                        : "value");
  const cprop *cp = cfind(name);
  if (cp)
    return cset(&conf->cl, cp, value, errstr, errstr_size);
  switch (kp_config_set(&conf->cfg, name, value, errstr, errstr_size)) {
  case KP_CONF_OK:
    return KP_ERR_NO_ERROR;
  case KP_CONF_UNKNOWN:
    return KP_ERR__UNKNOWN_CONF;
  case KP_CONF_NOMEM:
    return KP_ERR__NOMEM;
  default:
    return KP_ERR__INVALID_CONF;
  }
}

kp_err_t kp_conf_get(const kp_conf_t *conf, const char *name, char *out, size_t out_size) {
  if (!conf || !name || !out || !out_size)
    return KP_ERR__INVALID_ARG;
  const cprop *p = cfind(name);
  if (!p)
    return kp_config_get(&conf->cfg, name, out, out_size) < 0 ? KP_ERR__UNKNOWN_CONF
                                                              : KP_ERR_NO_ERROR;
  const char *field = (const char *)&conf->cl + p->offset;
  switch (p->type) {
  case CT_UINT: {
    uint64_t n;
    memcpy(&n, field, sizeof n);
    snprintf(out, out_size, "%" PRIu64, n);
    break;
  }
  case CT_ENUM: {
    int i;
    memcpy(&i, field, sizeof i);
    snprintf(out, out_size, "%s", p->enums[i]);
    break;
  }
  case CT_STRING:
    snprintf(out, out_size, "%s", field);
    break;
  }
  return KP_ERR_NO_ERROR;
}

static char *trim(char *s, char *end) {
  while (s < end && (*s == ' ' || *s == '\t' || *s == '\f'))
    s++;
  while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\f' || end[-1] == '\r'))
    end--;
  *end = '\0';
  return s;
}

/* Same line syntax as kp_config_parse_properties (common/config.h): "key = value",
 * "key: value", "key value"; '#'/'!' comments. Re-parsed here because a file mixes KPL
 * keys with client keys, which common/config would reject as unknown. */
kp_err_t kp_conf_load_properties(kp_conf_t *conf, const char *path, char *errstr,
                                 size_t errstr_size) {
  if (!conf || !path)
    return fail(errstr, errstr_size, KP_ERR__INVALID_ARG, "kp_conf_load_properties: NULL %s",
                !conf ? "conf" : "path");
  FILE *f = fopen(path, "re");
  if (!f)
    return fail(errstr, errstr_size, KP_ERR__IO, "%s: %s", path, strerror(errno));
  kp_conf_t *tmp = kp_conf_dup(conf); /* all or nothing */
  if (!tmp) {
    fclose(f);
    return fail(errstr, errstr_size, KP_ERR__NOMEM, "out of memory");
  }
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  unsigned lineno = 0;
  kp_err_t err = KP_ERR_NO_ERROR;
  while (err == KP_ERR_NO_ERROR && (n = getline(&line, &cap, f)) >= 0) {
    lineno++;
    if (n > 0 && line[n - 1] == '\n')
      line[--n] = '\0';
    char *s = trim(line, line + n);
    if (!*s || *s == '#' || *s == '!')
      continue;
    char *k_end = s + strcspn(s, "=: \t\f");
    char *v = k_end;
    while (*v == ' ' || *v == '\t' || *v == '\f')
      v++;
    if (*v == '=' || *v == ':')
      v++;
    *k_end = '\0';
    v = trim(v, v + strlen(v));
    char why[400];
    err = kp_conf_set(tmp, s, v, why, sizeof why);
    if (err != KP_ERR_NO_ERROR)
      fail(errstr, errstr_size, err, "%s:%u: %s", path, lineno, why);
  }
  if (err == KP_ERR_NO_ERROR && ferror(f))
    err = fail(errstr, errstr_size, KP_ERR__IO, "%s: read error", path);
  free(line);
  fclose(f);
  if (err == KP_ERR_NO_ERROR) {
    kp_config_free(&conf->cfg);
    conf->cfg = tmp->cfg; /* moves the dimension list; tmp's copy is not freed */
    conf->cl = tmp->cl;
    kpc_wipe(tmp, sizeof *tmp);
    free(tmp);
  } else {
    kp_conf_destroy(tmp);
  }
  return err;
}

void kp_conf_set_result_cb(kp_conf_t *conf, kp_result_cb_t *cb) {
  if (conf)
    conf->result_cb = cb;
}

void kp_conf_set_log_cb(kp_conf_t *conf, kp_log_cb_t *cb) {
  if (conf)
    conf->log_cb = cb;
}

void kp_conf_set_opaque(kp_conf_t *conf, void *opaque) {
  if (conf)
    conf->opaque = opaque;
}

kp_err_t kpc_conf_validate(const kp_conf_t *conf, char *errstr, size_t errstr_size) {
  if (kp_config_validate(&conf->cfg, errstr, errstr_size) != KP_CONF_OK)
    return KP_ERR__INVALID_CONF;
  const kpc_settings *s = &conf->cl;
  if (s->daemon_restart_backoff_min > s->daemon_restart_backoff_max)
    return fail(errstr, errstr_size, KP_ERR__INVALID_CONF,
                "DaemonRestartBackoffMin (%" PRIu64 ") is above DaemonRestartBackoffMax (%" PRIu64
                ")",
                s->daemon_restart_backoff_min, s->daemon_restart_backoff_max);
  if (!s->aws_access_key_id[0] != !s->aws_secret_access_key[0])
    return fail(errstr, errstr_size, KP_ERR__INVALID_CONF,
                "AwsAccessKeyId and AwsSecretAccessKey must be set together");
  if (s->aws_session_token[0] && !s->aws_access_key_id[0])
    return fail(errstr, errstr_size, KP_ERR__INVALID_CONF,
                "AwsSessionToken needs AwsAccessKeyId and AwsSecretAccessKey");
  if (s->max_user_record_size > s->max_outstanding_bytes)
    return fail(errstr, errstr_size, KP_ERR__INVALID_CONF,
                "MaxUserRecordSize (%" PRIu64 ") is above MaxOutstandingBytes (%" PRIu64
                "): such a record could never be accepted",
                s->max_user_record_size, s->max_outstanding_bytes);
  return KP_ERR_NO_ERROR;
}

const char *kpc_daemon_path(const kp_conf_t *conf) {
  if (conf->cl.native_executable[0])
    return conf->cl.native_executable;
  const char *env = getenv("KP_DAEMON_PATH");
  if (env && *env)
    return env;
  return KP_CLIENT_DEFAULT_DAEMON;
}

void kpc_wipe(void *p, size_t n) {
  /* volatile: the compiler may not drop stores to memory about to be freed */
  volatile unsigned char *v = p;
  while (n--)
    *v++ = 0;
}
