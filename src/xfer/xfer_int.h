/* Internal interfaces shared by the files of src/xfer/ (br_xfer__ prefix). */
#ifndef BR_XFER_INT_H
#define BR_XFER_INT_H

#include <braid/xfer.h>

#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Largest chunk a depot accepts in one bundle entry. */
#define BR_XFER__MAX_CHUNK (64 * 1024 * 1024)
/* Temporary files carry this hidden prefix and letters only after it, so no
 * frame pattern (name.0001.exr, name_0001.exr) ever matches one. */
#define BR_XFER__PARTIAL_PREFIX ".braid-partial-"

/* ---- hashing (digest.c) ---- */

/* Hashes an open file of size bytes in chunk_size chunks: whole-file digest
 * and a malloc'd array of chunk digests (*nchunks; NULL when size is 0). */
int br_xfer__hash_fd(int fd, int64_t size, int64_t chunk_size, br_xfer_digest *file,
                     br_xfer_digest **chunks, size_t *nchunks, br_error *err);
/* The same, telling each(ud, cs, n, done) after each chunk: cs, the array
 * of n chunk digests whose first done are final. From the first call on,
 * the array is the caller's (it stays, even when an error follows).
 * keep (or NULL) is asked keep(ud, c, len) before chunk c is read: a buffer
 * it gives (the caller's all along) gets the chunk's len bytes, read whole
 * and hashed there, so that the caller can send them without reading the
 * file again; NULL, and the chunk is read in pieces through a buffer of
 * this function's. */
typedef void br_xfer__chunk_fn(void *ud, br_xfer_digest *cs, size_t n, size_t done);
typedef uint8_t *br_xfer__keep_fn(void *ud, size_t c, size_t len);
int br_xfer__hash_fd_each(int fd, int64_t size, int64_t chunk_size, br_xfer_digest *file,
                          br_xfer_digest **chunks, size_t *nchunks, br_xfer__chunk_fn *each,
                          br_xfer__keep_fn *keep, void *ud, br_error *err);
int br_xfer__digest_cmp(const br_xfer_digest *a, const br_xfer_digest *b);
/* hex of exactly len characters (no NUL needed) into out */
int br_xfer__digest_parse_n(const char *hex, size_t len, br_xfer_digest *out);
/* OpenSSL's SHA-256, fetched once for the process (EVP_MD) */
struct evp_md_st;
const struct evp_md_st *br_xfer__sha256_md(void);
/* A growing array of digests; free v when done. */
typedef struct br_xfer__dvec {
  br_xfer_digest *v;
  size_t n, cap;
} br_xfer__dvec;
/* Appends x: BR_OK or BR_ENOMEM (d is as it was). */
int br_xfer__dvec_add(br_xfer__dvec *d, const br_xfer_digest *x);

/* The depot's live versions (gc.c): br_xfer__walk_versions calls a
 * version_fn for each snapshots/NAME/vN.json under a snapshots/ tree. */
struct stat;
typedef int br_xfer__version_fn(void *ud, int dirfd, const char *file, const char *name,
                                int64_t version, const struct stat *st, br_error *err);
int br_xfer__walk_versions(int dirfd, const char *rel, br_xfer__version_fn *visit, void *ud,
                           br_error *err);
int br_xfer__read_version(int dirfd, const char *file, const char *name, const struct stat *st,
                          br_xfer_manifest **m, br_error *err);
/* A manifest's regular files and their bytes (manifest.c). */
void br_xfer__manifest_totals(const br_xfer_manifest *m, int64_t *files, int64_t *bytes);

/* ---- bundles (bundle.c): many chunks in one request or response:
 * "BRB1", then per entry: digest[32], flags u32 (1 = zstd), raw length u32,
 * wire length u32, wire bytes. Integers little-endian. */
