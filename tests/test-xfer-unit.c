/* xfer building blocks without a network: digests, path and name checks
 * (each attack), manifest validation and limits, bundles, tokens, the rate
 * limiter and the hash cache. */
#include "xfer-util.h"

#include <jansson.h>
#include <sys/uio.h>

#include "xfer/client_int.h"
#include "xfer/xfer_int.h"

TEST(digest_hex_roundtrip) {
  br_xfer_digest d, e;
  br_xfer_sha256("abc", 3, &d);
  char hex[65];
  br_xfer_digest_hex(&d, hex);
  CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK_EQ_INT(br_xfer_digest_parse(hex, &e), BR_OK);
  CHECK(memcmp(d.b, e.b, 32) == 0);
  CHECK(br_xfer_digest_parse("zz", &e) != BR_OK);
  /* upper case is the same digest */
  char up[65];
  for (int i = 0; i < 65; i++) up[i] = (char)(hex[i] >= 'a' ? hex[i] - 32 : hex[i]);
  CHECK_EQ_INT(br_xfer_digest_parse(up, &e), BR_OK);
  CHECK(memcmp(d.b, e.b, 32) == 0);
  /* every byte that is not a hex digit, at the first, a middle and the last place */
  for (int c = 1; c < 256; c++) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) continue;
    int at[] = {0, 31, 63};
    for (int k = 0; k < 3; k++) {
      char bad[65];
      memcpy(bad, hex, sizeof bad);
      bad[at[k]] = (char)c;
      if (br_xfer_digest_parse(bad, &e) == BR_OK || br_xfer__digest_parse_n(bad, 64, &e) == BR_OK)
        br_test_fail(__FILE__, __LINE__, "accepted byte %d at %d", c, at[k]);
    }
  }
  /* a length other than 64 */
  CHECK(br_xfer__digest_parse_n(hex, 63, &e) != BR_OK);
  hex[63] = 0;
  CHECK(br_xfer_digest_parse(hex, &e) != BR_OK);
  CHECK(br_xfer_digest_parse(NULL, &e) != BR_OK);
  char longer[70];
  memset(longer, 'a', sizeof longer - 1);
  longer[sizeof longer - 1] = 0;
  CHECK(br_xfer_digest_parse(longer, &e) != BR_OK);
}

