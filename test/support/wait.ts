/**
 * The test kit's waiting: one polling wait (the sandbox's own `waitUntil`, so harness and tests fail
 * with the same "timed out after N ms waiting for X" message) and a promise sleep.
 */
export { waitUntil } from '../../src/sandbox';
export { setTimeout as sleep } from 'node:timers/promises';
