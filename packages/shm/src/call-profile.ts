/**
 * The per-function profile of one worker, counted as `perf report
 * --children` counts it: for each modelled kernel function, its calls, its
 * total model time with its callees (`ns`), the time in the function itself
 * (`selfNs`) and the bytes it handled. Profiled functions nest: a frame is
 * entered when the function starts and exited when it returns; a child's
 * total comes out of its parent's self time. Model time spent waiting (a
 * busy-poll for the VMM, the VMM's ioctl into the host) is time of the
 * function that waits.
 *
 * Beside the flat table the profiler keeps the call tree (each distinct call
 * path once, with calls, total, self and bytes), from which the flame graphs
 * are drawn (folded stacks, speedscope). The tree is built without per-call
 * allocation: the frames that return inside one outermost call are logged in
 * the order they return (children before their parent), and when the
 * outermost call returns the log is walked backwards, which visits every
 * parent before its children, and added into the tree; then forwards, adding
 * each frame into its flat row (rows appear in the order their first frame
 * returned). A tree node remembers its flat row, and a parent the child it
 * found last, so a call path seen before costs no Map lookup.
 *
 * A frame exited with the name `null` (a call that turned out to do nothing
 * worth a row) is dropped: its self time stays with its caller and its
 * children hang under its caller, as perf shows a function it has no symbol
 * for.
 */

import type { ModelClock } from './clock.js';

/** One row of the flat profile. */
export interface ProfileEntry {
  calls: number;
  /** model ns in the function, callees included */
  ns: number;
  /** model ns in the function itself */
  selfNs: number;
  bytes: number;
}

/** One call path in the call tree: `name` called from its parent's path. */
export interface CallTreeNode {
  readonly name: string;
  calls: number;
  ns: number;
  selfNs: number;
  bytes: number;
  /** callees, by total time, largest first */
  readonly children: CallTreeNode[];
}

interface TreeNode extends CallTreeNode {
  readonly byName: Map<string, TreeNode>;
  readonly children: TreeNode[];
  /** the child found last (most calls repeat the path before) */
  lastChild: TreeNode | null;
  /** the flat row of this node's function, once it had a flat frame */
  flat: ProfileEntry | null;
}

interface Frame {
  startNs: number;
  childNs: number;
}

function newNode(name: string): TreeNode {
  return { name, calls: 0, ns: 0, selfNs: 0, bytes: 0, children: [], byName: new Map(), lastChild: null, flat: null };
}

export class Profiler {
  private readonly frames: Frame[] = [];
  private depth = 0;
  readonly entries = new Map<string, ProfileEntry>();
  /** frames returned inside the current outermost call, in the order they returned */
  private readonly logName: (string | null)[] = [];
  private readonly logDepth: number[] = [];
  private readonly logNs: number[] = [];
  private readonly logSelfNs: number[] = [];
  private readonly logBytes: number[] = [];
  private readonly logFlat: boolean[] = [];
  /** the tree node each logged frame was added into (the replay's, for the flat rows) */
  private readonly logNode: TreeNode[] = [];
  private logLength = 0;
  private readonly root: TreeNode = newNode('');
  /** the tree node of each depth while the log is replayed */
  private readonly nodeAt: TreeNode[] = [];

  constructor(private readonly clock: ModelClock) {}

  /** A profiled function starts. */
  enter(): void {
    let f = this.frames[this.depth];
    if (!f) {
      f = { startNs: 0, childNs: 0 };
      this.frames[this.depth] = f;
    }
    f.startNs = this.clock.nowNs();
    f.childNs = 0;
    this.depth++;
  }

