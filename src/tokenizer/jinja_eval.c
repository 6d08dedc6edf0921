/*
 * jinja_eval.c - the Jinja evaluator: runs a parsed template over a render context.
 *
 * Scopes follow what jinja2's compiler produces (checked case by case against jinja2):
 *   - the template has one top frame over the root frame (globals + render variables);
 *   - every iteration of a for loop runs in a fresh frame (a `set` in iteration 1 is not seen in
 *     iteration 2, nor after the loop; the loop variables and `loop` live there);
 *   - if / elif / else do not open a frame; macros, call blocks, {% set %}...{% endset %} bodies,
 *     filter blocks and with blocks do;
 *   - a macro's frame hangs under the frame it was defined in (it sees later top-level sets, not its
 *     caller's variables); arguments are bound like jinja2's Macro.__call__ (defaults evaluated in the
 *     macro frame in order, `varargs` / `kwargs` / `caller` only when the body mentions them).
 * Attribute and item access follow the sandbox: x.name prefers the attribute (methods of str, dict,
 * list...) and falls back to the item, x[key] the reverse; a missing one is Undefined, an unsafe one
 * (list.append, __class__) an Undefined that raises a security error when used.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer/jinja_impl.h"

/* names the evaluator binds itself (immortal strings of the render) */
static jstr *g_name(jctx *c, const char *s) {
    jstr *r = jstr_new(c, s, strlen(s));
    r->h.rc = -1;
    return r;
}

typedef struct {
    jstr *loop, *caller, *varargs, *kwargs;
} jnames;

static jnames *names_of(jctx *c);

/* ===== frames ===== */

static jframe *frame_new(jctx *c, jframe *parent) {
    jframe *f = jobj_new_part(c, sizeof(jframe), offsetof(jframe, inl_names), JO_FRAME, 0);
    f->names = f->inl_names;
    f->vals = f->inl_vals;
    f->cap = FRAME_INLINE;
    f->parent = parent;
    if (parent) parent->h.rc++;
    return f;
}

static void frame_unref(jctx *c, jframe *f) { jobj_unref(c, &f->h); }

static jv *frame_find(jframe *f, const jstr *name) {
    for (int i = f->n - 1; i >= 0; i--)
        if (f->names[i] == name || jstr_eq(f->names[i], name)) return &f->vals[i];
    if (f->dict) return jdict_get_str(f->dict, name->s, name->len);
    return NULL;
}

static jv *frame_lookup(jframe *f, const jstr *name) {
    for (; f; f = f->parent) {
        jv *v = frame_find(f, name);
        if (v) return v;
    }
    return NULL;
}

/* bind name in f (takes the reference); name must outlive the frame (a template or render name) */
static void frame_set(jctx *c, jframe *f, jstr *name, jv v) {
    for (int i = 0; i < f->n; i++)
        if (f->names[i] == name || jstr_eq(f->names[i], name)) {
            jv old = f->vals[i];
            f->vals[i] = v;
            jv_unref(c, old);
            return;
        }
    if (f->n == f->cap) {
        int cap = 2 * f->cap;
        jstr **nn = jalloc(c, sizeof(jstr *) * (size_t)cap);
        jv *nv = jalloc(c, sizeof(jv) * (size_t)cap);
        memcpy(nn, f->names, sizeof(jstr *) * (size_t)f->n);
        memcpy(nv, f->vals, sizeof(jv) * (size_t)f->n);
        if (f->names != f->inl_names) {
            jfree(c, f->names, sizeof(jstr *) * (size_t)f->cap);
            jfree(c, f->vals, sizeof(jv) * (size_t)f->cap);
        }
        f->names = nn;
        f->vals = nv;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n] = v;
    f->n++;
}

/* ===== forward declarations ===== */

static jv eval(jctx *c, const jnode *e, jframe *f);
static void exec_list(jctx *c, const jnodes *l, jframe *f);
static void exec_for(jctx *c, const jnode *n, jframe *f, jv iterable, int depth0);

/* ===== attribute and item access ===== */

static int is_dunder(const jstr *s) { return s->len >= 4 && s->s[0] == '_' && s->s[1] == '_' && s->s[s->len - 1] == '_' && s->s[s->len - 2] == '_'; }

static jv unsafe_attr(jctx *c, jv obj, const jstr *name) {
    jv u = jv_undef_msg(c, "access to attribute '%s' of '%s' object is unsafe.", name->s, jv_typename(obj));
    u.flag = 1;
    return u;
}

/* the attribute of a Python object (no item fallback); *found = 0 when it has none */
static jv attr_only(jctx *c, jv obj, jstr *name, int *found) {
    *found = 0;
    if (is_dunder(name)) {
        *found = 1;
        return unsafe_attr(c, obj, name);
    }
    if (obj.t == JV_NS) {
        jv *v = jdict_get_str(JD(obj), name->s, name->len);
        if (v) { *found = 1; return jv_ref(*v); }
        return jv_undef();
    }
    jv r = jattr_builtin(c, obj, name, found);
    if (*found == 2) {
        *found = 1;
        return unsafe_attr(c, obj, name);
    }
    return r;
}

jv jgetattr(jctx *c, jv obj, jstr *name) {
    if (obj.t == JV_UNDEF) jundefined_fail(c, obj);
    int found;
    jv r = attr_only(c, obj, name, &found);
    if (found) return r;
    if (obj.t == JV_DICT) {
        jv *v = jdict_get_str(JD(obj), name->s, name->len);
        if (v) return jv_ref(*v);
    }
    return jv_undef_attr(c, obj, jv_obj(JV_STR, name));
}

