/* Farm faults with real processes on loopback: an agent SIGKILLed mid-job
 * (its tasks finish elsewhere), the server SIGKILLed mid-run and restarted
 * (the run completes, nothing lost, nothing run or reported twice), and an
 * agent on which a submission keeps failing is avoided. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "farm-util.h"

static int count_lines(const char *path) {
  char *t = br_test_slurp(path);
  int n = 0;
  for (char *p = t; *p; p++) n += *p == '\n';
  free(t);
  return n;
}

/* Waits until n invocations run (on the workers, per the store). */
static bool wait_running(farm *f, int n, double timeout) {
  double end = farm_now() + timeout;
  while (farm_now() < end) {
    farm_invs iv = farm_invocations(f);
    if (iv.running >= n) return true;
    usleep(50000);
  }
  return false;
}

TEST(farm_agent_killed_mid_job) {
  farm f;
  farm_start(&f, "farm-kill-agent", "--poll-wait 1 --lost-after 2");
  farm_agent(&f, "k1", "--slots 2");
  farm_agent(&f, "k2", "--slots 2");
  farm_agent(&f, "k3", "--slots 2");
  usleep(300000);
  json_t *out = json_pack("{ss}", "out", f.dir);
  farm_submit_graph(&f, farm_jobs_graph("long", 6,
                                        "{\"shell\":\"echo x >> {out}/long-{index}.ran; " FARM_REC_SHELL("long", "2") "\"}"),
                    out, 0, NULL);
  CHECK(wait_running(&f, 6, 30));
  /* the server counts a job running once it is given to the agent; k1's
   * two are killed once they have started there (their attribute files
   * made), or the kill may come between and leave nothing to clear below */
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "ls '%s/agent-k1/run' | grep -c '^inv-.*\\.json$'", f.dir);
  bool started = false;
  for (double end = farm_now() + 20; !started && farm_now() < end; usleep(20000)) {
    char *w = farm_capture(cmd);
    started = strcmp(w, "2") == 0;
    free(w);
  }
  CHECK(started);
  kill(f.agents[0], SIGKILL); /* k1, with two jobs */
  farm_wait(f.agents[0]);
  f.agents[0] = 0;
  CHECK(farm_settle(&f, 60));
  int64_t c[BR_TASK_NSTATES];
  farm_counts(&f, c);
  CHECK_EQ_INT(c[BR_TASK_ERROR], 0);
  farm_rec r[16];
  int n = farm_recs(f.dir, "long", r, 16);
  CHECK_EQ_INT(n, 6);
  for (int i = 0; i < n; i++) CHECK(strcmp(r[i].worker, "k1") != 0); /* finished elsewhere */
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.ok, 6);
  CHECK(iv.lost >= 2);
  CHECK_EQ_INT(iv.dup_ok, 0);
  /* the lost ones were k1's */
  snprintf(cmd, sizeof cmd, "sqlite3 '%s/farm.braid.db' \"select distinct worker from invocations where status='lost'\"", f.dir);
  char *w = farm_capture(cmd);
  CHECK_EQ_STR(w, "k1");
  free(w);
  /* their runtime is from their start to when they were given up (2 s of
   * silence at least), not 0 s */
  snprintf(cmd, sizeof cmd, "sqlite3 '%s/farm.braid.db' \"select count(*) from invocations "
           "where status='lost' and runtime < 1.5\"", f.dir);
  w = farm_capture(cmd);
  CHECK_EQ_STR(w, "0");
  free(w);
  json_t *ws = NULL;
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", "/api/v1/workers", NULL, &ws), 200);
  size_t i;
  json_t *x;
  json_array_foreach(json_object_get(ws, "workers"), i, x) if (strcmp(json_string_value(json_object_get(x, "id")), "k1") == 0)
    CHECK_EQ_STR(json_string_value(json_object_get(x, "state")), "lost");
  json_decref(ws);
  /* k1 back on its work folder: what its killed jobs left there is cleared */
  snprintf(cmd, sizeof cmd, "ls '%s/agent-k1/run' | grep -c '^inv-.*\\.json$'", f.dir);
  w = farm_capture(cmd);
  CHECK(strcmp(w, "0") != 0); /* the kill left them */
  free(w);
  farm_agent(&f, "k1", "--slots 2");
  for (double end = farm_now() + 20; farm_now() < end; usleep(100000)) {
    w = farm_capture(cmd);
    bool clear = strcmp(w, "0") == 0;
    free(w);
    if (clear) break;
  }
  w = farm_capture(cmd);
  CHECK_EQ_STR(w, "0");
  free(w);
  farm_stop(&f);
}

