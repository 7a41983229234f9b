/* Tokens and roles (see http.h). The token file holds one JSON object per
 * line with the SHA-256 of each token, never the token itself. The table is
 * kept in memory and read again when the file changes (its size, mtime or
 * inode), so `braid token create` works beside a running server. A line that
 * cannot be used is skipped and told, with where it is, each time the file
 * is read (tokfile.c). A lookup hashes the presented token and compares it with
 * every hash in constant time; the table is small (people and machines, not
 * requests). */
#include <braid/http.h>

#include "../fs.h"
#include "../tokfile.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct entry {
  char id[17];
  br_role role;
  char *name;
  uint8_t hash[32];
  int64_t created_ms;
} entry;

struct br_auth {
  char *path;
  pthread_mutex_t mu;
  entry *v;
  size_t n;
  struct stat seen; /* the file as last read */
  br_warn_fn *warn; /* told of the lines skipped at each read (may be NULL) */
  void *warn_ud;
};

const char *br_role_name(br_role r) {
  switch (r) {
  case BR_ROLE_AGENT: return "agent";
  case BR_ROLE_USER: return "user";
  case BR_ROLE_ADMIN: return "admin";
  default: return "none";
  }
}

br_role br_role_parse(const char *s) {
  if (!s) return BR_ROLE_NONE;
  if (strcmp(s, "agent") == 0) return BR_ROLE_AGENT;
  if (strcmp(s, "user") == 0) return BR_ROLE_USER;
  if (strcmp(s, "admin") == 0) return BR_ROLE_ADMIN;
  return BR_ROLE_NONE;
}

static void sha256(const char *s, size_t n, uint8_t out[32]) {
  unsigned len = 32;
  EVP_Digest(s, n, out, &len, EVP_sha256(), NULL);
}

static void hex(const uint8_t *b, size_t n, char *out) {
  static const char xd[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = xd[b[i] >> 4];
    out[2 * i + 1] = xd[b[i] & 15];
  }
  out[2 * n] = 0;
}

