/**
 * @file The quantizer vocabulary (config.ts), its application to grouped views (apply.ts) and the
 * functional API (functional.ts).
 */
export * from './config.js';
export * from './apply.js';
export * from './functional.js';
