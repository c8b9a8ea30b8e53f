-- A batch of records counted and acknowledged in one step: all or nothing, so a runner killed at
-- any point has counted each record once or not at all (it is then read again).
-- KEYS: the records stream, then every key the batch adds to.
-- ARGV: the consumer group, the number of record ids, the ids; then for each key after the
-- first: its kind, a number, the number of values, the values. Kinds:
--   n  INCRBYFLOAT the one value, then PEXPIRE by the number (0: never expires)
--   h  HINCRBYFLOAT field, value pairs, then PEXPIRE by the number
--   l  LPUSH the values, then keep the first <number> items
-- Counts are sums of sample weights (1/ratio: 10, 4, or 3.33... at 0.3), added once per key and
-- batch. INCRBYFLOAT keeps a long double as text: whole weights sum exactly, others are off in the
-- 16th digit (evaluation rounds to 6 decimals), and an integer count written before weights were
-- counted reads as the same number, as it would not in fixed point.
local ids = tonumber(ARGV[2])
local last = 2 + ids
for first = 3, last, 1000 do -- unpack takes a bounded number of values at once
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, first, math.min(first + 999, last)))
end
local at = last + 1
for k = 2, #KEYS do
  local key, kind, number, count = KEYS[k], ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  at = at + 3
  if kind == 'n' then
    redis.call('INCRBYFLOAT', key, ARGV[at])
  elseif kind == 'h' then
    for j = at, at + count - 1, 2 do
      redis.call('HINCRBYFLOAT', key, ARGV[j], ARGV[j + 1])
    end
  else
    redis.call('LPUSH', key, unpack(ARGV, at, at + count - 1))
    redis.call('LTRIM', key, 0, number - 1)
  end
  if kind ~= 'l' and number > 0 then
    redis.call('PEXPIRE', key, number)
  end
  at = at + count
end
return ids
