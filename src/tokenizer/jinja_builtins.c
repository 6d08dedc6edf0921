/*
 * jinja_builtins.c - what a chat template can call: jinja2's filters and tests, the globals of
 * transformers' environment (range, dict, namespace, raise_exception, strftime_now, cycler, joiner),
 * and the methods of str, dict, list and the loop object.
 *
 * Each follows its Python definition (jinja2/filters.py, tests.py, CPython's str methods), including
 * the details templates trip over: `default` only replaces Undefined unless its boolean argument is
 * true; dictsort / sort / unique / min / max compare strings case-insensitively by default; `map`,
 * `select`, `reject`, `unique`, `items`, `batch`, `slice` give generators (always true, no len(),
 * consumed by one iteration) and `reverse` a reverse iterator; `round` keeps ints and rounds floats
 * half-to-even on their exact value; `int` falls back to int(float(x)); `tojson` is transformers'
 * json.dumps(ensure_ascii=False, ...), not jinja2's HTML-safe one.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tokenizer/jinja_impl.h"

/* ===== names ===== */

enum {
    F_ABS, F_ATTR, F_BATCH, F_CAPITALIZE, F_CENTER, F_COUNT, F_D, F_DEFAULT, F_DICTSORT, F_E, F_ESCAPE, F_FILESIZEFORMAT,
    F_FIRST, F_FLOAT, F_FORCEESCAPE, F_FORMAT, F_GROUPBY, F_INDENT, F_INT, F_JOIN, F_LAST, F_LENGTH, F_LIST, F_LOWER,
    F_ITEMS, F_MAP, F_MIN, F_MAX, F_PPRINT, F_RANDOM, F_REJECT, F_REJECTATTR, F_REPLACE, F_REVERSE, F_ROUND, F_SAFE,
    F_SELECT, F_SELECTATTR, F_SLICE, F_SORT, F_STRING, F_STRIPTAGS, F_SUM, F_TITLE, F_TRIM, F_TRUNCATE, F_UNIQUE,
    F_UPPER, F_URLENCODE, F_URLIZE, F_WORDCOUNT, F_WORDWRAP, F_XMLATTR, F_TOJSON, F_NFILTERS
};

static const char *const filter_names[F_NFILTERS] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "filesizeformat",
    "first", "float", "forceescape", "format", "groupby", "indent", "int", "join", "last", "length", "list", "lower",
    "items", "map", "min", "max", "pprint", "random", "reject", "rejectattr", "replace", "reverse", "round", "safe",
    "select", "selectattr", "slice", "sort", "string", "striptags", "sum", "title", "trim", "truncate", "unique",
    "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", "tojson",
};

enum {
    T_ODD, T_EVEN, T_DIVISIBLEBY, T_DEFINED, T_UNDEFINED, T_FILTER, T_TEST, T_NONE, T_BOOLEAN, T_FALSE, T_TRUE,
    T_INTEGER, T_FLOAT, T_LOWER, T_UPPER, T_STRING, T_MAPPING, T_NUMBER, T_SEQUENCE, T_ITERABLE, T_CALLABLE,
    T_SAMEAS, T_ESCAPED, T_IN, T_EQ2, T_EQ, T_EQUALTO, T_NE2, T_NE, T_GT2, T_GT, T_GREATERTHAN, T_GE, T_GE2, T_LT2,
    T_LT, T_LESSTHAN, T_LE2, T_LE, T_NTESTS
};

static const char *const test_names[T_NTESTS] = {
    "odd", "even", "divisibleby", "defined", "undefined", "filter", "test", "none", "boolean", "false", "true",
    "integer", "float", "lower", "upper", "string", "mapping", "number", "sequence", "iterable", "callable",
    "sameas", "escaped", "in", "==", "eq", "equalto", "!=", "ne", ">", "gt", "greaterthan", "ge", ">=", "<",
    "lt", "lessthan", "<=", "le",
};

enum {
    /* globals */
    G_RANGE, G_DICT, G_NAMESPACE, G_RAISE, G_STRFTIME, G_LIPSUM, G_CYCLER, G_JOINER, G_DICT_FROMKEYS,
    /* instances */
    I_JOINER, I_CYCLER, M_CYCLER_NEXT, M_CYCLER_RESET,
    /* str */
    M_STRIP, M_LSTRIP, M_RSTRIP, M_SPLIT, M_RSPLIT, M_SPLITLINES, M_STARTSWITH, M_ENDSWITH, M_UPPER, M_LOWER, M_TITLE,
    M_CAPITALIZE, M_SWAPCASE, M_CASEFOLD, M_REPLACE, M_FIND, M_RFIND, M_INDEX, M_RINDEX, M_COUNT, M_JOIN,
    M_REMOVEPREFIX, M_REMOVESUFFIX, M_ISDIGIT, M_ISALPHA, M_ISALNUM, M_ISSPACE, M_ISUPPER, M_ISLOWER, M_ISNUMERIC,
    M_ISDECIMAL, M_ISTITLE, M_ZFILL, M_LJUST, M_RJUST, M_CENTER, M_PARTITION, M_RPARTITION, M_FORMAT,
    /* dict */
    M_GET, M_ITEMS, M_KEYS, M_VALUES, M_DCOPY,
    /* list / tuple */
    M_LINDEX, M_LCOUNT, M_LCOPY,
    /* loop */
    M_CYCLE, M_CHANGED,
    F_NFUNCS
};

static const char *const func_names[F_NFUNCS] = {
    "range", "dict", "namespace", "raise_exception", "strftime_now", "lipsum", "cycler", "joiner", "fromkeys",
    "joiner", "cycler", "next", "reset",
    "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "upper", "lower", "title",
    "capitalize", "swapcase", "casefold", "replace", "find", "rfind", "index", "rindex", "count", "join",
    "removeprefix", "removesuffix", "isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower", "isnumeric",
    "isdecimal", "istitle", "zfill", "ljust", "rjust", "center", "partition", "rpartition", "format",
    "get", "items", "keys", "values", "copy",
    "index", "count", "copy",
    "cycle", "changed",
};

const char *jfunc_name(int id) { return id >= 0 && id < F_NFUNCS ? func_names[id] : "?"; }

int jfilter_id(const char *name) {
    for (int i = 0; i < F_NFILTERS; i++)
        if (!strcmp(filter_names[i], name)) return i;
    return -1;
}

int jtest_id(const char *name) {
    for (int i = 0; i < T_NTESTS; i++)
        if (!strcmp(test_names[i], name)) return i;
    return -1;
}

/* ===== argument binding ===== */

#define MISSING ((jv){JV_UNDEF, 2, {.o = NULL}})
static int missing(jv v) { return v.t == JV_UNDEF && v.flag == 2; }

/* bind a builtin's arguments (positional or keyword, Python style); absent ones are MISSING */
static void bind(jctx *c, const char *fname, jargs *a, const char *const *names, int n, jv *out) {
    if (a->npos > n) jfail(c, "%s() takes at most %d argument%s (%d given)", fname, n, n == 1 ? "" : "s", a->npos);
    for (int i = 0; i < n; i++) out[i] = i < a->npos ? a->pos[i] : MISSING;
    for (int k = 0; k < a->nkw; k++) {
        int i = 0;
        while (i < n && strcmp(names[i], a->knames[k]->s)) i++;
        if (i == n) jfail(c, "%s() got an unexpected keyword argument '%s'", fname, a->knames[k]->s);
        if (!missing(out[i])) jfail(c, "%s() got multiple values for argument '%s'", fname, names[i]);
        out[i] = a->kvals[k];
    }
}

static void no_args(jctx *c, const char *fname, jargs *a) { bind(c, fname, a, NULL, 0, NULL); }

static int64_t as_int(jctx *c, jv v) {
    if (v.t == JV_INT || v.t == JV_BOOL) return v.u.i;
    if (v.t == JV_UNDEF) jundefined_fail(c, v);
    jfail(c, "'%s' object cannot be interpreted as an integer", jv_typename(v));
}

static int64_t opt_int(jctx *c, jv v, int64_t def) { return missing(v) || v.t == JV_NONE ? def : as_int(c, v); }
static int opt_bool(jctx *c, jv v, int def) { return missing(v) ? def : jv_truthy(c, v); }

static jstr *as_str(jctx *c, jv v, const char *what) {
    if (v.t == JV_STR) return JS(v);
    if (v.t == JV_UNDEF) jundefined_fail(c, v);
    jfail(c, "%s must be str, not %s", what, jv_typename(v));
}

static jv mk_func(jctx *c, int id, jv self) {
    jfunc *f = jobj_new(c, sizeof(jfunc), JV_FUNC, 0);
    f->id = id;
    f->self = jv_ref(self);
    return jv_obj(JV_FUNC, f);
}

static jv tuple2(jctx *c, jv a, jv b) {   /* takes both references */
    jlist *t = jlist_new(c, 2, L_TUPLE);
    jlist_push(c, t, a);
    jlist_push(c, t, b);
    return jv_list(t);
}

/* groupby's items are named tuples (grouper, list): a tuple marked by its gen_name */
static const char GROUP_TUPLE[] = "_GroupTuple";

/* ===== string helpers (code points over UTF-8) ===== */

typedef struct {
    int *cp;
    int64_t n;
} cps;

static cps to_cps(jctx *c, const char *s, size_t len) {
    cps r;
    r.cp = jtmp(c, sizeof(int) * (len + 1));
    r.n = 0;
    for (size_t i = 0; i < len;) r.cp[r.n++] = utf8_dec(s, len, &i);
    return r;
}

static void put_cp(jctx *c, jbuf *b, int cp) {
    char t[4];
    jbuf_put(c, b, t, (size_t)utf8_enc(t, cp));
}

static int in_set(int cp, const cps *set) {
    for (int64_t i = 0; i < set->n; i++)
        if (set->cp[i] == cp) return 1;
    return 0;
}

/* str.strip / lstrip / rstrip (chars NULL: whitespace) */
static jv str_strip(jctx *c, jstr *s, jstr *chars, int left, int right) {
    cps v = to_cps(c, s->s, s->len), set = {NULL, 0};
    if (chars) set = to_cps(c, chars->s, chars->len);
    int64_t a = 0, b = v.n;
    if (left)
        while (a < b && (chars ? in_set(v.cp[a], &set) : uni_isspace(v.cp[a]))) a++;
    if (right)
        while (b > a && (chars ? in_set(v.cp[b - 1], &set) : uni_isspace(v.cp[b - 1]))) b--;
    int64_t o1 = utf8_offset(s->s, s->len, a), o2 = utf8_offset(s->s, s->len, b);
    jtmp_free(c, v.cp);
    if (set.cp) jtmp_free(c, set.cp);
    return jv_str(c, s->s + o1, (size_t)(o2 - o1));
}

typedef enum { CASE_UPPER, CASE_LOWER, CASE_SWAP, CASE_CAPITALIZE, CASE_TITLE } casemode;

static void put_mapped(jctx *c, jbuf *b, int cp, int upper) {
    int m[3];
    int k = upper ? uni_upper(cp, m) : uni_lower(cp, m);
    for (int i = 0; i < k; i++) put_cp(c, b, m[i]);
}

static int is_cased(int cp) { return uni_iscased_upper(cp) || uni_iscased_lower(cp); }

static jv str_case(jctx *c, const char *s, size_t n, casemode mode) {
    jbuf b;
    jbuf_open(c, &b);
    int prev_cased = 0, first = 1;
    for (size_t i = 0; i < n;) {
        int cp = utf8_dec(s, n, &i);
        switch (mode) {
        case CASE_UPPER: put_mapped(c, &b, cp, 1); break;
        case CASE_LOWER: put_mapped(c, &b, cp, 0); break;
        case CASE_SWAP: put_mapped(c, &b, cp, uni_iscased_lower(cp)); break;
        case CASE_CAPITALIZE: put_mapped(c, &b, cp, first); break;
        case CASE_TITLE:
            if (uni_iscased_upper(cp)) put_mapped(c, &b, cp, !prev_cased);
            else if (uni_iscased_lower(cp)) put_mapped(c, &b, cp, !prev_cased);
            else put_cp(c, &b, cp);
            prev_cased = is_cased(cp);
            break;
        }
        first = 0;
    }
    return jbuf_close(c, &b);
}

/* jinja2's title filter: words split at runs of - whitespace ( { [ <; each word's first character
 * upper, the rest lower */
static jv jinja_title(jctx *c, const char *s, size_t n) {
    jbuf b;
    jbuf_open(c, &b);
    int word_start = 1;
    for (size_t i = 0; i < n;) {
        int cp = utf8_dec(s, n, &i);
        int sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || uni_isspace(cp);
        if (sep) {
            put_cp(c, &b, cp);
            word_start = 1;
        } else {
            put_mapped(c, &b, cp, word_start);
            word_start = 0;
        }
    }
    return jbuf_close(c, &b);
}

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (!nn) return h;
    if (nn > hn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == nd[0] && memcmp(h + i, nd, nn) == 0) return h + i;
    return NULL;
}

static const char *rfind_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn > hn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (memcmp(h + i, nd, nn) == 0) return h + i;
    return NULL;
}

static int64_t cp_index_of(const char *s, const char *p) {
    int64_t k = 0;
    for (const char *q = s; q < p; q++) k += ((unsigned char)*q & 0xC0) != 0x80;
    return k;
}

/* Python's str.replace */
static jv str_replace(jctx *c, jstr *s, jstr *old, jstr *nw, int64_t count) {
    jbuf b;
    jbuf_open(c, &b);
    if (!old->len) {
        int64_t done = 0;
        size_t i = 0;
        if (count != 0) { jbuf_put(c, &b, nw->s, nw->len); done++; }
        while (i < s->len) {
            size_t st = i;
            utf8_dec(s->s, s->len, &i);
            jbuf_put(c, &b, s->s + st, i - st);
            if (count < 0 || done < count) {
                jbuf_put(c, &b, nw->s, nw->len);
                done++;
            }
        }
        return jbuf_close(c, &b);
    }
    const char *p = s->s, *end = s->s + s->len;
    int64_t done = 0;
    while (count < 0 || done < count) {
        const char *q = find_bytes(p, (size_t)(end - p), old->s, old->len);
        if (!q) break;
        jbuf_put(c, &b, p, (size_t)(q - p));
        jbuf_put(c, &b, nw->s, nw->len);
        p = q + old->len;
        done++;
    }
    jbuf_put(c, &b, p, (size_t)(end - p));
    return jbuf_close(c, &b);
}

