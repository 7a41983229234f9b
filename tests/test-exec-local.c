/* The local executor with real child processes on a real libuv loop. */
#include "exec-fixture.h"

#include <fcntl.h>

static fx F;

TEST(exec_ok_log_and_tail) {
  fx_init(&F, "exec-ok", 2, 1);
  fx_inv x;
  fx_sh(&F, &x, 1, "echo hello; echo oops >&2; for i in $(seq 1 30); do echo line$i; done");
  fx_submit(&F, &x.inv);
  CHECK_EQ_INT(F.ops->active(F.ex), 1);
  fx_run(&F);
  CHECK_EQ_INT(F.n_done, 1);
  CHECK_EQ_INT(F.n_start, 1);
  fx_rec *r = fx_result(&F, 1);
  CHECK_EQ_INT(r->status, BR_INV_OK);
  CHECK_EQ_INT(r->exit_code, 0);
  CHECK_EQ_INT(r->term_signal, 0);
  CHECK_EQ_INT(r->task_id, 1001);
  CHECK(r->runtime > 0);
  CHECK(r->peak_rss_kb > 0);
  CHECK(r->error == NULL);
  char *log = fx_read(x.log);
  CHECK_CONTAINS(log, "hello\noops\nline1\n");
  CHECK_CONTAINS(log, "line30\n");
  /* the tail: the last 20 lines, line11 .. line30 */
  CHECK_CONTAINS(r->log_tail, "line11\nline12");
  CHECK(strstr(r->log_tail, "line10\n") == NULL);
  CHECK(strstr(r->log_tail, "hello") == NULL);
  CHECK(r->log_tail[strlen(r->log_tail) - 1] == '0'); /* no final newline */
  CHECK_EQ_INT(F.ops->active(F.ex), 0);
  free(log);
  fx_inv_free(&x);
  fx_fini(&F);
}

TEST(exec_log_appends_and_tail_is_this_attempt) {
  fx_init(&F, "exec-append", 1, 1);
  fx_inv a, b;
  fx_sh(&F, &a, 1, "echo first attempt; exit 75");
  fx_sh(&F, &b, 2, "echo second attempt");
  free(b.log);
  b.log = strdup(a.log);
  b.inv.log_path = b.log;
  fx_submit(&F, &a.inv);
  fx_submit(&F, &b.inv);
  fx_run(&F);
  char *log = fx_read(a.log);
  CHECK_EQ_STR(log, "first attempt\nsecond attempt\n");
  CHECK_EQ_STR(fx_result(&F, 2)->log_tail, "second attempt");
  CHECK_EQ_STR(fx_result(&F, 1)->log_tail, "first attempt");
  free(log);
  fx_inv_free(&a);
  fx_inv_free(&b);
  fx_fini(&F);
}

TEST(exec_exit_codes) {
  fx_init(&F, "exec-codes", 4, 1);
  static const int good[] = {0, 3}, retry[] = {75};
  fx_inv a, b, c, d, e;
  fx_sh(&F, &a, 1, "exit 3");               /* not good by default: failed */
  fx_sh(&F, &b, 2, "exit 3");               /* 3 is good here */
  b.inv.good_codes = good;
  b.inv.n_good = 2;
  fx_sh(&F, &c, 3, "exit 75");              /* retry */
  c.inv.retry_codes = retry;
  c.inv.n_retry = 1;
  fx_sh(&F, &d, 4, "exit 0");               /* 0 is not in the good codes {3} */
  d.inv.good_codes = good + 1;
  d.inv.n_good = 1;
  fx_sh(&F, &e, 5, "echo dying; kill -9 $$"); /* a signal: failed */
  fx_submit(&F, &a.inv);
  fx_submit(&F, &b.inv);
  fx_submit(&F, &c.inv);
  fx_submit(&F, &d.inv);
  fx_submit(&F, &e.inv);
  fx_run(&F);
  CHECK_EQ_INT(F.n_done, 5);
  CHECK_EQ_INT(fx_result(&F, 1)->status, BR_INV_FAILED);
  CHECK_EQ_INT(fx_result(&F, 1)->exit_code, 3);
  CHECK_EQ_INT(fx_result(&F, 2)->status, BR_INV_OK);
  CHECK_EQ_INT(fx_result(&F, 3)->status, BR_INV_RETRY);
  CHECK_EQ_INT(fx_result(&F, 3)->exit_code, 75);
  CHECK_EQ_INT(fx_result(&F, 4)->status, BR_INV_FAILED);
  fx_rec *r = fx_result(&F, 5);
  CHECK_EQ_INT(r->status, BR_INV_FAILED);
  CHECK_EQ_INT(r->exit_code, -1);
  CHECK_EQ_INT(r->term_signal, SIGKILL);
  CHECK_CONTAINS(r->error, "signal 9");
  CHECK_EQ_STR(r->log_tail, "dying");
  CHECK_EQ_STR(br_inv_status_name(BR_INV_RETRY), "retry");
  fx_inv_free(&a);
  fx_inv_free(&b);
  fx_inv_free(&c);
  fx_inv_free(&d);
  fx_inv_free(&e);
  fx_fini(&F);
}

