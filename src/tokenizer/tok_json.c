/*
 * tok_json.c - reads a Hugging Face tokenizer.json into a dg_tok_spec and builds it.
 *
 * A purpose-built JSON reader instead of jansson: jansson takes about 1 s to build the tree of the
 * 33 MB Gemma file (262,144 vocab entries, 514,906 merges), this reader takes a fraction of that. It
 * parses strictly (RFC 8259: no comments, no trailing commas, valid UTF-8, paired surrogates) straight
 * from the buffer, unescaping strings in place, and reports errors as FILE:LINE:COL: FIELD: message.
 * Bytes outside strings are ASCII by the grammar, so UTF-8 is validated inside strings only.
 *
 * Supported components (anything else is refused, naming the field):
 *   model          BPE (vocab object, merges as "a b" strings or [a, b] pairs, unk_token, fuse_unk,
 *                  byte_fallback, ignore_merges; dropout null or 0; no subword prefix / suffix)
 *   normalizer     null, Replace (String pattern), Prepend, Sequence of these
 *   pre_tokenizer  null, Split (String pattern, any behavior, invert), Sequence of these
 *   decoder        null, Replace (String pattern), ByteFallback, Fuse, Strip, Sequence of these
 *   added_tokens   every flag (special, normalized, lstrip, rstrip, single_word); the "id" field is
 *                  read but, as in tokenizers, the id comes from the vocabulary or the next free id
 *   post_processor TemplateProcessing / RobertaProcessing (alone or in a Sequence): recorded for
 *                  dg_tok_json_read (the GGUF converter's add_bos / add_eos / add_sep rule), not used by
 *                  encode (add_special_tokens=False); other post-processors, truncation, padding: ignored
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tokenizer/tokenizer.h"

#define MAX_DEPTH 128

typedef struct {
    char *base, *p, *end;
    const char *name;
    char *err;
    size_t errlen;
    char field[160];     /* the field being read, for messages ... */
    long index;          /* ... and its array index (-1: none), kept apart to stay cheap per merge */
} jp;

typedef struct {
    dg_tok_str s;
    uint32_t id;
} vocab_entry;

typedef struct {
    dg_tok_spec spec;
    vocab_entry *vocab;
    size_t n_vocab, cap_vocab;
    dg_tok_str *merges;           /* pairs */
    size_t n_merges, cap_merges;
    dg_tok_added *added;
    size_t n_added, cap_added;
    uint32_t *added_ids;          /* the "id" fields, parallel to added */
    size_t cap_added_ids;
    dg_tok_str *pieces;
    int seen_model, seen_vocab, seen_merges;
    dg_tok_json_extra x;
} jstate;

__attribute__((format(printf, 2, 3))) static int jfail(jp *j, const char *fmt, ...) {
    int line = 1, col = 1;
    for (const char *c = j->base; c < j->p && c < j->end; c++) {
        if (*c == '\n') { line++; col = 1; }
        else if (((unsigned char)*c & 0xC0) != 0x80) col++;
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (j->field[0] && j->index >= 0)
        return dg_fail(j->err, j->errlen, "%s:%d:%d: %s[%ld]: %s", j->name, line, col, j->field, j->index, msg);
    if (j->field[0]) return dg_fail(j->err, j->errlen, "%s:%d:%d: %s: %s", j->name, line, col, j->field, msg);
    return dg_fail(j->err, j->errlen, "%s:%d:%d: %s", j->name, line, col, msg);
}

static void setfield(jp *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void setfield(jp *j, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->field, sizeof(j->field), fmt, ap);
    va_end(ap);
    j->index = -1;
}

static inline void ws(jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}

static const char *what(jp *j) {
    if (j->p >= j->end) return "end of file";
    switch (*j->p) {
    case '{': return "an object";
    case '[': return "an array";
    case '"': return "a string";
    case 't': case 'f': return "a boolean";
    case 'n': return "null";
    default: return (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) ? "a number" : "an invalid character";
    }
}

static int expect(jp *j, char c) {
    ws(j);
    if (j->p >= j->end || *j->p != c) return jfail(j, "expected '%c', found %s", c, what(j));
    j->p++;
    return 0;
}

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)s[i], x;
        if (c >= '0' && c <= '9') x = c - '0';
        else if (c >= 'a' && c <= 'f') x = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') x = c - 'A' + 10;
        else return -1;
        *v = *v << 4 | (uint32_t)x;
    }
    return 0;
}