static int unhex(const char *s, uint8_t *out, size_t n) {
  if (strlen(s) != 2 * n) return -1;
  for (size_t i = 0; i < n; i++) {
    int v = 0;
    for (int k = 0; k < 2; k++) {
      char c = s[2 * i + (size_t)k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    out[i] = (uint8_t)v;
  }
  return 0;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void clear(br_auth *a) {
  for (size_t i = 0; i < a->n; i++) free(a->v[i].name);
  free(a->v);
  a->v = NULL;
  a->n = 0;
}

static bool same_file(const struct stat *x, const struct stat *y) {
  return x->st_ino == y->st_ino && x->st_size == y->st_size &&
         x->st_mtim.tv_sec == y->st_mtim.tv_sec && x->st_mtim.tv_nsec == y->st_mtim.tv_nsec;
}

/* A line's entry (br_tokfile_read's callback): a JSON object with "id",
 * "sha256" and "role"; any other line is told and skipped. */
typedef struct table {
  entry *v;
  size_t n;
} table;

static int one_line(void *ctx, const br_tokfile_line *l) {
  table *a = ctx;
  json_error_t je;
  json_t *j = json_loadb(l->text, l->len, 0, &je);
  const char *id = json_string_value(json_object_get(j, "id"));
  const char *h = json_string_value(json_object_get(j, "sha256"));
  const char *role = json_string_value(json_object_get(j, "role"));
  char why[128];
  int rc = BR_OK;
  if (!j) {
    br_tokfile_skip(l, je.column, "not JSON: %s", je.text);
  } else if (!json_is_object(j)) {
    br_tokfile_skip(l, 0, "not a JSON object");
  } else if (!id) {
    br_tokfile_skip(l, 0, "no \"id\" string");
  } else if (strlen(id) >= sizeof ((entry *)0)->id) { /* cut short, two could meet */
    br_tokfile_skip(l, 0, "an \"id\" longer than %zu characters", sizeof ((entry *)0)->id - 1);
  } else if (!h) {
    br_tokfile_skip(l, 0, "no \"sha256\" string");
  } else if (br_tokfile_bad_hex64(h, why, sizeof why)) {
    br_tokfile_skip(l, 0, "%s", why);
  } else if (!role) {
    br_tokfile_skip(l, 0, "no \"role\" string (roles: agent, user, admin)");
  } else if (br_role_parse(role) == BR_ROLE_NONE) {
    br_tokfile_skip(l, 0, "unknown role \"%.40s\" (roles: agent, user, admin)", role);
  } else {
    entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.id, sizeof e.id, "%s", id);
    e.role = br_role_parse(role);
    unhex(h, e.hash, 32);
    const char *name = json_string_value(json_object_get(j, "name"));
    e.name = strdup(name ? name : "");
    e.created_ms = json_integer_value(json_object_get(j, "created_ms"));
    entry *grown = e.name ? realloc(a->v, (a->n + 1) * sizeof *a->v) : NULL;
    if (grown) {
      a->v = grown;
      a->v[a->n++] = e;
    } else {
      free(e.name);
      rc = BR_ENOMEM;
    }
  }
  json_decref(j);
  return rc;
}

/* Reads the file (under the lock). A line that cannot be used is told
 * through a->warn and skipped: one bad line must not lock everyone out.
 * When the file cannot be read, the table is kept, and read again at the
 * next look. */
static int load(br_auth *a, br_error *err) {
  struct stat st;
  table t = {NULL, 0};
  int rc = br_tokfile_read(a->path, a->warn, a->warn_ud, one_line, &t, &st, err);
  if (rc) {
    for (size_t i = 0; i < t.n; i++) free(t.v[i].name);
    free(t.v);
    return rc;
  }
  clear(a);
  a->v = t.v;
  a->n = t.n;
  a->seen = st;
  return BR_OK;
}

static void refresh(br_auth *a) {
  struct stat st;
  if (stat(a->path, &st) == 0 && !same_file(&st, &a->seen)) {
    br_error ignore;
    load(a, &ignore);
  }
}

int br_auth_open(const char *path, br_auth **out, br_error *err) {
  return br_auth_open_warn(path, NULL, NULL, out, err);
}

int br_auth_open_warn(const char *path, br_warn_fn *warn, void *warn_ud, br_auth **out,
                      br_error *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return br_error_set(err, BR_EIO, "token file %s: %s", path, strerror(errno));
  close(fd);
  br_auth *a = calloc(1, sizeof *a);
  if (!a || !(a->path = strdup(path))) {
    free(a);
    return br_error_set(err, BR_ENOMEM, "out of memory");
  }
  a->warn = warn;
  a->warn_ud = warn_ud;
  pthread_mutex_init(&a->mu, NULL);
  int rc = load(a, err);
  if (rc) {
    br_auth_close(a);
    return rc;
  }
  *out = a;
  return BR_OK;
}

void br_auth_close(br_auth *a) {
  if (!a) return;
  clear(a);
  pthread_mutex_destroy(&a->mu);
  free(a->path);
  free(a);
}

br_role br_auth_check(br_auth *a, const char *token) {
  return br_auth_check_id(a, token, NULL);
}

br_role br_auth_check_id(br_auth *a, const char *token, char *id) {
  if (id) id[0] = 0;
  if (!token || !*token || strlen(token) > BR_TOKFILE_TOKEN_MAX) return BR_ROLE_NONE;
  uint8_t h[32];
  sha256(token, strlen(token), h);
  br_role role = BR_ROLE_NONE;
  pthread_mutex_lock(&a->mu);
  refresh(a); /* one stat: tokens made or revoked a moment ago count */
  for (size_t i = 0; i < a->n; i++)
    if (CRYPTO_memcmp(h, a->v[i].hash, 32) == 0) {
      role = a->v[i].role;
      if (id) memcpy(id, a->v[i].id, sizeof a->v[i].id);
    }
  pthread_mutex_unlock(&a->mu);
  return role;
}

size_t br_auth_count(br_auth *a) {
  pthread_mutex_lock(&a->mu);
  refresh(a);
  size_t n = a->n;
  pthread_mutex_unlock(&a->mu);
  return n;
}

static json_t *entry_json(const entry *e, const char *hash_hex) {
  json_t *j = json_pack("{sssssssI}", "id", e->id, "role", br_role_name(e->role), "name",
                        e->name ? e->name : "", "created_ms", (json_int_t)e->created_ms);
  if (hash_hex) json_object_set_new(j, "sha256", json_string(hash_hex));
  return j;
}

/* Whether one line of the file (its bytes, the end cut off) is the entry
 * named id: a JSON object whose "id" is id. */
static bool line_is(const char *line, size_t len, const char *id) {
  json_t *j = json_loadb(line, len, 0, NULL);
  bool is = json_is_object(j) && json_is_string(json_object_get(j, "id")) &&
            strcmp(json_string_value(json_object_get(j, "id")), id) == 0;
  json_decref(j);
  return is;
}

int br_auth_create(br_auth *a, br_role role, const char *name, char **token, char *id,
                   br_error *err) {
  *token = NULL;
  if (role == BR_ROLE_NONE) return br_error_set(err, BR_EINVAL, "a token needs a role");
  for (const char *p = name; p && *p; p++) /* one line of `braid token list` each */
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      return br_error_set(err, BR_EINVAL, "a token's name cannot hold a control character (byte "
                          "0x%02x at %td): a newline or a tab would break the token list",
                          (unsigned char)*p, p - name);
  uint8_t raw[40];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return br_error_set(err, BR_EIO, "no random bytes for a token");
  char secret[65], tok[80];
  hex(raw, 32, secret);
  snprintf(tok, sizeof tok, "brt_%s", secret);
  entry e;
  memset(&e, 0, sizeof e);
  hex(raw + 32, 8, e.id);
  e.role = role;
  e.name = (char *)(name ? name : "");
  e.created_ms = now_ms();
  sha256(tok, strlen(tok), e.hash);
  char hh[65];
  hex(e.hash, 32, hh);
  json_t *j = entry_json(&e, hh);
  char *line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(j);
  if (!line) return br_error_set(err, BR_ENOMEM, "out of memory");
  if (strlen(line) > BR_TOKFILE_LINE_MAX) { /* load would skip it */
    free(line);
    return br_error_set(err, BR_EINVAL,
                        "the name is too long for a line of the token file (%d bytes)",
                        BR_TOKFILE_LINE_MAX);
  }
  pthread_mutex_lock(&a->mu);
  int rc = BR_OK;
  if (br__append_line(a->path, line, strlen(line), 0600) != 0)
    rc = br_error_set(err, BR_EIO, "writing %s: %s", a->path, strerror(errno));
  if (!rc) rc = load(a, err);
  pthread_mutex_unlock(&a->mu);
  free(line);
  if (rc) return rc;
  if (id) memcpy(id, e.id, sizeof e.id);
  *token = strdup(tok);
  return *token ? BR_OK : br_error_set(err, BR_ENOMEM, "out of memory");
}

json_t *br_auth_list(br_auth *a) {
  json_t *arr = json_array();
  pthread_mutex_lock(&a->mu);
  refresh(a);
  for (size_t i = 0; i < a->n; i++) json_array_append_new(arr, entry_json(&a->v[i], NULL));
  pthread_mutex_unlock(&a->mu);
  return arr;
}

/* Rewrites the file without the lines naming id, every other byte as it
 * was (comments, lines a hand made wrong and the order stay: a revoke
 * changes nothing else), through a new file renamed over it. */
int br_auth_revoke(br_auth *a, const char *id, br_error *err) {
  pthread_mutex_lock(&a->mu);
  int rc = BR_OK, found = 0, fd;
  char tmp[4200];
  size_t len = 0;
  snprintf(tmp, sizeof tmp, "%s.%d.tmp", a->path, (int)getpid());
  char *text = br__read_file(a->path, &len);
  if (!text) {
    rc = br_error_set(err, BR_EIO, "token file %s: %s", a->path, strerror(errno));
    goto out;
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = br_error_set(err, BR_EIO, "%s: %s", tmp, strerror(errno));
    goto out;
  }
  for (size_t at = 0; at < len && !rc;) {
    const char *nl = memchr(text + at, '\n', len - at);
    size_t end = nl ? (size_t)(nl - text) + 1 : len, body = end - at;
    while (body && (text[at + body - 1] == '\n' || text[at + body - 1] == '\r')) body--;
    if (line_is(text + at, body, id)) found = 1;
    else if (br__write_all(fd, text + at, end - at) != 0)
      rc = br_error_set(err, BR_EIO, "writing %s: %s", tmp, strerror(errno));
    at = end;
  }
  if (!rc && fsync(fd) != 0) rc = br_error_set(err, BR_EIO, "writing %s: %s", tmp, strerror(errno));
  close(fd);
  if (!rc && !found) rc = br_error_set(err, BR_ENOTFOUND, "no token with id '%s'", id);
  if (rc) {
    unlink(tmp);
    goto out;
  }
  if (rename(tmp, a->path) != 0) {
    rc = br_error_set(err, BR_EIO, "renaming %s: %s", tmp, strerror(errno));
    unlink(tmp);
    goto out;
  }
  if (br__fsync_parent(a->path) != 0)
    rc = br_error_set(err, BR_EIO, "syncing the folder of %s: %s", a->path, strerror(errno));
  else rc = load(a, err);
out:
  free(text);
  pthread_mutex_unlock(&a->mu);
  return rc;
}
