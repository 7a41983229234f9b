/* The web UI's files (web/), built into braid by cmake/embed-web.cmake and
 * served by `braid server` at / and /ui/: no install step, no other
 * process, and the UI always matches the server's API. */
#ifndef BR_HTTP_WEB_H
#define BR_HTTP_WEB_H

#include <stddef.h>

typedef struct br_web_asset {
  const char *path; /* "/", "/ui/app.js" */
  const char *type; /* its Content-Type */
  const unsigned char *data;
  size_t len;
} br_web_asset;

extern const br_web_asset br_web_assets[]; /* ends with a NULL path */

#endif
