/*
 * jinja_value.c - values of the Jinja interpreter and their Python semantics.
 *
 * Allocation goes through the render context: every byte is counted against the memory limit, every
 * heap object is linked into the render's registry (so an error, which longjmps out of any depth, or a
 * reference cycle never leaks), and objects whose count drops to zero are freed from a work list, not
 * recursively (a chain of a million nested namespaces must not overflow the stack).
 *
 * Printing follows CPython: str() and repr() of None / bools / ints / floats (shortest round-trip
 * repr, exponent outside 1e-4 .. 1e16), strings (quote choice and escapes of repr, non-printable
 * characters as \xNN / \uNNNN), lists, tuples ("(1,)"), dicts, ranges, dict views; JSON is
 * json.dumps (ensure_ascii, indent, separators, sort_keys). Unicode properties (whitespace, case,
 * printability) come from small tables: complete for whitespace and printability of assigned
 * characters, case mapping for Latin, Greek and Cyrillic.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/jinja_impl.h"

/* ===== errors, memory, registry ===== */

void jfail(jctx *c, const char *fmt, ...) {
    if (c->err && c->errlen) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(c->err, c->errlen, "%s:%d: %s", c->t->name, c->line, msg);
    }
    longjmp(c->jb, 1);
}

/* work done, against max_steps: a loop iteration, a call or an item stored in a list or dict is one
 * step, 256 bytes of text built another (so no template can run for long without reaching it) */
void jstep(jctx *c, int64_t n) {
    c->steps += n;
    if (c->steps > c->max_steps)
        jfail(c, "the template ran too long (more than %lld steps: loop iterations, calls, items and text built)", (long long)c->max_steps);
}

static void account(jctx *c, size_t n) {
    if (c->mem + n > c->max_mem || c->mem + n < c->mem)
        jfail(c, "the template used too much memory (more than %zu bytes of values)", c->max_mem);
    c->mem += n;
}

void *jalloc(jctx *c, size_t n) {
    account(c, n);
    void *p = malloc(n ? n : 1);
    if (!p) jfail(c, "out of memory");
    return p;
}

void *jrealloc(jctx *c, void *p, size_t old, size_t n) {
    if (n > old) account(c, n - old);
    else c->mem -= old - n;
    void *q = realloc(p, n ? n : 1);
    if (!q) jfail(c, "out of memory");
    return q;
}

void jfree(jctx *c, void *p, size_t n) {
    if (!p) return;
    c->mem -= n;
    free(p);
}

/* a registered object of `size` bytes whose first `zero` bytes are cleared */
void *jobj_new_part(jctx *c, size_t size, size_t zero, int kind, int sub) {
    jobj *o = jalloc(c, size);
    memset(o, 0, zero);
    o->rc = 1;
    o->kind = (uint8_t)kind;
    o->sub = (uint8_t)sub;
    o->bytes = size;
    o->next = c->reg.next;
    o->prev = &c->reg;
    c->reg.next->prev = o;
    c->reg.next = o;
    return o;
}

void *jobj_new(jctx *c, size_t size, int kind, int sub) { return jobj_new_part(c, size, size, kind, sub); }

typedef struct {
    jobj h;
    max_align_t data[];
} jraw;

void *jtmp(jctx *c, size_t n) {
    jraw *r = jobj_new_part(c, sizeof(jraw) + n, sizeof(jraw), JO_RAW, 0);
    return r->data;
}

void jtmp_free(jctx *c, void *p) {
    if (p) jobj_unref(c, &((jraw *)((char *)p - offsetof(jraw, data)))->h);
}

/* grow registered scratch memory (it moves: unlink, realloc, link again) */
static void *jtmp_realloc(jctx *c, void *p, size_t n) {
    if (!p) return jtmp(c, n);
    jraw *r = (jraw *)((char *)p - offsetof(jraw, data));
    size_t old = r->h.bytes, nb = sizeof(jraw) + n;
    if (nb > old) account(c, nb - old);
    else c->mem -= old - nb;
    r->h.prev->next = r->h.next;
    r->h.next->prev = r->h.prev;
    jraw *q = realloc(r, nb);
    int failed = q == NULL;
    if (failed) {
        q = r;   /* still valid: link it back so the cleanup frees it */
        nb = old;
    }
    q->h.bytes = nb;
    q->h.next = c->reg.next;
    q->h.prev = &c->reg;
    c->reg.next->prev = &q->h;
    c->reg.next = &q->h;
    if (failed) jfail(c, "out of memory");
    return q->data;
}

/* free the object's own memory (children are released by the caller) */
static void obj_release_mem(jctx *c, jobj *o) {
    o->prev->next = o->next;
    o->next->prev = o->prev;
    switch (o->kind) {
    case JV_LIST: {
        jlist *l = (jlist *)o;
        jfree(c, l->a, sizeof(jv) * (size_t)l->cap);
        break;
    }
    case JV_DICT:
    case JV_NS: {
        jdict *d = (jdict *)o;
        jfree(c, d->k, sizeof(jv) * (size_t)d->cap);
        jfree(c, d->v, sizeof(jv) * (size_t)d->cap);
        jfree(c, d->idx, sizeof(int32_t) * (size_t)d->icap);
        break;
    }
    case JO_FRAME: {
        jframe *f = (jframe *)o;
        if (f->names != f->inl_names) {
            jfree(c, f->names, sizeof(jstr *) * (size_t)f->cap);
            jfree(c, f->vals, sizeof(jv) * (size_t)f->cap);
        }
        break;
    }
    default:
        break;
    }
    jfree(c, o, o->bytes);
}

static void queue_free(jctx *c, jobj *o) {
    if (c->nfreeq == c->capfreeq) {
        size_t cap = c->capfreeq ? 2 * c->capfreeq : 64;
        c->freeq = jrealloc(c, c->freeq, sizeof(jobj *) * c->capfreeq, sizeof(jobj *) * cap);
        c->capfreeq = cap;
    }
    c->freeq[c->nfreeq++] = o;
}