TEST(farm_server_killed_and_restarted) {
  farm f;
  farm_start(&f, "farm-restart", "--poll-wait 1 --lost-after 3");
  /* the same port after the restart: the agents know only the URL */
  const char *port = strrchr(f.url, ':') + 1;
  char args[256];
  snprintf(args, sizeof args, "--poll-wait 1 --lost-after 3");
  farm_agent(&f, "r1", "--slots 2");
  farm_agent(&f, "r2", "--slots 2");
  farm_agent(&f, "r3", "--slots 2");
  usleep(300000);
  /* each job records that it ran, spawns one child (which records too) and
   * takes a while; 12 of them on 6 slots */
  json_t *g = farm_jobs_graph("restart", 12,
                              "{\"shell\":\"echo x >> {out}/job-{index}.ran; braid ctl spawn --name c{index} child=1;"
                              " sleep 1.5; echo done\"}");
  json_array_append_new(json_object_get(g, "nodes"),
                        json_pack("{sssss{ss}}", "name", "child", "type", "command", "params", "shell",
                                  "echo x >> {out}/child-{index}.ran"));
  json_array_append_new(json_object_get(g, "wires"), json_pack("[ss]", "job.children", "child"));
  farm_submit_graph(&f, g, json_pack("{ss}", "out", f.dir), 0, NULL);
  CHECK(wait_running(&f, 6, 30));
  usleep(500000);
  kill(f.server, SIGKILL);
  CHECK_EQ_INT(farm_wait(f.server), 128 + SIGKILL);
  usleep(700000); /* the agents' jobs go on; their reports wait */
  snprintf(f.server_args, sizeof f.server_args, "%s", args);
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%s", port);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "exec '%s' server --listen %s --url-file url --store farm.braid.db %s", farm_bin(), listen, args);
  char urlpath[1024];
  snprintf(urlpath, sizeof urlpath, "%s/url", f.dir);
  unlink(urlpath);
  f.server = farm_spawn(f.dir, "server.log", cmd);
  for (int i = 0; i < 500 && access(urlpath, R_OK) != 0; i++) usleep(10000);
  CHECK(access(urlpath, R_OK) == 0);
  CHECK(farm_settle(&f, 90));
  int64_t c[BR_TASK_NSTATES];
  farm_counts(&f, c);
  CHECK_EQ_INT(c[BR_TASK_ERROR], 0);
  CHECK_EQ_INT(c[BR_TASK_CANCELLED], 0);
  CHECK_EQ_INT(c[BR_TASK_DONE], 1 + 12 + 12); /* the start task, 12 jobs, 12 children */
  for (int i = 0; i < 12; i++) { /* every job and every child ran exactly once */
    char p[1024];
    snprintf(p, sizeof p, "%s/job-%d.ran", f.dir, i);
    CHECK_EQ_INT(count_lines(p), 1);
    snprintf(p, sizeof p, "%s/child-%d.ran", f.dir, i);
    CHECK_EQ_INT(count_lines(p), 1);
  }
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.ok, 24); /* no invocation reported twice, none run again */
  CHECK_EQ_INT(iv.total - iv.lost, 24); /* lost: given out as the server died, never run */
  CHECK_EQ_INT(iv.dup_ok, 0);
  farm_stop(&f);
}

