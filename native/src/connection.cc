// NativeConnection: the JS object of one libvirt connection, with LIFECYCLE + REBOOT domain
// callbacks and a close callback registered (open_connection.cc). Each method queues a job
// (jobs.h) holding its own connection reference; close() detaches the connection from the shared
// core (conn_core.h) so exactly one close runs, and the finalizer reaps a connection nobody closed.
#include "connection.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon_data.h"
#include "conn_core.h"
#include "connection_class.h"
#include "jobs.h"
#include "libvirt_error.h"
#include "open_connection.h"

namespace virtbus {

namespace {

// The core a NativeConnection is being constructed for: set only by NewConnection around the
// constructor call, so JS code cannot make a NativeConnection of its own.
thread_local std::shared_ptr<ConnCore>* t_constructing = nullptr;

std::string RequireString(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (info.Length() <= index || !info[index].IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  }
  return info[index].As<Napi::String>().Utf8Value();
}

class Connection : public Napi::ObjectWrap<Connection> {
 public:
  static Napi::Function DefineClass(Napi::Env env) {
    return Napi::ObjectWrap<Connection>::DefineClass(
        env, "NativeConnection",
        {
            InstanceAccessor<&Connection::GetId>("id"),
            InstanceMethod<&Connection::IsAlive>("isAlive"),
            InstanceMethod<&Connection::LibVersion>("libVersion"),
            InstanceMethod<&Connection::ListAllDomains>("listAllDomains"),
            InstanceMethod<&Connection::DomainState>("domainState"),
            InstanceMethod<&Connection::DomainStates>("domainStates"),
            InstanceMethod<&Connection::JobType>("jobType"),
            InstanceMethod<&Connection::IsActive>("isActive"),
            InstanceMethod<&Connection::CreateXML>("createXML"),
            InstanceMethod<&Connection::DefineXML>("defineXML"),
            InstanceMethod<&Connection::Undefine>("undefine"),
            InstanceMethod<&Connection::Start>("start"),
            InstanceMethod<&Connection::Shutdown>("shutdown"),
            InstanceMethod<&Connection::Destroy>("destroy"),
            InstanceMethod<&Connection::Suspend>("suspend"),
            InstanceMethod<&Connection::Resume>("resume"),
            InstanceMethod<&Connection::Reboot>("reboot"),
            InstanceMethod<&Connection::Close>("close"),
        });
  }

  explicit Connection(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Connection>(info) {
    if (t_constructing == nullptr || info.Length() != 1 || !info[0].IsExternal() ||
        info[0].As<Napi::External<std::shared_ptr<ConnCore>>>().Data() != t_constructing) {
      throw Napi::TypeError::New(info.Env(), "NativeConnection is created by openConnection() only");
    }
    core_ = *t_constructing;
    tearingDown_ = GetAddonData(info.Env())->tearingDown;
  }

  // Runs on the JS thread (GC or environment teardown): never an RPC here.
  ~Connection() override {
    if (core_) ReapInBackground(core_, tearingDown_);
  }

 private:
  Napi::Value GetId(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), core_->id); }

  Napi::Value IsAlive(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lock(core_->mu);
    bool alive = core_->conn != nullptr && virConnectIsAlive(core_->conn) == 1;
    virResetLastError();
    return Napi::Boolean::New(info.Env(), alive);
  }

  // A connection reference for a job, or a rejected promise when closed.
  virConnectPtr AcquireOr(Napi::Env env, Napi::Value* rejected) {
    virConnectPtr conn = core_->Acquire();
    if (conn == nullptr) {
      auto deferred = Napi::Promise::Deferred::New(env);
      deferred.Reject(StateError(env, "libvirt connection " + std::to_string(core_->id) + " is closed",
                                 "ERR_VIRTBUS_CONNECTION_CLOSED")
                          .Value());
      *rejected = deferred.Promise();
    }
    return conn;
  }