/* Python's str.split / rsplit */
static jv str_split(jctx *c, jstr *s, jstr *sep, int64_t maxsplit, int right) {
    jlist *l = jlist_new(c, 0, L_LIST);
    jv lv = jv_list(l);
    if (sep && !sep->len) jfail(c, "empty separator");
    if (!sep) {
        cps v = to_cps(c, s->s, s->len);
        int64_t *off = jtmp(c, sizeof(int64_t) * (size_t)(v.n + 1));
        size_t bi = 0;
        for (int64_t k = 0; k < v.n; k++) {
            off[k] = (int64_t)bi;
            utf8_dec(s->s, s->len, &bi);
        }
        off[v.n] = (int64_t)s->len;
        if (!right) {
            int64_t i = 0, splits = 0;
            for (;;) {
                while (i < v.n && uni_isspace(v.cp[i])) i++;
                if (i == v.n) break;
                if (maxsplit >= 0 && splits == maxsplit) {
                    jlist_push(c, l, jv_str(c, s->s + off[i], (size_t)(off[v.n] - off[i])));
                    break;
                }
                int64_t j = i;
                while (j < v.n && !uni_isspace(v.cp[j])) j++;
                jlist_push(c, l, jv_str(c, s->s + off[i], (size_t)(off[j] - off[i])));
                splits++;
                i = j;
            }
        } else {
            int64_t i = v.n, splits = 0;
            jlist *rev = jlist_new(c, 0, L_LIST);
            for (;;) {
                while (i > 0 && uni_isspace(v.cp[i - 1])) i--;
                if (i == 0) break;
                if (maxsplit >= 0 && splits == maxsplit) {
                    jlist_push(c, rev, jv_str(c, s->s, (size_t)off[i]));
                    break;
                }
                int64_t j = i;
                while (j > 0 && !uni_isspace(v.cp[j - 1])) j--;
                jlist_push(c, rev, jv_str(c, s->s + off[j], (size_t)(off[i] - off[j])));
                splits++;
                i = j;
            }
            for (int64_t k = rev->n; k-- > 0;) jlist_push(c, l, jv_ref(rev->a[k]));
            jobj_unref(c, &rev->h);
        }
        jtmp_free(c, off);
        jtmp_free(c, v.cp);
        return lv;
    }
    if (!right) {
        const char *p = s->s, *end = s->s + s->len;
        int64_t splits = 0;
        for (;;) {
            const char *q = (maxsplit >= 0 && splits >= maxsplit) ? NULL : find_bytes(p, (size_t)(end - p), sep->s, sep->len);
            if (!q) {
                jlist_push(c, l, jv_str(c, p, (size_t)(end - p)));
                break;
            }
            jlist_push(c, l, jv_str(c, p, (size_t)(q - p)));
            p = q + sep->len;
            splits++;
        }
        return lv;
    }
    jlist *rev = jlist_new(c, 0, L_LIST);
    const char *end = s->s + s->len;
    int64_t splits = 0;
    for (;;) {
        const char *q = (maxsplit >= 0 && splits >= maxsplit) ? NULL : rfind_bytes(s->s, (size_t)(end - s->s), sep->s, sep->len);
        if (!q) {
            jlist_push(c, rev, jv_str(c, s->s, (size_t)(end - s->s)));
            break;
        }
        jlist_push(c, rev, jv_str(c, q + sep->len, (size_t)(end - q - sep->len)));
        end = q;
        splits++;
    }
    for (int64_t k = rev->n; k-- > 0;) jlist_push(c, l, jv_ref(rev->a[k]));
    jobj_unref(c, &rev->h);
    return lv;
}

static int is_linebreak(int cp) {
    return cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || cp == 0x1c || cp == 0x1d || cp == 0x1e || cp == 0x85 ||
           cp == 0x2028 || cp == 0x2029;
}

static jv str_splitlines(jctx *c, const char *s, size_t n, int keepends) {
    jlist *l = jlist_new(c, 0, L_LIST);
    size_t start = 0, i = 0;
    while (i < n) {
        size_t st = i;
        int cp = utf8_dec(s, n, &i);
        if (!is_linebreak(cp)) continue;
        size_t eol = i;
        if (cp == '\r' && i < n && s[i] == '\n') eol = ++i;
        jlist_push(c, l, jv_str(c, s + start, (keepends ? eol : st) - start));
        start = i;
    }
    if (start < n) jlist_push(c, l, jv_str(c, s + start, n - start));
    return jv_list(l);
}

/* Python's str.center / ljust / rjust */
static jv str_pad(jctx *c, jstr *s, int64_t width, int fill, int mode /* 0 center, 1 ljust, 2 rjust */) {
    int64_t len = jstr_ncp(s);
    if (width <= len) return jv_ref(jv_obj(JV_STR, s));
    int64_t marg = width - len, left;
    if (mode == 0) left = marg / 2 + (marg & width & 1);
    else left = mode == 1 ? 0 : marg;
    if ((uint64_t)width > c->max_out) jfail(c, "the template's output is too large (more than %zu bytes)", c->max_out);
    jbuf b;
    jbuf_open(c, &b);
    for (int64_t i = 0; i < left; i++) put_cp(c, &b, fill);
    jbuf_put(c, &b, s->s, s->len);
    for (int64_t i = 0; i < marg - left; i++) put_cp(c, &b, fill);
    return jbuf_close(c, &b);
}

/* ===== printf-style formatting (str % args, the format filter) ===== */

jv jformat_percent(jctx *c, jstr *fmt, jv args) {
    jbuf b;
    jbuf_open(c, &b);
    jv *items = &args;
    int64_t nitems = 1, next = 0;
    int is_tuple = args.t == JV_LIST && JL(args)->h.sub == L_TUPLE;
    if (is_tuple) {
        items = JL(args)->a;
        nitems = JL(args)->n;
    }
    int used_dict = 0;
    const char *s = fmt->s, *end = s + fmt->len;
    while (s < end) {
        const char *p = memchr(s, '%', (size_t)(end - s));
        if (!p) { jbuf_put(c, &b, s, (size_t)(end - s)); break; }
        jbuf_put(c, &b, s, (size_t)(p - s));
        p++;
        if (p >= end) jfail(c, "incomplete format");
        jv arg = jv_none();
        int have_arg = 0;
        if (*p == '(') {
            const char *q = memchr(p, ')', (size_t)(end - p));
            if (!q) jfail(c, "incomplete format key");
            if (args.t != JV_DICT) jfail(c, "format requires a mapping");
            jv *v = jdict_get_str(JD(args), p + 1, (size_t)(q - p - 1));
            if (!v) jfail(c, "KeyError: '%.*s'", (int)(q - p - 1), p + 1);
            arg = *v;
            have_arg = 1;
            used_dict = 1;
            p = q + 1;
        }
        char flags[8];
        int nf = 0;
        while (p < end && strchr("-+ #0", *p) && nf < 6) flags[nf++] = *p++;
        flags[nf] = 0;
        int width = -1, prec = -1;
        if (p < end && *p == '*') {
            if (next >= nitems) jfail(c, "not enough arguments for format string");
            width = (int)as_int(c, items[next++]);
            p++;
        } else {
            while (p < end && *p >= '0' && *p <= '9') width = (width < 0 ? 0 : width * 10) + (*p++ - '0');
        }
        if (p < end && *p == '.') {
            p++;
            prec = 0;
            while (p < end && *p >= '0' && *p <= '9') prec = prec * 10 + (*p++ - '0');
        }
        while (p < end && (*p == 'l' || *p == 'h' || *p == 'L')) p++;
        if (p >= end) jfail(c, "incomplete format");
        char conv = *p++;
        if (conv == '%') { jbuf_putc(c, &b, '%'); s = p; continue; }
        if (width > 400 || prec > 200) jfail(c, "format width or precision too large (this interpreter allows 400 / 200)");
        if (!have_arg) {
            if (args.t == JV_DICT && !is_tuple) arg = args, used_dict = 1;
            else {
                if (next >= nitems) jfail(c, "not enough arguments for format string");
                arg = items[next++];
            }
        }
        char spec[64], out[512];
        jv text = jv_none();
        switch (conv) {
        case 's': case 'r': case 'a': {
            jbuf t;
            jbuf_open(c, &t);
            if (conv == 's') jv_write_str(c, &t, arg);
            else jv_write_repr(c, &t, arg, 0);
            text = jbuf_close(c, &t);
            if (prec >= 0 && jstr_ncp(JS(text)) > prec) {
                jv cut = jv_str(c, JS(text)->s, (size_t)utf8_offset(JS(text)->s, JS(text)->len, prec));
                jv_unref(c, text);
                text = cut;
            }
            int64_t len = jstr_ncp(JS(text));
            int left = strchr(flags, '-') != NULL;
            if (!left)
                for (int64_t i = len; i < width; i++) jbuf_putc(c, &b, ' ');
            jbuf_put(c, &b, JS(text)->s, JS(text)->len);
            if (left)
                for (int64_t i = len; i < width; i++) jbuf_putc(c, &b, ' ');
            jv_unref(c, text);
            break;
        }
        case 'd': case 'i': case 'u': case 'x': case 'X': case 'o': case 'c': {
            long long iv;
            if (arg.t == JV_INT || arg.t == JV_BOOL) iv = arg.u.i;
            else if (arg.t == JV_FLOAT && conv != 'c' && conv != 'x' && conv != 'X' && conv != 'o') {
                if (!isfinite(arg.u.f)) jfail(c, "cannot convert float to integer");
                iv = (long long)arg.u.f;
            } else {
                jfail(c, "%%%c format: %s is required, not %s", conv, conv == 'c' ? "an integer or a unicode character" : "a real number", jv_typename(arg));
            }
            if (conv == 'c') {
                put_cp(c, &b, (int)iv);
                break;
            }
            char cv = conv == 'i' || conv == 'u' ? 'd' : conv;
            if (prec >= 0 && width >= 0) snprintf(spec, sizeof(spec), "%%%s%d.%dll%c", flags, width, prec, cv);
            else if (width >= 0) snprintf(spec, sizeof(spec), "%%%s%dll%c", flags, width, cv);
            else if (prec >= 0) snprintf(spec, sizeof(spec), "%%%s.%dll%c", flags, prec, cv);
            else snprintf(spec, sizeof(spec), "%%%sll%c", flags, cv);
            if (cv == 'o' && strchr(flags, '#')) {
                /* Python writes 0o17, C 017 */
                int k = snprintf(out, sizeof(out), spec, iv);
                char *z = strchr(out, '0');
                if (k > 0 && z) {
                    jbuf_put(c, &b, out, (size_t)(z - out));
                    jbuf_put(c, &b, "0o", 2);
                    jbuf_put(c, &b, z + 1, strlen(z + 1));
                }
                break;
            }
            snprintf(out, sizeof(out), spec, iv);
            jbuf_put(c, &b, out, strlen(out));
            break;
        }
        case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': {
            double dv;
            if (arg.t == JV_FLOAT) dv = arg.u.f;
            else if (arg.t == JV_INT || arg.t == JV_BOOL) dv = (double)arg.u.i;
            else jfail(c, "must be real number, not %s", jv_typename(arg));
            if (prec >= 0 && width >= 0) snprintf(spec, sizeof(spec), "%%%s%d.%d%c", flags, width, prec, conv);
            else if (width >= 0) snprintf(spec, sizeof(spec), "%%%s%d%c", flags, width, conv);
            else if (prec >= 0) snprintf(spec, sizeof(spec), "%%%s.%d%c", flags, prec, conv);
            else snprintf(spec, sizeof(spec), "%%%s%c", flags, conv);
            snprintf(out, sizeof(out), spec, dv);
            jbuf_put(c, &b, out, strlen(out));
            break;
        }
        default: jfail(c, "unsupported format character '%c' (0x%x)", conv, (unsigned char)conv);
        }
        s = p;
    }
    /* CPython raises only when the arguments are not a mapping (lists and ranges count as one) */
    int mapping_like = args.t == JV_DICT || (args.t == JV_LIST && (JL(args)->h.sub == L_LIST || JL(args)->h.sub == L_RANGE));
    if (!used_dict && !mapping_like && next < nitems && (is_tuple || next == 0))
        jfail(c, "not all arguments converted during string formatting");
    return jbuf_close(c, &b);
}

/* ===== str.format (a subset: {} {0} {name} {0.attr} {0[key]}, !s !r, specs: fill align sign width , .prec type) ===== */

