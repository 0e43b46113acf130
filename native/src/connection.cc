#include "connection.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "addon_data.h"
#include "event_loop.h"
#include "event_queue.h"
#include "libvirt_error.h"

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

// ---------------------------------------------------------------------------------------------
// libvirt callbacks: run on the event-loop thread. They only copy into the queue: no JS, no
// logging, no RPC (virDomainGetUUIDString and virDomainGetName read the local virDomain object),
// no allocation. The opaque pointer is the connection id itself, so no lifetime is involved.

inline uint32_t IdFromOpaque(void* opaque) {
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(opaque));
}
inline void* OpaqueFromId(uint32_t id) { return reinterpret_cast<void*>(static_cast<uintptr_t>(id)); }

void FillDomain(EventSlot& slot, virDomainPtr dom) noexcept {
  if (dom == nullptr || virDomainGetUUIDString(dom, slot.uuid) < 0) slot.uuid[0] = '\0';
  CopyName(slot, dom != nullptr ? virDomainGetName(dom) : nullptr);
}

int LifecycleCallback(virConnectPtr /*conn*/, virDomainPtr dom, int event, int detail, void* opaque) {
  EventSlot slot;
  StampNow(slot);
  slot.connectionId = IdFromOpaque(opaque);
  slot.eventId = VIR_DOMAIN_EVENT_ID_LIFECYCLE;
  slot.type = event;  // unknown values pass through as numbers
  slot.detail = detail;
  FillDomain(slot, dom);
  EventQueue::Get().Push(slot);
  virResetLastError();
  return 0;
}

void RebootCallback(virConnectPtr /*conn*/, virDomainPtr dom, void* opaque) {
  EventSlot slot;
  StampNow(slot);
  slot.connectionId = IdFromOpaque(opaque);
  slot.eventId = VIR_DOMAIN_EVENT_ID_REBOOT;
  slot.type = -1;
  slot.detail = -1;
  FillDomain(slot, dom);
  EventQueue::Get().Push(slot);
  virResetLastError();
}

void CloseCallback(virConnectPtr /*conn*/, int reason, void* opaque) {
  EventQueue::Get().PushClose(IdFromOpaque(opaque), reason);
}

// ---------------------------------------------------------------------------------------------
// Per-connection cache of virDomainPtr by UUID string, so a state query costs one RPC instead of
// two. Remote and local drivers resolve a virDomainPtr by its UUID on every call, so a cached
// pointer stays valid across redefinition; entries are evicted on VIR_ERR_NO_DOMAIN.

class DomainCache {
 public:
  static constexpr size_t kMaxEntries = 4096;

  // A new reference (free with virDomainFree) or null.
  virDomainPtr Get(const std::string& uuid) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(uuid);
    if (it == map_.end()) return nullptr;
    virDomainRef(it->second);
    return it->second;
  }

  void Put(const std::string& uuid, virDomainPtr dom) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;  // a domain holds a connection reference: none may outlive close()
    if (map_.size() >= kMaxEntries) ClearLocked();
    auto it = map_.find(uuid);
    if (it != map_.end()) return;
    virDomainRef(dom);
    map_.emplace(uuid, dom);
  }

  void Evict(const std::string& uuid) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(uuid);
    if (it == map_.end()) return;
    virDomainFree(it->second);
    map_.erase(it);
  }

  void CloseAndClear() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    ClearLocked();
  }

 private:
  void ClearLocked() {
    for (auto& entry : map_) virDomainFree(entry.second);
    map_.clear();
  }

  std::mutex mu_;
  bool closed_ = false;
  std::unordered_map<std::string, virDomainPtr> map_;
};

// What close() needs, moved out of the core under its lock so exactly one closer gets it.
struct Detached {
  virConnectPtr conn = nullptr;
  int lifecycleCb = -1;
  int rebootCb = -1;
  bool closeCb = false;
};

struct ConnCore {
  explicit ConnCore(uint32_t connectionId) : id(connectionId) {}

