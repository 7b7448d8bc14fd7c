/**
 * @file kinesis_producer.h
 * @brief Client library of the native Kinesis producer: puts user records, gets
 *        exactly one result per accepted record. The KPL's wrapper, in C.
 *
 * The library starts the `kinesis_producer` daemon as a child process, talks to it over
 * a socketpair, restarts it when it dies and replays what it had not acknowledged.
 *
 * @code
 *   char err[512];
 *   kp_conf_t *conf = kp_conf_new();
 *   kp_conf_set(conf, "Region", "us-east-1", err, sizeof err);
 *   kp_conf_set_result_cb(conf, on_result);        // called from kp_producer_poll()
 *   kp_producer_t *p = kp_producer_new(conf, err, sizeof err);   // takes conf
 *   if (!p) { fprintf(stderr, "%s\n", err); kp_conf_destroy(conf); return 1; }
 *   kp_producer_put(p, "stream", "key", NULL, data, len, KP_PUT_F_BLOCK, my_opaque);
 *   kp_producer_poll(p, 0);                         // serve results now and then
 *   kp_producer_flush_wait(p, 30000);
 *   kp_producer_close(p, 0, 30000);                 // flush, then purge what is left
 *   kp_producer_destroy(p);
 * @endcode
 *
 * Threading contract
 * - Every kp_producer_* function may be called from any thread, concurrently, except
 *   kp_producer_destroy(), which must be the last call on the handle.
 * - Results are queued inside the library. With ResultDelivery=poll (default) they are
 *   delivered by kp_producer_poll(), kp_producer_flush_wait() and kp_producer_close(), on
 *   the thread calling them. With ResultDelivery=background one library thread (not the
 *   I/O thread) calls the callback. A callback must not call kp_producer_close(),
 *   kp_producer_flush_wait() or kp_producer_destroy() (they wait for the record being
 *   served); it may call kp_producer_put() without KP_PUT_F_BLOCK.
 * - A record counts as outstanding from an accepted put until its result callback has
 *   returned, so an application in poll mode that never polls eventually gets
 *   KP_ERR__QUEUE_FULL (as with librdkafka).
 * - If a function that would produce a result returns an error, no result is ever
 *   delivered for that call.
 */
#ifndef KINESIS_PRODUCER_H
#define KINESIS_PRODUCER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KP_EXPORT __attribute__((visibility("default")))
#else
#define KP_EXPORT
#endif

/** Version as 0xMMmmrrxx (major, minor, revision, 0xff for a release). */
#define KP_VERSION 0x000100ff
/** Version as text. */
#define KP_VERSION_STR "0.1.0"

/**
 * @brief Run-time version of the library.
 * @returns the library's KP_VERSION (may differ from the header the caller built with).
 */
KP_EXPORT int kp_version(void);

/**
 * @brief Run-time version as text.
 * @returns a static string such as "0.1.0".
 */
KP_EXPORT const char *kp_version_str(void);

/**
 * @brief Every error the library reports. 0 is success; local errors (found by this
 *        library) are negative; errors reported by Kinesis or by the daemon for a record
 *        are positive. Values are append-only.
 */