#define BR_XFER__BUNDLE_HDR (BR_XFER_DIGEST_LEN + 12) /* an entry's header */
/* The body of a bundle of entries chunks of bytes in all (none compressed). */
#define BR_XFER__BUNDLE_BODY(entries, bytes) \
  (4 + (int64_t)(entries) * BR_XFER__BUNDLE_HDR + (int64_t)(bytes))
/* The most a bundle cut at limit bytes may take, so that its body (and a
 * depot's aligned direct reads into its reply) fits a buffer of limit
 * bytes: buffers come in powers of two, and a body a little over 8 MiB
 * would take 16. */
#define BR_XFER__BUNDLE_ROOM(limit) ((int64_t)(limit) - 3 * BR_XFER__DIO_ALIGN)
typedef struct br_xfer__buf {
  uint8_t *data;
  size_t len, cap;
} br_xfer__buf;
int br_xfer__buf_reserve(br_xfer__buf *b, size_t extra);
int br_xfer__buf_append(br_xfer__buf *b, const void *data, size_t len);
void br_xfer__buf_free(br_xfer__buf *b);
/* Buffers, reused (bundle.c): get gives at least size bytes, 4 KiB
 * aligned, and their capacity (a power of two); put takes them back with
 * that capacity. A br_xfer__buf's data comes and goes this way. */
void *br_xfer__mem_get(size_t size, size_t *cap);
/* The capacity br_xfer__mem_get gives for size bytes. */
size_t br_xfer__mem_cap(size_t size);
void br_xfer__mem_put(void *b, size_t cap);

int br_xfer__bundle_begin(br_xfer__buf *b);
/* Appends one chunk; compress: try zstd and keep it when it saves; *saved
 * (may be NULL) tells whether it did. */
int br_xfer__bundle_add(br_xfer__buf *b, const br_xfer_digest *d, const void *data,
                        size_t len, bool compress, bool *saved);
/* Room for entries more entries of bytes raw bytes in all, at once: no
 * growing (a copy of all before) entry by entry. */
int br_xfer__bundle_reserve(br_xfer__buf *b, size_t entries, size_t bytes);
/* An entry in two steps, with no copy: slot gives where len raw bytes go
 * (NULL if out of memory or too long); put, once they are there, writes
 * the entry's header and compresses it in place as bundle_add does. */
uint8_t *br_xfer__bundle_slot(br_xfer__buf *b, size_t len);
int br_xfer__bundle_put(br_xfer__buf *b, const br_xfer_digest *d, size_t len, bool compress,
                        bool *saved);
/* put, for raw bytes that lie further on in the buffer (read there for
 * several entries at once, as if none would compress): they are moved
 * down to the entry, or compressed into it. */
int br_xfer__bundle_put_at(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *at,
                           size_t len, bool compress, bool *saved);
/* put, for raw bytes kept outside the buffer: compressed into it when that
 * saves; otherwise only the entry's header is written and *by_ref is set:
 * the len bytes at data must follow it in the body, by reference
 * (br_xfer__req_ref), with nothing appended in between. */
int br_xfer__bundle_put_ref(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *data,
                            size_t len, bool compress, bool *saved, bool *by_ref);

typedef struct br_xfer__bundle_iter {
  const uint8_t *p, *end;
  uint8_t *scratch; /* decompression buffer, owned by the iterator (pooled: */
  size_t scratch_cap; /* aligned to BR_XFER__DIO_ALIGN, scratch_cap a multiple of it) */
  /* the last entry as it came: its payload (a zstd frame when zstd) */
  const uint8_t *wire;
  size_t wire_len;
  bool zstd;
} br_xfer__bundle_iter;
int br_xfer__bundle_open(br_xfer__bundle_iter *it, const void *data, size_t len,
                         br_error *err);
/* The bytes a depot's pack of a bundle's entries smaller than limit (raw)
 * and its compressed ones of any size takes, each as it came, from their
 * headers alone (a bound for a buffer; the entries are checked later);
 * *whole: every entry goes into the pack, so the body, headers and all,
 * can be the pack. */
