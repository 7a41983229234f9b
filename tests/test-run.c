/* braid run end to end, through the real command: the reference scenario
 * with real jobs and real ffmpeg, Ctrl-C and resume, SIGKILL and resume, and
 * failing jobs (exit codes, retry codes, timeouts, missing programs). */
#include <braid/store.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static const char *braid_bin(void) {
  const char *b = getenv("BRAID_BIN");
  return b ? b : "braid";
}

static const char *src_dir(void) {
  const char *s = getenv("BRAID_SOURCE_DIR");
  return s ? s : "..";
}

/* Starts `braid run GRAPH --store STORE ARGS...` in dir; output to dir/out.log. */
static pid_t start_run(const char *dir, const char *graph, const char *extra) {
  pid_t pid = fork();
  if (pid == 0) {
    if (chdir(dir) != 0) _exit(99);
    int fd = open("run.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec '%s' run '%s' --store braid.db %s", braid_bin(), graph,
             extra ? extra : "");
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(98);
  }
  return pid;
}

static int wait_exit(pid_t pid) {
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *capture(const char *cmd) {
  FILE *p = popen(cmd, "r");
  char *buf = calloc(1, 65536);
  size_t n = p ? fread(buf, 1, 65535, p) : 0;
  buf[n] = '\0';
  if (p) pclose(p);
  return buf;
}

typedef struct inv_count {
  int total, ok, running, cancelled;
  char seen[65536]; /* "task:node" pairs with an ok invocation, for duplicates */
  int dup_ok;
} inv_count;

static int count_inv(void *ud, br_inv_info *i) {
  inv_count *c = ud;
  c->total++;
  if (i->row.status && strcmp(i->row.status, "ok") == 0) {
    c->ok++;
    char key[96];
    snprintf(key, sizeof key, "|%lld:%s|", (long long)i->row.task_id, i->row.node ? i->row.node : "");
    if (strstr(c->seen, key)) c->dup_ok++;
    else if (strlen(c->seen) + strlen(key) < sizeof c->seen) strcat(c->seen, key);
  }
  if (i->row.status && strcmp(i->row.status, "running") == 0) c->running++;
  if (i->row.status && strcmp(i->row.status, "cancelled") == 0) c->cancelled++;
  br_inv_info_free(i);
  free(i);
  return 0;
}

static inv_count invocations(const char *dir) {
  inv_count c;
  memset(&c, 0, sizeof c);
  char path[1024];
  snprintf(path, sizeof path, "%s/braid.db", dir);
  br_store *s;
  br_error err;
  if (br_store_open(path, BR_STORE_READONLY, &s, &err) != BR_OK) return c;
  br_store_inv_query(s, 0, count_inv, &c, &err);
  br_store_close(s);
  return c;
}

static void check_movie(const char *dir) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -count_frames -select_streams v:0 -show_entries "
           "stream=nb_read_frames,width,height -of csv=p=0 '%s/wedge-mosaic-out/wedge-mosaic.mp4'",
           dir);
  char *out = capture(cmd);
  CHECK_CONTAINS(out, "320,240,100"); /* 2x the 160x120 tile, 100 frames */
  free(out);
  char pattern[1024];
  snprintf(pattern, sizeof pattern, "%s/wedge-mosaic-out/render/w*/img.*.png", dir);
  glob_t g;
  CHECK(glob(pattern, 0, NULL, &g) == 0);
  CHECK_EQ_INT(g.gl_pathc, 400);
  globfree(&g);
  /* no half-written file under a final name, no temporary left behind */
  snprintf(pattern, sizeof pattern, "%s/wedge-mosaic-out/render/w*/.partial*", dir);
  CHECK(glob(pattern, 0, NULL, &g) == GLOB_NOMATCH);
}

static char *graph_path(void) {
  char *p = NULL;
  if (asprintf(&p, "%s/examples/wedge-mosaic.json", src_dir()) < 0) abort();
  return p;
}

/* No process still runs a job of this test's run (their arguments name dir). */
static int jobs_alive(const char *dir) {
  DIR *d = opendir("/proc");
  struct dirent *de;
  int n = 0;
  while (d && (de = readdir(d))) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    char path[300], buf[4096];
    snprintf(path, sizeof path, "/proc/%s/cmdline", de->d_name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) continue;
    for (ssize_t i = 0; i < len; i++)
      if (!buf[i]) buf[i] = ' ';
    buf[len] = '\0';
    if (strstr(buf, dir) && strstr(buf, "wedge-mosaic") && !strstr(buf, " run ")) n++;
  }
  if (d) closedir(d);
  return n;
}

