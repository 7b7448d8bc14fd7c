/* A stand-in for kinesis_producer in the client's unit tests: speaks the --fd protocol
 * and answers every PutRecord at once with a success (shard "shardId-000000000000",
 * sequence number = the record's Message id), so the library's threading, limits and
 * supervision can be tested, under sanitizers, without an emulator.
 *
 *   KP_FAKE_DIE_ONCE=PATH KP_FAKE_DIE_AFTER=N: if PATH does not exist, create it and
 *   _exit(1) on the N-th PutRecord without answering it (so exactly one instance dies).
 *   KP_FAKE_LOG=PATH: append one line per message type received ("creds <akid>", ...).
 *   KP_FAKE_STALL=1: stop reading at the first PutRecord (what was already read is
 *   answered) until SIGUSR1: a daemon alive but not taking records.
 *
 *   KP_FAKE_DATA_LOG=PATH: append one line per record: "inline|ref <pk> <len> <fnv1a64
 *   of the data>", and "offer <fd>|none" for the Configuration's shared data file.
 *   KP_FAKE_SHM=decline: answer a shared data file with SharedDataAck{mapped: false};
 *   otherwise it is mapped read-only and PutRecordRefs are read from it.
 *
 * If the Configuration asks for ResultBatches, successes go out as PutRecordResultBatch
 * (up to 32 records; the rest of what one read brought goes out from a 0 s timer), with duration 7
 * and delay = id % 5, so that tests can tell which path a result took. */
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "ipc/channel.h"
#include "proto/messages.pb-c.h"

static long die_after = -1, puts_seen;
static FILE *log_file;
static int batches; /* negotiated */
static kp_channel *chan;
static uint64_t b_ids[32];
static uint32_t b_delays[32];
static size_t b_n;
static ev_timer b_timer;
static struct ev_loop *b_loop;
static int stall; /* KP_FAKE_STALL: pause reading at the first PutRecord */
static ev_signal resume_w;
static FILE *data_log;
static const uint8_t *shm_base; /* the client's shared data file, mapped */
static size_t shm_size;

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static void on_config(const Kpl__Configuration *c) {
  Kpl__Message out = KPL__MESSAGE__INIT;
  Kpl__SharedDataAck ack = KPL__SHARED_DATA_ACK__INIT;
  if (data_log) {
    if (c->has_shared_data_fd)
      fprintf(data_log, "offer %u\n", c->shared_data_fd);
    else
      fprintf(data_log, "offer none\n");
    fflush(data_log);
  }
  if (!c->has_shared_data_fd)
    return;
  const char *mode = getenv("KP_FAKE_SHM");
  struct stat st;
  if (mode && !strcmp(mode, "decline")) {
    ack.error = "declined by the test";
  } else if (fstat((int)c->shared_data_fd, &st) == 0 && st.st_size > 0 &&
             (shm_base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED,
                              (int)c->shared_data_fd, 0)) != MAP_FAILED) {
    shm_size = (size_t)st.st_size;
    ack.mapped = 1;
  } else {
    shm_base = NULL;
    ack.error = "cannot map it";
  }
  out.id = 1;
  out.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_SHARED_DATA_ACK;
  out.shared_data_ack = &ack;
  kp_channel_send_pb(chan, &out.base);
}

/* A record's data, inline or in the shared file; logs it. Exits (a failed test) on a
 * reference outside the file. */
static void note_record(const Kpl__Message *m) {
  const uint8_t *d;
  size_t n;
  const char *pk;
  if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_REF) {
    const Kpl__PutRecordRef *r = m->put_record_ref;
    if (!shm_base || r->data_offset > shm_size || r->data_length > shm_size - r->data_offset)
      _exit(7);
    d = shm_base + r->data_offset;
    n = r->data_length;
    pk = r->partition_key;
  } else {
    d = m->put_record->data.data;
    n = m->put_record->data.len;
    pk = m->put_record->partition_key;
  }
  if (data_log)
    fprintf(data_log, "%s %s %zu %016llx\n",
            m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD ? "inline" : "ref",
            pk, n, (unsigned long long)fnv1a(d, n));
  if (data_log)
    fflush(data_log); /* a death test's _exit must not lose lines */
}

static void resume_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  kp_channel_resume_read(chan);
}

static void send_batch(void) {
  if (!b_n)
    return;
  char seq[32];
  snprintf(seq, sizeof seq, "%llu", (unsigned long long)b_ids[0]);
  Kpl__PutRecordResultBatch b = KPL__PUT_RECORD_RESULT_BATCH__INIT;
  b.shard_id = "shardId-000000000000";
  b.sequence_number = seq;
  b.duration = 7;
  b.n_source_ids = b.n_delays = b_n;
  b.source_ids = b_ids;
  b.delays = b_delays;
  Kpl__Message out = KPL__MESSAGE__INIT;
  out.id = b_ids[0];
  out.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT_BATCH;
  out.put_record_result_batch = &b;
  kp_channel_send_pb(chan, &out.base);
  b_n = 0;
}

