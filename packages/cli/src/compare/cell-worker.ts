/** piscina worker: one cell of `compare` (or of `sensitivity`) per task. */
import { runStack } from '../stack/run-stack.js';
import { type CompareCell, type CompareCellResult, compareCellResultOf } from './cells.js';

export default async function run(cell: CompareCell): Promise<CompareCellResult> {
  return compareCellResultOf(cell, await runStack(cell.stack));
}
