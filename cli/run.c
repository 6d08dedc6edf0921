/*
 * run.c - `dgemma run` (one prompt, the answer streamed canvas by canvas) and `dgemma chat` (an
 * interactive conversation), both through the model's chat template and the reply splitter.
 *
 * Output: the answer (content) on stdout, flushed after every committed canvas; the thought channel on
 * stderr with --show-thinking (dimmed on a terminal), hidden otherwise; tool calls as one JSON array
 * line on stdout after the answer; statistics on stderr unless --quiet. --show-canvas draws each
 * canvas's argmax draft in place while it denoises (accepted positions bold, the rest yellow, and a
 * progress line), or, when stdout is not a terminal, prints one line per step on stderr.
 *
 * Ctrl-C sets a flag (the handler only notes it and its time); the generation callbacks return it, so
 * the answer is cancelled at the next denoising step: `run` exits 130, `chat` keeps the conversation. A
 * second Ctrl-C while the first is still pending exits at once.
 */
#define _XOPEN_SOURCE 700   /* wcwidth */
#include <errno.h>
#include <jansson.h>
#include <langinfo.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include <editline/readline.h>

#include "cli.h"

/* ===== Ctrl-C ===== */

static volatile sig_atomic_t g_interrupted;
static struct timespec g_interrupted_at;
static int g_tty_out;   /* stdout is a terminal (the canvas view may have changed its modes) */

static void on_sigint(int sig) {
    (void)sig;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);   /* async-signal-safe */
    if (g_interrupted) {
        /* pressed again while the first is still pending (a denoising step can take long): leave now.
         * A repeat within half a second is the same interrupt delivered twice (timeout(1) signals the
         * process and its group). */
        double dt = (double)(now.tv_sec - g_interrupted_at.tv_sec) + (now.tv_nsec - g_interrupted_at.tv_nsec) * 1e-9;
        if (dt > 0.5) {
            static const char reset[] = "\033[?7h\033[0m\n";   /* autowrap back on, plain attributes */
            ssize_t w = g_tty_out ? write(STDOUT_FILENO, reset, sizeof(reset) - 1) : write(STDERR_FILENO, "\n", 1);
            (void)w;
            _exit(130);
        }
        return;
    }
    g_interrupted_at = now;
    g_interrupted = 1;
}

static void catch_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: a blocking read returns, so the chat prompt sees it */
    sigaction(SIGINT, &sa, NULL);
}

/* ===== options shared by run and chat ===== */

typedef struct {
    const char *model, *prompt, *system;
    int raw, think, show_thinking, show_canvas, quiet, n_ctx, reencode;
    dg_engine_params ep;
    dg_session_params sp;
    dg_gen_params gp;
} run_opts;

#define RUN_OPTIONS_HELP                                                                                 \
    "  -m, --model PATH         checkpoint directory (or .gguf file)\n"                                  \
    "  --system TEXT            a system message\n"                                                      \
    "  --think                  enable thinking (the template's enable_thinking)\n"                      \
    "  --show-thinking          print the thought channel on stderr (dimmed on a terminal)\n"           \
    "  --show-canvas            show every canvas denoising step by step (on a terminal: the draft\n"    \
    "                           redrawn in place; otherwise one line per step on stderr)\n"            \
    "  -q, --quiet              no statistics\n"                                                         \
    GEN_OPTIONS_HELP                                                                                     \
    "  --act auto|f32|bf16|f16  activation precision\n"                                                  \
    KERNEL_OPTIONS_HELP                                                                                  \
    "  -h, --help               this help\n"

/* the options that take a value */
static const char *const VALUE_OPTS[] = {"-m", "--model", "-p", "--prompt", "--system", "--act", "--n-ctx", "-n",
                                         "--max-tokens", "--steps", "--entropy-bound", "--t-min", "--t-max", "--stability",
                                         "--confidence", "--eos", "--seed", "-t", "--threads", "--kernels", "--sc-top-k"};

