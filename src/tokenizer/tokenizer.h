/*
 * tokenizer.h - internal interface of the tokenizer: a description of a tokenizer "from parts"
 * (dg_tok_spec) and the one builder every loader goes through.
 *
 * Two producers fill a dg_tok_spec:
 *   tok_json.c   a Hugging Face tokenizer.json (dg_tokenizer_load)
 *   (GGUF)       tokenizer.ggml.tokens / merges / token_type and the special ids of a "gemma4" GGUF:
 *                fill pieces, merges and piece_flags (dg_tok_flags_from_gguf_type), then
 *                dg_tok_spec_gemma() sets the Gemma normalizer / pre-tokenizer / decoder.
 *
 * Strings are (pointer, length) pairs, UTF-8, not necessarily NUL-terminated; the builder copies
 * everything it keeps, so the spec's memory may be freed once dg_tokenizer_build returns.
 */
#ifndef DG_TOKENIZER_INTERNAL_H
#define DG_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dgemma.h"

typedef struct {
    const char *p;   /* NULL = absent */
    uint32_t n;      /* bytes */
} dg_tok_str;

/* Added-token flags: the AddedToken fields of tokenizers. ADDED marks a vocabulary piece as an added
 * token (piece_flags only). */
enum {
    DG_TOKF_SPECIAL = 1,       /* skipped by decode(skip_special_tokens=True) */
    DG_TOKF_NORMALIZED = 2,    /* matched after the normalizer (second pass), else in the raw text */
    DG_TOKF_LSTRIP = 4,        /* the match absorbs the whitespace on its left */
    DG_TOKF_RSTRIP = 8,        /* ... and on its right */
    DG_TOKF_SINGLE_WORD = 16,  /* no match next to a word character (Unicode \w) */
    DG_TOKF_ADDED = 32,
};

typedef struct {
    dg_tok_str content;
    unsigned flags;            /* DG_TOKF_* (ADDED implied) */
} dg_tok_added;

/* Normalizers (applied in order; none = identity). */
typedef enum { DG_NORM_REPLACE = 1, DG_NORM_PREPEND = 2 } dg_tok_norm_type;
typedef struct {
    dg_tok_norm_type type;
    dg_tok_str pattern;        /* REPLACE: a literal string (non-empty) */
    dg_tok_str content;        /* REPLACE: the replacement; PREPEND: the prefix */
} dg_tok_norm;

/* Pre-tokenizer Split on a literal string (SplitDelimiterBehavior of tokenizers). */
typedef enum {
    DG_SPLIT_REMOVED = 1, DG_SPLIT_ISOLATED, DG_SPLIT_MERGED_PREV, DG_SPLIT_MERGED_NEXT, DG_SPLIT_CONTIGUOUS
} dg_tok_split_behavior;
typedef struct {
    dg_tok_str pattern;        /* a literal string (non-empty) */
    dg_tok_split_behavior behavior;
    int invert;
} dg_tok_split;

/* Decoders (applied in order to the list of token strings, then joined). */
typedef enum { DG_DEC_REPLACE = 1, DG_DEC_BYTE_FALLBACK, DG_DEC_FUSE, DG_DEC_STRIP } dg_tok_dec_type;
typedef struct {
    dg_tok_dec_type type;
    dg_tok_str pattern, content;  /* REPLACE: literal pattern (non-empty) and replacement */
    uint32_t strip_char;          /* STRIP: the code point stripped ... */
    int start, stop;              /* ... at most `start` times at the beginning, `stop` at the end */
} dg_tok_dec;

#define DG_TOK_MAX_STEPS 16

typedef struct {
    const char *name;            /* for error messages (the file), may be NULL */
    /* BPE model */
    int n_pieces;                /* ids [0, n_pieces) of the model vocabulary */
    const dg_tok_str *pieces;    /* [n_pieces]; p == NULL: no piece has this id (a hole) */
    const uint8_t *piece_flags;  /* [n_pieces] or NULL: DG_TOKF_ADDED marks pieces that are added tokens */
    int n_merges;
    const dg_tok_str *merges;    /* [2 * n_merges]: left, right; rank = index */
    dg_tok_str unk;              /* the unknown token (must be a piece), p == NULL: none */
    int byte_fallback, fuse_unk, ignore_merges;
    /* added tokens after the flagged pieces, in file order; the id is the piece's (or an earlier
     * added token's) when the content exists, else the next id after the vocabulary, as tokenizers does */
    int n_added;
    const dg_tok_added *added;
    int n_norm;
    dg_tok_norm norm[DG_TOK_MAX_STEPS];
    int n_pre;
    dg_tok_split pre[DG_TOK_MAX_STEPS];
    int has_decoder;             /* 0: decode joins the token strings with " " (tokenizers without a decoder) */
    int n_dec;
    dg_tok_dec dec[DG_TOK_MAX_STEPS];
} dg_tok_spec;

/* The Gemma pipeline (GemmaTokenizer of transformers): normalizer Replace(" ", "▁"), pre-tokenizer
 * Split(" ", MergedWithPrevious), decoder Replace("▁", " ") + ByteFallback + Fuse, BPE with
 * byte_fallback, fuse_unk and unk "<unk>". Leaves the vocabulary fields alone. */
void dg_tok_spec_gemma(dg_tok_spec *s);

/* The added-token flags of a GGUF token type (llama.cpp's LLAMA_TOKEN_TYPE_*: 1 normal, 2 unknown,
 * 3 control, 4 user-defined, 5 unused, 6 byte): control and unknown pieces are special added tokens,
 * user-defined ones non-special added tokens, the rest ordinary pieces (0). */
unsigned dg_tok_flags_from_gguf_type(int type);

int dg_tokenizer_build(const dg_tok_spec *spec, dg_tokenizer **out, char *err, size_t errlen);

struct gguf_file;
/* The tokenizer of a GGUF's metadata (tok_gguf.c). */
int dg_tokenizer_from_gguf(const struct gguf_file *g, dg_tokenizer **out, char *err, size_t errlen);

/* Parse a tokenizer.json held in memory (buf is modified: strings are unescaped in place) and build.
 * name is used in error messages. */
int dg_tok_json_parse(char *buf, size_t len, const char *name, dg_tokenizer **out, char *err, size_t errlen);

/* The literal port of tokenizers' decode (list of strings through each decoder, then joined): the
 * reference the streaming decoder is tested against. Same contract as dg_detokenize. */
int dg_detokenize_ref(const dg_tokenizer *tok, const int32_t *ids, int n, int skip_special, char **text,
                      size_t *len, char *err, size_t errlen);

/* Internal helpers shared with the JSON reader and tests. */
/* Grow *p (an array of *cap elements of elem bytes) to hold need elements, doubling; -1 when out of memory. */
int dg_tok_grow(void **p, size_t *cap, size_t need, size_t elem);
int dg_utf8_valid(const char *s, size_t n);

/* A growable byte buffer, kept NUL-terminated (tokenizer.c; also the reply splitter's). */
typedef struct {
    char *p;
    size_t n, cap;
} dg_strbuf;
/* append s[0, n); -1 when out of memory */
int dg_strbuf_add(dg_strbuf *b, const char *s, size_t n);
/* Length of the UTF-8 sequence at s (1..4), 0 if s[0..n) does not start with a valid one. */
int dg_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);

#endif
