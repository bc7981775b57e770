/**
 * @file Moving a tensor between backends (`x.to('js')`), differentiable like PyTorch's
 * `x.to(device)`: the gradient goes back to the source backend. Casting lives in elementwise.ts.
 */
import { BACKENDS, backendEntry, DTYPES, type DType } from '@qgrad/kernels';
import { availableBackends, withBackend, type BackendName } from '../backend.js';
import { defineFunction } from '../function.js';
import { fromTypedArray } from './creation.js';
import type { Tensor } from '../tensor.js';

function copyTo(x: Tensor, backend: BackendName): Tensor {
  return withBackend(backend, () => fromTypedArray(x.dataSync(), [...x.shape], x.dtype));
}

const moveFn: (x: Tensor, backend: BackendName) => Tensor = defineFunction({
  name: 'to',
  forward: (ctx, x: Tensor, backend: BackendName) => {
    ctx.state = { from: x.device };
    return copyTo(x, backend);
  },
  backward: (ctx, g) => [moveFn(g, (ctx.state as { from: BackendName }).from), null], // d/dx copy = identity, back on x's backend
});

/**
 * `x.to(dtype)` casts, `x.to(backend)` moves (returning `x` itself when nothing changes, as
 * PyTorch does); anything else is an error that lists both vocabularies.
 * @example tensor([1, 2]).to('js').device; // 'js'
 */
export function to(x: Tensor, target: DType | BackendName, cast: (x: Tensor, dtype: DType) => Tensor): Tensor {
  if (backendEntry(target)) {
    const backend = target as BackendName;
    if (x.device === backend) return x;
    // only this backend's probe: listing every available one would open them all (a gpu worker)
    if (!backendEntry(backend)!.available()) throw new Error(`to: backend '${backend}' is not available in this process (have: ${availableBackends().join(', ')})`);
    return moveFn(x, backend);
  }
  if ((DTYPES as readonly string[]).includes(target)) return cast(x, target as DType);
  throw new TypeError(`to: '${String(target)}' is neither a dtype (${DTYPES.join(', ')}) nor a backend (${BACKENDS.map((b) => b.name).join(', ')})`);
}
