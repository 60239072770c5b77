/*
 * `tailcut upstream`: the simulated slow, flaky upstream as a program.
 *
 * All the behaviour lives in the library (src/upstream/upstream.c); this file only turns flags into
 * a tc_upstream_config, validates them strictly before anything starts (a bad flag or value is one
 * line on stderr and exit status 2), and runs one worker through the runtime, which owns signals
 * and the graceful drain.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/commands.h"
#include "common/runtime.h"
#include "tailcut/upstream.h"

#define CMD "upstream"
#define DEFAULT_LISTEN "127.0.0.1:9000"
#define DEFAULT_DRAIN_MS 10000
#define MAX_DRAIN_MS 3600000
#define MAX_METADATA_RATE 1000000000

typedef struct app {
    rt_config rt;
    tc_upstream_config ucfg;
    char host[64];
    int port;
} app;

enum {
    OPT_HELP = 1,
    OPT_LISTEN,
    OPT_PROFILE,
    OPT_SEED,
    OPT_METADATA_RATE,
    OPT_DRAIN_TIMEOUT,
    OPT_ACCESS_LOG,
    OPT_ACCESS_LOG_FORMAT,
};

static const cli_option upstream_options[] = {
    {"listen", 0, OPT_LISTEN, CLI_VALUE, "HOST:PORT",
     "address to listen on [" DEFAULT_LISTEN "]; port 0 picks one"},
    {"profile", 0, OPT_PROFILE, CLI_VALUE, "P",
     "exponea | fixed:MS | uniform:LO:HI |\n"
     "lognormal:MEDIAN_MS:SIGMA | straggler:FAST_MS:SLOW_MS:P |\n"
     "mix:LO:HI:SLOW_LO:SLOW_HI:P [exponea]"},
    {"seed", 0, OPT_SEED, CLI_VALUE, "N",
     "seed of the random draws (same seed and request order,\n"
     "same draws) [from the clock; shown in /stats]"},
    {"metadata-rate", 0, OPT_METADATA_RATE, CLI_VALUE, "N",
     "/api/metadata calls per second before 429; 0 = unlimited\n[0]"},
    {"drain-timeout", 0, OPT_DRAIN_TIMEOUT, CLI_VALUE, "MS",
     "on SIGTERM/SIGINT, wait this long for requests in flight\n[10000]"},
    {"access-log", 0, OPT_ACCESS_LOG, CLI_VALUE, "-|FILE|off",
     "one line per request to stdout, a file, or nowhere;\n"
     "SIGUSR1 reopens the file [-]"},
    {"access-log-format", 0, OPT_ACCESS_LOG_FORMAT, CLI_VALUE, "text|json",
     "as tailcut serve's (see docs/serve.md) [text]"},
    {"help", 'h', OPT_HELP, 0, NULL, "show this help"},
};

static void usage(FILE *out)
{
    (void)fprintf(out, "usage: tailcut upstream [OPTIONS]\n"
                       "\n"
                       "A simulated slow, flaky upstream for demos, tests and benchmarks.\n"
                       "\n"
                       "options:\n");
    cli_print_options(out, upstream_options,
                      sizeof(upstream_options) / sizeof(upstream_options[0]));
    (void)fprintf(
        out,
        "\n"
        "endpoints:\n"
        "  GET  /api/work           answers per the profile or the next scenario step\n"
        "  POST /scenario           queue steps: [{\"delay_ms\":N,\"action\":\"respond\"|\"hang\"|"
        "\"reset\",\n"
        "                           \"status\":N,\"body\":\"TEXT\"}, ...]\n"
        "  POST /profile            switch the profile at once: {\"profile\":\"P\"}\n"
        "  POST /reset              clear counters and the scenario queue\n"
        "  GET  /stats              counters, arrivals_ms, per_second, metadata_ids (JSON)\n"
        "  GET  /api/metadata?id=A&id=B  {\"results\":{...}}; IDs starting with 'missing' are "
        "absent\n"
        "\n"
        "See docs/upstream.md.\n");
}

static void on_closed(tc_upstream *u, void *data)
{
    rt_worker *w = data;
    w->state = NULL;
}

static void on_drained(tc_upstream *u, void *data)
{
    tc_upstream_close(u, on_closed, data);
}

static int worker_start(rt_worker *w, void *data)
{
    app *a = data;
    tc_upstream *u;
    /* What the runtime's messages show, also if listening fails. */
    (void)snprintf(a->rt.listen_host, sizeof(a->rt.listen_host), "%s", a->host);
    a->rt.listen_port = a->port;
    int rc = tc_upstream_new(&u, w->loop, &a->ucfg);
    if (rc != 0)
        return rc;
    w->state = u;
    a->rt.listen_port = tc_upstream_port(u);
    return 0;
}