/* A string, unescaped in place and NUL-terminated (the buffer was checked to be valid UTF-8). */
static int jstr(jp *j, dg_tok_str *out) {
    ws(j);
    if (j->p >= j->end || *j->p != '"') return jfail(j, "expected a string, found %s", what(j));
    char *r = ++j->p, *w = r, *start = r;
    for (;;) {
        /* fast path: plain ASCII; other bytes must form valid UTF-8 (checked here, not in a separate pass) */
        while (r < j->end && *r != '"' && *r != '\\' && (unsigned char)*r >= 0x20) {
            if ((unsigned char)*r < 0x80) { *w++ = *r++; continue; }
            uint32_t cp;
            int l = dg_utf8_next((const unsigned char *)r, (size_t)(j->end - r), &cp);
            if (!l) { j->p = r; return jfail(j, "invalid UTF-8"); }
            while (l--) *w++ = *r++;
        }
        if (r >= j->end) { j->p = r; return jfail(j, "unterminated string"); }
        if (*r == '"') break;
        if ((unsigned char)*r < 0x20) { j->p = r; return jfail(j, "control character in a string"); }
        /* escape */
        if (r + 1 >= j->end) { j->p = r; return jfail(j, "unterminated string"); }
        char e = r[1];
        r += 2;
        switch (e) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            uint32_t v, lo;
            if (r + 4 > j->end || hex4(r, &v)) { j->p = r - 2; return jfail(j, "bad \\u escape"); }
            r += 4;
            if (v >= 0xDC00 && v <= 0xDFFF) { j->p = r - 6; return jfail(j, "lone low surrogate in a \\u escape"); }
            if (v >= 0xD800 && v <= 0xDBFF) {
                if (r + 6 > j->end || r[0] != '\\' || r[1] != 'u' || hex4(r + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                    j->p = r - 6;
                    return jfail(j, "lone high surrogate in a \\u escape");
                }
                r += 6;
                v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (v < 0x80) *w++ = (char)v;
            else if (v < 0x800) { *w++ = (char)(0xC0 | v >> 6); *w++ = (char)(0x80 | (v & 0x3F)); }
            else if (v < 0x10000) { *w++ = (char)(0xE0 | v >> 12); *w++ = (char)(0x80 | ((v >> 6) & 0x3F)); *w++ = (char)(0x80 | (v & 0x3F)); }
            else {
                *w++ = (char)(0xF0 | v >> 18); *w++ = (char)(0x80 | ((v >> 12) & 0x3F));
                *w++ = (char)(0x80 | ((v >> 6) & 0x3F)); *w++ = (char)(0x80 | (v & 0x3F));
            }
            break;
        }
        default: j->p = r - 2; return jfail(j, "bad escape '\\%c'", e);
        }
    }
    j->p = r + 1;
    *w = 0;   /* w <= r: the closing quote, already consumed */
    out->p = start;
    out->n = (uint32_t)(w - start);
    return 0;
}

/* Skip a string without unescaping it (skipped values may be read again, e.g. a Sequence's list). */
static int jstr_skip(jp *j) {
    char *r = j->p + 1;
    for (;;) {
        while (r < j->end && *r != '"' && *r != '\\' && (unsigned char)*r >= 0x20) {
            if ((unsigned char)*r < 0x80) { r++; continue; }
            uint32_t cp;
            int l = dg_utf8_next((const unsigned char *)r, (size_t)(j->end - r), &cp);
            if (!l) { j->p = r; return jfail(j, "invalid UTF-8"); }
            r += l;
        }
        if (r >= j->end) { j->p = r; return jfail(j, "unterminated string"); }
        if (*r == '"') break;
        if ((unsigned char)*r < 0x20) { j->p = r; return jfail(j, "control character in a string"); }
        if (r + 1 >= j->end) { j->p = r; return jfail(j, "unterminated string"); }
        char e = r[1];
        if (e == 'u') {
            uint32_t v;
            if (r + 6 > j->end || hex4(r + 2, &v)) { j->p = r; return jfail(j, "bad \\u escape"); }
            r += 6;
        } else if (strchr("\"\\/bfnrt", e) && e) {
            r += 2;
        } else {
            j->p = r;
            return jfail(j, "bad escape '\\%c'", e);
        }
    }
    j->p = r + 1;
    return 0;
}

/* literal true / false / null: 1, 0, -1 (NULL); -2 on error */
static int jlit(jp *j) {
    ws(j);
    size_t left = (size_t)(j->end - j->p);
    if (left >= 4 && !memcmp(j->p, "true", 4)) { j->p += 4; return 1; }
    if (left >= 5 && !memcmp(j->p, "false", 5)) { j->p += 5; return 0; }
    if (left >= 4 && !memcmp(j->p, "null", 4)) { j->p += 4; return -1; }
    return -2;
}

