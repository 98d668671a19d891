-- tests/bench/webhook.lua — wrk script: POSTs the pre-signed webhooks of $SB_BENCH_REQS (gen_webhooks.py),
-- lines $SB_BENCH_FIRST..$SB_BENCH_LAST in turn, each once per run as long as the slice lasts (then it wraps: the
-- caller compares wrk's request count with the slice, since a repeat is a duplicate and cheaper).
-- $SB_BENCH_PATH is the webhook path; $SB_BENCH_HOST the Host header the signature was computed with. A line of
-- three fields, "path<TAB>signature<TAB>body", carries its own path (webhooks of many channels in one file).
-- $SB_BENCH_DELAY_MS, when set, makes every connection pause that long between requests (a paced run).
local reqs, n, i = {}, 0, 0
local delay_ms = tonumber(os.getenv("SB_BENCH_DELAY_MS") or "")

function init(args)
    local path, host = os.getenv("SB_BENCH_PATH"), os.getenv("SB_BENCH_HOST")
    local first = tonumber(os.getenv("SB_BENCH_FIRST") or "1")
    local last = tonumber(os.getenv("SB_BENCH_LAST") or "1e12")
    local k = 0
    for line in io.lines(os.getenv("SB_BENCH_REQS")) do
        k = k + 1
        if k > last then
            break
        end
        if k >= first then
            local p, sig, body = line:match("^(/[^\t]*)\t([^\t]+)\t(.*)$")
            if not p then
                p = path
                sig, body = line:match("^([^\t]+)\t(.*)$")
            end
            n = n + 1
            reqs[n] = wrk.format("POST", p, {
                ["Host"] = host,
                ["Content-Type"] = "application/x-www-form-urlencoded",
                ["X-Twilio-Signature"] = sig,
            }, body)
        end
    end
end

function request()
    i = i + 1
    if i > n then
        i = 1
    end
    return reqs[i]
end

if delay_ms then
    function delay()
        return delay_ms
    end
end