TEST(path_attacks_rejected) {
  const char *bad[] = {"",          "/etc/passwd", "../x",      "a/../../x", "a/..",
                       "./a",       "a//b",        "a/",        "a\\b",      "C:/x",
                       "CON",       "con.txt",     "a/NUL",     "COM1.exr",  "lpt9",
                       "aux.0001.exr", "x.",       "y ",        "a\nb",      "a/\x01",
                       ".braid-partial-abcd", "q?", "s*"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    br_error err;
    br_error_clear(&err);
    if (br_xfer_path_check(bad[i], &err) == BR_OK)
      br_test_fail(__FILE__, __LINE__, "accepted unsafe path '%s'", bad[i]);
    CHECK(err.msg[0] != 0);
  }
  char longp[5000];
  memset(longp, 'a', sizeof longp - 1);
  longp[sizeof longp - 1] = 0;
  CHECK(br_xfer_path_check(longp, NULL) != BR_OK);
  const char *good[] = {"a", "shot010/cloth/cloth.0001.bgeo.sc", ".hidden", "a b/c-d_e.f",
                        "console", "COM10", "frames/img_0001.exr"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    if (br_xfer_path_check(good[i], NULL) != BR_OK)
      br_test_fail(__FILE__, __LINE__, "refused safe path '%s'", good[i]);
}

TEST(symlink_targets) {
  CHECK_EQ_INT(br_xfer_link_check("a/b/link", "../c", NULL), BR_OK);
  CHECK_EQ_INT(br_xfer_link_check("a/b/link", "../../c", NULL), BR_OK);
  CHECK_EQ_INT(br_xfer_link_check("a/link", "x/./y", NULL), BR_OK);
  CHECK(br_xfer_link_check("a/b/link", "../../../etc", NULL) != BR_OK);
  CHECK(br_xfer_link_check("link", "..", NULL) != BR_OK);
  CHECK(br_xfer_link_check("link", "/etc/passwd", NULL) != BR_OK);
  CHECK(br_xfer_link_check("a/link", "b/../../../x", NULL) != BR_OK);
  CHECK(br_xfer_link_check("link", "", NULL) != BR_OK);
}

TEST(snapshot_names) {
  CHECK_EQ_INT(br_xfer_name_check("shot010/cloth", NULL), BR_OK);
  CHECK_EQ_INT(br_xfer_name_check("a.b-c_d", NULL), BR_OK);
  const char *bad[] = {"", "/abs", "a//b", "../x", "a/.hidden", "a b", "a@v1", "x/", "a?b"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (br_xfer_name_check(bad[i], NULL) == BR_OK)
      br_test_fail(__FILE__, __LINE__, "accepted name '%s'", bad[i]);
}

TEST(refs_parse) {
  br_xfer_ref r;
  CHECK_EQ_INT(br_xfer_ref_parse("depot://farm:7871/shot010/cloth@v12", &r, NULL), BR_OK);
  CHECK_EQ_STR(r.base, "http://farm:7871");
  CHECK_EQ_STR(r.name, "shot010/cloth");
  CHECK_EQ_INT(r.version, 12);
  br_xfer_ref_free(&r);
  CHECK_EQ_INT(br_xfer_ref_parse("http://h/x@latest", &r, NULL), BR_OK);
  CHECK_EQ_INT(r.version, 0);
  br_xfer_ref_free(&r);
  br_error err;
  br_error_clear(&err);
  CHECK(br_xfer_ref_parse("ftp://h/x", &r, &err) != BR_OK);
  CHECK(br_xfer_ref_parse("depot://h", &r, NULL) != BR_OK);
  CHECK(br_xfer_ref_parse("depot://h/x@vx", &r, NULL) != BR_OK);
  CHECK(br_xfer_ref_parse("depot://h/../x", &r, NULL) != BR_OK);
  /* a depot:// address without a port gets the depot's; http:// keeps 80 */
  CHECK_EQ_INT(br_xfer_ref_parse("depot://farm/x", &r, NULL), BR_OK);
  CHECK_EQ_STR(r.base, "http://farm:7871");
  br_xfer_ref_free(&r);
  CHECK_EQ_INT(br_xfer_ref_parse("depots://[::1]/x", &r, NULL), BR_OK);
  CHECK_EQ_STR(r.base, "https://[::1]:7871");
  br_xfer_ref_free(&r);
  CHECK_EQ_INT(br_xfer_ref_parse("https://farm.studio.lan:443/x", &r, NULL), BR_OK);
  CHECK_EQ_STR(r.base, "https://farm.studio.lan:443");
  br_xfer_ref_free(&r);
  char *b = br_xfer_depot_base("depot://farm/");
  CHECK_EQ_STR(b, "http://farm:7871");
  free(b);
  /* hosts and ports are checked before anything connects */
  static const char *bad[] = {"depot://h:abc/x", "depot://h:0/x",     "depot://h:65536/x",
                              "depot://h:/x",    "depot://:1/x",      "depot://a b:1/x",
                              "depot://u@h:1/x", "depot://[zz]:1/x",  "depot://[::1]x/x",
                              "depot://[]:1/x",  "depot://h:1/x@v99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (br_xfer_ref_parse(bad[i], &r, NULL) == BR_OK)
      br_test_fail(__FILE__, __LINE__, "accepted '%s'", bad[i]);
    char *base = br_xfer_depot_base(bad[i]);
    CHECK(base == NULL);
  }
}

static char *manifest_with(const char *entry) {
  char *s = NULL;
  if (asprintf(&s, "{\"format\":1,\"chunk_size\":65536,\"files\":[%s]}", entry) < 0) abort();
  return s;
}

#define D64 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" /* file digest of no chunks */

TEST(manifest_roundtrip_and_validation) {
  br_xfer_manifest *m = br_xfer_manifest_new();
  m->chunk_size = 65536;
  br_xfer_digest cs[2];
  br_xfer_sha256("a", 1, &cs[0]);
  br_xfer_sha256("b", 1, &cs[1]);
  br_xfer_entry e = {0};
  e.path = (char *)"dir/f.0001.exr";
  e.type = BR_XFER_FILE;
  e.size = 70000;
  e.mode = 0644;
  e.mtime_ns = 123456789;
  br_xfer_file_digest(cs, 2, &e.digest);
  e.chunks = cs;
  e.nchunks = 2;
  CHECK_EQ_INT(br_xfer_manifest_add(m, &e, NULL), BR_OK);
  br_xfer_entry l = {0};
  l.path = (char *)"dir/link";
  l.type = BR_XFER_SYMLINK;
  l.target = (char *)"f.0001.exr";
  CHECK_EQ_INT(br_xfer_manifest_add(m, &l, NULL), BR_OK);
  char *s = br_xfer_manifest_dump(m);
  br_xfer_manifest *p = NULL;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_manifest_parse(s, strlen(s), &p, &err), BR_OK);
  CHECK_EQ_INT(p->nentries, 2);
  CHECK_EQ_STR(p->entries[0].path, "dir/f.0001.exr");
  CHECK_EQ_INT(p->entries[0].size, 70000);
  CHECK_EQ_INT(p->entries[0].nchunks, 2);
  CHECK_EQ_INT(p->entries[0].mtime_ns, 123456789);
  CHECK(memcmp(p->entries[0].chunks[1].b, cs[1].b, 32) == 0);
  CHECK_EQ_STR(p->entries[1].target, "f.0001.exr");
  br_xfer_manifest_free(p);
  br_xfer_manifest_free(m);
  free(s);

  /* Attacks and inconsistencies, each refused with a message. */
  const char *bad[] = {
      "{\"path\":\"../x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}",
      "{\"path\":\"/etc/passwd\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}",
      "{\"path\":\"a/../../b\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}",
      "{\"path\":\"l\",\"type\":\"symlink\",\"target\":\"/etc\"}",
      "{\"path\":\"a/l\",\"type\":\"symlink\",\"target\":\"../../etc\"}",
      "{\"path\":\"x\",\"type\":\"device\"}",
      "{\"path\":\"NUL\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}",
      "{\"path\":\"x\",\"size\":10,\"digest\":\"" D64 "\",\"chunks\":[]}",
      "{\"path\":\"x\",\"size\":-1,\"digest\":\"" D64 "\",\"chunks\":[]}",
      "{\"path\":\"x\",\"size\":1,\"digest\":\"nothex\",\"chunks\":[\"" D64 "\"]}",
      "{\"path\":\"x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]},"
      "{\"path\":\"x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}",
      /* a file digest that does not match its chunk list */
      "{\"path\":\"x\",\"size\":1,\"digest\":\"" D64 "\",\"chunks\":[\"" D64 "\"]}",
      /* hard links: to nothing, to itself, to a link, to a link of a link;
       * a link that is no file; a same_as that is no string */
      "{\"path\":\"y\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[],\"same_as\":\"x\"}",
      "{\"path\":\"x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[],\"same_as\":\"x\"}",
      "{\"path\":\"l\",\"type\":\"symlink\",\"target\":\"y\"},"
      "{\"path\":\"y\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[],\"same_as\":\"l\"}",
      "{\"path\":\"x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]},"
      "{\"path\":\"y\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[],\"same_as\":\"x\"},"
      "{\"path\":\"z\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[],\"same_as\":\"y\"}",
      "{\"path\":\"x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]},"
      "{\"path\":\"d\",\"type\":\"dir\",\"same_as\":\"x\"}",
      "{\"path\":\"x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]},"
      "{\"path\":\"y\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[],\"same_as\":1}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *js = manifest_with(bad[i]);
    br_error_clear(&err);
    p = NULL;
    if (br_xfer_manifest_parse(js, strlen(js), &p, &err) == BR_OK)
      br_test_fail(__FILE__, __LINE__, "accepted manifest %s", js);
    CHECK(err.msg[0] != 0);
    CHECK(p == NULL);
    free(js);
  }
  CHECK(br_xfer_manifest_parse("{not json", 9, &p, NULL) != BR_OK);
  CHECK(br_xfer_manifest_parse("{\"format\":1}", 12, &p, NULL) != BR_OK);
  /* A well-formed empty file passes (the control for the cases above), and
   * a hard link of it. */
  char *ok = manifest_with("{\"path\":\"x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}");
  CHECK_EQ_INT(br_xfer_manifest_parse(ok, strlen(ok), &p, NULL), BR_OK);
  br_xfer_manifest_free(p);
  free(ok);
  ok = manifest_with(
      "{\"path\":\"y\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[],\"same_as\":\"x\"},"
      "{\"path\":\"x\",\"size\":0,\"digest\":\"" D64 "\",\"chunks\":[]}");
  CHECK_EQ_INT(br_xfer_manifest_parse(ok, strlen(ok), &p, NULL), BR_OK);
  CHECK_EQ_STR(p->entries[0].same_as, "x");
  CHECK(p->entries[1].same_as == NULL);
  br_xfer_manifest_free(p);
  free(ok);
}

/* A hard link names a file of the manifest with its bytes: one with other
 * bytes is refused, and the message names both paths. */
TEST(manifest_hard_links_hold_their_files_bytes) {
  br_xfer_manifest *m = br_xfer_manifest_new();
  m->chunk_size = 65536;
  br_xfer_digest cs[2];
  br_xfer_sha256("a", 1, &cs[0]);
  br_xfer_sha256("b", 1, &cs[1]);
  br_xfer_entry e = {.path = (char *)"cache/f.0001.bgeo", .type = BR_XFER_FILE, .size = 70000,
                     .mode = 0644, .chunks = cs, .nchunks = 2};
  br_xfer_file_digest(cs, 2, &e.digest);
  CHECK_EQ_INT(br_xfer_manifest_add(m, &e, NULL), BR_OK);
  br_xfer_entry l = e;
  l.path = (char *)"latest.bgeo";
  l.same_as = (char *)"cache/f.0001.bgeo";
  CHECK_EQ_INT(br_xfer_manifest_add(m, &l, NULL), BR_OK);
  char *s = br_xfer_manifest_dump(m);
  CHECK_CONTAINS(s, "\"same_as\":\"cache/f.0001.bgeo\"");
  br_xfer_manifest *p = NULL;
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_manifest_parse(s, strlen(s), &p, &err), BR_OK);
  CHECK_EQ_STR(p->entries[1].same_as, "cache/f.0001.bgeo");
  br_xfer_manifest_free(p);
  free(s);
  /* the link with other bytes (one chunk less) */
  m->entries[1].size = 60000;
  m->entries[1].nchunks = 1;
  br_xfer_file_digest(cs, 1, &m->entries[1].digest);
  s = br_xfer_manifest_dump(m);
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer_manifest_parse(s, strlen(s), &p, &err), BR_EINVAL);
  CHECK_CONTAINS(err.msg,
                 "'latest.bgeo': hard link to 'cache/f.0001.bgeo', which holds other bytes");
  free(s);
  br_xfer_manifest_free(m);
}