/* One option at argv[*i]: 0 handled, 2 usage error (message printed). Sampler values go to o->gp. */
static int run_option(const char *cmd, int argc, char **argv, int *i, run_opts *o, int is_run) {
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!strcmp(a, "--think")) { o->think = 1; return 0; }
    if (!strcmp(a, "--show-thinking")) { o->show_thinking = 1; return 0; }
    if (!strcmp(a, "--show-canvas")) { o->show_canvas = 1; return 0; }
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { o->quiet = 1; return 0; }
    if (is_run && !strcmp(a, "--raw")) { o->raw = 1; return 0; }
    if (!is_run && !strcmp(a, "--reencode")) { o->reencode = 1; return 0; }
    int known = 0;
    for (size_t k = 0; k < sizeof(VALUE_OPTS) / sizeof(VALUE_OPTS[0]) && !known; k++) known = !strcmp(a, VALUE_OPTS[k]);
    if (!known || (!is_run && (!strcmp(a, "-p") || !strcmp(a, "--prompt")))) {
        fprintf(stderr, "dgemma %s: unknown option '%s' (see --help)\n", cmd, a);
        return 2;
    }
    if (!v) { fprintf(stderr, "dgemma %s: %s needs a value (see --help)\n", cmd, a); return 2; }
    int bad = 0;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
    else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
    else if (!strcmp(a, "--system")) o->system = v;
    else if (!strcmp(a, "--act")) bad = parse_act(v, &o->ep.act);
    else if (!strcmp(a, "--n-ctx")) bad = parse_int(a, v, 1, 1 << 30, &o->n_ctx);
    else if (!gen_option(a, v, &o->gp, &bad)) session_option(a, v, &o->sp, &bad);
    (*i)++;
    return bad ? 2 : 0;
}

/* every option checked before anything loads: 0, -1 after --help, or the exit code of a usage error */
static int parse_opts(const char *cmd, int argc, char **argv, run_opts *o, int is_run, void (*usage)(FILE *)) {
    memset(o, 0, sizeof(*o));
    o->ep = dg_engine_default_params();
    o->sp = dg_session_default_params();
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return -1; }
    for (int i = 0; i < argc; i++) {
        int rc = run_option(cmd, argc, argv, &i, o, is_run);
        if (rc) return rc;
    }
    if (!o->model) { fprintf(stderr, "dgemma %s: --model is required (see --help)\n", cmd); return 2; }
    return 0;
}

/* load the engine; the sampler options again, over the checkpoint's generation defaults. 0 or the exit code */
static int load_engine(const char *cmd, int argc, char **argv, run_opts *o, int is_run, dg_engine **e) {
    char err[1024];
    if (dg_engine_load(o->model, &o->ep, e, err, sizeof(err))) { fprintf(stderr, "dgemma %s: %s\n", cmd, err); return 1; }
    o->gp = dg_gen_default_params(*e);
    for (int i = 0; i < argc; i++) run_option(cmd, argc, argv, &i, o, is_run);
    if (dg_gen_params_check(*e, &o->gp, err, sizeof(err))) { fprintf(stderr, "dgemma %s: %s\n", cmd, err); return 2; }
    return 0;
}

/* the tokenizer and the chat template of a model path (a directory or a .gguf file, whose metadata may
 * hold both) */
static int load_text_side(const char *cmd, const char *model, int need_template, dg_tokenizer **tok, dg_chat_template **tpl) {
    char err[1024];
    if (dg_tokenizer_load(model, tok, err, sizeof(err))) { fprintf(stderr, "dgemma %s: %s\n", cmd, err); return 1; }
    if (need_template && dg_chat_template_load(model, tpl, err, sizeof(err))) { fprintf(stderr, "dgemma %s: %s\n", cmd, err); return 1; }
    return 0;
}

/* ===== terminal output: answer, thoughts, canvas view ===== */

typedef struct {
    const dg_tokenizer *tok;
    const run_opts *o;
    int canvas_len;
    int out_tty, err_tty;
    int cols, rows;          /* terminal size (stdout) */
    int col;                 /* where the committed text ends on its line (terminal columns) */
    int in_thought;          /* thoughts are being printed */
    char last_out;           /* the last byte of the answer printed (0: none) */
    int drafting;            /* a draft is on the screen below the saved cursor */
    char *dbuf;              /* the draft being laid out */
    size_t dlen, dcap;
    dg_detok_stream *draft;
    dg_reply *reply;
    int *steps;              /* steps per canvas */
    int n_steps_cap, n_canvas;
    int32_t *emitted;        /* every committed canvas's tokens, in order */
    int n_emitted, emitted_cap;
    int failed;
} view;

/* Display width of a code point: the C library's wcwidth under a UTF-8 LC_CTYPE (use_utf8_ctype),
 * which is what terminals follow; 0 for what it calls unprintable. */
static int cp_width(uint32_t cp) {
    int w = wcwidth((wchar_t)cp);
    return w > 0 ? w : 0;
}

/* the terminal's character type, UTF-8 (C.UTF-8 when the environment's is not): for wcwidth and
 * libedit's line editing. Only LC_CTYPE: nothing else of the program depends on it. */
static void use_utf8_ctype(void) {
    setlocale(LC_CTYPE, "");
    if (strcmp(nl_langinfo(CODESET), "UTF-8")) setlocale(LC_CTYPE, "C.UTF-8");
}

