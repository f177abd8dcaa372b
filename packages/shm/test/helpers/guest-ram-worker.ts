/**
 * Worker used by the worker-reuse test: views the run's "guest RAM" (a
 * SharedArrayBuffer in `init`), writes every page of it, and returns a sum of
 * what it wrote, so the memory is resident and the view lives for the run.
 */
import { workerMain } from '@vmstack/shm';

interface Init {
  guestRam: SharedArrayBuffer;
  value: number;
}

workerMain<Init, { sum: number }>((boot) => {
  const ram = new Uint8Array(boot.init.guestRam);
  return () => {
    ram.fill(boot.init.value);
    let sum = 0;
    for (let i = 0; i < ram.length; i += 4096) sum += ram[i];
    return { sum };
  };
});
