// A libvirt error copied on the thread that saw it (libvirt's last error is thread-local), turned
// into a JS Error { name: 'LibvirtError', libvirtCode, libvirtDomain, libvirtLevel } later.
#pragma once

#include <napi.h>

#include <string>

namespace virtbus {

struct LibvirtErr {
  int code = 0;
  int domain = 0;
  int level = 0;
  std::string message;

  // Call right after the failing libvirt call, on the same thread. `what` names the call for the
  // rare case where libvirt set no error.
  void Capture(const char* what);
  // A failure detected by the addon itself rather than reported by libvirt.
  void SetInternal(const std::string& what, int code = 1 /* VIR_ERR_INTERNAL_ERROR */);
  Napi::Value ToJs(Napi::Env env) const;
};

// Error for addon-level state problems (closed connection...), with a string `code`.
Napi::Error StateError(Napi::Env env, const std::string& message, const char* code);

}  // namespace virtbus
