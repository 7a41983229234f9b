/* The local commands through the real braid binary (run, validate, status,
 * tasks, show, log, movie): what they print, where, and their exit status,
 * on small graphs written by each test. */
#include <braid/store.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static const char *braid_bin(void) {
  const char *b = getenv("BRAID_BIN");
  return b ? b : "braid";
}

/* What one braid command did. */
typedef struct cres {
  int code;
  char *out, *err;
} cres;

static void cres_free(cres *r) {
  free(r->out);
  free(r->err);
}

/* Runs `braid ARGS` (ARGS as printf makes them, shell words) in dir, stdin
 * from /dev/null; its stdout and stderr are kept in dir/.out and dir/.err. */
static cres braid(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cres braid(const char *dir, const char *fmt, ...) {
  char args[4096], cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "cd '%s' && exec '%s' %s </dev/null >.out 2>.err", dir,
           braid_bin(), args);
  cres r = {0};
  int st = system(cmd);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  char path[1024];
  snprintf(path, sizeof path, "%s/.out", dir);
  r.out = br_test_slurp(path);
  snprintf(path, sizeof path, "%s/.err", dir);
  r.err = br_test_slurp(path);
  return r;
}

/* ---- error messages ---- */

TEST(missing_task_error_has_no_stale_location) {
  char *dir = br_test_tmpdir("cli-show-missing");
  br_test_put(dir, "g.json", "{\"name\":\"g\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
  cres r = braid(dir, "run g.json --quiet");
  CHECK_EQ_INT(r.code, 0);
  cres_free(&r);
  r = braid(dir, "show 999 --json");
  CHECK_EQ_INT(r.code, 1);
  CHECK_EQ_STR(r.err, "braid: no task 999\n");
  cres_free(&r);
  r = braid(dir, "show 999");
  CHECK_EQ_STR(r.err, "braid: no task 999\n");
  cres_free(&r);
  free(dir);
}

/* ---- runs ---- */

/* Starts `braid ARGS` in dir in the background (its own process group, so
 * a signal to it reaches braid only); output to dir/run.out and run.err. */
static pid_t start_braid(const char *dir, const char *args) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && exec '%s' %s </dev/null >run.out 2>run.err", dir,
             braid_bin(), args);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(98);
  }
  return pid;
}

/* The exit status of pid, or -1 if it has not ended within `secs`. */
static int wait_exit_within(pid_t pid, int secs) {
  for (int i = 0; i < secs * 20; i++) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    usleep(50000);
  }
  return -1;
}

/* Sends sig to a braid run, and returns its exit status within 20 s; past
 * that it is killed and the test fails. */
static int signal_and_wait(pid_t pid, int sig) {
  kill(pid, sig);
  int rc = wait_exit_within(pid, 20);
  if (rc < 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    br_test_fail(__FILE__, __LINE__, "braid did not stop on signal %d", sig);
  }
  return rc;
}

/* What a braid run started by start_braid wrote on stderr (malloc'd). */
static char *run_err(const char *dir) {
  char path[1024];
  snprintf(path, sizeof path, "%s/run.err", dir);
  return br_test_slurp(path);
}

/* Waits up to 10 s for the file dir/name to hold `text`. */
static bool wait_for_text(const char *dir, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  for (int i = 0; i < 200; i++) {
    char *s = br_test_slurp(path);
    bool found = strstr(s, text) != NULL;
    free(s);
    if (found) return true;
    usleep(50000);
  }
  return false;
}

static const char *cycle_graph =
    "{\"name\":\"cyc\",\"start\":{\"node\":\"a\"},\"nodes\":[{\"name\":\"a\",\"type\":\"null\"},"
    "{\"name\":\"b\",\"type\":\"null\"}],\"wires\":[[\"a\",\"b\"],[\"b\",\"a\"]]}";

/* Names too long for their column are cut in the middle, with '~': a cut
 * shows, and names that differ at their end (shot010, shot020) still do.
 * A --node no task is at is said, not just an empty list. */
TEST(long_names_are_cut_in_the_middle) {
  char *dir = br_test_tmpdir("cli-long-names");
  br_test_put(dir, "g.json",
              "{\"name\":\"fit\",\"nodes\":[{\"name\":\"start\",\"type\":\"null\"},"
              "{\"name\":\"render_the_beauty_pass_of_shot010_final\",\"type\":\"null\"}],"
              "\"wires\":[[\"start\",\"render_the_beauty_pass_of_shot010_final\"]]}");
  cres r = braid(dir, "run g.json --quiet");
  CHECK_EQ_INT(r.code, 0);
  cres_free(&r);
  r = braid(dir, "status --store fit.braid.db");
  CHECK_CONTAINS(r.out, "\nrender_the_~hot010_final ");
  cres_free(&r);
  r = braid(dir, "tasks --store fit.braid.db");
  CHECK_CONTAINS(r.out, " render_th~t010_final fit ");
  cres_free(&r);
  /* a node no task is at: said, with the nodes that hold tasks */
  r = braid(dir, "tasks --store fit.braid.db --node render");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.err, "no task is at node 'render'; nodes with tasks: "
                        "render_the_beauty_pass_of_shot010_final\n");
  cres_free(&r);
  free(dir);
}

/* A failed job whose output ends in one long line: the summary shows the
 * line's end, not all of it. */
TEST(a_long_last_line_is_shown_by_its_end) {
  char *dir = br_test_tmpdir("cli-long-line");
  br_test_put(dir, "ll.json",
              "{\"name\":\"ll\",\"nodes\":[{\"name\":\"start\",\"type\":\"null\"},{\"name\":"
              "\"job\",\"type\":\"command\",\"params\":{\"shell\":\"echo first; head -c 3000 "
              "/dev/zero | tr '\\\\0' x; echo END; exit 1\",\"retries\":0}}],"
              "\"wires\":[[\"start\",\"job\"]]}");
  cres r = braid(dir, "run ll.json --quiet");
  CHECK_EQ_INT(r.code, 1);
  CHECK_CONTAINS(r.err, "      | first\n      | (2703 bytes before) ...xxx");
  CHECK_CONTAINS(r.err, "xxxEND\n");
  for (const char *p = r.err, *nl; *p; p = nl + 1) {
    nl = strchr(p, '\n');
    if (!nl) break;
    CHECK(nl - p < 400);
  }
  cres_free(&r);
  free(dir);
}

TEST(endless_loop_run_ends_with_an_error_naming_it) {
  char *dir = br_test_tmpdir("cli-endless");
  br_test_put(dir, "cyc.json", cycle_graph);
  cres r = braid(dir, "run cyc.json --quiet");
  CHECK_EQ_INT(r.code, 1);
  CHECK_CONTAINS(r.err, "task 1 (cyc) at node '");
  CHECK_CONTAINS(r.err, "for 100000 steps without running a job or waiting: an endless loop?");
  cres_free(&r);
  r = braid(dir, "run cyc.json --quiet --max-steps 0");
  CHECK_EQ_INT(r.code, 2);
  CHECK_CONTAINS(r.err, "--max-steps");
  cres_free(&r);
  free(dir);
}