TEST(farm_failing_agent_is_avoided) {
  farm f;
  farm_start(&f, "farm-avoid", "--poll-wait 1 --lost-after 10 --avoid-after 2");
  farm_agent(&f, "bad", "--slots 1");
  farm_agent(&f, "good", "--slots 1");
  usleep(300000);
  json_t *out = json_pack("{ss}", "out", f.dir);
  /* good takes its time, so that bad (which fails at once) gets the work
   * between: with good quick, it could take all of it before bad failed
   * twice, on a loaded machine */
  farm_submit_graph(&f, farm_jobs_graph("flaky", 6,
                                        "{\"shell\":\"test $BRAID_WORKER = bad && exit 1; sleep 1.5; "
                                        "echo $BRAID_WORKER > {out}/flaky-{index}.ok\",\"retries\":4}"),
                    out, 0, NULL);
  CHECK(farm_settle(&f, 60));
  int64_t c[BR_TASK_NSTATES];
  farm_counts(&f, c);
  CHECK_EQ_INT(c[BR_TASK_ERROR], 0);
  for (int i = 0; i < 6; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/flaky-%d.ok", f.dir, i);
    char *w = br_test_slurp(p);
    CHECK_EQ_STR(w, "good\n");
    free(w);
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "sqlite3 '%s/farm.braid.db' \"select count(*) from invocations where worker='bad' and status='failed'\"",
           f.dir);
  char *n = farm_capture(cmd);
  CHECK_EQ_INT(atoi(n), 2); /* then avoided */
  free(n);
  farm_stop(&f);
}

TEST(farm_lost_agent_comes_back) {
  farm f;
  farm_start(&f, "farm-back", "--poll-wait 1 --lost-after 2");
  pid_t a1 = farm_agent(&f, "b1", "--slots 1");
  usleep(300000);
  json_t *out = json_pack("{ss}", "out", f.dir);
  farm_submit_graph(&f, farm_jobs_graph("back", 1, "{\"shell\":\"" FARM_REC_SHELL("back", "1") "\"}"), out, 0,
                    NULL);
  CHECK(wait_running(&f, 1, 30));
  kill(a1, SIGSTOP); /* silent: lost after 2 s; its job goes on and ends meanwhile */
  farm_agent(&f, "b2", "--slots 1");
  CHECK(farm_settle(&f, 30)); /* run again on b2 */
  kill(a1, SIGCONT); /* b1 comes back with a result nobody wants any more */
  double end = farm_now() + 20;
  bool back = false;
  while (farm_now() < end && !back) {
    json_t *ws = NULL;
    CHECK_EQ_INT(farm_call(&f, f.user, "GET", "/api/v1/workers", NULL, &ws), 200);
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(ws, "workers"), i, w)
      if (strcmp(json_string_value(json_object_get(w, "id")), "b1") == 0)
        back = strcmp(json_string_value(json_object_get(w, "state")), "idle") == 0;
    json_decref(ws);
    usleep(100000);
  }
  CHECK(back); /* registered again */
  usleep(500000); /* its stale report has been sent */
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.ok, 1); /* b2's: b1's late result was not taken */
  CHECK_EQ_INT(iv.lost, 1);
  CHECK_EQ_INT(iv.dup_ok, 0);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "sqlite3 '%s/farm.braid.db' \"select worker from invocations where status='ok'\"", f.dir);
  char *w = farm_capture(cmd);
  CHECK_EQ_STR(w, "b2");
  free(w);
  farm_stop(&f);
}

TEST(farm_second_server_on_a_store_is_refused) {
  /* two servers on one store would both hand out its jobs: the second is
   * refused at once, naming the first, and the first goes on */
  farm f;
  farm_start(&f, "farm-two-servers", "--poll-wait 1 --lost-after 5");
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && timeout 20 '%s' server --listen 127.0.0.1:0 --store farm.braid.db 2>&1; "
           "echo exit=$?",
           f.dir, farm_bin());
  char *out = farm_capture(cmd);
  char want[64];
  snprintf(want, sizeof want, "is in use by pid %d on host ", (int)f.server);
  CHECK_CONTAINS(out, "braid: store farm.braid.db ");
  CHECK_CONTAINS(out, want);
  CHECK_CONTAINS(out, "exit=1");
  free(out);
  farm_agent(&f, "s1", "--slots 1");
  farm_submit_graph(&f, farm_jobs_graph("two", 2, "{\"shell\":\"echo x >> {out}/two-{index}.ran\"}"),
                    json_pack("{ss}", "out", f.dir), 0, NULL);
  CHECK(farm_settle(&f, 30));
  for (int i = 0; i < 2; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/two-%d.ran", f.dir, i);
    CHECK_EQ_INT(count_lines(p), 1);
  }
  farm_stop(&f);
}

