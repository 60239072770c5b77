-- wrk script for the policy fidelity benchmark: stops each thread after its share of
-- FIDELITY_N responses and prints p50, p90 (ms), the request count and non-2xx count as JSON.
local per_thread = tonumber(os.getenv("FIDELITY_N") or "20000") / tonumber(os.getenv("FIDELITY_THREADS") or "1")
local seen = 0

function response(status, headers, body)
    seen = seen + 1
    if seen >= per_thread then
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    io.write(string.format('{"n": %d, "non2xx": %d, "p50_ms": %.3f, "p90_ms": %.3f, "timeouts": %d}\n',
        summary.requests, summary.errors.status, latency:percentile(50) / 1000.0,
        latency:percentile(90) / 1000.0, summary.errors.timeout))
end