TEST(signals_stop_a_run_busy_without_jobs) {
  /* nodes that never run a job nor wait kept the engine from ever looking
   * at signals: only SIGKILL stopped it */
  char *dir = br_test_tmpdir("cli-busy-signal");
  br_test_put(dir, "cyc.json", cycle_graph);
  int sigs[] = {SIGINT, SIGTERM};
  for (int k = 0; k < 2; k++) {
    pid_t pid = start_braid(dir, "run cyc.json --quiet --new --max-steps 4000000000000");
    CHECK(wait_for_text(dir, "run.err", "submitted"));
    usleep(200000); /* busy going round */
    CHECK_EQ_INT(signal_and_wait(pid, sigs[k]), 130);
    char *err = run_err(dir);
    CHECK_CONTAINS(err, "cancelled; run the same command again to resume");
    free(err);
  }
  free(dir);
}

TEST(cancelled_jobs_are_not_counted_done) {
  /* after Ctrl-C the progress line said "jobs 2 done" for two jobs that
   * were cancelled (they run again on resume) */
  char *dir = br_test_tmpdir("cli-cancel-counts");
  br_test_put(dir, "c.json",
              "{\"name\":\"c\",\"start\":{\"node\":\"s\",\"attrs\":{\"frame_start\":1,"
              "\"frame_end\":4}},\"nodes\":[{\"name\":\"s\",\"type\":\"split_range\","
              "\"params\":{\"chunk\":1}},{\"name\":\"job\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"echo x >> started; exec sleep 1000\"}}],\"wires\":[[\"s\",\"job\"]]}");
  pid_t pid = start_braid(dir, "run c.json --slots 2 --grace 1");
  CHECK(wait_for_text(dir, "started", "x\nx\n"));
  CHECK_EQ_INT(signal_and_wait(pid, SIGINT), 130);
  char *err = run_err(dir);
  CHECK_CONTAINS(err, ": jobs 0 done, 2 cancelled, 0 running, 4 queued; tasks 0 waiting, "
                      "0 blocked, 0 error\n");
  free(err);
  free(dir);
}

TEST(ctrl_c_during_a_large_split_is_not_held_up) {
  /* the engine made and wrote the 300,000 elements before it looked at the
   * signal again (a million: about 9 s); now the batch is left out */
  char *dir = br_test_tmpdir("cli-busy-split");
  br_test_put(dir, "big.json",
              "{\"name\":\"big\",\"start\":{\"node\":\"s\",\"attrs\":{\"frame_start\":1,"
              "\"frame_end\":300000}},\"nodes\":[{\"name\":\"s\",\"type\":\"split_range\","
              "\"params\":{\"chunk\":1}},{\"name\":\"g\",\"type\":\"gather_split\"}],"
              "\"wires\":[[\"s\",\"g\"]]}");
  pid_t pid = start_braid(dir, "run big.json --quiet");
  CHECK(wait_for_text(dir, "run.err", "submitted"));
  usleep(300000);
  CHECK_EQ_INT(signal_and_wait(pid, SIGINT), 130);
  char *err = run_err(dir);
  CHECK_CONTAINS(err, "task changes was written: it was left out, and the next run makes it "
                      "again\n");
  CHECK_CONTAINS(err, "braid: cancelled; run the same command again to resume\n");
  free(err);
  free(dir);
}

/* ---- logs ---- */

static const char *retry_graph =
    "{\"name\":\"flaky\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\",\"params\":"
    "{\"shell\":\"echo output of $BRAID_INVOCATION_ID; exit 3\",\"retries\":2}}]}";

TEST(each_attempt_has_its_own_log) {
  char *dir = br_test_tmpdir("cli-retry-logs");
  br_test_put(dir, "flaky.json", retry_graph);
  cres r = braid(dir, "run flaky.json --quiet");
  CHECK_EQ_INT(r.code, 1);
  cres_free(&r);
  r = braid(dir, "log 1 --json");
  CHECK_EQ_INT(r.code, 0);
  json_error_t jerr;
  json_t *invs = json_loads(r.out, 0, &jerr);
  CHECK_EQ_INT(json_array_size(invs), 3);
  for (size_t i = 0; i < 3; i++) {
    const char *log = json_string_value(json_object_get(json_array_get(invs, i), "log"));
    CHECK_CONTAINSF(log, "/1.%lld.log",
                    (long long)json_integer_value(json_object_get(json_array_get(invs, i), "id")));
  }
  json_decref(invs);
  cres_free(&r);
  r = braid(dir, "log 1 --all");
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_INT(br_test_count(r.out, "output of"), 3); /* was 9: each header showed all three */
  CHECK_EQ_INT(br_test_count(r.out, "== task 1, invocation"), 3);
  /* under each header, the output of that invocation */
  for (const char *p = strstr(r.out, "== task 1, invocation "); p;
       p = strstr(p + 1, "== task 1, invocation ")) {
    long long inv = atoll(p + strlen("== task 1, invocation "));
    const char *body = strchr(p, '\n') + 1;
    CHECK(strncmp(body, "output of ", 10) == 0);
    CHECK_EQ_INT(atoll(body + 10), inv);
  }
  cres_free(&r);
  free(dir);
}

typedef struct inv_rows {
  br_inv_info *v[16];
  int n;
} inv_rows;

static int collect_row(void *ud, br_inv_info *i) {
  inv_rows *w = ud;
  if (w->n < 16) w->v[w->n++] = i;
  else br_inv_info_free(i), free(i);
  return 0;
}

/* Makes the recorded log paths of the store's invocations what an older
 * braid wrote: relative to the folder `run` started in (from). */
static void make_log_paths_relative(const char *store, const char *from) {
  br_store *s;
  br_error err;
  CHECK(br_store_open(store, 0, &s, &err) == BR_OK);
  inv_rows w = {0};
  CHECK(br_store_inv_query(s, 0, collect_row, &w, &err) == BR_OK);
  CHECK(w.n > 0);
  CHECK(s->ops->begin(s, &err) == BR_OK);
  size_t n = strlen(from);
  for (int k = 0; k < w.n; k++) {
    br_inv_info *i = w.v[k];
    CHECK(i->row.log_path && strncmp(i->row.log_path, from, n) == 0);
    char *rel = strdup(i->row.log_path + n + 1);
    free(i->buf[2]);
    i->row.log_path = i->buf[2] = rel;
    CHECK(s->ops->inv_put(s, &i->row, &err) == BR_OK);
    br_inv_info_free(i);
    free(i);
  }
  CHECK(s->ops->commit(s, &err) == BR_OK);
  br_store_close(s);
}

