-- wrk script for bench/webhooks.sh: POST one signed payload with a unique
-- X-GitHub-Delivery per request (the body, and so the signature, stay the same).
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "pull_request"
  wrk.headers["X-Hub-Signature-256"] = os.getenv("SIGNATURE")
  accepted = 0
end

function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = string.format("bench-%d-%d", tid, counter)
  return wrk.format()
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + t:get("accepted")
  end
  io.write(string.format("accepted(202): %d\n", total))
  io.write(string.format("p99_ms: %.3f\n", latency:percentile(99) / 1000))
  io.write(string.format("p50_ms: %.3f\n", latency:percentile(50) / 1000))
  io.write(string.format("rps: %.0f\n", summary.requests / (summary.duration / 1e6)))
  io.write(string.format("errors: %d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
