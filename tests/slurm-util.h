/* Helpers for the slurm executor's tests: they run the real `braid run
 * --executor slurm` against the private one-node cluster the ctest fixture
 * "slurm" starts (scripts/slurm-cluster.sh; SLURM_CONF points at it). */
#ifndef BR_TEST_SLURM_UTIL_H
#define BR_TEST_SLURM_UTIL_H

#include <braid/store.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "farm-util.h" /* farm_bin, farm_src, farm_now, farm_spawn, farm_wait, farm_slurp */



/* Whether the cluster's queue is empty (or squeue cannot tell). */
static bool queue_empty(void) {
  FILE *p = popen("squeue -h -o '%i' 2>/dev/null", "r");
  if (!p) return true;
  char line[256];
  bool empty = !fgets(line, sizeof line, p);
  pclose(p);
  return empty;
}

/* The cluster must be there: a missing one is a failure, never a skip.
 * The tests run one at a time (RESOURCE_LOCK slurm_slots), so a job in the
 * queue now is one an earlier test left when it failed before its braid
 * could scancel it: it would hold the node's cores and fail this test too,
 * so it is cancelled first. Only on the tests' own cluster (a SLURM_CONF
 * under slurm-cluster/, as the fixture makes), never on a site's. */
static __attribute__((unused)) void need_cluster(void) {
  const char *conf = getenv("SLURM_CONF");
  if (!conf || access(conf, R_OK) != 0)
    br_test_fail(__FILE__, __LINE__, "no Slurm cluster: SLURM_CONF (%s) is not readable; the ctest "
                 "fixture 'slurm' (scripts/slurm-cluster.sh) starts one", conf ? conf : "unset");
  if (!strstr(conf, "/slurm-cluster/") || queue_empty()) return;
  fprintf(stderr, "  cancelling the jobs an earlier test left in the queue\n");
  if (system("scancel --quiet --user \"$(id -un)\"") != 0)
    fprintf(stderr, "  scancel failed: the queue may hold them still\n");
  for (double end = farm_now() + 30; !queue_empty() && farm_now() < end;) usleep(200 * 1000);
}


/* `braid run GRAPH --store braid.db --executor slurm ... EXTRA` in dir,
 * output to dir/run.log. */
static __attribute__((unused)) pid_t start_slurm_run(const char *dir, const char *graph, const char *extra) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "exec '%s' run '%s' --store braid.db --executor slurm --slurm-listen 127.0.0.1:0 "
           "--slurm-opt reconcile=1 --slurm-opt output=%s/slurm-%%A_%%a.out --quiet %s",
           farm_bin(), graph, dir, extra ? extra : "");
  return farm_spawn(dir, "run.log", cmd);
}


/* Waits up to secs for the process; -1 when it is still running. */
static __attribute__((unused)) int wait_exit_for(pid_t pid, double secs) {
  double end = farm_now() + secs;
  int st;
  while (farm_now() < end) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    usleep(50 * 1000);
  }
  return -1;
}


static __attribute__((unused)) char *capture(const char *cmd) {
  FILE *p = popen(cmd, "r");
  char *buf = calloc(1, 1 << 20);
  size_t n = p ? fread(buf, 1, (1 << 20) - 1, p) : 0;
  buf[n] = '\0';
  if (p) pclose(p);
  return buf;
}

static __attribute__((unused)) void fail_with_log(const char *dir, const char *what, int rc) {
  char path[1024];
  snprintf(path, sizeof path, "%s/run.log", dir);
  char *text = br_test_slurp(path);
  br_test_fail(__FILE__, __LINE__, "%s (exit %d); run.log:\n%s", what, rc, text);
}

/* Writes a graph file into dir. */
static __attribute__((unused)) char *write_graph(const char *dir, const char *name, const char *json) {
  char *path = NULL;
  if (asprintf(&path, "%s/%s.json", dir, name) < 0) abort();
  FILE *f = fopen(path, "w");
  if (!f) br_test_fail(__FILE__, __LINE__, "cannot write %s", path);
  fputs(json, f);
  fclose(f);
  return path;
}

/* The invocations in dir/braid.db, in order. */
typedef struct invs {
  int n;
  br_inv_info v[4096];
} invs;

static __attribute__((unused)) int add_inv(void *ud, br_inv_info *i) {
  invs *l = ud;
  if (l->n < 4096) l->v[l->n++] = *i;
  else br_inv_info_free(i);
  free(i);
  return 0;
}

static __attribute__((unused)) invs *invocations(const char *dir) {
  invs *l = calloc(1, sizeof *l);
  char path[1024];
  snprintf(path, sizeof path, "%s/braid.db", dir);
  br_store *s;
  br_error err;
  if (br_store_open(path, BR_STORE_READONLY, &s, &err) != BR_OK) return l;
  br_store_inv_query(s, 0, add_inv, l, &err);
  br_store_close(s);
  return l;
}

static __attribute__((unused)) void invs_free(invs *l) {
  for (int i = 0; i < l->n; i++) br_inv_info_free(&l->v[i]);
  free(l);
}

static __attribute__((unused)) int count_status(const invs *l, const char *status) {
  int n = 0;
  for (int i = 0; i < l->n; i++)
    if (l->v[i].row.status && strcmp(l->v[i].row.status, status) == 0) n++;
  return n;
}

/* Waits until n invocations of this run are running (their Slurm jobs
 * took them). */
static __attribute__((unused)) void wait_running(const char *dir, int n, double secs) {
  double end = farm_now() + secs;
  while (farm_now() < end) {
    invs *l = invocations(dir);
    int r = count_status(l, "running");
    invs_free(l);
    if (r >= n) return;
    usleep(100 * 1000);
  }
  fail_with_log(dir, "jobs did not start in Slurm", -1);
}

/* Slurm jobs named braid:NODE still pending or running, of the braid run
 * in dir (their working directory): not those a test before left to end. */
static __attribute__((unused)) int slurm_active(const char *dir, const char *node) {
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "squeue -h -r -t PENDING,RUNNING,CONFIGURING,COMPLETING -n 'braid:%s' -o '%%i|%%Z'",
           node);
  char *out = capture(cmd), real[PATH_MAX];
  if (!realpath(dir, real)) snprintf(real, sizeof real, "%s", dir);
  dir = real;
  int n = 0;
  size_t dl = strlen(dir);
  for (char *line = out; *line;) {
    char *end = strchr(line, '\n'), *bar = strchr(line, '|');
    if (!end) break;
    if (bar && bar < end && (size_t)(end - bar - 1) == dl && strncmp(bar + 1, dir, dl) == 0) n++;
    line = end + 1;
  }
  free(out);
  return n;
}

/* Processes whose command line contains marker. */
static __attribute__((unused)) int procs_with(const char *marker) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "pgrep -f -c -- '%s'", marker);
  char *out = capture(cmd);
  int n = atoi(out);
  free(out);
  return n;
}

#endif