size_t br_xfer__bundle_pack_need(const void *data, size_t len, size_t limit, bool *whole);
/* Where the first entry's bytes start in a bundle's body (its first len
 * bytes at data) when that entry is plain and of at least limit bytes;
 * else 0 (not such an entry, or its header not all there). */
size_t br_xfer__bundle_first_plain(const void *data, size_t len, size_t limit);
/* The length of a (possibly cut) bundle's magic and complete entries: what
 * of an upload cut short can still be used; 0 when it has no magic. */
size_t br_xfer__bundle_complete_len(const void *data, size_t len);
/* Chunks as a depot stores them: raw = 0, the len bytes are the chunk;
 * raw > 0, they are a zstd frame of raw bytes; raw < 0, the chunk, which
 * its sender found does not compress (no fetch tries). Whether they are
 * the chunk want (scratch: a pooled buffer for the raw bytes, kept for the
 * next). */
bool br_xfer__stored_matches(const uint8_t *stored, size_t len, int64_t raw,
                             const br_xfer_digest *want, uint8_t **scratch, size_t *cap);
/* The zstd frame of len bytes at frame, inflated into out: BR_OK when it
 * gives exactly raw bytes, else BR_EINVAL. */
int br_xfer__inflate(const uint8_t *frame, size_t len, uint8_t *out, size_t raw);
/* bundle_put_at for a stored chunk at at: a stored zstd frame goes as it
 * is, as a compressed entry (compress must be set: a fetch that did not
 * ask for zstd inflates it with bundle_add_stored); a chunk stored plain
 * is tried with zstd when compress, unless raw < 0. */
int br_xfer__bundle_put_stored(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *at,
                               size_t len, int64_t raw, bool compress, bool *saved);
/* bundle_put_ref for a stored chunk: a zstd frame goes by reference when
 * compress, else is inflated into b. */
int br_xfer__bundle_put_ref_stored(br_xfer__buf *b, const br_xfer_digest *d,
                                   const uint8_t *data, size_t len, int64_t raw, bool compress,
                                   bool *saved, bool *by_ref);
/* bundle_add for a stored chunk (data not in b): a zstd frame goes as it
 * is when compress, else inflated; BR_EIO when it does not inflate. */
int br_xfer__bundle_add_stored(br_xfer__buf *b, const br_xfer_digest *d, const uint8_t *data,
                               size_t len, int64_t raw, bool compress);
/* Next entry: 1 and data, len (raw, decompressed, not yet verified), 0 at
 * the end, or a negative code for a malformed bundle. */
int br_xfer__bundle_next(br_xfer__bundle_iter *it, br_xfer_digest *d, const uint8_t **data,
                         size_t *len, br_error *err);
void br_xfer__bundle_close(br_xfer__bundle_iter *it);

/* ---- file system (fsutil.c) ---- */

/* s for a message: control bytes (and, with high, bytes >= 0x80: a name
 * that is not UTF-8) as \xNN; cut with "..." to fit. Returns buf. */
const char *br_xfer__shown(const char *s, bool high, char *buf, size_t size);

/* mkdir -p (mode 0755). */
int br_xfer__mkdirs(const char *path, br_error *err);
/* Opens the directory that holds rel (a checked relative path) under the
 * directory fd root, one component at a time with O_NOFOLLOW, so a symlink
 * planted in the destination can never redirect a write out of the tree.
 * create: make missing directories. Returns the fd and sets *base to the
 * last component of rel. root names the root in errors (NULL: none). */
int br_xfer__open_parent(int rootfd, const char *root, const char *rel, bool create,
                         const char **base, br_error *err);
/* Writes len bytes fully at offset (pwrite loop). 0 or -errno. */
int br_xfer__pwrite_all(int fd, const void *buf, size_t len, int64_t off);
int br_xfer__pread_all(int fd, void *buf, size_t len, int64_t off);
/* preadv until every iovec is full (iov is changed on the way): 0 or -errno
 * (-ENODATA at the end of the file). */
