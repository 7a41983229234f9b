/* Positions of values in a JSON text. jansson reports positions only for
 * syntax errors; graph validation also needs the line and column of a value
 * that parsed fine but means something wrong (an unknown node type, a bad
 * parameter). br_jpos_scan() walks an already valid text once and records the
 * position of every value and object key under its JSON pointer (RFC 6901),
 * e.g. "/nodes/3/params/chunk". */
#ifndef BR_JSONPOS_H
#define BR_JSONPOS_H

#include <jansson.h>
#include <stddef.h>

typedef struct br_jpos br_jpos;

/* jansson's message for a text it refused, in braid's words where
 * jansson's name its own flags ("\u0000 is not allowed without
 * JSON_ALLOW_NUL"). Returns buf. */
const char *br__json_error_text(const json_error_t *e, char *buf, size_t size);

/* Scans `text` (must be valid JSON). Returns NULL only when out of memory. */
br_jpos *br_jpos_scan(const char *text);
void br_jpos_free(br_jpos *p);
/* Position of the value at `pointer` ("" is the root). Returns 0 when found;
 * otherwise sets line and column to 0 and returns -1. */
int br_jpos_value(const br_jpos *p, const char *pointer, int *line, int *column);
/* Position of the key naming the member at `pointer` (objects only). */
int br_jpos_key(const br_jpos *p, const char *pointer, int *line, int *column);

#endif