TEST(log_found_beside_the_store_from_anywhere) {
  char *dir = br_test_tmpdir("cli-log-where");
  char a[1024], b[1024];
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  CHECK(mkdir(a, 0755) == 0 && mkdir(b, 0755) == 0);
  br_test_put(a, "g.json", "{\"name\":\"g\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\","
                   "\"params\":{\"shell\":\"echo hello from the job\"}}]}");
  cres r = braid(a, "run g.json --store sub/x.braid.db --quiet");
  CHECK_EQ_INT(r.code, 0);
  cres_free(&r);
  /* from another folder, by a relative and an absolute store path */
  r = braid(b, "log 1 --store ../a/sub/x.braid.db");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.out, "hello from the job"); /* was "(no output)" */
  cres_free(&r);
  r = braid(b, "log 1 --store %s/sub/x.braid.db", a);
  CHECK_CONTAINS(r.out, "hello from the job");
  cres_free(&r);
  /* a store an older braid wrote: log paths relative to where run started */
  char store[1200];
  snprintf(store, sizeof store, "%s/sub/x.braid.db", a);
  char *real_a = realpath(a, NULL);
  make_log_paths_relative(store, real_a);
  free(real_a);
  r = braid(b, "log 1 --store ../a/sub/x.braid.db --json");
  CHECK_CONTAINS(r.out, "\"log\": \"sub/x.braid.logs/");
  cres_free(&r);
  r = braid(b, "log 1 --store ../a/sub/x.braid.db");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.out, "hello from the job");
  cres_free(&r);
  /* the store and its logs moved together */
  char a2[1024];
  snprintf(a2, sizeof a2, "%s/a2", dir);
  CHECK(rename(a, a2) == 0);
  r = braid(b, "log 1 --store ../a2/sub/x.braid.db");
  CHECK_CONTAINS(r.out, "hello from the job");
  cres_free(&r);
  /* the file gone: say so, and show the tail the store kept */
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "rm -r '%s/sub/x.braid.logs'", a2);
  CHECK(system(cmd) == 0);
  r = braid(b, "log 1 --store ../a2/sub/x.braid.db");
  CHECK_EQ_INT(r.code, 1);
  CHECK_CONTAINS(r.err, "braid: log file sub/x.braid.logs/0/1.2.log is missing");
  CHECK_CONTAINS(r.out, "(the last lines the store kept)\nhello from the job\n");
  cres_free(&r);
  free(dir);
}

TEST(log_of_a_task_that_does_not_exist) {
  char *dir = br_test_tmpdir("cli-log-missing-task");
  br_test_put(dir, "g.json", "{\"name\":\"g\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
  cres r = braid(dir, "run g.json --quiet");
  cres_free(&r);
  r = braid(dir, "log 999");
  CHECK_EQ_INT(r.code, 1);
  CHECK_EQ_STR(r.err, "braid: no task 999\n"); /* was "task 999 has run no job" */
  cres_free(&r);
  r = braid(dir, "log 999 --json");
  CHECK_EQ_INT(r.code, 1); /* was [] and 0 */
  CHECK_EQ_STR(r.out, "");
  CHECK_EQ_STR(r.err, "braid: no task 999\n");
  cres_free(&r);
  r = braid(dir, "log 1"); /* a task that ran no job */
  CHECK_EQ_INT(r.code, 1);
  CHECK_EQ_STR(r.err, "braid: task 1 has run no job\n");
  cres_free(&r);
  free(dir);
}

/* ---- movie ---- */

TEST(movie_options_are_checked) {
  char *dir = br_test_tmpdir("cli-movie");
  br_test_put(dir, "a.png", "not really");
  const char *seqs = "--sequences '[[\"a.png\"],[\"a.png\"],[\"a.png\"]]'";
  static const struct {
    const char *opt, *says;
  } bad[] = {
      /* 99999x99999 overflowed an int (UBSan) and then passed */
      {"--tile 99999x99999", "--tile: '99999x99999' is not COLSxROWS (whole numbers from 1 to 100"},
      {"--tile abc", "--tile: 'abc' is not COLSxROWS"},
      {"--tile 2x", "--tile: '2x' is not COLSxROWS"},
      {"--tile 2x+2", "--tile: '2x+2' is not COLSxROWS"},
      {"--tile 1x2", "--tile 1x2 holds 2 sequences, and there are 3"},
      {"--crf 999", "--crf: '999' is not a whole number from 0 to 51"},
      {"--fps 0", "--fps: '0' is not a whole number from 1 to 1000"},
      {"--fps 24x", "--fps: '24x' is not"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cres r = braid(dir, "movie --output t.mp4 %s %s", bad[i].opt, seqs);
    CHECK_EQ_INT(r.code, 2);
    CHECK_CONTAINSF(r.err, "braid: %s", bad[i].says);
    cres_free(&r);
  }
  /* the ffmpeg node refuses at load what braid movie would refuse on the
   * worker (sscanf took " 2x2" and "2x+2"), and takes what it takes */
  static const char *const tiles[] = {" 2x2", "2x+2", "2x 2", "0x2", "101x1", "2x2", "1x100"};
  for (size_t i = 0; i < sizeof tiles / sizeof tiles[0]; i++) {
    char g[512];
    snprintf(g, sizeof g,
             "{\"name\":\"m\",\"nodes\":[{\"name\":\"mov\",\"type\":\"ffmpeg\",\"params\":"
             "{\"output\":\"m.mp4\",\"tile\":\"%s\"}}]}",
             tiles[i]);
    br_test_put(dir, "m.json", g);
    cres r = braid(dir, "validate m.json");
    bool good = i >= 5;
    if (r.code != (good ? 0 : 2) ||
        (!good && !strstr(r.err, "parameter 'tile': the grid is COLSxROWS, each from 1 to 100")))
      br_test_fail(__FILE__, __LINE__, "tile '%s': exit %d, stderr '%s'", tiles[i], r.code, r.err);
    cres_free(&r);
  }
  /* a missing folder is an error, unless --mkdirs */
  br_test_put(dir, "ffmpeg.sh", "#!/bin/sh\nfor a; do last=$a; done\necho movie > \"$last\"\n");
  char script[1100];
  snprintf(script, sizeof script, "%s/ffmpeg.sh", dir);
  CHECK(chmod(script, 0755) == 0);
  cres r = braid(dir, "movie --output new/t.mp4 --sequences '[\"a.png\"]' --ffmpeg ./ffmpeg.sh");
  CHECK_EQ_INT(r.code, 1);
  CHECK_CONTAINS(r.err, "braid: the folder of --output, new, does not exist (--mkdirs makes it)");
  struct stat st;
  snprintf(script, sizeof script, "%s/new", dir);
  CHECK(stat(script, &st) != 0);
  cres_free(&r);
  r = braid(dir,
            "movie --output new/t.mp4 --sequences '[\"a.png\"]' --ffmpeg ./ffmpeg.sh --mkdirs");
  CHECK_EQ_INT(r.code, 0);
  snprintf(script, sizeof script, "%s/new/t.mp4", dir);
  char *movie = br_test_slurp(script);
  CHECK_EQ_STR(movie, "movie\n");
  free(movie);
  cres_free(&r);
  free(dir);
}

/* ---- resuming and graph versions ---- */

static const char *job_graph(const char *name, const char *shell, char *buf, size_t size) {
  snprintf(buf, size,
           "{\"name\":\"%s\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\",\"params\":"
           "{\"shell\":\"%s\",\"retries\":0}}]}",
           name, shell);
  return buf;
}

TEST(a_changed_graph_does_not_resume_silently) {
  char *dir = br_test_tmpdir("cli-graph-version");
  char g[1024];
  br_test_put(dir, "g.json", job_graph("g", "echo old; exit 1", g, sizeof g));
  cres r = braid(dir, "run g.json --quiet");
  CHECK_EQ_INT(r.code, 1);
  cres_free(&r);
  /* edited: the unfinished (failed) task would run the old command again */
  br_test_put(dir, "g.json", job_graph("g", "echo new", g, sizeof g));
  r = braid(dir, "run g.json --quiet");
  CHECK_EQ_INT(r.code, 2);
  CHECK_CONTAINS(r.err, "braid: g.braid.db holds 1 unfinished tasks of another version of "
                        "graph 'g' (version 1), not of g.json (the file was changed since, or "
                        "another has the same graph name)");
  CHECK_CONTAINS(r.err, "--stored-graph  to finish them with the graph they started with");
  CHECK_CONTAINS(r.err, "--new           to cancel them and start again with g.json");
  cres_free(&r);
  /* another file with the same name is another version too */
  br_test_put(dir, "other.json", job_graph("g", "echo other", g, sizeof g));
  r = braid(dir, "run other.json --store g.braid.db --quiet");
  CHECK_EQ_INT(r.code, 2);
  CHECK_CONTAINS(r.err, "another version of graph 'g' (version 1), not of other.json");
  cres_free(&r);
  r = braid(dir, "run g.json --quiet --stored-graph");
  CHECK_EQ_INT(r.code, 1); /* the stored command, which fails */
  CHECK_CONTAINS(r.err, "1 unfinished tasks go on with the graph they started with, not g.json");
  cres_free(&r);
  r = braid(dir, "log 1");
  CHECK_CONTAINS(r.out, "old");
  cres_free(&r);
  r = braid(dir, "run g.json --quiet --new --stored-graph");
  CHECK_EQ_INT(r.code, 2);
  cres_free(&r);
  r = braid(dir, "run g.json --new");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.err, "cancelled 1 unfinished tasks of another version of graph 'g' (version 1) "
                        "(--new)");
  cres_free(&r);
  r = braid(dir, "tasks --json");
  json_error_t jerr;
  json_t *tasks = json_loads(r.out, 0, &jerr);
  CHECK_EQ_INT(json_array_size(tasks), 2);
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(tasks, 0), "state")), "cancelled");
  CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(tasks, 1), "state")), "done");
  json_decref(tasks);
  cres_free(&r);
  r = braid(dir, "run g.json");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.err, "already holds a finished run (use --new to run again)");
  cres_free(&r);
  r = braid(dir, "run other.json --store g.braid.db");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.err, "already holds a finished run of another version of graph 'g' "
                        "(use --new to run this one)");
  cres_free(&r);
  /* another graph in the same store is named as such */
  br_test_put(dir, "h.json", job_graph("h", "exit 1", g, sizeof g));
  r = braid(dir, "run h.json --store g.braid.db");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.err, "already holds a finished run of graph 'g' (use --new to run this one)");
  cres_free(&r);
  r = braid(dir, "run h.json --store g.braid.db --new --quiet");
  CHECK_EQ_INT(r.code, 1);
  cres_free(&r);
  r = braid(dir, "run g.json");
  CHECK_EQ_INT(r.code, 2);
  CHECK_CONTAINS(r.err, "holds 1 unfinished tasks of graph 'h', not of g.json (another graph "
                        "file uses this store)");
  cres_free(&r);
  free(dir);
}

