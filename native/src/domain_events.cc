// libvirt callbacks: run on the event-loop thread. They only copy into the queue: no JS, no
// logging, no RPC (virDomainGetUUIDString and virDomainGetName read the local virDomain object),
// no allocation.
#include "domain_events.h"

#include <libvirt/virterror.h>

#include "event_queue.h"

namespace virtbus {

namespace {

void FillDomain(EventSlot& slot, virDomainPtr dom) noexcept {
  if (dom == nullptr || virDomainGetUUIDString(dom, slot.uuid) < 0) slot.uuid[0] = '\0';
  CopyName(slot, dom != nullptr ? virDomainGetName(dom) : nullptr);
}

}  // namespace

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

}  // namespace virtbus
