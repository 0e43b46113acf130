#include "libvirt_job.h"

#include <libvirt/virterror.h>

namespace virtbus {

void LibvirtJob::AfterRun() {
  if (conn_ != nullptr) {
    virConnectClose(conn_);  // drop this job's reference, on the worker thread
    conn_ = nullptr;
  }
}

virDomainPtr LibvirtJob::Lookup(const std::string& uuid) {
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

bool LibvirtJob::FailOn(const std::string& uuid, const char* what) {
  err_.Capture(what);
  if (err_.code == VIR_ERR_NO_DOMAIN) core_->cache.Evict(uuid);
  return false;
}

std::string UuidOf(virDomainPtr dom) {
  char buf[VIR_UUID_STRING_BUFLEN];
  if (virDomainGetUUIDString(dom, buf) < 0) return std::string();
  return std::string(buf);
}

std::string NameOf(virDomainPtr dom) {
  const char* name = virDomainGetName(dom);
  return name != nullptr ? std::string(name) : std::string();
}

}  // namespace virtbus
