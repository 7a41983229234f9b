/* Transfer: content-addressed snapshots of file trees, a depot that keeps
 * them (HTTP, libmicrohttpd) and a client that pushes and pulls them (libcurl).
 *
 * A file is a list of fixed-size chunks named by their SHA-256; a snapshot is
 * a manifest (path, size, mode, mtime, file digest, chunk digests) committed
 * under a name as version vN. Push sends only the chunks the depot lacks;
 * pull writes each file to a hidden temporary beside its destination,
 * verifies every chunk and the whole file, syncs and renames, so no partial
 * or corrupt file is ever visible under its final name.
 *
 * This module stands alone: it knows nothing of the engine. */
#ifndef BRAID_XFER_H
#define BRAID_XFER_H

#include <braid/error.h>

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BR_XFER_CHUNK_SIZE (8 * 1024 * 1024) /* fixed chunk size of files */
/* Requests in flight by default. A push keeps more: the depot answers an
 * upload only once its pack is on disk, and uploads that end together share
 * one sync, so with 8 in flight they all waited on it together and the
 * machine idled; with 16, half are sent and verified while the others
 * wait (10,000 files of 64 KiB over loopback: 0.82-0.87 s against
 * 0.88-0.96 s). A pull keeps fewer: its responses are written by threads
 * of its own, and more of them at once only shared the same cores: with 4
 * rather than 8, 10,000 files of 64 KiB over loopback took 0.875 s against
 * 0.91 s and 0.93 s against 0.975 s (medians of 6, alternated), and the
 * pull 93 MB of memory, not 131 MB; 100 files of 10 MB took the same time
 * (1.39 s against 1.45 s). Bundles are cut so that each connection has
 * two, so 4 still keeps a link of 30 ms busy. */
#define BR_XFER_PUSH_PARALLEL 16
#define BR_XFER_PULL_PARALLEL 4
#define BR_XFER_DIGEST_LEN 32                /* SHA-256 */
#define BR_XFER_DEPOT_PORT 7871              /* a depot's port unless told: depot://HOST/NAME */
#define BR_XFER_HEX_LEN 64

/* ---- digests ---------------------------------------------------------- */

typedef struct br_xfer_digest {
  uint8_t b[BR_XFER_DIGEST_LEN];
} br_xfer_digest;

/* SHA-256 of a buffer. */
void br_xfer_sha256(const void *data, size_t len, br_xfer_digest *out);
/* A file's digest: SHA-256 of its chunk digests, in order (a hash list: the
 * whole file is verified by verifying its chunks, in one pass). */
void br_xfer_file_digest(const br_xfer_digest *chunks, size_t n, br_xfer_digest *out);
/* Lower-case hex, hex must hold BR_XFER_HEX_LEN + 1 bytes. */
void br_xfer_digest_hex(const br_xfer_digest *d, char *hex);
/* Parses exactly 64 hex digits; BR_OK or BR_EINVAL. */
int br_xfer_digest_parse(const char *hex, br_xfer_digest *out);

/* ---- manifests ---------------------------------------------------------- */

enum { BR_XFER_FILE = 0, BR_XFER_SYMLINK = 1, BR_XFER_DIR = 2 };

typedef struct br_xfer_entry {
  char *path;        /* relative, '/'-separated, checked by br_xfer_path_check */
  int type;          /* BR_XFER_FILE, BR_XFER_SYMLINK or BR_XFER_DIR */
  int64_t size;
  uint32_t mode;     /* permission bits only */
  int64_t mtime_ns;
  br_xfer_digest digest; /* whole file: br_xfer_file_digest of the chunks */
  br_xfer_digest *chunks; /* ceil(size / chunk_size) digests (1 for empty: none) */
  size_t nchunks;
  char *target;      /* symlinks: relative target inside the tree */
  char *same_as;     /* files: another file entry's path this one is a hard link
                      * of (NULL: none); that entry has the same size and digest
                      * and no same_as of its own */
} br_xfer_entry;

typedef struct br_xfer_manifest {
  char *name;        /* snapshot name, e.g. "shot010/cloth" (may be NULL) */
  int64_t version;   /* 0 before commit */
  int64_t chunk_size;
  br_xfer_entry *entries;
  size_t nentries, cap;
} br_xfer_manifest;

