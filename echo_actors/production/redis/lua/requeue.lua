-- SPDX-License-Identifier: MIT
-- KEYS[1]=dead, KEYS[2]=stream; ARGV pairs (dead entry id, payload). Requeues
-- dead letters; the XDEL check means two requeuers never both requeue one.
-- Returns the dead entry ids requeued.
local done = {}
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'a', ARGV[i + 1], 'w', '1')
    done[#done + 1] = ARGV[i]
  end
end
return done
