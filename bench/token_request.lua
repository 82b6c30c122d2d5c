-- wrk script: client credentials token requests, each with a unique X-Request-ID.
--
-- Configured through the environment (set by bench/run.py; secrets never on a
-- command line):
--   BENCH_PATH        token endpoint path, e.g. /oauth/token
--   BENCH_BODY        form body, e.g. grant_type=client_credentials&scope=read
--   BENCH_AUTHS       Authorization header values ("Basic ..."), separated by ";"
--   BENCH_RID_PREFIX  prefix of every X-Request-ID of this run point ([A-Za-z0-9-])
--   BENCH_OUT         output path stem: writes <stem>.ids and <stem>.json in done()
--   BENCH_BODIES      optional file of request bodies, one per line, each sent once
--                     (credentials that work once: federated assertions); thread t of
--                     BENCH_THREADS takes lines t, t + BENCH_THREADS, ...
--
-- response() keeps the X-Request-ID echoed by every 2xx response, so the
-- harness can compare what the load tool received with the audit trail.
-- Threads are separate Lua states: done() collects from each through thread:get.

local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY") or ""
local prefix = os.getenv("BENCH_RID_PREFIX") or "bench-"
local out = os.getenv("BENCH_OUT")
local auths = {}
for value in string.gmatch(os.getenv("BENCH_AUTHS") or "", "[^;]+") do
  auths[#auths + 1] = value
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end

local bodies_file = os.getenv("BENCH_BODIES") or ""
local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")

function init(args)
  bodies = {}
  if bodies_file ~= "" then
    local line_number = 0
    for line in io.lines(bodies_file) do
      if line_number % thread_count == tid - 1 then
        bodies[#bodies + 1] = line
      end
      line_number = line_number + 1
    end
  end
  sent = 0
  ok = 0
  ids = {}
  statuses = {}
end

function request()
  sent = sent + 1
  local headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Request-ID"] = prefix .. tid .. "-" .. sent,
  }
  if #auths > 0 then
    -- Spread the load over every registered machine.
    headers["Authorization"] = auths[(sent + tid) % #auths + 1]
  end
  local this_body = body
  if #bodies > 0 then
    -- Past the end the bodies repeat: those requests are refused (counted as non-2xx).
    this_body = bodies[(sent - 1) % #bodies + 1]
  end
  return wrk.format("POST", path, headers, this_body)
end

local function request_id(headers)
  local rid = headers["X-Request-ID"] or headers["x-request-id"] or headers["X-Request-Id"]
  if rid then
    return rid
  end
  for name, value in pairs(headers) do
    if string.lower(name) == "x-request-id" then
      return value
    end
  end
  return nil
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    local rid = request_id(headers)
    if rid then
      ids[#ids + 1] = rid
    end
  else
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end

function done(summary, latency, requests)
  if not out then
    return
  end
  local f = assert(io.open(out .. ".ids", "w"))
  local total_ok, total_sent = 0, 0
  local all_statuses = {}
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_sent = total_sent + thread:get("sent")
    for _, rid in ipairs(thread:get("ids")) do
      f:write(rid, "\n")
    end
    for code, count in pairs(thread:get("statuses")) do
      all_statuses[code] = (all_statuses[code] or 0) + count
    end
  end
  f:close()
  local parts = {}
  for code, count in pairs(all_statuses) do
    parts[#parts + 1] = string.format('"%s": %d', code, count)
  end
  local e = summary.errors
  local j = assert(io.open(out .. ".json", "w"))
  j:write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, "ok": %d, "sent": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, '
      .. '"non2xx_statuses": {%s}}\n',
    summary.duration, summary.requests, summary.bytes, total_ok, total_sent,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(parts, ", ")))
  j:close()
end
