/** Test access to the virtbus process runner (src/sandbox/virtbus-process.ts). */
export {
  startVirtbus,
  metricValue,
  scrape,
  VIRTBUS_BIN,
  type ServiceProcess,
} from '../../src/sandbox/virtbus-process';
