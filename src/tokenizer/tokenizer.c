/*
 * tokenizer.c - the Hugging Face `tokenizers` pipeline for BPE models of the Gemma family, ported
 * step by step so that ids and decoded text are identical to tokenizers' encode(text,
 * add_special_tokens=False) and decode(ids, skip_special_tokens):
 *
 *   text ─► added tokens in the raw text (leftmost-longest; lstrip / rstrip / single_word)
 *        └► each other span: normalizer ─► added tokens in the normalized text ─► pre-tokenizer
 *           (Split) ─► BPE per piece (chars or byte fallback, then merges in (rank, position) heap
 *           order with stale-entry skipping) ─► ids
 *   ids ─► strings (added content / normalized content / piece; special ones skipped on request)
 *       ─► decoders (Replace, ByteFallback, Fuse, Strip) ─► joined text
 *
 * The reference sources are tokenizers' added_vocabulary.rs, normalizer.rs, pattern.rs,
 * pre_tokenizers/split.rs, models/bpe/{model,word}.rs and the decoders; comments name the
 * behaviours that matter. The tokenizer is immutable after building: encode and decode allocate
 * their scratch per call, so one tokenizer can be shared between threads.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "load/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_tables.h"

#define NONE32 UINT32_MAX
#define MAX_PIECES (1 << 23)   /* ids are bounded so that a corrupt file cannot ask for huge arrays */

/* id_flags bits: the DG_TOKF_* of the added token at that id, plus: */
#define IDF_SKIP 64            /* its string is a special token's content: skipped by skip_special */

/* ===== UTF-8 ===== */

int dg_utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    unsigned lo = 0x80, hi = 0xBF;   /* allowed range of the second byte (Unicode Table 3-7) */
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
        v = (v << 6) | (b & 0x3F);
    }
    *cp = v;
    return len;
}

int dg_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        uint32_t cp;
        int l = dg_utf8_next(u + i, n - i, &cp);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* Bytes of the maximal invalid subpart at s (>= 1): the longest prefix of a well-formed sequence, or
 * one byte. Each subpart becomes one U+FFFD, like Python's decode(errors="replace") and Rust's
 * String::from_utf8_lossy. */
static size_t utf8_bad_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 1;
    size_t i = 1;
    for (; i < (size_t)len && i < n; i++) {
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    }
    return i;
}

static int put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int uni_in(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (cp < r[m][0]) hi = m;
        else if (cp > r[m][1]) lo = m + 1;
        else return 1;
    }
    return 0;
}
static int is_word(uint32_t cp) { return uni_in(dg_uni_word, sizeof(dg_uni_word) / sizeof(dg_uni_word[0]), cp); }
static int is_space(uint32_t cp) { return uni_in(dg_uni_space, sizeof(dg_uni_space) / sizeof(dg_uni_space[0]), cp); }

/* the code point that ends at s[0..n) (s is valid UTF-8, n > 0) */
static uint32_t last_cp(const char *s, size_t n) {
    size_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    uint32_t cp = 0;
    dg_utf8_next((const unsigned char *)s + i, n - i, &cp);
    return cp;
}

/* ===== growable arrays ===== */

int dg_tok_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}


typedef dg_strbuf buf;

static int buf_reserve(buf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}
int dg_strbuf_add(dg_strbuf *b, const char *s, size_t n) {
    if (buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}
static int buf_add(buf *b, const char *s, size_t n) { return dg_strbuf_add(b, s, n); }

/* find a literal (non-empty) in s[from, n): its offset, or n */
static size_t find_lit(const char *s, size_t n, size_t from, const dg_tok_str *pat) {
    if (pat->n > n) return n;
    const size_t last = n - pat->n;
    for (size_t i = from; i <= last; i++) {
        const char *c = memchr(s + i, pat->p[0], last - i + 1);
        if (!c) return n;
        i = (size_t)(c - s);
        if (memcmp(c, pat->p, pat->n) == 0) return i;
    }
    return n;
}

/* replace every non-overlapping occurrence, left to right (tokenizers' Replace with a String pattern
 * escapes it into a regex: leftmost matches, resuming after each) */
static int replace_lit(buf *o, const char *s, size_t n, const dg_tok_str *pat, const dg_tok_str *with) {
    size_t at = 0;
    for (;;) {
        size_t m = find_lit(s, n, at, pat);
        if (buf_add(o, s + at, m - at)) return -1;
        if (m >= n) return 0;
        if (buf_add(o, with->p, with->n)) return -1;
        at = m + pat->n;
    }
}

/* ===== hash tables ===== */

#define FNV_BASIS 0xcbf29ce484222325ull
static inline uint64_t fnv64(uint64_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h;
}
static inline uint32_t fold(uint64_t h) { return (uint32_t)(h ^ (h >> 32)); }
static uint32_t hash_str(const char *p, size_t n) { return fold(fnv64(FNV_BASIS, p, n)); }
static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}

/* string -> id, open addressing; a slot holds hash << 32 | (id + 1), 0 = empty. The strings live in
 * the tokenizer's string buffer (off/len per key). */
typedef struct {
    uint64_t *slot;
    uint32_t mask;
} strtab;

static int strtab_init(strtab *t, size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    t->slot = calloc(cap, sizeof(uint64_t));
    t->mask = (uint32_t)(cap - 1);
    return t->slot ? 0 : -1;
}

typedef struct {
    const char *str;
    const uint32_t *off, *len;   /* per key index */
} strkeys;

/* index of key (s, n) or -1; *slot_out = the slot where it is or would go */
static int64_t strtab_find(const strtab *t, const strkeys *k, const char *s, size_t n, uint32_t h, size_t *slot_out) {
    size_t i = h & t->mask;
    for (;;) {
        uint64_t v = t->slot[i];
        if (!v) { if (slot_out) *slot_out = i; return -1; }
        uint32_t idx = (uint32_t)v - 1;
        if ((uint32_t)(v >> 32) == h && k->len[idx] == n && memcmp(k->str + k->off[idx], s, n) == 0) {
            if (slot_out) *slot_out = i;
            return idx;
        }
        i = (i + 1) & t->mask;
    }
}

/* (left, right) -> (rank, new id) */
typedef struct {
    uint64_t key;   /* left << 32 | right; UINT64_MAX = empty */
    uint32_t rank, id;
} merge_slot;

/* ===== the tokenizer ===== */

typedef struct {
    int32_t child, sibling, value;   /* value: the id of the added token ending here, or -1 */
    uint8_t byte;
} tnode;

typedef struct {
    tnode *nodes;
    int n;
    size_t cap;
    int32_t root[256];
} trie;

struct dg_tokenizer {
    int n_vocab;                 /* ids [0, n_vocab): model pieces and added tokens */
    int n_pieces;                /* model ids [0, n_pieces) */
    char *str;                   /* every string the tokenizer keeps */
    uint32_t *piece_off, *piece_len;   /* [n_pieces] the model's pieces; len NONE32 = hole */
    uint32_t *dec_off, *dec_len;       /* [n_vocab] id_to_token of tokenizers; len NONE32 = none */
    uint8_t *id_flags;                 /* [n_vocab] DG_TOKF_* of the added token there, IDF_SKIP */
    strtab pieces;               /* model vocabulary */
    strtab added;                /* added-token contents (keys: add_off/add_len) */
    uint32_t *add_off, *add_len;
    int32_t *add_id;
    int n_added;
    merge_slot *merges;
    uint64_t merge_mask;
    int32_t byte_id[256];        /* "<0xHH>" pieces, -1 when absent */
    int32_t *bmp_id;             /* [65536] the single-character piece of a BMP code point, or -1 */
    int32_t unk_id;              /* -1: no unknown token */
    int byte_fallback, fuse_unk, ignore_merges;
    trie raw_trie, norm_trie;    /* added tokens matched before / after normalization */
    int n_raw, n_normed;
    int n_norm, n_pre, n_dec, has_decoder, n_dec_pre;   /* n_dec_pre: decoders before the first Fuse */
    dg_tok_norm norm[DG_TOK_MAX_STEPS];
    dg_tok_split pre[DG_TOK_MAX_STEPS];
    dg_tok_dec dec[DG_TOK_MAX_STEPS];
    char *step_str;              /* the strings of the steps above */
};

static int32_t piece_lookup(const dg_tokenizer *t, const char *s, size_t n) {
    strkeys k = {t->str, t->piece_off, t->piece_len};
    return (int32_t)strtab_find(&t->pieces, &k, s, n, hash_str(s, n), NULL);
}

/* the piece equal to l + r (h: its hash), or -1 */
static int32_t find_concat(const dg_tokenizer *t, const dg_tok_str *l, const dg_tok_str *r, uint32_t h) {
    size_t i = h & t->pieces.mask, n = (size_t)l->n + r->n;
    for (;;) {
        uint64_t v = t->pieces.slot[i];
        if (!v) return -1;
        uint32_t idx = (uint32_t)v - 1;
        if ((uint32_t)(v >> 32) == h && t->piece_len[idx] == n) {
            const char *p = t->str + t->piece_off[idx];
            if (!memcmp(p, l->p, l->n) && !memcmp(p + l->n, r->p, r->n)) return (int32_t)idx;
        }
        i = (i + 1) & t->pieces.mask;
    }
}

