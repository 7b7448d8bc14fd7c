/* Producer configuration: every KPL setting (kpl-compat.md §4) in a typed struct,
 * driven by ONE property table (kp_config_props) that holds, per setting, its
 * PascalCase name, its alias, type, default, allowed range, Configuration proto field
 * and description. Setting by name, .properties files, the proto conversion, the
 * defaults and docs/configuration.md all come from that table.
 *
 * Names: the KPL PascalCase name (case-sensitive), or its alias, which is always the
 * PascalCase name in lower_snake_case ("AggregationMaxSize" -> "aggregation_max_size",
 * "ThreadingModel" -> "threading_model"). Values:
 *  - bool: "true" / "false", ASCII case-insensitive (nothing else, not 1/0).
 *  - uint: decimal digits only (no sign, space, hex or exponent), range-checked.
 *    Open-ended KPL ranges ("1..") stop at 2^63-1, the largest value the KPL's Java
 *    wrapper can send, so stages may add two times without unsigned surprises.
 *  - enum: one of the listed names, ASCII case-insensitive.
 *  - string: length-checked; control characters are rejected (they end up in logs
 *    and HTTP headers).
 *
 * Wrapper-only KPL settings (CredentialsRefreshDelay, NativeExecutable, ...) are in
 * the table as KP_CONF_TYPE_IGNORED: accepted, so existing .properties files load,
 * and otherwise ignored. Any other unknown name is an error (typos must not pass
 * silently).
 *
 * Error reporting: functions failing on user input return KP_CONF_INVALID or
 * KP_CONF_UNKNOWN and write a message into errstr (if errstr_size > 0) naming the
 * setting, the value and what is allowed, e.g.
 *     "AggregationMaxSize: 10 is out of range 64..10485760".
 * Secret values (ProxyPassword) are never echoed. On any error the target config is
 * left unchanged.
 *
 * A kp_config must be initialised with kp_config_init (or be zero-filled) before
 * any other call, and released with kp_config_free. Only the metrics dimension list
 * is heap-allocated; the strings are fixed-size arrays inside the struct. */
#ifndef KP_COMMON_CONFIG_H
#define KP_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/log.h"
#include "proto/messages.pb-c.h"

#define KP_CONF_OK 0
#define KP_CONF_INVALID (-1) /* bad value, or cross-setting conflict */
#define KP_CONF_UNKNOWN (-2) /* no such setting */
#define KP_CONF_NOMEM (-3)
#define KP_CONF_IO (-4) /* properties file unreadable */

/* Capacities of the string fields, including the NUL. */
#define KP_CONF_ENDPOINT_SIZE 512
#define KP_CONF_HOST_SIZE 256
#define KP_CONF_NAMESPACE_SIZE 256
#define KP_CONF_REGION_SIZE 64
#define KP_CONF_CRED_SIZE 256

typedef enum kp_metrics_granularity {
  KP_METRICS_GRANULARITY_GLOBAL = 0,
  KP_METRICS_GRANULARITY_STREAM = 1,
  KP_METRICS_GRANULARITY_SHARD = 2
} kp_metrics_granularity;

typedef enum kp_metrics_level {
  KP_METRICS_LEVEL_NONE = 0,
  KP_METRICS_LEVEL_SUMMARY = 1,
  KP_METRICS_LEVEL_DETAILED = 2
} kp_metrics_level;

/* Values match the proto's Configuration.ThreadConfig. Accepted for compatibility;
 * the daemon is single-threaded whatever this says. */
typedef enum kp_threading_model {
  KP_THREADING_PER_REQUEST = 0,
  KP_THREADING_POOLED = 1
} kp_threading_model;

/* How PutRecords bodies are encoded (ours): CBOR 1.1 saves base64 and a quarter of the
 * bytes SigV4 hashes; JSON 1.1 is what the KPL sends. */
typedef enum kp_request_encoding {
  KP_REQUEST_ENCODING_JSON = 0,
  KP_REQUEST_ENCODING_CBOR = 1
} kp_request_encoding;

/* One extra CloudWatch dimension added to metrics at `granularity` and finer. */
typedef struct kp_metrics_dim {
  char *key;   /* 1..255 bytes */
  char *value; /* 1..1024 bytes */
  kp_metrics_granularity granularity;
} kp_metrics_dim;

