-- SPDX-License-Identifier: MIT
-- KEYS[1]=delayed, KEYS[2]=stream; ARGV[1]=most to move. Moves due actions (server
-- clock) back to the stream; atomic, so no action is moved twice. Returns
-- {moved, next due score or '', server time}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('XADD', KEYS[2], '*', 'a', member, 'w', '1')
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or '', tostring(now)}