static int jbool(jp *j, int *v) {
    const char *at = j->p;
    int r = jlit(j);
    if (r < 0) { j->p = (char *)at; ws(j); return jfail(j, "expected true or false, found %s", what(j)); }
    *v = r;
    return 0;
}

static int is_null(jp *j) {
    ws(j);
    if (j->end - j->p >= 4 && !memcmp(j->p, "null", 4)) { j->p += 4; return 1; }
    return 0;
}

/* a JSON number (strict grammar) as a double; *integral when it has no fraction or exponent */
static int jnum(jp *j, double *v, int *integral) {
    ws(j);
    char *s = j->p, *c = s;
    if (c < j->end && *c == '-') c++;
    if (c >= j->end || *c < '0' || *c > '9') return jfail(j, "expected a number, found %s", what(j));
    if (*c == '0') c++;
    else while (c < j->end && *c >= '0' && *c <= '9') c++;
    *integral = 1;
    if (c < j->end && *c == '.') {
        c++;
        if (c >= j->end || *c < '0' || *c > '9') { j->p = c; return jfail(j, "bad number"); }
        while (c < j->end && *c >= '0' && *c <= '9') c++;
        *integral = 0;
    }
    if (c < j->end && (*c == 'e' || *c == 'E')) {
        c++;
        if (c < j->end && (*c == '+' || *c == '-')) c++;
        if (c >= j->end || *c < '0' || *c > '9') { j->p = c; return jfail(j, "bad number"); }
        while (c < j->end && *c >= '0' && *c <= '9') c++;
        *integral = 0;
    }
    char tmp[64];
    size_t n = (size_t)(c - s);
    if (n >= sizeof(tmp)) n = sizeof(tmp) - 1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    *v = strtod(tmp, NULL);
    j->p = c;
    return 0;
}

/* a non-negative integer id (< 2^31) */
static int jid(jp *j, uint32_t *id) {
    ws(j);
    char *c = j->p;
    if (c < j->end && *c >= '0' && *c <= '9') {   /* fast path: plain digits */
        uint64_t v = 0;
        while (c < j->end && *c >= '0' && *c <= '9' && v < (1u << 31)) v = v * 10 + (uint64_t)(*c++ - '0');
        if (c < j->end && (*c == '.' || *c == 'e' || *c == 'E' || (*c >= '0' && *c <= '9'))) goto slow;
        if (v >= (1u << 31)) goto slow;
        j->p = c;
        *id = (uint32_t)v;
        return 0;
    }
slow:;
    double d;
    int integral;
    if (jnum(j, &d, &integral)) return -1;
    if (!integral || d < 0 || d >= 2147483648.0) return jfail(j, "expected a non-negative integer id");
    *id = (uint32_t)d;
    return 0;
}

static int jint(jp *j, int *out) {
    double d;
    int integral;
    if (jnum(j, &d, &integral)) return -1;
    if (!integral || d < 0 || d > 1e9) return jfail(j, "expected a non-negative integer");
    *out = (int)d;
    return 0;
}

static int jskip(jp *j, int depth) {
    if (depth > MAX_DEPTH) return jfail(j, "nesting deeper than %d", MAX_DEPTH);
    ws(j);
    if (j->p >= j->end) return jfail(j, "unexpected end of file");
    char c = *j->p;
    if (c == '"') return jstr_skip(j);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        ws(j);
        if (j->p < j->end && *j->p == close) { j->p++; return 0; }
        for (;;) {
            if (c == '{') {
                ws(j);
                if (j->p >= j->end || *j->p != '"') return jfail(j, "expected a string, found %s", what(j));
                if (jstr_skip(j) || expect(j, ':')) return -1;
            }
            if (jskip(j, depth + 1)) return -1;
            ws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == close) { j->p++; return 0; }
            return jfail(j, "expected ',' or '%c', found %s", close, what(j));
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) { double d; int in; return jnum(j, &d, &in); }
    if (jlit(j) >= -1) return 0;
    return jfail(j, "expected a value, found %s", what(j));
}

