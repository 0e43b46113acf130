#include "event_loop.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "event_queue.h"

namespace virtbus {

namespace {

// The context of each wake function is its loop's generation (an integer in the pointer): a call
// still queued on a released function must not reach that loop's onWake once it was stopped.
void WakeCallJs(Napi::Env env, Napi::Function onWake, void* context, void* data);
using WakeTsfn = Napi::TypedThreadSafeFunction<void, void, WakeCallJs>;

struct LoopState {
  std::mutex ctlMu;  // serialises start/stop
  std::atomic<bool> running{false};
  std::thread thread;
  int wakeTimer = -1;
  napi_env ownerEnv = nullptr;
  std::atomic<uint64_t> loopErrors{0};

  std::mutex tsfnMu;  // guards tsfn/tsfnActive against a concurrent release
  WakeTsfn tsfn;
  bool tsfnActive = false;
  std::atomic<bool> wakePending{false};
  // Bumped by every start; the running loop's wake function carries the value it was created with.
  std::atomic<uintptr_t> generation{0};
  // The environment that last started the loop (see MayUseQueue); cleared on its teardown.
  std::atomic<napi_env> queueOwner{nullptr};
};

// Leaked on purpose: at process exit a running loop thread may still touch it.
LoopState& State() {
  static LoopState* state = new LoopState();
  return *state;
}

void SilentErrorFunc(void* /*userData*/, virErrorPtr /*error*/) {}
void NoopTimeout(int /*timer*/, void* /*opaque*/) {}

std::once_flag g_implOnce;
bool g_implOk = false;

void LoopMain() noexcept {
  LoopState& s = State();
  while (s.running.load(std::memory_order_acquire)) {
    if (virEventRunDefaultImpl() < 0) {
      // Should not happen with the default implementation; avoid a hot spin if it does.
      s.loopErrors.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

void WakeCallJs(Napi::Env env, Napi::Function onWake, void* context, void* /*data*/) {
  LoopState& s = State();
  // Release() lets calls already queued run: one queued before stopEventLoop() must neither call
  // that loop's onWake (its consumer is stopped; it would drain a later loop's events) nor touch
  // wakePending, which belongs to the current loop (start resets it).
  if (reinterpret_cast<uintptr_t>(context) != s.generation.load(std::memory_order_acquire) ||
      !s.running.load(std::memory_order_acquire)) {
    return;
  }
  // Clear before calling: an event enqueued from here on triggers a new wake, and the drain that
  // onWake performs sees everything enqueued before the clear.
  s.wakePending.store(false, std::memory_order_seq_cst);
  if (env == nullptr || onWake.IsEmpty()) return;  // finalising: only the flag matters
  napi_value result;
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  napi_status status = napi_call_function(env, undefined, onWake, 0, nullptr, &result);
  if (status == napi_pending_exception) {
    // Surface a throwing onWake as a real uncaught exception (Node 20 would otherwise only warn).
    napi_value error;
    if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
  }
}

void StopLocked(LoopState& s, bool fromCleanupHook);

void CleanupHook(void* /*arg*/) {
  LoopState& s = State();
  std::lock_guard<std::mutex> lock(s.ctlMu);
  StopLocked(s, true);
}

void StopLocked(LoopState& s, bool fromCleanupHook) {
  if (!s.running.load()) return;
  s.running.store(false, std::memory_order_release);
  // A zero-period timer makes the default implementation interrupt its poll (it writes its wake-up
  // pipe when called from another thread) and fire on the next iteration, which then sees the flag.
  virEventUpdateTimeout(s.wakeTimer, 0);
  if (s.thread.joinable()) s.thread.join();
  virEventRemoveTimeout(s.wakeTimer);
  s.wakeTimer = -1;
  {
    std::lock_guard<std::mutex> lock(s.tsfnMu);
    if (s.tsfnActive) {
      s.tsfnActive = false;
      s.tsfn.Release();
    }
  }
  if (!fromCleanupHook && s.ownerEnv != nullptr) napi_remove_env_cleanup_hook(s.ownerEnv, CleanupHook, nullptr);
  s.ownerEnv = nullptr;
}

}  // namespace

bool EnsureEventImpl() noexcept {
  std::call_once(g_implOnce, [] {
    virInitialize();
    virSetErrorFunc(nullptr, SilentErrorFunc);
    g_implOk = virEventRegisterDefaultImpl() == 0;
  });
  return g_implOk;
}

void StartEventLoop(Napi::Env env, Napi::Function onWake) {
  LoopState& s = State();
  std::lock_guard<std::mutex> lock(s.ctlMu);
  if (s.running.load()) throw Napi::Error::New(env, "startEventLoop: the event loop is already running");
  if (!EnsureEventImpl()) throw Napi::Error::New(env, "startEventLoop: virEventRegisterDefaultImpl failed");

  // Disabled (-1) until stop needs it; creating it here means stop cannot fail to wake the loop.
  int timer = virEventAddTimeout(-1, NoopTimeout, nullptr, nullptr);
  if (timer < 0) throw Napi::Error::New(env, "startEventLoop: virEventAddTimeout failed");

  const uintptr_t generation = s.generation.load() + 1;
  WakeTsfn tsfn = WakeTsfn::New(env, onWake, "virtbus.eventLoop.wake", 0, 1, reinterpret_cast<void*>(generation));
  tsfn.Unref(env);  // the wake function alone must never keep the process alive

  s.wakeTimer = timer;
  {
    std::lock_guard<std::mutex> tlock(s.tsfnMu);
    s.tsfn = tsfn;
    s.tsfnActive = true;
  }
  s.wakePending.store(false);
  s.generation.store(generation, std::memory_order_release);
  s.running.store(true, std::memory_order_release);
  try {
    s.thread = std::thread(LoopMain);
  } catch (const std::exception& e) {
    s.running.store(false);
    virEventRemoveTimeout(timer);
    s.wakeTimer = -1;
    std::lock_guard<std::mutex> tlock(s.tsfnMu);
    s.tsfnActive = false;
    s.tsfn.Release();
    throw Napi::Error::New(env, std::string("startEventLoop: cannot start the loop thread: ") + e.what());
  }
  // Registered after the wake function was created, so on environment teardown this hook runs
  // before Node closes that function and Release() is still legal.
  napi_add_env_cleanup_hook(env, CleanupHook, nullptr);
  s.ownerEnv = env;
  s.queueOwner.store(env, std::memory_order_release);

  // Events queued while no loop ran (e.g. by the injector) must not wait for the next event.
  if (EventQueue::Get().HasPending()) RequestWake();
}

void StopEventLoop(Napi::Env env) {
  LoopState& s = State();
  std::lock_guard<std::mutex> lock(s.ctlMu);
  if (!s.running.load()) return;
  if (s.ownerEnv != env) {
    throw Napi::Error::New(env, "stopEventLoop: the event loop was started by another thread's environment");
  }
  StopLocked(s, false);
}

bool EventLoopRunning() noexcept { return State().running.load(std::memory_order_acquire); }

bool MayUseQueue(napi_env env) noexcept {
  napi_env owner = State().queueOwner.load(std::memory_order_acquire);
  return owner == nullptr || owner == env;
}

void ReleaseQueueOwner(napi_env env) noexcept {
  napi_env expected = env;
  State().queueOwner.compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel);
}

void RequestWake() noexcept {
  LoopState& s = State();
  if (s.wakePending.exchange(true, std::memory_order_seq_cst)) return;
  std::lock_guard<std::mutex> lock(s.tsfnMu);
  napi_status status = napi_generic_failure;
  if (s.tsfnActive) status = s.tsfn.NonBlockingCall();
  if (status == napi_closing) s.tsfnActive = false;  // environment going away: never touch it again
  if (status != napi_ok) s.wakePending.store(false, std::memory_order_seq_cst);
}

}  // namespace virtbus
