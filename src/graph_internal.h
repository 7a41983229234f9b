/* The graph's internal layout, shared by graph.c and the engine. */
#ifndef BR_GRAPH_INTERNAL_H
#define BR_GRAPH_INTERNAL_H

#include <braid/graph.h>
#include <braid/node.h>

#include <uthash.h>

#include "jsonpos.h"

typedef struct br_wire {
  int node; /* destination node index */
  int port; /* destination input port */
} br_wire;

typedef struct br_outport {
  br_wire *wires;
  int n;
} br_outport;

struct br_node {
  char *name;
  const br_node_type *type;
  json_t *params;     /* validated, defaults filled in */
  json_t *src_params; /* as written in the file (for saving) */
  size_t index;
  char **inputs;
  int n_inputs;
  char **outputs;
  int n_outputs;
  br_outport *outs; /* per output port */
  void *state;      /* the type's compiled state (init/fini) */
  struct br_script_env *script; /* the node's Lua state, when it needs one */
  br_graph *graph;
  int line, column; /* where the node is defined */
  UT_hash_handle hh; /* in br_graph.by_name */
};

struct br_graph {
  char *name;
  char *origin; /* file path or "<api>" */
  br_node **nodes;
  size_t n_nodes;
  br_node *by_name; /* the nodes by name (uthash): wires are resolved in O(1) each */
  json_t *wires_src; /* [{"from":..., "to":...}] as validated */
  json_t *start;     /* {"node":..., "attrs":...} or NULL */
  json_t *warnings;  /* strings "FILE:LINE:COLUMN: ...", or NULL when none */
  const br_jpos *jpos; /* only during loading */
};

#endif