/* Object iteration: jobj_begin, then jobj_next gives each key (1) until the end (0), -1 on error. */
static int jobj_begin(jp *j) {
    ws(j);
    if (j->p >= j->end || *j->p != '{') return jfail(j, "expected an object, found %s", what(j));
    j->p++;
    return 0;
}
static int jobj_next(jp *j, int *first, dg_tok_str *key) {
    ws(j);
    if (j->p < j->end && *j->p == '}' ) { j->p++; return 0; }
    if (!*first) {
        if (j->p >= j->end || *j->p != ',') return jfail(j, "expected ',' or '}', found %s", what(j));
        j->p++;
    }
    *first = 0;
    if (jstr(j, key) || expect(j, ':')) return -1;
    return 1;
}
static int jarr_begin(jp *j) {
    ws(j);
    if (j->p >= j->end || *j->p != '[') return jfail(j, "expected an array, found %s", what(j));
    j->p++;
    return 0;
}
/* 1: an element follows, 0: end of array */
static int jarr_next(jp *j, int *first) {
    ws(j);
    if (j->p < j->end && *j->p == ']') { j->p++; return 0; }
    if (!*first) {
        if (j->p >= j->end || *j->p != ',') return jfail(j, "expected ',' or ']', found %s", what(j));
        j->p++;
        ws(j);
    }
    *first = 0;
    if (j->p >= j->end) return jfail(j, "unexpected end of file");
    return 1;
}

static int key_is(const dg_tok_str *k, const char *s) { return k->n == strlen(s) && !memcmp(k->p, s, k->n); }

/* {"String": "..."} ; a Regex pattern is refused */
static int jpattern(jp *j, dg_tok_str *out) {
    if (jobj_begin(j)) return -1;
    int first = 1, r, got = 0;
    dg_tok_str k;
    while ((r = jobj_next(j, &first, &k)) == 1) {
        if (key_is(&k, "String")) { if (jstr(j, out)) return -1; got = 1; }
        else if (key_is(&k, "Regex")) return jfail(j, "Regex patterns are not supported (only String)");
        else return jfail(j, "unknown pattern kind '%.*s'", (int)k.n, k.p);
    }
    if (r < 0) return -1;
    if (!got) return jfail(j, "missing String pattern");
    return 0;
}

/* ----- components ----- */

typedef enum { C_NORM, C_PRE, C_DEC } comp_kind;
static const char *comp_name[] = {"normalizer", "pre_tokenizer", "decoder"};
static const char *comp_list[] = {"normalizers", "pretokenizers", "decoders"};

static int add_step(jp *j, jstate *st, comp_kind kind, const void *step) {
    dg_tok_spec *s = &st->spec;
    int *n = kind == C_NORM ? &s->n_norm : kind == C_PRE ? &s->n_pre : &s->n_dec;
    if (*n >= DG_TOK_MAX_STEPS) return jfail(j, "more than %d steps", DG_TOK_MAX_STEPS);
    if (kind == C_NORM) s->norm[(*n)++] = *(const dg_tok_norm *)step;
    else if (kind == C_PRE) s->pre[(*n)++] = *(const dg_tok_split *)step;
    else s->dec[(*n)++] = *(const dg_tok_dec *)step;
    return 0;
}