typedef struct kp_config {
  bool aggregation_enabled;
  uint64_t aggregation_max_count;
  uint64_t aggregation_max_size;
  char cloudwatch_endpoint[KP_CONF_ENDPOINT_SIZE]; /* "" = monitoring.<Region>... */
  uint64_t cloudwatch_port;
  uint64_t collection_max_count;
  uint64_t collection_max_size;
  uint64_t connect_timeout; /* ms */
  bool enable_core_dumps;
  bool fail_if_throttled;
  char kinesis_endpoint[KP_CONF_ENDPOINT_SIZE]; /* "" = kinesis.<Region>... */
  uint64_t kinesis_port;
  kp_log_level log_level;
  uint64_t max_connections;
  kp_metrics_granularity metrics_granularity;
  kp_metrics_level metrics_level;
  char metrics_namespace[KP_CONF_NAMESPACE_SIZE];
  uint64_t metrics_upload_delay; /* ms */
  uint64_t min_connections;
  uint64_t rate_limit;               /* percent of the per-shard limits */
  uint64_t record_max_buffered_time; /* ms */
  uint64_t record_ttl;               /* ms */
  char region[KP_CONF_REGION_SIZE];
  uint64_t request_timeout; /* ms */
  bool verify_certificate;
  char proxy_host[KP_CONF_HOST_SIZE];
  uint64_t proxy_port;
  char proxy_user_name[KP_CONF_CRED_SIZE];
  char proxy_password[KP_CONF_CRED_SIZE]; /* secret: never log */
  kp_threading_model threading_model;
  uint64_t thread_pool_size;            /* 0..2^32-1 (proto uint32) */
  uint64_t max_buffered_bytes;          /* ours: daemon stops reading input above this */
  kp_request_encoding request_encoding; /* ours */
  bool result_batches;                  /* ours: the client takes PutRecordResultBatch */
  kp_metrics_dim *additional_metrics_dims;
  size_t n_additional_metrics_dims;
} kp_config;

/* ---- the property table ---- */

typedef enum kp_config_type {
  KP_CONF_TYPE_BOOL,
  KP_CONF_TYPE_UINT,
  KP_CONF_TYPE_STRING,
  KP_CONF_TYPE_ENUM,
  KP_CONF_TYPE_DIMS,   /* AdditionalMetricsDimensions, see below */
  KP_CONF_TYPE_IGNORED /* KPL wrapper-side setting: accepted, no effect */
} kp_config_type;

#define KP_CONF_F_SECRET 0x1u    /* value never echoed in errors or kp_config_log */
#define KP_CONF_F_ENDPOINT 0x2u  /* host or http(s) URL, see kp_config_endpoint */
#define KP_CONF_F_NAMESPACE 0x4u /* must not start with "AWS/" */
#define KP_CONF_F_REGION 0x8u    /* [a-z0-9-] only */

typedef struct kp_config_prop {
  const char *name;  /* PascalCase, as in KPL .properties files */
  const char *alias; /* lower_snake_case of name */
  kp_config_type type;
  const char *default_str;       /* the default, as written in a .properties file */
  uint64_t min, max;             /* UINT: value range; STRING: length range in bytes */
  const char *const *enum_names; /* ENUM: names indexed by value, NULL-terminated */
  unsigned proto_field;          /* kpl.Configuration field number, 0 = none */
  size_t offset;                 /* of the field in kp_config */
  size_t size;                   /* of the field in kp_config */
  unsigned flags;                /* KP_CONF_F_* */
  const char *desc;              /* one sentence */
} kp_config_prop;

/* The table, in KPL proto field order; *n receives its length. */
const kp_config_prop *kp_config_props(size_t *n);

/* Looks a setting up by PascalCase name or alias; NULL if unknown. */
const kp_config_prop *kp_config_find(const char *name);

/* Writes the table as a Markdown table (docs/configuration.md, --help output).
 * Returns 0 or KP_CONF_IO. */
int kp_config_write_markdown(FILE *f);

/* ---- lifecycle ---- */

void kp_config_init(kp_config *c);
void kp_config_free(kp_config *c); /* c is left initialised to the defaults */
/* Deep copy; dst (initialised) is replaced on success, unchanged on failure. */
int kp_config_copy(kp_config *dst, const kp_config *src);

/* ---- setting values ---- */

/* Sets one setting from its text form. KP_CONF_OK, KP_CONF_UNKNOWN, KP_CONF_INVALID
 * or KP_CONF_NOMEM.
 *
 * AdditionalMetricsDimensions takes a comma-separated list of key:value:granularity
 * (granularity global|stream|shard); the key is up to the first ':', the granularity
 * after the last one, so values may contain ':' but no ','. Setting it replaces the
 * list; "" clears it. */
