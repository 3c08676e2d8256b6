-- wrk script for benchmarks/webhook_load.py: POSTs pre-signed Twilio webhook bodies.
-- Arguments: <file of "signature<TAB>urlencoded body" lines> <path> <number of wrk threads>.
-- Thread t sends lines t, t+T, t+2T, ... so every request has its own MessageSid; done()
-- prints one JSON line with the counts and latency percentiles (microseconds).

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[3])
  target = args[2]
  items, idx, wrapped = {}, 0, 0
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local sig, body = line:match("^([^\t]*)\t(.*)$")
      table.insert(items, {sig, body})
    end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  if idx > #items then wrapped = 1 end
  local item = items[((idx - 1) % #items) + 1]
  return wrk.format("POST", target, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Twilio-Signature"] = item[1],
  }, item[2])
end

function done(summary, latency, requests)
  local wraps = 0
  for _, t in ipairs(threads) do wraps = wraps + (t:get("wrapped") or 0) end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_timeout": %d, "non_2xx": %d, "wrapped_threads": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, e.status,
    wraps))
end
