// ConnCore: the part of a connection that outlives its JS object and is shared with every job
// (the virConnectPtr, its callback ids and the domain cache), and the ways it is closed. Each job
// holds its own connection reference for its whole life, so close() racing a job is safe:
// whichever drops the last reference does the real close, on a worker thread.
#pragma once

#include <libvirt/libvirt.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "domain_cache.h"

namespace virtbus {

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
  virConnectPtr Acquire();
  // Takes the connection out of the core (false: already taken by another closer).
  bool Detach(Detached& out);
};

// Worker thread (or a reaper thread): deregister everything, drop cached domains, close. Errors
// are ignored: the connection may already be dead, and closing must always complete.
void CloseDetached(ConnCore& core, const Detached& d) noexcept;

// Closes a connection nobody will close any more, off the JS thread (a finalizer must not do an
// RPC). While the environment is being torn down no thread is started: the connection is leaked
// (the process or worker is ending anyway).
void ReapInBackground(const std::shared_ptr<ConnCore>& core,
                      const std::shared_ptr<std::atomic<bool>>& tearingDown) noexcept;

// A job's connection reference between Acquire() and a successfully queued job. If anything in
// between throws, the destructor drops the reference on a helper thread: it may be the last one
// (close() may have run meanwhile), and the last virConnectClose can be an RPC.
class JobRefGuard {
 public:
  explicit JobRefGuard(virConnectPtr conn) noexcept : conn_(conn) {}
  JobRefGuard(const JobRefGuard&) = delete;
  JobRefGuard& operator=(const JobRefGuard&) = delete;
  ~JobRefGuard();
  void Dismiss() noexcept { conn_ = nullptr; }

 private:
  virConnectPtr conn_;
};

}  // namespace virtbus
