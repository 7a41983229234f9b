/* Fuzz targets: each fuzz-NAME.c defines LLVMFuzzerTestOneInput for one
 * parser that reads untrusted bytes (from the network, a manifest, a graph
 * file). Built two ways (CMakeLists.txt):
 *   - always, with replay.c, as the ctest fuzz-NAME: every seed in
 *     fuzz/corpus/NAME, then a fixed number of seeded mutations of them,
 *     under the test build's sanitizers;
 *   - with -DBRAID_FUZZ=ON and clang, as libFuzzer programs
 *     (scripts/fuzz.sh runs them).
 * A target aborts (FUZZ_CHECK) when a property fails, not only on a crash. */
#ifndef BRAID_FUZZ_H
#define BRAID_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                              \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);     \
      abort();                                                                        \
    }                                                                                 \
  } while (0)

#endif
