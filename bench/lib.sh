# Shared helpers for the bench scripts: start/stop nginx-light and tailcut on loopback, run wrk.
# Every server started here is stopped by bench_cleanup (trap it on EXIT).

BENCH_TMP=$(mktemp -d /tmp/tailcut-bench.XXXXXX)
BENCH_PIDS=()

bench_cleanup() {
    for pid in "${BENCH_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -f "$BENCH_TMP/nginx.pid" ]; then kill "$(cat "$BENCH_TMP/nginx.pid")" 2>/dev/null || true; fi
    sleep 0.2
    rm -rf "$BENCH_TMP"
}

# Until fewer than 200 sockets wait in TIME_WAIT (at most 90 s): thousands left by an earlier
# run (or by the test suite) slow connect()'s port search for everyone. Every timed script calls
# it before it measures.
wait_time_wait() {
    for _ in $(seq 90); do
        [ "$(ss -Htan state time-wait | wc -l)" -lt 200 ] && return 0
        sleep 1
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_nginx PORT 'location body'  -> nginx-light, 1 worker, access log off.
start_nginx() {
    local port=$1 location=$2
    cat >"$BENCH_TMP/nginx.conf" <<EOC
worker_processes 1;
pid $BENCH_TMP/nginx.pid;
error_log $BENCH_TMP/nginx-error.log;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    client_body_temp_path $BENCH_TMP/body;
    proxy_temp_path $BENCH_TMP/proxy;
    ${NGINX_HTTP_EXTRA:-}
    server {
        listen 127.0.0.1:$port;
        location / { $location }
    }
}
EOC
    nginx -p "$BENCH_TMP" -c "$BENCH_TMP/nginx.conf"
    for _ in $(seq 50); do
        [ -f "$BENCH_TMP/nginx.pid" ] && return 0
        sleep 0.1
    done
    echo "bench: nginx did not start" >&2
    return 1
}

stop_nginx() {
    if [ -f "$BENCH_TMP/nginx.pid" ]; then
        kill "$(cat "$BENCH_TMP/nginx.pid")" 2>/dev/null || true
        for _ in $(seq 50); do [ -f "$BENCH_TMP/nginx.pid" ] || break; sleep 0.1; done
    fi
}

# start_tailcut VAR CMD ARGS... : starts `tailcut CMD --listen 127.0.0.1:0 ARGS`, sets VAR to its
# port and TC_PID to its pid.
start_tailcut() {
    local var=$1
    shift
    local err="$BENCH_TMP/tailcut-$RANDOM.err"
    "$TAILCUT" "$1" --listen 127.0.0.1:0 "${@:2}" >/dev/null 2>"$err" &
    TC_PID=$!
    BENCH_PIDS+=("$TC_PID")
    for _ in $(seq 100); do
        local port
        port=$(sed -n 's/^tailcut: listening on http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$err")
        if [ -n "$port" ]; then
            printf -v "$var" '%s' "$port"
            return 0
        fi
        sleep 0.1
    done
    echo "bench: tailcut $1 did not start: $(cat "$err")" >&2
    return 1
}

# wrk_rps URL [wrk args]: prints requests/s.
wrk_rps() {
    local url=$1
    shift
    wrk "$@" "$url" | awk '/Requests\/sec/ {print $2}'
}

# peak_rss_kb PID: VmHWM of a running process.
peak_rss_kb() {
    awk '/VmHWM/ {print $2}' "/proc/$1/status"
}

ratio() {
    python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"
}
