/* The slurm executor when Slurm ends jobs on its own: a job scancelled from
 * outside braid is seen and retried, a job past its Slurm time limit is
 * recorded as timed out, and sbatch refusing a job is a clear error. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "slurm-util.h"

/* The Slurm job id of the running invocation of node. */
/* An executable shell script dir/name, its text made from fmt; its path
 * in path. */
static void put_script(char *path, size_t size, const char *dir, const char *name,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void put_script(char *path, size_t size, const char *dir, const char *name,
                       const char *fmt, ...) {
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  CHECK(vsnprintf(text, sizeof text, fmt, ap) < (int)sizeof text);
  va_end(ap);
  br_test_put(dir, name, text);
  snprintf(path, size, "%s/%s", dir, name);
  CHECK_EQ_INT(chmod(path, 0755), 0);
}

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
  /* the first attempt's command has begun (running is set when its agent
   * takes it): cancelled before its touch, the second would sleep too */
  char first[1100];
  snprintf(first, sizeof first, "%s/first", dir);
  for (double end = farm_now() + 60; access(first, F_OK) != 0 && farm_now() < end;)
    usleep(50 * 1000);
  CHECK(access(first, F_OK) == 0);
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

/* An sbatch that ends without reading its script (a site's wrapper that
 * refuses, a wrong program): braid wrote the script into a pipe, and when
 * the program was gone first the write killed braid run with SIGPIPE (exit
 * 141, no message). Now each task fails with what sbatch said. 40 jobs of
 * 40 shapes: 40 sbatch calls, so that one of them loses the race. */
TEST(sbatch_that_reads_no_script_is_an_error_not_sigpipe) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-sigpipe");
  char path[1100], extra[1300];
  put_script(path, sizeof path, dir, "sbatch",
             "#!/bin/sh\necho 'sbatch: error: this site wants --account' >&2\nexit 1\n");
  snprintf(extra, sizeof extra, "--slurm-opt sbatch=%s --slurm-opt batch_wait=0", path);
  char *graph = write_graph(dir, "refused",
                            "{\"name\": \"refused\", \"start\": {\"node\": \"fan\"},\n"
                            " \"nodes\": [{\"name\": \"fan\", \"type\": \"spawn\", "
                            "\"params\": {\"count\": 40}},\n"
                            "  {\"name\": \"job\", \"type\": \"command\", \"params\": "
                            "{\"argv\": [\"true\"],\n"
                            "   \"memory_mb\": {\"expr\": \"attr.index + 1\"}}}],\n"
                            " \"wires\": [[\"fan.children\", \"job\"]]}\n");
  pid_t pid = start_slurm_run(dir, graph, extra);
  int rc = wait_exit_for(pid, 60);
  if (rc != 1) fail_with_log(dir, "braid run did not end with failed tasks", rc);
  invs *l = invocations(dir);
  CHECK_EQ_INT(l->n, 40);
  CHECK_EQ_INT(count_status(l, "spawn_error"), 40);
  CHECK_CONTAINS(l->v[0].row.error, "this site wants --account");
  invs_free(l);
  free(graph);
  free(dir);
}

/* slurmctld away for a while (restarted, failing over): sbatch fails with
 * 'Unable to contact slurm controller' meanwhile. The work waits and goes
 * once it is back; before, four tries in about 7 s and the tasks were in
 * error for good. (sbatch is wrapped to fail while dir/away exists: the
 * controller itself is shared by the other tests.) */
