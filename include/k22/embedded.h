/* embedded.h: files compiled into the binary (data/embedded.S). Each symbol pair brackets the
 * file's bytes; a NUL byte follows _end so the text can be read as a C string. */
#ifndef K22_EMBEDDED_H
#define K22_EMBEDDED_H

extern const unsigned char k22_clip_vocab_json[], k22_clip_vocab_json_end[];
extern const unsigned char k22_clip_merges_txt[], k22_clip_merges_txt_end[];

#endif