struct iovec;
int br_xfer__preadv_all(int fd, struct iovec *iov, int cnt, int64_t off);
/* Direct I/O (O_DIRECT): offsets, lengths and memory aligned to this. */
#define BR_XFER__DIO_ALIGN 4096
/* Writes len bytes at off (aligned) through an O_DIRECT fd: the bytes go
 * through *buf (aligned, grown as needed, the caller frees; data may be
 * *buf itself) padded with zeros to the alignment, so a file whose size is
 * not aligned must be truncated to its size after. 0 or -errno (-EINVAL:
 * the file system wants another alignment: clear O_DIRECT and write again). */
int br_xfer__pwrite_direct(int fd, const void *data, size_t len, int64_t off, uint8_t **buf,
                           size_t *cap);
/* Whether every page of fd's bytes [off, off + len) is in the page cache,
 * asked without reading and without starting a read (cachestat, Linux 6.5
 * and later): 1 yes, 0 no, -1 unknown (no cachestat here, or refused). */
int br_xfer__cached(int fd, int64_t off, int64_t len);
typedef struct br_xfer__pages {
  uint64_t pages;   /* in the range */
  uint64_t cached;  /* of them in the page cache */
  uint64_t evicted; /* of them taken out by the kernel's reclaim (a page dropped,
                     * as by POSIX_FADV_DONTNEED, is not counted) */
} br_xfer__pages;
/* The same, counted: 0, or -1 where it cannot be known. */
int br_xfer__page_stat(int fd, int64_t off, int64_t len, br_xfer__pages *out);
/* Links the open file fd (an O_TMPFILE one) in as dirfd/name: by the fd
 * itself (AT_EMPTY_PATH: Linux 6.10 and later for any user, earlier ones
 * only with CAP_DAC_READ_SEARCH), else through /proc/self/fd. 0 or an
 * errno (EEXIST: name is taken). */
int br_xfer__link_fd(int fd, int dirfd, const char *name);
/* Sets, or clears, O_DIRECT on fd: 0 or -errno (-EINVAL: the file system
 * has no direct I/O). */
int br_xfer__direct_on(int fd);
int br_xfer__direct_off(int fd);
/* openat with O_DIRECT, or without when the file system refuses it
 * (*direct tells which). */
int br_xfer__open_new(int dirfd, const char *name, int flags, mode_t mode, bool *direct);
/* Writes a new file's whole content from offset 0: directly (through an
 * aligned copy, then truncated to len) when direct, else buffered. A file
 * system that refuses the direct write gets a buffered one. 0 or -errno. */
int br_xfer__write_whole(int fd, bool direct, const void *data, size_t len);
/* The same from a buffer of capacity cap: aligned, with room for the
 * padding, it is written in place (its bytes past len are zeroed). */
int br_xfer__write_whole_buf(int fd, bool direct, uint8_t *data, size_t len, size_t cap);
/* The hidden temporary name for the file named base: BR_XFER__PARTIAL_PREFIX
 * + 16 letters derived from base. out holds 64 bytes. */
void br_xfer__partial_name(const char *base, char *out, size_t size);
int64_t br_xfer__mtime_ns(const struct stat *st);
int64_t br_xfer__ctime_ns(const struct stat *st);
double br_xfer__now(void);

/* ---- tokens (token.c) ---- */

typedef struct br_xfer__tokens {
  char (*hashes)[80];
  size_t n;
  char *path;
  struct stat seen; /* the file as last read */
  pthread_mutex_t mu;
  bool live;
  br_warn_fn *warn; /* told of the lines skipped at each read (may be NULL) */
  void *warn_ud;
} br_xfer__tokens;
int br_xfer__tokens_load(br_xfer__tokens *t, const char *path, br_warn_fn *warn, void *warn_ud,
                         br_error *err);
/* True when token's hash is one of t's (constant time per entry). */
bool br_xfer__tokens_check(br_xfer__tokens *t, const char *token);
void br_xfer__tokens_free(br_xfer__tokens *t);

