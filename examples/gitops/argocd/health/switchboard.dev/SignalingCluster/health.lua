-- Argo CD health of a switchboard.dev SignalingCluster, from its status conditions
-- (Ready, Progressing, Degraded, ConfigApplied) and observedGeneration.
local hs = {}
local function condition(t)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == t then
        return c
      end
    end
  end
  return nil
end
local function why(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
local generation = obj.metadata.generation or 0
if obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end
if obj.spec ~= nil and obj.spec.replicas == 0 then
  hs.status = "Suspended"
  hs.message = "Scaled to zero nodes"
  return hs
end
local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = why(degraded, "Degraded")
  return hs
end
local progressing = condition("Progressing")
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = why(progressing, "Pods or shards are changing")
  return hs
end
local config = condition("ConfigApplied")
if config ~= nil and config.status ~= "True" then
  hs.status = "Progressing"
  hs.message = why(config, "Nodes have not acknowledged the latest config revision")
  return hs
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = why(ready, "All shards assigned")
  return hs
end
hs.status = "Progressing"
hs.message = why(ready, "Waiting for the cluster to become ready")
return hs
