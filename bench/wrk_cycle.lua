-- wrk script for bench/http.py: every request takes the next item of a file, one item per line,
-- so that no two requests of a run carry the same CSR (or read the same id, in turn).
--
--   wrk -t T -c C -d D --timeout 10s -s bench/wrk_cycle.lua URL -- FILE MODE OFFSET T
--
-- FILE   one item a line: a JSON string literal holding a CSR (MODE post) or a path (MODE get)
-- MODE   post: POST URL's path with body BENCH_PREFIX .. item .. BENCH_SUFFIX (environment)
--        get:  GET the item (a path with its query string)
-- OFFSET where in FILE this run starts (so that successive runs use CSRs no earlier run used)
-- BENCH_TOKEN (environment), if set, is sent as "Authorization: Bearer ..."
--
-- Thread t of T takes items OFFSET + t, OFFSET + t + T, ... At the end each thread's count of
-- requests and the summary (requests, errors, latency percentiles in microseconds) are printed
-- as one JSON line starting with "WRK_JSON ".

-- BENCH_DELAY_MS (environment), if set, paces each connection: after every answer it waits a random
-- 0 .. 2 x BENCH_DELAY_MS ms (mean BENCH_DELAY_MS) before its next request, so that C connections offer
-- about C / (BENCH_DELAY_MS / 1000) requests a second, spread out rather than in waves.
local pace_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
if pace_ms > 0 then
  function delay()
    return math.random(0, 2 * pace_ms)
  end
end

local thread_count = 0
local threads = {}

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  items = {}
  for line in io.lines(args[1]) do
    items[#items + 1] = line
  end
  mode = args[2]
  offset = tonumber(args[3] or "0")
  nthreads = tonumber(args[4] or "1")
  item_count = #items
  math.randomseed(os.time() * 1000 + tid)
  next_index = offset + tid
  sent = 0
  prefix = os.getenv("BENCH_PREFIX") or ""
  suffix = os.getenv("BENCH_SUFFIX") or ""
  headers = {}
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  if mode == "post" then
    headers["Content-Type"] = "application/json"
  end
  method_path = wrk.path
end

function request()
  local item = items[(next_index % #items) + 1]
  next_index = next_index + nthreads
  sent = sent + 1
  if mode == "post" then
    return wrk.format("POST", method_path, headers, prefix .. item .. suffix)
  end
  return wrk.format("GET", item, headers)
end

function done(summary, latency, requests)
  local sent_total = 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + (thread:get("sent") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "sent": %d, "items": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p95": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes, sent_total, threads[1]:get("item_count") or 0,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
