-- Argo CD health of a switchboard.dev ProtocolRollout, from its phase, paused flag and
-- observedGeneration. A rolled-back or aborted rollout is Degraded until its weights are
-- edited; a pause (spec or request) is Suspended.
local hs = {}
local weights = ""
if obj.status ~= nil and obj.status.weights ~= nil then
  weights = " (" .. obj.status.weights .. ")"
end
local function message(type, status, default)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type and c.status == status and c.message ~= nil and c.message ~= "" then
        return c.message
      end
    end
  end
  return default
end

if obj.status == nil then
  if obj.spec ~= nil and obj.spec.paused then
    hs.status = "Suspended"
    hs.message = "Paused"
  else
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to report status"
  end
  return hs
end
local generation = obj.metadata.generation or 0
if obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
local phase = obj.status.phase
if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = "Completed" .. weights
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "Paused" .. weights
elseif phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = message("RolledBack", "True", "Rolled back to the last stable weights") .. weights
elseif phase == "Aborted" then
  hs.status = "Degraded"
  hs.message = message("Progressing", "False", "Aborted: back to the last stable weights") .. weights
else
  hs.status = "Progressing"
  hs.message = "Moving shards toward the spec weights" .. weights
end
return hs
