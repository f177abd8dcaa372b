/** piscina worker: one topology per task (DESIGN.md: sweeps run in parallel through piscina). */
import { runCompareTask, type CompareTask, type CompareTaskResult } from './experiment.js';

export default function run(task: CompareTask): Promise<CompareTaskResult> {
  return runCompareTask(task);
}