TEST(reference_scenario_end_to_end) {
  char *dir = br_test_tmpdir("run-ref");
  char *graph = graph_path();
  int rc = wait_exit(start_run(dir, graph, "--slots 2"));
  if (rc != 0) {
    char log[1024];
    snprintf(log, sizeof log, "%s/run.log", dir);
    char *text = br_test_slurp(log);
    br_test_fail(__FILE__, __LINE__, "braid run exited %d:\n%s", rc, text);
  }
  check_movie(dir);
  inv_count c = invocations(dir);
  CHECK_EQ_INT(c.ok, 80 + 400 + 400 + 1);
  CHECK_EQ_INT(c.dup_ok, 0);
  free(graph);
  free(dir);
}

/* Waits until ok_at_least invocations have finished well; fails when none
 * finishes for a minute (a loaded CI machine can take longer than 30 s to
 * reach the count, yet still be moving). */
static void wait_for_jobs(const char *dir, int ok_at_least) {
  int last = -1;
  time_t moved = time(NULL);
  for (;;) {
    int ok = invocations(dir).ok;
    if (ok >= ok_at_least) return;
    if (ok != last) last = ok, moved = time(NULL);
    else if (time(NULL) - moved > 60) break;
    usleep(50 * 1000);
  }
  br_test_fail(__FILE__, __LINE__, "no progress in %s: %d invocations done, waiting for %d",
               dir, last, ok_at_least);
}

TEST(ctrl_c_stops_cleanly_and_resume_finishes) {
  char *dir = br_test_tmpdir("run-cancel");
  char *graph = graph_path();
  pid_t pid = start_run(dir, graph, "--slots 2 --grace 2");
  wait_for_jobs(dir, 60);
  kill(pid, SIGINT);
  time_t t0 = time(NULL);
  CHECK_EQ_INT(wait_exit(pid), 130);
  CHECK(time(NULL) - t0 <= 10);
  CHECK_EQ_INT(jobs_alive(dir), 0); /* every job's process group is gone */
  inv_count before = invocations(dir);
  CHECK(before.cancelled >= 1 || before.running == 0);
  CHECK_EQ_INT(before.running, 0);
  char log[1024];
  snprintf(log, sizeof log, "%s/run.log", dir);
  char *text = br_test_slurp(log);
  CHECK_CONTAINS(text, "run the same command again to resume");
  free(text);
  CHECK_EQ_INT(wait_exit(start_run(dir, graph, "--slots 2")), 0);
  check_movie(dir);
  inv_count after = invocations(dir);
  /* nothing that had finished ran again */
  CHECK_EQ_INT(after.dup_ok, 0);
  CHECK_EQ_INT(after.ok, 881);
  free(graph);
  free(dir);
}

