/**
 * @file Unit tests of the worker pool: every task once, errors reported, thread-count and polling
 * settings, what it says about its threads, and a browser-like pool whose workers start late or not
 * at all (test/browser/wasm-threads.test.ts runs the real Web Workers in Chromium).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { POOL_TASKS } from '../../test/pool-tasks.js';
import { Engine, newHeap } from './runtime.js';
import { defaultSpinMicros, defaultThreadCount, MAX_SPIN_MICROS } from './threads.js';
import { type WorkerEvents, type WorkerPlatform, workerPlatform } from './workers.js';

const emitters = POOL_TASKS;

const engine = new Engine(emitters, { threads: 2, relaxed: false }, newHeap()!);
const HEAP = engine.scratch;
afterAll(() => engine.dispose());

describe('thread pool', () => {
  it('runs every task exactly once over two threads, job after job', () => {
    expect(engine.threads).toBe(2);
    engine.reserve(4 * 5000);
    for (const n of [1, 2, 3, 17, 1000, 5000]) {
      engine.i32.fill(0, HEAP / 4, HEAP / 4 + 5000);
      engine.parallel('task_write', HEAP, n);
      const got = engine.i32.subarray(HEAP / 4, HEAP / 4 + n);
      expect(got.every((v, i) => v === i + 1)).toBe(true);
      expect(engine.i32[HEAP / 4 + n]).toBe(0);
    }
  });

  it('runs a second phase only after every task of the first, in one job', () => {
    const n = 3000;
    const second = HEAP + 4 * n;
    engine.reserve(8 * n + 64);
    for (let rep = 0; rep < 20; rep++) {
      engine.i32.fill(0, HEAP / 4, HEAP / 4 + 2 * n + 16);
      engine.i32[second / 4] = HEAP;
      engine.i32[second / 4 + 1] = n;
      // each mirror task reads a write made by a first-phase task at the other end of the range
      engine.parallel('task_write', HEAP, n, true, { name: 'task_mirror', arg: second, n });
      const got = engine.i32.subarray(second / 4 + 2, second / 4 + 2 + n);
      expect(got.every((v, t) => v === n - t)).toBe(true);
    }
  });

  it('reports a task that traps and stays usable afterwards', () => {
    expect(() => engine.parallel('task_trap', HEAP, 64)).toThrow();
    engine.parallel('task_write', HEAP, 100);
    expect(engine.i32[HEAP / 4 + 99]).toBe(100);
  });

  it('a worker takes part in each job whether it is still polling or already asleep', () => {
    for (const spinMicros of [0, 250, 5000]) {
      const e = new Engine(emitters, { threads: 2, relaxed: false, spinMicros }, newHeap()!);
      const HEAP = e.scratch;
      try {
        e.reserve(64);
        for (const pause of [0, 0.1, 2, 0, 8]) {
          const until = performance.now() + pause;
          while (performance.now() < until);
          e.i32.fill(0, HEAP / 4, HEAP / 4 + 2);
          e.parallel('task_meet', HEAP, 2);
          expect([spinMicros, pause, e.i32[HEAP / 4 + 1]]).toEqual([spinMicros, pause, 1]);
        }
      } finally {
        e.dispose();
      }
    }
  });

  it('says how many threads it runs on, over which workers, or why on one', () => {
    expect(engine.threadInfo()).toEqual({ threads: 2, workers: 'worker_threads', message: 'wasm, 2 threads (worker_threads)' });
    const one = new Engine(emitters, { threads: 1, relaxed: false }, newHeap()!);
    const none = new Engine(emitters, { threads: 2, relaxed: false, platform: 'page not cross-origin isolated (COOP/COEP headers missing)' }, newHeap()!);
    try {
      expect(one.threadInfo().message).toBe('wasm, 1 thread: as requested (threads: 1)');
      expect(none.threadInfo()).toEqual({ threads: 1, workers: null, message: 'wasm, 1 thread: page not cross-origin isolated (COOP/COEP headers missing)' });
    } finally {
      one.dispose();
      none.dispose();
    }
  });

  it('runs jobs before its workers start, takes a late one into later jobs and goes on without one that never starts (as in a browser)', async () => {
    // worker_threads standing in for Web Workers that start only once the caller yields
    const node = workerPlatform() as WorkerPlatform;
    const starts: (() => void)[] = [];
    const events: WorkerEvents[] = [];
    const late: WorkerPlatform = {
      name: 'Web Workers',
      startsWhileBusy: false,
      spawn(data, on) {
        events.push(on);
        let handle: { terminate(): void } | undefined;
        starts.push(() => (handle = node.spawn(data, on)));
        return { terminate: () => handle?.terminate() };
      },
    };
    const e = new Engine(emitters, { threads: 3, relaxed: false, platform: late }, newHeap()!);
    const HEAP = e.scratch;
    try {
      expect(e.threadInfo().message).toBe('wasm, 3 threads (Web Workers, 2 starting)');
      e.reserve(4 * 1000);
      e.parallel('task_write', HEAP, 1000);
      expect(e.i32.subarray(HEAP / 4, HEAP / 4 + 1000).every((v, i) => v === i + 1)).toBe(true);
      events[1]!.failed('blocked by the page\'s CSP');
      starts[0]!();
      for (let i = 0; e.threadInfo().message !== 'wasm, 2 threads (Web Workers)'; i++) {
        expect(i).toBeLessThan(1000);
        await new Promise((r) => setTimeout(r, 10));
      }
      events[0]!.ready();
      expect(await e.started()).toEqual({ threads: 2, workers: 'Web Workers', message: 'wasm, 2 threads (Web Workers)' });
      // only two threads at once can meet: the late worker takes part
      e.i32.fill(0, HEAP / 4, HEAP / 4 + 2);
      e.parallel('task_meet', HEAP, 2);
      expect(e.i32[HEAP / 4 + 1]).toBe(1);
    } finally {
      e.dispose();
    }
    const alone = new Engine(emitters, { threads: 2, relaxed: false, platform: late }, newHeap()!);
    events.at(-1)!.failed('blocked');
    expect(alone.threadInfo().message).toBe('wasm, 1 thread: Web Workers did not start (blocked)');
    alone.dispose();
  });

  it('takes its polling time from QGRAD_SPIN_US', () => {
    const old = process.env.QGRAD_SPIN_US;
    try {
      delete process.env.QGRAD_SPIN_US;
      expect(defaultSpinMicros()).toBe(250);
      process.env.QGRAD_SPIN_US = '0';
      expect(defaultSpinMicros()).toBe(0);
      process.env.QGRAD_SPIN_US = 'soon';
      expect(defaultSpinMicros()).toBe(250);
      process.env.QGRAD_SPIN_US = ' ';
      expect(defaultSpinMicros()).toBe(250);
      process.env.QGRAD_SPIN_US = '-5';
      expect(defaultSpinMicros()).toBe(0);
      process.env.QGRAD_SPIN_US = '1e12';
      expect(defaultSpinMicros()).toBe(MAX_SPIN_MICROS);
    } finally {
      if (old === undefined) delete process.env.QGRAD_SPIN_US;
      else process.env.QGRAD_SPIN_US = old;
    }
  });

  it('takes its default size from QGRAD_THREADS', () => {
    const old = process.env.QGRAD_THREADS;
    try {
      process.env.QGRAD_THREADS = '3';
      expect(defaultThreadCount()).toBe(3);
      process.env.QGRAD_THREADS = 'lots';
      expect(defaultThreadCount()).toBeGreaterThanOrEqual(1);
    } finally {
      if (old === undefined) delete process.env.QGRAD_THREADS;
      else process.env.QGRAD_THREADS = old;
    }
  });
});
