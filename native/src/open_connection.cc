#include "open_connection.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "addon_data.h"
#include "conn_core.h"
#include "connection_class.h"
#include "domain_events.h"
#include "event_loop.h"
#include "libvirt_error.h"
#include "promise_worker.h"

namespace virtbus {

namespace {

// Connection ids start at 1 and skip 0 when the counter wraps after 2^32 opens: 0 is the
// connectionId of synthetic events (injectSyntheticEvents).
std::atomic<uint32_t> g_nextConnectionId{1};

uint32_t NextConnectionId() noexcept {
  uint32_t id = g_nextConnectionId.fetch_add(1, std::memory_order_relaxed);
  while (id == 0) id = g_nextConnectionId.fetch_add(1, std::memory_order_relaxed);
  return id;
}

struct Credentials {
  std::optional<std::string> username;
  std::optional<std::string> password;
};

// Answers libvirt's credential requests from the options; never prompts. A credential we do not
// have fails authentication (libvirt then reports VIR_ERR_AUTH_FAILED) instead of asking a TTY.
int AuthCallback(virConnectCredentialPtr cred, unsigned int ncred, void* cbdata) {
  const Credentials* creds = static_cast<const Credentials*>(cbdata);
  for (unsigned int i = 0; i < ncred; i++) {
    const char* value = nullptr;
    switch (cred[i].type) {
      case VIR_CRED_AUTHNAME:
      case VIR_CRED_USERNAME:
        value = creds->username ? creds->username->c_str() : cred[i].defresult;
        break;
      case VIR_CRED_PASSPHRASE:
        value = creds->password ? creds->password->c_str() : nullptr;
        break;
      default:
        value = nullptr;
        break;
    }
    if (value == nullptr) return -1;
    cred[i].result = strdup(value);
    if (cred[i].result == nullptr) return -1;
    cred[i].resultlen = static_cast<unsigned int>(strlen(value));
  }
  return 0;
}

class OpenJob : public PromiseWorker {
 public:
  OpenJob(Napi::Env env, std::string uri, bool readOnly, int kaInterval, unsigned int kaCount,
          Credentials creds)
      : PromiseWorker(env, "virtbus.libvirt.open"),
        uri_(std::move(uri)),
        readOnly_(readOnly),
        kaInterval_(kaInterval),
        kaCount_(kaCount),
        creds_(std::move(creds)),
        id_(NextConnectionId()) {}

 protected:
  bool Run() override {
    int credTypes[] = {VIR_CRED_AUTHNAME, VIR_CRED_USERNAME, VIR_CRED_PASSPHRASE};
    virConnectAuth auth = {credTypes, sizeof(credTypes) / sizeof(credTypes[0]), AuthCallback, &creds_};
    conn_ = virConnectOpenAuth(uri_.c_str(), &auth, readOnly_ ? VIR_CONNECT_RO : 0);
    if (conn_ == nullptr) return Fail("virConnectOpenAuth");

    if (kaInterval_ > 0 && virConnectSetKeepAlive(conn_, kaInterval_, kaCount_) < 0) {
      err_.Capture("virConnectSetKeepAlive");
      // Local (in-process) drivers have no keepalive; only a remote failure is an error.
      if (err_.code != VIR_ERR_NO_SUPPORT) return false;
      err_ = LibvirtErr();
    }

    void* opaque = OpaqueFromId(id_);
    lifecycleCb_ = virConnectDomainEventRegisterAny(conn_, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                    VIR_DOMAIN_EVENT_CALLBACK(LifecycleCallback), opaque, nullptr);
    if (lifecycleCb_ < 0) return Fail("virConnectDomainEventRegisterAny(LIFECYCLE)");
    rebootCb_ = virConnectDomainEventRegisterAny(conn_, nullptr, VIR_DOMAIN_EVENT_ID_REBOOT,
                                                 VIR_DOMAIN_EVENT_CALLBACK(RebootCallback), opaque, nullptr);
    if (rebootCb_ < 0) return Fail("virConnectDomainEventRegisterAny(REBOOT)");
    if (virConnectRegisterCloseCallback(conn_, CloseCallback, opaque, nullptr) < 0) {
      return Fail("virConnectRegisterCloseCallback");
    }
    closeCb_ = true;
    return true;
  }

