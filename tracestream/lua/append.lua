-- One call per batch. The batch travels as a single JSON argument: packing thousands of
-- small arguments costs the client more than the server spends decoding one. Rows that carry
-- the call's resource (all of a process's own) travel with "" in its place (ARGV[10..11]):
-- decoding that escaped JSON again for every row was a fifth of the script's time. Those rows
-- are stored with a reference to it, `@` and 16 hex digits of its SHA1, and the resource once,
-- in the hash `<ARGV[14]><hex>` (field `json`), which every call refreshes for `ttl` seconds: a
-- resource is most of an entry's bytes. Where that hash cannot be written (a key of another
-- type, a producer without the rights), the call's rows carry the resource itself.
-- Log batches also append one digest entry (KEYS[2..4]; see docs/stream-schema.md) so a
-- search reads a line per record instead of whole entries. The digest is trimmed with
-- write-only commands, so a producer that may not read its streams can still run this.
--
-- A retried call stores each record once. A script that fails midway keeps what it wrote,
-- so every key is checked before the first write, with commands that fail on a key of the
-- wrong type and change nothing (a write-only producer may run them; docs/security.md), and
-- nothing after the XADDs can fail. A Redis that takes no writes now (failures.lua) fails the
-- call at its first write, as it found it. Only a stream key of another type refuses it, or a
-- command the probes need that Redis does not know (renamed or disabled: said so, by name); a
-- digest key of another type costs the records their search digest (the call returns why, and
-- empties the digest: searches read the stream itself where the digest does not reach),
-- a trace index key of another type costs only that trace its index (pcall), and a right the URL's
-- user lacks for what follows the XADDs (the trace index's RPUSH, the digest's upkeep, the issues)
-- costs only what it serves, and the call returns which right to grant. Redis
-- refuses a script for OOM only at its first write command, here the INCRBY that reads a
-- mark, so a call is stored whole or not at all. But a batch of several calls, or a
-- connection lost after Redis ran them, leaves some stored, and the whole batch is sent
-- again. Record ids are a writer's random prefix and a counter that the writer delivers in
-- order, so `<stream>:written:<prefix>` counts up to the first counter not yet stored
-- (ARGV[12..13]), and a call's leading rows below it are skipped. Except with ARGV[15] = "1":
-- the call is sent again after NOSCRIPT, so none of its rows ran, while a later call of the same
-- round trip may have run (another client loaded the script in between) and moved the mark.
-- ARGV[16] is where the writer last left its mark ("0" when it does not know): a mark found below
-- it means Redis forgot records it had taken (a restart without persistence, a failover to a
-- replica behind its master, a flush, or the mark evicted), and the call says how many.
-- ARGV[17] is the last counter of the round trip's previous call of the same writer ("" for
-- none): Redis decides at each call whether it is out of memory, so with memory hovering at its
-- limit that call may have been refused while this one would run and move the mark past the
-- refused rows, which the retry would then skip. A mark not past that counter holds the call
-- back (HELDBACK), storing nothing, and the round trip stores only the batch's first rows.
--
-- Error records (ARGV[18]: `[[row, fingerprint, route, instance], ...]` for the call's ERROR+
-- rows, "" when it has none, so other rows cost one test each) are copied to `<stream>:errors`
-- under the same stream ids, trimmed by its own count (ARGV[20]) and by age, so a flood that
-- trims the log stream by count never takes them; and each updates its issue
-- (`<stream>:issue:<fingerprint>`, a hash; `<stream>:issues`, fingerprints by last seen) with
-- write commands whose replies are the counts they leave (HINCRBY), so a write-only producer
-- can run it. Only rows stored by this call count, so a retried batch counts each error once.
-- These writes come after every XADD and are pcalls: a key of another type, or a producer
-- without the rights, costs the copies or the issues (the call returns why), never a record.
local stream = KEYS[1]
-- Numbers go to redis.call as the texts they came in: Redis formats a Lua number with
-- snprintf("%.17g"), which cost a tenth of the script's time when done per row.
-- The age limit (ARGV[2], ms; 0 for none) counts back from the last id XADD gave, Redis's clock:
-- a writer whose own clock runs ahead would otherwise trim every other writer's records.
local maxlen_text, max_age_ms, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local maxlen = tonumber(maxlen_text)
local min_id_ms, min_id_text = 0, '0'
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
local resource_prefix = ARGV[14]
local never_ran = ARGV[15] == '1'
local expected_mark = tonumber(ARGV[16]) or 0
local after_counter = tonumber(ARGV[17])
local errors_key = ARGV[19] or ''
local errors_maxlen = tonumber(ARGV[20]) or 0
local error_rows, has_errors = {}, false
if ARGV[18] and ARGV[18] ~= '' then
  for _, e in ipairs(cjson.decode(ARGV[18])) do error_rows[e[1]] = e end
  has_errors = true
