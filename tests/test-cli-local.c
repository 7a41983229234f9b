/* The local commands through the real braid binary (run, validate, status,
 * tasks, show, log, movie): what they print, where, and their exit status,
 * on small graphs written by each test. */
#include <braid/store.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return strdup("");
  char *buf = calloc(1, 1 << 20);
  size_t n = fread(buf, 1, (1 << 20) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void put(const char *dir, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
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
  r.out = slurp(path);
  snprintf(path, sizeof path, "%s/.err", dir);
  r.err = slurp(path);
  return r;
}

/* ---- error messages ---- */

TEST(missing_task_error_has_no_stale_location) {
  char *dir = br_test_tmpdir("cli-show-missing");
  put(dir, "g.json", "{\"name\":\"g\",\"nodes\":[{\"name\":\"a\",\"type\":\"null\"}]}");
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

/* Waits up to 10 s for the file dir/name to hold `text`. */
static bool wait_for_text(const char *dir, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  for (int i = 0; i < 200; i++) {
    char *s = slurp(path);
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

TEST(endless_loop_run_ends_with_an_error_naming_it) {
  char *dir = br_test_tmpdir("cli-endless");
  put(dir, "cyc.json", cycle_graph);
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
  put(dir, "cyc.json", cycle_graph);
  int sigs[] = {SIGINT, SIGTERM};
  for (int k = 0; k < 2; k++) {
    pid_t pid = start_braid(dir, "run cyc.json --quiet --new --max-steps 4000000000000");
    CHECK(wait_for_text(dir, "run.err", "submitted"));
    usleep(200000); /* busy going round */
    kill(pid, sigs[k]);
    int rc = wait_exit_within(pid, 20);
    if (rc < 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      br_test_fail(__FILE__, __LINE__, "braid did not stop on signal %d", sigs[k]);
    }
    CHECK_EQ_INT(rc, 130);
    char path[1024];
    snprintf(path, sizeof path, "%s/run.err", dir);
    char *err = slurp(path);
    CHECK_CONTAINS(err, "cancelled; run the same command again to resume");
    free(err);
  }
  free(dir);
}

/* ---- logs ---- */

static const char *retry_graph =
    "{\"name\":\"flaky\",\"nodes\":[{\"name\":\"job\",\"type\":\"command\",\"params\":"
    "{\"shell\":\"echo output of $BRAID_INVOCATION_ID; exit 3\",\"retries\":2}}]}";

TEST(each_attempt_has_its_own_log) {
  char *dir = br_test_tmpdir("cli-retry-logs");
  put(dir, "flaky.json", retry_graph);
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