/* ---- rate limiter (ratelimit.c): a token bucket shared by all transfers ---- */

typedef struct br_xfer__bucket {
  pthread_mutex_t mu;
  double rate;   /* bytes per second; 0 = unlimited */
  double tokens; /* may go negative: debt paid before the next byte moves */
  double burst;
  double last;
} br_xfer__bucket;
void br_xfer__bucket_init(br_xfer__bucket *b, int64_t rate);
void br_xfer__bucket_destroy(br_xfer__bucket *b);
/* How many of want bytes may move now (0 = wait); takes them. */
size_t br_xfer__bucket_take(br_xfer__bucket *b, size_t want);
/* Takes n bytes unconditionally (may leave a debt). */
void br_xfer__bucket_charge(br_xfer__bucket *b, size_t n);
/* Seconds until at least one byte may move. */
double br_xfer__bucket_wait(br_xfer__bucket *b);

/* ---- hash cache (hashcache.c): (dev, inode, size, mtime, ctime) -> digests ---- */

typedef struct br_xfer__hcache br_xfer__hcache;
/* path NULL = default location ($BRAID_CACHE_DIR or ~/.cache/braid), "" = none
 * (returns BR_OK with *out NULL). A damaged cache is put aside and started
 * again, one that cannot be opened is done without (*out NULL); either way
 * warn (warn_size bytes, may be NULL) says so. */
int br_xfer__hcache_open(const char *path, br_xfer__hcache **out, char *warn, size_t warn_size,
                         br_error *err);
void br_xfer__hcache_close(br_xfer__hcache *c);
/* 1 found (chunks malloc'd), 0 not found. */
int br_xfer__hcache_get(br_xfer__hcache *c, const struct stat *st, int64_t chunk_size,
                        br_xfer_digest *file, br_xfer_digest **chunks, size_t *nchunks);
int br_xfer__hcache_put(br_xfer__hcache *c, const struct stat *st, int64_t chunk_size,
                        const br_xfer_digest *file, const br_xfer_digest *chunks,
                        size_t nchunks);
int br_xfer__hcache_begin(br_xfer__hcache *c);
int br_xfer__hcache_commit(br_xfer__hcache *c);

/* ---- JSON scanner (jscan.c): manifests and digest lists, read in place ----
 * Values are taken in document order: begin an object or array, then
 * member()/element() until they return 0 (the close), reading each value
 * with string/int/digest/skip or a nested begin. The typed readers return
 * 1 with the value, 0 when the value is valid JSON of another type (it is
 * skipped), -1 on a syntax error. After any error every call fails and
 * msg says what and where ("JSON error at line L, column C: ..."). */
#define BR_XFER__JSCAN_DEPTH 64
typedef struct br_xfer__jscan {
  const char *begin, *p, *end;
  char *str; /* the last string or key read, decoded and NUL-terminated */
  size_t str_len, str_cap;
  int depth;
  bool failed;
  char msg[160];
} br_xfer__jscan;
void br_xfer__jscan_init(br_xfer__jscan *s, const char *text, size_t len);
void br_xfer__jscan_free(br_xfer__jscan *s);
/* The next character that is not whitespace (not taken), 0 at the end. */
int br_xfer__jscan_peek(br_xfer__jscan *s);
/* Takes '{' or '['. */
bool br_xfer__jscan_begin(br_xfer__jscan *s, char open);
/* 1: a member follows, its key in s->str; 0: '}' taken; -1: an error.
 * *first starts true for each object. */
