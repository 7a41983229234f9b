/* Farm scheduling with a real server and three real agents on loopback:
 * cores, memory, GPUs and tags are respected; named limits and per-node
 * limits are never exceeded; two submissions of equal priority share the
 * agents, and a higher priority goes first. Jobs record where and when they
 * ran; the checks read those records. Fake agents that keep the protocol
 * with random timing check that no poll is answered with more than is
 * free. */
#include "farm-util.h"

#include <pthread.h>
#include <stdatomic.h>

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
  CHECK(farm_wait_count(&f, "node=job&state=queued", 27)); /* all queued */
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

/* ---- fake agents that keep the protocol as the real one does, with
 * random timing: a poll connection and a report connection; a job's end
 * frees its resources at once (the next poll's free counts it, and says
 * so with released_seq), while its report may come later. Each checks
 * that what the server gives fits what it has free at that moment. ---- */

typedef struct fjob {
  int64_t id, task;
  int cores, gpus;
  int64_t memory_mb;
  double end;
} fjob;

typedef struct fake {
  farm *f;
  char id[16];
  int slots, cores, gpus;
  int64_t memory_mb;
  char session[64];
  pthread_mutex_t mu;
  fjob run[64];
  int nrun, used_cores, used_gpus;
  int64_t used_memory;
  json_t *pending; /* done events not yet acknowledged */
  int64_t seq, released_seq;
  unsigned poll_rng, report_rng; /* one per thread: each is its own sequence */
  int over;     /* work given beyond what was free */
  int bad_item; /* work items without their needs */
  int jobs;     /* work items received */
  int polls, reregs; /* polls sent; registrations again, holding its jobs */
  atomic_int stop;
} fake;

static unsigned fake_rand(unsigned *rng) {
  *rng = *rng * 1103515245u + 12345u;
  return (*rng >> 8) & 0xffffff;
}

/* Ends the jobs that are due: resources free now, a done event queued. */
static void fake_end_due(fake *a) {
  double now = farm_now();
  for (int i = 0; i < a->nrun;) {
    fjob *j = &a->run[i];
    if (j->end > now) {
      i++;
      continue;
    }
    a->used_cores -= j->cores;
    a->used_gpus -= j->gpus;
    a->used_memory -= j->memory_mb;
    a->seq++;
    json_array_append_new(a->pending,
                          json_pack("{sIsIsssIsssisf}", "seq", (json_int_t)a->seq, "inv",
                                    (json_int_t)j->id, "type", "done", "task", (json_int_t)j->task,
                                    "status", "ok", "exit_code", 0, "runtime", 0.01));
    a->released_seq = a->seq; /* the next poll's free counts it */
    a->run[i] = a->run[--a->nrun];
  }
}

/* Registers (again, as after a network cut: then it holds its running
 * jobs and those whose end is not acknowledged, so the server keeps them).
 * The poll thread does it, as in the real agent: no poll is in flight. */
static int fake_register(fake *a) {
  pthread_mutex_lock(&a->mu);
  json_t *held = json_array();
  for (int i = 0; i < a->nrun; i++)
    json_array_append_new(held, json_pack("{sIsI}", "id", (json_int_t)a->run[i].id, "task",
                                          (json_int_t)a->run[i].task));
  size_t i;
  json_t *e;
  json_array_foreach(a->pending, i, e)
    json_array_append_new(held, json_pack("{sOsO}", "id", json_object_get(e, "inv"), "task",
                                          json_object_get(e, "task")));
  json_t *b = json_pack("{sssssisisIsis[]so}", "id", a->id, "host", a->id, "cores", a->cores,
                        "slots", a->slots, "memory_mb", (json_int_t)a->memory_mb, "gpus", a->gpus,
                        "tags", "held", held);
  pthread_mutex_unlock(&a->mu);
  json_t *ans = NULL;
  int st = farm_call(a->f, a->f->agent, "POST", "/api/v1/agents/register", b, &ans);
  pthread_mutex_lock(&a->mu);
  if (st == 200)
    snprintf(a->session, sizeof a->session, "%s", json_string_value(json_object_get(ans, "session")));
  pthread_mutex_unlock(&a->mu);
  json_decref(b);
  json_decref(ans);
  return st;
}

