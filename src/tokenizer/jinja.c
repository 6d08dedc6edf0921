/*
 * jinja.c - Jinja lexer and parser: template source -> AST (jinja_impl.h).
 *
 * The lexer follows jinja2's (lexer.py) with trim_blocks and lstrip_blocks on:
 *   - newlines (\r\n, \r, \n) become \n and one trailing newline of the source is dropped;
 *   - `{%- ` / `{{- ` / `{#- ` strip all whitespace before the tag, ` -%}` / ` -}}` / ` -#}` all
 *     whitespace after it; a `+` (`{%+`, `+%}`) keeps it;
 *   - trim_blocks: one newline right after `%}` or `#}` is dropped (never after `}}`, and not after
 *     the `%}` of `{% raw %}`);
 *   - lstrip_blocks: spaces and tabs between the start of a line and `{%` / `{#` are dropped, but only
 *     when nothing else precedes the tag on that line; "start of a line" includes the position right
 *     after a tag whose match ended with a newline (a trimmed `%}\n`), which is how jinja2 decides it.
 *   - `%}` / `}}` close a tag only when brackets are balanced.
 * The parser is jinja2's recursive descent (parser.py), with the same precedence:
 *   condexpr < or < and < not < compare (chained, in / not in) < + - < ~ < * / // % < ** (left
 *   associative) < unary - + < postfix (. [] ()) < filters | and tests `is`.
 * Compile-time checks of jinja2 are kept: an unknown filter or test is an error when the template is
 * parsed, except inside an if / inline-if (then it fails only when evaluated), `break` outside a loop.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/jinja_impl.h"

/* ===== arena ===== */

static void *arena_alloc(jarena_blk **head, size_t n) {
    n = (n + 15) & ~(size_t)15;
    jarena_blk *b = *head;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof(jarena_blk) + cap);
        if (!b) return NULL;
        b->next = *head;
        b->used = 0;
        b->cap = cap;
        *head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(jarena_blk *b) {
    while (b) {
        jarena_blk *n = b->next;
        free(b);
        b = n;
    }
}

/* ===== tokens ===== */

typedef enum {
    T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STRING, T_INT, T_FLOAT, T_OP, T_EOF
} ttype;

typedef enum {
    O_ADD, O_SUB, O_DIV, O_FLOORDIV, O_MUL, O_MOD, O_POW, O_TILDE, O_LBRACKET, O_RBRACKET, O_LPAREN, O_RPAREN,
    O_LBRACE, O_RBRACE, O_EQ, O_NE, O_GT, O_GTEQ, O_LT, O_LTEQ, O_ASSIGN, O_DOT, O_COLON, O_PIPE, O_COMMA,
    O_SEMICOLON, O_COUNT
} optype;

static const char *const op_text[O_COUNT] = {
    "+", "-", "/", "//", "*", "%", "**", "~", "[", "]", "(", ")", "{", "}", "==", "!=", ">", ">=", "<", "<=",
    "=", ".", ":", "|", ",", ";",
};

typedef struct {
    uint8_t type, op;
    int line;
    size_t off;       /* offset in the normalized source (gives the line) */
    jstr *s;          /* T_DATA, T_NAME, T_STRING */
    int64_t i;        /* T_INT */
    double f;         /* T_FLOAT */
} jtok;

typedef struct {
    const char *name;
    const char *src;   /* normalized source */
    size_t n;
    jtok *tok;
    int ntok, captok;
    jarena_blk **arena;
    /* interned names */
    jstr **names;
    int nnames, capnames;
    /* parsing */
    int pos;
    char *err;
    size_t errlen;
    jmp_buf jb;
    const char *tag_stack[256];
    int ntag;
    const char *const *end_stack[256];
    int nend;
    int depth;         /* expression / statement nesting */
    char late_err[512];   /* the first compile-time error (reported if parsing succeeds) */
} jparser;

#define MAX_NEST 200

static _Noreturn void pfail(jparser *P, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static _Noreturn void pfail(jparser *P, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (P->err && P->errlen) snprintf(P->err, P->errlen, "%s:%d: %s", P->name, line, msg);
    longjmp(P->jb, 1);
}

static void *palloc(jparser *P, size_t n) {
    void *p = arena_alloc(P->arena, n);
    if (!p) pfail(P, 0, "out of memory");
    return p;
}

/* an immortal string owned by the template */
static jstr *pstr(jparser *P, const char *s, size_t n) {
    jstr *r = palloc(P, sizeof(jstr) + n + 1);
    r->h.rc = -1;
    r->h.kind = JV_STR;
    r->len = n;
    r->ncp = -1;
    memcpy(r->s, s, n);
    r->s[n] = 0;
    return r;
}

static jstr *pintern(jparser *P, const char *s, size_t n) {
    for (int i = 0; i < P->nnames; i++)
        if (P->names[i]->len == n && memcmp(P->names[i]->s, s, n) == 0) return P->names[i];
    if (P->nnames == P->capnames) {
        int cap = P->capnames ? 2 * P->capnames : 64;
        jstr **nn = realloc(P->names, sizeof(jstr *) * cap);
        if (!nn) pfail(P, 0, "out of memory");
        P->names = nn;
        P->capnames = cap;
    }
    return P->names[P->nnames++] = pstr(P, s, n);
}

/* ===== lexer ===== */

static int line_at(const char *s, size_t from, size_t to, int line) {
    for (size_t i = from; i < to; i++) line += s[i] == '\n';
    return line;
}

static jtok *push_tok(jparser *P, int type, size_t off) {
    if (P->ntok == P->captok) {
        int cap = P->captok ? 2 * P->captok : 256;
        jtok *t = realloc(P->tok, sizeof(jtok) * cap);
        if (!t) pfail(P, 0, "out of memory");
        P->tok = t;
        P->captok = cap;
    }
    jtok *t = &P->tok[P->ntok++];
    memset(t, 0, sizeof(*t));
    t->type = (uint8_t)type;
    t->off = off;
    return t;
}

/* Python whitespace (str.isspace / re \s) at byte i; returns its length in bytes, 0 if not a space */
static int ws_at(const char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x80) return (ch == ' ' || (ch >= 9 && ch <= 13) || (ch >= 0x1c && ch <= 0x1f)) ? 1 : 0;
    size_t j = i;
    int cp = utf8_dec(s, n, &j);
    return uni_isspace(cp) ? (int)(j - i) : 0;
}

static size_t skip_ws(const char *s, size_t n, size_t i) {
    int k;
    while ((k = ws_at(s, n, i)) > 0) i += (size_t)k;
    return i;
}

/* length of the text once trailing whitespace is stripped */
static size_t rstrip_len(const char *s, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        size_t j = st;
        int cp = utf8_dec(s, end, &j);
        if (!uni_isspace(cp)) break;
        end = st;
    }
    return end;
}

/* jinja2's strip of the text before a tag: `-` strips all trailing whitespace; otherwise, for
 * statements and comments (lstrip_blocks), the spaces after the last newline are dropped when the tag
 * is the first thing on its line */
static size_t strip_before_tag(const char *text, size_t n, char sign, int is_var, int line_starting) {
    if (sign == '-') return rstrip_len(text, n);
    if (sign == '+' || is_var) return n;
    size_t lpos = 0;
    for (size_t i = n; i > 0; i--)
        if (text[i - 1] == '\n') { lpos = i; break; }
    if (lpos == 0 && !line_starting) return n;
    if (lpos == n) return n;
    if (skip_ws(text, n, lpos) == n) return lpos;
    return n;
}

