/* The braid depot / push / pull commands: --help, bad input gives a clear
 * message and a non-zero exit (never a crash), and a whole round trip with
 * tokens made by `braid depot token`, --json output and plain progress. */
#include "xfer-util.h"

#include <signal.h>
#include <sys/wait.h>

/* Runs a shell command line; its exit status, stdout+stderr in *out. */
static int run(const char *cmdline, char **out) {
  char *full = NULL;
  if (asprintf(&full, "%s 2>&1", cmdline) < 0) abort();
  FILE *f = popen(full, "r");
  free(full);
  CHECK(f != NULL);
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
  }
  buf[len] = 0;
  int st = pclose(f);
  if (out) *out = buf;
  else free(buf);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return WEXITSTATUS(st);
}

static const char *bin(void) {
  const char *b = getenv("BRAID_BIN");
  CHECK(b != NULL);
  return b;
}

static void expect(const char *args, int status, const char *text) {
  char *cmd = NULL, *out = NULL;
  if (asprintf(&cmd, "'%s' %s", bin(), args) < 0) abort();
  int rc = run(cmd, &out);
  if (rc != status)
    br_test_fail(__FILE__, __LINE__, "`braid %s` exited %d, expected %d:\n%s", args, rc, status,
                 out);
  if (text && !strstr(out, text))
    br_test_fail(__FILE__, __LINE__, "`braid %s` output lacks '%s':\n%s", args, text, out);
  free(cmd);
  free(out);
}

TEST(help_for_every_command) {
  expect("depot --help", 0, "usage: braid depot");
  expect("push --help", 0, "usage: braid push");
  expect("pull -h", 0, "usage: braid pull");
  expect("help push", 0, "--bwlimit");
  /* each depot subcommand has its own */
  expect("depot token --help", 0, "usage: braid depot token --token-file FILE");
  expect("depot fsck -h", 0, "usage: braid depot fsck --root DIR");
  expect("depot rm --help", 0, "usage: braid depot rm DEPOT NAME@vN");
  expect("depot gc --help", 0, "-n, --dry-run");
  expect("depot ls --help", 0, "-l       also their files and bytes");
  expect("depot --help", 0, "`braid depot SUBCOMMAND --help`");
  expect("--help", 0, "push");
}