static void format_spec(jctx *c, jbuf *b, jv v, const char *spec, size_t sn) {
    if (!sn) { jv_write_str(c, b, v); return; }
    char fill = ' ', align = 0, sign = 0, type = 0;
    int width = -1, prec = -1, comma = 0, zero = 0;
    size_t i = 0;
    if (sn >= 2 && strchr("<>^=", spec[1])) { fill = spec[0]; align = spec[1]; i = 2; }
    else if (strchr("<>^=", spec[0])) { align = spec[0]; i = 1; }
    if (i < sn && strchr("+- ", spec[i])) sign = spec[i++];
    if (i < sn && spec[i] == '0') { zero = 1; i++; }
    while (i < sn && spec[i] >= '0' && spec[i] <= '9') width = (width < 0 ? 0 : width * 10) + (spec[i++] - '0');
    if (i < sn && (spec[i] == ',' || spec[i] == '_')) { comma = spec[i]; i++; }
    if (i < sn && spec[i] == '.') {
        i++;
        prec = 0;
        while (i < sn && spec[i] >= '0' && spec[i] <= '9') prec = prec * 10 + (spec[i++] - '0');
    }
    if (i < sn) type = spec[i++];
    if (i != sn) jfail(c, "unsupported format specifier '%.*s'", (int)sn, spec);
    if (comma && !(v.t == JV_INT || v.t == JV_BOOL || v.t == JV_FLOAT) ) jfail(c, "Cannot specify '%c' with 's'.", comma);
    if (width > 4096) width = 4096;
    if (prec > 200) prec = 200;
    char tmp[512];
    jv text;
    int numeric = v.t == JV_INT || v.t == JV_BOOL || v.t == JV_FLOAT;
    if (type == 's' || (!type && v.t == JV_STR)) {
        if (v.t != JV_STR) jfail(c, "Unknown format code 's' for object of type '%s'", jv_typename(v));
        text = jv_ref(v);
        if (prec >= 0 && jstr_ncp(JS(text)) > prec) {
            jv cut = jv_str(c, JS(v)->s, (size_t)utf8_offset(JS(v)->s, JS(v)->len, prec));
            jv_unref(c, text);
            text = cut;
        }
        if (!align) align = '<';
    } else if (numeric) {
        char sp[64];
        double dv = v.t == JV_FLOAT ? v.u.f : (double)v.u.i;
        if (!type && v.t != JV_FLOAT) type = 'd';
        if (!type) {
            if (prec < 0) {
                jfloat_repr(dv, tmp);
            } else {
                snprintf(sp, sizeof(sp), "%%%s.%dg", sign == '+' ? "+" : sign == ' ' ? " " : "", prec ? prec : 1);
                snprintf(tmp, sizeof(tmp), sp, dv);
            }
            if (sign == '+' && dv >= 0 && tmp[0] != '+') { memmove(tmp + 1, tmp, strlen(tmp) + 1); tmp[0] = '+'; }
        } else if (strchr("dxXob", type)) {
            if (v.t == JV_FLOAT) jfail(c, "Unknown format code '%c' for object of type 'float'", type);
            long long iv = v.u.i;
            if (type == 'b') {
                char bits[80];
                int k = 0;
                unsigned long long u = iv < 0 ? 0ull - (unsigned long long)iv : (unsigned long long)iv;
                do { bits[k++] = (char)('0' + (u & 1)); u >>= 1; } while (u);
                int o = 0;
                if (iv < 0) tmp[o++] = '-';
                else if (sign == '+' || sign == ' ') tmp[o++] = sign;
                while (k) tmp[o++] = bits[--k];
                tmp[o] = 0;
            } else {
                snprintf(sp, sizeof(sp), "%%%sll%c", sign == '+' ? "+" : sign == ' ' ? " " : "", type);
                snprintf(tmp, sizeof(tmp), sp, iv);
            }
        } else if (strchr("fFeEgG%", type)) {
            double x = type == '%' ? dv * 100 : dv;
            snprintf(sp, sizeof(sp), "%%%s.%d%c", sign == '+' ? "+" : sign == ' ' ? " " : "", prec < 0 ? 6 : prec, type == '%' ? 'f' : type);
            snprintf(tmp, sizeof(tmp), sp, x);
            if (type == '%') strcat(tmp, "%");
        } else {
            jfail(c, "Unknown format code '%c' for object of type '%s'", type, jv_typename(v));
        }
        if (comma && strchr("xXob", type ? type : 'd')) jfail(c, "Cannot specify '%c' with '%c'.", comma, type);
        char grouped[800];
        if (comma) {
            /* group the integer digits by three (Python also groups zero padding: not supported) */
            if (zero) jfail(c, "unsupported format specifier '%.*s' (zero padding with grouping)", (int)sn, spec);
            size_t sign_len = tmp[0] == '-' || tmp[0] == '+' || tmp[0] == ' ', nd = 0, k = 0;
            const char *st = tmp + sign_len;
            while (st[nd] >= '0' && st[nd] <= '9') nd++;
            if (sign_len) grouped[k++] = tmp[0];
            for (size_t d = 0; d < nd; d++) {
                if (d && (nd - d) % 3 == 0) grouped[k++] = (char)comma;
                grouped[k++] = st[d];
            }
            snprintf(grouped + k, sizeof(grouped) - k, "%s", st + nd);
        }
        text = jv_cstr(c, comma ? grouped : tmp);
        if (!align) align = zero ? '=' : '>';
        if (zero && fill == ' ') fill = '0';
    } else {
        if (type) jfail(c, "Unknown format code '%c' for object of type '%s'", type, jv_typename(v));
        text = jv_to_str(c, v);
        if (!align) align = '<';
    }
    int64_t len = jstr_ncp(JS(text)), pad = width > len ? width - len : 0;
    const char *t = JS(text)->s;
    size_t tl = JS(text)->len;
    if (align == '=' && pad && tl && (t[0] == '-' || t[0] == '+' || t[0] == ' ')) {
        jbuf_putc(c, b, t[0]);
        t++;
        tl--;
    }
    int64_t left = align == '<' ? 0 : align == '^' ? pad / 2 : pad;
    for (int64_t k = 0; k < left; k++) jbuf_putc(c, b, fill);
    jbuf_put(c, b, t, tl);
    for (int64_t k = left; k < pad; k++) jbuf_putc(c, b, fill);
    jv_unref(c, text);
}

static jv str_format(jctx *c, jstr *fmt, jargs *a) {
    jbuf b;
    jbuf_open(c, &b);
    const char *s = fmt->s, *end = s + fmt->len;
    int auto_idx = 0;
    while (s < end) {
        if (*s == '{' && s + 1 < end && s[1] == '{') { jbuf_putc(c, &b, '{'); s += 2; continue; }
        if (*s == '}' && s + 1 < end && s[1] == '}') { jbuf_putc(c, &b, '}'); s += 2; continue; }
        if (*s == '}') jfail(c, "Single '}' encountered in format string");
        if (*s != '{') { jbuf_putc(c, &b, *s++); continue; }
        const char *q = s + 1;
        int depth = 1;
        while (q < end && depth) {
            if (*q == '{') depth++;
            else if (*q == '}') depth--;
            if (depth) q++;
        }
        if (q >= end) jfail(c, "Single '{' encountered in format string");
        const char *f = s + 1, *fe = q;
        const char *colon = NULL, *bang = NULL;
        for (const char *x = f; x < fe; x++) {
            if (*x == '[') { while (x < fe && *x != ']') x++; continue; }
            if (*x == '!' && !bang && !colon) bang = x;
            if (*x == ':' && !colon) { colon = x; break; }
        }
        const char *name_end = bang ? bang : colon ? colon : fe;
        /* the first part of the field name */
        const char *p = f;
        while (p < name_end && *p != '.' && *p != '[') p++;
        jv v;
        if (p == f) {
            if (auto_idx >= a->npos) jfail(c, "Replacement index %d out of range for positional args tuple", auto_idx);
            v = jv_ref(a->pos[auto_idx++]);
        } else if (*f >= '0' && *f <= '9') {
            int64_t idx = strtoll(f, NULL, 10);
            if (idx >= a->npos) jfail(c, "Replacement index %lld out of range for positional args tuple", (long long)idx);
            v = jv_ref(a->pos[idx]);
        } else {
            int k = 0;
            while (k < a->nkw && !(a->knames[k]->len == (size_t)(p - f) && !memcmp(a->knames[k]->s, f, (size_t)(p - f)))) k++;
            if (k == a->nkw) jfail(c, "KeyError: '%.*s'", (int)(p - f), f);
            v = jv_ref(a->kvals[k]);
        }
        while (p < name_end) {
            jv nv;
            if (*p == '.') {
                const char *e = p + 1;
                while (e < name_end && *e != '.' && *e != '[') e++;
                jv key = jv_str(c, p + 1, (size_t)(e - p - 1));
                nv = jgetattr(c, v, JS(key));
                jv_unref(c, key);
                p = e;
            } else {
                const char *e = memchr(p, ']', (size_t)(name_end - p));
                if (!e) jfail(c, "Missing ']' in format string");
                int digits = e > p + 1;
                for (const char *x = p + 1; x < e; x++) digits &= *x >= '0' && *x <= '9';
                jv key = digits ? jv_int(strtoll(p + 1, NULL, 10)) : jv_str(c, p + 1, (size_t)(e - p - 1));
                nv = jgetitem(c, v, key);
                jv_unref(c, key);
                p = e + 1;
            }
            jv_unref(c, v);
            v = nv;
        }
        if (bang) {
            char conv = bang + 1 < fe ? bang[1] : 0;
            jbuf t;
            jbuf_open(c, &t);
            if (conv == 'r' || conv == 'a') jv_write_repr(c, &t, v, 0);
            else if (conv == 's') jv_write_str(c, &t, v);
            else jfail(c, "Unknown conversion specifier %c", conv);
            jv_unref(c, v);
            v = jbuf_close(c, &t);
        }
        if (colon) format_spec(c, &b, v, colon + 1, (size_t)(fe - colon - 1));
        else jv_write_str(c, &b, v);
        jv_unref(c, v);
        s = q + 1;
    }
    return jbuf_close(c, &b);
}

/* ===== sorting and keys ===== */

/* jinja2's make_attrgetter: "a.b.0" looked up item-first; default replaces an Undefined */
static jv attr_path(jctx *c, jv item, jv attribute, jv def) {
    jv cur = jv_ref(item);
    if (missing(attribute) || attribute.t == JV_NONE) return cur;
    if (attribute.t != JV_STR) {
        jv r = jgetitem(c, cur, attribute);
        jv_unref(c, cur);
        if (!missing(def) && def.t != JV_NONE && r.t == JV_UNDEF) { jv_unref(c, r); return jv_ref(def); }
        return r;
    }
    jstr *s = JS(attribute);
    size_t st = 0;
    for (;;) {
        size_t e = st;
        while (e < s->len && s->s[e] != '.') e++;
        int digits = e > st;
        for (size_t i = st; i < e; i++) digits &= s->s[i] >= '0' && s->s[i] <= '9';
        jv key = digits ? jv_int(strtoll(s->s + st, NULL, 10)) : jv_str(c, s->s + st, e - st);
        jv nx = jgetitem(c, cur, key);
        jv_unref(c, key);
        jv_unref(c, cur);
        cur = nx;
        if (!missing(def) && def.t != JV_NONE && cur.t == JV_UNDEF) {
            jv_unref(c, cur);
            cur = jv_ref(def);
        }
        if (e >= s->len) break;
        st = e + 1;
    }
    return cur;
}

static jv lower_if_str(jctx *c, jv v) {
    if (v.t != JV_STR) return v;
    jv r = str_case(c, JS(v)->s, JS(v)->len, CASE_LOWER);
    jv_unref(c, v);
    return r;
}

/* stable merge sort of idx[0..n) by keys (Python's sorted: only `<`; reverse keeps equal items in order) */
static void sort_idx(jctx *c, int64_t *idx, int64_t n, jv *keys, int reverse) {
    if (n < 2) return;
    int64_t *tmp = jtmp(c, sizeof(int64_t) * (size_t)n);
    for (int64_t w = 1; w < n; w *= 2) {
        jstep(c, n);   /* n log n comparisons in all */
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                /* take from the right only when it sorts strictly before the left */
                int right_first = reverse ? jv_cmp(c, keys[idx[i]], keys[idx[j]], "<") : jv_cmp(c, keys[idx[j]], keys[idx[i]], "<");
                tmp[k++] = right_first ? idx[j++] : idx[i++];
            }
            while (i < mid) tmp[k++] = idx[i++];
            while (j < hi) tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, sizeof(int64_t) * (size_t)n);
    }
    jtmp_free(c, tmp);
}

/* ===== generators ===== */

static jlist *gen_new(jctx *c, const char *name) {
    jlist *g = jlist_new(c, 0, L_GEN);
    g->gen_name = name;
    return g;
}

/* ===== filters ===== */

static jv html_escape(jctx *c, jv v) {
    if (v.t == JV_STR && JS(v)->h.sub) return jv_ref(v);   /* already markup */
    jv s = jv_to_str(c, v);
    jbuf b;
    jbuf_open(c, &b);
    for (size_t i = 0; i < JS(s)->len; i++) {
        char ch = JS(s)->s[i];
        switch (ch) {
        case '&': jbuf_put(c, &b, "&amp;", 5); break;
        case '<': jbuf_put(c, &b, "&lt;", 4); break;
        case '>': jbuf_put(c, &b, "&gt;", 4); break;
        case '"': jbuf_put(c, &b, "&#34;", 5); break;
        case '\'': jbuf_put(c, &b, "&#39;", 5); break;
        default: jbuf_putc(c, &b, ch);
        }
    }
    jv_unref(c, s);
    jv r = jbuf_close(c, &b);
    JS(r)->h.sub = 1;
    return r;
}

static jv mark_safe(jctx *c, jv v) {
    jv s = jv_to_str(c, v);
    if (JS(s)->h.sub || JS(s)->h.rc < 0) {
        jv r = jv_str(c, JS(s)->s, JS(s)->len);
        jv_unref(c, s);
        s = r;
    }
    JS(s)->h.sub = 1;
    return s;
}

/* Python's float() of a string */
static int parse_py_float(const char *s, size_t n, double *out) {
    char buf[128];
    size_t i = 0, e = n;
    while (i < e && uni_isspace((unsigned char)s[i])) i++;
    while (e > i && uni_isspace((unsigned char)s[e - 1])) e--;
    if (e - i == 0 || e - i >= sizeof(buf)) return 0;
    size_t k = 0;
    for (size_t j = i; j < e; j++) {
        if (s[j] == '_') {
            if (j == i || j + 1 == e || !(s[j - 1] >= '0' && s[j - 1] <= '9') || !(s[j + 1] >= '0' && s[j + 1] <= '9')) return 0;
            continue;
        }
        buf[k++] = s[j];
    }
    buf[k] = 0;
    const char *p = buf;
    if (*p == '+' || *p == '-') p++;
    if (!strcasecmp(p, "inf") || !strcasecmp(p, "infinity") || !strcasecmp(p, "nan")) {
        double v = (p[0] | 0x20) == 'n' ? NAN : INFINITY;
        *out = buf[0] == '-' ? -v : v;
        return 1;
    }
    for (const char *q = p; *q; q++)
        if (!strchr("0123456789.eE+-", *q)) return 0;
    char *endp;
    double v = strtod(buf, &endp);
    if (*endp || endp == buf) return 0;
    *out = v;
    return 1;
}

