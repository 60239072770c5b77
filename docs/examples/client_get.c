/*
 * client_get: GETs every URL given on the command line at once with tc_client and prints, per
 * URL, its status, HTTP version and body length, or the error. A complete use of the client:
 * create it on a loop, start requests, watch their futures, close it, close the loop.
 *
 *   client_get [--cacert FILE] [--insecure] [--http1] [--timeout MS] [--max-body BYTES]
 *              [--max-connections N] [--print-body] URL...
 *
 * Exit status: 0 if every request got an HTTP response (any status), 1 if one failed, 2 on a
 * usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "tailcut/client.h"
#include "tailcut/future.h"

typedef struct fetch {
    const char *url;
    tc_future *future;
    int *failures;
    int print_body;
} fetch;

static void on_done(tc_future *f, void *data)
{
    fetch *ft = data;
    if (tc_future_state_of(f) == TC_FUTURE_FULFILLED) {
        const tc_response *resp = tc_future_value(f);
        char type[128];
        if (tc_response_header(resp, "content-type", type, sizeof(type)) < 0)
            strcpy(type, "-");
        printf("%s status=%d http=%d body=%zu content-type=%s\n", ft->url, resp->status,
               resp->http_version, resp->body_len, type);
        if (ft->print_body)
            printf("%s\n", resp->body);
    } else {
        printf("%s error=%s %s\n", ft->url, tc_err_name(tc_future_error(f)), tc_future_message(f));
        (*ft->failures)++;
    }
}

static unsigned long long parse_num(const char *flag, const char *s)
{
    char *end = NULL;
    unsigned long long v = s ? strtoull(s, &end, 10) : 0;
    if (s == NULL || *s == '\0' || *end != '\0') {
        fprintf(stderr, "client_get: %s needs a number\n", flag);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    tc_client_config cfg;
    tc_client_config_init(&cfg);
    int print_body = 0, first_url = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--cacert") == 0 && i + 1 < argc)
            cfg.ca_file = argv[++i];
        else if (strcmp(a, "--insecure") == 0)
            cfg.insecure = 1;
        else if (strcmp(a, "--http1") == 0)
            cfg.http2 = 0;
        else if (strcmp(a, "--timeout") == 0)
            cfg.timeout_ms = parse_num(a, argv[++i]);
        else if (strcmp(a, "--max-body") == 0)
            cfg.max_body = (size_t)parse_num(a, argv[++i]);
        else if (strcmp(a, "--max-connections") == 0)
            cfg.max_connections = (size_t)parse_num(a, argv[++i]);
        else if (strcmp(a, "--print-body") == 0)
            print_body = 1;
        else if (a[0] == '-') {
            fprintf(stderr, "client_get: unknown option %s\n", a);
            return 2;
        } else {
            first_url = i;
            break;
        }
    }
    int n = argc - first_url;
    if (n <= 0) {
        fprintf(stderr, "usage: client_get [--cacert FILE] [--insecure] [--http1] "
                        "[--timeout MS] [--max-body BYTES] [--max-connections N] "
                        "[--print-body] URL...\n");
        return 2;
    }

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        return 1;
    tc_client *client = NULL;
    int err = tc_client_new(&client, &loop, &cfg);
    if (err != 0) {
        fprintf(stderr, "client_get: %s\n", tc_strerror(err));
        return 1;
    }

    int failures = 0;
    fetch *fetches = calloc((size_t)n, sizeof(*fetches));
    if (fetches == NULL)
        return 1;
    for (int i = 0; i < n; i++) {
        fetch *ft = &fetches[i];
        ft->url = argv[first_url + i];
        ft->failures = &failures;
        ft->print_body = print_body;
        err = tc_client_get(&ft->future, client, ft->url);
        if (err != 0) {
            printf("%s error=%s %s\n", ft->url, tc_err_name(err), tc_strerror(err));
            failures++;
            continue;
        }
        if (tc_future_on_done(ft->future, on_done, ft) != 0) {
            fprintf(stderr, "client_get: out of memory\n");
            return 1;
        }
    }

    uv_run(&loop, UV_RUN_DEFAULT); /* returns when every request is done */

    for (int i = 0; i < n; i++)
        tc_future_unref(fetches[i].future);
    free(fetches);
    tc_client_close(client, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* lets the client's handles close */
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "client_get: loop still busy after tc_client_close\n");
        return 1;
    }
    return failures ? 1 : 0;
}