int br_xfer__jscan_member(br_xfer__jscan *s, bool *first);
/* 1: an element follows; 0: ']' taken; -1: an error. */
int br_xfer__jscan_element(br_xfer__jscan *s, bool *first);
int br_xfer__jscan_string(br_xfer__jscan *s);
int br_xfer__jscan_int(br_xfer__jscan *s, int64_t *v);
/* A string of 64 hex digits; 0 for any other value (taken). */
int br_xfer__jscan_digest(br_xfer__jscan *s, br_xfer_digest *d);
bool br_xfer__jscan_skip(br_xfer__jscan *s);
/* Only whitespace is left. */
bool br_xfer__jscan_end(br_xfer__jscan *s);
int br_xfer__jscan_bool(br_xfer__jscan *s, bool *v);
/* Records an error of the caller's at the scanner's place; returns -1. */
int br_xfer__jscan_error(br_xfer__jscan *s, const char *what);
/* {"KEY":[hex...], ...}: a malloc'd array of the digests listed under key
 * (at most max of them). Other members are skipped, except flag (may be
 * NULL), read as a boolean into *flagv when it is there. */
int br_xfer__digest_list_parse(const char *text, size_t len, const char *key, size_t max,
                               br_xfer_digest **out, size_t *n, const char *flag, bool *flagv,
                               br_error *err);
/* The text {"KEY":["hex",...]} (malloc'd, NUL-terminated, *len bytes). */
char *br_xfer__digest_list_json(const char *key, const br_xfer_digest *ds, size_t n,
                                size_t *len);

/* ---- depot object store (store.c) ---- */

typedef struct br_xfer__index br_xfer__index;
typedef struct br_xfer__store {
  char *root;
  int rootfd;
  pthread_mutex_t commit_mu;
  br_xfer__index *index; /* packs of small chunks (pack.c) */
  /* group sync (br_xfer__store_sync) */
  pthread_mutex_t sync_mu;
  pthread_cond_t sync_cv;
  uint64_t sync_ticket, sync_done;
  bool syncing;
  int sync_err;
} br_xfer__store;
/* BR_OK when root is a depot's (a folder with objects/ and snapshots/): the
 * tools that work on a depot's files never make one where there was none. */
int br_xfer__depot_root_check(const char *root, br_error *err);
/* Asks the depot at depot (a URL) to read back its copies of the chunks ds
 * (at most 8) and check them (/v1/verify); damaged[i] says which it found
 * damaged, and took out of the store. */
int br_xfer__depot_verify(const char *depot, const br_xfer_opts *opts, const br_xfer_digest *ds,
                          size_t n, bool *damaged, br_error *err);
int br_xfer__store_open(br_xfer__store *s, const char *root, br_error *err);
void br_xfer__store_close(br_xfer__store *s);
bool br_xfer__store_has(br_xfer__store *s, const br_xfer_digest *d);
/* Many objects at once (a bundle): stage writes each to a temporary file
 * and starts its write-back; commit syncs them all, renames them into place
 * and syncs each directory touched once. A staged object with fd < 0 was
 * already present. */
typedef struct br_xfer__staged {
  br_xfer_digest d;
  int fd;
  char tmp[64];
} br_xfer__staged;
/* room: the bytes from data on the caller lets the write overwrite (>= len;
 * past len, with the padding of a direct write: data is then not copied). */
int br_xfer__store_stage(br_xfer__store *s, const br_xfer_digest *d, const void *data,
                         size_t len, size_t room, br_xfer__staged *out, br_error *err);
int br_xfer__store_commit_staged(br_xfer__store *s, br_xfer__staged *st, size_t n,
                                 br_error *err);
/* Makes everything written under the root before the call durable (data,
 * new names, renames): one syncfs() of the depot's file system shared by
 * every thread that asks while it runs (a group commit), so concurrent
 * uploads pay one flush, not one per file and directory. 0 or -errno. */
int br_xfer__store_sync(br_xfer__store *s);
/* Opens an object for reading: fd, and where its bytes are in it; *raw >
 * 0 when they are a zstd frame of raw bytes (a packed chunk that came
 * compressed). */
int br_xfer__store_open_object(br_xfer__store *s, const br_xfer_digest *d, int *fd,
                               int64_t *off, int64_t *size, int64_t *raw);
