/**
 * @file The JavaScript peers measured beside qgrad in the same run: TensorFlow.js (wasm backend
 * with XNNPACK, and its plain-JS cpu backend) and jax-js (wasm device). Matmul contenders for
 * benchMatmul and per-op dispatch timings.
 */
import type { MatmulContender } from './matmul.js';

type Tf = typeof import('@tensorflow/tfjs-core');

let tfPromise: Promise<Tf> | null = null;
/** tfjs-core with the wasm and cpu backends registered (loaded once). */
export function loadTf(): Promise<Tf> {
  tfPromise ??= (async () => {
    const tf = await import('@tensorflow/tfjs-core');
    await import('@tensorflow/tfjs-backend-cpu');
    await import('@tensorflow/tfjs-backend-wasm');
    return tf;
  })();
  return tfPromise;
}

type Jax = typeof import('@jax-js/jax');
let jaxPromise: Promise<Jax> | null = null;
export function loadJax(): Promise<Jax> {
  jaxPromise ??= (async () => {
    const jax = await import('@jax-js/jax');
    await jax.init('wasm');
    jax.defaultDevice('wasm');
    return jax;
  })();
  return jaxPromise;
}

export function tfContender(backend: 'wasm' | 'cpu', maxSize?: number): MatmulContender {
  let tf: Tf;
  return {
    name: `tfjs-${backend}`,
    maxSize,
    async prepare(n, a, b) {
      tf = await loadTf();
      await tf.setBackend(backend);
      await tf.ready();
      const ta = tf.tensor2d(a, [n, n]);
      const tb = tf.tensor2d(b, [n, n]);
      return () => {
        const c = tf.matMul(ta, tb);
        c.dataSync();
        c.dispose();
      };
    },
  };
}

export function jaxContender(): MatmulContender {
  return {
    name: 'jax-js-wasm',
    async prepare(n, a, b) {
      const jax = await loadJax();
      const np = jax.numpy;
      const ja = np.array(a).reshape([n, n]);
      const jb = np.array(b).reshape([n, n]);
      return () => {
        const c = np.matmul(ja.ref, jb.ref);
        c.dataSync();
      };
    },
  };
}

/** µs per 4-element add for each JS peer: [name, µs]. Dispose is included, as a user must. */
export async function peerDispatch(iters: number): Promise<[string, number][]> {
  const out: [string, number][] = [];
  const tf = await loadTf();
  for (const backend of ['cpu', 'wasm'] as const) {
    await tf.setBackend(backend);
    await tf.ready();
    const a = tf.tensor1d([1, 2, 3, 4]);
    const b = tf.tensor1d([5, 6, 7, 8]);
    const run = () => {
      for (let i = 0; i < iters; i++) tf.add(a, b).dispose();
    };
    run();
    const t = performance.now();
    run();
    out.push([`tfjs-${backend}`, ((performance.now() - t) * 1000) / iters]);
  }
  const jax = await loadJax();
  const np = jax.numpy;
  const a = np.array([1, 2, 3, 4]);
  const b = np.array([5, 6, 7, 8]);
  const run = async () => {
    let c = np.add(a.ref, b.ref);
    for (let i = 1; i < iters; i++) {
      c.dispose();
      c = np.add(a.ref, b.ref);
    }
    await c.blockUntilReady();
    c.dispose();
  };
  await run();
  const t = performance.now();
  await run();
  out.push(['jax-js-wasm', ((performance.now() - t) * 1000) / iters]);
  return out;
}