static void *fake_poll_main(void *arg) {
  fake *a = arg;
  char path[128];
  snprintf(path, sizeof path, "/api/v1/agents/%s/poll", a->id);
  while (!a->stop) {
    a->polls++;
    if ((a->polls == 3 || a->polls == 8 || a->polls == 14) && fake_register(a) == 200)
      a->reregs++;
    pthread_mutex_lock(&a->mu);
    fake_end_due(a);
    int wait_ms = (int)(fake_rand(&a->poll_rng) % 300);
    json_t *b = json_pack("{sss{sisisIsi}sisI}", "session", a->session, "free", "slots",
                          a->slots - a->nrun, "cores", a->cores - a->used_cores, "memory_mb",
                          (json_int_t)(a->memory_mb - a->used_memory), "gpus",
                          a->gpus - a->used_gpus, "wait_ms", wait_ms, "released_seq",
                          (json_int_t)a->released_seq);
    pthread_mutex_unlock(&a->mu);
    json_t *ans = NULL;
    int st = farm_call(a->f, a->f->agent, "POST", path, b, &ans);
    json_decref(b);
    pthread_mutex_lock(&a->mu);
    fake_end_due(a); /* what ended meanwhile is free too */
    size_t i;
    json_t *w;
    json_array_foreach(st == 200 ? json_object_get(ans, "work") : NULL, i, w) {
      fjob j = {.id = json_integer_value(json_object_get(w, "id")),
                .task = json_integer_value(json_object_get(w, "task")),
                .cores = (int)json_integer_value(json_object_get(w, "cores")),
                .gpus = (int)json_integer_value(json_object_get(w, "gpus")),
                .memory_mb = json_integer_value(json_object_get(w, "memory_mb")),
                .end = farm_now() + (double)(20 + fake_rand(&a->poll_rng) % 130) / 1000};
      a->jobs++;
      if (j.cores < 1) a->bad_item++;
      if (a->nrun + 1 > a->slots || a->used_cores + j.cores > a->cores ||
          a->used_gpus + j.gpus > a->gpus || a->used_memory + j.memory_mb > a->memory_mb ||
          a->nrun == (int)(sizeof a->run / sizeof *a->run))
        a->over++;
      if (a->nrun < (int)(sizeof a->run / sizeof *a->run)) {
        a->run[a->nrun++] = j; /* run it anyway: its end frees what it took */
        a->used_cores += j.cores;
        a->used_gpus += j.gpus;
        a->used_memory += j.memory_mb;
      }
    }
    pthread_mutex_unlock(&a->mu);
    json_decref(ans);
    if (st != 200) usleep(20000);
  }
  return NULL;
}

/* Reports the done events, often late (after polls that counted them),
 * sometimes twice (an answer lost): the server keeps each once. */
static void *fake_report_main(void *arg) {
  fake *a = arg;
  char path[128];
  snprintf(path, sizeof path, "/api/v1/agents/%s/report", a->id);
  while (!a->stop) {
    usleep(5000 + fake_rand(&a->report_rng) % 60000);
    bool forget_ack = fake_rand(&a->report_rng) % 5 == 0;
    pthread_mutex_lock(&a->mu);
    fake_end_due(a);
    json_t *b = json_array_size(a->pending) ? json_pack("{ssso}", "session", a->session, "events",
                                                        json_deep_copy(a->pending))
                                            : NULL;
    pthread_mutex_unlock(&a->mu);
    if (!b) continue;
    json_t *ans = NULL;
    int st = farm_call(a->f, a->f->agent, "POST", path, b, &ans);
    json_decref(b);
    int64_t ack = st == 200 ? json_integer_value(json_object_get(ans, "ack")) : 0;
    json_decref(ans);
    if (forget_ack) continue; /* sent again next time */
    pthread_mutex_lock(&a->mu);
    while (json_array_size(a->pending) &&
           json_integer_value(json_object_get(json_array_get(a->pending, 0), "seq")) <= ack)
      json_array_remove(a->pending, 0);
    pthread_mutex_unlock(&a->mu);
  }
  return NULL;
}

