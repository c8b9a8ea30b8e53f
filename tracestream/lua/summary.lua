-- Returns {last, 1 when the range ran out, services, minutes, groups}: services as {name, last_ms
-- (when its newest record was made: `made_ms`), count, errors, {resource sha, ...}, estimated
-- count, records sampled down}, minutes as {minute, service, severity, count, estimated count,
-- records sampled down}, groups as {exception type, code, count, last_ms, service, message}, one
-- for each service with that exception type at that code location (the message is its newest
-- record's). An estimated count sums each record's `tracestream.sample_weight` (1 when absent),
-- sent as text: Redis would cut a Lua number to an integer. Redis arrays, not JSON with joined
-- keys: names may hold any byte, tabs and text that is not UTF-8 included, and each string is
-- decoded on its own. If not done, the next call starts below `last`. A key of another type fails
-- the call as any other failure does, named by its command: the caller passes over an `:errors` key
-- another writer holds.
--#include reads
local P = cjson.decode(ARGV[4])
local error_floor = tonumber(ARGV[5])
local byte_budget, page = tonumber(ARGV[6]), tonumber(ARGV[7])
local message_limit = tonumber(ARGV[8])
local weight_key = ARGV[9]
-- Since schema 2 a severity text is stored only when its number does not imply it: the implied
-- names of the numbers 0-24 (schema.IMPLIED_SEVERITY_TEXTS).
local implied_texts = cjson.decode(ARGV[10])
local weight_pattern = '"' .. string.gsub(weight_key, '%p', '%%%0') .. '":%s*([-%d.eE+]+)'
local services, minutes, groups, resources = {}, {}, {}, {}
local function get(f, pos, name)
  if f[pos - 1] == name then return f[pos] end
  for j = 1, #f, 2 do if f[j] == name then return f[j + 1] end end
  return ''
end
-- How many records this one stands for; a plain find first, as most records carry no weight.
local function weight_of(f)
  local attributes = get(f, P.attributes, 'attributes')
  if not string.find(attributes, weight_key, 1, true) then return 1 end
  local weight = tonumber(string.match(attributes, weight_pattern))
  if not weight or weight < 0 then return 1 end
  return weight
end
-- When a record was made (ms): its `ts`, never later than Redis stored it (a clock running ahead);
-- a record replayed from a spool was stored long after. Its id's time when `ts` is not a time.
local function made_ms(stored_ms, f)
  local ts_ms = tonumber(string.match(get(f, P.ts, 'ts'), '^(%d+)%d%d%d%d%d%d$'))
  if not ts_ms or ts_ms > stored_ms then return stored_ms end
  return ts_ms
end
local function count(id, f)
  local ms = tonumber(string.match(id, '^(%d+)'))
  local weight = weight_of(f)
  local sampled = weight ~= 1 and 1 or 0
  local service = get(f, P.service, 'service')
  local number = tonumber(get(f, P.severity_number, 'severity_number')) or 0
  local severity = get(f, P.severity, 'severity')
  if severity == '' then severity = implied_texts[number + 1] or '' end
  local s = services[service]
  if not s then
    s = {0, 0, 0, 0, 0}
    services[service], resources[service], minutes[service] = s, {}, {}
  end
  s[1] = math.max(s[1], made_ms(ms, f))
  s[2], s[4], s[5] = s[2] + 1, s[4] + weight, s[5] + sampled
  resources[service][get(f, P.resource, 'resource')] = true
  local minute = ms - ms % 60000
  local per_severity = minutes[service][minute]
  if not per_severity then per_severity = {}; minutes[service][minute] = per_severity end
  local n = per_severity[severity]
  if not n then n = {0, 0, 0}; per_severity[severity] = n end
  n[1], n[2], n[3] = n[1] + 1, n[2] + weight, n[3] + sampled
  if number >= error_floor then
    s[3] = s[3] + 1
    local exception_type = get(f, P.exception_type, 'exception_type')
    local by_code = groups[exception_type]
    if not by_code then by_code = {}; groups[exception_type] = by_code end
    local code = get(f, P.code, 'code')
    local by_service = by_code[code]
    if not by_service then by_service = {}; by_code[code] = by_service end
    local g = by_service[service]
    if not g then
      local message = get(f, P.exception_message, 'exception_message')
      if message == '' then message = get(f, P.body, 'body') end
      if #message > message_limit then
        -- cut, and drop a character the cut may have split
        message = (string.gsub(string.sub(message, 1, message_limit), '[\192-\255][\128-\191]*$', ''))
      end
      g = {0, ms, message}
      by_service[service] = g
    end
    g[1] = g[1] + 1
  end
end
-- Pages from ARGV[1] down; after the first, each starts at the last id read, which is skipped.
local high, last, scanned, bytes, done = ARGV[1], '', 0, 0, 0
while scanned < tonumber(ARGV[3]) and bytes < byte_budget do
  local entries = redis.pcall('XREVRANGE', KEYS[1], high, ARGV[2], 'COUNT', page + (last == '' and 0 or 1))
  if entries.err then refused('XREVRANGE', KEYS[1], entries.err) end
  local first = (entries[1] and entries[1][1] == last) and 2 or 1
  for i = first, #entries do
    local f = entries[i][2]
    count(entries[i][1], f)
    for j = 2, #f, 2 do bytes = bytes + #f[j] end
  end
  scanned = scanned + #entries - first + 1
  if #entries - first + 1 < page then done = 1; break end
  last = entries[#entries][1]
  high = last
end
local out_services, out_minutes, out_groups = {}, {}, {}
for service, s in pairs(services) do
  local shas = {}
  for text in pairs(resources[service]) do shas[#shas + 1] = redis.sha1hex(text) end
  out_services[#out_services + 1] = {service, s[1], s[2], s[3], shas, string.format('%.17g', s[4]), s[5]}
  for minute, per_severity in pairs(minutes[service]) do
    for severity, n in pairs(per_severity) do
      out_minutes[#out_minutes + 1] = {minute, service, severity, n[1], string.format('%.17g', n[2]), n[3]}
    end
  end
end
for exception_type, by_code in pairs(groups) do
  for code, by_service in pairs(by_code) do
    for service, g in pairs(by_service) do
      out_groups[#out_groups + 1] = {exception_type, code, g[1], g[2], service, g[3]}
    end
  end
end
return {last, done, out_services, out_minutes, out_groups}
