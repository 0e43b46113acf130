// virtbus_native: libvirt domain lifecycle events into a bounded queue, drained by JavaScript.
// The TypeScript contract is src/native/contract.ts; src/native/binding.ts is its only loader.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "addon_data.h"
#include "connection.h"
#include "event_loop.h"
#include "event_queue.h"
#include "synthetic.h"

namespace virtbus {

namespace {

struct HookArg {
  std::shared_ptr<std::atomic<bool>> tearingDown;
  napi_env env;
};

// Registered at module load, so it runs after the event loop's own hook (hooks run in reverse
// order) and before Node finalises this environment's objects.
void EnvCleanup(void* arg) {
  HookArg* hook = static_cast<HookArg*>(arg);
  hook->tearingDown->store(true);
  AbortInjections(hook->env);
  delete hook;
}

Napi::Value StartEventLoopJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "startEventLoop: onWake must be a function");
  StartEventLoop(env, info[0].As<Napi::Function>());
  return env.Undefined();
}

Napi::Value StopEventLoopJs(const Napi::CallbackInfo& info) {
  StopEventLoop(info.Env());
  return info.Env().Undefined();
}

Napi::Value EventLoopRunningJs(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), EventLoopRunning());
}

Napi::Value SetQueueCapacityJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "setQueueCapacity: capacity must be a number");
  double cap = info[0].As<Napi::Number>().DoubleValue();
  if (!(cap >= 1 && cap <= static_cast<double>(kMaxCapacity)) || std::floor(cap) != cap) {
    throw Napi::RangeError::New(env, "setQueueCapacity: capacity must be an integer in [1, " +
                                         std::to_string(kMaxCapacity) + "]");
  }
  if (EventLoopRunning()) throw Napi::RangeError::New(env, "setQueueCapacity: stop the event loop first");
  std::string why;
  if (!EventQueue::Get().SetCapacity(static_cast<size_t>(cap), &why)) throw Napi::RangeError::New(env, why);
  return env.Undefined();
}

inline void Check(napi_env env, napi_status status) {
  if (status != napi_ok) throw Napi::Error::New(env);
}

enum Key { kConnectionId, kEventId, kType, kDetail, kUuid, kName, kNameTruncated, kWall, kMono, kSeq, kKeyCount };
constexpr const char* kKeyNames[kKeyCount] = {"connectionId", "eventId",    "type",       "detail",     "uuid",
                                              "name",         "nameTruncated", "wallMicros", "monoMicros", "seq"};

// Builds the event objects with the C API: one napi_define_properties per event, property names
// created once per drain.
napi_value BuildEvents(napi_env env, const std::vector<EventSlot>& events) {
  napi_value keys[kKeyCount];
  for (int k = 0; k < kKeyCount; k++) Check(env, napi_create_string_latin1(env, kKeyNames[k], NAPI_AUTO_LENGTH, &keys[k]));
  napi_value arr;
  Check(env, napi_create_array_with_length(env, events.size(), &arr));
  napi_property_descriptor desc[kKeyCount];
  for (int k = 0; k < kKeyCount; k++) {
    desc[k] = napi_property_descriptor{nullptr, keys[k], nullptr, nullptr, nullptr, nullptr, napi_default_jsproperty, nullptr};
  }
  constexpr size_t kChunk = 512;
  for (size_t base = 0; base < events.size(); base += kChunk) {
    napi_handle_scope scope;
    Check(env, napi_open_handle_scope(env, &scope));
    size_t end = std::min(events.size(), base + kChunk);
    for (size_t i = base; i < end; i++) {
      const EventSlot& e = events[i];
      napi_value v[kKeyCount];
      Check(env, napi_create_uint32(env, e.connectionId, &v[kConnectionId]));
      Check(env, napi_create_int32(env, e.eventId, &v[kEventId]));
      Check(env, napi_create_int32(env, e.type, &v[kType]));
      Check(env, napi_create_int32(env, e.detail, &v[kDetail]));
      Check(env, napi_create_string_latin1(env, e.uuid, NAPI_AUTO_LENGTH, &v[kUuid]));
      Check(env, napi_create_string_utf8(env, e.name, e.nameLen, &v[kName]));
      Check(env, napi_get_boolean(env, e.nameTruncated, &v[kNameTruncated]));
      Check(env, napi_create_double(env, static_cast<double>(e.wallMicros), &v[kWall]));
      Check(env, napi_create_double(env, static_cast<double>(e.monoMicros), &v[kMono]));
      Check(env, napi_create_double(env, static_cast<double>(e.seq), &v[kSeq]));
      for (int k = 0; k < kKeyCount; k++) desc[k].value = v[k];
      napi_value obj;
      Check(env, napi_create_object(env, &obj));
      Check(env, napi_define_properties(env, obj, kKeyCount, desc));
      Check(env, napi_set_element(env, arr, static_cast<uint32_t>(i), obj));
    }
    Check(env, napi_close_handle_scope(env, scope));
  }
  return arr;
}

