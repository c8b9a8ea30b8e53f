-- What the scripts that only read share (pasted in by `--#include reads`): how they meet a
-- command's failure, and which ids taken from stored data Redis would refuse. A key of another type
-- is another program's, holding nothing of ours: it reads as absent. Any other failure (a right the
-- URL's user lacks, a command renamed away) is raised, naming the command and key where Redis's own
-- error names only a line of the script.
local function refused(command, key, failure)
  -- Redis 6 puts `@user_script: <line>: ` before what the script's caller may not do
  local said = string.gsub(failure, '^@user_script: ?%d+: ?', '')
  local code, words = string.match(said, '^(%u+) (.*)$')
  if string.find(said, '^NOPERM') or string.find(said, "can't run this command", 1, true)
      or string.find(said, "can't access", 1, true) or string.find(said, 'ACL failure', 1, true) then
    code, words = 'NOPERM', string.gsub(string.gsub(said, '^NOPERM ', ''), '^ERR ', '')
  elseif not code then
    code, words = 'ERR', said
  end
  local message = code .. ' ' .. command .. ' on ' .. key .. ': ' .. words
  -- Redis 7 answers with a raised table's message, its code first; Redis 6.2 takes only a string
  if redis.REDIS_VERSION then error({err = message}) end
  error(message, 0)
end
-- `command` on `key`: its reply, or nil when the key holds another type.
local function read(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) ~= 'table' or not reply.err then return reply end
  if string.find(reply.err, '^WRONGTYPE') then return nil end
  refused(command, key, reply.err)
end
-- Whether Redis takes `text` as a stream id: an id read from another writer's data may be any text,
-- and Redis refuses one past 64 bits.
local function is_stream_id(text)
  local ms, seq = string.match(text, '^(%d+)%-(%d+)$')
  if not ms then return false end
  for _, part in ipairs({ms, seq}) do
    local digits = string.match(part, '^0*(%d+)$')  -- leading zeros are allowed
    if #digits > 20 or (#digits == 20 and digits > '18446744073709551615') then return false end
  end
  return true
end