static int64_t added_lookup(const dg_tokenizer *t, const char *s, size_t n) {
    if (!t->n_added) return -1;
    strkeys k = {t->str, t->add_off, t->add_len};
    return strtab_find(&t->added, &k, s, n, hash_str(s, n), NULL);
}

static const merge_slot *merge_find(const dg_tokenizer *t, uint32_t a, uint32_t b) {
    uint64_t key = (uint64_t)a << 32 | b;
    uint64_t i = mix64(key) & t->merge_mask;
    for (;;) {
        const merge_slot *m = &t->merges[i];
        if (m->key == key) return m;
        if (m->key == UINT64_MAX) return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

/* ----- trie of added-token patterns ----- */

static int trie_insert(trie *tr, const char *s, size_t n, int32_t value) {
    /* links are kept as (node, which) rather than pointers: the node array moves when it grows */
    int32_t parent = -1;   /* -1: the root table */
    int32_t node = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t prev = -1;
        node = parent < 0 ? tr->root[b] : tr->nodes[parent].child;
        while (node >= 0 && tr->nodes[node].byte != b) { prev = node; node = tr->nodes[node].sibling; }
        if (node < 0) {
            if (dg_tok_grow((void **)&tr->nodes, &tr->cap, (size_t)tr->n + 1, sizeof(tnode))) return -1;
            node = tr->n++;
            tr->nodes[node] = (tnode){-1, -1, -1, b};
            if (parent < 0) tr->root[b] = node;
            else if (prev < 0) tr->nodes[parent].child = node;
            else tr->nodes[prev].sibling = node;
        }
        parent = node;
    }
    if (tr->nodes[node].value >= 0) return 1;   /* the same pattern twice */
    tr->nodes[node].value = value;
    return 0;
}

/* Leftmost-longest match in s[from, n): the earliest start, then the longest pattern there. */
static int trie_find(const trie *tr, const char *s, size_t n, size_t from, size_t *ms, size_t *me, int32_t *id) {
    for (size_t st = from; st < n; st++) {
        int32_t node = tr->root[(unsigned char)s[st]];
        int32_t best = -1;
        size_t best_end = 0;
        size_t i = st;
        while (node >= 0) {
            i++;
            if (tr->nodes[node].value >= 0) { best = tr->nodes[node].value; best_end = i; }
            if (i >= n) break;
            uint8_t b = (uint8_t)s[i];
            node = tr->nodes[node].child;
            while (node >= 0 && tr->nodes[node].byte != b) node = tr->nodes[node].sibling;
        }
        if (best >= 0) { *ms = st; *me = best_end; *id = best; return 1; }
    }
    return 0;
}

/* ===== public accessors ===== */

void dg_tokenizer_free(dg_tokenizer *t) {
    if (!t) return;
    free(t->str);
    free(t->piece_off); free(t->piece_len);
    free(t->dec_off); free(t->dec_len);
    free(t->id_flags);
    free(t->pieces.slot); free(t->added.slot);
    free(t->add_off); free(t->add_len); free(t->add_id);
    free(t->merges);
    free(t->bmp_id);
    free(t->raw_trie.nodes); free(t->norm_trie.nodes);
    free(t->step_str);
    free(t);
}

int dg_tokenizer_n_vocab(const dg_tokenizer *t) { return t->n_vocab; }

int32_t dg_tokenizer_find(const dg_tokenizer *t, const char *piece) {
    size_t n = strlen(piece);
    int64_t a = added_lookup(t, piece, n);   /* tokenizers' token_to_id: added tokens first */
    if (a >= 0) return t->add_id[a];
    return piece_lookup(t, piece, n);
}

const char *dg_tokenizer_piece(const dg_tokenizer *t, int32_t id, int *special) {
    if (special) *special = 0;
    if (id < 0 || id >= t->n_vocab || t->dec_len[id] == NONE32) return NULL;
    if (special) *special = (t->id_flags[id] & DG_TOKF_SPECIAL) != 0;
    return t->str + t->dec_off[id];
}

/* ===== building ===== */

void dg_tok_spec_gemma(dg_tok_spec *s) {
    static const char space[] = " ", meta[] = "\xE2\x96\x81", unk[] = "<unk>";
    s->unk = (dg_tok_str){unk, 5};
    s->byte_fallback = 1;
    s->fuse_unk = 1;
    s->ignore_merges = 0;
    s->n_norm = 1;
    s->norm[0] = (dg_tok_norm){DG_NORM_REPLACE, {space, 1}, {meta, 3}};
    s->n_pre = 1;
    s->pre[0] = (dg_tok_split){{space, 1}, DG_SPLIT_MERGED_PREV, 0};
    s->has_decoder = 1;
    s->n_dec = 3;
    s->dec[0] = (dg_tok_dec){DG_DEC_REPLACE, {meta, 3}, {space, 1}, 0, 0, 0};
    s->dec[1] = (dg_tok_dec){DG_DEC_BYTE_FALLBACK, {0}, {0}, 0, 0, 0};
    s->dec[2] = (dg_tok_dec){DG_DEC_FUSE, {0}, {0}, 0, 0, 0};
}

unsigned dg_tok_flags_from_gguf_type(int type) {
    switch (type) {
    case 2: case 3: return DG_TOKF_ADDED | DG_TOKF_SPECIAL;
    case 4: return DG_TOKF_ADDED;
    default: return 0;
    }
}

/* Apply the normalizer steps to s[0, n) into out (out is reset). */
static int normalize(const dg_tokenizer *t, const char *s, size_t n, buf *out, buf *tmp) {
    out->n = 0;
    if (buf_add(out, s, n)) return -1;
    for (int k = 0; k < t->n_norm; k++) {
        const dg_tok_norm *st = &t->norm[k];
        tmp->n = 0;
        if (st->type == DG_NORM_REPLACE) {
            if (replace_lit(tmp, out->p, out->n, &st->pattern, &st->content)) return -1;
        } else {   /* Prepend: only to a non-empty string */
            if (out->n && (buf_add(tmp, st->content.p, st->content.n) || buf_add(tmp, out->p, out->n))) return -1;
        }
        buf sw = *out; *out = *tmp; *tmp = sw;
        if (!out->p && buf_add(out, "", 0)) return -1;
    }
    return 0;
}

typedef struct {
    const dg_tok_spec *s;
    char *err;
    size_t errlen;
} bctx;

static int bfail_oom(bctx *c) { return dg_fail(c->err, c->errlen, "%s: out of memory building the tokenizer", c->s->name ? c->s->name : "tokenizer"); }

/* keep a copy of a string in b, returning its offset */
static int keep(buf *b, const char *s, size_t n, uint32_t *off) {
    if (b->n + n + 1 > UINT32_MAX) return -1;
    *off = (uint32_t)b->n;
    if (buf_add(b, s, n) || buf_add(b, "", 1)) return -1;   /* NUL-terminated for dg_tokenizer_piece */
    return 0;
}

/* The added-token state of tokenizers' AddedVocabulary while tokens are added. */
typedef struct {
    int32_t id;
    unsigned flags;
    uint32_t off, len;         /* content */
    uint32_t noff, nlen;       /* normalized content (NONE32 = none): normalized_cache */
} added_slot;

static const char *spec_name(const dg_tok_spec *s) { return s->name ? s->name : "tokenizer"; }

static int copy_steps(dg_tokenizer *t, const dg_tok_spec *s, bctx *c) {
    buf sb = {0};
    if (s->n_norm < 0 || s->n_norm > DG_TOK_MAX_STEPS || s->n_pre < 0 || s->n_pre > DG_TOK_MAX_STEPS ||
        s->n_dec < 0 || s->n_dec > DG_TOK_MAX_STEPS)
        return dg_fail(c->err, c->errlen, "%s: too many normalizer / pre-tokenizer / decoder steps (at most %d each)",
                       spec_name(s), DG_TOK_MAX_STEPS);
    /* first pass: sizes, so that pointers into step_str stay valid */
    size_t total = 1;
    for (int k = 0; k < s->n_norm; k++) total += s->norm[k].pattern.n + s->norm[k].content.n + 2;
    for (int k = 0; k < s->n_pre; k++) total += s->pre[k].pattern.n + 1;
    for (int k = 0; k < s->n_dec; k++) total += s->dec[k].pattern.n + s->dec[k].content.n + 2;
    if (buf_reserve(&sb, total)) return bfail_oom(c);
    t->step_str = sb.p;
#define KEEPSTR(dst, src) do { (dst).n = (src).n; (dst).p = sb.p + sb.n; buf_add(&sb, (src).p ? (src).p : "", (src).n); buf_add(&sb, "", 1); } while (0)
    for (int k = 0; k < s->n_norm; k++) {
        const dg_tok_norm *in = &s->norm[k];
        if (in->type != DG_NORM_REPLACE && in->type != DG_NORM_PREPEND)
            return dg_fail(c->err, c->errlen, "%s: normalizer step %d: unknown type", spec_name(s), k);
        if (in->type == DG_NORM_REPLACE && !in->pattern.n)
            return dg_fail(c->err, c->errlen, "%s: normalizer step %d: Replace with an empty pattern is not supported", spec_name(s), k);
        t->norm[k].type = in->type;
        KEEPSTR(t->norm[k].pattern, in->pattern);
        KEEPSTR(t->norm[k].content, in->content);
    }
    for (int k = 0; k < s->n_pre; k++) {
        const dg_tok_split *in = &s->pre[k];
        if (!in->pattern.n) return dg_fail(c->err, c->errlen, "%s: pre-tokenizer step %d: Split with an empty pattern is not supported", spec_name(s), k);
        if (in->behavior < DG_SPLIT_REMOVED || in->behavior > DG_SPLIT_CONTIGUOUS)
            return dg_fail(c->err, c->errlen, "%s: pre-tokenizer step %d: unknown Split behavior", spec_name(s), k);
        t->pre[k] = *in;
        KEEPSTR(t->pre[k].pattern, in->pattern);
    }
    int fused = 0;
    t->n_dec_pre = s->n_dec;
    for (int k = 0; k < s->n_dec; k++) {
        const dg_tok_dec *in = &s->dec[k];
        if (in->type < DG_DEC_REPLACE || in->type > DG_DEC_STRIP)
            return dg_fail(c->err, c->errlen, "%s: decoder step %d: unknown type", spec_name(s), k);
        if (in->type == DG_DEC_REPLACE && !in->pattern.n)
            return dg_fail(c->err, c->errlen, "%s: decoder step %d: Replace with an empty pattern is not supported", spec_name(s), k);
        if (in->type == DG_DEC_STRIP && (in->start < 0 || in->stop < 0 || in->strip_char > 0x10FFFF))
            return dg_fail(c->err, c->errlen, "%s: decoder step %d: bad Strip parameters", spec_name(s), k);
        /* after Fuse there is one string: only Strip (and Fuse) keep a streaming decoder exact */
        if (fused && in->type != DG_DEC_STRIP && in->type != DG_DEC_FUSE)
            return dg_fail(c->err, c->errlen, "%s: decoder step %d: %s after Fuse is not supported", spec_name(s), k,
                           in->type == DG_DEC_REPLACE ? "Replace" : "ByteFallback");
        if (in->type == DG_DEC_FUSE && !fused) { fused = 1; t->n_dec_pre = k; }
        t->dec[k] = *in;
        KEEPSTR(t->dec[k].pattern, in->pattern);
        KEEPSTR(t->dec[k].content, in->content);
    }
#undef KEEPSTR
    t->n_norm = s->n_norm;
    t->n_pre = s->n_pre;
    t->n_dec = s->n_dec;
    t->has_decoder = s->has_decoder;
    return 0;
}

int dg_tokenizer_build(const dg_tok_spec *s, dg_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    bctx c = {s, err, errlen};
    const char *name = spec_name(s);
    if (s->n_pieces < 0 || s->n_pieces > MAX_PIECES)
        return dg_fail(err, errlen, "%s: vocabulary of %d ids (at most %d)", name, s->n_pieces, MAX_PIECES);
    if (s->n_merges < 0) return dg_fail(err, errlen, "%s: negative merge count", name);
    dg_tokenizer *t = calloc(1, sizeof(*t));
    added_slot *slots = NULL;
    int32_t *slot_of = NULL;
    dg_tok_added *inputs = NULL;
    int n_slots = 0;
    buf sb = {0}, nb = {0}, tb = {0};
    int rc = -1;
    if (!t) { bfail_oom(&c); goto out; }
    t->n_pieces = s->n_pieces;
    memset(t->raw_trie.root, 0xff, sizeof(t->raw_trie.root));
    memset(t->norm_trie.root, 0xff, sizeof(t->norm_trie.root));
    if (copy_steps(t, s, &c)) goto out;
    t->byte_fallback = s->byte_fallback;
    t->fuse_unk = s->fuse_unk;
    t->ignore_merges = s->ignore_merges;

    /* ----- model pieces ----- */
    size_t total = 0;
    int present = 0;
    for (int i = 0; i < s->n_pieces; i++) {
        const dg_tok_str *p = &s->pieces[i];
        if (!p->p) continue;
        if (!dg_utf8_valid(p->p, p->n)) { dg_fail(err, errlen, "%s: piece %d is not valid UTF-8", name, i); goto out; }
        total += p->n + 1;
        present++;
    }
    if (total > UINT32_MAX / 2) { dg_fail(err, errlen, "%s: vocabulary strings too large", name); goto out; }
    if (buf_reserve(&sb, total + 1024)) { bfail_oom(&c); goto out; }
    size_t np = s->n_pieces ? (size_t)s->n_pieces : 1;
    t->piece_off = malloc(np * 4);
    t->piece_len = malloc(np * 4);
    if (!t->piece_off || !t->piece_len || strtab_init(&t->pieces, (size_t)present)) { bfail_oom(&c); goto out; }
    for (int i = 0; i < s->n_pieces; i++) {
        const dg_tok_str *p = &s->pieces[i];
        t->piece_len[i] = NONE32;
        t->piece_off[i] = 0;
        if (!p->p) continue;
        uint32_t h = hash_str(p->p, p->n);
        size_t slot;
        t->str = sb.p;
        strkeys k = {sb.p, t->piece_off, t->piece_len};
        int64_t dup = strtab_find(&t->pieces, &k, p->p, p->n, h, &slot);
        if (dup >= 0) {
            dg_fail(err, errlen, "%s: piece '%.*s' has two ids (%lld and %d)", name, (int)(p->n > 64 ? 64 : p->n), p->p, (long long)dup, i);
            goto out;
        }
        if (keep(&sb, p->p, p->n, &t->piece_off[i])) { bfail_oom(&c); goto out; }
        t->piece_len[i] = p->n;
        t->pieces.slot[slot] = (uint64_t)h << 32 | (uint32_t)(i + 1);
    }
    t->str = sb.p;

    /* the unknown token, byte pieces, single characters */
    t->unk_id = -1;
    if (s->unk.p) {
        t->unk_id = piece_lookup(t, s->unk.p, s->unk.n);
        /* tokenizers fails only when the unknown token is needed; a vocabulary without it is refused here */
        if (t->unk_id < 0) { dg_fail(err, errlen, "%s: model.unk_token '%.*s' is not in the vocabulary", name, (int)s->unk.n, s->unk.p); goto out; }
    }
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        t->byte_id[b] = piece_lookup(t, hex, 6);
    }
    t->bmp_id = malloc(sizeof(int32_t) * 65536);
    if (!t->bmp_id) { bfail_oom(&c); goto out; }
    memset(t->bmp_id, 0xff, sizeof(int32_t) * 65536);
    for (int i = 0; i < s->n_pieces; i++) {
        if (t->piece_len[i] == NONE32 || t->piece_len[i] > 3) continue;
        uint32_t cp;
        int l = dg_utf8_next((const unsigned char *)t->str + t->piece_off[i], t->piece_len[i], &cp);
        if (l && (uint32_t)l == t->piece_len[i] && cp < 65536) t->bmp_id[cp] = i;
    }

    /* ----- merges: (left, right) -> (rank, id of left+right); a later duplicate overwrites ----- */
    {
        size_t cap = 16;
        while (cap < (size_t)s->n_merges * 2) cap *= 2;
        t->merges = malloc(sizeof(merge_slot) * cap);
        if (!t->merges) { bfail_oom(&c); goto out; }
        for (size_t i = 0; i < cap; i++) t->merges[i].key = UINT64_MAX;
        t->merge_mask = cap - 1;
        /* in blocks, prefetching the table slots first: the lookups are memory-bound */
        enum { B = 16 };
        strkeys pk = {t->str, t->piece_off, t->piece_len};
        for (int r0 = 0; r0 < s->n_merges; r0 += B) {
            int cnt = s->n_merges - r0 < B ? s->n_merges - r0 : B;
            uint32_t ha[B], hb[B], hm[B];
            int32_t ia[B], ib[B], im[B];
            uint64_t mi[B];
            for (int q = 0; q < cnt; q++) {
                const dg_tok_str *l = &s->merges[2 * (r0 + q)], *rr = &s->merges[2 * (r0 + q) + 1];
                if (!l->p || !rr->p) { ha[q] = hb[q] = hm[q] = 0; continue; }
                uint64_t fl = fnv64(FNV_BASIS, l->p, l->n);
                ha[q] = fold(fl);
                hb[q] = fold(fnv64(FNV_BASIS, rr->p, rr->n));
                hm[q] = fold(fnv64(fl, rr->p, rr->n));
                __builtin_prefetch(&t->pieces.slot[ha[q] & t->pieces.mask]);
                __builtin_prefetch(&t->pieces.slot[hb[q] & t->pieces.mask]);
                __builtin_prefetch(&t->pieces.slot[hm[q] & t->pieces.mask]);
            }
            for (int q = 0; q < cnt; q++) {
                int r = r0 + q;
                const dg_tok_str *l = &s->merges[2 * r], *rr = &s->merges[2 * r + 1];
                ia[q] = l->p ? (int32_t)strtab_find(&t->pieces, &pk, l->p, l->n, ha[q], NULL) : -1;
                ib[q] = rr->p ? (int32_t)strtab_find(&t->pieces, &pk, rr->p, rr->n, hb[q], NULL) : -1;
                if (ia[q] < 0 || ib[q] < 0) {
                    const dg_tok_str *bad = ia[q] < 0 ? l : rr;
                    dg_fail(err, errlen, "%s: merge %d: '%.*s' is not in the vocabulary", name, r, (int)(bad->n > 64 ? 64 : bad->n),
                            bad->p ? bad->p : "");
                    goto out;
                }
                im[q] = find_concat(t, l, rr, hm[q]);
                if (im[q] < 0) {
                    tb.n = 0;
                    if (buf_add(&tb, l->p, l->n) || buf_add(&tb, rr->p, rr->n)) { bfail_oom(&c); goto out; }
                    dg_fail(err, errlen, "%s: merge %d: the merged piece '%.*s' is not in the vocabulary", name, r,
                            (int)(tb.n > 64 ? 64 : tb.n), tb.p);
                    goto out;
                }
                mi[q] = mix64((uint64_t)ia[q] << 32 | (uint32_t)ib[q]) & t->merge_mask;
                __builtin_prefetch(&t->merges[mi[q]], 1);
            }
            for (int q = 0; q < cnt; q++) {
                uint64_t key = (uint64_t)ia[q] << 32 | (uint32_t)ib[q];
                uint64_t i = mi[q];
                while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key) i = (i + 1) & t->merge_mask;
                t->merges[i] = (merge_slot){key, (uint32_t)(r0 + q), (uint32_t)im[q]};
            }
        }
    }

    /* ----- added tokens, as tokenizers' AddedVocabulary::add_tokens (one call, file order) ----- */
    int n_flagged = 0;
    if (s->piece_flags)
        for (int i = 0; i < s->n_pieces; i++) n_flagged += s->pieces[i].p && (s->piece_flags[i] & DG_TOKF_ADDED);
    if (s->n_added < 0) { dg_fail(err, errlen, "%s: negative added-token count", name); goto out; }
    int n_in = n_flagged + s->n_added;
    /* the tokens added, in order: flagged pieces by id, then the explicit list */
    inputs = malloc(sizeof(dg_tok_added) * ((size_t)n_in + 1));
    if (!inputs) { bfail_oom(&c); goto out; }
    for (int i = 0, j = 0; i < s->n_pieces && s->piece_flags; i++)
        if (s->pieces[i].p && (s->piece_flags[i] & DG_TOKF_ADDED)) inputs[j++] = (dg_tok_added){s->pieces[i], s->piece_flags[i] & ~(unsigned)DG_TOKF_ADDED};
    for (int j = 0; j < s->n_added; j++)
        inputs[n_flagged + j] = (dg_tok_added){s->added[j].content, s->added[j].flags & ~(unsigned)DG_TOKF_ADDED};
    slots = calloc((size_t)n_in + 1, sizeof(added_slot));
    slot_of = malloc(sizeof(int32_t) * ((size_t)s->n_pieces + (size_t)n_in + 1));
    if (slot_of) memset(slot_of, 0xff, sizeof(int32_t) * ((size_t)s->n_pieces + (size_t)n_in + 1));
    t->add_off = malloc(sizeof(uint32_t) * ((size_t)n_in + 1));
    t->add_len = malloc(sizeof(uint32_t) * ((size_t)n_in + 1));
    t->add_id = malloc(sizeof(int32_t) * ((size_t)n_in + 1));
    if (!slots || !slot_of || !t->add_off || !t->add_len || !t->add_id || strtab_init(&t->added, (size_t)n_in + 1)) { bfail_oom(&c); goto out; }
    /* next_id: the model's vocabulary size (its number of pieces, as tokenizers counts them) */
    int64_t next_id = present;
    int max_id = s->n_pieces - 1;
    for (int j = 0; j < n_in; j++) {
        dg_tok_str content = inputs[j].content;
        unsigned flags = inputs[j].flags;
        if (!content.p || !content.n) continue;   /* tokenizers ignores empty added tokens */
        if (!dg_utf8_valid(content.p, content.n)) { dg_fail(err, errlen, "%s: added token %d is not valid UTF-8", name, j); goto out; }
        int64_t a = added_lookup(t, content.p, content.n);
        int32_t id;
        if (a >= 0) {
            id = t->add_id[a];
            if (slot_of[id] >= 0 && slots[slot_of[id]].flags == flags) continue;   /* the same token again */
        } else {
            id = piece_lookup(t, content.p, content.n);
            if (id < 0) {
                if (next_id > MAX_PIECES) { dg_fail(err, errlen, "%s: too many added tokens", name); goto out; }
                id = (int32_t)next_id++;
            }
            uint32_t h = hash_str(content.p, content.n);
            size_t slot;
            strkeys k = {sb.p, t->add_off, t->add_len};
            strtab_find(&t->added, &k, content.p, content.n, h, &slot);
            int q = t->n_added++;
            if (keep(&sb, content.p, content.n, &t->add_off[q])) { bfail_oom(&c); goto out; }
            t->str = sb.p;
            t->add_len[q] = content.n;
            t->add_id[q] = id;
            t->added.slot[slot] = (uint64_t)h << 32 | (uint32_t)(q + 1);
        }
        if (id > max_id) max_id = id;
        /* added_tokens_map_r[id] = token: one slot per id, the latest wins */
        if (slot_of[id] < 0) {
            slot_of[id] = n_slots++;
            slots[slot_of[id]].noff = 0;
            slots[slot_of[id]].nlen = NONE32;
        }
        added_slot *sl = &slots[slot_of[id]];
        sl->id = id;
        sl->flags = flags;
        if (keep(&sb, content.p, content.n, &sl->off)) { bfail_oom(&c); goto out; }
        t->str = sb.p;
        sl->len = content.n;
        if ((flags & DG_TOKF_NORMALIZED) && t->n_norm) {   /* normalized_cache (never cleared) */
            if (normalize(t, content.p, content.n, &nb, &tb)) { bfail_oom(&c); goto out; }
            if (nb.n != content.n || memcmp(nb.p, content.p, nb.n)) {
                if (keep(&sb, nb.p, nb.n, &sl->noff)) { bfail_oom(&c); goto out; }
                t->str = sb.p;
                sl->nlen = (uint32_t)nb.n;
            }
        }
    }
    t->n_vocab = max_id + 1;
    if (t->n_vocab <= 0) { dg_fail(err, errlen, "%s: empty vocabulary", name); goto out; }

    /* ----- per id: decode string, flags; special contents; tries ----- */
    size_t nv = (size_t)t->n_vocab;
    t->dec_off = calloc(nv, 4);
    t->dec_len = malloc(nv * 4);
    t->id_flags = calloc(nv, 1);
    if (!t->dec_off || !t->dec_len || !t->id_flags) { bfail_oom(&c); goto out; }
    for (size_t i = 0; i < nv; i++) {
        t->dec_len[i] = NONE32;
        if ((int)i < t->n_pieces && t->piece_len[i] != NONE32) { t->dec_off[i] = t->piece_off[i]; t->dec_len[i] = t->piece_len[i]; }
    }
    strtab special;
    /* the special set only grows: a token once added as special stays in it (is_new_special) */
    uint32_t *sp_off = NULL, *sp_len = NULL;
    if (strtab_init(&special, (size_t)n_in + 1)) { bfail_oom(&c); goto out; }
    sp_off = malloc(sizeof(uint32_t) * ((size_t)n_in + 1));
    sp_len = malloc(sizeof(uint32_t) * ((size_t)n_in + 1));
    int n_sp = 0;
    if (!sp_off || !sp_len) { free(sp_off); free(sp_len); free(special.slot); bfail_oom(&c); goto out; }
    /* replay the special flags of every input token (not only the last per id) */
    for (int j = 0; j < n_in; j++) {
        dg_tok_str content = inputs[j].content;
        unsigned flags = inputs[j].flags;
        if (!content.p || !content.n || !(flags & DG_TOKF_SPECIAL)) continue;
        int64_t a = added_lookup(t, content.p, content.n);
        if (a < 0) continue;
        uint32_t h = hash_str(content.p, content.n);
        size_t slot;
        strkeys k = {t->str, sp_off, sp_len};
        if (strtab_find(&special, &k, content.p, content.n, h, &slot) >= 0) continue;
        sp_off[n_sp] = t->add_off[a];
        sp_len[n_sp] = t->add_len[a];
        special.slot[slot] = (uint64_t)h << 32 | (uint32_t)(n_sp + 1);
        n_sp++;
    }
    for (int q = 0; q < n_slots; q++) {
        added_slot *sl = &slots[q];
        t->dec_off[sl->id] = sl->nlen != NONE32 ? sl->noff : sl->off;
        t->dec_len[sl->id] = sl->nlen != NONE32 ? sl->nlen : sl->len;
        t->id_flags[sl->id] = (uint8_t)(sl->flags | DG_TOKF_ADDED);
        int normed = (sl->flags & DG_TOKF_NORMALIZED) != 0;
        const char *pat = t->str + (normed && sl->nlen != NONE32 ? sl->noff : sl->off);
        uint32_t plen = normed && sl->nlen != NONE32 ? sl->nlen : sl->len;
        if (plen == 0) continue;   /* a content normalized to nothing matches nothing */
        int r = trie_insert(normed ? &t->norm_trie : &t->raw_trie, pat, plen, sl->id);
        if (r < 0) { free(sp_off); free(sp_len); free(special.slot); bfail_oom(&c); goto out; }
        if (r > 0) {
            free(sp_off); free(sp_len); free(special.slot);
            dg_fail(err, errlen, "%s: two added tokens match the same text '%.*s'", name, (int)(plen > 64 ? 64 : plen), pat);
            goto out;
        }
        if (normed) t->n_normed++; else t->n_raw++;
    }
    /* skip flag: decode drops a token whose string is a special token's content */
    if (n_sp) {
        for (size_t i = 0; i < nv; i++) {
            if (t->dec_len[i] == NONE32) continue;
            const char *ps = t->str + t->dec_off[i];
            strkeys k = {t->str, sp_off, sp_len};
            if (strtab_find(&special, &k, ps, t->dec_len[i], hash_str(ps, t->dec_len[i]), NULL) >= 0) t->id_flags[i] |= IDF_SKIP;
        }
    }
    free(sp_off); free(sp_len); free(special.slot);
    rc = 0;
