/*
 * meta.c - the metadata of a DiffusionGemma GGUF, key for key as llama.cpp PR #24423's converter
 * writes it (ModelBase.prepare_metadata, TextModel / Gemma3Model / Gemma4Model / DiffusionGemmaModel
 * .set_gguf_parameters, Gemma4Model.set_vocab with gguf-py's LlamaHfVocab and SpecialVocab), in its
 * order. A key the converter writes twice keeps its first position with the last value (GGUFWriter
 * overwrites in place). For the mixes llama-quantize re-sets general.quantization_version and
 * general.file_type, which moves them to the end (gguf_set_val_* removes, then appends).
 *
 * Not reproduced: the model-card heuristics of gguf-py's Metadata (README.md front matter, names parsed
 * from the directory name: general.basename / finetune / license / tags ...). general.name is the
 * directory's name (or --name); general.size_label is computed as gguf-py does.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "quant/quant.h"
#include "tokenizer/tokenizer.h"

#define A "diffusion-gemma."

/* ===== JSON files (jansson) ===== */

/* NULL and *present = 0 when the file does not exist; NULL and -1 in *present on a bad file. */
static json_t *load_json(const char *path, int *present, char *err, size_t errlen) {
    struct stat sb;
    *present = 0;
    if (!path || stat(path, &sb) != 0) return NULL;
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j || !json_is_object(j)) {
        if (j) dg_fail(err, errlen, "%s: not a JSON object", path);
        else dg_fail(err, errlen, "%s: JSON error at line %d column %d: %s", path, je.line, je.column, je.text);
        json_decref(j);
        *present = -1;
        return NULL;
    }
    *present = 1;
    return j;
}

static char *path_in(const char *dir, const char *file) {
    const size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
        else buf[n] = 0;
    }
    fclose(f);
    if (buf && len) *len = (size_t)n;
    return buf;
}

/* ===== the synthetic vocabulary (make_gguf_fixtures.py's vocabulary()) ===== */

const char dg_synth_chat_template[] =
    "{{ bos_token }}{% for m in messages %}<|turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}";

static const struct { int id; const char *s; int visible; } k_special[] = {
    {0, "<pad>", 0}, {1, "<eos>", 0}, {2, "<bos>", 0}, {3, "<unk>", 0}, {4, "<mask>", 0}, {46, "<|tool>", 0},
    {47, "<tool|>", 0}, {48, "<|tool_call>", 1}, {49, "<tool_call|>", 1}, {50, "<|tool_response>", 1},
    {51, "<tool_response|>", 1}, {52, "<|\"|>", 1}, {98, "<|think|>", 0}, {100, "<|channel>", 1},
    {101, "<channel|>", 1}, {105, "<|turn>", 0}, {106, "<turn|>", 0}};
static const char *const k_visible[] = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                                        "<tool_response|>", "<|\"|>"};

/* A string set (open addressing) for the pieces made so far. */
typedef struct { const char **slot; size_t cap; } sset;
static uint64_t hash_s(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}
static uint64_t hash_n(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}
static int sset_has(const sset *h, const char *s) {
    for (size_t i = hash_s(s) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
        if (!h->slot[i]) return 0;
        if (!strcmp(h->slot[i], s)) return 1;
    }
}
static void sset_add(sset *h, const char *s) {
    size_t i = hash_s(s) & (h->cap - 1);
    while (h->slot[i]) i = (i + 1) & (h->cap - 1);
    h->slot[i] = s;
}

void dg_synth_vocab_free(dg_synth_vocab *v) {
    free(v->tokens);
    free(v->types);
    free(v->merges);
    free(v->store);
    memset(v, 0, sizeof(*v));
}

/* UTF-8 code points of s as separate strings (at most cap). */
static int split_cp(const char *s, char out[][8], int cap) {
    int n = 0;
    while (*s && n < cap) {
        int len = (unsigned char)*s < 0x80 ? 1 : (unsigned char)*s < 0xE0 ? 2 : (unsigned char)*s < 0xF0 ? 3 : 4;
        memcpy(out[n], s, (size_t)len);
        out[n][len] = 0;
        s += len;
        n++;
    }
    return n;
}

int dg_synth_vocab_make(dg_synth_vocab *v, int n) {
    memset(v, 0, sizeof(*v));
    static const char chars[] = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()[]{}=+*/\\<>_@#$%&|~^`éüöäßñ";
    static const char *const words[] = {"▁the", "▁a", "▁of", "▁and", "▁to", "▁in", "▁is", "▁that", "▁it", "▁for", "ing",
                                         "ed", "er", "on", "▁diffusion", "▁gemma", "▁model", "▁token", "▁canvas", "▁hello", "▁world"};
    char cps[128][8];
    const int P0 = split_cp(chars, cps, 128);
    const size_t cap_store = (size_t)n * 24 + 65536;
    v->tokens = calloc((size_t)(n ? n : 1), sizeof(char *));
    v->types = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    v->merges = malloc(sizeof(char *) * (size_t)(n ? n : 1));
    v->store = malloc(cap_store);
    sset have = {NULL, 1};
    while (have.cap < 4 * (size_t)(n + 64)) have.cap *= 2;
    have.slot = calloc(have.cap, sizeof(char *));
    int *freel = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!v->tokens || !v->types || !v->merges || !v->store || !have.slot || !freel) {
        free(have.slot);
        free(freel);
        dg_synth_vocab_free(v);
        return -1;
    }
    size_t at = 0;
