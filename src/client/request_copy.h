/*
 * Keeping a caller's tc_client_request beyond the call that gave it (a hedge fires its attempts
 * later, a fetch sends the same request to every URL): one allocation for the strings and the
 * body, one for the header array.
 */
#ifndef TAILCUT_REQUEST_COPY_H
#define TAILCUT_REQUEST_COPY_H

#include <stddef.h>

#include "tailcut/client.h"

/* Copies src into *dst: the url, method and connect_to (each when not NULL), every header name
 * and value except those named skip (case-insensitive; NULL skips none), and the body (when not
 * NULL, even empty, NUL-terminated after body_len) go into *block; the headers into *headers, an
 * array with `spare` free slots after the copied ones (dst->nheaders counts only the copied
 * ones). Every other field is copied as is. Returns 0, or TC_ENOMEM with *block and *headers
 * NULL. Free both with tc__free. */
int tc__request_copy(tc_client_request *dst, const tc_client_request *src, size_t spare,
                     const char *skip, char **block, tc_header **headers);

#endif /* TAILCUT_REQUEST_COPY_H */
