// The libvirt callbacks every connection registers (domain LIFECYCLE and REBOOT events, and the
// connection's close). They run on the event-loop thread and only copy into the event queue.
#pragma once

#include <libvirt/libvirt.h>

#include <cstdint>

namespace virtbus {

// The callbacks' opaque pointer is the connection id itself, so no lifetime is involved.
inline uint32_t IdFromOpaque(void* opaque) { return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(opaque)); }
inline void* OpaqueFromId(uint32_t id) { return reinterpret_cast<void*>(static_cast<uintptr_t>(id)); }

int LifecycleCallback(virConnectPtr conn, virDomainPtr dom, int event, int detail, void* opaque);
void RebootCallback(virConnectPtr conn, virDomainPtr dom, void* opaque);
void CloseCallback(virConnectPtr conn, int reason, void* opaque);

}  // namespace virtbus
