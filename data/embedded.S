/* embedded.S: data files compiled into the k22 binary, so `k22 init` needs nothing installed
 * beside it. The assembler finds the files through -Wa,-I<source>/data (CMakeLists.txt). */
#define EMBED(sym, file)                                                                           \
    .global sym;                                                                                   \
    .global sym##_end;                                                                             \
    .balign 16;                                                                                    \
    sym:                                                                                           \
    .incbin file;                                                                                  \
    sym##_end:                                                                                     \
    .byte 0

    .section .rodata
EMBED(k22_clip_vocab_json, "clip-tokenizer/vocab.json")
EMBED(k22_clip_merges_txt, "clip-tokenizer/merges.txt")
    .section .note.GNU-stack, "", @progbits