static void release_children(jctx *c, jobj *o) {
    switch (o->kind) {
    case JV_LIST: {
        jlist *l = (jlist *)o;
        for (int64_t i = 0; i < l->n; i++) jv_unref(c, l->a[i]);
        break;
    }
    case JV_DICT:
    case JV_NS: {
        jdict *d = (jdict *)o;
        for (int64_t i = 0; i < d->n; i++) {
            jv_unref(c, d->k[i]);
            jv_unref(c, d->v[i]);
        }
        break;
    }
    case JV_MACRO: {
        jmacro *m = (jmacro *)o;
        if (m->closure) jobj_unref(c, &m->closure->h);
        jv_unref(c, m->caller);
        break;
    }
    case JV_LOOP: {
        jloop *l = (jloop *)o;
        if (l->items) jobj_unref(c, &l->items->h);
        if (l->src) jobj_unref(c, &l->src->h);
        if (l->frame) jobj_unref(c, &l->frame->h);
        jv_unref(c, l->changed);
        break;
    }
    case JV_FUNC:
        jv_unref(c, ((jfunc *)o)->self);
        break;
    case JO_FRAME: {
        jframe *f = (jframe *)o;
        if (f->parent) jobj_unref(c, &f->parent->h);
        for (int i = 0; i < f->n; i++) jv_unref(c, f->vals[i]);
        if (f->dict) jobj_unref(c, &f->dict->h);
        break;
    }
    default:
        break;
    }
}

void jobj_unref(jctx *c, jobj *o) {
    if (!o || o->rc < 0) return;
    if (--o->rc > 0) return;
    queue_free(c, o);
    if (c->draining) return;
    c->draining = 1;
    while (c->nfreeq) {
        jobj *x = c->freeq[--c->nfreeq];
        release_children(c, x);
        obj_release_mem(c, x);
    }
    c->draining = 0;
}

void jv_unref(jctx *c, jv v) {
    if (jv_heap(v)) jobj_unref(c, v.u.o);
}

/* ===== UTF-8 and Unicode ===== */

int utf8_dec(const char *s, size_t n, size_t *i) {
    const unsigned char *u = (const unsigned char *)s;
    size_t p = *i;
    unsigned char c0 = u[p];
    if (c0 < 0x80) { *i = p + 1; return c0; }
    int k = (c0 >> 5) == 6 ? 2 : (c0 >> 4) == 14 ? 3 : (c0 >> 3) == 30 ? 4 : 0;
    if (!k || p + (size_t)k > n) { *i = p + 1; return 0xFFFD; }
    int cp = k == 2 ? (c0 & 0x1F) : k == 3 ? (c0 & 0x0F) : (c0 & 0x07);
    for (int j = 1; j < k; j++) {
        if ((u[p + j] & 0xC0) != 0x80) { *i = p + 1; return 0xFFFD; }
        cp = (cp << 6) | (u[p + j] & 0x3F);
    }
    *i = p + (size_t)k;
    return cp;
}

int utf8_enc(char *o, int cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int64_t utf8_offset(const char *s, size_t n, int64_t cp_index) {
    size_t i = 0;
    for (int64_t k = 0; k < cp_index && i < n; k++) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    return (int64_t)i;
}

int uni_isspace(int cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 9 && cp <= 13) || (cp >= 0x1c && cp <= 0x1f);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* assigned characters that str.isprintable() rejects (Unicode 14, CPython 3.11); unassigned code
 * points, which Python also escapes, are printed as they are */
static const int nonprint[][2] = {
    {0x0, 0x1f}, {0x7f, 0xa0}, {0xad, 0xad}, {0x600, 0x605}, {0x61c, 0x61c}, {0x6dd, 0x6dd}, {0x70f, 0x70f},
    {0x890, 0x891}, {0x8e2, 0x8e2}, {0x1680, 0x1680}, {0x180e, 0x180e}, {0x2000, 0x200f}, {0x2028, 0x202f},
    {0x205f, 0x2064}, {0x2066, 0x206f}, {0x3000, 0x3000}, {0xd800, 0xf8ff}, {0xfeff, 0xfeff}, {0xfff9, 0xfffb},
    {0x110bd, 0x110bd}, {0x110cd, 0x110cd}, {0x13430, 0x13438}, {0x1bca0, 0x1bca3}, {0x1d173, 0x1d17a},
    {0xe0001, 0xe0001}, {0xe0020, 0xe007f}, {0xf0000, 0xffffd}, {0x100000, 0x10fffd},
};

int uni_isprintable(int cp) {
    for (size_t i = 0; i < sizeof(nonprint) / sizeof(nonprint[0]); i++)
        if (cp >= nonprint[i][0] && cp <= nonprint[i][1]) return 0;
    return cp <= 0x10FFFF;
}

/* simple lower-case mapping: Latin-1, Latin Extended-A, Greek, Cyrillic */
static int lower1(int cp) {
    if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    if (cp < 0x100) return (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) ? cp + 32 : cp;
    if (cp <= 0x17F) {
        if (cp == 0x178) return 0xFF;
        if ((cp <= 0x12F) || (cp >= 0x132 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177)) return cp | 1;
        if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) return (cp & 1) ? cp + 1 : cp;
        return cp;
    }
    if (cp >= 0x386 && cp <= 0x3AB) {
        if (cp == 0x386) return 0x3AC;
        if (cp >= 0x388 && cp <= 0x38A) return cp + 37;
        if (cp == 0x38C) return 0x3CC;
        if (cp == 0x38E || cp == 0x38F) return cp + 63;
        if (cp >= 0x391 && cp <= 0x3AB && cp != 0x3A2) return cp + 32;
        return cp;
    }
    if (cp >= 0x400 && cp <= 0x52F) {
        if (cp <= 0x40F) return cp + 80;
        if (cp <= 0x42F) return cp + 32;
        if ((cp >= 0x460 && cp <= 0x481) || (cp >= 0x48A && cp <= 0x4BF) || (cp >= 0x4D0 && cp <= 0x52F)) return cp | 1;
        if (cp == 0x4C0) return 0x4CF;
        if (cp >= 0x4C1 && cp <= 0x4CE) return (cp & 1) ? cp + 1 : cp;
    }
    return cp;
}

