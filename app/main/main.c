/*
 * tailcut: entry point. Dispatches to one subcommand per folder (app/serve, app/upstream,
 * app/fetch).
 */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <http_parser.h>
#include <jansson.h>
#include <uv.h>

#include "common/cli.h"
#include "common/commands.h"
#include "tailcut/version.h"

static const struct command {
    const char *name;
    cmd_fn run;
    const settings_table *settings;
    const char *summary;
} commands[] = {
    {"serve", cmd_serve, &serve_settings,
     "the smart API service in front of a slow, flaky upstream"},
    {"upstream", cmd_upstream, &upstream_settings,
     "a simulated slow, flaky upstream for demos, tests and benchmarks"},
    {"fetch", cmd_fetch, &fetch_settings,
     "many HTTP requests at once over a pool, results as they arrive"},
};

static void usage(FILE *out)
{
    (void)fprintf(out, "usage: tailcut [--version] [--help] COMMAND [OPTIONS]\n\n"
                       "tailcut cuts the tail latency of slow, flaky HTTP APIs.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        (void)fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    (void)fprintf(out, "\n'tailcut COMMAND --help' describes a command's options.\n");
}

/* --version: tailcut's own version on the first line, then one line "NAME VERSION" per library
 * it runs with, as each reports itself at run time (the shared object actually loaded, not the
 * headers it was built against). */
static void print_versions(void)
{
    printf("tailcut %s\n", TC_VERSION_STRING);
    printf("libuv %s\n", uv_version_string());
    const curl_version_info_data *curl = curl_version_info(CURLVERSION_NOW);
    printf("libcurl %s\n", curl->version);
    /* curl names its TLS library "NAME/VERSION" (e.g. "OpenSSL/3.0.11"). */
    const char *tls = curl->ssl_version;
    if (tls == NULL || tls[0] == '\0') {
        printf("tls none (libcurl without TLS)\n");
    } else {
        const char *slash = strchr(tls, '/');
        if (slash != NULL)
            printf("%.*s %s (libcurl's TLS library)\n", (int)(slash - tls), tls, slash + 1);
        else
            printf("tls %s (libcurl's TLS library)\n", tls);
    }
    unsigned long hp = http_parser_version();
    printf("http-parser %lu.%lu.%lu\n", (hp >> 16) & 255, (hp >> 8) & 255, hp & 255);
#if JANSSON_VERSION_HEX >= 0x020d00 /* jansson_version_str() is 2.13 and later */
    printf("jansson %s\n", jansson_version_str());
#else
    printf("jansson %s\n", JANSSON_VERSION);
#endif
}

/* tailcut --man-options CMD: the OPTIONS list of CMD's man page, from its settings table. Not in
 * --help: it is how `make man` writes docs/man/ and how the man-page test checks them. */
static int print_man_options(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(name, commands[i].name) == 0) {
            settings_print_man(stdout, commands[i].settings);
            return CLI_EXIT_OK;
        }
    }
    (void)fprintf(stderr, "tailcut: unknown command '%s'\n", name);
    return CLI_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0) {
        print_versions();
        return CLI_EXIT_OK;
    }
    if (argc == 3 && strcmp(argv[1], "--man-options") == 0)
        return print_man_options(argv[2]);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    }
    (void)fprintf(stderr, "tailcut: unknown command or option '%s' (see 'tailcut --help')\n",
                  argv[1]);
    return CLI_EXIT_USAGE;
}