#define PUT(str) (memcpy(v->store + at, str, strlen(str) + 1), at += strlen(str) + 1, v->store + at - strlen(str) - 1)
    v->n = n;
    for (int i = 0; i < n; i++) v->types[i] = 1;
    for (size_t k = 0; k < sizeof(k_special) / sizeof(k_special[0]); k++)
        if (k_special[k].id < n) {
            v->tokens[k_special[k].id] = PUT(k_special[k].s);
            v->types[k_special[k].id] = k_special[k].visible ? 4 : 3;
        }
    static const char *const text[] = {"\n", "\n\n", "\n\n\n"};
    for (int k = 0; k < 3; k++)
        if (107 + k < n) v->tokens[107 + k] = PUT(text[k]);
    for (int b = 0; b < 256; b++)
        if (238 + b < n) {
            char s[8];
            snprintf(s, sizeof(s), "<0x%02X>", b);
            v->tokens[238 + b] = PUT(s);
            v->types[238 + b] = 6;
        }
    int nfree = 0, fh = 0;
    for (int i = 0; i < n; i++)
        if (!v->tokens[i]) freel[nfree++] = i;
    const char *pieces[128];
    int P = 0;
    for (int k = 0; k < P0 && fh < nfree; k++) {
        char *s = PUT(cps[k]);
        v->tokens[freel[fh++]] = s;
        pieces[P++] = s;
        sset_add(&have, s);
    }
    char buf[160], left[160];
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        char wc[32][8];
        const int wl = split_cp(words[w], wc, 32);
        for (int end = 2; end <= wl; end++) {
            buf[0] = left[0] = 0;
            for (int q = 0; q < end; q++) strcat(buf, wc[q]);
            for (int q = 0; q < end - 1; q++) strcat(left, wc[q]);
            if (fh < nfree && !sset_has(&have, buf) && sset_has(&have, left) && sset_has(&have, wc[end - 1])) {
                char *s = PUT(buf);
                v->tokens[freel[fh++]] = s;
                sset_add(&have, s);
                snprintf(buf, sizeof(buf), "%s %s", left, wc[end - 1]);
                v->merges[v->n_merges++] = PUT(buf);
            }
        }
    }
    for (long k = 0; k < (long)P * P && fh < nfree; k++) {
        const char *a = pieces[k % P], *b = pieces[(k / P + 3 * k) % P];
        snprintf(buf, sizeof(buf), "%s%s", a, b);
        if (!sset_has(&have, buf)) {
            char *s = PUT(buf);
            v->tokens[freel[fh++]] = s;
            sset_add(&have, s);
            snprintf(buf, sizeof(buf), "%s %s", a, b);
            v->merges[v->n_merges++] = PUT(buf);
        }
    }
    for (int i = 0; i < n; i++)
        if (!v->tokens[i]) {
            snprintf(buf, sizeof(buf), "<unused%d>", i);
            v->tokens[i] = PUT(buf);
        }
#undef PUT
    free(have.slot);
    free(freel);
    return 0;
}

/* ===== tokenizer from tokenizer.json (gguf-py LlamaHfVocab + SpecialVocab, Gemma4Model.set_vocab) ===== */

/* The special-token types SpecialVocab looks for, in its order (eot / eom may be appended). */
static const char *const k_types[] = {"bos", "eos", "unk", "sep", "pad", "cls", "mask", "eot", "eom"};
#define N_TYPES 9

/* A tokenizer_config.json *_token value as SpecialVocab sees it: absent/None, a string, or another
 * (truthy) value such as an AddedToken object. */
typedef struct { int kind; const char *s; json_t *j; } tcval;   /* kind 0 none, 1 string (s), 2 other (j) */

typedef struct {
    const dg_tok_spec *spec;
    const dg_tok_json_extra *x;
    json_t *tc;                /* tokenizer_config.json (NULL: none) */
    json_t *cfg;               /* config.json */
    const char *dir;
    gguf_writer *w;
    int64_t rows;              /* embedding rows in the file */
    char *err;
    size_t errlen;
    /* state */
    tcval tok[N_TYPES];        /* tokenizer_config.<typ>_token (mutated by the post-processor rules) */
    int n_types;               /* special_token_types in use (7, 8 with eot, 9 with eom) */
    int ids_n, ids_typ[N_TYPES];
    uint32_t ids[N_TYPES];
    int add_n, add_typ[N_TYPES], add_val[N_TYPES];
    char idbuf[2][256];
} tokctx;

static int str_eq(const dg_tok_str *a, const char *s) { return s && a->p && a->n == strlen(s) && !memcmp(a->p, s, a->n); }

/* Python `x in (a, b)` for an id string and tokenizer_config values. */
static int tc_is(const tcval *v, const dg_tok_str *id) { return v->kind == 1 && str_eq(id, v->s); }

static void set_add(tokctx *c, int typ, int val) {
    for (int i = 0; i < c->add_n; i++)
        if (c->add_typ[i] == typ) { c->add_val[i] = val; return; }
    c->add_typ[c->add_n] = typ;
    c->add_val[c->add_n++] = val;
}

static void set_id(tokctx *c, int typ, int64_t id) {
    if (id < 0) return;
    for (int i = 0; i < c->ids_n; i++)
        if (c->ids_typ[i] == typ) return;   /* the first one found wins */
    c->ids_typ[c->ids_n] = typ;
    c->ids[c->ids_n++] = (uint32_t)id;
}

