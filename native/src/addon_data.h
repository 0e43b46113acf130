// Per-environment state of the addon (main thread and each worker that loads it).
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "event_queue.h"

namespace virtbus {

struct AddonData {
  Napi::FunctionReference connectionCtor;
  // Set by the environment cleanup hook; shared with objects that may be finalised after the
  // addon data itself.
  std::shared_ptr<std::atomic<bool>> tearingDown = std::make_shared<std::atomic<bool>>(false);
  // drain() scratch buffers, reused so a drain does not allocate in steady state.
  std::vector<EventSlot> drainEvents;
  std::vector<CloseItem> drainCloses;
  std::string drainUuids;
  std::string drainNames;
  // JS function that turns drain()'s columnar data into event objects (see addon.cc).
  Napi::FunctionReference eventBuilder;
};

inline AddonData* GetAddonData(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

}  // namespace virtbus
