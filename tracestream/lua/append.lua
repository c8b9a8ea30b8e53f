-- One call per batch. The batch travels as a single JSON argument: packing thousands of
-- small arguments costs the client more than the server spends decoding one. Rows that carry
-- the call's resource (all of a process's own) travel with "" in its place (ARGV[10..11]):
-- decoding that escaped JSON again for every row was a fifth of the script's time.
-- Log batches also append one digest entry (KEYS[2..4]; see docs/stream-schema.md) so a
-- search reads a line per record instead of whole entries. The digest is trimmed with
-- write-only commands, so a producer that may not read its streams can still run this.
--
-- A retried call stores each record once. A script that fails midway keeps what it wrote,
-- so every key is checked before the first write, with commands that fail on a key of the
-- wrong type and change nothing (a write-only producer may run them; docs/security.md), and
-- nothing after the XADDs can fail. Only a stream key of another type refuses the call; a
-- digest key of another type costs the records their search digest (the call returns why),
-- and a trace index key of another type costs only that trace its index (pcall). Redis
-- refuses a script for OOM only at its first write command, here the INCRBY that reads a
-- mark, so a call is stored whole or not at all. But a batch of several calls, or a
-- connection lost after Redis ran them, leaves some stored, and the whole batch is sent
-- again. Record ids are a writer's random prefix and a counter that the writer delivers in
-- order, so `<stream>:written:<prefix>` counts up to the first counter not yet stored
-- (ARGV[12..13]), and a call's leading rows below it are skipped.
local stream = KEYS[1]
local maxlen = tonumber(ARGV[1])
local min_id_ms = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local index_prefix = ARGV[4]
local member_prefix = ARGV[5]
local trace_pos = tonumber(ARGV[6]) + 1
local names = cjson.decode(ARGV[7])
local rows = cjson.decode(ARGV[8])
local digest_pos = cjson.decode(ARGV[9])
local resource_pos = tonumber(ARGV[10]) + 1
local resource = ARGV[11]
local rid_pos = tonumber(ARGV[12]) + 1
local mark_prefix = ARGV[13]
local function refused(reply) return type(reply) == 'table' and reply.err end
local function oom(reply) return string.sub(reply.err, 1, 3) == 'OOM' end
-- A call's rows come from one writer, in order: only a retry's leading rows, which Redis
-- stored before, are below the mark, so only those and the last row are parsed.
local function parse(row)
  local rid = row[rid_pos]
  local counter = #rid > 16 and tonumber(string.sub(rid, 17), 16)
  if counter then return string.sub(rid, 1, 16), counter end
end
local first = 1
local prefix = parse(rows[1])
local mark_key, mark
if prefix then
  mark_key = mark_prefix .. prefix
  mark = redis.pcall('INCRBY', mark_key, 0)
  if refused(mark) then
    if oom(mark) then return mark end
    prefix = nil
  else
    redis.call('EXPIRE', mark_key, ttl)
    while first <= #rows do
      local row_prefix, counter = parse(rows[first])
      if row_prefix ~= prefix or counter >= mark then break end
      first = first + 1
    end
  end
end
local keep_all = {'stream', 'XTRIM', 'MAXLEN', '9223372036854775807'}
local probes = {keep_all, keep_all}
if maxlen > 0 then probes[3] = {'list', 'LPOP', '0'}; probes[4] = {'count', 'INCRBY', '0'} end
local digest_problem
for k = 1, math.min(#KEYS, #probes) do
  local probe = probes[k]
  local reply = redis.pcall(probe[2], KEYS[k], unpack(probe, 3))
  if refused(reply) then
    if oom(reply) then return reply end
    local problem = KEYS[k] .. ' is not a ' .. probe[1] .. ': ' .. reply.err
    if k == 1 then return redis.error_reply('WRONGTYPE ' .. problem) end
    digest_problem = digest_problem or problem .. '; the search digest is not written'
  end
end
if digest_problem then digest_pos = {} end
if first > #rows then return 0 end
local nfields = #names
local touched = {}
local pairs_ = {}
local lines = {}
local function one_line(text)
  if string.find(text, '\n', 1, true) or string.find(text, '\t', 1, true) then
    return (string.gsub(text, '[\t\n]', ' '))
  end
  return text
end
for f = 1, nfields do pairs_[2 * f - 1] = names[f] end
local first_id, id
for i = first, #rows do
  local row = rows[i]
  if row[resource_pos] == '' then row[resource_pos] = resource end
  for f = 1, nfields do pairs_[2 * f] = row[f] end
  if maxlen > 0 then
    id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(pairs_))
  else
    id = redis.call('XADD', stream, '*', unpack(pairs_))
  end
  first_id = first_id or id
  local trace = row[trace_pos]
  if trace ~= '' then
    local key = index_prefix .. trace
    if touched[key] ~= false then
      touched[key] = type(redis.pcall('RPUSH', key, member_prefix .. id)) == 'number'
    end
  end
  if #digest_pos > 0 then
    local v = {}
    for p = 1, #digest_pos do v[p] = one_line(row[digest_pos[p]]) end
    lines[#lines + 1] = '\n' .. v[1] .. '\t' .. v[2] .. '\t' .. id
      .. '\t' .. v[3] .. '\t' .. v[4] .. '\t' .. v[5]
  end
end
if prefix then
  local last_prefix, last = parse(rows[#rows])
  if last_prefix == prefix and last >= mark then
    redis.call('INCRBY', mark_key, string.format('%.0f', last + 1 - mark))
  end
end
for key, indexed in pairs(touched) do
  if indexed then redis.call('EXPIRE', key, ttl) end
end
if min_id_ms > 0 then redis.call('XTRIM', stream, 'MINID', '~', min_id_ms) end
if #lines == 0 then return digest_problem or #rows - first + 1 end
-- The digest entry takes the batch's last record id, so stream ids locate it. It fails
-- only if the log stream was deleted and recreated behind it: those records then go unindexed.
local added = redis.pcall('XADD', KEYS[2], id, 'first', first_id, 'n', #lines, 'd', table.concat(lines))
if refused(added) then return #rows - first + 1 end
if min_id_ms > 0 then redis.call('XTRIM', KEYS[2], 'MINID', '~', min_id_ms) end
if maxlen > 0 then
  redis.call('RPUSH', KEYS[3], #lines .. ' ' .. id)
  local total = redis.call('INCRBY', KEYS[4], #lines)
  local cut
  while true do
    local oldest = redis.call('LPOP', KEYS[3])
    if not oldest then break end
    local count, digest_id = string.match(oldest, '^(%d+) (%d+%-%d+)$')
    if count then
      if total - tonumber(count) < maxlen then redis.call('LPUSH', KEYS[3], oldest); break end
      total = redis.call('DECRBY', KEYS[4], count)
      cut = digest_id
    end
  end
  if cut then
    local ms, seq = string.match(cut, '^(%d+)-(%d+)$')
    redis.call('XTRIM', KEYS[2], 'MINID', '~', ms .. '-' .. string.format('%.0f', tonumber(seq) + 1))
  end
end
return #rows - first + 1
