/* bench-exec: N invocations of `true` through the local executor with S
 * slots, against `xargs -P S` running `true` N times, measured in the same
 * run. Like the engine, the bench submits only while the executor has
 * capacity (a new invocation from each on_done), so the latency from submit
 * to process start is the executor's own, not time spent queued.
 *
 *   bench-exec [-n N] [-s SLOTS] [-r ROUNDS]
 *
 * Each round runs xargs and then every braid variant, so a busy machine
 * slows both alike; the summary compares the best round of each (and gives
 * the median of the per-round ratios).
 *
 * Variants: "log" (a log path per invocation, as the engine gives; `true`
 * prints nothing, so no file is created), "attrs" (also 3 task attributes:
 * BRAID_ATTR_* and an attributes file written and removed per job), "pipe"
 * (also a progress regex run over the output).
 * Besides wall time, braid's own CPU time per invocation is printed: it
 * hardly depends on how busy the machine is. */
#include <braid/exec.h>

#include <math.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct bench {
  uv_loop_t loop;
  const br_executor_ops *ops;
  br_executor *ex;
  int n, next, done, failed;
  const char *dir;
  int variant; /* 0 log, 1 attrs, 2 pipe */
  json_t *attrs;
  uint64_t *submit_ns;
  double *to_start;   /* submit -> on_start, seconds */
  double *to_spawn;   /* submit -> process started (result.queued) */
} bench;

static char *true_argv[] = {(char *)"true", NULL};

static void submit_more(bench *b) {
  while (b->next < b->n && b->ops->capacity(b->ex) > 0) {
    int i = b->next++;
    char log[512];
    snprintf(log, sizeof log, "%s/logs/%d/%d.log", b->dir, i / 1000, i);
    br_invocation inv = {.id = i, .task_id = i, .node = "bench", .argv = true_argv,
                         .log_path = log};
    if (b->variant == 1) inv.attrs = b->attrs;
    if (b->variant == 2) inv.progress_regex = "([0-9]+)%";
    br_error err;
    b->submit_ns[i] = uv_hrtime();
    if (b->ops->submit(b->ex, &inv, &err) != BR_OK) {
      fprintf(stderr, "submit: %s\n", err.msg);
      exit(1);
    }
  }
}

static void on_start(void *ud, int64_t id, int64_t task) {
  bench *b = ud;
  b->to_start[id] = (double)(uv_hrtime() - b->submit_ns[id]) / 1e9;
}

static void on_done(void *ud, const br_inv_result *r) {
  bench *b = ud;
  b->done++;
  if (r->status != BR_INV_OK) {
    if (b->failed++ == 0)
      fprintf(stderr, "invocation %lld: %s %s\n", (long long)r->invocation_id,
              br_inv_status_name(r->status), r->error ? r->error : "");
  }
  b->to_spawn[r->invocation_id] = r->queued;
  submit_more(b);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int i = (int)ceil(p * n) - 1;
  if (i < 0) i = 0;
  if (i >= n) i = n - 1;
  return v[i];
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static double cpu_self(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
         ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* lat: [0..3] latencies, [4] braid's own CPU seconds per invocation */
static double run_braid(int n, int slots, int variant, const char *base, double *lat) {
  bench b;
  memset(&b, 0, sizeof b);
  b.n = n;
  b.variant = variant;
  char dir[512];
  snprintf(dir, sizeof dir, "%s/v%d", base, variant);
  b.dir = dir;
  b.attrs = json_pack("{s:i, s:s, s:[i,i]}", "frame", 1001, "shot", "sh010", "range", 1, 100);
  b.submit_ns = calloc((size_t)n, sizeof *b.submit_ns);
  b.to_start = calloc((size_t)n, sizeof *b.to_start);
  b.to_spawn = calloc((size_t)n, sizeof *b.to_spawn);
  uv_loop_init(&b.loop);
  b.ops = br_executor_find("local");
  char rt[600];
  snprintf(rt, sizeof rt, "%s/runtime", dir);
  br_exec_config cfg = {.loop = &b.loop, .slots = slots, .runtime_dir = rt, .grace = 1};
  br_exec_events ev = {.ud = &b, .on_start = on_start, .on_done = on_done};
  br_error err;
  if (b.ops->create(&cfg, &ev, &b.ex, &err) != BR_OK) {
    fprintf(stderr, "create: %s\n", err.msg);
    exit(1);
  }
  double t0 = now_s(), c0 = cpu_self();
  submit_more(&b);
  uv_run(&b.loop, UV_RUN_DEFAULT);
  double t = now_s() - t0;
  lat[4] = (cpu_self() - c0) / n;
  if (b.done != n || b.failed) {
    fprintf(stderr, "braid: %d of %d done, %d failed\n", b.done, n, b.failed);
    exit(1);
  }
  lat[0] = pct(b.to_spawn, n, 0.5);
  lat[1] = pct(b.to_spawn, n, 0.99);
  lat[2] = pct(b.to_start, n, 0.5);
  lat[3] = pct(b.to_start, n, 0.99);
  b.ops->destroy(b.ex);
  uv_run(&b.loop, UV_RUN_DEFAULT);
  uv_loop_close(&b.loop);
  json_decref(b.attrs);
  free(b.submit_ns);
  free(b.to_start);
  free(b.to_spawn);
  return t;
}

static double run_xargs(int n, int slots) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "seq %d | xargs -P%d -n1 true", n, slots);
  double t0 = now_s();
  if (system(cmd) != 0) {
    fprintf(stderr, "xargs failed\n");
    exit(1);
  }
  return now_s() - t0;
}

