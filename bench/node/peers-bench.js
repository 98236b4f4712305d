// The node peers of the peers benchmark (bench/peers): Bull v4 and BullMQ, each with its defaults.
//   node peers-bench.js LIB work CONCURRENCY          a worker (runs until killed)
//   node peers-bench.js LIB fill KIND N               enqueue jobs 0..N-1 (addBulk, 1,000 a call)
//   node peers-bench.js LIB trickle KIND N INTERVAL_MS WARMUP OUT
//       warm-up jobs (negative indices) until stamped, then one add every INTERVAL_MS; writes
//       "index returned_at" lines (seconds, right after each add resolved) to OUT
// LIB: bull | bullmq; KIND: noop | io (a 10 ms setTimeout). Redis from BENCH_REDIS_URL; each job
// appends "index start end" (epoch seconds) to the file BENCH_STAMPS, as bench/peers/stamps.py.
'use strict';
const fs = require('fs');
const { performance } = require('perf_hooks');

const QUEUE = 'bench';
const [lib, mode, ...rest] = process.argv.slice(2);
const url = process.env.BENCH_REDIS_URL;
const stampsPath = process.env.BENCH_STAMPS;

// Epoch seconds with sub-millisecond resolution (Date.now() has whole milliseconds).
const now = () => (performance.timeOrigin + performance.now()) / 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let stampsFd = null;
function stamp(index, start) {
  if (stampsFd === null) stampsFd = fs.openSync(stampsPath, 'a');
  fs.writeSync(stampsFd, `${index} ${start.toFixed(6)} ${now().toFixed(6)}\n`);
}

async function job(index, kind) {
  const start = now();
  if (kind === 'io') await sleep(10);
  stamp(index, start);
}

function connection() {
  const parsed = new URL(url);
  return { host: parsed.hostname, port: parseInt(parsed.port, 10) };
}

// One interface over both libraries: add, addBulk, work, close.
function bullmqQueue() {
  const { Queue, Worker } = require('bullmq');
  const queue = new Queue(QUEUE, { connection: connection() });
  return {
    add: (kind, index) => queue.add(kind, { index }),
    addBulk: (kind, indices) => queue.addBulk(indices.map((index) => ({ name: kind, data: { index } }))),
    work: (concurrency) =>
      new Worker(QUEUE, (j) => job(j.data.index, j.name), { connection: connection(), concurrency }),
    close: () => queue.close(),
  };
}

function bullQueue() {
  const Queue = require('bull');
  const queue = new Queue(QUEUE, url);
  return {
    add: (kind, index) => queue.add({ kind, index }),
    addBulk: (kind, indices) => queue.addBulk(indices.map((index) => ({ data: { kind, index } }))),
    work: (concurrency) => queue.process(concurrency, (j) => job(j.data.index, j.data.kind)),
    close: () => queue.close(),
  };
}

function countStamps() {
  try {
    return fs.readFileSync(stampsPath).toString().split('\n').length - 1;
  } catch (err) {
    return 0;
  }
}

async function trickle(queue, kind, n, intervalMs, warmup, out) {
  for (let index = -warmup; index < 0; index++) await queue.add(kind, index);
  const deadline = Date.now() + 60000;
  while (countStamps() < warmup) {
    if (Date.now() > deadline) throw new Error('the worker did not run the warm-up jobs');
    await sleep(10);
  }
  await sleep(250);
  const lines = [];
  const start = performance.now();
  for (let index = 0; index < n; index++) {
    const pause = start + index * intervalMs - performance.now();
    if (pause > 0) await sleep(pause);
    await queue.add(kind, index);
    lines.push(`${index} ${now().toFixed(6)}\n`);
  }
  fs.writeFileSync(out, lines.join(''));
}

async function main() {
  const queue = lib === 'bullmq' ? bullmqQueue() : lib === 'bull' ? bullQueue() : null;
  if (queue === null) throw new Error(`unknown library ${lib}`);
  if (mode === 'work') {
    queue.work(parseInt(rest[0], 10));
    return new Promise(() => {}); // until killed
  }
  if (mode === 'fill') {
    const [kind, nArg] = rest;
    const n = parseInt(nArg, 10);
    for (let first = 0; first < n; first += 1000) {
      const indices = [];
      for (let index = first; index < Math.min(n, first + 1000); index++) indices.push(index);
      await queue.addBulk(kind, indices);
    }
  } else if (mode === 'trickle') {
    const [kind, nArg, intervalArg, warmupArg, out] = rest;
    await trickle(queue, kind, parseInt(nArg, 10), parseFloat(intervalArg), parseInt(warmupArg, 10), out);
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  await queue.close();
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
