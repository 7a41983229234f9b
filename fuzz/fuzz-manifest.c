/* Manifests, as the depot reads a commit and pull reads a snapshot: a text
 * taken is JSON to jansson too, its entries pass the path checks, and it
 * writes back to a text that reads back the same. */
#include "fuzz.h"
#include "xfer/xfer_int.h"

#include <jansson.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  br_xfer_manifest *m = NULL;
  br_error err;
  br_error_clear(&err);
  if (br_xfer_manifest_parse((const char *)data, size, &m, &err) != BR_OK) {
    FUZZ_CHECK(m == NULL);
    FUZZ_CHECK(err.msg[0] != 0);
    return 0;
  }
  json_t *j = json_loadb((const char *)data, size, 0, NULL);
  FUZZ_CHECK(j != NULL); /* never looser than the JSON library */
  json_decref(j);
  for (size_t i = 0; i < m->nentries; i++) {
    const br_xfer_entry *e = &m->entries[i];
    FUZZ_CHECK(br_xfer_path_check(e->path, &err) == BR_OK);
    FUZZ_CHECK(e->size >= 0);
  }
  char *text = br_xfer_manifest_dump(m);
  FUZZ_CHECK(text != NULL);
  br_xfer_manifest *back = NULL;
  FUZZ_CHECK(br_xfer_manifest_parse(text, strlen(text), &back, &err) == BR_OK);
  char *again = br_xfer_manifest_dump(back);
  FUZZ_CHECK(again && strcmp(text, again) == 0);
  FUZZ_CHECK(back->nentries == m->nentries && back->chunk_size == m->chunk_size);
  free(again);
  free(text);
  br_xfer_manifest_free(back);
  br_xfer_manifest_free(m);
  return 0;
}
