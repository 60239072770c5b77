/*
 * Worker threads, signals and graceful drain for the server subcommands.
 *
 * The main thread owns a small uv loop that only watches SIGTERM/SIGINT and the workers' exits.
 * Each worker thread owns its loop and everything on it; the main thread talks to a worker only
 * through the worker's uv_async_t and an atomic command word, so no request-path state is shared.
 *
 * A worker's async handle lives exactly as long as its loop, and a worker can end at any time
 * (a failed start, a finished drain) while the main thread may still be sending it commands.
 * uv_async_send() on a handle whose loop is gone aborts the process, so every send and the
 * worker's closing of its handle happen under one lock, and nothing is sent to a closed handle.
 *
 * The first SIGTERM/SIGINT: STOPPING=1 to systemd, every worker unready (the readiness probe
 * answers 503, answers close their connections), then the drain, at once or after
 * --shutdown-delay. SIGUSR1 reopens the access log here on the main thread; SIGHUP runs the
 * reload hook here too (never on a serving loop), unless the drain has begun.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime.h"
#include "tailcut/error.h"

/* Each command implies the ones before it: a worker asked to drain is unready too. */
enum { CMD_NONE = 0, CMD_UNREADY = 1, CMD_DRAIN = 2, CMD_STOP = 3 };

typedef struct worker_slot {
    rt_worker w;
    rt_thread th;
    uv_async_t wake;
    uv_timer_t drain_timer;
    int start_err;
    atomic_int command;
    int wake_open; /* under runtime.wake_lock: the main thread may uv_async_send(&wake) */
    int unready_done;
    int drain_begun;
    struct runtime *rt;
} worker_slot;

typedef struct runtime {
    rt_config *cfg;
    worker_slot *slots;
    unsigned nstarted;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint, sigusr1, sighup;
    uv_timer_t delay_timer; /* --shutdown-delay */
    uv_async_t worker_exit;
    uv_mutex_t wake_lock;
    atomic_uint exited;
    int signals;
} runtime;

unsigned rt_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : (unsigned)n;
}

int rt_thread_start(rt_thread *t, void (*run)(void *), void *arg)
{
    if (uv_loop_init(&t->loop) != 0)
        return TC_EIO;
    if (uv_sem_init(&t->ready, 0) != 0) {
        uv_loop_close(&t->loop);
        return TC_EIO;
    }
    if (uv_thread_create(&t->thread, run, arg) != 0) {
        uv_loop_close(&t->loop);
        uv_sem_destroy(&t->ready);
        return TC_EIO;
    }
    uv_sem_wait(&t->ready);
    uv_sem_destroy(&t->ready);
    return 0;
}

void rt_thread_ready(rt_thread *t)
{
    uv_sem_post(&t->ready);
}

static void on_drain_deadline(uv_timer_t *t)
{
    worker_slot *s = t->data;
    if (s->rt->cfg->stop != NULL)
        s->rt->cfg->stop(&s->w, s->rt->cfg->data);
}

static void on_wake(uv_async_t *a)
{
    worker_slot *s = a->data;
    int cmd = atomic_load(&s->command);
    if (cmd >= CMD_UNREADY && !s->unready_done) {
        s->unready_done = 1;
        if (s->rt->cfg->unready != NULL)
            s->rt->cfg->unready(&s->w, s->rt->cfg->data);
    }
    if (cmd >= CMD_DRAIN && !s->drain_begun) {
        s->drain_begun = 1;
        /* From now on only the worker's own work keeps its loop alive. */
        uv_unref((uv_handle_t *)&s->wake);
        uv_timer_start(&s->drain_timer, on_drain_deadline, s->rt->cfg->drain_timeout_ms, 0);
        uv_unref((uv_handle_t *)&s->drain_timer);
        if (s->rt->cfg->drain != NULL)
            s->rt->cfg->drain(&s->w, s->rt->cfg->data);
    }
    if (cmd == CMD_STOP && s->rt->cfg->stop != NULL)
        s->rt->cfg->stop(&s->w, s->rt->cfg->data);
}

static void worker_main(void *arg)
{
    worker_slot *s = arg;
    runtime *rt = s->rt;
    uv_async_init(&s->th.loop, &s->wake, on_wake);
    uv_mutex_lock(&rt->wake_lock);
    s->wake_open = 1;
    uv_mutex_unlock(&rt->wake_lock);
    uv_timer_init(&s->th.loop, &s->drain_timer);
    s->wake.data = s;
    s->drain_timer.data = s;
    s->w.loop = &s->th.loop;
    s->start_err = rt->cfg->start(&s->w, rt->cfg->data);
    rt_thread_ready(&s->th);
    if (s->start_err != 0) {
        uv_unref((uv_handle_t *)&s->wake);
        if (rt->cfg->stop != NULL)
            rt->cfg->stop(&s->w, rt->cfg->data);
    } else {
        /* A command sent before the async existed would be lost: look once more. */
        if (atomic_load(&s->command) != CMD_NONE)
            uv_async_send(&s->wake);
    }
    uv_run(&s->th.loop, UV_RUN_DEFAULT);
    uv_mutex_lock(&rt->wake_lock);
    s->wake_open = 0;
    uv_close((uv_handle_t *)&s->wake, NULL);
    uv_mutex_unlock(&rt->wake_lock);
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
    uv_run(&s->th.loop, UV_RUN_DEFAULT);
    if (rt->cfg->cleanup != NULL)
        rt->cfg->cleanup(&s->w, rt->cfg->data);
    uv_run(&s->th.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&s->th.loop) != 0)
        (void)fprintf(stderr, "tailcut: worker %u: handles left open at exit\n", s->w.index);
    atomic_fetch_add(&rt->exited, 1);
    uv_async_send(&rt->worker_exit);
}