TEST(exec_timeout) {
  fx_init(&F, "exec-timeout", 2, 0.5);
  fx_inv a, b;
  fx_sh(&F, &a, 1, "sleep 30");
  a.inv.timeout = 0.5;
  /* ignores SIGTERM: SIGKILLed after the grace period */
  fx_sh(&F, &b, 2, "trap '' TERM; sleep 30 & wait; wait; wait");
  b.inv.timeout = 0.5;
  fx_submit(&F, &a.inv);
  fx_submit(&F, &b.inv);
  fx_run(&F);
  fx_rec *r = fx_result(&F, 1);
  CHECK_EQ_INT(r->status, BR_INV_TIMEOUT);
  CHECK_EQ_INT(r->term_signal, SIGTERM);
  CHECK(r->at < 0.5 + 0.5 + 5);
  CHECK_CONTAINS(r->error, "timed out after 0.5 s");
  r = fx_result(&F, 2);
  CHECK_EQ_INT(r->status, BR_INV_TIMEOUT);
  CHECK_EQ_INT(r->term_signal, SIGKILL);
  CHECK(r->runtime >= 0.9);
  CHECK(r->at < 0.5 + 0.5 + 5);
  fx_inv_free(&a);
  fx_inv_free(&b);
  fx_fini(&F);
}

/* cancel once the job wrote the pid of its background grandchild */
static double cancel_asked;

static void cancel_when_ready(fx *f) {
  char *p = fx_path(f, "grandchild.pid");
  if (fx_exists(p) && f->user == NULL) {
    f->user = (void *)1;
    CHECK_EQ_INT(f->ops->cancel(f->ex, 1), BR_OK);
    cancel_asked = fx_now(f);
  }
  free(p);
}

TEST(exec_cancel_kills_group_after_grace) {
  fx_init(&F, "exec-cancel", 2, 1.0);
  fx_inv a;
  /* The job and its background sleep both ignore SIGTERM. */
  fx_sh(&F, &a, 1,
        "trap '' TERM; sleep 300 & echo $! > grandchild.pid.tmp; "
        "mv grandchild.pid.tmp grandchild.pid; while :; do wait; done");
  fx_submit(&F, &a.inv);
  fx_every(&F, cancel_when_ready);
  fx_run(&F);
  fx_rec *r = fx_result(&F, 1);
  CHECK_EQ_INT(r->status, BR_INV_CANCELLED);
  CHECK_EQ_INT(r->term_signal, SIGKILL);
  double asked = cancel_asked;
  CHECK(r->at - asked >= 0.9);      /* SIGTERM was ignored: it waited the grace period */
  CHECK(r->at - asked < 1.0 + 5.0); /* then SIGKILL */
  char *p = fx_path(&F, "grandchild.pid");
  char *text = fx_read(p);
  pid_t gc = (pid_t)atoi(text);
  CHECK(gc > 0);
  CHECK(br_test_pid_gone(gc));
  free(text);
  free(p);
  fx_inv_free(&a);
  fx_fini(&F);
}

