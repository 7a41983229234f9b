/* Tokens: random bearer tokens, and the depot's token file. The depot keeps
 * only SHA-256 hashes ("sha256:<hex>" lines), so a leaked token file does not
 * leak tokens; a plain line is accepted too and hashed on load. Comparison is
 * constant time. */
#include "xfer_int.h"

#include <errno.h>
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

int br_xfer__tokens_load(br_xfer__tokens *t, const char *path, br_error *err) {
  memset(t, 0, sizeof *t);
  FILE *f = fopen(path, "r");
  if (!f) return br_error_set(err, BR_EIO, "token file %s: %s", path, strerror(errno));
  char line[1024];
  int rc = BR_OK;
  while (fgets(line, sizeof line, f)) {
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
      line[--n] = 0;
    char *s = line;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s || *s == '#') continue;
    void *grown = realloc(t->hashes, (t->n + 1) * sizeof *t->hashes);
    if (!grown) {
      rc = br_error_set(err, BR_ENOMEM, "out of memory");
      break;
    }
    t->hashes = grown;
    memset(t->hashes[t->n], 0, sizeof t->hashes[t->n]); /* compared whole */
    br_xfer_digest d;
    if (strncmp(s, "sha256:", 7) == 0 && br_xfer_digest_parse(s + 7, &d) == BR_OK) {
      char hex[BR_XFER_HEX_LEN + 1];
      br_xfer_digest_hex(&d, hex); /* normalise case */
      snprintf(t->hashes[t->n], sizeof t->hashes[t->n], "sha256:%s", hex);
    } else {
      br_xfer_token_hash(s, t->hashes[t->n], sizeof t->hashes[t->n]);
    }
    t->n++;
  }
  fclose(f);
  if (rc == BR_OK && t->n == 0)
    rc = br_error_set(err, BR_EINVAL, "token file %s holds no token", path);
  if (rc) br_xfer__tokens_free(t);
  return rc;
}

bool br_xfer__tokens_check(const br_xfer__tokens *t, const char *token) {
  if (!token || !*token || strlen(token) > 512) return false;
  char h[80] = {0};
  br_xfer_token_hash(token, h, sizeof h);
  bool ok = false;
  for (size_t i = 0; i < t->n; i++)
    if (CRYPTO_memcmp(h, t->hashes[i], sizeof h) == 0) ok = true;
  return ok;
}

void br_xfer__tokens_free(br_xfer__tokens *t) {
  free(t->hashes);
  t->hashes = NULL;
  t->n = 0;
}
