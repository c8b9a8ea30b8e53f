-- Entries retention removed before the group read them: Redis 7 counts the entries a stream was ever
-- given (entries-added) and those the group read (entries-read), so entries-added - length - entries-read
-- are gone unread. Counted into KEYS[2] once, with the read count moved past them so the group's lag
-- counts only what is left: atomic, so forwarders sharing the group never count a gap twice. 0 where
-- Redis cannot tell (entries deleted by XDEL among those kept, a group that has read nothing yet), -1
-- where it keeps no such counts (before 7.0). forwarder.trimmed_unread reads the same from outside.
local function field(reply, name)
  for i = 1, #reply, 2 do
    if reply[i] == name then return reply[i + 1] end
  end
end
local function older(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if a_ms ~= b_ms then return tonumber(a_ms) < tonumber(b_ms) end
  return #a_seq < #b_seq or (#a_seq == #b_seq and a_seq < b_seq)
end
local stream = redis.pcall('XINFO', 'STREAM', KEYS[1])
if stream.err then return 0 end
local added = field(stream, 'entries-added')
if not added then return -1 end
local first = field(stream, 'first-entry')
if first and not older(field(stream, 'max-deleted-entry-id'), first[1]) then return 0 end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups.err then return 0 end
for _, group in ipairs(groups) do
  if field(group, 'name') == ARGV[1] then
    local read, gone = field(group, 'entries-read'), added - field(stream, 'length')
    if not read or read >= gone then return 0 end
    redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], field(group, 'last-delivered-id'), 'ENTRIESREAD', gone)
    redis.call('HSETNX', KEYS[2], 'since_ms', ARGV[2])
    redis.call('HINCRBY', KEYS[2], 'trimmed', gone - read)
    return gone - read
  end
end
return 0