out:
    free(slots);
    free(slot_of);
    free(inputs);
    free(nb.p);
    free(tb.p);
    if (rc) {
        if (t) { t->str = sb.p; dg_tokenizer_free(t); }
        else free(sb.p);
        return -1;
    }
    t->str = sb.p;
    *out = t;
    return 0;
}

/* ===== encoding ===== */

typedef struct {
    int32_t *p;
    int n;
    size_t cap;
} idvec;

static int ids_push(idvec *v, int32_t id) {
    if (dg_tok_grow((void **)&v->p, &v->cap, (size_t)v->n + 1, sizeof(int32_t))) return -1;
    v->p[v->n++] = id;
    return 0;
}

typedef struct {
    uint32_t c;
    int32_t prev, next;
    uint32_t len;
} symbol;

typedef struct {
    uint32_t rank, pos, id;
    uint32_t left, right;   /* the pair when pushed: if it is still there, the entry is valid */
} hentry;

typedef struct {
    const dg_tokenizer *t;
    idvec *out;
    symbol *sym;
    size_t sym_cap;
    hentry *heap;
    size_t heap_n, heap_cap;
    buf norm, tmp;
    size_t *spl;          /* pre-tokenizer piece bounds (pairs) */
    size_t spl_n, spl_cap;
    size_t *spl2;
    size_t spl2_n, spl2_cap;
} enc;

