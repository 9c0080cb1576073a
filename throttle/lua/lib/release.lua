-- Where a released item goes (schedule.lua only): into the pass's reply for the
-- caller to publish, or, a ready-made broker message (ARGV[7] names the broker's
-- dbs), straight onto its queue. Included after schedule.lua's locals; uses now,
-- pushed, sched_key, payloads_key, releasing_key, out and released (the reply and
-- its count), touch and split (lib/lanes.lua).
-- ARGV[7], when the broker is a Redis on this server: 'broker db,own db[,unacked hash,
-- unacked index]'. A payload that is a ready-made broker message (workers/message.py:
-- ESC, queue key, TAB, delivery tag, TAB, the end of its unacknowledged record, LF, the
-- envelope up to its open release header, LF, the rest) is pushed onto its queue by the
-- pass (SELECT, LPUSH) with its release written into the header as 'entry,slot_us,
-- wait_us,lease,reason,record' (a leading '+' when recorded as unacknowledged); it
-- needs no claim and is not in the releasing zset. Given kombu's unacknowledged hash
-- and index, the message is recorded there as kombu records one a worker pops (that
-- worker overwrites it; if it dies first, kombu restores it after its visibility
-- timeout).

-- Messages to push onto the broker's queues (ARGV[7]): {key, text, unacked record}
-- each; the ids of the payloads that go. Both are written once, after the pass.
local broker = split(ARGV[7], ',')
local dbs = ARGV[7]
local outbox, gone = {}, {}
-- The end of a ready-made envelope (workers/message.py puts these properties last):
-- kombu's unacknowledged record needs its exchange, routing key and delivery tag
-- (read here only for a message stored by an older version without them).
local ENVELOPE_END = '"delivery_info": {"exchange": ("[^"]*"), "routing_key": ("[^"]*")}, ' ..
  '"priority": %d+, "body_encoding": "base64", "delivery_tag": "([^"]+)"}}$'
local function json_safe(text)
  if not string.find(text, '[%c"\\]') then return text end
  return (string.gsub(text, '[%c"\\]', function(c) return string.format('\\u%04x', string.byte(c)) end))
end

-- An item leaves the queue: its payload goes to the caller, or onto the broker.
local function emit(h, slot_us, lease, record, reason)
  local id, payload = h.id, h.payload
  local mine = id == pushed
  if h.legacy then rcall('HDEL', sched_key, 'm:' .. id) end  -- queued by an older version
  if mine then
    gone[#gone + 1] = id
  elseif dbs ~= '' and string.byte(payload, 1) == 27 then
    -- a ready-made message: publish it with its release written in, and record it as
    -- kombu records a message a worker takes (the release says so with a leading '+':
    -- the worker that takes it then records nothing itself, workers/transport.py)
    local key_end = string.find(payload, '\n', 2, true)
    local head_end = string.find(payload, '\n', key_end + 1, true)
    local tail = string.sub(payload, head_end + 1)
    local key, tag, suffix  -- the first line: key TAB tag TAB suffix (plain finds)
    local tab = string.find(payload, '\t', 2, true)
    local tab2 = tab and tab < key_end and string.find(payload, '\t', tab + 1, true)
    if tab2 and tab2 < key_end then
      key, tag, suffix = string.sub(payload, 2, tab - 1), string.sub(payload, tab + 1, tab2 - 1),
        string.sub(payload, tab2 + 1, key_end - 1)
    else  -- stored by an older version: the record's parts are in the envelope
      key = string.sub(payload, 2, key_end - 1)
      local exchange, routing_key
      exchange, routing_key, tag = string.match(string.sub(tail, -400), ENVELOPE_END)
      if tag then suffix = ', ' .. exchange .. ', ' .. routing_key .. ']' end
    end
    if not broker[4] then tag = nil end
    -- (only the id can hold what JSON escapes: the rest is numbers, words and commas)
    local release = string.format('%s%s,%d,%d,%d,%s,%s', tag and '+' or '', json_safe(id), slot_us,
                                  math.max(0, slot_us - math.floor(now * 1000)), lease, reason, record)
    local text = string.sub(payload, key_end + 1, head_end - 1) .. release .. tail
    local unacked = tag and {tag, '[' .. text .. suffix}
    outbox[#outbox + 1] = {key, text, unacked}
    gone[#gone + 1] = id
    payload = '\27'
  else
    -- published by the caller, claimed by the worker that receives it: the payload
    -- stays (without its meta) until then, for a release again if it goes stale
    rcall('HSET', payloads_key, id, payload)
    if rcall('ZADD', releasing_key, now, id) == 1 then touch(releasing_key) end
  end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, payload, slot_us, lease
  out[n + 5], out[n + 6], out[n + 7] = record, reason, mine and 1 or 0
  released = released + 1
end

-- After the pass: the released payloads leave the hash, and the messages go onto the
-- broker's queues: one LPUSH per queue (in release order), one HSET and one ZADD for
-- kombu's records.
local function publish()
  if #gone > 0 then rcall('HDEL', payloads_key, unpack(gone)) end
  if #outbox == 0 then return end
  local unix_s = string.format('%.3f', (now + 1700000000000) / 1000)  -- kombu's time()
  local pushes, queues, records, index = {}, {}, {}, {}
  for _, message in ipairs(outbox) do
    local texts = pushes[message[1]]
    if not texts then
      texts = {}
      pushes[message[1]] = texts
      queues[#queues + 1] = message[1]
    end
    texts[#texts + 1] = message[2]
    local unacked = message[3]
    if unacked then
      records[#records + 1], records[#records + 2] = unacked[1], unacked[2]
      index[#index + 1], index[#index + 2] = unix_s, unacked[1]
    end
  end
  rcall('SELECT', tonumber(broker[1]))
  for _, key in ipairs(queues) do rcall('LPUSH', key, unpack(pushes[key])) end
  if #records > 0 then
    rcall('HSET', broker[3], unpack(records))
    rcall('ZADD', broker[4], unpack(index))
  end
  rcall('SELECT', tonumber(broker[2]))
end