static int upper1(int cp) {
    if (cp < 0x80) return (cp >= 'a' && cp <= 'z') ? cp - 32 : cp;
    if (cp < 0x100) {
        if (cp >= 0xE0 && cp <= 0xFE && cp != 0xF7) return cp - 32;
        if (cp == 0xFF) return 0x178;
        if (cp == 0xB5) return 0x39C;
        return cp;
    }
    if (cp <= 0x17F) {
        if (cp == 0x131) return 'I';
        if (cp == 0x17F) return 'S';
        if ((cp <= 0x12F) || (cp >= 0x132 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177)) return cp & ~1;
        if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) return (cp & 1) ? cp : cp - 1;
        return cp;
    }
    if (cp >= 0x3AC && cp <= 0x3CE) {
        if (cp == 0x3AC) return 0x386;
        if (cp >= 0x3AD && cp <= 0x3AF) return cp - 37;
        if (cp == 0x3C2) return 0x3A3;
        if (cp == 0x3CC) return 0x38C;
        if (cp == 0x3CD || cp == 0x3CE) return cp - 63;
        if (cp >= 0x3B1 && cp <= 0x3CB) return cp - 32;
        return cp;
    }
    if (cp >= 0x430 && cp <= 0x52F) {
        if (cp <= 0x44F) return cp - 32;
        if (cp <= 0x45F) return cp - 80;
        if ((cp >= 0x460 && cp <= 0x481) || (cp >= 0x48A && cp <= 0x4BF) || (cp >= 0x4D0 && cp <= 0x52F)) return cp & ~1;
        if (cp == 0x4CF) return 0x4C0;
        if (cp >= 0x4C1 && cp <= 0x4CE) return (cp & 1) ? cp : cp - 1;
    }
    return cp;
}

int uni_lower(int cp, int out[3]) {
    if (cp == 0x130) { out[0] = 'i'; out[1] = 0x307; return 2; }
    out[0] = lower1(cp);
    return 1;
}

int uni_upper(int cp, int out[3]) {
    if (cp == 0xDF) { out[0] = 'S'; out[1] = 'S'; return 2; }
    if (cp == 0x149) { out[0] = 0x2BC; out[1] = 'N'; return 2; }
    out[0] = upper1(cp);
    return 1;
}

int uni_iscased_upper(int cp) { return lower1(cp) != cp || cp == 0x130; }
int uni_iscased_lower(int cp) { return upper1(cp) != cp || cp == 0xDF || cp == 0x138 || cp == 0x149; }

int uni_isdigit(int cp) {
    return (cp >= '0' && cp <= '9') || cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0x660 && cp <= 0x669) ||
           (cp >= 0x6F0 && cp <= 0x6F9) || (cp >= 0x966 && cp <= 0x96F) || (cp >= 0xFF10 && cp <= 0xFF19);
}

int uni_isalpha(int cp) {
    if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
    if (cp < 0x100) return cp == 0xAA || cp == 0xB5 || cp == 0xBA || (cp >= 0xC0 && cp != 0xD7 && cp != 0xF7);
    return (cp <= 0x2AF) || (cp >= 0x370 && cp <= 0x3FF && cp != 0x37E && cp != 0x387) || (cp >= 0x400 && cp <= 0x52F && !(cp >= 0x482 && cp <= 0x489)) ||
           (cp >= 0x5D0 && cp <= 0x5EA) || (cp >= 0x620 && cp <= 0x64A) || (cp >= 0x904 && cp <= 0x939) ||
           (cp >= 0xE01 && cp <= 0xE30) || (cp >= 0x3041 && cp <= 0x3096) || (cp >= 0x30A1 && cp <= 0x30FA) ||
           (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xAC00 && cp <= 0xD7A3);
}

/* ===== strings ===== */

jstr *jstr_new(jctx *c, const char *s, size_t n) {
    jstr *r = jobj_new_part(c, sizeof(jstr) + n + 1, sizeof(jstr), JV_STR, 0);
    r->len = n;
    r->ncp = -1;
    if (n && s) memcpy(r->s, s, n);
    r->s[n] = 0;
    return r;
}

jv jv_str(jctx *c, const char *s, size_t n) { return jv_obj(JV_STR, jstr_new(c, s, n)); }
jv jv_cstr(jctx *c, const char *s) { return jv_str(c, s, strlen(s)); }

int64_t jstr_ncp(jstr *s) {
    if (s->ncp >= 0) return s->ncp;
    int64_t k = 0;
    for (size_t i = 0; i < s->len; i++) k += ((unsigned char)s->s[i] & 0xC0) != 0x80;
    if (s->h.rc >= 0) s->ncp = k;   /* immortal strings are shared between threads: never written */
    return k;
}

int jv_is_str(jv v) { return v.t == JV_STR; }

int jstr_eq(const jstr *a, const jstr *b) { return a == b || (a->len == b->len && memcmp(a->s, b->s, a->len) == 0); }

/* ===== lists and dicts ===== */

jlist *jlist_new(jctx *c, int64_t cap, int sub) {
    jlist *l = jobj_new(c, sizeof(jlist), JV_LIST, sub);
    if (cap < 0) cap = 0;
    if (cap > INT64_MAX / (int64_t)sizeof(jv)) jfail(c, "list too large");
    l->cap = cap;
    l->a = cap ? jalloc(c, sizeof(jv) * (size_t)cap) : NULL;
    return l;
}

void jlist_push(jctx *c, jlist *l, jv v) {
    if (++c->steps > c->max_steps) {
        jv_unref(c, v);
        jstep(c, 0);
    }
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 8;
        l->a = jrealloc(c, l->a, sizeof(jv) * (size_t)l->cap, sizeof(jv) * (size_t)cap);
        l->cap = cap;
    }
    l->a[l->n++] = v;
}

jv jv_list(jlist *l) { return jv_obj(JV_LIST, l); }

jdict *jdict_new(jctx *c, int kind) { return jobj_new(c, sizeof(jdict), kind, 0); }

static int64_t dict_find(jctx *c, jdict *d, jv k, uint64_t h) {
    if (!d->idx) {
        for (int64_t i = 0; i < d->n; i++)
            if (jv_eq(c, d->k[i], k)) return i;
        return -1;
    }
    for (uint64_t p = h & (uint64_t)(d->icap - 1);; p = (p + 1) & (uint64_t)(d->icap - 1)) {
        int32_t e = d->idx[p];
        if (e < 0) return -1;
        if (jv_eq(c, d->k[e], k)) return e;
    }
}

