/* Digests: SHA-256 through OpenSSL's EVP interface, hex forms, and the one
 * pass over a file that yields its chunk digests. A file's digest is the
 * SHA-256 of its chunk digests in order (a hash list), so verifying a whole
 * file never costs a second pass over its bytes. */
#include "xfer_int.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SHA-256 fetched from OpenSSL's provider once: EVP_sha256() looks it up
 * again (under a lock) in every init, which costs more than hashing the
 * 32 bytes of a small file's chunk list. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA2-256", NULL); }

const EVP_MD *br_xfer__sha256_md(void) {
  pthread_once(&sha256_once, sha256_fetch);
  return sha256_md ? sha256_md : EVP_sha256();
}

void br_xfer_sha256(const void *data, size_t len, br_xfer_digest *out) {
  unsigned int n = 0;
  EVP_Digest(data, len, out->b, &n, br_xfer__sha256_md(), NULL);
}

void br_xfer_digest_hex(const br_xfer_digest *d, char *hex) {
  static const char xd[] = "0123456789abcdef";
  for (int i = 0; i < BR_XFER_DIGEST_LEN; i++) {
    hex[2 * i] = xd[d->b[i] >> 4];
    hex[2 * i + 1] = xd[d->b[i] & 15];
  }
  hex[BR_XFER_HEX_LEN] = 0;
}

/* A hex digit's value plus one; 0 for every byte that is not one. One
 * table and no branches, for the 20,000 digests of a 10,000-file manifest. */
static const uint8_t hexval1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,
    ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

int br_xfer__digest_parse_n(const char *hex, size_t len, br_xfer_digest *out) {
  if (len != BR_XFER_HEX_LEN) return BR_EINVAL;
  bool bad = false;
  for (int i = 0; i < BR_XFER_DIGEST_LEN; i++) {
    unsigned h = hexval1[(uint8_t)hex[2 * i]], l = hexval1[(uint8_t)hex[2 * i + 1]];
    bad |= !h | !l;
    out->b[i] = (uint8_t)((h - 1) << 4 | (l - 1));
  }
  return bad ? BR_EINVAL : BR_OK;
}

int br_xfer_digest_parse(const char *hex, br_xfer_digest *out) {
  if (!hex) return BR_EINVAL;
  return br_xfer__digest_parse_n(hex, strnlen(hex, BR_XFER_HEX_LEN + 1), out);
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
  return br_xfer__hash_fd_each(fd, size, chunk_size, file, chunks, nchunks, NULL, NULL, NULL,
                               err);
}

/* Reads len bytes at off for hashing: BR_OK, or an error that says why. */
static int read_for_hash(int fd, void *buf, size_t len, int64_t off, br_error *err) {
  int e = br_xfer__pread_all(fd, buf, len, off);
  if (e == -ENODATA) return br_error_set(err, BR_EIO, "file shrank while being hashed");
  if (e) return br_error_set(err, BR_EIO, "read: %s", strerror(-e));
  return BR_OK;
}

int br_xfer__hash_fd_each(int fd, int64_t size, int64_t chunk_size, br_xfer_digest *file,
                          br_xfer_digest **chunks, size_t *nchunks, br_xfer__chunk_fn *each,
                          br_xfer__keep_fn *keep, void *ud, br_error *err) {
  *chunks = NULL;
  *nchunks = 0;
  if (size < 0 || chunk_size <= 0) return br_error_set(err, BR_EINVAL, "bad size");
  size_t n = (size_t)((size + chunk_size - 1) / chunk_size);
  br_xfer_digest *cs = n ? calloc(n, sizeof *cs) : NULL;
  const size_t bufsz = 1024 * 1024;
  uint8_t *buf = NULL; /* for chunks read in pieces, once one is */
  EVP_MD_CTX *cctx = EVP_MD_CTX_new();
  int rc = BR_OK;
  bool handed = false; /* cs is the caller's: each was told of it */
  if ((n && !cs) || !cctx) {
    rc = br_error_set(err, BR_ENOMEM, "out of memory hashing a file");
    goto done;
  }
  int64_t off = 0;
  for (size_t c = 0; c < n; c++) {
    int64_t end = off + chunk_size < size ? off + chunk_size : size;
    uint8_t *whole = keep ? keep(ud, c, (size_t)(end - off)) : NULL;
    if (whole) {
      if ((rc = read_for_hash(fd, whole, (size_t)(end - off), off, err))) goto done;
      br_xfer_sha256(whole, (size_t)(end - off), &cs[c]);
      off = end;
    } else {
      if (!buf && !(buf = malloc(bufsz))) {
        rc = br_error_set(err, BR_ENOMEM, "out of memory hashing a file");
        goto done;
      }
      EVP_DigestInit_ex(cctx, br_xfer__sha256_md(), NULL);
      while (off < end) {
        size_t want = (size_t)(end - off) < bufsz ? (size_t)(end - off) : bufsz;
        if ((rc = read_for_hash(fd, buf, want, off, err))) goto done;
        EVP_DigestUpdate(cctx, buf, want);
        off += (int64_t)want;
      }
      unsigned int dl = 0;
      EVP_DigestFinal_ex(cctx, cs[c].b, &dl);
    }
    if (each) each(ud, cs, n, c + 1), handed = true;
  }
  br_xfer_file_digest(cs, n, file);
  *chunks = cs;
  *nchunks = n;
  cs = NULL;
done:
  if (!handed) free(cs);
  free(buf);
  EVP_MD_CTX_free(cctx);
  return rc;
}
