// NativeConnection: one libvirt connection with LIFECYCLE + REBOOT domain callbacks and a close
// callback registered. Everything that may do an RPC runs on the libuv thread pool.
#pragma once

#include <napi.h>

namespace virtbus {

// Registers the NativeConnection class on `exports`' environment (kept in the addon data) and
// returns the openConnection(uri, options) function.
void InitConnection(Napi::Env env, Napi::Object exports);

// Called from the addon's environment cleanup hook: from then on finalizers leak instead of
// closing (no threads may be started while the environment is being torn down).
void MarkEnvironmentTearingDown(Napi::Env env);

}  // namespace virtbus