/* Python's int(s, base) */
static int parse_py_int(const char *s, size_t n, int base, int64_t *out) {
    size_t i = 0, e = n;
    while (i < e && uni_isspace((unsigned char)s[i])) i++;
    while (e > i && uni_isspace((unsigned char)s[e - 1])) e--;
    int neg = 0;
    if (i < e && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    if (i + 1 < e && s[i] == '0') {
        char x = s[i + 1] | 0x20;
        int pb = x == 'x' ? 16 : x == 'o' ? 8 : x == 'b' ? 2 : 0;
        if (pb && (base == 0 || base == pb)) { base = pb; i += 2; if (i < e && s[i] == '_') i++; }
    }
    if (base == 0) {
        base = 10;
        if (e - i > 1 && s[i] == '0') {
            for (size_t j = i; j < e; j++)
                if (s[j] != '0' && s[j] != '_') return 0;
        }
    }
    if (i >= e) return 0;
    uint64_t v = 0;
    int prev_us = 1;
    for (size_t j = i; j < e; j++) {
        char ch = s[j];
        if (ch == '_') {
            if (prev_us) return 0;
            prev_us = 1;
            continue;
        }
        prev_us = 0;
        int d = ch >= '0' && ch <= '9' ? ch - '0' : (ch | 0x20) >= 'a' && (ch | 0x20) <= 'z' ? (ch | 0x20) - 'a' + 10 : 99;
        if (d >= base) return 0;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) return -1;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (prev_us) return 0;
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg) return -1;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 1;
}

static jv to_int_filter(jctx *c, jv v, jv def, int64_t base) {
    int64_t r;
    if (v.t == JV_UNDEF) jundefined_fail(c, v);
    if (v.t == JV_INT || v.t == JV_BOOL) return jv_int(v.u.i);
    if (v.t == JV_FLOAT) {
        if (isinf(v.u.f)) jfail(c, "cannot convert float infinity to integer");
        if (isnan(v.u.f)) return jv_ref(def);
        if (v.u.f >= 9.2233720368547758e18 || v.u.f < -9.2233720368547758e18) jfail(c, "integer overflow (beyond 64 bits)");
        return jv_int((int64_t)v.u.f);
    }
    if (v.t == JV_STR) {
        int ok = parse_py_int(JS(v)->s, JS(v)->len, (int)base, &r);
        if (ok > 0) return jv_int(r);
        if (ok < 0) jfail(c, "integer overflow (beyond 64 bits)");
        double d;
        if (parse_py_float(JS(v)->s, JS(v)->len, &d) && isfinite(d)) {
            if (d >= 9.2233720368547758e18 || d < -9.2233720368547758e18) jfail(c, "integer overflow (beyond 64 bits)");
            return jv_int((int64_t)d);
        }
    }
    return jv_ref(def);
}

/* Python's round(x, n) for floats: correctly rounded, ties to even on the exact binary value */
static double py_round(double x, int64_t n) {
    if (!isfinite(x) || x == 0) return x;
    if (n > 320) return x;
    if (n < -320) return copysign(0.0, x);
    if (n >= 0) {
        char buf[512];
        snprintf(buf, sizeof(buf), "%.*f", (int)n, x);
        return strtod(buf, NULL);
    }
    double p = pow(10.0, (double)-n);
    double y = x / p;
    double r = nearbyint(y);
    if (fabs(y - trunc(y)) == 0.5) r = 2.0 * nearbyint(y / 2.0);
    return copysign(r * p, x);
}

static jv to_list_value(jctx *c, jv v) {
    jlist *it = jv_iter(c, v);
    if (it->h.sub == L_LIST) return jv_list(it);
    jlist *r = jlist_new(c, it->n, L_LIST);
    for (int64_t i = 0; i < it->n; i++) jlist_push(c, r, jv_ref(it->a[i]));
    jobj_unref(c, &it->h);
    return jv_list(r);
}

static jv reversed_of(jctx *c, jv v) {
    jlist *src;
    if (v.t == JV_LIST && (JL(v)->h.sub == L_GEN || JL(v)->h.sub == L_REVERSED)) {
        if (JL(v)->h.sub == L_GEN) jfail(c, "'generator' object is not reversible");
        jfail(c, "'list_reverseiterator' object is not reversible");
    }
    if (v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF || v.t == JV_STR) src = jv_iter(c, v);
    else jfail(c, "'%s' object is not reversible", jv_typename(v));
    jlist *r = jlist_new(c, src->n, L_REVERSED);
    for (int64_t i = src->n; i-- > 0;) jlist_push(c, r, jv_ref(src->a[i]));
    jobj_unref(c, &src->h);
    return jv_list(r);
}

static jv call_named_filter(jctx *c, jv name, jv item, jargs *rest) {
    if (name.t != JV_STR) jfail(c, "No filter named %s.", "<non-string>");
    int id = jfilter_id(JS(name)->s);
    if (id < 0) jfail(c, "No filter named '%s'.", JS(name)->s);
    return jfilter_call(c, id, item, rest);
}

static int call_named_test(jctx *c, jv name, jv item, jargs *rest) {
    if (name.t != JV_STR) jfail(c, "No test named %s.", "<non-string>");
    int id = jtest_id(JS(name)->s);
    if (id < 0) jfail(c, "No test named '%s'.", JS(name)->s);
    return jtest_call(c, id, item, rest);
}

static jv select_reject(jctx *c, jv in, jargs *a, int select, int attr, const char *gname) {
    jlist *g = gen_new(c, gname);
    jv gv = jv_list(g);
    if (!jv_truthy(c, in)) return gv;
    int off = attr ? 1 : 0;
    if (attr && a->npos < 1) jfail(c, "Missing parameter for attribute name");
    jlist *it = jv_iter(c, in);
    jargs rest = {a->pos + off + 1, a->npos - off - 1, a->knames, a->kvals, a->nkw};
    if (rest.npos < 0) rest.npos = 0;
    for (int64_t i = 0; i < it->n; i++) {
        jstep(c, 1);
        jv x = attr ? attr_path(c, it->a[i], a->pos[0], MISSING) : jv_ref(it->a[i]);
        int t = a->npos > off ? call_named_test(c, a->pos[off], x, &rest) : jv_truthy(c, x);
        jv_unref(c, x);
        if (t == select) jlist_push(c, g, jv_ref(it->a[i]));
    }
    jobj_unref(c, &it->h);
    return gv;
}

static jv do_map(jctx *c, jv in, jargs *a) {
    jlist *g = gen_new(c, "sync_do_map");
    jv gv = jv_list(g);
    if (!jv_truthy(c, in)) return gv;
    jlist *it = jv_iter(c, in);
    int attr_mode = a->npos == 0;
    jv attribute = MISSING, def = MISSING;
    if (attr_mode) {
        for (int k = 0; k < a->nkw; k++) {
            if (!strcmp(a->knames[k]->s, "attribute")) attribute = a->kvals[k];
            else if (!strcmp(a->knames[k]->s, "default")) def = a->kvals[k];
            else if (!missing(attribute)) jfail(c, "Unexpected keyword argument '%s'", a->knames[k]->s);
        }
        if (missing(attribute)) jfail(c, "map requires a filter argument");
        for (int k = 0; k < a->nkw; k++)
            if (strcmp(a->knames[k]->s, "attribute") && strcmp(a->knames[k]->s, "default"))
                jfail(c, "Unexpected keyword argument '%s'", a->knames[k]->s);
    }
    jargs rest = {a->pos + 1, a->npos - 1, a->knames, a->kvals, a->nkw};
    for (int64_t i = 0; i < it->n; i++) {
        jstep(c, 1);
        jv r = attr_mode ? attr_path(c, it->a[i], attribute, def) : call_named_filter(c, a->pos[0], it->a[i], &rest);
        jlist_push(c, g, r);
    }
    jobj_unref(c, &it->h);
    return gv;
}