  template <typename Job, typename... Args>
  Napi::Value Queue(Napi::Env env, Args&&... args) {
    Napi::Value rejected;
    virConnectPtr conn = AcquireOr(env, &rejected);
    if (conn == nullptr) return rejected;
    // Until the job is queued (Deferred::New, the AsyncWorker constructor or Queue() may throw),
    // the reference belongs to this guard, which drops it off the JS thread on the way out.
    JobRefGuard guard(conn);
    std::unique_ptr<Job> job(new Job(env, core_, conn, std::forward<Args>(args)...));
    Napi::Promise promise = job->Promise();
    job->Queue();
    job.release();  // owned by node-addon-api now (deleted after OnOK/OnError)
    guard.Dismiss();
    return promise;
  }

  Napi::Value DomainOpCall(const Napi::CallbackInfo& info, DomainOp op) {
    std::string uuid = RequireString(info, 0, "uuid");
    return Queue<DomainOpJob>(info.Env(), std::move(uuid), op);
  }

  Napi::Value LibVersion(const Napi::CallbackInfo& info) { return Queue<LibVersionJob>(info.Env()); }
  Napi::Value ListAllDomains(const Napi::CallbackInfo& info) { return Queue<ListAllJob>(info.Env()); }

  Napi::Value DomainState(const Napi::CallbackInfo& info) {
    std::vector<std::string> uuids{RequireString(info, 0, "uuid")};
    return Queue<StatesJob>(info.Env(), std::move(uuids), true);
  }

  Napi::Value DomainStates(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "uuids must be an array of strings");
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<std::string> uuids;
    uuids.reserve(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (!v.IsString()) throw Napi::TypeError::New(env, "uuids must be an array of strings");
      uuids.push_back(v.As<Napi::String>().Utf8Value());
    }
    return Queue<StatesJob>(env, std::move(uuids), false);
  }

  Napi::Value JobType(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kJobType); }
  Napi::Value IsActive(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kIsActive); }
  Napi::Value Undefine(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kUndefine); }
  Napi::Value Start(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kStart); }
  Napi::Value Shutdown(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kShutdown); }
  Napi::Value Destroy(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kDestroy); }
  Napi::Value Suspend(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kSuspend); }
  Napi::Value Resume(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kResume); }
  Napi::Value Reboot(const Napi::CallbackInfo& info) { return DomainOpCall(info, DomainOp::kReboot); }

  Napi::Value CreateXML(const Napi::CallbackInfo& info) {
    return Queue<DefineJob>(info.Env(), RequireString(info, 0, "xml"), true);
  }
  Napi::Value DefineXML(const Napi::CallbackInfo& info) {
    return Queue<DefineJob>(info.Env(), RequireString(info, 0, "xml"), false);
  }

  // Idempotent: every call returns the first call's promise.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!closePromise_.IsEmpty()) return closePromise_.Value();
    Napi::Promise promise;
    Detached d;
    if (core_->Detach(d)) {
      CloseJob* job = new CloseJob(env, core_, d);
      promise = job->Promise();
      job->Queue();
    } else {
      auto deferred = Napi::Promise::Deferred::New(env);
      deferred.Resolve(env.Undefined());
      promise = deferred.Promise();
    }
    closePromise_ = Napi::Persistent(promise.As<Napi::Object>());
    return promise;
  }

  std::shared_ptr<ConnCore> core_;
  std::shared_ptr<std::atomic<bool>> tearingDown_;
  Napi::ObjectReference closePromise_;
};

}  // namespace

Napi::Object NewConnection(Napi::Env env, std::shared_ptr<ConnCore> core) {
  AddonData* data = GetAddonData(env);
  if (data == nullptr) throw Napi::Error::New(env, "virtbus native: no addon data");
  t_constructing = &core;
  Napi::Object obj;
  try {
    obj = data->connectionCtor.New({Napi::External<std::shared_ptr<ConnCore>>::New(env, &core)});
  } catch (...) {
    t_constructing = nullptr;
    throw;
  }
  t_constructing = nullptr;
  return obj;
}

void InitConnection(Napi::Env env, Napi::Object exports) {
  AddonData* data = GetAddonData(env);
  data->connectionCtor = Napi::Persistent(Connection::DefineClass(env));
  exports.Set("openConnection", Napi::Function::New<OpenConnection>(env, "openConnection"));
}

void MarkEnvironmentTearingDown(Napi::Env env) {
  AddonData* data = GetAddonData(env);
  if (data != nullptr) data->tearingDown->store(true);
}

}  // namespace virtbus
