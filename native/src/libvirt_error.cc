#include "libvirt_error.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

namespace virtbus {

void LibvirtErr::Capture(const char* what) {
  virErrorPtr err = virGetLastError();
  if (err != nullptr && err->code != VIR_ERR_OK) {
    code = err->code;
    domain = err->domain;
    level = err->level;
    message = err->message != nullptr ? err->message : std::string(what) + " failed";
  } else {
    code = VIR_ERR_INTERNAL_ERROR;
    domain = VIR_FROM_NONE;
    level = VIR_ERR_ERROR;
    message = std::string(what) + " failed without a libvirt error";
  }
  virResetLastError();
}

void LibvirtErr::SetInternal(const std::string& what, int errCode) {
  code = errCode;
  domain = VIR_FROM_NONE;
  level = VIR_ERR_ERROR;
  message = what;
}

Napi::Value LibvirtErr::ToJs(Napi::Env env) const {
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("name", Napi::String::New(env, "LibvirtError"));
  obj.Set("libvirtCode", Napi::Number::New(env, code));
  obj.Set("libvirtDomain", Napi::Number::New(env, domain));
  obj.Set("libvirtLevel", Napi::Number::New(env, level));
  return obj;
}

Napi::Error StateError(Napi::Env env, const std::string& message, const char* code) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

}  // namespace virtbus
