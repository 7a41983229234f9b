/* The reference scenario on a farm: a real server and three real agents on
 * loopback run examples/wedge-mosaic.json end to end (real jobs, real
 * ffmpeg); the movie is right, every agent worked, and no job's result was
 * taken twice. */
#include <glob.h>

#include "farm-util.h"

TEST(farm_reference_scenario) {
  farm f;
  farm_start(&f, "farm-ref", "--poll-wait 2 --lost-after 30");
  farm_agent(&f, "render01", "--slots 2");
  farm_agent(&f, "render02", "--slots 2");
  farm_agent(&f, "render03", "--slots 2");
  char gdir[1024], out[1024];
  snprintf(gdir, sizeof gdir, "%s/examples", farm_src());
  snprintf(out, sizeof out, "%s/wedge-mosaic-out", f.dir);
  double t0 = farm_now();
  farm_submit(&f, "examples/wedge-mosaic.json", json_pack("{ssss}", "graph_dir", gdir, "out", out), 0, NULL);
  CHECK(farm_settle(&f, 280));
  fprintf(stderr, "reference scenario on 3 agents: %.1f s\n", farm_now() - t0);
  int64_t c[BR_TASK_NSTATES];
  farm_counts(&f, c);
  CHECK_EQ_INT(c[BR_TASK_ERROR], 0);
  CHECK_EQ_INT(c[BR_TASK_BLOCKED], 0);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -count_frames -select_streams v:0 -show_entries "
           "stream=nb_read_frames,width,height -of csv=p=0 '%s/wedge-mosaic.mp4'", out);
  char *probe = farm_capture(cmd);
  CHECK_CONTAINS(probe, "320,240,100"); /* 2x2 tiles of 160x120, 100 frames */
  free(probe);
  char pattern[1200];
  snprintf(pattern, sizeof pattern, "%s/render/w*/img.*.png", out);
  glob_t g;
  CHECK(glob(pattern, 0, NULL, &g) == 0);
  CHECK_EQ_INT(g.gl_pathc, 400);
  globfree(&g);
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.dup_ok, 0);
  CHECK_EQ_INT(iv.failed, 0);
  CHECK_EQ_INT(iv.ok, 80 + 400 + 400 + 1); /* cache chunks, scenes, renders, the mosaic */
  CHECK_CONTAINS(iv.workers, "render01");
  CHECK_CONTAINS(iv.workers, "render02");
  CHECK_CONTAINS(iv.workers, "render03");
  farm_stop(&f);
}
