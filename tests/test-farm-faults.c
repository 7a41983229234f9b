/* Farm faults with real processes on loopback: an agent SIGKILLed mid-job
 * (its tasks finish elsewhere), the server SIGKILLed mid-run and restarted
 * (the run completes, nothing lost, nothing run or reported twice), and an
 * agent on which a submission keeps failing is avoided. */
#include "farm-util.h"

static int count_lines(const char *path) {
  char *t = farm_slurp(path);
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
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "sqlite3 '%s/farm.braid.db' \"select distinct worker from invocations where status='lost'\"", f.dir);
  char *w = farm_capture(cmd);
  CHECK_EQ_STR(w, "k1");
  free(w);
  json_t *ws = NULL;
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", "/api/v1/workers", NULL, &ws), 200);
  size_t i;
  json_t *x;
  json_array_foreach(json_object_get(ws, "workers"), i, x) if (strcmp(json_string_value(json_object_get(x, "id")), "k1") == 0)
    CHECK_EQ_STR(json_string_value(json_object_get(x, "state")), "lost");
  json_decref(ws);
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
    char *w = farm_slurp(p);
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