static int jcomponent(jp *j, jstate *st, comp_kind kind, int depth, const char *path) {
    if (depth > 8) return jfail(j, "Sequences nested too deeply");
    setfield(j, "%s", path);
    if (jobj_begin(j)) return -1;
    /* fields are read in any order, the type is checked at the end */
    dg_tok_str type = {0}, pattern = {0}, content = {0}, prepend = {0}, behavior = {0};
    int have_pattern = 0, have_content = 0, have_prepend = 0, have_behavior = 0, have_invert = 0, invert = 0;
    int have_start = 0, have_stop = 0, start = 0, stop = 0, first = 1, r;
    char *seq_at = NULL;   /* the list of a Sequence, read after its type is known */
    dg_tok_str k;
    while ((r = jobj_next(j, &first, &k)) == 1) {
        if (key_is(&k, "type")) { if (jstr(j, &type)) return -1; }
        else if (key_is(&k, "pattern")) { setfield(j, "%s.pattern", path); if (jpattern(j, &pattern)) return -1; have_pattern = 1; }
        else if (key_is(&k, "content")) { setfield(j, "%s.content", path); if (jstr(j, &content)) return -1; have_content = 1; }
        else if (key_is(&k, "prepend")) { setfield(j, "%s.prepend", path); if (jstr(j, &prepend)) return -1; have_prepend = 1; }
        else if (key_is(&k, "behavior")) { setfield(j, "%s.behavior", path); if (jstr(j, &behavior)) return -1; have_behavior = 1; }
        else if (key_is(&k, "invert")) { setfield(j, "%s.invert", path); if (jbool(j, &invert)) return -1; have_invert = 1; }
        else if (key_is(&k, "start")) { setfield(j, "%s.start", path); if (jint(j, &start)) return -1; have_start = 1; }
        else if (key_is(&k, "stop")) { setfield(j, "%s.stop", path); if (jint(j, &stop)) return -1; have_stop = 1; }
        else if (key_is(&k, comp_list[kind])) { ws(j); seq_at = j->p; if (jskip(j, 0)) return -1; }
        else if (jskip(j, 0)) return -1;
        setfield(j, "%s", path);
    }
    if (r < 0) return -1;
    if (!type.p) return jfail(j, "missing \"type\"");
#define NEED(flag, f) do { if (!(flag)) return jfail(j, "%.*s without \"" f "\"", (int)type.n, type.p); } while (0)
    if (key_is(&type, "Sequence")) {
        NEED(seq_at, "list");
        char *resume = j->p;
        j->p = seq_at;
        int afirst = 1, i = 0;
        char sub[160];
        if (jarr_begin(j)) return -1;
        while ((r = jarr_next(j, &afirst)) == 1) {
            snprintf(sub, sizeof(sub), "%s.%s[%d]", path, comp_list[kind], i++);
            if (jcomponent(j, st, kind, depth + 1, sub)) return -1;
        }
        if (r < 0) return -1;
        j->p = resume;
        return 0;
    }
    if (kind == C_NORM && key_is(&type, "Replace")) {
        NEED(have_pattern, "pattern"); NEED(have_content, "content");
        if (!pattern.n) return jfail(j, "an empty Replace pattern is not supported");
        dg_tok_norm n = {DG_NORM_REPLACE, pattern, content};
        return add_step(j, st, kind, &n);
    }
    if (kind == C_NORM && key_is(&type, "Prepend")) {
        NEED(have_prepend, "prepend");
        dg_tok_norm n = {DG_NORM_PREPEND, {0}, prepend};
        return add_step(j, st, kind, &n);
    }
    if (kind == C_PRE && key_is(&type, "Split")) {
        NEED(have_pattern, "pattern"); NEED(have_behavior, "behavior"); NEED(have_invert, "invert");
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        dg_tok_split sp = {pattern, 0, invert};
        for (int b = 0; b < 5; b++) if (key_is(&behavior, names[b])) sp.behavior = (dg_tok_split_behavior)(DG_SPLIT_REMOVED + b);
        if (!sp.behavior) return jfail(j, "unknown Split behavior '%.*s'", (int)behavior.n, behavior.p);
        if (!pattern.n) return jfail(j, "an empty Split pattern is not supported");
        return add_step(j, st, kind, &sp);
    }
    if (kind == C_DEC && key_is(&type, "Replace")) {
        NEED(have_pattern, "pattern"); NEED(have_content, "content");
        if (!pattern.n) return jfail(j, "an empty Replace pattern is not supported");
        dg_tok_dec d = {DG_DEC_REPLACE, pattern, content, 0, 0, 0};
        return add_step(j, st, kind, &d);
    }
    if (kind == C_DEC && (key_is(&type, "ByteFallback") || key_is(&type, "Fuse"))) {
        dg_tok_dec d = {key_is(&type, "Fuse") ? DG_DEC_FUSE : DG_DEC_BYTE_FALLBACK, {0}, {0}, 0, 0, 0};
        return add_step(j, st, kind, &d);
    }
    if (kind == C_DEC && key_is(&type, "Strip")) {
        NEED(have_content, "content"); NEED(have_start, "start"); NEED(have_stop, "stop");
        uint32_t cp;
        int l = dg_utf8_next((const unsigned char *)content.p, content.n, &cp);
        if (!l || (uint32_t)l != content.n) return jfail(j, "Strip content must be one character");
        dg_tok_dec d = {DG_DEC_STRIP, {0}, {0}, cp, start, stop};
        return add_step(j, st, kind, &d);
    }
#undef NEED
    return jfail(j, "unsupported %s type '%.*s'", comp_name[kind], (int)type.n, type.p);
}

/* ----- model ----- */

static int jvocab(jp *j, jstate *st) {
    setfield(j, "model.vocab");
    if (jobj_begin(j)) return -1;
    int first = 1, r;
    dg_tok_str k;
    while ((r = jobj_next(j, &first, &k)) == 1) {
        if (dg_tok_grow((void **)&st->vocab, &st->cap_vocab, st->n_vocab + 1, sizeof(vocab_entry))) return jfail(j, "out of memory");
        vocab_entry *e = &st->vocab[st->n_vocab++];
        e->s = k;
        if (jid(j, &e->id)) return -1;
    }
    st->seen_vocab = 1;
    return r;
}

