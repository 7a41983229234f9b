/* Farm scheduling with a real server and three real agents on loopback:
 * cores, memory, GPUs and tags are respected; named limits and per-node
 * limits are never exceeded; two submissions of equal priority share the
 * agents, and a higher priority goes first. Jobs record where and when they
 * ran; the checks read those records. */
#include "farm-util.h"

#include <pthread.h>

static bool has_worker(const farm_rec *r, int n, const char *w) {
  for (int i = 0; i < n; i++)
    if (strcmp(r[i].worker, w) == 0) return true;
  return false;
}

TEST(farm_resources_tags_and_limits) {
  farm f;
  farm_start(&f, "farm-sched", "--poll-wait 1 --lost-after 10 --limit lic=2");
  /* small: 1 core, 1 GB; wide: 4 cores, a GPU, tag gpu; mid: 2 cores */
  farm_agent(&f, "small", "--slots 2 --cores 1 --memory 1000 --gpus 0");
  farm_agent(&f, "wide", "--slots 4 --cores 4 --memory 8000 --gpus 1 --tag gpu");
  farm_agent(&f, "mid", "--slots 2 --cores 2 --memory 8000 --gpus 0");
  json_t *out = json_pack("{ss}", "out", f.dir);
  farm_submit_graph(&f, farm_jobs_graph("gpu", 4, "{\"shell\":\"" FARM_REC_SHELL("gpu", "0.1") "\",\"gpus\":1}"),
                    json_deep_copy(out), 0, NULL);
  farm_submit_graph(&f, farm_jobs_graph("tagged", 4, "{\"shell\":\"" FARM_REC_SHELL("tag", "0.1") "\",\"tags\":[\"gpu\"]}"),
                    json_deep_copy(out), 0, NULL);
  farm_submit_graph(&f, farm_jobs_graph("wide", 3, "{\"shell\":\"" FARM_REC_SHELL("wide", "0.1") "\",\"cores\":3}"),
                    json_deep_copy(out), 0, NULL);
  farm_submit_graph(&f, farm_jobs_graph("mem", 4, "{\"shell\":\"" FARM_REC_SHELL("mem", "0.1") "\",\"memory_mb\":4000}"),
                    json_deep_copy(out), 0, NULL);
  farm_submit_graph(&f, farm_jobs_graph("lic", 10, "{\"shell\":\"" FARM_REC_SHELL("lic", "0.3") "\",\"limits\":[\"lic\"]}"),
                    json_deep_copy(out), 0, NULL);
  farm_submit_graph(&f, farm_jobs_graph("serial", 5, "{\"shell\":\"" FARM_REC_SHELL("serial", "0.2") "\",\"max_running\":1}"),
                    json_deep_copy(out), 0, NULL);
  json_decref(out);
  CHECK(farm_settle(&f, 120));
  int64_t c[BR_TASK_NSTATES];
  farm_counts(&f, c);
  CHECK_EQ_INT(c[BR_TASK_ERROR], 0);
  farm_rec r[64];
  int n = farm_recs(f.dir, "gpu", r, 64);
  CHECK_EQ_INT(n, 4);
  for (int i = 0; i < n; i++) CHECK_EQ_STR(r[i].worker, "wide");
  CHECK(farm_overlap_at_most(r, n, 1, "gpu") <= 1); /* one GPU */
  n = farm_recs(f.dir, "tag", r, 64);
  CHECK_EQ_INT(n, 4);
  for (int i = 0; i < n; i++) CHECK_EQ_STR(r[i].worker, "wide");
  n = farm_recs(f.dir, "wide", r, 64);
  CHECK_EQ_INT(n, 3);
  for (int i = 0; i < n; i++) CHECK_EQ_STR(r[i].worker, "wide");
  CHECK(farm_overlap_at_most(r, n, 1, "wide") <= 1); /* 3 of 4 cores each */
  n = farm_recs(f.dir, "mem", r, 64);
  CHECK_EQ_INT(n, 4);
  CHECK(!has_worker(r, n, "small"));
  n = farm_recs(f.dir, "lic", r, 64);
  CHECK_EQ_INT(n, 10);
  CHECK(farm_overlap_at_most(r, n, 2, "lic") <= 2);
  CHECK(farm_max_overlap(r, n) == 2); /* and it was used */
  n = farm_recs(f.dir, "serial", r, 64);
  CHECK_EQ_INT(n, 5);
  CHECK_EQ_INT(farm_max_overlap(r, n), 1);
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.dup_ok, 0);
  CHECK_EQ_INT(iv.failed, 0);
  CHECK_EQ_INT(iv.lost, 0); /* a lost job run again would hide in the records */
  /* the limits ended unused */
  json_t *l = NULL;
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", "/api/v1/limits", NULL, &l), 200);
  CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(json_object_get(l, "limits"), "lic"), "used")), 0);
  json_decref(l);
  farm_stop(&f);
}