/* the next code point of valid UTF-8 text (the detokenizer's), its length in *len */
static uint32_t next_cp(const char *s, size_t n, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    int k = u[0] < 0x80 ? 1 : u[0] < 0xe0 ? 2 : u[0] < 0xf0 ? 3 : 4;
    if ((size_t)k > n) k = 1;
    uint32_t cp = k == 1 ? u[0] : u[0] & (0x7f >> k);
    for (int i = 1; i < k; i++) cp = (cp << 6) | (u[i] & 0x3f);
    *len = (size_t)k;
    return cp;
}

/* follow the cursor column through text printed on the terminal */
static void track(view *v, const char *s, size_t n) {
    for (size_t i = 0, l; i < n; i += l) {
        uint32_t cp = next_cp(s + i, n - i, &l);
        if (cp == '\n' || cp == '\r') { v->col = 0; continue; }
        if (cp == '\b') { v->col -= v->col > 0; continue; }
        if (cp == '\t') {   /* to the next tab stop, never past the last column (a tab does not wrap) */
            int stop = (v->col / 8 + 1) * 8;
            if (v->col < v->cols) v->col = stop < v->cols - 1 ? stop : v->cols - 1;
            continue;
        }
        int w = cp_width(cp);
        v->col = v->col + w > v->cols ? w : v->col + w;
    }
}

/* take the draft off the screen: back to the saved cursor (the end of the committed text), erase below */
static void draft_clear(view *v) {
    if (!v->drafting) return;
    fputs("\0338\033[J", stdout);
    fflush(stdout);
    v->drafting = 0;
}

static void end_thought(view *v) {
    if (!v->in_thought) return;
    v->in_thought = 0;
    fputs(v->err_tty ? "\033[0m\n" : "\n", stderr);
    if (v->err_tty) v->col = 0;
    fflush(stderr);
}

static void on_part(void *user, dg_reply_part part, const char *s, size_t n) {
    view *v = user;
    if (part == DG_REPLY_REASONING) {
        if (!v->o->show_thinking) return;
        draft_clear(v);
        if (!v->in_thought) {
            v->in_thought = 1;
            if (v->err_tty) {
                if (v->col) { fputs("\n", stderr); v->col = 0; }
                fputs("\033[2m", stderr);
            }
        }
        fwrite(s, 1, n, stderr);
        fflush(stderr);
        if (v->err_tty) track(v, s, n);
    } else if (part == DG_REPLY_CONTENT) {
        end_thought(v);
        draft_clear(v);
        fwrite(s, 1, n, stdout);
        fflush(stdout);
        if (v->out_tty) track(v, s, n);
        v->last_out = s[n - 1];
    }   /* tool calls: printed together after the answer */
}

static void dput(view *v, const char *s, size_t n) {
    if (v->dlen + n > v->dcap) {
        size_t cap = v->dcap ? v->dcap : 4096;
        while (cap < v->dlen + n) cap *= 2;
        char *q = realloc(v->dbuf, cap);
        if (!q) return;
        v->dbuf = q;
        v->dcap = cap;
    }
    memcpy(v->dbuf + v->dlen, s, n);
    v->dlen += n;
}

static void dputs(view *v, const char *s) { dput(v, s, strlen(s)); }

