/* The slurm executor end to end on a one-node Slurm cluster (the ctest
 * fixture "slurm"): the reference scenario, job arrays, and Ctrl-C removing
 * the Slurm jobs. */
#include <glob.h>
#include <sys/stat.h>

#include "slurm-util.h"

/* How many paths match a glob pattern. */
static int count_paths(const char *pattern) {
  glob_t g;
  int n = glob(pattern, 0, NULL, &g) == 0 ? (int)g.gl_pathc : 0;
  globfree(&g);
  return n;
}

TEST(reference_scenario_on_slurm) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-ref");
  char graph[1024];
  snprintf(graph, sizeof graph, "%s/examples/wedge-mosaic.json", farm_src());
  int rc = farm_wait(start_slurm_run(dir, graph, ""));
  if (rc != 0) fail_with_log(dir, "braid run --executor slurm failed", rc);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -count_frames -select_streams v:0 -show_entries "
           "stream=nb_read_frames,width,height -of csv=p=0 '%s/wedge-mosaic-out/wedge-mosaic.mp4'",
           dir);
  char *out = capture(cmd);
  CHECK_CONTAINS(out, "320,240,100"); /* 2x2 tiles of 160x120, 100 frames */
  free(out);
  char pattern[1024];
  snprintf(pattern, sizeof pattern, "%s/wedge-mosaic-out/render/w*/img.*.png", dir);
  glob_t g;
  CHECK(glob(pattern, 0, NULL, &g) == 0);
  CHECK_EQ_INT(g.gl_pathc, 400);
  globfree(&g);
  invs *l = invocations(dir);
  CHECK_EQ_INT(count_status(l, "ok"), 80 + 400 + 400 + 1);
  /* every invocation ran in a Slurm job (an array element), and arrays were
   * used: far fewer sbatch calls than invocations */
  char arrays[65536] = "|";
  int narrays = 0;
  for (int i = 0; i < l->n; i++) {
    const char *w = l->v[i].row.worker;
    if (!w || strncmp(w, "slurm-", 6) != 0)
      br_test_fail(__FILE__, __LINE__, "invocation %lld ran on '%s', not in a Slurm job",
                   (long long)l->v[i].row.id, w ? w : "");
    char key[64];
    snprintf(key, sizeof key, "%.*s|", (int)strcspn(w + 6, "_"), w + 6);
    if (!strstr(arrays, key) && strlen(arrays) + strlen(key) < sizeof arrays) {
      strcat(arrays, key);
      narrays++;
    }
  }
  fprintf(stderr, "  %d invocations in %d Slurm job arrays\n", l->n, narrays);
  CHECK(narrays * 3 < l->n);
  invs_free(l);
  free(dir);
}

TEST(ctrl_c_removes_the_slurm_jobs_and_resume_finishes) {
  need_cluster();
  char *dir = br_test_tmpdir("slurm-cancel");
  char *graph = write_graph(dir, "sleepers",
                            "{\"name\": \"sleepers\", \"start\": {\"node\": \"fan\", \"attrs\": {\"n\": 4}},\n"
                            " \"nodes\": [\n"
                            "  {\"name\": \"fan\", \"type\": \"spawn\", \"params\": {\"count\": {\"expr\": \"attr.n\"}}},\n"
                            "  {\"name\": \"nap\", \"type\": \"command\", \"params\": {\"shell\": "
                            "\"if [ -e resume ]; then exit 0; fi; exec sleep 307\"}}],\n"
                            " \"wires\": [[\"fan.children\", \"nap\"]]}\n");
  /* the jobs' work dirs go under jobtmp (sbatch passes TMPDIR on) */
  char jobtmp[1100], workdirs[1200];
  snprintf(jobtmp, sizeof jobtmp, "%s/jobtmp", dir);
  snprintf(workdirs, sizeof workdirs, "%s/braid-slurm-[0-9]*", jobtmp);
  CHECK(mkdir(jobtmp, 0755) == 0);
  setenv("TMPDIR", jobtmp, 1);
  pid_t pid = start_slurm_run(dir, graph, "--grace 2");
  wait_running(dir, 4, 60);
  CHECK_EQ_INT(slurm_active(dir, "nap"), 4);
  CHECK(procs_with("[s]leep 307") >= 4);
  CHECK_EQ_INT(count_paths(workdirs), 4);
  double t0 = farm_now();
  kill(pid, SIGINT);
  int rc = wait_exit_for(pid, 30);
  if (rc != 130) fail_with_log(dir, "Ctrl-C did not stop braid run with 130", rc);
  fprintf(stderr, "  stopped in %.2f s\n", farm_now() - t0);
  /* scancelled before braid exited; Slurm may still be finishing them off
   * (COMPLETING) for a moment */
  for (int i = 0; i < 100 && (slurm_active(dir, "nap") > 0 || procs_with("[s]leep 307") > 0); i++)
    usleep(100 * 1000);
  CHECK_EQ_INT(slurm_active(dir, "nap"), 0);
  CHECK_EQ_INT(procs_with("[s]leep 307"), 0);
  /* and the scancelled jobs removed their work dirs on the way out */
  for (int i = 0; i < 50 && count_paths(workdirs) > 0; i++) usleep(100 * 1000);
  CHECK_EQ_INT(count_paths(workdirs), 0);
  invs *l = invocations(dir);
  CHECK_EQ_INT(count_status(l, "cancelled"), 4);
  CHECK_EQ_INT(count_status(l, "running"), 0);
  invs_free(l);
  /* resume: the same command finishes the work */
  char path[1100];
  snprintf(path, sizeof path, "%s/resume", dir);
  fclose(fopen(path, "w"));
  rc = farm_wait(start_slurm_run(dir, graph, ""));
  if (rc != 0) fail_with_log(dir, "the resumed run failed", rc);
  l = invocations(dir);
  CHECK_EQ_INT(count_status(l, "ok"), 4);
  invs_free(l);
  free(graph);
  free(dir);
}
