-- wrk script: every request carries another x-api-key, cycling over BENCH_KEYS distinct keys
-- (default 10,000), so the filter tracks that many clients in its shared-data store.
-- The requests are formatted once in init(), so wrk's own per-request cost stays flat.
local n = tonumber(os.getenv("BENCH_KEYS") or "10000")
local path = os.getenv("BENCH_PATH") or "/api/bench"
local requests = {}
local i = 0

function init(args)
  for k = 1, n do
    requests[k] = wrk.format("GET", path, { ["x-api-key"] = "client-" .. k })
  end
  -- Threads start at different keys, so they do not walk the keys in lockstep.
  i = math.random(n) - 1
end

function request()
  i = i % n + 1
  return requests[i]
end
