--[[ claim: a worker received a released task; may this copy run?

  The dispatcher keeps a released entry in `releasing` until a worker claims it, and
  releases an unclaimed one again after a while (release.lua): the Redis broker hands
  a message over before the worker records it as unacknowledged, so a worker killed
  in between loses it. Each release carries its own token. The first copy to arrive
  claims the entry and leaves a marker naming its token; the broker redelivering that
  same message (its worker died while running it) runs again, while another release's
  copy finds the entry taken and does not.

  KEYS[1]  releasing zset of the group
  KEYS[2]  parked zset of the group
  KEYS[3]  parked payloads hash of the group
  KEYS[4]  claim marker of this entry (string: the claiming release's token)
  ARGV[1]  entry id
  ARGV[2]  this copy's release token
  ARGV[3]  marker ttl ms (longer than the broker's visibility timeout)
  Returns 1: run this copy; 0: drop it
]]

local held = redis.call('GET', KEYS[4])
if held then
  if held == ARGV[2] then return 1 end
  return 0
end
local taken = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
if taken == 0 then return 0 end  -- claimed and finished already
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[3])
return 1
