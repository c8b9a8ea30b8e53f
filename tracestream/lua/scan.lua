-- Walks the digest (one entry per written batch, a line per record) newest first. Whole
-- digest entries are skipped with one substring test when they cannot hold a match; only
-- the records whose lines pass severity, service and text are read from the log stream and
-- checked in full. Where the digest does not reach (it was evicted, deleted or not written), the
-- stream itself is read, every entry checked in full: slower, never blind. Returns {last id
-- looked at, entries looked at, 1 when the range ran out, id, fields, id, fields, ...}. Entries
-- are read by fixed position with a by-name fallback.
--#include reads
local high, low = ARGV[1], ARGV[2]
local budget = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local min_sev = tonumber(ARGV[5])
local needle = ARGV[6]
local text = ARGV[7]
local trace = ARGV[8]
local services, service_list = {}, {}
for name in string.gmatch(ARGV[9], '[^\n]+') do
  services[name] = true
  service_list[#service_list + 1] = name
end
local needles = {}
for n in string.gmatch(ARGV[10], '[^\n]+') do needles[#needles + 1] = n end
local P_SEV, P_BODY, P_SERVICE = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local P_TRACE, P_ATTR = tonumber(ARGV[14]), tonumber(ARGV[15])
local P_EXT, P_EXM = tonumber(ARGV[16]), tonumber(ARGV[17])
local byte_budget = tonumber(ARGV[18])
local bytes = 0
local function get(f, pos, name)
  if f[pos - 1] == name then return f[pos] end
  for j = 1, #f, 2 do if f[j] == name then return f[j + 1] end end
  return ''
end
local function matches(f)
  if min_sev > 0 and (tonumber(get(f, P_SEV, 'severity_number')) or 0) < min_sev then return false end
  if #service_list > 0 and not services[get(f, P_SERVICE, 'service')] then return false end
  if trace ~= '' and get(f, P_TRACE, 'trace_id') ~= trace then return false end
  if text ~= '' and not (string.find(get(f, P_BODY, 'body'), text, 1, true)
      or string.find(get(f, P_EXT, 'exception_type'), text, 1, true)
      or string.find(get(f, P_EXM, 'exception_message'), text, 1, true)) then
    return false
  end
  if #needles > 0 then
    local attributes = get(f, P_ATTR, 'attributes')
    for n = 1, #needles do
      if not string.find(attributes, needles[n], 1, true) then return false end
    end
  end
  return true
end
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local hms, hseq = math.huge, math.huge
if high ~= '+' then hms, hseq = parse(high) end
local lms, lseq = -1, -1
if low ~= '-' then lms, lseq = parse(low) end
-- false for a digest line's id that is not a stream id (another writer's line)
local function in_range(id)
  local ms, seq = parse(id)
  if not ms then return false end
  return (ms < hms or (ms == hms and seq <= hseq)) and (ms > lms or (ms == lms and seq >= lseq))
end
-- The id just below `id`, for an exclusive upper bound without Redis 6.2's '(' syntax; nil below
-- 0-0 (which only another writer's digest line names).
local function below(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if tonumber(seq) ~= 0 then return ms .. '-' .. string.format('%.0f', tonumber(seq) - 1) end
  if tonumber(ms) == 0 then return nil end
  return string.format('%.0f', tonumber(ms) - 1) .. '-18446744073709551615'
end
-- The id just above `id`, for an exclusive lower bound.
local function above(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq ~= '18446744073709551615' then return ms .. '-' .. string.format('%.0f', tonumber(seq) + 1) end
  return string.format('%.0f', tonumber(ms) + 1) .. '-0'
end
-- `a` is older than `b`; '+' is newer and '-' older than any id.
local function older(a, b)
  if b == '+' then return a ~= '+' end
  if a == '+' or b == '-' then return false end
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local function may_hold_a_match(lines)
  if needle ~= '' and not string.find(lines, needle, 1, true) then return false end
  if #service_list == 0 then return true end
  for _, name in ipairs(service_list) do
    if string.find(lines, '\n' .. name .. '\t', 1, true) then return true end
  end
  return false
end
local LINE = '\n([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\t([^\n]*)'
local out = {'', 0, 0}
local found = 0
-- The oldest id the call looked at (a digest entry's first, or a stream entry): below it is unread.
local reached
-- The budget counts digest lines; an entry read whole from the stream costs the script about as
-- much as this many lines (each of its fields becomes Lua data).
local ENTRY_COST = 25
local cost = 0
local function spent() return cost >= budget or bytes >= byte_budget end
-- Newest first within one digest entry; true once `limit` records were found.
local function scan(digest_entry)
  local f = digest_entry[2]
  local first, count, lines = get(f, 2, 'first'), tonumber(get(f, 4, 'n')) or 0, get(f, 6, 'd')
  out[2], cost = out[2] + count, cost + count
  bytes = bytes + #lines
  if may_hold_a_match(lines) then
    local candidates = {}
    local function consider(sev, id, rest)
      if id and (tonumber(sev) or 0) >= min_sev and (needle == '' or string.find(rest, needle, 1, true)) then
        candidates[#candidates + 1] = id
      end
    end
    if #service_list > 0 then
      -- jump from one line of a wanted service to the next instead of reading every line
      local starts = {}
      for _, name in ipairs(service_list) do
        local pos = string.find(lines, '\n' .. name .. '\t', 1, true)
        while pos do
          starts[#starts + 1] = pos
          pos = string.find(lines, '\n' .. name .. '\t', pos + 1, true)
        end
      end
      table.sort(starts)
      for _, pos in ipairs(starts) do
        local _, sev, id, rest = string.match(lines, '^' .. LINE, pos)
        consider(sev, id, rest)
      end
    else
      for _, sev, id, rest in string.gmatch(lines, LINE) do consider(sev, id, rest) end
    end
    for i = #candidates, 1, -1 do
      local id = candidates[i]
      if in_range(id) and is_stream_id(id) then
        local entry = (read('XRANGE', KEYS[1], id, id) or {})[1]
        cost = cost + ENTRY_COST  -- a filter the digest cannot tell (an attribute) reads every line's entry
        if entry and matches(entry[2]) then
          out[#out + 1] = id
          out[#out + 1] = entry[2]
          found = found + 1
        end
        if found >= limit or spent() then out[1] = id; return true end
      end
    end
  end
  reached = parse(first) and first or digest_entry[1]
  out[1] = parse(first) and first or below(digest_entry[1])
  return false
end
-- The log stream itself, from below what the call reached (or `high`) down to `bottom`, where no
-- digest entry covers it. True once `limit` records were found or the budget is spent, with out[1]
-- at the last entry looked at.
local STREAM_STEP = 128
local oldest  -- the stream's oldest id, read once: XREVRANGE from below it walks the whole stream
local function read_stream(bottom)
  if oldest == nil then
    local entry = (read('XRANGE', KEYS[1], '-', '+', 'COUNT', 1) or {})[1]
    oldest = entry and entry[1] or false
  end
  local top = high
  if reached then top = below(reached) end
  while oldest and top and not older(top, bottom) and not older(top, oldest) do
    local entries = read('XREVRANGE', KEYS[1], top, bottom, 'COUNT', STREAM_STEP) or {}
    for _, entry in ipairs(entries) do
      local f = entry[2]
      out[1], out[2], cost = entry[1], out[2] + 1, cost + ENTRY_COST
      for j = 1, #f do bytes = bytes + #f[j] end
      if matches(f) then
        out[#out + 1] = entry[1]
        out[#out + 1] = f
        found = found + 1
      end
      reached = entry[1]
      if found >= limit or spent() then return true end
    end
    if #entries < STREAM_STEP then return false end
    top = below(reached)
  end
  return false
end
-- The digest covers an unbroken run of the newest batches (append.lua empties it rather than leave
-- a batch out), so the stream is read only where a call meets no digest entry: above the first one
-- it meets (batches the digest never had, or where the call before stopped reading the stream) and
-- below the oldest (the digest evicted, deleted, or trimmed ahead of the stream).
local next_high, above_read = high, false
if high ~= '+' then
  -- the digest entry holding `high` is the oldest one with an id at or above it
  local holding = (read('XRANGE', KEYS[2], high, '+', 'COUNT', 1) or {})[1]
  if holding then
    local ms, seq = parse(get(holding[2], 2, 'first'))
    if ms and (ms < hms or (ms == hms and seq <= hseq)) then
      above_read = true
      if scan(holding) then return out end
      next_high = below(holding[1])
    end
  end
end
-- Digest entries are read a few at a time, as many as the byte budget has room for: one
-- export batch of long records can be megabytes.
local step, read_so_far = 1, 0
while not spent() do
  local entries = read('XREVRANGE', KEYS[2], next_high, low, 'COUNT', step) or {}
  for i = 1, #entries do
    if not above_read and read_stream(above(entries[i][1])) then return out end
    above_read = true
    if scan(entries[i]) then return out end
  end
  if #entries < step then
    if not read_stream(low) then out[3] = 1 end
    return out
  end
  read_so_far = read_so_far + #entries
  next_high = below(entries[#entries][1])
  local room = math.floor((byte_budget - bytes) * read_so_far / math.max(bytes, 1))
  step = math.max(1, math.min(step * 2, 64, room))
end
return out