static int heap_less(const hentry *a, const hentry *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(enc *e, hentry h) {
    if (dg_tok_grow((void **)&e->heap, &e->heap_cap, e->heap_n + 1, sizeof(hentry))) return -1;
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!heap_less(&h, &e->heap[par])) break;
        e->heap[i] = e->heap[par];
        i = par;
    }
    e->heap[i] = h;
    return 0;
}

static hentry heap_pop(enc *e) {
    hentry top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const hentry *best = &last;
        if (l < n && heap_less(&e->heap[l], best)) { m = l; best = &e->heap[l]; }
        if (l + 1 < n && heap_less(&e->heap[l + 1], best)) m = l + 1;
        if (m == i) break;
        e->heap[i] = e->heap[m];
        i = m;
    }
    if (n) e->heap[i] = last;
    return top;
}

static int sym_add(enc *e, size_t *n, uint32_t c, uint32_t len) {
    if (dg_tok_grow((void **)&e->sym, &e->sym_cap, *n + 1, sizeof(symbol))) return -1;
    symbol *s = &e->sym[*n];
    s->c = c;
    s->len = len;
    s->prev = (int32_t)*n - 1;
    s->next = -1;
    if (*n) e->sym[*n - 1].next = (int32_t)*n;
    (*n)++;
    return 0;
}