/* Checks every object's bytes against its digest; *checked counts them. */
/* Told of each damaged object fsck finds (what: where and how). */
typedef void (*br_xfer__fsck_fn)(void *ud, const char *what);
int br_xfer__store_fsck(br_xfer__store *s, int64_t *checked, br_error *err);
/* Reads every object back (packed and loose) and tells each damaged one to
 * each; with set_aside, takes each out of the store (br_xfer__store_verify).
 * BR_EIO when any was damaged (err names the first), *damaged counts them. */
int br_xfer__store_fsck_ex(br_xfer__store *s, bool set_aside, br_xfer__fsck_fn each, void *ud,
                           int64_t *checked, int64_t *damaged, br_error *err);
/* One object read back and checked against d: BR_OK it matches,
 * BR_ENOTFOUND the store lacks it, BR_EIO it cannot be read or does not
 * match (err says which). With set_aside a damaged object is taken out of
 * the store: a loose one moved to damaged/, a packed one's index entry
 * dropped (its bytes stay in the pack until a gc rewrites that); the depot
 * then answers that it lacks it, and the next push of a tree that holds it
 * sends it again. */
int br_xfer__store_verify(br_xfer__store *s, const br_xfer_digest *d, bool set_aside,
                          br_error *err);

/* ---- packs of small chunks (pack.c) ---- */

#define BR_XFER__PACK_MAX_ENTRY (1024 * 1024) /* larger chunks stay loose */
typedef struct br_xfer__packed {
  br_xfer_digest d;
  int64_t off, len;
  int64_t raw; /* > 0: the len bytes are a zstd frame of raw bytes (pack.c) */
} br_xfer__packed;
int br_xfer__index_open(br_xfer__store *s, br_error *err);
void br_xfer__index_close(br_xfer__store *s);
bool br_xfer__index_has(br_xfer__store *s, const br_xfer_digest *d);
/* Many lookups in one read transaction (one file lock, not one per lookup);
 * other threads' lookups wait until the end (commits do not). */
void br_xfer__index_batch_begin(br_xfer__store *s);
void br_xfer__index_batch_end(br_xfer__store *s);
int br_xfer__index_open_object(br_xfer__store *s, const br_xfer_digest *d, int *fd,
                               int64_t *off, int64_t *len, int64_t *raw);
/* Where a packed object is: rel ("packs/NAME"), off, len, and raw (> 0:
 * stored compressed); BR_ENOTFOUND when it is not in a pack. */
int br_xfer__index_locate(br_xfer__store *s, const br_xfer_digest *d, char *rel, size_t size,
                          int64_t *off, int64_t *len, int64_t *raw);
/* Writes pack (the objects' bytes end to end, as objs locate them) as one
 * new pack file, durably, then indexes them in one transaction (shared
 * with the packs of other threads that wait for a commit at the same
 * time); rel (may be NULL) gets its name ("packs/NAME"), or "" when nothing
 * was written. */
int br_xfer__pack_write(br_xfer__store *s, const br_xfer__buf *pack,
                        const br_xfer__packed *objs, size_t n, char rel[64], br_error *err);
/* Reads every packed object back: *checked counts the sound ones, *bad
 * (malloc'd, *nbad) lists the damaged, each also told to each. */
int br_xfer__index_fsck(br_xfer__store *s, br_xfer__fsck_fn each, void *ud, int64_t *checked,
                        br_xfer_digest **bad, size_t *nbad, br_error *err);
/* A buffer reused by br_xfer__packed_check (zero it first; free it with
 * br_xfer__check_buf_free). */
typedef struct br_xfer__check_buf {
  uint8_t *buf, *scratch;
  size_t cap, scap;
} br_xfer__check_buf;
/* Reads the stored object of len bytes at off in the pack open at fd (raw
 * as its index entry says) and checks it against want: 0 it matches, 1 it
 * cannot be read (fd < 0 too), 2 its bytes do not match. */
int br_xfer__packed_check(int fd, int64_t off, int64_t len, int64_t raw,
                          const br_xfer_digest *want, br_xfer__check_buf *b);