/* SpecialVocab._try_load_from_tokenizer_json's reading of a TemplateProcessing post-processor. */
static void post_processor_rules(tokctx *c) {
    const dg_tok_json_extra *x = c->x;
    const int has_tc = c->tc != NULL;
    tcval *bos = &c->tok[0], *eos = &c->tok[1], *sep = &c->tok[3], *cls = &c->tok[5];
    if (!bos->kind && cls->kind && has_tc) *bos = *cls;
    if (!eos->kind && sep->kind && has_tc) *eos = *sep;
    if (x->roberta) { set_add(c, 0, 1); set_add(c, 1, 1); set_add(c, 3, 1); }
    if (!x->has_template) return;
    const dg_tok_template *single = &x->single, *pair = &x->pair;
    const dg_tok_str *first = NULL, *last = NULL;
    char (*idbuf)[256] = c->idbuf;   /* the id strings moved into tokenizer_config (NUL-terminated copies) */
    if (single->n > 1) {
        if (single->item[0].special && single->item[0].id.p && single->item[0].id.n) {
            first = &single->item[0].id;
            snprintf(idbuf[0], sizeof(idbuf[0]), "%.*s", (int)first->n, first->p);
            if (!has_tc) *bos = (tcval){1, idbuf[0], NULL};
            else if (!tc_is(bos, first) && !tc_is(cls, first)) {
                if (!bos->kind) *bos = (tcval){1, idbuf[0], NULL};
                if (!cls->kind) *cls = (tcval){1, idbuf[0], NULL};
            }
            set_add(c, 0, tc_is(bos, first) || tc_is(cls, first));
        }
        const int li = (single->n <= DG_TOK_MAX_TEMPLATE ? single->n : DG_TOK_MAX_TEMPLATE) - 1;
        if (single->item[li].special && single->item[li].id.p && single->item[li].id.n) {
            last = &single->item[li].id;
            snprintf(idbuf[1], sizeof(idbuf[1]), "%.*s", (int)last->n, last->p);
            if (!has_tc) *eos = (tcval){1, idbuf[1], NULL};
            else if (!tc_is(eos, last)) {
                if (c->n_types < 8) { c->n_types = 8; c->tok[7] = *eos; }
                else if (c->n_types < 9) { c->n_types = 9; c->tok[8] = *eos; }
                *eos = (tcval){1, idbuf[1], NULL};
            }
            set_add(c, 1, tc_is(eos, last));
        }
    }
    if (pair->n > 0) {
        int lo = 0, hi = pair->n < DG_TOK_MAX_TEMPLATE ? pair->n : DG_TOK_MAX_TEMPLATE;
        if (first && pair->item[0].special && pair->item[0].id.n == first->n && !memcmp(pair->item[0].id.p, first->p, first->n)) lo = 1;
        if (last && pair->item[hi - 1].special && pair->item[hi - 1].id.n == last->n && !memcmp(pair->item[hi - 1].id.p, last->p, last->n)) hi--;
        if (hi > lo) {
            const dg_tok_template_item *a = &pair->item[lo], *b = &pair->item[hi - 1];
            if (!a->special && !b->special && a->id.n == 1 && a->id.p[0] == 'A' && b->id.n == 1 && b->id.p[0] == 'B' && hi - lo > 2) {
                int add_sep = 0;
                const dg_tok_template_item *m0 = &pair->item[lo + 1];
                if (m0->special && m0->id.n && (tc_is(sep, &m0->id) || tc_is(eos, &m0->id)) && !last) add_sep = 1;
                if (hi - lo - 2 == 2) {
                    const dg_tok_template_item *m1 = &pair->item[lo + 2];
                    if (m1->special && m1->id.n && (tc_is(sep, &m1->id) || tc_is(eos, &m1->id))) add_sep = 1;
                }
                set_add(c, 3, add_sep);
                if (add_sep && !sep->kind && has_tc) *sep = *eos;
            }
        }
    }
}

/* The "id" field of the first added token with this content (SpecialVocab), -1 if none. */
static int64_t added_id_of(const tokctx *c, const char *content) {
    for (int i = 0; i < c->spec->n_added; i++)
        if (str_eq(&c->spec->added[i].content, content)) return c->x->added_ids[i];
    return -1;
}

static tcval tc_value(json_t *v) {
    if (!v || json_is_null(v)) return (tcval){0, NULL, NULL};
    if (json_is_string(v)) return (tcval){json_string_length(v) ? 1 : 0, json_string_value(v), v};
    if (json_is_false(v) || (json_is_object(v) && !json_object_size(v))) return (tcval){0, NULL, NULL};
    return (tcval){2, NULL, v};
}

