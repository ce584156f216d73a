// Running fio and reading what it measured.
import { spawnSync } from 'node:child_process';

export interface FioJob {
  filename: string;
  rw: 'randread' | 'randwrite' | 'randrw' | 'read' | 'write';
  bs: string;
  iodepth: number;
  runtime: number;
  numjobs?: number;
  /** Region each job works in; jobs get disjoint regions. */
  size?: string;
  /** Seconds run before measuring starts; default 1. */
  ramp?: number;
  /** IOs fio submits and reaps per io_uring_enter (default 1: each IO on its own). */
  batch?: number;
}

export interface FioResult {
  iops: number;
  mbps: number;
  /** fio's own CPU use (user + system), in % of one CPU. */
  cpu: number;
}

export function fio(job: FioJob): FioResult {
  const args = [
    '--name=bench', `--filename=${job.filename}`, '--ioengine=io_uring', '--direct=1', `--rw=${job.rw}`, `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`, `--numjobs=${job.numjobs ?? 1}`, '--group_reporting', '--time_based', `--runtime=${job.runtime}`,
    `--ramp_time=${Math.round((job.ramp ?? 1) * 1000)}ms`, `--size=${job.size ?? '512m'}`, `--offset_increment=${job.size ?? '512m'}`,
    '--randrepeat=0', '--norandommap', '--output-format=json',
    ...(job.batch ? [`--iodepth_batch_submit=${job.batch}`, `--iodepth_batch_complete_min=${job.batch}`] : []),
  ];
  const r = spawnSync('fio', args, { encoding: 'utf8', timeout: (job.runtime + 60) * 1000 });
  if (r.status !== 0) throw new Error(`fio ${args.join(' ')} failed: ${r.stderr || r.error}`);
  type Side = { iops: number; bw_bytes: number };
  const out = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: Array<{ read: Side; write: Side; usr_cpu: number; sys_cpu: number }> };
  const j = out.jobs[0]!;
  const side = job.rw.includes('read') ? j.read : j.write;
  return { iops: side.iops, mbps: side.bw_bytes / 1e6, cpu: j.usr_cpu + j.sys_cpu };
}