TEST(manifest_size_limits) {
  /* Over the byte limit: refused before parsing. */
  br_xfer_manifest *p = NULL;
  br_error err;
  br_error_clear(&err);
  CHECK(br_xfer_manifest_parse("{}", (size_t)BR_XFER_MAX_MANIFEST_BYTES + 1, &p, &err) !=
        BR_OK);
  CHECK_CONTAINS(err.msg, "too large");
}

/* The manifest writer gives what jansson's compact form of the same
 * document is, byte for byte: a depot compares an unchanged push's
 * manifest with the stored one as bytes, and stored ones came from jansson. */
TEST(manifest_text_is_janssons) {
  br_xfer_manifest *m = br_xfer_manifest_new();
  m->name = strdup("shot010/cloth");
  br_xfer_digest cs[3];
  for (int i = 0; i < 3; i++) br_xfer_sha256(&i, sizeof i, &cs[i]);
  const char *paths[] = {"a/f.0001.bgeo", "caf\xc3\xa9/say hi", "\xe2\x82\xac/x y"};
  for (int i = 0; i < 3; i++) {
    br_xfer_entry e = {0};
    if (i == 2) e.same_as = (char *)paths[1]; /* a hard link: the same bytes */
    e.path = (char *)paths[i];
    e.type = BR_XFER_FILE;
    e.size = i == 0 ? 0 : 2 * 65536 + 1;
    e.nchunks = i == 0 ? 0 : 3;
    e.chunks = e.nchunks ? cs : NULL;
    e.mode = i == 2 ? 0755 : 0644;
    e.mtime_ns = i == 1 ? -5 : INT64_MAX;
    br_xfer_file_digest(cs, e.nchunks, &e.digest);
    CHECK_EQ_INT(br_xfer_manifest_add(m, &e, NULL), BR_OK);
  }
  br_xfer_entry l = {.path = (char *)"a/link", .type = BR_XFER_SYMLINK, .mode = 0777,
                     .target = (char *)"f.0001.bgeo"};
  br_xfer_entry d = {.path = (char *)"empty", .type = BR_XFER_DIR, .mode = 0700};
  CHECK_EQ_INT(br_xfer_manifest_add(m, &l, NULL), BR_OK);
  CHECK_EQ_INT(br_xfer_manifest_add(m, &d, NULL), BR_OK);
  m->chunk_size = 65536;
  char *mine = br_xfer_manifest_dump(m);
  /* the same document through jansson */
  json_t *root = json_object(), *files = json_array();
  json_object_set_new(root, "format", json_integer(1));
  json_object_set_new(root, "name", json_string(m->name));
  json_object_set_new(root, "chunk_size", json_integer(65536));
  char hex[65];
  for (size_t i = 0; i < m->nentries; i++) {
    const br_xfer_entry *e = &m->entries[i];
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(e->path));
    json_object_set_new(o, "type", json_string(e->type == BR_XFER_FILE      ? "file"
                                               : e->type == BR_XFER_SYMLINK ? "symlink"
                                                                             : "dir"));
    json_object_set_new(o, "mode", json_integer(e->mode));
    if (e->type == BR_XFER_FILE) {
      json_object_set_new(o, "size", json_integer(e->size));
      json_object_set_new(o, "mtime_ns", json_integer(e->mtime_ns));
      br_xfer_digest_hex(&e->digest, hex);
      json_object_set_new(o, "digest", json_string(hex));
      json_t *a = json_array();
      for (size_t c = 0; c < e->nchunks; c++) {
        br_xfer_digest_hex(&e->chunks[c], hex);
        json_array_append_new(a, json_string(hex));
      }
      json_object_set_new(o, "chunks", a);
      if (e->same_as) json_object_set_new(o, "same_as", json_string(e->same_as));
    } else if (e->type == BR_XFER_SYMLINK) {
      json_object_set_new(o, "target", json_string(e->target));
    }
    json_array_append_new(files, o);
  }
  json_object_set_new(root, "files", files);
  char *theirs = json_dumps(root, JSON_COMPACT);
  CHECK_EQ_STR(mine, theirs);
  /* and it reads back whole */
  br_xfer_manifest *p = NULL;
  br_error err;
  br_error_clear(&err);
  if (br_xfer_manifest_parse(mine, strlen(mine), &p, &err) != BR_OK)
    br_test_fail(__FILE__, __LINE__, "%s", err.msg);
  CHECK_EQ_INT(p->nentries, 5);
  CHECK_EQ_STR(p->name, "shot010/cloth");
  CHECK_EQ_STR(p->entries[1].path, paths[1]);
  CHECK_EQ_INT(p->entries[1].mtime_ns, -5);
  CHECK_EQ_INT(p->entries[2].mtime_ns, INT64_MAX);
  CHECK_EQ_INT(p->entries[2].nchunks, 3);
  CHECK(memcmp(&p->entries[2].chunks[2], &cs[2], sizeof cs[2]) == 0);
  CHECK_EQ_INT(p->entries[2].mode, 0755);
  CHECK_EQ_STR(p->entries[2].same_as, paths[1]);
  CHECK_EQ_STR(p->entries[3].target, "f.0001.bgeo");
  CHECK_EQ_INT(p->entries[4].type, BR_XFER_DIR);
  br_xfer_manifest_free(p);
  json_decref(root);
  free(theirs);
  free(mine);
  /* escapes as jansson writes them (no path may hold these) */
  free(m->name);
  m->name = strdup("q\"b\\s\x01\x1f\n\t\b\f\r/\x7f");
  m->nentries = 0;
  mine = br_xfer_manifest_dump(m);
  root = json_pack("{si ss si s[]}", "format", 1, "name", m->name, "chunk_size", 65536, "files");
  theirs = json_dumps(root, JSON_COMPACT);
  CHECK_EQ_STR(mine, theirs);
  json_decref(root);
  free(theirs);
  free(mine);
  m->nentries = 5;
  br_xfer_manifest_free(m);
}

/* Whatever the order of members, whitespace, escapes or unknown keys, a
 * manifest means the same; JSON that is not (RFC 8259) is refused with
 * its line and column. */
