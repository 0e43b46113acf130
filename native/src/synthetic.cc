#include "synthetic.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "event_loop.h"
#include "event_queue.h"

namespace virtbus {

namespace {

struct SyntheticDomain {
  char uuid[kUuidChars + 1];
  char name[32];
};

struct Injection {
  explicit Injection(Napi::Env e) : deferred(Napi::Promise::Deferred::New(e)), env(e) {}

  Napi::Promise::Deferred deferred;
  napi_env env;
  std::thread thread;
  std::atomic<bool> abort{false};
  bool started = false;
  uint64_t count = 0;
  FullPolicy policy = FullPolicy::kDrop;
  std::vector<SyntheticDomain> domains;
};

// No JS callback: the thread-safe function only exists so that its finalizer (JS thread) runs
// once the injector thread has released it; it keeps the process alive while the promise is open.
using DoneTsfn = Napi::TypedThreadSafeFunction<Injection, void, nullptr>;

std::mutex g_registryMu;
std::set<Injection*> g_registry;

void InjectMain(Injection* inj, DoneTsfn tsfn) noexcept {
  static constexpr int32_t kTypes[3] = {2, 3, 4};  // STARTED, SUSPENDED, RESUMED
  const uint64_t ndomains = inj->domains.size();
  EventSlot slot;
  slot.connectionId = 0;
  slot.eventId = 0;  // VIR_DOMAIN_EVENT_ID_LIFECYCLE
  slot.detail = 0;
  EventQueue& queue = EventQueue::Get();
  for (uint64_t i = 0; i < inj->count; i++) {
    if (inj->abort.load(std::memory_order_relaxed)) break;
    const SyntheticDomain& d = inj->domains[i % ndomains];
    slot.type = kTypes[(i / ndomains) % 3];
    memcpy(slot.uuid, d.uuid, sizeof(slot.uuid));
    CopyName(slot, d.name);
    StampNow(slot);
    queue.Push(slot, inj->policy, &inj->abort);
  }
  tsfn.Release();  // the last thing this thread does with the function
}

void InjectFinalize(Napi::Env env, void* /*data*/, Injection* inj) {
  if (inj->thread.joinable()) inj->thread.join();
  {
    std::lock_guard<std::mutex> lock(g_registryMu);
    g_registry.erase(inj);
  }
  if (env != nullptr && inj->started) {
    try {
      inj->deferred.Resolve(env.Undefined());
    } catch (...) {
      // Environment tearing down: nobody is waiting any more.
    }
  }
  delete inj;
}

bool IsIntegerIn(const Napi::Value& v, double lo, double hi, double* out) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || std::floor(d) != d) return false;
  *out = d;
  return true;
}

}  // namespace

Napi::Value InjectSyntheticEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double count = 0;
  double domains = 0;
  if (info.Length() < 1 || !IsIntegerIn(info[0], 0, 9007199254740991.0, &count)) {
    throw Napi::RangeError::New(env, "injectSyntheticEvents: count must be a non-negative integer");
  }
  if (info.Length() < 2 || !IsIntegerIn(info[1], 1, 1000000, &domains)) {
    throw Napi::RangeError::New(env, "injectSyntheticEvents: domains must be an integer in [1, 1000000]");
  }
  // Synthetic events (connectionId 0) would land in another environment's event stream.
  if (!MayUseQueue(env)) {
    throw Napi::Error::New(
        env, "injectSyntheticEvents: the event queue belongs to the environment (thread) that started the event loop");
  }
  FullPolicy policy = FullPolicy::kDrop;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsObject()) throw Napi::TypeError::New(env, "injectSyntheticEvents: options must be an object");
    Napi::Value wait = info[2].As<Napi::Object>().Get("waitWhenFull");
    if (!wait.IsUndefined()) {
      if (!wait.IsBoolean()) throw Napi::TypeError::New(env, "options.waitWhenFull must be a boolean");
      if (wait.As<Napi::Boolean>().Value()) policy = FullPolicy::kWait;
    }
  }

  Injection* inj = new Injection(env);
  inj->count = static_cast<uint64_t>(count);
  inj->policy = policy;
  inj->domains.resize(static_cast<size_t>(domains));
  for (size_t i = 0; i < inj->domains.size(); i++) {
    SyntheticDomain& d = inj->domains[i];
    snprintf(d.uuid, sizeof(d.uuid), "5e1f0000-0000-4000-8000-%012x", static_cast<unsigned>(i));
    snprintf(d.name, sizeof(d.name), "synthetic-%zu", i);
  }
  Napi::Promise promise = inj->deferred.Promise();

  DoneTsfn tsfn;
  try {
    tsfn = DoneTsfn::New(env, "virtbus.injectSyntheticEvents", 0, 1, inj, InjectFinalize, static_cast<void*>(nullptr));
  } catch (...) {
    delete inj;
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(g_registryMu);
    g_registry.insert(inj);
  }
  try {
    inj->thread = std::thread(InjectMain, inj, tsfn);
    inj->started = true;
  } catch (const std::exception& e) {
    tsfn.Release();  // finalizer frees inj without resolving
    throw Napi::Error::New(env, std::string("injectSyntheticEvents: cannot start thread: ") + e.what());
  }
  return promise;
}

void AbortInjections(napi_env env) {
  {
    std::lock_guard<std::mutex> lock(g_registryMu);
    for (Injection* inj : g_registry) {
      if (inj->env == env) inj->abort.store(true, std::memory_order_release);
    }
  }
  EventQueue::Get().NotifySpace();
}

}  // namespace virtbus