static void worker_drain(rt_worker *w, void *data)
{
    if (w->state != NULL)
        tc_upstream_drain(w->state, on_drained, w);
}

static void worker_stop(rt_worker *w, void *data)
{
    if (w->state != NULL)
        tc_upstream_close(w->state, on_closed, w); /* a no-op if already closing */
}

static void worker_cleanup(rt_worker *w, void *data)
{
    /* The loop ran dry with the simulator still open (it has nothing left to wait on): close it;
     * the runtime runs the loop once more after this. */
    if (w->state != NULL)
        tc_upstream_close(w->state, on_closed, w);
}

int cmd_upstream(int argc, char **argv)
{
    app a;
    FILE *log = stdout;
    const char *log_arg = "-";
    uint64_t v;

    rt_ignore_signals();
    memset(&a, 0, sizeof(a));
    tc_upstream_config_init(&a.ucfg);
    if (cli_parse_listen(CMD, "--listen", DEFAULT_LISTEN, a.host, sizeof(a.host), &a.port) != 0)
        return TC_EXIT_FAILURE;
    a.rt.drain_timeout_ms = DEFAULT_DRAIN_MS;

    cli_parser p;
    const char *val;
    int opt;
    cli_parser_init(&p, CMD, upstream_options,
                    sizeof(upstream_options) / sizeof(upstream_options[0]), argc, argv);
    while ((opt = cli_next(&p, &val)) != CLI_END) {
        switch (opt) {
        case OPT_HELP:
            usage(stdout);
            return TC_EXIT_OK;
        case OPT_LISTEN:
            if (cli_parse_listen(CMD, "--listen", val, a.host, sizeof(a.host), &a.port) != 0)
                return TC_EXIT_USAGE;
            break;
        case OPT_PROFILE: {
            const char *why = NULL;
            if (tc_upstream_profile_parse(val, NULL, &why) != 0) {
                cli_error(CMD, "invalid value '%s' for --profile: %s", val, why);
                return TC_EXIT_USAGE;
            }
            a.ucfg.profile = val;
            break;
        }
        case OPT_SEED:
            if (cli_parse_u64(CMD, "--seed", val, 0, UINT64_MAX, &v) != 0)
                return TC_EXIT_USAGE;
            a.ucfg.seed = v;
            a.ucfg.seed_set = 1;
            break;
        case OPT_METADATA_RATE:
            if (cli_parse_u64(CMD, "--metadata-rate", val, 0, MAX_METADATA_RATE, &v) != 0)
                return TC_EXIT_USAGE;
            a.ucfg.metadata_rate = v;
            break;
        case OPT_DRAIN_TIMEOUT:
            if (cli_parse_u64(CMD, "--drain-timeout", val, 0, MAX_DRAIN_MS, &v) != 0)
                return TC_EXIT_USAGE;
            a.rt.drain_timeout_ms = v;
            break;
        case OPT_ACCESS_LOG:
            log_arg = val; /* opened once the flags are read: the last one counts */
            break;
        case OPT_ACCESS_LOG_FORMAT:
            if (cli_parse_access_log_format(CMD, val, &a.ucfg.access_log_format) != 0)
                return TC_EXIT_USAGE;
            break;
        case CLI_OPERAND:
            cli_error(CMD, "unexpected argument '%s'", val);
            return TC_EXIT_USAGE;
        default: /* CLI_ERROR: the parser has said why */
            return TC_EXIT_USAGE;
        }
    }

    if (cli_open_access_log(CMD, log_arg, &log) != 0)
        return TC_EXIT_USAGE;
    if (log != NULL)
        (void)setvbuf(log, NULL, _IOLBF, 0); /* lines as they happen, also on a pipe; else as is */
    a.ucfg.host = a.host;
    a.ucfg.port = a.port;
    a.ucfg.access_log = log;

    a.rt.access_log = log;
    a.rt.access_log_path = log != stdout ? log_arg : NULL;
    a.rt.nworkers = 1;
    a.rt.start = worker_start;
    a.rt.drain = worker_drain;
    a.rt.stop = worker_stop;
    a.rt.cleanup = worker_cleanup;
    a.rt.data = &a;
    int status = rt_run(&a.rt);
    if (log != NULL && log != stdout)
        (void)fclose(log); /* at exit: nowhere left to report a failed flush */
    return status;
}