  // A half-opened connection is undone here, on the worker thread (closing is an RPC).
  void AfterRun() override {
    if (ok_ || conn_ == nullptr) return;
    Detached d{conn_, lifecycleCb_, rebootCb_, closeCb_};
    ConnCore scratch(id_);
    CloseDetached(scratch, d);
    conn_ = nullptr;
  }

  void OnOK() override {
    if (!ok_) {
      PromiseWorker::OnOK();  // rejects with the libvirt error
      return;
    }
    Napi::Env env = Env();
    auto core = std::make_shared<ConnCore>(id_);
    core->conn = conn_;
    core->lifecycleCb = lifecycleCb_;
    core->rebootCb = rebootCb_;
    core->closeCb = closeCb_;
    conn_ = nullptr;
    bool constructed = false;
    Settle([&] {
      Napi::HandleScope scope(env);
      Napi::Object obj = NewConnection(env, core);
      constructed = true;
      Resolve(obj);
    });
    if (!constructed) {
      // Only when the environment is going away: nobody will use this connection.
      AddonData* data = GetAddonData(env);
      ReapInBackground(core, data != nullptr ? data->tearingDown : nullptr);
      Settle([&] { Reject(Napi::Error::New(env, "openConnection: cannot create the NativeConnection").Value()); });
    }
  }

 private:
  std::string uri_;
  bool readOnly_;
  int kaInterval_;
  unsigned int kaCount_;
  Credentials creds_;
  uint32_t id_;
  virConnectPtr conn_ = nullptr;
  int lifecycleCb_ = -1;
  int rebootCb_ = -1;
  bool closeCb_ = false;
};

Napi::Value Rejected(Napi::Env env, const Napi::Error& error) {
  auto deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(error.Value());
  return deferred.Promise();
}

}  // namespace

Napi::Value OpenConnection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "uri must be a string");
  std::string uri = info[0].As<Napi::String>().Utf8Value();
  if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object opts = info[1].As<Napi::Object>();

  Napi::Value readOnly = opts.Get("readOnly");
  if (!readOnly.IsBoolean()) throw Napi::TypeError::New(env, "options.readOnly must be a boolean");
  Napi::Value interval = opts.Get("keepaliveInterval");
  Napi::Value count = opts.Get("keepaliveCount");
  if (!interval.IsNumber() || !count.IsNumber()) {
    throw Napi::TypeError::New(env, "options.keepaliveInterval and options.keepaliveCount must be numbers");
  }
  double intervalD = interval.As<Napi::Number>().DoubleValue();
  double countD = count.As<Napi::Number>().DoubleValue();
  if (!(intervalD <= 1e6) || !(countD >= 0 && countD <= 1e6)) {
    throw Napi::RangeError::New(env, "options.keepaliveInterval/keepaliveCount out of range");
  }
  Credentials creds;
  for (const char* key : {"username", "password"}) {
    Napi::Value v = opts.Get(key);
    if (v.IsUndefined() || v.IsNull()) continue;
    if (!v.IsString()) throw Napi::TypeError::New(env, std::string("options.") + key + " must be a string");
    (std::strcmp(key, "username") == 0 ? creds.username : creds.password) = v.As<Napi::String>().Utf8Value();
  }

  if (!EnsureEventImpl()) {
    return Rejected(env, StateError(env, "openConnection: virEventRegisterDefaultImpl failed", "ERR_VIRTBUS_EVENT_IMPL"));
  }
  int kaInterval = intervalD > 0 ? static_cast<int>(intervalD) : 0;
  if (kaInterval > 0 && !EventLoopRunning()) {
    return Rejected(env, StateError(env,
                                    "openConnection: keepalive needs the event loop running; call startEventLoop() "
                                    "first or pass keepaliveInterval 0",
                                    "ERR_VIRTBUS_LOOP_NOT_RUNNING"));
  }
  OpenJob* job = new OpenJob(env, std::move(uri), readOnly.As<Napi::Boolean>().Value(), kaInterval,
                             static_cast<unsigned int>(countD), std::move(creds));
  Napi::Promise promise = job->Promise();
  job->Queue();
  return promise;
}

}  // namespace virtbus
