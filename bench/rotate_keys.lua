-- wrk script: every request carries another x-api-key, cycling over BENCH_KEYS distinct keys
-- (default 10,000: "client-1" ... "client-10000"), so the filter tracks that many clients in its
-- shared-data store.
--
-- Each request is built per call from a counter: the bytes wrk.format gives, cut around the key,
-- joined with the key's number (one concatenation). So the cost per request in wrk is the same
-- whatever BENCH_KEYS is; formatting every request up front in init() took ~6 s and 230 MB per
-- wrk run at 1,000,000 keys.
--
-- BENCH_START: the position to start at (requests sent before it, in this cycle order; the key
-- is position % BENCH_KEYS + 1), so that successive wrk runs continue one walk over the keys;
-- without it, 0. Thread k (from 1) starts (k - 1) x 0.618 x BENCH_KEYS further on, so that threads
-- do not walk the keys in lockstep. done() prints the position each thread reached, in thread
-- order, as "bench_keys next <position>" (the first thread's is where the next run starts).
local n = tonumber(os.getenv("BENCH_KEYS") or "10000")
local path = os.getenv("BENCH_PATH") or "/api/bench"
local start = os.getenv("BENCH_START")
local marker = "@BENCH_KEY@"
local head, tail
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  local template = wrk.format("GET", path, { ["x-api-key"] = "client-" .. marker })
  local at = template:find(marker, 1, true)
  head = template:sub(1, at - 1)
  tail = template:sub(at + #marker)
  local id = wrk.thread:get("thread_id") or 1
  pos = tonumber(start or "0") + math.floor((id - 1) * 0.6180339887 * n)
end

function request()
  local k = pos % n + 1
  pos = pos + 1
  return head .. k .. tail
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    io.write(string.format("bench_keys next %d\n", thread:get("pos")))
  end
end