static void dict_reindex(jctx *c, jdict *d) {
    int64_t icap = 16;
    while (icap < 2 * d->cap) icap *= 2;
    jfree(c, d->idx, sizeof(int32_t) * (size_t)d->icap);
    d->idx = jalloc(c, sizeof(int32_t) * (size_t)icap);
    d->icap = icap;
    for (int64_t i = 0; i < icap; i++) d->idx[i] = -1;
    for (int64_t i = 0; i < d->n; i++) {
        uint64_t p = jv_hash(c, d->k[i]) & (uint64_t)(icap - 1);
        while (d->idx[p] >= 0) p = (p + 1) & (uint64_t)(icap - 1);
        d->idx[p] = (int32_t)i;
    }
}

void jdict_set(jctx *c, jdict *d, jv k, jv v) {
    jstep(c, 1);
    uint64_t h = jv_hash(c, k);   /* also rejects unhashable keys */
    int64_t i = dict_find(c, d, k, h);
    if (i >= 0) {
        jv_unref(c, k);
        jv_unref(c, d->v[i]);
        d->v[i] = v;
        return;
    }
    if (d->n >= INT32_MAX - 1) jfail(c, "dict too large");
    if (d->n == d->cap) {
        int64_t cap = d->cap ? 2 * d->cap : 8;
        d->k = jrealloc(c, d->k, sizeof(jv) * (size_t)d->cap, sizeof(jv) * (size_t)cap);
        d->v = jrealloc(c, d->v, sizeof(jv) * (size_t)d->cap, sizeof(jv) * (size_t)cap);
        d->cap = cap;
        if (cap > 8) dict_reindex(c, d);
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
    if (d->idx) {
        uint64_t p = h & (uint64_t)(d->icap - 1);
        while (d->idx[p] >= 0) p = (p + 1) & (uint64_t)(d->icap - 1);
        d->idx[p] = (int32_t)(d->n - 1);
    }
}

jv *jdict_get(jctx *c, jdict *d, jv k) {
    uint64_t h = (d->idx || k.t == JV_LIST || k.t == JV_DICT) ? jv_hash(c, k) : 0;   /* rejects unhashable keys */
    int64_t i = dict_find(c, d, k, h);
    return i >= 0 ? &d->v[i] : NULL;
}

jv *jdict_get_str(jdict *d, const char *k, size_t n) {
    for (int64_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && JS(d->k[i])->len == n && memcmp(JS(d->k[i])->s, k, n) == 0) return &d->v[i];
    return NULL;
}

/* ===== buffers ===== */

void jbuf_open(jctx *c, jbuf *b) {
    b->p = NULL;
    b->n = b->cap = 0;
    b->up = c->out;
    c->out = b;
}

/* the bytes of a buffer are registered scratch memory: an error unwinds through the C stack that
 * holds the jbuf itself, and the render's cleanup must still find them */
static void jbuf_grow(jctx *c, jbuf *b, size_t need) {
    if (need > c->max_out) jfail(c, "the template's output is too large (more than %zu bytes)", c->max_out);
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
    b->p = jtmp_realloc(c, b->p, cap);
    b->cap = cap;
}

void jbuf_put(jctx *c, jbuf *b, const char *s, size_t n) {
    if (!n) return;
    if (n >= 256) jstep(c, (int64_t)(n >> 8));
    if (b->n + n + 1 > b->cap) jbuf_grow(c, b, b->n + n + 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

void jbuf_putc(jctx *c, jbuf *b, char ch) { jbuf_put(c, b, &ch, 1); }

void jbuf_printf(jctx *c, jbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < sizeof(tmp)) { jbuf_put(c, b, tmp, (size_t)k); return; }
    char *big = jtmp(c, (size_t)k + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)k + 1, fmt, ap);
    va_end(ap);
    jbuf_put(c, b, big, (size_t)k);
    jtmp_free(c, big);
}

void jbuf_drop(jctx *c, jbuf *b) {
    if (c->out == b) c->out = b->up;
    jtmp_free(c, b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

jv jbuf_close(jctx *c, jbuf *b) {
    jv r = jv_str(c, b->p ? b->p : "", b->n);
    jbuf_drop(c, b);
    return r;
}

/* ===== Python names ===== */

const char *jv_typename(jv v) {
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST:
        switch (JL(v)->h.sub) {
        case L_TUPLE: return "tuple";
        case L_GEN: return "generator";
        case L_KEYS: return "dict_keys";
        case L_VALUES: return "dict_values";
        case L_ITEMS: return "dict_items";
        case L_RANGE: return "range";
        case L_REVERSED: return "list_reverseiterator";
        default: return "list";
        }
    case JV_DICT: return "dict";
    case JV_NS: return "TemplateNamespace";
    case JV_MACRO: return "Macro";
    case JV_LOOP: return "LoopContext";
    default: return "builtin_function_or_method";
    }
}

const char *jv_objtype(jv v) {
    switch (v.t) {
    case JV_NONE: return "None";
    case JV_NS: return "transformers.utils.chat_template_utils.TemplateNamespace object";
    case JV_MACRO: return "jinja2.runtime.Macro object";
    case JV_LOOP: return "jinja2.runtime.LoopContext object";
    case JV_UNDEF: return "jinja2.runtime.Undefined object";
    case JV_BOOL: return "bool object";
    case JV_INT: return "int object";
    case JV_FLOAT: return "float object";
    case JV_STR: return "str object";
    case JV_DICT: return "dict object";
    case JV_LIST:
        switch (JL(v)->h.sub) {
        case L_TUPLE: return "tuple object";
        case L_GEN: return "generator object";
        case L_KEYS: return "dict_keys object";
        case L_VALUES: return "dict_values object";
        case L_ITEMS: return "dict_items object";
        case L_RANGE: return "range object";
        case L_REVERSED: return "list_reverseiterator object";
        default: return "list object";
        }
    default: return "builtin_function_or_method object";
    }
}

/* ===== undefined ===== */

jv jv_undef_msg(jctx *c, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    jv u = jv_undef();
    u.u.o = &jstr_new(c, msg, strlen(msg))->h;
    return u;
}

jv jv_undef_attr(jctx *c, jv obj, jv name) {
    jbuf b;
    jbuf_open(c, &b);
    if (name.t == JV_STR) {
        jbuf_putc(c, &b, '\'');
        jbuf_put(c, &b, jv_objtype(obj), strlen(jv_objtype(obj)));
        jbuf_put(c, &b, "' has no attribute ", 19);
    } else {
        jbuf_put(c, &b, jv_objtype(obj), strlen(jv_objtype(obj)));
        jbuf_put(c, &b, " has no element ", 16);
    }
    jv_write_repr(c, &b, name, 0);
    jv s = jbuf_close(c, &b);
    jv u = jv_undef();
    u.u.o = s.u.o;
    return u;
}

_Noreturn void jundefined_fail(jctx *c, jv u) {
    if (u.u.o) jfail(c, "%s", JS(u)->s);
    jfail(c, "undefined value");
}

/* ===== str() / repr() ===== */

void jfloat_repr(double f, char out[32]) {
    if (isnan(f)) { strcpy(out, "nan"); return; }
    if (isinf(f)) { strcpy(out, f < 0 ? "-inf" : "inf"); return; }
    if (f == 0) { strcpy(out, signbit(f) ? "-0.0" : "0.0"); return; }
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    /* e = [-]d[.ddd]e[+-]XX */
    char digits[24];
    int nd = 0, neg = 0;
    const char *p = e;
    if (*p == '-') { neg = 1; p++; }
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int decpt = exp10 + 1;
    char *o = out;
    if (neg) *o++ = '-';
    if (decpt <= -4 || decpt > 16) {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        sprintf(o, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        return;
    }
    if (decpt <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -decpt; i++) *o++ = '0';
        memcpy(o, digits, (size_t)nd);
        o += nd;
    } else if (decpt >= nd) {
        memcpy(o, digits, (size_t)nd);
        o += nd;
        for (int i = nd; i < decpt; i++) *o++ = '0';
        *o++ = '.';
        *o++ = '0';
    } else {
        memcpy(o, digits, (size_t)decpt);
        o += decpt;
        *o++ = '.';
        memcpy(o, digits + decpt, (size_t)(nd - decpt));
        o += nd - decpt;
    }
    *o = 0;
}

#define MAX_REPR_DEPTH 500

/* escaping writers copy runs of plain bytes: flush the run before position st, then the escape */
static void put_escape(jctx *c, jbuf *b, const char *s, size_t *run, size_t st, size_t next, const char *esc) {
    jbuf_put(c, b, s + *run, st - *run);
    jbuf_put(c, b, esc, strlen(esc));
    *run = next;
}

static void write_str_repr(jctx *c, jbuf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    jbuf_putc(c, b, q);
    size_t run = 0;   /* start of a run of bytes copied as they are */
    for (size_t i = 0; i < n;) {
        size_t st = i;
        int cp = utf8_dec(s, n, &i);
        const char *esc = NULL;
        char tmp[12];
        if (cp == q || cp == '\\') { tmp[0] = '\\'; tmp[1] = (char)cp; tmp[2] = 0; esc = tmp; }
        else if (cp == '\t') esc = "\\t";
        else if (cp == '\n') esc = "\\n";
        else if (cp == '\r') esc = "\\r";
        else if (cp < 0x20 || cp == 0x7f) { snprintf(tmp, sizeof(tmp), "\\x%02x", cp); esc = tmp; }
        else if (cp >= 0x80 && !uni_isprintable(cp)) {
            snprintf(tmp, sizeof(tmp), cp <= 0xff ? "\\x%02x" : cp <= 0xffff ? "\\u%04x" : "\\U%08x", cp);
            esc = tmp;
        }
        if (esc) put_escape(c, b, s, &run, st, i, esc);
    }
    jbuf_put(c, b, s + run, n - run);
    jbuf_putc(c, b, q);
}

static void write_seq(jctx *c, jbuf *b, jv *a, int64_t n, int depth) {
    for (int64_t i = 0; i < n; i++) {
        if (i) jbuf_put(c, b, ", ", 2);
        jv_write_repr(c, b, a[i], depth + 1);
    }
}

static void write_dict_body(jctx *c, jbuf *b, jdict *d, int depth) {
    jbuf_putc(c, b, '{');
    for (int64_t i = 0; i < d->n; i++) {
        if (i) jbuf_put(c, b, ", ", 2);
        jv_write_repr(c, b, d->k[i], depth + 1);
        jbuf_put(c, b, ": ", 2);
        jv_write_repr(c, b, d->v[i], depth + 1);
    }
    jbuf_putc(c, b, '}');
}

void jv_write_repr(jctx *c, jbuf *b, jv v, int depth) {
    if (depth > MAX_REPR_DEPTH) jfail(c, "maximum recursion depth exceeded while getting the repr of an object");
    char tmp[40];
    switch (v.t) {
    case JV_UNDEF: jbuf_put(c, b, "Undefined", 9); return;
    case JV_NONE: jbuf_put(c, b, "None", 4); return;
    case JV_BOOL: jbuf_put(c, b, v.u.i ? "True" : "False", v.u.i ? 4 : 5); return;
    case JV_INT: jbuf_printf(c, b, "%lld", (long long)v.u.i); return;
    case JV_FLOAT: jfloat_repr(v.u.f, tmp); jbuf_put(c, b, tmp, strlen(tmp)); return;
    case JV_STR: write_str_repr(c, b, JS(v)->s, JS(v)->len); return;
    case JV_LIST: {
        jlist *l = JL(v);
        switch (l->h.sub) {
        case L_TUPLE:
            jbuf_putc(c, b, '(');
            write_seq(c, b, l->a, l->n, depth);
            if (l->n == 1) jbuf_putc(c, b, ',');
            jbuf_putc(c, b, ')');
            return;
        case L_RANGE:
            if (l->r_step == 1) jbuf_printf(c, b, "range(%lld, %lld)", (long long)l->r_start, (long long)l->r_stop);
            else jbuf_printf(c, b, "range(%lld, %lld, %lld)", (long long)l->r_start, (long long)l->r_stop, (long long)l->r_step);
            return;
        case L_KEYS:
        case L_VALUES:
        case L_ITEMS: {
            const char *name = jv_typename(v);
            jbuf_put(c, b, name, strlen(name));
            jbuf_put(c, b, "([", 2);
            write_seq(c, b, l->a, l->n, depth);
            jbuf_put(c, b, "])", 2);
            return;
        }
        case L_GEN:
            jbuf_printf(c, b, "<generator object %s at 0x%llx>", l->gen_name ? l->gen_name : "<genexpr>", (unsigned long long)(uintptr_t)l);
            return;
        case L_REVERSED:
            jbuf_printf(c, b, "<list_reverseiterator object at 0x%llx>", (unsigned long long)(uintptr_t)l);
            return;
        default:
            jbuf_putc(c, b, '[');
            write_seq(c, b, l->a, l->n, depth);
            jbuf_putc(c, b, ']');
            return;
        }
    }
    case JV_DICT: write_dict_body(c, b, JD(v), depth); return;
    case JV_NS:
        jbuf_put(c, b, "<Namespace ", 11);
        write_dict_body(c, b, JD(v), depth);
        jbuf_putc(c, b, '>');
        return;
    case JV_MACRO: {
        jmacro *m = (jmacro *)v.u.o;
        if (m->node->kind == S_MACRO) {
            jbuf_put(c, b, "<Macro ", 7);
            write_str_repr(c, b, m->node->name->s, m->node->name->len);
            jbuf_putc(c, b, '>');
        } else {
            jbuf_put(c, b, "<Macro 'caller'>", 16);
        }
        return;
    }
    case JV_LOOP: {
        jloop *l = (jloop *)v.u.o;
        jloop_fill(c, l, INT64_MAX);
        jbuf_printf(c, b, "<LoopContext %lld/%lld>", (long long)(l->i + 1), (long long)l->items->n);
        return;
    }
    default: {
        jfunc *f = (jfunc *)v.u.o;
        if (f->self.t == JV_NONE) jbuf_printf(c, b, "<built-in function %s>", jfunc_name(f->id));
        else jbuf_printf(c, b, "<built-in method %s of %s at 0x%llx>", jfunc_name(f->id), jv_objtype(f->self), (unsigned long long)(uintptr_t)f->self.u.o);
        return;
    }
    }
}

void jv_write_str(jctx *c, jbuf *b, jv v) {
    if (v.t == JV_STR) jbuf_put(c, b, JS(v)->s, JS(v)->len);
    else if (v.t == JV_UNDEF) return;
    else jv_write_repr(c, b, v, 0);
}

jv jv_to_str(jctx *c, jv v) {
    if (v.t == JV_STR) return jv_ref(v);
    jbuf b;
    jbuf_open(c, &b);
    jv_write_str(c, &b, v);
    return jbuf_close(c, &b);
}

/* ===== truthiness, equality, ordering ===== */

int jv_truthy(jctx *c, jv v) {
    (void)c;
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return 0;
    case JV_BOOL: case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0;
    case JV_STR: return JS(v)->len > 0;
    case JV_LIST: return (JL(v)->h.sub == L_GEN || JL(v)->h.sub == L_REVERSED) ? 1 : JL(v)->n > 0;
    case JV_DICT: return JD(v)->n > 0;
    default: return 1;
    }
}

static int is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }

