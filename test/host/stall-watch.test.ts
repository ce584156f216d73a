// A stop waits while requests move and gives up only once they stopped moving
// (src/stall-watch.ts, with the counters' progressMark).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { StallWatch } from '../../src/stall-watch.js';
import { progressMark, readQueueStats, totalStats, SLOT_WORDS, C_INFLIGHT, C_WRITES } from '../../src/ublk/stats.js';

test('a counter that keeps moving is never stalled, however long; one that stops is, after the quiet time', async () => {
  let n = 0;
  const watch = new StallWatch(() => n, 60);
  for (let i = 0; i < 8; i++) { // 160 ms in all, more than twice the quiet time
    n++;
    await sleep(20);
    assert.equal(watch.stalled(), false, `moving, step ${i}`);
  }
  assert.equal(watch.stalled(), false, 'just stopped');
  await sleep(80);
  assert.equal(watch.stalled(), true, 'quiet for longer than 60 ms');
  n++;
  assert.equal(watch.stalled(), false, 'moving again');
});

test('the progress mark changes with every dispatch and every completion', () => {
  const words = new Float64Array(2 * SLOT_WORDS);
  const mark = () => progressMark(totalStats(readQueueStats(words, 2)));
  const seen = [mark()];
  const dispatch = (slot: number) => { words[slot * SLOT_WORDS + C_WRITES]!++; words[slot * SLOT_WORDS + C_INFLIGHT]!++; };
  const complete = (slot: number) => { words[slot * SLOT_WORDS + C_INFLIGHT]!--; };
  for (const step of [() => dispatch(0), () => dispatch(1), () => complete(0), () => dispatch(0), () => complete(1), () => complete(0)]) {
    step();
    seen.push(mark());
  }
  for (let i = 1; i < seen.length; i++) assert.notEqual(seen[i], seen[i - 1], `step ${i} moved the mark`);
});
