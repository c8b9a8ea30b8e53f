-- KEYS: the stalled mark of a rule's notifications to a target, their waiting list, the outbox.
-- The notification the others waited behind has its outcome: the mark goes, and the next one
-- waiting goes to the outbox, released, so that it does not queue behind those still waiting.
redis.call('DEL', KEYS[1])
local item = redis.call('LPOP', KEYS[2])
if not item then return 0 end
local waiting = cjson.decode(item)
redis.call('XADD', KEYS[3], '*', 'target', waiting.target, 'payload', waiting.payload, 'attempt', '1',
  'released', '1')
return 1
