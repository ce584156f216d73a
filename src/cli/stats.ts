// `ublk-ts stats [ID] [--watch] [--json]`: a device's live numbers, read from
// its server's counters (the memfd behind UblkDevice.statsFd, reached through
// /proc/<pid>/fd) and its CPU time (/proc/<pid>/stat), sampled over an interval.
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkOptions, formatSize } from '../options/spec.js';
import { mapStats, readQueueStats, SLOT_WORDS, totalStats, type QueueStats } from '../ublk/stats.js';
import { print, readArgs, oneId, type Command, idOption } from './command.js';
import { deviceIds } from './devices.js';
import { UsageError } from './errors.js';
import { readState } from './state.js';

export const statsCommand: Command = {
  name: 'stats',
  brief: 'live IOPS, bandwidth, requests in flight, errors and server CPU',
  synopsis: '[ID] [--watch] [--json] [--interval SECONDS]',
  summary: 'Show each device\'s (or device ID\'s) IOPS, bandwidth, requests in flight, requests per fetch\n' +
    'completion (batch), errors and server CPU, measured over an interval, per device and per queue; and what\n' +
    'a request cost the serving threads: io_uring_enter calls, loop turns (wake-ups into JavaScript) and CQEs\n' +
    'per request, the bytes they allocated per request and their garbage collections.',
  options: [
    idOption('only this device'),
    { key: 'watch', short: 'w', type: 'bool', help: 'print again every interval until interrupted' },
    { key: 'json', type: 'bool', help: 'machine-readable: totals and rates per device and queue' },
    { key: 'interval', short: 'i', type: 'int', arg: 'SECONDS', default: 1, min: 1, max: 3600, help: 'measuring interval' },
  ],
  run: stats,
};

interface Source {
  id: number;
  pid: number;
  target: string;
  words: Float64Array;
}

interface Sample {
  at: number;
  /** Server CPU seconds (user + system). */
  cpu: number;
  queues: QueueStats[];
}

/** The device's counters, mapped read-only from its server; null where it has no live server of ours. */
function open(id: number): Source | null {
  const st = readState(id);
  if (!st || st.statsFd === undefined) return null;
  let fd: number;
  try {
    fd = fs.openSync(`/proc/${st.pid}/fd/${st.statsFd}`, 'r');
  } catch {
    return null; // the server is gone
  }
  try {
    return { id, pid: st.pid, target: st.target, words: mapStats(fd, false) };
  } finally {
    fs.closeSync(fd);
  }
}

