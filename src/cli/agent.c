/* braid agent: runs on each farm machine; takes work from a braid server
 * and runs it here (see include/braid/agent.h). */
#include <braid/agent.h>

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "remote.h"

/* How long a --once agent (a batch job holding a slot) waits for a server
 * that does not answer. */
#define DEFAULT_GIVE_UP 120.0

static void agent_usage(FILE *out) {
  fprintf(out,
          "usage: braid agent --server URL [--token TOKEN] [--id ID] [--slots N] [--cores N]\n"
          "                   [--memory MB] [--gpus N] [--tag TAG]... [--work-dir DIR]\n\n"
          "Runs on a farm machine: registers with the braid server (its id, cores, memory,\n"
          "GPUs and tags), takes work by long poll, runs it here with the local executor,\n"
          "and reports output, progress, spawned children and results back. When the\n"
          "server restarts, running jobs go on and are reported to the new server.\n\n"
          "  --server URL     the server (default $BRAID_SERVER or the config file)\n"
          "  --token TOKEN    an agent token (default $BRAID_TOKEN, $BRAID_TOKEN_FILE)\n"
          "  --id ID          this agent's id (default: the host name)\n"
          "  --slots N        jobs at once (default: the cores)\n"
          "  --cores N        cores to offer (default: all of them)\n"
          "  --memory MB      memory to offer (default: all of it)\n"
          "  --gpus N         GPUs to offer, at most 64 (default: what nvidia-smi lists; a\n"
          "                   number given is offered as it is, whatever nvidia-smi says)\n"
          "  --tag TAG        a tag jobs can ask for (a node's \"tags\"), repeatable\n"
          "  --work-dir DIR   job logs and runtime files (default $TMPDIR/braid-agent-ID);\n"
          "                   one agent at a time (agent.lock)\n"
          "  --grace TIME     on stop, time between SIGTERM and SIGKILL for jobs: seconds, or\n"
          "                   with s, m, h (default 10)\n"
          "  --ca FILE        verify an HTTPS server against this CA certificate\n"
          "  --once           take one job, report it, and exit (how a Slurm job of the\n"
          "                   slurm executor runs; its tag pins the job it takes)\n"
          "  --idle-exit TIME with --once: exit when no work came for this long (30, 2m)\n"
          "  --give-up TIME   with --once: exit 1 when the server has not answered for this\n"
          "                   long and no job runs here (default 2m; a job that runs is let\n"
          "                   end, then its result has that long to be reported). Without\n"
          "                   --once the agent waits for its server for ever\n\n"
          "Jobs get BRAID_WORKER (this agent's id) and CUDA_VISIBLE_DEVICES when they asked\n"
          "for GPUs. SIGINT or SIGTERM stops the agent: running jobs are killed and reported\n"
          "lost, so they run elsewhere, and it tells the server it leaves. It stops by itself\n"
          "(exit 1) when the server refuses its token (revoked) or its id (another live\n"
          "agent has it: give each machine its own --id). An agent restarted after a crash\n"
          "is taken at once, its lost jobs run again.\n");
}

/* An id is letters, digits and - _ . : (the agent made others '-'). A
 * given one that is not is refused; the host name is made one so. */
static bool id_ok(const char *id) {
  for (const char *p = id; *p; p++)
    if (!br_agent_id_char(*p)) return false;
  return *id != '\0';
}

/* What the agent offers: the options, and for those not given, what this
 * machine has (as br_agent_open would take it), said in the start line. */
static void resolve(br_agent_opts *o, char *host, size_t size) {
  int cores, gpus = 0;
  int64_t memory_mb;
  br_agent_detect(&cores, &memory_mb, o->gpus < 0 ? &gpus : NULL);
  if (o->cores <= 0) o->cores = cores;
  if (o->slots <= 0) o->slots = o->cores;
  if (o->memory_mb <= 0) o->memory_mb = memory_mb;
  if (o->gpus < 0) o->gpus = gpus < BR_AGENT_MAX_GPUS ? gpus : BR_AGENT_MAX_GPUS;
  if (!o->id) {
    if (gethostname(host, size - 1) != 0 || !*host) snprintf(host, size, "localhost");
    host[size - 1] = '\0';
    for (char *p = host; *p; p++)
      if (!br_agent_id_char(*p)) *p = '-';
    o->id = host;
  }
}

static br_agent *the_agent;
static uv_signal_t stop_signals[2];

static void on_signal(uv_signal_t *h, int signum) {
  (void)h;
  (void)signum;
  br_agent_stop(the_agent);
  uv_signal_stop(&stop_signals[0]);
  uv_signal_stop(&stop_signals[1]);
}

/* The agent's news about its server (cannot reach it, reached it). */
static void agent_log(void *ud, const char *msg) {
  (void)ud;
  fprintf(stderr, "braid: agent: %s\n", msg);
}

