#include "conn_core.h"

#include <libvirt/virterror.h>

#include <thread>

#include "domain_events.h"

namespace virtbus {

virConnectPtr ConnCore::Acquire() {
  std::lock_guard<std::mutex> lock(mu);
  if (conn == nullptr) return nullptr;
  virConnectRef(conn);
  return conn;
}

bool ConnCore::Detach(Detached& out) {
  std::lock_guard<std::mutex> lock(mu);
  if (conn == nullptr) return false;
  out.conn = conn;
  out.lifecycleCb = lifecycleCb;
  out.rebootCb = rebootCb;
  out.closeCb = closeCb;
  conn = nullptr;
  return true;
}

void CloseDetached(ConnCore& core, const Detached& d) noexcept {
  if (d.lifecycleCb >= 0) virConnectDomainEventDeregisterAny(d.conn, d.lifecycleCb);
  if (d.rebootCb >= 0) virConnectDomainEventDeregisterAny(d.conn, d.rebootCb);
  if (d.closeCb) virConnectUnregisterCloseCallback(d.conn, CloseCallback);
  core.cache.CloseAndClear();
  virConnectClose(d.conn);
  virResetLastError();
}

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

JobRefGuard::~JobRefGuard() {
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

}  // namespace virtbus
