/* synth.h: `k22 synth`, a deterministic local stand-in for the Naruto BLIP-captions set. Each
 * item i of a seed is a drawn figure (head, face, hair, jacket, background, light noise) whose
 * caption is built from the same random choices, so caption and picture agree. Item i depends
 * only on (seed, i, min_size, max_size): never on n, the thread count, or other items. */
#ifndef K22_SYNTH_H
#define K22_SYNTH_H

#include "k22/k22.h"

#include <stdint.h>

#define K22_SYNTH_MIN_SIZE 32
#define K22_SYNTH_MAX_SIZE 4096

typedef enum { K22_SYNTH_JPEG = 0, K22_SYNTH_PNG = 1 } k22_synth_format;

/* One item's random choices and the geometry the tests probe. Indices name entries of the
 * tables below (k22_synth_color_name etc.). */
typedef struct {
    int width, height;
    k22_synth_format format;
    int subject;      /* 0 man, 1 woman, 2 boy, 3 girl */
    int hair_color;   /* palette index */
    int jacket_color; /* palette index, never equal to hair_color */
    int background;   /* 0 white, 1 blue sky, 2 green field, 3 dark, 4 sunset */
    int template_id;  /* caption template */
    int hair_probe[2], jacket_probe[2]; /* (x, y) well inside the hair and the jacket */
    int head_cx, head_cy, head_r;
    char caption[192];
} k22_synth_item;

/* The palette: names as they appear in captions and their RGB. */
int k22_synth_ncolors(void);
const char *k22_synth_color_name(int i);
void k22_synth_color_rgb(int i, uint8_t rgb[3]);
const char *k22_synth_subject_name(int i);

/* Fills *it with item index's choices and caption. min_size..max_size bound each side. */
void k22_synth_describe(uint64_t seed, int64_t index, int min_size, int max_size,
                        k22_synth_item *it);
/* Draws item it into rgb (height, width, 3), which holds width*height*3 bytes. */
void k22_synth_draw(const k22_synth_item *it, uint64_t seed, int64_t index, uint8_t *rgb);
/* Describes, draws and encodes item index (JPEG or PNG per it->format). *out is malloc'd. */
k22_status k22_synth_make(uint64_t seed, int64_t index, int min_size, int max_size,
                          k22_synth_item *it, uint8_t **out, size_t *len, k22_err *err);

/* Writes n items as dir/NNNNNN.jpg|png plus dir/metadata.jsonl ({"file_name", "text"} per
 * line, in index order). Builds dir.tmp and renames it into place; an existing non-empty dir
 * is refused unless force. */
k22_status k22_synth_write_dir(const char *dir, int64_t n, uint64_t seed, int min_size,
                               int max_size, int force, k22_err *err);

#endif