br_xfer_manifest *br_xfer_manifest_new(void);
void br_xfer_manifest_free(br_xfer_manifest *m);
/* Appends an entry; takes ownership of nothing: strings and chunks are copied. */
int br_xfer_manifest_add(br_xfer_manifest *m, const br_xfer_entry *e, br_error *err);
/* Serialises to JSON; the caller frees the returned string. */
char *br_xfer_manifest_dump(const br_xfer_manifest *m);
/* Parses and validates (paths, sizes, chunk counts, duplicate paths, symlink
 * targets, hard links). len bounds the input; max_entries 0 = default limit. */
int br_xfer_manifest_parse(const char *json, size_t len, br_xfer_manifest **out,
                           br_error *err);
/* Limits the depot and client apply to manifests. */
#define BR_XFER_MAX_MANIFEST_BYTES (256 * 1024 * 1024)
#define BR_XFER_MAX_ENTRIES 2000000

/* ---- path safety ----------------------------------------------------- */

/* Checks a relative path that came from a manifest or the network: not
 * empty or absolute, no "." or ".." or empty components, no backslash,
 * colon or control characters, no Windows-reserved names (CON, NUL, COM1,
 * ...), no trailing dot or space, not one of braid's own temporary names. */
int br_xfer_path_check(const char *path, br_error *err);
/* Checks a symlink's target relative to the link's path: relative, and its
 * lexical resolution stays inside the tree. */
int br_xfer_link_check(const char *path, const char *target, br_error *err);
/* Checks a snapshot name: '/'-separated segments of [A-Za-z0-9._-], none
 * starting with '.', at most 255 bytes. */
int br_xfer_name_check(const char *name, br_error *err);

/* ---- tokens ---------------------------------------------------------- */

/* A new random token (hex, 64 chars + NUL into buf). */
int br_xfer_token_new(char *buf, size_t size, br_error *err);
/* "sha256:<hex>" of a token into buf (72 bytes). */
void br_xfer_token_hash(const char *token, char *buf, size_t size);

/* ---- the depot ------------------------------------------------------- */

typedef struct br_depot br_depot;

/* What a depot request does, for the token check: reads (pull), writes
 * (chunk uploads, snapshot commits) or administers (removing versions,
 * garbage collection: /v1/admin/...). */
typedef enum br_depot_access {
  BR_DEPOT_READ = 0,
  BR_DEPOT_WRITE = 1,
  BR_DEPOT_ADMIN = 2,
} br_depot_access;

typedef struct br_depot_opts {
  const char *root;        /* directory of objects and snapshots (created) */
  const char *listen;      /* "127.0.0.1:7871"; port 0 picks one */
  const char *token_file;  /* lines "sha256:<hex>", a plain token, or the braid
                            * server's JSON lines ({"sha256": ...}); re-read when it
                            * changes; required unless authorize is given */
  const char *admin_token_file; /* beside token_file: its tokens (same format)
                            * may also remove versions and collect garbage
                            * over HTTP (and read and write); NULL = no admin
                            * requests (403) */
  /* Instead of token_file (a depot mounted in braid server, whose tokens have
   * roles): decides every request from its bearer token (NULL when none)
   * and what the request does. Returns 0 to allow, or the HTTP status to
   * refuse with (401: no or unknown token, 403: the token may not do this).
   * Called from the server's threads. */
  int (*authorize)(void *ud, const char *token, br_depot_access access);
  void *authorize_ud;
  int64_t max_request;     /* bytes of one request body, 0 = default 65 MiB */
  int64_t max_manifest;    /* bytes of one manifest, 0 = BR_XFER_MAX_MANIFEST_BYTES */
  int64_t max_memory;      /* request and response bodies held at once, 0 = 1 GiB;
                            * past it requests get 503 and clients retry */
  int64_t cache;           /* bytes of packs kept in memory for fetches: packs
                            * just written, and those fetches read whole (what
                            * a farm pulls next, or many machines at once);
                            * 0 = BR_DEPOT_CACHE_DEFAULT, negative = none */
  br_warn_fn *warn;        /* told of what the operator should fix (a token
                            * file's line skipped, at each read); may be NULL */
  void *warn_ud;
  br_warn_fn *log;         /* told of each change to the depot, a line each:
                            * a version committed (or a push of the latest
                            * again), versions removed, a gc over HTTP; from
                            * the server's threads; may be NULL */
  void *log_ud;
} br_depot_opts;
#define BR_DEPOT_CACHE_DEFAULT ((int64_t)512 << 20)