TEST(slurmctld_away_for_a_while_is_waited_for) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-away");
  char path[1100], extra[1300];
  br_test_put(dir, "away", "");
  put_script(path, sizeof path, dir, "sbatch",
             "#!/bin/sh\nif [ -e '%s/away' ]; then\n"
             "  echo 'sbatch: error: Batch job submission failed: Unable to contact slurm "
             "controller (connect failure)' >&2\n  exit 1\nfi\nexec sbatch \"$@\"\n",
             dir);
  snprintf(extra, sizeof extra, "--slurm-opt sbatch=%s", path);
  char *graph = write_graph(dir, "patient",
                            "{\"name\": \"patient\", \"start\": {\"node\": \"hello\"},\n"
                            " \"nodes\": [{\"name\": \"hello\", \"type\": \"command\", "
                            "\"params\": {\"argv\": [\"echo\", \"hello\"]}}]}\n");
  pid_t pid = start_slurm_run(dir, graph, extra);
  int rc = wait_exit_for(pid, 20);
  if (rc != -1) fail_with_log(dir, "braid run ended while slurmctld was away", rc);
  snprintf(path, sizeof path, "%s/away", dir);
  unlink(path);
  rc = wait_exit_for(pid, 60);
  if (rc != 0) fail_with_log(dir, "braid run did not finish once slurmctld was back", rc);
  invs *l = invocations(dir);
  CHECK_EQ_INT(l->n, 1);
  CHECK_EQ_STR(l->v[0].row.status, "ok");
  invs_free(l);
  snprintf(path, sizeof path, "%s/run.log", dir);
  char *log = br_test_slurp(path);
  char *first = strstr(log, "sbatch failed");
  CHECK(first != NULL);
  CHECK(strstr(first + 1, "sbatch failed") == NULL); /* said once */
  CHECK_CONTAINS(log, "sbatch works again");
  free(log);
  free(graph);
  free(dir);
}

/* No Slurm job outlives braid run. An agent whose result went in but whose
 * answer the end of braid cut off tried for ever to report to a braid that
 * was gone, in its Slurm slot (seen after the scancel and the SIGKILL tests
 * above, now and then). Here the job goes on after its agent on purpose
 * (braid=WRAPPER: the agent, then a long sleep): braid run scancels the
 * arrays it sent when it ends. */
TEST(no_slurm_job_outlives_braid_run) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-outlive");
  char path[1100], extra[1300];
  put_script(path, sizeof path, dir, "braid-wrapper",
             "#!/bin/sh\n'%s' \"$@\"\nexec sleep 319\n", farm_bin());
  snprintf(extra, sizeof extra, "--slurm-opt braid=%s", path);
  char *graph = write_graph(dir, "linger",
                            "{\"name\": \"linger\", \"start\": {\"node\": \"fan\"},\n"
                            " \"nodes\": [{\"name\": \"fan\", \"type\": \"spawn\", "
                            "\"params\": {\"count\": 2}},\n"
                            "  {\"name\": \"linger\", \"type\": \"command\", \"params\": "
                            "{\"argv\": [\"true\"]}}],\n"
                            " \"wires\": [[\"fan.children\", \"linger\"]]}\n");
  int rc = wait_exit_for(start_slurm_run(dir, graph, extra), 60);
  if (rc != 0) fail_with_log(dir, "braid run failed", rc);
  double end = farm_now() + 10;
  while (slurm_active(dir, "linger") > 0 && farm_now() < end) usleep(100 * 1000);
  CHECK_EQ_INT(slurm_active(dir, "linger"), 0);
  free(graph);
  free(dir);
}

/* braid is not on the node at the path given: the job ends before its agent
 * takes the work, and the task's error names the path and braid's URL. */