  const uint32_t id;
  std::mutex mu;
  virConnectPtr conn = nullptr;  // null once close() has started
  int lifecycleCb = -1;
  int rebootCb = -1;
  bool closeCb = false;
  DomainCache cache;

  // A reference for one job (virConnectRef is local, no RPC), or null when closed.
  virConnectPtr Acquire() {
    std::lock_guard<std::mutex> lock(mu);
    if (conn == nullptr) return nullptr;
    virConnectRef(conn);
    return conn;
  }

  bool Detach(Detached& out) {
    std::lock_guard<std::mutex> lock(mu);
    if (conn == nullptr) return false;
    out.conn = conn;
    out.lifecycleCb = lifecycleCb;
    out.rebootCb = rebootCb;
    out.closeCb = closeCb;
    conn = nullptr;
    return true;
  }
};

// Worker thread (or a reaper thread): deregister everything, drop cached domains, close. Errors
// are ignored: the connection may already be dead, and closing must always complete.
void CloseDetached(ConnCore& core, const Detached& d) noexcept {
  if (d.lifecycleCb >= 0) virConnectDomainEventDeregisterAny(d.conn, d.lifecycleCb);
  if (d.rebootCb >= 0) virConnectDomainEventDeregisterAny(d.conn, d.rebootCb);
  if (d.closeCb) virConnectUnregisterCloseCallback(d.conn, CloseCallback);
  core.cache.CloseAndClear();
  virConnectClose(d.conn);
  virResetLastError();
}

// Closes a connection nobody will close any more, off the JS thread (a finalizer must not do an
// RPC). While the environment is being torn down no thread is started: the connection is leaked
// (the process or worker is ending anyway).
void ReapInBackground(const std::shared_ptr<ConnCore>& core,
                      const std::shared_ptr<std::atomic<bool>>& tearingDown) noexcept {
  Detached d;
  if (!core->Detach(d)) return;
  if (tearingDown && tearingDown->load()) {
    new std::shared_ptr<ConnCore>(core);  // intentional leak
    return;
  }
  try {
    std::thread([core, d]() { CloseDetached(*core, d); }).detach();
  } catch (...) {
    new std::shared_ptr<ConnCore>(core);  // intentional leak
  }
}

// A job's connection reference between Acquire() and a successfully queued job. If anything in
// between throws, the destructor drops the reference on a helper thread: it may be the last one
// (close() may have run meanwhile), and the last virConnectClose can be an RPC.
class JobRefGuard {
 public:
  explicit JobRefGuard(virConnectPtr conn) noexcept : conn_(conn) {}
  JobRefGuard(const JobRefGuard&) = delete;
  JobRefGuard& operator=(const JobRefGuard&) = delete;
  ~JobRefGuard() {
    if (conn_ == nullptr) return;
    virConnectPtr conn = conn_;
    try {
      std::thread([conn]() {
        virConnectClose(conn);
        virResetLastError();
      }).detach();
    } catch (...) {
      // No thread: leak the reference rather than risk an RPC on the JS thread.
    }
  }
  void Dismiss() noexcept { conn_ = nullptr; }

 private:
  virConnectPtr conn_;
};

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

// ---------------------------------------------------------------------------------------------
// Thread-pool jobs. Each holds its own connection reference for its whole life, so close()
// racing a job is safe: whichever drops the last reference does the real close, on a worker.

class LibvirtJob : public Napi::AsyncWorker {
 public:
  LibvirtJob(Napi::Env env, std::shared_ptr<ConnCore> core, virConnectPtr conn)
      : Napi::AsyncWorker(env, "virtbus.libvirt"),
        deferred_(Napi::Promise::Deferred::New(env)),
        core_(std::move(core)),
        conn_(conn) {}

