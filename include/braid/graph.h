/* Graphs: named nodes of a type, with parameters, and wires from an output
 * port to an input port. Cycles are allowed. The canonical file format is
 * JSON:
 *
 *   { "name": "demo",
 *     "nodes": [ {"name": "start", "type": "null"},
 *                {"name": "w", "type": "wedge", "params": {...}} ],
 *     "wires": [ {"from": "start.out", "to": "w.in"}, ["w", "next.in"] ],
 *     "start": {"node": "start", "attrs": {"frame_start": 1}} }
 *
 * A port reference is "node.port" or "node" (the node's first port). Loading
 * validates everything and reports the file, line and column of the first
 * problem. */
#ifndef BRAID_GRAPH_H
#define BRAID_GRAPH_H

#include <braid/error.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct br_graph br_graph;
typedef struct br_node br_node;

/* Loads and validates a graph file. On error returns NULL and fills err with
 * the file, line and column. Free with br_graph_free. A file's "name" must
 * be fit to name files (letters, digits, '.', '_', '-'; not starting with
 * '.'): `braid run` names its store after it. */
br_graph *br_graph_load_file(const char *path, br_error *err);
/* The same from a string; `origin` names it in errors (a path or "<api>").
 * Any string is a name here (graphs from the store and the farm's API). */
br_graph *br_graph_load_string(const char *text, const char *origin, br_error *err);
/* Writes the graph as canonical JSON (indented, stable order). */
int br_graph_save_file(const br_graph *g, const char *path, br_error *err);
/* The canonical JSON text; caller frees. */
char *br_graph_dumps(const br_graph *g);
void br_graph_free(br_graph *g);

/* What loaded but looks like a mistake (a command's "{...}" that is not an
 * attribute name, say): one "FILE:LINE:COLUMN: warning: ..." line each, told to
 * fn in file order. */
void br_graph_warnings(const br_graph *g, br_warn_fn *fn, void *ud);

const char *br_graph_name(const br_graph *g);
/* Whether a new graph may have this name: letters, digits, '.', '_' and
 * '-', at most 100, not starting with '.' (a graph file's name names its
 * store file; a server's graph is found by it in URLs). Graphs already in
 * a store are loaded whatever their names. */
bool br_graph_name_ok(const char *name);
/* That rule, as the errors that refuse a name say it. */
#define BR_GRAPH_NAME_RULE \
  "use letters, digits, '.', '_' and '-' (at most 100, not starting with '.')"
size_t br_graph_node_count(const br_graph *g);
br_node *br_graph_node(const br_graph *g, size_t index);
br_node *br_graph_find_node(const br_graph *g, const char *name);

/* Where `braid run` starts: the "start" section's node, else the first node
 * no wire leads into. And the start attributes (borrowed; may be NULL). */
const char *br_graph_start_node(const br_graph *g);
json_t *br_graph_start_attrs(const br_graph *g);

const char *br_node_name(const br_node *n);
const char *br_node_type_name(const br_node *n);
/* The node's validated parameters, defaults filled in (borrowed). */
json_t *br_node_params(const br_node *n);
size_t br_node_index(const br_node *n);
/* Input or output port index by name, or -1. */
int br_node_input_index(const br_node *n, const char *port);
int br_node_output_index(const br_node *n, const char *port);

#ifdef __cplusplus
}
#endif
#endif
