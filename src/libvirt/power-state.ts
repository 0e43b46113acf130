/**
 * libvirt domain state → Nova power_state (nova/virt/libvirt/guest.py LIBVIRT_POWER_STATE). A domain
 * that does not exist is NOSTATE, as Nova's _get_power_state treats InstanceNotFound.
 */
import { DomainStateCode, PowerState, POWER_STATE_NAMES, type PowerStateCode } from './constants';

const BY_DOMAIN_STATE: Readonly<Record<number, PowerStateCode>> = {
  [DomainStateCode.NOSTATE]: PowerState.NOSTATE,
  [DomainStateCode.RUNNING]: PowerState.RUNNING,
  [DomainStateCode.BLOCKED]: PowerState.RUNNING,
  [DomainStateCode.PAUSED]: PowerState.PAUSED,
  [DomainStateCode.SHUTDOWN]: PowerState.SHUTDOWN,
  [DomainStateCode.SHUTOFF]: PowerState.SHUTDOWN,
  [DomainStateCode.CRASHED]: PowerState.CRASHED,
  [DomainStateCode.PMSUSPENDED]: PowerState.SUSPENDED,
};

/** `null` means the domain was not found. An unknown future state maps to NOSTATE, as Nova would fail to map it. */
export function powerStateOf(domainState: number | null): PowerStateCode {
  if (domainState === null) return PowerState.NOSTATE;
  return BY_DOMAIN_STATE[domainState] ?? PowerState.NOSTATE;
}

export function powerStateName(code: PowerStateCode): string {
  return POWER_STATE_NAMES[code];
}