/* Workers that have already ended (or are ending) need no command: they are skipped. */
static void send_all(runtime *rt, int cmd)
{
    uv_mutex_lock(&rt->wake_lock);
    for (unsigned i = 0; i < rt->nstarted; i++) {
        /* Commands only go up (a SIGTERM after a failed start must not turn STOP into DRAIN). */
        int cur = atomic_load(&rt->slots[i].command);
        while (cur < cmd && !atomic_compare_exchange_weak(&rt->slots[i].command, &cur, cmd))
            ;
        if (rt->slots[i].wake_open)
            uv_async_send(&rt->slots[i].wake);
    }
    uv_mutex_unlock(&rt->wake_lock);
}

static void on_delay_over(uv_timer_t *t)
{
    runtime *rt = t->data;
    (void)fprintf(stderr, "tailcut: shutdown delay over, draining (up to %llu ms)\n",
                  (unsigned long long)rt->cfg->drain_timeout_ms);
    send_all(rt, CMD_DRAIN);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    runtime *rt = sig->data;
    if (++rt->signals > 1) {
        static const char msg[] = "tailcut: second signal, exiting now\n";
        ssize_t ignored = write(2, msg, sizeof(msg) - 1);
        (void)ignored;
        /* The access log's last lines, unless a worker holds stdout (blocked on a full pipe):
         * exiting at once matters more. */
        if (ftrylockfile(stdout) == 0) {
            (void)fflush(stdout);
            funlockfile(stdout);
        }
        _exit(1);
    }
    (void)rt_notify("STOPPING=1");
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    unsigned long long drain_ms = (unsigned long long)rt->cfg->drain_timeout_ms;
    if (rt->cfg->shutdown_delay_ms == 0) {
        (void)fprintf(stderr, "tailcut: %s received, draining (up to %llu ms)\n", name, drain_ms);
        send_all(rt, CMD_DRAIN);
        return;
    }
    (void)fprintf(stderr,
                  "tailcut: %s received, not ready; serving %llu ms more, then draining (up to "
                  "%llu ms)\n",
                  name, (unsigned long long)rt->cfg->shutdown_delay_ms, drain_ms);
    send_all(rt, CMD_UNREADY);
    uv_timer_start(&rt->delay_timer, on_delay_over, rt->cfg->shutdown_delay_ms, 0);
}

static void on_sigusr1(uv_signal_t *sig, int signum)
{
    runtime *rt = sig->data;
    if (rt->cfg->access_log != NULL && rt->cfg->access_log_path != NULL &&
        rt_reopen_log(rt->cfg->access_log, rt->cfg->access_log_path) == 0)
        (void)fprintf(stderr, "tailcut: SIGUSR1 received, access log '%s' reopened\n",
                      rt->cfg->access_log_path);
}

static void on_sighup(uv_signal_t *sig, int signum)
{
    runtime *rt = sig->data;
    (void)signum;
    if (rt->signals > 0 || rt->cfg->reload == NULL)
        return; /* draining: ignored */
    rt->cfg->reload(rt->cfg->data);
}

static void close_main_handles(runtime *rt)
{
    uv_close((uv_handle_t *)&rt->worker_exit, NULL);
    uv_close((uv_handle_t *)&rt->sigterm, NULL);
    uv_close((uv_handle_t *)&rt->sigint, NULL);
    uv_close((uv_handle_t *)&rt->sigusr1, NULL);
    uv_close((uv_handle_t *)&rt->sighup, NULL);
    uv_close((uv_handle_t *)&rt->delay_timer, NULL);
}

static void on_worker_exit(uv_async_t *a)
{
    runtime *rt = a->data;
    if (atomic_load(&rt->exited) < rt->nstarted)
        return;
    close_main_handles(rt);
}

static int start_worker(runtime *rt, unsigned i)
{
    worker_slot *s = &rt->slots[i];
    s->rt = rt;
    s->w.index = i;
    atomic_init(&s->command, CMD_NONE);
    int err = rt_thread_start(&s->th, worker_main, s);
    if (err != 0)
        return err;
    rt->nstarted++;
    return s->start_err;
}

void rt_ignore_signals(void)
{
    (void)signal(SIGPIPE, SIG_IGN); /* cannot fail for a valid signal number */
    (void)signal(SIGHUP, SIG_IGN);  /* no terminal to lose; configuration is not reloaded */
    (void)signal(SIGUSR1, SIG_IGN); /* a logrotate before or after the handler must not kill us */
}