static double median_start(const farm_rec *r, int n) {
  long long v[256];
  for (int i = 0; i < n; i++) v[i] = r[i].start;
  for (int i = 0; i < n; i++)
    for (int k = i + 1; k < n; k++)
      if (v[k] < v[i]) {
        long long t = v[i];
        v[i] = v[k];
        v[k] = t;
      }
  return n ? (double)v[n / 2] : 0;
}

TEST(farm_fair_share_and_priority) {
  farm f;
  farm_start(&f, "farm-fair", "--poll-wait 1 --lost-after 10");
  json_t *out = json_pack("{ss}", "out", f.dir);
  /* A and B: equal priority, submitted one after the other, 12 jobs each;
   * no agent yet, so both are fully queued when the agents come */
  farm_submit_graph(&f, farm_jobs_graph("a", 12, "{\"shell\":\"" FARM_REC_SHELL("a", "0.2") "\"}"),
                    json_deep_copy(out), 0, NULL);
  farm_submit_graph(&f, farm_jobs_graph("b", 12, "{\"shell\":\"" FARM_REC_SHELL("b", "0.2") "\"}"),
                    json_deep_copy(out), 0, NULL);
  /* C: higher priority, 3 jobs */
  farm_submit_graph(&f, farm_jobs_graph("c", 3, "{\"shell\":\"" FARM_REC_SHELL("c", "0.2") "\"}"),
                    json_deep_copy(out), 5, NULL);
  json_decref(out);
  usleep(300000); /* all queued */
  farm_agent(&f, "x1", "--slots 1");
  farm_agent(&f, "x2", "--slots 1");
  farm_agent(&f, "x3", "--slots 1");
  CHECK(farm_settle(&f, 120));
  farm_rec a[32], b[32], c[8];
  int na = farm_recs(f.dir, "a", a, 32), nb = farm_recs(f.dir, "b", b, 32),
      nc = farm_recs(f.dir, "c", c, 8);
  CHECK_EQ_INT(na, 12);
  CHECK_EQ_INT(nb, 12);
  CHECK_EQ_INT(nc, 3);
  /* priority: C's jobs start before most of A's and B's */
  long long last_c = 0;
  for (int i = 0; i < nc; i++)
    if (c[i].start > last_c) last_c = c[i].start;
  int before_c = 0;
  for (int i = 0; i < na; i++) before_c += a[i].start < last_c;
  for (int i = 0; i < nb; i++) before_c += b[i].start < last_c;
  CHECK(before_c <= 3); /* only what ran while C's first jobs did */
  /* fair share: among the first 12 starts of A and B, both have several */
  long long starts[24];
  int kinds[24];
  for (int i = 0; i < na; i++) starts[i] = a[i].start, kinds[i] = 0;
  for (int i = 0; i < nb; i++) starts[na + i] = b[i].start, kinds[na + i] = 1;
  for (int i = 0; i < 24; i++)
    for (int k = i + 1; k < 24; k++)
      if (starts[k] < starts[i]) {
        long long t = starts[i];
        starts[i] = starts[k];
        starts[k] = t;
        int tk = kinds[i];
        kinds[i] = kinds[k];
        kinds[k] = tk;
      }
  int bfirst = 0;
  for (int i = 0; i < 12; i++) bfirst += kinds[i];
  CHECK(bfirst >= 4 && bfirst <= 8);
  CHECK(median_start(a, na) > 0 && median_start(b, nb) > 0);
  /* the three agents all worked */
  int workers[3] = {0};
  for (int i = 0; i < na; i++) workers[a[i].worker[1] - '1']++;
  for (int i = 0; i < nb; i++) workers[b[i].worker[1] - '1']++;
  CHECK(workers[0] > 0 && workers[1] > 0 && workers[2] > 0);
  farm_stop(&f);
}

