/* kinesis_producer: the daemon's entry point.
 *
 * Two ways to be launched:
 *  - KPL-compatible, so the official Java wrapper can drive us unchanged:
 *      kinesis_producer -o <fifo we read> -i <fifo we write> -c <HEX Message{configuration}>
 *                       -k <HEX Message{set_credentials}> -w <HEX ...metrics> -t -l <level>
 *  - our own, for our client library: `--fd N` names an inherited socket (a
 *    socketpair end) used both ways; the Configuration and the credentials arrive as
 *    the first messages on it, so no secret is ever in argv.
 * Either way the rest is the same: one libev loop, one framed channel, one pipeline. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <ev.h>

#include "common/config.h"
#include "common/log.h"
#include "ipc/channel.h"
#include "ipc/frame.h"
#include "producer/pipeline.h"
#include "producer/shared_data.h"
#include "proto/messages.pb-c.h"

struct daemon {
  struct ev_loop *loop;
  kp_config cfg;
  kp_channel *ch;
  kp_pipeline *pipeline;
  bool config_from_argv; /* KPL mode: the pipe never carries a Configuration */
  bool shutting_down;
  bool drained;
  kp_shared_data shared; /* the client's shared data file, when it offered one */
  char shared_error[256];
  bool shared_offered;
  /* Credentials that arrived before the pipeline existed. */
  Kpl__Message *early_creds[2];
  ev_signal sigterm, sigint;
  ev_prepare turn_w;
  uint64_t turn_start; /* user_bytes_received when this loop turn began */
  bool turn_paused;    /* input paused for the rest of this turn */
};

/* User data taken in per loop turn, at most (about: the frame that crosses it is taken
 * whole). Records referring to the shared data file are ~60-byte frames, so a 256 KiB
 * read (16 of them per event) could bring in tens of MB: the daemon then builds request
 * after request before curl sends any, holding it all (and colder caches) meanwhile.
 * Pausing input until the next turn lets the sends in between. */
#define KP_TURN_BYTES (1u << 20)

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: kinesis_producer -o IN_FIFO -i OUT_FIFO [-c HEX] [-k HEX] [-w HEX] [-t] [-l LEVEL]\n"
      "       kinesis_producer --fd N [--properties FILE] [-l LEVEL]\n"
      "  -o PATH          FIFO the daemon reads (KPL naming: the wrapper's out-pipe)\n"
      "  -i PATH          FIFO the daemon writes\n"
      "  -c HEX           hex of a serialized Message{configuration}\n"
      "  -k HEX / -w HEX  hex of Message{set_credentials} for Kinesis / CloudWatch\n"
      "                   (KPL compatibility only: prefer --fd, which keeps secrets off argv)\n"
      "  -t               accepted for KPL compatibility (no effect)\n"
      "  -l LEVEL         trace, debug, info, warning, error\n"
      "  --fd N           inherited socket used both ways; Configuration and\n"
      "                   SetCredentials arrive as messages on it\n"
      "  --properties F   KPL .properties file applied before any Configuration message\n");
}

static int hex_decode(const char *hex, uint8_t **out, size_t *out_len) {
  size_t n = strlen(hex);
  if (n % 2)
    return -1;
  uint8_t *b = malloc(n / 2 + 1);
  if (!b)
    return -1;
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
      free(b);
      return -1;
    }
    b[i] = (uint8_t)v;
  }
  *out = b;
  *out_len = n / 2;
  return 0;
}

static Kpl__Message *unpack_hex(const char *what, const char *hex) {
  uint8_t *b;
  size_t n;
  if (hex_decode(hex, &b, &n) != 0) {
    KP_LOG_ERROR("%s: not a hex string", what);
    return NULL;
  }
  Kpl__Message *m = kpl__message__unpack(NULL, n, b);
  free(b);
  if (!m)
    KP_LOG_ERROR("%s: not a serialized Message", what);
  return m;
}

static void send_to_client(const uint8_t *msg, size_t len, void *ud) {
  struct daemon *d = ud;
  if (d->ch && !kp_channel_closed(d->ch) && kp_channel_send(d->ch, msg, len) != 0)
    KP_LOG_ERROR("cannot send a %zu-byte message to the client", len);
}

static void apply_creds(struct daemon *d, const Kpl__Message *m) {
  const Kpl__SetCredentials *sc = m->set_credentials;
  if (sc && sc->credentials)
    kp_pipeline_set_credentials(d->pipeline, sc->has_for_metrics && sc->for_metrics,
                                sc->credentials->akid, sc->credentials->secret_key,
                                sc->credentials->token);
}