TEST(braid_missing_on_the_node_is_a_clear_error) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-nobraid");
  char *graph = write_graph(dir, "nobraid",
                            "{\"name\": \"nobraid\", \"start\": {\"node\": \"hello\"},\n"
                            " \"nodes\": [{\"name\": \"hello\", \"type\": \"command\", "
                            "\"params\": {\"argv\": [\"echo\", \"hello\"]}}]}\n");
  int rc = wait_exit_for(start_slurm_run(dir, graph, "--slurm-opt braid=/nonexistent/braid"), 60);
  if (rc != 1) fail_with_log(dir, "braid run did not fail the task", rc);
  invs *l = invocations(dir);
  CHECK_EQ_INT(l->n, 1);
  CHECK_EQ_STR(l->v[0].row.status, "spawn_error");
  CHECK_CONTAINS(l->v[0].row.error, "before its agent took the work: is /nonexistent/braid there "
                                    "on the node");
  CHECK_CONTAINS(l->v[0].row.error, "http://127.0.0.1:");
  invs_free(l);
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
  double t0 = farm_now();
  int rc = wait_exit_for(start_slurm_run(dir, graph, ""), 240);
  if (rc != 1) fail_with_log(dir, "braid run should fail (exit 1) with the task timed out", rc);
  fprintf(stderr, "  timed out after %.0f s\n", farm_now() - t0);
  invs *l = invocations(dir);
  CHECK_EQ_INT(l->n, 1); /* timeouts are not retried */
  CHECK_EQ_STR(l->v[0].row.status, "timeout");
  CHECK_CONTAINS(l->v[0].row.error, "time limit");
  invs_free(l);
  char path[1100];
  snprintf(path, sizeof path, "%s/run.log", dir);
  char *log = br_test_slurp(path);
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
  char *log = br_test_slurp(path);
  CHECK_CONTAINS(log, "sbatch failed");
  CHECK_CONTAINS(log, "no_such_partition");
  free(log);
  /* an unknown slurm setting is a graph error, with the node's name */
  free(graph);
  graph = write_graph(dir, "badkey",
                      "{\"name\": \"badkey\", \"start\": {\"node\": \"job\"},\n"
                      " \"nodes\": [{\"name\": \"job\", \"type\": \"command\", \"params\": {\n"
                      "   \"argv\": [\"true\"], \"slurm\": {\"partitoin\": \"debug\"}}}]}\n");
  rc = wait_exit_for(start_slurm_run(dir, graph, "--new"), 60);
  if (rc != 2) fail_with_log(dir, "braid run should refuse the graph (exit 2)", rc);
  log = br_test_slurp(path);
  CHECK_CONTAINS(log, "badkey.json:3:45: node 'job' (command): parameter 'slurm': "
                      "unknown slurm setting 'partitoin'");
  free(log);
  free(graph);
  free(dir);
}

TEST(a_job_slurm_will_never_start_is_an_error) {
  /* more cores than the cluster's node has: Slurm keeps it pending
   * (PartitionConfig) for ever, and braid showed "1 queued" for ever */
  need_cluster();
  char *dir = br_test_tmpdir("slurm-never");
  char *graph = write_graph(dir, "big",
                            "{\"name\": \"big\", \"start\": {\"node\": \"job\"},\n"
                            " \"nodes\": [{\"name\": \"job\", \"type\": \"command\", \"params\": {\n"
                            "   \"argv\": [\"true\"], \"cores\": 64}}]}\n");
  int rc = wait_exit_for(start_slurm_run(dir, graph, ""), 60);
  if (rc != 1) fail_with_log(dir, "braid run should fail (exit 1)", rc);
  invs *l = invocations(dir);
  CHECK_EQ_INT(l->n, 1); /* not retried: it would wait the same way */
  CHECK_CONTAINS(l->v[0].row.error, "Slurm will not start job ");
  CHECK_CONTAINS(l->v[0].row.error, "it is pending for '");
  invs_free(l);
  int left = 1; /* scancelled */
  for (int i = 0; i < 50 && (left = slurm_active(dir, "job")) > 0; i++) usleep(100 * 1000);
  CHECK_EQ_INT(left, 0);
  free(graph);
  free(dir);
}

/* braid server with the slurm executor: jobs are Slurm jobs, the workers
 * list shows them, and `braid cancel` removes them from Slurm. */
