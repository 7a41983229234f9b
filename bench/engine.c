/* bench/engine: the stand-in reference scenario (examples/standin.json)
 * replicated K times (K = 1, 10, 100, 1000 starting tasks) on a durable
 * SQLite store (WAL, synchronous=FULL). Each K runs in its own process so its
 * peak memory is its own. Prints task transitions per second, peak memory,
 * peak tasks held in memory, and the time per transition at each K relative
 * to K = 10 (the baseline, measured in the same run).
 *
 * usage: bench-engine [--ks 1,10,100,1000] [--graph examples/standin.json]
 *                     [--dir /tmp] [--sync normal] [--pg URI]
 * With --pg it also runs every K on PostgreSQL (the database's tables are
 * dropped before each K; bench/engine-pg.sh starts a private server).
 * Targets (2 cores): >= 100,000 transitions/s at K = 1000; time per
 * transition at K = 1000 within 1.5x of K = 10; peak memory flat in K. */
#include <braid/engine.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct result {
  double seconds;
  uint64_t transitions;
  uint64_t commits;
  long peak_rss_kb;
  size_t peak_tasks;
  int ok;
} result;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static result run_k(const char *graph_path, const char *dir, int k, const char *sync,
                    const char *pg) {
  result r = {0};
  char store[1024];
  snprintf(store, sizeof store, "%s/bench-engine-%d-%d.db", dir, k, (int)getpid());
  char uri[1100];
  snprintf(uri, sizeof uri, "%s%s%s", store, sync ? "?sync=" : "", sync ? sync : "");
  unlink(store);
  if (pg) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "psql -q '%s' -c 'DROP TABLE IF EXISTS tasks, splits, graphs, invocations, braid_meta' "
             ">/dev/null 2>&1", pg);
    if (system(cmd) != 0) fprintf(stderr, "bench-engine: could not reset the database\n");
    snprintf(uri, sizeof uri, "%s", pg);
  }
  br_error err;
  br_store *s;
  if (br_store_open(uri, 0, &s, &err)) {
    fprintf(stderr, "bench-engine: %s\n", err.msg);
    return r;
  }
  br_engine *e = br_engine_open(s, NULL, &err);
  br_graph *g = br_graph_load_file(graph_path, &err);
  int64_t gid;
  if (!e || !g || br_engine_add_graph(e, g, &gid, &err)) {
    char buf[2048];
    fprintf(stderr, "bench-engine: %s\n", br_error_format(&err, buf, sizeof buf));
    return r;
  }
  double t0 = now();
  for (int i = 0; i < k; i++) {
    json_t *a = json_pack("{sisiss}", "frame_start", 1, "frame_end", 100, "shot", "sh010");
    int64_t id;
    br_engine_submit(e, gid, "start", a, NULL, &id, &err);
    json_decref(a);
  }
  if (br_engine_run(e, &err)) {
    fprintf(stderr, "bench-engine: %s\n", err.msg);
    return r;
  }
  r.seconds = now() - t0;
  br_engine_stats st;
  br_engine_get_stats(e, &st);
  r.transitions = st.transitions;
  r.commits = st.commits;
  r.peak_tasks = st.peak_tasks_in_memory;
  /* check the work really happened: K tasks at the end */
  int64_t counts[BR_TASK_NSTATES];
  br_task_filter f = BR_TASK_FILTER_ALL;
  f.node = "end";
  br_store_task_count(s, &f, counts, &err);
  r.ok = counts[BR_TASK_DONE] == k;
  br_engine_free(e);
  br_store_close(s);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  r.peak_rss_kb = ru.ru_maxrss;
  char side[1200];
  unlink(store);
  snprintf(side, sizeof side, "%s-wal", store);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", store);
  unlink(side);
  return r;
}

static result run_child(const char *graph, const char *dir, int k, const char *sync,
                        const char *pg) {
  int fds[2];
  result r = {0};
  if (pipe(fds)) return r;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    result x = run_k(graph, dir, k, sync, pg);
    if (write(fds[1], &x, sizeof x) != (ssize_t)sizeof x) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  if (read(fds[0], &r, sizeof r) != (ssize_t)sizeof r) memset(&r, 0, sizeof r);
  close(fds[0]);
  waitpid(pid, NULL, 0);
  return r;
}

int main(int argc, char **argv) {
  const char *graph = "examples/standin.json", *dir = "/tmp", *sync = NULL, *pg = NULL;
  char ks_buf[256] = "1,10,100,1000";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--ks") && i + 1 < argc) snprintf(ks_buf, sizeof ks_buf, "%s", argv[++i]);
    else if (!strcmp(argv[i], "--graph") && i + 1 < argc) graph = argv[++i];
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--sync") && i + 1 < argc) sync = argv[++i];
    else if (!strcmp(argv[i], "--pg") && i + 1 < argc) pg = argv[++i];
    else {
      fprintf(stderr, "usage: bench-engine [--ks 1,10,100,1000] [--graph FILE] [--dir DIR] [--sync normal] [--pg URI]\n");
      return 2;
    }
  }
  int ks[16], nk = 0;
  for (char *p = strtok(ks_buf, ","); p && nk < 16; p = strtok(NULL, ",")) ks[nk++] = atoi(p);
  for (int pass = 0; pass < (pg ? 2 : 1); pass++) {
    const char *use_pg = pass ? pg : NULL;
    result res[16];
    double base = 0;
    printf("%sbench/engine: stand-in scenario x K on %s\n", pass ? "\n" : "",
           use_pg ? "PostgreSQL" : (sync && !strcmp(sync, "normal")) ? "SQLite (synchronous=NORMAL)"
                                                                      : "SQLite (synchronous=FULL)");
    printf("%6s %10s %9s %8s %12s %9s %12s %s\n", "K", "transitns", "seconds", "commits", "trans/s",
           "us/trans", "peak RSS MB", "peak tasks");
    for (int i = 0; i < nk; i++) {
      res[i] = run_child(graph, dir, ks[i], sync, use_pg);
      if (!res[i].ok) {
        fprintf(stderr, "bench-engine: K=%d did not finish correctly\n", ks[i]);
        return 1;
      }
      double us = res[i].seconds * 1e6 / (double)res[i].transitions;
      if (ks[i] == 10) base = us;
      printf("%6d %10llu %9.3f %8llu %12.0f %9.3f %12.1f %zu\n", ks[i],
             (unsigned long long)res[i].transitions, res[i].seconds,
             (unsigned long long)res[i].commits, (double)res[i].transitions / res[i].seconds, us,
             (double)res[i].peak_rss_kb / 1024.0, res[i].peak_tasks);
      fflush(stdout);
    }
    if (base > 0) {
      printf("time per transition relative to K=10:");
      for (int i = 0; i < nk; i++)
        printf("  K=%d %.2fx", ks[i], res[i].seconds * 1e6 / (double)res[i].transitions / base);
      printf("\n");
    }
  }
  return 0;
}
