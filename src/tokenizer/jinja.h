/*
 * jinja.h - a Jinja interpreter for chat templates, behaving like the environment transformers renders
 * chat templates with: jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
 * with the loopcontrols extension, its own `tojson` filter (json.dumps, ensure_ascii=False), and the
 * globals raise_exception, strftime_now, namespace, dict and range.
 *
 * A parsed template is immutable and may be rendered from several threads at once. Every render
 * allocates its own values and frees them all before returning; limits bound its time and memory so
 * that a hostile template ends with an error instead of a hang.
 *
 * Errors read "NAME:LINE: message" (NAME is the name given to jinja_parse).
 */
#ifndef DG_JINJA_H
#define DG_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jinja_tpl jinja_tpl;

typedef struct {
    size_t max_output;   /* bytes of any rendered text (the output, a macro's result, a captured block) */
    size_t max_memory;   /* bytes of live values */
    int64_t max_steps;   /* work: loop iterations, calls, items stored, 256-byte chunks of text built */
    int max_depth;       /* nested macro calls, recursive loops and value nesting */
    int64_t now;         /* strftime_now's clock (seconds since the epoch, local time); 0 = the real clock */
} jinja_opts;

/* 64 MiB of output, 512 MiB of values, 100M steps (a few seconds at most), depth 200, the real clock. */
jinja_opts jinja_default_opts(void);

/* Parse a template (UTF-8). name appears in every error message. */
int jinja_parse(const char *src, size_t len, const char *name, jinja_tpl **out, char *err, size_t errlen);
void jinja_free(jinja_tpl *t);

/* Render with the variables of a JSON object (NULL: none). Objects keep their key order. *out is
 * malloc'ed and NUL-terminated. opts may be NULL (the defaults). */
int jinja_render(const jinja_tpl *t, const json_t *vars, const jinja_opts *opts, char **out, size_t *len,
                 char *err, size_t errlen);

#endif