typedef enum kp_err_t {
  KP_ERR_NO_ERROR = 0, /**< success */

  /* local */
  KP_ERR__INVALID_ARG = -1,           /**< NULL or otherwise unusable argument */
  KP_ERR__QUEUE_FULL = -2,            /**< outstanding record or byte limit reached */
  KP_ERR__TIMED_OUT = -3,             /**< the wait ended before the condition held */
  KP_ERR__STATE = -4,                 /**< wrong state, e.g. put after kp_producer_close() */
  KP_ERR__PURGED = -5,                /**< record purged by close before it got a result */
  KP_ERR__DAEMON_DIED = -6,           /**< daemon died and DaemonDeathPolicy=fail */
  KP_ERR__EXPIRED = -7,               /**< record not put within RecordTtl */
  KP_ERR__MSG_SIZE_TOO_LARGE = -8,    /**< data longer than MaxUserRecordSize */
  KP_ERR__INVALID_PARTITION_KEY = -9, /**< empty, over 256 characters or not UTF-8 */
  KP_ERR__INVALID_HASH_KEY = -10,     /**< explicit hash key not a decimal in 0..2^128-1 */
  KP_ERR__INVALID_STREAM = -11,       /**< empty stream name or control characters */
  KP_ERR__UNKNOWN_CONF = -12,         /**< no configuration key by that name */
  KP_ERR__INVALID_CONF = -13,         /**< bad configuration value or combination */
  KP_ERR__NO_CREDENTIALS = -14,       /**< no AWS credentials found */
  KP_ERR__SPAWN = -15,                /**< the daemon could not be started */
  KP_ERR__NOMEM = -16,                /**< out of memory */
  KP_ERR__TRANSPORT = -17,            /**< the pipe to the daemon failed */
  KP_ERR__IO = -18,                   /**< file could not be read */

  /* reported for a record by the daemon or Kinesis */
  KP_ERR_THROTTLED = 1,          /**< ProvisionedThroughputExceededException */
  KP_ERR_INTERNAL_FAILURE = 2,   /**< InternalFailure, ServiceUnavailable */
  KP_ERR_KMS = 3,                /**< one of the KMS* errors */
  KP_ERR_RESOURCE_NOT_FOUND = 4, /**< the stream does not exist */
  KP_ERR_ACCESS_DENIED = 5,      /**< credentials refused or not allowed */
  KP_ERR_INVALID_REQUEST = 6,    /**< Kinesis or the daemon rejected the record */
  KP_ERR_CONNECTION = 7,         /**< could not reach Kinesis */
  KP_ERR_REMOTE = 8,             /**< any other error code (see kp_result_t.error_code) */
} kp_err_t;

/**
 * @brief English text for an error.
 * @param err any kp_err_t value.
 * @returns a static string, never NULL ("unknown error" for unknown values).
 */
KP_EXPORT const char *kp_err2str(kp_err_t err);

/**
 * @brief Symbolic name of an error, e.g. "_QUEUE_FULL" (librdkafka convention).
 * @param err any kp_err_t value.
 * @returns a static string, never NULL.
 */
KP_EXPORT const char *kp_err2name(kp_err_t err);

/** Opaque configuration object. */
typedef struct kp_conf_s kp_conf_t;
/** Opaque producer handle. */
typedef struct kp_producer_s kp_producer_t;

/** One try to put a record, as the daemon reports it. */
typedef struct kp_attempt_t {
  uint32_t delay_ms;         /**< time waited before this attempt */
  uint32_t duration_ms;      /**< time the attempt took */
  int success;               /**< 1 if this attempt put the record */
  const char *error_code;    /**< e.g. "ProvisionedThroughputExceededException", or NULL */
  const char *error_message; /**< or NULL */
} kp_attempt_t;

/**
 * @brief The outcome of one record, given to the result callback. Every pointer is
 *        owned by the library and valid only during the callback.
 */
typedef struct kp_result_t {
  kp_err_t err;                /**< KP_ERR_NO_ERROR on success */
  const char *error_code;      /**< daemon/Kinesis code of the last attempt, or a local name */
  const char *error_message;   /**< human-readable reason; NULL on success */
  const char *stream;          /**< as given to kp_producer_put() */
  const char *partition_key;   /**< as given to kp_producer_put() */
  const char *shard_id;        /**< on success, else NULL */
  const char *sequence_number; /**< on success, else NULL */
  size_t len;                  /**< length of the data that was put */
  size_t attempt_cnt;          /**< entries in attempts (0 for local failures) */
  const kp_attempt_t *attempts;
  void *opaque; /**< the put's opaque pointer */
} kp_result_t;

/**
 * @brief Result callback.
 * @param p the producer.
 * @param r the result, valid only during the call.
 * @param conf_opaque the pointer given to kp_conf_set_opaque().
 * @remark Runs on the thread calling kp_producer_poll()/flush_wait()/close(), or on the
 *         library's delivery thread with ResultDelivery=background; never concurrently
 *         for the same producer in background mode.
 */
typedef void(kp_result_cb_t)(kp_producer_t *p, const kp_result_t *r, void *conf_opaque);

/** Log levels of the log callback; match LogLevel names. */
typedef enum kp_log_level_t {
  KP_LOG_TRACE = 0,
  KP_LOG_DEBUG = 1,
  KP_LOG_INFO = 2,
  KP_LOG_WARNING = 3,
  KP_LOG_ERROR = 4,
} kp_log_level_t;

