// PromiseWorker: a thread-pool job that settles a JS promise. Every native call that may block
// (an RPC, a connect, a close) is one: the work runs on the libuv pool (Run), and the promise is
// resolved with Result() or rejected with the captured libvirt error back on the JS thread. The
// promise/settle/fail plumbing lives here once; the jobs say only what they do.
#pragma once

#include <napi.h>

#include "libvirt_error.h"

namespace virtbus {

// Settling a promise can fail only while the environment is being torn down (a terminating
// worker): then nobody can observe the promise any more. Swallow that instead of letting a
// Napi::Error escape node-addon-api's completion callback, which would std::terminate the process.
template <typename Fn>
void Settle(Fn&& fn) noexcept {
  try {
    fn();
  } catch (...) {
  }
}

class PromiseWorker : public Napi::AsyncWorker {
 public:
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  PromiseWorker(Napi::Env env, const char* resourceName);

  // Worker thread: libvirt's thread-local error is cleared, Run() called with every exception
  // turned into a failure, then AfterRun() (always, to release what Run held).
  void Execute() final;
  // Worker thread. Returns false after Fail() (or err_ set).
  virtual bool Run() = 0;
  virtual void AfterRun() {}

  // JS thread: resolves with Result() when Run() succeeded, else rejects with err_.
  void OnOK() override;
  void OnError(const Napi::Error& e) override;
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }

  bool Fail(const char* what) {
    err_.Capture(what);
    return false;
  }
  // JS thread, for workers that settle in their own way.
  void Resolve(Napi::Value value);
  void Reject(Napi::Value value);

  LibvirtErr err_;
  bool ok_ = false;

 private:
  Napi::Promise::Deferred deferred_;
};

}  // namespace virtbus
