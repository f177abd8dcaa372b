/**
 * `--inject-fault ROLE:MODE@TIME` and `--watchdog-ms`: the options that check
 * a run ends, naming the worker, when one fails or stops making progress
 * (shm fault.ts and watchdog.ts).
 */

import { DEVICE_ROLE_PREFIX, FAULT_MODES, type FaultMode, type FaultSpec, InputError, isDeviceFaultMode, roleMatches } from '@vmstack/shm';

const FORMAT = 'ROLE:MODE@TIME, e.g. vm0/vcpu0:stall@50us, "vm0/*:throw@0ns" or nvme-device/nvme-ctrl0:corrupt-write@0ns';
const NS_PER_UNIT: Record<string, number> = { ns: 1, us: 1e3, ms: 1e6, s: 1e9 };

/** One `--inject-fault` value: ROLE (a role or pattern), MODE, TIME (model time with a unit). */
export function parseFault(text: string): FaultSpec {
  const m = /^([^:@\s]+):([^:@\s]*)@(\S*)$/.exec(text.trim());
  if (!m) throw new InputError('--inject-fault', text, FORMAT);
  const [, role, mode, time] = m;
  if (!(FAULT_MODES as readonly string[]).includes(mode)) {
    throw new InputError('--inject-fault MODE', mode, `one of ${FAULT_MODES.join(', ')} (${FORMAT})`);
  }
  const t = /^(\d+)(ns|us|ms|s)$/.exec(time);
  const atNs = t ? Number(t[1]) * NS_PER_UNIT[t[2]] : Number.NaN;
  if (!Number.isSafeInteger(atNs))
    throw new InputError('--inject-fault TIME', time, `a model time: a whole number with a unit ns, us, ms or s, e.g. 50us (${FORMAT})`);
  return { role, mode: mode as FaultMode, atNs };
}

/** `--watchdog-ms`: real ms without progress before a run fails; 0 turns the watchdog off. */
export function parseWatchdogMs(text: string): number {
  const n = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n)) {
    throw new InputError('--watchdog-ms', text, 'a whole number of real milliseconds ≥ 0, e.g. 5000 (0: no watchdog)');
  }
  return n;
}

/** Every fault must name at least one of the run's workers; a device misbehaviour, only NVMe device workers. */
export function checkFaultRoles(faults: readonly FaultSpec[] | undefined, roles: readonly string[]): void {
  for (const f of faults ?? []) {
    const matched = roles.filter((r) => roleMatches(f.role, r));
    if (matched.length === 0) {
      throw new InputError('--inject-fault ROLE', f.role, `a worker role or pattern (* within a name, ** across /); this run's workers: ${roles.join(', ')}`);
    }
    const notDevice = matched.find((r) => !r.startsWith(DEVICE_ROLE_PREFIX));
    if (isDeviceFaultMode(f.mode) && notDevice !== undefined) {
      const devices = roles.filter((r) => r.startsWith(DEVICE_ROLE_PREFIX));
      throw new InputError(
        '--inject-fault ROLE',
        f.role,
        `an NVMe device worker for mode ${f.mode} (it matches ${notDevice}); this run's devices: ${devices.join(', ')}`,
      );
    }
  }
}
