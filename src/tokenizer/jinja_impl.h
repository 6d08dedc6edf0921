/*
 * jinja_impl.h - the insides of the Jinja interpreter shared by its four files:
 *
 *   jinja.c           lexer and parser (source -> AST), the template object
 *   jinja_eval.c      the evaluator: statements, expressions, scopes, macros, loops, rendering
 *   jinja_value.c     values: allocation and reference counting, strings and Unicode, Python's
 *                     str()/repr(), JSON, comparison, hashing, dicts
 *   jinja_builtins.c  filters, tests, globals and the methods of str / dict / list
 *
 * Values mirror the Python objects a jinja2 template sees: None, bool, int (int64; overflow is an
 * error where Python would grow), float, str (UTF-8, indexed by code point), list / tuple / the lazy
 * iterables of jinja2 filters, dict (insertion-ordered), namespace, macro, loop, builtin functions and
 * bound methods, and jinja2's Undefined.
 *
 * Memory: heap values are reference counted and every one of them is also linked into its render's
 * registry, so that an error (which longjmps back to jinja_render) or a reference cycle (a macro that
 * closes over the frame holding it) never leaks: the registry is freed when the render ends.
 * Constants of a template are immortal (rc < 0) and shared by concurrent renders.
 */
#ifndef DG_JINJA_IMPL_H
#define DG_JINJA_IMPL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/jinja.h"

/* ===== values ===== */

typedef enum {
    JV_UNDEF = 0, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_MACRO, JV_LOOP,
    JV_FUNC,
} jv_type;

typedef struct jobj {
    int32_t rc;              /* references; < 0: immortal (a template constant) */
    uint8_t kind;            /* jv_type of the object (JV_UNDEF: an undefined's message) or JO_FRAME */
    uint8_t sub;             /* list / dict flavour */
    struct jobj *prev, *next;
    size_t bytes;            /* counted against the memory limit */
} jobj;

#define JO_FRAME 100
#define JO_RAW 101           /* scratch memory of a builtin (freed with the render if an error unwinds) */

typedef struct {
    uint8_t t;               /* jv_type */
    uint8_t flag;            /* JV_UNDEF: 1 = using it is a security error (an unsafe attribute) */
    union { int64_t i; double f; jobj *o; } u;
} jv;

typedef struct {
    jobj h;
    size_t len;              /* bytes */
    int64_t ncp;             /* code points, -1 until counted */
    char s[];                /* NUL-terminated */
} jstr;

/* list flavours: what Python object the value stands for (printing, len(), indexing, truthiness) */
enum { L_LIST = 0, L_TUPLE, L_GEN, L_KEYS, L_VALUES, L_ITEMS, L_RANGE, L_REVERSED };

typedef struct {
    jobj h;
    int64_t n, cap;
    jv *a;
    int64_t pos;             /* L_GEN / L_REVERSED: items already consumed */
    int64_t r_start, r_stop, r_step;   /* L_RANGE */
    const char *gen_name;    /* L_GEN: the Python function that made it (for its repr) */
} jlist;

typedef struct {
    jobj h;                  /* kind JV_DICT or JV_NS */
    int64_t n, cap;
    jv *k, *v;
    int32_t *idx;            /* open-addressing index into k/v (when n > 8), -1 = empty */
    int64_t icap;
} jdict;

struct jnode;
struct jframe;

typedef struct {
    jobj h;
    const struct jnode *node;     /* S_MACRO or S_CALLBLOCK */
    struct jframe *closure;       /* the frame it was defined in */
    jv caller;                    /* call blocks: the caller given to the called macro (unused otherwise) */
} jmacro;

typedef struct {
    jobj h;
    jlist *items;                 /* the items iterated so far and, without a filter, all of them */
    jlist *src;                   /* loops with an inline `if`: the unfiltered items, pulled lazily */
    int64_t src_pos;
    int64_t i;                    /* index0 */
    int depth0;
    const struct jnode *node;     /* the S_FOR (recursive loops call it again) */
    struct jframe *frame;         /* the frame the loop runs in */
    jv changed;                   /* loop.changed(): the last value, JV_UNDEF before the first call */
} jloop;

typedef struct {
    jobj h;
    int id;                       /* F_* */
    jv self;                      /* bound methods: the object */
} jfunc;

#define FRAME_INLINE 4

typedef struct jframe {
    jobj h;
    struct jframe *parent;
    int n, cap;
    jstr **names;                 /* inl_names / inl_vals until more than FRAME_INLINE names */
    jv *vals;
    jdict *dict;                  /* the root frame: globals and render variables */
    jstr *inl_names[FRAME_INLINE];
    jv inl_vals[FRAME_INLINE];
} jframe;

/* ===== AST ===== */

typedef enum {
    /* statements */
    S_TEXT, S_PRINT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_CALLBLOCK, S_FILTERBLOCK, S_WITH, S_SCOPE,
    S_BREAK, S_CONTINUE,
    /* expressions */
    E_CONST, E_NAME, E_NSREF, E_TUPLE, E_LIST, E_DICT, E_GETATTR, E_GETITEM, E_SLICE, E_CALL, E_FILTER,
    E_TEST, E_NOT, E_NEG, E_POS, E_AND, E_OR, E_BINOP, E_CONCAT, E_COMPARE, E_COND,
} jnode_kind;

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW };
enum { CMP_EQ, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NOTIN };

