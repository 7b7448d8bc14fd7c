/* Private to the client library: the configuration object, the credentials provider
 * and the helpers shared by its files. Public names are kp_*, internal non-static
 * names kpc_*. */
#ifndef KP_CLIENT_INT_H
#define KP_CLIENT_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "kinesis_producer.h"

#define KPC_PATH_SIZE 4096
#define KPC_CRED_SIZE 4096 /* session tokens run to ~1-2 KB */
#define KPC_NAME_SIZE 256

typedef enum kpc_death_policy { KPC_DEATH_REPLAY = 0, KPC_DEATH_FAIL = 1 } kpc_death_policy;
typedef enum kpc_delivery { KPC_DELIVERY_POLL = 0, KPC_DELIVERY_BACKGROUND = 1 } kpc_delivery;

/* Settings that only the client library uses (never sent to the daemon). */
typedef struct kpc_settings {
  char native_executable[KPC_PATH_SIZE];
  uint64_t max_outstanding_records;
  uint64_t max_outstanding_bytes;
  uint64_t put_block_timeout; /* ms */
  uint64_t max_user_record_size;
  int daemon_death_policy;                                         /* kpc_death_policy */
  uint64_t daemon_restart_backoff_min, daemon_restart_backoff_max; /* ms */
  uint64_t daemon_shutdown_timeout;                                /* ms */
  int result_delivery;                                             /* kpc_delivery */
  int shared_memory; /* 1: record data through the shared data file (client/shared_pool.h) */
  uint64_t credentials_refresh_delay; /* ms */
  char aws_access_key_id[KPC_NAME_SIZE];
  char aws_secret_access_key[KPC_NAME_SIZE];
  char aws_session_token[KPC_CRED_SIZE];
  char aws_profile[KPC_NAME_SIZE];
  char aws_shared_credentials_file[KPC_PATH_SIZE];
} kpc_settings;

struct kp_conf_s {
  kp_config cfg; /* every KPL setting, via common/config's property table */
  kpc_settings cl;
  kp_result_cb_t *result_cb;
  kp_log_cb_t *log_cb;
  void *opaque;
};

/* Cross-setting checks of the client keys plus kp_config_validate. */
kp_err_t kpc_conf_validate(const kp_conf_t *conf, char *errstr, size_t errstr_size);

/* Where the daemon is: NativeExecutable, else $KP_DAEMON_PATH, else the build's bin dir
 * (KP_CLIENT_DEFAULT_DAEMON, a CMake define). */
const char *kpc_daemon_path(const kp_conf_t *conf);

/* ---- credentials ---- */

typedef struct kpc_creds {
  char akid[KPC_NAME_SIZE];
  char secret[KPC_NAME_SIZE];
  char token[KPC_CRED_SIZE]; /* "" = none */
  char source[64];           /* "configuration", "environment", "file <profile>" */
} kpc_creds;

/* Where to look, snapshotted once at producer creation (the environment is read once:
 * other threads may not setenv safely anyway). */
typedef struct kpc_creds_sources {
  kpc_creds statics;        /* from the configuration; akid "" = none */
  kpc_creds env;            /* AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN */
  char file[KPC_PATH_SIZE]; /* AwsSharedCredentialsFile, $AWS_SHARED_CREDENTIALS_FILE,
                               ~/.aws/credentials; "" = none */
  char profile[KPC_NAME_SIZE];
} kpc_creds_sources;

void kpc_creds_sources_init(kpc_creds_sources *s, const kpc_settings *cl);

/* Parses an AWS shared credentials file (INI) for `profile`. Returns 0 and fills out
 * when the profile has both aws_access_key_id and aws_secret_access_key; 1 when the
 * profile is absent or incomplete (errstr says which); -1 on a syntax error (errstr
 * names the line). */
int kpc_creds_parse_ini(const char *text, size_t len, const char *profile, kpc_creds *out,
                        char *errstr, size_t errstr_size);

/* First match of: static, environment, file. 0, or KP_ERR__NO_CREDENTIALS with errstr
 * listing what was tried. Reads the file each call (that is the refresh). */
kp_err_t kpc_creds_resolve(const kpc_creds_sources *s, kpc_creds *out, char *errstr,
                           size_t errstr_size);

int kpc_creds_equal(const kpc_creds *a, const kpc_creds *b);

/* Zeroes secrets before memory is released. */
void kpc_wipe(void *p, size_t n);

/* UTF-8 code points in s[0..len), or -1 if not well-formed. */

#endif
