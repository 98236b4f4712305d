// Bull v4 side of the benchmarks: node bull-bench.js MODE REDIS_URL N [CONCURRENCY]
// MODE: add (one by one, awaited), addBulk (batches of 1000), process (N trivial jobs).
// Prints one JSON line: {"mode": ..., "n": ..., "seconds": ..., "rate": ...}.
'use strict';
const Queue = require('bull');

const [mode, url, nArg, concArg] = process.argv.slice(2);
const n = parseInt(nArg, 10);
const concurrency = parseInt(concArg || '1', 10);

function report(seconds) {
  console.log(JSON.stringify({ mode, n, concurrency, seconds, rate: n / seconds }));
}

async function addBulk(queue, count) {
  for (let i = 0; i < count; i += 1000) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + 1000); j++) batch.push({ data: { name: `m${j}`, age: j % 150 } });
    await queue.addBulk(batch);
  }
}

async function main() {
  const queue = new Queue(`bench-${process.pid}-${Date.now()}`, url);
  await queue.isReady();
  if (mode === 'add') {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await queue.add({ name: `m${i}`, age: i % 150 });
    report(Number(process.hrtime.bigint() - start) / 1e9);
  } else if (mode === 'addBulk') {
    const start = process.hrtime.bigint();
    await addBulk(queue, n);
    report(Number(process.hrtime.bigint() - start) / 1e9);
  } else if (mode === 'process') {
    await addBulk(queue, n);
    let done = 0;
    let start = null;
    await new Promise((resolve) => {
      queue.on('completed', () => {
        done += 1;
        if (done === n) resolve();
      });
      start = process.hrtime.bigint();
      queue.process(concurrency, async (job) => job.data.age);
    });
    report(Number(process.hrtime.bigint() - start) / 1e9);
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  await queue.obliterate({ force: true });
  await queue.close();
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
