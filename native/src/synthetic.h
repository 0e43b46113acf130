// Benchmark/test producer: a separate native thread pushing synthetic LIFECYCLE events through the
// same EventQueue::Push path that the libvirt callbacks use.
#pragma once

#include <napi.h>

namespace virtbus {

Napi::Value InjectSyntheticEvents(const Napi::CallbackInfo& info);
// Environment teardown: make this environment's injector threads stop early (they may be
// waiting for room that nobody will make any more).
void AbortInjections(napi_env env);

}  // namespace virtbus
