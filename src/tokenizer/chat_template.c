/*
 * chat_template.c - a model's chat template, rendered like transformers' apply_chat_template.
 *
 * Loading (what transformers reads from a checkpoint directory): chat_template.jinja, else
 * chat_template.json {"chat_template": ...}, else "chat_template" in tokenizer_config.json (a string,
 * or a list of {name, template}: "default", and "tool_use" when tools are given); else the built-in
 * Gemma 4 template (chat_default.jinja, compiled in). The named special tokens (bos_token, eos_token,
 * unk_token, sep_token, pad_token, cls_token, mask_token, and the names of an "extra_special_tokens"
 * object, like Gemma 3's boi_token) come from tokenizer_config.json, as strings or AddedToken objects
 * {"content": ...}; bos and eos default to "<bos>" and "<eos>".
 *
 * Rendering repeats apply_chat_template's preparation of the messages before the template sees them:
 * keys whose value is null are dropped from each message, and a message's reasoning given as
 * "reasoning_content", "thinking" or "reasoning" is copied to "thinking" (first key) and
 * "reasoning_content" (transformers' _alias_reasoning_fields). The template variables are messages,
 * tools (None when absent), documents (None), add_generation_prompt, the special tokens, then
 * enable_thinking and the extra variables (which override the special tokens).
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "load/gguf.h"
#include "tokenizer/jinja.h"
#include "chat_default.h"   /* generated from src/tokenizer/chat_default.jinja: chat_default_src */

static const char *const SPECIAL_NAMES[] = {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"};
#define N_SPECIAL 7

struct dg_chat_template {
    jinja_tpl *tpl;
    jinja_tpl *tool_tpl;       /* a "tool_use" template, used when tools are given (or NULL) */
    json_t *special;           /* {"bos_token": "<bos>", ...}: template variables */
};

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? 2 * cap : 65536 + 1;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t k = fread(buf + n, 1, 65536, f);
        n += k;
        if (k < 65536) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

void dg_chat_template_free(dg_chat_template *t) {
    if (!t) return;
    jinja_free(t->tpl);
    jinja_free(t->tool_tpl);
    json_decref(t->special);
    free(t);
}

static dg_chat_template *new_template(char *err, size_t errlen) {
    dg_chat_template *t = calloc(1, sizeof(*t));
    if (!t) {
        dg_fail(err, errlen, "out of memory");
        return NULL;
    }
    t->special = json_pack("{ssss}", "bos_token", "<bos>", "eos_token", "<eos>");
    if (!t->special) {
        dg_chat_template_free(t);
        dg_fail(err, errlen, "out of memory");
        return NULL;
    }
    return t;
}

int dg_chat_template_parse(const char *source, size_t len, const char *name, dg_chat_template **out, char *err, size_t errlen) {
    *out = NULL;
    dg_chat_template *t = new_template(err, errlen);
    if (!t) return -1;
    if (jinja_parse(source, len, name ? name : "chat_template", &t->tpl, err, errlen)) {
        dg_chat_template_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int dg_chat_template_default(dg_chat_template **out, char *err, size_t errlen) {
    return dg_chat_template_parse(chat_default_src, sizeof(chat_default_src) - 1, "<built-in Gemma 4 template>", out, err, errlen);
}

static int set_special(dg_chat_template *t, const char *name, json_t *v, const char *file, char *err, size_t errlen) {
    if (!v || json_is_null(v)) return 0;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v))
        return dg_fail(err, errlen, "%s: field %s must be a string or an object with a string \"content\"", file, name);
    if (json_object_set(t->special, name, v)) return dg_fail(err, errlen, "out of memory");
    return 0;
}

/* the special tokens of tokenizer_config.json (strings or {"content": ...}) */
static int read_special(dg_chat_template *t, json_t *cfg, const char *file, char *err, size_t errlen) {
    for (int i = 0; i < N_SPECIAL; i++)
        if (set_special(t, SPECIAL_NAMES[i], json_object_get(cfg, SPECIAL_NAMES[i]), file, err, errlen)) return -1;
    json_t *extra = json_object_get(cfg, "extra_special_tokens");
    if (json_is_object(extra)) {
        const char *k;
        json_t *v;
        json_object_foreach(extra, k, v)
            if (set_special(t, k, v, file, err, errlen)) return -1;
    }
    return 0;
}

/* a "chat_template" field: a string, or [{"name", "template"}, ...] */
static int parse_field(dg_chat_template *t, json_t *ct, const char *file, char *err, size_t errlen) {
    char name[600];
    snprintf(name, sizeof(name), "%s:chat_template", file);
    if (json_is_string(ct)) return jinja_parse(json_string_value(ct), json_string_length(ct), name, &t->tpl, err, errlen);
    if (!json_is_array(ct)) return dg_fail(err, errlen, "%s: field chat_template must be a string or a list of {name, template}", file);
    size_t i;
    json_t *e;
    json_array_foreach(ct, i, e) {
        json_t *n = json_object_get(e, "name"), *s = json_object_get(e, "template");
        if (!json_is_string(n) || !json_is_string(s))
            return dg_fail(err, errlen, "%s: chat_template[%zu] must be an object with string fields name and template", file, i);
        jinja_tpl **dst = !strcmp(json_string_value(n), "default") ? &t->tpl : !strcmp(json_string_value(n), "tool_use") ? &t->tool_tpl : NULL;
        if (!dst || *dst) continue;
        snprintf(name, sizeof(name), "%s:chat_template[%s]", file, json_string_value(n));
        if (jinja_parse(json_string_value(s), json_string_length(s), name, dst, err, errlen)) return -1;
    }
    if (!t->tpl) return dg_fail(err, errlen, "%s: chat_template lists several templates but none named \"default\"", file);
    return 0;
}

static json_t *load_json(const char *path, char *err, size_t errlen) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) dg_fail(err, errlen, "%s:%d: invalid JSON: %s", path, je.line, je.text);
    else if (!json_is_object(j)) {
        json_decref(j);
        j = NULL;
        dg_fail(err, errlen, "%s: not a JSON object", path);
    }
    return j;
}

