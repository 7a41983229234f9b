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
