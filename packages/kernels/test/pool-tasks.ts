/**
 * @file Wasm task exports that test the worker pool itself (what ran, traps, a second phase, two
 * threads at once), shared by packages/kernels/src/wasm/threads.test.ts (Node) and the page of
 * test/browser/wasm-threads.test.ts (Web Workers).
 */
import { Atomic, Op, ValType } from '../src/wasm/assembler.js';
import type { Emitter } from '../src/wasm/runtime.js';

const P = ValType.i32;
/** Task exports for pool tests: task_write, task_trap, task_mirror and task_meet, as below. */
export const POOL_TASKS: Emitter[] = [
  (mb) => {
    // task_write(arg, t): mem[arg + 4t] = t + 1; task_trap traps on task 5
    mb.func([P, P], [], (c) => void c.get(0).get(1).i32(4).op(Op.i32_mul).op(Op.i32_add).get(1).i32(1).op(Op.i32_add).mem(Op.i32_store, 2), 'task_write');
    mb.func([P, P], [], (c) => {
      c.get(1).i32(5).op(Op.i32_eq).if().op(Op.unreachable).end();
    }, 'task_trap');
    // task_mirror(arg, t): mem[arg + 8 + 4t] = mem[src + 4(n − 1 − t)] with src, n the words at arg
    mb.func([P, P], [], (c) => {
      c.get(0).i32(8).op(Op.i32_add).get(1).i32(4).op(Op.i32_mul).op(Op.i32_add);
      c.get(0).mem(Op.i32_load, 2, 0);
      c.get(0).mem(Op.i32_load, 2, 4).i32(1).op(Op.i32_sub).get(1).op(Op.i32_sub).i32(4).op(Op.i32_mul).op(Op.i32_add);
      c.mem(Op.i32_load, 2).mem(Op.i32_store, 2);
    }, 'task_mirror');
    // task_meet(arg, t): task 1 raises the flag at arg; task 0 polls for it (bounded) and writes 1 at
    // arg + 4 if it came. Only two threads running the tasks at once can meet: a caller left alone
    // runs task 0 first and gives up
    mb.func([P, P], [], (c) => {
      const i = c.local(P);
      c.get(1).if();
      c.get(0).i32(1).atomicMem(Atomic.i32_store, 2);
      c.op(Op.else);
      c.i32(0).set(i);
      c.while(
        () => c.get(i).i32(400_000_000).op(Op.i32_lt_u).get(0).atomicMem(Atomic.i32_load, 2).op(Op.i32_eqz).op(Op.i32_and),
        () => c.get(i).i32(1).op(Op.i32_add).set(i),
      );
      c.get(0).get(0).atomicMem(Atomic.i32_load, 2).mem(Op.i32_store, 2, 4);
      c.end();
    }, 'task_meet');
  },
];