/* exact comparison of an int64 and a double: -1, 0, 1, or 2 when the double is NaN */
static int cmp_int_float(int64_t i, double f) {
    if (isnan(f)) return 2;
    if (f >= 9223372036854775808.0) return -1;
    if (f < -9223372036854775808.0) return 1;
    double fl = floor(f);
    int64_t fi = (int64_t)fl;
    if (i < fi) return -1;
    if (i > fi) return 1;
    return f > fl ? -1 : 0;
}

/* numbers: -1, 0, 1, or 2 (unordered: NaN) */
static int num_cmp(jv a, jv b) {
    if (a.t != JV_FLOAT && b.t != JV_FLOAT) return a.u.i < b.u.i ? -1 : a.u.i > b.u.i;
    if (a.t == JV_FLOAT && b.t == JV_FLOAT) {
        if (isnan(a.u.f) || isnan(b.u.f)) return 2;
        return a.u.f < b.u.f ? -1 : a.u.f > b.u.f;
    }
    if (a.t == JV_FLOAT) {
        int r = cmp_int_float(b.u.i, a.u.f);
        return r == 2 ? 2 : -r;
    }
    return cmp_int_float(a.u.i, b.u.f);
}

static int seq_kind(jv v) {
    if (v.t != JV_LIST) return -1;
    int s = JL(v)->h.sub;
    return (s == L_LIST || s == L_TUPLE || s == L_RANGE) ? s : -1;
}

