/**
 * @file Vector and finite scalar quantization layers: VQ-VAE codebook (gradient or EMA), SimVQ,
 * residual VQ and FSQ, with codebook usage and perplexity.
 */
export * from './codebook.js';
export * from './residual.js';
export * from './fsq.js';
