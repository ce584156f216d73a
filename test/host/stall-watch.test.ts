// A stop waits while requests move and gives up only once they stopped moving
// (src/stall-watch.ts, with the counters' progressMark), and the device-wide
// request count adaptive polling judges by (requestsDispatched).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { StallWatch } from '../../src/stall-watch.js';
import {
  progressMark, readQueueStats, requestsDispatched, totalStats, SLOT_WORDS, C_INFLIGHT, C_OTHER, C_READS, C_WRITES,
} from '../../src/ublk/stats.js';

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

test('requestsDispatched sums every slot\'s reads, writes and other requests, as the counters read per queue do', () => {
  const words = new Float64Array(3 * SLOT_WORDS);
  for (let slot = 0; slot < 3; slot++) {
    words[slot * SLOT_WORDS + C_READS] = 10 * slot + 1;
    words[slot * SLOT_WORDS + C_WRITES] = 7;
    words[slot * SLOT_WORDS + C_OTHER] = slot;
    words[slot * SLOT_WORDS + C_INFLIGHT] = 5; // not a request count
  }
  const t = totalStats(readQueueStats(words, 3));
  assert.equal(requestsDispatched(words), t.reads + t.writes + t.other);
  assert.equal(requestsDispatched(words), 33 + 21 + 3);
});