/* tokenizer_config content of a *_token value: a string, or an object's "content". */
static const char *tc_content(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content"))) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

/* The id tokenizers gives a token string (added tokens, then the model vocabulary); -1 if unknown. */
static int64_t token_id(const dg_tok_spec *s, const int64_t *added_ids, const char *tok) {
    for (int i = 0; i < s->n_added; i++)
        if (str_eq(&s->added[i].content, tok)) return added_ids[i];
    for (int i = 0; i < s->n_pieces; i++)
        if (str_eq(&s->pieces[i], tok)) return i;
    return -1;
}

static int is_byte_piece(const dg_tok_str *p) {
    if (p->n != 6 || memcmp(p->p, "<0x", 3) || p->p[5] != '>') return 0;
    for (int k = 3; k < 5; k++) {
        const char ch = p->p[k];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'))) return 0;
    }
    return 1;
}

static int write_chat_template(tokctx *c) {
    gguf_writer *w = c->w;
    json_t *ct = c->tc ? json_object_get(c->tc, "chat_template") : NULL;
    char *alt = NULL, *p;
    int rc = -1;
    if (c->tc && json_object_get(c->tc, "chat_template")) {
        if (json_is_string(ct)) return gguf_w_str(w, "tokenizer.chat_template", json_string_value(ct));
        if (json_is_array(ct)) {
            /* [{"name", "template"}]: named ones as tokenizer.chat_template.<name>, their names, then the default */
            const char *def = NULL;
            const char *names[64];
            int nn = 0;
            size_t i;
            json_t *e;
            json_array_foreach(ct, i, e) {
                const char *name = json_string_value(json_object_get(e, "name")), *tmpl = json_string_value(json_object_get(e, "template"));
                if (!name || !*name || !tmpl) continue;
                if (!strcmp(name, "default")) { def = tmpl; continue; }
                char key[160], clean[96];
                snprintf(clean, sizeof(clean), "%s", name);
                for (char *q = clean; *q; q++)
                    if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9'))) *q = '_';
                snprintf(key, sizeof(key), "tokenizer.chat_template.%s", clean);
                if (gguf_w_str(w, key, tmpl)) return -1;
                if (nn < 64) names[nn++] = json_string_value(json_object_get(e, "name"));
            }
            if (nn && gguf_w_arr_str(w, "tokenizer.chat_templates", names, (uint64_t)nn)) return -1;
            return def ? gguf_w_str(w, "tokenizer.chat_template", def) : 0;
        }
        return 0;   /* null or another type: none (the converter warns) */
    }
    /* chat_template.jinja, else chat_template.json's "chat_template" */
    if ((p = path_in(c->dir, "chat_template.jinja")) && (alt = read_file(p, NULL))) {
        free(p);
        rc = gguf_w_str(w, "tokenizer.chat_template", alt);
        free(alt);
        return rc;
    }
    free(p);
    int present;
    if (!(p = path_in(c->dir, "chat_template.json"))) return dg_fail(c->err, c->errlen, "out of memory");
    json_t *j = load_json(p, &present, c->err, c->errlen);
    free(p);
    if (present < 0) return -1;
    rc = 0;
    if (j && json_is_string(json_object_get(j, "chat_template")))
        rc = gguf_w_str(w, "tokenizer.chat_template", json_string_value(json_object_get(j, "chat_template")));
    json_decref(j);
    return rc;
}

static int tokenizer_cb(void *user, const dg_tok_spec *s, const dg_tok_json_extra *x, char *err, size_t errlen) {
    tokctx *c = user;
    c->spec = s;
    c->x = x;
    gguf_writer *w = c->w;
    int rc = -1;
    gguf_str *toks = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    int64_t *aids = NULL;
    gguf_str *merges = NULL;
    char *mstore = NULL;
    /* ids as tokenizers assigns them: the vocabulary's, else the next id past the vocabulary */
    const int64_t base = s->n_pieces;
    if (x->n_vocab_entries != s->n_pieces)
        return dg_fail(err, errlen, "%s: model.vocab has no piece for some ids below %d (the converter needs every id)", s->name, s->n_pieces);
    aids = malloc(sizeof(int64_t) * (size_t)(s->n_added + 1));
    if (!aids) return dg_fail(err, errlen, "out of memory");
    /* a hash index of the pieces (262,144 of them; the added tokens are looked up in it) */
    size_t hcap = 1;
    while (hcap < 2 * (size_t)base + 2) hcap *= 2;
    int32_t *hidx = malloc(sizeof(int32_t) * hcap);
    if (!hidx) { free(aids); return dg_fail(err, errlen, "out of memory"); }
    memset(hidx, 0xff, sizeof(int32_t) * hcap);
    for (int64_t k = 0; k < base; k++) {
        size_t h = hash_n(s->pieces[k].p, s->pieces[k].n) & (hcap - 1);
        while (hidx[h] >= 0) h = (h + 1) & (hcap - 1);
        hidx[h] = (int32_t)k;
    }
    int64_t next = base, n_extra = 0;
    for (int i = 0; i < s->n_added; i++) {
        int64_t id = -1;
        const dg_tok_str *a = &s->added[i].content;
        for (size_t h = hash_n(a->p, a->n) & (hcap - 1); hidx[h] >= 0 && id < 0; h = (h + 1) & (hcap - 1))
            if (s->pieces[hidx[h]].n == a->n && !memcmp(s->pieces[hidx[h]].p, a->p, a->n)) id = hidx[h];
        for (int k = 0; k < i && id < 0; k++)
            if (s->added[k].content.n == s->added[i].content.n && !memcmp(s->added[k].content.p, s->added[i].content.p, s->added[i].content.n)) id = aids[k];
        if (id < 0) { id = next++; n_extra++; }
        aids[i] = id;
    }
    free(hidx);
    const int64_t n = base + n_extra;
    if (n != c->rows) {
        dg_fail(err, errlen, "%s: %lld tokens, but the embedding has %lld rows: the vocabulary does not match the model", s->name,
                (long long)n, (long long)c->rows);
        goto out;
    }
    /* all_special_tokens of transformers: the *_token values of tokenizer_config.json (named and
     * model-specific) and extra_special_tokens / additional_special_tokens */
    int64_t special[512];
    int n_special = 0;
    if (c->tc) {
        const char *k;
        json_t *v;
        json_object_foreach(c->tc, k, v) {
            const size_t kl = strlen(k);
            const char *tok = NULL;
            if (kl > 6 && !strcmp(k + kl - 6, "_token")) tok = tc_content(v);
            if (tok && n_special < 512) special[n_special++] = token_id(s, aids, tok);
            if (!strcmp(k, "extra_special_tokens") || !strcmp(k, "additional_special_tokens")) {
                if (!strcmp(k, "additional_special_tokens") && json_object_get(c->tc, "extra_special_tokens")) continue;
                size_t i;
                json_t *e;
                const char *kk;
                if (json_is_array(v)) json_array_foreach(v, i, e) {
                    if ((tok = tc_content(e)) && n_special < 512) special[n_special++] = token_id(s, aids, tok);
                }
                else if (json_is_object(v)) json_object_foreach(v, kk, e) {
                    if ((tok = tc_content(e)) && n_special < 512) special[n_special++] = token_id(s, aids, tok);
                }
            }
        }
        /* transformers' GemmaTokenizer supplies its own defaults for the named tokens the file leaves out */
        const char *cls = json_string_value(json_object_get(c->tc, "tokenizer_class"));
        if (cls && (!strcmp(cls, "GemmaTokenizer") || !strcmp(cls, "GemmaTokenizerFast"))) {
            static const char *const defs[][2] = {{"unk_token", "<unk>"}, {"bos_token", "<bos>"}, {"eos_token", "<eos>"},
                                                  {"pad_token", "<pad>"}, {"mask_token", "<mask>"}};
            for (size_t q = 0; q < sizeof(defs) / sizeof(defs[0]); q++)
                if (!json_object_get(c->tc, defs[q][0]) && n_special < 512) special[n_special++] = token_id(s, aids, defs[q][1]);
        }
        /* an unknown special token converts to the unk id */
        const int64_t unk = tc_content(json_object_get(c->tc, "unk_token")) ? token_id(s, aids, tc_content(json_object_get(c->tc, "unk_token"))) : -1;
        for (int i = 0; i < n_special; i++)
            if (special[i] < 0) special[i] = unk;
    }
    toks = malloc(sizeof(gguf_str) * (size_t)n);
    types = malloc(sizeof(int32_t) * (size_t)n);
    scores = malloc(sizeof(float) * (size_t)n);
    if (!toks || !types || !scores) { dg_fail(err, errlen, "out of memory"); goto out; }
    for (int64_t i = 0; i < n; i++) {
        scores[i] = -1000.0f;
        int sp = 0;
        for (int k = 0; k < n_special && !sp; k++) sp = special[k] == i;
        if (i < base) {
            toks[i] = (gguf_str){s->pieces[i].p, s->pieces[i].n};
            types[i] = is_byte_piece(&s->pieces[i]) ? 6 : sp ? 3 : 1;
        }
    }
    for (int i = 0; i < s->n_added; i++)
        if (aids[i] >= base) {
            int first = 1;
            for (int k = 0; k < i; k++) first &= aids[k] != aids[i];
            if (!first) continue;
            int sp = 0;
            for (int k = 0; k < n_special && !sp; k++) sp = special[k] == aids[i];
            toks[aids[i]] = (gguf_str){s->added[i].content.p, s->added[i].content.n};
            types[aids[i]] = sp ? 3 : 4;
        }
    for (int64_t i = 0; i < n; i++)
        for (size_t k = 0; k < sizeof(k_visible) / sizeof(k_visible[0]); k++)
            if (toks[i].len == strlen(k_visible[k]) && !memcmp(toks[i].s, k_visible[k], toks[i].len)) types[i] = 4;
    /* merges as "A B" strings; a space inside a piece of an [a, b] pair is written as U+0120 */
    size_t mlen = 0;
    for (int i = 0; i < 2 * s->n_merges; i++) mlen += 2 * (size_t)s->merges[i].n + 1;
    merges = malloc(sizeof(gguf_str) * (size_t)(s->n_merges + 1));
    mstore = malloc(mlen + 1);
    if (!merges || !mstore) { dg_fail(err, errlen, "out of memory"); goto out; }
    char *mp = mstore;
    for (int i = 0; i < s->n_merges; i++) {
        char *start = mp;
        for (int h = 0; h < 2; h++) {
            const dg_tok_str *part = &s->merges[2 * i + h];
            if (h) *mp++ = ' ';
            for (uint32_t q = 0; q < part->n; q++) {
                if (x->merges_pairs && part->p[q] == ' ') { *mp++ = (char)0xC4; *mp++ = (char)0xA0; }
                else *mp++ = part->p[q];
            }
        }
        merges[i] = (gguf_str){start, (uint64_t)(mp - start)};
    }
    if (gguf_w_str(w, "tokenizer.ggml.model", "gemma4") || gguf_w_arr_gstr(w, "tokenizer.ggml.tokens", toks, (uint64_t)n) ||
        gguf_w_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, (uint64_t)n) ||
        gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, (uint64_t)n))
        goto werr;
    if (s->n_merges && gguf_w_arr_gstr(w, "tokenizer.ggml.merges", merges, (uint64_t)s->n_merges)) goto werr;

    /* SpecialVocab: special ids and add_*_token flags */
    c->n_types = 7;
    if (c->tc)
        for (int t = 0; t < 7; t++) {
            char key[32];
            snprintf(key, sizeof(key), "%s_token", k_types[t]);
            c->tok[t] = tc_value(json_object_get(c->tc, key));
        }
    post_processor_rules(c);
    if (c->tc) {
        for (int t = 0; t < c->n_types; t++) {
            char key[32];
            snprintf(key, sizeof(key), "add_%s_token", k_types[t]);
            json_t *a = json_object_get(c->tc, key);
            if (json_is_boolean(a)) set_add(c, t, json_is_true(a));
            /* the value: tokenizer_config's, as the post-processor rules left it */
            const char *content = c->tok[t].kind == 1 ? c->tok[t].s : c->tok[t].kind == 2 ? tc_content(c->tok[t].j) : NULL;
            if (content) set_id(c, t, added_id_of(c, content));
        }
    }
    for (int t = 0; t < c->n_types && c->cfg; t++) {
        char key[32];
        snprintf(key, sizeof(key), "%s_token_id", k_types[t]);
        json_t *v = json_object_get(c->cfg, key);
        if (!v && json_is_object(json_object_get(c->cfg, "text_config"))) v = json_object_get(json_object_get(c->cfg, "text_config"), key);
        if (json_is_integer(v)) {
            if (json_integer_value(v) < 0) { dg_fail(err, errlen, "%s/config.json: %s is negative", c->dir, key); goto out; }
            set_id(c, t, json_integer_value(v));
        }
    }
    static const char *const id_key[N_TYPES] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.padding_token_id",
        NULL /* no cls handler in gguf-py */, "tokenizer.ggml.mask_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"};
    for (int i = 0; i < c->ids_n; i++)
        if (id_key[c->ids_typ[i]] && gguf_w_u32(w, id_key[c->ids_typ[i]], c->ids[i])) goto werr;
    int wrote_add_bos = 0;
    for (int i = 0; i < c->add_n; i++) {
        const int t = c->add_typ[i];
        if (t != 0 && t != 1 && t != 3) continue;   /* gguf-py has add_add_{bos,eos,sep}_token only */
        static const char *const add_key[] = {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", NULL, "tokenizer.ggml.add_sep_token"};
        /* Gemma4Model.set_vocab then sets add_bos_token = True (overwritten in place) */
        if (gguf_w_bool(w, add_key[t], t == 0 ? 1 : c->add_val[i])) goto werr;
        wrote_add_bos |= t == 0;
    }
    if (c->tc && write_chat_template(c)) goto out;
    if (gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", 0)) goto werr;
    if (!wrote_add_bos && gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 1)) goto werr;
    rc = 0;
    goto out;
werr:
    dg_fail(err, errlen, "%s", gguf_writer_error(w));
out:
    free(aids);
    free(toks);
    free(types);
    free(scores);
    free(merges);
    free(mstore);
    return rc;
}

