-- The push of one item into its flow, shared by schedule.lua and enqueue.lua (both
-- take schedule.lua's KEYS and ARGV; these read ARGV[6], ARGV[9..16]).

-- What the payloads hash keeps for a queued item: its meta with the queue time third
-- ('cost,deadline ms,queued at ms,cost texts...'), \30, its payload.
local function stored_item(now)
  local meta, queued_at = ARGV[11], string.format('%d', now)
  local second = string.find(meta, ',', (string.find(meta, ',', 1, true) or #meta) + 1, true)
  if second then
    meta = string.sub(meta, 1, second) .. queued_at .. string.sub(meta, second)
  else
    meta = meta .. ',' .. queued_at
  end
  return meta .. '\30' .. ARGV[12]
end

-- The flow's settings as the scheduler hash keeps them (field, value, ...).
local function flow_settings(flow)
  return {F_Q_WEIGHT .. flow, ARGV[10], F_Q_SPEC .. flow, ARGV[13], F_Q_OTHERS .. flow, ARGV[14],
          F_Q_TENANT_DIMS .. flow, ARGV[15], F_Q_APART .. flow, ARGV[16]}
end

-- The state's 'b': how many items wait in ready flows (> 0: admissions queue), and
-- with wake_on (nil: left as it is) its 'w': what saturated the group in the last pass
-- (a dimension's state field, 'lease' or 'pause'; '' for nothing). settle.lua wakes a
-- dispatcher only for a refund to that dimension (or a freed lease, or a higher
-- rate), the one change that can bring the next pass forward; without 'w' it wakes
-- for every refund.
local function mark_queued(state_key, ready_n, ttl, wake_on)
  local added = wake_on and rcall('HSET', state_key, F_QUEUED, ready_n, F_WAKE_ON, wake_on)
    or rcall('HSET', state_key, F_QUEUED, ready_n)
  if added > 0 and rcall('PTTL', state_key) < 0 then
    rcall('PEXPIRE', state_key, ttl)  -- the hash may be new: a field of it is
  end
end