static int jmerges(jp *j, jstate *st) {
    setfield(j, "model.merges");
    if (jarr_begin(j)) return -1;
    int first = 1, r, legacy = -1;
    size_t i = 0;
    while ((r = jarr_next(j, &first)) == 1) {
        int is_str = *j->p == '"';
        if (legacy < 0) legacy = is_str;
        j->index = (long)i++;
        if (is_str != legacy)
            return jfail(j, "mixes \"a b\" strings and [a, b] pairs");
        if (dg_tok_grow((void **)&st->merges, &st->cap_merges, 2 * st->n_merges + 2, sizeof(dg_tok_str))) return jfail(j, "out of memory");
        dg_tok_str *m = &st->merges[2 * st->n_merges];
        if (legacy) {
            dg_tok_str s;
            if (jstr(j, &s)) return -1;
            if (s.n >= 8 && !memcmp(s.p, "#version", 8)) continue;   /* tokenizers skips these lines */
            const char *sp = memchr(s.p, ' ', s.n);
            if (!sp || memchr(sp + 1, ' ', s.n - (size_t)(sp - s.p) - 1))
                return jfail(j, "'%.*s' is not two pieces separated by one space", (int)(s.n > 64 ? 64 : s.n), s.p);
            m[0] = (dg_tok_str){s.p, (uint32_t)(sp - s.p)};
            m[1] = (dg_tok_str){sp + 1, (uint32_t)(s.n - m[0].n - 1)};
        } else {
            if (jarr_begin(j) || jstr(j, &m[0]) || expect(j, ',') || jstr(j, &m[1])) return -1;
            if (expect(j, ']')) return jfail(j, "a merge pair must have exactly two strings");
        }
        st->n_merges++;
    }
    st->seen_merges = 1;
    st->x.merges_pairs = legacy == 0;
    return r;
}

static int jmodel(jp *j, jstate *st) {
    setfield(j, "model");
    if (jobj_begin(j)) return -1;
    int first = 1, r;
    dg_tok_str k, type = {0};
    dg_tok_spec *s = &st->spec;
    while ((r = jobj_next(j, &first, &k)) == 1) {
        if (key_is(&k, "type")) {
            setfield(j, "model.type");
            if (jstr(j, &type)) return -1;
            if (!key_is(&type, "BPE")) return jfail(j, "unsupported model type '%.*s' (only BPE)", (int)type.n, type.p);
        } else if (key_is(&k, "vocab")) {
            if (jvocab(j, st)) return -1;
        } else if (key_is(&k, "merges")) {
            if (jmerges(j, st)) return -1;
        } else if (key_is(&k, "unk_token")) {
            setfield(j, "model.unk_token");
            if (!is_null(j) && jstr(j, &s->unk)) return -1;
        } else if (key_is(&k, "dropout")) {
            setfield(j, "model.dropout");
            double d;
            int in;
            if (!is_null(j)) {
                if (jnum(j, &d, &in)) return -1;
                if (d != 0) return jfail(j, "BPE dropout %g is not supported (only null or 0)", d);
            }
        } else if (key_is(&k, "continuing_subword_prefix") || key_is(&k, "end_of_word_suffix")) {
            setfield(j, "model.%.*s", (int)k.n, k.p);
            dg_tok_str v;
            if (!is_null(j)) {
                if (jstr(j, &v)) return -1;
                return jfail(j, "is not supported (must be null)");
            }
        } else if (key_is(&k, "fuse_unk") || key_is(&k, "byte_fallback") || key_is(&k, "ignore_merges")) {
            setfield(j, "model.%.*s", (int)k.n, k.p);
            int v = 0;
            if (!is_null(j) && jbool(j, &v)) return -1;
            if (key_is(&k, "fuse_unk")) s->fuse_unk = v;
            else if (key_is(&k, "byte_fallback")) s->byte_fallback = v;
            else s->ignore_merges = v;
        } else if (jskip(j, 0)) {
            return -1;
        }
        setfield(j, "model");
    }
    if (r < 0) return -1;
    if (!type.p) return jfail(j, "missing \"type\"");
    if (!st->seen_vocab || !st->seen_merges) return jfail(j, "missing \"%s\"", st->seen_vocab ? "merges" : "vocab");
    st->seen_model = 1;
    return 0;
}

