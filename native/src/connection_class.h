// The NativeConnection JS class (connection.cc), as the rest of the addon sees it.
#pragma once

#include <napi.h>

#include <memory>

#include "conn_core.h"

namespace virtbus {

// JS thread. A NativeConnection owning `core`. Throws (a Napi::Error) only while the environment is
// going away. JS code cannot construct one itself: only this function can.
Napi::Object NewConnection(Napi::Env env, std::shared_ptr<ConnCore> core);

}  // namespace virtbus