TEST(sigkill_then_resume) {
  char *dir = br_test_tmpdir("run-kill");
  char *graph = graph_path();
  pid_t pid = start_run(dir, graph, "--slots 2");
  wait_for_jobs(dir, 150);
  kill(pid, SIGKILL);
  wait_exit(pid);
  /* the killed run left its runtime folder (its control socket names it);
   * a folder of a live process is never taken for one */
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  char left[1100], live[48], live_sock[96];
  snprintf(left, sizeof left, "%s/braid-run-*/ctl-%d.sock", base, (int)pid);
  snprintf(live, sizeof live, "%s/braid-run-test%d", base, (int)getpid());
  snprintf(live_sock, sizeof live_sock, "%s/ctl-%d.sock", live, (int)getpid());
  glob_t g;
  CHECK(glob(left, 0, NULL, &g) == 0 && g.gl_pathc == 1);
  globfree(&g);
  CHECK(mkdir(live, 0700) == 0);
  int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, live_sock, strlen(live_sock) + 1);
  CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(lfd, 4) == 0);
  /* runs of executors without a control socket (slurm) are known by their
   * lock: one nobody holds (its run was killed), one held (a live run) */
  char dead_lock[96], held_lock[96];
  snprintf(dead_lock, sizeof dead_lock, "%s/braid-run-test%dd", base, (int)getpid());
  snprintf(held_lock, sizeof held_lock, "%s/braid-run-test%dh", base, (int)getpid());
  CHECK(mkdir(dead_lock, 0700) == 0 && mkdir(held_lock, 0700) == 0);
  char dead_sub[128]; /* the slurm executor keeps its jobs' tokens in a subfolder */
  snprintf(dead_sub, sizeof dead_sub, "%s/slurm", dead_lock);
  CHECK(mkdir(dead_sub, 0700) == 0);
  snprintf(dead_sub + strlen(dead_sub), sizeof dead_sub - strlen(dead_sub), "/tokens");
  CHECK(close(open(dead_sub, O_CREAT | O_WRONLY | O_CLOEXEC, 0600)) == 0);
  snprintf(dead_lock + strlen(dead_lock), sizeof dead_lock - strlen(dead_lock), "/run.lock");
  snprintf(held_lock + strlen(held_lock), sizeof held_lock - strlen(held_lock), "/run.lock");
  int dfd = open(dead_lock, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  int hfd = open(held_lock, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  CHECK(dfd >= 0 && hfd >= 0 && flock(hfd, LOCK_EX) == 0);
  close(dfd);
  /* folders with neither a lock nor a socket (a run starting, a braid from
   * before run.lock): left while anything in them changed this week */
  char old_dir[96], old_file[128], new_dir[96];
  snprintf(old_dir, sizeof old_dir, "%s/braid-run-test%do", base, (int)getpid());
  snprintf(old_file, sizeof old_file, "%s/attrs.json", old_dir);
  snprintf(new_dir, sizeof new_dir, "%s/braid-run-test%dn", base, (int)getpid());
  CHECK(mkdir(old_dir, 0700) == 0 && mkdir(new_dir, 0700) == 0);
  CHECK(close(open(old_file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600)) == 0);
  struct timespec eight_days[2] = {{time(NULL) - 8 * 24 * 3600, 0},
                                   {time(NULL) - 8 * 24 * 3600, 0}};
  CHECK(utimensat(AT_FDCWD, old_file, eight_days, 0) == 0);
  CHECK(utimensat(AT_FDCWD, old_dir, eight_days, 0) == 0);
  CHECK_EQ_INT(wait_exit(start_run(dir, graph, "--slots 2")), 0);
  CHECK(access(old_dir, F_OK) != 0 && errno == ENOENT);
  CHECK(access(new_dir, F_OK) == 0);
  rmdir(new_dir);
  /* the resumed run removed the dead ones' folders, not the live ones */
  CHECK_EQ_INT(glob(left, 0, NULL, &g), GLOB_NOMATCH);
  CHECK(access(live_sock, F_OK) == 0);
  CHECK(access(dead_lock, F_OK) != 0 && errno == ENOENT);
  *strrchr(dead_lock, '/') = 0;
  CHECK(access(dead_lock, F_OK) != 0);
  CHECK(access(held_lock, F_OK) == 0);
  close(hfd);
  unlink(held_lock);
  *strrchr(held_lock, '/') = 0;
  rmdir(held_lock);
  close(lfd);
  unlink(live_sock);
  rmdir(live);
  check_movie(dir);
  inv_count after = invocations(dir);
  CHECK_EQ_INT(after.dup_ok, 0);
  CHECK_EQ_INT(after.running, 0); /* the killed run's attempts were closed as lost */
  /* exactly the reference's tasks: no child spawned twice */
  char path[1024];
  snprintf(path, sizeof path, "%s/braid.db", dir);
  br_store *s;
  br_error err;
  CHECK(br_store_open(path, BR_STORE_READONLY, &s, &err) == BR_OK);
  int64_t counts[BR_TASK_NSTATES];
  br_task_filter f = BR_TASK_FILTER_ALL;
  CHECK(br_store_task_count(s, &f, counts, &err) == BR_OK);
  CHECK_EQ_INT(counts[BR_TASK_DONE], 801);
  CHECK_EQ_INT(counts[BR_TASK_DEAD], 79);
  br_store_close(s);
  free(graph);
  free(dir);
}

TEST(failures_retries_timeouts_and_missing_programs) {
  char *dir = br_test_tmpdir("run-fail");
  char graph[1024];
  snprintf(graph, sizeof graph, "%s/fail.json", dir);
  FILE *f = fopen(graph, "w");
  fprintf(f,
          "{\"name\": \"fail\", \"nodes\": [\n"
          " {\"name\": \"start\", \"type\": \"null\"},\n"
          " {\"name\": \"boom\", \"type\": \"command\", \"params\": {\"shell\": \"echo about to fail; echo boom >&2; exit 3\", \"retries\": 1}},\n"
          " {\"name\": \"flaky\", \"type\": \"command\", \"params\": {\"shell\": \"if [ -e flaky.mark ]; then echo second; else touch flaky.mark; exit 75; fi\", \"retry_codes\": [75]}},\n"
          " {\"name\": \"slow\", \"type\": \"command\", \"params\": {\"argv\": [\"sleep\", \"30\"], \"timeout\": 1}},\n"
          " {\"name\": \"missing\", \"type\": \"command\", \"params\": {\"argv\": [\"no-such-program-braid\", \"x\"]}},\n"
          " {\"name\": \"ok\", \"type\": \"command\", \"params\": {\"argv\": [\"true\"]}}],\n"
          " \"wires\": [[\"start\", \"boom\"], [\"start\", \"flaky\"], [\"start\", \"slow\"], [\"start\", \"missing\"], [\"start\", \"ok\"]]}\n");
  fclose(f);
  time_t t0 = time(NULL);
  CHECK_EQ_INT(wait_exit(start_run(dir, graph, "--slots 4 --grace 1")), 1);
  CHECK(time(NULL) - t0 < 25); /* the 30 s sleep was killed at its timeout */
  char log[1024];
  snprintf(log, sizeof log, "%s/run.log", dir);
  char *text = br_test_slurp(log);
  CHECK_CONTAINS(text, "at node 'boom': exit code 3 after 2 attempts");
  CHECK_CONTAINS(text, "| boom");        /* the log tail is in the summary */
  CHECK_CONTAINS(text, "braid log ");    /* and the command that shows it all */
  CHECK_CONTAINS(text, "at node 'slow': timed out");
  CHECK_CONTAINS(text, "at node 'missing': ");
  CHECK_CONTAINS(text, "no-such-program-braid");
  CHECK(strstr(text, "at node 'flaky'") == NULL); /* retried, then fine */
  free(text);
  inv_count c = invocations(dir);
  CHECK_EQ_INT(c.total, 2 + 2 + 1 + 1 + 1); /* boom x2, flaky x2, slow, missing, ok */
  /* braid log shows the whole log of the failed task */
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' tasks --store braid.db --state error --json | grep -c '\"state\": \"error\"'", dir, braid_bin());
  char *n = capture(cmd);
  CHECK_EQ_INT(atoi(n), 3);
  free(n);
  free(dir);
}

