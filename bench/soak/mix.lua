-- wrk script for the soak: every connection cycles through a mix of all of serve's endpoints,
-- each thread stops after its share of SOAK_N responses, and done() adds up what every thread
-- saw (wrk runs one Lua state per thread, so setup() keeps the thread handles and done() reads
-- each thread's globals back with thread:get()).
--
-- Per thread: `sent` counts requests handed to wrk (request() is called once per request
-- written), `received` counts responses, `counts` is a status histogram. A stopped thread's
-- connections stay open with their last requests still being answered by serve, until
-- bench/soak/soak.py sees serve's count settle and interrupts wrk (whose main thread would
-- otherwise sleep for all of -d). done() prints one JSON line:
--   {"sent":N,"received":N,"statuses":{"200":N,...},"errors":{...},"latency_ms":{...}}

local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

-- The mix: relative weights by repetition. Timeouts are short enough that a hung upstream
-- attempt costs at most 2 s of a connection, long enough that most requests succeed.
local paths = {
    "/api/smart?timeout=1000",
    "/api/smart?timeout=2000",
    "/api/first?timeout=1000",
    "/api/all?timeout=1000",
    "/api/within-timeout?timeout=500",
    "/api/metadata/item-%d?timeout=1000",
    "/healthz",
    "/api/smart?timeout=400",
    "/api/first?timeout=300",
    "/api/metadata/missing-%d?timeout=1000",
    "/api/within-timeout?timeout=250",
    "/api/smart",
}

function init(args)
    local n = tonumber(os.getenv("SOAK_N") or "1000000")
    local nthreads = tonumber(os.getenv("SOAK_THREADS") or "2")
    per_thread = math.ceil(n / nthreads)
    -- wrk calls request() once on the first thread's state before the run, to check the
    -- script (script_verify_request); that request is never sent.
    sent = (id == 0) and -1 or 0
    received = 0
    counts = {}
    reqs = {}
    -- Metadata IDs vary over 97 values per thread so batches coalesce some and not others.
    for k = 0, 96 do
        for _, p in ipairs(paths) do
            table.insert(reqs, wrk.format("GET", string.format(p, (id * 97 + k) % 500)))
        end
    end
    -- Start each thread at a different place in the cycle.
    idx = (id * 7) % #reqs
end

function request()
    idx = idx % #reqs + 1
    sent = sent + 1
    return reqs[idx]
end

function response(status, headers, body)
    received = received + 1
    local k = tostring(status)
    counts[k] = (counts[k] or 0) + 1
    if received >= per_thread then
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local tsent, trecv, statuses = 0, 0, {}
    for _, t in ipairs(threads) do
        tsent = tsent + t:get("sent")
        trecv = trecv + t:get("received")
        for k, v in pairs(t:get("counts")) do
            statuses[k] = (statuses[k] or 0) + v
        end
    end
    local parts = {}
    for k, v in pairs(statuses) do
        table.insert(parts, string.format('"%s":%d', k, v))
    end
    local e = summary.errors
    io.write(string.format(
        '{"sent":%d,"received":%d,"wrk_requests":%d,"statuses":{%s},' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
        '"latency_ms":{"p50":%.1f,"p90":%.1f,"p99":%.1f,"max":%.1f},"duration_s":%.2f}\n',
        tsent, trecv, summary.requests, table.concat(parts, ","),
        e.connect, e.read, e.write, e.timeout, e.status,
        latency:percentile(50) / 1000.0, latency:percentile(90) / 1000.0,
        latency:percentile(99) / 1000.0, latency.max / 1000.0, summary.duration / 1e6))
end
