/**
 * A topology drawn in HTML: the tree of `topologyTree` (platform, VMs with
 * their vCPUs and jobs, virtio-iommus, devices and containers, host IOMMU
 * units, controllers, and the worker thread of each) as nested lists with
 * tree lines, no scripts, for the offline reports.
 */

import type { FioJobSpec } from '@vmstack/guest-kernel';
import type { Topology } from '../topology/topology.js';
import { type TreeNode, topologyTree } from '../topology/tree.js';
import { escapeHtml } from './html.js';

const STYLE =
  '<style>ul.topology,ul.topology ul{list-style:none;margin:0;padding-left:.6em}' +
  'ul.topology li{position:relative;padding:1px 0 1px 1em;border-left:1px solid #999}' +
  'ul.topology li:last-child{border-left-color:transparent}' +
  'ul.topology li::before{content:"";position:absolute;left:-1px;top:0;width:.8em;height:.75em;border-left:1px solid #999;border-bottom:1px solid #999}' +
  'ul.topology>li{border-left:none}ul.topology>li::before{display:none}' +
  'ul.topology .worker{color:#4e79a7;font-family:ui-monospace,monospace;font-size:90%}</style>';

/** One node and its children; `[worker …]` annotations set apart. */
function item(n: TreeNode): string {
  const text = escapeHtml(n.text).replace(/\[(workers? [^\]]*)\]/g, '<span class="worker">[$1]</span>');
  const children = n.children.length > 0 ? `<ul>${n.children.map(item).join('')}</ul>` : '';
  return `<li>${text}${children}</li>`;
}

/** The topology as an HTML fragment: a style element and one nested list. */
export function topologyHtml(t: Topology, jobs: readonly FioJobSpec[] = []): string {
  return `${STYLE}\n<ul class="topology">${topologyTree(t, jobs).map(item).join('')}</ul>`;
}
