/* The dynamic graph under stress: splits nested in splits and gathered back,
 * children spawned and waited for inside splits, tasks operated on while
 * their siblings gather, and a seeded generator of nested split/gather
 * graphs whose final attributes are known in advance, run whole and killed
 * (SIGKILL) at many points. */
#include "engine_util.h"

#include <braid/task.h>

/* ---- tasks that were consumed stay consumed ---- */

/* A dead split element was gathered into its survivor: retrying or moving
 * it would bring it back as a split of its own (the split counts it no
 * more), so it was gathered a second time and its survivor went on twice. */
TEST(a_dead_element_cannot_be_retried_or_moved) {
  tenv t;
  tenv_open(&t, "dead_retry");
  tenv_graph(&t, "{\"nodes\": [{\"name\": \"s\", \"type\": \"split_list\", \"params\": {\"attr\": \"v\"}},"
                 "{\"name\": \"g\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
                 "\"all\": {\"rule\": \"extend\", \"from\": \"v\"}}}},"
                 "{\"name\": \"end\", \"type\": \"null\"}],"
                 "\"wires\": [[\"s\", \"g\"], [\"g\", \"end\"]]}");
  tenv_submit(&t, "s", "{\"v\": [1, 2, 3]}");
  tenv_run(&t);
  tlist dead = tenv_tasks(&t, "g", BR_TASK_DEAD);
  CHECK_EQ_INT(dead.n, 2);
  br_error err;
  CHECK_EQ_INT(br_engine_task_retry(t.eng, dead.v[0].id, &err), BR_ESTATE);
  CHECK_CONTAINSF(err.msg, "task %lld is dead", (long long)dead.v[0].id);
  CHECK_EQ_INT(br_engine_task_move(t.eng, dead.v[1].id, "end", &err), BR_ESTATE);
  CHECK_CONTAINSF(err.msg, "task %lld is dead", (long long)dead.v[1].id);
  tlist_free(&dead);
  tenv_run(&t);
  br_engine_stats st;
  br_engine_get_stats(t.eng, &st);
  CHECK_EQ_INT(st.tasks_in_memory, 0); /* loaded to be looked at, and let go */
  CHECK_EQ_INT(tenv_count(&t, "end", BR_TASK_DONE), 1);
  CHECK_EQ_INT(tenv_count(&t, "g", BR_TASK_DEAD), 2);
  char *all = tenv_attr(&t, "end", BR_TASK_DONE, "all");
  CHECK_EQ_STR(all, "[1,2,3]");
  free(all);
  tenv_close(&t);
}

/* ---- splits whose elements all die ---- */

/* When every element of a split dies, the element of the split around it
 * that it was made from is gone too: the outer gather goes on without it.
 * Before, the outer split still counted it and its gather waited for ever
 * (and braid run ended "finished", the survivor blocked). Here the inner
 * splits of a == 1 are killed whole, two and three levels down. */
TEST(an_inner_split_killed_whole_does_not_hold_the_outer_gather) {
  for (int depth = 2; depth <= 3; depth++) {
    tenv t;
    tenv_open(&t, "killed_whole");
    char g[4096];
    snprintf(g, sizeof g,
             "{\"nodes\": ["
             "{\"name\": \"w1\", \"type\": \"wedge\", \"params\": {\"index_attr\": \"\","
             " \"wedges\": [{\"attr\": \"a\", \"count\": 3}]}},"
             "{\"name\": \"w2\", \"type\": \"wedge\", \"params\": {\"index_attr\": \"\","
             " \"wedges\": [{\"attr\": \"b\", \"count\": 2}]}},"
             "{\"name\": \"w3\", \"type\": \"wedge\", \"params\": {\"index_attr\": \"\","
             " \"wedges\": [{\"attr\": \"c\", \"values\": [\"x\", \"y\"]}]}},"
             "{\"name\": \"sw\", \"type\": \"switch\","
             " \"params\": {\"attr\": \"a\", \"cases\": [1]}},"
             "{\"name\": \"k\", \"type\": \"kill\"},"
             "{\"name\": \"g3\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
             " \"c\": \"append\"}}},"
             "{\"name\": \"g2\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
             " \"b\": \"append\", \"c\": \"append\"}}},"
             "{\"name\": \"g1\", \"type\": \"gather_split\", \"params\": {\"promote\": {"
             " \"a\": \"append\", \"b\": \"append\", \"c\": \"append\"}}},"
             "{\"name\": \"end\", \"type\": \"null\"}],"
             "\"wires\": [[\"w1\", \"w2\"], %s [\"sw.1\", \"k\"], [\"sw.default\", \"%s\"],"
             " %s [\"g2\", \"g1\"], [\"g1\", \"end\"]]}",
             depth == 3 ? "[\"w2\", \"w3\"], [\"w3\", \"sw\"]," : "[\"w2\", \"sw\"],",
             depth == 3 ? "g3" : "g2", depth == 3 ? "[\"g3\", \"g2\"]," : "");
    tenv_graph(&t, g);
    tenv_submit(&t, "w1", "{\"c\": \"-\"}");
    tenv_run(&t);
    CHECK_EQ_INT(tenv_count(&t, NULL, BR_TASK_BLOCKED), 0);
    tlist l = tenv_tasks(&t, "end", BR_TASK_DONE);
    CHECK_EQ_INT(l.n, 1);
    char *s = json_dumps(l.v[0].attrs, JSON_COMPACT | JSON_SORT_KEYS);
    const char *xy = "[\"x\",\"y\"]";
    char want[512];
    snprintf(want, sizeof want, "{\"a\":[0,2],\"b\":[[0,1],[0,1]],\"c\":[[%s,%s],[%s,%s]]}",
             depth == 3 ? xy : "\"-\"", depth == 3 ? xy : "\"-\"", depth == 3 ? xy : "\"-\"",
             depth == 3 ? xy : "\"-\"");
    CHECK_EQ_STR(s, want);
    free(s);
    tlist_free(&l);
    CHECK_EQ_INT(tenv_count(&t, "k", BR_TASK_DEAD), depth == 3 ? 4 : 2);
    br_engine_stats st;
    br_engine_get_stats(t.eng, &st);
    CHECK_EQ_INT(st.tasks_in_memory, 0);
    CHECK_EQ_INT(st.groups, 0);
    tenv_close(&t);
  }
}