TEST(server_on_slurm_cancel_removes_jobs) {
  need_cluster();
  farm f;
  farm_start(&f, "slurm-server", "--executor slurm --slurm-listen 127.0.0.1:0 --slurm-opt reconcile=1");
  int64_t root = farm_submit_graph(&f, farm_jobs_graph("sleepers", 3, "{\"argv\": [\"sleep\", \"317\"]}"),
                                   NULL, 0, NULL);
  CHECK(root > 0);
  double end = farm_now() + 60;
  int64_t c[BR_TASK_NSTATES];
  do {
    usleep(100 * 1000);
    farm_counts(&f, c);
  } while (c[BR_TASK_RUNNING] < 3 && farm_now() < end);
  CHECK_EQ_INT(c[BR_TASK_RUNNING], 3);
  CHECK_EQ_INT(slurm_active(f.dir, "job"), 3);
  json_t *ws = NULL;
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", "/api/v1/workers", NULL, &ws), 200);
  char *text = json_dumps(ws, JSON_COMPACT);
  CHECK_CONTAINS(text, "\"id\":\"slurm-");
  free(text);
  json_decref(ws);
  /* cancel the running tasks with the command line */
  json_t *ts = NULL;
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", "/api/v1/tasks?state=running", NULL, &ts), 200);
  size_t i;
  json_t *t;
  int n = 0;
  json_array_foreach(json_object_get(ts, "tasks"), i, t) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' cancel %lld --server '%s' --token '%s' >/dev/null", farm_bin(),
             (long long)json_integer_value(json_object_get(t, "id")), f.url, f.user);
    CHECK_EQ_INT(system(cmd), 0);
    n++;
  }
  json_decref(ts);
  CHECK_EQ_INT(n, 3);
  end = farm_now() + 30;
  while ((slurm_active(f.dir, "job") > 0 || procs_with("[s]leep 317") > 0) && farm_now() < end) usleep(100 * 1000);
  CHECK_EQ_INT(slurm_active(f.dir, "job"), 0);
  CHECK_EQ_INT(procs_with("[s]leep 317"), 0);
  farm_counts(&f, c);
  CHECK_EQ_INT(c[BR_TASK_CANCELLED], 3);
  farm_stop(&f);
}

/* A job that waits in Slurm says why: its Slurm job, state and pending
 * reason, as squeue gave them (braid show, GET /api/v1/tasks/ID). Before,
 * it said only that it waited for the slurm executor. */
TEST(server_on_slurm_says_why_a_job_waits) {
  need_cluster();
  farm f;
  farm_start(&f, "slurm-why", "--executor slurm --slurm-listen 127.0.0.1:0 --slurm-opt reconcile=1");
  int64_t root = farm_submit_graph(
      &f,
      farm_jobs_graph("later", 1,
                      "{\"argv\": [\"true\"], \"slurm\": {\"args\": [\"--begin=now+1hour\"]}}"),
      NULL, 0, NULL);
  char path[128];
  snprintf(path, sizeof path, "/api/v1/tasks/%lld", (long long)root + 1);
  char *why = NULL;
  for (double end = farm_now() + 60; farm_now() < end; usleep(200 * 1000)) {
    json_t *t = NULL;
    CHECK_EQ_INT(farm_call(&f, f.user, "GET", path, NULL, &t), 200);
    free(why);
    const char *w = json_string_value(json_object_get(t, "waiting"));
    why = strdup(w ? w : "");
    json_decref(t);
    if (strstr(why, "(reason: ")) break;
  }
  CHECK_CONTAINS(why, "Slurm job ");
  CHECK_CONTAINS(why, " is PENDING (reason: BeginTime) (squeue ");
  free(why);
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' cancel %lld --server '%s' --token '%s' >/dev/null", farm_bin(),
           (long long)root + 1, f.url, f.user);
  CHECK_EQ_INT(system(cmd), 0);
  int left = 1;
  for (int i = 0; i < 100 && (left = slurm_active(f.dir, "job")) > 0; i++) usleep(100 * 1000);
  CHECK_EQ_INT(left, 0);
  farm_stop(&f);
}

/* A free TCP port on loopback (bound, then released). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len))
    br_test_fail(__FILE__, __LINE__, "no free port");
  close(fd);
  return ntohs(a.sin_port);
}

/* braid SIGKILLed while its Slurm jobs run; the same command again (same
 * port) adopts them: each job runs once, their results are kept. */
