-- Runs an Argo CD health script the way Argo CD does, under a real Lua 5.1 interpreter.
--
-- usage: lua5.1 run_health.lua HEALTH_SCRIPT OBJECT_FILE
--   OBJECT_FILE is a Lua chunk that returns the object as a table (written by the Python test).
--
-- Argo CD (util/lua) gives a custom health script a fresh gopher-lua state with only the base,
-- table and package libraries and a reduced os library, sets the global `obj`, executes the script
-- as one chunk and reads the table it returns. There is no string or math library, and strings
-- have no methods (gopher-lua installs the string metatable together with the string library).
-- The environment below is the same, so a script that works here works there.
--
-- Output on success (exit 0): the status on the first line, the message after it.
-- Exit 2: the script does not compile as Lua 5.1; 3: it raised an error; 4: it returned no valid hs.

local write, stderr, exit = io.write, io.stderr, os.exit
local script_path, object_path = arg[1], arg[2]

local function fail(code, message)
  stderr:write(message, "\n")
  exit(code)
end

local obj = dofile(object_path)
local chunk, load_error = loadfile(script_path)
if not chunk then
  fail(2, "cannot load " .. script_path .. ": " .. tostring(load_error))
end

local env = {}
for _, name in ipairs({
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "print", "rawequal",
  "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack", "xpcall",
  "_VERSION",
}) do
  env[name] = _G[name]
end
env._G = env
env.table = {concat = table.concat, insert = table.insert, maxn = table.maxn, remove = table.remove,
             sort = table.sort}
env.os = {time = os.time, date = os.date, clock = os.clock}
env.obj = obj
setfenv(chunk, env)

local string_metatable = getmetatable("")
local string_index = string_metatable.__index
string_metatable.__index = nil
local ok, hs = pcall(chunk)
string_metatable.__index = string_index

if not ok then
  fail(3, "the health script raised an error: " .. tostring(hs))
end
if type(hs) ~= "table" then
  fail(4, "the health script returned " .. type(hs) .. ", not a table")
end
if type(hs.status) ~= "string" then
  fail(4, "hs.status is " .. type(hs.status) .. ", not a string")
end
if hs.message ~= nil and type(hs.message) ~= "string" then
  fail(4, "hs.message is " .. type(hs.message) .. ", not a string")
end
write(hs.status, "\n", hs.message or "")
