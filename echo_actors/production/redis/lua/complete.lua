-- SPDX-License-Identifier: MIT
-- KEYS[1]=stream, KEYS[2]=delayed, then result and completion-mark keys;
-- ARGV[1]=group, ARGV[2]=delete acked (0/1), ARGV[3]=result TTL (ms), ARGV[4]=dedup
-- window (ms), then sextuples (receipt or '', result key index or 0, result,
-- child delay or '' for none, child payload, completion-mark key index or 0).
-- Ends completed attempts in one step: acknowledges the entry, stores the
-- result, adds the ``next`` action (to the stream, or the sorted set when it
-- has a delay) and marks the id completed: a crash cannot separate them.
local now = nil
for i = 5, #ARGV, 6 do
  local r = ARGV[i]
  if r ~= '' then
    redis.call('XACK', KEYS[1], ARGV[1], r)
    if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], r) end
  end
  local rk = tonumber(ARGV[i + 1])
  if rk > 0 then
    redis.call('DEL', KEYS[rk])
    redis.call('RPUSH', KEYS[rk], ARGV[i + 2])
    redis.call('PEXPIRE', KEYS[rk], ARGV[3])
  end
  local d = ARGV[i + 3]
  if d ~= '' then
    if tonumber(d) > 0 then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) + tonumber(t[2]) / 1000000
      end
      redis.call('ZADD', KEYS[2], now + tonumber(d), ARGV[i + 4])
    else
      redis.call('XADD', KEYS[1], '*', 'a', ARGV[i + 4])
    end
  end
  local dk = tonumber(ARGV[i + 5])
  if dk > 0 then redis.call('SET', KEYS[dk], '1', 'PX', ARGV[4]) end
end
return (#ARGV - 4) / 6