/* ---- jobs do not outlive braid ---- */

/* The children of pid (from /proc), up to max; returns how many. */
static int children_of(pid_t pid, pid_t *out, int max) {
  char path[128];
  snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
  char *s = br_test_slurp(path);
  int n = 0;
  for (char *p = s; *p && n < max;) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p) break;
    out[n++] = (pid_t)v;
    p = end;
  }
  free(s);
  return n;
}

static pid_t read_pid(const char *dir, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  char *s = br_test_slurp(path);
  pid_t pid = (pid_t)atoi(s);
  free(s);
  return pid;
}

/* Starts `braid run` in dir on a graph g of one command node whose shell
 * writes its pid to job.pid (and no double quote); returns braid's pid,
 * once the job runs (*job: its pid). */
static pid_t start_one_job(const char *dir, const char *shell, pid_t *job) {
  char graph[1024];
  snprintf(graph, sizeof graph,
           "{\"name\":\"g\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\",\"params\":"
           "{\"shell\":\"%s\"}}]}",
           shell);
  br_test_put(dir, "g.json", graph);
  pid_t run = start_braid(dir, "run g.json --quiet");
  CHECK(wait_for_text(dir, "job.pid", "\n"));
  *job = read_pid(dir, "job.pid");
  return run;
}

TEST(jobs_die_when_braid_is_killed) {
  /* after kill -9 of braid run, its jobs ran on unseen, and the next run
   * started them again beside them */
  char *dir = br_test_tmpdir("cli-orphans");
  pid_t job;
  pid_t run = start_one_job(dir, "sleep 300 & echo $! > inner.pid; echo $$ > job.pid; wait", &job);
  CHECK(wait_for_text(dir, "inner.pid", "\n"));
  pid_t inner = read_pid(dir, "inner.pid");
  CHECK(job > 0 && inner > 0);
  CHECK(kill(job, 0) == 0 && kill(inner, 0) == 0);
  /* as `pkill -9 braid` and `pkill -9 -f braid` do: every process whose
   * name or command line has "braid" in it (the reaper's have not, or it
   * went too and the jobs ran on) */
  pid_t kids[8];
  int n = children_of(run, kids, 8);
  CHECK_EQ_INT(n, 2);
  for (int i = 0; i < n; i++) {
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)kids[i]);
    char *comm = br_test_slurp(path);
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)kids[i]);
    FILE *f = fopen(path, "rb");
    size_t len = f ? fread(line, 1, sizeof line - 1, f) : 0;
    if (f) fclose(f);
    for (size_t k = 0; k < len; k++)
      if (!line[k]) line[k] = ' '; /* as pgrep -f reads it */
    line[len] = '\0';
    if (strstr(comm, "braid") || strstr(line, "braid")) kill(kids[i], SIGKILL);
    free(comm);
  }
  kill(run, SIGKILL);
  waitpid(run, NULL, 0);
  /* the job's shell and what it started in the background */
  CHECK(br_test_pid_gone(job));
  CHECK(br_test_pid_gone(inner));
  free(dir);
}

