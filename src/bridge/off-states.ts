/**
 * Which listed domains a snapshot must withhold because they are off although the last event the
 * bridge accepted for them does not explain it (a STOPPED still on its way): the dispatcher's
 * memory of each domain's last transition, kept apart from the dispatcher's ordering work.
 * Why, and the bounds: docs/architecture.md, "Snapshots never bypass a held STOPPED".
 */
import type { DomainInfo } from '../native/contract';
import type { Transition } from '../libvirt/translate';
import { powerStateOf } from '../libvirt/power-state';
import { DomainStateCode, PowerState } from '../libvirt/constants';
import type { Logger } from '../util/log';

/**
 * Last events after which a listed off state (power_state SHUTDOWN or CRASHED) is explained. After
 * any other (a STARTED, a RESUMED, a guest SHUTDOWN or CRASHED that a STOPPED follows…) an off state
 * means a STOPPED is on its way that the bridge has not seen yet.
 */
const EXPLAINS_OFF: ReadonlySet<Transition> = new Set<Transition>(['stopped', 'defined', 'undefined']);

export class OffStates {
  /** The last transition accepted per domain since the last start/reconnect/overflow snapshot. */
  readonly #lastEvent = new Map<string, Transition>();
  /** When a snapshot first listed a domain off although its last event says it is not (ms). */
  readonly #unexplainedOffSince = new Map<string, number>();

  readonly #stopDelayMs: number;
  readonly #now: () => number;
  readonly #logger: Logger;

  constructor(stopDelayMs: number, now: () => number, logger: Logger) {
    this.#stopDelayMs = stopDelayMs;
    this.#now = now;
    this.#logger = logger;
  }

  noteEvent(uuid: string, transition: Transition): void {
    this.#lastEvent.set(uuid, transition);
  }

  /** After a reconnect or an overflow events were lost: what the last ones said proves nothing. */
  forget(): void {
    this.#lastEvent.clear();
    this.#unexplainedOffSince.clear();
  }

  /**
   * The listed domains that are off (power_state SHUTDOWN or CRASHED) although the last event this
   * bridge accepted for them says otherwise: libvirt shows a domain's new state before it emits the
   * event (QEMU's destroy sets SHUTOFF, then queues STOPPED when the call ends), so a listing can
   * meet an off state whose STOPPED is still on its way — inside a hard reboot, the very window the
   * delay exists for. Such a domain is withheld like a held one, for at most the stop delay from the
   * first snapshot that saw it: a STOPPED that has not come by then is not coming (it would be held
   * and withheld itself), and the off state is reported. A domain in libvirt's transient SHUTDOWN
   * state is withheld so, bounded the same way, even when no event is known for it.
   */
  unexplained(domains: readonly DomainInfo[], held: ReadonlySet<string>): Set<string> {
    const now = this.#now();
    const withhold = new Set<string>();
    const listed = new Set<string>();
    for (const domain of domains) {
      listed.add(domain.uuid);
      const power = powerStateOf(domain.state);
      const last = this.#lastEvent.get(domain.uuid);
      // libvirt's SHUTDOWN state ("being shut down": QEMU got SIGTERM from a destroy, or the guest
      // powered off and the process is exiting) always ends in SHUTOFF and a STOPPED, whatever the
      // last events said or whether they are known at all (start, reconnect, overflow snapshots).
      const goingOff = domain.state === DomainStateCode.SHUTDOWN;
      if (
        held.has(domain.uuid) ||
        (power !== PowerState.SHUTDOWN && power !== PowerState.CRASHED) ||
        (!goingOff && (last === undefined || EXPLAINS_OFF.has(last)))
      ) {
        this.#unexplainedOffSince.delete(domain.uuid);
        continue;
      }
      const since = this.#unexplainedOffSince.get(domain.uuid) ?? now;
      this.#unexplainedOffSince.set(domain.uuid, since);
      if (now - since < this.#stopDelayMs) withhold.add(domain.uuid);
      else
        this.#logger.warn(
          { uuid: domain.uuid, name: domain.name, last, offForMs: now - since },
          'a domain is off with no STOPPED seen for it; the snapshot reports it',
        );
    }
    // Domains that are gone take their history with them: the maps stay as small as the host.
    for (const uuid of this.#lastEvent.keys()) if (!listed.has(uuid)) this.#lastEvent.delete(uuid);
    for (const uuid of this.#unexplainedOffSince.keys())
      if (!listed.has(uuid)) this.#unexplainedOffSince.delete(uuid);
    return withhold;
  }
}