TEST(farm_fake_agents_never_get_more_than_they_have_free) {
  /* Three fake agents of different sizes, 120 short jobs of four shapes,
   * seeded random timing of polls, ends, reports and registrations
   * again (holding their jobs): no poll is ever
   * answered with work beyond the agent's free resources at that moment,
   * and every job runs once (a resource counted free too rarely would
   * leave jobs waiting forever). */
  farm f;
  farm_start(&f, "farm-fakes", "--poll-wait 1 --lost-after 30");
  static fake ag[3];
  const int sizes[3][4] = {{2, 2, 2000, 0}, {4, 4, 8000, 1}, {3, 6, 6000, 2}};
  for (int i = 0; i < 3; i++) {
    fake *a = &ag[i];
    memset(a, 0, sizeof *a);
    a->f = &f;
    snprintf(a->id, sizeof a->id, "fake%d", i + 1);
    a->slots = sizes[i][0];
    a->cores = sizes[i][1];
    a->memory_mb = sizes[i][2];
    a->gpus = sizes[i][3];
    a->poll_rng = 7919u * (unsigned)(i + 1);
    a->report_rng = 104729u * (unsigned)(i + 1);
    a->pending = json_array();
    pthread_mutex_init(&a->mu, NULL);
    CHECK_EQ_INT(fake_register(a), 200);
  }
  farm_submit_graph(&f, farm_jobs_graph("gpu", 40, "{\"shell\":\"true\",\"gpus\":1}"), NULL, 0,
                    NULL);
  farm_submit_graph(&f, farm_jobs_graph("wide", 20, "{\"shell\":\"true\",\"cores\":3}"), NULL, 0,
                    NULL);
  farm_submit_graph(&f, farm_jobs_graph("mem", 20, "{\"shell\":\"true\",\"memory_mb\":3000}"),
                    NULL, 0, NULL);
  farm_submit_graph(&f, farm_jobs_graph("one", 40, "{\"shell\":\"true\"}"), NULL, 0, NULL);
  pthread_t th[6];
  for (int i = 0; i < 3; i++) {
    pthread_create(&th[2 * i], NULL, fake_poll_main, &ag[i]);
    pthread_create(&th[2 * i + 1], NULL, fake_report_main, &ag[i]);
  }
  bool settled = farm_settle(&f, 120);
  for (int i = 0; i < 3; i++) atomic_store(&ag[i].stop, 1);
  for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
  CHECK(settled);
  int jobs = 0;
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(ag[i].over, 0);
    CHECK_EQ_INT(ag[i].bad_item, 0);
    CHECK(ag[i].reregs > 0);
    jobs += ag[i].jobs;
    json_decref(ag[i].pending);
    pthread_mutex_destroy(&ag[i].mu);
  }
  CHECK_EQ_INT(jobs, 120);
  int64_t c[BR_TASK_NSTATES];
  farm_counts(&f, c);
  CHECK_EQ_INT(c[BR_TASK_ERROR], 0);
  farm_invs iv = farm_invocations(&f);
  CHECK_EQ_INT(iv.ok, 120);
  CHECK_EQ_INT(iv.dup_ok, 0);
  CHECK_EQ_INT(iv.lost, 0);
  farm_stop(&f);
}

/* ---- why a job waits ---- */

/* The first queued child of the submission `start`, waited for. */
static int64_t queued_child(farm *f, int64_t start) {
  char path[128];
  snprintf(path, sizeof path, "/api/v1/tasks?parent=%lld&state=queued", (long long)start);
  for (int i = 0; i < 200; i++) {
    json_t *out = NULL;
    CHECK_EQ_INT(farm_call(f, f->user, "GET", path, NULL, &out), 200);
    json_t *tasks = json_object_get(out, "tasks");
    int64_t id = json_array_size(tasks)
                     ? json_integer_value(json_object_get(json_array_get(tasks, 0), "id"))
                     : 0;
    json_decref(out);
    if (id) return id;
    usleep(50000);
  }
  br_test_fail(__FILE__, __LINE__, "no child of task %lld was queued", (long long)start);
  return 0;
}

/* What GET /api/v1/tasks/ID says the task waits for, once it says what
 * `want` says (the agents' polls change it): the last answer. */
static char *waiting_for(farm *f, int64_t id, const char *want) {
  char path[128];
  snprintf(path, sizeof path, "/api/v1/tasks/%lld", (long long)id);
  char *last = NULL;
  for (int i = 0; i < 200; i++) {
    json_t *out = NULL;
    CHECK_EQ_INT(farm_call(f, f->user, "GET", path, NULL, &out), 200);
    const char *w = json_string_value(json_object_get(out, "waiting"));
    free(last);
    last = strdup(w ? w : "(nothing)");
    json_decref(out);
    if (strstr(last, want)) break;
    usleep(50000);
  }
  return last;
}

