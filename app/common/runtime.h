/*
 * The process around the servers: worker threads, each with its own uv loop, plus the signal
 * handling and graceful drain. Used by every server subcommand.
 *
 * rt_run() starts the workers one after another (worker 0 first, so that with port 0 it
 * can bind a free port that the next workers then share with SO_REUSEPORT), prints the
 * `tailcut: listening on ...` line once all are ready, and waits. On SIGTERM or SIGINT every
 * worker's unready hook runs on its own thread, then (at once, or after shutdown_delay_ms) its
 * drain hook; a worker ends when its loop has no active handles left, or at drain_timeout_ms
 * after the drain began, when its stop hook runs. A second signal exits at once with status 1.
 *
 * Also: SIGUSR1 reopens the access-log file (access_log_path, for logrotate), SIGHUP calls the
 * reload hook (if any; else, and while draining, it is ignored),
 * and under systemd (NOTIFY_SOCKET set) READY=1 is sent after the listening line and STOPPING=1
 * at the first signal (rt_notify).
 */
#ifndef TAILCUT_APP_RUNTIME_H
#define TAILCUT_APP_RUNTIME_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

typedef struct rt_worker {
    unsigned index;
    uv_loop_t *loop;
    void *state; /* set by start, for drain and stop */
} rt_worker;

typedef struct rt_config {
    unsigned nworkers;
    uint64_t drain_timeout_ms;
    /* After the first signal the workers go on serving (not ready) this long before the drain. */
    uint64_t shutdown_delay_ms;
    /* The access log, reopened on SIGUSR1 when access_log_path is set (a file, not stdout). */
    FILE *access_log;
    const char *access_log_path;
    /* On the worker's thread: set up servers on w->loop. Returns 0 or a TC_E* code (the run then
     * fails with a message). The runtime prints the listening line with the host and port that
     * worker 0's start stored in listen_host/listen_port. */
    int (*start)(rt_worker *w, void *data);
    /* On the worker's thread, at the first signal (may be NULL): no longer ready; /readyz answers
     * 503 and every answer closes its connection, while the worker still accepts and serves. */
    void (*unready)(rt_worker *w, void *data);
    /* On the worker's thread, at the first signal (or shutdown_delay_ms after it): stop
     * accepting, let in-flight work finish, close what is idle. The worker ends once nothing is
     * left on its loop. */
    void (*drain)(rt_worker *w, void *data);
    /* On the worker's thread, at the drain deadline: close everything still open. Also called
     * after a failed start of another worker. */
    void (*stop)(rt_worker *w, void *data);
    /* On the worker's thread after its loop has ended: free what start allocated. */
    void (*cleanup)(rt_worker *w, void *data);
    /* On the main thread at SIGHUP, before the first SIGTERM/SIGINT (may be NULL: SIGHUP is then
     * ignored). It may change drain_timeout_ms and shutdown_delay_ms. */
    void (*reload)(void *data);
    void *data;
    /* Filled by worker 0's start: what the listening line shows. */
    char listen_host[64];
    int listen_port;
} rt_config;

/* A thread with a uv loop of its own. */
typedef struct rt_thread {
    uv_thread_t thread;
    uv_loop_t loop;
    uv_sem_t ready;
} rt_thread;

/* Initialises t->loop, runs run(arg) on a new thread and returns once run has called
 * rt_thread_ready(t) (at the end of its set-up, whether that worked or not), so the
 * caller can read what the set-up stored. Returns 0, or TC_EIO with no thread and the loop
 * closed. The caller joins t->thread. */
int rt_thread_start(rt_thread *t, void (*run)(void *), void *arg);
void rt_thread_ready(rt_thread *t);

/* SIGPIPE, SIGHUP and SIGUSR1 ignored: called by every server command before it starts a thread
 * (SIGUSR1's handler only exists while rt_run runs, and its default action would end the
 * process), and by rt_run itself. */
void rt_ignore_signals(void);

/* Runs until drained after a signal. Returns the process exit status: 0 after a graceful drain,
 * 1 if a worker failed to start (a message has been printed). */
int rt_run(rt_config *cfg);

/* Sends state (e.g. "READY=1") to systemd when NOTIFY_SOCKET is set: a datagram to that AF_UNIX
 * path, or to the abstract name after '@'. Returns 0 if sent or not under systemd; -1 after one
 * stderr line saying why not (never fatal). */
int rt_notify(const char *state);

/* Reopens the access-log file at path on the same FILE (for logrotate): what was written before
 * goes to the old file, every line after to the new one, whole. Returns 0, or -1 after one
 * stderr line (the old file is kept). */
int rt_reopen_log(FILE *log, const char *path);

/* Number of online CPUs, at least 1: the default for --workers. */
unsigned rt_cpus(void);

#endif /* TAILCUT_APP_RUNTIME_H */
