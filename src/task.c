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
