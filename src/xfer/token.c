/* Tokens: random bearer tokens, and the depot's token file. The depot keeps
 * only SHA-256 hashes ("sha256:<hex>" lines, or the braid server's JSON
 * lines with a "sha256" member, so a depot mounted beside the server takes
 * the server's tokens), so a leaked token file does not leak tokens; a plain
 * line is accepted too and hashed on load. Comparison is constant time; the
 * file is read again when it changes. A line that cannot be used is skipped
 * and told, with where it is, each time the file is read (tokfile.c). */
#include "xfer_int.h"
#include "../tokfile.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int br_xfer_token_new(char *buf, size_t size, br_error *err) {
  uint8_t raw[32];
  if (size < 65) return br_error_set(err, BR_EINVAL, "token buffer too small");
  if (RAND_bytes(raw, sizeof raw) != 1)
    return br_error_set(err, BR_EIO, "no random bytes for a token");
  static const char xd[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    buf[2 * i] = xd[raw[i] >> 4];
    buf[2 * i + 1] = xd[raw[i] & 15];
  }
  buf[64] = 0;
  return BR_OK;
}

void br_xfer_token_hash(const char *token, char *buf, size_t size) {
  br_xfer_digest d;
  char hex[BR_XFER_HEX_LEN + 1];
  br_xfer_sha256(token, strlen(token), &d);
  br_xfer_digest_hex(&d, hex);
  snprintf(buf, size, "sha256:%s", hex);
}

/* The table being read (br_tokfile_read's ctx). */
typedef struct table {
  char (*hashes)[80];
  size_t n;
} table;

/* A line's table entry. "sha256:<hex>", a JSON object with a "sha256"
 * member (the braid server's token file, so one file serves both), or a
 * plain token, hashed here. A "sha256:" line is a hash whatever follows: a
 * broken one is told, not taken for a token nobody would type. */
static int one_line(void *ctx, const br_tokfile_line *l) {
  table *t = ctx;
  const char *s = l->rest, *h = NULL;
  char entry[80] = {0}; /* compared whole: zero-filled */
  char why[128];
  json_t *j = NULL;
  if (*s == '{') {
    json_error_t je;
    j = json_loadb(l->text, l->len, 0, &je); /* columns count from the line's start */
    if (!j) {
      br_tokfile_skip(l, je.column, "not JSON: %s", je.text);
      return BR_OK;
    }
    h = json_string_value(json_object_get(j, "sha256"));
    if (!h) br_tokfile_skip(l, 0, "no \"sha256\" string");
  } else if (strncmp(s, "sha256:", 7) == 0) {
    h = s + 7;
  } else if (strlen(s) > BR_TOKFILE_TOKEN_MAX) {
    br_tokfile_skip(l, 0, "a token longer than %d bytes, which no check takes",
                    BR_TOKFILE_TOKEN_MAX);
  } else {
    br_xfer_token_hash(s, entry, sizeof entry);
  }
  if (h && br_tokfile_bad_hex64(h, why, sizeof why)) {
    br_tokfile_skip(l, 0, "%s", why);
  } else if (h) {
    br_xfer_digest d;
    char hex[BR_XFER_HEX_LEN + 1];
    br_xfer_digest_parse(h, &d); /* 64 hex digits: parses */
    br_xfer_digest_hex(&d, hex); /* normalise case */
    snprintf(entry, sizeof entry, "sha256:%s", hex);
  }
  json_decref(j);
  if (!entry[0]) return BR_OK;
  void *grown = realloc(t->hashes, (t->n + 1) * sizeof *t->hashes);
  if (!grown) return BR_ENOMEM;
  t->hashes = grown;
  memcpy(t->hashes[t->n++], entry, sizeof entry);
  return BR_OK;
}

/* Reads the file into a fresh table; a line that cannot be used is told
 * through warn and skipped. */
static int load(const char *path, br_warn_fn *warn, void *warn_ud, char (**out)[80],
                size_t *count, struct stat *seen, br_error *err) {
  table t = {NULL, 0};
  int rc = br_tokfile_read(path, warn, warn_ud, one_line, &t, seen, err);
  if (rc) {
    free(t.hashes);
    t.hashes = NULL;
    t.n = 0;
  }
  *out = t.hashes;
  *count = t.n;
  return rc;
}

int br_xfer__tokens_load(br_xfer__tokens *t, const char *path, br_warn_fn *warn, void *warn_ud,
                         br_error *err) {
  memset(t, 0, sizeof *t);
  t->warn = warn;
  t->warn_ud = warn_ud;
  int rc = load(path, warn, warn_ud, &t->hashes, &t->n, &t->seen, err);
  if (rc == BR_OK && t->n == 0) {
    free(t->hashes);
    t->hashes = NULL;
    rc = br_error_set(err, BR_EINVAL, "token file %s holds no token", path);
  }
  if (rc) return rc;
  t->path = strdup(path);
  pthread_mutex_init(&t->mu, NULL);
  t->live = true;
  return BR_OK;
}

/* Tokens made or revoked beside a running depot count at once: one stat
 * per check, and a reload when the file changed. */
static void refresh(br_xfer__tokens *t) {
  struct stat st;
  if (stat(t->path, &st) != 0) return;
  if (st.st_ino == t->seen.st_ino && st.st_size == t->seen.st_size &&
      st.st_mtim.tv_sec == t->seen.st_mtim.tv_sec && st.st_mtim.tv_nsec == t->seen.st_mtim.tv_nsec)
    return;
  char (*hashes)[80];
  size_t n;
  struct stat seen;
  if (load(t->path, t->warn, t->warn_ud, &hashes, &n, &seen, NULL) != BR_OK)
    return; /* keep the old table */
  free(t->hashes);
  t->hashes = hashes;
  t->n = n;
  t->seen = seen;
}

bool br_xfer__tokens_check(br_xfer__tokens *t, const char *token) {
  if (!token || !*token || strlen(token) > BR_TOKFILE_TOKEN_MAX) return false;
  char h[80] = {0};
  br_xfer_token_hash(token, h, sizeof h);
  bool ok = false;
  pthread_mutex_lock(&t->mu);
  refresh(t);
  for (size_t i = 0; i < t->n; i++)
    if (CRYPTO_memcmp(h, t->hashes[i], sizeof h) == 0) ok = true;
  pthread_mutex_unlock(&t->mu);
  return ok;
}

void br_xfer__tokens_free(br_xfer__tokens *t) {
  free(t->hashes);
  free(t->path);
  if (t->live) pthread_mutex_destroy(&t->mu);
  memset(t, 0, sizeof *t);
}