int rt_run(rt_config *cfg)
{
    runtime rt;
    memset(&rt, 0, sizeof(rt));
    rt.cfg = cfg;
    if (cfg->nworkers == 0)
        cfg->nworkers = 1;
    rt_ignore_signals();
    rt.slots = calloc(cfg->nworkers, sizeof(*rt.slots));
    if (rt.slots == NULL || uv_mutex_init(&rt.wake_lock) != 0) {
        (void)fprintf(stderr, "tailcut: out of memory\n");
        free(rt.slots);
        return 1;
    }
    if (uv_loop_init(&rt.loop) != 0) {
        (void)fprintf(stderr, "tailcut: out of memory\n");
        uv_mutex_destroy(&rt.wake_lock);
        free(rt.slots);
        return 1;
    }
    atomic_init(&rt.exited, 0);
    uv_async_init(&rt.loop, &rt.worker_exit, on_worker_exit);
    rt.worker_exit.data = &rt;
    uv_signal_init(&rt.loop, &rt.sigterm);
    uv_signal_init(&rt.loop, &rt.sigint);
    rt.sigterm.data = rt.sigint.data = &rt;
    uv_signal_init(&rt.loop, &rt.sigusr1);
    uv_signal_init(&rt.loop, &rt.sighup);
    uv_timer_init(&rt.loop, &rt.delay_timer);
    rt.sigusr1.data = rt.sighup.data = rt.delay_timer.data = &rt;
    uv_signal_start(&rt.sigterm, on_signal, SIGTERM);
    uv_signal_start(&rt.sigint, on_signal, SIGINT);
    uv_signal_start(&rt.sigusr1, on_sigusr1, SIGUSR1);
    uv_signal_start(&rt.sighup, on_sighup, SIGHUP);

    int status = 0;
    for (unsigned i = 0; i < cfg->nworkers; i++) {
        int err = start_worker(&rt, i);
        if (err != 0) {
            (void)fprintf(stderr, "tailcut: cannot listen on %s:%d: %s\n", cfg->listen_host,
                          cfg->listen_port, tc_strerror(err));
            status = 1;
            send_all(&rt, CMD_STOP);
            break;
        }
    }
    if (status == 0) {
        int v6 = strchr(cfg->listen_host, ':') != NULL;
        (void)fprintf(stderr, "tailcut: listening on http://%s%s%s:%d\n", v6 ? "[" : "",
                      cfg->listen_host, v6 ? "]" : "", cfg->listen_port);
        (void)rt_notify("READY=1");
    }
    if (rt.nstarted == 0)
        close_main_handles(&rt);
    uv_run(&rt.loop, UV_RUN_DEFAULT);
    rt_ignore_signals(); /* closing the SIGUSR1 handle gave it its default action (exit) back */
    for (unsigned i = 0; i < rt.nstarted; i++)
        uv_thread_join(&rt.slots[i].th.thread);
    uv_loop_close(&rt.loop);
    uv_mutex_destroy(&rt.wake_lock);
    free(rt.slots);
    (void)fflush(stdout);
    return status;
}

/* ---- systemd and logrotate ------------------------------------------------------------------ */

int rt_notify(const char *state)
{
    const char *where = getenv("NOTIFY_SOCKET");
    if (where == NULL || *where == '\0')
        return 0;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t n = strlen(where);
    if ((where[0] != '/' && where[0] != '@') || n < 2 || n > sizeof(sa.sun_path)) {
        (void)fprintf(stderr,
                      "tailcut: cannot notify systemd: NOTIFY_SOCKET '%s' is not an AF_UNIX "
                      "path or @abstract name\n",
                      where);
        return -1;
    }
    memcpy(sa.sun_path, where, n);
    if (where[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract: the name is every byte after the NUL, no end mark */
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ssize_t sent = -1;
    if (fd >= 0) {
        sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT,
                      (const struct sockaddr *)&sa, len);
    }
    int err = errno;
    if (fd >= 0)
        (void)close(fd);
    if (sent < 0) {
        (void)fprintf(stderr, "tailcut: cannot notify systemd (%s) at NOTIFY_SOCKET=%s: %s\n",
                      state, where, uv_strerror(uv_translate_sys_error(err)));
        return -1;
    }
    return 0;
}

static int reopen_failed(const char *path, int err)
{
    (void)fprintf(stderr,
                  "tailcut: cannot reopen access log '%s': %s; still writing to the old file\n",
                  path, uv_strerror(uv_translate_sys_error(err)));
    return -1;
}

int rt_reopen_log(FILE *log, const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return reopen_failed(path, errno);
    /* Under the FILE's lock no worker is inside a write: the buffered lines go to the old file,
     * then the descriptor is swapped in one step (dup3), so no line is split between files. */
    flockfile(log);
    (void)fflush(log);
    int rc = dup3(fd, fileno(log), O_CLOEXEC);
    int err = errno;
    funlockfile(log);
    (void)close(fd);
    return rc < 0 ? reopen_failed(path, err) : 0;
}
