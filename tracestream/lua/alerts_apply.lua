-- A rule's state change, as a compare-and-set on its change number, with its notification queued
-- in the same step: of several runners deciding the same change one wins, and it is queued once.
-- KEYS: state, outbox, history. ARGV: expected seq, history length, the notification JSON ('' for
-- a silent change), number of field pairs, the pairs, the targets.
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq ~= tonumber(ARGV[1]) then return 0 end
local payload = ARGV[3]
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'seq', seq + 1)
if payload ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'payload', payload)
  for j = i, #ARGV do
    redis.call('XADD', KEYS[2], '*', 'target', ARGV[j], 'payload', payload, 'attempt', '1')
  end
end
return 1
