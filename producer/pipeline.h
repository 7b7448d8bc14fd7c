/* The daemon's pipeline: takes IPC messages in, sends PutRecords out, and gives
 * back exactly one PutRecordResult per PutRecord.
 *
 * It owns the streams (shard map, per-shard aggregators, collector), the deadline
 * timer, the HTTP client and the credentials; the transport (FIFOs or socketpair) is
 * the caller's, reached through `send`. Everything runs on one libev loop thread. */
#ifndef KP_PRODUCER_PIPELINE_H
#define KP_PRODUCER_PIPELINE_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "producer/counters.h"

typedef struct kp_pipeline kp_pipeline;

/* Delivers one serialized Message (no frame header) to the client. Called on the loop
 * thread; the bytes are only valid during the call (the callee copies them). */
typedef void (*kp_pipeline_send_fn)(const uint8_t *msg, size_t len, void *ud);

/* Called once, on the loop thread, when a shutdown has drained everything. */
typedef void (*kp_pipeline_drained_fn)(void *ud);

/* Creates the pipeline on `loop` with a copy of `cfg` (validated by the caller).
 * Returns NULL with errstr filled on failure. */
kp_pipeline *kp_pipeline_new(struct ev_loop *loop, const kp_config *cfg, kp_pipeline_send_fn send,
                             void *ud, char *errstr, size_t errstr_size);

/* Frees everything; records still inside are dropped without results (callers shut
 * down first). */
void kp_pipeline_free(kp_pipeline *p);

/* Handles one serialized Message from the client. Malformed messages are logged and
 * dropped; the pipeline never stops on input. */
void kp_pipeline_on_message(kp_pipeline *p, const uint8_t *msg, size_t len);

/* Sets the Kinesis (for_metrics = 0) or CloudWatch credentials. Secrets are copied
 * and never logged. */
void kp_pipeline_set_credentials(kp_pipeline *p, int for_metrics, const char *akid,
                                 const char *secret, const char *token);

/* Flushes everything and calls `drained` once every record has its result, at the
 * latest after RecordTtl (what is left then fails as expired). */
void kp_pipeline_shutdown(kp_pipeline *p, kp_pipeline_drained_fn drained, void *ud);

/* Records accepted and not yet answered. */
size_t kp_pipeline_outstanding(const kp_pipeline *p);

/* User data bytes held (accepted, not yet answered), and whether that is over
 * MaxBufferedBytes: the caller then stops reading input until `room` is called (on the
 * loop thread, once the holding falls to three quarters of the cap). */
size_t kp_pipeline_buffered_bytes(const kp_pipeline *p);
int kp_pipeline_full(const kp_pipeline *p);
typedef void (*kp_pipeline_room_fn)(void *ud);
void kp_pipeline_on_room(kp_pipeline *p, kp_pipeline_room_fn room, void *ud);

/* Answers the client's shared data file (Configuration.shared_data_fd) with a
 * SharedDataAck: mapped when sd->base is set (PutRecordRef records then read their data
 * there; the mapping must outlive the pipeline), else not, with `error` as the reason. */
struct kp_shared_data;
void kp_pipeline_use_shared_data(kp_pipeline *p, const struct kp_shared_data *sd,
                                 const char *error);

const kp_counters *kp_pipeline_counters(const kp_pipeline *p);

#endif