void br_xfer__check_buf_free(br_xfer__check_buf *b);
/* Drops d's index entry if it is still at off in pack rel ("packs/NAME"). */
int br_xfer__index_forget(br_xfer__store *s, const br_xfer_digest *d, const char *rel,
                          int64_t off, br_error *err);
/* The same as pack_write; move: the objects may be indexed already (in
 * another pack) and now live in this one (gc's repack). */
int br_xfer__pack_write_ex(br_xfer__store *s, const br_xfer__buf *pack,
                           const br_xfer__packed *objs, size_t n, bool move, char rel[64],
                           br_error *err);

/* ---- the depot's pack cache (pcache.c): whole packs in memory ---- */
typedef struct br_xfer__pcache br_xfer__pcache;
typedef struct br_xfer__pcpack br_xfer__pcpack;
typedef br_depot_cache_stats br_xfer__pcache_stats;
/* A cache of at most max_bytes (buffer capacities); NULL when max_bytes <= 0
 * (every call below takes NULL as "no cache"). A read may only push out
 * packs unused for idle_s seconds (the depot's: BR_XFER__PCACHE_IDLE). */
#define BR_XFER__PCACHE_IDLE 60.0
br_xfer__pcache *br_xfer__pcache_new(int64_t max_bytes, double idle_s);
void br_xfer__pcache_free(br_xfer__pcache *c);
/* Takes buf, the whole pack rel just written, or frees it. */
void br_xfer__pcache_put(br_xfer__pcache *c, const char *rel, br_xfer__buf *buf);
/* The pack rel, held until release: kept, or (load) read whole from fd, of
 * size bytes, while other fetches of it wait for that read. NULL when it is
 * not kept and not read: read the disk. */
const br_xfer__pcpack *br_xfer__pcache_get(br_xfer__pcache *c, const char *rel, int fd,
                                           int64_t size, bool load);
const uint8_t *br_xfer__pcpack_bytes(const br_xfer__pcpack *p, size_t *len);
void br_xfer__pcache_release(br_xfer__pcache *c, const br_xfer__pcpack *p);
void br_xfer__pcache_stats_get(br_xfer__pcache *c, br_xfer__pcache_stats *out);

/* Every packed object, ordered by pack and offset; cb returns BR_OK to go
 * on. The index is held meanwhile. */
int br_xfer__index_scan(br_xfer__store *s,
                        int (*cb)(void *ud, int64_t pack, const char *name,
                                  const br_xfer_digest *d, int64_t off, int64_t len,
                                  int64_t raw),
                        void *ud, br_error *err);
/* Removes packs from the index (the objects still in them with them), in
 * one durable transaction; their files are the caller's to remove after. */
int br_xfer__index_drop_packs(br_xfer__store *s, const int64_t *ids, size_t n, br_error *err);
/* Removes packs a crash left unindexed (older than an hour): how many
 * (dry_run: counted only); *bytes (may be NULL) their size. */
int64_t br_xfer__pack_clean(br_xfer__store *s, bool dry_run, int64_t *bytes);
/* Commits manifest JSON under name as the next version (*version). */
int br_xfer__store_commit(br_xfer__store *s, const char *name, const char *json, size_t len,
                          int64_t *version, br_error *err);
/* Removes a version: vN.json becomes vN.deleted (its number is never
 * given again; its chunks go at the next gc). */
int br_xfer__store_rm(br_xfer__store *s, const char *name, int64_t version, br_error *err);
/* The lock between snapshot commits (shared) and gc (exclusive), across
 * processes: a commit's check that its chunks exist and its link are never
 * split by a gc. Returns a fd to give to unlock, or -errno. */
int br_xfer__store_lock(br_xfer__store *s, bool exclusive);
void br_xfer__store_unlock(int fd);
/* Reads a version (0 = latest): malloc'd JSON and the version found. */
int br_xfer__store_get(br_xfer__store *s, const char *name, int64_t version, char **json,
                       size_t *len, int64_t *found, br_error *err);

#endif
