/* What `braid movie` takes, in one place: the command checks its options
 * with these on the worker, and the ffmpeg node checks its parameters with
 * them when its graph loads, so a graph that validates is not refused on
 * the worker later. */
#ifndef BR_NODES_MOVIE_H
#define BR_NODES_MOVIE_H

#define BR_MOVIE_MAX_FPS 1000 /* frames per second: 1 to this */
#define BR_MOVIE_MAX_CRF 51   /* x264 quality: 0 to this */
#define BR_MOVIE_MAX_TILE 100 /* a mosaic's columns, and its rows: 1 to this */

/* "COLSxROWS", each a whole number from 1 to BR_MOVIE_MAX_TILE written in
 * digits only, and nothing else: 0 and the grid, or -1. */
int br_movie_parse_tile(const char *s, int *cols, int *rows);

#endif