/* one step of the canvas view */
static void draw_step(view *v, const dg_step_event *ev) {
    /* the draft as it would be committed: cut at the first EOS */
    int n = ev->n;
    for (int i = 0; i < ev->n; i++)
        for (int k = 0; k < v->o->gp.n_eos; k++)
            if (ev->argmax[i] == v->o->gp.eos_ids[k] && n == ev->n) n = i;
    char progress[160];
    snprintf(progress, sizeof(progress), "canvas %d  step %d/%d  accepted %d/%d  entropy %.3f  T %.3f%s", ev->canvas + 1, ev->step,
             v->o->gp.max_denoising_steps, ev->n_accepted, ev->n, ev->mean_entropy, ev->temperature, ev->stop ? "  stable" : "");
    if (!v->out_tty) {   /* one plain line per step on stderr, the draft escaped */
        fprintf(stderr, "%s  draft: ", progress);
        for (int i = 0; i < n; i++) {
            size_t l;
            const char *s = dg_detok_stream_push(v->draft, ev->argmax[i], &l);
            for (size_t k = 0; s && k < l; k++)
                if (s[k] == '\n') fputs("\\n", stderr);
                else if ((unsigned char)s[k] < 0x20) fprintf(stderr, "\\x%02X", (unsigned char)s[k]);
                else fputc(s[k], stderr);
        }
        size_t l;
        const char *s = dg_detok_stream_flush(v->draft, &l);
        if (s) fwrite(s, 1, l, stderr);
        fputc('\n', stderr);
        return;
    }
    /* The draft goes on the rows below the committed text, broken by hand at cols-1 (so the terminal
     * never wraps and the rows are known) and control characters shown as spaces. Before drawing, as
     * many index (ESC D) moves as it has rows scroll the screen if needed, and cursor-up comes back:
     * the column is kept, the room exists, nothing scrolls while the draft is shown, and restoring the
     * saved cursor returns exactly to the end of the committed text. */
    if (v->col >= v->cols) return;
    const int max_rows = v->rows > 3 ? v->rows - 2 : 1;
    int rows = 1, dcol = 0, full = 0, acc = -1;
    v->dlen = 0;
    dputs(v, "\n");
    for (int i = 0; i <= n && !full; i++) {
        size_t l;
        const char *s = i < n ? dg_detok_stream_push(v->draft, ev->argmax[i], &l) : dg_detok_stream_flush(v->draft, &l);
        if (!s) continue;
        int a = i < n ? ev->accepted[i] : acc;
        if (a != acc && l) { dputs(v, a ? "\033[0;1m" : "\033[0;33m"); acc = a; }
        for (size_t k = 0, cl; k < l; k += cl) {
            uint32_t cp = next_cp(s + k, l - k, &cl);
            int w = cp < 0x20 || cp == 0x7f ? 1 : cp_width(cp);
            if (cp == '\n' || dcol + w > v->cols - 1) {
                if (rows + 1 >= max_rows) { dputs(v, "…"); full = 1; break; }
                dputs(v, "\n");
                rows++;
                dcol = 0;
                if (cp == '\n') continue;
            }
            if (cp < 0x20 || cp == 0x7f) dputs(v, " ");
            else if (w > 0) dput(v, s + k, cl);   /* zero-width marks are left out: they may not be */
            dcol += w;
        }
    }
    if (full) dg_detok_stream_flush(v->draft, NULL);
    if ((int)strlen(progress) > v->cols - 1) progress[v->cols > 1 ? v->cols - 1 : 0] = 0;
    dputs(v, "\033[0m\n\033[2m");
    dputs(v, progress);
    dputs(v, "\033[0m");
    rows++;
    draft_clear(v);
    /* a committed line that exactly filled the row leaves the cursor waiting to wrap, a state the
     * moves below would lose (the next character would overwrite the last one): no draft then */
    if (v->col >= v->cols) return;
    for (int r = 0; r < rows; r++) fputs("\033D", stdout);
    printf("\033[%dA\0337\033[?7l", rows);   /* autowrap off while drawing: a character wider than
                                                  counted cannot add a row */
    fwrite(v->dbuf, 1, v->dlen, stdout);
    fputs("\033[?7h", stdout);
    fflush(stdout);
    v->drafting = 1;
}

static int on_step(void *user, const dg_step_event *ev) {
    view *v = user;
    if (v->o->show_canvas) draw_step(v, ev);
    return g_interrupted != 0;
}

static int on_canvas(void *user, const dg_canvas_event *ev) {
    view *v = user;
    char err[256];
    if (v->n_canvas == v->n_steps_cap) {
        int cap = v->n_steps_cap ? 2 * v->n_steps_cap : 16;
        int *q = realloc(v->steps, sizeof(int) * (size_t)cap);
        if (!q) { v->failed = 1; return 1; }
        v->steps = q;
        v->n_steps_cap = cap;
    }
    v->steps[v->n_canvas++] = ev->steps;
    if (v->n_emitted + ev->n > v->emitted_cap) {
        int cap = v->emitted_cap ? 2 * v->emitted_cap : 1024;
        while (cap < v->n_emitted + ev->n) cap *= 2;
        int32_t *q = realloc(v->emitted, sizeof(int32_t) * (size_t)cap);
        if (!q) { v->failed = 1; return 1; }
        v->emitted = q;
        v->emitted_cap = cap;
    }
    memcpy(v->emitted + v->n_emitted, ev->tokens, sizeof(int32_t) * (size_t)ev->n);
    v->n_emitted += ev->n;
    draft_clear(v);
    if (dg_reply_push(v->reply, ev->tokens, ev->n, on_part, v, err, sizeof(err))) {
        fprintf(stderr, "dgemma: %s\n", err);
        v->failed = 1;
        return 1;
    }
    return g_interrupted != 0;
}

