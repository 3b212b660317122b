-- wrk script: POST /users/{USER_ID}/activity as that user (TOKEN), a view of PRODUCT_ID, with a
-- fresh Idempotency-Key per request when KEYED=1 (none otherwise). Measures what keys cost:
--   KEYED=0 wrk -t2 -c16 -d10s -s bench/wrk/keyed-activity.lua http://127.0.0.1:8080
--   KEYED=1 wrk -t2 -c16 -d10s -s bench/wrk/keyed-activity.lua http://127.0.0.1:8080
local user = os.getenv("USER_ID")
local token = os.getenv("TOKEN")
local product = os.getenv("PRODUCT_ID")
local keyed = os.getenv("KEYED") == "1"
local counter = 0

-- Each wrk thread has its own Lua state: number them so that their keys differ.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

request = function()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
  if keyed then
    headers["Idempotency-Key"] = string.format("%d-%d-%d", tid, counter, os.time())
  end
  return wrk.format("POST", "/users/" .. user .. "/activity", headers,
    '{"type":"view","product_id":"' .. product .. '"}')
end
