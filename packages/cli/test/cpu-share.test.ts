import { DEFAULT_PROFILE_PATH, loadProfile } from '@vmstack/shm';
import test from 'ava';
import { systemCpuSharePct } from '../src/report/cpu-share.js';

test('one vCPU busy the whole run is one eighth of the 4-core / 8-thread i5-10210U', (t) => {
  const threads = loadProfile(DEFAULT_PROFILE_PATH).hostCpuThreadsCount;
  t.is(threads, 8);
  t.is(systemCpuSharePct([1_000_000], 1_000_000, threads), 12.5);
});

test('busy times add up over the CPUs; idle CPUs count in the denominator only', (t) => {
  // 4 vCPUs at 100%, 50%, 25% and 0% of a 2 ms run: 1.75 CPUs busy of 8
  t.is(systemCpuSharePct([2e6, 1e6, 0.5e6, 0], 2e6, 8), (100 * 1.75) / 8);
  t.is(systemCpuSharePct([], 2e6, 8), 0, 'nothing ran');
  t.is(systemCpuSharePct(Array(8).fill(2e6), 2e6, 8), 100, 'every thread busy');
});

test('more busy CPUs than host threads pass 100% (an overcommitted host is shown, not hidden)', (t) => {
  t.is(systemCpuSharePct(Array(12).fill(1e6), 1e6, 8), 150);
});

test('bad arguments are refused, naming the value', (t) => {
  t.throws(() => systemCpuSharePct([1], 0, 8), { instanceOf: RangeError, message: /runtimeNs 0/ });
  t.throws(() => systemCpuSharePct([1], 10, 0), { instanceOf: RangeError, message: /hostCpuThreads 0/ });
  t.throws(() => systemCpuSharePct([1], 10, 2.5), { instanceOf: RangeError, message: /hostCpuThreads 2.5/ });
  t.throws(() => systemCpuSharePct([5, 11], 10, 8), { instanceOf: RangeError, message: /CPU 1 busy 11 ns/ });
  t.throws(() => systemCpuSharePct([-1], 10, 8), { instanceOf: RangeError, message: /CPU 0 busy -1 ns/ });
  t.throws(() => systemCpuSharePct([Number.NaN], 10, 8), { instanceOf: RangeError });
});
