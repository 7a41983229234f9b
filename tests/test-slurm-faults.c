/* The slurm executor when Slurm ends jobs on its own: a job scancelled from
 * outside braid is seen and retried, a job past its Slurm time limit is
 * recorded as timed out, and sbatch refusing a job is a clear error. */
#include "slurm-util.h"

/* The Slurm job id of the running invocation of node. */
static void slurm_job_of(const char *node, char *out, size_t size) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "squeue -h -r -t RUNNING -n 'braid:%s' -o '%%i'", node);
  char *o = capture(cmd);
  o[strcspn(o, "\n")] = '\0';
  snprintf(out, size, "%s", o);
  free(o);
}

TEST(scancel_from_outside_is_seen_and_retried) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-scancel");
  /* the first attempt waits to be killed; the second one succeeds */
  char *graph = write_graph(dir, "victim",
                            "{\"name\": \"victim\", \"start\": {\"node\": \"victim\"},\n"
                            " \"nodes\": [{\"name\": \"victim\", \"type\": \"command\", \"params\": {\n"
                            "   \"shell\": \"if [ -e first ]; then echo second; exit 0; fi; touch first; exec sleep 311\",\n"
                            "   \"retries\": 2}}]}\n");
  pid_t pid = start_slurm_run(dir, graph, "");
  wait_running(dir, 1, 60);
  char job[64] = "";
  for (int i = 0; i < 100 && !job[0]; i++) {
    slurm_job_of("victim", job, sizeof job);
    if (!job[0]) usleep(100 * 1000);
  }
  CHECK(job[0]);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "scancel %s", job);
  CHECK_EQ_INT(system(cmd), 0);
  int rc = wait_exit_for(pid, 90);
  if (rc != 0) fail_with_log(dir, "braid run did not finish after the scancel", rc);
  invs *l = invocations(dir);
  CHECK_EQ_INT(l->n, 2);
  CHECK_EQ_STR(l->v[0].row.status, "lost");
  CHECK_CONTAINS(l->v[0].row.error, "cancelled outside braid");
  CHECK_CONTAINS(l->v[0].row.error, job);
  CHECK_EQ_STR(l->v[1].row.status, "ok");
  invs_free(l);
  CHECK_EQ_INT(procs_with("[s]leep 311"), 0);
  free(graph);
  free(dir);
}

TEST(past_the_slurm_time_limit_is_timed_out) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-timelimit");
  /* Slurm's smallest limit is a minute, checked every 30 s or so */
  char *graph = write_graph(dir, "slow",
                            "{\"name\": \"slow\", \"start\": {\"node\": \"slow\"},\n"
                            " \"nodes\": [{\"name\": \"slow\", \"type\": \"command\", \"params\": {\n"
                            "   \"argv\": [\"sleep\", \"313\"], \"slurm\": {\"time\": 1}}}]}\n");
  double t0 = mono_s();
  int rc = wait_exit_for(start_slurm_run(dir, graph, ""), 240);
  if (rc != 1) fail_with_log(dir, "braid run should fail (exit 1) with the task timed out", rc);
  fprintf(stderr, "  timed out after %.0f s\n", mono_s() - t0);
  invs *l = invocations(dir);
  CHECK_EQ_INT(l->n, 1); /* timeouts are not retried */
  CHECK_EQ_STR(l->v[0].row.status, "timeout");
  CHECK_CONTAINS(l->v[0].row.error, "time limit");
  invs_free(l);
  char path[1100];
  snprintf(path, sizeof path, "%s/run.log", dir);
  char *log = slurp(path);
  CHECK_CONTAINS(log, "timed out");
  free(log);
  CHECK_EQ_INT(procs_with("[s]leep 313"), 0);
  free(graph);
  free(dir);
}

TEST(sbatch_refusing_a_job_is_a_clear_error) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-badpart");
  char *graph = write_graph(dir, "badpart",
                            "{\"name\": \"badpart\", \"start\": {\"node\": \"job\"},\n"
                            " \"nodes\": [{\"name\": \"job\", \"type\": \"command\", \"params\": {\n"
                            "   \"argv\": [\"true\"], \"slurm\": {\"partition\": \"no_such_partition\"}}}]}\n");
  int rc = wait_exit_for(start_slurm_run(dir, graph, ""), 60);
  if (rc != 1) fail_with_log(dir, "braid run should fail (exit 1)", rc);
  char path[1100];
  snprintf(path, sizeof path, "%s/run.log", dir);
  char *log = slurp(path);
  CHECK_CONTAINS(log, "sbatch failed");
  CHECK_CONTAINS(log, "no_such_partition");
  free(log);
  /* an unknown slurm setting is refused with the node's name */
  free(graph);
  graph = write_graph(dir, "badkey",
                      "{\"name\": \"badkey\", \"start\": {\"node\": \"job\"},\n"
                      " \"nodes\": [{\"name\": \"job\", \"type\": \"command\", \"params\": {\n"
                      "   \"argv\": [\"true\"], \"slurm\": {\"partitoin\": \"debug\"}}}]}\n");
  rc = wait_exit_for(start_slurm_run(dir, graph, "--new"), 60);
  if (rc != 1) fail_with_log(dir, "braid run should fail (exit 1) on an unknown slurm setting", rc);
  log = slurp(path);
  CHECK_CONTAINS(log, "unknown slurm setting 'partitoin'");
  free(log);
  free(graph);
  free(dir);
}