static int jadded(jp *j, jstate *st) {
    setfield(j, "added_tokens");
    if (jarr_begin(j)) return -1;
    int first = 1, r;
    size_t i = 0;
    while ((r = jarr_next(j, &first)) == 1) {
        setfield(j, "added_tokens[%zu]", i);
        if (jobj_begin(j)) return -1;
        int ofirst = 1, got = 0;
        dg_tok_str k, content = {0};
        unsigned flags = 0;
        uint32_t id = 0;
        static const char *names[] = {"special", "normalized", "lstrip", "rstrip", "single_word"};
        while ((r = jobj_next(j, &ofirst, &k)) == 1) {
            int b = -1;
            for (int q = 0; q < 5; q++) if (key_is(&k, names[q])) b = q;
            if (b >= 0) {
                int v = 0;
                setfield(j, "added_tokens[%zu].%s", i, names[b]);
                if (jbool(j, &v)) return -1;
                if (v) flags |= 1u << b;   /* DG_TOKF_SPECIAL, NORMALIZED, LSTRIP, RSTRIP, SINGLE_WORD */
                got |= 1 << b;
            } else if (key_is(&k, "content")) {
                setfield(j, "added_tokens[%zu].content", i);
                if (jstr(j, &content)) return -1;
                got |= 32;
            } else if (key_is(&k, "id")) {
                setfield(j, "added_tokens[%zu].id", i);
                if (jid(j, &id)) return -1;
                got |= 64;
            } else if (jskip(j, 0)) {
                return -1;
            }
            setfield(j, "added_tokens[%zu]", i);
        }
        if (r < 0) return -1;
        static const char *all[] = {"special", "normalized", "lstrip", "rstrip", "single_word", "content", "id"};
        for (int q = 0; q < 7; q++) if (!(got & (1 << q))) return jfail(j, "missing field \"%s\"", all[q]);
        if (dg_tok_grow((void **)&st->added, &st->cap_added, st->n_added + 1, sizeof(dg_tok_added)) ||
            dg_tok_grow((void **)&st->added_ids, &st->cap_added_ids, st->n_added + 1, sizeof(uint32_t)))
            return jfail(j, "out of memory");
        st->added_ids[st->n_added] = id;
        st->added[st->n_added++] = (dg_tok_added){content, flags};
        i++;
    }
    return r;
}

/* One template of a TemplateProcessing ("single" or "pair"): each item's kind and id. */
static int jtemplate(jp *j, dg_tok_template *t, const char *which) {
    setfield(j, "post_processor.%s", which);
    if (jarr_begin(j)) return -1;
    int first = 1, r;
    t->n = 0;
    while ((r = jarr_next(j, &first)) == 1) {
        dg_tok_str k;
        int ofirst = 1, ro;
        if (jobj_begin(j)) return -1;
        while ((ro = jobj_next(j, &ofirst, &k)) == 1) {
            const int special = key_is(&k, "SpecialToken");
            if (!special && !key_is(&k, "Sequence")) { if (jskip(j, 0)) return -1; continue; }
            if (jobj_begin(j)) return -1;
            int f2 = 1, r2;
            dg_tok_str k2, id = {0};
            while ((r2 = jobj_next(j, &f2, &k2)) == 1) {
                if (key_is(&k2, "id")) { if (jstr(j, &id)) return -1; }
                else if (jskip(j, 0)) return -1;
            }
            if (r2 < 0) return -1;
            if (t->n < DG_TOK_MAX_TEMPLATE) t->item[t->n] = (dg_tok_template_item){special, id};
            t->n++;
        }
        if (ro < 0) return -1;
    }
    return r;
}

/* post_processor: TemplateProcessing and RobertaProcessing, alone or in a Sequence (recorded only). */
static int jpost(jp *j, jstate *st, int depth) {
    if (depth > 4) return jfail(j, "post_processor nested too deeply");
    if (is_null(j)) return 0;
    if (jobj_begin(j)) return -1;
    int first = 1, r;
    dg_tok_str k, type = {0};
    dg_tok_template single = {0}, pair = {0};
    int has_single = 0, has_pair = 0;
    while ((r = jobj_next(j, &first, &k)) == 1) {
        setfield(j, "post_processor");
        if (key_is(&k, "type")) {
            if (jstr(j, &type)) return -1;
        } else if (key_is(&k, "single")) {
            if (jtemplate(j, &single, "single")) return -1;
            has_single = 1;
        } else if (key_is(&k, "pair")) {
            if (jtemplate(j, &pair, "pair")) return -1;
            has_pair = 1;
        } else if (key_is(&k, "processors")) {
            if (jarr_begin(j)) return -1;
            int f2 = 1, r2;
            while ((r2 = jarr_next(j, &f2)) == 1)
                if (jpost(j, st, depth + 1)) return -1;
            if (r2 < 0) return -1;
        } else if (jskip(j, 0)) {
            return -1;
        }
    }
    if (r < 0) return -1;
    if (key_is(&type, "RobertaProcessing")) st->x.roberta = 1;
    if (key_is(&type, "TemplateProcessing") && !st->x.has_template) {
        st->x.has_template = 1;
        if (has_single) st->x.single = single;
        if (has_pair) st->x.pair = pair;
    }
    return 0;
}

