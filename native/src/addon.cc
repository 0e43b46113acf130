// virtbus_native: libvirt domain lifecycle events into a bounded queue, drained by JavaScript.
// The TypeScript contract is src/native/contract.ts; src/native/binding.ts is its only loader.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <string>
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
  ReleaseQueueOwner(hook->env);
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

// Event objects are assembled by a small JS function (compiled once per environment): creating
// objects through the C API costs ~1.8 us each (property definition is a slow path), while a JS
// object literal over columnar data costs a few tens of ns. Native code hands over one Float64Array
// (8 numbers per event), one latin1 string of fixed-width UUIDs and one UTF-8 string of names
// separated by NUL (a name never contains NUL).
constexpr size_t kCols = 8;
constexpr const char* kBuilderSource = R"JS(
(function buildEvents(n, nums, uuids, names) {
  const nameList = n > 0 ? names.split('\0') : [];
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * 8;
    const u = uuids.slice(i * 36, i * 36 + 36);
    out[i] = {
      connectionId: nums[o],
      eventId: nums[o + 1],
      type: nums[o + 2],
      detail: nums[o + 3],
      uuid: u.charCodeAt(0) === 0 ? '' : u,
      name: nameList[i],
      nameTruncated: nums[o + 4] === 1,
      wallMicros: nums[o + 5],
      monoMicros: nums[o + 6],
      seq: nums[o + 7],
    };
  }
  return out;
})
)JS";

Napi::Function EventBuilder(Napi::Env env, AddonData* data) {
  if (data->eventBuilder.IsEmpty()) {
    napi_value script;
    napi_value fn;
    Check(env, napi_create_string_utf8(env, kBuilderSource, NAPI_AUTO_LENGTH, &script));
    Check(env, napi_run_script(env, script, &fn));
    data->eventBuilder = Napi::Persistent(Napi::Function(env, fn));
  }
  return data->eventBuilder.Value();
}

Napi::Value BuildEvents(Napi::Env env, AddonData* data) {
  const std::vector<EventSlot>& events = data->drainEvents;
  const size_t n = events.size();
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, n * kCols * sizeof(double));
  double* nums = static_cast<double*>(buffer.Data());
  std::string& uuids = data->drainUuids;
  std::string& names = data->drainNames;
  uuids.assign(n * kUuidChars, '\0');
  names.clear();
  for (size_t i = 0; i < n; i++) {
    const EventSlot& e = events[i];
    double* row = nums + i * kCols;
    row[0] = e.connectionId;
    row[1] = e.eventId;
    row[2] = e.type;
    row[3] = e.detail;
    row[4] = e.nameTruncated ? 1 : 0;
    row[5] = static_cast<double>(e.wallMicros);
    row[6] = static_cast<double>(e.monoMicros);
    row[7] = static_cast<double>(e.seq);
    memcpy(&uuids[i * kUuidChars], e.uuid, strnlen(e.uuid, kUuidChars));
    if (i > 0) names.push_back('\0');
    names.append(e.name, e.nameLen);
  }
  Napi::Float64Array numsArray = Napi::Float64Array::New(env, n * kCols, buffer, 0);
  napi_value uuidValue;
  Check(env, napi_create_string_latin1(env, uuids.data(), uuids.size(), &uuidValue));
  Napi::String nameString = Napi::String::New(env, names.data(), names.size());
  return EventBuilder(env, data).Call(
      {Napi::Number::New(env, static_cast<double>(n)), numsArray, Napi::Value(env, uuidValue), nameString});
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
  // Another environment (a worker that loaded the addon) must not take the owner's events.
  if (!MayUseQueue(env)) {
    throw Napi::Error::New(env, "drain: the event queue belongs to the environment (thread) that started the event loop");
  }
  AddonData* data = GetAddonData(env);
  uint64_t overflowed = 0;
  EventQueue& queue = EventQueue::Get();
  size_t remaining = queue.Take(max, data->drainEvents, data->drainCloses, overflowed);

  Napi::Object result;
  try {
    result = Napi::Object::New(env);
    result.Set("events", BuildEvents(env, data));
    Napi::Array closes = Napi::Array::New(env, data->drainCloses.size());
    for (size_t i = 0; i < data->drainCloses.size(); i++) {
      Napi::Object c = Napi::Object::New(env);
      c.Set("connectionId", Napi::Number::New(env, data->drainCloses[i].connectionId));
      c.Set("reason", Napi::Number::New(env, data->drainCloses[i].reason));
      closes.Set(static_cast<uint32_t>(i), c);
    }
    result.Set("closes", closes);
    result.Set("overflowed", Napi::Number::New(env, static_cast<double>(overflowed)));
  } catch (...) {
    // The taken events are out of the ring for good: have the next drain report them (and the
    // overflow this one would have reported) so the caller resyncs, and keep the closes.
    queue.RestoreAfterFailedDrain(data->drainEvents.size(), overflowed, data->drainCloses);
    data->drainEvents.clear();
    data->drainCloses.clear();
    throw;
  }
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