TEST(manifest_json_read_strictly) {
  const char *ok[] = {
      /* the chunk size after the files, unknown members, spaces, escapes */
      "{ \"files\" : [ {\"chunks\":[],\"x\":{\"y\":[1,2.5e3,true,null]},\"digest\":\"" D64 "\","
      "\"size\":0,\"path\":\"caf\\u00e9\\/\\ud83d\\ude00\"} ] ,\n\t\"chunk_size\":65536,"
      "\"format\":1 }\r\n",
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"more\":\"\\\"\\\\\\b\\f\\n\\r\\t\"}",
  };
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    br_xfer_manifest *p = NULL;
    br_error err;
    br_error_clear(&err);
    if (br_xfer_manifest_parse(ok[i], strlen(ok[i]), &p, &err) != BR_OK)
      br_test_fail(__FILE__, __LINE__, "refused %s: %s", ok[i], err.msg);
    br_xfer_manifest_free(p);
  }
  br_xfer_manifest *p = NULL;
  br_error err;
  CHECK_EQ_INT(br_xfer_manifest_parse(ok[0], strlen(ok[0]), &p, &err), BR_OK);
  CHECK_EQ_STR(p->entries[0].path, "caf\xc3\xa9/\xf0\x9f\x98\x80");
  CHECK_EQ_INT(p->chunk_size, 65536);
  br_xfer_manifest_free(p);
  /* files before the chunk size: their chunks are still checked */
  const char *late = "{\"files\":[{\"path\":\"x\",\"size\":1,\"digest\":\"" D64 "\","
                     "\"chunks\":[\"" D64 "\"]}],\"chunk_size\":65536,\"format\":1}";
  CHECK(br_xfer_manifest_parse(late, strlen(late), &p, &err) != BR_OK);
  CHECK_CONTAINS(err.msg, "does not match its chunks");
  const char *bad[] = {
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],}",       /* trailing comma */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[,]}",
      "{\"format\":01,\"chunk_size\":65536,\"files\":[]}",       /* leading zero */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[]}x",       /* text after */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[]",         /* cut */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"s\":\"a\\x\"}", /* bad escape */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"s\":\"\\ud800\"}", /* lone surrogate */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"s\":\"\\u0000\"}", /* NUL */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"s\":\"\xc3\x28\"}", /* bad UTF-8 */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"s\":\"\xed\xa0\x80\"}", /* surrogate */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"s\":\"\xc0\xaf\"}", /* overlong */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"s\":\"a\tb\"}", /* raw tab */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"n\":99999999999999999999}",
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"n\":-}",
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"n\":1.}",
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"n\":-1.5E309}", /* past a double */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"n\":tru}",
      "{\"format\":1,\"format\":1,\"chunk_size\":65536,\"files\":[]}", /* a key twice */
      "{\"format\":1,\"chunk_size\":65536,\"files\":[{\"path\":\"a\",\"path\":\"b\"}]}",
      "{\"format\":1,\"chunk_size\":65536,\"files\":[]}\n{}",
      "[{\"format\":1}]",
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    br_error_clear(&err);
    p = NULL;
    if (br_xfer_manifest_parse(bad[i], strlen(bad[i]), &p, &err) == BR_OK)
      br_test_fail(__FILE__, __LINE__, "accepted %s", bad[i]);
    CHECK(p == NULL);
    CHECK_CONTAINS(err.msg, "manifest");
  }
  /* where: line and column of the fault */
  const char *two = "{\"format\":1,\n  \"chunk_size\":65536,\n  \"files\":[],,}";
  CHECK(br_xfer_manifest_parse(two, strlen(two), &p, &err) != BR_OK);
  CHECK_CONTAINS(err.msg, "line 3, column 14");
  /* nesting is bounded */
  char deep[400] = "{\"format\":1,\"chunk_size\":65536,\"files\":[],\"d\":";
  size_t n = strlen(deep);
  for (int i = 0; i < 100; i++) deep[n++] = '[';
  for (int i = 0; i < 100; i++) deep[n++] = ']';
  deep[n++] = '}';
  CHECK(br_xfer_manifest_parse(deep, n, &p, &err) != BR_OK);
  CHECK_CONTAINS(err.msg, "nested too deep");
}

/* Byte flips, cuts and insertions in a valid manifest: whatever the scanner
 * takes as JSON, jansson takes too (it is never looser than the library
 * it replaced), and what it refuses gets a message. */
TEST(manifest_mutations_never_looser_than_jansson) {
  const char *base = "{\"format\":1,\"name\":\"s/c\",\"chunk_size\":65536,\"files\":[{\"path\":"
                     "\"d/f.0001.exr\",\"type\":\"file\",\"mode\":420,\"size\":0,\"mtime_ns\":12,"
                     "\"digest\":\"" D64 "\",\"chunks\":[]},{\"path\":\"caf\\u00e9\",\"type\":"
                     "\"symlink\",\"mode\":511,\"target\":\"d/f.0001.exr\",\"x\":[1.5e-3,null]}]}";
  size_t blen = strlen(base);
  static const char alphabet[] = "{}[],:\"\\0123456789.-+eEtrufalsn \n\xc3\xa9\x80\xff/u";
  uint64_t seed = 12345;
  char buf[1024];
  int accepted = 0;
  for (int i = 0; i < 20000; i++) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    size_t at = (size_t)(seed >> 33) % blen;
    char c = alphabet[(seed >> 13) % (sizeof alphabet - 1)];
    size_t len = blen;
    memcpy(buf, base, blen);
    switch ((seed >> 7) % 3) {
    case 0: buf[at] = c; break; /* flip */
    case 1: len = at; break;    /* cut */
    default:                    /* insert */
      memmove(buf + at + 1, buf + at, blen - at);
      buf[at] = c;
      len = blen + 1;
    }
    br_xfer_manifest *p = NULL;
    br_error err;
    br_error_clear(&err);
    int rc = br_xfer_manifest_parse(buf, len, &p, &err);
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (rc == BR_OK && !j)
      br_test_fail(__FILE__, __LINE__, "took what jansson refuses: %.*s", (int)len, buf);
    if (rc != BR_OK && !err.msg[0]) br_test_fail(__FILE__, __LINE__, "refused with no message");
    accepted += rc == BR_OK;
    json_decref(j);
    br_xfer_manifest_free(p);
  }
  CHECK(accepted > 0); /* some mutations keep it valid (a digit, a space) */
}

/* The lists of the missing and fetch questions: read back what is written,
 * bounded, every digest checked, the flag beside the list read. */
TEST(digest_lists_read_and_written) {
  br_xfer_digest ds[3], *got = NULL;
  for (int i = 0; i < 3; i++) br_xfer_sha256(&i, sizeof i, &ds[i]);
  size_t len = 0, n = 0;
  char *js = br_xfer__digest_list_json("missing", ds, 3, &len);
  CHECK_EQ_INT(strlen(js), len);
  json_t *j = json_loadb(js, len, 0, NULL); /* what jansson reads too */
  CHECK(json_array_size(json_object_get(j, "missing")) == 3);
  json_decref(j);
  br_error err;
  br_error_clear(&err);
  CHECK_EQ_INT(br_xfer__digest_list_parse(js, len, "missing", 10, &got, &n, NULL, NULL, &err),
               BR_OK);
  CHECK_EQ_INT(n, 3);
  CHECK(memcmp(got, ds, sizeof ds) == 0);
  free(got);
  CHECK(br_xfer__digest_list_parse(js, len, "missing", 2, &got, &n, NULL, NULL, &err) != BR_OK);
  CHECK_CONTAINS(err.msg, "too many digests");
  CHECK(got == NULL && n == 0);
  free(js);
  js = br_xfer__digest_list_json("missing", NULL, 0, &len);
  CHECK_EQ_STR(js, "{\"missing\":[]}");
  CHECK_EQ_INT(br_xfer__digest_list_parse(js, len, "missing", 10, &got, &n, NULL, NULL, &err),
               BR_OK);
  CHECK_EQ_INT(n, 0);
  free(got);
  free(js);
  bool z = false;
  const char *fetch = " {\"zstd\" : true, \"other\":[{}], \"chunks\":[\"" D64 "\"]} ";
  CHECK_EQ_INT(br_xfer__digest_list_parse(fetch, strlen(fetch), "chunks", 10, &got, &n, "zstd",
                                          &z, &err),
               BR_OK);
  CHECK(z);
  CHECK_EQ_INT(n, 1);
  free(got);
  const char *bad[] = {
      "{\"chunks\":[\"" D64 "\",\"abc\"]}", /* a short digest */
      "{\"chunks\":[\"" D64 "\",7]}",       /* not a string */
      "{\"chunks\":\"" D64 "\"}",           /* not a list */
      "{\"list\":[]}",                      /* no chunks */
      "{\"chunks\":[]",                     /* cut */
      "{\"chunks\":[]} []",                 /* more after */
      "[\"" D64 "\"]",
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    br_error_clear(&err);
    if (br_xfer__digest_list_parse(bad[i], strlen(bad[i]), "chunks", 10, &got, &n, NULL, NULL,
                                   &err) == BR_OK)
      br_test_fail(__FILE__, __LINE__, "accepted %s", bad[i]);
    CHECK(err.msg[0] != 0);
    CHECK(got == NULL);
  }
}

