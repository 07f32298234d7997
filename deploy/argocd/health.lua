-- Argo CD health of a rudder.dev HelmRelease, from the conditions rudder writes.
--   Suspended    spec.suspend, or an action waiting for approval (ApprovalPending)
--   Progressing  rudder has not observed this generation yet, is still working (Ready
--                Unknown), or waits for a dependency
--   Degraded     Ready=False: Stalled (retrying cannot help without a change), or failed
--                and retried with backoff (the failure is real meanwhile)
--   Healthy      Ready=True for the current generation
local hs = {status = "Progressing", message = "waiting for rudder"}

local function condition(conditions, kind)
  for _, c in ipairs(conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true"
  return hs
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation or 0
if status == nil or (status.observedGeneration or 0) < generation then
  hs.message = "waiting for rudder to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status.conditions, "Ready")
local stalled = condition(status.conditions, "Stalled")
local reconciling = condition(status.conditions, "Reconciling")

local function said(c)
  if c == nil then
    return ""
  end
  return (c.reason or "") .. ": " .. (c.message or "")
end

if ready ~= nil and ready.status == "False" and ready.reason == "ApprovalPending" then
  -- approval: manual, and a person has not approved the preview yet.
  hs.status = "Suspended"
  hs.message = said(ready)
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(ready ~= nil and ready.status == "False" and ready or stalled)
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(ready)
elseif ready ~= nil and ready.status == "False" and ready.reason ~= "DependencyNotReady" then
  -- Failed and retried with backoff (Reconciling=True, RetryScheduled): the failure is real.
  hs.status = "Degraded"
  hs.message = said(ready)
elseif ready ~= nil then
  hs.message = said(ready)
elseif reconciling ~= nil then
  hs.message = said(reconciling)
end
return hs
