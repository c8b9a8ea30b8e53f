-- How the scripts that write tell a command's failure apart (pasted in by `--#include failures`).
-- A command's failure as its reply table, or nil when it succeeded. Redis 6 puts
-- `@user_script: <line>: -` before the code; taken off, the client reads the code as Redis 7 sends it.
local function refused(reply)
  if type(reply) == 'table' and reply.err then
    return {err = (string.gsub(reply.err, '^@user_script: ?%d+: ?%-', ''))}
  end
end
-- Failures that say Redis takes no writes now (out of memory, a read-only replica during a
-- failover, a failed save): nothing about the records or the keys. The call returns them as
-- they are, and the exporter sends the batch again later (tracestream/redis_errors.py). Redis
-- refuses these at a script's first write, before it changed anything.
local TAKES_NO_WRITES = {
  OOM = true, READONLY = true, MASTERDOWN = true, MISCONF = true, NOREPLICAS = true,
  CLUSTERDOWN = true, TRYAGAIN = true, LOADING = true, BUSY = true,
}
local function takes_no_writes(failure) return TAKES_NO_WRITES[string.match(failure.err, '^%u+')] == true end
-- The URL's user may not run a command (its ACL): said as Redis says it, not as a wrong type.
local function denied(failure)
  return string.find(failure.err, 'NOPERM', 1, true) or string.find(failure.err, "can't run this command", 1, true)
end
local function grant(command) return "grant the URL's user +" .. string.lower(command) end
-- A command the store itself needs, refused by the URL's ACL before anything is stored: the call
-- is refused, naming the right to grant (Redis names only the script's line).
local function denied_reply(failure, command, key)
  return redis.error_reply(failure.err .. ' (' .. command .. ' on ' .. key .. '; ' .. grant(command) .. ')')
end
-- What a command refused once the records are stored costs, in a line the writer tells once. A key
-- of another type (another program's) is named; a command refused whatever the key (a right the
-- URL's user lacks, with the right to grant; a command renamed away) names the pattern `keys`.
local function costs(what, failure, command, key, keys)
  if string.find(failure.err, 'WRONGTYPE', 1, true) then
    return what .. ': ' .. command .. ' ' .. key .. ': ' .. failure.err
  end
  local line = what .. ': ' .. command .. ' on ' .. keys .. ': ' .. failure.err
  if denied(failure) then
    line = line .. '; ' .. grant(command) .. " (docs/security.md lists a producer's rights)"
  elseif string.find(failure.err, 'Unknown Redis command', 1, true) then
    line = line .. '; ' .. command .. " is disabled or renamed in the server's configuration"
  end
  return line
end