static int write_synth_vocab(gguf_writer *w, int64_t n, char *err, size_t errlen) {
    dg_synth_vocab v;
    if (n > (1 << 24) || dg_synth_vocab_make(&v, (int)n)) return dg_fail(err, errlen, "out of memory for a %lld-token vocabulary", (long long)n);
    float *scores = malloc(sizeof(float) * (size_t)(n ? n : 1));
    int rc = -1;
    if (!scores) { dg_fail(err, errlen, "out of memory"); goto out; }
    for (int64_t i = 0; i < n; i++) scores[i] = -1000.0f;
    if (gguf_w_str(w, "tokenizer.ggml.model", "gemma4") ||
        gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tokens, (uint64_t)n) ||
        gguf_w_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, (uint64_t)n) ||
        gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, v.types, (uint64_t)n) ||
        (v.n_merges && gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v.merges, (uint64_t)v.n_merges)) ||
        gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 2) || gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 1) ||
        gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 3) || gguf_w_u32(w, "tokenizer.ggml.padding_token_id", 0) ||
        gguf_w_u32(w, "tokenizer.ggml.mask_token_id", 4) || gguf_w_str(w, "tokenizer.chat_template", dg_synth_chat_template) ||
        gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", 0) || gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 1)) {
        dg_fail(err, errlen, "%s", gguf_writer_error(w));
        goto out;
    }
    rc = 0;