TEST(bad_input_is_refused_clearly) {
  char *tmp = br_test_tmpdir("xfer-cli-bad");
  setenv("BRAID_CACHE_DIR", tmp, 1); /* no hash cache in $HOME from tests */
  expect("push", 2, "DIR DEPOT/NAME");
  expect("push onlyone", 2, "pairs");
  expect("pull depot://127.0.0.1:1/x", 2, "pairs");
  expect("push --parallel 0 a depot://h/x", 2, "--parallel");
  expect("push --bwlimit fast a depot://h/x", 2, "--bwlimit");
  expect("push --chunk-size 1 a depot://h/x", 2, "--chunk-size");
  expect("pull --frobnicate a b", 2, "unknown option");
  expect("pull --sync always depot://h/x b", 2, "--sync takes");
  expect("push --token-file", 2, "needs a value");
  expect("push --set-attr snap a depot://h/x", 2, "inside a braid job only");
  expect("pull --set-attr snap depot://h/x b", 2, "--set-attr is a push option");
  /* each command's own options, not the other's */
  expect("pull --chunk-size 1M depot://h/x b", 2, "--chunk-size is a push option");
  expect("push --sync files a depot://h/x", 2, "--sync is a pull option");
  expect("push --no-direct a depot://h/x", 2, "--no-direct is a pull option");
  expect("push --content-cache c a depot://h/x", 2, "--content-cache is a pull option");
  /* numbers and times are read whole */
  expect("push --retries abc a depot://h/x", 2, "--retries wants");
  expect("push --retries -1 a depot://h/x", 2, "--retries wants");
  expect("pull --timeout abc depot://h/x b", 2, "--timeout wants");
  expect("pull --timeout 0 depot://h/x b", 2, "--timeout wants");
  expect("pull -j 4x depot://h/x b", 2, "-j wants");
  /* a malformed depot address is a usage error at once, not an unreachable depot */
  expect("push a depot://127.0.0.1:abc/x", 2, "bad port 'abc'");
  expect("push a depot://127.0.0.1:99999/x", 2, "bad port '99999'");
  expect("pull 'depot://a b:1/x' b", 2, "bad host name 'a b'");
  expect("pull depot://:7871/x b", 2, "no host");
  expect("pull depot://[zz]:1/x b", 2, "bad IPv6 address");
  expect("pull depot://127.0.0.1:1/x@v99999999999999999999 b", 2, "bad version");
  /* a push makes the next version: it takes no @ */
  expect("push a depot://127.0.0.1:1/x@v5", 2, "without @");
  expect("push a depot://127.0.0.1:1/x@latest", 2, "without @");
  expect("pull --token-env BRAID_NO_SUCH_VARIABLE depot://h/x b", 2, "is not set");
  expect("push --token-file /nonexistent/tok a depot://h/x", 2, "token file");
  expect("push /nonexistent depot://127.0.0.1:1/x", 1, "/nonexistent: does not exist");
  expect("push /etc/hostname depot://127.0.0.1:1/x", 1, "/etc/hostname is not a directory");
  expect("depot frob", 2, "depot: unknown subcommand 'frob' (token, fsck, rm, gc, ls;");
  /* with --json, a usage error is an event on stdout too */
  char *out = NULL;
  char *cmd = NULL;
  if (asprintf(&cmd, "'%s' pull --json depo://x/y Z", bin()) < 0) abort();
  CHECK_EQ_INT(run(cmd, &out), 2);
  CHECK_CONTAINS(out, "\n{\"event\":\"error\",\"code\":-1,\"kind\":\"usage\",\"message\":"
                    "\"pull: 'depo://x/y' is not a depot location (want "
                    "depot://HOST:PORT/NAME[@vN])\",\"exit\":2}\n");
  free(out);
  free(cmd);
  if (asprintf(&cmd, "'%s' push --json --bogus a b", bin()) < 0) abort();
  CHECK_EQ_INT(run(cmd, &out), 2);
  CHECK_CONTAINS(out, "\"kind\":\"usage\",\"message\":\"unknown option '--bogus'\"");
  free(out);
  free(cmd);
  expect("pull notaref /tmp/x", 2, "not a depot location");
  expect("pull 'depot://127.0.0.1:1/../etc' /tmp/x", 2, "bad snapshot name");
  expect("pull depot://127.0.0.1:1/x@vzz /tmp/x", 2, "bad version");
  expect("depot", 2, "--root");
  expect("depot --root", 2, "needs a value");
  expect("depot --root /tmp/x --token-file /nonexistent --listen 127.0.0.1:0", 1,
         "token file");
  expect("depot --root /tmp/x --token-file /etc/hostname --listen nowhere", 1, "HOST:PORT");
  expect("depot token", 2, "--token-file");
  xu_done(tmp);
}

