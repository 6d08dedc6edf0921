/*
 * webui.c - the single-page chat served at / : server/index.html, turned into a C string at build time
 * (the Makefile writes build/gen/webui_html.h).
 */
#include "server.h"
#include "webui_html.h"

const char *dg_webui_html(size_t *len) {
    if (len) *len = sizeof(webui_html_src) - 1;
    return webui_html_src;
}
