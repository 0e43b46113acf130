// openConnection(uri, options): checks the options on the JS thread, then connects, authenticates
// and registers the event callbacks on the thread pool (OpenJob), resolving with a NativeConnection.
#pragma once

#include <napi.h>

namespace virtbus {

Napi::Value OpenConnection(const Napi::CallbackInfo& info);

}  // namespace virtbus