/* A queued job says what holds it: no agent, no agent big enough or with
 * its tags, a full limit, a limit name the farm does not set (a typo,
 * which limits nothing), busy agents; `braid show` prints it. Before, a job
 * no agent could take sat queued with no word of why. */
TEST(farm_says_why_a_job_waits) {
  farm f;
  farm_start(&f, "farm-why", "--poll-wait 1 --lost-after 10 --limit lic=1");
  int64_t big = farm_submit_graph(&f, farm_jobs_graph("big", 1, "{\"shell\":\"true\",\"cores\":64}"),
                                  NULL, 0, NULL);
  int64_t job = queued_child(&f, big);
  char *w = waiting_for(&f, job, "no agent");
  CHECK_EQ_STR(w, "no agent has registered with this server");
  free(w);
  farm_agent(&f, "a", "--slots 1 --cores 2 --memory 1000 --gpus 0 --tag x");
  w = waiting_for(&f, job, "too small");
  CHECK_EQ_STR(w, "no online agent can run it: 1 is too small (it needs 64 cores, 0 MB, 0 GPUs; "
                  "the largest has 2 cores, 1000 MB, 0 GPUs)");
  free(w);
  int64_t tagged = farm_submit_graph(
      &f, farm_jobs_graph("tagged", 1, "{\"shell\":\"true\",\"tags\":[\"gpu\"]}"), NULL, 0, NULL);
  w = waiting_for(&f, queued_child(&f, tagged), "tags");
  CHECK_EQ_STR(w, "no online agent can run it: 1 lacks its tags [\"gpu\"]");
  free(w);
  int64_t lic = farm_submit_graph(
      &f, farm_jobs_graph("lic", 2, "{\"shell\":\"sleep 60\",\"limits\":[\"lic\"]}"), NULL, 0, NULL);
  int64_t second = queued_child(&f, lic);
  w = waiting_for(&f, second, "is busy");
  CHECK_EQ_STR(w, "limit 'lic' is full (1 of 1 in use); the 1 agent that can run it is busy");
  free(w);
  /* the submission is warned of the typo; the job says it too */
  json_t *body = json_pack("{so}", "graph", farm_jobs_graph("typo", 1, "{\"shell\":\"true\","
                                                                      "\"limits\":[\"lic\",\"licc\"]}"));
  json_t *ans = NULL;
  CHECK_EQ_INT(farm_call(&f, f.user, "POST", "/api/v1/submissions", body, &ans), 201);
  json_decref(body);
  int64_t typo = json_integer_value(json_object_get(ans, "task"));
  json_t *warnings = json_object_get(ans, "warnings");
  CHECK_EQ_INT(json_array_size(warnings), 1);
  CHECK_EQ_STR(json_string_value(json_array_get(warnings, 0)),
               "node 'job' takes limit 'licc', which this farm does not set, so it limits "
               "nothing (set: lic)");
  json_decref(ans);
  w = waiting_for(&f, queued_child(&f, typo), "busy");
  CHECK_EQ_STR(w, "limit 'lic' is full (1 of 1 in use); limit 'licc' is not set on this farm, so "
                  "it holds nothing back (set: lic); the 1 agent that can run it is busy");
  free(w);
  /* braid submit prints the warning */
  char cmd[2048];
  json_t *g = farm_jobs_graph("typo2", 1, "{\"shell\":\"true\",\"limits\":[\"houdni\"]}");
  snprintf(cmd, sizeof cmd, "%s/typo2.json", f.dir);
  CHECK_EQ_INT(json_dump_file(g, cmd, 0), 0);
  json_decref(g);
  snprintf(cmd, sizeof cmd, "'%s' submit %s/typo2.json --server %s --token %s 2>&1", farm_bin(),
           f.dir, f.url, f.user);
  char *out = farm_capture(cmd);
  CHECK_CONTAINS(out, "braid: warning: node 'job' takes limit 'houdni', which this farm does not "
                      "set, so it limits nothing (set: lic)");
  free(out);
  snprintf(cmd, sizeof cmd, "'%s' show %lld --server %s --token %s 2>&1", farm_bin(),
           (long long)second, f.url, f.user);
  out = farm_capture(cmd);
  CHECK_CONTAINS(out, "\n  waiting   limit 'lic' is full (1 of 1 in use)");
  free(out);
  /* a running task waits for nothing */
  json_t *t = NULL;
  snprintf(cmd, sizeof cmd, "/api/v1/tasks?parent=%lld&state=running", (long long)lic);
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", cmd, NULL, &t), 200);
  int64_t running = json_integer_value(json_object_get(json_array_get(json_object_get(t, "tasks"), 0), "id"));
  json_decref(t);
  CHECK(running > 0);
  snprintf(cmd, sizeof cmd, "/api/v1/tasks/%lld", (long long)running);
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", cmd, NULL, &t), 200);
  CHECK(json_object_get(t, "waiting") == NULL);
  json_decref(t);
  farm_stop(&f);
}