/* node flags */
#define NF_RECURSIVE 1        /* S_FOR ... recursive */
#define NF_CALLER 2           /* S_MACRO / S_CALLBLOCK: the body uses `caller` */
#define NF_VARARGS 4          /* ... uses `varargs` */
#define NF_KWARGS 8           /* ... uses `kwargs` */
#define NF_SOFT 16            /* E_FILTER / E_TEST: an unknown name is an error only when evaluated */
#define NF_EXPLICIT_CALLER 32 /* `caller` is among the parameters */

typedef struct {
    struct jnode **v;
    int n;
} jnodes;

typedef struct jnode {
    uint8_t kind, op, flags;
    uint16_t dep;                 /* expressions: nesting depth (bounded, so evaluation cannot overflow the stack) */
    int line;
    struct jnode *a, *b, *c;
    jnodes list, list2, body, else_;
    jstr *name, *attr;
    jstr **names;                 /* E_CALL/E_FILTER/E_TEST kwarg names; S_MACRO/S_CALLBLOCK params */
    int nnames;
    uint8_t *ops;                 /* E_COMPARE */
    jv cval;                      /* E_CONST, S_TEXT */
    int fid;                      /* E_FILTER / E_TEST: builtin id, -1 unknown */
} jnode;

typedef struct jarena_blk {
    struct jarena_blk *next;
    size_t used, cap;
    max_align_t data[];
} jarena_blk;

struct jinja_tpl {
    char *name;
    jnodes body;
    jarena_blk *arena;
};

/* ===== render context ===== */

typedef struct jbuf {
    char *p;                      /* registered scratch memory (freed with the render on error) */
    size_t n, cap;
    struct jbuf *up;              /* the active buffers form a stack; c->out is the top */
} jbuf;

typedef struct {
    const jinja_tpl *t;
    jmp_buf jb;
    char *err;
    size_t errlen;
    int line;                     /* the statement being executed (for runtime errors) */
    jobj reg;                     /* registry sentinel of live heap objects */
    size_t mem, max_mem, max_out;
    jobj **freeq;                 /* objects whose count dropped to zero, freed iteratively */
    size_t nfreeq, capfreeq;
    int draining;
    jbuf *out;                    /* where output goes; top of the buffer stack */
    int64_t steps, max_steps;
    int depth, max_depth;
    int ctl;                      /* CTL_BREAK / CTL_CONTINUE pending */
    jframe *root;                 /* globals and render variables */
    int64_t now;
} jctx;

enum { CTL_NONE = 0, CTL_BREAK, CTL_CONTINUE };

/* ===== jinja_value.c ===== */