/* A timer, not a prepare watcher: output the channel queues from inside a prepare
 * callback would only be written after the next poll. */
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  send_batch();
}

static void on_frame(kp_channel *ch, const uint8_t *payload, size_t len, void *ud) {
  Kpl__Message *m = kpl__message__unpack(NULL, len, payload);
  if (!m)
    return;
  if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD ||
      m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_REF) {
    if (die_after > 0 && ++puts_seen >= die_after)
      _exit(1);
    note_record(m);
    if (stall) {
      stall = 0;
      kp_channel_pause_read(ch);
    }
    if (batches) {
      b_ids[b_n] = m->id;
      b_delays[b_n] = (uint32_t)(m->id % 5);
      if (++b_n == 32)
        send_batch();
      else if (!ev_is_active(&b_timer))
        ev_timer_start(b_loop, &b_timer);
      kpl__message__free_unpacked(m, NULL);
      return;
    }
    char seq[32];
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)m->id);
    Kpl__Message out = KPL__MESSAGE__INIT;
    Kpl__PutRecordResult r = KPL__PUT_RECORD_RESULT__INIT;
    Kpl__Attempt a = KPL__ATTEMPT__INIT;
    Kpl__Attempt *ap = &a;
    a.success = 1;
    r.success = 1;
    r.n_attempts = 1;
    r.attempts = &ap;
    r.shard_id = "shardId-000000000000";
    r.sequence_number = seq;
    out.id = m->id;
    out.has_source_id = 1;
    out.source_id = m->id;
    out.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_RESULT;
    out.put_record_result = &r;
    kp_channel_send_pb(ch, &out.base);
  } else if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_CONFIGURATION) {
    batches = m->configuration->has_result_batches && m->configuration->result_batches;
    on_config(m->configuration);
  } else if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_METRICS_REQUEST) {
    Kpl__Message out = KPL__MESSAGE__INIT;
    Kpl__MetricsResponse mr = KPL__METRICS_RESPONSE__INIT;
    Kpl__Metric met = KPL__METRIC__INIT;
    Kpl__Stats st = KPL__STATS__INIT;
    Kpl__Metric *mp = &met;
    met.name = "UserRecordsPut";
    met.stats = &st;
    st.count = (double)puts_seen;
    mr.n_metrics = 1;
    mr.metrics = &mp;
    out.id = m->id;
    out.has_source_id = 1;
    out.source_id = m->id;
    out.actual_message_case = KPL__MESSAGE__ACTUAL_MESSAGE_METRICS_RESPONSE;
    out.metrics_response = &mr;
    kp_channel_send_pb(ch, &out.base);
  }
  if (log_file) {
    if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_SET_CREDENTIALS)
      fprintf(log_file, "creds %s %d\n", m->set_credentials->credentials->akid,
              (int)m->set_credentials->for_metrics);
    else if (m->actual_message_case != KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD &&
             m->actual_message_case != KPL__MESSAGE__ACTUAL_MESSAGE_PUT_RECORD_REF)
      fprintf(log_file, "message %d\n", (int)m->actual_message_case);
    fflush(log_file);
  }
  kpl__message__free_unpacked(m, NULL);
}

static void on_close(kp_channel *ch, int err, void *ud) {
  ev_break(ud, EVBREAK_ALL);
}

int main(int argc, char **argv) {
  if (argc != 3 || strcmp(argv[1], "--fd"))
    return 2;
  int fd = atoi(argv[2]);
  const char *once = getenv("KP_FAKE_DIE_ONCE"), *after = getenv("KP_FAKE_DIE_AFTER");
  if (once && after) {
    int mfd = open(once, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (mfd >= 0) {
      close(mfd);
      die_after = atol(after);
    }
  }
  if (getenv("KP_FAKE_LOG"))
    log_file = fopen(getenv("KP_FAKE_LOG"), "ae");
  if (getenv("KP_FAKE_DATA_LOG"))
    data_log = fopen(getenv("KP_FAKE_DATA_LOG"), "ae");
  struct ev_loop *loop = ev_default_loop(0);
  kp_channel_opts o = {0};
  o.rfd = fd;
  o.wfd = dup(fd);
  o.on_frame = on_frame;
  o.on_close = on_close;
  o.ud = loop;
  kp_channel *ch;
  if (kp_channel_new(loop, &o, &ch) != 0)
    return 1;
  chan = ch;
  b_loop = loop;
  if (getenv("KP_FAKE_STALL")) {
    /* Not reading, it would not see its client go: die with it (a failed test). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    stall = 1;
    ev_signal_init(&resume_w, resume_cb, SIGUSR1);
    ev_signal_start(loop, &resume_w);
  }
  ev_timer_init(&b_timer, timer_cb, 0., 0.);
  ev_run(loop, 0);
  kp_channel_free(ch);
  if (log_file)
    fclose(log_file);
  if (data_log)
    fclose(data_log);
  return 0;
}