/**
 * @brief Log callback for the library's own events (daemon start/exit/restart,
 *        credentials re-sent, ...). The daemon logs to the inherited stderr.
 * @param level severity.
 * @param msg one line, no newline; valid only during the call; never contains secrets.
 * @param conf_opaque the pointer given to kp_conf_set_opaque().
 * @remark Called from any library thread (mostly the I/O thread); must not block long.
 */
typedef void(kp_log_cb_t)(kp_log_level_t level, const char *msg, void *conf_opaque);

/**
 * @brief Creates a configuration holding every default.
 * @returns a new object, or NULL when out of memory.
 * @remark The caller owns it until a successful kp_producer_new().
 */
KP_EXPORT kp_conf_t *kp_conf_new(void);

/**
 * @brief Deep copy of a configuration (callbacks and opaque included).
 * @param conf the configuration to copy.
 * @returns the copy, owned by the caller, or NULL when out of memory.
 */
KP_EXPORT kp_conf_t *kp_conf_dup(const kp_conf_t *conf);

/**
 * @brief Frees a configuration. NULL is a no-op.
 * @param conf configuration not handed to a producer.
 */
KP_EXPORT void kp_conf_destroy(kp_conf_t *conf);

/**
 * @brief Sets one setting by name: a KPL PascalCase name ("RecordMaxBufferedTime"), its
 *        lower_snake_case alias ("record_max_buffered_time"), or a client key (see
 *        docs/client.md: NativeExecutable, MaxOutstandingRecords, ...).
 * @param conf configuration.
 * @param name setting name.
 * @param value text value, e.g. "true", "100", "http://127.0.0.1:4567".
 * @param errstr receives a message naming the setting and the problem (may be NULL).
 * @param errstr_size size of errstr.
 * @returns KP_ERR_NO_ERROR, KP_ERR__UNKNOWN_CONF, KP_ERR__INVALID_CONF,
 *          KP_ERR__INVALID_ARG (NULL conf/name/value) or KP_ERR__NOMEM. On error the
 *          configuration is unchanged.
 * @remark Not thread-safe on the same conf.
 */
KP_EXPORT kp_err_t kp_conf_set(kp_conf_t *conf, const char *name, const char *value, char *errstr,
                               size_t errstr_size);

/**
 * @brief Text form of a setting (secrets included).
 * @param conf configuration.
 * @param name setting name, as for kp_conf_set().
 * @param out receives the NUL-terminated value, truncated to fit.
 * @param out_size size of out.
 * @returns KP_ERR_NO_ERROR, KP_ERR__UNKNOWN_CONF or KP_ERR__INVALID_ARG.
 */
KP_EXPORT kp_err_t kp_conf_get(const kp_conf_t *conf, const char *name, char *out, size_t out_size);

/**
 * @brief Loads a KPL .properties file ("Key = Value" lines, '#'/'!' comments); both KPL
 *        and client keys are accepted. All or nothing.
 * @param conf configuration.
 * @param path file to read.
 * @param errstr receives "<path>:<line>: <why>" on error (may be NULL).
 * @param errstr_size size of errstr.
 * @returns KP_ERR_NO_ERROR, KP_ERR__IO, KP_ERR__UNKNOWN_CONF, KP_ERR__INVALID_CONF or
 *          KP_ERR__INVALID_ARG.
 */
KP_EXPORT kp_err_t kp_conf_load_properties(kp_conf_t *conf, const char *path, char *errstr,
                                           size_t errstr_size);

/**
 * @brief Sets the result callback (default: none; results are then only counted).
 * @param conf configuration.
 * @param cb callback, or NULL.
 */
KP_EXPORT void kp_conf_set_result_cb(kp_conf_t *conf, kp_result_cb_t *cb);

/**
 * @brief Sets the log callback (default: lines on stderr).
 * @param conf configuration.
 * @param cb callback, or NULL for stderr.
 */
KP_EXPORT void kp_conf_set_log_cb(kp_conf_t *conf, kp_log_cb_t *cb);

/**
 * @brief Sets the pointer passed to the callbacks.
 * @param conf configuration.
 * @param opaque any pointer; never dereferenced by the library.
 */
KP_EXPORT void kp_conf_set_opaque(kp_conf_t *conf, void *opaque);

