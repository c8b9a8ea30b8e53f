-- The trace list: one summary per local root span of a batch, sent in the same round trip as
-- the batch's append calls. KEYS[1] is `<stream>:traces`; every other key derives from it and
-- shares its hash tag (docs/stream-schema.md):
--   <traces>:service:<service>          one service's summaries, scored by start (ms)
--   <traces>:errors                     failed local roots, by start
--   <traces>:slowest:<hour>:<service>   one service's local roots started in that hour, scored
--                                       by duration (ms)
--   <traces>:services                   the services with summaries, scored by their newest start
--   <traces>:hours                      the hours that have sets by duration
-- Readers merge the services' sets for a list of every service, so a summary is stored twice,
-- not four times: a member costs a sorted set about 100 bytes besides its own length.
-- A summary is the same member however often it is added, so a retried batch adds nothing.
-- Sets by start are trimmed to the stream's age and count limits on every call, sets by
-- duration keep the slowest SLOWEST_KEPT (or `cap`, if fewer) and expire `age` after their hour
-- ends: `cap` each, over the hours of 7 days, outgrew the stream hundreds of times over. Only ZADD,
-- ZREMRANGEBYSCORE, ZREMRANGEBYRANK and EXPIRE run, all within a write-only producer's rights.
-- A key refused (another type, or a producer whose rights predate the list) costs only the
-- list, and a trim or expiry refused only that: the spans are stored by the append calls, and
-- the reasons are returned, a line each, which the writer tells once.
local traces = KEYS[1]
local min_ms = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local now_ms = tonumber(ARGV[4])
local hour_ms = tonumber(ARGV[5])
local summaries = cjson.decode(ARGV[6])
local SLOWEST_KEPT = 1000  -- of each hour and service: as many as a reader asks for at once
local slowest_cap = math.min(cap, SLOWEST_KEPT)
-- Members are queued per key, and each key takes its members in one ZADD: a call per member
-- would be most of the script's time.
local by_start, by_duration, expiry_of = {}, {}, {}  -- key -> {score, member, ...}; key -> its expiry
local hours = {}  -- hour -> true, for <traces>:hours
local newest, newest_ms = {}, {}  -- service -> its newest start (text, number), for <traces>:services
local problems, halted = {}, nil  -- what costs only the list, a line each; a failure that stops the call
--#include failures
local function queue(sets, key, score, member)
  local pending = sets[key]
  if pending == nil then
    pending = {}
    sets[key] = pending
  end
  pending[#pending + 1] = score
  pending[#pending + 1] = member
end
local noted = {}  -- command -> true once a failure of it is among the problems
local function note(what, failure, command, key)
  if not noted[command] then
    noted[command] = true
    problems[#problems + 1] = costs(what, failure, command, key, traces .. '*')
  end
end
-- A Redis that takes no writes now fails the first ZADD, before anything was written: the call
-- returns its error, so the batch is sent again (its append calls skip the rows they stored).
local function added(key, pending)
  local failure = refused(redis.pcall('ZADD', key, unpack(pending)))
  if not failure then return true end
  if takes_no_writes(failure) then
    halted = failure
  else
    note('the trace list is not written', failure, 'ZADD', key)
  end
  return false
end
-- What follows a ZADD that succeeded: a right the URL's user lacks costs the trim, not the call.
local function tidy(what, command, key, ...)
  local failure = refused(redis.pcall(command, key, ...))
  if failure then note(what, failure, command, key) end
end
local AGED = 'the trace list keeps traces past the stream\'s age limit'
local COUNTED = 'the trace list keeps more traces than max_entries'
local EXPIRING = 'the trace list\'s keys do not expire'
local written = 0
for _, summary in ipairs(summaries) do
  -- Scores come as texts and go to ZADD as such: Redis would format a Lua number with
  -- snprintf("%.17g"), a large part of this script's time.
  local member, start_text, duration, service, failed = summary[1], summary[2], summary[3], summary[4], summary[5]
  local start = tonumber(start_text)
  if start >= min_ms then
    local hour = math.floor(start / hour_ms)
    local hour_text = string.format('%.0f', hour)
    local slowest = traces .. ':slowest:' .. hour_text .. ':' .. service
    queue(by_start, traces .. ':service:' .. service, start_text, member)
    if failed then queue(by_start, traces .. ':errors', start_text, member) end
    queue(by_duration, slowest, duration, member)
    -- A set by duration lives until its last member is `age` old.
    expiry_of[slowest] = math.max(1, math.ceil(((hour + 1) * hour_ms - now_ms) / 1000) + ttl)
    hours[hour_text] = true
    if start > (newest_ms[service] or -1) then newest_ms[service], newest[service] = start, start_text end
    written = written + 1
  end
end
for key, pending in pairs(by_start) do
  if added(key, pending) then
    tidy(AGED, 'ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%.0f', min_ms))
    tidy(COUNTED, 'ZREMRANGEBYRANK', key, 0, -cap - 1)
    tidy(EXPIRING, 'EXPIRE', key, ttl)
  elseif halted then
    return halted
  end
end
for key, pending in pairs(by_duration) do
  if added(key, pending) then
    tidy(COUNTED, 'ZREMRANGEBYRANK', key, 0, -slowest_cap - 1)
    tidy(EXPIRING, 'EXPIRE', key, expiry_of[key])
  elseif halted then
    return halted
  end
end
local services_key = traces .. ':services'
local service_pairs = {'GT'}  -- a batch replayed from the spool never moves a service back
for service, start in pairs(newest) do
  service_pairs[#service_pairs + 1] = start
  service_pairs[#service_pairs + 1] = service
end
if #service_pairs > 1 and added(services_key, service_pairs) then
  tidy(AGED, 'ZREMRANGEBYSCORE', services_key, '-inf', '(' .. string.format('%.0f', min_ms))
  tidy(EXPIRING, 'EXPIRE', services_key, ttl)
end
local hours_key = traces .. ':hours'
local hour_pairs = {}  -- each hour scored by itself
for hour in pairs(hours) do
  hour_pairs[#hour_pairs + 1] = hour
  hour_pairs[#hour_pairs + 1] = hour
end
if #hour_pairs > 0 and added(hours_key, hour_pairs) then
  tidy(AGED, 'ZREMRANGEBYSCORE', hours_key, '-inf', '(' .. string.format('%.0f', math.floor(min_ms / hour_ms)))
  tidy(EXPIRING, 'EXPIRE', hours_key, ttl + math.ceil(hour_ms / 1000))
end
if #problems > 0 then return problems end
return written