TEST(bundle_roundtrip_and_truncation) {
  br_xfer__buf b = {0};
  CHECK_EQ_INT(br_xfer__bundle_begin(&b), BR_OK);
  uint8_t zeros[10000] = {0}, rnd[3000];
  xu_fill(rnd, sizeof rnd, 7);
  br_xfer_digest dz, dr;
  br_xfer_sha256(zeros, sizeof zeros, &dz);
  br_xfer_sha256(rnd, sizeof rnd, &dr);
  bool saved = false;
  CHECK_EQ_INT(br_xfer__bundle_add(&b, &dz, zeros, sizeof zeros, true, &saved), BR_OK);
  CHECK(saved); /* zeros compress */
  CHECK_EQ_INT(br_xfer__bundle_add(&b, &dr, rnd, sizeof rnd, true, &saved), BR_OK);
  CHECK(!saved); /* random bytes do not */
  CHECK(b.len < sizeof zeros);
  br_xfer__bundle_iter it;
  br_xfer_digest d;
  const uint8_t *data;
  size_t len;
  CHECK_EQ_INT(br_xfer__bundle_open(&it, b.data, b.len, NULL), BR_OK);
  CHECK_EQ_INT(br_xfer__bundle_next(&it, &d, &data, &len, NULL), 1);
  CHECK_EQ_INT(len, sizeof zeros);
  CHECK(memcmp(data, zeros, len) == 0);
  CHECK_EQ_INT(br_xfer__bundle_next(&it, &d, &data, &len, NULL), 1);
  CHECK(memcmp(data, rnd, len) == 0);
  CHECK_EQ_INT(br_xfer__bundle_next(&it, &d, &data, &len, NULL), 0);
  br_xfer__bundle_close(&it);
  /* Cut inside the second entry: the first still reads, then an error. */
  CHECK_EQ_INT(br_xfer__bundle_open(&it, b.data, b.len - 5, NULL), BR_OK);
  CHECK_EQ_INT(br_xfer__bundle_next(&it, &d, &data, &len, NULL), 1);
  CHECK(br_xfer__bundle_next(&it, &d, &data, &len, NULL) < 0);
  br_xfer__bundle_close(&it);
  CHECK(br_xfer__bundle_open(&it, "<html>", 6, NULL) != BR_OK);
  br_xfer__buf_free(&b);
}

TEST(bundle_entries_read_as_one_run_then_put_in_place) {
  /* The depot reads neighbouring chunks of a pack at once, laid out as if
   * none compressed, then puts each: compressed ones shrink and the ones
   * after them move down; the bundle reads back the same bytes. */
  enum { N = 6, LEN = 20000 };
  static uint8_t src[N][LEN];
  br_xfer_digest d[N];
  for (int i = 0; i < N; i++) {
    if (i % 2) xu_fill(src[i], LEN, 30 + (uint64_t)i); /* random: stays raw */
    else memset(src[i], 'a' + i, LEN);                 /* compresses */
    br_xfer_sha256(src[i], LEN, &d[i]);
  }
  for (int z = 0; z < 2; z++) {
    br_xfer__buf b = {0};
    CHECK_EQ_INT(br_xfer__bundle_begin(&b), BR_OK);
    CHECK_EQ_INT(br_xfer__buf_reserve(&b, N * (BR_XFER__BUNDLE_HDR + LEN)), BR_OK);
    uint8_t *at = b.data + b.len + BR_XFER__BUNDLE_HDR;
    struct iovec iov[N];
    for (int i = 0; i < N; i++) {
      iov[i] = (struct iovec){at + (size_t)i * (BR_XFER__BUNDLE_HDR + LEN), LEN};
      memcpy(iov[i].iov_base, src[i], LEN); /* as a preadv would */
    }
    for (int i = 0; i < N; i++) {
      bool saved = false;
      CHECK_EQ_INT(br_xfer__bundle_put_at(&b, &d[i], iov[i].iov_base, LEN, z, &saved), BR_OK);
      CHECK(saved == (z && i % 2 == 0));
    }
    if (z) CHECK(b.len < (size_t)N * LEN * 3 / 5);
    br_xfer__bundle_iter it;
    br_xfer_digest got;
    const uint8_t *data;
    size_t len;
    CHECK_EQ_INT(br_xfer__bundle_open(&it, b.data, b.len, NULL), BR_OK);
    for (int i = 0; i < N; i++) {
      CHECK_EQ_INT(br_xfer__bundle_next(&it, &got, &data, &len, NULL), 1);
      CHECK_EQ_INT(len, LEN);
      CHECK(memcmp(data, src[i], LEN) == 0);
      CHECK(br_xfer__digest_cmp(&got, &d[i]) == 0);
    }
    CHECK_EQ_INT(br_xfer__bundle_next(&it, &got, &data, &len, NULL), 0);
    br_xfer__bundle_close(&it);
    /* bytes before the entry's own place are refused */
    CHECK(br_xfer__bundle_put_at(&b, &d[0], b.data, 10, false, NULL) != BR_OK);
    br_xfer__buf_free(&b);
  }
}

