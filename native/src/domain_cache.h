// Per-connection cache of virDomainPtr by UUID string, so a state query costs one RPC instead of
// two. Remote and local drivers resolve a virDomainPtr by its UUID on every call, so a cached
// pointer stays valid across redefinition; entries are evicted on VIR_ERR_NO_DOMAIN.
#pragma once

#include <libvirt/libvirt.h>

#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace virtbus {

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

}  // namespace virtbus