/* Python's index normalisation; returns -1 when out of range */
static int64_t norm_index(int64_t i, int64_t n) {
    if (i < 0) i += n;
    return (i < 0 || i >= n) ? -1 : i;
}

static int is_intlike(jv v) { return v.t == JV_INT || v.t == JV_BOOL; }

/* obj[key] without the attribute fallback; *ok = 0 when Python raises TypeError / LookupError */
static jv item_only(jctx *c, jv obj, jv key, int *ok) {
    *ok = 1;
    switch (obj.t) {
    case JV_DICT: {
        if (key.t == JV_LIST && (JL(key)->h.sub == L_LIST || JL(key)->h.sub == L_KEYS)) break;   /* unhashable */
        if (key.t == JV_DICT) break;
        jv *v = jdict_get(c, JD(obj), key);
        if (v) return jv_ref(*v);
        break;
    }
    case JV_LIST: {
        jlist *l = JL(obj);
        if (l->h.sub != L_LIST && l->h.sub != L_TUPLE && l->h.sub != L_RANGE) break;
        if (!is_intlike(key)) break;
        int64_t i = norm_index(key.u.i, l->n);
        if (i < 0) break;
        return jv_ref(l->a[i]);
    }
    case JV_STR: {
        if (!is_intlike(key)) break;
        jstr *s = JS(obj);
        int64_t i = norm_index(key.u.i, jstr_ncp(s));
        if (i < 0) break;
        int64_t off = utf8_offset(s->s, s->len, i);
        size_t e = (size_t)off;
        utf8_dec(s->s, s->len, &e);
        return jv_str(c, s->s + off, e - (size_t)off);
    }
    case JV_UNDEF: jundefined_fail(c, obj);
    default: break;
    }
    *ok = 0;
    return jv_undef();
}

jv jgetitem(jctx *c, jv obj, jv key) {
    int ok;
    jv r = item_only(c, obj, key, &ok);
    if (ok) return r;
    if (key.t == JV_STR) {
        int found;
        r = attr_only(c, obj, JS(key), &found);
        if (found) return r;
    }
    return jv_undef_attr(c, obj, key);
}

/* Python slice semantics (PySlice_AdjustIndices) */
static int slice_indices(jctx *c, jv vstart, jv vstop, jv vstep, int64_t len, int64_t *start, int64_t *stop, int64_t *step) {
    jv parts[3] = {vstart, vstop, vstep};
    for (int i = 0; i < 3; i++)
        if (parts[i].t != JV_NONE && !is_intlike(parts[i])) return 0;
    *step = vstep.t == JV_NONE ? 1 : vstep.u.i;
    if (*step == 0) jfail(c, "slice step cannot be zero");
    if (*step == INT64_MIN) *step = -INT64_MAX;
    int64_t lo = *step < 0 ? -1 : 0, hi = *step < 0 ? len - 1 : len;
    if (vstart.t == JV_NONE) *start = *step < 0 ? hi : lo;
    else {
        *start = vstart.u.i;
        if (*start < 0) { *start += len; if (*start < lo) *start = lo; }
        else if (*start > hi) *start = hi;
    }
    if (vstop.t == JV_NONE) *stop = *step < 0 ? lo : hi;
    else {
        *stop = vstop.u.i;
        if (*stop < 0) { *stop += len; if (*stop < lo) *stop = lo; }
        else if (*stop > hi) *stop = hi;
    }
    return 1;
}

static int64_t slice_count(int64_t start, int64_t stop, int64_t step) {
    if (step > 0) return start < stop ? (stop - start - 1) / step + 1 : 0;
    return stop < start ? (start - stop - 1) / (-step) + 1 : 0;
}

/* obj[a:b:s]: jinja2 compiles slices to a plain Python subscript (no sandbox fallback), so every
 * failure is an error */
static _Noreturn void bad_slice(jctx *c, jv obj) {
    if (obj.t == JV_DICT) jfail(c, "unhashable type: 'slice'");
    if (obj.t == JV_LIST || obj.t == JV_STR) jfail(c, "slice indices must be integers or None or have an __index__ method");
    jfail(c, "'%s' object is not subscriptable", jv_typename(obj));
}

static jv do_slice(jctx *c, jv obj, jv a, jv b, jv s) {
    int64_t start, stop, step, len;
    if (obj.t == JV_UNDEF) jundefined_fail(c, obj);
    if (obj.t == JV_STR) {
        jstr *str = JS(obj);
        len = jstr_ncp(str);
        if (!slice_indices(c, a, b, s, len, &start, &stop, &step)) bad_slice(c, obj);
        int64_t cnt = slice_count(start, stop, step);
        if (step == 1 && cnt > 0) {
            int64_t o1 = utf8_offset(str->s, str->len, start), o2 = utf8_offset(str->s, str->len, start + cnt);
            return jv_str(c, str->s + o1, (size_t)(o2 - o1));
        }
        /* general steps: collect the code points' byte offsets */
        int64_t *offs = jtmp(c, sizeof(int64_t) * (size_t)(len + 1));
        size_t i = 0;
        for (int64_t k = 0; k <= len; k++) {
            offs[k] = (int64_t)i;
            if (k < len) utf8_dec(str->s, str->len, &i);
        }
        jbuf out;
        jbuf_open(c, &out);
        for (int64_t k = 0, p = start; k < cnt; k++, p += step) jbuf_put(c, &out, str->s + offs[p], (size_t)(offs[p + 1] - offs[p]));
        jtmp_free(c, offs);
        return jbuf_close(c, &out);
    }
    if (obj.t == JV_LIST && (JL(obj)->h.sub == L_LIST || JL(obj)->h.sub == L_TUPLE || JL(obj)->h.sub == L_RANGE)) {
        jlist *l = JL(obj);
        if (!slice_indices(c, a, b, s, l->n, &start, &stop, &step)) bad_slice(c, obj);
        int64_t cnt = slice_count(start, stop, step);
        jlist *r = jlist_new(c, cnt, l->h.sub);
        for (int64_t k = 0, p = start; k < cnt; k++, p += step) jlist_push(c, r, jv_ref(l->a[p]));
        if (l->h.sub == L_RANGE) {
            r->r_start = l->r_start + start * l->r_step;
            r->r_stop = l->r_start + (start + cnt * step) * l->r_step;
            r->r_step = l->r_step * step;
            if (cnt == 0) r->r_stop = r->r_start;
        }
        return jv_list(r);
    }
    bad_slice(c, obj);
}

