/* The braid agent: runs on each farm machine, takes work from a braid
 * server by long poll, runs it with the local executor, and reports back
 * (starts, output, progress, spawns and attributes through the runtime
 * channel, results). Reports are queued and sent again until the server
 * acknowledges them, so a server restart loses nothing: the agent keeps
 * running its jobs, registers again with what it holds, and reports them.
 *
 * Threads: br_agent_run runs the local executor on the calling thread's
 * libuv loop; one thread long-polls for work and one sends reports. */
#ifndef BRAID_AGENT_H
#define BRAID_AGENT_H

#include <braid/error.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_agent br_agent;

/* The most GPUs an agent offers (opts.gpus past it is cut down to it). */
#define BR_AGENT_MAX_GPUS 64

/* Whether c may stand in an agent's id (letters, digits, - _ . :); the
 * agent makes others '-'. */
static inline bool br_agent_id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == ':';
}

typedef struct br_agent_opts {
  const char *server;    /* http(s)://host:port */
  const char *token;     /* an agent token */
  const char *ca_file;   /* verify HTTPS against this CA (NULL: the system's) */
  const char *id;        /* this agent's id (default: the host name) */
  int cores;             /* 0: detected */
  int slots;             /* jobs at once (0: cores) */
  int64_t memory_mb;     /* 0: detected */
  int gpus;              /* -1: detected with nvidia-smi (0 when absent); at most
                            BR_AGENT_MAX_GPUS */
  const char *const *tags; /* NULL-terminated, may be NULL */
  const char *work_dir;  /* logs and runtime files (default: $TMPDIR/braid-agent-ID) */
  const char *braid_exe; /* for `braid ctl` in jobs */
  double grace;          /* SIGTERM to SIGKILL (0: 10 s) */
  bool once;             /* take one job, report it, and stop (a batch system's job) */
  double idle_exit;      /* with once: stop when no work came for this long (0: never) */
  double give_up;        /* with once: stop with an error when the server has not answered
                            for this long and no job runs here (0: never) */
  br_warn_fn *log;       /* told when the server cannot be reached (once, with why and
                            how often it tries again) and when it is reached again; may be
                            NULL. From the agent's threads. */
  void *log_ud;
} br_agent_opts;

int br_agent_open(const br_agent_opts *opts, br_agent **out, br_error *err);
/* The agent's loop (run br_agent_run on the thread that owns it). */
uv_loop_t *br_agent_loop(br_agent *a);
/* Serves until br_agent_stop, then kills running jobs (reported lost, so
 * they run elsewhere) and sends what is left to send (a few seconds at
 * most). */
int br_agent_run(br_agent *a, br_error *err);
/* Thread safe. */
void br_agent_stop(br_agent *a);
void br_agent_close(br_agent *a);

/* What this machine has: cores, memory (MB), NVIDIA GPUs (nvidia-smi; 0
 * when it is absent). */
void br_agent_detect(int *cores, int64_t *memory_mb, int *gpus);

#ifdef __cplusplus
}
#endif
#endif
