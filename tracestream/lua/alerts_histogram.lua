-- KEYS: a latency rule's duration histograms, one per bucket of its window.
-- Returns their sum as bin, count, bin, count...: a few hundred numbers, however many records.
-- Counts are sums of sample weights, returned as text: Redis would cut a Lua number to an integer.
local sum = {}
for _, key in ipairs(KEYS) do
  local found = redis.call('HGETALL', key)
  for i = 1, #found, 2 do
    sum[found[i]] = (sum[found[i]] or 0) + tonumber(found[i + 1])
  end
end
local out = {}
for bin, count in pairs(sum) do
  out[#out + 1] = bin
  out[#out + 1] = string.format('%.17g', count)
end
return out
