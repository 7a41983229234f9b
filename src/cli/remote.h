/* The command line as a client of a braid server: where the server is and
 * which token to use (flags, then the environment, then a config file), and
 * calls that print their own errors. */
#ifndef BR_CLI_REMOTE_H
#define BR_CLI_REMOTE_H

#include <braid/http.h>
#include <jansson.h>
#include <stdbool.h>

typedef struct br_remote {
  char *server;
  char *token;
  br_http_client *c;
} br_remote;

/* The text every remote command's --help shows about these. */
#define BR_REMOTE_HELP                                                                    \
  "  --server URL   the braid server (default: $BRAID_SERVER, or \"server\" in the\n"     \
  "                 config file $BRAID_CONFIG or ~/.config/braid/config.json)\n"          \
  "  --token TOKEN  the token (default: $BRAID_TOKEN, $BRAID_TOKEN_FILE, or \"token\"\n"   \
  "                 / \"token_file\" in the config file); an HTTPS server with a private\n"  \
  "                 CA: $BRAID_CA or \"ca\" in the config file names its certificate\n"      \
  "  --json         print the answer as JSON\n"

/* True when a server was named by a flag or $BRAID_SERVER (not the config
 * file): commands that also read local stores (show, log) go remote then. */
bool br_remote_named(const char *server_flag);
/* Resolves the server and token and opens a client. Prints an error and
 * returns -1 when no server is known. */
int br_remote_open(br_remote *r, const char *server_flag, const char *token_flag);
void br_remote_close(br_remote *r);
/* A JSON call. Returns 0 for a 2xx answer (*out, may be NULL, gets the
 * body); otherwise prints "braid: METHOD PATH: message" and returns the
 * exit status to use (1; 2 for 4xx caused by the arguments). */
int br_remote_call(br_remote *r, const char *method, const char *path, const json_t *body,
                   json_t **out);
/* Percent-encodes a path segment or query value (caller frees). */
char *br_remote_escape(const char *s);

#endif