out:
    free(scores);
    dg_synth_vocab_free(&v);
    return rc;
}

static int count_cb(void *user, const dg_tok_spec *s, const dg_tok_json_extra *x, char *err, size_t errlen) {
    (void)err;
    (void)errlen;
    *(int64_t *)user = (int64_t)x->n_vocab_entries + s->n_added;
    return 0;
}

int dg_qmeta_vocab_rows(const char *dir, int64_t V, int64_t *rows, char *err, size_t errlen) {
    *rows = V;
    if (!dir) return 0;
    char *p = path_in(dir, "tokenizer.json");
    if (!p) return dg_fail(err, errlen, "out of memory");
    struct stat sb;
    if (stat(p, &sb) != 0) { free(p); return 0; }
    size_t len;
    char *buf = read_file(p, &len);
    int64_t n = 0;
    int rc = 0;
    if (!buf) rc = dg_fail(err, errlen, "%s: cannot read", p);
    else rc = dg_tok_json_read(buf, len, p, count_cb, &n, err, errlen);
    /* Gemma3Model.modify_tensors: embed_tokens[:len(model.vocab) + len(added_tokens)] */
    if (!rc && n < V) *rows = n;
    free(buf);
    free(p);
    return rc;
}

/* ===== all keys ===== */

static double num_or(json_t *o, const char *k, double def) {
    json_t *v = o ? json_object_get(o, k) : NULL;
    return json_is_number(v) ? json_number_value(v) : def;
}