/* ===== arithmetic ===== */

static int is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static double as_f(jv v) { return v.t == JV_FLOAT ? v.u.f : (double)v.u.i; }

static const char *op_sym(int op) {
    static const char *const s[] = {"+", "-", "*", "/", "//", "%", "** or pow()"};
    return s[op];
}

static _Noreturn void bad_operands(jctx *c, int op, jv a, jv b) {
    jfail(c, "unsupported operand type(s) for %s: '%s' and '%s'", op_sym(op), jv_typename(a), jv_typename(b));
}

static jv repeat(jctx *c, jv seq, int64_t times) {
    if (times < 0) times = 0;
    if (seq.t == JV_STR) {
        jstr *s = JS(seq);
        if (s->len && (uint64_t)times > (uint64_t)c->max_out / s->len)
            jfail(c, "the template's output is too large (more than %zu bytes)", c->max_out);
        jbuf b;
        jbuf_open(c, &b);
        for (int64_t i = 0; i < times; i++) jbuf_put(c, &b, s->s, s->len);
        return jbuf_close(c, &b);
    }
    jlist *l = JL(seq);
    if (l->n && (uint64_t)times > (uint64_t)(c->max_mem / sizeof(jv)) / (uint64_t)l->n)
        jfail(c, "the template used too much memory (more than %zu bytes of values)", c->max_mem);
    jlist *r = jlist_new(c, l->n * times, l->h.sub);
    for (int64_t t = 0; t < times; t++)
        for (int64_t i = 0; i < l->n; i++) jlist_push(c, r, jv_ref(l->a[i]));
    return jv_list(r);
}

static int is_plain_seq(jv v) { return v.t == JV_LIST && (JL(v)->h.sub == L_LIST || JL(v)->h.sub == L_TUPLE); }

/* Python's float floor division and modulo (floatobject.c float_divmod) */
static void float_divmod(jctx *c, double vx, double wx, double *fdiv, double *fmodv, int op) {
    if (wx == 0) jfail(c, op == OP_MOD ? "float modulo" : "float floor division by zero");
    double mod = fmod(vx, wx);
    double div = (vx - mod) / wx;
    if (mod != 0) {
        if ((wx < 0) != (mod < 0)) {
            mod += wx;
            div -= 1.0;
        }
    } else {
        mod = copysign(0.0, wx);
    }
    double floordiv;
    if (div != 0) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, vx / wx);
    }
    *fdiv = floordiv;
    *fmodv = mod;
}

jv jbinop(jctx *c, int op, jv a, jv b) {
    if (a.t == JV_UNDEF) jundefined_fail(c, a);
    if (b.t == JV_UNDEF) jundefined_fail(c, b);
    if (is_num(a) && is_num(b)) {
        int fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
        int64_t x = a.u.i, y = b.u.i, r;
        switch (op) {
        case OP_ADD:
            if (fl) return jv_float(as_f(a) + as_f(b));
            if (__builtin_add_overflow(x, y, &r)) break;
            return jv_int(r);
        case OP_SUB:
            if (fl) return jv_float(as_f(a) - as_f(b));
            if (__builtin_sub_overflow(x, y, &r)) break;
            return jv_int(r);
        case OP_MUL:
            if (fl) return jv_float(as_f(a) * as_f(b));
            if (__builtin_mul_overflow(x, y, &r)) break;
            return jv_int(r);
        case OP_DIV:
            if (as_f(b) == 0) jfail(c, fl ? "float division by zero" : "division by zero");
            return jv_float(as_f(a) / as_f(b));
        case OP_FLOORDIV:
        case OP_MOD: {
            if (fl) {
                double d, m;
                float_divmod(c, as_f(a), as_f(b), &d, &m, op);
                return jv_float(op == OP_MOD ? m : d);
            }
            if (y == 0) jfail(c, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) {
                if (op == OP_MOD) return jv_int(0);
                break;
            }
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q -= 1;
                m += y;
            }
            return jv_int(op == OP_MOD ? m : q);
        }
        case OP_POW: {
            if (!fl && y >= 0) {
                int64_t res = 1, base = x;
                int64_t e = y;
                int ovf = 0;
                while (e > 0) {
                    if (e & 1) ovf |= __builtin_mul_overflow(res, base, &res);
                    e >>= 1;
                    if (e) ovf |= __builtin_mul_overflow(base, base, &base);
                }
                if (ovf) break;
                return jv_int(res);
            }
            double fx = as_f(a), fy = as_f(b);
            if (fx == 0 && fy < 0) jfail(c, fl ? "0.0 cannot be raised to a negative power" : "0.0 cannot be raised to a negative power");
            if (fx < 0 && fy != floor(fy)) jfail(c, "a negative number raised to a fractional power is complex (not supported)");
            double res = pow(fx, fy);
            if (isinf(res) && !isinf(fx) && !isinf(fy)) jfail(c, "(34, 'Numerical result out of range')");
            return jv_float(res);
        }
        }
        jfail(c, "integer overflow (Python integers are unbounded; this interpreter's are 64-bit)");
    }
    switch (op) {
    case OP_ADD:
        if (a.t == JV_STR && b.t == JV_STR) {
            size_t total = JS(a)->len + JS(b)->len;
            if (total > c->max_out) jfail(c, "the template's output is too large (more than %zu bytes)", c->max_out);
            jstep(c, (int64_t)(total >> 8));
            jstr *r = jstr_new(c, NULL, total);
            memcpy(r->s, JS(a)->s, JS(a)->len);
            memcpy(r->s + JS(a)->len, JS(b)->s, JS(b)->len);
            return jv_obj(JV_STR, r);
        }
        if (is_plain_seq(a) && is_plain_seq(b) && JL(a)->h.sub == JL(b)->h.sub) {
            jlist *x = JL(a), *y = JL(b);
            jlist *r = jlist_new(c, x->n + y->n, x->h.sub);
            for (int64_t i = 0; i < x->n; i++) jlist_push(c, r, jv_ref(x->a[i]));
            for (int64_t i = 0; i < y->n; i++) jlist_push(c, r, jv_ref(y->a[i]));
            return jv_list(r);
        }
        if (a.t == JV_STR) jfail(c, "can only concatenate str (not \"%s\") to str", jv_typename(b));
        if (is_plain_seq(a)) jfail(c, "can only concatenate %s (not \"%s\") to %s", jv_typename(a), jv_typename(b), jv_typename(a));
        break;
    case OP_MUL:
        if ((a.t == JV_STR || is_plain_seq(a)) && is_intlike(b)) return repeat(c, a, b.u.i);
        if ((b.t == JV_STR || is_plain_seq(b)) && is_intlike(a)) return repeat(c, b, a.u.i);
        if (a.t == JV_STR || is_plain_seq(a)) jfail(c, "can't multiply sequence by non-int of type '%s'", jv_typename(b));
        if (b.t == JV_STR || is_plain_seq(b)) jfail(c, "can't multiply sequence by non-int of type '%s'", jv_typename(a));
        break;
    case OP_MOD:
        if (a.t == JV_STR) return jformat_percent(c, JS(a), b);
        break;
    default:
        break;
    }
    bad_operands(c, op, a, b);
}