int main(int argc, char **argv) {
  int n = 10000, slots = 2, rounds = 3, opt;
  while ((opt = getopt(argc, argv, "n:s:r:h")) != -1) {
    switch (opt) {
    case 'n': n = atoi(optarg); break;
    case 's': slots = atoi(optarg); break;
    case 'r': rounds = atoi(optarg); break;
    default:
      fprintf(stderr, "usage: bench-exec [-n N] [-s SLOTS] [-r ROUNDS]\n");
      return opt == 'h' ? 0 : 2;
    }
  }
  if (n < 1 || slots < 1 || rounds < 1 || rounds > 20) return 2;
  char base[] = "/tmp/braid-bench-exec-XXXXXX";
  if (!mkdtemp(base)) {
    perror("mkdtemp");
    return 1;
  }
  printf("bench-exec: %d x `true`, %d slots, %d rounds\n", n, slots, rounds);
  enum { NV = 3 };
  static const char *names[NV] = {"log", "attrs", "pipe"};
  double tx[20], tb[NV][20], ratio[NV][20], lat[NV][20][5];
  for (int r = 0; r < rounds; r++) {
    tx[r] = run_xargs(n, slots);
    printf("round %d: xargs -P%d %.3f s", r + 1, slots, tx[r]);
    for (int v = 0; v < NV; v++) {
      tb[v][r] = run_braid(n, slots, v, base, lat[v][r]);
      ratio[v][r] = tb[v][r] / tx[r];
      printf(", braid %s %.3f s", names[v], tb[v][r]);
    }
    printf("\n");
    fflush(stdout);
  }
  int bx = 0;
  for (int r = 1; r < rounds; r++)
    if (tx[r] < tx[bx]) bx = r;
  printf("\nxargs -P%d: best %.3f s (%.0f jobs/s)\n", slots, tx[bx], n / tx[bx]);
  for (int v = 0; v < NV; v++) {
    int b = 0;
    for (int r = 1; r < rounds; r++)
      if (tb[v][r] < tb[v][b]) b = r;
    double med_ratio = pct(ratio[v], rounds, 0.5);
    printf("braid local (%s): best %.3f s (%.0f jobs/s), braid/xargs best %.2f, median of "
           "rounds %.2f; submit->process started median %.0f us p99 %.0f us, "
           "submit->on_start median %.0f us p99 %.0f us; braid's own CPU %.0f us per "
           "invocation\n",
           names[v], tb[v][b], n / tb[v][b], tb[v][b] / tx[bx], med_ratio, lat[v][b][0] * 1e6,
           lat[v][b][1] * 1e6, lat[v][b][2] * 1e6, lat[v][b][3] * 1e6, lat[v][b][4] * 1e6);
  }
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
  return system(cmd) == 0 ? 0 : 1;
}
