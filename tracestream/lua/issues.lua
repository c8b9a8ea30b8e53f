-- Error issues, newest last seen first: the fingerprints in KEYS[1] (scored by last seen, ms)
-- from ARGV[2] up, each issue's hash under ARGV[1] .. fingerprint. ARGV[3] keeps only issues
-- that hit that service (its `s:<service>` field), ARGV[4] only that state (0 open, 1
-- resolved, 2 ignored); "" keeps any. At most ARGV[5] issues; with ARGV[6] set, only the
-- fingerprints it names, one a line. Returns {fingerprint, {field, value, ...}, ...}. Fingerprints whose hash expired
-- and keys of another type (another writer's) are skipped. Reads only: a read-only user runs
-- it with ZRANGE, HMGET and HGETALL.
--#include reads
local prefix, since, service, state = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
local out = {}
local function take(fp)
  local key = prefix .. fp
  local found = read('HMGET', key, 'state', 's:' .. service)
  if not found or not found[1] then return end
  if state ~= '' and found[1] ~= state then return end
  if service ~= '' and not found[2] then return end
  out[#out + 1] = fp
  out[#out + 1] = read('HGETALL', key)
end
if ARGV[6] ~= '' then
  for fp in string.gmatch(ARGV[6], '[^\n]+') do take(fp) end
  return out
end
local page, offset = 500, 0
while #out < 2 * limit do
  local fps = read('ZRANGE', KEYS[1], '+inf', since, 'BYSCORE', 'REV', 'LIMIT', offset, page)
  if not fps then break end
  for _, fp in ipairs(fps) do
    take(fp)
    if #out >= 2 * limit then break end
  end
  if #fps < page then break end
  offset = offset + page
end
return out
