/* Tokens: random bearer tokens, and the depot's token file. The depot keeps
 * only SHA-256 hashes ("sha256:<hex>" lines, or the braid server's JSON
 * lines with a "sha256" member, so a depot mounted beside the server takes
 * the server's tokens), so a leaked token file does not leak tokens; a plain
 * line is accepted too and hashed on load. Comparison is constant time; the
 * file is read again when it changes. */
#include "xfer_int.h"

#include <errno.h>
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

/* Reads the file into a fresh table. Lines: "sha256:<hex>", a JSON object
 * with a "sha256" member (the braid server's token file, so one file serves
 * both), or a plain token. Comments (#) and blank lines are skipped. */
static int load(const char *path, char (**out)[80], size_t *count, struct stat *seen,
                br_error *err) {
  *out = NULL;
  *count = 0;
  FILE *f = fopen(path, "r");
  if (!f) return br_error_set(err, BR_EIO, "token file %s: %s", path, strerror(errno));
  fstat(fileno(f), seen);
  char (*hashes)[80] = NULL;
  size_t n = 0;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  int rc = BR_OK;
  while ((len = getline(&line, &cap, f)) > 0) {
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
      line[--len] = 0;
    char *s = line;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s || *s == '#') continue;
    char entry[80] = {0}; /* compared whole: zero-filled */
    br_xfer_digest d;
    if (*s == '{') {
      json_t *j = json_loads(s, 0, NULL);
      const char *h = json_string_value(json_object_get(j, "sha256"));
      if (h && br_xfer_digest_parse(h, &d) == BR_OK) {
        char hex[BR_XFER_HEX_LEN + 1];
        br_xfer_digest_hex(&d, hex);
        snprintf(entry, sizeof entry, "sha256:%s", hex);
      }
      json_decref(j);
      if (!entry[0]) continue; /* one bad line must not lock everyone out */
    } else if (strncmp(s, "sha256:", 7) == 0 && br_xfer_digest_parse(s + 7, &d) == BR_OK) {
      char hex[BR_XFER_HEX_LEN + 1];
      br_xfer_digest_hex(&d, hex); /* normalise case */
      snprintf(entry, sizeof entry, "sha256:%s", hex);
    } else {
      br_xfer_token_hash(s, entry, sizeof entry);
    }
    void *grown = realloc(hashes, (n + 1) * sizeof *hashes);
    if (!grown) {
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    }
    hashes = grown;
    memcpy(hashes[n++], entry, sizeof entry);
  }
  free(line);
  fclose(f);
  if (rc) {
    free(hashes);
    return rc;
  }
  *out = hashes;
  *count = n;
  return BR_OK;
}

int br_xfer__tokens_load(br_xfer__tokens *t, const char *path, br_error *err) {
  memset(t, 0, sizeof *t);
  int rc = load(path, &t->hashes, &t->n, &t->seen, err);
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
  if (load(t->path, &hashes, &n, &seen, NULL) != BR_OK) return; /* keep the old table */
  free(t->hashes);
  t->hashes = hashes;
  t->n = n;
  t->seen = seen;
}

bool br_xfer__tokens_check(br_xfer__tokens *t, const char *token) {
  if (!token || !*token || strlen(token) > 512) return false;
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