end
local P = {}  -- field positions by name, for error rows
if has_errors then for f = 1, #names do P[names[f]] = f end end
--#include failures
-- A call's rows come from one writer, in order: only a retry's leading rows, which Redis
-- stored before, are below the mark, so only those and the last row are parsed.
local function parse(row)
  local rid = row[rid_pos]
  local counter = #rid > 16 and tonumber(string.sub(rid, 17), 16)
  if counter then return string.sub(rid, 1, 16), counter end
end
local first = 1
local prefix = parse(rows[1])
local mark_key, mark, forgotten
if prefix then
  mark_key = mark_prefix .. prefix
  mark = redis.pcall('INCRBY', mark_key, 0)
  local failure = refused(mark)
  if failure then
    if takes_no_writes(failure) then return failure end
    if denied(failure) then return denied_reply(failure, 'INCRBY', mark_key) end
    prefix = nil
  else
    local expire_failure = refused(redis.pcall('EXPIRE', mark_key, ttl))
    if expire_failure then
      return denied(expire_failure) and denied_reply(expire_failure, 'EXPIRE', mark_key) or expire_failure
    end
    if after_counter and mark <= after_counter then
      return redis.error_reply('HELDBACK ' .. mark_key .. ' is not past the rows of the previous call: it'
        .. ' stored nothing, or the mark was evicted or deleted since')
    end
    forgotten = mark < expected_mark and expected_mark - mark
    while not never_ran and first <= #rows do
      local row_prefix, counter = parse(rows[first])
      if row_prefix ~= prefix or counter >= mark then break end
      first = first + 1
    end
  end
