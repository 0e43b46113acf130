// LibvirtJob: a PromiseWorker that calls libvirt on one connection. It holds its own connection
// reference from queueing to the end of Run(), dropped on the worker thread (the last reference's
// virConnectClose can be an RPC), so close() racing a job is safe.
#pragma once

#include <libvirt/libvirt.h>

#include <memory>
#include <string>

#include "conn_core.h"
#include "promise_worker.h"

namespace virtbus {

class LibvirtJob : public PromiseWorker {
 public:
  LibvirtJob(Napi::Env env, std::shared_ptr<ConnCore> core, virConnectPtr conn)
      : PromiseWorker(env, "virtbus.libvirt"), core_(std::move(core)), conn_(conn) {}

  // If the job never ran (environment teardown) the reference is leaked on purpose: dropping
  // the last one could mean an RPC on the JS thread.
  ~LibvirtJob() override = default;

 protected:
  // Worker thread: drops this job's connection reference.
  void AfterRun() override;

  // Looks a domain up (cache first). Returns a reference to free, or null with err_ set.
  virDomainPtr Lookup(const std::string& uuid);
  // After a failed call on `dom`: capture, and forget a domain that no longer exists.
  bool FailOn(const std::string& uuid, const char* what);

  std::shared_ptr<ConnCore> core_;
  virConnectPtr conn_;
};

// A domain's UUID as libvirt formats it (empty on failure), and its name; both local, no RPC.
std::string UuidOf(virDomainPtr dom);
std::string NameOf(virDomainPtr dom);

}  // namespace virtbus
