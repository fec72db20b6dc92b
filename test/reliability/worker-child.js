// Child process of worker.test.ts: worker threads that start gocor calls and are ended while the
// calls are queued or running, by `worker.terminate()` or by `process.exit()` inside the worker;
// every compute entry point has calls in flight.
// Prints "ok <rounds>" and exits 0 when the process survived every round.
//   node worker-child.js terminate|exit <rounds>
'use strict';
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');

if (isMainThread) {
  const [how, rounds] = [process.argv[2], Number(process.argv[3] ?? 6)];
  (async () => {
    for (let i = 0; i < rounds; i++) {
      const w = new Worker(__filename, { workerData: { how, delay: i % 3 } });
      await new Promise((resolve, reject) => {
        w.once('error', reject);
        w.once('exit', resolve);
        w.once('message', () => {
          if (how === 'terminate') setTimeout(() => w.terminate(), 3 * (i % 4));
        });
      });
    }
    process.stdout.write(`ok ${rounds}\n`);
  })();
} else {
  const g = require('../../dist/index.js');
  const C = 32;
  const H = 24;
  const W = 24;
  const f = { data: new Float32Array(C * H * W).map((_, i) => Math.sin(i)), channels: C, height: H, width: W };
  const img = { data: new Float32Array(96 * 128).map((_, i) => (i % 13) / 13), channels: 1, height: 96, width: 128 };
  const flow = { data: new Float32Array(2 * 96 * 128).fill(0.5), width: 128, height: 96 };
  const swallow = () => {};
  for (let i = 0; i < 4; i++) {
    g.correlate(f, f).catch(swallow);
    g.correlate(f, f, { mode: 'local' }).catch(swallow);
    new g.GlobalGOCor({ numIter: 3 }).correlate(f, f).catch(swallow);
    new g.LocalGOCor().correlate(f, f).catch(swallow);
    g.match(img, img).catch(swallow);
    g.extractFeatures(img).catch(swallow);
    g.matchFeatures(f, f, { globalSize: 8 }).catch(swallow);
    g.warpImage(img, flow).catch(swallow);
    g.resizeFlow(flow, { width: 256, height: 192 }).catch(swallow);
  }
  parentPort.postMessage('started');
  if (workerData.how === 'exit') setTimeout(() => process.exit(0), workerData.delay * 5);
}