/* BPE of one pre-tokenized word (models/bpe/model.rs merge_word + word.rs merge_all). */
static int bpe_word(enc *e, const char *w, size_t n) {
    const dg_tokenizer *t = e->t;
    if (!n) return 0;
    if (t->ignore_merges) {
        int32_t id = piece_lookup(t, w, n);
        if (id >= 0) return ids_push(e->out, id);
    }
    size_t ns = 0;
    int32_t unk = -1;         /* a pending unknown symbol (fuse_unk extends it) */
    uint32_t unk_len = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int l = dg_utf8_next((const unsigned char *)w + i, n - i, &cp);
        if (!l) l = 1;   /* cannot happen: the text was made valid UTF-8 */
        int32_t id = cp < 65536 ? t->bmp_id[cp] : piece_lookup(t, w + i, (size_t)l);
        if (id >= 0) {
            if (unk >= 0) { if (sym_add(e, &ns, (uint32_t)unk, unk_len)) return -1; unk = -1; }
            if (sym_add(e, &ns, (uint32_t)id, (uint32_t)l)) return -1;
        } else {
            int done = 0;
            if (t->byte_fallback) {
                int all = 1;
                for (int k = 0; k < l; k++) all &= t->byte_id[(unsigned char)w[i + k]] >= 0;
                if (all) {
                    /* note: a pending unknown symbol is not flushed before the bytes (as in tokenizers) */
                    for (int k = 0; k < l; k++)
                        if (sym_add(e, &ns, (uint32_t)t->byte_id[(unsigned char)w[i + k]], 1)) return -1;
                    done = 1;
                }
            }
            if (!done && t->unk_id >= 0) {
                if (unk >= 0 && t->fuse_unk) unk_len += (uint32_t)l;
                else {
                    if (unk >= 0 && sym_add(e, &ns, (uint32_t)unk, unk_len)) return -1;
                    unk = t->unk_id;
                    unk_len = (uint32_t)l;
                }
            }
            /* no unknown token: the character is dropped */
        }
        i += (size_t)l;
    }
    if (unk >= 0 && sym_add(e, &ns, (uint32_t)unk, unk_len)) return -1;

    /* merges: a min-heap on (rank, position); stale entries are skipped when popped */
    e->heap_n = 0;
    for (size_t k = 0; k + 1 < ns; k++) {
        if (k + 9 < ns)   /* the lookups are memory-bound: ask for a later slot early */
            __builtin_prefetch(&t->merges[mix64((uint64_t)e->sym[k + 8].c << 32 | e->sym[k + 9].c) & t->merge_mask]);
        const merge_slot *m = merge_find(t, e->sym[k].c, e->sym[k + 1].c);
        if (m && heap_push(e, (hentry){m->rank, (uint32_t)k, m->id, e->sym[k].c, e->sym[k + 1].c})) return -1;
    }
    symbol *S = e->sym;
    while (e->heap_n) {
        hentry top = heap_pop(e);
        symbol *cur = &S[top.pos];
        if (cur->len == 0 || cur->next == -1) continue;
        symbol right = S[cur->next];
        if (cur->c != top.left || right.c != top.right) {
            /* the pair changed: tokenizers still applies the entry when the new pair gives the same id */
            const merge_slot *m = merge_find(t, cur->c, right.c);
            if (!m || m->id != top.id) continue;
        }
        int32_t next_pos = cur->next;
        cur->c = top.id;
        cur->len += right.len;
        cur->next = right.next;
        S[next_pos].len = 0;
        if (right.next > -1 && (size_t)right.next < ns) S[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            const merge_slot *pm = merge_find(t, S[cur->prev].c, cur->c);
            if (pm && heap_push(e, (hentry){pm->rank, (uint32_t)cur->prev, pm->id, S[cur->prev].c, cur->c})) return -1;
            S = e->sym;
            cur = &S[top.pos];
        }
        if (cur->next >= 0 && (size_t)cur->next < ns) {
            const merge_slot *nm = merge_find(t, cur->c, S[cur->next].c);
            if (nm && heap_push(e, (hentry){nm->rank, top.pos, nm->id, cur->c, S[cur->next].c})) return -1;
        }
    }
    for (size_t k = 0; k < ns; k++)
        if (S[k].len && ids_push(e->out, (int32_t)S[k].c)) return -1;
    return 0;
}

typedef struct {
    size_t a, b;
    int32_t id;   /* -1: text */
} split;

typedef struct {
    split *p;
    size_t n, cap;
} splitvec;

