/* The command line's side of the server API (see remote.h). */
#include "remote.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The config file ($BRAID_CONFIG, or the default path): NULL when there is
 * none. A file that cannot be used is an error (printed, *bad set), not
 * ignored: a typo would otherwise send the command to another server, or
 * none; so is a key it does not know ("tokn" did nothing). Only the default
 * path may be missing. A relative "token_file" or "ca" names a file beside
 * it (it is returned so), wherever the command runs. */
static json_t *config(bool *bad) {
  const char *path = getenv("BRAID_CONFIG");
  char buf[4096];
  bool named = path && *path;
  if (!named) {
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) snprintf(buf, sizeof buf, "%s/braid/config.json", xdg);
    else if (home && *home) snprintf(buf, sizeof buf, "%s/.config/braid/config.json", home);
    else return NULL;
    path = buf;
  }
  FILE *f = fopen(path, "r");
  if (!f) {
    if (errno == ENOENT && !named) return NULL;
    br_cli_errorf("config file %s%s: %s", path, named ? " (BRAID_CONFIG)" : "", strerror(errno));
    *bad = true;
    return NULL;
  }
  json_error_t jerr;
  json_t *j = json_loadf(f, 0, &jerr);
  fclose(f);
  if (!j) {
    br_cli_errorf("config file %s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    *bad = true;
    return NULL;
  }
  static const char *const keys[] = {"server", "token", "token_file", "ca"};
  const size_t nkeys = sizeof keys / sizeof *keys;
  const char *why = json_is_object(j) ? NULL : "not a JSON object";
  char msg[256];
  const char *key;
  json_t *v;
  if (!why) {
    json_object_foreach(j, key, v) {
      size_t i = 0;
      while (i < nkeys && strcmp(key, keys[i]) != 0) i++;
      if (i == nkeys)
        snprintf(msg, sizeof msg, "unknown key \"%.100s\" (known: server, token, token_file, ca)",
                 key);
      else if (!json_is_string(v))
        snprintf(msg, sizeof msg, "\"%s\" must be a string", key);
      else
        continue;
      why = msg;
      break;
    }
  }
  if (why) {
    br_cli_errorf("config file %s: %s", path, why);
    *bad = true;
    json_decref(j);
    return NULL;
  }
  static const char *const files[] = {"token_file", "ca"};
  const char *slash = strrchr(path, '/');
  for (size_t i = 0; slash && i < sizeof files / sizeof *files; i++) {
    const char *rel = json_string_value(json_object_get(j, files[i]));
    char *full = NULL;
    if (rel && *rel && *rel != '/' &&
        asprintf(&full, "%.*s/%s", (int)(slash - path), path, rel) >= 0) {
      json_object_set_new(j, files[i], json_string(full));
      free(full);
    }
  }
  return j;
}

static char *read_token_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    br_cli_errorf("token file %s: %s", path, strerror(errno));
    return NULL;
  }
  char line[1024] = "";
  if (!fgets(line, sizeof line, f)) line[0] = 0;
  fclose(f);
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = 0;
  return strdup(line);
}

/* Why url is not a server's URL (http[s]://HOST[:PORT][/PATH]), or NULL. A
 * malformed one was taken, and an agent tried it for ever. */
static const char *url_problem(const char *url) {
  const char *p = strncmp(url, "http://", 7) == 0    ? url + 7
                  : strncmp(url, "https://", 8) == 0 ? url + 8
                                                     : NULL;
  if (!p) return "it does not start with http:// or https://";
  const char *end = p + strcspn(p, "/?#"), *port = NULL;
  if (*p == '[') { /* an IPv6 address */
    const char *close = memchr(p, ']', (size_t)(end - p));
    if (!close || close == p + 1) return "no host";
    if (close + 1 < end && close[1] != ':') return "text after the host's ]";
    if (close + 1 < end) port = close + 2;
  } else {
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if ((colon ? colon : end) == p) return "no host";
    if (colon) port = colon + 1;
  }
  if (port) {
    long n = 0;
    const char *d = port;
    while (d < end && *d >= '0' && *d <= '9' && n <= 65535) n = n * 10 + (*d++ - '0');
    if (d == port || d != end || n < 1 || n > 65535)
      return "the port is not a number from 1 to 65535";
  }
  return NULL;
}

