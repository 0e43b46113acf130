export { startLibvirtd, type LibvirtdSandbox } from './libvirtd';
export { startRabbitMQ, type RabbitSandbox, type RabbitSandboxOptions } from './rabbitmq';
export { startPostgres, type PostgresSandbox } from './postgres';
export { createTestCertificates, type TestCertificates } from './certificates';
export { freePort, waitUntil } from './exec';
export { startVirtbus, metricValue, scrape, VIRTBUS_BIN, type ServiceProcess } from './virtbus-process';
export { startQemuHost, type QemuHost } from './qemu-host';
export { type QemuGuest, type QemuGuestOptions, type GuestOrder } from './qemu-guest';
export { ensureGuestImage, type GuestImage } from './qemu-image';