/* Starts serving in background threads. */
int br_depot_start(const br_depot_opts *opts, br_depot **out, br_error *err);

/* A depot mounted inside another libmicrohttpd server (braid server): open
 * it without a listener; in the server's access handler, hand it every
 * request for which br_depot_owns_url is true (clients then use the
 * server's address as the depot's); call br_depot_request_done from the
 * server's completion callback for those. br_depot_handle returns 1 for
 * MHD_YES, 0 for MHD_NO. */
struct MHD_Connection;
int br_depot_owns_url(const char *url);
int br_depot_open(const br_depot_opts *opts, br_depot **out, br_error *err);
int br_depot_handle(br_depot *d, struct MHD_Connection *c, const char *url, const char *method,
                    const char *upload_data, size_t *upload_data_size, void **con_cls);
void br_depot_request_done(void **con_cls);
/* Reads every object of the depot at root back and checks it against its
 * digest; *checked counts the good ones. */
int br_depot_fsck(const char *root, int64_t *checked, br_error *err);
/* The same, reading everything and telling each damaged object to each
 * (what: where and how; NULL: nobody) rather than stopping at the first;
 * *damaged counts them, and BR_EIO says there were any. With set_aside each
 * is taken out of the store (a loose object moved to damaged/, a packed
 * one's index entry dropped), so that the depot answers it lacks it and the
 * next push of a tree that holds it sends it again. */
int br_depot_fsck_ex(const char *root, bool set_aside, void (*each)(void *ud, const char *what),
                     void *ud, int64_t *checked, int64_t *damaged, br_error *err);
/* Removes version `version` of snapshot `name` from the depot at root (a
 * running depot may use it meanwhile). Its number is never given again;
 * chunks only it named go at the next br_depot_gc. */
int br_depot_rm(const char *root, const char *name, int64_t version, br_error *err);

/* One version in a depot's listing. */
typedef struct br_depot_entry {
  char *name;      /* "shot010/cloth" */
  int64_t version; /* N of vN */
  int64_t time;    /* when it was committed (Unix seconds) */
  int64_t files;   /* its files and their bytes: with detail, else -1 */
  int64_t bytes;
} br_depot_entry;

/* The live versions of the depot at root, by name then version: those of
 * snapshot `name` and of the names below it (name/...), or all (NULL or
 * ""). detail: files and bytes too, from each version's manifest (a read of
 * every one listed). *out: free with br_depot_list_free. */
int br_depot_list(const char *root, const char *name, bool detail, br_depot_entry **out,
                  size_t *n, br_error *err);
void br_depot_list_free(br_depot_entry *v, size_t n);

typedef struct br_depot_gc_result {
  int64_t snapshots;       /* live versions read */
  int64_t live_chunks;     /* distinct chunks they name */
  int64_t objects_removed; /* chunks removed (loose, or in packs dropped or rewritten) */
  int64_t packs_removed;   /* pack files removed (dropped, or rewritten elsewhere) */
  int64_t packs_rewritten; /* packs whose live part moved to a new pack */
  int64_t bytes_freed;
  int64_t kept_young;      /* unnamed chunks kept: younger than the grace period */
} br_depot_gc_result;

/* Removes the chunks no live snapshot names and that are older than
 * grace_s seconds (the chunks of a push not yet committed are young), from
 * the depot at root; safe beside a running depot (see src/xfer/gc.c).
 * dry_run: count only. */
int br_depot_gc(const char *root, int64_t grace_s, bool dry_run, br_depot_gc_result *res,
                br_error *err);
/* The port actually listened on (0 for a depot from br_depot_open). */
int br_depot_port(const br_depot *d);
/* What the pack cache (br_depot_opts.cache) did since the depot started,
 * and what it holds now. */
typedef struct br_depot_cache_stats {
  int64_t hits, misses;  /* fetches' lookups of a pack (misses: not kept) */
  int64_t waited;        /* hits that waited for another fetch's read of it */
  int64_t kept, loaded;  /* packs kept when written; packs read whole */
  int64_t evicted;       /* packs dropped for room */
  int64_t bytes, max, packs; /* now */
} br_depot_cache_stats;
void br_depot_cache_stats_get(br_depot *d, br_depot_cache_stats *out);
void br_depot_stop(br_depot *d);

