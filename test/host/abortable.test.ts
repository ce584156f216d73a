// abortable (src/abortable.ts): giving up on a promise that may never settle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { abortable } from '../../src/abortable.js';

test('abortable: the promise settles as it would without a signal; once the signal fires first, it rejects with its reason, and a late value goes to `late`', async () => {
  assert.equal(await abortable(Promise.resolve(1), undefined), 1);
  assert.equal(await abortable(Promise.resolve(2), new AbortController().signal), 2);
  await assert.rejects(abortable(Promise.reject(new Error('own')), new AbortController().signal), /own/);

  const ac = new AbortController();
  let settle!: (v: string) => void;
  const late: string[] = [];
  const p = abortable(new Promise<string>((r) => { settle = r; }), ac.signal, (v) => late.push(v));
  ac.abort(new Error('deleted while it started'));
  await assert.rejects(p, /deleted while it started/);
  settle('target');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(late, ['target']);

  const gone = new AbortController();
  gone.abort('a string reason');
  await assert.rejects(abortable(new Promise(() => {}), gone.signal), /a string reason/);
});