int kp_config_set(kp_config *c, const char *name, const char *value, char *errstr,
                  size_t errstr_size);

/* Text form of a setting (what kp_config_set would accept back), secrets included.
 * Returns the length written (always NUL-terminated, truncated to fit), or
 * KP_CONF_UNKNOWN. */
int kp_config_get(const kp_config *c, const char *name, char *out, size_t out_size);

/* KPL .properties syntax (a subset of java.util.Properties): one setting per line,
 * "key = value", "key=value", "key: value" or "key value"; whitespace around key and
 * value is trimmed; lines starting with '#' or '!' and blank lines are skipped; a
 * later line overrides an earlier one. Not supported: backslash line continuations
 * and escapes (a value keeps its backslashes). Errors read "<name>:<line>: <why>".
 * All-or-nothing: on error c is unchanged. */
int kp_config_parse_properties(kp_config *c, const char *text, size_t len,
                               const char *name_for_errors, char *errstr, size_t errstr_size);
int kp_config_load_properties(kp_config *c, const char *path, char *errstr, size_t errstr_size);

/* Cross-setting checks, once all settings are in: MinConnections <= MaxConnections,
 * both endpoints resolve (kp_config_endpoint), and so on. */
int kp_config_validate(const kp_config *c, char *errstr, size_t errstr_size);

/* Logs every setting at `level`, one line each; secrets are shown as "****". */
void kp_config_log(const kp_config *c, kp_log_level level);

/* ---- protobuf (kpl.Configuration) ---- */

/* Replaces c with the settings in pb, validated like kp_config_set. Absent optional
 * fields carry the proto defaults, which equal ours. Unchanged on error. */
int kp_config_from_proto(kp_config *c, const Kpl__Configuration *pb, char *errstr,
                         size_t errstr_size);

/* Fills pb (overwritten, not freed first) with every setting, each marked present.
 * Strings and dimensions are heap copies: release with kp_config_proto_free.
 * KP_CONF_OK or KP_CONF_NOMEM (pb then holds nothing to free). */
int kp_config_to_proto(const kp_config *c, Kpl__Configuration *pb);
void kp_config_proto_free(Kpl__Configuration *pb);

/* Unpacks a serialized kpl.Configuration then kp_config_from_proto. */
int kp_config_from_bytes(kp_config *c, const uint8_t *data, size_t len, char *errstr,
                         size_t errstr_size);

/* Serializes c as a kpl.Configuration into a malloc'd buffer (*out, *len). */
int kp_config_to_bytes(const kp_config *c, uint8_t **out, size_t *len);

/* ---- endpoints and region ---- */

typedef enum kp_service { KP_SERVICE_KINESIS = 0, KP_SERVICE_CLOUDWATCH = 1 } kp_service;

typedef struct kp_endpoint {
  bool tls;                     /* scheme is https */
  char scheme[8];               /* "http" or "https" */
  char host[KP_CONF_HOST_SIZE]; /* IPv6 literals keep their brackets */
  uint16_t port;
  char url[KP_CONF_HOST_SIZE + 24]; /* "https://host:port", port always present */
} kp_endpoint;

/* Resolves KinesisEndpoint+KinesisPort (or the Cloudwatch pair) to where requests go.
 * The endpoint is "", a host ("localhost", "10.0.0.1", "[::1]"), "host:port" or an
 * http/https URL ("http://127.0.0.1:4567"). A URL may end in "/" but carry no other
 * path, no query, fragment or user info: they would be silently dropped from every
 * request, so they are rejected. Scheme defaults to https.
 * Port: the one in the endpoint if given (the Port setting must then be the default
 * 443 or equal to it); else the Port setting if it is not the default 443; else the
 * scheme's default (80 for http, 443 for https).
 * Empty endpoint: https://kinesis.<Region>.amazonaws.com (monitoring.<Region>... for
 * CloudWatch; ".amazonaws.com.cn" for cn-* regions) on the Port setting; Region must
 * then be set. */
int kp_config_endpoint(const kp_config *c, kp_service which, kp_endpoint *out, char *errstr,
                       size_t errstr_size);

/* The signing region: Region if set; else derived from an AWS endpoint host
 * (kinesis.us-west-2.amazonaws.com -> us-west-2; KinesisEndpoint first, then
 * CloudwatchEndpoint); else "us-east-1", which emulators and custom endpoints such
 * as 127.0.0.1 accept. Returns 0, or KP_CONF_INVALID if out_size is too small. */
int kp_config_region(const kp_config *c, char *out, size_t out_size);

#endif
