-- SPDX-License-Identifier: MIT
-- KEYS[1]=heartbeats (sorted set), KEYS[2]=workers (hash); ARGV[1]=consumer,
-- ARGV[2]=its description, or '' when it leaves. Stamps with the server's clock.
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return redis.call('HDEL', KEYS[2], ARGV[1])
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])
return redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
