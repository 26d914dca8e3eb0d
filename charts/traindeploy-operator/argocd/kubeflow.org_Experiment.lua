-- Argo CD health check for the Katib Experiment (kubeflow.org/v1beta1) that a TrainDeploy runs.
--
-- Katib's condition setter moves a condition that changes to the end of status.conditions, and
-- its own printer columns read the last entry; the state of an Experiment is the LAST condition
-- whose status is "True":
--   Succeeded -> Healthy, Failed -> Degraded, Created/Running/Restarting -> Progressing.
-- Trial counters are omitted by Katib when zero. Like every custom health script in Argo CD, this
-- one runs without the string and math libraries (gopher-lua, Lua 5.1): base and table only.

local hs = {}

local STATES = {
  Succeeded = "Healthy",
  Failed = "Degraded",
  Created = "Progressing",
  Running = "Progressing",
  Restarting = "Progressing",
}

-- Counters in the order they are shown, with the words used for them.
local COUNTERS = {
  {"trialsSucceeded", "succeeded"},
  {"trialsRunning", "running"},
  {"trialsPending", "pending"},
  {"trialsFailed", "failed"},
  {"trialsKilled", "killed"},
  {"trialsEarlyStopped", "early stopped"},
  {"trialMetricsUnavailable", "without metrics"},
}

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

local function trialSummary(status, spec)
  local total = tonumber(status.trials) or 0
  local line = "trials: " .. tostring(total)
  local max = tonumber(spec.maxTrialCount)
  if max ~= nil then
    line = line .. " of " .. tostring(max)
  end
  local parts = {}
  for _, counter in ipairs(COUNTERS) do
    local count = tonumber(status[counter[1]]) or 0
    if count > 0 then
      table.insert(parts, tostring(count) .. " " .. counter[2])
    end
  end
  if #parts > 0 then
    line = line .. " (" .. table.concat(parts, ", ") .. ")"
  end
  return line
end

local status = obj.status
local spec = obj.spec or {}
local last = lastTrueCondition(status)

if last == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the Katib controller to start the experiment"
  return hs
end

local health = STATES[last.type]
if health == nil then
  hs.status = "Unknown"
  hs.message = "unexpected Experiment condition " .. tostring(last.type)
  return hs
end

local message = tostring(last.message or last.reason or last.type)
if health == "Degraded" and present(last.reason) and last.message ~= nil then
  message = tostring(last.reason) .. ": " .. tostring(last.message)
end
message = message .. "; " .. trialSummary(status, spec)

local optimal = status.currentOptimalTrial
if type(optimal) == "table" and present(optimal.bestTrialName) then
  message = message .. "; best trial " .. tostring(optimal.bestTrialName)
  local objective = type(spec.objective) == "table" and spec.objective.objectiveMetricName or nil
  local metrics = type(optimal.observation) == "table" and optimal.observation.metrics or nil
  if present(objective) and type(metrics) == "table" then
    for _, metric in ipairs(metrics) do
      if type(metric) == "table" and metric.name == objective and present(metric.latest) then
        message = message .. " (" .. tostring(objective) .. "=" .. tostring(metric.latest) .. ")"
      end
    end
  end
end

hs.status = health
hs.message = message
return hs