static void view_init(view *v, const dg_tokenizer *tok, const run_opts *o, int canvas_len) {
    memset(v, 0, sizeof(*v));
    use_utf8_ctype();
    v->tok = tok;
    v->o = o;
    v->canvas_len = canvas_len;
    v->out_tty = g_tty_out = isatty(STDOUT_FILENO);
    v->err_tty = isatty(STDERR_FILENO);
    v->cols = 80;
    v->rows = 24;
    struct winsize ws;
    if (v->out_tty && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
        v->cols = ws.ws_col;
        v->rows = ws.ws_row;
    }
    v->draft = tok ? dg_detok_stream_new(tok, 1) : NULL;
}

static void view_free(view *v) {
    free(v->dbuf);
    dg_detok_stream_free(v->draft);
    dg_reply_free(v->reply);
    free(v->steps);
    free(v->emitted);
}

/* a name for the EOS that ended the answer */
static const char *eos_name(const dg_tokenizer *tok, int32_t id) {
    const char *p = id >= 0 ? dg_tokenizer_piece(tok, id, NULL) : NULL;
    return p ? p : "?";
}

/* One answer: generate after prompt[0, n) (appended to what the session holds), streaming through the
 * view. thinking: as dg_reply_new. Returns 0 (also when cancelled: *st says so), or 1 on an error. */
static int answer(dg_session *s, view *v, const int32_t *prompt, int n, int thinking, dg_gen_stats *st) {
    char err[1024];
    const run_opts *o = v->o;
    dg_reply_free(v->reply);
    v->reply = dg_reply_new(v->tok, thinking);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)o->gp.max_new_tokens);
    if (!v->reply || !out || !v->draft) { free(out); fprintf(stderr, "dgemma: out of memory\n"); return 1; }
    v->n_canvas = v->n_emitted = 0;
    v->in_thought = 0;
    v->last_out = 0;
    v->col = 0;
    g_interrupted = 0;
    dg_callbacks cb = {on_step, on_canvas, v};
    int n_out = 0;
    int rc = dg_generate(s, prompt, n, &o->gp, &cb, out, o->gp.max_new_tokens, &n_out, st, err, sizeof(err));
    free(out);
    draft_clear(v);
    if (rc) { fprintf(stderr, "dgemma: %s\n", err); return 1; }
    if (v->failed) return 1;
    if (dg_reply_finish(v->reply, on_part, v, err, sizeof(err))) { fprintf(stderr, "dgemma: %s\n", err); return 1; }
    end_thought(v);
    if (v->last_out != '\n' || !v->out_tty) { fputs("\n", stdout); v->col = 0; }
    const char *calls = dg_reply_tool_calls_json(v->reply);
    if (strcmp(calls, "[]")) printf("%s\n", calls);
    fflush(stdout);
    return 0;
}

static void print_stats(const char *cmd, const view *v, const dg_gen_stats *st, int n_reused) {
    fprintf(stderr, "%s: %d prompt tokens", cmd, st->n_prompt + n_reused);
    if (n_reused) fprintf(stderr, " (%d cached)", n_reused);
    fprintf(stderr, ", %d emitted, %d canvases (steps", st->n_emitted, st->n_canvases);
    for (int i = 0; i < v->n_canvas && i < 64; i++) fprintf(stderr, " %d", v->steps[i]);
    if (v->n_canvas > 64) fprintf(stderr, " ...");
    fprintf(stderr, "), %.2f ms/step, %.0f canvas tok/s, %.1f emitted tok/s, prompt %.1f ms, first canvas %.1f ms, finish %s",
            st->ms_per_step, st->canvas_tok_per_s, st->emitted_tok_per_s, st->ms_prompt, st->ms_first_canvas,
            st->finish == DG_FINISH_EOS ? "eos" : st->finish == DG_FINISH_LENGTH ? "length" : "cancelled");
    if (st->finish == DG_FINISH_EOS) fprintf(stderr, " %s", eos_name(v->tok, st->eos_id));
    fputc('\n', stderr);
}

/* does the rendered prompt end inside an open thought channel? (the reply starts as reasoning) */
static int prompt_opens_thought(const char *text) {
    const char *open = "<|channel>thought\n";
    size_t n = strlen(text), k = strlen(open);
    return n >= k && !strcmp(text + n - k, open);
}

/* render messages through the template and tokenize; *thinking set for dg_reply_new */
static int chat_prompt(const dg_tokenizer *tok, const dg_chat_template *tpl, json_t *messages, int think, int32_t **ids, int *n,
                       int *thinking, char *err, size_t errlen) {
    char *msgs = json_dumps(messages, JSON_COMPACT);
    if (!msgs) return snprintf(err, errlen, "out of memory"), -1;
    dg_chat_params cp = {msgs, NULL, 1, think, NULL};
    char *text = NULL;
    size_t len = 0;
    int rc = dg_chat_render(tpl, &cp, &text, &len, err, errlen);
    free(msgs);
    if (rc) return -1;
    *thinking = prompt_opens_thought(text) ? 2 : think;
    rc = dg_tokenize(tok, text, len, ids, n, err, errlen);
    free(text);
    return rc;
}

