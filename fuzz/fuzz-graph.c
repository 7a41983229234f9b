/* Graph files, as `braid run` and the server's API read them: an error
 * names the file and a line and column inside the text; a graph taken
 * writes back to a canonical text that reads back to the same text. */
#include "fuzz.h"

#include <braid/graph.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = 0;
  br_error err;
  br_error_clear(&err);
  br_graph *g = br_graph_load_string(text, "fuzz.json", &err);
  if (!g) {
    FUZZ_CHECK(err.msg[0] != 0);
    FUZZ_CHECK(strcmp(err.file, "fuzz.json") == 0);
    /* a place inside the text, when one is given */
    if (err.line > 0) {
      int lines = 1;
      for (size_t i = 0; i < size; i++) lines += text[i] == '\n';
      FUZZ_CHECK(err.line <= lines + 1 && err.column >= 0);
    }
    free(text);
    return 0;
  }
  char *dump = br_graph_dumps(g);
  FUZZ_CHECK(dump != NULL);
  br_graph *g2 = br_graph_load_string(dump, "dump", &err);
  FUZZ_CHECK(g2 != NULL);
  char *dump2 = br_graph_dumps(g2);
  FUZZ_CHECK(dump2 && strcmp(dump, dump2) == 0);
  free(dump2);
  free(dump);
  br_graph_free(g2);
  br_graph_free(g);
  free(text);
  return 0;
}