int jv_eq(jctx *c, jv a, jv b) {
    if (is_num(a) && is_num(b)) return num_cmp(a, b) == 0;
    if (a.t != b.t) return 0;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return 1;
    case JV_STR: return jstr_eq(JS(a), JS(b));
    case JV_LIST: {
        if (a.u.o == b.u.o) return 1;
        int ka = seq_kind(a), kb = seq_kind(b);
        if (ka < 0 || ka != kb) {
            int sa = JL(a)->h.sub, sb = JL(b)->h.sub;
            if (sa == sb && (sa == L_KEYS || sa == L_ITEMS)) {   /* set-like views */
                if (JL(a)->n != JL(b)->n) return 0;
                for (int64_t i = 0; i < JL(a)->n; i++)
                    if (!jv_contains(c, b, JL(a)->a[i])) return 0;
                return 1;
            }
            return 0;
        }
        jlist *x = JL(a), *y = JL(b);
        if (x->n != y->n) return 0;
        for (int64_t i = 0; i < x->n; i++)
            if (!jv_eq(c, x->a[i], y->a[i])) return 0;
        return 1;
    }
    case JV_DICT: {
        jdict *x = JD(a), *y = JD(b);
        if (x->n != y->n) return 0;
        for (int64_t i = 0; i < x->n; i++) {
            jv *o = jdict_get(c, y, x->k[i]);
            if (!o || !jv_eq(c, x->v[i], *o)) return 0;
        }
        return 1;
    }
    case JV_FUNC: {
        jfunc *x = (jfunc *)a.u.o, *y = (jfunc *)b.u.o;
        return x == y || (x->id == y->id && x->self.t == y->self.t && (!jv_heap(x->self) || x->self.u.o == y->self.u.o));
    }
    default: return a.u.o == b.u.o;
    }
}

static const char *cmp_sym(int op) {
    switch (op) {
    case CMP_LT: return "<";
    case CMP_LE: return "<=";
    case CMP_GT: return ">";
    default: return ">=";
    }
}

static int apply_ord(int r, int op) {
    if (r == 2) return 0;
    switch (op) {
    case CMP_LT: return r < 0;
    case CMP_LE: return r <= 0;
    case CMP_GT: return r > 0;
    default: return r >= 0;
    }
}