static int split_push(splitvec *v, size_t a, size_t b, int32_t id) {
    if (dg_tok_grow((void **)&v->p, &v->cap, v->n + 1, sizeof(split))) return -1;
    v->p[v->n++] = (split){a, b, id};
    return 0;
}

/* AddedVocabulary::find_matches: the added tokens of one trie in s, with the flags applied. */
static int find_matches(const dg_tokenizer *t, const trie *tr, int n_pat, const char *s, size_t n, splitvec *out) {
    out->n = 0;
    if (!n) return 0;   /* tokenizers returns one empty split, which is then dropped */
    size_t start_offset = 0, pos = 0, ms, me;
    int32_t id;
    while (n_pat && pos < n && trie_find(tr, s, n, pos, &ms, &me, &id)) {
        pos = me;   /* a rejected match still consumes its text */
        unsigned f = t->id_flags[id];
        size_t start = ms, stop = me;
        if (f & DG_TOKF_SINGLE_WORD) {
            int start_space = start == 0 || !is_word(last_cp(s, start));
            uint32_t cp = 0;
            if (stop < n) dg_utf8_next((const unsigned char *)s + stop, n - stop, &cp);
            int stop_space = stop == n || !is_word(cp);
            if (!start_space || !stop_space) continue;
        }
        if (f & DG_TOKF_LSTRIP) {   /* start of the whitespace run ending at start, not before start_offset */
            size_t ns = start;
            while (ns > 0) {
                size_t q = ns - 1;
                while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                uint32_t cp;
                dg_utf8_next((const unsigned char *)s + q, ns - q, &cp);
                if (!is_space(cp)) break;
                ns = q;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (f & DG_TOKF_RSTRIP) {
            while (stop < n) {
                uint32_t cp;
                int l = dg_utf8_next((const unsigned char *)s + stop, n - stop, &cp);
                if (!l || !is_space(cp)) break;
                stop += (size_t)l;
            }
        }
        if (start_offset < start && split_push(out, start_offset, start, -1)) return -1;
        if (split_push(out, start, stop, id)) return -1;
        start_offset = stop;
    }
    if (start_offset != n && split_push(out, start_offset, n, -1)) return -1;
    return 0;
}

/* pre-tokenize s[a, b) of e->norm with one Split step, appending non-empty pieces to e->spl2 */
static int spl2_push(enc *e, size_t a, size_t b) {
    if (a == b) return 0;   /* PreTokenizedString::split drops empty pieces */
    if (dg_tok_grow((void **)&e->spl2, &e->spl2_cap, e->spl2_n + 2, sizeof(size_t))) return -1;
    e->spl2[e->spl2_n++] = a;
    e->spl2[e->spl2_n++] = b;
    return 0;
}

static int split_step(enc *e, const dg_tok_split *sp, size_t a, size_t b) {
    const char *s = e->norm.p;
    /* pattern matches as (offsets, is_match) covering [a, b) */
    typedef struct { size_t a, b; int m; } seg;
    seg *v = NULL;
    size_t nv = 0, cap = 0;
    size_t at = a;
    int rc = -1;
    for (;;) {
        size_t m = a + find_lit(s + a, b - a, at - a, &sp->pattern);
        for (int k = 0; k < 2; k++) {
            size_t x = k == 0 ? at : m, y = k == 0 ? m : m + sp->pattern.n;
            if (k == 0 && x == y) continue;
            if (k == 1 && m >= b) break;
            if (dg_tok_grow((void **)&v, &cap, nv + 1, sizeof(seg))) goto out;
            v[nv++] = (seg){x, y, (k == 1) ^ sp->invert};
        }
        if (m >= b) break;
        at = m + sp->pattern.n;
    }
    /* behaviours (normalizer.rs NormalizedString::split) */
    switch (sp->behavior) {
    case DG_SPLIT_ISOLATED:
        for (size_t i = 0; i < nv; i++) if (spl2_push(e, v[i].a, v[i].b)) goto out;
        break;
    case DG_SPLIT_REMOVED:
        for (size_t i = 0; i < nv; i++) if (!v[i].m && spl2_push(e, v[i].a, v[i].b)) goto out;
        break;
    case DG_SPLIT_CONTIGUOUS:
    case DG_SPLIT_MERGED_PREV: {
        int prev = 0, any = 0;
        size_t la = 0, lb = 0;   /* the last accumulated piece */
        for (size_t i = 0; i < nv; i++) {
            int merge = sp->behavior == DG_SPLIT_CONTIGUOUS ? v[i].m == prev : v[i].m && !prev;
            if (merge && any) lb = v[i].b;
            else {
                if (any && spl2_push(e, la, lb)) goto out;
                la = v[i].a; lb = v[i].b; any = 1;
            }
            prev = v[i].m;
        }
        if (any && spl2_push(e, la, lb)) goto out;
        break;
    }
    case DG_SPLIT_MERGED_NEXT: {
        int prev = 0, any = 0;
        size_t la = 0, lb = 0;
        size_t first = e->spl2_n;
        for (size_t i = nv; i-- > 0;) {
            if (v[i].m && !prev && any) la = v[i].a;
            else {
                if (any && spl2_push(e, la, lb)) goto out;
                la = v[i].a; lb = v[i].b; any = 1;
            }
            prev = v[i].m;
        }
        if (any && spl2_push(e, la, lb)) goto out;
        /* pieces were pushed last-first: reverse them */
        for (size_t i = first, j = e->spl2_n - 2; i < j; i += 2, j -= 2) {
            size_t x = e->spl2[i], y = e->spl2[i + 1];
            e->spl2[i] = e->spl2[j]; e->spl2[i + 1] = e->spl2[j + 1];
            e->spl2[j] = x; e->spl2[j + 1] = y;
        }
        break;
    }
    }
    rc = 0;
out:
    free(v);
    return rc;
}

/* pre-tokenize and BPE the normalized text e->norm[a, b) */
static int encode_words(enc *e, size_t a, size_t b) {
    const dg_tokenizer *t = e->t;
    e->spl_n = 0;
    if (dg_tok_grow((void **)&e->spl, &e->spl_cap, 2, sizeof(size_t))) return -1;
    e->spl[e->spl_n++] = a;
    e->spl[e->spl_n++] = b;
    for (int k = 0; k < t->n_pre; k++) {
        e->spl2_n = 0;
        for (size_t i = 0; i < e->spl_n; i += 2)
            if (split_step(e, &t->pre[k], e->spl[i], e->spl[i + 1])) return -1;
        size_t *sw = e->spl; e->spl = e->spl2; e->spl2 = sw;
        size_t sc = e->spl_cap; e->spl_cap = e->spl2_cap; e->spl2_cap = sc;
        e->spl_n = e->spl2_n;
    }
    for (size_t i = 0; i < e->spl_n; i += 2)
        if (bpe_word(e, e->norm.p + e->spl[i], e->spl[i + 1] - e->spl[i])) return -1;
    return 0;
}

/* a span of the raw text between added tokens: normalize, second added-token pass, words */
static int encode_span(enc *e, const char *s, size_t n, splitvec *sv) {
    const dg_tokenizer *t = e->t;
    if (!n) return 0;
    if (normalize(t, s, n, &e->norm, &e->tmp)) return -1;
    if (find_matches(t, &t->norm_trie, t->n_normed, e->norm.p, e->norm.n, sv)) return -1;
    for (size_t i = 0; i < sv->n; i++) {
        if (sv->p[i].a == sv->p[i].b) continue;
        if (sv->p[i].id >= 0) { if (ids_push(e->out, sv->p[i].id)) return -1; }
        else if (encode_words(e, sv->p[i].a, sv->p[i].b)) return -1;
    }
    return 0;
}

int dg_tokenize(const dg_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n, char *err, size_t errlen) {
    *ids = NULL;
    *n = 0;
    if (!text && len) return dg_fail(err, errlen, "tokenize: NULL text");
    /* bounded so that the id count fits an int even when every byte becomes three byte pieces */
    if (len > (size_t)1 << 28) return dg_fail(err, errlen, "tokenize: text of %zu bytes is too long (256 MiB at most)", len);
    enc e = {.t = t};
    idvec out = {0};
    e.out = &out;
    buf clean = {0};
    splitvec sv1 = {0}, sv2 = {0};
    int rc = -1;
    /* invalid UTF-8: each maximal invalid subpart becomes U+FFFD (Python's errors="replace") */
    const char *s = text ? text : "";
    if (!dg_utf8_valid(s, len)) {
        const unsigned char *u = (const unsigned char *)s;
        size_t i = 0;
        while (i < len) {
            uint32_t cp;
            int l = u[i] < 0x80 ? 1 : dg_utf8_next(u + i, len - i, &cp);
            if (l) { if (buf_add(&clean, s + i, (size_t)l)) goto out; i += (size_t)l; }
            else { if (buf_add(&clean, "\xEF\xBF\xBD", 3)) goto out; i += utf8_bad_len(u + i, len - i); }
        }
        s = clean.p;
        len = clean.n;
    }
    if (find_matches(t, &t->raw_trie, t->n_raw, s, len, &sv1)) goto out;
    for (size_t i = 0; i < sv1.n; i++) {
        if (sv1.p[i].a == sv1.p[i].b) continue;
        if (sv1.p[i].id >= 0) { if (ids_push(&out, sv1.p[i].id)) goto out; }
        else if (encode_span(&e, s + sv1.p[i].a, sv1.p[i].b - sv1.p[i].a, &sv2)) goto out;
    }
    if (!out.p && !(out.p = malloc(sizeof(int32_t)))) goto out;   /* never NULL on success */
    rc = 0;
out:
    free(clean.p);
    free(sv1.p); free(sv2.p);
    free(e.sym); free(e.heap); free(e.norm.p); free(e.tmp.p); free(e.spl); free(e.spl2);
    if (rc) { free(out.p); return dg_fail(err, errlen, "tokenize: out of memory"); }
    *ids = out.p;
    *n = out.n;
    return 0;
}

/* ===== decoding: the reference (a literal port of decode + decode_chain) ===== */

/* a list of strings in one buffer */
typedef struct {
    buf b;
    size_t *off, *len;
    size_t n, cap;
} slist;

static int sl_push(slist *l, const char *s, size_t n) {
    size_t cap = l->cap;
    if (dg_tok_grow((void **)&l->off, &cap, l->n + 1, sizeof(size_t))) return -1;
    if (dg_tok_grow((void **)&l->len, &l->cap, l->n + 1, sizeof(size_t))) return -1;
    l->off[l->n] = l->b.n;
    l->len[l->n] = n;
    l->n++;
    return buf_add(&l->b, s, n);
}
static void sl_free(slist *l) { free(l->b.p); free(l->off); free(l->len); }
#define SL_STR(l, i) ((l)->b.p + (l)->off[i])

/* ByteFallback's test: exactly 6 bytes "<0x" HH ">" where HH parses with u8::from_str_radix(_, 16),
 * which also takes "+H" (one digit after a plus sign). */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *d = s + 3;
    int nd = 2;
    if (d[0] == '+') { d++; nd = 1; }
    int v = 0;
    for (int i = 0; i < nd; i++) {
        int c = (unsigned char)d[i], x;
        if (c >= '0' && c <= '9') x = c - '0';
        else if (c >= 'a' && c <= 'f') x = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') x = c - 'A' + 10;
        else return -1;
        v = v * 16 + x;
    }
    return v;
}

/* Strip decoder on one string: at most `start` leading and `stop` trailing copies of the character
 * (tokenizers would panic where the two overlap or stop exceeds the length; here the result is empty). */
static void strip_range(const dg_tok_dec *d, const char *s, size_t n, size_t *a, size_t *b) {
    char ch[4];
    int cl = put_utf8(ch, d->strip_char);
    size_t x = 0, y = n;
    for (int i = 0; i < d->start && x + (size_t)cl <= n && memcmp(s + x, ch, (size_t)cl) == 0; i++) x += (size_t)cl;
    for (int i = 0; i < d->stop && y >= (size_t)cl && memcmp(s + y - (size_t)cl, ch, (size_t)cl) == 0; i++) y -= (size_t)cl;
    if (y < x) y = x;
    *a = x;
    *b = y;
}

static int check_ids(const dg_tokenizer *t, const int32_t *ids, int n, char *err, size_t errlen) {
    if (n < 0 || (n && !ids)) return dg_fail(err, errlen, "detokenize: bad id array");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return dg_fail(err, errlen, "detokenize: id %d at index %d is outside the vocabulary [0, %d)", ids[i], i, t->n_vocab);
    return 0;
}

/* the string decode feeds to the decoders for an id, or NULL (holes; skipped specials) */
static const char *id_string(const dg_tokenizer *t, int32_t id, int skip_special, size_t *n) {
    if (t->dec_len[id] == NONE32) return NULL;
    if (skip_special && (t->id_flags[id] & IDF_SKIP)) return NULL;
    *n = t->dec_len[id];
    return t->str + t->dec_off[id];
}

int dg_detokenize_ref(const dg_tokenizer *t, const int32_t *ids, int n, int skip_special, char **text, size_t *len,
                      char *err, size_t errlen) {
    *text = NULL;
    if (len) *len = 0;
    if (check_ids(t, ids, n, err, errlen)) return -1;
    slist cur = {0}, nxt = {0};
    buf o = {0};
    int rc = -1;
    for (int i = 0; i < n; i++) {
        size_t sn;
        const char *s = id_string(t, ids[i], skip_special, &sn);
        if (s && sl_push(&cur, s, sn)) goto out;
    }
    if (!t->has_decoder) {
        for (size_t i = 0; i < cur.n; i++)
            if ((i && buf_add(&o, " ", 1)) || buf_add(&o, SL_STR(&cur, i), cur.len[i])) goto out;
    } else {
        for (int k = 0; k < t->n_dec; k++) {
            const dg_tok_dec *d = &t->dec[k];
            nxt.n = 0;
            nxt.b.n = 0;
            if (d->type == DG_DEC_REPLACE) {
                for (size_t i = 0; i < cur.n; i++) {
                    o.n = 0;
                    if (replace_lit(&o, SL_STR(&cur, i), cur.len[i], &d->pattern, &d->content) || sl_push(&nxt, o.p ? o.p : "", o.n)) goto out;
                }
            } else if (d->type == DG_DEC_STRIP) {
                for (size_t i = 0; i < cur.n; i++) {
                    size_t a, b;
                    strip_range(d, SL_STR(&cur, i), cur.len[i], &a, &b);
                    if (sl_push(&nxt, SL_STR(&cur, i) + a, b - a)) goto out;
                }
            } else if (d->type == DG_DEC_FUSE) {
                o.n = 0;
                for (size_t i = 0; i < cur.n; i++) if (buf_add(&o, SL_STR(&cur, i), cur.len[i])) goto out;
                if (sl_push(&nxt, o.p ? o.p : "", o.n)) goto out;
            } else {   /* ByteFallback: a run of byte tokens becomes its text if valid UTF-8, else one U+FFFD per byte */
                o.n = 0;   /* the pending bytes */
                size_t run = 0;
                for (size_t i = 0; i <= cur.n; i++) {
                    int v = i < cur.n ? byte_token(SL_STR(&cur, i), cur.len[i]) : -1;
                    if (v >= 0) { char c = (char)v; if (buf_add(&o, &c, 1)) goto out; run++; continue; }
                    if (run) {
                        if (dg_utf8_valid(o.p, o.n)) { if (sl_push(&nxt, o.p, o.n)) goto out; }
                        else for (size_t q = 0; q < run; q++) if (sl_push(&nxt, "\xEF\xBF\xBD", 3)) goto out;
                        o.n = 0;
                        run = 0;
                    }
                    if (i < cur.n && sl_push(&nxt, SL_STR(&cur, i), cur.len[i])) goto out;
                }
            }
            slist sw = cur; cur = nxt; nxt = sw;
        }
        o.n = 0;
        for (size_t i = 0; i < cur.n; i++) if (buf_add(&o, SL_STR(&cur, i), cur.len[i])) goto out;
    }
    if (buf_add(&o, "", 0)) goto out;
    *text = o.p;
    if (len) *len = o.n;
    o.p = NULL;
    rc = 0;
out:
    free(o.p);
    sl_free(&cur);
    sl_free(&nxt);
    return rc ? dg_fail(err, errlen, "detokenize: out of memory") : 0;
}

/* ===== decoding: streaming ===== */

/* The decoders before the first Fuse work on a stream of token strings: Replace and Strip are per
 * token, ByteFallback holds a run of byte tokens until a non-byte token (or the end) decides it.
 * After Fuse there is one string, which only Strip may follow: it drops leading characters while
 * they last and holds back trailing ones. Nothing else waits, so every push emits what is final. */
struct dg_detok_stream {
    const dg_tokenizer *t;
    int skip_special;
    int n_tokens;                   /* strings seen (for the " " join without a decoder) */
    buf out;                        /* text of the current call */
    buf pend[DG_TOK_MAX_STEPS];     /* ByteFallback stages: pending bytes */
    int pend_n[DG_TOK_MAX_STEPS];   /* ... and their token count */
    buf tmp[DG_TOK_MAX_STEPS + 1];
    int lead_left[DG_TOK_MAX_STEPS];   /* post-Fuse Strip: leading characters still to examine */
    int lead_done[DG_TOK_MAX_STEPS];
    int held[DG_TOK_MAX_STEPS];        /* ... trailing strip characters held back */
    int oom;
};

static void post_push(dg_detok_stream *st, int k, const char *s, size_t n);

static void post_emit(dg_detok_stream *st, int k, const char *s, size_t n) {
    if (!n) return;
    post_push(st, k + 1, s, n);
}

/* decoders k >= the first Fuse, on the fused character stream */
static void post_push(dg_detok_stream *st, int k, const char *s, size_t n) {
    const dg_tokenizer *t = st->t;
    while (k < t->n_dec && t->dec[k].type == DG_DEC_FUSE) k++;
    if (k >= t->n_dec) { if (buf_add(&st->out, s, n)) st->oom = 1; return; }
    const dg_tok_dec *d = &t->dec[k];   /* Strip */
    char ch[4];
    int cl = put_utf8(ch, d->strip_char);
    buf *o = &st->tmp[k];
    o->n = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int l = dg_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (!l) l = 1, cp = 0xFFFD;
        i += (size_t)l;
        if (!st->lead_done[k]) {
            if (st->lead_left[k] > 0 && cp == d->strip_char) { st->lead_left[k]--; continue; }
            st->lead_done[k] = 1;
        }
        if (cp == d->strip_char) {
            if (d->stop == 0) { if (buf_add(o, ch, (size_t)cl)) st->oom = 1; }
            else if (++st->held[k] > d->stop) { st->held[k]--; if (buf_add(o, ch, (size_t)cl)) st->oom = 1; }
        } else {
            for (; st->held[k] > 0; st->held[k]--) if (buf_add(o, ch, (size_t)cl)) st->oom = 1;
            if (buf_add(o, s + i - (size_t)l, (size_t)l)) st->oom = 1;
        }
    }
    /* tmp[k] is not touched downstream (stages only use their own buffer) */
    post_emit(st, k, o->p, o->n);
}