int dg_qmeta_write(gguf_writer *w, const dg_config *c, const dg_qplan *p, const dg_qmeta_src *src, char *err, size_t errlen) {
    int rc = -1, present;
    json_t *cfg = NULL, *gen = NULL, *tcfg = NULL;
    char *tpath = NULL, *tbuf = NULL;
    cfg = load_json(src->config_json, &present, err, errlen);
    if (present < 0) goto out;
    gen = load_json(src->gen_json, &present, err, errlen);
    if (present < 0) goto out;
    json_t *tc = cfg && json_is_object(json_object_get(cfg, "text_config")) ? json_object_get(cfg, "text_config") : cfg;
    const int L = c->n_layers, ft = p->ftype, mix = dg_ftype_is_mix(ft);
    int gdim, gkv;
    dg_config_global_head(c, &gdim, &gkv);
    char label[64];
    dg_qplan_size_label(p, label, sizeof(label));

    /* ModelBase.prepare_metadata: type, model card (sampling keys from generation_config.json), name, size label */
    if (gguf_w_str(w, "general.architecture", "diffusion-gemma") || gguf_w_str(w, "general.type", "model")) goto werr;
    static const struct { const char *json, *key; int kind; } samp[] = {
        {"sequence", "general.sampling.sequence", 's'}, {"top_k", "general.sampling.top_k", 'i'},
        {"top_p", "general.sampling.top_p", 'f'}, {"min_p", "general.sampling.min_p", 'f'},
        {"xtc_probability", "general.sampling.xtc_probability", 'f'}, {"xtc_threshold", "general.sampling.xtc_threshold", 'f'},
        {"temperature", "general.sampling.temp", 'f'}, {"penalty_last_n", "general.sampling.penalty_last_n", 'i'},
        {"penalty_repeat", "general.sampling.penalty_repeat", 'f'}, {"mirostat", "general.sampling.mirostat", 'i'},
        {"mirostat_tau", "general.sampling.mirostat_tau", 'f'}, {"mirostat_eta", "general.sampling.mirostat_eta", 'f'}};
    for (size_t i = 0; gen && i < sizeof(samp) / sizeof(samp[0]); i++) {
        json_t *v = json_object_get(gen, samp[i].json);
        if (!v || json_is_null(v)) continue;
        int bad = 0;
        if (samp[i].kind == 's') bad = json_is_string(v) ? gguf_w_str(w, samp[i].key, json_string_value(v)) : 0;
        else if (samp[i].kind == 'i') bad = json_is_number(v) ? gguf_w_i32(w, samp[i].key, (int32_t)json_number_value(v)) : 0;
        else bad = json_is_number(v) ? gguf_w_f32(w, samp[i].key, (float)json_number_value(v)) : 0;
        if (bad) goto werr;
    }
    if (gguf_w_str(w, "general.name", src->name) || gguf_w_str(w, "general.size_label", label)) goto werr;

    /* TextModel.set_gguf_parameters (+ the Gemma3 / Gemma4 values overwritten in place) */
    int32_t *kv = malloc(sizeof(int32_t) * (size_t)L);
    uint8_t *swa = malloc((size_t)L);
    if (!kv || !swa) { free(kv); free(swa); dg_fail(err, errlen, "out of memory"); goto out; }
    for (int i = 0; i < L; i++) { kv[i] = c->layer_n_kv[i]; swa[i] = !c->layer_full[i]; }
    const int bad1 = gguf_w_u32(w, A "block_count", (uint32_t)L) || gguf_w_u32(w, A "context_length", (uint32_t)c->max_position) ||
        gguf_w_u32(w, A "embedding_length", (uint32_t)c->hidden_size) || gguf_w_u32(w, A "feed_forward_length", (uint32_t)c->intermediate_size) ||
        gguf_w_u32(w, A "attention.head_count", (uint32_t)c->n_heads) || gguf_w_arr(w, A "attention.head_count_kv", GGUF_INT32, kv, (uint64_t)L) ||
        gguf_w_f32(w, A "rope.freq_base", (float)c->rope_full.theta) || gguf_w_f32(w, A "rope.freq_base_swa", (float)c->rope_sliding.theta) ||
        gguf_w_f32(w, A "attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps) ||
        gguf_w_u32(w, A "expert_count", (uint32_t)c->n_experts) || gguf_w_u32(w, A "expert_used_count", (uint32_t)c->top_k) ||
        gguf_w_u32(w, A "attention.key_length", (uint32_t)gdim) || gguf_w_u32(w, A "attention.value_length", (uint32_t)gdim) ||
        (!mix && gguf_w_u32(w, "general.file_type", (uint32_t)ft));
    /* Gemma3Model: the softcap only when the config has a (non-zero) one */
    json_t *sc = tc ? json_object_get(tc, "final_logit_softcapping") : NULL;
    if (!sc && cfg) sc = json_object_get(cfg, "final_logit_softcapping");
    double softcap = json_is_number(sc) ? json_number_value(sc) : 0;
    if (!src->config_json) softcap = c->final_logit_softcap;   /* dgemma's own config: every value known */
    const int bad2 = bad1 || (softcap != 0 && gguf_w_f32(w, A "final_logit_softcapping", (float)softcap)) ||
        gguf_w_u32(w, A "attention.sliding_window", (uint32_t)c->sliding_window) ||
        /* Gemma4Model */
        gguf_w_u32(w, A "attention.shared_kv_layers", 0) || gguf_w_u32(w, A "embedding_length_per_layer_input", 0) ||
        gguf_w_arr(w, A "attention.sliding_window_pattern", GGUF_BOOL, swa, (uint64_t)L) ||
        gguf_w_u32(w, A "attention.key_length_swa", (uint32_t)c->head_dim) || gguf_w_u32(w, A "attention.value_length_swa", (uint32_t)c->head_dim) ||
        gguf_w_u32(w, A "expert_feed_forward_length", (uint32_t)c->expert_size) ||
        gguf_w_u32(w, A "rope.dimension_count", (uint32_t)gdim) || gguf_w_u32(w, A "rope.dimension_count_swa", (uint32_t)c->head_dim) ||
        /* DiffusionGemmaModel */
        gguf_w_bool(w, A "attention.causal", 0) || gguf_w_u32(w, "diffusion.canvas_length", (uint32_t)c->canvas_length);
    free(kv);
    free(swa);
    if (bad2) goto werr;
    if (gen) {
        json_t *scfg = json_object_get(gen, "sampler_config");
        if ((json_object_get(gen, "max_denoising_steps") && gguf_w_u32(w, "diffusion.eb_max_steps", (uint32_t)num_or(gen, "max_denoising_steps", 0))) ||
            (json_object_get(gen, "t_min") && gguf_w_f32(w, "diffusion.eb_t_min", (float)num_or(gen, "t_min", 0))) ||
            (json_object_get(gen, "t_max") && gguf_w_f32(w, "diffusion.eb_t_max", (float)num_or(gen, "t_max", 0))) ||
            (json_is_object(scfg) && json_object_get(scfg, "entropy_bound") &&
             gguf_w_f32(w, "diffusion.eb_entropy_bound", (float)num_or(scfg, "entropy_bound", 0))) ||
            (json_object_get(gen, "stability_threshold") &&
             gguf_w_u32(w, "diffusion.eb_stability_threshold", (uint32_t)num_or(gen, "stability_threshold", 0))) ||
            (json_object_get(gen, "confidence_threshold") &&
             gguf_w_f32(w, "diffusion.eb_confidence_threshold", (float)num_or(gen, "confidence_threshold", 0))))
            goto werr;
    }
    if (!gen && !src->config_json &&
        (gguf_w_u32(w, "diffusion.eb_max_steps", (uint32_t)c->gen_max_denoising_steps) ||
         gguf_w_f32(w, "diffusion.eb_t_min", (float)c->gen_t_min) || gguf_w_f32(w, "diffusion.eb_t_max", (float)c->gen_t_max) ||
         gguf_w_f32(w, "diffusion.eb_entropy_bound", (float)c->gen_entropy_bound) ||
         gguf_w_u32(w, "diffusion.eb_stability_threshold", (uint32_t)c->gen_stability_threshold) ||
         gguf_w_f32(w, "diffusion.eb_confidence_threshold", (float)c->gen_confidence_threshold)))
        goto werr;
    if (!mix && gguf_w_u32(w, "general.quantization_version", 2)) goto werr;

    /* Gemma4Model.set_vocab */
    const int64_t rows = src->vocab_rows;
    if (src->synthetic_vocab || !src->dir) {
        if (write_synth_vocab(w, rows, err, errlen)) goto out;
    } else {
        tpath = path_in(src->dir, "tokenizer.json");
        size_t len = 0;
        if (!tpath) { dg_fail(err, errlen, "out of memory"); goto out; }
        if (!(tbuf = read_file(tpath, &len))) {
            dg_fail(err, errlen, "%s: cannot read (a GGUF needs the tokenizer; --synthetic-vocab writes a placeholder vocabulary)", tpath);
            goto out;
        }
        char *tcp = path_in(src->dir, "tokenizer_config.json");
        if (!tcp) { dg_fail(err, errlen, "out of memory"); goto out; }
        tcfg = load_json(tcp, &present, err, errlen);
        free(tcp);
        if (present < 0) goto out;
        tokctx tk;
        memset(&tk, 0, sizeof(tk));
        tk.tc = tcfg;
        tk.cfg = cfg;
        tk.dir = src->dir;
        tk.w = w;
        tk.rows = rows;
        tk.err = err;
        tk.errlen = errlen;
        if (dg_tok_json_read(tbuf, len, tpath, tokenizer_cb, &tk, err, errlen)) goto out;
    }
    /* llama-quantize: gguf_set_val_u32 removes and re-appends */
    if (mix && (gguf_w_u32(w, "general.quantization_version", 2) || gguf_w_u32(w, "general.file_type", (uint32_t)ft))) goto werr;
    rc = 0;
    goto out;
werr:
    dg_fail(err, errlen, "%s", gguf_writer_error(w));
out:
    json_decref(cfg);
    json_decref(gen);
    json_decref(tcfg);
    free(tpath);
    free(tbuf);
    return rc;
}