static void on_room(void *ud) {
  struct daemon *d = ud;
  KP_LOG_INFO("buffered data below the cap again: resuming input");
  kp_channel_resume_read(d->ch);
}

static int start_pipeline(struct daemon *d) {
  char err[512];
  if (kp_config_validate(&d->cfg, err, sizeof err) != 0) {
    KP_LOG_ERROR("invalid configuration: %s", err);
    return -1;
  }
  kp_log_set_level(d->cfg.log_level);
  d->pipeline = kp_pipeline_new(d->loop, &d->cfg, send_to_client, d, err, sizeof err);
  if (!d->pipeline) {
    KP_LOG_ERROR("cannot start: %s", err);
    return -1;
  }
  kp_pipeline_on_room(d->pipeline, on_room, d);
  if (d->shared_offered)
    kp_pipeline_use_shared_data(d->pipeline, &d->shared, d->shared_error);
  for (int i = 0; i < 2; i++)
    if (d->early_creds[i]) {
      apply_creds(d, d->early_creds[i]);
      kpl__message__free_unpacked(d->early_creds[i], NULL);
      d->early_creds[i] = NULL;
    }
  KP_LOG_INFO("started");
  return 0;
}

static void on_drained(void *ud) {
  struct daemon *d = ud;
  d->drained = true;
  ev_break(d->loop, EVBREAK_ALL);
}

static void begin_shutdown(struct daemon *d, const char *why) {
  if (d->shutting_down)
    return;
  d->shutting_down = true;
  KP_LOG_INFO("shutting down (%s): flushing %zu outstanding records", why,
              d->pipeline ? kp_pipeline_outstanding(d->pipeline) : (size_t)0);
  if (d->pipeline)
    kp_pipeline_shutdown(d->pipeline, on_drained, d);
  else
    on_drained(d);
}

static void on_frame(kp_channel *ch, const uint8_t *payload, size_t len, void *ud) {
  struct daemon *d = ud;
  if (d->pipeline) {
    kp_pipeline_on_message(d->pipeline, payload, len);
    /* Backpressure: stop reading until results free room; the writer's pipe fills. */
    if (kp_pipeline_full(d->pipeline)) {
      kp_channel_pause_read(ch);
    } else if (!d->turn_paused &&
               kp_pipeline_counters(d->pipeline)->user_bytes_received - d->turn_start >=
                   KP_TURN_BYTES) {
      d->turn_paused = true;
      kp_channel_pause_read(ch);
    }
    return;
  }
  /* Before the pipeline exists (our --fd mode): Configuration and credentials. */
  Kpl__Message *m = kpl__message__unpack(NULL, len, payload);
  if (!m) {
    KP_LOG_ERROR("dropping a malformed %zu-byte message", len);
    return;
  }
  if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_CONFIGURATION) {
    char err[512];
    if (m->configuration->has_shared_data_fd) {
      int fd = (int)m->configuration->shared_data_fd;
      d->shared_offered = true;
      /* Only a sealed memory file is mapped (and only then closed): any other number,
       * our own socket included, is refused and left alone. */
      int rc = -1;
      if (m->configuration->shared_data_fd > INT_MAX)
        snprintf(d->shared_error, sizeof d->shared_error, "fd %u is not a shared data file",
                 m->configuration->shared_data_fd);
      else
        rc = kp_shared_data_map(&d->shared, fd, d->shared_error, sizeof d->shared_error);
      if (rc != 0)
        KP_LOG_WARNING("shared data file not used, records come through the pipe: %s",
                       d->shared_error);
    }
    if (kp_config_from_proto(&d->cfg, m->configuration, err, sizeof err) != 0) {
      KP_LOG_ERROR("invalid Configuration message: %s", err);
      kpl__message__free_unpacked(m, NULL);
      begin_shutdown(d, "invalid configuration");
      return;
    }
    kpl__message__free_unpacked(m, NULL);
    if (start_pipeline(d) != 0)
      begin_shutdown(d, "cannot start");
    return;
  }
  if (m->actual_message_case == KPL__MESSAGE__ACTUAL_MESSAGE_SET_CREDENTIALS) {
    int i = m->set_credentials->has_for_metrics && m->set_credentials->for_metrics;
    if (d->early_creds[i])
      kpl__message__free_unpacked(d->early_creds[i], NULL);
    d->early_creds[i] = m;
    return;
  }
  /* Anything else before a Configuration: start with what we have (defaults and
   * the properties file) rather than drop records. */
  kpl__message__free_unpacked(m, NULL);
  if (start_pipeline(d) != 0) {
    begin_shutdown(d, "cannot start");
    return;
  }
  kp_pipeline_on_message(d->pipeline, payload, len);
}

