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
#include "common/settings.h"
#include "tailcut/upstream.h"

typedef struct app {
    rt_config rt;
    tc_upstream_config ucfg;
    settings_addr listen;
    char *profile;  /* --profile, checked */
    char *log_path; /* --access-log as given: "-", "off" or a file */
} app;

/* --profile: one the simulator knows (its reason is the message's). */
static int check_profile(const setting *s, const char *value, void *field, settings_error *e)
{
    const char *why = NULL;
    (void)s;
    (void)field;
    if (tc_upstream_profile_parse(value, NULL, &why) != 0)
        return settings_invalid(e, value, "%s", why);
    return 0;
}

/* Every setting of tailcut upstream, once (app/common/settings.h says how a row is read). */
static const setting rows[] = {
    {.name = "listen",
     .type = SETTINGS_ADDR,
     .def = "127.0.0.1:9000",
     .placeholder = "HOST:PORT",
     .help = "address to listen on; port 0 picks one",
     .man = "Address to listen on; port 0 picks a free port.\n"
            "HOST is an IPv4 or IPv6 address (IPv6 in brackets), or localhost (127.0.0.1); a name "
            "is a bad\n"
            "value.",
     SETTINGS_FIELD(app, listen)},
    {.name = "profile",
     .type = SETTINGS_TEXT,
     .check = check_profile,
     .def = "exponea",
     .placeholder = "P",
     .help = "exponea | fixed:MS | uniform:LO:HI |\n"
             "lognormal:MEDIAN_MS:SIGMA | straggler:FAST_MS:SLOW_MS:P |\n"
             "mix:LO:HI:SLOW_LO:SLOW_HI:P |\n"
             "pause:LO:HI:PAUSE_MS:PERIOD_MS[:PHASE_MS] (work uniform in\n"
             "LO..HI; everything stalls PAUSE_MS every PERIOD_MS)",
     .man = "The behaviour of /api/work, one of:\n"
            ".RS\n"
            ".TP\n"
            ".B exponea\n"
            "delay uniform in 100..600 ms; of 11 draws, one hangs, one answers 200 with invalid "
            "JSON, one\n"
            "answers 500 and eight answer 200\n"
            "\\fB{\"time\": \\fIDELAY\\fB}\\fR\n"
            ".TP\n"
            ".BI fixed: MS\n"
            "always\n"
            ".I MS\n"
            ".TP\n"
            ".BI uniform: LO : HI\n"
            "uniform in\n"
            ".IR LO .. HI\n"
            "ms\n"
            ".TP\n"
            ".BI lognormal: MEDIAN_MS : SIGMA\n"
            "log-normal around the median\n"
            ".TP\n"
            ".BI straggler: FAST_MS : SLOW_MS : P\n"
            ".I SLOW_MS\n"
            "with probability\n"
            ".IR P ,\n"
            "else\n"
            ".I FAST_MS\n"
            ".TP\n"
            ".BI mix: LO : HI : SLOW_LO : SLOW_HI : P\n"
            "with probability\n"
            ".I P\n"
            "uniform in\n"
            ".IR SLOW_LO .. SLOW_HI ,\n"
            "else uniform in\n"
            ".IR LO .. HI\n"
            ".TP\n"
            ".B pause:\\fILO\\fB:\\fIHI\\fB:\\fIPAUSE_MS\\fB:\\fIPERIOD_MS"
            "\\fR[\\fB:\\fIPHASE_MS\\fR]\n"
            "work uniform in\n"
            ".IR LO .. HI\n"
            "ms, and the whole simulator stalls for\n"
            ".I PAUSE_MS\n"
            "once every\n"
            ".IR PERIOD_MS ,\n"
            ".I PHASE_MS\n"
            "into each period of the wall clock (a phase drawn from the seed when not given), as\n"
            "in a garbage-collection pause: work in progress halts and resumes after the stall,\n"
            "and nothing is answered during one.\n"
            ".IR PAUSE_MS \" and \" PHASE_MS\n"
            "are below\n"
            ".IR PERIOD_MS .\n"
            ".RE\n"
            ".IP\n"
            "A hang holds the connection without an answer for 10 s, then closes it.",
     SETTINGS_FIELD(app, profile)},
    {.name = "seed",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = UINT64_MAX,
     .def = "from the clock; shown in /stats",
     .flags = SETTINGS_DEFAULT_TEXT,
     .placeholder = "N",
     .help = "seed of the random draws (same seed and request order,\n"
             "same draws)",
     .man = "Seed of the random draws: the same seed and request order give the same draws.",
     SETTINGS_FIELD(app, ucfg.seed)},
    {.name = "metadata-rate",
     .type = SETTINGS_UINT,
     .min = 0,
     .max = 1000000000,
     .def = "0",
     .placeholder = "N",
     .help = "/api/metadata calls per second before 429; 0 = unlimited\n",
     .man = "/api/metadata calls per second before 429; 0 is unlimited.",
     SETTINGS_FIELD(app, ucfg.metadata_rate)},
    {SETTINGS_ROW_DRAIN_TIMEOUT,
     .help = "on SIGTERM/SIGINT, wait this long for requests in flight\n",
     .man = "On SIGTERM or SIGINT, how long requests in flight (hangs included) may still finish.",
     SETTINGS_FIELD(app, rt.drain_timeout_ms)},
    {SETTINGS_ROW_ACCESS_LOG,
     .help = "one line per request to stdout, a file, or nowhere;\n"
             "SIGUSR1 reopens the file",
     .man = "One line per request to stdout, a file (appended) or nowhere.",
     SETTINGS_FIELD(app, log_path)},
    {SETTINGS_ROW_ACCESS_LOG_FORMAT, .help = "as tailcut serve's (see docs/serve.md)",
     .man = "The access log's line format, the same as\n"
            ".BR tailcut-serve (1)\n"
            "writes (see ACCESS LOG there); ATTEMPTS is always\n"
            ".BR - .",
     SETTINGS_FIELD(app, ucfg.access_log_format)},
    {SETTINGS_ROW_HELP, .help = "show this help",
     .man = "Print the options and the endpoints, and exit 0."},
};

