-- wrk script: POST /v1/deposits with a JSON body, for `benches/wrk.sh`.
--
--   wrk -t2 -c64 -d30s --latency -s benches/deposits.lua http://127.0.0.1:8080
--
-- Each request deposits 1.00 USD to an account drawn uniformly from
-- 1..ACCOUNTS (environment variable BENCH_ACCOUNTS, default 100000) and, unless
-- BENCH_KEYS=0, carries an idempotency key unique to the request (run nonce,
-- wrk thread, counter), so no request is a replay of another and the
-- server stores one key per deposit as a real client's retries need.
-- With BURNLEDGER_API_TOKEN set, requests send it as a bearer token.
--
-- No `response()` hook: defining one makes wrk parse every answer's body, a
-- client cost on the same 2 cores as the server. wrk itself counts answers
-- other than 2xx/3xx ("Non-2xx or 3xx responses") and `wrk.sh` fails the
-- run on any.

local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "100000")
local keyed = os.getenv("BENCH_KEYS") ~= "0"
local token = os.getenv("BURNLEDGER_API_TOKEN")

local next_thread = 1

-- Runs in the main Lua state, once per wrk thread, before they start.
function setup(thread)
   thread:set("thread_id", next_thread)
   next_thread = next_thread + 1
end

-- The rest runs in each thread's own Lua state.
local counter = 0
local nonce = nil

function init(args)
   -- Seeds differ per thread, and per run for the key nonce.
   math.randomseed(os.time() * 1000 + thread_id)
   nonce = string.format("%x-%d", os.time(), math.random(1, 1000000000))
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   if token ~= nil and token ~= "" then
      wrk.headers["Authorization"] = "Bearer " .. token
   end
end

function request()
   counter = counter + 1
   local account = math.random(1, accounts)
   local body
   if keyed then
      body = string.format(
         '{"account":%d,"currency":"USD","amount":"1.00","idempotency_key":"wrk-%s-%d-%d"}',
         account, nonce, thread_id, counter)
   else
      body = string.format('{"account":%d,"currency":"USD","amount":"1.00"}', account)
   end
   return wrk.format(nil, "/v1/deposits", nil, body)
end
