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

// Any thread, never blocks: flips the wake-pending flag and, only on a false->true flip, queues one
// call of onWake. A no-op (flag reverted) while no loop/wake function exists.
void RequestWake() noexcept;

}  // namespace virtbus