/* ---- a submission as a whole ---- */

/* `braid CMD ARGS` against the farm as its user: stdout and stderr, then
 * "rc=N". */
static char *cli(farm *f, const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s --server %s --token %s 2>&1; echo rc=$?", f->dir,
           farm_bin(), args, f->url, f->user);
  return farm_capture(cmd);
}

/* A job cancelled while what it spawned is still on its way: the children
 * its report then brings are made cancelled, not run. The agent is stopped
 * (SIGSTOP) before the job asks to spawn, so the spawn reaches the server
 * after the cancel. Before, such a child was made and ran, so cancelling a
 * submission (or a task) could leave work running. */
TEST(farm_spawns_that_come_after_a_cancel_are_cancelled) {
  farm f;
  farm_start(&f, "farm-cancel-spawn", "--poll-wait 1 --lost-after 60");
  pid_t ag = farm_agent(&f, "a", "--slots 2");
  json_t *g = farm_jobs_graph(
      "sp", 1, "{\"shell\":\"sleep 2; braid ctl spawn --name late child=1; sleep 60\"}");
  json_array_append_new(json_object_get(g, "nodes"),
                        json_pack("{sssss{ss}}", "name", "child", "type", "command", "params",
                                  "shell", "echo x > {out}/late.ran"));
  json_array_append_new(json_object_get(g, "wires"), json_pack("[ss]", "job.children", "child"));
  farm_submit_graph(&f, g, json_pack("{ss}", "out", f.dir), 0, NULL);
  CHECK(farm_wait_count(&f, "state=running", 1));
  CHECK_EQ_INT(kill(ag, SIGSTOP), 0); /* before the job's 2 s are up */
  json_t *out = NULL;
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", "/api/v1/tasks?state=running", NULL, &out), 200);
  int64_t job = json_integer_value(
      json_object_get(json_array_get(json_object_get(out, "tasks"), 0), "id"));
  json_decref(out);
  char path[256];
  snprintf(path, sizeof path, "/api/v1/tasks/%lld/cancel", (long long)job);
  CHECK_EQ_INT(farm_call(&f, f.user, "POST", path, NULL, NULL), 200);
  sleep(3); /* the job asks to spawn meanwhile, and waits for the agent */
  CHECK_EQ_INT(kill(ag, SIGCONT), 0);
  CHECK(farm_wait_count(&f, "node=child&state=cancelled", 1));
  snprintf(path, sizeof path, "node=job&state=cancelled");
  CHECK(farm_wait_count(&f, path, 1));
  sleep(2); /* had the child been routed, it would have run by now */
  CHECK_EQ_INT(farm_count(&f, "node=child"), 1);
  char ran[1024];
  snprintf(ran, sizeof ran, "%s/late.ran", f.dir);
  CHECK(access(ran, F_OK) != 0);
  /* the job retried spawns the child again: it runs now. Before, the name
   * was known, and the child stayed cancelled unless retried itself */
  snprintf(path, sizeof path, "/api/v1/tasks/%lld/retry", (long long)job);
  CHECK_EQ_INT(farm_call(&f, f.user, "POST", path, NULL, NULL), 200);
  CHECK(farm_wait_count(&f, "node=child&state=done", 1));
  CHECK(access(ran, F_OK) == 0);
  CHECK_EQ_INT(farm_count(&f, "node=child"), 1);
  farm_stop(&f);
}

