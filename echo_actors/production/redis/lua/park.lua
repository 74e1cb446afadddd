-- SPDX-License-Identifier: MIT
-- KEYS[1]=delayed, KEYS[2]=stream; ARGV[1]=group, ARGV[2]=delete acked (0/1),
-- then triples (delay seconds, payload, receipt or ''). Parks actions until due
-- (server clock) and acknowledges the entries they came from, atomically.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 3, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i]), ARGV[i + 1])
  local r = ARGV[i + 2]
  if r ~= '' then
    redis.call('XACK', KEYS[2], ARGV[1], r)
    if ARGV[2] == '1' then redis.call('XDEL', KEYS[2], r) end
  end
end
return (#ARGV - 2) / 3
