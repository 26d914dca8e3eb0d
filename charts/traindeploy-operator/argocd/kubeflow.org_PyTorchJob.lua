-- Argo CD health check for the PyTorchJob (kubeflow.org/v1, Training Operator) that a
-- TrainDeploy runs.
--
-- The Training Operator appends each condition that changes to status.conditions (Running and
-- Restarting replace each other; Succeeded/Failed turn Running to False in place) and its printer
-- column reads the last entry; the job's state is the LAST condition whose status is "True":
--   Succeeded -> Healthy, Failed -> Degraded, Suspended -> Suspended,
--   Created/Running/Restarting -> Progressing.
-- A resumed job has Suspended=False, so its last True condition is Created or Running again.
-- Like every custom health script in Argo CD, this one runs without the string and math
-- libraries (gopher-lua, Lua 5.1): base and table only.

local hs = {}

local STATES = {
  Succeeded = "Healthy",
  Failed = "Degraded",
  Suspended = "Suspended",
  Created = "Progressing",
  Running = "Progressing",
  Restarting = "Progressing",
}

local REPLICA_COUNTS = {"active", "succeeded", "failed"}

local function present(value)
  return value ~= nil and value ~= ""
end

local function lastTrueCondition(status)
  local found = nil
  if type(status) == "table" and type(status.conditions) == "table" then
    for _, c in ipairs(status.conditions) do
      if type(c) == "table" and c.status == "True" then
        found = c
      end
    end
  end
  return found
end

-- "Master: 1 active; Worker: 2 active, 1 failed", replica types in a stable order.
local function replicaSummary(status)
  local replicas = status.replicaStatuses
  if type(replicas) ~= "table" then
    return ""
  end
  local types = {}
  for replicaType, _ in pairs(replicas) do
    table.insert(types, replicaType)
  end
  table.sort(types)
  local lines = {}
  for _, replicaType in ipairs(types) do
    local counts = {}
    local replica = replicas[replicaType]
    if type(replica) == "table" then
      for _, key in ipairs(REPLICA_COUNTS) do
        local n = tonumber(replica[key]) or 0
        if n > 0 then
          table.insert(counts, tostring(n) .. " " .. key)
        end
      end
    end
    if #counts > 0 then
      table.insert(lines, tostring(replicaType) .. ": " .. table.concat(counts, ", "))
    end
  end
  return table.concat(lines, "; ")
end

local status = obj.status
local last = lastTrueCondition(status)

if last == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the Training Operator to create the job's pods"
  return hs
end

local health = STATES[last.type]
if health == nil then
  hs.status = "Unknown"
  hs.message = "unexpected PyTorchJob condition " .. tostring(last.type)
  return hs
end

local message = tostring(last.message or last.reason or last.type)
if health == "Degraded" and present(last.reason) and last.message ~= nil then
  message = tostring(last.reason) .. ": " .. tostring(last.message)
end
if health == "Progressing" or health == "Degraded" then
  local replicas = replicaSummary(status)
  if replicas ~= "" then
    message = message .. " (" .. replicas .. ")"
  end
end

hs.status = health
hs.message = message
return hs
