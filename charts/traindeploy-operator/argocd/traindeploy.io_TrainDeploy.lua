-- Argo CD health check for TrainDeploy (traindeploy.io/v1alpha1).
--
-- Argo CD runs a custom health script with gopher-lua (Lua 5.1) and, unless useOpenLibs is set,
-- only the base, table and package libraries: there is no string or math library and strings
-- have no methods. This script therefore uses nothing but base functions, table.concat and the
-- .. operator. The object is the global `obj`; the chunk returns hs = {status, message}.
--
--   status.observedGeneration < metadata.generation  Progressing (the operator has not seen the spec)
--   phase Failed, or Ready=False with a failure reason  Degraded (Ready's reason and message)
--   a rollout paused for manual approval               Suspended (says how to approve)
--     (phase AwaitingApproval, status.rollout.paused or .awaitingApproval, or RolloutPaused=True)
--   phase Ready and Ready=True                         Healthy (model and version serving)
--   anything else, including outages it retries        Progressing (phase and stage message)

local hs = {}

-- Ready=False reasons that end a training cycle for good (the operator also sets phase Failed).
local FAILURE_REASONS = {
  InvalidSpec = true,
  KubernetesRefused = true,
  MLflowError = true,
  PipelineSubmissionFailed = true,
  PipelineFailed = true,
  PipelineDeadlineExceeded = true,
  NoBestTrial = true,
  TuningFailed = true,
  TuningDeadlineExceeded = true,
  TrainingFailed = true,
  TrainingDeadlineExceeded = true,
  GateMetricMissing = true,
  GateFailed = true,
  NoLoggedModel = true,
  LoggedModelFailed = true,
  RegistrationFailed = true,
  StorageNotResolvable = true,
  ServingFailed = true,
  ServingDeadlineExceeded = true,
  -- The canary failed its analysis or readiness and was rolled back; the stable version serves.
  RolledBack = true,
}

-- Ready=False reasons for an outside dependency that is unavailable for now; the operator
-- retries with backoff, so these are progress that is held up, not a failure.
local RETRIED_REASONS = {
  KubernetesUnavailable = true,
  ChildKindNotInstalled = true,
  Forbidden = true,
  Conflict = true,
  SecretNotFound = true,
  SecretKeyNotFound = true,
  SecretInvalid = true,
  MLflowUnavailable = true,
  MLflowUnauthorized = true,
  KFPUnavailable = true,
  PipelinePackageNotFound = true,
  PipelinePackageUnavailable = true,
}

-- The condition that reports the stage a phase stands for.
local STAGE_CONDITION = {
  PipelineRunning = "PipelineSucceeded",
  Tuning = "TuningSucceeded",
  Training = "TrainingSucceeded",
  Evaluating = "GatePassed",
  Registering = "ModelRegistered",
  Deploying = "ServingReady",
  Canary = "ServingReady",
}

local APPROVE_ANNOTATION = "traindeploy.io/approve"

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function present(value)
  return value ~= nil and value ~= ""
end

local function field(parent, key)
  if type(parent) == "table" then
    return parent[key]
  end
  return nil
end

local function condition(status, conditionType)
  local conditions = field(status, "conditions")
  if conditionType == nil or type(conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(conditions) do
    if type(c) == "table" and c.type == conditionType then
      return c
    end
  end
  return nil
end

-- "reason: message", leaving out whichever is empty.
local function explain(reason, message)
  if present(reason) and present(message) then
    return text(reason) .. ": " .. text(message)
  end
  if present(message) then
    return text(message)
  end
  return text(reason)
end

local meta = obj.metadata or {}
local name = text(meta.name)
local spec = obj.spec or {}
local status = obj.status

if type(status) ~= "table" or next(status) == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the TrainDeploy operator to report status"
  return hs
end

local generation = tonumber(meta.generation)
local observed = tonumber(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. text(meta.generation)
  return hs
end

local phase = status.phase
local ready = condition(status, "Ready")
local readyReason = field(ready, "reason")
local serving = field(status, "serving") or {}
local rollout = field(status, "rollout") or {}
local model = field(status, "model") or {}
local modelName = field(model, "name") or field(field(spec, "model"), "name")

-- A failed cycle: it stays failed until the spec changes.
if phase == "Failed" or (ready ~= nil and ready.status == "False" and FAILURE_REASONS[readyReason]) then
  hs.status = "Degraded"
  if ready ~= nil and ready.status == "False" then
    hs.message = explain(readyReason, ready.message)
  else
    hs.message = "the training cycle failed"
  end
  if present(status.failedStage) then
    hs.message = hs.message .. " (failed stage: " .. text(status.failedStage) .. ")"
  end
  local servingReady = condition(status, "ServingReady")
  if present(serving.modelVersion) and servingReady ~= nil and servingReady.status == "True" then
    hs.message = hs.message .. "; version " .. text(serving.modelVersion) .. " is still serving"
  end
  return hs
end

-- A rollout waiting for a person: Argo CD shows it as Suspended until the version is approved.
local pausedCondition = condition(status, "RolloutPaused")
local awaiting = rollout.awaitingApproval
if present(awaiting) or rollout.paused == true or phase == "AwaitingApproval"
    or (pausedCondition ~= nil and pausedCondition.status == "True") then
  local version = awaiting
  if not present(version) then
    version = rollout.version
  end
  if not present(version) then
    version = serving.targetVersion
  end
  local annotations = meta.annotations or {}
  local approved = annotations[APPROVE_ANNOTATION]
  -- The operator takes "4", "v4" and "V4" as the same approval.
  local given = text(approved)
  local wanted = text(version)
  if present(version) and (given == wanted or given == "v" .. wanted or given == "V" .. wanted) then
    hs.status = "Progressing"
    hs.message = "version " .. text(version) .. " is approved; waiting for the operator to resume the rollout"
    return hs
  end
  local shown = "<version>"
  if present(version) then
    shown = text(version)
  end
  local command = "kubectl annotate td/" .. name .. " " .. APPROVE_ANNOTATION .. "=" .. shown
  if approved ~= nil then
    command = command .. " --overwrite"
  end
  local what = "model"
  if present(modelName) then
    what = "model " .. text(modelName)
  end
  hs.status = "Suspended"
  hs.message = "rollout of " .. what .. " version " .. shown .. " is paused for approval"
  if present(serving.traffic) then
    hs.message = hs.message .. " (traffic: " .. text(serving.traffic) .. ")"
  end
  hs.message = hs.message .. "; to approve: " .. command
  return hs
end

if phase == "Ready" and ready ~= nil and ready.status == "True" then
  local version = serving.modelVersion
  if not present(version) then
    version = model.version
  end
  local parts = {}
  if present(modelName) then
    table.insert(parts, "model " .. text(modelName))
  else
    table.insert(parts, "model")
  end
  if present(version) then
    table.insert(parts, "version " .. text(version))
  end
  table.insert(parts, "is serving")
  if present(serving.url) then
    table.insert(parts, "at " .. text(serving.url))
  end
  hs.status = "Healthy"
  hs.message = table.concat(parts, " ")
  if present(serving.traffic) then
    hs.message = hs.message .. " (" .. text(serving.traffic) .. ")"
  end
  if rollout.state == "RolledBack" and present(rollout.version) then
    hs.message = hs.message .. "; version " .. text(rollout.version) .. " was rolled back"
    if present(rollout.message) then
      hs.message = hs.message .. ": " .. text(rollout.message)
    end
  end
  return hs
end

-- In progress: the phase and what the current stage says. A dependency outage keeps its reason,
-- so that the message shows what the operator is waiting for.
hs.status = "Progressing"
local stage = condition(status, STAGE_CONDITION[phase])
local label = text(phase)
if not present(phase) then
  label = "Pending"
end
local detail = ""
if ready ~= nil and RETRIED_REASONS[readyReason] then
  detail = "blocked, retrying: " .. explain(readyReason, ready.message)
elseif phase == "Canary" and present(rollout.message) then
  detail = text(rollout.message)
elseif stage ~= nil and present(stage.message) then
  detail = text(stage.message)
elseif ready ~= nil and ready.status ~= "True" and present(ready.message) then
  detail = text(ready.message)
end
if phase == "Canary" and present(serving.traffic) then
  label = label .. " (" .. text(serving.traffic) .. ")"
end
if detail ~= "" then
  hs.message = label .. ": " .. detail
else
  hs.message = label
end
return hs
