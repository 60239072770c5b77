/*
 * The process around the servers: worker threads, each with its own uv loop, plus the signal
 * handling and graceful drain. Used by every server subcommand.
 *
 * rt_run() starts the workers one after another (worker 0 first, so that with port 0 it
 * can bind a free port that the next workers then share with SO_REUSEPORT), prints the
 * `tailcut: listening on ...` line once all are ready, and waits. On SIGTERM or SIGINT every
 * worker's drain hook runs on its own thread; a worker ends when its loop has no active handles
 * left, or at drain_timeout_ms, when its stop hook runs. A second signal exits at once with
 * status 1.
 */
#ifndef TAILCUT_APP_RUNTIME_H
#define TAILCUT_APP_RUNTIME_H

#include <stdint.h>
#include <uv.h>

typedef struct rt_worker {
    unsigned index;
    uv_loop_t *loop;
    void *state; /* set by start, for drain and stop */
} rt_worker;

typedef struct rt_config {
    unsigned nworkers;
    uint64_t drain_timeout_ms;
    /* On the worker's thread: set up servers on w->loop. Returns 0 or a TC_E* code (the run then
     * fails with a message). The runtime prints the listening line with the host and port that
     * worker 0's start stored in listen_host/listen_port. */
    int (*start)(rt_worker *w, void *data);
    /* On the worker's thread, at the first signal: stop accepting, let in-flight work finish,
     * close what is idle. The worker ends once nothing is left on its loop. */
    void (*drain)(rt_worker *w, void *data);
    /* On the worker's thread, at the drain deadline: close everything still open. Also called
     * after a failed start of another worker. */
    void (*stop)(rt_worker *w, void *data);
    /* On the worker's thread after its loop has ended: free what start allocated. */
    void (*cleanup)(rt_worker *w, void *data);
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

/* Runs until drained after a signal. Returns the process exit status: 0 after a graceful drain,
 * 1 if a worker failed to start (a message has been printed). */
int rt_run(rt_config *cfg);

/* Number of online CPUs, at least 1: the default for --workers. */
unsigned rt_cpus(void);

#endif /* TAILCUT_APP_RUNTIME_H */