TEST(a_cut_attempt_is_closed_as_lost) {
  /* braid run killed with -9 while its job ran: the next run ran the task
   * again, but the cut attempt's row said "running" for ever (in show, log,
   * the HTTP API and the web UI) */
  char *dir = br_test_tmpdir("cli-cut");
  pid_t job;
  pid_t run = start_one_job(
      dir, "if [ -e cut ]; then exit 0; fi; touch cut; echo $$ > job.pid; exec sleep 300", &job);
  kill(run, SIGKILL);
  waitpid(run, NULL, 0);
  CHECK(br_test_pid_gone(job));
  cres r = braid(dir, "run g.json --quiet");
  CHECK_EQ_INT(r.code, 0);
  cres_free(&r);
  char store[1024];
  snprintf(store, sizeof store, "%s/g.braid.db", dir);
  br_store *s;
  br_error err;
  CHECK(br_store_open(store, BR_STORE_READONLY, &s, &err) == BR_OK);
  inv_rows w = {0};
  CHECK(br_store_inv_query(s, 1, collect_row, &w, &err) == BR_OK);
  br_store_close(s);
  CHECK_EQ_INT(w.n, 2);
  const br_inv_row *cut = &w.v[0]->row, *again = &w.v[1]->row;
  CHECK_EQ_STR(cut->status, "lost");
  CHECK_EQ_INT(cut->attempt, 1);
  CHECK(cut->started_ms > 0 && cut->ended_ms >= cut->started_ms);
  CHECK_CONTAINS(cut->error, "stopped (killed or crashed) before it ended");
  /* the cut attempt counts as one */
  CHECK_EQ_STR(again->status, "ok");
  CHECK_EQ_INT(again->attempt, 2);
  for (int k = 0; k < w.n; k++) br_inv_info_free(w.v[k]), free(w.v[k]);
  /* and braid log says how it ended, not "exit 0" */
  r = braid(dir, "log 1 --all");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.out, "attempt 1: lost (the braid run or server in charge of it stopped");
  cres_free(&r);
  free(dir);
}

/* ---- option parsing ---- */

TEST(bad_options_and_stray_arguments_are_usage_errors) {
  char *dir = br_test_tmpdir("cli-options");
  br_test_put(dir, "g.json", "{\"name\":\"g\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
  cres r = braid(dir, "run g.json --quiet");
  CHECK_EQ_INT(r.code, 0);
  cres_free(&r);
  static const struct {
    const char *args, *says;
  } bad[] = {
      {"tasks --limit abc", "--limit: 'abc' is not a whole number of at least 1"},
      {"tasks --limit -1", "--limit: '-1' is not"},
      {"tasks --limit 0", "--limit: '0' is not"},
      {"tasks --parent abc", "'abc' is not a task id (--parent): ids are whole numbers"},
      {"tasks --parent 0", "'0' is not a task id (--parent): ids are positive"},
      {"show 99999999999999999999", "'99999999999999999999' is not a task id: ids are whole"},
      {"run g.json --grace abc", "--grace: 'abc' is not a time of more than 0"},
      {"run g.json --grace -1", "--grace: '-1' is not a time"},
      {"agent --grace nan", "--grace: 'nan' is not a time of more than 0"},
      {"agent --idle-exit inf", "--idle-exit: 'inf' is not a time"},
      {"server --poll-wait nan", "--poll-wait: 'nan' is not a time"},
      {"server --lost-after 0", "--lost-after: '0' is not a time"},
      {"run g.json --slots 2abc", "--slots: '2abc' is not a whole number from 1 to 10000"},
      {"run g.json --slots 99999999999", "--slots: '99999999999' is not"},
      {"run g.json extra", "unexpected argument 'extra'"},
      {"status extra junk", "unexpected argument 'extra'"},
      {"tasks 5", "unexpected argument '5'"},
      {"show 1 2", "unexpected argument '2'"},
      {"version extra", "version: unexpected argument 'extra'"},
      {"show 1 --limit 5", "show does not take --limit (braid tasks does)"},
      {"log 1 --state done", "log does not take --state"},
      {"status --node a", "status does not take --node"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = braid(dir, "%s", bad[i].args);
    if (r.code != 2 || !strstr(r.err, bad[i].says))
      br_test_fail(__FILE__, __LINE__, "braid %s: exit %d, stderr '%s'; expected 2 and '%s'",
                   bad[i].args, r.code, r.err, bad[i].says);
    cres_free(&r);
  }
  /* and the good ones still work */
  r = braid(dir, "tasks --limit 1 --parent 1 --json");
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_STR(r.out, "[]\n");
  cres_free(&r);
  r = braid(dir, "run g.json --grace 2m --slots 3 --quiet");
  CHECK_EQ_INT(r.code, 0);
  cres_free(&r);
  r = braid(dir, "help depot ls"); /* help COMMAND SUBCOMMAND: that one's help */
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.out, "usage: braid depot ls DEPOT [NAME]");
  cres_free(&r);
  r = braid(dir, "version");
  CHECK_EQ_STR(r.out, "braid 0.1.0\n");
  cres_free(&r);
  r = braid(dir, "help run");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.out, "usage: braid run GRAPH");
  cres_free(&r);
  free(dir);
}

TEST(validate_warns_about_braces_and_stays_valid) {
  char *dir = br_test_tmpdir("cli-validate-warn");
  br_test_put(dir, "w.json",
              "{\"name\":\"w\",\"nodes\":[\n"
              "{\"name\":\"a\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"awk '{print $1}' f\"}}]}");
  cres r = braid(dir, "validate w.json");
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_STR(r.out, "w.json: ok (graph 'w', 1 nodes)\n");
  CHECK_CONTAINS(r.err, "w.json:2:48: warning: node 'a' (command): \"awk '{print $1}' f\": "
                        "{print $1} stands for the task's attribute 'print $1'");
  cres_free(&r);
  free(dir);
}

/* validate takes files only: an option is a usage error that names it,
 * not a file it cannot open; a file named like one goes after "--". */