/**
 * @brief Validates the configuration, resolves credentials, starts the I/O thread and
 *        the daemon.
 * @param conf configuration; on success the producer owns it (do not destroy it), on
 *        failure the caller still does.
 * @param errstr receives what is wrong, naming the setting (may be NULL).
 * @param errstr_size size of errstr.
 * @returns the producer, or NULL on error.
 */
KP_EXPORT kp_producer_t *kp_producer_new(kp_conf_t *conf, char *errstr, size_t errstr_size);

/** kp_producer_put() flag: copy the data (always done; accepted for familiarity). */
#define KP_PUT_F_COPY 0x0
/** kp_producer_put() flag: when full, wait up to PutBlockTimeout ms for room. */
#define KP_PUT_F_BLOCK 0x1

/**
 * @brief Queues one user record; never blocks unless KP_PUT_F_BLOCK is given.
 * @param p producer.
 * @param stream stream name (non-empty).
 * @param partition_key 1..256 Unicode characters, UTF-8.
 * @param explicit_hash_key decimal 0..2^128-1, or NULL to hash the partition key.
 * @param data record data (may be NULL if len is 0); copied before the call returns.
 * @param len data length, at most MaxUserRecordSize.
 * @param flags 0 or KP_PUT_F_BLOCK.
 * @param opaque handed back in kp_result_t.opaque.
 * @returns KP_ERR_NO_ERROR (exactly one result will follow), or an error (no result
 *          will ever follow): KP_ERR__INVALID_ARG, KP_ERR__INVALID_STREAM,
 *          KP_ERR__INVALID_PARTITION_KEY, KP_ERR__INVALID_HASH_KEY,
 *          KP_ERR__MSG_SIZE_TOO_LARGE, KP_ERR__QUEUE_FULL, KP_ERR__TIMED_OUT (blocked
 *          for PutBlockTimeout), KP_ERR__STATE (closed), KP_ERR__NOMEM.
 * @remark Thread-safe.
 */
KP_EXPORT kp_err_t kp_producer_put(kp_producer_t *p, const char *stream, const char *partition_key,
                                   const char *explicit_hash_key, const void *data, size_t len,
                                   int flags, void *opaque);

/**
 * @brief Serves queued results: calls the result callback for each, on this thread.
 * @param p producer.
 * @param timeout_ms how long to wait for the first result: 0 = don't wait, -1 = forever.
 * @returns the number of results served (0 in ResultDelivery=background mode).
 * @remark Thread-safe.
 */
KP_EXPORT int kp_producer_poll(kp_producer_t *p, int timeout_ms);

/**
 * @brief Asks the daemon to send buffered records now (KPL Flush); does not wait.
 * @param p producer.
 * @param stream one stream, or NULL for all.
 * @returns KP_ERR_NO_ERROR, KP_ERR__INVALID_ARG or KP_ERR__STATE.
 */
KP_EXPORT kp_err_t kp_producer_flush(kp_producer_t *p, const char *stream);

/**
 * @brief Flushes all streams and waits until no record is outstanding, serving results
 *        meanwhile (poll mode), like rd_kafka_flush().
 * @param p producer.
 * @param timeout_ms bound on the wait; -1 = forever.
 * @returns KP_ERR_NO_ERROR or KP_ERR__TIMED_OUT (records still outstanding).
 * @remark Thread-safe; returns as soon as the count reaches 0 (event-driven).
 */
KP_EXPORT kp_err_t kp_producer_flush_wait(kp_producer_t *p, int timeout_ms);

/**
 * @brief Records accepted whose result callback has not returned yet.
 * @param p producer.
 * @returns the count (0 for NULL).
 */
KP_EXPORT size_t kp_producer_outstanding(kp_producer_t *p);

/** kp_producer_close() flag: fail every outstanding record with KP_ERR__PURGED now. */
#define KP_CLOSE_F_PURGE 0x1

/**
 * @brief First phase of shutdown: from now on puts fail with KP_ERR__STATE. Without
 *        KP_CLOSE_F_PURGE, flushes and waits up to timeout_ms for the results, then
 *        purges what is left; with it, purges at once. Every record gets its result
 *        (served on this thread in poll mode) before this returns, then the daemon is
 *        stopped (SIGKILL if it outlives its own shutdown by timeout_ms).
 * @param p producer.
 * @param flags 0 or KP_CLOSE_F_PURGE.
 * @param timeout_ms bound on the flush wait; -1 = forever.
 * @returns KP_ERR_NO_ERROR (also after an explicit KP_CLOSE_F_PURGE), KP_ERR__TIMED_OUT if
 *          the flush did not finish within timeout_ms and the rest was purged,
 *          KP_ERR__STATE if already closed, KP_ERR__INVALID_ARG for NULL.
 * @remark Thread-safe; call once.
 */