/* append {"role", "content"} to msgs; -1 (message in err) when the text is not valid UTF-8 */
static int add_message(json_t *msgs, const char *role, const char *content, char *err, size_t errlen) {
    json_t *m = json_pack("{s:s, s:s}", "role", role, "content", content);
    if (!m || json_array_append_new(msgs, m)) {
        snprintf(err, errlen, "the %s message is not valid UTF-8 text", role);
        return -1;
    }
    return 0;
}

/* ===== run ===== */

static void usage_run(FILE *f) {
    fprintf(f,
        "usage: dgemma run -m MODEL [-p PROMPT] [options]\n"
        "\n"
        "Answers one prompt: the prompt (-p, or all of stdin when -p is absent or '-', one final newline\n"
        "dropped) goes through the model's chat template as a user message (chat_template.jinja,\n"
        "tokenizer_config.json, else the built-in Gemma 4 template), then canvases are denoised until an\n"
        "EOS of the checkpoint or --max-tokens. The answer streams to stdout canvas by canvas, followed by a\n"
        "newline; tool calls follow as a JSON array line; statistics go to stderr. Ctrl-C cancels at the\n"
        "next denoising step (exit 130).\n"
        "\n"
        "options:\n"
        "  -p, --prompt TEXT        the prompt ('-': stdin)\n"
        "  --raw                    no chat template: <bos> and the prompt tokenized as is\n"
        "  --n-ctx N                KV cache capacity in tokens (default: what the request needs)\n"
        RUN_OPTIONS_HELP);
}

int cmd_run(int argc, char **argv) {
    run_opts o;
    int rc = parse_opts("run", argc, argv, &o, 1, usage_run);
    if (rc) return rc < 0 ? 0 : rc;
    dg_engine *e = NULL;
    dg_tokenizer *tok = NULL;
    dg_chat_template *tpl = NULL;
    dg_session *s = NULL;
    char *in = NULL, err[1024];
    int32_t *ids = NULL;
    int n = 0, thinking = 0;
    view v;
    view_init(&v, NULL, &o, 0);
    rc = 1;
    const char *prompt = o.prompt;
    if (!prompt || !strcmp(prompt, "-")) {
        size_t len;
        if (!(in = read_all(stdin, &len))) { fprintf(stderr, "dgemma run: cannot read stdin\n"); goto out; }
        if (len && in[len - 1] == '\n') in[--len] = 0;
        if (strlen(in) != len) { fprintf(stderr, "dgemma run: the prompt on stdin contains a NUL byte\n"); rc = 2; goto out; }
        prompt = in;
    }
    if (!*prompt) { fprintf(stderr, "dgemma run: the prompt is empty (give -p TEXT or text on stdin)\n"); rc = 2; goto out; }
    if ((rc = load_engine("run", argc, argv, &o, 1, &e))) goto out;
    rc = 1;
    if (load_text_side("run", o.model, !o.raw, &tok, &tpl)) goto out;
    if (o.raw) {
        int32_t *body;
        int nb;
        if (dg_tokenize(tok, prompt, strlen(prompt), &body, &nb, err, sizeof(err))) { fprintf(stderr, "dgemma run: %s\n", err); goto out; }
        int32_t bos = dg_tokenizer_find(tok, "<bos>");
        ids = malloc(sizeof(int32_t) * (size_t)(nb + 1));
        if (!ids) { free(body); fprintf(stderr, "dgemma run: out of memory\n"); goto out; }
        if (bos >= 0) ids[n++] = bos;
        memcpy(ids + n, body, sizeof(int32_t) * (size_t)nb);
        n += nb;
        free(body);
    } else {
        json_t *msgs = json_array();
        if ((o.system && add_message(msgs, "system", o.system, err, sizeof(err))) || add_message(msgs, "user", prompt, err, sizeof(err))) {
            fprintf(stderr, "dgemma run: %s\n", err);
            json_decref(msgs);
            rc = 2;
            goto out;
        }
        int prc = chat_prompt(tok, tpl, msgs, o.think, &ids, &n, &thinking, err, sizeof(err));
        json_decref(msgs);
        if (prc) { fprintf(stderr, "dgemma run: %s\n", err); goto out; }
    }
    const dg_model_info *info = dg_engine_info(e);
    for (int i = 0; i < n; i++)
        if (ids[i] >= info->vocab_size) {
            fprintf(stderr, "dgemma run: token %d of the prompt is outside the model's vocabulary (%d)\n", ids[i], info->vocab_size);
            goto out;
        }
    const int C = info->canvas_length;
    o.sp.n_ctx = o.n_ctx ? o.n_ctx : n + ((o.gp.max_new_tokens + C - 1) / C) * C + 1;
    if (dg_session_create(e, &o.sp, &s, err, sizeof(err))) { fprintf(stderr, "dgemma run: %s\n", err); goto out; }
    view_free(&v);
    view_init(&v, tok, &o, C);
    catch_sigint();
    dg_gen_stats st;
    if (answer(s, &v, ids, n, thinking, &st)) goto out;
    if (!o.quiet) {
        print_stats("run", &v, &st, 0);
        fprintf(stderr, "run: %s kernels, %d threads, %s weights, %s activations\n", dg_session_kernels(s), dg_session_threads(s),
                info->weight_dtype, info->act_dtype);
    }
    rc = st.finish == DG_FINISH_CANCELLED ? 130 : 0;
    if (rc) fprintf(stderr, "dgemma run: cancelled\n");
out:
    view_free(&v);
    free(ids);
    free(in);
    dg_session_free(s);
    dg_chat_template_free(tpl);
    dg_tokenizer_free(tok);
    dg_engine_free(e);
    return rc;
}