/* The state of worker id on the server ("" when it is not listed). */
static void worker_state(farm *f, const char *id, char *state, size_t size) {
  json_t *ws = NULL;
  snprintf(state, size, "%s", "");
  CHECK_EQ_INT(farm_call(f, f->user, "GET", "/api/v1/workers", NULL, &ws), 200);
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(ws, "workers"), i, w)
    if (strcmp(json_string_value(json_object_get(w, "id")), id) == 0)
      snprintf(state, size, "%s", json_string_value(json_object_get(w, "state")));
  json_decref(ws);
}

/* Waits until worker id is in state (true), or timeout. */
static bool wait_worker(farm *f, const char *id, const char *state, double timeout) {
  double end = farm_now() + timeout;
  char st[32];
  do {
    worker_state(f, id, st, sizeof st);
    if (strcmp(st, state) == 0) return true;
    usleep(50000);
  } while (farm_now() < end);
  return false;
}

static char *sql(farm *f, const char *query) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "sqlite3 '%s/farm.braid.db' \"%s\"", f->dir, query);
  return farm_capture(cmd);
}

TEST(farm_stopped_agent_leaves) {
  /* SIGTERM: the agent kills its job, reports it lost and says it leaves:
   * it is offline at once, its job runs elsewhere, and nothing new goes to
   * it (polls wait 30 s and lost agents take 60: none of that is waited) */
  farm f;
  farm_start(&f, "farm-leave", "--poll-wait 30 --lost-after 60");
  pid_t a1 = farm_agent(&f, "l1", "--slots 1");
  CHECK(wait_worker(&f, "l1", "idle", 20));
  json_t *out = json_pack("{ss}", "out", f.dir);
  farm_submit_graph(&f, farm_jobs_graph("stay", 1, "{\"shell\":\"sleep 60\"}"), out, 0, NULL);
  CHECK(wait_running(&f, 1, 30));
  kill(a1, SIGTERM);
  CHECK_EQ_INT(farm_wait(a1), 0);
  f.agents[0] = 0;
  char st[32];
  worker_state(&f, "l1", st, sizeof st);
  CHECK_EQ_STR(st, "offline"); /* it said so before it exited */
  /* new work while no agent is there: it waits, it is not sent to l1 */
  farm_submit_graph(&f, farm_jobs_graph("after", 2, "{\"shell\":\"echo $BRAID_WORKER > "
                                                              "{out}/after-{index}.ran\"}"),
                    json_pack("{ss}", "out", f.dir), 0, NULL);
  usleep(1500000);
  char *n = sql(&f, "select count(*) from invocations where worker='l1' and status='running'");
  CHECK_EQ_STR(n, "0");
  free(n);
  farm_agent(&f, "l2", "--slots 3");
  /* the stopped job and the new ones run on l2 (well before l1 could be lost) */
  double end = farm_now() + 20;
  char *ran = NULL;
  while (farm_now() < end) {
    free(ran);
    ran = sql(&f, "select count(*) from invocations where worker='l2' and "
                  "status in ('running','ok')");
    if (strcmp(ran, "3") == 0) break;
    usleep(100000);
  }
  CHECK_EQ_STR(ran, "3");
  free(ran);
  char *lost = sql(&f, "select worker || ': ' || error from invocations where status='lost'");
  CHECK_EQ_STR(lost, "l1: the agent stopped"); /* its one job, once */
  free(lost);
  for (int i = 0; i < 2; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/after-%d.ran", f.dir, i);
    for (int k = 0; k < 100 && access(p, R_OK) != 0; k++) usleep(100000);
    char *w = br_test_slurp(p);
    CHECK_EQ_STR(w, "l2\n");
    free(w);
  }
  farm_stop(&f);
}