/* ===== calls ===== */

/* evaluate the arguments of a call / filter / test node (args, kwargs, *dyn, **dyn); a **dyn dict
 * is kept in a hidden slot after the positional arguments (its keys are the keyword names) */
static void eval_args(jctx *c, const jnode *n, jframe *f, jargs *a, jstr *extra_name, jv extra_val) {
    jlist *dyn = NULL;
    jdict *dynk = NULL;
    jv dk = jv_none();
    if (n->b) {
        jv d = eval(c, n->b, f);
        dyn = jv_iter(c, d);
        jv_unref(c, d);
    }
    if (n->c) {
        dk = eval(c, n->c, f);
        if (dk.t != JV_DICT) jfail(c, "argument after ** must be a mapping, not %s", jv_typename(dk));
        dynk = JD(dk);
    }
    int npos = n->list.n + (dyn ? (int)dyn->n : 0);
    int nkw = n->nnames + (dynk ? (int)dynk->n : 0) + (extra_name ? 1 : 0);
    a->pos = jtmp(c, sizeof(jv) * (size_t)(npos + 1));
    a->knames = jtmp(c, sizeof(jstr *) * (size_t)(nkw + 1));
    a->kvals = jtmp(c, sizeof(jv) * (size_t)(nkw + 1));
    a->npos = a->nkw = 0;
    a->pos[npos] = dk;
    for (int i = 0; i < n->list.n; i++) a->pos[a->npos++] = eval(c, n->list.v[i], f);
    if (dyn) {
        for (int64_t i = 0; i < dyn->n; i++) a->pos[a->npos++] = jv_ref(dyn->a[i]);
        jobj_unref(c, &dyn->h);
    }
    for (int i = 0; i < n->nnames; i++) {
        a->knames[a->nkw] = n->names[i];
        a->kvals[a->nkw++] = eval(c, n->list2.v[i], f);
    }
    if (dynk) {
        for (int64_t i = 0; i < dynk->n; i++) {
            if (dynk->k[i].t != JV_STR) jfail(c, "keywords must be strings");
            a->knames[a->nkw] = JS(dynk->k[i]);
            a->kvals[a->nkw++] = jv_ref(dynk->v[i]);
        }
    }
    if (extra_name) {
        a->knames[a->nkw] = extra_name;
        a->kvals[a->nkw++] = jv_ref(extra_val);
    }
}

static void args_release(jctx *c, jargs *a) {
    jv_unref(c, a->pos[a->npos]);
    for (int i = 0; i < a->npos; i++) jv_unref(c, a->pos[i]);
    for (int i = 0; i < a->nkw; i++) jv_unref(c, a->kvals[i]);
    jtmp_free(c, a->pos);
    jtmp_free(c, a->knames);
    jtmp_free(c, a->kvals);
}

