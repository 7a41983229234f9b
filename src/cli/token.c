/* braid token create / list / revoke: the farm server's tokens. Locally on
 * the token file beside the server's store (as the server's user), or over
 * the API with an admin token (--server). Only hashes are ever stored; a new
 * token is printed once. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "remote.h"

static void token_usage(FILE *out) {
  fprintf(out,
          "usage: braid token create --role agent|user|admin [--name NAME] [WHERE] [--json]\n"
          "       braid token list [WHERE] [--json]\n"
          "       braid token revoke ID [WHERE]\n\n"
          "Makes, lists and revokes the tokens of a braid server. A token's role says\n"
          "what it may do: agent (take work and report it: farm machines), user\n"
          "(graphs, submissions, tasks, workers), admin (everything, tokens too).\n"
          "The new token is printed once; the server keeps only its SHA-256.\n\n"
          "WHERE is either the server's token file, changed in place (the server sees\n"
          "the change at once):\n"
          "  --store PATH       the server's store (default " BR_CLI_SERVER_STORE "); the token\n"
          "                     file is beside it (farm.braid.tokens)\n"
          "  --token-file FILE  the token file itself\n"
          "or the server's API, with an admin token:\n" BR_REMOTE_HELP);
}

int br_cli_token(int argc, char **argv) {
  static const struct option opts[] = {
      {"role", required_argument, NULL, 'r'},   {"name", required_argument, NULL, 'n'},
      {"store", required_argument, NULL, 'S'},  {"token-file", required_argument, NULL, 'f'},
      {"server", required_argument, NULL, 's'}, {"token", required_argument, NULL, 't'},
      {"json", no_argument, NULL, 'j'},         {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *role_s = NULL, *name = "", *store = NULL, *file = NULL, *server = NULL,
             *token = NULL;
  int json = 0, c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'r': role_s = optarg; break;
    case 'n': name = optarg; break;
    case 'S': store = optarg; break;
    case 'f': file = optarg; break;
    case 's': server = optarg; break;
    case 't': token = optarg; break;
    case 'j': json = 1; break;
    case 'h': token_usage(stdout); return BR_EXIT_OK;
    default: token_usage(stderr); return BR_EXIT_USAGE;
    }
  }
  if (optind >= argc) {
    token_usage(stderr);
    return BR_EXIT_USAGE;
  }
  const char *verb = argv[optind];
  const char *id = optind + 1 < argc ? argv[optind + 1] : NULL;
  int create = strcmp(verb, "create") == 0, list = strcmp(verb, "list") == 0,
      revoke = strcmp(verb, "revoke") == 0;
  if ((!create && !list && !revoke) || (revoke && !id) || optind + 1 + (revoke ? 1 : 0) != argc) {
    token_usage(stderr);
    return BR_EXIT_USAGE;
  }
  br_role role = br_role_parse(role_s);
  if (create && role == BR_ROLE_NONE) {
    br_cli_errorf("--role must be agent, user or admin");
    return BR_EXIT_USAGE;
  }
  int rc = BR_EXIT_OK;
  json_t *out = NULL;
  if (!store && !file && br_remote_named(server)) {
    br_remote r;
    if (br_remote_open(&r, server, token)) return BR_EXIT_USAGE;
    if (create) {
      json_t *body = json_pack("{ssss}", "role", br_role_name(role), "name", name);
      rc = br_remote_call(&r, "POST", "/api/v1/tokens", body, &out);
      json_decref(body);
    } else if (list) {
      rc = br_remote_call(&r, "GET", "/api/v1/tokens", NULL, &out);
    } else {
      char *e = br_remote_escape(id), path[512];
      snprintf(path, sizeof path, "/api/v1/tokens/%s", e);
      free(e);
      rc = br_remote_call(&r, "DELETE", path, NULL, &out);
    }
    br_remote_close(&r);
  } else {
    const char *side = store && !strstr(store, "://") ? store : BR_CLI_SERVER_STORE; /* a URI: here */
    char *path = file ? strdup(file) : br_cli_store_side(side, ".tokens");
    br_auth *a;
    br_error err = {0};
    if (br_auth_open_warn(path, br_cli_warn, NULL, &a, &err)) {
      br_cli_errorf("%s", err.msg);
      free(path);
      return BR_EXIT_FAILED;
    }
    if (create) {
      char *tok, tid[17];
      if (br_auth_create(a, role, name, &tok, tid, &err)) {
        br_cli_errorf("%s", err.msg);
        rc = BR_EXIT_FAILED;
      } else {
        out = json_pack("{ssssssss}", "id", tid, "role", br_role_name(role), "name", name, "token", tok);
        free(tok);
      }
    } else if (list) {
      out = json_pack("{so}", "tokens", br_auth_list(a));
    } else if (br_auth_revoke(a, id, &err)) {
      br_cli_errorf("%s", err.msg);
      rc = err.code == BR_ENOTFOUND ? BR_EXIT_USAGE : BR_EXIT_FAILED;
    } else {
      out = json_pack("{ss}", "revoked", id);
    }
    br_auth_close(a);
    free(path);
  }
  if (rc == BR_EXIT_OK && out) {
    if (json) {
      br_cli_print_json(out);
    } else if (create) {
      printf("%s\n", json_string_value(json_object_get(out, "token")));
      fprintf(stderr, "braid: %s token %s made; it is shown only now\n", br_role_name(role),
              json_string_value(json_object_get(out, "id")));
    } else if (list) {
      size_t i;
      json_t *t;
      printf("%-17s %-6s %s\n", "id", "role", "name");
      json_array_foreach(json_object_get(out, "tokens"), i, t)
        printf("%-17s %-6s %s\n", json_string_value(json_object_get(t, "id")),
               json_string_value(json_object_get(t, "role")),
               json_string_value(json_object_get(t, "name")));
    } else {
      printf("revoked %s\n", id);
    }
  }
  json_decref(out);
  return rc;
}