/* a < b (and <=, >, >=) with Python's rules */
int jv_cmp(jctx *c, jv a, jv b, const char *opname) {
    int op = !strcmp(opname, "<") ? CMP_LT : !strcmp(opname, "<=") ? CMP_LE : !strcmp(opname, ">") ? CMP_GT : CMP_GE;
    if (a.t == JV_UNDEF) jundefined_fail(c, a);
    if (b.t == JV_UNDEF) jundefined_fail(c, b);
    if (is_num(a) && is_num(b)) return apply_ord(num_cmp(a, b), op);
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = JS(a)->len < JS(b)->len ? JS(a)->len : JS(b)->len;
        int r = memcmp(JS(a)->s, JS(b)->s, n);
        if (!r) r = JS(a)->len < JS(b)->len ? -1 : JS(a)->len > JS(b)->len;
        return apply_ord(r < 0 ? -1 : r > 0, op);
    }
    int ka = seq_kind(a), kb = seq_kind(b);
    if (ka >= 0 && ka == kb && ka != L_RANGE) {
        jlist *x = JL(a), *y = JL(b);
        int64_t i = 0;
        while (i < x->n && i < y->n && jv_eq(c, x->a[i], y->a[i])) i++;
        if (i < x->n && i < y->n) return jv_cmp(c, x->a[i], y->a[i], opname);
        int r = x->n < y->n ? -1 : x->n > y->n;
        return apply_ord(r, op);
    }
    jfail(c, "'%s' not supported between instances of '%s' and '%s'", cmp_sym(op), jv_typename(a), jv_typename(b));
}

uint64_t jv_hash(jctx *c, jv v) {
    switch (v.t) {
    case JV_UNDEF: return 0x5bd1e995u;
    case JV_NONE: return 0x9e3779b97f4a7c15ull;
    case JV_BOOL:
    case JV_INT: return (uint64_t)v.u.i * 0x9e3779b97f4a7c15ull;
    case JV_FLOAT: {
        double f = v.u.f;
        if (f == floor(f) && f >= -9.2e18 && f <= 9.2e18) return (uint64_t)(int64_t)f * 0x9e3779b97f4a7c15ull;
        uint64_t bits;
        memcpy(&bits, &f, sizeof(bits));
        return bits * 0xff51afd7ed558ccdull;
    }
    case JV_STR: {
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < JS(v)->len; i++) h = (h ^ (unsigned char)JS(v)->s[i]) * 1099511628211ull;
        return h;
    }
    case JV_LIST:
        if (JL(v)->h.sub == L_TUPLE) {
            uint64_t h = 0x345678;
            for (int64_t i = 0; i < JL(v)->n; i++) h = (h ^ jv_hash(c, JL(v)->a[i])) * 1000003;
            return h;
        }
        if (JL(v)->h.sub == L_LIST || JL(v)->h.sub == L_KEYS || JL(v)->h.sub == L_VALUES || JL(v)->h.sub == L_ITEMS)
            jfail(c, "unhashable type: '%s'", jv_typename(v));
        return (uint64_t)(uintptr_t)v.u.o;
    case JV_DICT: jfail(c, "unhashable type: 'dict'");
    default: return (uint64_t)(uintptr_t)v.u.o;
    }
}

static int str_find(const jstr *hay, const jstr *needle) {
    if (!needle->len) return 1;
    if (needle->len > hay->len) return 0;
    for (size_t i = 0; i + needle->len <= hay->len; i++)
        if (memcmp(hay->s + i, needle->s, needle->len) == 0) return 1;
    return 0;
}

int jv_contains(jctx *c, jv container, jv item) {
    switch (container.t) {
    case JV_STR:
        if (item.t == JV_UNDEF) jundefined_fail(c, item);
        if (item.t != JV_STR) jfail(c, "'in <string>' requires string as left operand, not %s", jv_typename(item));
        return str_find(JS(container), JS(item));
    case JV_LIST: {
        jlist *l = JL(container);
        int64_t from = (l->h.sub == L_GEN || l->h.sub == L_REVERSED) ? l->pos : 0;
        for (int64_t i = from; i < l->n; i++)
            if (jv_eq(c, l->a[i], item)) return 1;
        return 0;
    }
    case JV_DICT: return jdict_get(c, JD(container), item) != NULL;
    case JV_UNDEF: return 0;
    default: jfail(c, "argument of type '%s' is not iterable", jv_typename(container));
    }
}

int64_t jv_len(jctx *c, jv v) {
    switch (v.t) {
    case JV_STR: return jstr_ncp(JS(v));
    case JV_LIST:
        if (JL(v)->h.sub == L_GEN || JL(v)->h.sub == L_REVERSED) break;
        return JL(v)->n;
    case JV_DICT: return JD(v)->n;
    case JV_UNDEF: return 0;
    case JV_LOOP:
        jloop_fill(c, (jloop *)v.u.o, INT64_MAX);
        return ((jloop *)v.u.o)->items->n;
    default: break;
    }
    jfail(c, "object of type '%s' has no len()", jv_typename(v));
}

jlist *jv_iter(jctx *c, jv v) {
    switch (v.t) {
    case JV_LIST: {
        jlist *l = JL(v);
        if (l->h.sub != L_GEN && l->h.sub != L_REVERSED) {
            l->h.rc >= 0 ? l->h.rc++ : 0;
            return l;
        }
        jlist *r = jlist_new(c, l->n - l->pos, L_LIST);
        for (int64_t i = l->pos; i < l->n; i++) jlist_push(c, r, jv_ref(l->a[i]));
        l->pos = l->n;   /* an iterator is consumed */
        return r;
    }
    case JV_DICT: {
        jdict *d = JD(v);
        jlist *r = jlist_new(c, d->n, L_LIST);
        for (int64_t i = 0; i < d->n; i++) jlist_push(c, r, jv_ref(d->k[i]));
        return r;
    }
    case JV_STR: {
        jstr *s = JS(v);
        jlist *r = jlist_new(c, jstr_ncp(s), L_LIST);
        for (size_t i = 0; i < s->len;) {
            size_t st = i;
            utf8_dec(s->s, s->len, &i);
            jlist_push(c, r, jv_str(c, s->s + st, i - st));
        }
        return r;
    }
    case JV_UNDEF: return jlist_new(c, 0, L_LIST);
    default: jfail(c, "'%s' object is not iterable", jv_typename(v));
    }
}

