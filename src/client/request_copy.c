/*
 * A caller's request, kept (request_copy.h).
 */
#include <string.h>
#include <strings.h>

#include "base/alloc.h"
#include "request_copy.h"

/* Copies the string s to *p, advances *p past its NUL, and returns the copy. */
static const char *copy_str(char **p, const char *s)
{
    size_t n = strlen(s) + 1;
    char *dst = *p;
    memcpy(dst, s, n);
    *p += n;
    return dst;
}

static int skipped(const tc_header *hd, const char *skip)
{
    return skip != NULL && strcasecmp(hd->name, skip) == 0;
}

int tc__request_copy(tc_client_request *dst, const tc_client_request *src, size_t spare,
                     const char *skip, char **block, tc_header **headers)
{
    size_t need =
        (src->url ? strlen(src->url) + 1 : 0) + (src->method ? strlen(src->method) + 1 : 0) +
        (src->connect_to ? strlen(src->connect_to) + 1 : 0) + (src->body ? src->body_len + 1 : 0);
    for (size_t i = 0; i < src->nheaders; i++)
        need += strlen(src->headers[i].name) + strlen(src->headers[i].value) + 2;
    *block = tc__malloc(need > 0 ? need : 1);
    *headers = tc__calloc(src->nheaders + spare > 0 ? src->nheaders + spare : 1, sizeof(tc_header));
    if (*block == NULL || *headers == NULL) {
        tc__free(*block);
        tc__free(*headers);
        *block = NULL;
        *headers = NULL;
        return TC_ENOMEM;
    }
    char *p = *block;
    *dst = *src;
    if (src->url != NULL)
        dst->url = copy_str(&p, src->url);
    if (src->method != NULL)
        dst->method = copy_str(&p, src->method);
    if (src->connect_to != NULL)
        dst->connect_to = copy_str(&p, src->connect_to);
    dst->nheaders = 0;
    for (size_t i = 0; i < src->nheaders; i++) {
        if (skipped(&src->headers[i], skip))
            continue;
        (*headers)[dst->nheaders].name = copy_str(&p, src->headers[i].name);
        (*headers)[dst->nheaders].value = copy_str(&p, src->headers[i].value);
        dst->nheaders++;
    }
    dst->headers = *headers;
    if (src->body != NULL) {
        if (src->body_len > 0)
            memcpy(p, src->body, src->body_len);
        p[src->body_len] = '\0';
        dst->body = p;
    }
    return 0;
}