TEST(farm_killed_idle_agent_gets_no_work) {
  /* kill -9 of an idle agent: its long poll's connection is closed by its
   * kernel; work that comes next is not given to that poll (it would wait
   * poll-wait and lost-after, then run again), and the agent is lost
   * lost-after from its death, not from its poll's deadline */
  farm f;
  farm_start(&f, "farm-kill-idle", "--poll-wait 60 --lost-after 2");
  pid_t k1 = farm_agent(&f, "i1", "--slots 1");
  CHECK(wait_worker(&f, "i1", "idle", 20));
  usleep(300000); /* its poll waits */
  kill(k1, SIGKILL);
  farm_wait(k1);
  f.agents[0] = 0;
  json_t *out = json_pack("{ss}", "out", f.dir);
  farm_submit_graph(&f, farm_jobs_graph("idle", 1, "{\"shell\":\"true\"}"), out, 0, NULL);
  usleep(1000000);
  farm_agent(&f, "i2", "--slots 1");
  CHECK(farm_settle(&f, 30));
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.total, 1); /* run once, on i2: nothing was lost on i1 */
  CHECK_EQ_INT(iv.ok, 1);
  CHECK_EQ_STR(iv.workers, "i2");
  CHECK(wait_worker(&f, "i1", "lost", 20)); /* not 60 s of poll wait first */
  farm_stop(&f);
}

TEST(farm_killed_busy_agent_is_lost_after_lost_after) {
  /* its job's poll waits 60 s; it is killed: lost 2 s later, and the error
   * says why */
  farm f;
  farm_start(&f, "farm-kill-busy", "--poll-wait 60 --lost-after 2");
  pid_t k1 = farm_agent(&f, "b1", "--slots 1");
  json_t *out = json_pack("{ss}", "out", f.dir);
  const char *job = "{\"shell\":\"test $BRAID_WORKER = b1 && sleep 120; true\"}";
  farm_submit_graph(&f, farm_jobs_graph("busy", 1, job), out, 0, NULL);
  CHECK(wait_running(&f, 1, 30));
  usleep(300000);
  kill(k1, SIGKILL);
  farm_wait(k1);
  f.agents[0] = 0;
  double t0 = farm_now();
  farm_agent(&f, "b2", "--slots 1");
  CHECK(farm_settle(&f, 40));
  CHECK(farm_now() - t0 < 40); /* well before 60 s of poll wait */
  char *lost = sql(&f, "select error from invocations where status='lost'");
  CHECK_CONTAINS(lost, "agent b1 lost: its connection closed ");
  free(lost);
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.ok, 1);
  CHECK_EQ_INT(iv.lost, 1);
  farm_stop(&f);
}

/* The exit status of pid once it exits within timeout seconds, or -1 (it
 * is then killed). */
static int exit_within(pid_t pid, double timeout) {
  double end = farm_now() + timeout;
  while (farm_now() < end) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    usleep(50000);
  }
  kill(pid, SIGKILL);
  farm_wait(pid);
  return -1;
}

static char *agent_log(farm *f, const char *name) {
  char p[1024];
  snprintf(p, sizeof p, "%s/agent-%s.log", f->dir, name);
  return br_test_slurp(p);
}

