// The jobs behind NativeConnection's methods, one per kind of libvirt work. Queries (libVersion,
// listAllDomains, domainState(s)) are defined in query_jobs.cc, the jobs that change domains (the
// domain operations, define/create) in domain_jobs.cc; CloseJob is all here.
#pragma once

#include <libvirt/libvirt.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "conn_core.h"
#include "libvirt_job.h"
#include "promise_worker.h"

namespace virtbus {

class LibVersionJob : public LibvirtJob {
 public:
  using LibvirtJob::LibvirtJob;

 protected:
  bool Run() override;
  Napi::Value Result(Napi::Env env) override;

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

class ListAllJob : public LibvirtJob {
 public:
  using LibvirtJob::LibvirtJob;

 protected:
  bool Run() override;
  Napi::Value Result(Napi::Env env) override;

 private:
  bool RunPerDomain(const std::unordered_set<std::string>& persistent);

  std::vector<DomainInfoC> infos_;
};

class StatesJob : public LibvirtJob {
 public:
  StatesJob(Napi::Env env, std::shared_ptr<ConnCore> core, virConnectPtr conn, std::vector<std::string> uuids,
            bool single)
      : LibvirtJob(env, std::move(core), conn), uuids_(std::move(uuids)), single_(single) {}

 protected:
  bool Run() override;
  Napi::Value Result(Napi::Env env) override;

 private:
  int RunBatch();

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
  bool Run() override;
  Napi::Value Result(Napi::Env env) override;

 private:
  bool Apply(virDomainPtr dom);

  std::string uuid_;
  DomainOp op_;
  int number_ = 0;
};

class DefineJob : public LibvirtJob {
 public:
  DefineJob(Napi::Env env, std::shared_ptr<ConnCore> core, virConnectPtr conn, std::string xml, bool create)
      : LibvirtJob(env, std::move(core), conn), xml_(std::move(xml)), create_(create) {}

 protected:
  bool Run() override;
  Napi::Value Result(Napi::Env env) override;

 private:
  std::string xml_;
  bool create_;
  std::string uuid_;
  std::string name_;
};

// Closes a connection already detached from its core (the core no longer hands out references).
class CloseJob : public PromiseWorker {
 public:
  CloseJob(Napi::Env env, std::shared_ptr<ConnCore> core, const Detached& detached)
      : PromiseWorker(env, "virtbus.libvirt.close"), core_(std::move(core)), detached_(detached) {}

 protected:
  bool Run() override {
    CloseDetached(*core_, detached_);
    return true;
  }

 private:
  std::shared_ptr<ConnCore> core_;
  Detached detached_;
};

}  // namespace virtbus
