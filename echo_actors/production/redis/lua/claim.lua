-- SPDX-License-Identifier: MIT
-- KEYS[1]=the nonce's key; ARGV[1]=admission, ARGV[2]=time to keep it (ms). 1: recorded
-- now or already for this admission; 0: another admission holds it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