TEST(bundle_body_by_reference_reads_as_the_bundle_built_in_place) {
  /* Push sends small files' kept bytes by reference: only the entries'
   * headers (and what compresses) are in the body's buffer. Read in pieces
   * of any size, the body is byte for byte the bundle built in one buffer. */
  enum { N = 7, LEN = 20000 };
  static uint8_t src[N][LEN];
  br_xfer_digest d[N];
  size_t len[N];
  for (int i = 0; i < N; i++) {
    len[i] = i == 3 ? 100 : LEN - (size_t)i * 999; /* one too short to try zstd */
    if (i % 3 == 1) memset(src[i], 'a' + i, len[i]); /* compresses */
    else xu_fill(src[i], len[i], 60 + (uint64_t)i);
    br_xfer_sha256(src[i], len[i], &d[i]);
  }
  for (int z = 0; z < 2; z++) {
    br_xfer__buf whole = {0};
    br_xfer__req *r = br_xfer__req_new("http://127.0.0.1:1", "/v1/chunks");
    CHECK(r != NULL);
    CHECK_EQ_INT(br_xfer__bundle_begin(&whole), BR_OK);
    CHECK_EQ_INT(br_xfer__bundle_begin(&r->body), BR_OK);
    size_t nref = 0;
    for (int i = 0; i < N; i++) {
      bool saved = false, by_ref = false;
      CHECK_EQ_INT(br_xfer__bundle_add(&whole, &d[i], src[i], len[i], z, NULL), BR_OK);
      if (i == 5) { /* read into the buffer, as a file not kept is */
        CHECK_EQ_INT(br_xfer__bundle_add(&r->body, &d[i], src[i], len[i], z, NULL), BR_OK);
        continue;
      }
      CHECK_EQ_INT(br_xfer__bundle_put_ref(&r->body, &d[i], src[i], len[i], z, &saved, &by_ref),
                   BR_OK);
      CHECK(saved == (z && i % 3 == 1));
      CHECK(by_ref == !saved);
      if (by_ref) {
        CHECK_EQ_INT(br_xfer__req_ref(r, src[i], len[i]), BR_OK);
        nref++;
      }
    }
    CHECK_EQ_INT(r->nsegs, nref);
    CHECK_EQ_INT(br_xfer__req_body_len(r), whole.len);
    uint8_t *got = malloc(whole.len + 10);
    size_t n = 0, step[] = {1, 7, 44, 4096, 3, 65536, 20000};
    for (int k = 0; n < whole.len; k++) {
      size_t room = step[k % 7] < whole.len + 10 - n ? step[k % 7] : whole.len + 10 - n;
      size_t m = br_xfer__req_body_read(r, got + n, room);
      CHECK(m == room || n + m == whole.len);
      CHECK(m > 0);
      if (!m) break;
      n += m;
    }
    CHECK_EQ_INT(n, whole.len);
    CHECK_EQ_INT(br_xfer__req_body_read(r, got + n, 10), 0);
    CHECK(memcmp(got, whole.data, whole.len) == 0);
    free(got);
    br_xfer__buf_free(&whole);
    br_xfer__req_free(r);
  }
}

TEST(preadv_all_fills_every_piece) {
  char *tmp = br_test_tmpdir("xfer-preadv");
  char *p = xu_path(tmp, "f");
  uint8_t src[50000];
  xu_fill(src, sizeof src, 3);
  xu_write_file(p, src, sizeof src);
  int fd = open(p, O_RDONLY);
  CHECK(fd >= 0);
  uint8_t a[7], b[30000], c[19990];
  struct iovec iov[3] = {{a, sizeof a}, {b, sizeof b}, {c, sizeof c}};
  CHECK_EQ_INT(br_xfer__preadv_all(fd, iov, 3, 3), 0);
  CHECK(memcmp(a, src + 3, sizeof a) == 0);
  CHECK(memcmp(b, src + 10, sizeof b) == 0);
  CHECK(memcmp(c, src + 30010, sizeof c) == 0);
  struct iovec past[1] = {{a, sizeof a}};
  CHECK_EQ_INT(br_xfer__preadv_all(fd, past, 1, 49995), -ENODATA);
  close(fd);
  free(p);
  xu_done(tmp);
}

