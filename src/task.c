/* Task states and task snapshots. */
#include <braid/task.h>

#include <stdlib.h>
#include <string.h>

static const char *const state_names[BR_TASK_NSTATES] = {
    "waiting", "blocked", "queued", "running", "post", "done", "error", "cancelled", "dead",
};

const char *br_task_state_name(br_task_state s) {
  return (unsigned)s < BR_TASK_NSTATES ? state_names[s] : NULL;
}

int br_task_state_parse(const char *name) {
  for (int i = 0; i < BR_TASK_NSTATES; i++)
    if (strcmp(state_names[i], name) == 0) return i;
  return -1;
}

bool br_task_state_is_final(br_task_state s) { return s == BR_TASK_DONE || s == BR_TASK_DEAD; }

void br_task_info_free(br_task_info *t) {
  if (!t) return;
  free(t->name);
  free(t->node);
  free(t->error);
  json_decref(t->attrs);
  memset(t, 0, sizeof *t);
}

json_t *br_task_info_json(const br_task_info *t, bool with_attrs) {
  json_t *j = json_pack("{sIsIsssssisssb}", "id", (json_int_t)t->id, "graph_id",
                        (json_int_t)t->graph_id, "name", t->name ? t->name : "", "node",
                        t->node ? t->node : "", "port", t->port, "state",
                        br_task_state_name(t->state), "paused", t->paused);
  if (!j) return NULL;
  if (with_attrs) json_object_set(j, "attrs", t->attrs ? t->attrs : json_object());
  if (t->parent) json_object_set_new(j, "parent", json_integer(t->parent));
  if (t->split_id)
    json_object_set_new(j, "split", json_pack("{sIsisi}", "id", (json_int_t)t->split_id, "element",
                                              t->split_elem, "count", t->split_count));
  json_object_set_new(j, "priority", json_integer(t->priority));
  json_object_set_new(j, "group", json_integer(t->group_id));
  json_object_set_new(j, "live_children", json_integer(t->live_children));
  json_object_set_new(j, "attempts", json_integer(t->attempts));
  json_object_set_new(j, "created_ms", json_integer(t->created_ms));
  json_object_set_new(j, "updated_ms", json_integer(t->updated_ms));
  if (t->error) json_object_set_new(j, "error", json_string(t->error));
  return j;
}