static jv call_macro(jctx *c, jmacro *m, jargs *a) {
    const jnode *n = m->node;
    const char *mname = n->kind == S_MACRO ? n->name->s : "caller";
    jnames *N = names_of(c);
    jstep(c, 1);
    if (c->depth >= c->max_depth) jfail(c, "maximum recursion depth exceeded (more than %d nested calls)", c->max_depth);
    int np = n->nnames;
    char used_kw[512];
    if (a->nkw > (int)sizeof(used_kw)) jfail(c, "too many keyword arguments");
    memset(used_kw, 0, (size_t)a->nkw);
    jframe *mf = frame_new(c, m->closure);
    unsigned char given[256];
    memset(given, 0, sizeof(given));
    int npos_used = a->npos < np ? a->npos : np;
    for (int i = 0; i < npos_used; i++) {
        frame_set(c, mf, n->names[i], jv_ref(a->pos[i]));
        given[i] = 1;
    }
    int found_caller = 0;
    if (npos_used != np) {
        for (int i = npos_used; i < np; i++) {
            for (int k = 0; k < a->nkw; k++)
                if (!used_kw[k] && jstr_eq(a->knames[k], n->names[i])) {
                    used_kw[k] = 1;
                    frame_set(c, mf, n->names[i], jv_ref(a->kvals[k]));
                    given[i] = 1;
                    break;
                }
            if (!strcmp(n->names[i]->s, "caller")) found_caller = 1;
        }
    } else {
        found_caller = (n->flags & NF_EXPLICIT_CALLER) != 0;
    }
    if ((n->flags & NF_CALLER) && !found_caller) {
        jv cv = jv_none();
        int have = 0;
        for (int k = 0; k < a->nkw; k++)
            if (!used_kw[k] && !strcmp(a->knames[k]->s, "caller")) {
                used_kw[k] = 1;
                cv = jv_ref(a->kvals[k]);
                have = 1;
                break;
            }
        if (!have || cv.t == JV_NONE) cv = jv_undef_msg(c, "No caller defined");
        frame_set(c, mf, N->caller, cv);
    }
    if (n->flags & NF_KWARGS) {
        jdict *kw = jdict_new(c, JV_DICT);
        frame_set(c, mf, N->kwargs, jv_obj(JV_DICT, kw));
        for (int k = 0; k < a->nkw; k++)
            if (!used_kw[k]) jdict_set(c, kw, jv_ref(jv_obj(JV_STR, a->knames[k])), jv_ref(a->kvals[k]));
    } else {
        for (int k = 0; k < a->nkw; k++)
            if (!used_kw[k]) {
                if (!strcmp(a->knames[k]->s, "caller"))
                    jfail(c, "macro '%s' was invoked with two values for the special caller argument. This is most likely a bug.", mname);
                jfail(c, "macro '%s' takes no keyword argument '%s'", mname, a->knames[k]->s);
            }
    }
    if (n->flags & NF_VARARGS) {
        jlist *va = jlist_new(c, a->npos > np ? a->npos - np : 0, L_TUPLE);
        for (int i = np; i < a->npos; i++) jlist_push(c, va, jv_ref(a->pos[i]));
        frame_set(c, mf, N->varargs, jv_list(va));
    } else if (a->npos > np) {
        jfail(c, "macro '%s' takes not more than %d argument(s)", mname, np);
    }
    int saved_line = c->line;
    c->depth++;
    for (int i = 0; i < np; i++) {
        if (given[i]) continue;
        int d = i - (np - n->list.n);
        jv v = d >= 0 ? eval(c, n->list.v[d], mf) : jv_undef_msg(c, "parameter '%s' was not provided", n->names[i]->s);
        frame_set(c, mf, n->names[i], v);
    }
    jbuf out;
    jbuf_open(c, &out);
    exec_list(c, &n->body, mf);
    c->ctl = CTL_NONE;
    c->depth--;
    c->line = saved_line;
    frame_unref(c, mf);
    return jbuf_close(c, &out);
}

jv jcall_value(jctx *c, jv callee, jargs *a) {
    switch (callee.t) {
    case JV_MACRO: return call_macro(c, (jmacro *)callee.u.o, a);
    case JV_FUNC: return jfunc_call(c, (jfunc *)callee.u.o, a);
    case JV_LOOP: {
        jloop *l = (jloop *)callee.u.o;
        if (!(l->node->flags & NF_RECURSIVE)) jfail(c, "The loop must have the 'recursive' marker to be called recursively.");
        if (a->npos != 1 || a->nkw) jfail(c, "loop() takes exactly one argument");
        if (c->depth >= c->max_depth) jfail(c, "maximum recursion depth exceeded (more than %d nested calls)", c->max_depth);
        int saved_line = c->line;
        c->depth++;
        jbuf out;
        jbuf_open(c, &out);
        exec_for(c, l->node, l->frame, a->pos[0], l->depth0 + 1);
        c->depth--;
        c->line = saved_line;
        return jbuf_close(c, &out);
    }
    case JV_UNDEF: jundefined_fail(c, callee);
    default: jfail(c, "'%s' object is not callable", jv_typename(callee));
    }
}

static jv eval_call(jctx *c, const jnode *n, jframe *f, jstr *extra_name, jv extra_val) {
    jv callee = eval(c, n->a, f);
    jargs a;
    eval_args(c, n, f, &a, extra_name, extra_val);
    jv r = jcall_value(c, callee, &a);
    args_release(c, &a);
    jv_unref(c, callee);
    return r;
}

/* the filter of node n applied to `in` (consumed) */
static jv apply_filter(jctx *c, const jnode *n, jframe *f, jv in) {
    if (n->fid < 0) jfail(c, "No filter named '%s' found.", n->name->s);
    jargs a;
    eval_args(c, n, f, &a, NULL, jv_none());
    jv r = jfilter_call(c, n->fid, in, &a);
    args_release(c, &a);
    jv_unref(c, in);
    return r;
}

/* a filter chain whose innermost input is the text of a block */
static jv eval_filter_chain(jctx *c, const jnode *n, jframe *f, jv block_input) {
    if (!n) return jv_ref(block_input);
    return apply_filter(c, n, f, n->a ? eval_filter_chain(c, n->a, f, block_input) : jv_ref(block_input));
}