static void emit_data(jparser *P, size_t from, size_t len) {
    if (!len) return;
    jtok *t = push_tok(P, T_DATA, from);
    t->s = pstr(P, P->src + from, len);
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static int is_hex(char ch) { return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'); }
static int is_name_start(unsigned char ch) { return ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch >= 0x80; }
static int is_name_char(unsigned char ch) { return is_name_start(ch) || is_digit((char)ch); }

/* \d+(_\d+)* at i; returns the end or 0 if no match */
static size_t match_digits(const char *s, size_t n, size_t i) {
    if (i >= n || !is_digit(s[i])) return 0;
    while (i < n && is_digit(s[i])) i++;
    while (i + 1 < n && s[i] == '_' && is_digit(s[i + 1])) {
        i++;
        while (i < n && is_digit(s[i])) i++;
    }
    return i;
}

/* jinja2's float_re; returns the end or 0 */
static size_t match_float(const char *s, size_t n, size_t i) {
    if (i > 0 && s[i - 1] == '.') return 0;
    size_t m = match_digits(s, n, i);
    if (!m) return 0;
    size_t q = m;
    int frac = 0;
    if (q < n && s[q] == '.') {
        size_t f = match_digits(s, n, q + 1);
        if (f) { q = f; frac = 1; }
    }
    if (q < n && (s[q] == 'e' || s[q] == 'E')) {
        size_t e = q + 1;
        if (e < n && (s[e] == '+' || s[e] == '-')) e++;
        size_t d = match_digits(s, n, e);
        if (d) return d;
    }
    return frac ? q : 0;
}

/* jinja2's integer_re; returns the end or 0, *base the radix */
static size_t match_int(const char *s, size_t n, size_t i, int *base) {
    if (i >= n || !is_digit(s[i])) return 0;
    if (s[i] == '0' && i + 1 < n) {
        char x = s[i + 1] | 0x20;
        int b = x == 'b' ? 2 : x == 'o' ? 8 : x == 'x' ? 16 : 0;
        if (b) {
            size_t j = i + 2, end = 0;
            for (;;) {
                size_t k = j;
                if (k < n && s[k] == '_') k++;
                if (k < n && (b == 16 ? is_hex(s[k]) : (s[k] >= '0' && s[k] < '0' + b))) { j = k + 1; end = j; }
                else break;
            }
            if (end) { *base = b; return end; }
        }
    }
    *base = 10;
    if (s[i] != '0') {
        size_t j = i + 1;
        for (;;) {
            size_t k = j;
            if (k < n && s[k] == '_') k++;
            if (k < n && is_digit(s[k])) j = k + 1;
            else break;
        }
        return j;
    }
    size_t j = i + 1;
    for (;;) {
        size_t k = j;
        if (k < n && s[k] == '_') k++;
        if (k < n && s[k] == '0') j = k + 1;
        else break;
    }
    return j;
}

static int hexval(char ch) {
    if (is_digit(ch)) return ch - '0';
    return (ch | 0x20) - 'a' + 10;
}

/* Python's "unicode-escape" decoding of a string literal (after jinja2 backslash-replaced non-ASCII) */
static jstr *decode_string(jparser *P, const char *s, size_t n, int line) {
    char *o = malloc(n * 4 + 16);   /* an escape never grows more than 4x (\777 -> 2 bytes, \\é -> \u00e9...) */
    if (!o) pfail(P, line, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') { o[k++] = s[i++]; continue; }
        if (i + 1 >= n) { free(o); pfail(P, line, "\\ at end of string"); }
        char e = s[i + 1];
        unsigned char ue = (unsigned char)e;
        i += 2;
        int cp = -1;
        switch (e) {
        case '\n': continue;
        case '\\': o[k++] = '\\'; continue;
        case '\'': o[k++] = '\''; continue;
        case '"': o[k++] = '"'; continue;
        case 'a': o[k++] = 7; continue;
        case 'b': o[k++] = 8; continue;
        case 'f': o[k++] = 12; continue;
        case 'n': o[k++] = '\n'; continue;
        case 'r': o[k++] = '\r'; continue;
        case 't': o[k++] = '\t'; continue;
        case 'v': o[k++] = 11; continue;
        case 'x': case 'u': case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            cp = 0;
            for (int d = 0; d < nd; d++) {
                if (i >= n || !is_hex(s[i])) {
                    free(o);
                    pfail(P, line, "truncated \\%s escape", e == 'x' ? "xXX" : e == 'u' ? "uXXXX" : "UXXXXXXXX");
                }
                cp = cp * 16 + hexval(s[i++]);
                if (cp > 0x10FFFF) { free(o); pfail(P, line, "illegal Unicode character"); }
            }
            break;
        }
        case 'N': free(o); pfail(P, line, "\\N{...} escapes are not supported");
        default:
            if (e >= '0' && e <= '7') {
                cp = e - '0';
                for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++) cp = cp * 8 + (s[i++] - '0');
                break;
            }
            if (ue >= 0x80) {
                /* a backslash before a non-ASCII character escaped it twice: it decodes to a backslash
                 * followed by the text of the character's escape */
                size_t j = i - 1;
                int c2 = utf8_dec(s, n, &j);
                i = j;
                k += (size_t)sprintf(o + k, c2 < 0x100 ? "\\x%02x" : c2 < 0x10000 ? "\\u%04x" : "\\U%08x", c2);
                continue;
            }
            o[k++] = '\\';
            o[k++] = e;
            continue;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;   /* a lone surrogate cannot be UTF-8 */
        k += (size_t)utf8_enc(o + k, cp);
    }
    jstr *r = pstr(P, o, k);
    free(o);
    return r;
}

static void describe_char(const char *s, size_t n, size_t i, char out[16]) {
    size_t j = i;
    int cp = utf8_dec(s, n, &j);
    if (cp == '\'') snprintf(out, 16, "\"'\"");
    else if (cp < 0x20 || cp == 0x7f) snprintf(out, 16, "'\\x%02x'", cp);
    else {
        char b[5] = {0};
        utf8_enc(b, cp);
        snprintf(out, 16, "'%s'", b);
    }
}

/* lex inside {{ }} or {% %}: returns the position after the closing tag, or n at the end of source */
static size_t lex_tag(jparser *P, size_t pos, int is_block, int *line_starting) {
    const char *s = P->src;
    size_t n = P->n;
    char balance[256];
    int nb = 0;
    while (pos < n) {
        if (nb == 0) {
            size_t e = 0;
            if (is_block) {
                if (pos + 2 < n && s[pos] == '+' && s[pos + 1] == '%' && s[pos + 2] == '}') e = pos + 3;
                else if (pos + 2 < n && s[pos] == '-' && s[pos + 1] == '%' && s[pos + 2] == '}') e = skip_ws(s, n, pos + 3);
                else if (pos + 1 < n && s[pos] == '%' && s[pos + 1] == '}') { e = pos + 2; if (e < n && s[e] == '\n') e++; }
            } else {
                if (pos + 2 < n && s[pos] == '-' && s[pos + 1] == '}' && s[pos + 2] == '}') e = skip_ws(s, n, pos + 3);
                else if (pos + 1 < n && s[pos] == '}' && s[pos + 1] == '}') e = pos + 2;
            }
            if (e) {
                push_tok(P, is_block ? T_BLOCK_END : T_VAR_END, pos);
                *line_starting = s[e - 1] == '\n';
                return e;
            }
        }
        int w = ws_at(s, n, pos);
        if (w) { pos = skip_ws(s, n, pos); continue; }
        size_t e = match_float(s, n, pos);
        if (e) {
            char buf[128];
            size_t k = 0;
            for (size_t i = pos; i < e && k < sizeof(buf) - 1; i++)
                if (s[i] != '_') buf[k++] = s[i];
            buf[k] = 0;
            push_tok(P, T_FLOAT, pos)->f = strtod(buf, NULL);
            pos = e;
            continue;
        }
        int base;
        e = match_int(s, n, pos, &base);
        if (e) {
            uint64_t v = 0;
            size_t i = pos + (base == 10 ? 0 : 2);
            for (; i < e; i++) {
                if (s[i] == '_') continue;
                uint64_t d = (uint64_t)hexval(s[i]);
                if (v > (UINT64_MAX - d) / (uint64_t)base || v * (uint64_t)base + d > (uint64_t)INT64_MAX) {
                    pfail(P, line_at(s, 0, pos, 1), "integer literal too large (beyond 64 bits)");
                }
                v = v * (uint64_t)base + d;
            }
            push_tok(P, T_INT, pos)->i = (int64_t)v;
            pos = e;
            continue;
        }
        if (is_name_start((unsigned char)s[pos])) {
            size_t j = pos;
            while (j < n && is_name_char((unsigned char)s[j])) j++;
            push_tok(P, T_NAME, pos)->s = pintern(P, s + pos, j - pos);
            pos = j;
            continue;
        }
        if (s[pos] == '\'' || s[pos] == '"') {
            char q = s[pos];
            size_t j = pos + 1;
            while (j < n && s[j] != q) j += s[j] == '\\' ? 2 : 1;
            if (j < n) {
                push_tok(P, T_STRING, pos)->s = decode_string(P, s + pos + 1, j - pos - 1, line_at(s, 0, pos, 1));
                pos = j + 1;
                continue;
            }
        }
        int op = -1;
        static const char *const two[] = {"//", "**", "==", "!=", ">=", "<="};
        static const int two_op[] = {O_FLOORDIV, O_POW, O_EQ, O_NE, O_GTEQ, O_LTEQ};
        for (int k = 0; k < 6 && op < 0; k++)
            if (pos + 1 < n && s[pos] == two[k][0] && s[pos + 1] == two[k][1]) op = two_op[k];
        if (op < 0)
            for (int k = 0; k < O_COUNT; k++)
                if (op_text[k][1] == 0 && s[pos] == op_text[k][0]) { op = k; break; }
        if (op < 0) {
            char d[16];
            describe_char(s, n, pos, d);
            size_t cpos = 0;
            for (size_t i = 0; i < pos; i++) cpos += ((unsigned char)s[i] & 0xC0) != 0x80;
            pfail(P, line_at(s, 0, pos, 1), "unexpected char %s at %zu", d, cpos);
        }
        if (op == O_LBRACE || op == O_LPAREN || op == O_LBRACKET) {
            if (nb == (int)sizeof(balance)) pfail(P, line_at(s, 0, pos, 1), "brackets nested too deeply");
            balance[nb++] = op == O_LBRACE ? '}' : op == O_LPAREN ? ')' : ']';
        } else if (op == O_RBRACE || op == O_RPAREN || op == O_RBRACKET) {
            char ch = op_text[op][0];
            if (!nb) pfail(P, line_at(s, 0, pos, 1), "unexpected '%c'", ch);
            char want = balance[--nb];
            if (want != ch) pfail(P, line_at(s, 0, pos, 1), "unexpected '%c', expected '%c'", ch, want);
        }
        push_tok(P, T_OP, pos)->op = (uint8_t)op;
        pos += strlen(op_text[op]);
    }
    return pos;
}

static void lex(jparser *P) {
    const char *s = P->src;
    size_t n = P->n, pos = 0;
    int line_starting = 1;
    while (pos < n) {
        /* the next tag */
        size_t p = pos;
        int kind = 0;   /* 1 var, 2 block, 3 comment, 4 raw */
        size_t raw_end = 0;
        char sign = 0;
        for (; p + 1 < n; p++) {
            if (s[p] != '{') continue;
            char c2 = s[p + 1];
            if (c2 != '{' && c2 != '%' && c2 != '#') continue;
            if (c2 == '%') {
                size_t q = p + 2;
                char sg = 0;
                if (q < n && (s[q] == '-' || s[q] == '+')) sg = s[q++];
                q = skip_ws(s, n, q);
                if (q + 3 <= n && memcmp(s + q, "raw", 3) == 0) {
                    size_t r = skip_ws(s, n, q + 3);
                    if (r + 2 < n && s[r] == '-' && s[r + 1] == '%' && s[r + 2] == '}') raw_end = skip_ws(s, n, r + 3);
                    else if (r + 1 < n && s[r] == '%' && s[r + 1] == '}') raw_end = r + 2;
                    if (raw_end) { kind = 4; sign = sg; break; }
                }
            }
            kind = c2 == '{' ? 1 : c2 == '%' ? 2 : 3;
            if (p + 2 < n && (s[p + 2] == '-' || s[p + 2] == '+')) sign = s[p + 2];
            break;
        }
        if (!kind) {
            emit_data(P, pos, n - pos);
            break;
        }
        emit_data(P, pos, strip_before_tag(s + pos, p - pos, sign, kind == 1, line_starting));
        if (kind == 4) {
            /* {% raw %} ... {% endraw %}: the text up to the first endraw tag, literally */
            line_starting = s[raw_end - 1] == '\n';
            size_t q = raw_end, body_end = 0, end = 0;
            char sg2 = 0;
            for (; q + 1 < n; q++) {
                if (s[q] != '{' || s[q + 1] != '%') continue;
                size_t r = q + 2;
                char sg = 0;
                if (r < n && (s[r] == '-' || s[r] == '+')) sg = s[r++];
                r = skip_ws(s, n, r);
                if (!(r + 6 <= n && memcmp(s + r, "endraw", 6) == 0)) continue;
                r = skip_ws(s, n, r + 6);
                if (r + 2 < n && s[r] == '+' && s[r + 1] == '%' && s[r + 2] == '}') end = r + 3;
                else if (r + 2 < n && s[r] == '-' && s[r + 1] == '%' && s[r + 2] == '}') end = skip_ws(s, n, r + 3);
                else if (r + 1 < n && s[r] == '%' && s[r + 1] == '}') { end = r + 2; if (end < n && s[end] == '\n') end++; }
                if (end) { body_end = q; sg2 = sg; break; }
            }
            if (!end) pfail(P, line_at(s, 0, raw_end, 1), "Missing end of raw directive");
            emit_data(P, raw_end, strip_before_tag(s + raw_end, body_end - raw_end, sg2, 0, line_starting));
            line_starting = s[end - 1] == '\n';
            pos = end;
            continue;
        }
        if (kind == 3) {
            size_t q = p + 2 + (sign ? 1 : 0), end = 0;
            for (; q + 1 < n; q++) {
                if (q + 2 < n && s[q] == '+' && s[q + 1] == '#' && s[q + 2] == '}') { end = q + 3; break; }
                if (q + 2 < n && s[q] == '-' && s[q + 1] == '#' && s[q + 2] == '}') { end = skip_ws(s, n, q + 3); break; }
                if (s[q] == '#' && s[q + 1] == '}') { end = q + 2; if (end < n && s[end] == '\n') end++; break; }
            }
            if (!end) pfail(P, line_at(s, 0, p, 1), "Missing end of comment tag");
            line_starting = s[end - 1] == '\n';
            pos = end;
            continue;
        }
        push_tok(P, kind == 1 ? T_VAR_BEGIN : T_BLOCK_BEGIN, p);
        line_starting = 0;
        pos = lex_tag(P, p + 2 + (sign ? 1 : 0), kind == 2, &line_starting);
    }
    /* lines from offsets (tokens are in source order) */
    size_t at = 0;
    int line = 1;
    for (int i = 0; i < P->ntok; i++) {
        jtok *t = &P->tok[i];
        line = line_at(s, at, t->off, line);
        at = t->off;
        t->line = line;
    }
    /* jinja2's end-of-template token carries the line of the last token's start */
    int last = P->ntok ? P->tok[P->ntok - 1].line : 1;
    push_tok(P, T_EOF, n)->line = last;
}

/* ===== parser helpers ===== */

static jtok *cur(jparser *P) { return &P->tok[P->pos]; }
static jtok *look(jparser *P) { return &P->tok[P->pos + 1 < P->ntok ? P->pos + 1 : P->pos]; }
static jtok *next_tok(jparser *P) {
    jtok *t = cur(P);
    if (t->type != T_EOF) P->pos++;
    return t;
}
static int is_op(jtok *t, int op) { return t->type == T_OP && t->op == op; }
static int is_name(jtok *t, const char *name) { return t->type == T_NAME && strcmp(t->s->s, name) == 0; }

static const char *describe_type(int type, int op) {
    switch (type) {
    case T_DATA: return "template data / text";
    case T_VAR_BEGIN: return "begin of print statement";
    case T_VAR_END: return "end of print statement";
    case T_BLOCK_BEGIN: return "begin of statement block";
    case T_BLOCK_END: return "end of statement block";
    case T_NAME: return "name";
    case T_STRING: return "string";
    case T_INT: return "integer";
    case T_FLOAT: return "float";
    case T_OP: return op_text[op];
    default: return "end of template";
    }
}

static const char *describe(jtok *t) { return t->type == T_NAME ? t->s->s : describe_type(t->type, t->op); }

static jtok *expect(jparser *P, int type, int op, const char *name) {
    jtok *t = cur(P);
    int ok = t->type == type && (type != T_OP || t->op == op) && (!name || strcmp(t->s->s, name) == 0);
    if (!ok) {
        const char *want = name ? name : describe_type(type, op);
        if (t->type == T_EOF) pfail(P, t->line, "unexpected end of template, expected '%s'.", want);
        pfail(P, t->line, "expected token '%s', got '%s'", want, describe(t));
    }
    return next_tok(P);
}

static jnode *mk(jparser *P, int kind, int line) {
    jnode *n = palloc(P, sizeof(jnode));
    n->kind = (uint8_t)kind;
    n->line = line;
    n->fid = -1;
    return n;
}

typedef struct { jnode **v; int n, cap; } nvec;

static void nv_push(jparser *P, nvec *v, jnode *x) {
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 8;
        jnode **nn = palloc(P, sizeof(jnode *) * (size_t)cap);
        if (v->n) memcpy(nn, v->v, sizeof(jnode *) * (size_t)v->n);
        v->v = nn;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static jnodes nv_done(nvec *v) { jnodes r = {v->v, v->n}; return r; }

#define MAX_EXPR_DEPTH 400

/* an expression node is complete: its depth is one more than its deepest operand */
static jnode *fin(jparser *P, jnode *x) {
    int d = 0;
    jnode *ch[3] = {x->a, x->b, x->c};
    for (int i = 0; i < 3; i++)
        if (ch[i] && ch[i]->dep > d) d = ch[i]->dep;
    for (int i = 0; i < x->list.n; i++)
        if (x->list.v[i]->dep > d) d = x->list.v[i]->dep;
    for (int i = 0; i < x->list2.n; i++)
        if (x->list2.v[i]->dep > d) d = x->list2.v[i]->dep;
    if (d + 1 > MAX_EXPR_DEPTH) pfail(P, x->line, "expression nested too deeply (more than %d levels)", MAX_EXPR_DEPTH);
    x->dep = (uint16_t)(d + 1);
    return x;
}

static void enter(jparser *P, int line) {
    if (++P->depth > MAX_NEST) pfail(P, line, "template nested too deeply (more than %d levels)", MAX_NEST);
}
static void leave(jparser *P) { P->depth--; }

static void late_fail(jparser *P, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void late_fail(jparser *P, int line, const char *fmt, ...) {
    if (P->late_err[0]) return;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(P->late_err, sizeof(P->late_err), "%s:%d: %s", P->name, line, msg);
}

/* ===== expressions ===== */

static jnode *parse_expression(jparser *P, int with_condexpr);
static jnode *parse_tuple(jparser *P, int simplified, int with_condexpr, const char *extra_end, int explicit_parens, int with_ns);
static jnode *parse_primary(jparser *P, int with_ns);
static jnode *parse_unary(jparser *P, int with_filter);
static jnodes subparse(jparser *P, const char *const *end_tokens);

static jnode *parse_condexpr(jparser *P);
static jnode *parse_or(jparser *P);

static jnode *parse_expression(jparser *P, int with_condexpr) {
    enter(P, cur(P)->line);
    jnode *r = with_condexpr ? parse_condexpr(P) : parse_or(P);
    leave(P);
    return r;
}

static jnode *parse_condexpr(jparser *P) {
    int line = cur(P)->line;
    jnode *e1 = parse_or(P);
    while (is_name(cur(P), "if")) {
        next_tok(P);
        jnode *e2 = parse_or(P);
        jnode *e3 = NULL;
        if (is_name(cur(P), "else")) {
            next_tok(P);
            e3 = parse_condexpr(P);
        }
        jnode *c = mk(P, E_COND, line);
        c->a = e1;
        c->b = e2;
        c->c = e3;
        e1 = fin(P, c);
        line = cur(P)->line;
    }
    return e1;
}

static jnode *parse_and(jparser *P);
static jnode *parse_not(jparser *P);
static jnode *parse_compare(jparser *P);

/* operand (word operand)*, left associative: `or` over `and`, `and` over `not` */
static jnode *parse_logic(jparser *P, const char *word, int kind, jnode *(*operand)(jparser *)) {
    int line = cur(P)->line;
    jnode *l = operand(P);
    while (is_name(cur(P), word)) {
        next_tok(P);
        jnode *r = operand(P);
        jnode *x = mk(P, kind, line);
        x->a = l;
        x->b = r;
        l = fin(P, x);
        line = cur(P)->line;
    }
    return l;
}

static jnode *parse_or(jparser *P) { return parse_logic(P, "or", E_OR, parse_and); }
static jnode *parse_and(jparser *P) { return parse_logic(P, "and", E_AND, parse_not); }

static jnode *parse_not(jparser *P) {
    if (is_name(cur(P), "not")) {
        int line = next_tok(P)->line;
        enter(P, line);
        jnode *x = mk(P, E_NOT, line);
        x->a = parse_not(P);
        leave(P);
        return fin(P, x);
    }
    return parse_compare(P);
}

static jnode *parse_math1(jparser *P);

static jnode *parse_compare(jparser *P) {
    int line = cur(P)->line;
    jnode *e = parse_math1(P);
    nvec ops = {0};
    uint8_t kinds[64];
    int nk = 0;
    for (;;) {
        jtok *t = cur(P);
        int k = -1;
        if (t->type == T_OP) {
            switch (t->op) {
            case O_EQ: k = CMP_EQ; break;
            case O_NE: k = CMP_NE; break;
            case O_LT: k = CMP_LT; break;
            case O_LTEQ: k = CMP_LE; break;
            case O_GT: k = CMP_GT; break;
            case O_GTEQ: k = CMP_GE; break;
            default: break;
            }
            if (k >= 0) next_tok(P);
        } else if (is_name(t, "in")) {
            next_tok(P);
            k = CMP_IN;
        } else if (is_name(t, "not") && is_name(look(P), "in")) {
            next_tok(P);
            next_tok(P);
            k = CMP_NOTIN;
        }
        if (k < 0) break;
        if (nk == 64) pfail(P, t->line, "comparison chain too long");
        kinds[nk++] = (uint8_t)k;
        nv_push(P, &ops, parse_math1(P));
        line = cur(P)->line;
    }
    if (!nk) return e;
    jnode *x = mk(P, E_COMPARE, line);
    x->a = e;
    x->list = nv_done(&ops);
    x->ops = palloc(P, (size_t)nk);
    memcpy(x->ops, kinds, (size_t)nk);
    return fin(P, x);
}

static jnode *binop(jparser *P, int op, jnode *l, jnode *r, int line) {
    jnode *x = mk(P, E_BINOP, line);
    x->op = (uint8_t)op;
    x->a = l;
    x->b = r;
    return fin(P, x);
}

static jnode *parse_concat(jparser *P);
static jnode *parse_math2(jparser *P);
static jnode *parse_pow(jparser *P);

static jnode *parse_math1(jparser *P) {
    int line = cur(P)->line;
    jnode *l = parse_concat(P);
    while (cur(P)->type == T_OP && (cur(P)->op == O_ADD || cur(P)->op == O_SUB)) {
        int op = next_tok(P)->op == O_ADD ? OP_ADD : OP_SUB;
        l = binop(P, op, l, parse_concat(P), line);
        line = cur(P)->line;
    }
    return l;
}

static jnode *parse_concat(jparser *P) {
    int line = cur(P)->line;
    jnode *first = parse_math2(P);
    if (!is_op(cur(P), O_TILDE)) return first;
    nvec args = {0};
    nv_push(P, &args, first);
    while (is_op(cur(P), O_TILDE)) {
        next_tok(P);
        nv_push(P, &args, parse_math2(P));
    }
    jnode *x = mk(P, E_CONCAT, line);
    x->list = nv_done(&args);
    return fin(P, x);
}

static jnode *parse_math2(jparser *P) {
    int line = cur(P)->line;
    jnode *l = parse_pow(P);
    for (;;) {
        jtok *t = cur(P);
        int op = -1;
        if (t->type == T_OP) {
            if (t->op == O_MUL) op = OP_MUL;
            else if (t->op == O_DIV) op = OP_DIV;
            else if (t->op == O_FLOORDIV) op = OP_FLOORDIV;
            else if (t->op == O_MOD) op = OP_MOD;
        }
        if (op < 0) break;
        next_tok(P);
        l = binop(P, op, l, parse_pow(P), line);
        line = cur(P)->line;
    }
    return l;
}

static jnode *parse_pow(jparser *P) {
    int line = cur(P)->line;
    jnode *l = parse_unary(P, 1);
    while (is_op(cur(P), O_POW)) {
        next_tok(P);
        l = binop(P, OP_POW, l, parse_unary(P, 1), line);
        line = cur(P)->line;
    }
    return l;
}

static jnode *parse_postfix(jparser *P, jnode *node);
static jnode *parse_filter_expr(jparser *P, jnode *node);

static jnode *parse_unary(jparser *P, int with_filter) {
    jtok *t = cur(P);
    int line = t->line;
    enter(P, line);
    jnode *node;
    if (is_op(t, O_SUB) || is_op(t, O_ADD)) {
        next_tok(P);
        node = mk(P, t->op == O_SUB ? E_NEG : E_POS, line);
        node->a = parse_unary(P, 0);
        fin(P, node);
    } else {
        node = parse_primary(P, 0);
    }
    node = parse_postfix(P, node);
    if (with_filter) node = parse_filter_expr(P, node);
    leave(P);
    return node;
}

static jnode *mk_const(jparser *P, jv v, int line) {
    jnode *x = mk(P, E_CONST, line);
    x->cval = v;
    return x;
}

static jnode *parse_list(jparser *P) {
    int line = expect(P, T_OP, O_LBRACKET, NULL)->line;
    nvec items = {0};
    while (!is_op(cur(P), O_RBRACKET)) {
        if (items.n) expect(P, T_OP, O_COMMA, NULL);
        if (is_op(cur(P), O_RBRACKET)) break;
        nv_push(P, &items, parse_expression(P, 1));
    }
    expect(P, T_OP, O_RBRACKET, NULL);
    jnode *x = mk(P, E_LIST, line);
    x->list = nv_done(&items);
    return fin(P, x);
}

static jnode *parse_dict(jparser *P) {
    int line = expect(P, T_OP, O_LBRACE, NULL)->line;
    nvec keys = {0}, vals = {0};
    while (!is_op(cur(P), O_RBRACE)) {
        if (keys.n) expect(P, T_OP, O_COMMA, NULL);
        if (is_op(cur(P), O_RBRACE)) break;
        nv_push(P, &keys, parse_expression(P, 1));
        expect(P, T_OP, O_COLON, NULL);
        nv_push(P, &vals, parse_expression(P, 1));
    }
    expect(P, T_OP, O_RBRACE, NULL);
    jnode *x = mk(P, E_DICT, line);
    x->list = nv_done(&keys);
    x->list2 = nv_done(&vals);
    return fin(P, x);
}

static jnode *parse_primary(jparser *P, int with_ns) {
    jtok *t = cur(P);
    if (t->type == T_NAME) {
        next_tok(P);
        const char *v = t->s->s;
        if (!strcmp(v, "true") || !strcmp(v, "True")) return mk_const(P, jv_bool(1), t->line);
        if (!strcmp(v, "false") || !strcmp(v, "False")) return mk_const(P, jv_bool(0), t->line);
        if (!strcmp(v, "none") || !strcmp(v, "None")) return mk_const(P, jv_none(), t->line);
        if (with_ns && is_op(cur(P), O_DOT)) {
            next_tok(P);
            jtok *a = expect(P, T_NAME, 0, NULL);
            jnode *x = mk(P, E_NSREF, t->line);
            x->name = t->s;
            x->attr = a->s;
            return x;
        }
        jnode *x = mk(P, E_NAME, t->line);
        x->name = t->s;
        return x;
    }
    if (t->type == T_STRING) {
        next_tok(P);
        if (cur(P)->type != T_STRING) return mk_const(P, jv_obj(JV_STR, t->s), t->line);
        size_t len = t->s->len;
        int e = P->pos;
        while (P->tok[e].type == T_STRING) len += P->tok[e++].s->len;
        char *buf = malloc(len + 1);
        if (!buf) pfail(P, t->line, "out of memory");
        size_t k = t->s->len;
        memcpy(buf, t->s->s, k);
        while (cur(P)->type == T_STRING) {
            jtok *u = next_tok(P);
            memcpy(buf + k, u->s->s, u->s->len);
            k += u->s->len;
        }
        jstr *s = pstr(P, buf, k);
        free(buf);
        return mk_const(P, jv_obj(JV_STR, s), t->line);
    }
    if (t->type == T_INT) { next_tok(P); return mk_const(P, jv_int(t->i), t->line); }
    if (t->type == T_FLOAT) { next_tok(P); return mk_const(P, jv_float(t->f), t->line); }
    if (is_op(t, O_LPAREN)) {
        next_tok(P);
        jnode *x = parse_tuple(P, 0, 1, NULL, 1, 0);
        expect(P, T_OP, O_RPAREN, NULL);
        return x;
    }
    if (is_op(t, O_LBRACKET)) return parse_list(P);
    if (is_op(t, O_LBRACE)) return parse_dict(P);
    pfail(P, t->line, "unexpected '%s'", describe(t));
}

static int is_tuple_end(jparser *P, const char *extra_end) {
    jtok *t = cur(P);
    if (t->type == T_VAR_END || t->type == T_BLOCK_END || is_op(t, O_RPAREN)) return 1;
    return extra_end && is_name(t, extra_end);
}

static jnode *parse_tuple(jparser *P, int simplified, int with_condexpr, const char *extra_end, int explicit_parens, int with_ns) {
    int line = cur(P)->line;
    nvec args = {0};
    int is_tuple = 0;
    for (;;) {
        if (args.n) expect(P, T_OP, O_COMMA, NULL);
        if (is_tuple_end(P, extra_end)) break;
        nv_push(P, &args, simplified ? parse_primary(P, with_ns) : parse_expression(P, with_condexpr));
        if (is_op(cur(P), O_COMMA)) is_tuple = 1;
        else break;
        line = cur(P)->line;
    }
    if (!is_tuple) {
        if (args.n) return args.v[0];
        if (!explicit_parens) pfail(P, cur(P)->line, "Expected an expression, got '%s'", describe(cur(P)));
    }
    jnode *x = mk(P, E_TUPLE, line);
    x->list = nv_done(&args);
    return fin(P, x);
}

static jnode *parse_subscribed(jparser *P) {
    int line = cur(P)->line;
    jnode *args[3] = {NULL, NULL, NULL};
    if (is_op(cur(P), O_COLON)) {
        next_tok(P);
    } else {
        jnode *node = parse_expression(P, 1);
        if (!is_op(cur(P), O_COLON)) return node;
        next_tok(P);
        args[0] = node;
    }
    if (is_op(cur(P), O_COLON)) {
        /* no stop */
    } else if (!is_op(cur(P), O_RBRACKET) && !is_op(cur(P), O_COMMA)) {
        args[1] = parse_expression(P, 1);
    }
    if (is_op(cur(P), O_COLON)) {
        next_tok(P);
        if (!is_op(cur(P), O_RBRACKET) && !is_op(cur(P), O_COMMA)) args[2] = parse_expression(P, 1);
    }
    jnode *x = mk(P, E_SLICE, line);
    x->a = args[0];
    x->b = args[1];
    x->c = args[2];
    return fin(P, x);
}

static jnode *parse_subscript(jparser *P, jnode *node) {
    jtok *t = next_tok(P);
    if (is_op(t, O_DOT)) {
        jtok *a = cur(P);
        next_tok(P);
        if (a->type == T_NAME) {
            jnode *x = mk(P, E_GETATTR, t->line);
            x->a = node;
            x->name = a->s;
            return fin(P, x);
        }
        if (a->type != T_INT) pfail(P, a->line, "expected name or number");
        jnode *x = mk(P, E_GETITEM, t->line);
        x->a = node;
        x->b = mk_const(P, jv_int(a->i), a->line);
        return fin(P, x);
    }
    /* [ */
    nvec args = {0};
    while (!is_op(cur(P), O_RBRACKET)) {
        if (args.n) expect(P, T_OP, O_COMMA, NULL);
        nv_push(P, &args, parse_subscribed(P));
    }
    expect(P, T_OP, O_RBRACKET, NULL);
    jnode *x = mk(P, E_GETITEM, t->line);
    x->a = node;
    if (args.n == 1) {
        x->b = args.v[0];
    } else {
        jnode *tu = mk(P, E_TUPLE, t->line);
        tu->list = nv_done(&args);
        x->b = fin(P, tu);
    }
    return fin(P, x);
}

/* (args, kwargs, *dyn_args, **dyn_kwargs) into x: list, names/list2, b, c */
static void parse_call_args(jparser *P, jnode *x) {
    jtok *lp = expect(P, T_OP, O_LPAREN, NULL);
    nvec args = {0}, kvals = {0};
    jstr *knames[256];
    int nk = 0, require_comma = 0;
    while (!is_op(cur(P), O_RPAREN)) {
        if (require_comma) {
            expect(P, T_OP, O_COMMA, NULL);
            if (is_op(cur(P), O_RPAREN)) break;
        }
        if (is_op(cur(P), O_MUL)) {
            if (x->b || x->c) pfail(P, lp->line, "invalid syntax for function call expression");
            next_tok(P);
            x->b = parse_expression(P, 1);
        } else if (is_op(cur(P), O_POW)) {
            if (x->c) pfail(P, lp->line, "invalid syntax for function call expression");
            next_tok(P);
            x->c = parse_expression(P, 1);
        } else if (cur(P)->type == T_NAME && is_op(look(P), O_ASSIGN)) {
            if (x->c) pfail(P, lp->line, "invalid syntax for function call expression");
            if (nk == 256) pfail(P, lp->line, "too many keyword arguments");
            knames[nk] = next_tok(P)->s;
            next_tok(P);
            nv_push(P, &kvals, parse_expression(P, 1));
            nk++;
        } else {
            if (x->b || x->c || nk) pfail(P, lp->line, "invalid syntax for function call expression");
            nv_push(P, &args, parse_expression(P, 1));
        }
        require_comma = 1;
    }
    expect(P, T_OP, O_RPAREN, NULL);
    x->list = nv_done(&args);
    x->list2 = nv_done(&kvals);
    x->nnames = nk;
    if (nk) {
        x->names = palloc(P, sizeof(jstr *) * (size_t)nk);
        memcpy(x->names, knames, sizeof(jstr *) * (size_t)nk);
    }
}

static jnode *parse_call(jparser *P, jnode *node) {
    jnode *x = mk(P, E_CALL, cur(P)->line);
    x->a = node;
    parse_call_args(P, x);
    return fin(P, x);
}

static jstr *dotted_name(jparser *P, jtok *first) {
    if (!is_op(cur(P), O_DOT)) return first->s;
    char buf[256];
    size_t k = (size_t)snprintf(buf, sizeof(buf), "%s", first->s->s);
    while (is_op(cur(P), O_DOT)) {
        next_tok(P);
        jtok *t = expect(P, T_NAME, 0, NULL);
        k += (size_t)snprintf(buf + k, sizeof(buf) > k ? sizeof(buf) - k : 0, ".%s", t->s->s);
        if (k >= sizeof(buf)) pfail(P, t->line, "name too long");
    }
    return pintern(P, buf, k);
}

static jnode *parse_filter(jparser *P, jnode *node, int start_inline) {
    while (is_op(cur(P), O_PIPE) || start_inline) {
        if (!start_inline) next_tok(P);
        jtok *t = expect(P, T_NAME, 0, NULL);
        jstr *name = dotted_name(P, t);
        jnode *x = mk(P, E_FILTER, t->line);
        x->a = node;
        x->name = name;
        if (is_op(cur(P), O_LPAREN)) parse_call_args(P, x);
        x->fid = jfilter_id(name->s);
        node = fin(P, x);
        start_inline = 0;
    }
    return node;
}

static jnode *parse_test(jparser *P, jnode *node) {
    jtok *is = next_tok(P);
    int negated = 0;
    if (is_name(cur(P), "not")) {
        next_tok(P);
        negated = 1;
    }
    jtok *t = expect(P, T_NAME, 0, NULL);
    jstr *name = dotted_name(P, t);
    jnode *x = mk(P, E_TEST, is->line);
    x->a = node;
    x->name = name;
    jtok *c = cur(P);
    if (is_op(c, O_LPAREN)) {
        parse_call_args(P, x);
    } else if ((c->type == T_NAME || c->type == T_STRING || c->type == T_INT || c->type == T_FLOAT || is_op(c, O_LPAREN) ||
                is_op(c, O_LBRACKET) || is_op(c, O_LBRACE)) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) pfail(P, c->line, "You cannot chain multiple tests with is");
        jnode *arg = parse_postfix(P, parse_primary(P, 0));
        nvec args = {0};
        nv_push(P, &args, arg);
        x->list = nv_done(&args);
    }
    x->fid = jtest_id(name->s);
    fin(P, x);
    if (negated) {
        jnode *nt = mk(P, E_NOT, is->line);
        nt->a = x;
        return fin(P, nt);
    }
    return x;
}

static jnode *parse_postfix(jparser *P, jnode *node) {
    for (;;) {
        jtok *t = cur(P);
        if (is_op(t, O_DOT) || is_op(t, O_LBRACKET)) node = parse_subscript(P, node);
        else if (is_op(t, O_LPAREN)) node = parse_call(P, node);
        else break;
    }
    return node;
}

static jnode *parse_filter_expr(jparser *P, jnode *node) {
    for (;;) {
        jtok *t = cur(P);
        if (is_op(t, O_PIPE)) node = parse_filter(P, node, 0);
        else if (is_name(t, "is")) node = parse_test(P, node);
        else if (is_op(t, O_LPAREN)) node = parse_call(P, node);
        else break;
    }
    return node;
}

/* ===== statements ===== */

static int can_assign(jnode *t) {
    if (t->kind == E_NAME) {
        const char *v = t->name->s;
        return strcmp(v, "true") && strcmp(v, "false") && strcmp(v, "none") && strcmp(v, "True") && strcmp(v, "False") &&
               strcmp(v, "None");
    }
    if (t->kind == E_NSREF) return 1;
    if (t->kind == E_TUPLE) {
        for (int i = 0; i < t->list.n; i++)
            if (!can_assign(t->list.v[i])) return 0;
        return 1;
    }
    return 0;
}

static const char *node_kind_name(jnode *t) {
    switch (t->kind) {
    case E_CONST: return "const";
    case E_LIST: return "list";
    case E_DICT: return "dict";
    case E_TUPLE: return "tuple";
    default: return "expr";
    }
}

static jnode *parse_assign_target(jparser *P, int with_tuple, int name_only, const char *extra_end, int with_ns) {
    jnode *target;
    if (name_only) {
        jtok *t = expect(P, T_NAME, 0, NULL);
        target = mk(P, E_NAME, t->line);
        target->name = t->s;
    } else if (with_tuple) {
        target = parse_tuple(P, 1, 1, extra_end, 0, with_ns);
    } else {
        target = parse_primary(P, with_ns);
    }
    if (!can_assign(target)) pfail(P, target->line, "can't assign to '%s'", node_kind_name(target));
    return target;
}

static jnodes parse_statements(jparser *P, const char *const *end_tokens, int drop_needle);

static const char *const END_FOR[] = {"endfor", "else", NULL};
static const char *const END_FOR_ONLY[] = {"endfor", NULL};
static const char *const END_IF[] = {"elif", "else", "endif", NULL};
static const char *const END_IF_ONLY[] = {"endif", NULL};
static const char *const END_SET[] = {"endset", NULL};
static const char *const END_MACRO[] = {"endmacro", NULL};
static const char *const END_CALL[] = {"endcall", NULL};
static const char *const END_FILTER[] = {"endfilter", NULL};
static const char *const END_WITH[] = {"endwith", NULL};
static const char *const END_GENERATION[] = {"endgeneration", NULL};

static jnode *parse_for(jparser *P) {
    int line = expect(P, T_NAME, 0, "for")->line;
    jnode *x = mk(P, S_FOR, line);
    x->a = parse_assign_target(P, 1, 0, "in", 0);
    expect(P, T_NAME, 0, "in");
    x->b = parse_tuple(P, 0, 0, "recursive", 0, 0);
    if (is_name(cur(P), "if")) {
        next_tok(P);
        x->c = parse_expression(P, 1);
    }
    if (is_name(cur(P), "recursive")) {
        next_tok(P);
        x->flags |= NF_RECURSIVE;
    }
    x->body = parse_statements(P, END_FOR, 0);
    if (!strcmp(next_tok(P)->s->s, "else")) x->else_ = parse_statements(P, END_FOR_ONLY, 1);
    return x;
}

static jnode *parse_if(jparser *P) {
    jnode *root = mk(P, S_IF, expect(P, T_NAME, 0, "if")->line), *node = root;
    for (;;) {
        node->a = parse_tuple(P, 0, 0, NULL, 0, 0);
        node->body = parse_statements(P, END_IF, 0);
        jtok *t = next_tok(P);
        if (!strcmp(t->s->s, "elif")) {
            jnode *e = mk(P, S_IF, cur(P)->line);
            nvec v = {0};
            nv_push(P, &v, e);
            node->else_ = nv_done(&v);
            node = e;
            continue;
        }
        if (!strcmp(t->s->s, "else")) node->else_ = parse_statements(P, END_IF_ONLY, 1);
        break;
    }
    return root;
}

static jnode *parse_set(jparser *P) {
    int line = next_tok(P)->line;
    jnode *target = parse_assign_target(P, 1, 0, NULL, 1);
    if (is_op(cur(P), O_ASSIGN)) {
        next_tok(P);
        jnode *x = mk(P, S_SET, line);
        x->a = target;
        x->b = parse_tuple(P, 0, 1, NULL, 0, 0);
        return x;
    }
    jnode *x = mk(P, S_SETBLOCK, line);
    x->a = target;
    x->c = parse_filter(P, NULL, 0);
    x->body = parse_statements(P, END_SET, 1);
    return x;
}

/* does the subtree load a name (jinja2's find_undeclared for caller / varargs / kwargs)? */
static int uses_name(jnode *n, const char *name);
static int uses_names(jnodes *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (uses_name(l->v[i], name)) return 1;
    return 0;
}
static int uses_name(jnode *n, const char *name) {
    if (!n) return 0;
    if (n->kind == E_NAME) return !strcmp(n->name->s, name);
    int skip_a = n->kind == S_SET || n->kind == S_FOR || n->kind == S_SETBLOCK;
    if (!skip_a && uses_name(n->a, name)) return 1;
    if (uses_name(n->b, name) || uses_name(n->c, name)) return 1;
    if (uses_names(&n->list, name) || uses_names(&n->body, name) || uses_names(&n->else_, name)) return 1;
    if (n->kind != S_WITH && uses_names(&n->list2, name)) return 1;
    return 0;
}

static void parse_signature(jparser *P, jnode *x) {
    expect(P, T_OP, O_LPAREN, NULL);
    jstr *names[256];
    nvec defaults = {0};
    int n = 0;
    while (!is_op(cur(P), O_RPAREN)) {
        if (n) expect(P, T_OP, O_COMMA, NULL);
        jnode *arg = parse_assign_target(P, 1, 1, NULL, 0);
        if (is_op(cur(P), O_ASSIGN)) {
            next_tok(P);
            nv_push(P, &defaults, parse_expression(P, 1));
        } else if (defaults.n) {
            pfail(P, cur(P)->line, "non-default argument follows default argument");
        }
        if (n == 256) pfail(P, arg->line, "too many parameters");
        names[n++] = arg->name;
    }
    expect(P, T_OP, O_RPAREN, NULL);
    x->nnames = n;
    if (n) {
        x->names = palloc(P, sizeof(jstr *) * (size_t)n);
        memcpy(x->names, names, sizeof(jstr *) * (size_t)n);
    }
    x->list = nv_done(&defaults);
}

static void macro_flags(jparser *P, jnode *x) {
    int explicit_caller = -1, has_varargs = 0, has_kwargs = 0;
    for (int i = 0; i < x->nnames; i++) {
        if (!strcmp(x->names[i]->s, "caller")) explicit_caller = i;
        if (!strcmp(x->names[i]->s, "varargs")) has_varargs = 1;
        if (!strcmp(x->names[i]->s, "kwargs")) has_kwargs = 1;
    }
    if (uses_names(&x->body, "caller")) {
        if (explicit_caller >= 0) {
            if (explicit_caller - x->nnames + x->list.n < 0)
                late_fail(P, x->line, "When defining macros or call blocks the special \"caller\" argument must be omitted or be given a default.");
            x->flags |= NF_EXPLICIT_CALLER;
        } else {
            x->flags |= NF_CALLER;
        }
    } else if (explicit_caller >= 0) {
        x->flags |= NF_EXPLICIT_CALLER;
    }
    if (!has_kwargs && uses_names(&x->body, "kwargs")) x->flags |= NF_KWARGS;
    if (!has_varargs && uses_names(&x->body, "varargs")) x->flags |= NF_VARARGS;
}

static jnode *parse_macro(jparser *P) {
    int line = next_tok(P)->line;
    jnode *x = mk(P, S_MACRO, line);
    x->name = parse_assign_target(P, 1, 1, NULL, 0)->name;
    parse_signature(P, x);
    x->body = parse_statements(P, END_MACRO, 1);
    macro_flags(P, x);
    return x;
}

static jnode *parse_call_block(jparser *P) {
    int line = next_tok(P)->line;
    jnode *x = mk(P, S_CALLBLOCK, line);
    if (is_op(cur(P), O_LPAREN)) parse_signature(P, x);
    jnode *call = parse_expression(P, 1);
    if (call->kind != E_CALL) pfail(P, line, "expected call");
    x->a = call;
    x->body = parse_statements(P, END_CALL, 1);
    macro_flags(P, x);
    return x;
}

static jnode *parse_filter_block(jparser *P) {
    int line = next_tok(P)->line;
    jnode *x = mk(P, S_FILTERBLOCK, line);
    x->c = parse_filter(P, NULL, 1);
    x->body = parse_statements(P, END_FILTER, 1);
    return x;
}

static jnode *parse_with(jparser *P) {
    int line = next_tok(P)->line;
    jnode *x = mk(P, S_WITH, line);
    nvec targets = {0}, values = {0};
    while (cur(P)->type != T_BLOCK_END) {
        if (targets.n) expect(P, T_OP, O_COMMA, NULL);
        nv_push(P, &targets, parse_assign_target(P, 1, 0, NULL, 0));
        expect(P, T_OP, O_ASSIGN, NULL);
        nv_push(P, &values, parse_expression(P, 1));
    }
    x->list = nv_done(&values);
    x->list2 = nv_done(&targets);
    x->body = parse_statements(P, END_WITH, 1);
    return x;
}

static jnode *parse_print(jparser *P) {
    int line = next_tok(P)->line;
    jnode *x = mk(P, S_SCOPE, line);   /* a scope with no frame of its own: a list of prints */
    nvec items = {0};
    while (cur(P)->type != T_BLOCK_END) {
        if (items.n) expect(P, T_OP, O_COMMA, NULL);
        jnode *p = mk(P, S_PRINT, cur(P)->line);
        p->a = parse_expression(P, 1);
        p->line = p->a->line;
        nv_push(P, &items, p);
    }
    x->body = nv_done(&items);
    x->flags = 1;   /* no new frame */
    return x;
}

static _Noreturn void fail_unknown(jparser *P, const char *name, int line, const char *const *extra) {
    char msg[1024];
    size_t k = 0;
    /* the tags every open block is waiting for */
    int expected = 0;
    if (name)
        for (int i = 0; i < P->nend; i++)
            for (const char *const *e = P->end_stack[i]; *e; e++)
                if (!strcmp(*e, name)) expected = 1;
    if (name) k += (size_t)snprintf(msg + k, sizeof(msg) - k, "Encountered unknown tag '%s'.", name);
    else k += (size_t)snprintf(msg + k, sizeof(msg) - k, "Unexpected end of template.");
    const char *const *looking = extra ? extra : (P->nend ? P->end_stack[P->nend - 1] : NULL);
    if (looking && k < sizeof(msg)) {
        char list[400];
        size_t m = 0;
        for (const char *const *e = looking; *e && m < sizeof(list); e++)
            m += (size_t)snprintf(list + m, sizeof(list) - m, "%s'%s'", e == looking ? "" : " or ", *e);
        if (expected)
            k += (size_t)snprintf(msg + k, sizeof(msg) - k,
                                  " You probably made a nesting mistake. Jinja is expecting this tag, but currently looking for %s.", list);
        else if (k < sizeof(msg))
            k += (size_t)snprintf(msg + k, sizeof(msg) - k, " Jinja was looking for the following tags: %s.", list);
    }
    if (P->ntag && k < sizeof(msg))
        snprintf(msg + k, sizeof(msg) - k, " The innermost block that needs to be closed is '%s'.", P->tag_stack[P->ntag - 1]);
    pfail(P, line, "%s", msg);
}

static jnode *parse_statement(jparser *P) {
    jtok *t = cur(P);
    if (t->type != T_NAME) pfail(P, t->line, "tag name expected");
    const char *v = t->s->s;
    if (P->ntag == 256) pfail(P, t->line, "blocks nested too deeply");
    P->tag_stack[P->ntag++] = v;
    enter(P, t->line);
    jnode *r;
    if (!strcmp(v, "for")) r = parse_for(P);
    else if (!strcmp(v, "if")) r = parse_if(P);
    else if (!strcmp(v, "set")) r = parse_set(P);
    else if (!strcmp(v, "macro")) r = parse_macro(P);
    else if (!strcmp(v, "call")) r = parse_call_block(P);
    else if (!strcmp(v, "filter")) r = parse_filter_block(P);
    else if (!strcmp(v, "with")) r = parse_with(P);
    else if (!strcmp(v, "print")) r = parse_print(P);
    else if (!strcmp(v, "break") || !strcmp(v, "continue")) {
        next_tok(P);
        r = mk(P, v[0] == 'b' ? S_BREAK : S_CONTINUE, t->line);
    } else if (!strcmp(v, "generation")) {
        /* transformers' {% generation %} marks assistant text; rendering is unchanged */
        next_tok(P);
        r = mk(P, S_SCOPE, t->line);
        r->body = parse_statements(P, END_GENERATION, 1);
    } else if (!strcmp(v, "block") || !strcmp(v, "extends") || !strcmp(v, "include") || !strcmp(v, "import") ||
               !strcmp(v, "from") || !strcmp(v, "autoescape")) {
        pfail(P, t->line, "the '%s' tag is not supported in chat templates", v);
    } else {
        P->ntag--;
        fail_unknown(P, v, t->line, NULL);
    }
    leave(P);
    P->ntag--;
    return r;
}

static jnodes parse_statements(jparser *P, const char *const *end_tokens, int drop_needle) {
    if (is_op(cur(P), O_COLON)) next_tok(P);
    expect(P, T_BLOCK_END, 0, NULL);
    jnodes body = subparse(P, end_tokens);
    if (cur(P)->type == T_EOF) {
        int line = cur(P)->line;
        if (P->nend == 256) pfail(P, line, "blocks nested too deeply");
        P->end_stack[P->nend++] = end_tokens;
        fail_unknown(P, NULL, line, NULL);
    }
    if (drop_needle) next_tok(P);
    return body;
}

static jnodes subparse(jparser *P, const char *const *end_tokens) {
    nvec body = {0};
    if (end_tokens) {
        if (P->nend == 256) pfail(P, cur(P)->line, "blocks nested too deeply");
        P->end_stack[P->nend++] = end_tokens;
    }
    while (cur(P)->type != T_EOF) {
        jtok *t = cur(P);
        if (t->type == T_DATA) {
            jnode *x = mk(P, S_TEXT, t->line);
            x->cval = jv_obj(JV_STR, t->s);
            nv_push(P, &body, x);
            next_tok(P);
        } else if (t->type == T_VAR_BEGIN) {
            next_tok(P);
            jnode *x = mk(P, S_PRINT, cur(P)->line);
            x->a = parse_tuple(P, 0, 1, NULL, 0, 0);
            x->line = x->a->line;   /* jinja2 reports the expression node's line (an operator chain's last operator) */
            nv_push(P, &body, x);
            expect(P, T_VAR_END, 0, NULL);
        } else if (t->type == T_BLOCK_BEGIN) {
            next_tok(P);
            if (end_tokens && cur(P)->type == T_NAME) {
                for (const char *const *e = end_tokens; *e; e++)
                    if (!strcmp(cur(P)->s->s, *e)) {
                        P->nend--;
                        return nv_done(&body);
                    }
            }
            nv_push(P, &body, parse_statement(P));
            expect(P, T_BLOCK_END, 0, NULL);
        } else {
            pfail(P, t->line, "internal parsing error");
        }
    }
    if (end_tokens) P->nend--;
    return nv_done(&body);
}

/* ===== compile-time checks =====
 * What jinja2 finds when it compiles the parsed template (in document order): an unknown filter or
 * test, unless inside an if or inline if of the same frame ("soft": then it fails when evaluated);
 * break / continue outside a loop of the same function; assigning to `loop` in a for target. */

static void check(jparser *P, jnode *n, int soft, int loops);

static void check_list(jparser *P, jnodes *l, int soft, int loops) {
    for (int i = 0; i < l->n; i++) check(P, l->v[i], soft, loops);
}

static void check_loop_target(jparser *P, jnode *t) {
    if (t->kind == E_NAME && !strcmp(t->name->s, "loop"))
        late_fail(P, t->line, "Can't assign to special loop variable in for-loop target");
    if (t->kind == E_TUPLE)
        for (int i = 0; i < t->list.n; i++) check_loop_target(P, t->list.v[i]);
}

static void check(jparser *P, jnode *n, int soft, int loops) {
    if (!n) return;
    switch (n->kind) {
    case E_FILTER:
    case E_TEST:
        if (n->fid < 0) {
            if (soft) n->flags |= NF_SOFT;
            else late_fail(P, n->line, "No %s named '%s'.", n->kind == E_FILTER ? "filter" : "test", n->name->s);
        }
        break;
    case E_COND:
        soft = 1;
        break;
    case S_IF:
        check(P, n->a, 1, loops);
        check_list(P, &n->body, 1, loops);
        check_list(P, &n->else_, 1, loops);
        return;
    case S_FOR:
        check_loop_target(P, n->a);
        check(P, n->b, soft, loops);
        check(P, n->c, 0, loops);
        check_list(P, &n->body, 0, loops + 1);
        check_list(P, &n->else_, 0, loops);
        return;
    case S_MACRO:
        check_list(P, &n->list, 0, 0);
        check_list(P, &n->body, 0, 0);
        return;
    case S_CALLBLOCK:
        check(P, n->a, soft, loops);
        check_list(P, &n->list, 0, 0);
        check_list(P, &n->body, 0, 0);
        return;
    case S_SETBLOCK:
    case S_FILTERBLOCK:
        check(P, n->c, 0, loops);
        check_list(P, &n->body, 0, loops);
        return;
    case S_WITH:
        check_list(P, &n->list, soft, loops);
        check_list(P, &n->body, 0, loops);
        return;
    case S_SCOPE:
        if (n->flags != 1) soft = 0, loops = 0;   /* {% generation %}: a call block */
        break;
    case S_BREAK:
    case S_CONTINUE:
        if (!loops) late_fail(P, n->line, "'%s' outside loop", n->kind == S_BREAK ? "break" : "continue");
        return;
    default:
        break;
    }
    check(P, n->a, soft, loops);
    check(P, n->b, soft, loops);
    check(P, n->c, soft, loops);
    check_list(P, &n->list, soft, loops);
    check_list(P, &n->list2, soft, loops);
    check_list(P, &n->body, soft, loops);
    check_list(P, &n->else_, soft, loops);
}

/* ===== the template ===== */

static int valid_utf8(const char *s, size_t n, size_t *bad) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!k || i + k > n) { *bad = i; return 0; }
        uint32_t cp = k == 1 ? c : k == 2 ? (c & 0x1Fu) : k == 3 ? (c & 0x0Fu) : (c & 0x07u);
        for (size_t j = 1; j < k; j++) {
            unsigned char d = (unsigned char)s[i + j];
            if ((d & 0xC0) != 0x80) { *bad = i; return 0; }
            cp = (cp << 6) | (d & 0x3Fu);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF)) { *bad = i; return 0; }
        i += k;
    }
    return 1;
}

