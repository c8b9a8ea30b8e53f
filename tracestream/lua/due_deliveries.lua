-- KEYS: retry set, outbox. ARGV: now. Moves due retries back to the outbox.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local item = cjson.decode(member)
  redis.call('XADD', KEYS[2], '*', 'target', item.target, 'payload', item.payload, 'attempt', item.attempt)
end
return #due