/* ===== expressions ===== */

static int compare(jctx *c, int op, jv a, jv b) {
    switch (op) {
    case CMP_EQ: return jv_eq(c, a, b);
    case CMP_NE: return !jv_eq(c, a, b);
    case CMP_LT: return jv_cmp(c, a, b, "<");
    case CMP_LE: return jv_cmp(c, a, b, "<=");
    case CMP_GT: return jv_cmp(c, a, b, ">");
    case CMP_GE: return jv_cmp(c, a, b, ">=");
    case CMP_IN: return jv_contains(c, b, a);
    default: return !jv_contains(c, b, a);
    }
}

static jv eval(jctx *c, const jnode *e, jframe *f) {
    switch (e->kind) {
    case E_CONST: return jv_ref(e->cval);
    case E_NAME: {
        jv *v = frame_lookup(f, e->name);
        if (v) return jv_ref(*v);
        return jv_undef_msg(c, "'%s' is undefined", e->name->s);
    }
    case E_TUPLE:
    case E_LIST: {
        jlist *l = jlist_new(c, e->list.n, e->kind == E_TUPLE ? L_TUPLE : L_LIST);
        jv lv = jv_list(l);
        for (int i = 0; i < e->list.n; i++) jlist_push(c, l, eval(c, e->list.v[i], f));
        return lv;
    }
    case E_DICT: {
        jdict *d = jdict_new(c, JV_DICT);
        jv dv = jv_obj(JV_DICT, d);
        for (int i = 0; i < e->list.n; i++) {
            jv k = eval(c, e->list.v[i], f);
            jv v = eval(c, e->list2.v[i], f);
            jdict_set(c, d, k, v);
        }
        return dv;
    }
    case E_GETATTR: {
        jv o = eval(c, e->a, f);
        jv r = jgetattr(c, o, e->name);
        jv_unref(c, o);
        return r;
    }
    case E_GETITEM: {
        jv o = eval(c, e->a, f);
        jv r;
        if (e->b->kind == E_SLICE) {
            const jnode *s = e->b;
            jv a = s->a ? eval(c, s->a, f) : jv_none();
            jv b = s->b ? eval(c, s->b, f) : jv_none();
            jv st = s->c ? eval(c, s->c, f) : jv_none();
            r = do_slice(c, o, a, b, st);
            jv_unref(c, a);
            jv_unref(c, b);
            jv_unref(c, st);
        } else {
            jv k = eval(c, e->b, f);
            r = jgetitem(c, o, k);
            jv_unref(c, k);
        }
        jv_unref(c, o);
        return r;
    }
    case E_SLICE: jfail(c, "a slice outside a subscript");
    case E_CALL: return eval_call(c, e, f, NULL, jv_none());
    case E_FILTER: return apply_filter(c, e, f, eval(c, e->a, f));
    case E_TEST: {
        jv in = eval(c, e->a, f);
        if (e->fid < 0) jfail(c, "No test named '%s' found.", e->name->s);
        jargs a;
        eval_args(c, e, f, &a, NULL, jv_none());
        int r = jtest_call(c, e->fid, in, &a);
        args_release(c, &a);
        jv_unref(c, in);
        return jv_bool(r);
    }
    case E_NOT: {
        jv v = eval(c, e->a, f);
        int t = jv_truthy(c, v);
        jv_unref(c, v);
        return jv_bool(!t);
    }
    case E_NEG:
    case E_POS: {
        jv v = eval(c, e->a, f);
        if (v.t == JV_UNDEF) jundefined_fail(c, v);
        if (v.t == JV_FLOAT) return jv_float(e->kind == E_NEG ? -v.u.f : v.u.f);
        if (v.t == JV_INT || v.t == JV_BOOL) {
            if (e->kind == E_POS) return jv_int(v.u.i);
            if (v.u.i == INT64_MIN) jfail(c, "integer overflow (Python integers are unbounded; this interpreter's are 64-bit)");
            return jv_int(-v.u.i);
        }
        jfail(c, "bad operand type for unary %c: '%s'", e->kind == E_NEG ? '-' : '+', jv_typename(v));
    }
    case E_AND:
    case E_OR: {
        jv l = eval(c, e->a, f);
        int t = jv_truthy(c, l);
        if (e->kind == E_AND ? !t : t) return l;
        jv_unref(c, l);
        return eval(c, e->b, f);
    }
    case E_BINOP: {
        jv l = eval(c, e->a, f);
        jv r = eval(c, e->b, f);
        jv x = jbinop(c, e->op, l, r);
        jv_unref(c, l);
        jv_unref(c, r);
        return x;
    }
    case E_CONCAT: {
        /* str() of every part, then one string of the exact size */
        jv parts[16];
        if (e->list.n > 16) {
            jbuf b;
            jbuf_open(c, &b);
            for (int i = 0; i < e->list.n; i++) {
                jv v = eval(c, e->list.v[i], f);
                jv_write_str(c, &b, v);
                jv_unref(c, v);
            }
            return jbuf_close(c, &b);
        }
        size_t total = 0;
        for (int i = 0; i < e->list.n; i++) {
            jv v = eval(c, e->list.v[i], f);
            parts[i] = jv_to_str(c, v);
            jv_unref(c, v);
            total += JS(parts[i])->len;
        }
        if (total > c->max_out) jfail(c, "the template's output is too large (more than %zu bytes)", c->max_out);
        jstep(c, (int64_t)(total >> 8));
        jstr *r = jstr_new(c, NULL, total);
        size_t k = 0;
        for (int i = 0; i < e->list.n; i++) {
            memcpy(r->s + k, JS(parts[i])->s, JS(parts[i])->len);
            k += JS(parts[i])->len;
            jv_unref(c, parts[i]);
        }
        return jv_obj(JV_STR, r);
    }
    case E_COMPARE: {
        jv l = eval(c, e->a, f);
        for (int i = 0; i < e->list.n; i++) {
            jv r = eval(c, e->list.v[i], f);
            int ok = compare(c, e->ops[i], l, r);
            jv_unref(c, l);
            l = r;
            if (!ok) {
                jv_unref(c, l);
                return jv_bool(0);
            }
        }
        jv_unref(c, l);
        return jv_bool(1);
    }
    case E_COND: {
        jv t = eval(c, e->b, f);
        int tr = jv_truthy(c, t);
        jv_unref(c, t);
        if (tr) return eval(c, e->a, f);
        if (e->c) return eval(c, e->c, f);
        return jv_undef_msg(c, "the inline if-expression on line %d evaluated to false and no else section was defined.", e->line);
    }
    case E_NSREF: jfail(c, "a namespace reference outside an assignment");
    default: jfail(c, "internal error: unknown expression");
    }
}

