/* The registry of compiled-in node types: one line per type. */
#include <braid/node.h>

#include <string.h>

extern const br_node_type br_node_null, br_node_set_attr, br_node_kill, br_node_switch,
    br_node_wedge, br_node_split_range, br_node_split_list, br_node_spawn,
    br_node_wait_children, br_node_gather_split, br_node_script, br_node_command, br_node_ffmpeg,
    br_node_push, br_node_pull;

static const br_node_type *const types[] = {
    &br_node_null,        &br_node_set_attr,   &br_node_kill,  &br_node_switch,
    &br_node_wedge,       &br_node_split_range, &br_node_split_list, &br_node_spawn,
    &br_node_wait_children, &br_node_gather_split, &br_node_script, &br_node_command, &br_node_ffmpeg,
    &br_node_push, &br_node_pull,
    NULL,
};

const br_node_type *br_node_type_find(const char *name) {
  for (const br_node_type *const *t = types; *t; t++)
    if (strcmp((*t)->name, name) == 0) return *t;
  return NULL;
}

const br_node_type *const *br_node_types(void) { return types; }