TEST(farm_two_agents_with_one_id) {
  /* a clone of a machine comes up with the same id (its host name): it is
   * refused while the first lives, and the first keeps its work; a restart
   * after kill -9 is taken at once, and what the dead one ran runs again
   * at once (not after lost-after) */
  farm f;
  farm_start(&f, "farm-one-id", "--poll-wait 30 --lost-after 60");
  pid_t first = farm_agent_as(&f, "twin", "first", NULL, NULL, "--slots 1");
  CHECK(wait_worker(&f, "twin", "idle", 20));
  json_t *out = json_pack("{ss}", "out", f.dir);
  farm_submit_graph(&f, farm_jobs_graph("twin", 1,
                                        "{\"shell\":\"echo $$ >> {out}/twin-{index}.ran; "
                                        "while [ ! -e {out}/go ]; do sleep 0.05; done\"}"),
                    out, 0, NULL);
  CHECK(wait_running(&f, 1, 30));
  pid_t clone = farm_agent_as(&f, "twin", "clone", NULL, NULL, "--slots 1");
  CHECK_EQ_INT(exit_within(clone, 20), 1);
  f.agents[1] = 0;
  char *log = agent_log(&f, "clone");
  CHECK_CONTAINS(log, "HTTP 409");
  CHECK_CONTAINS(log, "agent id 'twin' is in use by another agent (host '");
  CHECK_CONTAINS(log, ", at 127.0.0.1:");
  free(log);
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.running, 1); /* the first's job was not touched */
  CHECK_EQ_INT(iv.lost, 0);
  /* the first dies; it restarts at once, same id */
  kill(first, SIGKILL);
  farm_wait(first);
  f.agents[0] = 0;
  farm_agent_as(&f, "twin", "again", NULL, NULL, "--slots 1");
  double end = farm_now() + 20; /* well before lost-after (60 s) */
  while (farm_now() < end && (iv = farm_invocations(&f)).lost < 1) usleep(100000);
  CHECK_EQ_INT(iv.lost, 1);
  char *why = sql(&f, "select error from invocations where status='lost'");
  CHECK_EQ_STR(why, "the agent came back without this job");
  free(why);
  CHECK(wait_running(&f, 1, 20)); /* run again, on the restarted agent */
  char go[1024];
  snprintf(go, sizeof go, "%s/go", f.dir);
  close(open(go, O_WRONLY | O_CREAT, 0644));
  CHECK(farm_settle(&f, 30));
  iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.ok, 1);
  CHECK_EQ_INT(iv.lost, 1);
  log = agent_log(&f, "again");
  CHECK(strstr(log, "refused") == NULL);
  free(log);
  farm_stop(&f);
}

TEST(farm_agent_restarted_between_polls_is_taken_at_once) {
  /* an agent killed between two polls (no connection open) and restarted
   * within lost-after was refused as a duplicate until lost-after passed;
   * the restart holds the work folder's lock and names the dead instance */
  farm f;
  farm_start(&f, "farm-restart-gap", "--poll-wait 30 --lost-after 60");
  /* the dead one: registered, then no poll (as between two polls) */
  json_t *reg = json_pack("{sssssisiss}", "id", "gap", "host", "h", "cores", 1, "slots", 1,
                          "instance", "00112233445566aa");
  CHECK_EQ_INT(farm_call(&f, f.agent, "POST", "/api/v1/agents/register", reg, NULL), 200);
  json_decref(reg);
  /* a restart with another work folder (another machine's agent, as far
   * as the server can tell) is refused */
  pid_t other = farm_agent_as(&f, "gap", "other", NULL, NULL, "--slots 1");
  CHECK_EQ_INT(exit_within(other, 20), 1);
  f.agents[0] = 0;
  char *log = agent_log(&f, "other");
  CHECK_CONTAINS(log, "agent id 'gap' is in use by another agent (host 'h'");
  free(log);
  /* the restart in the dead one's work folder is taken at once */
  char wd[1024];
  snprintf(wd, sizeof wd, "%s/agent-gap", f.dir);
  CHECK(mkdir(wd, 0755) == 0);
  br_test_put(wd, "agent.lock", "4242 00112233445566aa\n");
  farm_agent_as(&f, "gap", "gap", NULL, NULL, "--slots 1");
  CHECK(wait_worker(&f, "gap", "idle", 20));
  json_t *out = json_pack("{ss}", "out", f.dir);
  farm_submit_graph(&f, farm_jobs_graph("gap", 1, "{\"shell\":\"true\"}"), out, 0, NULL);
  CHECK(farm_settle(&f, 30));
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.ok, 1);
  /* a second agent in that work folder (the same id on this machine) is
   * refused by the lock, before it asks the server */
  pid_t twin = farm_agent_as(&f, "gap", "gap", NULL, NULL, "--slots 1");
  CHECK_EQ_INT(exit_within(twin, 20), 1);
  f.agents[2] = 0;
  log = agent_log(&f, "gap");
  CHECK_CONTAINS(log, "agent: another agent (pid ");
  CHECK_CONTAINS(log, ") has the work folder ");
  free(log);
  CHECK(wait_worker(&f, "gap", "idle", 20)); /* the first goes on */
  farm_stop(&f);
}