TEST(validate_refuses_options_by_name) {
  char *dir = br_test_tmpdir("cli-validate-opt");
  br_test_put(dir, "v.json", "{\"name\":\"v\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
  br_test_put(dir, "-v.json", "{\"name\":\"w\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
  cres r = braid(dir, "validate v.json --json");
  CHECK_EQ_INT(r.code, 2);
  CHECK_EQ_STR(r.out, "");
  CHECK_CONTAINS(r.err, "validate takes no option '--json'");
  cres_free(&r);
  r = braid(dir, "validate v.json -- -v.json");
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_STR(r.out, "v.json: ok (graph 'v', 1 nodes)\n-v.json: ok (graph 'w', 1 nodes)\n");
  cres_free(&r);
  free(dir);
}

TEST(set_reads_values_as_ctl_and_says_when_it_is_not_applied) {
  /* --set on a resumed run was dropped without a word; 'k:=[1,2]' (ctl's
   * form) made an attribute named "k:" */
  char *dir = br_test_tmpdir("cli-set");
  br_test_put(dir, "s.json",
              "{\"name\":\"s\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"test -n \\\"$BRAID_ATTR_OK\\\"\",\"retries\":0}}]}");
  cres r = braid(dir, "run s.json --quiet --set 'frames:=[1,2]' --set 'name:=\"a b\"'");
  CHECK_EQ_INT(r.code, 1); /* no ok */
  CHECK(!strstr(r.err, "warning"));
  cres_free(&r);
  r = braid(dir, "show 1 --json");
  json_t *t = json_loads(r.out, 0, NULL);
  json_t *attrs = json_object_get(t, "attrs");
  CHECK_EQ_INT(json_array_size(json_object_get(attrs, "frames")), 2);
  CHECK_EQ_STR(json_string_value(json_object_get(attrs, "name")), "a b");
  CHECK(!json_object_get(attrs, "frames:"));
  json_decref(t);
  cres_free(&r);
  r = braid(dir, "run s.json --set 'x:=[1,2'");
  CHECK_EQ_INT(r.code, 2);
  CHECK_CONTAINS(r.err, "braid: --set: 'x:=[1,2': the value is not JSON: ");
  cres_free(&r);
  r = braid(dir, "run s.json --quiet --set ok=1");
  CHECK_EQ_INT(r.code, 1); /* the resumed task runs as it was */
  CHECK_CONTAINS(r.err, "braid: warning: --set is not applied: it sets the attributes of a new "
                        "run's task, and s.braid.db holds an unfinished run (--new starts a new "
                        "one with them)\n");
  cres_free(&r);
  r = braid(dir, "run s.json --quiet --set ok=1 --new"); /* the new task takes it */
  CHECK_CONTAINS(r.err, "tasks: done 1 error 1\n");
  CHECK(!strstr(r.err, "warning"));
  cres_free(&r);
  r = braid(dir, "run s.json --store f.db --quiet --json --set ok=2");
  CHECK_EQ_INT(r.code, 0);
  CHECK_EQ_STR(r.err, "");
  cres_free(&r);
  r = braid(dir, "run s.json --store f.db --quiet --json --set ok=2");
  CHECK_EQ_INT(r.code, 0); /* as without --set: nothing to do; said even with --json */
  CHECK_CONTAINS(r.err, "--set is not applied: it sets the attributes of a new run's task, and "
                        "f.db holds a finished run");
  cres_free(&r);
  free(dir);
}

TEST(store_strings_are_quoted_in_hints_and_read_back) {
  /* the summary's hints were unquoted ("--store b.db?sync=full" is a shell
   * glob), and the readers refused the store string run had taken */
  char *dir = br_test_tmpdir("cli-store-strings");
  br_test_put(dir, "f.json",
              "{\"name\":\"f\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"echo bad; exit 1\",\"retries\":0}}]}");
  cres r = braid(dir, "run f.json --store 'b.db?sync=full' --quiet");
  CHECK_EQ_INT(r.code, 1);
  CHECK_CONTAINS(r.err, "    whole log: braid log 1 --store 'b.db?sync=full'\n");
  CHECK_CONTAINS(r.err, "(braid tasks --state error --store 'b.db?sync=full' lists them all)");
  cres_free(&r);
  r = braid(dir, "log 1 --store 'b.db?sync=full'");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.out, "bad\n");
  cres_free(&r);
  r = braid(dir, "tasks --state error --store 'b.db?sync=full' --json");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.out, "\"state\": \"error\"");
  cres_free(&r);
  r = braid(dir, "run f.json --store 'my store.db' --quiet");
  CHECK_CONTAINS(r.err, "whole log: braid log 1 --store 'my store.db'\n");
  cres_free(&r);
  r = braid(dir, "run f.json --store \"it's.db\" --quiet");
  CHECK_CONTAINS(r.err, "whole log: braid log 1 --store 'it'\\''s.db'\n");
  cres_free(&r);
  /* unknown options are refused, by run and by the readers */
  r = braid(dir, "run f.json --store 'c.db?sync=bogus'");
  CHECK_EQ_INT(r.code, 2);
  CHECK_CONTAINS(r.err, "braid: store c.db?sync=bogus: unknown option 'sync=bogus'");
  cres_free(&r);
  struct stat st;
  char path[1100];
  snprintf(path, sizeof path, "%s/c.db?sync=bogus", dir);
  CHECK(stat(path, &st) != 0);
  r = braid(dir, "status --store 'b.db?cache=big'");
  CHECK_EQ_INT(r.code, 2);
  CHECK_CONTAINS(r.err, "unknown option 'cache=big'");
  cres_free(&r);
  free(dir);
}

/* The names in dir but the test's own .out and .err, each followed by a space, in
 * the order readdir gives (a test compares it to one name or "": no leftovers). */
static void dir_names(const char *dir, char *buf, size_t size) {
  buf[0] = '\0';
  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, ".out") &&
        strcmp(de->d_name, ".err"))
      snprintf(buf + strlen(buf), size - strlen(buf), "%s ", de->d_name);
  }
  if (d) closedir(d);
}

TEST(a_store_that_is_no_file_is_refused) {
  /* --store '' and ':memory:' ran on SQLite's throw-away databases: exit 0,
   * a rerun did every job again, and '-lock' and '.logs/' were left here */
  char *dir = br_test_tmpdir("cli-store-no-file");
  br_test_put(dir, "g.json",
              "{\"name\":\"g\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\","
              "\"params\":{\"shell\":\"echo ran >> count.txt\"}}]}");
  static const struct {
    const char *args, *says;
  } bad[] = {
      {"run g.json --store ''", "--store '': a store is a file"},
      {"run g.json --store '?sync=full'", "--store '?sync=full': a store is a file"},
      {"run g.json --store :memory:", "(SQLite's in-memory database is not one); give a path"},
      {"status --store ''", "--store '': a store is a file"},
      {"tasks --store :memory:", "--store ':memory:': a store is a file"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cres r = braid(dir, "%s", bad[i].args);
    if (r.code != 2 || !strstr(r.err, bad[i].says))
      br_test_fail(__FILE__, __LINE__, "braid %s: exit %d, stderr '%s'; expected 2 and '%s'",
                   bad[i].args, r.code, r.err, bad[i].says);
    cres_free(&r);
  }
  char names[512];
  dir_names(dir, names, sizeof names);
  CHECK_EQ_STR(names, "g.json ");
  /* nor does the library open one */
  br_store *s = NULL;
  br_error err;
  CHECK_EQ_INT(br_store_open(":memory:", 0, &s, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg, "a store is a file: ':memory:' is SQLite's in-memory database");
  CHECK_EQ_INT(br_store_open("?sync=normal", 0, &s, &err), BR_EINVAL);
  CHECK(s == NULL);
  free(dir);
}

TEST(what_is_not_a_store_is_named_and_left_alone) {
  /* a CSV file: the readers asked for "a schema upgrade", run said "file is
   * not a database" and left shots.csv-lock; a folder: "disk I/O error" */
  char *dir = br_test_tmpdir("cli-not-a-store");
  br_test_put(dir, "g.json", "{\"name\":\"g\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
  br_test_put(dir, "shots.csv", "shot,frame\nsh010,1\n");
  char path[1100];
  snprintf(path, sizeof path, "%s/adir", dir);
  CHECK(mkdir(path, 0755) == 0);
  snprintf(path, sizeof path, "%s/other.db", dir);
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "CREATE TABLE shots(name TEXT)", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  struct stat before, after;
  CHECK(stat(path, &before) == 0);
  static const struct {
    const char *store, *says;
  } bad[] = {
      {"shots.csv", "shots.csv is not a braid store: it is not a SQLite database\n"},
      {"adir", "adir is not a braid store: it is a folder\n"},
      {"other.db", "other.db is not a braid store: a SQLite database without braid's tables\n"},
  };
  static const char *const cmds[] = {"status", "tasks", "show 1", "log 1", "run g.json"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++) {
      cres r = braid(dir, "%s --store %s", cmds[k], bad[i].store);
      char want[256];
      snprintf(want, sizeof want, "braid: %s", bad[i].says);
      if (r.code != 2 || strcmp(r.err, want) != 0)
        br_test_fail(__FILE__, __LINE__, "braid %s --store %s: exit %d, stderr '%s'; expected 2 "
                     "and '%s'", cmds[k], bad[i].store, r.code, r.err, want);
      cres_free(&r);
    }
  }
  char names[512];
  dir_names(dir, names, sizeof names);
  CHECK_EQ_INT(br_test_count(names, " "), 4); /* g.json shots.csv adir other.db: no -lock */
  CHECK(!strstr(names, "-lock") && !strstr(names, "logs"));
  CHECK(stat(path, &after) == 0); /* not made a braid store, nor WAL */
  CHECK(after.st_size == before.st_size && after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
        after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  cres r = braid(dir, "status --store shots.csv --json");
  CHECK_EQ_INT(r.code, 2);
  CHECK_EQ_STR(r.out, "");
  cres_free(&r);
  free(dir);
}

/* ---- the run's summary ---- */

TEST(json_summary_lists_the_failed_tasks) {
  char *dir = br_test_tmpdir("cli-json-summary");
  br_test_put(dir, "f.json",
              "{\"name\":\"f\",\"nodes\":[{\"name\":\"s\",\"type\":\"spawn\","
              "\"params\":{\"count\":2}},{\"name\":\"job\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"echo failing {index}; exit 4\",\"retries\":0}}],"
              "\"wires\":[[\"s.children\",\"job\"]]}");
  cres r = braid(dir, "run f.json --json --store 'f.db?sync=full'");
  CHECK_EQ_INT(r.code, 1);
  CHECK_EQ_STR(r.err, ""); /* all of it is in the JSON */
  json_error_t jerr;
  json_t *j = json_loads(r.out, 0, &jerr);
  CHECK(j != NULL);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "states"), "error")), 2);
  json_t *failed = json_object_get(j, "failed");
  CHECK_EQ_INT(json_array_size(failed), 2);
  for (size_t i = 0; i < 2; i++) {
    json_t *t = json_array_get(failed, i);
    json_int_t id = json_integer_value(json_object_get(t, "id"));
    CHECK(id > 1);
    CHECK_EQ_STR(json_string_value(json_object_get(t, "node")), "job");
    CHECK_EQ_STR(json_string_value(json_object_get(t, "error")), "exit code 4 after 1 attempt");
    CHECK_CONTAINS(json_string_value(json_object_get(t, "last_lines")), "failing ");
    char want[128];
    snprintf(want, sizeof want, "braid log %lld --store 'f.db?sync=full'", (long long)id);
    CHECK_EQ_STR(json_string_value(json_object_get(t, "log_command")), want);
  }
  json_decref(j);
  cres_free(&r);
  free(dir);
}

