/* Digests: SHA-256 through OpenSSL's EVP interface, hex forms, and the one
 * pass over a file that yields its chunk digests. A file's digest is the
 * SHA-256 of its chunk digests in order (a hash list), so verifying a whole
 * file never costs a second pass over its bytes. */
#include "xfer_int.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void br_xfer_sha256(const void *data, size_t len, br_xfer_digest *out) {
  unsigned int n = 0;
  EVP_Digest(data, len, out->b, &n, EVP_sha256(), NULL);
}

void br_xfer_digest_hex(const br_xfer_digest *d, char *hex) {
  static const char xd[] = "0123456789abcdef";
  for (int i = 0; i < BR_XFER_DIGEST_LEN; i++) {
    hex[2 * i] = xd[d->b[i] >> 4];
    hex[2 * i + 1] = xd[d->b[i] & 15];
  }
  hex[BR_XFER_HEX_LEN] = 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int br_xfer_digest_parse(const char *hex, br_xfer_digest *out) {
  if (!hex || strlen(hex) != BR_XFER_HEX_LEN) return BR_EINVAL;
  for (int i = 0; i < BR_XFER_DIGEST_LEN; i++) {
    int h = hexval(hex[2 * i]), l = hexval(hex[2 * i + 1]);
    if (h < 0 || l < 0) return BR_EINVAL;
    out->b[i] = (uint8_t)(h << 4 | l);
  }
  return BR_OK;
}

int br_xfer__digest_cmp(const br_xfer_digest *a, const br_xfer_digest *b) {
  return memcmp(a->b, b->b, BR_XFER_DIGEST_LEN);
}

int br_xfer__dvec_add(br_xfer__dvec *d, const br_xfer_digest *x) {
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 256;
    void *p = realloc(d->v, cap * sizeof *d->v);
    if (!p) return BR_ENOMEM;
    d->v = p;
    d->cap = cap;
  }
  d->v[d->n++] = *x;
  return BR_OK;
}

void br_xfer_file_digest(const br_xfer_digest *chunks, size_t n, br_xfer_digest *out) {
  br_xfer_sha256(chunks, n * sizeof *chunks, out);
}

int br_xfer__hash_fd(int fd, int64_t size, int64_t chunk_size, br_xfer_digest *file,
                     br_xfer_digest **chunks, size_t *nchunks, br_error *err) {
  *chunks = NULL;
  *nchunks = 0;
  if (size < 0 || chunk_size <= 0) return br_error_set(err, BR_EINVAL, "bad size");
  size_t n = (size_t)((size + chunk_size - 1) / chunk_size);
  br_xfer_digest *cs = n ? calloc(n, sizeof *cs) : NULL;
  const size_t bufsz = 1024 * 1024;
  uint8_t *buf = malloc(bufsz);
  EVP_MD_CTX *cctx = EVP_MD_CTX_new();
  int rc = BR_OK;
  if ((n && !cs) || !buf || !cctx) {
    rc = br_error_set(err, BR_ENOMEM, "out of memory hashing a file");
    goto done;
  }
  int64_t off = 0;
  for (size_t c = 0; c < n; c++) {
    EVP_DigestInit_ex(cctx, EVP_sha256(), NULL);
    int64_t end = off + chunk_size < size ? off + chunk_size : size;
    while (off < end) {
      size_t want = (size_t)(end - off) < bufsz ? (size_t)(end - off) : bufsz;
      ssize_t got = pread(fd, buf, want, off);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        rc = br_error_set(err, BR_EIO, "read: %s", strerror(errno));
        goto done;
      }
      if (got == 0) {
        rc = br_error_set(err, BR_EIO, "file shrank while being hashed");
        goto done;
      }
      EVP_DigestUpdate(cctx, buf, (size_t)got);
      off += got;
    }
    unsigned int dl = 0;
    EVP_DigestFinal_ex(cctx, cs[c].b, &dl);
  }
  br_xfer_file_digest(cs, n, file);
  *chunks = cs;
  *nchunks = n;
  cs = NULL;
done:
  free(cs);
  free(buf);
  EVP_MD_CTX_free(cctx);
  return rc;
}
