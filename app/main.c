/*
 * tailcut: entry point. Dispatches to one subcommand per file (cmd_serve.c, cmd_upstream.c,
 * cmd_fetch.c).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const struct command {
    const char *name;
    cmd_fn run;
    const char *summary;
} commands[] = {
    {"serve", cmd_serve, "the smart API service in front of a slow, flaky upstream"},
    {"upstream", cmd_upstream, "a simulated slow, flaky upstream for demos, tests and benchmarks"},
    {"fetch", cmd_fetch, "many HTTP requests at once over a pool, results as they arrive"},
};

static void usage(FILE *out)
{
    (void)fprintf(out, "usage: tailcut [--version] [--help] COMMAND [OPTIONS]\n\n"
                       "tailcut cuts the tail latency of slow, flaky HTTP APIs.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        (void)fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    (void)fprintf(out, "\n'tailcut COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return TC_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("tailcut %s\n", TC_VERSION);
        return TC_EXIT_OK;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return TC_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    }
    (void)fprintf(stderr, "tailcut: unknown command or option '%s' (see 'tailcut --help')\n",
                  argv[1]);
    return TC_EXIT_USAGE;
}