KP_EXPORT kp_err_t kp_producer_close(kp_producer_t *p, int flags, int timeout_ms);

/**
 * @brief Frees the producer. Calls kp_producer_close(p, 0, 30000) first if it was not
 *        closed. NULL is a no-op.
 * @param p producer; invalid afterwards.
 * @remark Must be the last call on p, from a thread that is not a result callback.
 */
KP_EXPORT void kp_producer_destroy(kp_producer_t *p);

/** Counters, for monitoring and tests. Fields are append-only; kp_producer_stats writes
 * the whole struct, so a binding that mirrors it (bindings/python/kinesis_producer/_lib.py)
 * must gain each new field in the same change. */
typedef struct kp_stats_t {
  uint64_t puts_accepted;       /**< records accepted by kp_producer_put() */
  uint64_t results_ok;          /**< results delivered with KP_ERR_NO_ERROR */
  uint64_t results_failed;      /**< results delivered with an error */
  uint64_t records_replayed;    /**< records re-sent to a restarted daemon */
  uint64_t daemon_starts;       /**< daemon processes started (1 + restarts) */
  uint64_t daemon_deaths;       /**< daemon exits not asked for by close */
  uint64_t credentials_sent;    /**< SetCredentials messages sent (2 per change/start) */
  uint64_t credentials_changes; /**< times the resolved credentials changed */
  size_t outstanding;           /**< as kp_producer_outstanding() */
  size_t outstanding_bytes;     /**< data bytes of records without a result yet */
  size_t unsent_bytes;          /**< data bytes of records put and not yet written to a
                                     daemon (a blocking put waits past 4 MiB of them while
                                     a daemon runs; see docs/client.md); records whose data
                                     is in the shared memory file are not counted */
  uint64_t puts_shared;         /**< of puts_accepted, those whose data went into the
                                     shared memory file (SharedMemory; docs/client.md) */
} kp_stats_t;

/**
 * @brief Snapshot of the counters.
 * @param p producer.
 * @param out receives the counters.
 * @returns KP_ERR_NO_ERROR or KP_ERR__INVALID_ARG.
 */
KP_EXPORT kp_err_t kp_producer_stats(kp_producer_t *p, kp_stats_t *out);

/**
 * @brief Diagnostic: pid of the current daemon process (for tests and operators).
 * @param p producer.
 * @returns the pid, or 0 while no daemon is running (e.g. waiting to restart).
 */
KP_EXPORT pid_t kp_producer_daemon_pid(kp_producer_t *p);

/** One metric as the daemon reports it (KPL MetricsResponse). */
typedef struct kp_metric_t {
  char *name;
  size_t dimension_cnt;
  char **dimension_keys;
  char **dimension_values;
  double count, sum, mean, min, max;
  uint64_t seconds;
} kp_metric_t;

/**
 * @brief Asks the daemon for metrics (KPL MetricsRequest) and waits for the answer.
 * @param p producer.
 * @param name metric name, or NULL for all.
 * @param seconds window in seconds, or 0 for the daemon's default.
 * @param timeout_ms bound on the wait; -1 = forever.
 * @param metricsp receives an array the caller frees with kp_metrics_destroy().
 * @param cntp receives its length (may be 0: the daemon does not yet collect metrics).
 * @returns KP_ERR_NO_ERROR, KP_ERR__TIMED_OUT, KP_ERR__STATE, KP_ERR__INVALID_ARG,
 *          KP_ERR__NOMEM.
 */
KP_EXPORT kp_err_t kp_producer_metrics(kp_producer_t *p, const char *name, uint64_t seconds,
                                       int timeout_ms, kp_metric_t **metricsp, size_t *cntp);

/**
 * @brief Frees what kp_producer_metrics() returned. NULL is a no-op.
 * @param metrics the array.
 * @param cnt its length.
 */
KP_EXPORT void kp_metrics_destroy(kp_metric_t *metrics, size_t cnt);

#ifdef __cplusplus
}
#endif

#endif
