#define _POSIX_C_SOURCE 200809L
/*
 * tok_gguf.c - the tokenizer stored in a GGUF's metadata (tokenizer.ggml.*), used when no
 * tokenizer.json sits beside the file. Model "gemma4" (llama.cpp's name for the Gemma 4 / DiffusionGemma
 * tokenizer) is the Hugging Face BPE pipeline of the Gemma family: the pieces, the "A B" merges in rank
 * order, the token types (3 control = special added tokens, 4 user-defined = non-special added tokens,
 * 6 byte = the <0xHH> pieces byte fallback uses), the unknown-token id, and dg_tok_spec_gemma()'s
 * normalizer, pre-tokenizer and decoder.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "load/gguf.h"
#include "tokenizer/tokenizer.h"

int dg_tokenizer_from_gguf(const gguf_file *g, dg_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    gguf_str model;
    if (gguf_get_str(g, "tokenizer.ggml.model", &model, err, errlen)) return -1;
    if (model.len != 6 || memcmp(model.s, "gemma4", 6))
        return dg_fail(err, errlen, "%s: tokenizer.ggml.model is \"%.*s\"; dgemma reads the \"gemma4\" BPE tokenizer (or a tokenizer.json beside the file)",
                       g->path, (int)(model.len > 32 ? 32 : model.len), model.s);
    const gguf_kv *toks = gguf_find_kv(g, "tokenizer.ggml.tokens"), *merges = gguf_find_kv(g, "tokenizer.ggml.merges");
    const gguf_kv *types = gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (!toks || toks->arr_type != GGUF_STRING || toks->n < 1 || toks->n > (1u << 24))
        return dg_fail(err, errlen, "%s: tokenizer.ggml.tokens must be an array of 1 .. 2^24 strings", g->path);
    if (!merges || merges->arr_type != GGUF_STRING || merges->n > (1u << 26))
        return dg_fail(err, errlen, "%s: tokenizer.ggml.merges must be an array of strings", g->path);
    if (types && types->n != toks->n)
        return dg_fail(err, errlen, "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens", g->path,
                       (unsigned long long)types->n, (unsigned long long)toks->n);
    const int n = (int)toks->n, nm = (int)merges->n;
    dg_tok_str *pieces = calloc((size_t)n, sizeof(*pieces)), *mg = calloc((size_t)nm * 2 + 1, sizeof(*mg));
    uint8_t *flags = calloc((size_t)n, 1);
    int rc = -1;
    if (!pieces || !mg || !flags) { dg_fail(err, errlen, "out of memory"); goto done; }
    for (int i = 0; i < n; i++) {
        gguf_str s;
        int64_t ty = 1;
        if (gguf_kv_str(toks, (uint64_t)i, &s) || s.len > (1u << 20)) { dg_fail(err, errlen, "%s: tokenizer.ggml.tokens[%d] is not a string", g->path, i); goto done; }
        if (types && gguf_kv_int(types, (uint64_t)i, &ty)) { dg_fail(err, errlen, "%s: tokenizer.ggml.token_type[%d] is not an integer", g->path, i); goto done; }
        pieces[i] = (dg_tok_str){s.s, (uint32_t)s.len};
        flags[i] = (uint8_t)dg_tok_flags_from_gguf_type((int)ty);
    }
    for (int i = 0; i < nm; i++) {
        gguf_str s;
        if (gguf_kv_str(merges, (uint64_t)i, &s)) { dg_fail(err, errlen, "%s: tokenizer.ggml.merges[%d] is not a string", g->path, i); goto done; }
        const char *sp = memchr(s.s, ' ', s.len);   /* pieces hold no ' ' (the normalizer made them U+2581) */
        if (!sp || sp == s.s || sp + 1 == s.s + s.len) {
            dg_fail(err, errlen, "%s: tokenizer.ggml.merges[%d] = \"%.*s\" is not \"LEFT RIGHT\"", g->path, i, (int)(s.len > 64 ? 64 : s.len), s.s);
            goto done;
        }
        mg[2 * i] = (dg_tok_str){s.s, (uint32_t)(sp - s.s)};
        mg[2 * i + 1] = (dg_tok_str){sp + 1, (uint32_t)(s.s + s.len - sp - 1)};
    }
    dg_tok_spec spec;
    memset(&spec, 0, sizeof(spec));
    dg_tok_spec_gemma(&spec);
    spec.name = g->path;
    spec.n_pieces = n;
    spec.pieces = pieces;
    spec.piece_flags = flags;
    spec.n_merges = nm;
    spec.merges = mg;
    int64_t unk = -1;
    const gguf_kv *uk = gguf_find_kv(g, "tokenizer.ggml.unknown_token_id");
    if (uk && (gguf_kv_int(uk, 0, &unk) || unk < 0 || unk >= n)) { dg_fail(err, errlen, "%s: tokenizer.ggml.unknown_token_id is out of range", g->path); goto done; }
    if (unk >= 0) spec.unk = pieces[unk];
    rc = dg_tokenizer_build(&spec, out, err, errlen);
done:
    free(pieces);
    free(mg);
    free(flags);
    return rc;
}
