-- SPDX-License-Identifier: MIT
-- KEYS[1]=stream; ARGV[1]=group, ARGV[2]=consumer, then receipts. The heartbeat:
-- resets the idle time of entries this consumer still owns, so that running
-- actions are not claimed by others.
local n = 0
for i = 3, #ARGV do
  local r = ARGV[i]
  if #redis.call('XPENDING', KEYS[1], ARGV[1], r, r, 1, ARGV[2]) > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, r, 'JUSTID')
    n = n + 1
  end
end
return n