function cpuSeconds(pid: number): number {
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/** A device's counters so far, added up over its queues; null where it has no live server of ours. */
export function deviceTotals(id: number): QueueStats | null {
  const s = open(id);
  return s && totalStats(readQueueStats(s.words, s.words.length / SLOT_WORDS));
}

const sample = (s: Source): Sample => ({ at: performance.now(), cpu: cpuSeconds(s.pid), queues: readQueueStats(s.words, s.words.length / SLOT_WORDS) });

interface Rates {
  iops: number;
  readIops: number;
  writeIops: number;
  readBytesPerSec: number;
  writeBytesPerSec: number;
  errorsPerSec: number;
  inFlight: number;
  /** Batch: tags per fetch completion in the interval (0 where there was none). */
  tagsPerFetch: number;
  /** The serving threads' io_uring_enter calls, loop turns and CQEs per request in the interval (0 where there was none). */
  entersPerRequest: number;
  turnsPerRequest: number;
  cqesPerRequest: number;
  /** Garbage collections of the serving threads' heaps in the interval (minor and major), and bytes they allocated per request. */
  gcs: number;
  heapBytesPerRequest: number;
  /** Share of the interval the serving threads spent spinning for requests (polling), in % of one thread. */
  spinPercent: number;
}

function rates(a: QueueStats, b: QueueStats, secs: number): Rates {
  const d = (k: keyof QueueStats) => ((b[k] as number) - (a[k] as number)) / secs;
  const fetches = b.fetchCqes - a.fetchCqes;
  const requests = b.reads + b.writes + b.other - (a.reads + a.writes + a.other);
  const perRequest = (k: keyof QueueStats) => (requests > 0 ? ((b[k] as number) - (a[k] as number)) / requests : 0);
  return {
    iops: d('reads') + d('writes') + d('other'), readIops: d('reads'), writeIops: d('writes'),
    readBytesPerSec: d('readBytes'), writeBytesPerSec: d('writeBytes'), errorsPerSec: d('errors'), inFlight: b.inFlight,
    tagsPerFetch: fetches > 0 ? (b.tags - a.tags) / fetches : 0,
    entersPerRequest: perRequest('enters'), turnsPerRequest: perRequest('turns'), cqesPerRequest: perRequest('cqes'),
    gcs: b.gcMinor + b.gcMajor - (a.gcMinor + a.gcMajor), heapBytesPerRequest: perRequest('heapBytes'),
    spinPercent: d('spinUsec') / 1e4,
  };
}

function line(r: Rates, total: QueueStats): string {
  const fetch = total.fetchCqes ? `, ${r.tagsPerFetch.toFixed(1)} tags/fetch` : '';
  const shmem = total.shmem ? `, ${total.shmem} served from shared memory` : '';
  // A queue served by a thread that counts its costs in another queue's slot shows none.
  const costs = total.turns ? `; per request ${r.entersPerRequest.toFixed(2)} io_uring_enter, ${r.turnsPerRequest.toFixed(2)} loop turns, ` +
    `${r.cqesPerRequest.toFixed(2)} CQEs, ${Math.round(r.heapBytesPerRequest)} bytes allocated; ${r.gcs} GCs; ` +
    `spinning ${Math.round(r.spinPercent)}% of the time (preempted ${total.spinPreemptions} times), policy ${total.spinning ? 'spin' : 'sleep'}` : '';
  return `${Math.round(r.iops)} IOPS (read ${Math.round(r.readIops)}, write ${Math.round(r.writeIops)}), ` +
    `${formatSize(Math.round(r.readBytesPerSec))}/s read, ${formatSize(Math.round(r.writeBytesPerSec))}/s written, ` +
    `${r.inFlight} in flight, ${total.errors} errors${fetch}${shmem}${costs}`;
}

async function stats(argv: string[]): Promise<void> {
  const args = readArgs(statsCommand, argv);
  if (!args) return;
  const id = oneId(args, statsCommand);
  const { interval } = checkOptions(statsCommand.options, args.values, 'cli') as { interval: number };
  const ids = id === undefined ? deviceIds() : [id];
  const sources = ids.map(open).filter((s): s is Source => s !== null);
  if (id !== undefined && sources.length === 0) throw new UsageError(`no ublk-ts server with counters for device ${id}`);
  let before = sources.map(sample);
  do {
    await sleep(interval * 1000);
    const after = sources.map(sample);
    const report = sources.map((s, i) => {
      const a = before[i]!, b = after[i]!, secs = (b.at - a.at) / 1000;
      const totalA = totalStats(a.queues), totalB = totalStats(b.queues);
      return {
        id: s.id, pid: s.pid, target: s.target, cpuPercent: Math.round(((b.cpu - a.cpu) / secs) * 100),
        totals: totalB, rates: rates(totalA, totalB, secs),
        queues: b.queues.map((q, j) => ({ queue: q.queue, totals: q, rates: rates(a.queues[j] ?? q, q, secs) })),
      };
    });
    if (args.values.json) {
      print(JSON.stringify(id === undefined ? report : report[0]));
    } else {
      for (const r of report) {
        print(`/dev/ublkb${r.id} (${r.target}, pid ${r.pid}, server CPU ${r.cpuPercent}%): ${line(r.rates, r.totals)}`);
        for (const q of r.queues) print(`  queue ${q.queue}: ${line(q.rates, q.totals)}`);
      }
    }
    before = after;
  } while (args.values.watch);
}