TEST(farm_revoked_agent_token_stops_the_agent) {
  /* its token revoked, the agent stops its jobs and exits 1, saying why,
   * instead of taking the 401s for a server that is away */
  farm f;
  farm_start(&f, "farm-revoked", "--poll-wait 1 --lost-after 30");
  json_t *b = json_pack("{ssss}", "role", "agent", "name", "to-revoke"), *t = NULL;
  CHECK_EQ_INT(farm_call(&f, f.admin, "POST", "/api/v1/tokens", b, &t), 201);
  json_decref(b);
  const char *tok = json_string_value(json_object_get(t, "token"));
  pid_t a = farm_agent_as(&f, "rv", "rv", tok, NULL, "--slots 1");
  farm_submit_graph(&f, farm_jobs_graph("rv", 1, "{\"shell\":\"sleep 60\"}"), NULL, 0, NULL);
  CHECK(wait_running(&f, 1, 30));
  char path[128];
  snprintf(path, sizeof path, "/api/v1/tokens/%s", json_string_value(json_object_get(t, "id")));
  CHECK_EQ_INT(farm_call(&f, f.admin, "DELETE", path, NULL, NULL), 200);
  json_decref(t);
  CHECK_EQ_INT(exit_within(a, 20), 1);
  f.agents[0] = 0;
  char *log = agent_log(&f, "rv");
  CHECK_CONTAINS(log, "braid: the server refused the agent's token (revoked?): HTTP 401");
  free(log);
  farm_stop(&f);
}

/* An agent given a user's token says it needs an agent's, not "revoked?". */
TEST(farm_agent_with_a_users_token_says_which_it_needs) {
  farm f;
  farm_start(&f, "farm-usertoken", "--poll-wait 1");
  pid_t a = farm_agent_as(&f, "ut", "ut", f.user, NULL, "--slots 1");
  CHECK_EQ_INT(exit_within(a, 20), 1);
  f.agents[0] = 0;
  char *log = agent_log(&f, "ut");
  CHECK_CONTAINS(log, "HTTP 403");
  CHECK_CONTAINS(log, "an agent needs a token of role agent: braid token create --role agent");
  CHECK(strstr(log, "revoked?") == NULL);
  free(log);
  farm_stop(&f);
}

/* A loopback port where nobody listens. */
static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  socklen_t sl = sizeof sa;
  CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
  close(fd);
  return ntohs(sa.sin_port);
}

TEST(farm_agent_says_when_it_cannot_reach_the_server) {
  /* nothing listens yet: one line says so (not one per try), and one line
   * when the server is there */
  farm f;
  farm_start(&f, "farm-unreachable", "--poll-wait 1");
  int port = closed_port();
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
  farm_agent_as(&f, "far", "far", NULL, url, "--slots 1");
  usleep(5000000); /* several tries */
  char *log = agent_log(&f, "far");
  char want[160];
  snprintf(want, sizeof want, "braid: agent: cannot reach the server at %s: ", url);
  CHECK_CONTAINS(log, want);
  CHECK_CONTAINS(log, "; trying again every 2 s\n");
  CHECK(strstr(strstr(log, want) + 1, want) == NULL); /* once */
  free(log);
  /* a second server on that port, on a store of its own */
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "mkdir -p s2 && exec '%s' server --init --listen 127.0.0.1:%d "
           "--store s2/farm.braid.db --token-file farm.braid.tokens",
           farm_bin(), port);
  pid_t s2 = farm_spawn(f.dir, "server2.log", cmd);
  double end = farm_now() + 20;
  bool reached = false;
  while (farm_now() < end && !reached) {
    log = agent_log(&f, "far");
    snprintf(want, sizeof want, "braid: agent: reached the server at %s\n", url);
    reached = strstr(log, want) != NULL;
    free(log);
    usleep(100000);
  }
  CHECK(reached);
  kill(s2, SIGTERM);
  farm_wait(s2);
  farm_stop(&f);
}

