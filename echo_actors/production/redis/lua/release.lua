-- SPDX-License-Identifier: MIT
-- KEYS[1]=stream; ARGV[1]=group, ARGV[2]=consumer, ARGV[3]=delete acked (0/1),
-- then triples (receipt or '', payload, waited 0/1). Gives entries back: each
-- one still pending on this consumer is acknowledged and added anew at the end.
local n = 0
for i = 4, #ARGV, 3 do
  local r = ARGV[i]
  local owned = true
  if r ~= '' then
    owned = #redis.call('XPENDING', KEYS[1], ARGV[1], r, r, 1, ARGV[2]) > 0
    if owned then
      redis.call('XACK', KEYS[1], ARGV[1], r)
      if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], r) end
    end
  end
  if owned then
    if ARGV[i + 2] == '1' then
      redis.call('XADD', KEYS[1], '*', 'a', ARGV[i + 1], 'w', '1')
    else
      redis.call('XADD', KEYS[1], '*', 'a', ARGV[i + 1])
    end
    n = n + 1
  end
end
return n