/* A frame over the 11 MiB limit: its payload is skipped unread (nothing of the claimed
 * size is allocated) and the stream goes on; the sender learns nothing from us since
 * an unread frame has no id to answer. */
static void on_oversized(kp_channel *ch, size_t claimed, void *ud) {
  KP_LOG_ERROR("rejected a frame of %zu bytes: over the %u-byte limit; skipped", claimed,
               (unsigned)KP_FRAME_MAX_DEFAULT);
}

static void on_close(kp_channel *ch, int err, void *ud) {
  struct daemon *d = ud;
  if (err)
    KP_LOG_ERROR("input channel closed: %s", kp_channel_strerror(err));
  begin_shutdown(d, err ? "input error" : "end of input");
}

/* A new loop turn: input may flow again (unless the pipeline holds too much). */
static void on_turn(struct ev_loop *loop, ev_prepare *w, int revents) {
  struct daemon *d = w->data;
  if (!d->pipeline)
    return;
  d->turn_start = kp_pipeline_counters(d->pipeline)->user_bytes_received;
  if (d->turn_paused) {
    d->turn_paused = false;
    if (!kp_pipeline_full(d->pipeline))
      kp_channel_resume_read(d->ch);
  }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
  begin_shutdown(w->data, w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int open_fifo(const char *path, int flags) {
  int fd;
  do
    fd = open(path, flags | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  return fd;
}

int main(int argc, char **argv) {
  /* Request bodies (up to 5 MiB), large records and their aggregates are allocated and
   * freed all the time: with glibc's defaults each one is a fresh mmap or lands above
   * the trim threshold, so its pages fault in (zeroed) again every time — a third of
   * the daemon's CPU for 50 KiB records. Keep them in the heap; the pipeline trims it
   * with malloc_trim once the daemon goes idle. */
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  struct daemon d = {0};
  const char *in_path = NULL, *out_path = NULL, *cfg_hex = NULL, *cred_hex = NULL,
             *mcred_hex = NULL, *level = NULL, *props = NULL;
  int sock_fd = -1;
  static const struct option longopts[] = {{"fd", required_argument, NULL, 'F'},
                                           {"properties", required_argument, NULL, 'P'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "o:i:c:k:w:tl:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'o':
      in_path = optarg;
      break;
    case 'i':
      out_path = optarg;
      break;
    case 'c':
      cfg_hex = optarg;
      break;
    case 'k':
      cred_hex = optarg;
      break;
    case 'w':
      mcred_hex = optarg;
      break;
    case 't':
      break;
    case 'l':
      level = optarg;
      break;
    case 'F':
      sock_fd = atoi(optarg);
      break;
    case 'P':
      props = optarg;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  kp_log_set_ident("kinesis_producer");
  if (level) {
    kp_log_level lvl;
    if (kp_log_level_from_string(level, &lvl) != 0) {
      fprintf(stderr, "kinesis_producer: -l %s: expected trace, debug, info, warning or error\n",
              level);
      return 2;
    }
    kp_log_set_level(lvl);
  }
  if ((sock_fd < 0) == !(in_path && out_path)) {
    fprintf(stderr, "kinesis_producer: give either -o and -i, or --fd\n");
    usage(stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);

  kp_config_init(&d.cfg);
  char err[512];
  if (props && kp_config_load_properties(&d.cfg, props, err, sizeof err) != 0) {
    fprintf(stderr, "kinesis_producer: %s\n", err);
    return 2;
  }
  if (cfg_hex) {
    Kpl__Message *m = unpack_hex("-c", cfg_hex);
    if (!m || m->actual_message_case != KPL__MESSAGE__ACTUAL_MESSAGE_CONFIGURATION) {
      fprintf(stderr, "kinesis_producer: -c must hold a Message with a Configuration\n");
      return 2;
    }
    int rc = kp_config_from_proto(&d.cfg, m->configuration, err, sizeof err);
    kpl__message__free_unpacked(m, NULL);
    if (rc != 0) {
      fprintf(stderr, "kinesis_producer: -c: %s\n", err);
      return 2;
    }
    d.config_from_argv = true;
  }
  const char *cred_args[2] = {cred_hex, mcred_hex};
  for (int i = 0; i < 2; i++) {
    if (!cred_args[i])
      continue;
    Kpl__Message *m = unpack_hex(i ? "-w" : "-k", cred_args[i]);
    if (!m || m->actual_message_case != KPL__MESSAGE__ACTUAL_MESSAGE_SET_CREDENTIALS) {
      fprintf(stderr, "kinesis_producer: %s must hold a Message with SetCredentials\n",
              i ? "-w" : "-k");
      return 2;
    }
    d.early_creds[i] = m;
  }
  if (level) /* -l wins over LogLevel in the configuration */
    kp_config_set(&d.cfg, "LogLevel", level, err, sizeof err);

  int rfd, wfd;
  if (sock_fd >= 0) {
    rfd = sock_fd;
    wfd = dup(sock_fd);
    if (wfd < 0) {
      perror("kinesis_producer: dup");
      return 1;
    }
  } else {
    /* The KPL wrapper opens its read end (-i) first, then -o; blocking opens in the
     * other order would deadlock. */
    wfd = open_fifo(out_path, O_WRONLY);
    if (wfd < 0) {
      fprintf(stderr, "kinesis_producer: open %s: %s\n", out_path, strerror(errno));
      return 1;
    }
    rfd = open_fifo(in_path, O_RDONLY);
    if (rfd < 0) {
      fprintf(stderr, "kinesis_producer: open %s: %s\n", in_path, strerror(errno));
      return 1;
    }
  }

  d.loop = ev_default_loop(EVFLAG_AUTO);
  kp_channel_opts co = {0};
  co.rfd = rfd;
  co.wfd = wfd;
  co.on_frame = on_frame;
  co.on_close = on_close;
  co.on_oversized = on_oversized;
  co.ud = &d;
  /* Records arrive in bulk: 256 KiB reads (the channel's default is 64 KiB) took the
   * daemon from 79 to 73 us per 50-KiB record and from 2.17 to 1.97 us per 1-KiB one
   * (means of five A/B pairs); they cost 192 KiB more buffer, once. */
  co.read_chunk = 256u * 1024u;
  int rc = kp_channel_new(d.loop, &co, &d.ch);
  if (rc != 0) {
    fprintf(stderr, "kinesis_producer: channel: %s\n", kp_channel_strerror(rc));
    return 1;
  }
  ev_prepare_init(&d.turn_w, on_turn);
  d.turn_w.data = &d;
  ev_prepare_start(d.loop, &d.turn_w);
  ev_signal_init(&d.sigterm, on_signal, SIGTERM);
  d.sigterm.data = &d;
  ev_signal_start(d.loop, &d.sigterm);
  ev_signal_init(&d.sigint, on_signal, SIGINT);
  d.sigint.data = &d;
  ev_signal_start(d.loop, &d.sigint);

  if ((d.config_from_argv || sock_fd < 0) && start_pipeline(&d) != 0)
    return 1;

  ev_run(d.loop, 0);

  /* Drained: deliver what is still queued for the client, bounded in time. */
  for (int i = 0; i < 1000 && d.ch && kp_channel_pending_bytes(d.ch) && !kp_channel_closed(d.ch);
       i++)
    ev_run(d.loop, EVRUN_ONCE);
  const kp_counters *k = d.pipeline ? kp_pipeline_counters(d.pipeline) : NULL;
  if (k)
    KP_LOG_INFO("exiting: %llu received, %llu put, %llu failed, %llu rejected, %llu retried, "
                "%llu requests (%llu failed), %llu wrong-shard Kinesis records",
                (unsigned long long)k->user_records_received,
                (unsigned long long)k->user_records_put, (unsigned long long)k->user_records_failed,
                (unsigned long long)k->user_records_rejected,
                (unsigned long long)k->user_records_retried, (unsigned long long)k->requests_sent,
                (unsigned long long)k->requests_failed, (unsigned long long)k->wrong_shard);
  kp_pipeline_free(d.pipeline);
  kp_shared_data_unmap(&d.shared); /* after the last record that could point into it */
  kp_channel_free(d.ch);
  for (int i = 0; i < 2; i++)
    if (d.early_creds[i])
      kpl__message__free_unpacked(d.early_creds[i], NULL);
  kp_config_free(&d.cfg);
  return d.drained ? 0 : 1;
}