/* A GGUF model (a .gguf file, or a directory holding one and no config.json): the template files
 * beside the file when there are any, else tokenizer.chat_template and the bos/eos strings of
 * tokenizer.ggml.bos_token_id / eos_token_id, else the built-in template. */
static int load_gguf(const char *gpath, dg_chat_template *t, char *err, size_t errlen) {
    gguf_file g;
    if (gguf_open(&g, gpath, err, errlen)) return -1;
    int rc = -1;
    const gguf_kv *toks = gguf_find_kv(&g, "tokenizer.ggml.tokens");
    static const char *const ids[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token"}, {"tokenizer.ggml.eos_token_id", "eos_token"},
                                         {"tokenizer.ggml.padding_token_id", "pad_token"}, {"tokenizer.ggml.unknown_token_id", "unk_token"}};
    for (size_t i = 0; toks && i < sizeof(ids) / sizeof(ids[0]); i++) {
        const gguf_kv *kv = gguf_find_kv(&g, ids[i][0]);
        int64_t id;
        gguf_str str;
        if (kv && !gguf_kv_int(kv, 0, &id) && id >= 0 && !gguf_kv_str(toks, (uint64_t)id, &str)) {
            json_t *v = json_stringn(str.s, (size_t)str.len);
            if (!v || json_object_set_new(t->special, ids[i][1], v)) { dg_fail(err, errlen, "out of memory"); goto out; }
        }
    }
    const gguf_kv *ct = gguf_find_kv(&g, "tokenizer.chat_template");
    gguf_str src;
    if (ct && !gguf_kv_str(ct, 0, &src)) {
        char name[4200];
        snprintf(name, sizeof(name), "%s:tokenizer.chat_template", gpath);
        rc = jinja_parse(src.s, (size_t)src.len, name, &t->tpl, err, errlen);
    } else {
        rc = jinja_parse(chat_default_src, sizeof(chat_default_src) - 1, "<built-in Gemma 4 template>", &t->tpl, err, errlen);
    }
out:
    gguf_close(&g);
    return rc;
}