  // If the job never ran (environment teardown) the reference is leaked on purpose: dropping
  // the last one could mean an RPC on the JS thread.
  ~LibvirtJob() override = default;

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
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
    if (conn_ != nullptr) {
      virConnectClose(conn_);  // drop this job's reference, on the worker thread
      conn_ = nullptr;
    }
    virResetLastError();
  }

  void OnOK() override {
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

  void OnError(const Napi::Error& e) override {
    Settle([&] { deferred_.Reject(e.Value()); });
  }

  // Worker thread. Return false after Fail()/err_ set.
  virtual bool Run() = 0;
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }

  bool Fail(const char* what) {
    err_.Capture(what);
    return false;
  }

  // Looks a domain up (cache first). Returns a reference to free, or null with err_ set.
  virDomainPtr Lookup(const std::string& uuid) {
    virDomainPtr dom = core_->cache.Get(uuid);
    if (dom != nullptr) return dom;
    dom = virDomainLookupByUUIDString(conn_, uuid.c_str());
    if (dom == nullptr) {
      err_.Capture("virDomainLookupByUUIDString");
      return nullptr;
    }
    core_->cache.Put(uuid, dom);
    return dom;
  }

  // After a failed call on `dom`: capture, and forget a domain that no longer exists.
  bool FailOn(const std::string& uuid, const char* what) {
    err_.Capture(what);
    if (err_.code == VIR_ERR_NO_DOMAIN) core_->cache.Evict(uuid);
    return false;
  }

  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ConnCore> core_;
  virConnectPtr conn_;
  LibvirtErr err_;
  bool ok_ = false;
};

Napi::Object StateObject(Napi::Env env, int state, int reason) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", Napi::Number::New(env, state));
  o.Set("reason", Napi::Number::New(env, reason));
  return o;
}

class LibVersionJob : public LibvirtJob {
 public:
  using LibvirtJob::LibvirtJob;

 protected:
  bool Run() override {
    if (virConnectGetLibVersion(conn_, &version_) < 0) return Fail("virConnectGetLibVersion");
    return true;
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, static_cast<double>(version_)); }

 private:
  unsigned long version_ = 0;  // NOLINT(runtime/int): libvirt's type
};

struct DomainInfoC {
  std::string uuid;
  std::string name;
  int state = 0;
  int reason = 0;
  bool active = false;
  bool persistent = false;
};

std::string UuidOf(virDomainPtr dom) {
  char buf[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, buf) < 0) return std::string();
  return std::string(buf);
}

std::string NameOf(virDomainPtr dom) {
  const char* name = virDomainGetName(dom);
  return name != nullptr ? std::string(name) : std::string();
}

bool IsActiveById(virDomainPtr dom) { return virDomainGetID(dom) != static_cast<unsigned int>(-1); }

class ListAllJob : public LibvirtJob {
 public:
  using LibvirtJob::LibvirtJob;

 protected:
  // Two RPCs in total when the driver supports virConnectGetAllDomainStats (the test driver and
  // QEMU do): the persistent set, then every domain's state in one call. Otherwise one
  // virDomainGetState per domain.
  bool Run() override {
    std::unordered_set<std::string> persistent;
    {
      virDomainPtr* doms = nullptr;
      int n = virConnectListAllDomains(conn_, &doms, VIR_CONNECT_LIST_DOMAINS_PERSISTENT);
      if (n < 0) return Fail("virConnectListAllDomains");
      for (int i = 0; i < n; i++) {
        persistent.insert(UuidOf(doms[i]));
        virDomainFree(doms[i]);
      }
      free(doms);
    }

    virDomainStatsRecordPtr* records = nullptr;
    int n = virConnectGetAllDomainStats(conn_, VIR_DOMAIN_STATS_STATE, &records, 0);
    if (n >= 0) {
      infos_.reserve(static_cast<size_t>(n));
      for (int i = 0; i < n; i++) {
        virDomainStatsRecordPtr rec = records[i];
        DomainInfoC info;
        info.uuid = UuidOf(rec->dom);
        info.name = NameOf(rec->dom);
        virTypedParamsGetInt(rec->params, rec->nparams, "state.state", &info.state);
        virTypedParamsGetInt(rec->params, rec->nparams, "state.reason", &info.reason);
        info.active = IsActiveById(rec->dom);
        info.persistent = persistent.count(info.uuid) > 0;
        infos_.push_back(std::move(info));
      }
      virDomainStatsRecordListFree(records);
      return true;
    }
    err_.Capture("virConnectGetAllDomainStats");
    if (err_.code != VIR_ERR_NO_SUPPORT) return false;
    virResetLastError();
    return RunPerDomain(persistent);
  }

