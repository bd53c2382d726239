-- Argo CD health of a switchboard.dev RoomShard (created by the operator), from its phase.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to assign the shard"
  return hs
end
local phase = obj.status.phase
local node = obj.status.node or ""
local epoch = obj.status.epoch or 0
if phase == "Assigned" then
  hs.status = "Healthy"
  hs.message = "Served by " .. node .. " (epoch " .. epoch .. ")"
elseif phase == "HandingOff" then
  hs.status = "Progressing"
  hs.message = "Handing off from " .. node
elseif phase == "Recovering" then
  hs.status = "Progressing"
  hs.message = "Failing over to " .. node .. " (epoch " .. epoch .. ")"
elseif phase == "Unassigned" then
  hs.status = "Degraded"
  hs.message = "No ready node in the shard's version pool: its rooms cannot be joined"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