TEST(sigkill_then_resume_adopts_running_jobs) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-sigkill");
  /* The jobs wait for dir/go, so all 4 still run when braid is killed and
   * when the resumed run adopts them, however slowly they start (a loaded
   * machine, ThreadSanitizer); go comes once the resumed run has started. */
  char json[2048];
  snprintf(json, sizeof json,
           "{\"name\": \"naps\", \"start\": {\"node\": \"fan\", \"attrs\": {\"n\": 4}},\n"
           " \"nodes\": [{\"name\": \"fan\", \"type\": \"spawn\", \"params\": {\"count\": "
           "{\"expr\": \"attr.n\"}}},\n"
           "  {\"name\": \"kept\", \"type\": \"command\", \"params\": {\"shell\": "
           "\"while [ ! -e '%s/go' ]; do sleep 0.2; done; echo $BRAID_TASK_ID >> ran.txt\"}}],\n"
           " \"wires\": [[\"fan.children\", \"kept\"]]}\n",
           dir);
  char *graph = write_graph(dir, "naps", json);
  char extra[128];
  snprintf(extra, sizeof extra, "--slurm-listen 127.0.0.1:%d", free_port());
  pid_t pid = start_slurm_run(dir, graph, extra);
  wait_running(dir, 4, 60);
  kill(pid, SIGKILL);
  farm_wait(pid);
  CHECK_EQ_INT(slurm_active(dir, "kept"), 4); /* the jobs go on without braid */
  double t0 = farm_now();
  pid = start_slurm_run(dir, graph, extra);
  char logp[1100], gop[1100];
  snprintf(logp, sizeof logp, "%s/run.log", dir);
  snprintf(gop, sizeof gop, "%s/go", dir);
  for (int i = 0; i < 600; i++) { /* the resumed run has taken the store */
    char *log = br_test_slurp(logp);
    bool resumed = strstr(log, "resuming") != NULL;
    free(log);
    if (resumed) break;
    usleep(50 * 1000);
  }
  CHECK_EQ_INT(slurm_active(dir, "kept"), 4);
  int gofd = open(gop, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  CHECK(gofd >= 0);
  close(gofd);
  int rc = farm_wait(pid);
  if (rc != 0) fail_with_log(dir, "the resumed run failed", rc);
  fprintf(stderr, "  resumed in %.1f s\n", farm_now() - t0);
  invs *l = invocations(dir);
  CHECK_EQ_INT(l->n, 4); /* adopted, not run again */
  CHECK_EQ_INT(count_status(l, "ok"), 4);
  invs_free(l);
  char path[1100];
  snprintf(path, sizeof path, "%s/ran.txt", dir);
  char *ran = br_test_slurp(path);
  int lines = 0;
  for (char *p = ran; *p; p++) lines += *p == '\n';
  CHECK_EQ_INT(lines, 4);
  free(ran);
  free(graph);
  free(dir);
}

/* Slurm jobs of the server in dir still pending or running, and how many of
 * them are elements of array (its id; NULL: none). */
static int active_in(const char *dir, const char *array, int *of_array) {
  char cmd[512], real[PATH_MAX];
  snprintf(cmd, sizeof cmd, "squeue -h -r -t PENDING,RUNNING,CONFIGURING,COMPLETING -n braid:job "
           "-o '%%i|%%Z'");
  char *out = capture(cmd);
  if (!realpath(dir, real)) snprintf(real, sizeof real, "%s", dir);
  int n = 0, a = 0;
  size_t al = array ? strlen(array) : 0;
  for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n")) {
    char *bar = strchr(l, '|');
    if (!bar || strcmp(bar + 1, real) != 0) continue;
    n++;
    if (array && strncmp(l, array, al) == 0 && l[al] == '_') a++;
  }
  free(out);
  if (of_array) *of_array = a;
  return n;
}