end
local keep_all = {'stream', 'XTRIM', 'MAXLEN', '9223372036854775807'}
local probes = {keep_all, keep_all}
if maxlen > 0 then probes[3] = {'list', 'LPOP', '0'}; probes[4] = {'count', 'INCRBY', '0'} end
local digest_problem, digest_key_refused
for k = 1, math.min(#KEYS, #probes) do
  local probe = probes[k]
  local failure = refused(redis.pcall(probe[2], KEYS[k], unpack(probe, 3)))
  if failure then
    if takes_no_writes(failure) then return failure end
    if denied(failure) then return denied_reply(failure, probe[2], KEYS[k]) end
    local problem
    if string.find(failure.err, 'WRONGTYPE', 1, true) then
      problem = KEYS[k] .. ' is not a ' .. probe[1] .. ': ' .. failure.err
      if k == 1 then return redis.error_reply('WRONGTYPE ' .. problem) end
    elseif string.find(failure.err, 'Unknown Redis command', 1, true) then
      -- worded as Redis 7 words it, so the writer tells it apart alike on every version
      problem = 'Unknown Redis command called from script: ' .. probe[2] .. ' is disabled or renamed'
      if k == 1 then return redis.error_reply('ERR ' .. problem) end
    else
      if k == 1 then return failure end
      problem = probe[2] .. ' ' .. KEYS[k] .. ': ' .. failure.err
    end
    digest_problem = digest_problem
      or problem .. '; the search digest is not written (searches read the stream, slower)'
    digest_key_refused = digest_key_refused or k == 2
  end
end
if digest_problem then digest_pos = {} end
if first > #rows then return 0 end
if resource ~= '' and resource_prefix ~= '' then
  local hex = string.sub(redis.sha1hex(resource), 1, 16)
  local failure = refused(redis.pcall('HSET', resource_prefix .. hex, 'json', resource))
  if failure then
    if takes_no_writes(failure) then return failure end
  else
    redis.call('EXPIRE', resource_prefix .. hex, ttl)
    resource = '@' .. hex
  end
end
local nfields = #names
local touched = {}
local made, made_here = {}, {}  -- the traces whose index key this call made, in order; their keys
local index_problem  -- RPUSH refused whatever the key (a right the URL's user lacks, renamed away)
-- XADD's arguments after the key: the trim, '*', then the row's fields and values, filled in per
-- row from `fields_at` on (error copies take them alone).
local entry = maxlen > 0 and {'MAXLEN', '~', maxlen_text, '*'} or {'*'}
local fields_at = #entry + 1
local lines = {}
local function one_line(text)
  if string.find(text, '\n', 1, true) or string.find(text, '\t', 1, true) then
    return (string.gsub(text, '[\t\n]', ' '))
  end
  return text
end
for f = 1, nfields do entry[fields_at + 2 * f - 2] = names[f] end
local first_id, id
local issues = {}  -- fingerprint -> what this call's rows add to its issue
local issue_order = {}
local function add_to_issue(e, row, stream_id)
  local fp = e[2]
  local g = issues[fp]
  if not g then
    g = {n = 0, row = row, services = {}, instances = {}, routes = {}, traces = {}}
    issues[fp] = g
    issue_order[#issue_order + 1] = fp
  end
  g.n = g.n + 1
  g.newest = stream_id
  local function bump(t, name) if name ~= '' then t[name] = (t[name] or 0) + 1 end end
  bump(g.services, row[P.service])
  bump(g.instances, e[4])
  bump(g.routes, e[3])
  if row[trace_pos] ~= '' then g.traces[#g.traces + 1] = row[trace_pos] end
end
-- A writer that stored rows before (its mark is above 0) adds its first row only to a stream that
-- exists (NOMKSTREAM): when it does not, the stream vanished under the writer, evicted or
-- deleted with the records in it, and the call says so (the writer tells it once).
local check_stream = prefix and mark > 0 and not forgotten
local vanished = false
-- The call's first XADD: a right the URL's user lacks is named, before anything is stored.
local function xadd_first(...)
  local reply = redis.pcall('XADD', ...)
  local failure = refused(reply)
  if failure then error(denied(failure) and denied_reply(failure, 'XADD', stream) or failure) end
  return reply
end
for i = first, #rows do
  local row = rows[i]
  if row[resource_pos] == '' then row[resource_pos] = resource end
  for f = 1, nfields do entry[fields_at + 2 * f - 1] = row[f] end
  if i == first then
    id = check_stream and xadd_first(stream, 'NOMKSTREAM', unpack(entry))
    vanished = check_stream and not id
    id = id or xadd_first(stream, unpack(entry))
  else
    id = redis.call('XADD', stream, unpack(entry))
  end
  first_id = first_id or id
  if has_errors and error_rows[i] then
    if errors_key ~= '' then
      if errors_maxlen > 0 then
        redis.pcall('XADD', errors_key, 'MAXLEN', '~', ARGV[20], id, unpack(entry, fields_at))
      else
        redis.pcall('XADD', errors_key, id, unpack(entry, fields_at))
      end
    end
    add_to_issue(error_rows[i], row, id)
  end
  local trace = row[trace_pos]
  if trace ~= '' and not index_problem then
    local key = index_prefix .. trace
    if touched[key] ~= false then
      local length = redis.pcall('RPUSH', key, member_prefix .. id)
      local failure = refused(length)
      touched[key] = not failure
      if length == 1 then
        made[#made + 1] = trace
        made_here[key] = true
      end
      if failure and not string.find(failure.err, 'WRONGTYPE', 1, true) then
        index_problem = costs('the trace index is not written (`tracestream trace` and --trace-id miss'
          .. ' these records)', failure, 'RPUSH', key, index_prefix .. '*')
      end
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
-- The trace index keeps the keys of the newest `maxlen` traces: `<index prefix>order` lists the
-- traces in the order their keys were made, and the oldest beyond `maxlen` lose theirs (EXPIRE
-- 0). Otherwise a key outlived the entries `maxlen` trimmed for `max_age` (7 days), and Redis
-- grew with every trace whatever `max_entries` said. Every trace has an entry in one of the two
-- streams, each trimmed to `maxlen`, so the newest `maxlen` traces hold those still there, but
-- for an older one still written to: an older trace this call writes to goes back to the end.
-- Each step is a pcall: a refusal costs the bound, never the records just stored.
if maxlen > 0 and #made > 0 and not index_problem then
  local order = index_prefix .. 'order'
  local length = redis.pcall('RPUSH', order, unpack(made))
  if not refused(length) then
    redis.pcall('EXPIRE', order, ttl)
    local oldest = length > maxlen and redis.pcall('LPOP', order, length - maxlen)
    if type(oldest) == 'table' and not oldest.err then
      local alive = {}
      for _, trace in ipairs(oldest) do
        local key = index_prefix .. trace
        if touched[key] and not made_here[key] then
          alive[#alive + 1] = trace
        else
          redis.pcall('EXPIRE', key, 0)
        end
      end
      if #alive > 0 then redis.pcall('RPUSH', order, unpack(alive)) end
    end
  end
end
-- Redis's clock: the ms of the last id stored, which the age limit, the issues' times and the
-- writer's trace list count by (0 when the call stored none).
local now_ms = id and tonumber(string.match(id, '^%d+')) or 0
if now_ms > 0 and max_age_ms > 0 then
  min_id_ms = now_ms - max_age_ms
  min_id_text = string.format('%.0f', min_id_ms)
end
if min_id_ms > 0 then
  redis.call('XTRIM', stream, 'MINID', '~', min_id_text)
  if errors_key ~= '' then redis.pcall('XTRIM', errors_key, 'MINID', '~', min_id_text) end
end
-- Issues: counts, first and last seen (write time), a count per hour of the day kept as
-- `hour * 2^32 + count` so HINCRBY's reply tells a slot's hour, five sample trace ids in turn,
-- and a status that a recurrence turns from resolved (1) back to open (0), as a regression.
local issue_problem
local MAX_INSTANCES = 50
if #issue_order > 0 then
  local issue_prefix, issues_key, issue_ttl = ARGV[21], ARGV[22], tonumber(ARGV[23])
  local issue_keys = string.sub(issue_prefix, 1, -2) .. '*'  -- the issues and their list
  local function call(command, key, ...)
    if issue_problem then return nil end
    local reply = redis.pcall(command, key, ...)
    local failure = refused(reply)
    if failure then
      issue_problem = costs('error issues are not updated', failure, command, key, issue_keys)
      return nil
    end
    return reply
  end
  local hour = math.floor(now_ms / 3600000)
  local slot = 'h' .. (hour % 24)
  for _, fp in ipairs(issue_order) do
    local g, key = issues[fp], issue_prefix .. fp
    local total = call('HINCRBY', key, 'count', g.n)
    if not total then break end
    if total == g.n then
      local row = g.row
      local message = row[P.exception_message]
      if message == '' then message = row[P.body] end
      if #message > 1024 then
        message = (string.gsub(string.sub(message, 1, 1024), '[\192-\255][\128-\191]*$', ''))
      end
      call('HSET', key, 'first', now_ms, 'type', row[P.exception_type], 'message', message,
        'service', row[P.service])
    end
    if call('HINCRBY', key, 'state', 0) == 1 then call('HSET', key, 'state', 0, 'regression', 1) end
    call('HSET', key, 'last', now_ms, 'newest', g.newest)
    local traces = g.traces
    for k = math.max(1, #traces - 4), #traces do
      call('HSET', key, 't' .. ((total - #traces + k) % 5), traces[k])
    end
    if #traces > 0 then call('HSET', key, 'trace', traces[#traces]) end
    local in_slot = call('HINCRBY', key, slot, g.n)
    if in_slot and math.floor(in_slot / 4294967296) ~= hour then
      call('HSET', key, slot, string.format('%.0f', hour * 4294967296 + g.n))
    end
    for name, n in pairs(g.services) do call('HINCRBY', key, 's:' .. name, n) end
    -- Instances are named by process (a new one at each deploy, each recycled worker): once an
    -- issue names MAX_INSTANCES, the records of every instance are counted together from then on,
    -- and its hash stops growing. HINCRBY's replies tell a new name, as a producer may not read.
    local named = call('HINCRBY', key, 'instances', 0)
    for name, n in pairs(g.instances) do
      if named and named < MAX_INSTANCES then
        if call('HINCRBY', key, 'i:' .. name, n) == n then named = call('HINCRBY', key, 'instances', 1) end
      else
        call('HINCRBY', key, 'other_instances', n)
      end
    end
    for name, n in pairs(g.routes) do call('HINCRBY', key, 'c:' .. name, n) end
    call('EXPIRE', key, issue_ttl)
    call('ZADD', issues_key, now_ms, fp)
  end
  if call('EXPIRE', issues_key, issue_ttl) then
    local failure = refused(redis.pcall('ZREMRANGEBYSCORE', issues_key, '-inf',
      '(' .. string.format('%.0f', now_ms - issue_ttl * 1000)))
    if failure then
      issue_problem = costs('the issue list keeps issues past their age limit', failure, 'ZREMRANGEBYSCORE',
        issues_key, issues_key)
    end
  end
end
-- Redis's clock, which the writer's trace list counts its age limit back from, then what the
-- writer tells once, a line each.
local problems = {now_ms}
local function tell(problem)
  if problem then problems[#problems + 1] = problem end
end
tell(vanished and ('VANISHED ' .. stream))
tell(forgotten and ('FORGOT ' .. string.format('%.0f', forgotten) .. ' ' .. stream))
tell(digest_problem)
tell(index_problem)
tell(issue_problem)
local function outcome()
  return problems
end
-- Readers read the stream itself only above and below the digest, so a batch left out of it must
-- not lie between its entries: the digest is emptied instead (XTRIM, probed above), and searches
-- read the stream until new batches fill it again.
if #lines == 0 then
  if digest_problem and not digest_key_refused then redis.call('XTRIM', KEYS[2], 'MAXLEN', '0') end
  return outcome()
end
-- The digest entry takes the batch's last record id, so stream ids locate it. It fails
-- only if the log stream was deleted and recreated behind it with older ids.
local added = redis.pcall('XADD', KEYS[2], id, 'first', first_id, 'n', #lines, 'd', table.concat(lines))
if refused(added) then
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '0')
  return outcome()
end
if min_id_ms > 0 then redis.call('XTRIM', KEYS[2], 'MINID', '~', min_id_text) end
-- The digest is trimmed to `maxlen` lines by a count of its lines and a list of each entry's line
-- count and id, never read back. A command of that upkeep the URL's user may not run (or renamed
-- away) costs the digest, emptied instead, never the records stored.
local function upkeep(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  local failure = refused(reply)
  if failure then error({command = command, key = key, failure = failure}, 0) end
  return reply
end
local function trim_digest()
  upkeep('RPUSH', KEYS[3], #lines .. ' ' .. id)
  local total = upkeep('INCRBY', KEYS[4], #lines)
  local cut
  while true do
    local oldest = upkeep('LPOP', KEYS[3])
    if not oldest then break end
    local count, digest_id = string.match(oldest, '^(%d+) (%d+%-%d+)$')
    if digest_id == id then
      -- The sizes list held only this entry (it was deleted or evicted): its count is the total.
      upkeep('LPUSH', KEYS[3], oldest)
      if total > #lines then upkeep('DECRBY', KEYS[4], total - #lines) end
      break
    end
    if count then
      if total - tonumber(count) < maxlen then upkeep('LPUSH', KEYS[3], oldest); break end
      total = upkeep('DECRBY', KEYS[4], count)
      cut = digest_id
    end
  end
  if cut then
    local ms, seq = string.match(cut, '^(%d+)-(%d+)$')
    redis.call('XTRIM', KEYS[2], 'MINID', '~', ms .. '-' .. string.format('%.0f', tonumber(seq) + 1))
  end
end
if maxlen > 0 then
  local trimmed, lost = pcall(trim_digest)
  if not trimmed then
    if type(lost) ~= 'table' or not lost.failure then error(lost, 0) end
    redis.call('XTRIM', KEYS[2], 'MAXLEN', '0')
    tell(costs('the search digest is not written (searches read the stream, slower)', lost.failure,
      lost.command, lost.key, lost.key))
  end
end
return outcome()