const settings_table upstream_settings = {"upstream", rows, sizeof(rows) / sizeof(rows[0])};

static void usage(FILE *out)
{
    (void)fprintf(out, "usage: tailcut upstream [OPTIONS]\n"
                       "\n"
                       "A simulated slow, flaky upstream for demos, tests and benchmarks.\n"
                       "\n"
                       "options:\n");
    settings_print_help(out, &upstream_settings);
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
    (void)snprintf(a->rt.listen_host, sizeof(a->rt.listen_host), "%s", a->listen.host);
    a->rt.listen_port = a->listen.port;
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

/* The defaults, then the flags. Returns -1 to go on, else the exit status. */
static int read_settings(app *a, int argc, char **argv, FILE **log)
{
    settings_target to = {a, NULL};
    uint64_t given = 0;
    settings_cli cli = {usage, NULL, NULL, &given};
    settings_error e;
    tc_upstream_config_init(&a->ucfg);
    int status = settings_read_cli(&upstream_settings, argc, argv, &to, &cli);
    if (status >= 0)
        return status;
    const setting *seed = settings_find(&upstream_settings, "seed");
    a->ucfg.seed_set = (given >> settings_index(&upstream_settings, seed)) & 1;
    if (settings_open_access_log(a->log_path, log, &e) != 0) {
        settings_cli_error(&upstream_settings, "access-log", &e);
        return CLI_EXIT_USAGE;
    }
    if (*log != NULL)
        (void)setvbuf(*log, NULL, _IOLBF, 0); /* lines as they happen, also on a pipe; else as is */
    a->ucfg.profile = a->profile;
    a->ucfg.host = a->listen.host;
    a->ucfg.port = a->listen.port;
    a->ucfg.access_log = *log;
    return -1;
}

/* Runs the simulator on one worker until a signal. Returns the exit status. */
static int run(app *a, FILE *log)
{
    a->rt.access_log = log;
    a->rt.access_log_path = log != stdout ? a->log_path : NULL;
    a->rt.nworkers = 1;
    a->rt.start = worker_start;
    a->rt.drain = worker_drain;
    a->rt.stop = worker_stop;
    a->rt.cleanup = worker_cleanup;
    a->rt.data = a;
    return rt_run(&a->rt);
}

int cmd_upstream(int argc, char **argv)
{
    app a;
    FILE *log = NULL;
    rt_ignore_signals();
    memset(&a, 0, sizeof(a));
    int status = read_settings(&a, argc, argv, &log);
    if (status < 0)
        status = run(&a, log);
    if (log != NULL && log != stdout)
        (void)fclose(log); /* at exit: nowhere left to report a failed flush */
    settings_target settings = {&a, NULL};
    settings_free(&upstream_settings, &settings);
    return status;
}