/* ===== chat ===== */

static void usage_chat(FILE *f) {
    fprintf(f,
        "usage: dgemma chat -m MODEL [options]\n"
        "\n"
        "An interactive conversation: each line is a user message; the whole conversation is rendered\n"
        "through the chat template every turn, and the KV cache is kept when the new prompt extends the\n"
        "cached tokens (else the prompt is encoded again). Line editing and history on a terminal; stdin\n"
        "may also be a pipe (one message or command per line, answers on stdout). Ctrl-C cancels the\n"
        "answer being generated; Ctrl-D or /quit leaves.\n"
        "\n"
        "commands:\n"
        "  /quit             leave\n"
        "  /reset            forget the conversation (the system message stays)\n"
        "  /system [TEXT]    set (or with no text, clear) the system message\n"
        "  /think on|off     thinking on or off\n"
        "  /help             these commands\n"
        "\n"
        "options:\n"
        "  --n-ctx N                KV cache capacity in tokens (default 8192)\n"
        "  --reencode               encode the whole conversation every turn (no KV cache reuse)\n"
        RUN_OPTIONS_HELP);
}

/* the next input line without its newline (malloc'ed), or NULL at the end of input */
static char *chat_read(int tty, int *interrupted) {
    *interrupted = 0;
    g_interrupted = 0;
    if (tty) {
        char *line = readline("> ");
        if (!line && g_interrupted) { *interrupted = 1; g_interrupted = 0; }
        if (line && *line) add_history(line);
        return line;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) < 0 && errno == EINTR && !feof(stdin)) clearerr(stdin);
    if (len < 0) { free(line); return NULL; }
    if (len && line[len - 1] == '\n') line[--len] = 0;
    if (len && line[len - 1] == '\r') line[--len] = 0;
    return line;
}

static void chat_help(void) {
    fprintf(stderr, "commands: /quit, /reset, /system [TEXT], /think on|off, /help; Ctrl-C cancels an answer, Ctrl-D leaves\n");
}