_Noreturn void jfail(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void *jalloc(jctx *c, size_t n);                       /* raw memory, counted; fails with an error */
void *jobj_new(jctx *c, size_t size, int kind, int sub);   /* a registered object, rc 1, zeroed */
void *jobj_new_part(jctx *c, size_t size, size_t zero, int kind, int sub);   /* ... its first `zero` bytes zeroed */
void *jtmp(jctx *c, size_t n);                         /* registered scratch memory */
void jtmp_free(jctx *c, void *p);
void *jrealloc(jctx *c, void *p, size_t old, size_t n);
void jfree(jctx *c, void *p, size_t n);
void jstep(jctx *c, int64_t n);                        /* count work against max_steps */

static inline jv jv_undef(void) { jv v = {JV_UNDEF, 0, {.o = NULL}}; return v; }
static inline jv jv_none(void) { jv v = {JV_NONE, 0, {.i = 0}}; return v; }
static inline jv jv_bool(int b) { jv v = {JV_BOOL, 0, {.i = b != 0}}; return v; }
static inline jv jv_int(int64_t i) { jv v = {JV_INT, 0, {.i = i}}; return v; }
static inline jv jv_float(double f) { jv v = {JV_FLOAT, 0, {.f = f}}; return v; }
static inline jv jv_obj(int t, void *o) { jv v = {(uint8_t)t, 0, {.o = (jobj *)o}}; return v; }
static inline int jv_heap(jv v) { return v.t >= JV_STR ? 1 : (v.t == JV_UNDEF && v.u.o != NULL); }
static inline jstr *JS(jv v) { return (jstr *)v.u.o; }
static inline jlist *JL(jv v) { return (jlist *)v.u.o; }
static inline jdict *JD(jv v) { return (jdict *)v.u.o; }

static inline jv jv_ref(jv v) {
    if (jv_heap(v) && v.u.o->rc >= 0) v.u.o->rc++;
    return v;
}
void jv_unref(jctx *c, jv v);
void jobj_unref(jctx *c, jobj *o);

/* strings */
jstr *jstr_new(jctx *c, const char *s, size_t n);
jv jv_str(jctx *c, const char *s, size_t n);
jv jv_cstr(jctx *c, const char *s);
int64_t jstr_ncp(jstr *s);                              /* code point count */
int jv_is_str(jv v);
int jstr_eq(const jstr *a, const jstr *b);
/* UTF-8 */
int utf8_dec(const char *s, size_t n, size_t *i);       /* next code point at *i (advances); bad bytes -> U+FFFD */
int utf8_enc(char *o, int cp);                          /* returns bytes written (1..4) */
int64_t utf8_offset(const char *s, size_t n, int64_t cp_index);   /* byte offset of a code point index */
int uni_isspace(int cp);
int uni_upper(int cp, int out[3]);                      /* returns the number of code points */
int uni_lower(int cp, int out[3]);
int uni_iscased_upper(int cp);
int uni_iscased_lower(int cp);
int uni_isalpha(int cp);
int uni_isdigit(int cp);
int uni_isprintable(int cp);

/* lists and dicts */
jlist *jlist_new(jctx *c, int64_t cap, int sub);
void jlist_push(jctx *c, jlist *l, jv v);               /* takes the reference */
jv jv_list(jlist *l);
jdict *jdict_new(jctx *c, int kind);
void jdict_set(jctx *c, jdict *d, jv k, jv v);          /* takes both references */
jv *jdict_get(jctx *c, jdict *d, jv k);                 /* borrowed, NULL if absent */
jv *jdict_get_str(jdict *d, const char *k, size_t n);

/* buffers */
void jbuf_open(jctx *c, jbuf *b);
void jbuf_put(jctx *c, jbuf *b, const char *s, size_t n);
void jbuf_putc(jctx *c, jbuf *b, char ch);
void jbuf_printf(jctx *c, jbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
jv jbuf_close(jctx *c, jbuf *b);                        /* -> a str value; pops the buffer */
void jbuf_drop(jctx *c, jbuf *b);

/* Python semantics */
const char *jv_typename(jv v);                          /* Python type name: 'int', 'str', ... */
int jv_truthy(jctx *c, jv v);
void jv_write_str(jctx *c, jbuf *b, jv v);              /* str(v) */
void jv_write_repr(jctx *c, jbuf *b, jv v, int depth);  /* repr(v) */
jv jv_to_str(jctx *c, jv v);                            /* str(v) as a new value */
void jfloat_repr(double f, char out[32]);               /* Python's repr(float) */
int jv_eq(jctx *c, jv a, jv b);
int jv_cmp(jctx *c, jv a, jv b, const char *op);        /* <0, 0, >0; TypeError for unorderable types */
int jv_contains(jctx *c, jv container, jv item);        /* `item in container` */
uint64_t jv_hash(jctx *c, jv v);
int64_t jv_len(jctx *c, jv v);                          /* len(v); TypeError when it has none */
jlist *jv_iter(jctx *c, jv v);                          /* the items of an iteration (new reference) */
void jv_write_json(jctx *c, jbuf *b, jv v, const char *indent, int nindent, const char *isep, const char *ksep,
                   int sort_keys, int ascii, int level);
jv jv_from_json(jctx *c, const json_t *j, int depth);
_Noreturn void jundefined_fail(jctx *c, jv u);                    /* raise the error an undefined stands for */
jv jv_undef_msg(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
jv jv_undef_attr(jctx *c, jv obj, jv name);             /* "'dict object' has no attribute 'x'" */
const char *jv_objtype(jv v);                           /* jinja2's object_type_repr: "dict object" */

/* ===== jinja_builtins.c ===== */

typedef struct {
    jv *pos;                      /* positional arguments (borrowed) */
    int npos;
    jstr **knames;                /* keyword arguments (borrowed) */
    jv *kvals;
    int nkw;
} jargs;

int jfilter_id(const char *name);
jv jformat_percent(jctx *c, jstr *fmt, jv args);       /* Python's fmt % args */
int jtest_id(const char *name);
jv jfilter_call(jctx *c, int id, jv in, jargs *a);
int jtest_call(jctx *c, int id, jv in, jargs *a);
/* methods and attributes of builtin types: *found = 1 found, 2 exists but is unsafe (sandbox) */
jv jattr_builtin(jctx *c, jv obj, jstr *name, int *found);
jv jfunc_call(jctx *c, jfunc *f, jargs *a);
void jglobals_install(jctx *c, jdict *g);
const char *jfunc_name(int id);

/* ===== jinja_eval.c ===== */

jv jcall_value(jctx *c, jv callee, jargs *a);            /* call a macro, loop or builtin */
jv jbinop(jctx *c, int op, jv a, jv b);                  /* a OP b with Python's semantics (OP_*) */
jv jgetattr(jctx *c, jv obj, jstr *name);                /* obj.name with the sandbox's rules */
jv jgetitem(jctx *c, jv obj, jv key);                    /* obj[key] with the sandbox's rules */
/* make loop->items hold more than `upto` items if the source has them (jinja2 evaluates a loop's
 * inline filter lazily: loop.last peeks one item ahead, loop.length consumes the rest) */
void jloop_fill(jctx *c, jloop *l, int64_t upto);

#endif