TEST(a_run_left_blocked_for_good_fails_naming_the_node) {
  /* a fan-out splits the task in two; one element parks at x (no wire out
   * of it), so the gather waits for it for ever: that run did not finish
   * (it said "finished", exit 0) */
  char *dir = br_test_tmpdir("cli-blocked");
  br_test_put(dir, "s.json",
              "{\"name\":\"s\",\"nodes\":[{\"name\":\"start\",\"type\":\"null\"},"
              "{\"name\":\"x\",\"type\":\"null\"},{\"name\":\"g\",\"type\":\"gather_split\"}],"
              "\"wires\":[[\"start\",\"g\"],[\"start\",\"x\"]]}");
  cres r = braid(dir, "run s.json");
  CHECK_EQ_INT(r.code, 1);
  /* the progress line says blocked as the summary does (it said "1 waiting") */
  CHECK_CONTAINS(r.err, "; tasks 0 waiting, 1 blocked, 0 error\n");
  CHECK_CONTAINS(r.err, "braid: finished in ");
  CHECK_CONTAINS(r.err, "braid: 1 tasks are blocked for good: they wait for tasks that will not "
                        "come (nothing is left to run)\n  node 'g': 1\n"
                        "  (braid tasks --state blocked --store s.braid.db lists them)\n");
  cres_free(&r);
  r = braid(dir, "run s.json --json"); /* the same when run again, and in the JSON */
  CHECK_EQ_INT(r.code, 1);
  json_t *j = json_loads(r.out, 0, NULL);
  json_t *b = json_array_get(json_object_get(j, "blocked"), 0);
  CHECK_EQ_STR(json_string_value(json_object_get(b, "node")), "g");
  CHECK_EQ_INT(json_integer_value(json_object_get(b, "tasks")), 1);
  json_decref(j);
  cres_free(&r);
  free(dir);
}

TEST(last_lines_of_a_log_show_control_bytes_escaped) {
  /* they stopped at a NUL byte, and printed raw escape sequences */
  char *dir = br_test_tmpdir("cli-tail-bytes");
  br_test_put(dir, "f.json",
              "{\"name\":\"f\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"printf 'a\\\\033[31mred\\\\000after\\\\tTab\\\\n'; exit 1\","
              "\"retries\":0}}]}");
  cres r = braid(dir, "run f.json --quiet");
  CHECK_EQ_INT(r.code, 1);
  CHECK_CONTAINS(r.err, "      | a\\x1b[31mred\\x00after\tTab\n");
  CHECK(!strchr(r.err, '\x1b'));
  cres_free(&r);
  free(dir);
}

TEST(log_header_says_how_a_job_ended) {
  /* a timeout showed as "exit -1" */
  char *dir = br_test_tmpdir("cli-log-header");
  br_test_put(dir, "t.json",
              "{\"name\":\"t\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"sleep 30\",\"timeout\":0.3}},"
              "{\"name\":\"k\",\"type\":\"command\",\"params\":{\"shell\":\"kill -9 $$\","
              "\"retries\":0}}],\"start\":{\"node\":\"job\"}}");
  cres r = braid(dir, "run t.json --quiet");
  CHECK_EQ_INT(r.code, 1);
  cres_free(&r);
  r = braid(dir, "log 1");
  CHECK_CONTAINS(r.out, "== task 1, invocation 2, attempt 1: timeout (timed out after 0.");
  CHECK(!strstr(r.out, "exit -1"));
  cres_free(&r);
  r = braid(dir, "run t.json --new --node k --quiet");
  CHECK_EQ_INT(r.code, 1);
  cres_free(&r);
  r = braid(dir, "log 3");
  CHECK_CONTAINS(r.out, ": failed (killed by signal 9 (Killed) after ");
  cres_free(&r);
  free(dir);
}