/* decoders k < n_dec_pre, on token strings */
static void pre_push(dg_detok_stream *st, int k, const char *s, size_t n) {
    const dg_tokenizer *t = st->t;
    if (k >= t->n_dec_pre) { post_push(st, k, s, n); return; }
    const dg_tok_dec *d = &t->dec[k];
    if (d->type == DG_DEC_REPLACE) {
        buf *o = &st->tmp[k];
        o->n = 0;
        if (replace_lit(o, s, n, &d->pattern, &d->content)) { st->oom = 1; return; }
        pre_push(st, k + 1, o->p ? o->p : "", o->n);
    } else if (d->type == DG_DEC_STRIP) {
        size_t a, b;
        strip_range(d, s, n, &a, &b);
        pre_push(st, k + 1, s + a, b - a);
    } else {   /* ByteFallback */
        int v = byte_token(s, n);
        if (v >= 0) {
            char c = (char)v;
            if (buf_add(&st->pend[k], &c, 1)) st->oom = 1;
            st->pend_n[k]++;
            return;
        }
        if (st->pend_n[k]) {
            buf *p = &st->pend[k];
            if (dg_utf8_valid(p->p, p->n)) pre_push(st, k + 1, p->p, p->n);
            else for (int q = 0; q < st->pend_n[k]; q++) pre_push(st, k + 1, "\xEF\xBF\xBD", 3);
            p->n = 0;
            st->pend_n[k] = 0;
        }
        pre_push(st, k + 1, s, n);
    }
}