static jv items_sorted(jctx *c, jlist *it, jv *keys, int reverse, int sub) {
    int64_t n = it->n;
    int64_t *idx = jtmp(c, sizeof(int64_t) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    sort_idx(c, idx, n, keys, reverse);
    jlist *r = jlist_new(c, n, sub);
    for (int64_t i = 0; i < n; i++) jlist_push(c, r, jv_ref(it->a[idx[i]]));
    jtmp_free(c, idx);
    return jv_list(r);
}

/* the sort keys of items: one attribute path, or (multi) a comma-separated list of them compared as a
 * list (jinja2's make_multi_attrgetter) */
static jv *keys_for(jctx *c, jlist *it, jv attribute, int case_sensitive, int multi) {
    jv *keys = jtmp(c, sizeof(jv) * (size_t)(it->n ? it->n : 1));
    jv parts = jv_none();
    if (multi && attribute.t == JV_STR) {
        jv comma = jv_str(c, ",", 1);
        parts = str_split(c, JS(attribute), JS(comma), -1, 0);
        jv_unref(c, comma);
    }
    for (int64_t i = 0; i < it->n; i++) {
        if (parts.t == JV_LIST) {
            jlist *k = jlist_new(c, JL(parts)->n, L_LIST);
            for (int64_t j = 0; j < JL(parts)->n; j++) {
                jv x = attr_path(c, it->a[i], JL(parts)->a[j], MISSING);
                jlist_push(c, k, case_sensitive ? x : lower_if_str(c, x));
            }
            keys[i] = jv_list(k);
        } else {
            keys[i] = attr_path(c, it->a[i], attribute, MISSING);
            if (!case_sensitive) keys[i] = lower_if_str(c, keys[i]);
        }
    }
    jv_unref(c, parts);
    return keys;
}

static void keys_free(jctx *c, jv *keys, int64_t n) {
    for (int64_t i = 0; i < n; i++) jv_unref(c, keys[i]);
    jtmp_free(c, keys);
}

static jv do_tojson(jctx *c, jv in, jv ensure_ascii, jv indent, jv separators, jv sort_keys) {
    char ind[64];
    const char *indent_s = NULL;
    int nind = 0;
    if (!missing(indent) && indent.t != JV_NONE) {
        if (indent.t == JV_STR) {
            indent_s = JS(indent)->s;
            nind = (int)JS(indent)->len;
        } else {
            int64_t k = as_int(c, indent);
            if (k < 0) k = 0;
            if (k > 63) k = 63;
            memset(ind, ' ', (size_t)k);
            ind[k] = 0;
            indent_s = ind;
            nind = (int)k;
        }
    }
    const char *isep = indent_s ? "," : ", ", *ksep = ": ";
    if (!missing(separators) && separators.t != JV_NONE) {
        if (!(separators.t == JV_LIST && JL(separators)->n == 2 && JL(separators)->a[0].t == JV_STR && JL(separators)->a[1].t == JV_STR))
            jfail(c, "separators must be a pair of strings");
        isep = JS(JL(separators)->a[0])->s;
        ksep = JS(JL(separators)->a[1])->s;
    }
    jbuf b;
    jbuf_open(c, &b);
    jv_write_json(c, &b, in, indent_s, nind, isep, ksep, opt_bool(c, sort_keys, 0), opt_bool(c, ensure_ascii, 0), 0);
    return jbuf_close(c, &b);
}

static const char *const A_DEFAULT[] = {"default_value", "boolean"};
static const char *const A_DICTSORT[] = {"case_sensitive", "by", "reverse"};
static const char *const A_SORT[] = {"reverse", "case_sensitive", "attribute"};
static const char *const A_UNIQUE[] = {"case_sensitive", "attribute"};
static const char *const A_JOIN[] = {"d", "attribute"};
static const char *const A_REPLACE[] = {"old", "new", "count"};
static const char *const A_ROUND[] = {"precision", "method"};
static const char *const A_INT[] = {"default", "base"};
static const char *const A_FLOAT[] = {"default"};
static const char *const A_TRIM[] = {"chars"};
static const char *const A_CENTER[] = {"width"};
static const char *const A_INDENT[] = {"width", "first", "blank"};
static const char *const A_BATCH[] = {"linecount", "fill_with"};
static const char *const A_SLICE[] = {"slices", "fill_with"};
static const char *const A_SUM[] = {"attribute", "start"};
static const char *const A_TRUNC[] = {"length", "killwords", "end", "leeway"};
static const char *const A_TOJSON[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
static const char *const A_ATTR[] = {"name"};
static const char *const A_GROUPBY[] = {"attribute", "default", "case_sensitive"};

jv jfilter_call(jctx *c, int id, jv in, jargs *a) {
    jv p[4];
    const char *name = filter_names[id];
    switch (id) {
    case F_ABS:
        no_args(c, name, a);
        if (in.t == JV_INT || in.t == JV_BOOL) {
            if (in.u.i == INT64_MIN) jfail(c, "integer overflow (beyond 64 bits)");
            return jv_int(in.u.i < 0 ? -in.u.i : in.u.i);
        }
        if (in.t == JV_FLOAT) return jv_float(fabs(in.u.f));
        if (in.t == JV_UNDEF) jundefined_fail(c, in);
        jfail(c, "bad operand type for abs(): '%s'", jv_typename(in));
    case F_ATTR: {
        bind(c, name, a, A_ATTR, 1, p);
        if (missing(p[0])) jfail(c, "do_attr() missing 1 required positional argument: 'name'");
        jstr *nm = as_str(c, p[0], "attribute name");
        if (in.t == JV_UNDEF) jundefined_fail(c, in);
        int found = 0;
        jv r;
        if (in.t == JV_NS) {
            jv *v = jdict_get_str(JD(in), nm->s, nm->len);
            if (v) return jv_ref(*v);
        } else {
            r = jattr_builtin(c, in, nm, &found);
            if (found) {
                jv_unref(c, r);
                return jgetattr(c, in, nm);
            }
        }
        return jv_undef_attr(c, in, p[0]);
    }
    case F_BATCH: {
        bind(c, name, a, A_BATCH, 2, p);
        if (missing(p[0])) jfail(c, "do_batch() missing 1 required positional argument: 'linecount'");
        int64_t lc = as_int(c, p[0]);
        jlist *g = gen_new(c, "do_batch");
        jv gv = jv_list(g);
        jlist *it = jv_iter(c, in);
        jlist *tmp = jlist_new(c, 0, L_LIST);
        for (int64_t i = 0; i < it->n; i++) {
            jstep(c, 1);
            if (tmp->n == lc) {
                jlist_push(c, g, jv_list(tmp));
                tmp = jlist_new(c, 0, L_LIST);
            }
            jlist_push(c, tmp, jv_ref(it->a[i]));
        }
        if (tmp->n) {
            if (!missing(p[1]) && p[1].t != JV_NONE)
                for (int64_t k = tmp->n; k < lc; k++) jlist_push(c, tmp, jv_ref(p[1]));
            jlist_push(c, g, jv_list(tmp));
        } else {
            jobj_unref(c, &tmp->h);
        }
        jobj_unref(c, &it->h);
        return gv;
    }
    case F_CAPITALIZE:
    case F_LOWER:
    case F_UPPER:
    case F_TITLE: {
        no_args(c, name, a);
        jv s = jv_to_str(c, in);
        jv r = id == F_TITLE ? jinja_title(c, JS(s)->s, JS(s)->len)
                             : str_case(c, JS(s)->s, JS(s)->len, id == F_CAPITALIZE ? CASE_CAPITALIZE : id == F_LOWER ? CASE_LOWER : CASE_UPPER);
        jv_unref(c, s);
        return r;
    }
    case F_CENTER: {
        bind(c, name, a, A_CENTER, 1, p);
        jv s = jv_to_str(c, in);
        jv r = str_pad(c, JS(s), opt_int(c, p[0], 80), ' ', 0);
        jv_unref(c, s);
        return r;
    }
    case F_COUNT:
    case F_LENGTH:
        no_args(c, name, a);
        return jv_int(jv_len(c, in));
    case F_D:
    case F_DEFAULT:
        bind(c, name, a, A_DEFAULT, 2, p);
        if (in.t == JV_UNDEF || (opt_bool(c, p[1], 0) && !jv_truthy(c, in))) return missing(p[0]) ? jv_str(c, "", 0) : jv_ref(p[0]);
        return jv_ref(in);
    case F_DICTSORT: {
        bind(c, name, a, A_DICTSORT, 3, p);
        int cs = opt_bool(c, p[0], 0), rev = opt_bool(c, p[2], 0);
        int pos = 0;
        if (!missing(p[1])) {
            jstr *by = as_str(c, p[1], "by");
            if (!strcmp(by->s, "value")) pos = 1;
            else if (strcmp(by->s, "key")) jfail(c, "You can only sort by either \"key\" or \"value\"");
        }
        if (in.t == JV_UNDEF) jundefined_fail(c, in);
        if (in.t != JV_DICT) jfail(c, "'%s' object has no attribute 'items'", jv_typename(in));
        jdict *d = JD(in);
        jlist *pairs = jlist_new(c, d->n, L_LIST);
        jv *keys = jtmp(c, sizeof(jv) * (size_t)(d->n ? d->n : 1));
        for (int64_t i = 0; i < d->n; i++) {
            jlist_push(c, pairs, tuple2(c, jv_ref(d->k[i]), jv_ref(d->v[i])));
            keys[i] = jv_ref(pos ? d->v[i] : d->k[i]);
            if (!cs) keys[i] = lower_if_str(c, keys[i]);
        }
        jv r = items_sorted(c, pairs, keys, rev, L_LIST);
        keys_free(c, keys, d->n);
        jobj_unref(c, &pairs->h);
        return r;
    }
    case F_E:
    case F_ESCAPE:
        no_args(c, name, a);
        return html_escape(c, in);
    case F_FORCEESCAPE: {
        no_args(c, name, a);
        jv s = jv_to_str(c, in);
        jv plain = jv_str(c, JS(s)->s, JS(s)->len);
        jv r = html_escape(c, plain);
        jv_unref(c, plain);
        jv_unref(c, s);
        return r;
    }
    case F_FIRST: {
        no_args(c, name, a);
        if (in.t == JV_LIST && (JL(in)->h.sub == L_GEN || JL(in)->h.sub == L_REVERSED)) {
            jlist *g = JL(in);
            if (g->pos < g->n) return jv_ref(g->a[g->pos++]);
            return jv_undef_msg(c, "No first item, sequence was empty.");
        }
        jlist *it = jv_iter(c, in);
        jv r = it->n ? jv_ref(it->a[0]) : jv_undef_msg(c, "No first item, sequence was empty.");
        jobj_unref(c, &it->h);
        return r;
    }
    case F_LAST: {
        no_args(c, name, a);
        jv rv = reversed_of(c, in);
        jv r = JL(rv)->n ? jv_ref(JL(rv)->a[0]) : jv_undef_msg(c, "No last item, sequence was empty.");
        jv_unref(c, rv);
        return r;
    }
    case F_FLOAT: {
        bind(c, name, a, A_FLOAT, 1, p);
        jv def = missing(p[0]) ? jv_float(0.0) : p[0];
        if (in.t == JV_UNDEF) jundefined_fail(c, in);
        if (in.t == JV_FLOAT) return in;
        if (in.t == JV_INT || in.t == JV_BOOL) return jv_float((double)in.u.i);
        double d;
        if (in.t == JV_STR && parse_py_float(JS(in)->s, JS(in)->len, &d)) return jv_float(d);
        return jv_ref(def);
    }
    case F_FORMAT: {
        if (a->npos && a->nkw) jfail(c, "can't handle positional and keyword arguments at the same time");
        jv s = jv_to_str(c, in);
        jv args;
        if (a->nkw) {
            jdict *d = jdict_new(c, JV_DICT);
            args = jv_obj(JV_DICT, d);
            for (int k = 0; k < a->nkw; k++) jdict_set(c, d, jv_ref(jv_obj(JV_STR, a->knames[k])), jv_ref(a->kvals[k]));
        } else {
            jlist *t = jlist_new(c, a->npos, L_TUPLE);
            for (int i = 0; i < a->npos; i++) jlist_push(c, t, jv_ref(a->pos[i]));
            args = jv_list(t);
        }
        jv r = jformat_percent(c, JS(s), args);
        jv_unref(c, args);
        jv_unref(c, s);
        return r;
    }
    case F_GROUPBY: {
        bind(c, name, a, A_GROUPBY, 3, p);
        if (missing(p[0])) jfail(c, "do_groupby() missing 1 required positional argument: 'attribute'");
        int cs = opt_bool(c, p[2], 0);
        jlist *it = jv_iter(c, in);
        jv *keys = jtmp(c, sizeof(jv) * (size_t)(it->n ? it->n : 1));
        for (int64_t i = 0; i < it->n; i++) {
            keys[i] = attr_path(c, it->a[i], p[0], p[1]);
            if (!cs) keys[i] = lower_if_str(c, keys[i]);
        }
        int64_t *idx = jtmp(c, sizeof(int64_t) * (size_t)(it->n ? it->n : 1));
        for (int64_t i = 0; i < it->n; i++) idx[i] = i;
        sort_idx(c, idx, it->n, keys, 0);
        jlist *out = jlist_new(c, 0, L_LIST);
        jv ov = jv_list(out);
        for (int64_t i = 0; i < it->n;) {
            int64_t j = i;
            jlist *grp = jlist_new(c, 0, L_LIST);
            while (j < it->n && jv_eq(c, keys[idx[j]], keys[idx[i]])) jlist_push(c, grp, jv_ref(it->a[idx[j++]]));
            jv grouper = cs ? jv_ref(keys[idx[i]]) : attr_path(c, it->a[idx[i]], p[0], p[1]);
            jv gt = tuple2(c, grouper, jv_list(grp));
            JL(gt)->gen_name = GROUP_TUPLE;
            jlist_push(c, out, gt);
            i = j;
        }
        jtmp_free(c, idx);
        keys_free(c, keys, it->n);
        jobj_unref(c, &it->h);
        return ov;
    }
    case F_INDENT: {
        bind(c, name, a, A_INDENT, 3, p);
        jv ind;
        if (!missing(p[0]) && p[0].t == JV_STR) ind = jv_ref(p[0]);
        else {
            int64_t w = opt_int(c, p[0], 4);
            if (w < 0) w = 0;
            if ((uint64_t)w > c->max_out) jfail(c, "the template's output is too large (more than %zu bytes)", c->max_out);
            jbuf t;
            jbuf_open(c, &t);
            for (int64_t i = 0; i < w; i++) jbuf_putc(c, &t, ' ');
            ind = jbuf_close(c, &t);
        }
        int first = opt_bool(c, p[1], 0), blank = opt_bool(c, p[2], 0);
        if (in.t != JV_STR) {   /* jinja2 appends "\n" to the value itself */
            if (in.t == JV_UNDEF) jundefined_fail(c, in);
            jfail(c, "unsupported operand type(s) for +=: '%s' and 'str'", jv_typename(in));
        }
        jv s0 = jv_to_str(c, in);
        jbuf t;
        jbuf_open(c, &t);
        jbuf_put(c, &t, JS(s0)->s, JS(s0)->len);
        jbuf_putc(c, &t, '\n');
        jv s = jbuf_close(c, &t);
        jv lines = str_splitlines(c, JS(s)->s, JS(s)->len, 0);
        jlist *L = JL(lines);
        jbuf b;
        jbuf_open(c, &b);
        if (first) jbuf_put(c, &b, JS(ind)->s, JS(ind)->len);
        for (int64_t i = 0; i < L->n; i++) {
            jstr *ln = JS(L->a[i]);
            if (i) {
                jbuf_putc(c, &b, '\n');
                if (blank || ln->len) jbuf_put(c, &b, JS(ind)->s, JS(ind)->len);
            }
            jbuf_put(c, &b, ln->s, ln->len);
        }
        jv_unref(c, lines);
        jv_unref(c, s);
        jv_unref(c, s0);
        jv_unref(c, ind);
        return jbuf_close(c, &b);
    }
    case F_INT: {
        bind(c, name, a, A_INT, 2, p);
        return to_int_filter(c, in, missing(p[0]) ? jv_int(0) : p[0], opt_int(c, p[1], 10));
    }
    case F_JOIN: {
        bind(c, name, a, A_JOIN, 2, p);
        jv d = missing(p[0]) ? jv_str(c, "", 0) : jv_to_str(c, p[0]);
        jlist *it = jv_iter(c, in);
        jbuf b;
        jbuf_open(c, &b);
        for (int64_t i = 0; i < it->n; i++) {
            jstep(c, 1);
            if (i) jbuf_put(c, &b, JS(d)->s, JS(d)->len);
            jv x = attr_path(c, it->a[i], p[1], MISSING);
            jv_write_str(c, &b, x);
            jv_unref(c, x);
        }
        jobj_unref(c, &it->h);
        jv_unref(c, d);
        return jbuf_close(c, &b);
    }
    case F_LIST:
        no_args(c, name, a);
        return to_list_value(c, in);
    case F_ITEMS: {
        no_args(c, name, a);
        jlist *g = gen_new(c, "do_items");
        jv gv = jv_list(g);
        if (in.t == JV_UNDEF) return gv;
        if (in.t != JV_DICT) jfail(c, "Can only get item pairs from a mapping.");
        for (int64_t i = 0; i < JD(in)->n; i++) jlist_push(c, g, tuple2(c, jv_ref(JD(in)->k[i]), jv_ref(JD(in)->v[i])));
        return gv;
    }
    case F_MAP: return do_map(c, in, a);
    case F_MIN:
    case F_MAX: {
        bind(c, name, a, A_UNIQUE, 2, p);
        jlist *it = jv_iter(c, in);
        if (!it->n) {
            jobj_unref(c, &it->h);
            return jv_undef_msg(c, "No aggregated item, sequence was empty.");
        }
        jv *keys = keys_for(c, it, p[1], opt_bool(c, p[0], 0), 0);
        int64_t best = 0;
        for (int64_t i = 1; i < it->n; i++)
            if (jv_cmp(c, keys[i], keys[best], id == F_MIN ? "<" : ">")) best = i;
        jv r = jv_ref(it->a[best]);
        keys_free(c, keys, it->n);
        jobj_unref(c, &it->h);
        return r;
    }
    case F_PPRINT: {
        no_args(c, name, a);
        jbuf b;
        jbuf_open(c, &b);
        jv_write_repr(c, &b, in, 0);
        return jbuf_close(c, &b);
    }
    case F_REJECT: return select_reject(c, in, a, 0, 0, "select_or_reject");
    case F_REJECTATTR: return select_reject(c, in, a, 0, 1, "select_or_reject");
    case F_SELECT: return select_reject(c, in, a, 1, 0, "select_or_reject");
    case F_SELECTATTR: return select_reject(c, in, a, 1, 1, "select_or_reject");
    case F_REPLACE: {
        bind(c, name, a, A_REPLACE, 3, p);
        if (missing(p[0]) || missing(p[1])) jfail(c, "do_replace() missing required arguments 'old' and 'new'");
        jv s = jv_to_str(c, in), o = jv_to_str(c, p[0]), nw = jv_to_str(c, p[1]);
        jv r = str_replace(c, JS(s), JS(o), JS(nw), opt_int(c, p[2], -1));
        jv_unref(c, s);
        jv_unref(c, o);
        jv_unref(c, nw);
        return r;
    }
    case F_REVERSE: {
        no_args(c, name, a);
        if (in.t == JV_STR) {
            cps v = to_cps(c, JS(in)->s, JS(in)->len);
            jbuf b;
            jbuf_open(c, &b);
            for (int64_t i = v.n; i-- > 0;) put_cp(c, &b, v.cp[i]);
            jtmp_free(c, v.cp);
            return jbuf_close(c, &b);
        }
        if (in.t == JV_LIST && JL(in)->h.sub == L_GEN) {
            jv l = to_list_value(c, in);
            jlist *src = JL(l), *r = jlist_new(c, src->n, L_LIST);
            for (int64_t i = src->n; i-- > 0;) jlist_push(c, r, jv_ref(src->a[i]));
            jv_unref(c, l);
            return jv_list(r);
        }
        if (!(in.t == JV_LIST || in.t == JV_DICT || in.t == JV_UNDEF)) jfail(c, "argument must be iterable");
        return reversed_of(c, in);
    }
    case F_ROUND: {
        bind(c, name, a, A_ROUND, 2, p);
        int64_t prec = opt_int(c, p[0], 0);
        const char *method = "common";
        if (!missing(p[1])) method = as_str(c, p[1], "method")->s;
        if (strcmp(method, "common") && strcmp(method, "ceil") && strcmp(method, "floor")) jfail(c, "method must be common, ceil or floor");
        if (in.t == JV_UNDEF) jundefined_fail(c, in);
        if (!(in.t == JV_INT || in.t == JV_BOOL || in.t == JV_FLOAT)) jfail(c, "type %s doesn't define __round__ method", jv_typename(in));
        if (!strcmp(method, "common")) {
            if (in.t != JV_FLOAT) {
                if (prec >= 0) return jv_int(in.u.i);
                /* round(int, -n): to a multiple of 10^n, ties to even */
                int64_t m = 1;
                for (int64_t k = 0; k < -prec && m <= INT64_MAX / 10; k++) m *= 10;
                int64_t q = in.u.i / m, r = in.u.i % m;
                if (r < 0) { q -= 1; r += m; }
                if (2 * r > m || (2 * r == m && (q & 1))) q++;
                return jv_int(q * m);
            }
            return jv_float(py_round(in.u.f, prec));
        }
        if (prec < 0) jfail(c, "negative precision with method %s is not supported", method);
        double scale = pow(10.0, (double)prec);
        double x = (in.t == JV_FLOAT ? in.u.f : (double)in.u.i) * scale;
        if (!isfinite(x)) jfail(c, "cannot convert float infinity to integer");
        return jv_float((method[0] == 'c' ? ceil(x) : floor(x)) / scale);
    }
    case F_SAFE:
        no_args(c, name, a);
        return mark_safe(c, in);
    case F_SLICE: {
        bind(c, name, a, A_SLICE, 2, p);
        if (missing(p[0])) jfail(c, "do_slice() missing 1 required positional argument: 'slices'");
        int64_t slices = as_int(c, p[0]);
        jlist *it = jv_iter(c, in);
        if (slices <= 0) jfail(c, slices == 0 ? "integer division or modulo by zero" : "slices must be positive");
        int64_t len = it->n, per = len / slices, extra = len % slices, offset = 0;
        jlist *g = gen_new(c, "sync_do_slice");
        jv gv = jv_list(g);
        for (int64_t sn = 0; sn < slices; sn++) {
            jstep(c, 1);
            int64_t start = offset + sn * per;
            if (sn < extra) offset++;
            int64_t end = offset + (sn + 1) * per;
            jlist *t = jlist_new(c, end - start + 1, L_LIST);
            for (int64_t k = start; k < end; k++) jlist_push(c, t, jv_ref(it->a[k]));
            if (!missing(p[1]) && p[1].t != JV_NONE && sn >= extra) jlist_push(c, t, jv_ref(p[1]));
            jlist_push(c, g, jv_list(t));
        }
        jobj_unref(c, &it->h);
        return gv;
    }
    case F_SORT: {
        bind(c, name, a, A_SORT, 3, p);
        jlist *it = jv_iter(c, in);
        jv *keys = keys_for(c, it, p[2], opt_bool(c, p[1], 0), 1);
        jv r = items_sorted(c, it, keys, opt_bool(c, p[0], 0), L_LIST);
        keys_free(c, keys, it->n);
        jobj_unref(c, &it->h);
        return r;
    }
    case F_STRING:
        no_args(c, name, a);
        return jv_to_str(c, in);
    case F_STRIPTAGS: {
        no_args(c, name, a);
        jv s = jv_to_str(c, in);
        jbuf t;
        jbuf_open(c, &t);
        const char *x = JS(s)->s, *e = x + JS(s)->len;
        while (x < e) {
            if (*x == '<') {
                const char *q = (e - x >= 4 && !memcmp(x, "<!--", 4)) ? find_bytes(x, (size_t)(e - x), "-->", 3) : memchr(x, '>', (size_t)(e - x));
                if (q) { x = q + (*q == '-' ? 3 : 1); jbuf_putc(c, &t, ' '); continue; }
            }
            jbuf_putc(c, &t, *x++);
        }
        jv stripped = jbuf_close(c, &t);
        jv words = str_split(c, JS(stripped), NULL, -1, 0);
        jbuf b;
        jbuf_open(c, &b);
        for (int64_t i = 0; i < JL(words)->n; i++) {
            if (i) jbuf_putc(c, &b, ' ');
            jstr *w = JS(JL(words)->a[i]);
            jbuf_put(c, &b, w->s, w->len);
        }
        jv_unref(c, words);
        jv_unref(c, stripped);
        jv_unref(c, s);
        return jbuf_close(c, &b);
    }
    case F_SUM: {
        bind(c, name, a, A_SUM, 2, p);
        jv acc = missing(p[1]) ? jv_int(0) : jv_ref(p[1]);
        if (acc.t == JV_STR) jfail(c, "sum() can't sum strings [use ''.join(seq) instead]");
        jlist *it = jv_iter(c, in);
        for (int64_t i = 0; i < it->n; i++) {
            jstep(c, 1);
            jv x = attr_path(c, it->a[i], p[0], MISSING);
            if (acc.t == JV_STR || x.t == JV_STR)   /* sum() adds, it never concatenates strings */
                jfail(c, "unsupported operand type(s) for +: '%s' and '%s'", jv_typename(acc), jv_typename(x));
            jv nx = jbinop(c, OP_ADD, acc, x);
            jv_unref(c, x);
            jv_unref(c, acc);
            acc = nx;
        }
        jobj_unref(c, &it->h);
        return acc;
    }
    case F_TRIM: {
        bind(c, name, a, A_TRIM, 1, p);
        jv s = jv_to_str(c, in);
        jstr *chars = (missing(p[0]) || p[0].t == JV_NONE) ? NULL : as_str(c, p[0], "strip arg");
        jv r = str_strip(c, JS(s), chars, 1, 1);
        jv_unref(c, s);
        return r;
    }
    case F_TRUNCATE: {
        bind(c, name, a, A_TRUNC, 4, p);
        int64_t length = opt_int(c, p[0], 255), leeway = opt_int(c, p[3], 5);
        int kill = opt_bool(c, p[1], 0);
        jv end = missing(p[2]) ? jv_cstr(c, "...") : jv_ref(p[2]);
        jstr *es = as_str(c, end, "end");
        int64_t elen = jstr_ncp(es);
        if (length < elen) jfail(c, "expected length >= %lld, got %lld", (long long)elen, (long long)length);
        if (leeway < 0) jfail(c, "expected leeway >= 0, got %lld", (long long)leeway);
        if (in.t != JV_STR) {   /* jinja2 takes len() and slices of the value itself */
            if (jv_len(c, in) <= length + leeway) {
                jv_unref(c, end);
                return jv_ref(in);
            }
            jfail(c, "'%s' object has no attribute 'rsplit'", jv_typename(in));
        }
        jv s = jv_to_str(c, in);
        int64_t n = jstr_ncp(JS(s));
        jv r;
        if (n <= length + leeway) {
            r = jv_ref(s);
        } else {
            int64_t cut = utf8_offset(JS(s)->s, JS(s)->len, length - elen);
            size_t keep = (size_t)cut;
            if (!kill) {
                const char *sp = rfind_bytes(JS(s)->s, keep, " ", 1);
                if (sp) keep = (size_t)(sp - JS(s)->s);
            }
            jbuf b;
            jbuf_open(c, &b);
            jbuf_put(c, &b, JS(s)->s, keep);
            jbuf_put(c, &b, es->s, es->len);
            r = jbuf_close(c, &b);
        }
        jv_unref(c, s);
        jv_unref(c, end);
        return r;
    }
    case F_UNIQUE: {
        bind(c, name, a, A_UNIQUE, 2, p);
        int cs = opt_bool(c, p[0], 0);
        jlist *it = jv_iter(c, in);
        jlist *g = gen_new(c, "sync_do_unique");
        jv gv = jv_list(g);
        jdict *seen = jdict_new(c, JV_DICT);
        for (int64_t i = 0; i < it->n; i++) {
            jstep(c, 1);
            jv k = attr_path(c, it->a[i], p[1], MISSING);
            if (!cs) k = lower_if_str(c, k);
            if (jdict_get(c, seen, k)) {
                jv_unref(c, k);
                continue;
            }
            jdict_set(c, seen, k, jv_none());
            jlist_push(c, g, jv_ref(it->a[i]));
        }
        jobj_unref(c, &seen->h);
        jobj_unref(c, &it->h);
        return gv;
    }
    case F_WORDCOUNT: {
        no_args(c, name, a);
        jv s = jv_to_str(c, in);
        int64_t n = 0;
        int inw = 0;
        for (size_t i = 0; i < JS(s)->len;) {
            int cp = utf8_dec(JS(s)->s, JS(s)->len, &i);
            int w = uni_isalpha(cp) || uni_isdigit(cp) || cp == '_';
            if (w && !inw) n++;
            inw = w;
        }
        jv_unref(c, s);
        return jv_int(n);
    }
    case F_TOJSON:
        bind(c, name, a, A_TOJSON, 4, p);
        return do_tojson(c, in, p[0], p[1], p[2], p[3]);
    default:
        jfail(c, "the '%s' filter is not supported", name);
    }
}

/* ===== tests ===== */

static int sameas(jv a, jv b) {
    if (a.t != b.t) return 0;
    switch (a.t) {
    case JV_NONE: case JV_UNDEF: return a.t == JV_NONE || a.u.o == b.u.o;
    case JV_BOOL: case JV_INT: return a.u.i == b.u.i && (a.t == JV_BOOL || (a.u.i >= -5 && a.u.i <= 256));
    case JV_FLOAT: return 0;
    default: return a.u.o == b.u.o;
    }
}

int jtest_call(jctx *c, int id, jv in, jargs *a) {
    const char *name = test_names[id];
    jv arg = jv_none();
    if (id == T_DIVISIBLEBY || id == T_SAMEAS || id == T_IN || id >= T_EQ2) {
        if (a->npos != 1 || a->nkw) jfail(c, "the '%s' test takes exactly one argument", name);
        arg = a->pos[0];
    } else if (id != T_FILTER && id != T_TEST) {
        no_args(c, name, a);
    }
    switch (id) {
    case T_ODD:
    case T_EVEN:
    case T_DIVISIBLEBY: {
        /* value % num == 1 / == 0 with Python's % (on a str that is formatting) */
        jv m = jbinop(c, OP_MOD, in, id == T_DIVISIBLEBY ? arg : jv_int(2));
        int r = jv_eq(c, m, jv_int(id == T_ODD ? 1 : 0));
        jv_unref(c, m);
        return r;
    }
    case T_DEFINED: return in.t != JV_UNDEF;
    case T_UNDEFINED: return in.t == JV_UNDEF;
    case T_FILTER: return in.t == JV_STR && jfilter_id(JS(in)->s) >= 0;
    case T_TEST: return in.t == JV_STR && jtest_id(JS(in)->s) >= 0;
    case T_NONE: return in.t == JV_NONE;
    case T_BOOLEAN: return in.t == JV_BOOL;
    case T_FALSE: return in.t == JV_BOOL && !in.u.i;
    case T_TRUE: return in.t == JV_BOOL && in.u.i;
    case T_INTEGER: return in.t == JV_INT;
    case T_FLOAT: return in.t == JV_FLOAT;
    case T_NUMBER: return in.t == JV_INT || in.t == JV_FLOAT || in.t == JV_BOOL;
    case T_LOWER:
    case T_UPPER: {
        jv s = jv_to_str(c, in);
        int cased = 0, ok = 1;
        for (size_t i = 0; i < JS(s)->len;) {
            int cp = utf8_dec(JS(s)->s, JS(s)->len, &i);
            if (uni_iscased_upper(cp)) { cased = 1; if (id == T_LOWER) ok = 0; }
            else if (uni_iscased_lower(cp)) { cased = 1; if (id == T_UPPER) ok = 0; }
        }
        jv_unref(c, s);
        return cased && ok;
    }
    case T_STRING: return in.t == JV_STR;
    case T_MAPPING: return in.t == JV_DICT;
    case T_SEQUENCE:
        return in.t == JV_STR || in.t == JV_DICT || in.t == JV_UNDEF ||
               (in.t == JV_LIST && (JL(in)->h.sub == L_LIST || JL(in)->h.sub == L_TUPLE || JL(in)->h.sub == L_RANGE));
    case T_ITERABLE: return in.t == JV_STR || in.t == JV_DICT || in.t == JV_UNDEF || in.t == JV_LIST || in.t == JV_LOOP;
    case T_CALLABLE:
        return in.t == JV_MACRO || in.t == JV_LOOP || in.t == JV_UNDEF ||
               (in.t == JV_FUNC && ((jfunc *)in.u.o)->id != I_CYCLER);
    case T_SAMEAS: return sameas(in, arg);
    case T_ESCAPED: return in.t == JV_STR && JS(in)->h.sub;
    case T_IN: return jv_contains(c, arg, in);
    case T_EQ2: case T_EQ: case T_EQUALTO: return jv_eq(c, in, arg);
    case T_NE2: case T_NE: return !jv_eq(c, in, arg);
    case T_GT2: case T_GT: case T_GREATERTHAN: return jv_cmp(c, in, arg, ">");
    case T_GE: case T_GE2: return jv_cmp(c, in, arg, ">=");
    case T_LT2: case T_LT: case T_LESSTHAN: return jv_cmp(c, in, arg, "<");
    default: return jv_cmp(c, in, arg, "<=");
    }
}

/* ===== globals ===== */

static void set_global(jctx *c, jdict *g, const char *name, int id) {
    jdict_set(c, g, jv_cstr(c, name), mk_func(c, id, jv_none()));
}

void jglobals_install(jctx *c, jdict *g) {
    set_global(c, g, "range", G_RANGE);
    set_global(c, g, "dict", G_DICT);
    set_global(c, g, "namespace", G_NAMESPACE);
    set_global(c, g, "raise_exception", G_RAISE);
    set_global(c, g, "strftime_now", G_STRFTIME);
    set_global(c, g, "lipsum", G_LIPSUM);
    set_global(c, g, "cycler", G_CYCLER);
    set_global(c, g, "joiner", G_JOINER);
}

#define MAX_RANGE 100000

/* dict(*args, **kwargs) into d */
static void dict_fill(jctx *c, jdict *d, jargs *a, const char *fname) {
    if (a->npos > 1) jfail(c, "%s expected at most 1 argument, got %d", fname, a->npos);
    if (a->npos == 1) {
        jv src = a->pos[0];
        if (src.t == JV_DICT || src.t == JV_NS) {
            for (int64_t i = 0; i < JD(src)->n; i++) jdict_set(c, d, jv_ref(JD(src)->k[i]), jv_ref(JD(src)->v[i]));
        } else {
            jlist *it = jv_iter(c, src);
            for (int64_t i = 0; i < it->n; i++) {
                jv pr = it->a[i];
                jlist *pl = jv_iter(c, pr);
                if (pl->n != 2) jfail(c, "dictionary update sequence element #%lld has length %lld; 2 is required", (long long)i, (long long)pl->n);
                jdict_set(c, d, jv_ref(pl->a[0]), jv_ref(pl->a[1]));
                jobj_unref(c, &pl->h);
            }
            jobj_unref(c, &it->h);
        }
    }
    for (int k = 0; k < a->nkw; k++) jdict_set(c, d, jv_ref(jv_obj(JV_STR, a->knames[k])), jv_ref(a->kvals[k]));
}

static jv str_method(jctx *c, int id, jstr *s, jargs *a);

jv jfunc_call(jctx *c, jfunc *f, jargs *a) {
    jv p[4];
    switch (f->id) {
    case G_RANGE: {
        if (a->nkw) jfail(c, "range() takes no keyword arguments");
        if (a->npos < 1 || a->npos > 3) jfail(c, "range expected at least 1 argument, got %d", a->npos);
        int64_t start = 0, stop, step = 1;
        for (int i = 0; i < a->npos; i++)
            if (!(a->pos[i].t == JV_INT || a->pos[i].t == JV_BOOL)) {
                if (a->pos[i].t == JV_UNDEF) jundefined_fail(c, a->pos[i]);
                jfail(c, "'%s' object cannot be interpreted as an integer", jv_typename(a->pos[i]));
            }
        if (a->npos == 1) stop = a->pos[0].u.i;
        else {
            start = a->pos[0].u.i;
            stop = a->pos[1].u.i;
            if (a->npos == 3) step = a->pos[2].u.i;
        }
        if (step == 0) jfail(c, "range() arg 3 must not be zero");
        double cnt = step > 0 ? (stop > start ? ((double)stop - (double)start - 1) / (double)step + 1 : 0)
                              : (start > stop ? ((double)start - (double)stop - 1) / -(double)step + 1 : 0);
        if (cnt > MAX_RANGE) jfail(c, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE);
        int64_t n = (int64_t)cnt;
        jlist *l = jlist_new(c, n, L_RANGE);
        l->r_start = start;
        l->r_stop = stop;
        l->r_step = step;
        for (int64_t i = 0; i < n; i++) jlist_push(c, l, jv_int(start + i * step));
        return jv_list(l);
    }
    case G_DICT: {
        jdict *d = jdict_new(c, JV_DICT);
        jv dv = jv_obj(JV_DICT, d);
        dict_fill(c, d, a, "dict");
        return dv;
    }
    case G_DICT_FROMKEYS: {
        if (a->nkw || a->npos < 1 || a->npos > 2) jfail(c, "fromkeys expected 1 or 2 arguments");
        jdict *d = jdict_new(c, JV_DICT);
        jv dv = jv_obj(JV_DICT, d);
        jlist *it = jv_iter(c, a->pos[0]);
        for (int64_t i = 0; i < it->n; i++) jdict_set(c, d, jv_ref(it->a[i]), a->npos > 1 ? jv_ref(a->pos[1]) : jv_none());
        jobj_unref(c, &it->h);
        return dv;
    }
    case G_NAMESPACE: {
        jdict *d = jdict_new(c, JV_NS);
        jv dv = jv_obj(JV_NS, d);
        dict_fill(c, d, a, "TemplateNamespace");
        for (int64_t i = 0; i < d->n; i++)
            if (d->k[i].t == JV_STR && JS(d->k[i])->s[0] == '_')
                jfail(c, "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '%s'. Please rename the attribute.", JS(d->k[i])->s);
        return dv;
    }
    case G_RAISE: {
        if (a->npos != 1 || a->nkw) jfail(c, "raise_exception() takes 1 positional argument");
        jv s = jv_to_str(c, a->pos[0]);
        jfail(c, "%s", JS(s)->s);
    }
    case G_STRFTIME: {
        if (a->npos != 1 || a->nkw) jfail(c, "strftime_now() takes 1 positional argument");
        jstr *fmt = as_str(c, a->pos[0], "strftime() argument 1");
        time_t t = (time_t)c->now;
        struct tm tmv;
        localtime_r(&t, &tmv);
        char out[1024];
        size_t k = fmt->len ? strftime(out, sizeof(out), fmt->s, &tmv) : 0;
        if (fmt->len && !k) jfail(c, "strftime() result too long or empty");
        return jv_str(c, out, k);
    }
    case G_LIPSUM: jfail(c, "lipsum() is not supported (it is random)");
    case G_JOINER: {
        static const char *const names[] = {"sep"};
        bind(c, "joiner", a, names, 1, p);
        jdict *st = jdict_new(c, JV_DICT);
        jv sv = jv_obj(JV_DICT, st);
        jdict_set(c, st, jv_cstr(c, "sep"), missing(p[0]) ? jv_cstr(c, ", ") : jv_ref(p[0]));
        jdict_set(c, st, jv_cstr(c, "used"), jv_bool(0));
        jv r = mk_func(c, I_JOINER, sv);
        jv_unref(c, sv);
        return r;
    }
    case I_JOINER: {
        no_args(c, "joiner", a);
        jdict *st = JD(f->self);
        jv *used = jdict_get_str(st, "used", 4);
        if (!used->u.i) {
            used->u.i = 1;
            return jv_str(c, "", 0);
        }
        return jv_ref(*jdict_get_str(st, "sep", 3));
    }
    case G_CYCLER: {
        if (a->nkw) jfail(c, "cycler() takes no keyword arguments");
        if (!a->npos) jfail(c, "at least one item has to be provided");
        jdict *st = jdict_new(c, JV_DICT);
        jv sv = jv_obj(JV_DICT, st);
        jlist *items = jlist_new(c, a->npos, L_TUPLE);
        for (int i = 0; i < a->npos; i++) jlist_push(c, items, jv_ref(a->pos[i]));
        jdict_set(c, st, jv_cstr(c, "items"), jv_list(items));
        jdict_set(c, st, jv_cstr(c, "pos"), jv_int(0));
        jv r = mk_func(c, I_CYCLER, sv);
        jv_unref(c, sv);
        return r;
    }
    case M_CYCLER_NEXT:
    case M_CYCLER_RESET: {
        no_args(c, jfunc_name(f->id), a);
        jdict *st = JD(((jfunc *)f->self.u.o)->self);
        jlist *items = JL(*jdict_get_str(st, "items", 5));
        jv *pos = jdict_get_str(st, "pos", 3);
        if (f->id == M_CYCLER_RESET) {
            pos->u.i = 0;
            return jv_none();
        }
        jv r = jv_ref(items->a[pos->u.i]);
        pos->u.i = (pos->u.i + 1) % items->n;
        return r;
    }
    case M_GET: {
        static const char *const names[] = {"key", "default"};
        if (a->nkw) jfail(c, "get() takes no keyword arguments");
        bind(c, "get", a, names, 2, p);
        if (missing(p[0])) jfail(c, "get expected at least 1 argument, got 0");
        jv *v = jdict_get(c, JD(f->self), p[0]);
        if (v) return jv_ref(*v);
        return missing(p[1]) ? jv_none() : jv_ref(p[1]);
    }
    case M_ITEMS:
    case M_KEYS:
    case M_VALUES: {
        no_args(c, jfunc_name(f->id), a);
        jdict *d = JD(f->self);
        jlist *l = jlist_new(c, d->n, f->id == M_ITEMS ? L_ITEMS : f->id == M_KEYS ? L_KEYS : L_VALUES);
        for (int64_t i = 0; i < d->n; i++) {
            if (f->id == M_ITEMS) jlist_push(c, l, tuple2(c, jv_ref(d->k[i]), jv_ref(d->v[i])));
            else jlist_push(c, l, jv_ref(f->id == M_KEYS ? d->k[i] : d->v[i]));
        }
        return jv_list(l);
    }
    case M_DCOPY: {
        no_args(c, "copy", a);
        jdict *d = jdict_new(c, JV_DICT);
        for (int64_t i = 0; i < JD(f->self)->n; i++) jdict_set(c, d, jv_ref(JD(f->self)->k[i]), jv_ref(JD(f->self)->v[i]));
        return jv_obj(JV_DICT, d);
    }
    case M_LINDEX:
    case M_LCOUNT: {
        if (a->nkw || a->npos < 1) jfail(c, "%s() takes at least 1 argument", jfunc_name(f->id));
        jlist *l = JL(f->self);
        int64_t cnt = 0;
        int64_t from = a->npos > 1 ? as_int(c, a->pos[1]) : 0, to = a->npos > 2 ? as_int(c, a->pos[2]) : l->n;
        if (from < 0) from = from + l->n < 0 ? 0 : from + l->n;
        if (to < 0) to = to + l->n < 0 ? 0 : to + l->n;
        if (to > l->n) to = l->n;
        for (int64_t i = f->id == M_LINDEX ? from : 0; i < (f->id == M_LINDEX ? to : l->n); i++)
            if (jv_eq(c, l->a[i], a->pos[0])) {
                if (f->id == M_LINDEX) return jv_int(i);
                cnt++;
            }
        if (f->id == M_LINDEX) jfail(c, "list.index(x): x not in list");
        return jv_int(cnt);
    }
    case M_LCOPY: {
        no_args(c, "copy", a);
        jlist *l = JL(f->self), *r = jlist_new(c, l->n, L_LIST);
        for (int64_t i = 0; i < l->n; i++) jlist_push(c, r, jv_ref(l->a[i]));
        return jv_list(r);
    }
    case M_CYCLE: {
        if (a->nkw) jfail(c, "cycle() takes no keyword arguments");
        if (!a->npos) jfail(c, "no items for cycling given");
        jloop *l = (jloop *)f->self.u.o;
        return jv_ref(a->pos[l->i % a->npos]);
    }
    case M_CHANGED: {
        if (a->nkw) jfail(c, "changed() takes no keyword arguments");
        jloop *l = (jloop *)f->self.u.o;
        jlist *t = jlist_new(c, a->npos, L_TUPLE);
        jv tv = jv_list(t);
        for (int i = 0; i < a->npos; i++) jlist_push(c, t, jv_ref(a->pos[i]));
        if (l->changed.t != JV_UNDEF && jv_eq(c, l->changed, tv)) {
            jv_unref(c, tv);
            return jv_bool(0);
        }
        jv_unref(c, l->changed);
        l->changed = tv;
        return jv_bool(1);
    }
    default:
        if (f->id >= M_STRIP && f->id <= M_FORMAT) return str_method(c, f->id, JS(f->self), a);
        jfail(c, "'%s' object is not callable", f->id == I_CYCLER ? "Cycler" : "builtin");
    }
}

/* ===== str methods ===== */

static int match_at(const jstr *s, int64_t start_b, int64_t end_b, const jstr *p, int suffix) {
    if (end_b - start_b < (int64_t)p->len) return 0;
    const char *at = suffix ? s->s + end_b - (int64_t)p->len : s->s + start_b;
    return memcmp(at, p->s, p->len) == 0;
}

/* start / end arguments of find, count, startswith...: code point indexes -> byte offsets */
static void span_args(jctx *c, jstr *s, jargs *a, int first, int64_t *b0, int64_t *b1, int *empty) {
    int64_t n = jstr_ncp(s), st = 0, en = n;
    if (a->npos > first && a->pos[first].t != JV_NONE) st = as_int(c, a->pos[first]);
    if (a->npos > first + 1 && a->pos[first + 1].t != JV_NONE) en = as_int(c, a->pos[first + 1]);
    if (st < 0) st = st + n < 0 ? 0 : st + n;
    if (en < 0) en = en + n < 0 ? 0 : en + n;
    if (en > n) en = n;
    *empty = st > n || st > en;
    if (st > n) st = n;
    if (en < st) en = st;
    *b0 = utf8_offset(s->s, s->len, st);
    *b1 = utf8_offset(s->s, s->len, en);
}

static jv str_method(jctx *c, int id, jstr *s, jargs *a) {
    const char *mname = func_names[id];
    jv p[3];
    switch (id) {
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        static const char *const names[] = {"chars"};
        if (a->nkw) jfail(c, "%s() takes no keyword arguments", mname);
        bind(c, mname, a, names, 1, p);
        jstr *chars = (missing(p[0]) || p[0].t == JV_NONE) ? NULL : as_str(c, p[0], "strip arg");
        return str_strip(c, s, chars, id != M_RSTRIP, id != M_LSTRIP);
    }
    case M_SPLIT:
    case M_RSPLIT: {
        static const char *const names[] = {"sep", "maxsplit"};
        bind(c, mname, a, names, 2, p);
        jstr *sep = (missing(p[0]) || p[0].t == JV_NONE) ? NULL : as_str(c, p[0], "separator");
        return str_split(c, s, sep, opt_int(c, p[1], -1), id == M_RSPLIT);
    }
    case M_SPLITLINES: {
        static const char *const names[] = {"keepends"};
        bind(c, mname, a, names, 1, p);
        return str_splitlines(c, s->s, s->len, opt_bool(c, p[0], 0));
    }
    case M_STARTSWITH:
    case M_ENDSWITH: {
        if (a->nkw) jfail(c, "%s() takes no keyword arguments", mname);
        if (a->npos < 1 || a->npos > 3) jfail(c, "%s() takes from 1 to 3 arguments", mname);
        int64_t b0, b1;
        int empty;
        span_args(c, s, a, 1, &b0, &b1, &empty);
        if (empty) return jv_bool(0);
        jv pre = a->pos[0];
        if (pre.t == JV_STR) return jv_bool(match_at(s, b0, b1, JS(pre), id == M_ENDSWITH));
        if (pre.t == JV_LIST && JL(pre)->h.sub == L_TUPLE) {
            for (int64_t i = 0; i < JL(pre)->n; i++) {
                jv x = JL(pre)->a[i];
                if (x.t != JV_STR) jfail(c, "tuple for %s must only contain str, not %s", mname, jv_typename(x));
                if (match_at(s, b0, b1, JS(x), id == M_ENDSWITH)) return jv_bool(1);
            }
            return jv_bool(0);
        }
        jfail(c, "%s first arg must be str or a tuple of str, not %s", mname, jv_typename(pre));
    }
    case M_UPPER: no_args(c, mname, a); return str_case(c, s->s, s->len, CASE_UPPER);
    case M_LOWER:
    case M_CASEFOLD: no_args(c, mname, a); return str_case(c, s->s, s->len, CASE_LOWER);
    case M_TITLE: no_args(c, mname, a); return str_case(c, s->s, s->len, CASE_TITLE);
    case M_CAPITALIZE: no_args(c, mname, a); return str_case(c, s->s, s->len, CASE_CAPITALIZE);
    case M_SWAPCASE: no_args(c, mname, a); return str_case(c, s->s, s->len, CASE_SWAP);
    case M_REPLACE: {
        static const char *const names[] = {"old", "new", "count"};
        bind(c, mname, a, names, 3, p);
        if (missing(p[0]) || missing(p[1])) jfail(c, "replace expected at least 2 arguments");
        return str_replace(c, s, as_str(c, p[0], "replace() argument 1"), as_str(c, p[1], "replace() argument 2"), opt_int(c, p[2], -1));
    }
    case M_FIND:
    case M_RFIND:
    case M_INDEX:
    case M_RINDEX:
    case M_COUNT: {
        if (a->nkw) jfail(c, "%s() takes no keyword arguments", mname);
        if (a->npos < 1 || a->npos > 3) jfail(c, "%s() takes from 1 to 3 arguments", mname);
        jstr *sub = as_str(c, a->pos[0], "must be str, not");
        int64_t b0, b1;
        int empty;
        span_args(c, s, a, 1, &b0, &b1, &empty);
        if (id == M_COUNT) {
            if (empty) return jv_int(0);
            if (!sub->len) return jv_int(cp_index_of(s->s + b0, s->s + b1) + 1);
            int64_t cnt = 0;
            const char *q = s->s + b0, *e = s->s + b1;
            while ((q = find_bytes(q, (size_t)(e - q), sub->s, sub->len))) { cnt++; q += sub->len; }
            return jv_int(cnt);
        }
        const char *hit = NULL;
        if (!empty) hit = (id == M_FIND || id == M_INDEX) ? find_bytes(s->s + b0, (size_t)(b1 - b0), sub->s, sub->len)
                                                           : rfind_bytes(s->s + b0, (size_t)(b1 - b0), sub->s, sub->len);
        if (!hit && !empty && !sub->len) hit = (id == M_FIND || id == M_INDEX) ? s->s + b0 : s->s + b1;
        if (!hit) {
            if (id == M_INDEX || id == M_RINDEX) jfail(c, "substring not found");
            return jv_int(-1);
        }
        return jv_int(cp_index_of(s->s, hit));
    }
    case M_JOIN: {
        if (a->nkw || a->npos != 1) jfail(c, "join() takes exactly one argument");
        jlist *it = jv_iter(c, a->pos[0]);
        jbuf b;
        jbuf_open(c, &b);
        for (int64_t i = 0; i < it->n; i++) {
            if (it->a[i].t != JV_STR) jfail(c, "sequence item %lld: expected str instance, %s found", (long long)i, jv_typename(it->a[i]));
            if (i) jbuf_put(c, &b, s->s, s->len);
            jbuf_put(c, &b, JS(it->a[i])->s, JS(it->a[i])->len);
        }
        jobj_unref(c, &it->h);
        return jbuf_close(c, &b);
    }
    case M_REMOVEPREFIX:
    case M_REMOVESUFFIX: {
        if (a->nkw || a->npos != 1) jfail(c, "%s() takes exactly one argument", mname);
        jstr *x = as_str(c, a->pos[0], mname);
        if (x->len <= s->len && match_at(s, 0, (int64_t)s->len, x, id == M_REMOVESUFFIX))
            return id == M_REMOVEPREFIX ? jv_str(c, s->s + x->len, s->len - x->len) : jv_str(c, s->s, s->len - x->len);
        return jv_ref(jv_obj(JV_STR, s));
    }
    case M_ISDIGIT:
    case M_ISALPHA:
    case M_ISALNUM:
    case M_ISSPACE:
    case M_ISNUMERIC:
    case M_ISDECIMAL: {
        no_args(c, mname, a);
        if (!s->len) return jv_bool(0);
        for (size_t i = 0; i < s->len;) {
            int cp = utf8_dec(s->s, s->len, &i);
            int ok = id == M_ISSPACE ? uni_isspace(cp) : id == M_ISALPHA ? uni_isalpha(cp)
                   : id == M_ISALNUM ? (uni_isalpha(cp) || uni_isdigit(cp)) : uni_isdigit(cp);
            if (id == M_ISDECIMAL && (cp == 0xB2 || cp == 0xB3 || cp == 0xB9)) ok = 0;
            if (!ok) return jv_bool(0);
        }
        return jv_bool(1);
    }
    case M_ISUPPER:
    case M_ISLOWER: {
        no_args(c, mname, a);
        jargs none = {NULL, 0, NULL, NULL, 0};
        return jv_bool(jtest_call(c, id == M_ISUPPER ? T_UPPER : T_LOWER, jv_obj(JV_STR, s), &none));
    }
    case M_ISTITLE: {
        no_args(c, mname, a);
        int prev = 0, cased = 0;
        for (size_t i = 0; i < s->len;) {
            int cp = utf8_dec(s->s, s->len, &i);
            if (uni_iscased_upper(cp)) {
                if (prev) return jv_bool(0);
                prev = cased = 1;
            } else if (uni_iscased_lower(cp)) {
                if (!prev) return jv_bool(0);
                prev = cased = 1;
            } else {
                prev = 0;
            }
        }
        return jv_bool(cased);
    }
    case M_ZFILL: {
        if (a->nkw || a->npos != 1) jfail(c, "zfill() takes exactly one argument");
        int64_t w = as_int(c, a->pos[0]), n = jstr_ncp(s);
        if (w <= n) return jv_ref(jv_obj(JV_STR, s));
        if ((uint64_t)w > c->max_out) jfail(c, "the template's output is too large (more than %zu bytes)", c->max_out);
        jbuf b;
        jbuf_open(c, &b);
        size_t st = 0;
        if (s->len && (s->s[0] == '+' || s->s[0] == '-')) { jbuf_putc(c, &b, s->s[0]); st = 1; }
        for (int64_t i = n; i < w; i++) jbuf_putc(c, &b, '0');
        jbuf_put(c, &b, s->s + st, s->len - st);
        return jbuf_close(c, &b);
    }
    case M_LJUST:
    case M_RJUST:
    case M_CENTER: {
        if (a->nkw || a->npos < 1 || a->npos > 2) jfail(c, "%s() takes 1 or 2 arguments", mname);
        int fill = ' ';
        if (a->npos == 2) {
            jstr *fc = as_str(c, a->pos[1], "The fill character");
            if (jstr_ncp(fc) != 1) jfail(c, "The fill character must be exactly one character long");
            size_t i = 0;
            fill = utf8_dec(fc->s, fc->len, &i);
        }
        return str_pad(c, s, as_int(c, a->pos[0]), fill, id == M_CENTER ? 0 : id == M_LJUST ? 1 : 2);
    }
    case M_PARTITION:
    case M_RPARTITION: {
        if (a->nkw || a->npos != 1) jfail(c, "%s() takes exactly one argument", mname);
        jstr *sep = as_str(c, a->pos[0], "separator");
        if (!sep->len) jfail(c, "empty separator");
        const char *q = id == M_PARTITION ? find_bytes(s->s, s->len, sep->s, sep->len) : rfind_bytes(s->s, s->len, sep->s, sep->len);
        jlist *t = jlist_new(c, 3, L_TUPLE);
        if (!q) {
            if (id == M_PARTITION) {
                jlist_push(c, t, jv_ref(jv_obj(JV_STR, s)));
                jlist_push(c, t, jv_str(c, "", 0));
                jlist_push(c, t, jv_str(c, "", 0));
            } else {
                jlist_push(c, t, jv_str(c, "", 0));
                jlist_push(c, t, jv_str(c, "", 0));
                jlist_push(c, t, jv_ref(jv_obj(JV_STR, s)));
            }
        } else {
            jlist_push(c, t, jv_str(c, s->s, (size_t)(q - s->s)));
            jlist_push(c, t, jv_ref(jv_obj(JV_STR, sep)));
            jlist_push(c, t, jv_str(c, q + sep->len, s->len - (size_t)(q - s->s) - sep->len));
        }
        return jv_list(t);
    }
    case M_FORMAT: return str_format(c, s, a);
    default: jfail(c, "internal error: unknown str method");
    }
}

/* ===== attributes of builtin types ===== */

static int name_in(const jstr *n, const char *const *list) {
    for (; *list; list++)
        if (!strcmp(n->s, *list)) return 1;
    return 0;
}

static const char *const UNSAFE_DICT[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};
static const char *const UNSAFE_LIST[] = {"append", "clear", "pop", "reverse", "insert", "sort", "extend", "remove", NULL};

jv jattr_builtin(jctx *c, jv obj, jstr *name, int *found) {
    *found = 0;
    switch (obj.t) {
    case JV_STR:
        for (int id = M_STRIP; id <= M_FORMAT; id++)
            if (!strcmp(func_names[id], name->s)) {
                *found = 1;
                return mk_func(c, id, obj);
            }
        return jv_undef();
    case JV_DICT:
        if (name_in(name, UNSAFE_DICT)) { *found = 2; return jv_undef(); }
        for (int id = M_GET; id <= M_DCOPY; id++)
            if (!strcmp(func_names[id], name->s)) {
                *found = 1;
                return mk_func(c, id, obj);
            }
        if (!strcmp(name->s, "fromkeys")) { *found = 1; return mk_func(c, G_DICT_FROMKEYS, jv_none()); }
        return jv_undef();
    case JV_LIST: {
        int sub = JL(obj)->h.sub;
        if (sub == L_LIST && name_in(name, UNSAFE_LIST)) { *found = 2; return jv_undef(); }
        if (sub == L_LIST || sub == L_TUPLE || sub == L_RANGE) {
            if (!strcmp(name->s, "index")) { *found = 1; return mk_func(c, M_LINDEX, obj); }
            if (!strcmp(name->s, "count")) { *found = 1; return mk_func(c, M_LCOUNT, obj); }
            if (sub == L_LIST && !strcmp(name->s, "copy")) { *found = 1; return mk_func(c, M_LCOPY, obj); }
        }
        if (sub == L_TUPLE && JL(obj)->gen_name == GROUP_TUPLE) {
            if (!strcmp(name->s, "grouper")) { *found = 1; return jv_ref(JL(obj)->a[0]); }
            if (!strcmp(name->s, "list")) { *found = 1; return jv_ref(JL(obj)->a[1]); }
        }
        if (sub == L_RANGE) {
            jlist *l = JL(obj);
            if (!strcmp(name->s, "start")) { *found = 1; return jv_int(l->r_start); }
            if (!strcmp(name->s, "stop")) { *found = 1; return jv_int(l->r_stop); }
            if (!strcmp(name->s, "step")) { *found = 1; return jv_int(l->r_step); }
        }
        return jv_undef();
    }
    case JV_LOOP: {
        jloop *l = (jloop *)obj.u.o;
        const char *s = name->s;
        int64_t i = l->i;
        if (!strcmp(s, "last") || !strcmp(s, "nextitem")) jloop_fill(c, l, i + 1);
        else if (!strcmp(s, "length") || !strcmp(s, "revindex") || !strcmp(s, "revindex0")) jloop_fill(c, l, INT64_MAX);
        int64_t n = l->items->n;
        *found = 1;
        if (!strcmp(s, "index")) return jv_int(i + 1);
        if (!strcmp(s, "index0")) return jv_int(i);
        if (!strcmp(s, "revindex")) return jv_int(n - i);
        if (!strcmp(s, "revindex0")) return jv_int(n - i - 1);
        if (!strcmp(s, "first")) return jv_bool(i == 0);
        if (!strcmp(s, "last")) return jv_bool(i == n - 1);
        if (!strcmp(s, "length")) return jv_int(n);
        if (!strcmp(s, "depth")) return jv_int(l->depth0 + 1);
        if (!strcmp(s, "depth0")) return jv_int(l->depth0);
        if (!strcmp(s, "previtem")) return i > 0 ? jv_ref(l->items->a[i - 1]) : jv_undef_msg(c, "there is no previous item");
        if (!strcmp(s, "nextitem")) return i + 1 < n ? jv_ref(l->items->a[i + 1]) : jv_undef_msg(c, "there is no next item");
        if (!strcmp(s, "cycle")) return mk_func(c, M_CYCLE, obj);
        if (!strcmp(s, "changed")) return mk_func(c, M_CHANGED, obj);
        *found = 0;
        return jv_undef();
    }
    case JV_FUNC: {
        jfunc *f = (jfunc *)obj.u.o;
        if (f->id == G_DICT && !strcmp(name->s, "fromkeys")) { *found = 1; return mk_func(c, G_DICT_FROMKEYS, jv_none()); }
        if (f->id == I_CYCLER) {
            jdict *st = JD(f->self);
            if (!strcmp(name->s, "next")) { *found = 1; return mk_func(c, M_CYCLER_NEXT, obj); }
            if (!strcmp(name->s, "reset")) { *found = 1; return mk_func(c, M_CYCLER_RESET, obj); }
            if (!strcmp(name->s, "current")) {
                *found = 1;
                return jv_ref(JL(*jdict_get_str(st, "items", 5))->a[jdict_get_str(st, "pos", 3)->u.i]);
            }
            if (!strcmp(name->s, "items")) { *found = 1; return jv_ref(*jdict_get_str(st, "items", 5)); }
        }
        return jv_undef();
    }
    case JV_MACRO: {
        jmacro *m = (jmacro *)obj.u.o;
        const jnode *n = m->node;
        if (!strcmp(name->s, "name")) {
            *found = 1;
            return n->kind == S_MACRO ? jv_ref(jv_obj(JV_STR, n->name)) : jv_cstr(c, "caller");
        }
        if (!strcmp(name->s, "arguments")) {
            *found = 1;
            jlist *t = jlist_new(c, n->nnames, L_TUPLE);
            for (int i = 0; i < n->nnames; i++) jlist_push(c, t, jv_obj(JV_STR, n->names[i]));
            return jv_list(t);
        }
        if (!strcmp(name->s, "catch_kwargs")) { *found = 1; return jv_bool((n->flags & NF_KWARGS) != 0); }
        if (!strcmp(name->s, "catch_varargs")) { *found = 1; return jv_bool((n->flags & NF_VARARGS) != 0); }
        if (!strcmp(name->s, "caller")) { *found = 1; return jv_bool((n->flags & NF_CALLER) != 0); }
        return jv_undef();
    }
    default:
        return jv_undef();
    }
}
