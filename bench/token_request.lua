-- wrk script: client credentials token requests, each with a unique X-Request-ID.
--
-- Configured through the environment (set by bench/run.py; secrets never on a
-- command line):
--   BENCH_METHOD      POST (default) or GET (a GET sends no body, no Content-Type)
--   BENCH_PATH        endpoint path, e.g. /oauth/token
--   BENCH_BODY        form body, e.g. grant_type=client_credentials&scope=read
--   BENCH_AUTHS       Authorization header values ("Basic ..."), separated by ";"
--   BENCH_AUTHS_FILE  or a file of them, one per line (a fleet of 100,000 machines does
--                     not fit in an environment variable); each thread then walks its
--                     own share of the lines once, in order (thread t of n takes lines
--                     t, t+n, t+2n, ...), so no machine is asked for twice in a point
--                     unless the file runs out (then it starts over; "wrapped" counts it)
--   BENCH_RID_PREFIX  prefix of every X-Request-ID of this run point ([A-Za-z0-9-])
--   BENCH_OUT         output path stem: writes <stem>.ids and <stem>.json in done()
--   BENCH_BODIES      optional file of single-use bodies, one per line (private_key_jwt
--                     assertions, each with its own jti): thread i of BENCH_THREADS sends
--                     lines i, i + n, ... instead of BENCH_BODY
--
-- response() keeps the X-Request-ID echoed by every 2xx response, so the
-- harness can compare what the load tool received with the audit trail.
-- Threads are separate Lua states: done() collects from each through thread:get.

local method = os.getenv("BENCH_METHOD") or "POST"
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY") or ""
local prefix = os.getenv("BENCH_RID_PREFIX") or "bench-"
local out = os.getenv("BENCH_OUT")
local auths = {}
for value in string.gmatch(os.getenv("BENCH_AUTHS") or "", "[^;]+") do
  auths[#auths + 1] = value
end

local auths_file = os.getenv("BENCH_AUTHS_FILE")

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end

function init(args)
  sent = 0
  ok = 0
  wrapped = 0
  ids = {}
  statuses = {}
  local n = tonumber(os.getenv("BENCH_THREADS") or "1")
  if auths_file then
    -- This thread's share of the fleet, read once.
    local line_no = 0
    auths = {}
    for line in io.lines(auths_file) do
      line_no = line_no + 1
      if (line_no - tid) % n == 0 and #line > 0 then
        auths[#auths + 1] = line
      end
    end
  end
  bodies = {}
  local pool = os.getenv("BENCH_BODIES")
  if pool then
    -- This thread's share of the single-use bodies, read once.
    local index = 0
    for line in io.lines(pool) do
      if line ~= "" then
        if index % n == tid - 1 then
          bodies[#bodies + 1] = line
        end
        index = index + 1
      end
    end
  end
end

function request()
  sent = sent + 1
  local headers = {
    ["X-Request-ID"] = prefix .. tid .. "-" .. sent,
  }
  if method == "POST" then
    headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  if #auths > 0 then
    if auths_file then
      -- Each machine of this thread's share once, in order.
      if sent > #auths and (sent - 1) % #auths == 0 then
        wrapped = wrapped + 1
      end
      headers["Authorization"] = auths[(sent - 1) % #auths + 1]
    else
      -- Spread the load over every registered machine.
      headers["Authorization"] = auths[(sent + tid) % #auths + 1]
    end
  end
  if method ~= "POST" then
    return wrk.format(method, path, headers)
  end
  local sent_body = body
  if #bodies > 0 then
    -- Each body once; past the end of the pool the first ones come back (and are refused).
    sent_body = bodies[(sent - 1) % #bodies + 1]
  end
  return wrk.format("POST", path, headers, sent_body)
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
  local total_ok, total_sent, total_wrapped, max_sent = 0, 0, 0, 0
  local all_statuses = {}
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_sent = total_sent + thread:get("sent")
    total_wrapped = total_wrapped + thread:get("wrapped")
    max_sent = math.max(max_sent, thread:get("sent"))
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
    '{"duration_us": %d, "requests": %d, "bytes": %d, "ok": %d, "sent": %d, "wrapped": %d, "max_thread_sent": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, '
      .. '"non2xx_statuses": {%s}}\n',
    summary.duration, summary.requests, summary.bytes, total_ok, total_sent, total_wrapped, max_sent,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(parts, ", ")))
  j:close()
end