int dg_chat_template_load(const char *model_dir, dg_chat_template **out, char *err, size_t errlen) {
    *out = NULL;
    char path[4096];
    dg_chat_template *t = new_template(err, errlen);
    if (!t) return -1;
    char *gpath = NULL;
    char e2[8];
    if (dg_resolve_model(model_dir, &gpath, e2, sizeof(e2)) == 1) {
        /* template files beside a .gguf take precedence over its metadata */
        const char *slash = strrchr(gpath, '/');
        char dir[2048];
        snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - gpath) : 1, slash ? gpath : ".");
        static const char *const files[] = {"chat_template.jinja", "chat_template.json", "tokenizer_config.json"};
        int beside = 0;
        for (size_t i = 0; i < 3; i++) {
            char fp[2200];
            snprintf(fp, sizeof(fp), "%s/%s", dir, files[i]);
            beside |= file_exists(fp);
        }
        if (!beside) {
            const int rc = load_gguf(gpath, t, err, errlen);
            free(gpath);
            if (rc) { dg_chat_template_free(t); return -1; }
            *out = t;
            return 0;
        }
        free(gpath);
        dg_chat_template_free(t);
        return dg_chat_template_load(dir, out, err, errlen);
    }
    free(gpath);
    json_t *cfg = NULL;
    int rc = -1;
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", model_dir);
    if (file_exists(path)) {
        cfg = load_json(path, err, errlen);
        if (!cfg || read_special(t, cfg, path, err, errlen)) goto out;
    }
    snprintf(path, sizeof(path), "%s/chat_template.jinja", model_dir);
    if (file_exists(path)) {
        size_t len;
        char *src = read_file(path, &len);
        if (!src) {
            dg_fail(err, errlen, "%s: cannot read", path);
            goto out;
        }
        rc = jinja_parse(src, len, path, &t->tpl, err, errlen);
        free(src);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/chat_template.json", model_dir);
    if (file_exists(path)) {
        json_t *j = load_json(path, err, errlen);
        if (!j) goto out;
        json_t *ct = json_object_get(j, "chat_template");
        rc = ct ? parse_field(t, ct, path, err, errlen) : dg_fail(err, errlen, "%s: no field chat_template", path);
        json_decref(j);
        goto out;
    }
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", model_dir);
    json_t *ct = cfg ? json_object_get(cfg, "chat_template") : NULL;
    if (ct && !json_is_null(ct)) {
        rc = parse_field(t, ct, path, err, errlen);
        goto out;
    }
    rc = jinja_parse(chat_default_src, sizeof(chat_default_src) - 1, "<built-in Gemma 4 template>", &t->tpl, err, errlen);
out:
    json_decref(cfg);
    if (rc) {
        dg_chat_template_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ===== rendering ===== */

static json_t *parse_arg(const char *text, const char *what, int want_array, char *err, size_t errlen) {
    json_error_t je;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
    if (!j) {
        dg_fail(err, errlen, "%s: invalid JSON at line %d column %d: %s", what, je.line, je.column, je.text);
        return NULL;
    }
    if (want_array ? !json_is_array(j) : !json_is_object(j)) {
        json_decref(j);
        dg_fail(err, errlen, "%s: must be a JSON %s", what, want_array ? "array" : "object");
        return NULL;
    }
    return j;
}

/* apply_chat_template's normalisation of one message (a new object) */
static json_t *prepare_message(json_t *m) {
    static const char *const REASONING[] = {"reasoning_content", "thinking", "reasoning"};
    json_t *r = json_object();
    if (!r) return NULL;
    json_t *reasoning = NULL;
    for (int i = 0; i < 3 && !reasoning; i++) {
        json_t *v = json_object_get(m, REASONING[i]);
        if (v && !json_is_null(v)) reasoning = v;
    }
    if (reasoning) json_object_set(r, "thinking", reasoning);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (json_is_null(v)) continue;
        json_object_set(r, k, v);
    }
    if (reasoning) json_object_set(r, "reasoning_content", reasoning);
    return r;
}

int dg_chat_render(const dg_chat_template *t, const dg_chat_params *p, char **out, size_t *len, char *err, size_t errlen) {
    *out = NULL;
    if (len) *len = 0;
    if (!p || !p->messages_json) return dg_fail(err, errlen, "chat: no messages");
    json_t *msgs = parse_arg(p->messages_json, "chat messages", 1, err, errlen);
    if (!msgs) return -1;
    json_t *tools = NULL, *extra = NULL, *vars = NULL, *prepared = NULL;
    int rc = -1;
    if (json_array_size(msgs) == 0) {
        dg_fail(err, errlen, "Cannot apply chat template to an empty conversation. Provide at least one message.");
        goto out;
    }
    if (p->tools_json && !(tools = parse_arg(p->tools_json, "chat tools", 1, err, errlen))) goto out;
    if (p->extra_json && !(extra = parse_arg(p->extra_json, "chat template variables", 0, err, errlen))) goto out;
    prepared = json_array();
    vars = json_object();
    if (!prepared || !vars) {
        dg_fail(err, errlen, "out of memory");
        goto out;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) {
            dg_fail(err, errlen, "chat messages: message %zu must be an object (a dict with \"role\" and \"content\")", i);
            goto out;
        }
        json_t *pm = prepare_message(m);
        if (!pm || json_array_append_new(prepared, pm)) {
            dg_fail(err, errlen, "out of memory");
            goto out;
        }
    }
    json_object_set(vars, "messages", prepared);
    json_object_set_new(vars, "tools", tools ? json_incref(tools) : json_null());
    json_object_set_new(vars, "documents", json_null());
    json_object_set_new(vars, "add_generation_prompt", json_boolean(p->add_generation_prompt));
    {
        const char *k;
        json_t *v;
        /* copies: jansson's reference counts are not atomic, and a template is shared between threads */
        json_object_foreach(t->special, k, v) json_object_set_new(vars, k, json_stringn(json_string_value(v), json_string_length(v)));
    }
    if (p->enable_thinking >= 0) json_object_set_new(vars, "enable_thinking", json_boolean(p->enable_thinking));
    if (extra) {
        const char *k;
        json_t *v;
        json_object_foreach(extra, k, v) json_object_set(vars, k, v);
    }
    const jinja_tpl *tpl = (tools && t->tool_tpl) ? t->tool_tpl : t->tpl;
    rc = jinja_render(tpl, vars, NULL, out, len, err, errlen);
out:
    json_decref(msgs);
    json_decref(tools);
    json_decref(extra);
    json_decref(prepared);
    json_decref(vars);
    return rc;
}
