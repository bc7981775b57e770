/**
 * @file The JavaScript peers measured beside qgrad in the same run: TensorFlow.js (wasm backend
 * with XNNPACK, and its plain-JS cpu backend) and jax-js (wasm device). Matmul contenders for
 * benchMatmul and per-op dispatch timings.
 */
import { storedShape, type MatmulContender } from './matmul.js';

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

/**
 * tfjs `matMul`: operands stored transposed go in as stored with its transposeA/transposeB flags
 * (tfjs has no strided views; the flags are its natural spelling of x·Wᵀ). tfjs-wasm 4.x sends
 * only unbatched products without transpose flags to XNNPACK, whose packed B it caches per tensor
 * (this benchmark reuses B, a training step's new weights would not); the rest go to a scalar
 * blocked loop (batch_mat_mul_impl.cc), hence its low figures on those rows.
 */
export function tfContender(backend: 'wasm' | 'cpu', maxMacs?: number): MatmulContender {
  let tf: Tf;
  const held: { dispose(): void }[] = [];
  return {
    name: `tfjs-${backend}`,
    maxMacs,
    async activate() {
      tf = await loadTf();
      // tfjs has one global backend; once initialised, switching is a synchronous assignment
      if (tf.getBackend() !== backend) await tf.setBackend(backend);
    },
    prepare(s, a, b) {
      const ta = tf.tensor(a, storedShape(s, 'a'));
      const tb = tf.tensor(b, storedShape(s, 'b'));
      held.push(ta, tb);
      return () => {
        const c = tf.matMul(ta, tb, s.transposeA, s.transposeB);
        c.dataSync();
        c.dispose();
      };
    },
    dispose: () => held.splice(0).forEach((t) => t.dispose()),
  };
}

/**
 * jax-js `matmul`; a transposed operand is `matrixTranspose` of the stored array inside the timed
 * call — a lazy view in jax-js that its matmul kernel reads through, as qgrad reads Wᵀ.
 */
export function jaxContender(): MatmulContender {
  const held: { dispose(): void }[] = [];
  return {
    name: 'jax-js-wasm',
    async prepare(s, a, b) {
      const jax = await loadJax();
      const np = jax.numpy;
      const ja = np.array(a).reshape(storedShape(s, 'a'));
      const jb = np.array(b).reshape(storedShape(s, 'b'));
      held.push(ja, jb);
      const { transposeA, transposeB } = s;
      return () => {
        const c = np.matmul(transposeA ? np.matrixTranspose(ja.ref) : ja.ref, transposeB ? np.matrixTranspose(jb.ref) : jb.ref);
        c.dataSync();
      };
    },
    dispose: () => held.splice(0).forEach((t) => t.dispose()),
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