/* ---- push and pull --------------------------------------------------- */

typedef struct br_xfer_progress {
  const char *phase;       /* push: "scan", "hash", "compare", "send", "commit";
                            * pull: "manifest", ("waiting"), "check", "fetch";
                            * then "done" or "failed" */
  int64_t files_done, files_total;
  int64_t bytes_done, bytes_total; /* bytes of the tree accounted for */
  int64_t bytes_moved;     /* bytes that went over the network (payload) */
  double elapsed;          /* seconds */
  int retries;             /* transient errors retried so far */
} br_xfer_progress;

typedef void (*br_xfer_progress_fn)(const br_xfer_progress *p, void *ud);

typedef struct br_xfer_opts {
  const char *token;        /* bearer token; required by the depot */
  const char *ca_file;      /* HTTPS: verify the depot against this CA file (PEM);
                             * NULL = the system's */
  int parallel;             /* requests in flight; 0 (default): BR_XFER_PUSH_PARALLEL
                             * for a push, BR_XFER_PULL_PARALLEL for a pull */
  int64_t bwlimit;          /* bytes per second over all transfers, 0 = none */
  int64_t max_memory;       /* bound on buffered payload, default 256 MiB */
  int64_t bundle_bytes;     /* small files bundled per request, default 8 MiB */
  int64_t small_file;       /* files at most this size are bundled, default 1 MiB */
  int64_t max_manifest;     /* pull: largest manifest accepted, default BR_XFER_MAX_MANIFEST_BYTES */
  int64_t chunk_size;       /* push: chunk size, default BR_XFER_CHUNK_SIZE (64 KiB..64 MiB) */
  int retries;              /* attempts after the first for transient errors, default 6 */
  int backoff_ms;           /* first backoff delay, default 200 */
  int timeout_s;            /* a request that moves nothing this long fails, default 30 */
  int compress;             /* zstd per chunk: 0 off, 1 on when it helps (default 1) */
  int hash_threads;         /* default: number of CPUs */
  const char *cache_path;   /* hash cache (SQLite); NULL = default, "" = none */
  /* pull: a local content cache shared by pulls on this host (NULL = none).
   * Files already fetched for another snapshot are hard-linked from it (or
   * copied across file systems) instead of fetched again; pulled files go
   * into it. Hard links share one inode: treat pulled files as read-only. */
  const char *content_cache;
  /* pull: write files with direct I/O (O_DIRECT) where the file system
   * allows it, default 1: nothing to copy into the page cache and nothing
   * left for the sync to write; 0 leaves the files in the page cache (for a
   * reader right after). */
  int direct_io;
  /* pull: how pulled files are made durable before their renames. 0 (the
   * default): one syncfs() of the destination's file system per batch of
   * files, the fastest for many files, but it also writes back whatever
   * other programs left dirty on that file system; 1: an fsync() per file
   * and per directory renamed into, nothing else is flushed. */
  int sync_files;
  /* push: told of each path the scan refuses (a name that would not pull
   * everywhere, a link out of the tree, a device; msg names it and why), as
   * every tree of the push is scanned before it fails; NULL: the error
   * names the first few. */
  br_warn_fn *refused;
  void *refused_ud;
  br_xfer_progress_fn progress;
  void *progress_ud;
  double progress_interval; /* seconds between progress calls, default 0.5 */
  /* Set non-zero to cancel; may be NULL. Set it from a signal handler, or
   * from another thread with an atomic store (__atomic_store_n): transfer
   * threads read it with an atomic load. */
  volatile sig_atomic_t *cancel;
} br_xfer_opts;

void br_xfer_opts_init(br_xfer_opts *o);

typedef struct br_xfer_result {
  int64_t version;         /* the version committed or checked out (the first of many) */
  int64_t same_as;         /* push: that version's previous one, when the tree is the same */
  int64_t files, bytes;    /* tree totals */
  int64_t files_moved, bytes_moved, chunks_moved;
  int64_t chunks_skipped;  /* already present (push) or verified locally (pull) */
  int64_t files_reused;    /* pull: taken from the content cache */
  int64_t hashed_bytes;    /* push: bytes hashed (cache misses) */
  int64_t files_read_ahead; /* push: small files not in memory, read while others hashed */
  int retries;
  double seconds;
  char warning[1280]; /* what the user should know that did not stop it ("" none) */
} br_xfer_result;

