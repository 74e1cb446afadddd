-- SPDX-License-Identifier: MIT
-- KEYS[1]=stream; ARGV[1]=group, ARGV[2]=consumer. Leaves the group only with
-- nothing pending (deleting a consumer would drop its pending entries).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return -1
