// libvirt's default event implementation on one dedicated native thread, and the once-per-batch
// wake-up of JavaScript through an unref'd thread-safe function.
#pragma once

#include <napi.h>

namespace virtbus {

// virInitialize + a silent virSetErrorFunc + virEventRegisterDefaultImpl, exactly once per process.
// Returns false if registration failed (then no connection can get events).
bool EnsureEventImpl() noexcept;

// JS thread. Throws Napi::Error if already running or if libvirt refuses.
void StartEventLoop(Napi::Env env, Napi::Function onWake);
// JS thread. Idempotent. Throws if the loop was started from another environment (worker).
void StopEventLoop(Napi::Env env);
bool EventLoopRunning() noexcept;

// The queue is process-wide but belongs to the environment that last started the loop (kept after
// stopEventLoop(), so the owner can still drain what is queued), until that environment is torn
// down or another one starts the loop. Nobody owns it before the first start.
// True when `env` may drain / inject: it is the owner, or there is none.
bool MayUseQueue(napi_env env) noexcept;
// Environment teardown: gives up ownership if `env` holds it.
void ReleaseQueueOwner(napi_env env) noexcept;

// Any thread, never blocks: flips the wake-pending flag and, only on a false->true flip, queues one
// call of onWake. A no-op (flag reverted) while no loop/wake function exists.
void RequestWake() noexcept;

}  // namespace virtbus
