/** piscina worker: one run of a comparison per task, so a sweep spreads its runs over piscina threads. */
import { type CompareTask, type CompareTaskResult, runCompareTask } from './experiment.js';

export default function run(task: CompareTask): Promise<CompareTaskResult> {
  return runCompareTask(task);
}