TEST(the_reaper_ends_on_sigterm_and_braid_goes_on) {
  /* a service manager stops braid's processes with SIGTERM: the reaper
   * must not outlive it (it kept braid's signal handlers before) */
  char *dir = br_test_tmpdir("cli-reaper-term");
  pid_t job;
  pid_t run = start_one_job(
      dir, "echo $$ > job.pid; while [ ! -e go ]; do sleep 0.05; done; echo done", &job);
  /* braid's children: the job and the reaper */
  pid_t kids[8];
  int n = children_of(run, kids, 8);
  pid_t reaper = 0;
  for (int i = 0; i < n; i++)
    if (kids[i] != job) reaper = kids[i];
  CHECK_EQ_INT(n, 2);
  CHECK(reaper > 0);
  CHECK(kill(reaper, SIGTERM) == 0);
  CHECK(br_test_pid_gone(reaper));
  /* braid does not mind: the job finishes and the run too */
  br_test_put(dir, "go", "");
  CHECK_EQ_INT(wait_exit_within(run, 30), 0);
  cres r = braid(dir, "log 1");
  CHECK_CONTAINS(r.out, "done\n");
  cres_free(&r);
  free(dir);
}

TEST(expressions_in_env_and_nil_values) {
  /* an expression in env crashed braid (json_object_foreach evaluated the
   * parameter again on each step, each time a new object), and one that
   * gave nil set the variable to the text "null" */
  char *dir = br_test_tmpdir("cli-env-expr");
  br_test_put(dir, "e.json",
              "{\"name\":\"e\",\"nodes\":[{\"name\":\"s\",\"type\":\"spawn\",\"params\":"
              "{\"count\":2}},{\"name\":\"job\",\"type\":\"command\",\"params\":"
              "{\"shell\":\"echo A=$A B=$B\",\"retries\":0,\"env\":{\"A\":\"${attr.a}\","
              "\"B\":{\"expr\":\"attr.index * 10\"}}}},"
              "{\"name\":\"argv\",\"type\":\"command\",\"params\":"
              "{\"argv\":[\"echo\",\"${attr.nope}\"]}}],"
              "\"wires\":[[\"s.children\",\"job\"]],\"start\":{\"attrs\":{\"a\":\"x\"}}}");
  cres r = braid(dir, "run e.json --quiet");
  CHECK_EQ_INT(r.code, 0);
  cres_free(&r);
  r = braid(dir, "log 2");
  CHECK_CONTAINS(r.out, "A=x B=0\n");
  cres_free(&r);
  r = braid(dir, "log 3");
  CHECK_CONTAINS(r.out, "A=x B=10\n");
  cres_free(&r);
  r = braid(dir, "run e.json --new --quiet --set a=null");
  CHECK_EQ_INT(r.code, 1);
  CHECK_CONTAINS(r.err, "at node 'job': env A: the value is null (an expression that gave nil: "
                        "does the task have the attribute?)");
  cres_free(&r);
  r = braid(dir, "run e.json --new --quiet --node argv");
  CHECK_EQ_INT(r.code, 1);
  CHECK_CONTAINS(r.err, "at node 'argv': argv[1] is null (an expression that gave nil");
  cres_free(&r);
  /* a literal null is refused when the graph loads */
  br_test_put(dir, "n.json", "{\"name\":\"n\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\","
                             "\"params\":{\"shell\":\"true\",\"env\":{\"A\":null}}}]}");
  r = braid(dir, "validate n.json");
  CHECK_EQ_INT(r.code, 2);
  CHECK_CONTAINS(r.err, "n.json:1:89: node 'job' (command): parameter 'env': the value of A is "
                        "null");
  cres_free(&r);
  free(dir);
}

TEST(slurm_options_are_checked) {
  /* --slurm-opt bogus=1 and reconcile=abc were ignored without a word, and
   * braid server took --slurm-... options without --executor slurm */
  char *dir = br_test_tmpdir("cli-slurm-options");
  br_test_put(dir, "g.json", "{\"name\":\"g\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
  static const struct {
    const char *args, *says;
  } bad[] = {
      {"run g.json --executor slurm --slurm-opt bogus=1",
       "--slurm-opt: no option 'bogus' (K=V, K one of listen, url, "},
      {"run g.json --executor slurm --slurm-opt reconcile=abc",
       "--slurm-opt reconcile: 'abc' is not a time above 0 (10, 30s, 2m)"},
      {"run g.json --executor slurm --slurm-opt lost_after=0", "--slurm-opt lost_after: '0'"},
      {"run g.json --executor slurm --slurm-opt batch_wait=-1", "--slurm-opt batch_wait: '-1'"},
      {"run g.json --executor slurm --slurm-opt max_array=1.5",
       "--slurm-opt max_array: '1.5' is not a whole number of at least 1"},
      {"run g.json --executor slurm --slurm-opt cancel_on_stop=yes",
       "--slurm-opt cancel_on_stop: 'yes' is not true or false"},
      {"run g.json --executor slurm --slurm-opt noeq", "--slurm-opt: expected K=V, got 'noeq'"},
      {"server --executor slurm --slurm-opt max_jobs=0 --store s.db",
       "--slurm-opt max_jobs: '0' is not"},
      {"server --slurm-partition gpu --store s.db", "--slurm-... options need --executor slurm"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cres r = braid(dir, "%s", bad[i].args);
    if (r.code != 2 || !strstr(r.err, bad[i].says) || strstr(r.err, "usage:"))
      br_test_fail(__FILE__, __LINE__, "braid %s: exit %d, stderr '%s'; expected 2 and '%s'",
                   bad[i].args, r.code, r.err, bad[i].says);
    cres_free(&r);
  }
  free(dir);
}

TEST(a_retried_job_does_not_spawn_consumed_children_again) {
  /* A job spawns two children that run a job of their own and are killed,
   * then fails once (once they are gone). Its second attempt spawns them again under the same
   * names: they are known and not made again. Before, the engine looked for
   * earlier children only while some were alive, so consumed ones were made
   * (and their jobs run) a second time. */
  char *dir = br_test_tmpdir("cli-respawn");
  br_test_put(dir, "g.json",
              "{\"name\": \"g\", \"nodes\": ["
              "{\"name\": \"cache\", \"type\": \"command\", \"params\": {\"shell\":"
              " \"braid ctl spawn --name c1 k=1 && braid ctl spawn --name c2 k=2 &&"
              " if [ ! -e failed ]; then touch failed;"
              " while [ $(cat notes 2>/dev/null | wc -l) -lt 2 ]; do sleep 0.05; done;"
              " sleep 0.2; exit 1; fi\"}},"
              "{\"name\": \"note\", \"type\": \"command\", \"params\": {\"shell\":"
              " \"echo {k} >> notes\"}},"
              "{\"name\": \"k\", \"type\": \"kill\"}, {\"name\": \"end\", \"type\": \"null\"}],"
              "\"wires\": [[\"cache.children\", \"note\"], [\"note\", \"k\"],"
              " [\"cache.out\", \"end\"]]}");
  cres r = braid(dir, "run g.json --quiet --slots 2");
  CHECK_EQ_INT(r.code, 0);
  CHECK_CONTAINS(r.err, "3 tasks: done 1 dead 2");
  cres_free(&r);
  char path[1024];
  snprintf(path, sizeof path, "%s/notes", dir);
  char *notes = br_test_slurp(path);
  CHECK_EQ_INT(br_test_count(notes, "1\n"), 1);
  CHECK_EQ_INT(br_test_count(notes, "2\n"), 1);
  free(notes);
  free(dir);
}