/* ===== JSON ===== */

static void json_str(jctx *c, jbuf *b, const char *s, size_t n, int ascii) {
    jbuf_putc(c, b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        size_t st = i;
        int cp = utf8_dec(s, n, &i);
        char tmp[16];
        const char *esc = NULL;
        switch (cp) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (cp < 0x20 || (ascii && cp >= 0x7f)) {
                if (cp >= 0x10000) {
                    int v = cp - 0x10000;
                    snprintf(tmp, sizeof(tmp), "\\u%04x\\u%04x", 0xD800 | (v >> 10), 0xDC00 | (v & 0x3FF));
                } else {
                    snprintf(tmp, sizeof(tmp), "\\u%04x", cp);
                }
                esc = tmp;
            }
        }
        if (esc) put_escape(c, b, s, &run, st, i, esc);
    }
    jbuf_put(c, b, s + run, n - run);
    jbuf_putc(c, b, '"');
}

static void json_float(jctx *c, jbuf *b, double f) {
    if (isnan(f)) jbuf_put(c, b, "NaN", 3);
    else if (isinf(f)) jbuf_put(c, b, f < 0 ? "-Infinity" : "Infinity", f < 0 ? 9 : 8);
    else {
        char tmp[32];
        jfloat_repr(f, tmp);
        jbuf_put(c, b, tmp, strlen(tmp));
    }
}

static void json_newline(jctx *c, jbuf *b, const char *indent, int nindent, int level) {
    jbuf_putc(c, b, '\n');
    for (int i = 0; i < level; i++) jbuf_put(c, b, indent, (size_t)nindent);
}

/* the order of a dict's items under sort_keys: an insertion sort by key (Python's sorted is stable) */
static void sorted_order(jctx *c, jdict *d, int64_t *ord) {
    for (int64_t i = 0; i < d->n; i++) {
        int64_t j = i;
        while (j > 0 && jv_cmp(c, d->k[i], d->k[ord[j - 1]], "<")) {
            ord[j] = ord[j - 1];
            j--;
        }
        ord[j] = i;
    }
}

void jv_write_json(jctx *c, jbuf *b, jv v, const char *indent, int nindent, const char *isep, const char *ksep, int sort_keys,
                   int ascii, int level) {
    if (level > MAX_REPR_DEPTH) jfail(c, "maximum recursion depth exceeded while encoding a JSON object");
    switch (v.t) {
    case JV_NONE: jbuf_put(c, b, "null", 4); return;
    case JV_BOOL: jbuf_put(c, b, v.u.i ? "true" : "false", v.u.i ? 4 : 5); return;
    case JV_INT: jbuf_printf(c, b, "%lld", (long long)v.u.i); return;
    case JV_FLOAT: json_float(c, b, v.u.f); return;
    case JV_STR: json_str(c, b, JS(v)->s, JS(v)->len, ascii); return;
    case JV_LIST: {
        jlist *l = JL(v);
        if (l->h.sub != L_LIST && l->h.sub != L_TUPLE) break;
        if (!l->n) { jbuf_put(c, b, "[]", 2); return; }
        jbuf_putc(c, b, '[');
        for (int64_t i = 0; i < l->n; i++) {
            if (i) jbuf_put(c, b, isep, strlen(isep));
            if (indent) json_newline(c, b, indent, nindent, level + 1);
            jv_write_json(c, b, l->a[i], indent, nindent, isep, ksep, sort_keys, ascii, level + 1);
        }
        if (indent) json_newline(c, b, indent, nindent, level);
        jbuf_putc(c, b, ']');
        return;
    }
    case JV_DICT: {
        jdict *d = JD(v);
        if (!d->n) { jbuf_put(c, b, "{}", 2); return; }
        int64_t *ord = jtmp(c, sizeof(int64_t) * (size_t)d->n);
        for (int64_t i = 0; i < d->n; i++) ord[i] = i;
        if (sort_keys) sorted_order(c, d, ord);
        jbuf_putc(c, b, '{');
        for (int64_t j = 0; j < d->n; j++) {
            int64_t i = ord[j];
            if (j) jbuf_put(c, b, isep, strlen(isep));
            if (indent) json_newline(c, b, indent, nindent, level + 1);
            jv k = d->k[i];
            switch (k.t) {
            case JV_STR: json_str(c, b, JS(k)->s, JS(k)->len, ascii); break;
            case JV_INT: jbuf_printf(c, b, "\"%lld\"", (long long)k.u.i); break;
            case JV_BOOL: jbuf_put(c, b, k.u.i ? "\"true\"" : "\"false\"", k.u.i ? 6 : 7); break;
            case JV_NONE: jbuf_put(c, b, "\"null\"", 6); break;
            case JV_FLOAT: jbuf_putc(c, b, '"'); json_float(c, b, k.u.f); jbuf_putc(c, b, '"'); break;
            default: jfail(c, "keys must be str, int, float, bool or None, not %s", jv_typename(k));
            }
            jbuf_put(c, b, ksep, strlen(ksep));
            jv_write_json(c, b, d->v[i], indent, nindent, isep, ksep, sort_keys, ascii, level + 1);
        }
        jtmp_free(c, ord);
        if (indent) json_newline(c, b, indent, nindent, level);
        jbuf_putc(c, b, '}');
        return;
    }
    default: break;
    }
    jfail(c, "Object of type %s is not JSON serializable", jv_typename(v));
}

jv jv_from_json(jctx *c, const json_t *j, int depth) {
    if (depth > 1000) jfail(c, "the template variables are nested too deeply");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jdict *d = jdict_new(c, JV_DICT);
        jv dv = jv_obj(JV_DICT, d);
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)j, k, x) {
            jv kv = jv_cstr(c, k);
            jdict_set(c, d, kv, jv_from_json(c, x, depth + 1));
        }
        return dv;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        jlist *l = jlist_new(c, (int64_t)n, L_LIST);
        for (size_t i = 0; i < n; i++) jlist_push(c, l, jv_from_json(c, json_array_get(j, i), depth + 1));
        return jv_list(l);
    }
    case JSON_STRING: return jv_str(c, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return jv_int((int64_t)json_integer_value(j));
    case JSON_REAL: return jv_float(json_real_value(j));
    case JSON_TRUE: return jv_bool(1);
    case JSON_FALSE: return jv_bool(0);
    default: return jv_none();
    }
}