static int build_cb(void *user, const dg_tok_spec *spec, const dg_tok_json_extra *x, char *err, size_t errlen) {
    (void)x;
    return dg_tokenizer_build(spec, (dg_tokenizer **)user, err, errlen);
}

int dg_tok_json_parse(char *buf, size_t len, const char *name, dg_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    return dg_tok_json_read(buf, len, name, build_cb, out, err, errlen);
}

int dg_tok_json_read(char *buf, size_t len, const char *name, dg_tok_json_fn fn, void *user, char *err, size_t errlen) {
    jp j = {buf, buf, buf + len, name ? name : "tokenizer.json", err, errlen, {0}, -1};
    jstate st;
    memset(&st, 0, sizeof(st));
    int rc = -1;
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) { j.p += 3; return jfail(&j, "byte order mark at the start"); }
    if (jobj_begin(&j)) goto out;
    int first = 1, r;
    dg_tok_str k;
    while ((r = jobj_next(&j, &first, &k)) == 1) {
        if (key_is(&k, "version")) {
            dg_tok_str v = {0};
            setfield(&j, "version");
            if (jstr(&j, &v)) goto out;
            if (!key_is(&v, "1.0")) { jfail(&j, "unknown tokenizer version '%.*s'", (int)v.n, v.p); goto out; }
        } else if (key_is(&k, "added_tokens")) {
            if (jadded(&j, &st)) goto out;
        } else if (key_is(&k, "normalizer") || key_is(&k, "pre_tokenizer") || key_is(&k, "decoder")) {
            comp_kind kind = key_is(&k, "normalizer") ? C_NORM : key_is(&k, "pre_tokenizer") ? C_PRE : C_DEC;
            setfield(&j, "%s", comp_name[kind]);
            if (kind == C_DEC) st.spec.has_decoder = 1;
            if (is_null(&j)) { if (kind == C_DEC) st.spec.has_decoder = 0; }
            else if (jcomponent(&j, &st, kind, 0, comp_name[kind])) goto out;
        } else if (key_is(&k, "model")) {
            if (jmodel(&j, &st)) goto out;
        } else if (key_is(&k, "post_processor")) {
            setfield(&j, "post_processor");
            if (jpost(&j, &st, 0)) goto out;
        } else {
            setfield(&j, "%.*s", (int)(k.n > 64 ? 64 : k.n), k.p);
            if (jskip(&j, 0)) goto out;   /* truncation, padding, unknown keys */
        }
        j.field[0] = 0;
        j.index = -1;
    }
    if (r < 0) goto out;
    ws(&j);
    if (j.p != j.end) { jfail(&j, "trailing data after the top-level object"); goto out; }
    if (!st.seen_model) { jfail(&j, "no \"model\""); goto out; }

    /* vocab entries -> pieces by id */
    uint32_t max_id = 0;
    for (size_t i = 0; i < st.n_vocab; i++) if (st.vocab[i].id > max_id) max_id = st.vocab[i].id;
    if (st.n_vocab && max_id >= (1u << 23)) {
        j.field[0] = 0;
        j.index = -1;
        dg_fail(err, errlen, "%s: model.vocab: id %u is too large (at most %d)", j.name, max_id, (1 << 23) - 1);
        goto out;
    }
    size_t np = st.n_vocab ? (size_t)max_id + 1 : 0;
    st.pieces = calloc(np ? np : 1, sizeof(dg_tok_str));
    if (!st.pieces) { dg_fail(err, errlen, "%s: out of memory", j.name); goto out; }
    for (size_t i = 0; i < st.n_vocab; i++) {
        vocab_entry *e = &st.vocab[i];
        if (st.pieces[e->id].p) {
            dg_fail(err, errlen, "%s: model.vocab: id %u is given to two pieces ('%.*s' and '%.*s')", j.name, e->id,
                    (int)(st.pieces[e->id].n > 32 ? 32 : st.pieces[e->id].n), st.pieces[e->id].p, (int)(e->s.n > 32 ? 32 : e->s.n), e->s.p);
            goto out;
        }
        st.pieces[e->id] = e->s;
    }
    st.spec.name = j.name;
    st.spec.n_pieces = (int)np;
    st.spec.pieces = st.pieces;
    st.spec.n_merges = (int)st.n_merges;
    st.spec.merges = st.merges;
    st.spec.n_added = (int)st.n_added;
    st.spec.added = st.added;
    st.x.added_ids = st.added_ids;
    st.x.n_vocab_entries = (int)st.n_vocab;
    rc = fn(user, &st.spec, &st.x, err, errlen);
out:
    free(st.vocab);
    free(st.merges);
    free(st.added);
    free(st.added_ids);
    free(st.pieces);
    return rc;
}
