-- The index and every entry it points at, in one round trip. Index members name entries of
-- the two streams derived from the index's own stream (ARGV), as the exporters write them;
-- another writer's members (a bad id, an unknown kind) and a key of another type are skipped.
-- A log entry the log stream no longer holds (trimmed by count) is read from its copy in
-- `<stream>:errors` (ARGV[5]) when it was an error.
--#include reads
local out = {}
for _, member in ipairs(read('LRANGE', KEYS[1], 0, -1) or {}) do
  local kind, id = string.sub(member, 1, 1), string.sub(member, 2)
  local stream = (kind == ARGV[3] and ARGV[1]) or (kind == ARGV[4] and ARGV[2])
  local found = {}
  if stream and is_stream_id(id) then
    found = read('XRANGE', stream, id, id) or {}
    if #found == 0 and stream == ARGV[1] and ARGV[5] then
      found = read('XRANGE', ARGV[5], id, id) or {}
    end
  end
  if #found > 0 then
    out[#out + 1] = kind
    out[#out + 1] = found[1][1]
    out[#out + 1] = found[1][2]
  end
end
return out