/* ===== assignment ===== */

static void assign(jctx *c, const jnode *t, jv v, jframe *f) {
    switch (t->kind) {
    case E_NAME: frame_set(c, f, t->name, v); return;
    case E_NSREF: {
        jv *ns = frame_lookup(f, t->name);
        if (!ns || ns->t != JV_NS) {
            jv_unref(c, v);
            jfail(c, "cannot assign attribute on non-namespace object");
        }
        if (t->attr->s[0] == '_')
            jfail(c, "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '%s'. Please rename the attribute.", t->attr->s);
        jdict_set(c, JD(*ns), jv_obj(JV_STR, t->attr), v);
        return;
    }
    case E_TUPLE: {
        if (!(v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF))
            jfail(c, "cannot unpack non-iterable %s object", jv_typename(v));
        jlist *it = jv_iter(c, v);
        int n = t->list.n;
        if (it->n < n) jfail(c, "not enough values to unpack (expected %d, got %lld)", n, (long long)it->n);
        if (it->n > n) jfail(c, "too many values to unpack (expected %d)", n);
        for (int i = 0; i < n; i++) assign(c, t->list.v[i], jv_ref(it->a[i]), f);
        jobj_unref(c, &it->h);
        jv_unref(c, v);
        return;
    }
    default: jfail(c, "can't assign to this expression");
    }
}

/* ===== statements ===== */

void jloop_fill(jctx *c, jloop *L, int64_t upto) {
    while (L->src && L->items->n <= upto && L->src_pos < L->src->n) {
        jv x = L->src->a[L->src_pos++];
        jstep(c, 1);
        jframe *tf = frame_new(c, L->frame);
        assign(c, L->node->a, jv_ref(x), tf);
        jv t = eval(c, L->node->c, tf);
        int keep = jv_truthy(c, t);
        jv_unref(c, t);
        frame_unref(c, tf);
        if (keep) jlist_push(c, L->items, jv_ref(x));
    }
}

static void exec_for(jctx *c, const jnode *n, jframe *f, jv iterable, int depth0) {
    jlist *all = jv_iter(c, iterable);
    jloop *L = jobj_new(c, sizeof(jloop), JV_LOOP, 0);
    if (n->c) {
        L->src = all;
        L->items = jlist_new(c, 0, L_LIST);
    } else {
        L->items = all;
    }
    L->depth0 = depth0;
    L->node = n;
    L->frame = f;
    f->h.rc++;
    L->changed = jv_undef();
    jnames *N = names_of(c);
    int64_t i = 0;
    for (;; i++) {
        jloop_fill(c, L, i);
        if (i >= L->items->n) break;
        jstep(c, 1);
        L->i = i;
        jframe *it = frame_new(c, f);
        L->h.rc++;
        frame_set(c, it, N->loop, jv_obj(JV_LOOP, L));
        assign(c, n->a, jv_ref(L->items->a[i]), it);
        exec_list(c, &n->body, it);
        frame_unref(c, it);
        if (c->ctl == CTL_BREAK) { c->ctl = CTL_NONE; i++; break; }
        c->ctl = CTL_NONE;
    }
    jobj_unref(c, &L->h);
    if (i == 0 && n->else_.n) {
        jframe *ef = frame_new(c, f);
        exec_list(c, &n->else_, ef);
        frame_unref(c, ef);
    }
}

/* the text of a block's body (run in its own frame) through the block's filter chain */
static jv capture_filtered(jctx *c, const jnode *n, jframe *f) {
    jbuf b;
    jbuf_open(c, &b);
    jframe *bf = frame_new(c, f);
    exec_list(c, &n->body, bf);
    frame_unref(c, bf);
    jv s = jbuf_close(c, &b);
    c->line = n->line;
    jv r = eval_filter_chain(c, n->c, f, s);
    jv_unref(c, s);
    return r;
}

/* a macro (or a call block's caller) closing over the frame it is defined in */
static jv new_macro(jctx *c, const jnode *n, jframe *f) {
    jmacro *m = jobj_new(c, sizeof(jmacro), JV_MACRO, 0);
    m->node = n;
    m->closure = f;
    f->h.rc++;
    return jv_obj(JV_MACRO, m);
}