/* cancel, pause, resume and retry take --group: a submission's id or the
 * name it was given, as ls --group does; other submissions are left be.
 * Before, a submission was cancelled one task at a time, and ls --group
 * took an id where submit --group gave a name. */
TEST(farm_a_whole_submission_at_once) {
  farm f;
  farm_start(&f, "farm-group", "--poll-wait 1 --lost-after 10");
  farm_agent(&f, "a", "--slots 6 --cores 6");
  json_t *g = farm_jobs_graph("shot", 4, "{\"shell\":\"sleep 60\"}");
  char path[1024];
  snprintf(path, sizeof path, "%s/shot.json", f.dir);
  CHECK_EQ_INT(json_dump_file(g, path, 0), 0);
  json_decref(g);
  char *out = cli(&f, "submit shot.json --group shotA");
  CHECK_CONTAINS(out, "rc=0");
  free(out);
  int64_t other = farm_submit_graph(&f, farm_jobs_graph("other", 2, "{\"shell\":\"sleep 60\"}"),
                                    NULL, 0, NULL);
  json_t *groups = NULL;
  CHECK_EQ_INT(farm_call(&f, f.user, "GET", "/api/v1/groups", NULL, &groups), 200);
  int64_t gid = json_integer_value(json_object_get(json_object_get(groups, "groups"), "shotA"));
  json_decref(groups);
  CHECK(gid > 0);
  char q[128];
  snprintf(q, sizeof q, "group=%lld&state=running", (long long)gid);
  CHECK(farm_wait_count(&f, q, 4));
  out = cli(&f, "ls --group shotA --state running");
  CHECK_EQ_INT((int64_t)(strstr(out, "rc=0") != NULL), 1);
  int lines = 0;
  for (const char *p = out; (p = strstr(p, " running ")); p++) lines++;
  CHECK_EQ_INT(lines, 4);
  free(out);
  /* cancel: the running jobs are killed, the other submission runs on */
  out = cli(&f, "cancel --group shotA");
  char want[128];
  snprintf(want, sizeof want, "group %lld: cancel, 4 tasks\nrc=0", (long long)gid);
  CHECK_CONTAINS(out, want);
  free(out);
  snprintf(q, sizeof q, "group=%lld&state=cancelled", (long long)gid);
  CHECK(farm_wait_count(&f, q, 4));
  snprintf(q, sizeof q, "group=%lld&state=running", (long long)other);
  CHECK_EQ_INT(farm_count(&f, q), 2);
  /* retry by id: they run again; pause then holds nothing that runs */
  snprintf(want, sizeof want, "retry --group %lld", (long long)gid);
  out = cli(&f, want);
  CHECK_CONTAINS(out, ": retry, 4 tasks\nrc=0");
  free(out);
  snprintf(q, sizeof q, "group=%lld&state=running", (long long)gid);
  CHECK(farm_wait_count(&f, q, 4));
  out = cli(&f, "pause --group shotA");
  CHECK_CONTAINS(out, ": pause, 4 tasks\nrc=0");
  free(out);
  out = cli(&f, "resume --group shotA");
  CHECK_CONTAINS(out, ": resume, 4 tasks\nrc=0");
  free(out);
  /* errors: an unknown group, tasks and --group together */
  out = cli(&f, "cancel --group shotB");
  CHECK_CONTAINS(out, "no group 'shotB'");
  CHECK_CONTAINS(out, "rc=2");
  free(out);
  out = cli(&f, "cancel --group shotA 5");
  CHECK_CONTAINS(out, "give tasks or --group, not both");
  CHECK_CONTAINS(out, "rc=2");
  free(out);
  out = cli(&f, "ls --group shotB");
  CHECK_CONTAINS(out, "rc=2");
  free(out);
  CHECK_EQ_INT(farm_call(&f, f.user, "POST", "/api/v1/groups/shotB/cancel", NULL, NULL), 404);
  CHECK_EQ_INT(farm_call(&f, f.user, "POST", "/api/v1/groups/shotA/cancel", NULL, NULL), 200);
  snprintf(q, sizeof q, "group=%lld&state=running", (long long)other);
  CHECK_EQ_INT(farm_count(&f, q), 2);
  farm_stop(&f);
}
