/* Runner for the TEST() cases of one test executable. */
#include "harness.h"
#include "fs.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 512

static struct {
  const char *name;
  br_test_fn fn;
} tests[MAX_TESTS];
static int ntests;
static const char *current;

/* The directories this test made (in its forked child): removed when it
 * passes, kept when it fails (and named, for a look), or always kept with
 * BRAID_TEST_KEEP=1. */
static char **dirs;
static int ndirs;

void br_test_register(const char *name, br_test_fn fn) {
  if (ntests < MAX_TESTS) {
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
  }
}

void br_test_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "FAIL %s: %s:%d: ", current ? current : "?", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  for (int i = 0; i < ndirs; i++) fprintf(stderr, "  its files are kept in %s\n", dirs[i]);
  fflush(stderr);
  _exit(1);
}

void br_test_warn(void *ud, const char *msg) {
  br_test_warnings *w = ud;
  size_t n = strlen(msg);
  char *grown = realloc(w->text, w->len + n + 2);
  if (!grown) abort();
  memcpy(grown + w->len, msg, n);
  w->len += n;
  grown[w->len++] = '\n';
  grown[w->len] = 0;
  w->text = grown;
}

char *br_test_warnings_take(br_test_warnings *w) {
  char *text = w->text ? w->text : strdup("");
  if (!text) abort();
  w->text = NULL;
  w->len = 0;
  return text;
}

int br_test_count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

bool br_test_pid_gone(pid_t pid) {
  for (int i = 0; i < 250; i++) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *fp = fopen(path, "r");
    if (fp) {
      size_t n = fread(buf, 1, sizeof buf - 1, fp);
      fclose(fp);
      buf[n] = 0;
      char *rp = strrchr(buf, ')'); /* the state follows the name */
      if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X')) return true;
    }
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return false;
}

/* rm -rf path: 0 when it is gone. */
static int rm_rf(const char *path) {
  char *cmd = NULL;
  if (asprintf(&cmd, "rm -rf '%s'", path) < 0) abort();
  int rc = system(cmd);
  free(cmd);
  return rc;
}

void br_test_put(const char *dir, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs(text, f);
  CHECK(fclose(f) == 0);
}

char *br_test_slurp(const char *path) {
  char *text = br__read_file(path, NULL);
  return text ? text : strdup("");
}

char *br_test_tmpdir(const char *name) {
  const char *base = getenv("TMPDIR");
  char *path = NULL;
  if (!base || !*base) base = "/tmp";
  if (asprintf(&path, "%s/braid-test-%s-%d", base, name, (int)getpid()) < 0) abort();
  if (rm_rf(path) != 0) abort();
  if (mkdir(path, 0755) != 0) abort();
  char **grown = realloc(dirs, (size_t)(ndirs + 1) * sizeof *dirs);
  if (!grown || !(grown[ndirs] = strdup(path))) abort();
  dirs = grown;
  ndirs++;
  return path;
}

/* Best effort: a passing test's files are not worth keeping. */
static void remove_dirs(void) {
  const char *keep = getenv("BRAID_TEST_KEEP");
  bool keep_all = keep && *keep && strcmp(keep, "0") != 0;
  for (int i = 0; i < ndirs; i++) {
    if (!keep_all && dirs[i] && rm_rf(dirs[i]) != 0)
      fprintf(stderr, "note: could not remove %s\n", dirs[i]);
    free(dirs[i]);
  }
  free(dirs);
  dirs = NULL;
  ndirs = 0;
}

/* Each test runs in a forked child so that one failure or crash does not hide
 * the others and no state leaks between tests. */
#include <sys/wait.h>

static int run_one(int i) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    current = tests[i].name;
    tests[i].fn();
    fflush(stdout);
    remove_dirs();
    exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  if (!ok && WIFSIGNALED(st))
    fprintf(stderr, "FAIL %s: killed by signal %d\n", tests[i].name, WTERMSIG(st));
  printf("%s %s\n", ok ? "ok  " : "FAIL", tests[i].name);
  return ok;
}

int main(int argc, char **argv) {
  int passed = 0, failed = 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int i = 0; i < ntests; i++) {
    if (argc > 1) {
      int want = 0;
      for (int a = 1; a < argc; a++)
        if (strcmp(argv[a], tests[i].name) == 0) want = 1;
      if (!want) continue;
    }
    if (run_one(i)) passed++; else failed++;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