static void exec(jctx *c, const jnode *n, jframe *f) {
    c->line = n->line;
    switch (n->kind) {
    case S_TEXT: jbuf_put(c, c->out, JS(n->cval)->s, JS(n->cval)->len); return;
    case S_PRINT: {
        jv v = eval(c, n->a, f);
        jv_write_str(c, c->out, v);
        jv_unref(c, v);
        return;
    }
    case S_IF: {
        jv t = eval(c, n->a, f);
        int tr = jv_truthy(c, t);
        jv_unref(c, t);
        exec_list(c, tr ? &n->body : &n->else_, f);
        return;
    }
    case S_FOR: {
        jv it = eval(c, n->b, f);
        exec_for(c, n, f, it, 0);
        jv_unref(c, it);
        return;
    }
    case S_SET: assign(c, n->a, eval(c, n->b, f), f); return;
    case S_SETBLOCK: assign(c, n->a, capture_filtered(c, n, f), f); return;
    case S_MACRO: frame_set(c, f, n->name, new_macro(c, n, f)); return;
    case S_CALLBLOCK: {
        jv mv = new_macro(c, n, f);
        jv r = eval_call(c, n->a, f, names_of(c)->caller, mv);
        jv_unref(c, mv);
        jv_write_str(c, c->out, r);
        jv_unref(c, r);
        return;
    }
    case S_FILTERBLOCK: {
        jv r = capture_filtered(c, n, f);
        jv_write_str(c, c->out, r);
        jv_unref(c, r);
        return;
    }
    case S_WITH: {
        jframe *wf = frame_new(c, f);
        for (int i = 0; i < n->list.n; i++) assign(c, n->list2.v[i], eval(c, n->list.v[i], f), wf);
        exec_list(c, &n->body, wf);
        frame_unref(c, wf);
        return;
    }
    case S_SCOPE: {
        if (n->flags == 1) { exec_list(c, &n->body, f); return; }
        jframe *sf = frame_new(c, f);
        exec_list(c, &n->body, sf);
        frame_unref(c, sf);
        return;
    }
    case S_BREAK: c->ctl = CTL_BREAK; return;
    case S_CONTINUE: c->ctl = CTL_CONTINUE; return;
    default: jfail(c, "internal error: unknown statement");
    }
}

static void exec_list(jctx *c, const jnodes *l, jframe *f) {
    for (int i = 0; i < l->n; i++) {
        exec(c, l->v[i], f);
        if (c->ctl) return;
    }
}

/* ===== rendering ===== */

typedef struct {
    jctx c;
    jnames names;
} jrender;

static jnames *names_of(jctx *c) { return &((jrender *)c)->names; }

jinja_opts jinja_default_opts(void) {
    jinja_opts o;
    o.max_output = (size_t)64 << 20;
    o.max_memory = (size_t)512 << 20;
    o.max_steps = 100000000;
    o.max_depth = 200;
    o.now = 0;
    return o;
}

static void free_all(jctx *c) {
    jobj *o = c->reg.next;
    while (o != &c->reg) {
        jobj *nx = o->next;
        switch (o->kind) {
        case JV_LIST: free(((jlist *)o)->a); break;
        case JV_DICT:
        case JV_NS:
            free(((jdict *)o)->k);
            free(((jdict *)o)->v);
            free(((jdict *)o)->idx);
            break;
        case JO_FRAME:
            if (((jframe *)o)->names != ((jframe *)o)->inl_names) {
                free(((jframe *)o)->names);
                free(((jframe *)o)->vals);
            }
            break;
        default: break;
        }
        free(o);
        o = nx;
    }
    c->reg.next = c->reg.prev = &c->reg;
    c->out = NULL;   /* the buffers' bytes were registered; the jbufs themselves lived on the stack */
    free(c->freeq);
    c->freeq = NULL;
}

int jinja_render(const jinja_tpl *t, const json_t *vars, const jinja_opts *opts, char **out, size_t *len, char *err,
                 size_t errlen) {
    *out = NULL;
    if (len) *len = 0;
    jinja_opts o = opts ? *opts : jinja_default_opts();
    jrender *R = calloc(1, sizeof(jrender));
    if (!R) {
        snprintf(err, err ? errlen : 0, "%s: out of memory", t->name);
        return -1;
    }
    jctx *c = &R->c;
    c->t = t;
    c->err = err;
    c->errlen = err ? errlen : 0;
    c->line = 1;
    c->reg.next = c->reg.prev = &c->reg;
    c->max_mem = o.max_memory;
    c->max_out = o.max_output;
    c->max_steps = o.max_steps;
    c->max_depth = o.max_depth;
    c->now = o.now ? o.now : (int64_t)time(NULL);
    jbuf result;
    memset(&result, 0, sizeof(result));
    int rc = -1;
    if (setjmp(c->jb) == 0) {
        R->names.loop = g_name(c, "loop");
        R->names.caller = g_name(c, "caller");
        R->names.varargs = g_name(c, "varargs");
        R->names.kwargs = g_name(c, "kwargs");
        if (vars && !json_is_object(vars)) jfail(c, "the template variables must be a JSON object");
        jdict *g = jdict_new(c, JV_DICT);
        jglobals_install(c, g);
        if (vars) {
            const char *k;
            json_t *x;
            json_object_foreach((json_t *)vars, k, x) jdict_set(c, g, jv_cstr(c, k), jv_from_json(c, x, 0));
        }
        c->root = frame_new(c, NULL);
        c->root->dict = g;
        jframe *top = frame_new(c, c->root);
        jbuf_open(c, &result);
        exec_list(c, &t->body, top);
        frame_unref(c, top);
        char *s = malloc(result.n + 1);
        if (!s) jfail(c, "out of memory");
        if (result.n) memcpy(s, result.p, result.n);
        s[result.n] = 0;
        *out = s;
        if (len) *len = result.n;
        rc = 0;
    }
    free_all(c);
    free(R);
    return rc;
}