int br_cli_agent(int argc, char **argv) {
  static const struct option opts[] = {
      {"server", required_argument, NULL, 's'}, {"token", required_argument, NULL, 't'},
      {"id", required_argument, NULL, 'i'},     {"slots", required_argument, NULL, 'n'},
      {"cores", required_argument, NULL, 'c'},  {"memory", required_argument, NULL, 'm'},
      {"gpus", required_argument, NULL, 'g'},   {"tag", required_argument, NULL, 'T'},
      {"work-dir", required_argument, NULL, 'w'}, {"grace", required_argument, NULL, 'G'},
      {"ca", required_argument, NULL, 'C'},     {"help", no_argument, NULL, 'h'},
      {"once", no_argument, NULL, 'O'},         {"idle-exit", required_argument, NULL, 'I'},
      {"give-up", required_argument, NULL, 'U'},
      {NULL, 0, NULL, 0},
  };
  br_agent_opts o = {.gpus = -1};
  const char *server = NULL, *token = NULL;
  const char *tags[65] = {NULL};
  int ntags = 0, c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    char *end = NULL;
    switch (c) {
    case 's': server = optarg; break;
    case 't': token = optarg; break;
    case 'i':
      if (!id_ok(optarg)) {
        br_cli_errorf("--id: '%s' is not an id (letters, digits, - _ . : only)", optarg);
        return BR_EXIT_USAGE;
      }
      o.id = optarg;
      break;
    case 'w': o.work_dir = optarg; break;
    case 'C': o.ca_file = optarg; break;
    case 'n':
    case 'c':
    case 'g': {
      long v = strtol(optarg, &end, 10);
      if (c == 'g' && !*end && v > BR_AGENT_MAX_GPUS) {
        br_cli_errorf("--gpus: %ld is more than an agent offers (at most %d)", v,
                      BR_AGENT_MAX_GPUS);
        return BR_EXIT_USAGE;
      }
      if (*end || v < (c == 'g' ? 0 : 1) || v > 100000) {
        br_cli_errorf("--%s needs a %s number", c == 'n' ? "slots" : c == 'c' ? "cores" : "gpus",
                      c == 'g' ? "non-negative" : "positive");
        return BR_EXIT_USAGE;
      }
      if (c == 'n') o.slots = (int)v;
      else if (c == 'c') o.cores = (int)v;
      else o.gpus = (int)v;
      break;
    }
    case 'm':
      o.memory_mb = strtoll(optarg, &end, 10);
      if (*end || o.memory_mb < 1) {
        br_cli_errorf("--memory needs megabytes (a positive number)");
        return BR_EXIT_USAGE;
      }
      break;
    case 'G':
      if ((o.grace = br_cli_time_option("--grace", optarg)) < 0) return BR_EXIT_USAGE;
      break;
    case 'O': o.once = true; break;
    case 'I':
      if ((o.idle_exit = br_cli_time_option("--idle-exit", optarg)) < 0) return BR_EXIT_USAGE;
      break;
    case 'U':
      if ((o.give_up = br_cli_time_option("--give-up", optarg)) < 0) return BR_EXIT_USAGE;
      break;
    case 'T':
      if (ntags == 64 || !*optarg) {
        br_cli_errorf(ntags == 64 ? "at most 64 tags" : "--tag needs a name");
        return BR_EXIT_USAGE;
      }
      tags[ntags++] = optarg;
      break;
    case 'h': agent_usage(stdout); return BR_EXIT_OK;
    default: agent_usage(stderr); return BR_EXIT_USAGE;
    }
  }
  if (optind != argc) {
    agent_usage(stderr);
    return BR_EXIT_USAGE;
  }
  if (o.give_up > 0 && !o.once) { /* a farm machine waits for its server */
    br_cli_errorf("--give-up is for --once agents: a plain agent waits for its server");
    return BR_EXIT_USAGE;
  }
  if (o.idle_exit > 0 && !o.once) { /* it was ignored */
    br_cli_errorf("--idle-exit is for --once agents: a plain agent waits for work for ever");
    return BR_EXIT_USAGE;
  }
  if (o.once && !o.give_up) o.give_up = DEFAULT_GIVE_UP;
  br_remote r;
  if (br_remote_open(&r, server, token)) return BR_EXIT_USAGE;
  char exe[PATH_MAX] = "";
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  exe[n > 0 ? n : 0] = '\0';
  o.server = r.server;
  o.token = r.token;
  if (!o.ca_file && getenv("BRAID_CA") && *getenv("BRAID_CA")) o.ca_file = getenv("BRAID_CA");
  o.tags = tags;
  o.braid_exe = exe;
  o.log = agent_log;
  char host[256];
  resolve(&o, host, sizeof host);
  br_error err;
  br_agent *a;
  if (br_agent_open(&o, &a, &err)) {
    br_cli_errorf("%s", err.msg);
    br_remote_close(&r);
    return BR_EXIT_FAILED;
  }
  the_agent = a;
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t *loop = br_agent_loop(a);
  br_cli_catch_stop(loop, stop_signals, on_signal, NULL, NULL);
  char tagl[64 * 32] = "";
  for (int i = 0; i < ntags; i++)
    snprintf(tagl + strlen(tagl), sizeof tagl - strlen(tagl), "%s%s", i ? "," : "", tags[i]);
  fprintf(stderr,
          "braid: agent %s working for %s: %d slots, %d cores, %lld MB of memory, %d GPUs, "
          "tags %s\n",
          o.id, r.server, o.slots, o.cores, (long long)o.memory_mb, o.gpus, ntags ? tagl : "none");
  br_error_clear(&err);
  int rc = br_agent_run(a, &err);
  if (rc) br_cli_errorf("%s", err.msg);
  br_cli_release_stop(stop_signals);
  br_agent_close(a);
  br_remote_close(&r);
  fprintf(stderr, "braid: agent stopped\n");
  return rc ? BR_EXIT_FAILED : BR_EXIT_OK;
}