TEST(farm_once_agent_gives_up_on_an_absent_server) {
  /* a --once agent (a Slurm job's) tried for ever to reach a server that
   * was not there, or had gone away after it took its job: it held its slot
   * until killed. Now it gives up after --give-up, naming the server, exit 1 */
  farm f;
  farm_start(&f, "farm-give-up", "--poll-wait 1");
  char url[64], want[320];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", closed_port());
  pid_t a = farm_agent_as(&f, "none", "none", NULL, url, "--once --give-up 1");
  CHECK_EQ_INT(exit_within(a, 20), 1);
  f.agents[0] = 0;
  char *log = agent_log(&f, "none");
  snprintf(want, sizeof want, "braid: gave up: the server at %s could not be reached for 1 s", url);
  CHECK_CONTAINS(log, want);
  free(log);
  /* the server goes away while the agent's one job runs: the job is let
   * end, then its result has the bound to be reported */
  pid_t b = farm_agent(&f, "once", "--once --give-up 1 --slots 1");
  json_t *g = farm_jobs_graph("away", 1, "{\"shell\":\"sleep 2; echo x > {out}/ended\"}");
  farm_submit_graph(&f, g, json_pack("{ss}", "out", f.dir), 0, NULL);
  CHECK(wait_running(&f, 1, 30));
  kill(f.server, SIGKILL);
  farm_wait(f.server);
  f.server = 0;
  CHECK_EQ_INT(exit_within(b, 30), 1);
  f.agents[1] = 0;
  char ended[1024];
  snprintf(ended, sizeof ended, "%s/ended", f.dir);
  CHECK(access(ended, F_OK) == 0);
  log = agent_log(&f, "once");
  snprintf(want, sizeof want, "braid: gave up: the server at %s could not be reached", f.url);
  CHECK_CONTAINS(log, want);
  free(log);
  /* a plain agent waits for its server: the option is refused there */
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "'%s' agent --give-up 1 --server %s 2>/dev/null", farm_bin(), url);
  int st = system(cmd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
  farm_stop(&f);
}

/* ---- the event stream through a restart ---- */

/* The events from `since` (NULL: only new ones) until `until` is read, a
 * graph submitted once the stream is open to make some. */
static void read_events(farm *f, const char *since, const char *until, farm_events *e) {
  char path[128] = "/api/v1/events";
  if (since) snprintf(path, sizeof path, "/api/v1/events?since=%s", since);
  farm_events_start(e, f, path, 10, until, NULL);
  farm_submit_graph(f, farm_jobs_graph("ev", 1, "{\"shell\":\"true\"}"), NULL, 0, NULL);
  farm_events_end(e);
}

/* A client that comes back to a restarted server with the last event id it
 * saw is told (event: gap, "restarted") that what happened in between is
 * not known, and the new life's ids are above the old ones. Before, ids
 * began at 1 again: the client's id was past them all, it got nothing, no
 * gap, and then ids lower than the one it had. */
TEST(farm_event_ids_go_on_through_a_restart) {
  farm f;
  farm_start(&f, "farm-ev-restart", "--poll-wait 1");
  farm_events e;
  read_events(&f, NULL, "\nid: ", &e);
  const char *id = strstr(e.buf, "id: ");
  CHECK(id != NULL);
  char old[32];
  snprintf(old, sizeof old, "%llu", strtoull(id + 4, NULL, 10));
  kill(f.server, SIGTERM);
  CHECK_EQ_INT(farm_wait(f.server), 0);
  farm_server_start(&f);
  read_events(&f, old, "\nid: ", &e);
  char want[96];
  snprintf(want, sizeof want, "event: gap\ndata: {\"since\":%s,\"lost\":", old);
  CHECK_CONTAINS(e.buf, want); /* lost: those of this life it cannot have (none kept then) */
  CHECK_CONTAINS(e.buf, ",\"restarted\":true}\n\n");
  id = strstr(e.buf, "id: ");
  CHECK(id != NULL);
  CHECK(strtoull(id + 4, NULL, 10) > strtoull(old, NULL, 10));
  /* and one from this life: no gap */
  snprintf(old, sizeof old, "%llu", strtoull(id + 4, NULL, 10));
  read_events(&f, old, "\"name\":\"ev\"", &e);
  CHECK(strstr(e.buf, "event: gap") == NULL);
  farm_stop(&f);
}
