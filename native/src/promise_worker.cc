#include "promise_worker.h"

#include <libvirt/virterror.h>

#include <exception>
#include <string>

namespace virtbus {

PromiseWorker::PromiseWorker(Napi::Env env, const char* resourceName)
    : Napi::AsyncWorker(env, resourceName), deferred_(Napi::Promise::Deferred::New(env)) {}

void PromiseWorker::Execute() {
  try {
    virResetLastError();
    ok_ = Run();
  } catch (const std::exception& e) {
    ok_ = false;
    err_.SetInternal(std::string("virtbus native: ") + e.what());
  } catch (...) {
    ok_ = false;
    err_.SetInternal("virtbus native: unknown exception");
  }
  AfterRun();
  virResetLastError();
}

void PromiseWorker::OnOK() {
  Settle([this] {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (ok_) {
      deferred_.Resolve(Result(env));
    } else {
      deferred_.Reject(err_.ToJs(env));
    }
  });
}

void PromiseWorker::OnError(const Napi::Error& e) {
  Settle([&] { deferred_.Reject(e.Value()); });
}

void PromiseWorker::Resolve(Napi::Value value) {
  Settle([&] { deferred_.Resolve(value); });
}

void PromiseWorker::Reject(Napi::Value value) {
  Settle([&] { deferred_.Reject(value); });
}

}  // namespace virtbus