static void stream_reset(dg_detok_stream *st) {
    st->n_tokens = 0;
    for (int k = 0; k < DG_TOK_MAX_STEPS; k++) {
        st->pend[k].n = 0;
        st->pend_n[k] = 0;
        st->lead_left[k] = st->t->dec[k].start;
        st->lead_done[k] = 0;
        st->held[k] = 0;
    }
}

dg_detok_stream *dg_detok_stream_new(const dg_tokenizer *tok, int skip_special) {
    dg_detok_stream *st = calloc(1, sizeof(*st));
    if (!st) return NULL;
    st->t = tok;
    st->skip_special = skip_special;
    stream_reset(st);
    return st;
}

void dg_detok_stream_free(dg_detok_stream *st) {
    if (!st) return;
    free(st->out.p);
    for (int k = 0; k < DG_TOK_MAX_STEPS; k++) free(st->pend[k].p);
    for (int k = 0; k <= DG_TOK_MAX_STEPS; k++) free(st->tmp[k].p);
    free(st);
}

static const char *stream_result(dg_detok_stream *st, size_t *len) {
    if (st->oom || buf_add(&st->out, "", 0)) {
        st->oom = 0;
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = st->out.n;
    return st->out.p;
}

const char *dg_detok_stream_push(dg_detok_stream *st, int32_t id, size_t *len) {
    const dg_tokenizer *t = st->t;
    st->out.n = 0;
    if (len) *len = 0;
    if (id < 0 || id >= t->n_vocab) return NULL;
    size_t n;
    const char *s = id_string(t, id, st->skip_special, &n);
    if (s) {
        if (!t->has_decoder) {
            if ((st->n_tokens && buf_add(&st->out, " ", 1)) || buf_add(&st->out, s, n)) st->oom = 1;
        } else {
            pre_push(st, 0, s, n);
        }
        st->n_tokens++;
    }
    return stream_result(st, len);
}

const char *dg_detok_stream_flush(dg_detok_stream *st, size_t *len) {
    const dg_tokenizer *t = st->t;
    st->out.n = 0;
    if (t->has_decoder) {
        for (int k = 0; k < t->n_dec_pre; k++) {
            if (t->dec[k].type != DG_DEC_BYTE_FALLBACK || !st->pend_n[k]) continue;
            buf *p = &st->pend[k];
            int cnt = st->pend_n[k];
            st->pend_n[k] = 0;
            if (dg_utf8_valid(p->p, p->n)) pre_push(st, k + 1, p->p, p->n);
            else for (int q = 0; q < cnt; q++) pre_push(st, k + 1, "\xEF\xBF\xBD", 3);
            p->n = 0;
        }
        /* post-Fuse Strip: the held trailing characters are exactly the ones stripped */
    }
    const char *r = stream_result(st, len);
    stream_reset(st);
    return r;
}

int dg_detokenize(const dg_tokenizer *t, const int32_t *ids, int n, int skip_special, char **text, size_t *len,
                  char *err, size_t errlen) {
    *text = NULL;
    if (len) *len = 0;
    if (check_ids(t, ids, n, err, errlen)) return -1;
    dg_detok_stream *st = dg_detok_stream_new(t, skip_special);
    buf o = {0};
    int bad = !st;
    for (int i = 0; i <= n && !bad; i++) {
        size_t l;
        const char *s = i < n ? dg_detok_stream_push(st, ids[i], &l) : dg_detok_stream_flush(st, &l);
        bad = !s || buf_add(&o, s, l);
    }
    dg_detok_stream_free(st);
    if (bad || buf_add(&o, "", 0)) { free(o.p); return dg_fail(err, errlen, "detokenize: out of memory"); }
    *text = o.p;
    if (len) *len = o.n;
    return 0;
}

/* ===== loading ===== */

static int ends_with_gguf(const char *p) {
    const size_t n = strlen(p);
    return n >= 5 && !strcmp(p + n - 5, ".gguf");
}

int dg_tokenizer_load(const char *path, dg_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    if (!path) return dg_fail(err, errlen, "tokenizer: no path given");
    char *file = NULL, *gpath = NULL;
    struct stat sb;
    /* a GGUF model: the tokenizer.json beside the file if there is one, else its own metadata */
    if (ends_with_gguf(path) || (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))) {
        char e2[8];
        if (dg_resolve_model(path, &gpath, e2, sizeof(e2)) == 1) {
            const char *slash = strrchr(gpath, '/');
            const size_t dn = slash ? (size_t)(slash - gpath) : 1;
            char beside[4096];
            snprintf(beside, sizeof(beside), "%.*s/tokenizer.json", (int)dn, slash ? gpath : ".");
            if (stat(beside, &sb) == 0) {
                free(gpath);
                return dg_tokenizer_load(beside, out, err, errlen);
            }
            gguf_file g;
            int rc = gguf_open(&g, gpath, err, errlen);
            free(gpath);
            if (rc) return -1;
            rc = dg_tokenizer_from_gguf(&g, out, err, errlen);
            gguf_close(&g);
            return rc;
        }
        free(gpath);
    }
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path) + 32;
        file = malloc(n);
        if (!file) return dg_fail(err, errlen, "out of memory");
        snprintf(file, n, "%s/tokenizer.json", path);
    }
    const char *fn = file ? file : path;
    FILE *f = fopen(fn, "rb");
    if (!f) {
        int rc = dg_fail(err, errlen, "%s: %s", fn, strerror(errno));
        free(file);
        return rc;
    }
    char *b = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    int rc = -1;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) { dg_fail(err, errlen, "%s: cannot read (not a regular file?)", fn); goto done; }
    if ((unsigned long)size > (1ul << 31)) { dg_fail(err, errlen, "%s: %ld bytes is too large for a tokenizer.json", fn, size); goto done; }
    b = malloc((size_t)size + 1);
    if (!b) { dg_fail(err, errlen, "%s: out of memory", fn); goto done; }
    if (fread(b, 1, (size_t)size, f) != (size_t)size) { dg_fail(err, errlen, "%s: read error", fn); goto done; }
    b[size] = 0;
    rc = dg_tok_json_parse(b, (size_t)size, fn, out, err, errlen);
done:
    fclose(f);
    free(b);
    free(file);
    return rc;
}
