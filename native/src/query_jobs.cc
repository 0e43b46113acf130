// The read-only jobs: libVersion, listAllDomains, domainState and domainStates. Listing and
// batched state queries ask for every domain's state in one bulk stats RPC where the driver has
// it, and fall back to one virDomainGetState per domain where it does not.
#include <libvirt/virterror.h>

#include <cstdlib>
#include <unordered_map>

#include "jobs.h"

namespace virtbus {

namespace {

Napi::Object StateObject(Napi::Env env, int state, int reason) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", Napi::Number::New(env, state));
  o.Set("reason", Napi::Number::New(env, reason));
  return o;
}

bool IsActiveById(virDomainPtr dom) { return virDomainGetID(dom) != static_cast<unsigned int>(-1); }

}  // namespace

bool LibVersionJob::Run() {
  if (virConnectGetLibVersion(conn_, &version_) < 0) return Fail("virConnectGetLibVersion");
  return true;
}

Napi::Value LibVersionJob::Result(Napi::Env env) { return Napi::Number::New(env, static_cast<double>(version_)); }

// Two RPCs in total when the driver supports virConnectGetAllDomainStats (the test driver and
// QEMU do): the persistent set, then every domain's state in one call. Otherwise one
// virDomainGetState per domain.
bool ListAllJob::Run() {
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

bool ListAllJob::RunPerDomain(const std::unordered_set<std::string>& persistent) {
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

Napi::Value ListAllJob::Result(Napi::Env env) {
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

bool StatesJob::Run() {
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
int StatesJob::RunBatch() {
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

Napi::Value StatesJob::Result(Napi::Env env) {
  if (single_) return StateObject(env, states_[0]->first, states_[0]->second);
  Napi::Array arr = Napi::Array::New(env, states_.size());
  for (size_t i = 0; i < states_.size(); i++) {
    const auto& s = states_[i];
    arr.Set(static_cast<uint32_t>(i), s ? Napi::Value(StateObject(env, s->first, s->second)) : env.Null());
  }
  return arr;
}

}  // namespace virtbus