TEST(round_trip_with_the_commands) {
  char *tmp = br_test_tmpdir("xfer-cli");
  setenv("BRAID_CACHE_DIR", tmp, 1);
  char *cmd = NULL, *out = NULL;
  /* A token for the depot (hash kept) and the client (token kept), added
   * to a file whose last line, edited by hand, has no newline: a line of
   * its own all the same. */
  char *tokens = xu_path(tmp, "tokens");
  xu_write_file(tokens, "# by hand", 9);
  if (asprintf(&cmd, "cd '%s' && '%s' depot token --token-file tokens > client-token", tmp,
               bin()) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, NULL), 0);
  free(cmd);
  char *hashed = br__read_file(tokens, NULL);
  CHECK(strncmp(hashed, "# by hand\nsha256:", 17) == 0);
  CHECK_EQ_INT(strlen(hashed), 9 + 1 + 7 + 64 + 1);
  free(hashed);
  /* The depot, in the background, on an ephemeral port. */
  if (asprintf(&cmd, "cd '%s' && ('%s' depot --root depot --token-file tokens --listen "
                     "127.0.0.1:0 > depot.out 2>&1 & echo $! > depot.pid)",
               tmp, bin()) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, NULL), 0);
  free(cmd);
  char *outp = xu_path(tmp, "depot.out"), *pidp = xu_path(tmp, "depot.pid");
  int port = 0;
  for (int i = 0; i < 100 && !port; i++) {
    usleep(50000);
    char *o = br__read_file(outp, NULL);
    const char *c = o ? strstr(o, "127.0.0.1:") : NULL;
    if (c) port = atoi(c + 10);
    free(o);
  }
  CHECK(port > 0);
  char *pids = br__read_file(pidp, NULL);
  pid_t depot = (pid_t)atoi(pids);
  free(pids);
  char *src = xu_path(tmp, "src"), *dst = xu_path(tmp, "dst");
  xu_make_file(src, "a/f.0001.exr", 3000, 1);
  xu_make_file(src, "a/f.0002.exr", 200000, 2);
  /* push --json: progress events and a final "done" with the version. */
  if (asprintf(&cmd, "cd '%s' && '%s' push --json --cache cache.db --token-file client-token "
                     "src depot://127.0.0.1:%d/shot/cli",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 0);
  CHECK_CONTAINS(out, "\"event\":\"progress\"");
  CHECK_CONTAINS(out, "\"event\":\"done\",\"version\":1");
  free(out);
  free(cmd);
  /* push, plain: the version on stdout and plain progress lines. */
  if (asprintf(&cmd, "cd '%s' && BRAID_TOKEN=$(cat client-token) '%s' push --cache cache.db "
                     "src depot://127.0.0.1:%d/shot/cli",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 0);
  CHECK_CONTAINS(out, "shot/cli@v2");
  CHECK_CONTAINS(out, "files");
  CHECK_CONTAINS(out, "push: shot/cli@v2 holds the same files as v1: nothing changed");
  free(out);
  free(cmd);
  /* two pairs with --json: a "snapshot" event each, with what it became */
  if (asprintf(&cmd, "cd '%s' && '%s' push --json --cache cache.db --token-file client-token "
                     "src depot://127.0.0.1:%d/shot/cli src depot://127.0.0.1:%d/shot/other",
               tmp, bin(), port, port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 0);
  char want[200];
  snprintf(want, sizeof want, "{\"event\":\"snapshot\",\"ref\":\"depot://127.0.0.1:%d/shot/"
           "cli@v3\",\"name\":\"shot/cli\",\"version\":3,\"dir\":\"src\",\"same_as\":2}", port);
  CHECK_CONTAINS(out, want);
  CHECK_CONTAINS(out, "\"name\":\"shot/other\",\"version\":1,\"dir\":\"src\"}");
  free(out);
  free(cmd);
  /* a depot that cannot listen (the port is taken) makes no depot */
  if (asprintf(&cmd, "cd '%s' && '%s' depot --root second --token-file client-token --listen "
                     "127.0.0.1:%d",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 1);
  CHECK_CONTAINS(out, "depot: cannot listen on 127.0.0.1:");
  char *second = xu_path(tmp, "second");
  CHECK(access(second, F_OK) != 0);
  free(second);
  free(out);
  free(cmd);
  /* every path a push refuses is named, in every tree, before it fails */
  for (int i = 0; i < 6; i++) {
    char rel[32];
    snprintf(rel, sizeof rel, "%s/frame:%d.exr", i % 2 ? "bad1" : "bad2", i);
    xu_make_file(tmp, rel, 10, (uint64_t)i);
  }
  if (asprintf(&cmd, "cd '%s' && '%s' push --token-file client-token bad1 "
                     "depot://127.0.0.1:%d/shot/b1 bad2 depot://127.0.0.1:%d/shot/b2",
               tmp, bin(), port, port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 1);
  for (int i = 0; i < 6; i++) {
    char name[80];
    snprintf(name, sizeof name, "braid: push: refused: unsafe path 'frame:%d.exr'", i);
    CHECK_CONTAINS(out, name);
  }
  CHECK_CONTAINS(out, "refusing to push bad1: 3 paths cannot be pushed (each named above)");
  free(out);
  free(cmd);
  if (asprintf(&cmd, "cd '%s' && '%s' push --json --token-file client-token bad1 "
                     "depot://127.0.0.1:%d/shot/b1 2>/dev/null",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 1);
  CHECK_CONTAINS(out, "{\"event\":\"refused\",\"message\":\"unsafe path 'frame:1.exr'");
  free(out);
  free(cmd);
  /* no token at all: said so, not "refused" */
  if (asprintf(&cmd, "cd '%s' && env -u BRAID_TOKEN -u BRAID_TOKEN_FILE '%s' pull -q "
                     "depot://127.0.0.1:%d/shot/cli nodst",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 1);
  CHECK_CONTAINS(out, "the depot wants a token and none was given (HTTP 401");
  free(out);
  free(cmd);
  /* the depot says where clients find it, and logs each commit (stderr) */
  char *dlog = br__read_file(outp, NULL);
  CHECK_CONTAINS(dlog, "(clients: braid push DIR depot://127.0.0.1:");
  CHECK_CONTAINS(dlog, " shot/cli@v1 committed: 2 files, 203000 bytes (from 127.0.0.1)\n");
  CHECK_CONTAINS(dlog, " shot/cli@v2 committed: the same as v1 (nothing changed) (from 127.0.0.1)");
  CHECK_CONTAINS(dlog, "braid: depot: 2"); /* the date and time: 2026-... */
  free(dlog);
  /* depot ls: on the root, and over HTTP with the client's token */
  if (asprintf(&cmd, "cd '%s' && '%s' depot ls --root depot && '%s' depot ls -l --token-file "
                     "client-token depot://127.0.0.1:%d shot && '%s' depot ls --json --token-file "
                     "client-token depot://127.0.0.1:%d shot/cli",
               tmp, bin(), bin(), port, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 0);
  CHECK_CONTAINS(out, "shot/cli@v1 ");
  CHECK_CONTAINS(out, "shot/cli@v2 ");
  CHECK_CONTAINS(out, "2 files   198.2 KiB\n");
  CHECK_CONTAINS(out, "{\"name\":\"shot/cli\",\"version\":2,\"time\":");
  free(out);
  free(cmd);
  /* the address as push and pull write it; a name with no versions is said;
   * an address and --root at once are refused */
  if (asprintf(&cmd, "cd '%s' && '%s' depot ls --token-file client-token "
                     "depot://127.0.0.1:%d/shot/other && '%s' depot ls --root depot nosuch",
               tmp, bin(), port, bin()) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 0);
  CHECK_CONTAINS(out, "shot/other@v1 ");
  CHECK(strstr(out, "shot/cli@") == NULL);
  CHECK_CONTAINS(out, "braid: depot ls: no versions of nosuch");
  free(out);
  free(cmd);
  if (asprintf(&cmd, "cd '%s' && '%s' depot ls --token-file client-token "
                     "depot://127.0.0.1:%d --root depot",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 2);
  CHECK_CONTAINS(out, "give a depot's address or --root DIR, not both");
  free(out);
  free(cmd);
  if (asprintf(&cmd, "'%s' depot ls --root '%s/depot' ../x", bin(), tmp) < 0) abort();
  CHECK_EQ_INT(run(cmd, &out), 1);
  CHECK_CONTAINS(out, "bad snapshot name '../x'");
  free(out);
  free(cmd);
  /* a refusal is said alone, not after "no versions"; a version is a usage error */
  if (asprintf(&cmd, "'%s' depot ls --token wrong depot://127.0.0.1:%d shot", bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 1);
  CHECK_CONTAINS(out, "missing or wrong token");
  CHECK(strstr(out, "no versions") == NULL);
  free(out);
  free(cmd);
  if (asprintf(&cmd, "'%s' depot ls --root '%s/depot' shot/cli@v1", bin(), tmp) < 0) abort();
  CHECK_EQ_INT(run(cmd, &out), 2);
  CHECK_CONTAINS(out, "'shot/cli@v1': give a NAME without @");
  free(out);
  free(cmd);
  if (asprintf(&cmd, "cd '%s' && '%s' pull -q --token-file client-token "
                     "depot://127.0.0.1:%d/shot/cli@v1 dst",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, NULL), 0);
  CHECK_EQ_INT(xu_tree_diff(src, dst), 0);
  free(cmd);
  /* Ctrl-C: a pull slowed down by --bwlimit stops promptly with status 130,
   * and nothing partial is visible; the next pull completes it. */
  char *big = xu_path(tmp, "src/big.0001.vdb");
  xu_make_file(src, "big.0001.vdb", 3 * 1024 * 1024, 9);
  if (asprintf(&cmd, "cd '%s' && '%s' push -q --cache cache.db --chunk-size 256K --token-file "
                     "client-token src depot://127.0.0.1:%d/shot/cli",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, NULL), 0);
  free(cmd);
  char *dst2 = xu_path(tmp, "dst2"), *outp2 = xu_path(tmp, "pull.out");
  char *tokp = xu_path(tmp, "client-token"), *pref = NULL;
  if (asprintf(&pref, "depot://127.0.0.1:%d/shot/cli", port) < 0) abort();
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(outp2, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(bin(), bin(), "pull", "--bwlimit", "1M", "--token-file", tokp, pref, dst2,
          (char *)NULL);
    _exit(127);
  }
  usleep(800000);
  kill(pid, SIGINT);
  int wst = 0;
  waitpid(pid, &wst, 0);
  char rcs[16];
  snprintf(rcs, sizeof rcs, "%d", WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
  char *pout = br__read_file(outp2, NULL);
  free(tokp);
  free(pref);
  if (atoi(rcs) != 130) br_test_fail(__FILE__, __LINE__, "pull after SIGINT: %s\n%s", rcs, pout);
  CHECK_CONTAINS(pout, "cancelled");
  char *finalbig = xu_path(dst2, "big.0001.vdb");
  struct stat st;
  CHECK(stat(finalbig, &st) != 0);
  if (asprintf(&cmd, "cd '%s' && '%s' pull -q --token-file client-token "
                     "depot://127.0.0.1:%d/shot/cli dst2",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, NULL), 0);
  CHECK_EQ_INT(xu_tree_diff(src, dst2), 0);
  free(cmd), free(pout), free(outp2), free(finalbig), free(dst2), free(big);
  /* A damaged hash cache costs hashing, not the push: it is put aside, a
   * new one started, and the user told (also in --json). */
  char *cache = xu_path(tmp, "cache.db");
  xu_write_file(cache, "not a database, a cut-off write\n", 32);
  if (asprintf(&cmd, "cd '%s' && '%s' push -q --cache cache.db --token-file client-token "
                     "src depot://127.0.0.1:%d/shot/cli",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 0);
  CHECK_CONTAINS(out, "push: warning: hash cache cache.db was damaged");
  CHECK_CONTAINS(out, "moved to cache.db.damaged");
  free(out);
  free(cmd);
  xu_write_file(cache, "damaged again", 13);
  if (asprintf(&cmd, "cd '%s' && '%s' push --json --cache cache.db --token-file client-token "
                     "src depot://127.0.0.1:%d/shot/cli",
               tmp, bin(), port) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 0);
  CHECK_CONTAINS(out, "{\"event\":\"warning\",\"message\":\"hash cache cache.db was damaged");
  CHECK_CONTAINS(out, "\"event\":\"done\"");
  free(out);
  free(cmd);
  free(cache);
  /* Wrong token: exit 1 and a clear message. */
  if (asprintf(&cmd, "'%s' pull --token nope depot://127.0.0.1:%d/shot/cli '%s'", bin(), port,
               dst) < 0)
    abort();
  CHECK_EQ_INT(run(cmd, &out), 1);
  CHECK_CONTAINS(out, "refused the token");
  free(out);
  free(cmd);
  kill(depot, SIGTERM);
  CHECK(br_test_pid_gone(depot)); /* init's child: its shell is gone */
  free(src), free(dst), free(outp), free(pidp), free(tokens);
  xu_done(tmp);
}
