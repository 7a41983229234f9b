/* Attribute promotion: how the waiters (wait_children, gather_split) merge
 * the attributes of many tasks into one. A node's "promote" parameter maps a
 * target attribute to a rule:
 *
 *   "promote": { "frames": "append",
 *                "images": {"rule": "append", "from": "image", "sort": "frame"},
 *                "total":  {"rule": "sum", "from": "size"} }
 *
 * Rules: append (a list of the values), extend (lists concatenated), first,
 * last, sum, min, max, count (how many tasks have the attribute). Values are
 * taken in the waiter's natural order (children by creation, split elements
 * by index) unless "sort" names an attribute to order by (numbers, then
 * strings, then other values, then tasks without it; ties keep the natural
 * order). Tasks that lack the attribute contribute nothing. */
#ifndef BR_PROMOTE_H
#define BR_PROMOTE_H

#include <braid/node.h>

typedef struct br_promote br_promote;

/* Parses and checks a "promote" parameter (NULL or {} is fine). On error the
 * message names the attribute; *bad_key points to it (borrowed). */
int br_promote_parse(const json_t *spec, br_promote **out, const char **bad_key, br_error *err);
void br_promote_free(br_promote *p);

/* Computes every rule over tasks[0..n) (in natural order) and sets the
 * results on target (an object). Returns 0, or -1 with a message in errbuf. */
int br_promote_apply(const br_promote *p, br_task *const *tasks, size_t n, json_t *target,
                     char *errbuf, size_t errsize);

/* init()/fini() for node types whose only state is their "promote" rules. */
int br_promote_node_init(br_node *node, void **state, br_error *err);
void br_promote_node_fini(void *state);

/* The "promote" parameter's spec, shared by the waiter node types. */
#define BR_PROMOTE_PARAM                                                               \
  {"promote", BR_PARAM_OBJECT, "{}", false,                                            \
   "attributes to merge: {target: rule} or {target: {rule, from, sort}}; rules: "     \
   "append, extend, first, last, sum, min, max, count"}

#endif