typedef struct bg_poll {
  farm *f;
  json_t *body, *ans;
  int status;
} bg_poll;

static void *bg_poll_main(void *arg) {
  bg_poll *p = arg;
  p->status = farm_call(p->f, p->f->agent, "POST", "/api/v1/agents/g1/poll", p->body, &p->ans);
  return NULL;
}

TEST(farm_a_job_end_counted_by_a_poll_is_not_counted_again) {
  /* An agent polls and reports on two connections. A job that ended is in
   * the free resources of its next poll at once, while its report may come
   * after that poll: the server must not count the end twice (it gave two
   * jobs to one GPU). The poll says which ends it counted (released_seq). */
  farm f;
  farm_start(&f, "farm-released", "--poll-wait 10 --lost-after 60");
  json_t *b = json_pack("{sssssisisIsis[]s[]}", "id", "g1", "host", "h", "cores", 4, "slots", 4,
                        "memory_mb", (json_int_t)8000, "gpus", 1, "tags", "held");
  json_t *a = NULL;
  CHECK_EQ_INT(farm_call(&f, f.agent, "POST", "/api/v1/agents/register", b, &a), 200);
  json_decref(b);
  char session[64];
  snprintf(session, sizeof session, "%s", json_string_value(json_object_get(a, "session")));
  json_decref(a);
  /* one GPU job, taken */
  farm_submit_graph(&f, farm_jobs_graph("one", 1, "{\"shell\":\"true\",\"gpus\":1}"), NULL, 0, NULL);
  b = json_pack("{sss{sisisIsi}si}", "session", session, "free", "slots", 4, "cores", 4, "memory_mb",
                (json_int_t)8000, "gpus", 1, "wait_ms", 8000);
  a = NULL;
  CHECK_EQ_INT(farm_call(&f, f.agent, "POST", "/api/v1/agents/g1/poll", b, &a), 200);
  json_decref(b);
  json_t *w = json_array_get(json_object_get(a, "work"), 0);
  CHECK(w != NULL);
  json_int_t inv = json_integer_value(json_object_get(w, "id"));
  json_int_t task = json_integer_value(json_object_get(w, "task"));
  json_decref(a);
  /* it ended: the next poll counts its GPU free (its done event is seq 1)
   * and waits, for nothing is queued */
  bg_poll p = {.f = &f};
  p.body = json_pack("{sss{sisisIsi}sisI}", "session", session, "free", "slots", 4, "cores", 4,
                     "memory_mb", (json_int_t)8000, "gpus", 1, "wait_ms", 8000, "released_seq",
                     (json_int_t)1);
  pthread_t th;
  pthread_create(&th, NULL, bg_poll_main, &p);
  usleep(300000);
  /* its report comes after, on the other connection */
  json_t *ev = json_pack("[{sIsIsssIsssisf}]", "seq", (json_int_t)1, "inv", inv, "type", "done",
                         "task", task, "status", "ok", "exit_code", 0, "runtime", 0.1);
  b = json_pack("{ssso}", "session", session, "events", ev);
  a = NULL;
  CHECK_EQ_INT(farm_call(&f, f.agent, "POST", "/api/v1/agents/g1/report", b, &a), 200);
  json_decref(b);
  json_decref(a);
  /* two GPU jobs come: the waiting poll gets one, for one GPU */
  farm_submit_graph(&f, farm_jobs_graph("two", 2, "{\"shell\":\"true\",\"gpus\":1}"), NULL, 0, NULL);
  pthread_join(th, NULL);
  CHECK_EQ_INT(p.status, 200);
  CHECK_EQ_INT(json_array_size(json_object_get(p.ans, "work")), 1);
  json_decref(p.ans);
  json_decref(p.body);
  farm_stop(&f);
}