/* braid server on Slurm restarted while its jobs wait in Slurm's queue:
 * those whose agent took no work yet are not in the store, so the next
 * server sends them again. The old ones must go (scancelled at a clean
 * stop, and by the next server after a kill -9), or they wait in the queue
 * and then take the cluster's slots until idle_exit, and an old job pinned
 * to an invocation id used again runs another invocation. The job that
 * runs is adopted; each task runs once. */
TEST(server_restart_leaves_no_stale_pending_jobs) {
  need_cluster();
  char args[256];
  snprintf(args, sizeof args,
           "--executor slurm --slurm-listen 127.0.0.1:%d --slurm-opt reconcile=1", free_port());
  farm f;
  farm_start(&f, "slurm-restart", args);
  /* 8 cores each on the 8-CPU node: one runs, two wait in Slurm's queue */
  char params[2048];
  snprintf(params, sizeof params,
           "{\"shell\": \"while [ ! -e '%s/go' ]; do sleep 0.2; done; echo $BRAID_TASK_ID >> "
           "'%s/ran.txt'\", \"cores\": 8}",
           f.dir, f.dir);
  CHECK(farm_submit_graph(&f, farm_jobs_graph("queue", 3, params), NULL, 0, NULL) > 0);
  double end = farm_now() + 60;
  int64_t c[BR_TASK_NSTATES];
  do {
    usleep(100 * 1000);
    farm_counts(&f, c);
  } while ((c[BR_TASK_RUNNING] < 1 || active_in(f.dir, NULL, NULL) < 3) && farm_now() < end);
  CHECK_EQ_INT(c[BR_TASK_RUNNING], 1);
  char *first = capture("squeue -h -r -t RUNNING -n braid:job -o '%F'");
  first[strcspn(first, "\n")] = '\0';
  CHECK(first[0]);
  int old;
  CHECK_EQ_INT(active_in(f.dir, first, &old), 3);
  CHECK_EQ_INT(old, 3);

  /* kill -9: the next server finds the two the killed one left waiting */
  kill(f.server, SIGKILL);
  farm_wait(f.server);
  farm_server_start(&f);
  end = farm_now() + 30;
  int total;
  do { /* until the new server sent its two, and the old waiting ones went */
    usleep(200 * 1000);
    total = active_in(f.dir, first, &old);
  } while ((total - old < 2 || old > 1) && farm_now() < end);
  CHECK_EQ_INT(total - old, 2);
  CHECK_EQ_INT(old, 1); /* the one that runs is kept: adopted */

  /* a clean stop scancels the waiting ones at once; the running one goes on */
  kill(f.server, SIGTERM);
  CHECK_EQ_INT(farm_wait(f.server), 0);
  end = farm_now() + 10;
  while ((total = active_in(f.dir, first, &old)) > 1 && farm_now() < end) usleep(100 * 1000);
  CHECK_EQ_INT(total, 1);
  CHECK_EQ_INT(old, 1);

  farm_server_start(&f);
  char path[1200];
  snprintf(path, sizeof path, "%s/go", f.dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  CHECK(fd >= 0);
  close(fd);
  CHECK(farm_settle(&f, 90));
  farm_counts(&f, c);
  CHECK_EQ_INT(c[BR_TASK_DONE], 4); /* the spawner and its three */
  snprintf(path, sizeof path, "%s/ran.txt", f.dir);
  char *ran = br_test_slurp(path);
  int lines = 0;
  for (char *p = ran; *p; p++) lines += *p == '\n';
  CHECK_EQ_INT(lines, 3); /* each once */
  free(ran);
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.total, 3);
  CHECK_EQ_INT(iv.ok, 3);
  /* and no job is left waiting for work that never comes */
  end = farm_now() + 20;
  while (active_in(f.dir, NULL, NULL) > 0 && farm_now() < end) usleep(200 * 1000);
  CHECK_EQ_INT(active_in(f.dir, NULL, NULL), 0);
  free(first);
  farm_stop(&f);
}