int jinja_parse(const char *src, size_t len, const char *name, jinja_tpl **out, char *err, size_t errlen) {
    *out = NULL;
    if (!name) name = "<template>";
    size_t bad;
    if (!valid_utf8(src, len, &bad)) {
        int line = 1;
        for (size_t i = 0; i < bad; i++) line += src[i] == '\n';
        snprintf(err, err ? errlen : 0, "%s:%d: the template is not valid UTF-8 (byte %zu)", name, line, bad);
        return -1;
    }
    jinja_tpl *t = calloc(1, sizeof(*t));
    char *norm = malloc(len + 1);
    if (!t || !norm) {
        free(t);
        free(norm);
        snprintf(err, err ? errlen : 0, "%s: out of memory", name);
        return -1;
    }
    /* newlines -> \n; drop one trailing newline (keep_trailing_newline=False) */
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            norm[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            norm[k++] = src[i];
        }
    }
    if (k && norm[k - 1] == '\n') k--;
    norm[k] = 0;
    t->name = strdup(name);
    jparser *P = calloc(1, sizeof(*P));
    if (!t->name || !P) {
        free(norm);
        free(P);
        jinja_free(t);
        snprintf(err, err ? errlen : 0, "%s: out of memory", name);
        return -1;
    }
    P->name = t->name;
    P->src = norm;
    P->n = k;
    P->arena = &t->arena;
    P->err = err;
    P->errlen = err ? errlen : 0;
    int rc = -1;
    if (setjmp(P->jb) == 0) {
        lex(P);
        t->body = subparse(P, NULL);
        check_list(P, &t->body, 0, 0);
        if (P->late_err[0]) {
            if (err && errlen) snprintf(err, errlen, "%s", P->late_err);
        } else {
            rc = 0;
        }
    }
    free(P->tok);
    free(P->names);
    free(P);
    free(norm);
    if (rc) {
        jinja_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void jinja_free(jinja_tpl *t) {
    if (!t) return;
    arena_free(t->arena);
    free(t->name);
    free(t);
}