TEST(usage_and_graph_errors_exit_2) {
  char *dir = br_test_tmpdir("run-usage");
  char graph[1024];
  snprintf(graph, sizeof graph, "%s/bad.json", dir);
  FILE *f = fopen(graph, "w");
  fprintf(f, "{\"nodes\": [\n  {\"name\": \"a\", \"type\": \"nope\"}]}\n");
  fclose(f);
  CHECK_EQ_INT(wait_exit(start_run(dir, graph, "")), 2);
  char log[1024];
  snprintf(log, sizeof log, "%s/run.log", dir);
  char *text = br_test_slurp(log);
  CHECK_CONTAINS(text, "bad.json:2:25: node 'a': unknown node type 'nope'");
  free(text);
  struct stat sb;
  char db[1024];
  snprintf(db, sizeof db, "%s/braid.db", dir);
  CHECK(stat(db, &sb) != 0); /* an invalid graph writes nothing */
  CHECK_EQ_INT(wait_exit(start_run(dir, "", "--slots 0")), 2);
  free(dir);
}

/* One engine per store: a second `braid run` on a store a run owns is
 * refused at once, naming the owner (both would run its jobs), while the
 * readers go on; once the first ends, the store is free again. */
TEST(a_second_run_on_a_store_is_refused) {
  char *dir = br_test_tmpdir("run-twice");
  char graph[1024];
  snprintf(graph, sizeof graph, "%s/wait.json", dir);
  FILE *f = fopen(graph, "w");
  fprintf(f, "{\"name\": \"wait\", \"nodes\": [{\"name\": \"start\", \"type\": \"null\"},\n"
             " {\"name\": \"job\", \"type\": \"command\", \"params\": {\"shell\":"
             " \"echo x >> ran; while [ ! -e go ]; do sleep 0.05; done\"}}],\n"
             " \"wires\": [[\"start\", \"job\"]]}\n");
  fclose(f);
  pid_t first = start_run(dir, graph, "--slots 1");
  for (int i = 0; i < 600 && invocations(dir).running < 1; i++) usleep(50 * 1000);
  CHECK_EQ_INT(invocations(dir).running, 1);
  char cmd[4096], want[64];
  snprintf(cmd, sizeof cmd, "cd '%s' && timeout 30 '%s' run wait.json --store braid.db 2>&1; echo exit=$?", dir,
           braid_bin());
  char *out = capture(cmd);
  snprintf(want, sizeof want, "is in use by pid %d on host ", (int)first);
  CHECK_CONTAINS(out, "braid: store braid.db ");
  CHECK_CONTAINS(out, want);
  CHECK_CONTAINS(out, "exit=1");
  free(out);
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' status --store braid.db > /dev/null 2>&1; echo exit=$?",
           dir, braid_bin());
  out = capture(cmd);
  CHECK_CONTAINS(out, "exit=0"); /* readers are welcome */
  free(out);
  snprintf(cmd, sizeof cmd, "%s/go", dir);
  close(open(cmd, O_WRONLY | O_CREAT, 0644));
  CHECK_EQ_INT(wait_exit(first), 0);
  snprintf(cmd, sizeof cmd, "%s/ran", dir);
  out = br_test_slurp(cmd);
  CHECK_EQ_STR(out, "x\n"); /* the job ran once */
  free(out);
  CHECK_EQ_INT(wait_exit(start_run(dir, graph, "--slots 1")), 0); /* free again: it resumes */
  free(dir);
}