/* A snapshot location: "http://host:port/NAME[@vN|@latest]" (also depot://). */
typedef struct br_xfer_ref {
  char *base;    /* "http://host:port" */
  char *name;    /* "shot010/cloth" */
  int64_t version; /* 0 = latest */
} br_xfer_ref;
int br_xfer_ref_parse(const char *s, br_xfer_ref *out, br_error *err);
void br_xfer_ref_free(br_xfer_ref *r);
/* A depot's address alone, "depot://HOST:PORT[/]" (or depots://, http://,
 * https://), as the base a ref has ("http://HOST:PORT", malloc'd); NULL
 * when s is not one. */
char *br_xfer_depot_base(const char *s);

/* What became of one pair of a push or pull of many. */
typedef struct br_xfer_pair {
  int64_t version; /* committed (push) or checked out (pull) */
  int64_t same_as; /* push: the version before when this one holds the same tree, else 0 */
} br_xfer_pair;

/* Pushes dirs[i] to targets[i] (n pairs, all on one depot) with one bound
 * on parallel work and commits each as a new version; pairs[i] (pairs may
 * be NULL) tells which. Nothing is committed unless every chunk arrived. */
int br_xfer_push_many(const char *const *dirs, const char *const *targets, size_t n,
                      const br_xfer_opts *opts, br_xfer_pair *pairs, br_xfer_result *res,
                      br_error *err);
int br_xfer_push(const char *dir, const char *target, const br_xfer_opts *opts,
                 br_xfer_result *res, br_error *err);

/* Pulls sources[i] into dirs[i] (n pairs) together. Files in a destination
 * that are not in the snapshot are left alone. A pull into a directory
 * another pull is writing waits for it (phase "waiting"). */
int br_xfer_pull_many(const char *const *sources, const char *const *dirs, size_t n,
                      const br_xfer_opts *opts, br_xfer_pair *pairs, br_xfer_result *res,
                      br_error *err);
int br_xfer_pull(const char *source, const char *dir, const br_xfer_opts *opts,
                 br_xfer_result *res, br_error *err);

/* ---- administering a running depot ----------------------------------- */

/* br_depot_rm and br_depot_gc, asked of a running depot over HTTP (POST
 * /v1/admin/rm and /v1/admin/gc) instead of done on its root: from any
 * machine, with an admin token (one of the depot's admin_token_file, or a
 * braid server's admin token). depot is "depot://HOST:PORT[/]" (depots://,
 * http://, https://). Of opts (may be NULL) only token, ca_file and cancel
 * are used. One request, no retries; an rm may take 10 minutes, a gc as
 * long as it needs. A cancel before the call sends nothing; during it, the
 * call stops waiting (BR_ECANCEL) but the depot may still finish what it
 * was asked. Errors: the depot's message and "(HTTP <status>)", coded
 * BR_EAUTH (401, 403), BR_ENOTFOUND (404), BR_EINVAL (other 4xx), BR_EIO
 * (the depot failed); BR_ENET when the depot could not be reached or was
 * busy (503): the same call may succeed later. */

/* One version of a snapshot. */
typedef struct br_xfer_version {
  const char *name;  /* "shot010/cloth" */
  int64_t version;   /* N of vN, >= 1 */
} br_xfer_version;

/* Removes versions[0..n-1] from the depot. The depot goes on past a
 * version it cannot remove (its error names each such version, the first
 * gives the status): removed[i] (n entries, may be NULL) says whether
 * versions[i] went, on failure too. */
int br_xfer_depot_rm(const char *depot, const br_xfer_version *versions, size_t n,
                     const br_xfer_opts *opts, bool *removed, br_error *err);
/* A gc of the depot, as br_depot_gc on its root: *res gets the depot's
 * counts (all zero on failure). */
int br_xfer_depot_gc(const char *depot, int64_t grace_s, bool dry_run, const br_xfer_opts *opts,
                     br_depot_gc_result *res, br_error *err);
/* br_depot_list asked of a running depot (POST /v1/list): any token that
 * may pull may list. */
int br_xfer_depot_list(const char *depot, const char *name, bool detail, const br_xfer_opts *opts,
                       br_depot_entry **out, size_t *n, br_error *err);

#ifdef __cplusplus
}
#endif
#endif