Napi::Value DrainJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t max = std::numeric_limits<size_t>::max();
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "drain: max must be a number");
    double m = info[0].As<Napi::Number>().DoubleValue();
    if (!(m >= 0) || std::floor(m) != m) throw Napi::RangeError::New(env, "drain: max must be a non-negative integer");
    if (m < static_cast<double>(kMaxCapacity)) max = static_cast<size_t>(m);
  }
  AddonData* data = GetAddonData(env);
  uint64_t overflowed = 0;
  size_t remaining = EventQueue::Get().Take(max, data->drainEvents, data->drainCloses, overflowed);

  Napi::Object result = Napi::Object::New(env);
  result.Set("events", Napi::Value(env, BuildEvents(env, data->drainEvents)));
  Napi::Array closes = Napi::Array::New(env, data->drainCloses.size());
  for (size_t i = 0; i < data->drainCloses.size(); i++) {
    Napi::Object c = Napi::Object::New(env);
    c.Set("connectionId", Napi::Number::New(env, data->drainCloses[i].connectionId));
    c.Set("reason", Napi::Number::New(env, data->drainCloses[i].reason));
    closes.Set(static_cast<uint32_t>(i), c);
  }
  result.Set("closes", closes);
  result.Set("overflowed", Napi::Number::New(env, static_cast<double>(overflowed)));
  data->drainEvents.clear();
  data->drainCloses.clear();
  // A partial drain must not strand the rest until the next event: ask for another wake.
  if (remaining > 0) RequestWake();
  return result;
}

Napi::Value QueueStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  QueueStatsSnapshot s = EventQueue::Get().Stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("depth", Napi::Number::New(env, static_cast<double>(s.depth)));
  o.Set("capacity", Napi::Number::New(env, static_cast<double>(s.capacity)));
  o.Set("highWater", Napi::Number::New(env, static_cast<double>(s.highWater)));
  o.Set("dropped", Napi::Number::New(env, static_cast<double>(s.dropped)));
  o.Set("enqueued", Napi::Number::New(env, static_cast<double>(s.enqueued)));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData(data);  // deleted by node-addon-api when the environment goes away
  napi_add_env_cleanup_hook(env, EnvCleanup, new HookArg{data->tearingDown, env});
  EventQueue::Get();  // preallocate the ring at load time

  exports.Set("startEventLoop", Napi::Function::New<StartEventLoopJs>(env, "startEventLoop"));
  exports.Set("stopEventLoop", Napi::Function::New<StopEventLoopJs>(env, "stopEventLoop"));
  exports.Set("eventLoopRunning", Napi::Function::New<EventLoopRunningJs>(env, "eventLoopRunning"));
  exports.Set("setQueueCapacity", Napi::Function::New<SetQueueCapacityJs>(env, "setQueueCapacity"));
  exports.Set("drain", Napi::Function::New<DrainJs>(env, "drain"));
  exports.Set("queueStats", Napi::Function::New<QueueStatsJs>(env, "queueStats"));
  exports.Set("injectSyntheticEvents", Napi::Function::New<InjectSyntheticEvents>(env, "injectSyntheticEvents"));
  InitConnection(env, exports);
  return exports;
}

}  // namespace

}  // namespace virtbus

static Napi::Object InitVirtbusNative(Napi::Env env, Napi::Object exports) { return virtbus::Init(env, exports); }

NODE_API_MODULE(virtbus_native, InitVirtbusNative)