TEST(exec_cancel_queued_and_cancel_all) {
  fx_init(&F, "exec-cancel-all", 1, 5.0);
  fx_inv a, b, c;
  fx_sh(&F, &a, 1, "sleep 300");
  fx_sh(&F, &b, 2, "sleep 300");
  fx_sh(&F, &c, 3, "sleep 300");
  fx_submit(&F, &a.inv);
  fx_submit(&F, &b.inv);
  fx_submit(&F, &c.inv);
  CHECK_EQ_INT(F.ops->active(F.ex), 3);
  CHECK_EQ_INT(F.ops->capacity(F.ex), 0);
  CHECK_EQ_INT(F.ops->cancel(F.ex, 2), BR_OK); /* queued */
  CHECK_EQ_INT(F.ops->cancel(F.ex, 99), BR_ENOTFOUND);
  CHECK_EQ_INT(F.n_done, 0); /* never reported from inside a call */
  uv_run(&F.loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(F.n_done, 1);
  CHECK_EQ_INT(F.done[0].id, 2);
  CHECK_EQ_INT(F.done[0].status, BR_INV_CANCELLED);
  F.ops->cancel_all(F.ex, true); /* hard: SIGKILL at once, not after 5 s */
  fx_run(&F);
  CHECK_EQ_INT(F.n_done, 3);
  CHECK_EQ_INT(fx_result(&F, 1)->status, BR_INV_CANCELLED);
  CHECK_EQ_INT(fx_result(&F, 1)->term_signal, SIGKILL);
  CHECK(fx_result(&F, 1)->at < 4.0);
  CHECK_EQ_INT(fx_result(&F, 3)->status, BR_INV_CANCELLED);
  CHECK_EQ_INT(F.n_start, 1); /* 2 and 3 never started */
  CHECK_EQ_INT(F.ops->active(F.ex), 0);
  CHECK_EQ_INT(F.ops->capacity(F.ex), 1);
  fx_inv_free(&a);
  fx_inv_free(&b);
  fx_inv_free(&c);
  fx_fini(&F);
}

TEST(exec_spawn_errors) {
  fx_init(&F, "exec-spawn-err", 2, 1);
  fx_inv a, b, c, d;
  fx_sh(&F, &a, 1, "true");
  a.argv[0] = (char *)"no-such-program-braid";
  a.argv[1] = NULL;
  fx_sh(&F, &b, 2, "true");
  b.inv.cwd = "/nonexistent/braid/dir";
  char *script = fx_path(&F, "notexec.sh");
  FILE *fp = fopen(script, "w");
  fputs("#!/bin/sh\necho hi\n", fp);
  fclose(fp);
  fx_sh(&F, &c, 3, "true");
  c.argv[0] = script;
  c.argv[1] = NULL;
  fx_sh(&F, &d, 4, "true");
  d.argv[0] = (char *)"./missing.sh";
  d.argv[1] = NULL;
  fx_submit(&F, &a.inv);
  fx_submit(&F, &b.inv);
  fx_submit(&F, &c.inv);
  fx_submit(&F, &d.inv);
  fx_run(&F);
  CHECK_EQ_INT(F.n_done, 4);
  CHECK_EQ_INT(F.n_start, 0);
  fx_rec *r = fx_result(&F, 1);
  CHECK_EQ_INT(r->status, BR_INV_SPAWN_ERROR);
  CHECK_CONTAINS(r->error, "no such program 'no-such-program-braid' (PATH=");
  CHECK_CONTAINS(r->error, "/usr/bin");
  /* the log says why nothing ran */
  char *log = fx_read(a.log);
  CHECK_CONTAINS(log, "braid: no such program 'no-such-program-braid'");
  CHECK_CONTAINS(r->log_tail, "braid: no such program");
  free(log);
  r = fx_result(&F, 2);
  CHECK_EQ_INT(r->status, BR_INV_SPAWN_ERROR);
  CHECK_CONTAINS(r->error, "cannot change to directory '/nonexistent/braid/dir'");
  r = fx_result(&F, 3);
  CHECK_EQ_INT(r->status, BR_INV_SPAWN_ERROR);
  CHECK_CONTAINS(r->error, "is not executable");
  r = fx_result(&F, 4);
  CHECK_EQ_INT(r->status, BR_INV_SPAWN_ERROR);
  CHECK_CONTAINS(r->error, "no such program './missing.sh'");
  /* a log file that cannot be written */
  fx_inv g;
  fx_sh(&F, &g, 6, "echo hi");
  free(g.log);
  g.log = fx_path(&F, "notexec.sh/sub/6.log"); /* under a file, not a folder */
  g.inv.log_path = g.log;
  fx_submit(&F, &g.inv);
  fx_run(&F);
  r = fx_result(&F, 6);
  CHECK_EQ_INT(r->status, BR_INV_SPAWN_ERROR);
  CHECK_CONTAINS(r->error, "cannot write log file");
  CHECK_CONTAINS(r->error, "notexec.sh/sub/6.log");
  fx_inv_free(&g);
  /* a bad progress regex is refused by submit */
  fx_inv e;
  fx_sh(&F, &e, 5, "true");
  e.inv.progress_regex = "([0-9]";
  br_error err;
  CHECK_EQ_INT(F.ops->submit(F.ex, &e.inv, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "bad progress regex");
  e.inv.progress_regex = "[0-9]+%";
  CHECK_EQ_INT(F.ops->submit(F.ex, &e.inv, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "no group");
  free(script);
  fx_inv_free(&a);
  fx_inv_free(&b);
  fx_inv_free(&c);
  fx_inv_free(&d);
  fx_inv_free(&e);
  fx_fini(&F);
}

/* Reads "start end" nanosecond pairs from files and returns the most jobs
 * that ran at once. */
static int max_overlap(fx *f, int n) {
  long long s[64], e[64];
  for (int i = 0; i < n; i++) {
    char name[32];
    snprintf(name, sizeof name, "times-%d", i + 1);
    char *p = fx_path(f, name);
    char *t = fx_read(p);
    CHECK(t != NULL);
    CHECK_EQ_INT(sscanf(t, "%lld %lld", &s[i], &e[i]), 2);
    free(t);
    free(p);
  }
  int best = 0;
  for (int i = 0; i < n; i++) { /* at each start, count the jobs running */
    int k = 0;
    for (int j = 0; j < n; j++)
      if (s[j] <= s[i] && e[j] > s[i]) k++;
    if (k > best) best = k;
  }
  return best;
}

TEST(exec_slots_respected) {
  fx_init(&F, "exec-slots", 2, 1);
  fx_inv x[8];
  char scripts[8][160];
  for (int i = 0; i < 8; i++) {
    snprintf(scripts[i], sizeof scripts[i],
             "s=$(date +%%s%%N); sleep 0.2; e=$(date +%%s%%N); echo $s $e > times-%d", i + 1);
    fx_sh(&F, &x[i], i + 1, scripts[i]);
    fx_submit(&F, &x[i].inv);
  }
  CHECK_EQ_INT(F.ops->capacity(F.ex), 0);
  CHECK_EQ_INT(F.ops->active(F.ex), 8);
  fx_run(&F);
  CHECK_EQ_INT(F.n_done, 8);
  for (int i = 0; i < 8; i++) CHECK_EQ_INT(F.starts[i], i + 1); /* FIFO */
  int m = max_overlap(&F, 8);
  CHECK(m <= 2);
  CHECK(m >= 1);
  for (int i = 0; i < 8; i++) fx_inv_free(&x[i]);
  fx_fini(&F);
}

TEST(exec_cores_count_against_slots) {
  fx_init(&F, "exec-cores", 2, 1);
  fx_inv x[4];
  char scripts[4][160];
  for (int i = 0; i < 4; i++) {
    snprintf(scripts[i], sizeof scripts[i],
             "s=$(date +%%s%%N); sleep 0.1; e=$(date +%%s%%N); echo $s $e > times-%d", i + 1);
    fx_sh(&F, &x[i], i + 1, scripts[i]);
    x[i].inv.cores = 2; /* each takes both slots */
    if (i == 3) x[i].inv.cores = 64; /* more than there are: all slots */
    fx_submit(&F, &x[i].inv);
  }
  fx_run(&F);
  CHECK_EQ_INT(F.n_done, 4);
  CHECK_EQ_INT(max_overlap(&F, 4), 1);
  for (int i = 0; i < 4; i++) fx_inv_free(&x[i]);
  fx_fini(&F);
}

TEST(exec_env_and_attrs) {
  fx_init(&F, "exec-env", 2, 1);
  fx_inv x;
  fx_sh(&F, &x, 7,
        "env | grep -E '^(BRAID_|FOO=)' | sort > env.txt; cat \"$BRAID_ATTRS_FILE\" > attrs.json;"
        " echo \"$BRAID_ATTRS_FILE\" > attrs.path");
  char *env[] = {(char *)"FOO=bar baz", (char *)"BRAID_ATTR_FRAME=overridden", NULL};
  x.inv.env = env;
  json_t *attrs = json_pack("{s:i, s:s, s:f, s:b, s:[i,i], s:{s:i}, s:n}", "frame", 12,
                            "shot name", "sh010", "ratio", 0.25, "on", 1, "list", 1, 2, "obj",
                            "a", 1, "nothing");
  x.inv.attrs = attrs;
  x.inv.cores = 3; /* more than the 2 slots: gets them all */
  fx_submit(&F, &x.inv);
  json_object_set_new(attrs, "frame", json_integer(13)); /* after submit: not seen */
  fx_run(&F);
  CHECK_EQ_INT(fx_result(&F, 7)->status, BR_INV_OK);
  char *p = fx_path(&F, "env.txt");
  char *envtxt = fx_read(p);
  CHECK_CONTAINS(envtxt, "BRAID_TASK_ID=1007\n");
  CHECK_CONTAINS(envtxt, "BRAID_INVOCATION_ID=7\n");
  CHECK_CONTAINS(envtxt, "BRAID_NODE=test\n");
  CHECK_CONTAINS(envtxt, "BRAID_CORES=2\n");
  CHECK_CONTAINS(envtxt, "BRAID_ATTR_FRAME=overridden\n"); /* the invocation's env wins */
  CHECK_CONTAINS(envtxt, "BRAID_ATTR_SHOT_NAME=sh010\n");
  CHECK_CONTAINS(envtxt, "BRAID_ATTR_RATIO=0.25\n");
  CHECK_CONTAINS(envtxt, "BRAID_ATTR_ON=true\n");
  CHECK_CONTAINS(envtxt, "BRAID_ATTR_NOTHING=\n");
  CHECK(strstr(envtxt, "BRAID_ATTR_LIST") == NULL);
  CHECK(strstr(envtxt, "BRAID_ATTR_OBJ") == NULL);
  CHECK_CONTAINS(envtxt, "BRAID_CTL=/");
  CHECK_CONTAINS(envtxt, "BRAID_CTL_TOKEN=");
  CHECK_CONTAINS(envtxt, "FOO=bar baz\n");
  free(p);
  p = fx_path(&F, "attrs.json");
  json_t *seen = json_load_file(p, 0, NULL);
  CHECK(seen != NULL);
  json_object_set_new(attrs, "frame", json_integer(12));
  CHECK(json_equal(seen, attrs));
  free(p);
  p = fx_path(&F, "attrs.path");
  char *apath = fx_read(p);
  apath[strcspn(apath, "\n")] = 0;
  CHECK(apath[0] == '/');
  CHECK(!fx_exists(apath)); /* removed when the job finished */
  free(apath);
  free(p);
  free(envtxt);
  json_decref(seen);
  json_decref(attrs);
  fx_inv_free(&x);
  fx_fini(&F);
}

TEST(exec_no_attrs_gets_empty_file) {
  fx_init(&F, "exec-noattrs", 2, 1);
  fx_inv x;
  fx_sh(&F, &x, 1, "cat \"$BRAID_ATTRS_FILE\"; env | grep -c '^BRAID_ATTR_' || true");
  fx_submit(&F, &x.inv);
  fx_run(&F);
  CHECK_EQ_STR(fx_result(&F, 1)->log_tail, "{}\n0");
  fx_inv_free(&x);
  fx_fini(&F);
}

TEST(exec_progress_regex) {
  fx_init(&F, "exec-progress", 2, 1);
  fx_inv a, b;
  fx_sh(&F, &a, 1,
        "echo 'frame 1 (25%)'; echo noise; printf 'frame 2 (50%%)\\r'; echo 'frame 3 ( 75 %)';"
        " printf 'frame 4 (100%%)'");
  a.inv.progress_regex = "\\(\\s*([0-9.]+)\\s*%?\\)";
  fx_sh(&F, &b, 2, "echo 'progress: 0.3'; echo 'progress: 0.9' >&2");
  b.inv.progress_regex = "progress: ([0-9.]+)";
  b.inv.log_path = NULL; /* no log file: the tail is kept in memory */
  fx_submit(&F, &a.inv);
  fx_run(&F);
  CHECK_EQ_INT(F.n_prog, 4);
  CHECK(F.prog[0] == 0.25);
  CHECK(F.prog[1] == 0.5);
  CHECK(F.prog[2] == 0.75);
  CHECK(F.prog[3] == 1.0);
  char *log = fx_read(a.log);
  CHECK_CONTAINS(log, "noise\nframe 2 (50%)\rframe 3");
  free(log);
  fx_submit(&F, &b.inv);
  fx_run(&F);
  CHECK_EQ_INT(F.n_prog, 6);
  CHECK(F.prog[4] == 0.3);
  CHECK(F.prog[5] == 0.9);
  CHECK_EQ_STR(fx_result(&F, 2)->log_tail, "progress: 0.3\nprogress: 0.9");
  fx_inv_free(&a);
  fx_inv_free(&b);
  fx_fini(&F);
}

TEST(exec_leftover_background_killed_at_exit) {
  fx_init(&F, "exec-leftover", 2, 1);
  fx_inv a, b;
  fx_sh(&F, &a, 1, "sleep 300 & echo $! > bg.pid; echo bye");
  /* the same through the pipe (a progress regex): the pipe end comes too */
  fx_sh(&F, &b, 2, "sleep 300 & echo $! > bg2.pid; echo 'p 0.5'");
  b.inv.progress_regex = "p ([0-9.]+)";
  fx_submit(&F, &a.inv);
  fx_submit(&F, &b.inv);
  fx_run(&F);
  CHECK_EQ_INT(fx_result(&F, 1)->status, BR_INV_OK);
  CHECK(fx_result(&F, 1)->at < 5);
  CHECK(fx_result(&F, 2)->at < 5);
  const char *files[] = {"bg.pid", "bg2.pid"};
  for (int i = 0; i < 2; i++) {
    char *p = fx_path(&F, files[i]);
    char *t = fx_read(p);
    CHECK(t && atoi(t) > 0);
    CHECK(br_test_pid_gone((pid_t)atoi(t)));
    free(t);
    free(p);
  }
  fx_inv_free(&a);
  fx_inv_free(&b);
  fx_fini(&F);
}

TEST(exec_destroy_while_running) {
  fx_init(&F, "exec-destroy", 1, 1);
  fx_inv a, b;
  fx_sh(&F, &a, 1, "echo $$ > job.pid; exec sleep 300");
  fx_sh(&F, &b, 2, "sleep 300");
  fx_submit(&F, &a.inv);
  fx_submit(&F, &b.inv);
  char *p = fx_path(&F, "job.pid");
  while (!fx_exists(p)) uv_run(&F.loop, UV_RUN_NOWAIT), usleep(10000);
  usleep(50000);
  char *t = fx_read(p);
  pid_t pid = (pid_t)atoi(t);
  CHECK(pid > 0);
  fx_fini(&F); /* destroy: SIGKILL, no callbacks, no leaks */
  CHECK(br_test_pid_gone(pid));
  CHECK_EQ_INT(F.n_done, 0);
  free(t);
  free(p);
  fx_inv_free(&a);
  fx_inv_free(&b);
}

TEST(exec_many_short_jobs) {
  fx_init(&F, "exec-many", 3, 1);
  static fx_inv x[300];
  for (int i = 0; i < 300; i++) {
    fx_sh(&F, &x[i], i + 1, "true");
    x[i].argv[0] = (char *)"true";
    x[i].argv[1] = NULL;
    fx_submit(&F, &x[i].inv);
  }
  fx_run(&F);
  CHECK_EQ_INT(F.n_done, 300);
  for (int i = 0; i < 300; i++) CHECK_EQ_INT(F.done[i].status, BR_INV_OK);
  for (int i = 0; i < 300; i++) fx_inv_free(&x[i]);
  fx_fini(&F);
}

TEST(exec_path_from_invocation_env) {
  fx_init(&F, "exec-path", 2, 1);
  char *bin = fx_path(&F, "bin");
  CHECK_EQ_INT(mkdir(bin, 0755), 0);
  char *tool = fx_path(&F, "bin/my-tool");
  FILE *fp = fopen(tool, "w");
  fputs("#!/bin/sh\necho tool ran in $(pwd) with \"$1\"\n", fp);
  fclose(fp);
  chmod(tool, 0755);
  fx_inv x;
  fx_sh(&F, &x, 1, "");
  x.argv[0] = (char *)"my-tool";
  x.argv[1] = (char *)"arg one";
  x.argv[2] = NULL;
  char *path = NULL;
  CHECK(asprintf(&path, "PATH=%s:/usr/bin:/bin", bin) > 0);
  char *env[] = {path, NULL};
  x.inv.env = env;
  x.inv.cwd = bin;
  fx_submit(&F, &x.inv);
  fx_run(&F);
  fx_rec *r = fx_result(&F, 1);
  if (r->status != BR_INV_OK) br_test_fail(__FILE__, __LINE__, "%s", r->error);
  char *want = NULL;
  CHECK(asprintf(&want, "tool ran in %s with arg one", bin) > 0);
  CHECK_EQ_STR(r->log_tail, want);
  free(want);
  free(path);
  free(tool);
  free(bin);
  fx_inv_free(&x);
  fx_fini(&F);
}

TEST(exec_escaped_process_does_not_hold_the_job) {
  /* A process that leaves the job's session (setsid) escapes the group kill
   * and keeps the output pipe open: braid stops waiting for the pipe's end
   * a moment after the job's own process exited. */
  fx_init(&F, "exec-escaped", 2, 1);
  fx_inv x;
  fx_sh(&F, &x, 1, "setsid sh -c 'echo $$ > escaped.pid; exec sleep 300' & "
                   "while [ ! -s escaped.pid ]; do sleep 0.05; done; echo 'p 0.5'");
  x.inv.progress_regex = "p ([0-9.]+)";
  fx_submit(&F, &x.inv);
  fx_run(&F);
  fx_rec *r = fx_result(&F, 1);
  CHECK_EQ_INT(r->status, BR_INV_OK);
  CHECK(r->at < 10);
  CHECK_EQ_INT(F.n_prog, 1);
  char *p = fx_path(&F, "escaped.pid");
  char *t = fx_read(p);
  pid_t pid = (pid_t)atoi(t);
  CHECK(pid > 0);
  kill(pid, SIGKILL);
  free(t);
  free(p);
  fx_inv_free(&x);
  fx_fini(&F);
}

TEST(exec_silent_job_makes_no_log_file) {
  fx_init(&F, "exec-silent", 2, 1);
  fx_inv x;
  fx_sh(&F, &x, 1, "exit 0");
  fx_submit(&F, &x.inv);
  fx_run(&F);
  CHECK_EQ_INT(fx_result(&F, 1)->status, BR_INV_OK);
  CHECK_EQ_STR(fx_result(&F, 1)->log_tail, "");
  CHECK(!fx_exists(x.log));
  fx_inv_free(&x);
  fx_fini(&F);
}

TEST(exec_no_log_file_keeps_tail_in_memory) {
  fx_init(&F, "exec-nolog", 2, 1);
  fx_inv x;
  fx_sh(&F, &x, 1, "seq 1 20000; echo last >&2");
  x.inv.log_path = NULL;
  fx_submit(&F, &x.inv);
  fx_run(&F);
  fx_rec *r = fx_result(&F, 1);
  CHECK_EQ_INT(r->status, BR_INV_OK);
  CHECK(strncmp(r->log_tail, "19982\n19983\n", 12) == 0);
  CHECK(strcmp(r->log_tail + strlen(r->log_tail) - 10, "20000\nlast") == 0);
  fx_inv_free(&x);
  fx_fini(&F);
}

static void ignore_signal(int sig) { (void)sig; }

TEST(exec_reaper_takes_no_handler_of_ours) {
  /* the reaper is forked from braid: with braid's SIGTERM handler (braid
   * agent, braid server install theirs before the executor) a SIGTERM from
   * a service manager would not end it */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ignore_signal;
  sigaction(SIGTERM, &sa, NULL);
  fx_init(&F, "exec-reaper-term", 1, 1);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)getpid(), (int)getpid());
  char *kids = fx_read(path);
  pid_t reaper = (pid_t)atoi(kids); /* our only child: no job runs */
  free(kids);
  CHECK(reaper > 0);
  CHECK(kill(reaper, SIGTERM) == 0);
  CHECK(br_test_pid_gone(reaper));
  fx_fini(&F); /* and the executor ends cleanly without it */
}