TEST(page_cache_asked_without_reading) {
  /* br_xfer__cached answers for a range, and asking starts no read: a
   * file dropped from the page cache stays out until it is read. */
  char *tmp = br_test_tmpdir("xfer-cached");
  char *p = xu_path(tmp, "f");
  uint8_t src[5 * 4096 + 100], back[sizeof src];
  xu_fill(src, sizeof src, 5);
  xu_write_file(p, src, sizeof src);
  int fd = open(p, O_RDONLY);
  CHECK(fd >= 0);
  int whole = br_xfer__cached(fd, 0, sizeof src);
  CHECK(whole == 1 || whole == -1);
  CHECK_EQ_INT(br_xfer__cached(fd, 0, 0), 1); /* nothing asked for */
  CHECK(fdatasync(fd) == 0);
  CHECK(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
  int dropped = br_xfer__cached(fd, 0, sizeof src);
  if (whole == 1 && dropped == 0) {
    CHECK_EQ_INT(br_xfer__cached(fd, 4096, 4096), 0);
    CHECK_EQ_INT(br_xfer__cached(fd, sizeof src - 1, 1), 0);
    CHECK_EQ_INT(br_xfer__cached(fd, 0, sizeof src), 0); /* still out */
    CHECK_EQ_INT(br_xfer__cached(fd, 0, 0), 1);
    CHECK_EQ_INT(pread(fd, back, sizeof back, 0), (long)sizeof back);
    CHECK_EQ_INT(br_xfer__cached(fd, 0, sizeof src), 1);
    CHECK_EQ_INT(br_xfer__cached(fd, 3 * 4096 + 5, 7000), 1);
  } else if (whole == 1) {
    CHECK_EQ_INT(dropped, 1);
    fprintf(stderr, "  (this file system keeps the pages)\n");
  } else {
    CHECK_EQ_INT(dropped, -1);
    fprintf(stderr, "  (no cachestat here: the page cache cannot be asked)\n");
  }
  close(fd);
  free(p);
  xu_done(tmp);
}

TEST(buffer_pool_makes_room_for_sizes_in_use) {
  /* a pool full of one size (a push's) still keeps the size asked for now
   * (a pull's), letting go of the older one */
  size_t big, small;
  uint8_t *a = br_xfer__mem_get((size_t)64 << 20, &big), *b = br_xfer__mem_get((size_t)64 << 20, &big);
  CHECK(a && b);
  br_xfer__mem_put(a, big);
  br_xfer__mem_put(b, big); /* the pool is full: 128 MiB */
  uint8_t *x = br_xfer__mem_get((size_t)8 << 20, &small);
  CHECK(x != NULL);
  memset(x + 64, 0xab, 8192);
  br_xfer__mem_put(x, small);
  uint8_t *y = br_xfer__mem_get((size_t)8 << 20, &small);
  CHECK(y != NULL);
  CHECK(y[64] == 0xab && y[64 + 8191] == 0xab); /* the same buffer, kept */
  br_xfer__mem_put(y, small);
  /* an older size back, with room for both: both kept */
  uint8_t *c = br_xfer__mem_get((size_t)64 << 20, &big);
  CHECK(c != NULL);
  br_xfer__mem_put(c, big);
  y = br_xfer__mem_get((size_t)8 << 20, &small);
  CHECK(y != NULL && y[64] == 0xab);
  br_xfer__mem_put(y, small);
}

TEST(unnamed_file_linked_by_its_fd) {
  /* br_xfer__link_fd gives an O_TMPFILE file its name, never over
   * another's */
  char *tmp = br_test_tmpdir("xfer-linkfd");
  int dirfd = open(tmp, O_RDONLY | O_DIRECTORY);
  CHECK(dirfd >= 0);
  int fd = openat(dirfd, ".", O_WRONLY | O_TMPFILE, 0644);
  if (fd < 0) {
    fprintf(stderr, "  (no O_TMPFILE on this file system: %s)\n", strerror(errno));
  } else {
    CHECK_EQ_INT(write(fd, "first", 5), 5);
    CHECK_EQ_INT(br_xfer__link_fd(fd, dirfd, "a"), 0);
    int fd2 = openat(dirfd, ".", O_WRONLY | O_TMPFILE, 0644);
    CHECK(fd2 >= 0);
    CHECK_EQ_INT(write(fd2, "second", 6), 6);
    CHECK_EQ_INT(br_xfer__link_fd(fd2, dirfd, "a"), EEXIST);
    CHECK_EQ_INT(br_xfer__link_fd(fd2, dirfd, "b"), 0);
    char *a = xu_path(tmp, "a"), *b = xu_path(tmp, "b");
    char buf[16] = {0};
    int r = open(a, O_RDONLY);
    CHECK(r >= 0 && read(r, buf, sizeof buf) == 5 && memcmp(buf, "first", 5) == 0);
    close(r);
    r = open(b, O_RDONLY);
    CHECK(r >= 0 && read(r, buf, sizeof buf) == 6 && memcmp(buf, "second", 6) == 0);
    close(r);
    close(fd);
    close(fd2);
    free(a);
    free(b);
  }
  CHECK_EQ_INT(br_xfer__link_fd(-1, dirfd, "c"), EBADF);
  close(dirfd);
  xu_done(tmp);
}

TEST(tokens_hashed_and_checked) {
  char *tmp = br_test_tmpdir("xfer-tokens");
  char tok[80], line[200];
  CHECK_EQ_INT(br_xfer_token_new(tok, sizeof tok, NULL), BR_OK);
  CHECK_EQ_INT(strlen(tok), 64);
  br_xfer_token_hash(tok, line, sizeof line);
  CHECK(strncmp(line, "sha256:", 7) == 0);
  CHECK(strstr(line, tok) == NULL);
  char *file = xu_path(tmp, "tokens");
  char content[400];
  snprintf(content, sizeof content, "# comment\n%s\nplain-token\n", line);
  xu_write_file(file, content, strlen(content));
  br_xfer__tokens t;
  CHECK_EQ_INT(br_xfer__tokens_load(&t, file, NULL, NULL, NULL), BR_OK);
  CHECK_EQ_INT(t.n, 2);
  CHECK(br_xfer__tokens_check(&t, tok));
  CHECK(br_xfer__tokens_check(&t, "plain-token"));
  CHECK(!br_xfer__tokens_check(&t, "wrong"));
  CHECK(!br_xfer__tokens_check(&t, ""));
  CHECK(!br_xfer__tokens_check(&t, NULL));
  br_xfer__tokens_free(&t);
  xu_write_file(file, "\n# only comments\n", 17);
  CHECK(br_xfer__tokens_load(&t, file, NULL, NULL, NULL) != BR_OK);
  /* The braid server's token file (JSON lines) serves the depot too, and a
   * token added while the depot runs counts at once. */
  char other[80], ohash[80], json[400];
  CHECK_EQ_INT(br_xfer_token_new(other, sizeof other, NULL), BR_OK);
  br_xfer_token_hash(other, ohash, sizeof ohash);
  snprintf(json, sizeof json,
           "{\"id\":\"a1\",\"role\":\"user\",\"name\":\"x\",\"sha256\":\"%s\"}\n"
           "{not json}\n",
           line + 7);
  xu_write_file(file, json, strlen(json));
  CHECK_EQ_INT(br_xfer__tokens_load(&t, file, NULL, NULL, NULL), BR_OK);
  CHECK(br_xfer__tokens_check(&t, tok));
  CHECK(!br_xfer__tokens_check(&t, other));
  usleep(20000); /* a new mtime */
  snprintf(json + strlen(json), sizeof json - strlen(json), "%s\n", ohash);
  xu_write_file(file, json, strlen(json));
  CHECK(br_xfer__tokens_check(&t, other));
  CHECK(br_xfer__tokens_check(&t, tok));
  br_xfer__tokens_free(&t);
  free(file);
  xu_done(tmp);
}

/* A token file edited by hand: each line that cannot be used is told with
 * its file and line (and column where JSON does not parse),
 * once per read, and the other lines still count. */
TEST(tokens_bad_lines_told) {
  char *tmp = br_test_tmpdir("xfer-tokens-bad");
  char *file = xu_path(tmp, "tokens");
  char tok[80], line[80], other[80], ohash[80];
  CHECK_EQ_INT(br_xfer_token_new(tok, sizeof tok, NULL), BR_OK);
  CHECK_EQ_INT(br_xfer_token_new(other, sizeof other, NULL), BR_OK);
  br_xfer_token_hash(tok, line, sizeof line);
  br_xfer_token_hash(other, ohash, sizeof ohash);
  char short63[80]; /* a hash that lost its last digit: a hash, not a token */
  snprintf(short63, sizeof short63, "%s", ohash);
  short63[strlen(short63) - 1] = 0;
  char content[1024];
  int n = snprintf(content, sizeof content,
                   "# depot tokens\n"
                   "%s\n"                                          /* 2: good */
                   "{\"id\":\"a1\",\"sha256\":\"%s\" \"role\":\"user\"}\n" /* 3: no comma */
                   "%s\n"                                          /* 4: 63 digits */
                   "plain-token\r\n"                               /* 5: CRLF, good */
                   "{\"id\":\"a2\",\"role\":\"user\"}\n"            /* 6: no sha256 */
                   "bad%ctoken\n"                                  /* 7: a NUL */
                   "\n"
                   "last-token",                                   /* 9: no newline */
                   line, ohash + 7, short63, 0);
  xu_write_file(file, content, (size_t)n);
  br_xfer__tokens t;
  br_test_warnings c = {NULL, 0};
  int rc = br_xfer__tokens_load(&t, file, br_test_warn, &c, NULL);
  char *text = br_test_warnings_take(&c);
  CHECK_EQ_INT(rc, BR_OK);
  CHECK_EQ_INT(t.n, 3);
  CHECK(br_xfer__tokens_check(&t, tok));
  CHECK(br_xfer__tokens_check(&t, "plain-token"));
  CHECK(br_xfer__tokens_check(&t, "last-token"));
  CHECK(!br_xfer__tokens_check(&t, other));
  CHECK(!br_xfer__tokens_check(&t, short63)); /* not taken as a plain token */
  CHECK(!br_xfer__tokens_check(&t, "bad"));
  CHECK(!br_xfer__tokens_check(&t, "plain-token\r"));
  char want[1024];
  snprintf(want, sizeof want, "token file %s:3:", file);
  CHECK_CONTAINS(text, want);
  const char *col = strstr(text, want) + strlen(want);
  CHECK(*col >= '1' && *col <= '9'); /* jansson's column */
  CHECK_CONTAINS(col, ": not JSON: ");
  CHECK_CONTAINSF(text,
                  "token file %s:4: sha256 is not 64 hex digits (63 of them); line skipped\n",
                  file);
  CHECK_CONTAINSF(text, "token file %s:6: no \"sha256\" string; line skipped\n", file);
  CHECK_CONTAINSF(text, "token file %s:7:4: holds a NUL byte; line skipped\n", file);
  CHECK_EQ_INT(br_test_count(text, "line skipped\n"), 4);
  CHECK_EQ_INT(br_test_count(text, "\n"), 4);
  free(text);
  /* checks of an unchanged file read nothing and tell nothing */
  bool ok = br_xfer__tokens_check(&t, tok);
  text = br_test_warnings_take(&c);
  CHECK(ok);
  CHECK_EQ_STR(text, "");
  free(text);
  /* a change is read again (and told again) at the next check: a line
   * longer than the limit is skipped, the line after it still counts */
  size_t big = 70000;
  char *grown = malloc((size_t)n + big + 64);
  CHECK(grown != NULL);
  memcpy(grown, content, (size_t)n);
  size_t len = (size_t)n;
  len += (size_t)sprintf(grown + len, "\n");
  memset(grown + len, 'x', big);
  len += big;
  len += (size_t)sprintf(grown + len, "\nafter-long\n");
  usleep(20000); /* a new mtime */
  xu_write_file(file, grown, len);
  ok = br_xfer__tokens_check(&t, "after-long");
  bool last = br_xfer__tokens_check(&t, "last-token");
  text = br_test_warnings_take(&c);
  CHECK(ok && last);
  CHECK_EQ_INT(t.n, 4);
  CHECK_CONTAINSF(text, "token file %s:10: longer than 65536 bytes; line skipped\n", file);
  CHECK_EQ_INT(br_test_count(text, "line skipped\n"), 5);
  free(text);
  free(grown);
  br_xfer__tokens_free(&t);
  /* only comments and bad lines: no token, as before */
  xu_write_file(file, "# none\nsha256:abc\n", 18);
  br_error err;
  br_error_clear(&err);
  rc = br_xfer__tokens_load(&t, file, br_test_warn, &c, &err);
  text = br_test_warnings_take(&c);
  CHECK(rc != BR_OK);
  CHECK_CONTAINS(err.msg, "holds no token");
  CHECK_CONTAINS(text, ":2: sha256 is not 64 hex digits (3 of them)");
  free(text);
  free(file);
  xu_done(tmp);
}

TEST(rate_limiter_bucket) {
  br_xfer__bucket b;
  br_xfer__bucket_init(&b, 0);
  CHECK_EQ_INT(br_xfer__bucket_take(&b, 12345), 12345); /* unlimited */
  br_xfer__bucket_destroy(&b);
  br_xfer__bucket_init(&b, 1000000);
  size_t got = br_xfer__bucket_take(&b, 10000000);
  CHECK(got > 0 && got <= 1000000); /* at most the burst */
  br_xfer__bucket_charge(&b, 5000000); /* debt */
  CHECK(br_xfer__bucket_wait(&b) > 1.0);
  CHECK_EQ_INT(br_xfer__bucket_take(&b, 100), 0);
  br_xfer__bucket_destroy(&b);
}

TEST(hash_cache_hits_only_on_same_identity) {
  char *tmp = br_test_tmpdir("xfer-hcache");
  char *db = xu_path(tmp, "c.db"), *f = xu_path(tmp, "f");
  xu_make_file(tmp, "f", 1000, 1);
  struct stat st;
  CHECK(stat(f, &st) == 0);
  br_xfer__hcache *c = NULL;
  CHECK_EQ_INT(br_xfer__hcache_open(db, &c, NULL, 0, NULL), BR_OK);
  br_xfer_digest d, got, *cs = NULL;
  size_t n = 0;
  br_xfer_sha256("x", 1, &d);
  CHECK_EQ_INT(br_xfer__hcache_get(c, &st, 65536, &got, &cs, &n), 0);
  CHECK_EQ_INT(br_xfer__hcache_put(c, &st, 65536, &d, &d, 1), BR_OK);
  CHECK_EQ_INT(br_xfer__hcache_get(c, &st, 65536, &got, &cs, &n), 1);
  CHECK_EQ_INT(n, 1);
  CHECK(memcmp(got.b, d.b, 32) == 0);
  free(cs);
  CHECK_EQ_INT(br_xfer__hcache_get(c, &st, 131072, &got, &cs, &n), 0); /* other chunking */
  struct stat st2 = st;
  st2.st_mtim.tv_nsec ^= 1;
  CHECK_EQ_INT(br_xfer__hcache_get(c, &st2, 65536, &got, &cs, &n), 0);
  st2 = st;
  st2.st_ctim.tv_sec += 1;
  CHECK_EQ_INT(br_xfer__hcache_get(c, &st2, 65536, &got, &cs, &n), 0);
  br_xfer__hcache_close(c);
  free(db);
  free(f);
  xu_done(tmp);
}

/* A cache is only a cache: a damaged one is put aside and started again,
 * one that cannot be opened at all is done without; both are said. */
TEST(hash_cache_damaged_or_unusable_never_stops_a_transfer) {
  char *tmp = br_test_tmpdir("xfer-hcache-bad");
  char *db = xu_path(tmp, "c.db"), *aside = xu_path(tmp, "c.db.damaged");
  char junk[5000];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 131 + 7);
  xu_write_file(db, junk, sizeof junk);
  br_xfer__hcache *c = NULL;
  br_error err;
  br_error_clear(&err);
  char warn[1280] = "";
  CHECK_EQ_INT(br_xfer__hcache_open(db, &c, warn, sizeof warn, &err), BR_OK);
  CHECK(c != NULL);
  CHECK_CONTAINS(warn, "was damaged");
  CHECK_CONTAINS(warn, "c.db.damaged");
  char *kept = br__read_file(aside, NULL); /* put aside as it was */
  CHECK(kept != NULL && memcmp(kept, junk, 100) == 0);
  free(kept);
  struct stat st;
  CHECK(stat(db, &st) == 0);
  br_xfer_digest d, got, *cs = NULL;
  size_t n = 0;
  br_xfer_sha256("x", 1, &d);
  CHECK_EQ_INT(br_xfer__hcache_put(c, &st, 65536, &d, &d, 1), BR_OK); /* the new one works */
  CHECK_EQ_INT(br_xfer__hcache_get(c, &st, 65536, &got, &cs, &n), 1);
  free(cs);
  br_xfer__hcache_close(c);
  /* reopened: no warning, the entry is there */
  warn[0] = 0;
  CHECK_EQ_INT(br_xfer__hcache_open(db, &c, warn, sizeof warn, &err), BR_OK);
  CHECK(warn[0] == 0);
  CHECK_EQ_INT(br_xfer__hcache_get(c, &st, 65536, &got, &cs, &n), 1);
  free(cs);
  br_xfer__hcache_close(c);
  /* nowhere to keep it: no cache (every lookup misses, every store is a
   * no-op), and a warning */
  char *nowhere = xu_path(tmp, "no/such/folder/c.db");
  CHECK_EQ_INT(br_xfer__hcache_open(nowhere, &c, warn, sizeof warn, &err), BR_OK);
  CHECK(c == NULL);
  CHECK_CONTAINS(warn, "going on without it");
  CHECK_EQ_INT(br_xfer__hcache_begin(c), BR_OK);
  CHECK_EQ_INT(br_xfer__hcache_put(c, &st, 65536, &d, &d, 1), BR_OK);
  CHECK_EQ_INT(br_xfer__hcache_get(c, &st, 65536, &got, &cs, &n), 0);
  CHECK_EQ_INT(br_xfer__hcache_commit(c), BR_OK);
  br_xfer__hcache_close(c);
  free(nowhere);
  free(db);
  free(aside);
  xu_done(tmp);
}

TEST(partial_names_never_look_like_frames) {
  char pn[64];
  const char *names[] = {"cloth.0001.bgeo.sc", "img_0042.exr", "a", "x.1001.vdb"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    br_xfer__partial_name(names[i], pn, sizeof pn);
    CHECK(strncmp(pn, ".braid-partial-", 15) == 0);
    for (const char *p = pn; *p; p++) CHECK(!(*p >= '0' && *p <= '9'));
    CHECK(strchr(pn + 1, '.') == NULL);
  }
}
