export * from './contract.js';
export * from './producer.js';