  bool RunPerDomain(const std::unordered_set<std::string>& persistent) {
    virDomainPtr* doms = nullptr;
    int n = virConnectListAllDomains(conn_, &doms, 0);
    if (n < 0) return Fail("virConnectListAllDomains");
    bool ok = true;
    for (int i = 0; i < n; i++) {
      virDomainPtr dom = doms[i];
      if (ok) {
        DomainInfoC info;
        info.uuid = UuidOf(dom);
        info.name = NameOf(dom);
        if (virDomainGetState(dom, &info.state, &info.reason, 0) < 0) {
          err_.Capture("virDomainGetState");
          if (err_.code != VIR_ERR_NO_DOMAIN) ok = false;  // a vanished domain is simply not listed
        } else {
          info.active = IsActiveById(dom);
          info.persistent = persistent.count(info.uuid) > 0;
          infos_.push_back(std::move(info));
        }
      }
      virDomainFree(dom);
    }
    free(doms);
    return ok;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Array arr = Napi::Array::New(env, infos_.size());
    for (size_t i = 0; i < infos_.size(); i++) {
      const DomainInfoC& info = infos_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("uuid", Napi::String::New(env, info.uuid));
      o.Set("name", Napi::String::New(env, info.name));
      o.Set("state", Napi::Number::New(env, info.state));
      o.Set("reason", Napi::Number::New(env, info.reason));
      o.Set("active", Napi::Boolean::New(env, info.active));
      o.Set("persistent", Napi::Boolean::New(env, info.persistent));
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

 private:
  std::vector<DomainInfoC> infos_;
};

class StatesJob : public LibvirtJob {
 public:
  StatesJob(Napi::Env env, std::shared_ptr<ConnCore> core, virConnectPtr conn, std::vector<std::string> uuids,
            bool single)
      : LibvirtJob(env, std::move(core), conn), uuids_(std::move(uuids)), single_(single) {}

 protected:
  bool Run() override {
    if (!single_ && uuids_.size() > 1) {
      int batch = RunBatch();
      if (batch >= 0) return batch == 1;
      states_.clear();  // the driver cannot batch: one virDomainGetState per domain
      err_ = LibvirtErr();
    }
    states_.reserve(uuids_.size());
    for (const std::string& uuid : uuids_) {
      virDomainPtr dom = Lookup(uuid);
      if (dom == nullptr) {
        if (!single_ && err_.code == VIR_ERR_NO_DOMAIN) {
          states_.push_back(std::nullopt);
          continue;
        }
        return false;
      }
      int state = 0;
      int reason = 0;
      int rc = virDomainGetState(dom, &state, &reason, 0);
      if (rc < 0) FailOn(uuid, "virDomainGetState");  // before virDomainFree, which resets the error
      virDomainFree(dom);
      if (rc < 0) {
        if (!single_ && err_.code == VIR_ERR_NO_DOMAIN) {
          states_.push_back(std::nullopt);
          continue;
        }
        return false;
      }
      states_.emplace_back(std::make_pair(state, reason));
    }
    return true;
  }

  // Lookups (free for cached domains) plus ONE virDomainListGetStats RPC for all known domains.
  // Returns 1 on success, 0 on failure (err_ set), -1 when the driver cannot do it.
  int RunBatch() {
    const size_t n = uuids_.size();
    states_.assign(n, std::nullopt);
    std::vector<virDomainPtr> doms;
    std::vector<std::string> canonical;  // UUID as libvirt formats it, per entry in doms
    std::vector<ptrdiff_t> slot(n, -1);
    std::unordered_map<std::string, ptrdiff_t> position;
    doms.reserve(n + 1);
    auto freeAll = [&doms] {
      for (virDomainPtr d : doms) {
        if (d != nullptr) virDomainFree(d);
      }
    };
    for (size_t i = 0; i < n; i++) {
      virDomainPtr dom = Lookup(uuids_[i]);
      if (dom == nullptr) {
        if (err_.code == VIR_ERR_NO_DOMAIN) continue;  // null
        freeAll();
        return 0;
      }
      std::string uuid = UuidOf(dom);
      auto seen = position.find(uuid);
      if (seen != position.end()) {  // the same domain twice: ask for it once
        slot[i] = seen->second;
        virDomainFree(dom);
        continue;
      }
      slot[i] = static_cast<ptrdiff_t>(doms.size());
      position.emplace(uuid, slot[i]);
      doms.push_back(dom);
      canonical.push_back(std::move(uuid));
    }
    if (doms.empty()) return 1;
    doms.push_back(nullptr);  // NULL-terminated
    virDomainStatsRecordPtr* records = nullptr;
    int nrec = virDomainListGetStats(doms.data(), VIR_DOMAIN_STATS_STATE, &records, 0);
    if (nrec < 0) {
      err_.Capture("virDomainListGetStats");
      freeAll();
      return (err_.code == VIR_ERR_NO_SUPPORT || err_.code == VIR_ERR_NO_DOMAIN) ? -1 : 0;
    }
    std::unordered_map<std::string, std::pair<int, int>> byUuid;
    for (int r = 0; r < nrec; r++) {
      std::pair<int, int> st{0, 0};
      virTypedParamsGetInt(records[r]->params, records[r]->nparams, "state.state", &st.first);
      virTypedParamsGetInt(records[r]->params, records[r]->nparams, "state.reason", &st.second);
      byUuid.emplace(UuidOf(records[r]->dom), st);
    }
    virDomainStatsRecordListFree(records);
    for (size_t i = 0; i < n; i++) {
      if (slot[i] < 0) continue;
      const std::string& uuid = canonical[static_cast<size_t>(slot[i])];
      auto it = byUuid.find(uuid);
      if (it != byUuid.end()) {
        states_[i] = it->second;
      } else {
        core_->cache.Evict(uuids_[i]);  // vanished since the lookup: skipped by the driver
      }
    }
    freeAll();
    return 1;
  }

  Napi::Value Result(Napi::Env env) override {
    if (single_) return StateObject(env, states_[0]->first, states_[0]->second);
    Napi::Array arr = Napi::Array::New(env, states_.size());
    for (size_t i = 0; i < states_.size(); i++) {
      const auto& s = states_[i];
      arr.Set(static_cast<uint32_t>(i), s ? Napi::Value(StateObject(env, s->first, s->second)) : env.Null());
    }
    return arr;
  }

 private:
  std::vector<std::string> uuids_;
  bool single_;
  std::vector<std::optional<std::pair<int, int>>> states_;
};

enum class DomainOp { kJobType, kIsActive, kUndefine, kStart, kShutdown, kDestroy, kSuspend, kResume, kReboot };

class DomainOpJob : public LibvirtJob {
 public:
  DomainOpJob(Napi::Env env, std::shared_ptr<ConnCore> core, virConnectPtr conn, std::string uuid, DomainOp op)
      : LibvirtJob(env, std::move(core), conn), uuid_(std::move(uuid)), op_(op) {}

 protected:
  bool Run() override {
    virDomainPtr dom = Lookup(uuid_);
    if (dom == nullptr) return false;
    bool ok = Apply(dom);
    virDomainFree(dom);
    if (ok && op_ == DomainOp::kUndefine) core_->cache.Evict(uuid_);
    return ok;
  }

  bool Apply(virDomainPtr dom) {
    switch (op_) {
      case DomainOp::kJobType: {
        virTypedParameterPtr params = nullptr;
        int nparams = 0;
        if (virDomainGetJobStats(dom, &number_, &params, &nparams, 0) == 0) {
          virTypedParamsFree(params, nparams);
          return true;
        }
        FailOn(uuid_, "virDomainGetJobStats");
        if (err_.code != VIR_ERR_NO_SUPPORT) return false;
        // Drivers without job statistics may still have the older virDomainGetJobInfo.
        virDomainJobInfo jobInfo;
        if (virDomainGetJobInfo(dom, &jobInfo) < 0) return FailOn(uuid_, "virDomainGetJobInfo");
        number_ = jobInfo.type;
        return true;
      }
      case DomainOp::kIsActive:
        number_ = virDomainIsActive(dom);
        if (number_ < 0) return FailOn(uuid_, "virDomainIsActive");
        return true;
      case DomainOp::kUndefine:
        return virDomainUndefine(dom) < 0 ? FailOn(uuid_, "virDomainUndefine") : true;
      case DomainOp::kStart:
        return virDomainCreate(dom) < 0 ? FailOn(uuid_, "virDomainCreate") : true;
      case DomainOp::kShutdown:
        return virDomainShutdown(dom) < 0 ? FailOn(uuid_, "virDomainShutdown") : true;
      case DomainOp::kDestroy:
        return virDomainDestroy(dom) < 0 ? FailOn(uuid_, "virDomainDestroy") : true;
      case DomainOp::kSuspend:
        return virDomainSuspend(dom) < 0 ? FailOn(uuid_, "virDomainSuspend") : true;
      case DomainOp::kResume:
        return virDomainResume(dom) < 0 ? FailOn(uuid_, "virDomainResume") : true;
      case DomainOp::kReboot:
        return virDomainReboot(dom, 0) < 0 ? FailOn(uuid_, "virDomainReboot") : true;
    }
    err_.SetInternal("virtbus native: unknown domain operation");
    return false;
  }

  Napi::Value Result(Napi::Env env) override {
    switch (op_) {
      case DomainOp::kJobType:
        return Napi::Number::New(env, number_);
      case DomainOp::kIsActive:
        return Napi::Boolean::New(env, number_ == 1);
      default:
        return env.Undefined();
    }
  }

 private:
  std::string uuid_;
  DomainOp op_;
  int number_ = 0;
};

class DefineJob : public LibvirtJob {
 public:
  DefineJob(Napi::Env env, std::shared_ptr<ConnCore> core, virConnectPtr conn, std::string xml, bool create)
      : LibvirtJob(env, std::move(core), conn), xml_(std::move(xml)), create_(create) {}

 protected:
  bool Run() override {
    virDomainPtr dom =
        create_ ? virDomainCreateXML(conn_, xml_.c_str(), 0) : virDomainDefineXML(conn_, xml_.c_str());
    if (dom == nullptr) return Fail(create_ ? "virDomainCreateXML" : "virDomainDefineXML");
    uuid_ = UuidOf(dom);
    name_ = NameOf(dom);
    core_->cache.Put(uuid_, dom);
    virDomainFree(dom);
    return true;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("uuid", Napi::String::New(env, uuid_));
    o.Set("name", Napi::String::New(env, name_));
    return o;
  }

 private:
  std::string xml_;
  bool create_;
  std::string uuid_;
  std::string name_;
};

class CloseJob : public Napi::AsyncWorker {
 public:
  CloseJob(Napi::Env env, std::shared_ptr<ConnCore> core, const Detached& detached)
      : Napi::AsyncWorker(env, "virtbus.libvirt.close"),
        deferred_(Napi::Promise::Deferred::New(env)),
        core_(std::move(core)),
        detached_(detached) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override { CloseDetached(*core_, detached_); }
  void OnOK() override {
    Settle([this] { deferred_.Resolve(Env().Undefined()); });
  }
  void OnError(const Napi::Error& e) override {
    Settle([&] { deferred_.Reject(e.Value()); });
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ConnCore> core_;
  Detached detached_;
};

// ---------------------------------------------------------------------------------------------
// openConnection

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

thread_local std::shared_ptr<ConnCore>* t_constructing = nullptr;

class OpenJob : public Napi::AsyncWorker {
 public:
  OpenJob(Napi::Env env, std::string uri, bool readOnly, int kaInterval, unsigned int kaCount,
          Credentials creds)
      : Napi::AsyncWorker(env, "virtbus.libvirt.open"),
        deferred_(Napi::Promise::Deferred::New(env)),
        uri_(std::move(uri)),
        readOnly_(readOnly),
        kaInterval_(kaInterval),
        kaCount_(kaCount),
        creds_(std::move(creds)),
        id_(NextConnectionId()) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      virResetLastError();
      ok_ = Run();
    } catch (...) {
      err_.SetInternal("virtbus native: exception while opening the connection");
      ok_ = false;
    }
    if (!ok_ && conn_ != nullptr) {
      Detached d{conn_, lifecycleCb_, rebootCb_, closeCb_};
      ConnCore scratch(id_);
      CloseDetached(scratch, d);
      conn_ = nullptr;
    }
    virResetLastError();
  }

  bool Run() {
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

  bool Fail(const char* what) {
    err_.Capture(what);
    return false;
  }

  void OnOK() override {
    if (!ok_) {
      Settle([this] {
        Napi::Env env = Env();
        Napi::HandleScope scope(env);
        deferred_.Reject(err_.ToJs(env));
      });
      return;
    }
    Napi::Env env = Env();
    auto core = std::make_shared<ConnCore>(id_);
    core->conn = conn_;
    core->lifecycleCb = lifecycleCb_;
    core->rebootCb = rebootCb_;
    core->closeCb = closeCb_;
    conn_ = nullptr;
    AddonData* data = GetAddonData(env);
    bool constructed = false;
    Settle([&] {
      Napi::HandleScope scope(env);
      t_constructing = &core;
      Napi::Object obj;
      try {
        obj = data->connectionCtor.New({Napi::External<std::shared_ptr<ConnCore>>::New(env, &core)});
      } catch (...) {
        t_constructing = nullptr;
        throw;
      }
      t_constructing = nullptr;
      constructed = true;
      deferred_.Resolve(obj);
    });
    if (!constructed) {
      // Only when the environment is going away: nobody will use this connection.
      ReapInBackground(core, data != nullptr ? data->tearingDown : nullptr);
      Settle([&] {
        deferred_.Reject(Napi::Error::New(env, "openConnection: cannot create the NativeConnection").Value());
      });
    }
  }

  void OnError(const Napi::Error& e) override {
    Settle([&] { deferred_.Reject(e.Value()); });
  }

 private:
  Napi::Promise::Deferred deferred_;
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
  LibvirtErr err_;
  bool ok_ = false;
};

// ---------------------------------------------------------------------------------------------
// The JS class.

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

Napi::Value OpenConnection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string uri = RequireString(info, 0, "uri");
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
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Reject(
        StateError(env, "openConnection: virEventRegisterDefaultImpl failed", "ERR_VIRTBUS_EVENT_IMPL").Value());
    return deferred.Promise();
  }
  int kaInterval = intervalD > 0 ? static_cast<int>(intervalD) : 0;
  if (kaInterval > 0 && !EventLoopRunning()) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Reject(StateError(env,
                               "openConnection: keepalive needs the event loop running; call startEventLoop() "
                               "first or pass keepaliveInterval 0",
                               "ERR_VIRTBUS_LOOP_NOT_RUNNING")
                        .Value());
    return deferred.Promise();
  }
  OpenJob* job = new OpenJob(env, std::move(uri), readOnly.As<Napi::Boolean>().Value(), kaInterval,
                             static_cast<unsigned int>(countD), std::move(creds));
  Napi::Promise promise = job->Promise();
  job->Queue();
  return promise;
}

}  // namespace

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