  /**
   * It returns: record it under `fn`; `null` drops the frame (see the header).
   * `flat: false` records the frame in the call tree only: work another
   * worker did for this one (the host kernel's part of the VMM's ioctl),
   * whose flat row that worker reports.
   */
  exit(fn: string | null, bytes = 0, flat = true): void {
    if (this.depth === 0) throw new Error(`profiler: exit from ${fn ?? 'a function'} without enter`);
    const d = --this.depth;
    const frame = this.frames[d];
    const total = this.clock.nowNs() - frame.startNs;
    const parent = d > 0 ? this.frames[d - 1] : undefined;
    const selfNs = total - frame.childNs;
    if (parent) parent.childNs += fn === null ? frame.childNs : total;
    this.log(fn, d, fn === null ? 0 : total, fn === null ? 0 : selfNs, fn === null ? 0 : bytes, flat);
    if (d === 0) this.flushLog();
  }

  private log(fn: string | null, depth: number, ns: number, selfNs: number, bytes: number, flat: boolean): void {
    const i = this.logLength++;
    this.logName[i] = fn;
    this.logDepth[i] = depth;
    this.logNs[i] = ns;
    this.logSelfNs[i] = selfNs;
    this.logBytes[i] = bytes;
    this.logFlat[i] = flat;
  }

  /** The outermost call returned: add its frames into the tree, parents first, then into the flat rows, in the order they returned. */
  private flushLog(): void {
    this.nodeAt[0] = this.root;
    for (let i = this.logLength - 1; i >= 0; i--) {
      const d = this.logDepth[i];
      const parent = this.nodeAt[d];
      const name = this.logName[i];
      if (name === null) {
        this.nodeAt[d + 1] = parent;
        continue;
      }
      let node = parent.lastChild;
      if (node === null || node.name !== name) {
        node = parent.byName.get(name) ?? null;
        if (node === null) {
          node = newNode(name);
          parent.byName.set(name, node);
          parent.children.push(node);
        }
        parent.lastChild = node;
      }
      node.calls++;
      node.ns += this.logNs[i];
      node.selfNs += this.logSelfNs[i];
      node.bytes += this.logBytes[i];
      this.nodeAt[d + 1] = node;
      this.logNode[i] = node;
    }
    for (let i = 0; i < this.logLength; i++) {
      const name = this.logName[i];
      if (name === null || !this.logFlat[i]) continue;
      const node = this.logNode[i];
      let e = node.flat;
      if (e === null) {
        e = this.entries.get(name) ?? null;
        if (e === null) {
          e = { calls: 0, ns: 0, selfNs: 0, bytes: 0 };
          this.entries.set(name, e);
        }
        node.flat = e;
      }
      e.calls++;
      e.ns += this.logNs[i];
      e.selfNs += this.logSelfNs[i];
      e.bytes += this.logBytes[i];
    }
    this.logLength = 0;
  }

  toJSON(): Record<string, ProfileEntry> {
    return Object.fromEntries(this.entries);
  }

  /** The call tree so far: outermost functions first, each level by total time, largest first (plain objects, for postMessage). */
  callTree(): CallTreeNode[] {
    return plainChildren(this.root);
  }
}

function plainChildren(node: TreeNode): CallTreeNode[] {
  return [...node.children]
    .sort((a, b) => b.ns - a.ns || (a.name < b.name ? -1 : 1))
    .map((c) => ({ name: c.name, calls: c.calls, ns: c.ns, selfNs: c.selfNs, bytes: c.bytes, children: plainChildren(c) }));
}

/** Several call trees as one: the same call path adds up (several VMM or host contexts, several VMs). */
export function mergeCallTrees(trees: readonly (readonly CallTreeNode[])[]): CallTreeNode[] {
  const root = newNode('');
  const add = (into: TreeNode, nodes: readonly CallTreeNode[]): void => {
    for (const n of nodes) {
      let m = into.byName.get(n.name);
      if (!m) {
        m = newNode(n.name);
        into.byName.set(n.name, m);
        into.children.push(m);
      }
      m.calls += n.calls;
      m.ns += n.ns;
      m.selfNs += n.selfNs;
      m.bytes += n.bytes;
      add(m, n.children);
    }
  };
  for (const t of trees) add(root, t);
  return plainChildren(root);
}