bool br_remote_named(const char *server_flag) {
  const char *env = getenv("BRAID_SERVER");
  return (server_flag && *server_flag) || (env && *env);
}

int br_remote_open(br_remote *r, const char *server_flag, const char *token_flag) {
  memset(r, 0, sizeof *r);
  json_t *cfg = NULL;
  bool bad = false, read = false;
  const char *s = server_flag && *server_flag ? server_flag : getenv("BRAID_SERVER");
  const char *from = server_flag && *server_flag ? "--server" : "BRAID_SERVER";
  const char *t = token_flag && *token_flag ? token_flag : getenv("BRAID_TOKEN");
  const char *tf = getenv("BRAID_TOKEN_FILE");
  if (!s || !*s || ((!t || !*t) && (!tf || !*tf))) {
    cfg = config(&bad);
    read = true;
    if (bad) return -1;
    if (!s || !*s) {
      s = json_string_value(json_object_get(cfg, "server"));
      from = "the config file's \"server\"";
    }
    if ((!t || !*t) && (!tf || !*tf)) {
      t = json_string_value(json_object_get(cfg, "token"));
      if (!t) tf = json_string_value(json_object_get(cfg, "token_file"));
    }
  }
  if (!s || !*s) {
    br_cli_errorf("no server: give --server URL or set BRAID_SERVER");
    json_decref(cfg);
    return -1;
  }
  const char *why = url_problem(s);
  if (why) {
    br_cli_errorf("%s: '%s' is not a server URL: %s (http://HOST:PORT, https://HOST:PORT)", from,
                  s, why);
    json_decref(cfg);
    return -1;
  }
  r->server = strdup(s);
  if (t && *t) r->token = strdup(t);
  else if (tf && *tf && !(r->token = read_token_file(tf))) {
    json_decref(cfg);
    br_remote_close(r);
    return -1;
  }
  const char *ca = getenv("BRAID_CA");
  if (!ca || !*ca) {
    if (!read) cfg = config(&bad);
    if (bad) {
      br_remote_close(r);
      return -1;
    }
    ca = json_string_value(json_object_get(cfg, "ca"));
  }
  br_error err;
  if (br_http_client_open(r->server, r->token, &r->c, &err)) {
    br_cli_errorf("%s", err.msg);
    json_decref(cfg);
    br_remote_close(r);
    return -1;
  }
  if (ca && *ca) br_http_client_set_ca(r->c, ca); /* a server with a private CA */
  json_decref(cfg);
  return 0;
}

void br_remote_close(br_remote *r) {
  br_http_client_close(r->c);
  free(r->server);
  free(r->token);
  memset(r, 0, sizeof *r);
}

int br_remote_call(br_remote *r, const char *method, const char *path, const json_t *body,
                   json_t **out) {
  json_t *ans = NULL;
  br_error err;
  int st = br_http_client_call(r->c, method, path, body, &ans, &err);
  if (st < 0) {
    br_cli_errorf("%s", err.msg);
    return BR_EXIT_FAILED;
  }
  if (st >= 200 && st < 300) {
    if (out) *out = ans;
    else json_decref(ans);
    return 0;
  }
  br_cli_errorf("%s (HTTP %d)", br_http_error_message(ans, st), st);
  json_decref(ans);
  return st == 400 || st == 404 || st == 409 ? BR_EXIT_USAGE : BR_EXIT_FAILED;
}

char *br_remote_escape(const char *s) {
  static const char xd[] = "0123456789ABCDEF";
  size_t n = strlen(s);
  char *o = malloc(3 * n + 1), *p = o;
  if (!o) return NULL;
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
        *c == '-' || *c == '_' || *c == '.' || *c == '~') {
      *p++ = (char)*c;
    } else {
      *p++ = '%';
      *p++ = xd[*c >> 4];
      *p++ = xd[*c & 15];
    }
  }
  *p = 0;
  return o;
}