int cmd_chat(int argc, char **argv) {
    run_opts o;
    int rc = parse_opts("chat", argc, argv, &o, 0, usage_chat);
    if (rc) return rc < 0 ? 0 : rc;
    dg_engine *e = NULL;
    if ((rc = load_engine("chat", argc, argv, &o, 0, &e))) { dg_engine_free(e); return rc; }
    dg_tokenizer *tok = NULL;
    dg_chat_template *tpl = NULL;
    dg_session *s = NULL;
    json_t *history = json_array();
    char *system = o.system ? strdup(o.system) : NULL, err[1024];
    int32_t *cache = NULL;   /* the tokens the session holds */
    int n_cache = 0, think = o.think;
    view v;
    view_init(&v, NULL, &o, 0);
    rc = 1;
    if (!history || (o.system && !system)) { fprintf(stderr, "dgemma chat: out of memory\n"); goto out; }
    if (load_text_side("chat", o.model, 1, &tok, &tpl)) goto out;
    const dg_model_info *info = dg_engine_info(e);
    o.sp.n_ctx = o.n_ctx ? o.n_ctx : 8192;
    if (dg_session_create(e, &o.sp, &s, err, sizeof(err))) { fprintf(stderr, "dgemma chat: %s\n", err); goto out; }
    view_free(&v);
    view_init(&v, tok, &o, info->canvas_length);
    const int tty = isatty(STDIN_FILENO);
    catch_sigint();
    if (tty) {
        fprintf(stderr, "dgemma chat: %s (%s kernels, %d threads). /help for commands, Ctrl-D to leave.\n", o.model,
                dg_session_kernels(s), dg_session_threads(s));
        using_history();
    }
    for (;;) {
        int intr;
        char *line = chat_read(tty, &intr);
        if (!line) {
            if (intr) { fputs("^C\n", stderr); continue; }
            if (tty) fputc('\n', stderr);
            break;
        }
        char *l = line;
        while (*l == ' ' || *l == '\t') l++;
        if (!*l) { free(line); continue; }
        if (*l == '/') {
            char *arg = l + strcspn(l, " \t");
            if (*arg) *arg++ = 0;
            while (*arg == ' ' || *arg == '\t') arg++;
            int quit = 0;
            if (!strcmp(l, "/quit") || !strcmp(l, "/exit")) quit = 1;
            else if (!strcmp(l, "/reset")) { json_array_clear(history); fprintf(stderr, "(conversation cleared)\n"); }
            else if (!strcmp(l, "/system")) {
                free(system);
                system = *arg ? strdup(arg) : NULL;
                fprintf(stderr, system ? "(system message set)\n" : "(system message cleared)\n");
            } else if (!strcmp(l, "/think")) {
                if (!strcmp(arg, "on")) think = 1;
                else if (!strcmp(arg, "off")) think = 0;
                else if (*arg) fprintf(stderr, "/think takes on or off\n");
                fprintf(stderr, "(thinking %s)\n", think ? "on" : "off");
            } else if (!strcmp(l, "/help")) chat_help();
            else { fprintf(stderr, "unknown command %s\n", l); chat_help(); }
            free(line);
            if (quit) break;
            continue;
        }
        /* the conversation with the new message, rendered */
        json_t *msgs = json_array();
        int32_t *ids = NULL;
        int n = 0, thinking = 0;
        int prc = (system && add_message(msgs, "system", system, err, sizeof(err))) || (json_array_extend(msgs, history) && snprintf(err, sizeof(err), "out of memory")) ||
                  add_message(msgs, "user", l, err, sizeof(err)) ||
                  chat_prompt(tok, tpl, msgs, think, &ids, &n, &thinking, err, sizeof(err));
        json_decref(msgs);
        if (prc) { fprintf(stderr, "dgemma chat: %s\n", err); free(line); continue; }
        /* the cache is kept when the new prompt starts with everything it holds */
        int reuse = !o.reencode && n_cache > 0 && n_cache < n && !memcmp(cache, ids, sizeof(int32_t) * (size_t)n_cache);
        if (!reuse) { dg_session_reset(s); n_cache = 0; }
        dg_gen_stats st;
        int arc = answer(s, &v, ids + n_cache, n - n_cache, thinking, &st);
        if (arc) {   /* e.g. the conversation no longer fits: the turn is dropped */
            dg_session_reset(s);
            n_cache = 0;
            free(ids);
            free(line);
            if (v.failed) break;
            fprintf(stderr, "(the message was not added; /reset starts over, --n-ctx gives more room)\n");
            continue;
        }
        if (st.finish == DG_FINISH_CANCELLED) fprintf(stderr, "(cancelled)\n");
        if (!o.quiet) print_stats("chat", &v, &st, n_cache);
        /* what the session now holds: the prompt and the committed canvases it encoded */
        int n_past = dg_session_n_past(s);
        int32_t *nc = realloc(cache, sizeof(int32_t) * (size_t)(n_past > 0 ? n_past : 1));
        if (!nc) { free(ids); free(line); fprintf(stderr, "dgemma chat: out of memory\n"); goto out; }
        cache = nc;
        if (n_past - n > v.n_emitted) n_past = 0;   /* never: encoded canvases were all emitted */
        for (int i = 0; i < n_past; i++) cache[i] = i < n ? ids[i] : v.emitted[i - n];
        n_cache = n_past;
        /* a turn cancelled before anything was said is forgotten */
        if ((st.finish != DG_FINISH_CANCELLED || *dg_reply_content(v.reply)) &&
            (add_message(history, "user", l, err, sizeof(err)) || add_message(history, "assistant", dg_reply_content(v.reply), err, sizeof(err)))) {
            fprintf(stderr, "dgemma chat: out of memory\n");
            free(ids);
            free(line);
            goto out;
        }
        free(ids);
        free(line);
    }
    rc = 0;
out:
    view_free(&v);
    free(cache);
    free(system);
    json_decref(history);
    dg_session_free(s);
    dg_chat_template_free(tpl);
    dg_tokenizer_free(tok);
    dg_engine_free(e);
    return rc;
}
