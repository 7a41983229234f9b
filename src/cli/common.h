/* Helpers shared by the subcommands. */
#ifndef BR_CLI_COMMON_H
#define BR_CLI_COMMON_H

#include <braid/store.h>
#include <jansson.h>

#include "cli.h"

/* "12" -> 12, "[1,2]" -> list, "abc" -> "abc" (JSON when it parses, else a string). */
json_t *br_cli_parse_value(const char *v);
/* Parses NAME=VALUE into obj; prints an error and returns -1 when malformed. */
int br_cli_set_kv(json_t *obj, const char *kv);
/* Creates the parent folders of path. */
int br_cli_mkdirs_for(const char *path);
/* The store to read: --store, $BRAID_STORE, or the only *.braid.db here.
 * Prints an error and returns NULL when none; caller frees. */
char *br_cli_find_store(const char *given);
/* Opens a store, printing any error. */
br_store *br_cli_open_store(const char *path, int flags);
/* Growable NULL-terminated argv (also used by node types). */
void br_argv_push(char ***argv, size_t *n, char *arg);
void br_argv_free(char **argv);
json_t *br_cli_task_json(const br_task_info *t);
/* A file beside a store: "x/farm.braid.db?sync=normal" + ".tokens" ->
 * "x/farm.braid.tokens" (caller frees). */
char *br_cli_store_side(const char *store, const char *suffix);
/* The farm server's default store. */
#define BR_CLI_SERVER_STORE "farm.braid.db"
void br_cli_print_json(json_t *j);

#endif
